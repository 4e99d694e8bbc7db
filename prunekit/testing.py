"""Checking a prune yourself: random weights that make every channel matter, the exactness
check, and a verdict for any model -- the tools prunekit's own tests and benchmarks use.

Three things go wrong in a pruning library, and each has a check here:

* **a wrong cut** -- the pruned model computes something else than the dense model with the
  same channels zeroed. :func:`assert_prunes_exactly` compares the two (with
  :func:`prunekit.verify.output_error`) and also checks that something was removed and that
  the outputs changed (a check that passes for a model pruned to nothing proves nothing).
* **weights that hide a wrong cut** -- PyTorch initialises BatchNorm to the identity (mean 0,
  variance 1, gamma 1, beta 0) and some layers to zero, and then forgetting a BN shift changes
  nothing. :func:`randomise` draws every one of them at random.
* **side effects** -- a call that fails must leave the caller's model exactly as it was (and
  one with ``inplace=False`` must leave it alone even when it succeeds). :func:`snapshot` and
  :func:`changes` record and compare everything a call could touch: tensors, train/eval flags,
  hooks and plain attributes.

:func:`judge` puts them together: one call, one :class:`Verdict` -- ``exact``, ``refused``,
``bad-message``, ``wrong``, ``crash`` -- plus whether the caller's model was touched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PruningError
from .verify import output_error

__all__ = ["randomise", "Snapshot", "snapshot", "changes", "mask_error", "assert_prunes_exactly",
           "Verdict", "judge", "sweep", "EXACT"]

#: Relative error the tests accept between the pruned and the zero-masked model's outputs.
EXACT = 1e-5

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
          nn.modules.instancenorm._InstanceNorm)


# ----------------------------------------------------------------------------------------------
# Random weights that make every channel matter
# ----------------------------------------------------------------------------------------------

def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics, random norm gamma / beta, random conv / linear biases,
    random weights for an all-zero conv / linear and random values for near-zero free
    parameters (a layer scale of 1e-6, a zero class token); returns the model in eval mode.

    Drawn from one seeded generator, module by module, so the same model and seed always
    give the same numbers."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t: Tensor, low: float, high: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (high - low) + low)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
                uniform(m.running_mean, -1, 1)
                uniform(m.running_var, 0.5, 2)
            if isinstance(m, _NORMS) or "norm" in type(m).__name__.lower():
                for p, (low, high) in ((getattr(m, "weight", None), (0.2, 1.5)),
                                   (getattr(m, "bias", None), (-1, 1))):
                    if isinstance(p, Tensor):
                        uniform(p, low, high)
            elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                if not m.weight.any():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) /
                                   m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    uniform(m.bias, -0.2, 0.2)
            else:
                for p in m.parameters(recurse=False):       # free parameters
                    if p.is_floating_point() and p.numel() and p.abs().max() < 1e-3:
                        uniform(p, 0.2, 1.5)
    return model.eval()


# ----------------------------------------------------------------------------------------------
# Side effects
# ----------------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Everything of a model that a pruning call could change (see :func:`snapshot`)."""

    text: str
    tensors: dict[str, tuple[int, Tensor, bool]]
    modules: dict[str, dict[str, Any]]


def _plain(value: Any) -> Any:
    """How an attribute is remembered: tensors by value, simple values as they are, anything
    else by identity (replacing it is a change)."""
    if isinstance(value, Tensor):
        return ("tensor", value.detach().clone())
    if value is None or isinstance(value, (bool, int, float, str, tuple, frozenset)):
        return ("value", value)
    return ("object", id(value), type(value).__name__)


def _state(m: nn.Module) -> dict[str, Any]:
    hooks = {k: len(v) for k, v in vars(m).items() if k.endswith("hooks") and isinstance(v, dict)}
    attrs = {k: _plain(v) for k, v in vars(m).items() if not k.startswith("_")}
    return {"hooks": hooks, "attrs": attrs, "children": list(m._modules)}


def snapshot(model: nn.Module) -> Snapshot:
    """Record the model's tensors (which object and its values), every module's train/eval
    flag, hooks and plain attributes, and its printed structure."""
    tensors = {name: (id(t), t.detach().clone(), t.requires_grad) for name, t in
               [*model.named_parameters(remove_duplicate=False),
                *model.named_buffers(remove_duplicate=False)]}
    modules = {name: _state(m) for name, m in model.named_modules(remove_duplicate=False)}
    return Snapshot(str(model), tensors, modules)


def _same(a: Any, b: Any) -> bool:
    if a[0] == "tensor" and b[0] == "tensor":
        x, y = a[1], b[1]
        return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y) or (
            x.is_floating_point() and torch.equal(x.isnan(), y.isnan()) and
            torch.equal(x.nan_to_num(), y.nan_to_num())))
    return a == b


def changes(model: nn.Module, before: Snapshot) -> list[str]:
    """What differs between ``model`` now and ``before`` (empty: nothing)."""
    now = snapshot(model)
    found = [] if now.text == before.text else ["the printed structure"]
    for name in sorted(set(now.tensors) | set(before.tensors)):
        a, b = now.tensors.get(name), before.tensors.get(name)
        if a is None or b is None or a[0] != b[0] or a[2] != b[2] or \
                not _same(("tensor", a[1]), ("tensor", b[1])):
            found.append(f"tensor '{name}'")
    for name in sorted(set(now.modules) | set(before.modules)):
        a, b = now.modules.get(name), before.modules.get(name)
        if a is None or b is None:
            found.append(f"module '{name}' appeared or disappeared")
            continue
        for key in sorted(set(a["attrs"]) | set(b["attrs"])):
            x, y = a["attrs"].get(key), b["attrs"].get(key)
            if x is None or y is None or not _same(x, y):
                found.append(f"attribute '{name}.{key}'".replace("'.", "'"))
        if a["hooks"] != b["hooks"] or a["children"] != b["children"]:
            found.append(f"hooks or children of '{name}'")
    return found


# ----------------------------------------------------------------------------------------------
# The exactness check
# ----------------------------------------------------------------------------------------------

def _run(model: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
    """The model's outputs (a Hugging Face model's without its key/value cache object)."""
    from .hf import is_hf_model

    kwargs = {"use_cache": False} if is_hf_model(model) else {}
    with torch.no_grad():
        return model(*inputs, **kwargs)


def _as_tuple(inputs: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def mask_error(pruned: nn.Module, masked: nn.Module, inputs: Tensor | tuple[Tensor, ...]) -> float:
    """The exactness check: relative error between the pruned model and the zero-masked one
    (``plan.mask()``, made before an in-place cut) on ``inputs``; 0 means equal."""
    inputs = _as_tuple(inputs)
    return output_error(_run(pruned, inputs), _run(masked, inputs))


def assert_prunes_exactly(model: nn.Module, inputs: Tensor | tuple[Tensor, ...],
                          example_inputs: Tensor | tuple[Tensor, ...] | None = None,
                          tol: float = EXACT, allow_vacuous: bool = False,
                          **settings: Any) -> Any:
    """Plan with ``settings`` (as :func:`prunekit.plan`, plus ``inplace``) on
    ``example_inputs`` (default: the first sample of ``inputs``), cut, and assert on
    ``inputs`` that

    * something was removed, and the dense model's outputs changed (unless ``allow_vacuous``);
    * the pruned model equals the zero-masked model (:func:`mask_error`) within ``tol``;
    * with ``inplace=False`` the model passed in is untouched.

    Returns the :class:`~prunekit.planning.PruneResult`."""
    from .planning import plan

    inputs = _as_tuple(inputs)
    example = example_inputs if example_inputs is not None else tuple(t[:1] for t in inputs)
    inplace = settings.pop("inplace", False)
    before, dense = snapshot(model), _run(copy.deepcopy(model), inputs)
    p = plan(model, example, **settings)
    masked = p.mask()
    result = p.apply(inplace=inplace)
    assert result.removed, "nothing was pruned: the check would prove nothing"
    error = mask_error(result.model, masked, inputs)
    assert error <= tol, f"pruned != zero-masked: relative error {error:.3g} > {tol}"
    if not allow_vacuous:
        change = output_error(_run(result.model, inputs), dense)
        assert change > 100 * tol, f"pruning changed the outputs by {change:.1g}: vacuous"
    if not inplace:
        assert not changes(model, before), f"the model passed in changed: {changes(model, before)}"
    return result


# ----------------------------------------------------------------------------------------------
# A verdict for any model
# ----------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    """The outcome of one pruning call on one model, as an adversarial review counts it.

    ``kind``: ``exact`` (pruned == zero-masked), ``refused`` (a :class:`PruningError` with a
    message about the model), ``bad-message`` (refused, but the message blames the example
    input although the model runs on it, or reports a prunekit bug), ``wrong`` (accepted but
    not equal to the zero-masked model), ``crash`` (accepted, and the pruned model raises --
    or the library raised something other than a PruningError). ``error``: the relative error
    against the zero-masked model; ``change``: against the dense model (with
    ``measure_change``: a check that passes when pruning changed nothing proves little).
    ``mutated`` lists changes to the caller's model where there must be none; ``result`` is
    the :class:`~prunekit.planning.PruneResult` of an accepted call."""

    kind: str
    detail: str = ""
    error: float = math.nan
    mutated: list[str] = field(default_factory=list)
    change: float = math.nan
    result: Any = field(default=None, repr=False)


_BLAMES_INPUT = ("running the model on example input", "prunekit bug")


def _refusal(err: PruningError) -> Verdict:
    text = str(err)
    kind = "bad-message" if any(s in text for s in _BLAMES_INPUT) else "refused"
    return Verdict(kind, text)


def judge(model: nn.Module, inputs: Tensor | tuple[Tensor, ...],
          example_inputs: Tensor | tuple[Tensor, ...] | None = None,
          tol: float = 1e-4, measure_change: bool = False, **settings: Any) -> Verdict:
    """Prune ``model`` with ``settings`` (as :func:`prunekit.plan`, plus ``inplace``) and
    classify what happened (see :class:`Verdict`). The dense model must run on ``inputs``;
    ``example_inputs`` default to the first sample of them."""
    from .planning import plan

    inputs = _as_tuple(inputs)
    example = example_inputs if example_inputs is not None else tuple(t[:1] for t in inputs)
    inplace = settings.pop("inplace", False)
    before = snapshot(model)
    dense = _run(copy.deepcopy(model), inputs) if measure_change else None
    try:
        p = plan(model, example, **settings)
        masked = p.mask()
        result = p.apply(inplace=inplace)
    except PruningError as err:
        return _with_changes(_refusal(err), model, before, True)
    except Exception as err:  # noqa: BLE001 -- any other exception is the verdict
        return _with_changes(Verdict("crash", f"{type(err).__name__}: {err}"), model, before, True)
    verdict = _compare(result.model, masked, inputs, tol, dense)
    verdict.result = result
    return _with_changes(verdict, model, before, not inplace)


def _compare(pruned: nn.Module, masked: nn.Module, inputs: tuple[Tensor, ...],
             tol: float, dense: Any) -> Verdict:
    try:
        error = mask_error(pruned, masked, inputs)
    except Exception as err:  # noqa: BLE001 -- the pruned model does not run
        return Verdict("crash", f"the pruned model raises {type(err).__name__}: {err}")
    change = output_error(_run(pruned, inputs), dense) if dense is not None else math.nan
    return Verdict("exact" if error <= tol else "wrong", "", error, change=change)


def _with_changes(verdict: Verdict, model: nn.Module, before: Snapshot,
                  must_be_unchanged: bool) -> Verdict:
    if must_be_unchanged:
        verdict.mutated = changes(model, before)
    return verdict


def sweep(builds: dict[str, Callable[[], tuple[nn.Module, Tensor]]],
          settings: dict[str, dict[str, Any]], seeds: tuple[int, ...] = (0,),
          ) -> list[tuple[str, str, int, Verdict]]:
    """:func:`judge` every model (``builds[name]() -> (model, inputs)``, seeded) under every
    setting: ``[(model name, setting name, seed, verdict)]``."""
    rows = []
    for name, build in builds.items():
        for setting, kwargs in settings.items():
            for seed in seeds:
                torch.manual_seed(seed)
                model, inputs = build()
                randomise(model, seed)
                verdict = judge(model, inputs, **{"seed": seed, **kwargs})
                verdict.result = None             # keep the rows small
                rows.append((name, setting, seed, verdict))
    return rows

"""Before tracing: what a trace cannot see, and a copy to trace instead of your model.

``torch.fx`` records the ops in ``forward()``. Some computation happens outside it:

* **hooks** -- ``register_forward_hook(lambda m, i, o: o + 1)`` changes a layer's output, and
  a pre-hook its input, without a line in ``forward()``;
* **parametrizations** -- ``weight_norm``, ``spectral_norm``, ``torch.nn.utils.prune`` masks
  and ``torch.nn.utils.parametrize`` compute a layer's weight from other tensors on every call
  (through a hook or a property), so cutting "the weight" cuts something that is rebuilt;
* **lazy layers** -- ``nn.LazyLinear`` has no shape until it first runs;
* **widths read as Python numbers** -- ``x / self.conv1.out_channels`` or
  ``if self.conv1.out_channels == 16:`` put the number 16 into the trace as a constant, so the
  cut model would divide by a different number or take the other branch. :func:`watch_widths`
  records which layer widths ``forward()`` reads while it is traced; those channels are pinned.

A graph built without them describes another model, so prunekit refuses them, naming the layer
(remove them first: ``torch.nn.utils.prune.remove``, ``parametrize.remove_parametrizations``).

And tracing runs ``forward()``: on the caller's model it would move BatchNorm statistics that
``F.batch_norm(..., training=True)`` updates, count calls in a buffer, or leave an ``fx.Proxy``
in ``self.last``. So every trace and every probe runs on :func:`probe_copy` -- new module
objects in eval mode with their own buffers and attributes -- and the model you pass in is only
ever read. The parameters themselves are shared, not copied (a deep copy would cost as much as
a forward pass): the tracer refuses an op that writes into a parameter in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.nn.modules import module as module_globals
from torch.nn.utils import parametrize

from ..errors import PruningError

__all__ = ["refuse_hidden_computation", "probe_copy", "shell_copy", "watch_widths", "WIDTHS"]

#: Layer attributes that hold a width, and which side of the layer it is: "out" (its output
#: channels) or "in" (the channels it reads).
WIDTHS = {"out_channels": "out", "out_features": "out", "num_features": "out",
          "num_channels": "out", "embed_dim": "out", "num_heads": "out",
          "in_channels": "in", "in_features": "in"}

_HOOKS = ("_forward_hooks", "_forward_pre_hooks")


def _hidden(m: nn.Module) -> str:
    """What computes outside ``forward()`` in this one layer ('' if nothing)."""
    if parametrize.is_parametrized(m):
        return "a parametrization (torch.nn.utils.parametrize: weight_norm, spectral_norm, ...)"
    for attr in _HOOKS:
        for hook in getattr(m, attr, {}).values():
            owner = getattr(hook, "__self__", hook)
            return f"a {'forward pre-hook' if 'pre' in attr else 'forward hook'} " \
                   f"({type(owner).__name__}: e.g. torch.nn.utils.prune, weight_norm, or your own)"
    if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
        return "uninitialised lazy parameters (run the model once first)"
    return ""


def refuse_hidden_computation(model: nn.Module) -> None:
    """Raise :class:`PruningError` naming the first layer with hooks, parametrizations or
    uninitialised lazy parameters (and for hooks registered on every module)."""
    if any(getattr(module_globals, f"_global{attr}", None) for attr in _HOOKS):
        raise PruningError("a global forward hook is registered (torch.nn.modules.module."
                           "register_module_forward_hook): prunekit cannot see what it computes; "
                           "remove it before pruning")
    for name, m in model.named_modules():
        what = _hidden(m)
        if what:
            where = f"node '{name.replace('.', '_')}' = module '{name}'" if name else \
                "the model itself"
            raise PruningError(
                f"cannot prune through {where} ({type(m).__name__}): it has {what}, which "
                "computes outside forward() where the trace cannot see it; remove it before "
                "pruning (torch.nn.utils.prune.remove, parametrize.remove_parametrizations, "
                "handle.remove())")


def shell_copy(module: nn.Module, replace: dict[int, nn.Module] | None = None,
               memo: dict[int, Any] | None = None) -> nn.Module:
    """New module objects over the same parameters: each module's attribute dicts are copied,
    its buffers cloned (so running the copy never moves the original's statistics or
    counters), its children copied alike -- except those in ``replace`` (``{id(old): new}``),
    which are put in as they are."""
    memo = {} if memo is None else memo
    replace = replace or {}
    if id(module) in replace:
        return replace[id(module)]
    if id(module) in memo:
        return memo[id(module)]
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v
                    for k, v in module.__dict__.items()}
    memo[id(module)] = new
    for name, b in module._buffers.items():
        if isinstance(b, Tensor):
            if id(b) not in memo:
                memo[id(b)] = b.detach().clone()
            new._buffers[name] = memo[id(b)]
    for name, child in module._modules.items():
        new._modules[name] = None if child is None else shell_copy(child, replace, memo)
    return new


def probe_copy(model: nn.Module) -> nn.Module:
    """What prunekit traces, runs and scores instead of ``model``: :func:`shell_copy` in eval
    mode, so that the caller's buffers, train/eval flags and attributes are never touched.
    A Hugging Face model's config is copied too, with ``use_cache=False`` (the probe's outputs
    are then tensors only, no key/value cache object)."""
    probe = shell_copy(model).eval()
    private_configs(probe, use_cache=False)
    return probe


def is_hf_config(value: Any) -> bool:
    """A ``transformers`` configuration object (``PretrainedConfig``), by duck type."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor, dict, list, tuple,
                                           set, nn.Module)):
        return False
    return hasattr(value, "to_dict") and hasattr(value, "model_type") and \
        hasattr(value, "architectures")


def private_configs(model: nn.Module, **changes: Any) -> dict[int, Any]:
    """Give ``model`` (a copy) its own copy of every Hugging Face config its modules share
    with another model, with ``changes`` set on it; ``{id(old): new}``."""
    import copy

    swapped: dict[int, Any] = {}
    for m in model.modules():
        value = m.__dict__.get("config")           # where Hugging Face modules keep it
        if value is None or not is_hf_config(value):
            continue
        if id(value) not in swapped:
            swapped[id(value)] = copy.deepcopy(value)
            for k, v in changes.items():
                if hasattr(swapped[id(value)], k):
                    setattr(swapped[id(value)], k, v)
        m.__dict__["config"] = swapped[id(value)]
    return swapped


def hf_configs(model: nn.Module) -> dict[int, Any]:
    """``{id: config}`` of the Hugging Face configs the modules of ``model`` hold."""
    return {id(c): c for m in model.modules()
            if (c := m.__dict__.get("config")) is not None and is_hf_config(c)}


_WATCHED: dict[type, type] = {}


def _watched_class(cls: type) -> type:
    """A subclass of ``cls`` that notes every read of a width attribute in ``self._reads``."""
    if cls not in _WATCHED:
        def __getattribute__(self: nn.Module, name: str) -> Any:  # noqa: N807
            if name in WIDTHS:
                object.__getattribute__(self, "__dict__").get("_width_reads", []).append(name)
            return cls.__getattribute__(self, name)
        _WATCHED[cls] = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__,
                                                    "__module__": cls.__module__})
    return _WATCHED[cls]


@contextmanager
def watch_widths(probe: nn.Module) -> Iterator[list[tuple[str, str]]]:
    """Inside: reads of ``out_channels``, ``in_features``, ... on any layer of ``probe`` (a
    copy, never your model) are collected as ``(layer name, attribute)`` in the list it gives;
    after: every layer has its own class again."""
    reads: list[tuple[str, str]] = []
    swapped = []
    for name, m in probe.named_modules():
        try:
            m.__dict__["_width_reads"] = []
            m.__class__ = _watched_class(type(m))
            swapped.append((name, m))
        except TypeError:                    # a class that cannot be subclassed this way
            m.__dict__.pop("_width_reads", None)
    try:
        yield reads
    finally:
        for name, m in swapped:
            m.__class__ = type(m).__mro__[1]
            reads += [(name, attr) for attr in dict.fromkeys(m.__dict__.pop("_width_reads"))]

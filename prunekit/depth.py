"""Depth pruning: remove whole residual blocks -- transformer layers, ResNet blocks.

Width pruning (the rest of prunekit) makes every layer thinner; depth pruning removes layers.
In a residual network a block computes ``y = x + f(x)`` (or ``relu(x + f(x))``): take it out
and its input flows on unchanged, as if the block were the identity. That is the promise here,
checked like every width cut: **the pruned model computes exactly what the model computes with
each removed block replaced by the identity** (:meth:`DepthPlan.mask`, a copy with
:class:`Skip` in their place).

Which blocks can go: the children of a ``nn.ModuleList`` / ``nn.Sequential`` (the repeated
structure: a language model's ``layers``, a ResNet stage) whose output has the shape of their
input and whose input reaches their output through an *identity shortcut* -- additions (and
ReLU, dropout, dtype casts after them), no layer on the way. A block with a projection
shortcut (a 1x1 conv where the stage changes width or stride) changes the shape or the
values of the stream: it stays, and :func:`find_blocks` says why.

Which blocks go first: those that change the stream least. ShortGPT's *Block Influence*
(Men et al., 2024) is ``BI = 1 - mean over positions of cos(x_in, x_out)`` -- a block whose
output points where its input pointed does little. It is measured on the example input (or
``data=``); ``importance="random"`` is the baseline. A Hugging Face model's config follows
(``num_hidden_layers``, ``layer_types``) and every kept layer's ``layer_idx`` is renumbered,
so its key/value cache still finds each layer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, fx, nn

from .errors import PruningError
from .graph import as_input_tuple, eval_mode
from .graph.export import module_stack
from .graph.preflight import hf_configs, is_hf_config, probe_copy, refuse_hidden_computation
from .metrics import count_params
from .verify import output_error, tolerance

__all__ = ["Block", "Skip", "find_blocks", "block_influence", "plan_depth", "prune_depth",
           "DepthPlan", "DepthResult"]


class Skip(nn.Module):
    """What a removed block computes: its input (the stream), in the output form the block
    had (a tensor, or a tuple whose first element is the stream)."""

    def __init__(self, extra: int = 0) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        return x if not self.extra else (x, *([None] * self.extra))


@dataclass
class Block:
    """One child of a module list: ``path``; removable or not, and why not."""

    path: str
    container: str
    index: int
    params: int
    why: str = ""          # empty: removable

    @property
    def removable(self) -> bool:
        return not self.why

    def __str__(self) -> str:
        state = "removable" if self.removable else f"kept: {self.why}"
        return f"{self.path} ({self.params:,} params): {state}"


class BlockList(list):
    def __str__(self) -> str:
        return "\n".join(str(b) for b in self)


def _containers(model: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    for path, m in model.named_modules():
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 1:
            yield path, m


def _stream_of(args: tuple, kwargs: dict) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    return next((v for v in kwargs.values() if isinstance(v, Tensor)), None)


def _record(probe: nn.Module, paths: list[str], batches: list[tuple[Tensor, ...]],
            keep: bool) -> dict[str, dict[str, Any]]:
    """Run ``probe`` on ``batches`` with hooks on ``paths``: each block's stream input and
    output shapes, output form, and (``keep``) the tensors themselves."""
    seen: dict[str, dict[str, Any]] = {p: {"x": [], "y": []} for p in paths}
    handles = []
    for p in paths:
        def hook(_: nn.Module, args: tuple, kwargs: dict, out: Any, p: str = p) -> None:
            x = _stream_of(args, kwargs)
            y = out[0] if isinstance(out, (tuple, list)) and out else out
            rec = seen[p]
            rec["in"] = tuple(x.shape) if isinstance(x, Tensor) else None
            rec["out"] = tuple(y.shape) if isinstance(y, Tensor) else None
            rec["extra"] = len(out) - 1 if isinstance(out, (tuple, list)) else 0
            if keep and isinstance(x, Tensor) and isinstance(y, Tensor):
                rec["x"].append(x.detach().float())
                rec["y"].append(y.detach().float())
        handles.append(probe.get_submodule(p).register_forward_hook(hook, with_kwargs=True))
    try:
        for inputs in batches:
            _outputs(probe, inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _outputs(model: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
    kwargs = {"use_cache": False} if is_hf_config(getattr(model, "config", None)) else {}
    with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model(*[t.clone() for t in inputs], **kwargs)


# ----------------------------------------------------------------------------------------------
# Which blocks are residual
# ----------------------------------------------------------------------------------------------

_PASS = frozenset({"add", "add_", "iadd", "relu", "relu_", "to", "alias", "clone", "contiguous",
                   "dropout", "_to_copy", "type_as", "float", "identity"})
_PASS_MODULES = (nn.Identity, nn.ReLU, nn.Dropout)


def _inside(n: fx.Node, path: str) -> bool:
    if n.op == "call_module" and (str(n.target) == path or str(n.target).startswith(path + ".")):
        return True
    return any(p == path for p, _ in module_stack(n)) or any(
        v[0] == path for v in (n.meta.get("nn_module_stack") or {}).values())


def _name(n: fx.Node) -> str:
    from .graph.tracer import fn_name
    return fn_name(n)


def _identity_shortcut(graph: fx.Graph, root: nn.Module, path: str) -> bool:
    """Does the block's input reach its output through additions (and ReLU / dropout /
    casts) only? Walks back from every node the block hands outside."""
    nodes = [n for n in graph.nodes if _inside(n, path)]
    inside = set(nodes)
    if not nodes:
        return False
    outs = [n for n in nodes if any(u not in inside for u in n.users)]

    def passes(n: fx.Node) -> bool:
        if n.op == "call_module":
            return isinstance(root.get_submodule(str(n.target)), _PASS_MODULES)
        return n.op in ("call_function", "call_method") and _name(n) in _PASS

    def reaches_input(n: fx.Node, depth: int = 0) -> bool:
        if n not in inside:
            return True
        if depth > 64 or not passes(n):
            return False
        args = [a for a in n.args if isinstance(a, fx.Node)][: 2 if _name(n) in
                                                             ("add", "add_", "iadd") else 1]
        return any(reaches_input(a, depth + 1) for a in args)

    return bool(outs) and all(reaches_input(o) for o in outs)


def find_blocks(model: nn.Module, example_inputs: Tensor | Sequence[Tensor],
                frontend: str = "auto") -> BlockList:
    """Every child of a ``ModuleList`` / ``Sequential`` of the model, removable or not (with
    the reason). Runs and traces a probe copy; ``model`` is not touched."""
    from .graph import _trace_graph

    inputs = as_input_tuple(example_inputs)
    refuse_hidden_computation(model)
    probe = probe_copy(model)
    candidates = [(f"{c}.{name}" if c else name, c, i, child)
                  for c, container in _containers(probe)
                  for i, (name, child) in enumerate(container.named_children())]
    candidates = [c for c in candidates if any(True for _ in c[3].parameters()) and
                  any(True for _ in c[3].children())]          # blocks, not single layers
    seen = _record(probe, [c[0] for c in candidates], [inputs], keep=False)
    graph = _trace_graph(probe, None, inputs, frontend)
    blocks = BlockList()
    for path, container, index, child in candidates:
        rec, why = seen[path], ""
        if rec.get("in") is None:
            why = "it does not run on the example input (or its input is not a tensor)"
        elif rec["out"] != rec["in"]:
            why = f"its output {rec['out']} has another shape than its input {rec['in']}"
        elif not _identity_shortcut(graph, probe, path):
            why = "its input does not reach its output through an identity shortcut " \
                  "(a layer on the shortcut, e.g. a projection, or no shortcut at all)"
        blocks.append(Block(path, container, index, count_params(child), why))
    return blocks


# ----------------------------------------------------------------------------------------------
# Block importance
# ----------------------------------------------------------------------------------------------

def _cosine(x: Tensor, y: Tensor) -> Tensor:
    """Mean cosine similarity of input and output vectors: along the last dim for tokens
    ``(B, T, C)``, along the channels for images ``(N, C, H, W)``."""
    dim = -1 if x.dim() <= 3 else 1
    return torch.nn.functional.cosine_similarity(x, y, dim=dim, eps=1e-8).mean()


def block_influence(model: nn.Module, blocks: Sequence[Block | str],
                    batches: Sequence[tuple[Tensor, ...]]) -> dict[str, float]:
    """ShortGPT's Block Influence of each block: ``1 - mean cos(x_in, x_out)`` over every
    position of ``batches`` (Men et al., 2024). Low: the block barely turns the stream."""
    paths = [b.path if isinstance(b, Block) else b for b in blocks]
    seen = _record(probe_copy(model), paths, list(batches), keep=True)
    return {p: float(1 - sum(_cosine(x, y) * x.numel() for x, y in zip(seen[p]["x"],
                                                                          seen[p]["y"]))
                     / max(sum(x.numel() for x in seen[p]["x"]), 1)) for p in paths}


# ----------------------------------------------------------------------------------------------
# Plan and apply
# ----------------------------------------------------------------------------------------------

@dataclass
class DepthResult:
    """What :meth:`DepthPlan.apply` returns: the model without the removed blocks."""

    model: nn.Module
    removed: list[str]
    blocks: BlockList
    scores: dict[str, float]
    before: dict[str, int]
    after: dict[str, int]
    plan: DepthPlan | None = field(default=None, repr=False)

    def __str__(self) -> str:
        b, a = self.before["params"], self.after["params"]
        return (f"DepthResult: removed {len(self.removed)} blocks {self.removed}; params "
                f"{b:,} -> {a:,} (x{a / max(b, 1):.3f})")


@dataclass
class DepthPlan:
    """Which blocks go (``removed``: paths, lowest importance first), before anything is cut."""

    model: nn.Module
    blocks: BlockList
    scores: dict[str, float]
    removed: list[str]
    example_inputs: tuple[Tensor, ...]

    def mask(self) -> nn.Module:
        """A copy of the model with each removed block replaced by :class:`Skip` (the
        identity): what the pruned model must compute."""
        twin = copy.deepcopy(self.model)
        extras = _extras(self.model, self.removed, self.example_inputs)
        for path in self.removed:
            parent, _, name = path.rpartition(".")
            setattr(twin.get_submodule(parent) if parent else twin, name, Skip(extras[path]))
        return twin

    def apply(self, inplace: bool = False) -> DepthResult:
        """Remove the blocks from their lists -- in a copy (or in ``self.model``) -- update a
        Hugging Face config and layer numbers, and check the result against :meth:`mask` on
        the example input; a refusal leaves the model as it was."""
        before = {"params": count_params(self.model)}
        pruned = copy.deepcopy(self.model)
        _remove(pruned, self.removed)
        if self.removed:
            got, want = _outputs(pruned, self.example_inputs), \
                _outputs(self.mask(), self.example_inputs)
            error = output_error(got, want)
            dtype = next((p.dtype for p in pruned.parameters()), torch.float32)
            if not error <= tolerance(dtype):
                raise PruningError(
                    f"removing {self.removed} does not compute what the model computes with "
                    f"them replaced by the identity (relative error {error:.2g}): forward() "
                    "reads the number or position of its blocks; prunekit keeps only a "
                    "removal it can check")
        if inplace:
            _remove(self.model, self.removed)
            pruned = self.model
        after = {"params": count_params(pruned)}
        return DepthResult(pruned, list(self.removed), self.blocks, self.scores, before,
                           after, self)

    def __str__(self) -> str:
        lines = [f"DepthPlan: remove {len(self.removed)} of "
                 f"{sum(b.removable for b in self.blocks)} removable blocks"]
        for b in self.blocks:
            score = self.scores.get(b.path)
            mark = "remove" if b.path in self.removed else ("keep" if b.removable else "fixed")
            text = f"{score:.4f}" if score is not None else "-"
            lines.append(f"  {mark:<6} {b.path:<32} importance {text}"
                         + ("" if b.removable else f"  ({b.why})"))
        return "\n".join(lines)


def _extras(model: nn.Module, paths: list[str], inputs: tuple[Tensor, ...]) -> dict[str, int]:
    seen = _record(probe_copy(model), paths, [inputs], keep=False)
    return {p: seen[p].get("extra", 0) for p in paths}


def _remove(model: nn.Module, paths: list[str]) -> None:
    """Delete the blocks from their lists (highest index first), then fix the numbers a
    Hugging Face model keeps about its layers."""
    by_container: dict[str, list[int]] = {}
    for path in paths:
        parent, _, name = path.rpartition(".")
        by_container.setdefault(parent, []).append(int(name))
    for parent, indices in by_container.items():
        container = model.get_submodule(parent)
        old = len(container)
        for i in sorted(indices, reverse=True):
            del container[i]
        _renumber(model, container, old, sorted(indices))


def _renumber(model: nn.Module, container: nn.Module, old: int, gone: list[int]) -> None:
    for i, layer in enumerate(container):
        for m in layer.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = i
    for config in hf_configs(model).values():
        if getattr(config, "num_hidden_layers", None) == old:
            config.num_hidden_layers = len(container)
            types = getattr(config, "layer_types", None)
            if isinstance(types, list) and len(types) == old:
                config.layer_types = [t for i, t in enumerate(types) if i not in gone]


def plan_depth(model: nn.Module, example_inputs: Tensor | Sequence[Tensor],
               remove: int | None = None, ratio: float | None = None,
               importance: str | Callable[[str], float] = "block_influence",
               data: Iterable[Any] | None = None, seed: int = 0,
               frontend: str = "auto") -> DepthPlan:
    """Choose ``remove`` blocks (or ``floor(ratio * removable)``) with the lowest importance
    -- ``"block_influence"`` (default), ``"random"`` or ``fn(block path) -> score``. Blocks
    that cannot be removed (see :func:`find_blocks`) are never chosen; asking for more than
    there are is refused."""
    inputs = as_input_tuple(example_inputs)
    blocks = find_blocks(model, inputs, frontend)
    usable = [b for b in blocks if b.removable]
    if (remove is None) == (ratio is None):
        raise PruningError("plan_depth: give either remove= (a number of blocks) or ratio=")
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise PruningError(f"ratio={ratio!r} must be in [0, 1)")
        remove = math.floor(ratio * len(usable) + 1e-9)
    if remove > len(usable):
        kept = "; ".join(str(b) for b in blocks if not b.removable) or "none"
        raise PruningError(f"asked to remove {remove} blocks, but only {len(usable)} are "
                           f"residual blocks that can go (kept: {kept})")
    batches = [inputs] if data is None else [as_input_tuple(b[0] if isinstance(b, (tuple, list))
                                                            and len(b) == 2 else b)
                                             for b in data]
    if importance == "block_influence":
        scores = block_influence(model, usable, batches)
    elif importance == "random":
        values = torch.rand(len(usable), generator=torch.Generator().manual_seed(seed))
        scores = {b.path: float(v) for b, v in zip(usable, values)}
    elif callable(importance):
        scores = {b.path: float(importance(b.path)) for b in usable}
    else:
        raise PruningError(f"importance={importance!r}: use 'block_influence', 'random' or "
                           "a callable fn(block path) -> score")
    order = sorted(usable, key=lambda b: (scores[b.path], b.path))
    return DepthPlan(model, blocks, scores, [b.path for b in order[:remove]], inputs)


def prune_depth(model: nn.Module, example_inputs: Tensor | Sequence[Tensor],
                remove: int | None = None, ratio: float | None = None, *,
                inplace: bool = False, **options: Any) -> DepthResult:
    """:func:`plan_depth` then :meth:`DepthPlan.apply`."""
    return plan_depth(model, example_inputs, remove, ratio, **options).apply(inplace=inplace)

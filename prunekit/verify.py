"""The proof, measured: does the pruned model compute what the zero-masked model computes?

A structured prune is *exact* when the smaller model gives the same outputs as the dense model
with the removed channels set to zero (:meth:`prunekit.planning.Plan.mask`). This module holds
the one comparison everything uses -- the check :meth:`~prunekit.planning.Plan.apply` runs
before it hands a model back, :mod:`prunekit.testing`, and the benchmarks.

Outputs are compared by their *relative* error, ``max |got - want| / max |want|``, so a
network whose logits are in the thousands and one whose logits are 1e-3 are judged alike.
A different structure (shape, number of outputs) or a NaN / inf on one side only counts as
an infinite error: that is not "a little off", it is another function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from .errors import PruningError
from .graph import ChannelGraph, eval_mode

__all__ = ["output_error", "TOLERANCE", "verify_cut", "first_difference", "run_twice"]

#: Relative error below which two float32 outputs count as equal (a pruned model sums fewer
#: zeros than the masked one, so the last bits differ; a wrong cut is off by 1e-2 or more).
TOLERANCE = 1e-4


def tolerance(dtype: torch.dtype) -> float:
    """:data:`TOLERANCE`, or four rounding steps of a coarser float (bfloat16: 0.03)."""
    return max(TOLERANCE, 4 * torch.finfo(dtype).eps) if dtype.is_floating_point else TOLERANCE


def _tensors(value: Any) -> list[Any]:
    """The leaves of a model output: tensors, numbers, None -- in a fixed order."""
    if isinstance(value, Mapping):
        return [x for k in sorted(value, key=str) for x in [k, *_tensors(value[k])]]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [x for v in value for x in [len(value), *_tensors(v)]]
    return [value]


def _tensor_error(got: Tensor, want: Tensor) -> float:
    if got.shape != want.shape or got.dtype != want.dtype:
        return math.inf
    if got.is_meta or want.is_meta:
        return 0.0                            # shapes only: a meta tensor has no values
    if not got.is_floating_point() and not got.is_complex():
        return 0.0 if torch.equal(got, want) else math.inf
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    same_bad = torch.isnan(got) & torch.isnan(want) | (torch.isinf(got) & (got == want))
    if bool((~torch.isfinite(got) | ~torch.isfinite(want))[~same_bad].any()):
        return math.inf                      # NaN / inf on one side only
    ok = ~same_bad
    if not bool(ok.any()):
        return 0.0
    scale = max(float(want[ok].abs().max()), 1e-12)
    return float((got[ok] - want[ok]).abs().max()) / scale


def output_error(got: Any, want: Any) -> float:
    """Relative max error between two model outputs (tensors, or tuples / dicts of them);
    ``inf`` when their structure, shapes or dtypes differ or only one side is not finite."""
    a, b = _tensors(got), _tensors(want)
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            worst = max(worst, _tensor_error(x, y))
        elif isinstance(x, Tensor) or isinstance(y, Tensor) or x != y:
            return math.inf
    return worst


# ----------------------------------------------------------------------------------------------
# The check every cut passes before prunekit hands a model back
# ----------------------------------------------------------------------------------------------

def run_twice(pruned: nn.Module, masked: nn.Module,
              inputs: tuple[Tensor, ...]) -> tuple[Any, Any]:
    """Outputs of both models on (copies of) ``inputs``, in eval mode and with the same random
    numbers (a model that draws noise in forward draws the same noise twice)."""
    outs = []
    for model in (pruned, masked):
        with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            outs.append(model(*[t.clone() for t in inputs]))
    return outs[0], outs[1]


def verify_cut(graph: ChannelGraph, removed: Mapping[int, Tensor], pruned: nn.Module,
               masked: nn.Module) -> None:
    """Refuse a cut whose model computes something else than the zero-masked one on the
    example input -- naming the first node where they part (:func:`first_difference`).

    This is the net under every rule: a size read at run time and used as a number, a Python
    ``if`` on a layer's width, anything a rule could not see, shows up here. Two forward
    passes; the models are probes (shared parameters), nothing of the caller's is touched."""
    try:
        got, want = run_twice(pruned, masked, graph.example_inputs)
        error = output_error(got, _kept_outputs(graph, removed, want))
    except Exception as e:  # noqa: BLE001 -- the pruned model's own forward() fails
        error, failure = math.inf, f"{type(e).__name__}: {e}"
    else:
        failure = ""
    if error <= tolerance(graph.example_inputs[0].dtype if not _float_params(pruned) else
                          _float_params(pruned)[0].dtype):
        return
    where = first_difference(graph, removed, pruned, masked)
    what = failure or f"relative error {error:.2g} at the output"
    raise PruningError(
        f"after the cut the model does not compute what the zero-masked model computes "
        f"({what}){where}. prunekit only keeps a cut it can check exact; rewrite that part of "
        "the model (e.g. a size or a parameter statistic used as a number) or prune a model "
        "without it")


def _float_params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.is_floating_point()][:1]


class _Recorder(fx.Interpreter):
    """Runs a traced graph and keeps the value of every node that carries channels."""

    def __init__(self, gm: fx.GraphModule, keep: set[str]) -> None:
        super().__init__(gm)
        self.keep, self.values, self.failed = keep, {}, None
        self.extra_traceback = False

    def run_node(self, n: fx.Node) -> Any:
        try:
            value = super().run_node(n)
        except Exception as e:
            self.failed = (n, e)
            raise
        if n.name in self.keep and isinstance(value, Tensor):
            self.values[n.name] = value.detach()
        return value


def first_difference(graph: ChannelGraph, removed: Mapping[int, Tensor], pruned: nn.Module,
                     masked: nn.Module) -> str:
    """Where the cut model and the zero-masked model part: run both through the trace and
    compare, node by node, the masked value at the channels that stay with the cut value.
    Returns ``": first at node 'x' = op (...)"``, or a note that the trace agrees everywhere
    (then ``forward()`` takes another path in the cut model, e.g. ``if width == 16``)."""
    runs = [_record(model, graph) for model in (masked, pruned)]
    alive = graph.alive(removed)
    for node in graph.fx_graph.nodes:
        if runs[1].failed is not None and runs[1].failed[0] is node:
            return f": first at node '{node.name}' = {_op(node, pruned)}, which fails " \
                   f"({type(runs[1].failed[1]).__name__}: {runs[1].failed[1]})"
        want, got = runs[0].values.get(node.name), runs[1].values.get(node.name)
        if want is None or got is None:
            continue
        kept = restrict(want, graph.node_ids[node.name], alive)
        if kept is None or kept.numel() != got.numel() or \
                output_error(got.reshape(-1), kept.reshape(-1)) > TOLERANCE:
            return f": first at node '{node.name}' = {_op(node, pruned)}"
    return "; every traced op agrees, so forward() takes another path in the cut model " \
           "(Python code that reads a layer's width, e.g. `if conv.out_channels == 16`)"


def _record(model: nn.Module, graph: ChannelGraph) -> _Recorder:
    rec = _Recorder(fx.GraphModule(model, graph.fx_graph), set(graph.node_ids))
    with eval_mode(model), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            rec.run(*[t.clone() for t in graph.example_inputs])
        except Exception:  # noqa: BLE001 -- kept in rec.failed
            rec.values.setdefault('', None)
    return rec


def restrict(value: Tensor, ids: Tensor, alive: Tensor) -> Tensor | None:
    """The entries of a zero-masked value at the channels that stay: what the cut model holds
    there. ``ids`` (the graph's channel id per position, broadcastable; -1: not a channel)
    along one axis keeps the shape (``index_select``); along several it gives a flat vector.
    None when the ids do not fit the value."""
    if ids.dim() > value.dim() or any(s not in (1, v) for s, v in
                                      zip(ids.shape[::-1], value.shape[::-1])):
        return None
    ids = ids.reshape((1,) * (value.dim() - ids.dim()) + tuple(ids.shape)).cpu()
    stays = (ids < 0) | alive[ids.clamp(min=0)]
    if bool(stays.all()):
        return value
    axes = [d for d in range(ids.dim()) if ids.shape[d] > 1]
    if len(axes) == 1:
        line = stays.movedim(axes[0], 0).reshape(ids.shape[axes[0]], -1)[:, 0]
        return value.index_select(axes[0], line.nonzero().flatten().to(value.device))
    return value[stays.to(value.device).expand(value.shape)]


def _kept_outputs(graph: ChannelGraph, removed: Mapping[int, Tensor], want: Any) -> Any:
    """The zero-masked model's outputs without the removed classes (when the output group is
    cut, e.g. ``ratios={"classifier": 0.2}``)."""
    out = next(n for n in graph.fx_graph.nodes if n.op == "output").args[0]
    alive = graph.alive(removed)

    def walk(nodes: Any, value: Any) -> Any:
        if isinstance(nodes, fx.Node) and isinstance(value, Tensor):
            ids = graph.node_ids.get(nodes.name)
            kept = restrict(value, ids, alive) if ids is not None else None
            return value if kept is None else kept
        if isinstance(nodes, (list, tuple)) and isinstance(value, (list, tuple)) and \
                len(nodes) == len(value):
            return type(value)(walk(n, v) for n, v in zip(nodes, value))
        return value
    return walk(out, want)


def _op(node: fx.Node, model: nn.Module) -> str:
    from .graph.tracer import op_name

    module = model.get_submodule(str(node.target)) if node.op == "call_module" else None
    return op_name(node, module)

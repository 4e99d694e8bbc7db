"""Which channels must be cut together? From a model to *coupled channel groups*.

Removing output channel ``c`` of a convolution is never a local edit. The channel lives on
in every tensor that carries it, so we must also cut

* the BatchNorm that normalises it (``gamma[c]``, ``beta[c]``, running statistics),
* the *input* column ``c`` of every layer that reads it (the next conv, or the block of
  ``H*W`` features it becomes after ``flatten`` in front of a linear layer), and
* every other layer whose output is *added* to it: in a ResNet stage all blocks add into one
  running tensor, so the stem, every ``conv2`` and every projection shortcut share ONE set of
  channels (Li et al., 2017, "Pruning Filters for Efficient ConvNets", section 3.3).

We find these sets by tracing the model once with ``torch.fx`` (in eval mode) -- or, where
fx cannot trace it (Hugging Face language models), with ``torch.export`` (:mod:`.export`: the
same rules on ATen ops) -- and running the traced graph on an example input, so every tensor's
shape is known -- both on a probe copy (:mod:`.preflight`), so the model you pass in is never
run or changed. Every tensor gets a
:class:`~prunekit.graph.flow.Flow`: which channel sits at each position -- along whatever
axis the channels are (channels-first, channels-last, tokens, attention heads) -- and whether
the value would be exactly zero if that channel were removed.

The promise: **pruning = zeroing, or refuse.** A pruned model computes exactly what the dense
model computes with the removed channels set to zero (``Plan.mask()``; the tests check it for
every architecture). Every rule below keeps that promise:

=============================  ===========================================================
conv / linear / Conv1D         create a fresh set of channels (output rows); read their
                               input's channels (input columns)
embedding                      creates channels (its table's columns); the ids are not
BatchNorm, f(0)=0 activations, the same channels pass through
pooling, dropout, drop path
depthwise conv                 output channel c IS input channel c (``groups`` shrinks)
grouped conv                   inputs and outputs cut in equal numbers per group
``a + b``, ``a * b``           channel c of a and of b become one channel (residual adds)
``x * sigmoid(s)`` (a gate)    exact: channel c of x is 0, so the product is, whatever the
                               gate (squeeze-and-excitation); sigmoid, softmax, ``x + 1``
                               are allowed only where such a zero multiplies them
``gamma * x``, ``x + pos``     the per-channel parameter is cut with its channels
``torch.cat`` / split / chunk  concatenated layouts (offsets); equal pieces keep equal sizes
reshape, permute, ``x[:, i]``  followed exactly; a size written as a constant in forward()
                               cannot shrink, so what it holds is pinned (write -1)
LayerNorm, GroupNorm, RMSNorm  pin the channels they normalise together (removing one
                               changes the others' statistics); the MLP inside is free
                               (``approximate=True`` cuts them anyway: not exact, measured)
attention                      whole heads (q, k, v rows + output columns) are the units;
                               under grouped-query attention a key/value head with its
                               group of query heads
model input / model output     pinned (the output keeps its classes unless named in ratios)
a width used as a number       pinned (``x / x.shape[1]``, ``conv.out_channels`` read in
                               forward(), a statistic of a parameter that would be cut)
hooks, parametrizations,       refused (they compute where the trace cannot see them)
in-place ops others read
anything else                  refused with :class:`~prunekit.PruningError` -- unless every
                               channel it sees is pinned anyway (then nothing changes)
=============================  ===========================================================

A *group* (:class:`Group`) is every channel created together, with every layer that
produces it (cuts output rows), normalises it, passes it through (depthwise) or reads it
(cuts input columns). ``print(graph)`` shows them all. The layout: :mod:`.preflight` (what a
trace cannot see; the probe copy), :mod:`.atoms` (union-find), :mod:`.flow` (per-tensor
labels), :mod:`.export` (the torch.export front-end), :mod:`.tracer` (running the graph),
:mod:`.rules` (one module per op family),
:mod:`.kinds` (the table of layer kinds), :mod:`.collect` (atoms -> groups), :mod:`.model`
(the result). A plan made from the groups is checked before it is applied
(:mod:`prunekit.verify`): the net under every rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, fx, nn

from ..device import device_of, to_device
from ..errors import PruningError
from ..modules import PrunedMultiheadAttention
from .collect import collect
from .export import export_graph, trace_failure
from .model import PRODUCER_ROLES, ROLE_TEXT, ChannelGraph, Group, MacSite, Member
from .preflight import probe_copy, refuse_hidden_computation, watch_widths
from .rules import FUNCTIONS, MODULES, QUALIFIED, opaque
from .tracer import ChannelTracer

__all__ = ["Member", "Group", "ChannelGraph", "MacSite", "build_graph", "trace", "eval_mode",
           "as_input_tuple", "ROLE_TEXT", "PRODUCER_ROLES", "FRONTENDS"]


class eval_mode:
    """Context manager: every module in eval mode inside, each one's own flag restored after.

    Importance scoring and the checks after a cut must not touch BatchNorm running
    statistics, and restoring ``model.train()`` wholesale would lose per-module choices (e.g.
    a frozen BN in eval)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag


class _Tracer(fx.Tracer):
    """fx's tracer, with prunekit's own pruned attention layer kept as one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, PrunedMultiheadAttention) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example_inputs: Tensor | Sequence[Tensor] | None = None,
          frontend: str = "fx") -> fx.GraphModule:
    """``torch.fx`` trace of a copy of ``model`` in eval mode (so stochastic depth / drop path,
    which branch on ``self.training`` in Python, trace as the identity), with an error message
    a student can act on. ``model`` itself is not touched (see :mod:`.preflight`). With
    ``example_inputs`` and ``frontend="auto"`` or ``"export"``, ``torch.export``'s ATen graph
    where fx fails (:mod:`.export`)."""
    probe = probe_copy(model)
    inputs = as_input_tuple(example_inputs) if example_inputs is not None else ()
    return fx.GraphModule(probe, _trace_graph(probe, None, inputs, frontend),
                          type(model).__name__)


FRONTENDS = ("auto", "fx", "export")


def _trace_graph(probe: nn.Module, width_reads: list | None = None,
                 inputs: tuple[Tensor, ...] = (), frontend: str = "fx") -> fx.Graph:
    """The graph of ``probe`` -- a copy in eval mode: tracing runs ``forward()`` (on
    proxies, or on fake tensors), and code that stores them (``self.last = x``) must not touch
    the real model. Layer widths that ``forward()`` reads as numbers are added to
    ``width_reads``. ``frontend``: ``"fx"`` (torch.fx), ``"export"`` (torch.export, which
    needs ``inputs``; :mod:`.export`) or ``"auto"`` (fx, and torch.export where fx fails)."""
    if frontend not in FRONTENDS:
        raise PruningError(f"frontend={frontend!r}: use one of {', '.join(FRONTENDS)}")
    fx_error = None
    if frontend in ("auto", "fx"):
        try:
            with watch_widths(probe) as reads:
                graph = _Tracer().trace(probe)
            if width_reads is not None:
                width_reads += reads
            return graph
        except Exception as e:  # noqa: BLE001 -- fx raises many types
            fx_error = e
            if frontend == "fx" or not inputs:
                raise PruningError(f"torch.fx could not trace {type(probe).__name__}: "
                                   f"{trace_failure(e)}") from e
    try:
        with watch_widths(probe) as reads:
            graph = export_graph(probe, inputs)
    except PruningError as e:
        if fx_error is None:
            raise
        raise PruningError(f"torch.fx could not trace {type(probe).__name__} "
                           f"({trace_failure(fx_error)}), and {e}") from e
    if width_reads is not None:
        width_reads += reads
    return graph


def as_input_tuple(example_inputs: Tensor | Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Accept one example tensor or a tuple/list of them; refuse anything else, and empty
    tensors (a batch of 0 samples shows nothing about the channels)."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise PruningError("example_inputs must be a tensor shaped like one batch of real input, "
                           f"e.g. torch.randn(1, 3, 32, 32); got {type(example_inputs).__name__}")
    empty = next((t for t in inputs if t.numel() == 0), None)
    if empty is not None:
        raise PruningError(f"example input of shape {tuple(empty.shape)} is empty: pass at least "
                           "one sample, e.g. torch.randn(1, C, H, W)")
    return tuple(inputs)


def build_graph(model: nn.Module, example_inputs: Tensor | Sequence[Tensor],
                frontend: str = "auto", approximate: bool = False) -> ChannelGraph:
    """Trace ``model`` once on ``example_inputs`` and return its coupled channel groups.

    The trace and the run on the example input happen on a deep copy in eval mode under
    ``torch.no_grad()`` (:func:`.preflight.probe_copy`): ``model`` itself -- its tensors,
    train/eval flags and attributes -- is never run or changed. The example input is moved to
    the model's device (CPU or GPU) first. ``frontend``: how the model is traced -- ``"auto"``
    (``torch.fx``, and ``torch.export`` where fx cannot trace), ``"fx"`` or ``"export"``.
    ``approximate``: groups pinned only because a LayerNorm / RMSNorm normalises them are
    left prunable, marked :attr:`Group.approximate` (cutting them is not exact).
    """
    if not isinstance(model, nn.Module):
        raise PruningError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = to_device(as_input_tuple(example_inputs), device_of(model))
    refuse_hidden_computation(model)
    probe = probe_copy(model)
    width_reads: list[tuple[str, str]] = []
    graph = _trace_graph(probe, width_reads, inputs, frontend)
    tracer = ChannelTracer(probe, graph, MODULES, FUNCTIONS, QUALIFIED, opaque)
    tracer.width_reads = width_reads
    tracer.approximate = approximate
    with torch.no_grad():
        tracer.run(*inputs)
    result = collect(tracer, graph, inputs)
    from ..hf import pin_heads       # numbers a Hugging Face config must be able to describe

    pin_heads(model, result)
    return result

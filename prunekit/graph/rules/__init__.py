"""The rules: for every op, what becomes of the channels that flow through it.

One module per family, each exporting ``FUNCTIONS`` (by function / method name) and
``MODULES`` (by layer class):

* :mod:`.layers` -- conv, linear, BatchNorm (producers and readers), the norms that pin;
* :mod:`.pointwise` -- activations, ``+`` / ``*`` (residuals, gates, layer scales),
  reductions, softmax;
* :mod:`.shape` -- reshape, permute, cat, split, indexing, pad (ops that move values);
* :mod:`.attention` -- ``nn.MultiheadAttention``, ``scaled_dot_product_attention``, ``@``.

Anything else is :func:`opaque`: accepted only where every channel it sees is pinned.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx, nn

from ..flow import Flow
from ..tracer import ChannelTracer
from . import attention, layers, pointwise, shape

__all__ = ["FUNCTIONS", "MODULES", "QUALIFIED", "opaque"]


def opaque(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Any:
    """An op prunekit has no rule for. It cannot be proved exact, so it is refused -- unless
    every channel it sees is pinned: then nothing about it changes, and its outputs are
    treated as fixed (pinned) tensors. Parameters it reads are never cut."""
    for a in n.all_input_nodes:
        for flow in _flows(tr.flows.get(a)):
            tr.require_pinned(flow.labels, n, "prunekit does not know how this op treats "
                              "channels", m)
        if a in tr.params:
            tr.opaque_owners.add(tr.params[a].owner)
    if m is not None:
        tr.opaque_owners.add(str(n.target))
    reason = f"output of node '{n.name}', an op prunekit has no rule for"
    first = next((tr.flows[a] for a in n.all_input_nodes if isinstance(tr.flows.get(a), Flow)),
                 None)
    return _fixed(tr, out, first, n, reason)


def _fixed(tr: ChannelTracer, value: Any, like: Flow | None, n: fx.Node, reason: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_fixed(tr, v, None, n, reason) for v in value]
    if not isinstance(value, Tensor):
        return None
    labels = like.labels if like is not None and like.labels.dim() == value.dim() and all(
        s in (1, v) for s, v in zip(like.labels.shape, value.shape)) else torch.zeros(
        [1] * value.dim(), dtype=torch.long)
    atoms = tr.pinned_like(labels, reason)
    return Flow(atoms, torch.ones(atoms.shape, dtype=torch.bool))


def _flows(value: Any) -> list[Flow]:
    if isinstance(value, Flow):
        return [value]
    if isinstance(value, list):
        return [f for v in value for f in _flows(v)]
    return []


FUNCTIONS: dict[str, Any] = {**pointwise.FUNCTIONS, **layers.FUNCTIONS, **shape.FUNCTIONS,
                             **attention.FUNCTIONS}
MODULES: list[tuple[Any, Any]] = [*layers.MODULES, *attention.MODULES, *shape.MODULES,
                                  *pointwise.MODULES]
#: Functions from outside torch, by ``module.name``: identity in eval mode.
QUALIFIED: dict[str, Any] = {
    "torchvision.ops.stochastic_depth.stochastic_depth": pointwise.identity_in_eval,
}

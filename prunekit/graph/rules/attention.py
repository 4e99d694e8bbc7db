"""Rules for attention: whole heads are the units (Michel et al., 2019; Voita et al., 2019).

Head ``h`` of ``softmax(q_h k_h^T / sqrt(d)) v_h`` reads only rows ``h`` of q, k and v. Zero
all three and the head outputs 0 (a uniform softmax over zeros); remove all three and it
is gone -- the same function. So q, k and v of one head are one channel: removing it cuts
``head_dim`` rows from each projection and ``head_dim`` columns from the output projection.
(Removing single dims inside a head would change ``sqrt(d)``; prunekit does not.)

* ``nn.MultiheadAttention``: a rule of its own (a new group of ``num_heads`` channels);
  surgery replaces it by :class:`prunekit.modules.PrunedMultiheadAttention`.
* Hand-written attention -- ``qkv(x).reshape(B, N, 3, -1, head_dim)``, ``permute``,
  ``unbind``, then ``F.scaled_dot_product_attention`` or ``softmax(q @ k.T) @ v`` -- is
  followed op by op: the reshape rule makes the head axis the one that shrinks, these rules
  make each head one channel. Write the head count as ``-1``: a constant cannot shrink.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import Tensor, fx, nn

from ...modules import PrunedMultiheadAttention
from ..flow import Flow
from ..tracer import ChannelTracer

__all__ = ["FUNCTIONS", "MODULES"]


def sdpa(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """``F.scaled_dot_product_attention(q, k, v)``, (..., heads, tokens, head_dim)."""
    args, kwargs = tr.concrete(n)
    names = ("query", "key", "value")
    nodes = [n.args[i] if len(n.args) > i else n.kwargs.get(k) for i, k in enumerate(names)]
    mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
    if tr.flow(mask) is not None:
        tr.require_pinned(tr.flow(mask).labels, n, "its attention mask depends on channels")
    ndim = out.dim()
    flows = [tr.aligned(tr.flow(x), ndim) if tr.flow(x) is not None else None for x in nodes]
    if flows[2] is None:
        raise tr.refuse(n, "its value tensor does not carry the model's channels")
    if kwargs.get("enable_gqa"):
        flows = _grouped_query(tr, n, flows, [tr.env[x] for x in nodes])
    head = _unite_heads(tr, n, flows, ndim)
    q, v = (tr.env[x] for x in (nodes[0], nodes[2]))
    batch = math.prod(q.shape[:-2])
    tokens_q, tokens_k = q.shape[-2], tr.env[nodes[1]].shape[-2]
    for f, width in ((flows[0], q.shape[-1]), (flows[2], v.shape[-1])):
        if f is not None:
            tr.mac(batch * tokens_q * tokens_k * width, _head_map(f))
    return Flow(head, _per_head(flows[2].zero).expand(head.shape).clone())


def _grouped_query(tr: ChannelTracer, n: fx.Node, flows: list[Flow | None],
                   values: list[Tensor]) -> list[Flow | None]:
    """``enable_gqa=True``: ``Hq`` query heads read ``Hkv`` key/value heads, query head ``h``
    the key/value head ``h // (Hq / Hkv)`` -- as if k and v were ``repeat_interleave``-d, so
    a key/value head and its group of query heads become one unit (Ainslie et al., 2023)."""
    group = values[0].shape[-3] // values[1].shape[-3]
    out = list(flows)
    for i in (1, 2):
        f = flows[i]
        if f is not None and group > 1:
            labels = f.labels.repeat_interleave(group, dim=-3) if f.labels.shape[-3] > 1 \
                else f.labels
            zero = f.zero.repeat_interleave(group, dim=-3) if f.zero.shape[-3] > 1 else f.zero
            out[i] = Flow(labels, zero, f.why)
    return out


def _unite_heads(tr: ChannelTracer, n: fx.Node, flows: list[Flow | None], ndim: int) -> Tensor:
    """Make q, k and v of each head (each index of the batch dims) one channel; returns the
    labels of the output, one channel per head."""
    for f in flows:
        if f is not None and any(f.labels.shape[d] > 1 for d in (ndim - 2,)):
            tr.require_pinned(f.labels, n, "its channels vary along the token dim")
    batch_shape = torch.broadcast_shapes(*[f.labels.shape[:-2] for f in flows if f is not None])
    per_head = [f.labels.expand(*batch_shape, *f.labels.shape[-2:]).flatten(-2)
                for f in flows if f is not None]
    for labels in per_head:
        tr.atoms.union_pairs(per_head[0][..., :1], labels)
    return per_head[0][..., :1].unsqueeze(-1).clone()


def _per_head(zero: Tensor) -> Tensor:
    """Zero when removed for the whole (tokens, head_dim) slice of each head."""
    return zero.all(dim=-1, keepdim=True).all(dim=-2, keepdim=True)


def _head_map(f: Flow) -> Tensor:
    """The labels over (heads, head_dim) that scale an attention product's MACs."""
    return f.labels.amin(dim=-2)


def matmul(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """``a @ b`` between two tensors with channels: attention scores ``q @ k^T`` and the
    weighted sum ``weights @ v``. The batch dims (heads) are channels of both operands, so
    each head of ``a`` and of ``b`` is one channel; the contraction must not mix heads."""
    a_node, b_node = n.args[0], n.args[1]
    fa, fb = tr.flow(a_node), tr.flow(b_node)
    ndim = out.dim()
    if fa is None or fb is None or ndim < 3 or tr.env[a_node].dim() < 2 \
            or tr.env[b_node].dim() < 2:
        return tr.opaque_rule(tr, n, out, m)
    fa, fb = tr.aligned(fa, ndim), tr.aligned(fb, ndim)
    batch_tracked = any(s > 1 for f in (fa, fb) for s in f.labels.shape[:-2])
    if not batch_tracked:
        return tr.opaque_rule(tr, n, out, m)
    a = tr.env[a_node]
    tr.mac(math.prod(out.shape) * a.shape[-1], fa.labels[..., :1, :1], fb.labels[..., :1, :1])
    head = _unite_heads_matmul(tr, fa, fb)
    zero = (_per_head(fa.zero) | _per_head(fb.zero)).expand(head.shape).clone()
    return Flow(head, zero, fa.why or fb.why)


def _unite_heads_matmul(tr: ChannelTracer, fa: Flow, fb: Flow) -> Tensor:
    batch_shape = torch.broadcast_shapes(fa.labels.shape[:-2], fb.labels.shape[:-2])
    la = fa.labels.expand(*batch_shape, *fa.labels.shape[-2:]).flatten(-2)
    lb = fb.labels.expand(*batch_shape, *fb.labels.shape[-2:]).flatten(-2)
    tr.atoms.union_pairs(la[..., :1], la)
    tr.atoms.union_pairs(la[..., :1], lb)
    return la[..., :1].unsqueeze(-1).clone()


def multihead_attention(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module) -> list:
    """``nn.MultiheadAttention`` (or prunekit's pruned one): input columns of the packed
    q/k/v projection, ``num_heads`` head channels, and the output projection's rows."""
    name = str(n.target)
    if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
        raise tr.refuse(n, "kdim/vdim, add_bias_kv and add_zero_attn are not supported", m)
    args, kwargs = tr.concrete(n)
    nodes = [n.args[i] if len(n.args) > i else n.kwargs.get(k)
             for i, k in enumerate(("query", "key", "value"))]
    flows = [tr.flow(x) for x in nodes]
    if any(f is None for f in flows):
        raise tr.refuse(n, "its query, key and value must all carry the model's channels", m)
    width = tr.env[nodes[0]].shape[-1]
    columns = [tr.axis_atoms(n, f, -1, width, m) for f in flows]
    for f, cols in zip(flows, columns):
        tr.require_zero(f, n, m)
        tr.atoms.union_pairs(columns[0], cols)         # one packed weight reads all three
    mask = kwargs.get("attn_mask", args[5] if len(args) > 5 else None)
    if isinstance(mask, Tensor) and mask.dim() == 3:
        raise tr.refuse(n, "a per-head (3-d) attention mask is not supported", m)
    heads = tr.fresh(f"{name}:heads", m.num_heads)
    inner = heads.repeat_interleave(m.head_dim)
    out_rows = tr.fresh(f"{name}.out_proj", m.out_proj.out_features)
    tr.kinds[name], tr.kinds[f"{name}.out_proj"] = "mha", "mha_out"
    tr.record(name, "in", columns[0], n)
    tr.record(name, "heads", inner.repeat(3), n)
    tr.record(f"{name}.out_proj", "out", out_rows, n)
    _attention_macs(tr, m, nodes, columns[0], inner, out_rows)
    for user in n.users:
        if user.target is operator.getitem and user.args[1] == 1 and user.users:
            tr.atoms.pin(heads, f"its attention weights (averaged over heads) are used at "
                         f"'{next(iter(user.users)).name}'")
    result = Flow.along(out_rows, out[0].dim() - 1, out[0].dim())
    weights = out[1]
    fixed = tr.pinned_like(torch.zeros([1] * weights.dim(), dtype=torch.long),
                           f"attention weights of '{name}'") if weights is not None else None
    return [result, Flow(fixed, torch.ones(fixed.shape, dtype=torch.bool))
            if fixed is not None else None]


def _attention_macs(tr: ChannelTracer, m: nn.Module, nodes: list[fx.Node], columns: Tensor,
                    inner: Tensor, out_rows: Tensor) -> None:
    shapes = [tr.env[x].shape for x in nodes]
    tokens = [math.prod(s[:-1]) for s in shapes]         # batch x tokens of q, k, v
    width = len(inner)
    for t in tokens:                                      # the q, k and v projections
        tr.mac(t * width * len(columns), inner[:, None], columns[None, :])
    seq_q = shapes[0][1] if m.batch_first else shapes[0][0]
    seq_k = shapes[1][1] if m.batch_first else shapes[1][0]
    batch = tokens[0] // seq_q
    tr.mac(2 * batch * seq_q * seq_k * width, inner)     # scores and weighted sum
    tr.mac(tokens[0] * width * len(out_rows), out_rows[:, None], inner[None, :])


FUNCTIONS: dict[str, Any] = {"scaled_dot_product_attention": sdpa, "matmul": matmul,
                             "bmm": matmul}
MODULES: list[tuple[Any, Any]] = [
    ((nn.MultiheadAttention, PrunedMultiheadAttention), multihead_attention),
]

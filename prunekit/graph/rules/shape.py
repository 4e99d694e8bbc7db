"""Rules for ops that move values without computing: reshape, permute, cat, split, indexing.

The tracer runs the op itself on the channel labels, so it always knows where every channel
went -- channels-first or channels-last, flattened in front of a linear layer, split into
attention heads, interleaved by a channel shuffle. What needs a rule is *whether the same
op, applied to the smaller tensor of the pruned model, still puts every channel where the
zero-masked model has it*. Sizes written in ``forward()`` decide that:

* ``-1`` (inferred) or a size read from the tensor itself (``x.size(1) // 2``) shrinks with
  the cut: fine. (Sizes read at run time are also re-checked when a plan is applied.)
* A constant (``view(-1, 512 * 7 * 7)``, ``reshape(B, N, 3, 8, 64)``, ``torch.split(x, 32)``,
  ``x[:, :16]``) cannot change, so the channels laid along that axis must not change the
  axis' length: they are **pinned** -- or, when another axis of the same reshape can shrink
  (a channel shuffle's ``view(N, 2, C // 2, H, W)``), the values along the constant axis are
  united into one channel, so a cut removes whole slices of the shrinking axis.
* ``torch.cat`` along channels concatenates their layouts (offsets); ``chunk`` / ``unbind``
  and equal splits along channels make position ``i`` of every piece one channel, so the
  pieces keep equal sizes (a ShuffleNetV2 unit, a CSP block).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx, nn

from ..flow import Flow
from ..tracer import ChannelTracer, fn_name
from .pointwise import Operand, combine

__all__ = ["FUNCTIONS", "MODULES"]


def _source(tr: ChannelTracer, n: fx.Node) -> tuple[fx.Node, Flow]:
    src = n.args[0] if n.args else next(iter(n.kwargs.values()))
    flow = tr.flow(src)
    if flow is None:
        raise tr.refuse(n, "its channel-carrying input is not its first argument")
    return src, flow


def _moved(tr: ChannelTracer, n: fx.Node, src: fx.Node, flow: Flow) -> tuple[Tensor, Tensor]:
    """Labels and flags after running the op on them (at the tensor's real shape)."""
    labels, zero = tr.full(flow, tr.shape(src))
    return tr.replay(n, {src: labels}), tr.replay(n, {src: zero})


# -- axis permutations: no constraint ---------------------------------------------------------
def permute(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """permute / transpose / movedim: the channel axis moves with the data."""
    src, flow = _source(tr, n)
    f = tr.aligned(flow, len(tr.shape(src)))
    swap = {src: f.labels}
    return Flow(tr.replay(n, swap), tr.replay(n, {src: f.zero}), flow.why)


def unsqueeze_squeeze(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """Add or drop axes of real size 1 (the stored labels are size 1 there too)."""
    args, kwargs = tr.concrete(n)
    src, flow = _source(tr, n)
    shape = tr.shape(src)
    f = tr.aligned(flow, len(shape))
    dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if fn_name(n).startswith("unsqueeze"):
        d = dims % (len(shape) + 1)
        return Flow(f.labels.unsqueeze(d), f.zero.unsqueeze(d), flow.why)
    dims = range(len(shape)) if dims is None else ([dims] if isinstance(dims, int) else dims)
    gone = sorted({d % len(shape) for d in dims if shape[d] == 1}, reverse=True)
    if any(f.labels.shape[d % len(shape)] > 1 for d in dims):   # squeezable once cut to 1
        tr.min_keep.append((f.labels.reshape(-1), f"squeezed at node '{n.name}': one channel "
                            "left would be squeezed away"))
    labels, zero = f.labels, f.zero
    for d in gone:
        labels, zero = labels.squeeze(d), zero.squeeze(d)
    return Flow(labels, zero, flow.why)


def expand(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """expand / repeat / tile: broadcast, or tile positions (a constant count per axis). An
    axis that carries channels and is not broadcast keeps its length only if the target size
    follows the same cut (``-1``, or read from a tensor with these channels)."""
    src, flow = _source(tr, n)
    f = tr.aligned(flow, out.dim())
    if fn_name(n) in ("expand", "expand_as", "broadcast_to"):
        for d in range(out.dim()):
            if f.labels.shape[d] > 1:
                _target_follows(tr, n, d, f.labels)
        return f
    labels, zero = _moved(tr, n, src, flow)
    return tr.compressed(labels, zero, flow.why)


def _target_follows(tr: ChannelTracer, n: fx.Node, d: int, labels: Tensor) -> None:
    """``x.expand_as(y)``: along dim ``d`` both carry channels of the same length, so they
    are one channel each (united); a constant target size pins ``x``'s channels."""
    other = n.args[1] if fn_name(n) == "expand_as" and len(n.args) > 1 else None
    if isinstance(other, fx.Node) and tr.flow(other) is not None:
        theirs = tr.aligned(tr.flow(other), len(tr.shape(other))).labels
        line = theirs.narrow(d, 0, theirs.shape[d]) if theirs.shape[d] > 1 else None
        if line is not None:
            mine = labels.movedim(d, 0).reshape(labels.shape[d], -1)[:, 0]
            tr.atoms.union_pairs(mine, line.movedim(d, 0).reshape(line.shape[d], -1)[:, 0])
            return
    if fn_name(n) == "expand" and _size_kind(tr, n, None, d, labels) != "fixed":
        return
    tr.atoms.pin(labels, f"expanded to a size at node '{n.name}' that does not follow a cut")


def flip(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    src, flow = _source(tr, n)
    labels, zero = _moved(tr, n, src, flow)
    return tr.compressed(labels, zero, flow.why)


def roll(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """torch.roll along channels moves channel c to c + k: after a cut, k counts other
    channels. Along other dims (Swin's shifted windows) it is harmless."""
    args, kwargs = tr.concrete(n)
    src, flow = _source(tr, n)
    f = tr.aligned(flow, out.dim())
    dims = kwargs.get("dims", args[2] if len(args) > 2 else None)
    dims = range(out.dim()) if dims is None else ([dims] if isinstance(dims, int) else dims)
    if any(f.labels.shape[d % out.dim()] > 1 for d in dims):
        tr.require_pinned(f.labels, n, "it rolls the channel dimension (channel c moves by a "
                          "constant number of positions, which a cut changes)", m)
    return f


# -- reshape ----------------------------------------------------------------------------------
def reshape(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """view / reshape / flatten / unflatten: see the module doc for the constraint."""
    src, flow = _source(tr, n)
    labels, zero = _reshaped(tr.aligned(flow, len(tr.shape(src))), tr.shape(src), out.shape)
    roots = tr.roots(labels)
    tracked = [d for d in range(out.dim()) if not _constant_along(roots, d)]
    kinds = {d: _size_kind(tr, n, m, d, labels) for d in tracked}
    dynamic = [d for d in tracked if kinds[d] != "fixed"]
    fixed = [d for d in tracked if kinds[d] == "fixed"]
    if fixed and len(dynamic) != 1:
        where = f"'{n.name}'" if m is None else f"'{n.target}'"
        tr.atoms.pin(labels, f"width hard-coded in {where} ({_shape_text(tr, n, out)}: a "
                     "constant in forward() cannot shrink; write -1 there)")
    elif fixed:
        for d in fixed:                   # the constant axis keeps its length: unite along it
            tr.atoms.union_pairs(labels, labels.narrow(d, 0, 1))
    for d in dynamic:
        if kinds[d] == "read":
            tr.check(n, labels)
    return tr.compressed(labels, zero, flow.why)


def _reshaped(flow: Flow, before: torch.Size, after: torch.Size) -> tuple[Tensor, Tensor]:
    """The labels reshaped like the tensor -- expanded to real size only in the groups of
    dims that a reshape merges or splits *and* that carry channels (so a (1, C, 56, 56)
    activation costs C labels, not C * 56 * 56)."""
    small_in, small_out = [], []
    for ins, outs in _chunks(list(before), list(after)):
        carried = any(flow.labels.shape[a] > 1 for a in ins)
        small_in += [before[a] if carried else 1 for a in ins]
        small_out += [after[b] if carried else 1 for b in outs]
    return (flow.labels.expand(small_in).reshape(small_out),
            flow.zero.expand(small_in).reshape(small_out))


def _chunks(a: list[int], b: list[int]) -> list[tuple[list[int], list[int]]]:
    """Split a reshape ``a -> b`` into groups of dims with equal products, e.g.
    (1, 48, 28, 28) -> (1, 2, 24, 28, 28): [0]->[0], [1]->[1, 2], [2]->[3], [3]->[4]."""
    i = j = 0
    chunks = []
    while i < len(a) or j < len(b):
        ins, outs, pa, pb = [], [], 1, 1
        if i < len(a):
            ins, pa, i = [i], a[i], i + 1
        if j < len(b):
            outs, pb, j = [j], b[j], j + 1
        while pa != pb:
            if pa < pb:
                ins.append(i)
                pa, i = pa * a[i], i + 1
            else:
                outs.append(j)
                pb, j = pb * b[j], j + 1
        chunks.append((ins, outs))
    return chunks


def _constant_along(labels: Tensor, d: int) -> bool:
    return labels.shape[d] == 1 or bool((labels == labels.narrow(d, 0, 1)).all())


def _shape_text(tr: ChannelTracer, n: fx.Node, out: Tensor) -> str:
    return f"{tuple(tr.shape(n.args[0]))} -> {tuple(out.shape)}"


def _size_kind(tr: ChannelTracer, n: fx.Node, m: nn.Module | None, d: int,
               labels: Tensor) -> str:
    """How output dim ``d``'s size is written: "inferred" (-1, or kept from the input by
    flatten), "read" (computed at run time from the shape of a tensor with the same
    channels) or "fixed" (a constant, or read from a tensor that the cut does not shrink)."""
    entry = _target_entry(tr, n, m, d)
    if entry == "inferred" or entry == -1:
        return "inferred"
    if isinstance(entry, int):
        return "read" if tr.baked and not _inferred_follows(tr, n) else "fixed"
    mine = set(tr.roots(labels).unique().tolist())
    foreign = []
    for node, axis in entry:
        src_flow = tr.flow(node)
        if src_flow is None:
            continue
        f = tr.aligned(src_flow, len(tr.shape(node)))
        if f.labels.shape[axis] > 1 and set(tr.roots(f.labels).unique().tolist()) == mine:
            return "read"
        if f.labels.shape[axis] > 1:
            foreign.append((node, f.labels))
    for _node, theirs in foreign:          # their width sets ours: it must not change either
        tr.atoms.pin(theirs, f"its width sets a size at node '{n.name}' for other channels")
    return "fixed"


def _inferred_follows(tr: ChannelTracer, n: fx.Node) -> bool:
    """Does the size list of an exported reshape / expand put its ``-1`` on an axis that
    carries channels? Then that axis is the one that follows the cut (``view(b, t, -1,
    self.head_dim)``), and the numbers beside it were written as constants. Otherwise a number
    in an exported graph may as well be a size read from a tensor (``x.view(-1, x.size(-1))``);
    it is re-checked when the plan is applied (:mod:`prunekit.graph.export`)."""
    sizes = n.args[1] if len(n.args) > 1 else n.kwargs.get("size", n.kwargs.get("shape", ()))
    if not isinstance(sizes, (list, tuple)) or -1 not in list(sizes):
        return False
    d = list(sizes).index(-1)
    shape = tr.shapes.get(n)
    src = n.args[0]
    flow = tr.flow(src)
    if flow is None or shape is None:
        return False
    labels, _ = _reshaped(tr.aligned(flow, len(tr.shape(src))), tr.shape(src), shape) \
        if fn_name(n) not in ("expand",) else (tr.aligned(flow, len(shape)).labels, None)
    return not _constant_along(tr.roots(labels), d)


def _target_entry(tr: ChannelTracer, n: fx.Node, m: nn.Module | None, d: int) -> Any:
    """What sets output dim ``d``: "inferred", an int literal, or the size sources (a set of
    (tensor node, dim)) of a size computed in forward()."""
    name = fn_name(n) if m is None else type(m).__name__.lower()
    args, kwargs = n.args, n.kwargs
    if name == "flatten":
        return "inferred"
    if name == "unflatten":
        in_dims = len(tr.shape(args[0]))
        dim = (m.dim if m is not None else kwargs.get("dim", args[1])) % in_dims
        sizes = m.unflattened_size if m is not None else kwargs.get("sizes", args[2])
        return _entry(tr, sizes[d - dim]) if dim <= d < dim + len(sizes) else "inferred"
    if name in ("view_as", "reshape_as"):
        return frozenset({(args[1], d)})
    shape = list(args[1:]) or [kwargs.get("shape", kwargs.get("size", ()))]
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = shape[0]
        if isinstance(shape, fx.Node):                 # x.view(y.shape) / x.view(y.size())
            sizes = tr.sizes.get(shape)
            return sizes[d] if isinstance(sizes, tuple) else 0
    return _entry(tr, shape[d])


def _entry(tr: ChannelTracer, arg: Any) -> Any:
    return tr.sources(arg) if isinstance(arg, fx.Node) else arg


# -- indexing ---------------------------------------------------------------------------------
def getitem(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Any:
    """``x[...]`` on a tensor, or picking one output of a split / an attention layer."""
    src = n.args[0]
    if isinstance(tr.flows.get(src), list):
        picked = tr.flows[src][n.args[1]]
        return picked if not isinstance(picked, list) else list(picked)
    src, flow = _source(tr, n)
    shape = tr.shape(src)
    labels, zero = _moved(tr, n, src, flow)
    f = tr.aligned(flow, len(shape))
    index = n.args[1] if isinstance(n.args[1], tuple) else (n.args[1],)
    for d, item in _index_dims(index, len(shape)):
        if not _constant_along(tr.roots(f.labels), d):
            _pin_indexed(tr, n, f.labels, d, item, shape[d])
    return tr.compressed(labels, zero, flow.why)


def _index_dims(index: tuple, ndim: int) -> list[tuple[int, Any]]:
    """(input dim, index item) pairs, expanding ``...`` and skipping ``None``."""
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    pairs, d = [], 0
    for item in index:
        if item is Ellipsis:
            d += ndim - consumed
        elif item is not None:
            pairs.append((d, item))
            d += 1
    return pairs


def _pin_indexed(tr: ChannelTracer, n: fx.Node, full: Tensor, d: int, item: Any,
                 size: int) -> None:
    """Constant indices into a channel axis: every constant position must still point at the
    same channel after a cut. Counted from the start (``x[:, :16]``, ``x[:, 3]``) the channels
    before it must stay; counted from the end (``x[:, -4:]``, ``narrow(1, -4, 4)``) the
    channels after it must stay. A step other than 1 pins the whole axis."""
    why = f"indexed with a constant at node '{n.name}' (the positions it counts cannot change)"
    if isinstance(item, slice):
        start, stop, step = (tr.env.get(v, v) if isinstance(v, fx.Node) else v
                             for v in (item.start, item.stop, item.step))
        if step not in (None, 1):
            tr.atoms.pin(full, why)
        elif any(isinstance(v, fx.Node) for v in (item.start, item.stop)):
            tr.check(n, full)
        else:
            bounds = [b for b in (start, stop) if b is not None and not (b is stop and b >= size)]
            for b in bounds:
                _pin_bound(tr, full, d, b, size, why)
    elif isinstance(item, int):
        _pin_bound(tr, full, d, item + 1 if item >= 0 else item, size, why)
    else:
        tr.atoms.pin(full, why)


def _pin_bound(tr: ChannelTracer, full: Tensor, d: int, bound: int, size: int,
               why: str) -> None:
    """Position ``bound`` (from the start if >= 0, from the end if < 0) must keep pointing
    at the same channel: pin the channels it counts."""
    if bound >= 0:
        count = min(bound, size)
        if count:
            tr.atoms.pin(full.narrow(d, 0, count), why)
    else:
        count = min(-bound, size)
        tr.atoms.pin(full.narrow(d, size - count, count), why)


def aten_slice(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """``aten.slice(x, dim, start, end, step)`` -- what ``x[..., a:b]`` becomes in an exported
    graph. Its bounds are numbers there whether ``forward()`` wrote them as constants or
    computed them from the config (Phi-3's fused ``qkv[..., :num_heads * head_dim]``), so with
    step 1 they are taken to follow the cut and re-checked when the plan is applied; a step
    pins the axis, as in indexing."""
    args, kwargs = tr.concrete(n)
    src, flow = _source(tr, n)
    shape = tr.shape(src)
    labels, zero = _moved(tr, n, src, flow)
    f = tr.aligned(flow, len(shape))
    d = (args[1] if len(args) > 1 else kwargs.get("dim", 0)) % len(shape)
    start, end = (args[2] if len(args) > 2 else kwargs.get("start"),
                  args[3] if len(args) > 3 else kwargs.get("end"))
    step = args[4] if len(args) > 4 else kwargs.get("step", 1)
    if not _constant_along(tr.roots(f.labels), d):
        if step in (None, 1):
            tr.check(n, f.labels)
        else:
            _pin_indexed(tr, n, f.labels, d, slice(start, end, step), shape[d])
    return tr.compressed(labels, zero, flow.why)


def narrow_select(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """narrow(dim, start, length) / select(dim, i): constant positions, as in indexing (a
    negative start counts from the end: ``narrow(1, -4, 4)`` is ``x[:, -4:]``)."""
    args, kwargs = tr.concrete(n)
    src, flow = _source(tr, n)
    shape = tr.shape(src)
    labels, zero = _moved(tr, n, src, flow)
    f = tr.aligned(flow, len(shape))
    d = args[1] % len(shape)
    if not _constant_along(tr.roots(f.labels), d):
        if fn_name(n) == "select":
            _pin_indexed(tr, n, f.labels, d, args[2], shape[d])
        else:
            start, length = args[2], args[3]
            stop = start + length if start >= 0 or start + length < 0 else None
            _pin_indexed(tr, n, f.labels, d, slice(start, stop), shape[d])
    return tr.compressed(labels, zero, flow.why)


# -- split / chunk / unbind -------------------------------------------------------------------
def split(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> list[Flow]:
    """Pieces along one dim. Along channels, pieces of equal size are made of one channel
    per position (they keep equal sizes); constant sizes pin; sizes read from the tensors
    the pieces came from (``torch.split(y, [a.size(1), b.size(1)])``) follow the cut."""
    args, kwargs = tr.concrete(n)
    name = fn_name(n)
    src, flow = _source(tr, n)
    shape = tr.shape(src)
    dim = kwargs.get("dim", args[2] if len(args) > 2 else 0) if name != "unbind" else \
        kwargs.get("dim", args[1] if len(args) > 1 else 0)
    dim %= len(shape)
    f = tr.aligned(flow, len(shape))
    pieces = list(out)
    if not _constant_along(tr.roots(f.labels), dim):
        _split_channels(tr, n, name, f.labels, dim, pieces)
        full, fzero = f.labels, f.zero
    else:                                 # untouched channels: every piece has them all
        full, fzero = tr.full(f, shape)
    outs = [_piece(tr, full, fzero, dim, p, flow) for p in _offsets(pieces, dim, name)]
    if name == "unbind":
        outs = [Flow(f.labels.squeeze(dim), f.zero.squeeze(dim), f.why) for f in outs]
    return outs


def _split_channels(tr: ChannelTracer, n: fx.Node, name: str, full: Tensor, dim: int,
                    pieces: list[Tensor]) -> None:
    """Pieces along the channel dim: equal pieces keep equal sizes (position i of every piece
    is one channel); sizes that are constants pin; sizes read from the pieces' own tensors
    follow the cut."""
    sizes = [p.shape[dim] if name != "unbind" else 1 for p in pieces]
    spec = n.args[1] if len(n.args) > 1 and name != "unbind" else n.kwargs.get(
        "split_size_or_sections", n.kwargs.get("chunks"))
    equal = len(set(sizes)) == 1
    follows = isinstance(spec, fx.Node) or (tr.baked and isinstance(spec, int))
    if name in ("chunk", "unbind") or (name == "tensor_split" and isinstance(spec, int)) or \
            (name in ("split", "split_with_sizes") and equal and follows):
        if not equal:
            tr.atoms.pin(full, f"split into unequal pieces at node '{n.name}'")
        else:
            first = full.narrow(dim, 0, sizes[0])
            for k in range(1, len(sizes)):
                tr.atoms.union_pairs(first, full.narrow(dim, k * sizes[0], sizes[0]))
            if follows:
                tr.check(n, full)
    elif len(pieces) > 1 and not _sizes_follow(tr, n, spec, full, dim, sizes):
        tr.atoms.pin(full, f"split into pieces of constant size at node '{n.name}' (sizes "
                     f"{sizes}); compute them from the tensors, e.g. a.size(1)")


def _offsets(pieces: list[Tensor], dim: int, name: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for p in pieces:
        size = 1 if name == "unbind" else p.shape[dim]
        spans.append((start, size))
        start += size
    return spans


def _piece(tr: ChannelTracer, full: Tensor, zero: Tensor, dim: int, span: tuple[int, int],
           flow: Flow) -> Flow:
    start, size = span
    labels, flags = full.narrow(dim, start, size), zero.narrow(dim, start, size)
    return tr.compressed(labels, flags, flow.why)


def _sizes_follow(tr: ChannelTracer, n: fx.Node, spec: Any, full: Tensor, dim: int,
                  sizes: list[int]) -> bool:
    """``split(x, [a.size(1), b.size(1)])``: every size read from a tensor with exactly the
    channels of its piece (then the pieces follow the cut; re-checked when applied)."""
    if not isinstance(spec, (list, tuple)) or not all(isinstance(s, fx.Node) for s in spec):
        return False
    start = 0
    for entry, size in zip(spec, sizes):
        piece = set(tr.roots(full.narrow(dim, start, size)).unique().tolist())
        start += size
        owners = [tr.flow(node) for node, _ in tr.sources(entry)]
        if not any(f is not None and set(tr.roots(f.labels).unique().tolist()) == piece
                   for f in owners):
            return False
    tr.check(n, full)
    return True


# -- cat / stack ------------------------------------------------------------------------------
def cat(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """Along channels: the layouts are concatenated (channel offsets). Along another dim
    (tokens: a class token before the patches) position ``i`` of every part is one channel."""
    args, kwargs = tr.concrete(n)
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % out.dim()
    operands = _parts(tr, n)
    flows = [tr.aligned(o.flow, out.dim()) for o in operands if o.flow is not None]
    real = [o.shape[dim] for o in operands]
    along_positions = all(f.labels.shape[dim] == 1 for f in flows) and max(real) > 1
    if fn_name(n) == "stack" or along_positions:
        return combine(tr, n, out, operands, "add", m)
    joint = [max(f.labels.shape[d] for f in flows) for d in range(out.dim())]
    labels, zero = [], []
    for o in operands:
        shape = list(joint)
        shape[dim] = o.shape[dim]
        if o.flow is not None:
            lab, z = tr.full(tr.aligned(o.flow, out.dim()), torch.Size(shape))
        else:
            lab = tr.pinned_like(torch.zeros(shape, dtype=torch.long), f"channels that "
                                 f"node '{n.name}' concatenates from a constant tensor")
            z = torch.ones(shape, dtype=torch.bool)
        labels.append(lab)
        zero.append(z)
    why = next((f.why for f in flows if f.why), "")
    return tr.compressed(torch.cat(labels, dim), torch.cat(zero, dim), why)


def _parts(tr: ChannelTracer, n: fx.Node) -> list[Operand]:
    """The tensors a cat / stack joins: a list of nodes, or one node holding a list
    (``torch.cat(x.chunk(2, 1)[::-1], 1)``)."""
    parts = n.args[0] if n.args else n.kwargs["tensors"]
    if isinstance(parts, fx.Node):
        flows, values = tr.flows.get(parts), tr.env[parts]
        return [Operand.of(f if isinstance(f, Flow) else None, v)
                for f, v in zip(flows or [None] * len(values), values)]
    return [Operand(tr, p, n) for p in parts]


def stack(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """A new axis of constant length: position ``i`` of every part is one channel."""
    args, kwargs = tr.concrete(n)
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % out.dim()
    operands = _parts(tr, n)
    inner = out.select(dim, 0)
    flow = combine(tr, n, inner, operands, "add", m)
    return Flow(flow.labels.unsqueeze(dim), flow.zero.unsqueeze(dim), flow.why)


# -- pad ----------------------------------------------------------------------------------------
def pad(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """F.pad and the pad layers (ZeroPad2d, ConstantPad2d, ReflectionPad2d, ...): on spatial
    dims each channel keeps its own border (zero stays zero for zero / reflect / replicate /
    circular padding). On the channel dim the pad widths are constants, so the channels on
    both sides are pinned (the "option A" shortcut of CIFAR ResNets)."""
    args, kwargs = tr.concrete(n)
    src, flow = _source(tr, n)
    if m is not None:
        widths, value = list(m.padding), getattr(m, "value", None)
        mode = next((k for k in ("reflect", "replicate", "circular")
                     if k in type(m).__name__.lower()), "constant")
    else:
        widths = list(kwargs.get("pad", args[1] if len(args) > 1 else ()))
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        value = kwargs.get("value", args[3] if len(args) > 3 else None)
    shape = tr.shape(src)
    f = tr.aligned(flow, len(shape))
    padded = [len(shape) - 1 - j for j in range(len(widths) // 2) if any(widths[2*j:2*j+2])]
    if any(f.labels.shape[d] > 1 for d in padded):
        reason = f"padded on channels by F.pad at node '{n.name}' (option-A shortcut)"
        tr.atoms.pin(f.labels, reason)
        # new pinned channels, one per position of the axes that carried channels (not one
        # per element: a layer reading the padded tensor must still see channels on one axis)
        small = [out.shape[d] if f.labels.shape[d] > 1 else 1 for d in range(out.dim())]
        labels = tr.pinned_like(torch.zeros(small, dtype=torch.long), reason)
        return tr.compressed(labels, torch.ones(small, dtype=torch.bool))
    if mode == "constant" and value not in (None, 0, 0.0):
        return f.with_zero(False, tr.why(n, f"pads with the constant {value}", m))
    return f


def replayed(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """An op that only moves values, with constant counts (``repeat_interleave(2, dim=1)``,
    ``pixel_unshuffle``): run it on the labels. Where one channel's values spread over an
    axis that carried no channels (``pixel_shuffle``: channel block -> space), that axis's
    positions of one output channel are made one channel, so the blocks are cut whole."""
    src, flow = _source(tr, n)
    if any(isinstance(a, (Tensor, fx.Node)) and a is not src
           for a in [*n.args[1:], *n.kwargs.values()]):
        return tr.opaque_rule(tr, n, out, m)        # counts given as a tensor: not constant
    labels, zero = _moved(tr, n, src, flow)
    before = tr.aligned(flow, len(tr.shape(src))).labels
    channel_axes = {d for d in range(min(labels.dim(), before.dim())) if before.shape[d] > 1}
    for d in range(labels.dim()):
        if labels.shape[d] > 1 and d not in channel_axes and channel_axes:
            tr.atoms.union_pairs(labels, labels.narrow(d, 0, 1))
    return tr.compressed(labels, zero, flow.why)


def channel_shuffle(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None) -> Flow:
    """``F.channel_shuffle`` / ``nn.ChannelShuffle``: view (N, g, C/g) -> transpose -> view;
    position j of every group is one channel, so the groups keep equal sizes."""
    args, _ = tr.concrete(n)
    src, flow = _source(tr, n)
    groups = m.groups if m is not None else args[1]
    shape = tr.shape(src)
    labels, zero = tr.full(flow, shape)
    grid = labels.reshape(shape[0], groups, shape[1] // groups, *shape[2:])
    tr.atoms.union_pairs(grid, grid.narrow(1, 0, 1))
    moved = grid.transpose(1, 2).reshape(shape)
    flags = zero.reshape(grid.shape).transpose(1, 2).reshape(shape)
    return tr.compressed(moved, flags, flow.why)


FUNCTIONS: dict[str, Any] = {
    **{name: permute for name in ("permute", "transpose", "transpose_", "movedim", "moveaxis",
                                  "swapaxes", "swapdims", "t")},
    **{name: unsqueeze_squeeze for name in ("unsqueeze", "squeeze", "unsqueeze_", "squeeze_")},
    **{name: expand for name in ("expand", "expand_as", "broadcast_to", "repeat", "tile")},
    **{name: reshape for name in ("view", "reshape", "flatten", "unflatten", "view_as",
                                  "reshape_as")},
    **{name: split for name in ("split", "chunk", "unbind", "split_with_sizes",
                                "tensor_split")},
    "flip": flip, "roll": roll, "getitem": getitem, "narrow": narrow_select,
    "select": narrow_select, "slice": aten_slice, "cat": cat, "concat": cat, "concatenate": cat, "stack": stack,
    "pad": pad, "channel_shuffle": channel_shuffle, "native_channel_shuffle": channel_shuffle,
    "repeat_interleave": replayed, "pixel_shuffle": replayed, "pixel_unshuffle": replayed,
}
MODULES: list[tuple[Any, Any]] = [
    ((nn.Flatten, nn.Unflatten), reshape),
    ((nn.ChannelShuffle,), channel_shuffle),
    ((nn.PixelShuffle, nn.PixelUnshuffle), replayed),
    ((nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
      nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd), pad),
]

"""Rules for ops that act on each value (activations) or pair values position by position
(``+``, ``*``: residual adds, gates, layer scales), and for reductions.

The question for every op: *if channel c is zero in the input, what is it in the output?*

* ``relu``, ``gelu``, ``tanh``, dropout, pooling ... map 0 to 0: the channel stays zero.
* ``sigmoid``, ``exp``, ``softmax``, ``x + 1`` do not (sigmoid(0) = 0.5): the output is
  marked *not zero when removed*. That is allowed only where it is multiplied by something
  that is zero -- the squeeze-and-excitation gate ``x * sigmoid(s)`` is exact because
  channel c of ``x`` is zero, whatever the gate says (Hu et al., 2018).
* ``a + b`` and ``a * b`` of two tensors with channels: channel c of ``a`` meets channel c of
  ``b``, so they are *one* channel from now on (the atoms are united). A tensor broadcast
  along the channels (a ``(N, 1, H, W)`` spatial map) cannot follow a cut: its channel is
  pinned, and the other side keeps its own channels.
* A parameter multiplied or added per channel (a layer scale ``gamma * x``, a position
  embedding) is cut with its channels and zeroed in the zero-mask twin.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx, nn

from ..flow import Flow, ParamFlow
from ..tracer import ChannelTracer, fn_name, in_place, op_name

__all__ = ["FUNCTIONS", "MODULES"]

# -- activations ------------------------------------------------------------------------------
#: Layers that act on each value separately and map 0 to 0 (or are the identity in eval mode).
ZERO_PRESERVING_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Tanh, nn.ELU, nn.SELU,
    nn.CELU, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
ZERO_PRESERVING = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "hardswish", "hardswish_", "leaky_relu",
    "leaky_relu_", "tanh", "tanh_", "elu", "elu_", "selu", "celu", "mish", "softsign",
    "tanhshrink", "hardshrink", "softshrink", "abs", "neg", "erf", "sin", "square", "sqrt",
    "sign", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "feature_alpha_dropout", "contiguous", "clone", "detach", "float", "double", "half",
    "bfloat16", "to", "type", "type_as", "cpu", "requires_grad_", "identity",
    "alias", "_to_copy", "lift_fresh_copy", "gelu_", "dropout_", "feature_dropout",
})
#: Activations with f(0) != 0: fine in a gate, refused where a layer reads them.
NONZERO_MODULES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus,
                                                nn.LogSigmoid)
NONZERO = frozenset({"sigmoid", "sigmoid_", "hardsigmoid", "softplus", "exp", "cos",
                     "logsigmoid"})
#: Ops that turn a zero into inf / nan: only where their channels are pinned.
SINGULAR = frozenset({"log", "reciprocal", "rsqrt", "log2", "log10"})


def zero_preserving(tr: ChannelTracer, n: fx.Node, out: Any,
                    m: nn.Module | None) -> Flow | None:
    """f(0) = 0, value by value: the channels and their zeros pass through."""
    return _same_shape(tr, n, out, m)


def nonzero_at_zero(tr: ChannelTracer, n: fx.Node, out: Any,
                    m: nn.Module | None) -> Flow | None:
    """f(0) != 0: the same channels, but a removed one is no longer zero."""
    flow = _same_shape(tr, n, out, m)
    return None if flow is None else flow.with_zero(False, tr.why(n, "f(0) != 0", m))


def singular(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow | None:
    flow = _same_shape(tr, n, out, m)
    if flow is not None:
        tr.require_pinned(flow.labels, n, "it maps 0 to inf, so a zeroed channel would poison "
                          "every value it meets", m)
    return flow


def _data(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Any:
    """The flow of the data argument; an op whose data is a constant but whose other
    arguments carry channels (``torch.pow(2, x)``) has no rule: opaque."""
    flow = _same_shape(tr, n, out, m)
    return flow if flow is not None else tr.opaque_rule(tr, n, out, m)


def clamp(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """hardtanh / clamp(min, max): maps 0 to 0 when min <= 0 <= max. A bound may be a tensor
    (per channel: a parameter is cut with the channels, and zeroed in the mask, where
    clamp(0, 0) = 0; a constant must allow 0 everywhere); a size used as a bound is pinned."""
    args, kwargs = tr.concrete(n)
    if m is not None:
        bounds = [m.min_val, m.max_val]
        nodes: list[Any] = [None, None]
    else:
        keys = (("min", "min_val"), ("max", "max_val"))
        nodes = [next((n.kwargs[k] for k in ks if k in n.kwargs), n.args[i + 1] if len(n.args)
                      > i + 1 else None) for i, ks in enumerate(keys)]
        bounds = [next((kwargs[k] for k in ks if k in kwargs), args[i + 1] if len(args) > i + 1
                       else None) for i, ks in enumerate(keys)]
    flow = _data(tr, n, out, m)
    if not isinstance(flow, Flow):
        return flow
    tensors = [Operand(tr, node, n) for node, b in zip(nodes, bounds) if isinstance(b, Tensor)]
    if tensors:                    # bounds per channel: cut with them, or pin where they vary
        zero = bool(flow.zero.all())
        flow = combine(tr, n, out, [Operand(tr, n.args[0]), *tensors], "add", m).with_zero(zero)
    ok = all(_allows_zero(b, i == 0) for i, b in enumerate(bounds))
    return flow if ok else flow.with_zero(False, tr.why(n, "clamps 0 to another value", m))


def _allows_zero(bound: Any, lower: bool) -> bool:
    """Does clamping keep 0 at 0 with this bound? (a parameter bound: its removed entries are
    zeroed in the mask, so only the constant ones matter)"""
    if bound is None:
        return True
    if isinstance(bound, Tensor):
        return bool((bound <= 0).all() if lower else (bound >= 0).all())
    return bound <= 0 if lower else bound >= 0


def prelu(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module) -> Flow:
    """PReLU maps 0 to 0; a per-channel slope is a parameter cut with its channels."""
    flow = _data(tr, n, out, m)
    if m.num_parameters > 1:
        atoms = tr.axis_atoms(n, flow, 1, m.num_parameters, m)
        tr.record_param(str(n.target), "weight", 0, atoms, n)
    return flow


def identity_in_eval(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """Stochastic depth / drop path: the identity in eval mode (``training`` is False)."""
    args, kwargs = tr.concrete(n)
    training = kwargs.get("training", args[3] if len(args) > 3 else True)
    if training:
        raise tr.refuse(n, "it is random in training mode; prunekit traces in eval mode", m)
    return _data(tr, n, out, m)


def _same_shape(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow | None:
    """The flow of the data argument (the first; a module's input), unchanged. ``None`` when
    the data is a constant that only takes another tensor's dtype or device (``torch.ones(s)
    .to(y)``): the result is a constant too, it does not inherit ``y``'s channels."""
    src = n.args[0] if n.args else next(iter(n.kwargs.values()), None)
    if not isinstance(src, fx.Node) or src not in tr.flows:
        return None
    flow = tr.flow(src)
    if flow is None or not isinstance(out, Tensor) or out.shape != tr.shape(src):
        raise tr.refuse(n, "it was expected to keep the shape of its input", m)
    return flow


def constant_like(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> None:
    """``torch.zeros_like(x)``, ``x.new_ones(...)``, ``x.new_full(shape, v)``: a new tensor
    that takes only a shape, dtype or device from ``x`` -- a constant, not ``x``'s channels.
    A fill value read from a size (``x.new_full(s, x.shape[1])``) is a size used as a number."""
    for arg in [*n.args, *n.kwargs.values()]:
        if isinstance(arg, fx.Node) and arg in tr.sizes and fn_name(n).endswith("full"):
            tr.size_as_number(arg, n)
    if fn_name(n).endswith("_like") and n.args:
        tr.shape_sources[n] = frozenset((n.args[0], d) for d in range(out.dim()))
    return None


CONSTANT_LIKE = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "rand_like",
                           "randn_like", "new_zeros", "new_ones", "new_empty", "new_full",
                           "new_tensor"})


# -- pooling and resizing: act on the trailing (spatial) dims, each channel alone -------------
POOLS = {f"{kind}pool{d}d{extra}": d for kind in ("max_", "avg_", "adaptive_max_",
                                                  "adaptive_avg_", "lp_")
         for d in (1, 2, 3) for extra in ("", "_with_indices")}
POOL_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)


def spatial(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Any:
    """Pooling / interpolation: per channel, over the last 1-3 dims (which must carry none).
    A pool that also returns the indices of its maxima gives them the same channels (not
    zero: an index is a position, not a value)."""
    if isinstance(out, (tuple, list)):
        values = spatial(tr, n, out[0], m)
        return [values, *[values.with_zero(False, tr.why(n, "the indices of the maxima", m))
                          for _ in out[1:]]]
    src = n.args[0] if n.args else None
    if not isinstance(src, fx.Node) or src not in tr.flows:
        return tr.opaque_rule(tr, n, out, m)
    flow, shape = tr.flow(src), tr.shape(src)
    name = type(m).__name__.lower() if m is not None else fn_name(n)
    dims = next((d for d in (1, 2, 3) if f"{d}d" in name), len(shape) - 2)
    labels, zero = tr.aligned(flow, len(shape)).labels, tr.aligned(flow, len(shape)).zero
    if any(s > 1 for s in labels.shape[len(shape) - dims:]):
        tr.require_pinned(labels, n, "it pools over dims that carry channels", m)
    if out.dim() != len(shape) or out.shape[:len(shape) - dims] != shape[:len(shape) - dims]:
        raise tr.refuse(n, "it changes the non-spatial dims", m)
    return Flow(labels, zero, flow.why)


# -- two operands: a + b, a * b, x * gate, gamma * x ------------------------------------------
_BINARY = {"add": "add", "add_": "add", "iadd": "add", "sub": "sub", "sub_": "sub",
           "isub": "sub", "rsub": "rsub", "mul": "mul", "mul_": "mul", "imul": "mul",
           "multiply": "mul", "div": "div", "div_": "div", "truediv": "div", "itruediv": "div",
           "true_divide": "div"}


class Operand:
    """One input of a position-wise op: a tensor with channels (``flow``), a parameter
    (``param``), another tensor, or a Python number."""

    def __init__(self, tr: ChannelTracer, arg: Any, n: fx.Node | None = None) -> None:
        if n is not None and isinstance(arg, fx.Node) and arg in tr.sizes:
            tr.size_as_number(arg, n)                  # x / x.shape[1]: pinned
        self.flow: Flow | None = tr.flow(arg)
        self.param: ParamFlow | None = tr.params.get(arg) if isinstance(arg, fx.Node) else None
        value = tr.env[arg] if isinstance(arg, fx.Node) else arg
        self.tensor: Tensor | None = value if isinstance(value, Tensor) else None
        self.number: Any = None if self.tensor is not None else value
        self.shape: tuple[int, ...] = tuple(self.tensor.shape) if self.tensor is not None else ()
        self.node = arg if isinstance(arg, fx.Node) else None

    @classmethod
    def of(cls, flow: Flow | None, value: Any) -> Operand:
        """An operand from a flow and a value directly (one element of a list-valued node)."""
        o = cls.__new__(cls)
        o.flow, o.param, o.node = flow, None, None
        o.tensor = value if isinstance(value, Tensor) else None
        o.number = None if o.tensor is not None else value
        o.shape = tuple(o.tensor.shape) if o.tensor is not None else ()
        return o


def binary(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """Position-wise ``a (op) b`` with broadcasting (see the module doc)."""
    op = _BINARY[fn_name(n)]
    raw = list(n.args[:2]) + [n.kwargs[k] for k in ("other",) if k in n.kwargs]
    a, b = [Operand(tr, x, n) for x in raw[:2]]
    if op == "rsub":
        a, b, op = b, a, "sub"
    if not isinstance(out, Tensor):
        raise tr.refuse(n, "it does not return a tensor", m)
    if not n.users and not in_place(n, m):
        raise tr.refuse(n, "its result is never used: if it is an update in place such as "
                        "`y += 1`, torch.fx traced it as `y + 1` and the update is invisible; "
                        "write `y = y + 1`", m)
    if op == "div":
        _divisor(tr, n, b, m)
    return combine(tr, n, out, [a, b], "mul" if op in ("mul", "div") else "add", m,
                   divisor=b if op == "div" else None)


def _divisor(tr: ChannelTracer, n: fx.Node, b: Operand, m: nn.Module | None) -> None:
    """``a / b``: where ``b`` would be zero for a removed channel the masked model divides by
    zero (pinned); a per-channel parameter we divide by is cut but never zeroed in the mask
    (``a`` is zero there already: 0 / g = 0, while 0 / 0 would be NaN)."""
    if b.flow is not None:
        tr.require_pinned(b.flow.labels[b.flow.zero], n, "it divides by channels: a removed "
                          "channel would divide by zero", m)
    if b.param is not None:
        tr.divisors.add((b.param.owner, b.param.name))


def combine(tr: ChannelTracer, n: fx.Node, out: Tensor, operands: list[Operand], op: str,
            m: nn.Module | None, divisor: Operand | None = None) -> Flow:
    """The channels of ``out`` when the operands meet position by position. ``op`` is
    "mul" (zero if any factor is zero) or "add" (zero only if every term is zero). A
    ``divisor`` never makes the result zero."""
    ndim = out.dim()
    flows = [(o, tr.aligned(o.flow, ndim)) for o in operands if o.flow is not None]
    tracked = sorted({d for _, f in flows for d in range(ndim) if f.labels.shape[d] > 1})
    joint = [out.shape[d] if d in tracked else 1 for d in range(ndim)]
    active, contributions = [], []
    for o, f in flows:
        real = [1] * (ndim - len(o.shape)) + list(o.shape)
        if any(real[d] == 1 and out.shape[d] > 1 for d in tracked):
            tr.atoms.pin(f.labels, f"broadcast across the channels of another tensor at node "
                         f"'{n.name}' ({op_name(n, m)})")
            contributions.append(torch.zeros((), dtype=torch.bool))  # never removed, not 0
        else:
            active.append(Flow(f.labels.expand(joint), f.zero.expand(joint), f.why))
            contributions.append(active[-1].zero if o is not divisor else
                                 torch.zeros((), dtype=torch.bool))
    base = active[0] if active else flows[0][1]
    for other in active[1:]:
        tr.atoms.union_pairs(base.labels, other.labels)
    for o in operands:
        if o.param is not None:
            cut = _param_operand(tr, n, o.param, base, out, joint)
            contributions.append(cut if o is not divisor else torch.zeros((), dtype=torch.bool))
        elif o.flow is None and o.tensor is not None:
            contributions.append(_constant_operand(tr, n, o, base, tracked, out))
        elif o.flow is None:
            contributions.append(torch.tensor(_is_zero(o.number) and o is not divisor))
    zero = contributions[0]
    for c in contributions[1:]:
        zero = (zero | c) if op == "mul" else (zero & c)
    zero = torch.broadcast_to(zero, base.labels.shape).clone()
    why = next((f.why for _, f in flows if f.why), "") or tr.why(n, "adds a value that is "
                                                                "not zero", m)
    return tr.compressed(base.labels.clone(), zero, why)


def _is_zero(number: Any) -> bool:
    return isinstance(number, (int, float)) and number == 0


def _param_operand(tr: ChannelTracer, n: fx.Node, p: ParamFlow, base: Flow, out: Tensor,
                   joint: list[int]) -> Tensor:
    """A parameter meets channels: cut it along the axis that carries them (and zero it in
    the zero-mask twin), or pin the channels if it does not line up with one axis."""
    ids = p.ids
    while ids.dim() < out.dim():
        ids = ids.unsqueeze(0)
    tracked = [d for d in range(out.dim()) if joint[d] > 1]
    varying = [d for d in tracked if ids.shape[d] > 1]
    if not varying:
        return torch.zeros((), dtype=torch.bool)    # one value for all channels: not zeroed
    axis = _param_axis(ids, varying, p.shape)
    if axis is None:
        tr.atoms.pin(base.labels, f"combined with parameter '{p.owner}.{p.name}' in a layout "
                     f"prunekit cannot cut (node '{n.name}')")
        return torch.zeros((), dtype=torch.bool)
    d = varying[0]
    atoms = base.labels.expand(joint).movedim(d, 0).reshape(joint[d], -1)[:, 0].clone()
    tr.record_param(p.owner, p.name, axis, atoms, n)
    return torch.ones((), dtype=torch.bool)


def _param_axis(ids: Tensor, varying: list[int], shape: tuple[int, ...]) -> int | None:
    """The parameter axis laid, whole and in order, along the one tensor dim that varies."""
    if len(varying) != 1 or not shape:
        return None
    d = varying[0]
    line = ids.movedim(d, 0).reshape(ids.shape[d], -1)[:, 0]
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    for axis, (size, stride) in enumerate(zip(shape, strides)):
        if size == len(line) and torch.equal(line - line[0], torch.arange(size) * stride):
            return axis
    return None


def _constant_operand(tr: ChannelTracer, n: fx.Node, o: Operand, base: Flow,
                      tracked: list[int], out: Tensor) -> Tensor:
    """A tensor computed in forward() that is not a parameter: per channel it cannot be cut,
    so channels it varies along are pinned -- and so are the channels whose sizes it was
    built from (``torch.ones(x.size())``), which would change its shape; it is not known to
    be zero."""
    shape = [1] * (out.dim() - len(o.shape)) + list(o.shape)
    if any(shape[d] > 1 for d in tracked):
        tr.atoms.pin(base.labels, f"combined position by position with a constant tensor "
                     f"computed in forward() (node '{n.name}')")
    tr.pin_shape_sources(o.node, n)
    return torch.zeros((), dtype=torch.bool)


# -- reductions -------------------------------------------------------------------------------
REDUCTIONS = frozenset({"mean", "sum", "amax", "amin", "std", "var", "nanmean", "nansum"})


def reduction(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """mean / sum / amax over some dims. Over dims without channels (global pooling): the
    channels pass. Over the channels: a sum is exact if removed channels are zero; a mean or
    max is not (it would divide by a different count / see a different set)."""
    args, kwargs = tr.concrete(n)
    src = n.args[0]
    flow, shape = tr.flow(src), tr.shape(src)
    dims = kwargs.get("dim", args[1] if len(args) > 1 and not isinstance(args[1], bool)
                      else None)
    ndim = len(shape)
    keep = isinstance(out, Tensor) and out.dim() == ndim       # whatever the argument order
    dims = list(range(ndim)) if dims is None or dims == [] else (
        [dims] if isinstance(dims, int) else list(dims))
    dims = sorted(d % ndim for d in dims)
    f = tr.aligned(flow, ndim)
    over_channels = [d for d in dims if f.labels.shape[d] > 1]
    if over_channels:
        norm = _norm_module(n) if tr.baked else None
        if norm and fn_name(n) in ("mean", "var", "std", "nanmean", "sum"):
            reason = (f"normalised together by {norm[1]} '{norm[0]}': removing a channel "
                      "changes the statistic the others are divided by, so removing is not "
                      "zeroing")
            tr.atoms.pin(f.labels, reason)
            tr.approximable.add(reason)     # its gamma is a per-channel parameter: cuttable
        elif fn_name(n) in ("sum", "nansum"):
            tr.require_zero(f, n, m)
        else:
            tr.require_pinned(f.labels, n, "it reduces over the channel dimension", m)
        labels = tr.pinned_like(torch.zeros([1] * out.dim(), dtype=torch.long),
                                f"result of reducing over channels at node '{n.name}'")
        return Flow(labels, torch.ones(labels.shape, dtype=torch.bool))
    labels, zero = f.labels, f.zero
    if not keep:
        for d in reversed(dims):
            labels, zero = labels.squeeze(d), zero.squeeze(d)
    return Flow(labels, zero, f.why)


def _norm_module(n: fx.Node) -> tuple[str, str] | None:
    """``(path, class)`` of the normalisation layer whose ``forward`` computed reduction ``n``
    -- a hand-written RMSNorm / LayerNorm of a Hugging Face model (``LlamaRMSNorm``: pow,
    mean, rsqrt, mul), as an exported graph records it -- or None."""
    from ..export import module_stack

    stack = module_stack(n)
    if stack and "norm" in stack[-1][1].lower():
        return stack[-1]
    return None


def softmax(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """softmax over dims without channels (attention over tokens): same channels, not zero.
    Over the channels: refused (every output depends on every channel)."""
    args, kwargs = tr.concrete(n)
    dim = m.dim if m is not None else kwargs.get("dim", args[1] if len(args) > 1 else None)
    flow = _data(tr, n, out, m)
    if not isinstance(flow, Flow):
        return flow
    f = tr.aligned(flow, out.dim())
    if dim is None or f.labels.shape[dim % out.dim()] > 1:
        tr.require_pinned(f.labels, n, "it normalises over the channel dimension", m)
    return f.with_zero(False, tr.why(n, "softmax is never zero", m))


def power(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """x ** p: 0 stays 0 for p > 0."""
    args, _ = tr.concrete(n)
    flow = _data(tr, n, out, m)
    if isinstance(flow, Flow) and not (isinstance(args[1], (int, float)) and args[1] > 0):
        tr.require_pinned(flow.labels, n, "only x ** p with a constant p > 0 keeps 0 at 0", m)
        if isinstance(n.args[1], fx.Node) and n.args[1] in tr.sizes:
            tr.size_as_number(n.args[1], n)
    return flow


def elementwise_extreme(tr: ChannelTracer, n: fx.Node, out: Any, m: nn.Module | None) -> Flow:
    """``torch.maximum(a, b)`` / ``minimum``: position by position like ``a + b`` (channel c of
    both is one channel), and zero where both are zero."""
    operands = [Operand(tr, x, n) for x in list(n.args[:2]) + list(n.kwargs.values())[:2]]
    return combine(tr, n, out, operands[:2], "add", m)


FUNCTIONS = {
    **{name: elementwise_extreme for name in ("maximum", "minimum", "fmax", "fmin")},
    **{name: zero_preserving for name in ZERO_PRESERVING},
    **{name: nonzero_at_zero for name in NONZERO},
    **{name: singular for name in SINGULAR},
    **{name: spatial for name in (*POOLS, "interpolate", "upsample")},
    **{name: binary for name in _BINARY},
    **{name: reduction for name in REDUCTIONS},
    "hardtanh": clamp, "hardtanh_": clamp, "clamp": clamp, "clip": clamp,
    "softmax": softmax, "log_softmax": softmax, "softmin": softmax,
    "pow": power,
    "stochastic_depth": identity_in_eval,
    **{name: constant_like for name in CONSTANT_LIKE},
}
MODULES: list[tuple[Any, Any]] = [
    (ZERO_PRESERVING_MODULES, zero_preserving),
    (NONZERO_MODULES, nonzero_at_zero),
    (POOL_MODULES, spatial),
    ((nn.Hardtanh,), clamp),
    ((nn.PReLU,), prelu),
    ((nn.Softmax, nn.LogSoftmax, nn.Softmin), softmax),
]

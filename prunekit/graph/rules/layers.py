"""Rules for layers with weights: conv, linear, BatchNorm -- and the norms that pin.

=========================  ==============================================================
conv / linear              creates a fresh set of channels (its output rows); reads its
                           input's channels (input columns), which must be zero when removed
depthwise conv             output channel ``c`` IS input channel ``c`` (rows = channels,
(groups == in_channels)    ``groups`` shrinks with them); with a channel multiplier ``k``
                           each input channel owns ``k`` rows
grouped conv               inputs and outputs are cut in equal numbers per group ("blocks"),
(1 < groups < channels)    so ``groups`` stays and every group keeps the same width
BatchNorm, InstanceNorm    per channel: gamma, beta and running statistics go with it
LayerNorm, GroupNorm,      every output depends on the mean and variance of *all* the
RMSNorm, LocalResponseNorm channels it normalises, so removing one is not zeroing it: those
                           channels are **pinned** (the MLP inside a transformer block is not)
=========================  ==============================================================

The same rules hold when a module's ``forward`` calls ``F.conv2d`` / ``F.linear`` /
``F.batch_norm`` / ``F.layer_norm`` on its own parameters (subclasses such as timm's
``BatchNormAct2d``, which fx traces *into*): the parameters arrive as ``get_attr`` nodes and
the layer cut is their owner.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, fx, nn

from ..flow import Flow
from ..tracer import ChannelTracer

__all__ = ["FUNCTIONS", "MODULES"]

ConvNd = nn.modules.conv._ConvNd
BatchNorm = nn.modules.batchnorm._BatchNorm
InstanceNorm = nn.modules.instancenorm._InstanceNorm


# -- conv -------------------------------------------------------------------------------------
def conv_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    if m.transposed:
        return tr.opaque_rule(tr, n, out, m)
    return conv(tr, n, out, str(n.target), m, n.args[0], m.groups)


def conv_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.conv2d(x, self.weight, self.bias, stride, padding, dilation, groups)``."""
    owner = _owner(tr, n, 1, ("weight",), ConvNd)
    args, kwargs = tr.concrete(n)
    groups = kwargs.get("groups", args[6] if len(args) > 6 else 1)
    return conv(tr, n, out, owner, tr.model.get_submodule(owner), n.args[0], groups)


def conv(tr: ChannelTracer, n: fx.Node, out: Tensor, name: str, m: nn.Module,
         src: fx.Node, groups: int) -> Flow:
    flow = tr.flow(src)
    if flow is None:
        raise tr.refuse(n, "its input does not carry the model's channels", m)
    cin, cout = tr.shape(src)[1], out.shape[1]
    atoms_in = tr.axis_atoms(n, flow, 1, cin, m)
    kernel = math.prod(m.weight.shape[2:])
    positions = out.numel() // cout
    if groups == cin > 1:                            # depthwise: output c = input c
        rows = atoms_in.repeat_interleave(cout // cin)
        tr.kinds[name] = "dwconv"
        tr.record(name, "out", rows, n)
        tr.mac(positions * cout * kernel, rows)
        return Flow.along(rows, 1, out.dim())
    tr.require_zero(flow, n, m)
    atoms_out = tr.fresh(name, cout)
    tr.kinds[name] = "conv" if groups == 1 else "gconv"
    tr.record(name, "in", atoms_in, n)
    tr.record(name, "out", atoms_out, n)
    if groups > 1:                                   # equal cuts per group, groups unchanged
        tr.atoms.block(atoms_in, groups, name)
        tr.atoms.block(atoms_out, groups, name)
    tr.mac(positions * cout * cin // groups * kernel, atoms_out[:, None], atoms_in[None, :])
    return Flow.along(atoms_out, 1, out.dim())


# -- linear -----------------------------------------------------------------------------------
def linear_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    return linear(tr, n, out, str(n.target), m)


def linear_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.linear(x, self.weight, self.bias)``."""
    owner = _owner(tr, n, 1, ("weight",), nn.Linear)
    return linear(tr, n, out, owner, tr.model.get_submodule(owner))


def linear(tr: ChannelTracer, n: fx.Node, out: Tensor, name: str, m: nn.Module) -> Flow:
    """A linear layer reads the LAST dim: ``(N, features)`` or tokens ``(N, T, C)``."""
    src = n.args[0]
    flow = tr.flow(src)
    if flow is None:
        raise tr.refuse(n, "its input does not carry the model's channels", m)
    cin, cout = m.in_features, m.out_features
    atoms_in = tr.axis_atoms(n, flow, -1, cin, m)
    tr.require_zero(flow, n, m)
    atoms_out = tr.fresh(name, cout)
    tr.kinds[name] = "linear"
    tr.record(name, "in", atoms_in, n)
    tr.record(name, "out", atoms_out, n)
    tr.mac(out.numel() * cin, atoms_out[:, None], atoms_in[None, :])
    return Flow.along(atoms_out, out.dim() - 1, out.dim())


# -- BatchNorm and InstanceNorm: one scale and shift per channel ------------------------------
def batchnorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    return batchnorm(tr, n, out, str(n.target), m)


def batchnorm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, ...)`` on a module's own
    tensors (a BatchNorm subclass whose forward fx traces into)."""
    owner = _owner(tr, n, 1, ("running_mean",), nn.Module)
    names = [a.target.rpartition(".")[2] for a in n.args[1:5] if isinstance(a, fx.Node)]
    if any(a.target.rpartition(".")[0] != owner for a in n.args[1:5] if isinstance(a, fx.Node)) \
            or not set(names) <= {"running_mean", "running_var", "weight", "bias"}:
        raise tr.refuse(n, "its statistics and affine parameters are not those of one module")
    return batchnorm(tr, n, out, owner, tr.model.get_submodule(owner))


def batchnorm(tr: ChannelTracer, n: fx.Node, out: Tensor, name: str, m: nn.Module) -> Flow:
    src = n.args[0]
    flow = tr.flow(src)
    atoms = tr.axis_atoms(n, flow, 1, tr.shape(src)[1], m)
    tr.kinds[name] = "bn"
    tr.record(name, "out", atoms, n)
    affine = getattr(m, "weight", None) is not None
    # gamma = beta = 0 for a removed channel: its output is 0 whatever came in
    zero = True if affine else tr.aligned(flow, out.dim()).zero
    result = Flow.along(atoms, 1, out.dim())
    return result.with_zero(zero, flow.why)


def instancenorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    if m.affine or m.track_running_stats:
        return batchnorm(tr, n, out, str(n.target), m)
    return tr.flow(n.args[0])                     # (0 - 0) / sqrt(0 + eps) = 0


# -- norms over several channels: pin -----------------------------------------------------------
def _pin_normalised(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None,
                    what: str, dims: list[int], has_bias: bool) -> Flow:
    flow = tr.aligned(tr.flow(n.args[0]), out.dim())
    if any(flow.labels.shape[d % out.dim()] > 1 for d in dims):
        tr.atoms.pin(flow.labels, f"normalised together by {what} '{_where(n, m)}': removing "
                     "a channel changes the mean and variance the others see, so removing "
                     "is not zeroing")
        return flow
    if has_bias:     # normalises each channel alone; a zero channel becomes the bias
        return flow.with_zero(False, tr.why(n, "a zero slice is normalised to its bias", m))
    return flow


def _where(n: fx.Node, m: nn.Module | None) -> str:
    return str(n.target) if m is not None else n.name


def layernorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    dims = list(range(-len(m.normalized_shape), 0))
    bias = getattr(m, "bias", None) is not None
    return _pin_normalised(tr, n, out, m, f"{type(m).__name__}", dims, bias)


def groupnorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    return _pin_normalised(tr, n, out, m, type(m).__name__, list(range(1, out.dim())), True)


def layernorm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    args, kwargs = tr.concrete(n)
    shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else ())
    dims = list(range(-len(shape), 0))
    bias = kwargs.get("bias", args[3] if len(args) > 3 else None) is not None
    what = "RMSNorm (F.rms_norm)" if "rms" in str(n.target) else "LayerNorm (F.layer_norm)"
    return _pin_normalised(tr, n, out, None, what, dims, bias)


def groupnorm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    what = "GroupNorm (F.group_norm)" if "group" in str(n.target) else "LocalResponseNorm"
    return _pin_normalised(tr, n, out, None, what, list(range(1, out.dim())), True)


# -- helpers ----------------------------------------------------------------------------------
def _owner(tr: ChannelTracer, n: fx.Node, index: int, names: tuple[str, ...],
           kind: type) -> str:
    """The module whose parameter is argument ``index`` of a functional call."""
    arg = n.args[index] if len(n.args) > index else None
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        raise tr.refuse(n, "its weight is computed in forward(), not a module's parameter")
    owner, _, name = str(arg.target).rpartition(".")
    if name not in names or not isinstance(tr.model.get_submodule(owner), kind):
        raise tr.refuse(n, f"its weight '{arg.target}' is not the {names[0]} of a "
                        f"{kind.__name__} layer")
    return owner


FUNCTIONS: dict[str, Any] = {
    "conv1d": conv_function, "conv2d": conv_function, "conv3d": conv_function,
    "linear": linear_function, "batch_norm": batchnorm_function,
    "layer_norm": layernorm_function, "rms_norm": layernorm_function,
    "group_norm": groupnorm_function, "local_response_norm": groupnorm_function,
}
MODULES: list[tuple[Any, Any]] = [
    ((ConvNd,), conv_module),
    ((nn.Linear,), linear_module),
    ((BatchNorm,), batchnorm_module),
    ((InstanceNorm,), instancenorm_module),
    ((nn.LayerNorm, nn.RMSNorm), layernorm_module),
    ((nn.GroupNorm, nn.LocalResponseNorm), groupnorm_module),
]

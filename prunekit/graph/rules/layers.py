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
        return conv_transpose(tr, n, out, str(n.target), m)
    return conv(tr, n, out, str(n.target), m, n.args[0], m.groups)


def conv_transpose(tr: ChannelTracer, n: fx.Node, out: Tensor, name: str, m: nn.Module) -> Flow:
    """ConvTranspose: weight ``(in, out/groups, *kernel)`` -- input channels are rows of dim
    0, output channels columns of dim 1. Cut like a conv with the two dims swapped; a grouped
    one keeps both sides (its blocks would need cuts inside each group's columns)."""
    src = n.args[0]
    flow = tr.flow(src)
    if flow is None:
        raise tr.refuse(n, "its input does not carry the model's channels", m)
    cin, cout = m.in_channels, m.out_channels
    atoms_in = tr.axis_atoms(n, flow, 1, cin, m)
    tr.require_zero(flow, n, m)
    atoms_out = tr.fresh(name, cout)
    tr.kinds[name] = "convT"
    tr.record(name, "in", atoms_in, n)
    tr.record(name, "out", atoms_out, n)
    if m.groups > 1:
        why = f"grouped ConvTranspose '{name}' (prunekit cuts ConvTranspose with groups=1)"
        tr.atoms.pin(atoms_in, why)
        tr.atoms.pin(atoms_out, why)
    positions = tr.shape(src).numel() // cin
    kernel = math.prod(m.weight.shape[2:])
    tr.mac(positions * cin * cout // m.groups * kernel, atoms_out[:, None], atoms_in[None, :])
    return Flow.along(atoms_out, 1, out.dim())


def conv_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.conv2d(x, self.weight, self.bias, stride, padding, dilation, groups)``."""
    owner = _owner(tr, n, 1, ("weight",), ConvNd)
    _own_bias(tr, n, owner)
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
    _own_bias(tr, n, owner)
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


# -- Hugging Face's Conv1D: a linear layer stored transposed -----------------------------------
def is_conv1d(m: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D``: ``weight`` is ``(in, out)`` and
    ``forward`` is ``addmm(bias, x.view(-1, in), weight)`` -- a Linear with its weight
    transposed (named after OpenAI's original code, not a convolution)."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and isinstance(
        getattr(m, "weight", None), Tensor) and m.weight.dim() == 2


def addmm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``addmm(bias, x, weight)`` of a Conv1D on its own parameters: its input's channels are
    the weight's rows, its output channels the weight's columns (kind ``linear_t``)."""
    weight = n.args[2] if len(n.args) > 2 else None
    owner = _owner(tr, n, 2, ("weight",), nn.Module)
    layer = tr.model.get_submodule(owner)
    if not is_conv1d(layer):
        return tr.opaque_rule(tr, n, out, m)
    bias = n.args[0]
    if not (isinstance(bias, fx.Node) and bias.op == "get_attr" and
            str(bias.target) == f"{owner}.bias") or not isinstance(weight, fx.Node):
        raise tr.refuse(n, f"its bias is not the bias of '{owner}', whose weight it uses")
    src = n.args[1]
    flow = tr.flow(src)
    if flow is None:
        raise tr.refuse(n, "its input does not carry the model's channels")
    cin, cout = layer.weight.shape
    atoms_in = tr.axis_atoms(n, flow, -1, cin)
    tr.require_zero(flow, n)
    atoms_out = tr.fresh(owner, cout)
    tr.kinds[owner] = "linear_t"
    tr.record(owner, "in", atoms_in, n)
    tr.record(owner, "out", atoms_out, n)
    tr.mac(out.numel() * cin, atoms_out[:, None], atoms_in[None, :])
    return Flow.along(atoms_out, out.dim() - 1, out.dim())


# -- embeddings: a table whose columns are channels ------------------------------------------
def embedding_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    return _embedding(tr, n, out, str(n.target), m)


def embedding_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.embedding(ids, self.weight)`` / ``aten.embedding(self.weight, ids)``: the table is
    the weight argument that is a module's parameter."""
    index = 0 if isinstance(n.args[0], fx.Node) and n.args[0].op == "get_attr" else 1
    owner = _owner(tr, n, index, ("weight",), nn.Embedding)
    return _embedding(tr, n, out, owner, tr.model.get_submodule(owner))


def _embedding(tr: ChannelTracer, n: fx.Node, out: Tensor, name: str, m: nn.Module) -> Flow:
    """Looking up token ids creates ``embedding_dim`` channels: column ``c`` of the table is
    channel ``c`` of every looked-up vector (kind ``embedding``; the ids are not channels)."""
    atoms = tr.fresh(name, m.weight.shape[1])
    tr.kinds[name] = "embedding"
    tr.record(name, "out", atoms, n)
    return Flow.along(atoms, out.dim() - 1, out.dim())


# -- BatchNorm and InstanceNorm: one scale and shift per channel ------------------------------
def batchnorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    return batchnorm(tr, n, out, str(n.target), m)


def batchnorm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    """``F.batch_norm(x, running_mean, running_var, weight, bias, training, ...)`` on one
    module's own tensors (a BatchNorm subclass whose forward fx traces into). With batch
    statistics (``training=True``) each channel is still normalised on its own."""
    tensors = [_arg(n, i, k) for i, k in enumerate(("running_mean", "running_var", "weight",
                                                     "bias"), start=1)]
    given = [a for a in tensors if a is not None]
    if not all(isinstance(a, fx.Node) and a.op == "get_attr" for a in given):
        raise tr.refuse(n, "its statistics or affine parameters are computed in forward(), "
                        "not a module's own tensors")
    if not given:
        return tr.flow(n.args[0])              # (x - mean) / std per channel: 0 stays 0
    owners = {str(a.target).rpartition(".")[0] for a in given}
    names = {str(a.target).rpartition(".")[2] for a in given}
    module = tr.model.get_submodule(next(iter(owners)))
    if not isinstance(module, nn.modules.batchnorm._NormBase) and tensors[0] is None and \
            tensors[1] is None:
        return _affine_params(tr, n, out, tensors[2], tensors[3])
    if len(owners) != 1 or not names <= {"running_mean", "running_var", "weight", "bias"}:
        raise tr.refuse(n, "its statistics and affine parameters are not those of one module")
    return batchnorm(tr, n, out, owners.pop(), module)


def _affine_params(tr: ChannelTracer, n: fx.Node, out: Tensor, weight: Any, bias: Any) -> Flow:
    """Batch statistics and a scale / shift that are plain parameters of some module: the
    normalisation is per channel (0 stays 0), the parameters are cut with the channels and
    zeroed in the mask (then 0 * 0 + 0 = 0)."""
    flow = tr.flow(n.args[0])
    atoms = tr.axis_atoms(n, flow, 1, tr.shape(n.args[0])[1])
    for arg in (weight, bias):
        if arg is not None:
            p = tr.params[arg]
            tr.record_param(p.owner, p.name, 0, atoms, n)
    result = Flow.along(atoms, 1, out.dim())
    return result.with_zero(True if weight is not None else tr.aligned(flow, out.dim()).zero,
                            flow.why)


def _arg(n: fx.Node, index: int, key: str) -> Any:
    return n.args[index] if len(n.args) > index else n.kwargs.get(key)


def _own_bias(tr: ChannelTracer, n: fx.Node, owner: str) -> None:
    """A functional conv / linear must use its weight's own bias (or none): a bias from
    elsewhere would not be cut with the rows."""
    bias = _arg(n, 2, "bias")
    if bias is not None and (not isinstance(bias, fx.Node) or bias.op != "get_attr" or
                             str(bias.target) != f"{owner}.bias"):
        name = bias.target if isinstance(bias, fx.Node) and bias.op == "get_attr" else \
            getattr(bias, "name", bias)
        raise tr.refuse(n, f"its bias '{name}' is not the bias of '{owner}', whose weight it "
                        "uses; a cut of the weight's rows would not cut it")


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
    """Per channel, like BatchNorm (with or without affine parameters: a zero channel is
    normalised to (0 - 0) / sqrt(0 + eps) = 0); cut so ``num_features`` follows."""
    return batchnorm(tr, n, out, str(n.target), m)


# -- norms over several channels: pin -----------------------------------------------------------
def _pin_normalised(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module | None,
                    what: str, dims: list[int], has_bias: bool, owner: str | None = None) -> Flow:
    flow = tr.aligned(tr.flow(n.args[0]), out.dim())
    if any(flow.labels.shape[d % out.dim()] > 1 for d in dims):
        where = what if m is None and "'" in what else f"{what} '{_where(n, m)}'"
        reason = (f"normalised together by {where}: removing a channel changes the mean and "
                  "variance the others see, so removing is not zeroing")
        tr.atoms.pin(flow.labels, reason)
        name = str(n.target) if m is not None else owner
        if tr.approximate and name is not None and dims == [-1] and \
                _record_norm(tr, n, name, flow):
            tr.approximable.add(reason)
        return flow
    if has_bias:     # normalises each channel alone; a zero channel becomes the bias
        return flow.with_zero(False, tr.why(n, "a zero slice is normalised to its bias", m))
    return flow


def _record_norm(tr: ChannelTracer, n: fx.Node, name: str, flow: Flow) -> bool:
    """Record a LayerNorm / RMSNorm over the last dim as a layer of kind ``norm`` (its gamma
    and beta run along the channels it normalises), so it is cut with the channels whose pin
    is lifted on request (``approximate=True``: Minitron); listed in the group then."""
    layer = tr.model.get_submodule(name)
    weight = getattr(layer, "weight", None)
    labels = flow.labels
    if not isinstance(weight, Tensor) or weight.dim() != 1 or \
            any(s > 1 for s in labels.shape[:-1]) or labels.shape[-1] not in (1, len(weight)):
        return False
    atoms = labels.reshape(-1).expand(len(weight)).clone()
    tr.kinds[name] = "norm"
    tr.record(name, "out", atoms, n)
    return True


def _where(n: fx.Node, m: nn.Module | None) -> str:
    return str(n.target) if m is not None else n.name


def layernorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    dims = list(range(-len(m.normalized_shape), 0))
    bias = getattr(m, "bias", None) is not None
    return _pin_normalised(tr, n, out, m, f"{type(m).__name__}", dims, bias)


def groupnorm_module(tr: ChannelTracer, n: fx.Node, out: Tensor, m: nn.Module) -> Flow:
    """GroupNorm normalises each group of channels together (pinned) -- unless every group is
    one channel (``GroupNorm(C, C)``): then it is InstanceNorm, cut per channel."""
    if isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels:
        return batchnorm(tr, n, out, str(n.target), m)
    return _pin_normalised(tr, n, out, m, type(m).__name__, list(range(1, out.dim())), True)


def layernorm_function(tr: ChannelTracer, n: fx.Node, out: Tensor, m: None) -> Flow:
    args, kwargs = tr.concrete(n)
    shape = kwargs.get("normalized_shape", args[1] if len(args) > 1 else ())
    dims = list(range(-len(shape), 0))
    bias = kwargs.get("bias", args[3] if len(args) > 3 else None) is not None
    what = "RMSNorm (F.rms_norm)" if "rms" in str(n.target) else "LayerNorm (F.layer_norm)"
    weight = _arg(n, 2, "weight")
    owner = None
    if isinstance(weight, fx.Node) and weight.op == "get_attr":      # name the layer
        owner = str(weight.target).rpartition(".")[0]
        what = f"{type(tr.model.get_submodule(owner)).__name__} '{owner}'"
        if str(weight.target).rpartition(".")[2] != "weight" or (
                bias and not _is_own(_arg(n, 3, "bias"), owner)):
            owner = None
    return _pin_normalised(tr, n, out, None, what, dims, bias, owner)


def _is_own(arg: Any, owner: str) -> bool:
    return isinstance(arg, fx.Node) and arg.op == "get_attr" and \
        str(arg.target) == f"{owner}.bias"


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
    "linear": linear_function, "batch_norm": batchnorm_function, "addmm": addmm_function,
    "embedding": embedding_function,
    "instance_norm": batchnorm_function,
    "layer_norm": layernorm_function, "rms_norm": layernorm_function,
    "group_norm": groupnorm_function, "local_response_norm": groupnorm_function,
}
MODULES: list[tuple[Any, Any]] = [
    ((ConvNd,), conv_module),
    ((nn.Linear,), linear_module),
    ((nn.Embedding,), embedding_module),
    ((BatchNorm,), batchnorm_module),
    ((InstanceNorm,), instancenorm_module),
    ((nn.LayerNorm, nn.RMSNorm), layernorm_module),
    ((nn.GroupNorm, nn.LocalResponseNorm), groupnorm_module),
]

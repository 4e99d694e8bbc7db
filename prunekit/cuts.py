"""Cutting one layer: a new, smaller copy built by ``index_select`` -- a few lines per kind.

* **Conv** ``weight[out, in/groups, *kernel]``: keep rows (output channels) and columns
  (input channels); ``bias[out]`` follows the rows. A depthwise conv has one row per channel
  (``k`` with a channel multiplier) and ``groups`` = channels, so rows and ``groups`` shrink
  together. A grouped conv keeps ``groups``: every group keeps the same number of rows and
  of columns (which columns may differ from group to group).
* **ConvTranspose** ``weight[in, out, *kernel]``: the same with the two dims swapped.
* **Linear** ``weight[out, in]``: the same; after ``flatten`` channel ``c`` is the column
  block ``c*H*W .. (c+1)*H*W - 1``.
* **BatchNorm** (and InstanceNorm, GroupNorm with one channel per group) ``gamma, beta,
  running_mean, running_var``: all follow the channel.
* **nn.MultiheadAttention**: the rows of the removed heads' q, k and v and the matching
  columns of the output projection -- in a :class:`~prunekit.modules.PrunedMultiheadAttention`,
  because ``nn.MultiheadAttention`` cannot have fewer heads than its width allows.

Every function returns a new layer of the same class (no hooks, no masks) whose tensors are
new (never shared with the old layer); ``None`` for a ``keep`` means "keep all".
:mod:`prunekit.graph.kinds` says which function cuts which kind of layer.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .errors import PruningError
from .modules import PrunedMultiheadAttention

__all__ = ["prune_conv", "prune_conv_transpose", "prune_linear", "prune_batchnorm",
           "prune_attention", "prune_linear_t", "prune_embedding", "prune_norm", "set_tensor",
           "take"]



def _shell(module: nn.Module) -> nn.Module:
    """A copy of a layer with its own dicts (parameters, buffers, hooks) and its own copies
    of any child modules, so new tensors can be put in without touching the original."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v
                    for k, v in module.__dict__.items()}
    new._modules = {k: copy.deepcopy(v) for k, v in module._modules.items()}
    return new


def take(t: Tensor | None, dim: int, keep: Tensor | None) -> Tensor | None:
    """Entries ``keep`` of ``t`` along ``dim`` -- always a new tensor, never shared."""
    if t is None:
        return None
    if keep is None:
        return t.detach().clone()
    return t.detach().index_select(dim, keep.to(t.device))


def set_tensor(new: nn.Module, name: str, value: Tensor | None, old: Tensor | None) -> None:
    """Put ``value`` in as a parameter or buffer, whichever ``old`` was."""
    if value is None:
        return
    if isinstance(old, nn.Parameter):
        new._parameters[name] = nn.Parameter(value, requires_grad=old.requires_grad)
    else:
        new._buffers[name] = value


def _take2(t: Tensor, keep_out: Tensor | None, keep_in: Tensor | None) -> Tensor:
    """Rows ``keep_out`` and columns ``keep_in`` of a weight in one gather (no big temporary)."""
    if keep_out is not None and keep_in is not None:
        return t.detach()[keep_out.to(t.device)[:, None], keep_in.to(t.device)[None, :]]
    return take(t, 1, keep_in) if keep_out is None else take(t, 0, keep_out)


def _grouped(weight: Tensor, keep_out: Tensor | None, keep_in: Tensor | None,
             groups: int, in_channels: int) -> Tensor:
    """A grouped conv's weight ``(out, in/groups, ...)``: the kept rows, and for each row the
    kept columns of *its* group (every group keeps as many as the others)."""
    rows = torch.arange(weight.shape[0]) if keep_out is None else keep_out
    per_in, per_out = in_channels // groups, weight.shape[0] // groups
    cols = torch.arange(in_channels) if keep_in is None else keep_in
    local = [cols[(cols >= b * per_in) & (cols < (b + 1) * per_in)] - b * per_in
             for b in range(groups)]
    if len({len(c) for c in local}) != 1:
        raise PruningError("a grouped conv must keep the same number of inputs in every group")
    local = torch.stack(local)[rows // per_out]                     # (rows, in/groups kept)
    return weight.detach()[rows.to(weight.device)[:, None], local.to(weight.device)]


@torch.no_grad()
def prune_conv(conv: nn.Module, keep_out: Tensor | None, keep_in: Tensor | None,
               depthwise: bool = False) -> nn.Module:
    """A copy of ``conv`` keeping output channels ``keep_out`` and input channels ``keep_in``
    (``None`` = keep all). ``depthwise``: rows ARE channels, ``groups`` shrinks with them.
    A grouped conv (``1 < groups``) keeps its ``groups``."""
    new = _shell(conv)
    if depthwise:
        weight = take(conv.weight, 0, keep_out)
        multiplier = conv.out_channels // conv.in_channels
        new.in_channels = new.groups = weight.shape[0] // multiplier
    elif conv.groups > 1:
        weight = _grouped(conv.weight, keep_out, keep_in, conv.groups, conv.in_channels)
        new.in_channels = weight.shape[1] * conv.groups
    else:
        weight = _take2(conv.weight, keep_out, keep_in)
        new.in_channels = weight.shape[1]
    set_tensor(new, "weight", weight, conv.weight)
    set_tensor(new, "bias", take(conv.bias, 0, keep_out), conv.bias)
    new.out_channels = weight.shape[0]
    return new


@torch.no_grad()
def prune_conv_transpose(conv: nn.Module, keep_out: Tensor | None,
                         keep_in: Tensor | None) -> nn.Module:
    """A copy of a ConvTranspose (``groups=1``), whose weight is ``(in, out, *kernel)``:
    rows are the input channels, columns the output channels."""
    new = _shell(conv)
    weight = _take2(conv.weight, keep_in, keep_out)
    set_tensor(new, "weight", weight, conv.weight)
    set_tensor(new, "bias", take(conv.bias, 0, keep_out), conv.bias)
    new.in_channels, new.out_channels = weight.shape[0], weight.shape[1]
    return new


@torch.no_grad()
def prune_linear(linear: nn.Linear, keep_out: Tensor | None, keep_in: Tensor | None) -> nn.Linear:
    """A copy of ``linear`` keeping output features ``keep_out`` and input features ``keep_in``."""
    new = _shell(linear)
    weight = _take2(linear.weight, keep_out, keep_in)
    set_tensor(new, "weight", weight, linear.weight)
    set_tensor(new, "bias", take(linear.bias, 0, keep_out), linear.bias)
    new.out_features, new.in_features = weight.shape
    return new


@torch.no_grad()
def prune_linear_t(layer: nn.Module, keep_out: Tensor | None, keep_in: Tensor | None) -> nn.Module:
    """A copy of a Linear stored transposed (GPT-2's ``Conv1D``: ``weight[in, out]``,
    ``nf`` outputs): rows are the inputs, columns the outputs."""
    new = _shell(layer)
    weight = _take2(layer.weight, keep_in, keep_out)
    set_tensor(new, "weight", weight, layer.weight)
    set_tensor(new, "bias", take(layer.bias, 0, keep_out), layer.bias)
    new.nf = weight.shape[1]
    if hasattr(layer, "nx"):
        new.nx = weight.shape[0]
    return new


@torch.no_grad()
def prune_embedding(layer: nn.Embedding, keep: Tensor | None) -> nn.Embedding:
    """A copy of an embedding table keeping columns (channels) ``keep``."""
    new = _shell(layer)
    weight = take(layer.weight, 1, keep)
    set_tensor(new, "weight", weight, layer.weight)
    new.embedding_dim = weight.shape[1]
    return new


@torch.no_grad()
def prune_norm(layer: nn.Module, keep: Tensor | None) -> nn.Module:
    """A copy of a LayerNorm / RMSNorm over the last dim keeping channels ``keep`` (gamma,
    beta, ``normalized_shape``). Not exact: the kept channels are normalised by statistics
    over fewer channels -- prunekit does this only when asked (``approximate=True``)."""
    new = _shell(layer)
    for name in ("weight", "bias"):
        old = getattr(layer, name, None)
        if isinstance(old, Tensor):
            set_tensor(new, name, take(old, 0, keep), old)
    if hasattr(layer, "normalized_shape") and keep is not None:
        new.normalized_shape = (len(keep),)
    return new


@torch.no_grad()
def prune_batchnorm(bn: nn.Module, keep: Tensor) -> nn.Module:
    """A copy of a BatchNorm keeping channels ``keep``: gamma, beta and running statistics."""
    new = _shell(bn)
    width = getattr(bn, "num_features", getattr(bn, "num_channels", None))
    for name, old in [*bn._parameters.items(), *bn._buffers.items()]:
        per_channel = old is not None and old.dim() == 1 and len(old) == width
        set_tensor(new, name, take(old, 0, keep if per_channel else None), old)  # counter: copied
    if isinstance(bn, nn.GroupNorm):                  # one channel per group: both shrink
        new.num_channels = new.num_groups = len(keep)
    else:
        new.num_features = len(keep)
    return new


@torch.no_grad()
def prune_attention(attn: nn.Module, keep_in: Tensor | None, keep_heads: Tensor | None,
                    keep_out: Tensor | None) -> PrunedMultiheadAttention:
    """An attention layer keeping input features ``keep_in``, the q/k/v rows ``keep_heads``
    (whole heads) and output features ``keep_out``."""
    inner_rows = attn.in_proj_weight.shape[0] // 3
    heads = keep_heads if keep_heads is not None else torch.arange(3 * inner_rows)
    inner = heads[: len(heads) // 3]                      # q rows = the kept inner features
    weight = _take2(attn.in_proj_weight, heads, keep_in)
    out_weight = _take2(attn.out_proj.weight, keep_out, inner)
    new = PrunedMultiheadAttention(weight.shape[1], len(inner) // attn.head_dim, attn.head_dim,
                                   out_weight.shape[0], bias=attn.in_proj_bias is not None,
                                   dropout=attn.dropout, batch_first=attn.batch_first)
    set_tensor(new, "in_proj_weight", weight, attn.in_proj_weight)
    set_tensor(new, "in_proj_bias", take(attn.in_proj_bias, 0, heads), attn.in_proj_bias)
    set_tensor(new.out_proj, "weight", out_weight, attn.out_proj.weight)
    set_tensor(new.out_proj, "bias", take(attn.out_proj.bias, 0, keep_out), attn.out_proj.bias)
    new.train(attn.training)
    return new.to(weight.device)

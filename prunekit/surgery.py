"""Cutting layers: new, smaller modules built by ``index_select`` -- and the zero-mask twin.

Once a plan says which channels of each group go, every layer becomes a few lines:

* **Conv2d** ``weight[out, in/groups, kh, kw]``: keep rows (output channels) and columns
  (input channels); ``bias[out]`` follows the rows. A depthwise conv has one row per channel
  (``k`` with a channel multiplier) and ``groups`` = channels, so rows and ``groups`` shrink
  together. A grouped conv keeps ``groups``: every group keeps the same number of rows and
  of columns (which columns may differ from group to group).
* **Linear** ``weight[out, in]``: the same; after ``flatten`` channel ``c`` is the column
  block ``c*H*W .. (c+1)*H*W - 1``.
* **BatchNorm** ``gamma, beta, running_mean, running_var``: all four follow the channel.
* **nn.MultiheadAttention**: the rows of the removed heads' q, k and v and the matching
  columns of the output projection -- in a :class:`~prunekit.modules.PrunedMultiheadAttention`,
  because ``nn.MultiheadAttention`` cannot have fewer heads than its width allows.
* **Per-channel parameters** (a layer scale ``gamma``, a position embedding) lose the same
  entries along their channel axis.

The new modules are plain ``nn.Module`` s (same class, no hooks, no masks), so the pruned model
is genuinely smaller and faster. ``mask`` is the twin used to *prove* surgery right: it zeroes
the same channels in a copy (conv / linear rows and biases, BN gamma AND beta, because
BatchNorm maps a zero input to beta, not 0). Pruned model == masked model, to float precision.
Which rows, columns and slices a channel owns is the graph's knowledge
(:meth:`prunekit.graph.ChannelGraph.keep`, :meth:`~prunekit.graph.ChannelGraph.zero_slices`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PruningError
from .graph import ChannelGraph
from .graph.preflight import shell_copy
from .modules import PrunedMultiheadAttention

__all__ = ["prune_conv", "prune_linear", "prune_batchnorm", "prune_attention",
           "pruned_modules", "pruned_params", "replace_modules", "zero_channels", "mask"]

Params = dict[tuple[str, str], Tensor]


def _shell(module: nn.Module) -> nn.Module:
    """A copy of a layer with its own dicts (parameters, buffers, hooks) and its own copies
    of any child modules, so new tensors can be put in without touching the original."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v
                    for k, v in module.__dict__.items()}
    new._modules = {k: copy.deepcopy(v) for k, v in module._modules.items()}
    return new


def _take(t: Tensor | None, dim: int, keep: Tensor | None) -> Tensor | None:
    """Entries ``keep`` of ``t`` along ``dim`` -- always a new tensor, never shared."""
    if t is None:
        return None
    if keep is None:
        return t.detach().clone()
    return t.detach().index_select(dim, keep.to(t.device))


def _set(new: nn.Module, name: str, value: Tensor | None, old: Tensor | None) -> None:
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
    return _take(t, 1, keep_in) if keep_out is None else _take(t, 0, keep_out)


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
        weight = _take(conv.weight, 0, keep_out)
        multiplier = conv.out_channels // conv.in_channels
        new.in_channels = new.groups = weight.shape[0] // multiplier
    elif conv.groups > 1:
        weight = _grouped(conv.weight, keep_out, keep_in, conv.groups, conv.in_channels)
        new.in_channels = weight.shape[1] * conv.groups
    else:
        weight = _take2(conv.weight, keep_out, keep_in)
        new.in_channels = weight.shape[1]
    _set(new, "weight", weight, conv.weight)
    _set(new, "bias", _take(conv.bias, 0, keep_out), conv.bias)
    new.out_channels = weight.shape[0]
    return new


@torch.no_grad()
def prune_conv_transpose(conv: nn.Module, keep_out: Tensor | None,
                         keep_in: Tensor | None) -> nn.Module:
    """A copy of a ConvTranspose (``groups=1``), whose weight is ``(in, out, *kernel)``:
    rows are the input channels, columns the output channels."""
    new = _shell(conv)
    weight = _take2(conv.weight, keep_in, keep_out)
    _set(new, "weight", weight, conv.weight)
    _set(new, "bias", _take(conv.bias, 0, keep_out), conv.bias)
    new.in_channels, new.out_channels = weight.shape[0], weight.shape[1]
    return new


@torch.no_grad()
def prune_linear(linear: nn.Linear, keep_out: Tensor | None, keep_in: Tensor | None) -> nn.Linear:
    """A copy of ``linear`` keeping output features ``keep_out`` and input features ``keep_in``."""
    new = _shell(linear)
    weight = _take2(linear.weight, keep_out, keep_in)
    _set(new, "weight", weight, linear.weight)
    _set(new, "bias", _take(linear.bias, 0, keep_out), linear.bias)
    new.out_features, new.in_features = weight.shape
    return new


@torch.no_grad()
def prune_batchnorm(bn: nn.Module, keep: Tensor) -> nn.Module:
    """A copy of a BatchNorm keeping channels ``keep``: gamma, beta and running statistics."""
    new = _shell(bn)
    width = getattr(bn, "num_features", getattr(bn, "num_channels", None))
    for name, old in [*bn._parameters.items(), *bn._buffers.items()]:
        per_channel = old is not None and old.dim() == 1 and len(old) == width
        _set(new, name, _take(old, 0, keep if per_channel else None), old)  # counter: copied
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
    _set(new, "in_proj_weight", weight, attn.in_proj_weight)
    _set(new, "in_proj_bias", _take(attn.in_proj_bias, 0, heads), attn.in_proj_bias)
    _set(new.out_proj, "weight", out_weight, attn.out_proj.weight)
    _set(new.out_proj, "bias", _take(attn.out_proj.bias, 0, keep_out), attn.out_proj.bias)
    new.train(attn.training)
    return new.to(weight.device)


# ----------------------------------------------------------------------------------------------
# From a plan to new layers and parameters
# ----------------------------------------------------------------------------------------------

def pruned_modules(model: nn.Module, graph: ChannelGraph,
                   removed: Mapping[int, Tensor]) -> dict[str, nn.Module]:
    """New versions of every layer that loses rows or columns (the model is not touched)."""
    keep = graph.keep(removed)
    new: dict[str, nn.Module] = {}
    for name, dims in keep.items():
        kind, layer = graph.kinds[name], model.get_submodule(name)
        if kind == "mha":
            out = keep.get(f"{name}.out_proj", {}).get("out")
            if any(k is not None for k in (dims.get("in"), dims.get("heads"), out)):
                new[name] = prune_attention(layer, dims.get("in"), dims.get("heads"), out)
            continue
        keep_out, keep_in = dims.get("out"), dims.get("in")
        if kind == "mha_out" or (keep_out is None and keep_in is None):
            continue
        if kind == "bn":
            new[name] = prune_batchnorm(layer, keep_out)
        elif kind == "linear":
            new[name] = prune_linear(layer, keep_out, keep_in)
        elif kind == "convT":
            new[name] = prune_conv_transpose(layer, keep_out, keep_in)
        else:
            new[name] = prune_conv(layer, keep_out, keep_in, depthwise=kind == "dwconv")
    _refuse_nested(new)
    return new


def pruned_params(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor]) -> Params:
    """New versions of every per-channel parameter that loses entries."""
    return {(owner, name): _take(getattr(model.get_submodule(owner), name), axis, kept)
            for (owner, name), (axis, kept) in graph.keep_params(removed).items()}


def _refuse_nested(new: Mapping[str, nn.Module]) -> None:
    for name in new:
        inner = [other for other in new if other.startswith(name + ".")]
        if inner:
            raise PruningError(f"'{name}' and the layer '{inner[0]}' inside it both change; "
                               "prunekit cuts leaf layers only")


def _swap(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _copy_tree(module: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """Copy a module tree, taking ``memo[id(old)]`` for layers already replaced. Layers that
    own tensors go through ``copy.deepcopy``; parameter-free containers are re-created."""
    if id(module) in memo:
        return memo[id(module)]
    if module._parameters or module._buffers or any(
            isinstance(v, Tensor) for v in module.__dict__.values()):
        return copy.deepcopy(module, memo)
    shell = module.__class__.__new__(module.__class__)
    shell.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v
                      for k, v in module.__dict__.items()}
    memo[id(module)] = shell
    for name, child in module._modules.items():
        shell._modules[name] = None if child is None else _copy_tree(child, memo)
    return shell


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """Every name of each layer: a module registered twice (``self.b = self.a``) has two, and
    both must point at the new layer."""
    names: dict[int, list[str]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    return {name: names[id(m)] for name, m in model.named_modules()}


def replace_modules(model: nn.Module, new: Mapping[str, nn.Module], inplace: bool,
                    params: Params | None = None, share: bool = False) -> nn.Module:
    """Put the new layers and parameters in: into ``model`` itself (``inplace``) or into a
    copy of it.

    The copy shares nothing with ``model``: containers are re-created around the new layers,
    every other layer that owns tensors is deep-copied, the replaced layers are never copied.
    With ``share`` the copy is a probe instead (:func:`~prunekit.graph.preflight.shell_copy`:
    the other layers' parameters shared, buffers cloned) -- for a check run, not for keeping.
    In place, a failure half-way puts every old layer and parameter back: the caller's model
    is either fully pruned or exactly as before.
    """
    params = params or {}
    old = {name: model.get_submodule(name) for name in new}
    if not inplace:
        swap = {id(old[n]): m for n, m in new.items()}
        target = shell_copy(model, swap) if share else _copy_tree(model, swap)
        for (owner, name), value in params.items():
            layer = target.get_submodule(owner)
            _set(layer, name, value, getattr(layer, name))
        return target
    return _replace_in_place(model, new, old, params)


def _replace_in_place(model: nn.Module, new: Mapping[str, nn.Module],
                      old: dict[str, nn.Module], params: Params) -> nn.Module:
    aliases = _aliases(model)
    old_params = {key: getattr(model.get_submodule(key[0]), key[1]) for key in params}
    done: list[str] = []
    try:
        for name, module in new.items():
            for alias in aliases.get(name, [name]):
                _swap(model, alias, module)
                done.append(alias)
        for (owner, name), value in params.items():
            _set(model.get_submodule(owner), name, value, old_params[(owner, name)])
    except BaseException:
        for alias in done:
            _swap(model, alias, old[next(n for n in new if alias in aliases.get(n, [n]))])
        for (owner, name), value in old_params.items():
            model.get_submodule(owner)._parameters.pop(name, None)
            model.get_submodule(owner)._buffers.pop(name, None)
            _restore(model.get_submodule(owner), name, value)
        raise
    return model


def _restore(layer: nn.Module, name: str, value: Tensor) -> None:
    if isinstance(value, nn.Parameter):
        layer._parameters[name] = value
    else:
        layer._buffers[name] = value


# ----------------------------------------------------------------------------------------------
# The zero-mask twin
# ----------------------------------------------------------------------------------------------

@torch.no_grad()
def zero_channels(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor],
                  fresh: bool = False) -> None:
    """Zero, in place, the channels ``removed`` ({group index: channels}) of ``model``. With
    ``fresh``, every tensor is first replaced by a clone (``model`` is a probe that shares its
    parameters with another model, which must not change)."""
    cloned: set[tuple[str, str]] = set()
    for group in graph.groups:
        channels = removed.get(group.index)
        if channels is None or not len(channels):
            continue
        for path, name, dim, index in graph.zero_sites(group, channels):
            layer = model.get_submodule(path)
            t = getattr(layer, name, None)
            if not isinstance(t, Tensor):
                continue
            if fresh and (path, name) not in cloned:
                t = t.detach().clone()
                _set(layer, name, t, getattr(layer, name))
                t = getattr(layer, name)
                cloned.add((path, name))
            t.data.index_fill_(dim, index.to(t.device), 0)


def mask(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor],
         share: bool = False) -> nn.Module:
    """A deep copy of ``model`` with the ``removed`` channels zeroed (the model is untouched).
    With ``share``, a probe instead: only the zeroed tensors are new (for a check run)."""
    masked = shell_copy(model) if share else copy.deepcopy(model)
    zero_channels(masked, graph, removed, fresh=share)
    return masked

"""Cutting layers: new, smaller modules built by ``index_select`` -- and the zero-mask twin.

Once a plan says which channels of each group go, every layer becomes a few lines:

* **Conv2d** ``weight[out, in/groups, kh, kw]``: keep rows (output channels) and columns
  (input channels); ``bias[out]`` follows the rows. A depthwise conv has one row per channel
  and ``groups`` = channels, so rows and ``groups`` shrink together. A grouped conv loses the
  same number of rows in each group (its inputs are pinned, see :mod:`prunekit.graph`).
* **Linear** ``weight[out, in]``: the same; after ``flatten`` channel ``c`` is the column
  block ``c*H*W .. (c+1)*H*W - 1``.
* **BatchNorm** ``gamma, beta, running_mean, running_var``: all four follow the channel.

The new modules are plain ``nn.Module`` s (same class, no hooks, no masks), so the pruned model
is genuinely smaller and faster. ``mask`` is the twin used to *prove* surgery right: it zeroes
the same channels in a copy (conv / linear rows and biases, BN gamma AND beta, because
BatchNorm maps a zero input to beta, not 0). Pruned model == masked model, to float precision.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .graph import ChannelGraph, Group

__all__ = ["prune_conv", "prune_linear", "prune_batchnorm", "positions", "keep_index",
           "removed_outputs", "pruned_modules",
           "replace_modules", "channel_slices", "zero_channels", "mask"]


def _shell(module: nn.Module) -> nn.Module:
    """A shallow copy of a layer with its own dicts (parameters, buffers, hooks), so new
    tensors can be put in without touching the original."""
    new = module.__class__.__new__(module.__class__)
    new.__dict__ = {k: v.copy() if isinstance(v, (dict, set, list)) else v
                    for k, v in module.__dict__.items()}
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


@torch.no_grad()
def prune_conv(conv: nn.Module, keep_out: Tensor | None, keep_in: Tensor | None,
               depthwise: bool = False) -> nn.Module:
    """A copy of ``conv`` keeping output channels ``keep_out`` and input channels ``keep_in``
    (``None`` = keep all). ``depthwise``: rows ARE channels, ``groups`` shrinks with them."""
    new = _shell(conv)
    weight = _take2(conv.weight, keep_out, None if depthwise else keep_in)
    _set(new, "weight", weight, conv.weight)
    _set(new, "bias", _take(conv.bias, 0, keep_out), conv.bias)
    new.out_channels = weight.shape[0]
    if depthwise:
        new.in_channels = new.groups = weight.shape[0]
    else:
        new.in_channels = weight.shape[1] * conv.groups
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
    for name, old in [*bn._parameters.items(), *bn._buffers.items()]:
        per_channel = old is not None and old.dim() == 1 and len(old) == bn.num_features
        _set(new, name, _take(old, 0, keep if per_channel else None), old)  # counter: copied
    new.num_features = len(keep)
    return new


# ----------------------------------------------------------------------------------------------
# From removed group channels to the rows / columns each layer keeps
# ----------------------------------------------------------------------------------------------

def _kept(size: int, removed: Tensor) -> Tensor:
    alive = torch.ones(size, dtype=torch.bool)
    alive[removed] = False
    return alive.nonzero().flatten()


def positions(layout: list[tuple[int, int]], chosen: Mapping[int, Tensor],
              sizes: Mapping[int, int], default_all: bool) -> Tensor:
    """Where ``chosen`` channels of each group sit along one layer dimension made of
    ``(group, repeat)`` segments. A group missing from ``chosen`` contributes all its channels
    (``default_all``) or none. ``repeat`` > 1 (after flatten) turns channel ``c`` into the
    feature block ``c*repeat .. c*repeat + repeat - 1``."""
    parts, offset = [torch.zeros(0, dtype=torch.long)], 0
    for g, rep in layout:
        channels = chosen.get(g)
        if channels is None and default_all:
            channels = torch.arange(sizes[g])
        if channels is not None:
            if rep > 1:
                channels = (channels[:, None] * rep + torch.arange(rep)).flatten()
            parts.append(channels + offset)
        offset += sizes[g] * rep
    return torch.cat(parts)


def keep_index(layout: list[tuple[int, int]], kept: Mapping[int, Tensor],
               sizes: Mapping[int, int]) -> Tensor | None:
    """Indices to keep along one layer dimension, or ``None`` if none of its groups loses a
    channel (``kept`` holds the surviving channels of the groups that do)."""
    if not any(g in kept for g, _ in layout):
        return None
    return positions(layout, kept, sizes, default_all=True)


def removed_outputs(graph: ChannelGraph, removed: Mapping[int, Tensor]) -> dict[str, list[int]]:
    """``{layer: sorted removed output-channel indices}`` for every layer that loses any."""
    sizes = {g.index: g.size for g in graph.groups}
    live = {g: r for g, r in removed.items() if len(r)}
    report = {}
    for name, dims in graph.layouts.items():
        gone = positions(dims.get("out", []), live, sizes, default_all=False)
        if len(gone):
            report[name] = sorted(gone.tolist())
    return report


def pruned_modules(model: nn.Module, graph: ChannelGraph,
                   removed: Mapping[int, Tensor]) -> dict[str, nn.Module]:
    """New versions of every layer that loses rows or columns (the model is not touched)."""
    sizes = {g.index: g.size for g in graph.groups}
    kept = {g: _kept(sizes[g], r) for g, r in removed.items() if len(r)}
    new: dict[str, nn.Module] = {}
    for name, dims in graph.layouts.items():
        keep_out = keep_index(dims.get("out", []), kept, sizes)
        keep_in = keep_index(dims.get("in", []), kept, sizes)
        if keep_out is None and keep_in is None:
            continue
        layer, kind = model.get_submodule(name), graph.kinds[name]
        if kind == "bn":
            new[name] = prune_batchnorm(layer, keep_out)
        elif kind == "linear":
            new[name] = prune_linear(layer, keep_out, keep_in)
        else:
            new[name] = prune_conv(layer, keep_out, keep_in, depthwise=kind == "dwconv")
    return new


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
    shell = _shell(module)
    memo[id(module)] = shell
    for name, child in module._modules.items():
        shell._modules[name] = None if child is None else _copy_tree(child, memo)
    return shell


def replace_modules(model: nn.Module, new: Mapping[str, nn.Module], inplace: bool) -> nn.Module:
    """Put the new layers in: into ``model`` itself (``inplace``) or into a copy of it.

    The copy shares nothing with ``model``: containers are re-created around the new layers,
    every other layer that owns tensors is deep-copied, the replaced layers are never copied.
    In place, a failure half-way puts every old layer back: the caller's model is either
    fully pruned or exactly as before.
    """
    old = {name: model.get_submodule(name) for name in new}
    if not inplace:
        return _copy_tree(model, {id(old[n]): m for n, m in new.items()})
    done: list[str] = []
    try:
        for name, module in new.items():
            _swap(model, name, module)
            done.append(name)
    except BaseException:
        for name in done:
            _swap(model, name, old[name])
        raise
    return model


# ----------------------------------------------------------------------------------------------
# The zero-mask twin
# ----------------------------------------------------------------------------------------------

def channel_slices(model: nn.Module, group: Group, channels: Tensor) -> list[tuple[Tensor, Tensor]]:
    """``(tensor, index)`` pairs that, set to zero, make ``channels`` of ``group`` zero
    everywhere: producer rows and biases, depthwise rows, BN gamma and beta (or, for a BN
    without affine parameters, its running mean so that it maps 0 to 0 in eval mode)."""
    slices = []
    for m in group.members:
        if m.role == "in":
            continue
        layer = model.get_submodule(m.module)
        index = (channels[:, None] * m.repeat + torch.arange(m.repeat)).flatten() + m.offset
        affine = getattr(layer, "weight", None) is not None
        names = ("weight", "bias") if affine else ("running_mean",)
        for name in names:
            t = getattr(layer, name, None)
            if isinstance(t, Tensor):
                slices.append((t.data, index))
    return slices


@torch.no_grad()
def zero_channels(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor]) -> None:
    """Zero, in place, the channels ``removed`` ({group index: channels}) of ``model``."""
    for group in graph.groups:
        channels = removed.get(group.index)
        if channels is not None and len(channels):
            for t, index in channel_slices(model, group, channels):
                t[index] = 0


def mask(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor]) -> nn.Module:
    """A deep copy of ``model`` with the ``removed`` channels zeroed (the model is untouched)."""
    masked = copy.deepcopy(model)
    zero_channels(masked, graph, removed)
    return masked

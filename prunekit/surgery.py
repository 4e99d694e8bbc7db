"""Surgery: from a plan to a smaller model -- and the zero-mask twin that proves it right.

Once a plan says which channels of each group go, every layer that holds any of them is cut
by a few lines for its kind (:mod:`prunekit.cuts`: conv, ConvTranspose, linear, BatchNorm,
attention; :mod:`prunekit.graph.kinds` says which function cuts which kind), and every
per-channel parameter (a layer scale ``gamma``, a position embedding) loses the same entries
along its channel axis. Then the new layers are swapped in -- into a copy, or in place.

The new modules are plain ``nn.Module`` s (same class, no hooks, no masks), so the pruned model
is genuinely smaller and faster. ``mask`` is the twin used to *prove* surgery right: it zeroes
the same channels in a copy (conv / linear rows and biases, BN gamma AND beta, because
BatchNorm maps a zero input to beta, not 0). Pruned model == masked model, to float precision.
Which rows, columns and slices a channel owns is the graph's knowledge
(:meth:`prunekit.graph.ChannelGraph.keep`, :meth:`~prunekit.graph.ChannelGraph.zero_slices`).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PruningError
from .cuts import (prune_attention, prune_batchnorm, prune_conv, prune_conv_transpose,
                   prune_linear, set_tensor, take)
from .graph import ChannelGraph
from .graph.kinds import KINDS
from .graph.preflight import hf_configs, shell_copy
from .graph.preflight import private_configs as own_configs

__all__ = ["prune_conv", "prune_conv_transpose", "prune_linear", "prune_batchnorm",
           "prune_attention", "pruned_modules", "pruned_params", "replace_modules",
           "zero_channels", "mask"]

Params = dict[tuple[str, str], Tensor]


# ----------------------------------------------------------------------------------------------
# From a plan to new layers and parameters
# ----------------------------------------------------------------------------------------------

def pruned_modules(model: nn.Module, graph: ChannelGraph,
                   removed: Mapping[int, Tensor]) -> dict[str, nn.Module]:
    """New versions of every layer that loses rows or columns (the model is not touched),
    each cut by its kind's function (:data:`prunekit.graph.kinds.KINDS`). An attention
    layer's output projection is cut with the attention layer."""
    keep = graph.keep(removed)
    new: dict[str, nn.Module] = {}
    for name, dims in keep.items():
        kind = KINDS[graph.kinds[name]]
        if kind.name == "mha":
            dims = {**dims, "out": keep.get(f"{name}.out_proj", {}).get("out")}
        if kind.cut is not None and any(k is not None for k in dims.values()):
            new[name] = kind.cut(model.get_submodule(name), dims)
    _refuse_nested(new)
    return new


def pruned_params(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor]) -> Params:
    """New versions of every per-channel parameter that loses entries."""
    return {(owner, name): take(getattr(model.get_submodule(owner), name), axis, kept)
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
    if "config" in shell.__dict__:                 # a Hugging Face config: the copy's own
        shell.__dict__["config"] = memo.get(id(shell.__dict__["config"]),
                                            shell.__dict__["config"])
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
                    params: Params | None = None, share: bool = False,
                    updates: Any = None) -> nn.Module:
    """Put the new layers and parameters in: into ``model`` itself (``inplace``) or into a
    copy of it.

    The copy shares nothing with ``model``: containers are re-created around the new layers,
    every other layer that owns tensors is deep-copied, the replaced layers are never copied.
    With ``share`` the copy is a probe instead (:func:`~prunekit.graph.preflight.shell_copy`:
    the other layers' parameters shared, buffers cloned) -- for a check run, not for keeping.
    In place, a failure half-way puts every old layer and parameter back: the caller's model
    is either fully pruned or exactly as before. ``updates`` (:class:`prunekit.hf.Updates`):
    numbers that layers and a Hugging Face config keep about widths, set on the result (the
    copy gets its own config).
    """
    params = params or {}
    old = {name: model.get_submodule(name) for name in new}
    if not inplace:
        swap: dict[int, Any] = {id(old[n]): m for n, m in new.items()}
        if not share:
            swap.update(private_configs(model))
        target = shell_copy(model, swap) if share else _copy_tree(model, swap)
        for (owner, name), value in params.items():
            layer = target.get_submodule(owner)
            set_tensor(layer, name, value, getattr(layer, name))
        if updates:
            if share:
                own_configs(target)
            _set_numbers(target, updates)
        return target
    return _replace_in_place(model, new, old, params, updates)


def _set_numbers(model: nn.Module, updates: Any) -> list[tuple[Any, str, Any]]:
    """Set ``updates`` on ``model``; returns ``(object, name, old value)`` to undo them."""
    undo = []
    for (path, name), value in updates.attrs.items():
        m = model.get_submodule(path)
        undo.append((m, name, getattr(m, name)))
        setattr(m, name, value)
    for config in hf_configs(model).values():
        for name, value in updates.config.items():
            undo.append((config, name, getattr(config, name, _MISSING)))
            setattr(config, name, value)
    return undo


_MISSING = object()


def private_configs(model: nn.Module) -> dict[int, Any]:
    """``{id(config): copy}`` for every Hugging Face config in ``model``: what a copy of the
    model holds instead, so a change to the copy's config never reaches the original."""
    return {key: copy.deepcopy(c) for key, c in hf_configs(model).items()}


def _replace_in_place(model: nn.Module, new: Mapping[str, nn.Module],
                      old: dict[str, nn.Module], params: Params, updates: Any = None) -> nn.Module:
    aliases = _aliases(model)
    old_params = {key: getattr(model.get_submodule(key[0]), key[1]) for key in params}
    done: list[str] = []
    undo: list[tuple[Any, str, Any]] = []
    try:
        for name, module in new.items():
            for alias in aliases.get(name, [name]):
                _swap(model, alias, module)
                done.append(alias)
        for (owner, name), value in params.items():
            set_tensor(model.get_submodule(owner), name, value, old_params[(owner, name)])
        if updates:
            undo = _set_numbers(model, updates)
    except BaseException:
        for obj, name, value in reversed(undo):
            if value is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
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
    ``fresh`` (``model`` is a probe that shares its parameters with another model, which
    must not change) a tensor is cloned before it is zeroed -- except the rows of a plain
    conv or linear layer that only the layer itself reads: there zeroing the output channels
    they write is the same function and needs no copy of the weight (:func:`_zero_outputs`).
    A weight that ``forward()`` also reads directly (``F.linear(x, self.l1.weight)``) is
    zeroed like any other tensor, or the check would compare against another function than
    :meth:`~prunekit.planning.Plan.mask`."""
    cloned: set[tuple[str, str]] = set()
    outputs: dict[str, list[Tensor]] = {}
    read = _read_directly(model, graph) if fresh else set()
    for path, name, dim, index in _sites(graph, removed):
        layer = model.get_submodule(path)
        t = getattr(layer, name, None)
        if not isinstance(t, Tensor):
            continue
        if fresh and _output_axis(layer, name, dim) is not None and id(t) not in read:
            outputs.setdefault(path, []).append(index)
            continue
        if fresh and (path, name) not in cloned:
            set_tensor(layer, name, t.detach().clone(), t)
            t = getattr(layer, name)
            cloned.add((path, name))
        t.data.index_fill_(dim, index.to(t.device), 0)
    for path, indices in outputs.items():
        _zero_outputs(model.get_submodule(path), torch.unique(torch.cat(indices)))


def _read_directly(model: nn.Module, graph: ChannelGraph) -> set[int]:
    """Identities of the tensors of ``model`` that ``forward()`` reads as attributes (fx
    ``get_attr`` nodes), not only through their layer. By identity, not by name: a tied or
    twice-registered weight is traced under its first name only."""
    read = set()
    for node in graph.fx_graph.nodes:
        if node.op == "get_attr":
            try:
                value = operator.attrgetter(str(node.target))(model)
            except AttributeError:               # a constant of the traced graph, not the model's
                continue
            if isinstance(value, Tensor):
                read.add(id(value))
    return read


def _sites(graph: ChannelGraph, removed: Mapping[int, Tensor]) -> list[tuple]:
    return [site for g in graph.groups if len(removed.get(g.index, ()))
            for site in graph.zero_sites(g, removed[g.index])]


_PLAIN = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
          nn.ConvTranspose3d, nn.Linear)


def _output_axis(layer: nn.Module, name: str, dim: int) -> int | None:
    """The output axis whose channel ``layer.name[dim]`` writes alone -- for a plain conv /
    linear (exactly a torch.nn class: a subclass's forward may do more) -- else None."""
    if type(layer) not in _PLAIN or name not in ("weight", "bias"):
        return None
    rows = 1 if getattr(layer, "transposed", False) and name == "weight" else 0
    if dim != rows:
        return None
    return -1 if isinstance(layer, nn.Linear) else 1


def _zero_outputs(layer: nn.Module, index: Tensor) -> None:
    """Set output channels ``index`` of a probe's layer to zero after it runs: what zeroing
    their weight rows and biases computes, without copying the weight."""
    axis = -1 if isinstance(layer, nn.Linear) else 1

    def hook(_: nn.Module, __: tuple, out: Tensor) -> Tensor:
        return out.index_fill(axis, index.to(out.device), 0)
    layer.register_forward_hook(hook)


def mask(model: nn.Module, graph: ChannelGraph, removed: Mapping[int, Tensor],
         share: bool = False) -> nn.Module:
    """A deep copy of ``model`` with the ``removed`` channels zeroed (the model is untouched).
    With ``share``, a probe instead: only the zeroed tensors are new (for a check run)."""
    masked = shell_copy(model) if share else copy.deepcopy(model)
    zero_channels(masked, graph, removed, fresh=share)
    return masked

"""N:M ("semi-structured") sparsity: the pattern that dense-shaped hardware can speed up.

Unstructured sparsity zeroes any weights; a dense kernel still multiplies by every zero, so
nothing gets faster (notebook 01). Channel pruning removes whole rows and columns; the
matrices shrink, and so does the time -- but it is coarse. **N:M sparsity** sits between:
in every group of M consecutive weights along the *input* dimension at most N are non-zero.
NVIDIA's sparse tensor cores (Ampere and later) execute 2:4 matrices at up to twice the
dense rate by storing only the 2 kept values of every 4 plus a 2-bit index per value
(Mishra et al., 2021, "Accelerating Sparse Deep Neural Networks"; Zhou et al., 2021,
"Learning N:M Fine-grained Structured Sparse Neural Networks from Scratch").

The groups run along the input dimension of the matrix multiply a layer performs:

* ``Linear`` weight ``(out, in)``: groups of M consecutive input features in each row;
* ``Conv2d`` weight ``(out, in, kh, kw)``: groups of M consecutive *input channels* at each
  kernel position, as NVIDIA's tools do (the channels-last GEMM of a convolution reduces
  over the input channels).

A width that is not a multiple of M is refused (``ValueError``): sparse kernels need whole
groups, and padding would change the layer. A grouped or depthwise conv reduces over
``in_channels / groups`` inputs per group, so the same rule applies to that width.

**Channel permutations** (Pool & Yu, 2021, "Channel Permutations for N:M Sparsity"): which
weights share a group of 4 is an accident of the channel order. Permute a layer's input
channels -- and, to keep the function, the producer's output channels with them -- and a
different, better set of weights may survive the 2:4 mask. :func:`permute_channels` applies
a permutation to a whole coupled group exactly (:mod:`prunekit.graph`);
:func:`search_permutation` finds one that keeps more magnitude.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from .errors import PruningError
from .graph import ChannelGraph, Group
from .graph.kinds import KINDS
from .surgery import replace_modules

__all__ = ["nm_mask", "is_nm", "sparsifiable_layers", "apply_nm", "remove_nm", "Storage",
           "storage", "kept_magnitude", "search_permutation", "permute_channels"]


def _groups(weight: Tensor, m: int) -> Tensor:
    """The weight as ``(..., groups, m)``: consecutive inputs of one output (and kernel
    position) side by side. Linear (out, in) -> (out, in/m, m); conv (out, in, kh, kw) ->
    (out, kh, kw, in/m, m)."""
    if weight.dim() < 2:
        raise ValueError("N:M sparsity needs a weight matrix (Linear) or kernel (Conv)")
    width = weight.shape[1]
    if width % m:
        raise ValueError(f"input width {width} is not a multiple of M={m}: N:M sparsity needs "
                         "whole groups (pad the layer or leave it dense)")
    inputs_last = weight.movedim(1, -1)                       # (out, kh, kw, in)
    return inputs_last.reshape(*inputs_last.shape[:-1], width // m, m)


def _ungroup(grouped: Tensor, shape: torch.Size) -> Tensor:
    inputs_last = grouped.reshape(*grouped.shape[:-2], -1)
    return inputs_last.movedim(-1, 1).reshape(shape)


def nm_mask(weight: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """The N:M mask of largest magnitude: in every group of ``m`` consecutive inputs keep the
    ``n`` weights of largest |w| (ties: the lower index). Same shape as ``weight``, 1 = kept."""
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got n={n}, m={m}")
    grouped = _groups(weight.detach(), m)
    order = torch.sort(grouped.abs(), dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, order[..., :n], True)
    return _ungroup(keep, weight.shape).to(weight.dtype)


def is_nm(tensor: Tensor, n: int = 2, m: int = 4) -> bool:
    """Does every group of ``m`` consecutive inputs hold at most ``n`` non-zeros? (Works on a
    mask or on a masked weight.)"""
    try:
        grouped = _groups(tensor.detach(), m)
    except ValueError:
        return False
    return bool(((grouped != 0).sum(-1) <= n).all())


def sparsifiable_layers(model: nn.Module, m: int = 4) -> dict[str, nn.Module]:
    """Conv and Linear layers whose input width is a multiple of ``m`` (the others -- e.g. a
    first conv on 1- or 3-channel images -- stay dense, as they do on real hardware)."""
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return {name: layer for name, layer in model.named_modules()
            if isinstance(layer, kinds) and layer.weight.shape[1] % m == 0}


def apply_nm(model: nn.Module, n: int = 2, m: int = 4,
             layers: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Mask the weights of ``layers`` (default: :func:`sparsifiable_layers`) to N:M, in
    place, with ``torch.nn.utils.prune`` -- so the zeros stay zero during fine-tuning (the
    mask is re-applied before every forward pass). Returns ``{layer: mask}``.
    :func:`remove_nm` makes the zeros permanent and removes the hooks."""
    names = list(layers) if layers is not None else list(sparsifiable_layers(model, m))
    masks = {}
    for name in names:
        layer = model.get_submodule(name)
        masks[name] = nm_mask(layer.weight, n, m)
        torch_prune.custom_from_mask(layer, "weight", masks[name])
    return masks


def remove_nm(model: nn.Module) -> nn.Module:
    """Fold every ``torch.nn.utils.prune`` mask into its weight (zeros stay) and drop the
    hooks: a plain model again (which ``copy.deepcopy`` and ``torch.save`` handle)."""
    for layer in model.modules():
        if torch_prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
            torch_prune.remove(layer, "weight")
    return model


# ----------------------------------------------------------------------------------------------
# What it costs to store
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Storage:
    """Bytes to store one weight tensor: dense, compressed N:M, and CSR at the same number
    of non-zeros. N:M: the kept values plus ``ceil(log2 m)`` bits of position per kept value
    (2 bits for 2:4). CSR (rows = outputs): the values, one column index per value and one
    row pointer per row + 1, indices of ``index_bytes`` each."""

    dense: int
    nm: int
    csr: int
    nonzeros: int


def storage(shape: tuple[int, ...] | torch.Size, n: int = 2, m: int = 4,
            value_bytes: int = 4, index_bytes: int = 4) -> Storage:
    """Storage of an N:M-sparse weight of ``shape`` (``value_bytes`` 4 for float32, 2 for
    float16; CSR indices of ``index_bytes``; N:M metadata bit-packed)."""
    numel = 1
    for s in shape:
        numel *= int(s)
    if shape[1] % m:
        raise ValueError(f"input width {shape[1]} is not a multiple of M={m}")
    nonzeros = numel // m * n
    index_bits = max(1, (m - 1).bit_length())                 # 2 bits pick one of 4
    nm = nonzeros * value_bytes + (nonzeros * index_bits + 7) // 8
    rows = int(shape[0])
    csr = nonzeros * (value_bytes + index_bytes) + (rows + 1) * index_bytes
    return Storage(numel * value_bytes, nm, csr, nonzeros)


# ----------------------------------------------------------------------------------------------
# Channel permutations (Pool & Yu, 2021)
# ----------------------------------------------------------------------------------------------

def kept_magnitude(weight: Tensor, n: int = 2, m: int = 4) -> float:
    """Sum of |w| that the N:M mask keeps: what a good channel order maximises."""
    return float((weight.detach().abs() * nm_mask(weight, n, m)).sum())


def search_permutation(weight: Tensor, n: int = 2, m: int = 4, rounds: int = 2000,
                       seed: int = 0) -> Tensor:
    """A permutation of the input channels of ``weight`` that keeps more magnitude under N:M:
    random swaps of two channels from different groups, kept when they help (a simple
    greedy search; Pool & Yu use smarter ones). Returns ``perm``: the new input channel ``i``
    is old channel ``perm[i]``, so ``weight[:, perm]`` is the permuted weight."""
    gen = torch.Generator().manual_seed(seed)
    w = weight.detach().abs().cpu()          # a search of many tiny steps: the CPU suits it
    width = w.shape[1]
    perm = torch.arange(width)
    best = kept_magnitude(w, n, m)
    for _ in range(rounds):
        i, j = torch.randint(0, width, (2,), generator=gen).tolist()
        if i // m == j // m:
            continue
        trial = perm.clone()
        trial[i], trial[j] = perm[j], perm[i]
        score = kept_magnitude(w[:, trial], n, m)
        if score > best:
            perm, best = trial, score
    return perm


def permute_channels(model: nn.Module, graph: ChannelGraph, group: Group, perm: Tensor,
                     inplace: bool = False) -> nn.Module:
    """Reorder the channels of ``group`` everywhere they live -- producer rows, BatchNorm
    channels, consumer columns -- so that new channel ``i`` is old channel ``perm[i]``. The
    function of the model does not change (the tests check it); only which weights share an
    N:M group does. Conv / BatchNorm / Linear members only."""
    if sorted(perm.tolist()) != list(range(group.size)):
        raise PruningError(f"perm must be a permutation of the {group.size} channels of "
                           f"group '{group.name}'")
    new = {}
    for member in group.members:
        kind = KINDS.get(graph.kinds.get(member.module, ""))
        if member.role not in ("out", "bn", "in") or kind is None or not kind.permutable:
            raise PruningError(f"permute_channels handles conv / linear / BatchNorm members; "
                               f"'{member.module}' is {graph.kinds.get(member.module) or member.role}")
        if len(torch.unique(member.units)) != len(member.units):
            raise PruningError(f"'{member.module}' holds a channel at several positions "
                               "(e.g. flattened features); permute_channels needs one")
        dim = "in" if member.role == "in" else "out"
        position_of = torch.empty(group.size, dtype=torch.long)
        position_of[member.units] = member.positions
        index = torch.arange(len(graph.dims[member.module][dim]))   # unchanged elsewhere
        index[member.positions] = position_of[perm[member.units]]
        base = new.get(member.module, model.get_submodule(member.module))
        new[member.module] = kind.cut(base, {dim: index})   # a "cut" that keeps all, reordered
    return replace_modules(model, new, inplace)

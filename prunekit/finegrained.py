"""Fine-grained (unstructured) pruning done properly: the honest baseline for channel pruning.

Zeroing single weights keeps every tensor's shape, so on dense hardware it saves no time
(lecture 01 measures it); what it does well is keep accuracy at a given *size*. Compared with
channel pruning, it must therefore be done as well as it can be done, not as a strawman that
masks the same share of every layer and repairs nothing. The recipe of Han et al. (2015,
"Learning both Weights and Connections for Efficient Neural Networks") and of the first lab of
MIT 6.5940 has four steps, one function each here:

1. :func:`sensitivity_scan` -- mask one layer alone at several sparsities and score the model
   (e.g. validation accuracy): which layers can lose weights, and which cannot;
2. :func:`allocate` -- turn a *size target* (the share of all weights to keep) into one sparsity
   per layer, spending the cuts where the scan says they cost least per weight removed
   (:func:`global_magnitude` is the allocation without a scan: one |w| threshold for all layers);
3. :func:`apply_masks` -- magnitude masks (:func:`magnitude_mask`: the smallest |w| of each
   layer go) attached with ``torch.nn.utils.prune``, so the zeros stay zero while training;
4. fine-tune with the masks attached (:func:`prunekit.train.fine_tune`), then
   :func:`remove_masks` bakes the zeros into plain weights.

:func:`kept_share` counts what is left (exact zeros, so it also proves that the masks held).
The per-layer picture -- a histogram of each layer's weights, masked ones marked -- is
:func:`prunekit.viz.weight_histograms`.

Every function works on the layers :func:`prunable_layers` finds (convolutions and linear
layers, by module name), and none of them changes a model unless its name says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

__all__ = ["prunable_layers", "magnitude_mask", "temporarily_masked", "sensitivity_scan", "allocate",
           "global_magnitude", "apply_masks", "masked_copy", "remove_masks", "kept_share"]


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every convolution and linear layer of ``model`` by module name, in model order: the
    layers whose weights fine-grained pruning masks (BatchNorm's γ and β, and biases, stay)."""
    kinds = (nn.modules.conv._ConvNd, nn.Linear)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be a share of the weights in [0, 1], got {sparsity}")


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """A keep-mask (1 = keep, 0 = remove) of ``weight``'s shape that removes exactly
    ``round(sparsity * weight.numel())`` entries: those with the smallest |w|.

    Magnitude is the simplest importance of a single weight -- a small weight changes its
    output least when set to zero -- and the one Han et al. (2015) use. Ties are broken by
    position (a stable sort), so the count is exact and the mask is the same on every run."""
    _check_sparsity(sparsity)
    k = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
    order = weight.detach().abs().flatten().argsort(stable=True)
    mask[order[:k]] = 0
    return mask.view_as(weight)


@contextmanager
def temporarily_masked(model: nn.Module, sparsities: Mapping[str, float]) -> Iterator[nn.Module]:
    """Inside the ``with`` block, the named layers of ``model`` have their smallest-|w| share
    zeroed in place; on leaving it (also after an error) every weight is restored bit for bit.

    For measuring, not training: nothing keeps the zeros at zero if you take gradient steps
    inside the block. It saves a copy of the model per trial, which is what a sensitivity scan
    over many layers and sparsities would otherwise make."""
    for name in sparsities:
        if torch_prune.is_pruned(model.get_submodule(name)):
            raise ValueError(f"temporarily_masked: {name!r} carries torch.nn.utils.prune hooks, which recompute its "
                             "weight on every call; scan the model before masking it (or remove_masks first)")
    saved = {}
    try:
        with torch.no_grad():
            for name, s in sparsities.items():
                weight = model.get_submodule(name).weight
                saved[name] = weight.detach().clone()
                weight.mul_(magnitude_mask(weight, s))
        yield model
    finally:
        with torch.no_grad():
            for name, original in saved.items():
                model.get_submodule(name).weight.copy_(original)


def sensitivity_scan(model: nn.Module, sparsities: list[float], score: Callable[[nn.Module], float],
                     layers: list[str] | None = None) -> dict[str, dict[float, float]]:
    """``{layer: {sparsity: score}}``: each layer masked *alone* at each sparsity, every other
    layer dense, scored by ``score(model)`` (e.g. ``lambda m: evaluate(m, val).accuracy``).

    A layer whose score barely moves can take a high sparsity; one whose score falls early must
    be spared (Han et al., 2015, Fig. 5; the channel version is lecture 02's scan). Score on
    held-out data that is *not* the test set, or the allocation is tuned to the test. The model
    is unchanged afterwards (:func:`temporarily_masked`)."""
    names = list(prunable_layers(model)) if layers is None else list(layers)
    for s in sparsities:
        _check_sparsity(s)
    scan = {}
    for name in names:
        scan[name] = {}
        for s in sparsities:
            with temporarily_masked(model, {name: s}):
                scan[name][s] = float(score(model))
    return scan


def allocate(scan: Mapping[str, Mapping[float, float]], sizes: Mapping[str, int], keep: float,
             dense_score: float) -> dict[str, float]:
    """Per-layer sparsities that keep a share ``keep`` of all weights of the scanned layers,
    chosen greedily from a :func:`sensitivity_scan`.

    Start with every layer dense. Repeatedly take the layer whose *next* scanned sparsity costs
    the least score per weight removed,
    ``(score at its current sparsity - score at the next) / (weights removed by that step)``,
    and move it there; stop when only ``keep`` of the weights is left (the last step goes only
    as far as needed, so the target is met exactly). Dividing by the weights removed is what
    makes a big, robust layer take most of the cut and a small, sensitive one stay nearly dense.

    ``sizes`` gives each layer's number of weights, ``dense_score`` the unmasked model's score.
    Raises ``ValueError`` if even the highest scanned sparsity everywhere keeps too much."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be a share of the weights in [0, 1], got {keep}")
    steps = {n: [0.0] + sorted(scan[n]) for n in scan}
    score = {n: {0.0: dense_score, **scan[n]} for n in scan}
    at = dict.fromkeys(scan, 0)
    chosen = dict.fromkeys(scan, 0.0)
    target = keep * sum(sizes[n] for n in scan)

    def excess() -> float:   # weights still to remove
        return sum(sizes[n] * (1 - chosen[n]) for n in scan) - target

    def cost(n: str) -> float:
        a, b = steps[n][at[n]], steps[n][at[n] + 1]
        return (score[n][a] - score[n][b]) / (sizes[n] * (b - a))

    while excess() > 1e-9:
        movable = [n for n in scan if at[n] + 1 < len(steps[n])]
        if not movable:
            raise ValueError(f"keep={keep} needs more than the highest scanned sparsity in every layer")
        n = min(movable, key=cost)
        at[n] += 1
        chosen[n] = min(steps[n][at[n]], chosen[n] + excess() / sizes[n])
    return chosen


def global_magnitude(model: nn.Module, keep: float, layers: list[str] | None = None) -> dict[str, float]:
    """Per-layer sparsities that one *global* |w| threshold gives: the ``keep`` share of all weights
    of ``layers`` (default: :func:`prunable_layers`) with the largest |w| survive, wherever they are.

    The allocation with no scan at all, and a useful foil for :func:`allocate`: it spares the
    layers whose weights are large, which is not the same as the layers that matter -- a layer
    of many small weights (the last conv of a VGG) loses most, a small layer of large weights
    (the first conv) almost nothing, whatever their sensitivity."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be a share of the weights in [0, 1], got {keep}")
    names = list(prunable_layers(model)) if layers is None else list(layers)
    weights = [model.get_submodule(n).weight.detach().abs().flatten() for n in names]
    removed = magnitude_mask(torch.cat(weights), 1.0 - keep) == 0
    shares, start = {}, 0
    for name, w in zip(names, weights):
        shares[name] = int(removed[start:start + w.numel()].sum()) / w.numel()
        start += w.numel()
    return shares


def apply_masks(model: nn.Module, sparsities: Mapping[str, float]) -> nn.Module:
    """Attach a :func:`magnitude_mask` to each named layer of ``model``, in place, with
    ``torch.nn.utils.prune.custom_from_mask``; returns ``model``.

    The layer then keeps ``weight_orig`` (a parameter) and ``weight_mask`` (a buffer), and a
    forward pre-hook computes ``weight = weight_orig * weight_mask`` before every call -- so a
    gradient step may change ``weight_orig`` anywhere, yet the masked weights stay zero. That is
    what makes *masked fine-tuning* work. A layer masked at sparsity 0 is left alone. Every mask
    is made before the first is attached, so a bad name or sparsity leaves the model unchanged."""
    masks = {name: magnitude_mask(model.get_submodule(name).weight, s) for name, s in sparsities.items() if s > 0}
    for name, mask in masks.items():
        torch_prune.custom_from_mask(model.get_submodule(name), "weight", mask)
    return model


def masked_copy(model: nn.Module, sparsities: Mapping[str, float]) -> nn.Module:
    """A deep copy of ``model`` with :func:`apply_masks` applied; ``model`` is unchanged.

    Copy *before* masking: a model whose prune hooks last ran with gradients enabled cannot be
    deep-copied (lecture 01 shows the error); :func:`remove_masks` makes it copyable again."""
    return apply_masks(copy.deepcopy(model), sparsities)


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake every ``torch.nn.utils.prune`` mask into its weight and drop the hooks, in place:
    plain dense tensors that contain zeros (``copy.deepcopy`` and ``torch.save`` work again)."""
    for layer in model.modules():
        if torch_prune.is_pruned(layer) and hasattr(layer, "weight_orig"):
            torch_prune.remove(layer, "weight")
    return model


def kept_share(model: nn.Module, layers: list[str] | None = None) -> float:
    """The share of non-zero weights in ``layers`` (default: :func:`prunable_layers`), counted
    as exact zeros of each layer's ``weight`` -- with masks attached, of ``weight_orig * mask``."""
    names = list(prunable_layers(model)) if layers is None else list(layers)
    weights = [model.get_submodule(n).weight for n in names]
    total = sum(w.numel() for w in weights)
    if total == 0:
        raise ValueError("kept_share: no weights in these layers")
    return sum(int((w != 0).sum()) for w in weights) / total

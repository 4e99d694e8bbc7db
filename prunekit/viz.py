"""Plots for the lectures: every figure answers one question a pruning decision depends on.

* :func:`importance_panels` -- *which* channels of one layer go? Scores per channel, coloured
  kept / removed, and the same scores sorted with the threshold line (the two-panel plot of
  the course outline, drawn from what was actually removed, not from a guessed median).
* :func:`gamma_histograms` -- *did network slimming work?* |gamma| of every BatchNorm channel,
  on a log axis, for several models side by side (Liu et al., 2017, Fig. 4 in spirit).
* :func:`weight_histograms` -- *what does a fine-grained allocation remove?* Each layer's
  weights, the ones its magnitude mask removes marked (lecture 01).
* :func:`channel_counts` -- *where* did a global threshold cut? Surviving channels per layer.
* :func:`sensitivity_curves` -- *which layers can take it?* Accuracy vs ratio, one curve per
  layer pruned alone (the sensitivity analysis of Li et al., 2017).
* :func:`mask_images` -- *what does a pruning pattern look like?* Keep-masks of one weight
  matrix side by side: scattered zeros (unstructured) against whole zero rows (channels).
* :func:`sparsity_curves` -- *does sparsity pay?* Any measured quantity (latency, bytes)
  against sparsity, one line per implementation.

Every function returns a ``matplotlib`` figure with a title, labelled axes and units, and
never calls ``plt.show()``: the notebook (or widget) decides where it goes and closes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor, nn

__all__ = [
    "KEPT_COLOR", "REMOVED_COLOR", "importance_panels", "bn_gammas", "gamma_histograms", "weight_histograms",
    "channel_counts", "sensitivity_curves", "sparsity_curves", "mask_images",
]

KEPT_COLOR = "#1f77b4"     # matplotlib's default blue
REMOVED_COLOR = "#d62728"  # and its red: removed channels are the ones to look at


def _as_numpy(values: Tensor | Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


def _new_figure(ncols: int = 1, width: float = 6.0, height: float = 3.8):
    import matplotlib.pyplot as plt  # pyplot only when drawing: importing prunekit stays light

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, list(axes[0])


def importance_panels(scores: Tensor | Sequence[float], removed: Sequence[int] = (),
                      layer: str = "", criterion: str = "L1 norm",
                      unit: str = "sum |w|") -> Figure:
    """Two panels for one layer: (left) the score of every output channel, red if removed;
    (right) the scores sorted ascending, with the threshold between the last removed and the
    first kept channel, and the removed share shaded.

    ``removed`` holds the indices that were (or would be) cut -- pass what the pruner really
    chose, so the picture cannot disagree with the model."""
    s = _as_numpy(scores)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"importance_panels: scores must be a non-empty 1-D sequence, got shape {s.shape}")
    gone = np.zeros(s.size, dtype=bool)
    idx = np.asarray(list(removed), dtype=int)
    if idx.size and (idx.min() < 0 or idx.max() >= s.size):
        raise ValueError(f"importance_panels: removed indices must lie in 0..{s.size - 1}, got {sorted(idx)}")
    gone[idx] = True
    n_gone = int(gone.sum())
    name = f"{layer}: " if layer else ""
    fig, (left, right) = _new_figure(2)

    colors = np.where(gone, REMOVED_COLOR, KEPT_COLOR)
    left.bar(np.arange(s.size), s, color=colors, width=1.0)
    left.set_xlabel("output channel index")
    left.set_ylabel(f"importance: {criterion} ({unit})")
    left.set_title(f"{name}{n_gone}/{s.size} channels removed (red)")

    order = np.sort(s)
    right.plot(np.arange(s.size), order, color=KEPT_COLOR, marker=".", markersize=3)
    if 0 < n_gone < s.size:
        threshold = 0.5 * (order[n_gone - 1] + order[n_gone])
        right.axhline(threshold, color=REMOVED_COLOR, linestyle="--",
                      label=f"threshold {threshold:.3g} ({n_gone / s.size:.0%} below)")
    if n_gone:
        right.axvspan(-0.5, n_gone - 0.5, color=REMOVED_COLOR, alpha=0.12, label="removed")
    right.set_xlabel("rank (ascending importance)")
    right.set_ylabel(f"importance: {criterion} ({unit})")
    right.set_title(f"{name}sorted {criterion}")
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="upper left", fontsize=8)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def bn_gammas(model: nn.Module) -> dict[str, Tensor]:
    """``{BatchNorm name: |gamma|}`` for every ``BatchNorm2d`` of ``model`` (detached copies)."""
    return {name: m.weight.detach().abs().clone() for name, m in model.named_modules()
            if isinstance(m, nn.BatchNorm2d) and m.weight is not None}


def gamma_histograms(gammas: Mapping[str, Tensor | Sequence[float]], bins: int = 40,
                     threshold: float | None = None, floor: float = 1e-6) -> Figure:
    """Histogram of |gamma| per model on a logarithmic axis (one step line per model).

    ``gammas`` maps a label (e.g. ``"vgg_small"``) to all of that model's |gamma| values,
    e.g. ``torch.cat(list(bn_gammas(model).values()))``. Values below ``floor`` are drawn at
    ``floor`` (log axes cannot show 0); a linear axis would hide the slimmed model's pile-up
    near zero in a single bar."""
    if not gammas:
        raise ValueError("gamma_histograms: pass at least one model's gammas")
    arrays = {label: np.maximum(np.abs(_as_numpy(g)), floor) for label, g in gammas.items()}
    lo = min(a.min() for a in arrays.values())
    hi = max(a.max() for a in arrays.values())
    edges = np.logspace(np.log10(lo), np.log10(hi * 1.0001) if hi > lo else np.log10(lo) + 1, bins + 1)
    fig, (ax,) = _new_figure(1, width=7.0)
    for label, a in arrays.items():
        ax.hist(a, bins=edges, histtype="step", linewidth=1.8, label=f"{label} ({a.size} channels)")
    if threshold is not None:
        ax.axvline(max(threshold, floor), color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"|gamma| of a BatchNorm channel (dimensionless, log scale; values < {floor:g} drawn at {floor:g})")
    ax.set_ylabel("number of channels")
    ax.set_title("BatchNorm scale |gamma|: where the channels sit")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def weight_histograms(model: nn.Module, sparsities: Mapping[str, float], bins: int = 40,
                      title: str = "Weights per layer") -> Figure:
    """One panel per layer named in ``sparsities``: the histogram of that layer's weights, the
    ones :func:`prunekit.finegrained.magnitude_mask` removes at the layer's sparsity stacked on
    top in the removed colour, and the cut at ±(largest removed |w|) as dashed lines.

    A magnitude mask is a window around zero: its width shows how deep the layer was cut, and
    comparing panels shows why one global threshold would cut layers of different scales very
    differently (Han et al., 2015, Fig. 7 in spirit)."""
    from .finegrained import magnitude_mask   # the same mask the pruning uses

    if not sparsities:
        raise ValueError("weight_histograms: name at least one layer")
    fig, axes = _new_figure(len(sparsities), width=2.7, height=3.0)
    for ax, (name, s) in zip(axes, sparsities.items()):
        w = model.get_submodule(name).weight.detach()
        values = _as_numpy(w.flatten())
        removed = (magnitude_mask(w, s) == 0).flatten().cpu().numpy()
        edges = np.linspace(values.min(), values.max(), bins + 1)
        ax.hist([values[~removed], values[removed]], bins=edges, stacked=True,
                color=[KEPT_COLOR, REMOVED_COLOR], label=["kept", "removed"])
        if removed.any():
            cut = float(np.abs(values[removed]).max())
            for x in (-cut, cut):
                ax.axvline(x, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(f"{name}: {s:.0%} removed\n{w.numel():,} weights", fontsize=9)
        ax.set_xlabel("weight value")
    axes[0].set_ylabel("number of weights")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def channel_counts(counts: Mapping[str, Mapping[str, int]], title: str = "Channels per layer") -> Figure:
    """Grouped bars: for each layer, the number of channels under each label (e.g.
    ``{"original": {...}, "slimmed, 50%": {...}}``); the numbers are written on the bars."""
    if not counts:
        raise ValueError("channel_counts: nothing to draw")
    layers = list(next(iter(counts.values())))
    width = 0.8 / len(counts)
    fig, (ax,) = _new_figure(1, width=max(6.0, 1.1 * len(layers) + 2))
    x = np.arange(len(layers))
    for i, (label, per_layer) in enumerate(counts.items()):
        heights = [per_layer.get(layer, 0) for layer in layers]
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * width, heights, width, label=label)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("layer")
    ax.set_ylabel("output channels (count)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def sensitivity_curves(curves: Mapping[str, Mapping[float, float]], baseline: float | None = None,
                       title: str = "Sensitivity: one layer pruned at a time") -> Figure:
    """Accuracy against the ratio of channels removed, one line per layer pruned *alone*.

    ``curves`` is ``{layer: {ratio: accuracy}}`` with ratios and accuracies as fractions
    (0..1); ``baseline`` draws the unpruned accuracy. Flat curves mark robust layers; a curve
    that drops early marks a layer to spare (Li et al., 2017, Sec. 4.1)."""
    if not curves:
        raise ValueError("sensitivity_curves: nothing to draw")
    fig, (ax,) = _new_figure(1, width=7.0, height=4.2)
    for layer, points in curves.items():
        ratios = sorted(points)
        ax.plot([100 * r for r in ratios], [100 * points[r] for r in ratios], marker="o",
                markersize=4, label=layer)
    if baseline is not None:
        ax.axhline(100 * baseline, color="k", linestyle=":", label=f"unpruned {baseline:.1%}")
    ax.set_xlabel("channels removed from that layer (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def sparsity_curves(sparsities: Sequence[float], series: Mapping[str, Sequence[float]], ylabel: str,
                    title: str, logy: bool = False) -> Figure:
    """One line per implementation of a measured quantity against sparsity (in %).

    ``sparsities`` are fractions 0..1; ``ylabel`` must carry the unit, e.g. ``"latency (ms)"``
    or ``"storage (KiB)"``. ``logy`` for quantities spanning orders of magnitude."""
    x = [100 * s for s in sparsities]
    if not series:
        raise ValueError("sparsity_curves: nothing to draw")
    fig, (ax,) = _new_figure(1, width=7.0)
    for label, ys in series.items():
        if len(ys) != len(x):
            raise ValueError(f"sparsity_curves: series {label!r} has {len(ys)} points for {len(x)} sparsities")
        ax.plot(x, list(ys), marker="o", markersize=4, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("sparsity: share of weights / channels removed (%)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def mask_images(masks: Mapping[str, Tensor], title: str = "Which weights are removed") -> Figure:
    """Keep-masks of one layer drawn as images, one panel each: rows are output channels,
    columns the ``C_in * k * k`` weights of a filter; dark = kept, light = removed.

    Same number of zeros, different shapes: scattered zeros leave every row (and so every
    dot product) in place, zero rows take whole dot products -- whole channels -- away."""
    if not masks:
        raise ValueError("mask_images: nothing to draw")
    fig, axes = _new_figure(len(masks), width=4.5, height=4.0)
    for ax, (label, mask) in zip(axes, masks.items()):
        m = _as_numpy(mask).reshape(mask.shape[0], -1)
        ax.imshow(m, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{label}: {1 - m.mean():.0%} removed", fontsize=10)
        ax.set_xlabel("weight within a filter (C_in·k·k index)")
        ax.set_ylabel("output channel (index)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig

"""Plots for the lectures: every figure answers one question a pruning decision depends on.

* :func:`importance_panels` -- *which* channels of one layer go? Scores per channel, coloured
  kept / removed, and the same scores sorted with the threshold line (the usual two-panel plot,
  drawn from what was actually removed, not from a guessed median).
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
* :func:`group_graph` -- *what must be cut together?* A stretch of the traced model, every
  layer and arrow coloured by its coupled group (lecture 05).
* :func:`sweep_panels` -- *which method wins at equal cost?* Small multiples of a sweep, a few
  highlighted series per panel over the rest in grey (lecture 07).
* :func:`head_heatmaps` -- *which attention heads matter?* Layer x head maps of several scores
  side by side, each cell labelled with its rank (lecture 09).

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
    "channel_counts", "sensitivity_curves", "sparsity_curves", "mask_images", "group_graph",
    "sweep_panels", "head_heatmaps", "GROUP_COLORS", "GROUP_MARKERS",
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


# ----------------------------------------------------------------------------- coupled groups
#: Twelve colours (matplotlib's tab10 without its grey, which the background series use, then black,
#: gold and navy) and twelve markers: a series keeps one (colour, marker) pair, and no two of the
#: first twelve share either.
GROUP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                "#17becf", "#000000", "#b8860b", "#393b79")
GROUP_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "h", "<", ">", "*", "p")


_SHORT_KIND = {"Conv2d": "conv", "BatchNorm2d": "BN", "ReLU": "ReLU", "Identity": "id", "add": "+",
               "Linear": "linear", "AdaptiveAvgPool2d": "pool", "MaxPool2d": "max"}


def _node_groups(graph, nodes) -> dict:
    """The group each node's *output* channels belong to: a layer that owns output channels
    names its group; anything else (ReLU, add, an identity shortcut) passes its first input's."""
    owner = {name: g for g in graph.groups for name in g.owners()}
    found = {}
    for node in nodes:
        target = node.target if node.op == "call_module" else None
        if target in owner:
            found[node] = owner[target]
        else:
            found[node] = next((found[a] for a in node.all_input_nodes if a in found), None)
    return found


def group_graph(graph, first: str, last: str, title: str = "Coupled groups") -> Figure:
    """Draw the traced layers from ``first`` to ``last`` (module names, in trace order) as a
    data-flow graph, every layer coloured by the group its *output* channels belong to and every
    arrow by the group of the channels it carries.

    Read it with the rule of lecture 05: a layer whose box has a colour *writes* (or scales) that
    group's channels; an arrow of a colour into a conv means the conv *reads* that group's
    channels as input columns. Layers on the longest path form the top row; a side branch (a
    projection shortcut) sits on the row below, just before the node that joins it."""
    import matplotlib.pyplot as plt

    order = list(graph.fx_graph.nodes)
    names = [n.target if n.op == "call_module" else None for n in order]
    if first not in names or last not in names:
        raise ValueError(f"group_graph: {first!r} and {last!r} must be traced modules of the model")
    nodes = order[names.index(first):names.index(last) + 1]
    inside = set(nodes)
    groups = _node_groups(graph, order)
    depth = {}
    for n in nodes:                                   # longest path from the range's start
        depth[n] = 1 + max((depth[a] for a in n.all_input_nodes if a in inside), default=-1)
    users = {n: [u for u in n.users if u in inside] for n in nodes}
    late = {}
    for n in reversed(nodes):                         # as late as its first user allows
        late[n] = min((late[u] - 1 for u in users[n]), default=depth[n])
    pos = {n: (late[n], 0 if late[n] == depth[n] else -1) for n in nodes}
    used = sorted({groups[n].index: groups[n] for n in nodes if groups[n] is not None}.values(),
                  key=lambda g: g.index)
    color = {g.index: GROUP_COLORS[i % len(GROUP_COLORS)] for i, g in enumerate(used)}

    def color_of(node) -> str:
        g = groups.get(node)
        return color.get(g.index, "grey") if g is not None else "grey"
    width = max(8.0, 0.62 * (max(x for x, _ in pos.values()) + 1))
    fig, ax = plt.subplots(figsize=(width, 3.2))
    for n in nodes:
        for a in n.all_input_nodes:
            if a not in pos:                             # an input from outside the range
                continue
            start = pos[a]
            ax.annotate("", xy=pos[n], xytext=start, arrowprops=dict(
                arrowstyle="-|>", color=color_of(a), lw=2.2,
                shrinkA=14, shrinkB=14, connectionstyle="arc3,rad=0.0"))
    modules = dict(graph.root.named_modules())
    for n in nodes:
        x, y = pos[n]
        kind = type(modules[n.target]).__name__ if n.op == "call_module" else getattr(n.target, "__name__", n.op)
        ax.scatter([x], [y], s=900, marker="s" if n.op == "call_module" else "o",
                   color=color_of(n), edgecolor="black", zorder=3)
        ax.text(x, y, _SHORT_KIND.get(kind, kind[:5]), ha="center", va="center", fontsize=7, zorder=4,
                color="white", fontweight="bold")
        if n.op == "call_module":
            parts = n.target.split(".")
            cut = 2 if len(parts) > 2 else len(parts) - 1          # "layer2.0" over "shortcut.0"
            label = ".".join(parts[:cut]) + "\n" + ".".join(parts[cut:])
            ax.text(x, y - 0.28, label, ha="center", va="top", fontsize=6, color="dimgrey")
    for g in used:
        ax.scatter([], [], s=120, marker="s", color=color[g.index],
                   label=f"group {g.index}: {g.size} channels (first writer {g.name})")
    ax.set_ylim(-1.6, 0.9)
    ax.set_xlim(-0.8, max(x for x, _ in pos.values()) + 0.8)
    ax.axis("off")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(used), 3), fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- comparisons
def sweep_panels(rows: Sequence[Mapping], panels: Mapping[str, Sequence[str]], x_key: str = "macs_kept",
                 group_key: str = "method", xlabel: str = "MACs kept (% of the dense model)",
                 ylabel: str = "test accuracy (%)", title: str = "") -> Figure:
    """Small multiples of a sweep: one panel per ``{panel title: [series, ...]}``, each showing
    a few series (mean over seeds against ``x_key``) in colour over every other series in grey.

    ``rows`` are :func:`prunekit.compare.aggregate` rows (``mean``, ``std``, optionally ``se``).
    A series keeps its colour and marker in every panel; the thick error bar is the seed
    standard deviation, the thin wide one +-1 binomial standard error of the test set. Keep a
    panel to about five series: more cannot be told apart."""
    if not panels:
        raise ValueError("sweep_panels: name at least one panel")
    names = list(dict.fromkeys(r[group_key] for r in rows))
    missing = sorted({s for series in panels.values() for s in series} - set(names))
    if missing:
        raise ValueError(f"sweep_panels: no rows for {missing}")
    shown = list(dict.fromkeys(s for series in panels.values() for s in series))
    style = {s: (GROUP_COLORS[i % len(GROUP_COLORS)], GROUP_MARKERS[i % len(GROUP_MARKERS)])
             for i, s in enumerate(shown)}
    fig, axes = _new_figure(len(panels), width=4.2, height=3.8)
    xs = sorted({r[x_key] for r in rows})
    step = (min(np.diff(xs)) if len(xs) > 1 else 0.1) * 100 * 0.06
    for ax, (panel, series) in zip(axes, panels.items()):
        for name in names:
            pts = sorted((r for r in rows if r[group_key] == name), key=lambda r: r[x_key])
            x = np.array([100 * r[x_key] for r in pts])
            y = np.array([100 * r["mean"] for r in pts])
            if name not in series:
                ax.plot(x, y, color="0.82", lw=1, zorder=1)
                continue
            color, marker = style[name]
            x = x + (series.index(name) - (len(series) - 1) / 2) * step
            ax.errorbar(x, y, yerr=[100 * r["std"] for r in pts], color=color, marker=marker, ms=6,
                        capsize=3, elinewidth=2, lw=1.5, label=name, zorder=3)
            if all("se" in r for r in pts):
                ax.errorbar(x, y, yerr=[100 * r["se"] for r in pts], fmt="none", color=color,
                            capsize=6, elinewidth=0.8, alpha=0.5, zorder=2)
        ax.set_title(panel, fontsize=10)
        ax.set_xticks([100 * v for v in xs])
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel(ylabel)
    lo = min(100 * (r["mean"] - r["std"]) for r in rows)
    hi = max(100 * (r["mean"] + r["std"]) for r in rows)
    for ax in axes:
        ax.set_ylim(lo - 1, hi + 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def head_heatmaps(panels: Mapping[str, Tensor | np.ndarray], row_labels: Sequence[str] = (),
                  title: str = "Which heads matter") -> Figure:
    """One layer x head heatmap per score (``{title: array[layers, heads]}``), side by side.

    Scores come in different units (a loss change, a norm), so each panel has its own colour
    scale, and every cell is labelled with its *rank* over the whole model (1 = most important):
    two panels agree where the same cells are bright and carry small numbers."""
    if not panels:
        raise ValueError("head_heatmaps: nothing to draw")
    arrays = {label: _as_numpy(v) for label, v in panels.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"head_heatmaps: every panel must be one (layers, heads) array; got {shapes}")
    layers, heads = next(iter(shapes))
    fig, axes = _new_figure(len(arrays), width=3.0, height=3.0)
    for ax, (label, a) in zip(axes, arrays.items()):
        image = ax.imshow(a, cmap="viridis", aspect="equal")
        ranks = np.empty(a.size, dtype=int)
        ranks[np.argsort(-a.ravel(), kind="stable")] = np.arange(1, a.size + 1)
        for (i, j), r in zip(np.ndindex(a.shape), ranks):
            bright = a[i, j] > (a.min() + a.max()) / 2
            ax.text(j, i, str(r), ha="center", va="center", fontsize=8, color="black" if bright else "white")
        ax.set_title(label, fontsize=9)
        ax.set_xticks(range(heads))
        ax.set_xlabel("head")
        ax.set_yticks(range(layers), list(row_labels) or [str(i) for i in range(layers)], fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    axes[0].set_ylabel("block")
    fig.suptitle(title)
    fig.tight_layout()
    return fig

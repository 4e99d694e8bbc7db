"""Comparing pruning criteria honestly: against an oracle, across seeds, and against scratch.

Three questions, one section each:

1. **Does a criterion rank channels the way the truth does?** The *oracle* importance of a
   channel is the loss increase measured when that one channel is zeroed (Molchanov et al.,
   "Importance Estimation for Neural Network Pruning", CVPR 2019, compare their criteria to it
   with Spearman's rank correlation). :func:`prunekit.importance.oracle` measures it for one
   layer; :func:`rank_agreement` turns scores into Spearman / Kendall correlations.
2. **Does the difference survive fine-tuning?** :func:`sweep` runs one experiment per
   (criterion, ratio, seed), :func:`aggregate` reduces it to mean +- std, and
   :func:`noise_floor_pp` says how small a difference the test set can resolve at all.
3. **Is pruning better than training the small network directly?** Liu et al., "Rethinking
   the Value of Network Pruning" (ICLR 2019) found that the pruned *architecture*, trained
   from scratch, often matches the fine-tuned pruned model: :func:`train_from_scratch`.

Plus :func:`pareto_front` (which models are not beaten on both accuracy and MACs) and the
plots the notebooks draw. Every plot function returns its figure and labels its axes with units.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

__all__ = [
    "spearman", "kendall", "RankAgreement", "rank_agreement", "format_rank_table",
    "sweep", "aggregate", "format_table", "noise_floor_pp", "pareto_front",
    "reinitialize", "train_from_scratch",
    "plot_rank_scatter", "plot_ratio_sweep", "plot_pareto", "plot_latency",
]

ArrayLike = Tensor | np.ndarray | Sequence[float]


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().double().cpu().numpy().ravel()
    return np.asarray(x, dtype=np.float64).ravel()


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_numpy(a), _as_numpy(b)
    if a.shape != b.shape:
        raise ValueError(f"rank correlation needs one score per channel on both sides: got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError("rank correlation needs at least 2 channels")
    return a, b


# ----------------------------------------------------------------------------- 1. rank agreement
def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rho: the Pearson correlation of the two *rank* vectors.

    +1: same order, -1: reversed, ~0: unrelated. Only the order matters, which is all a
    pruning criterion is used for (keep the top channels). A constant input has no order;
    that case returns 0.0 instead of NaN, because "no information" is what it means here.
    """
    a, b = _paired(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.spearmanr(a, b).statistic)


def kendall(a: ArrayLike, b: ArrayLike) -> float:
    """Kendall's tau-b: (concordant - discordant pairs) / all pairs, corrected for ties.

    Easier to read than Spearman: tau = 0.6 means that for a random pair of channels the
    criterion and the oracle agree on which is more important 80% of the time ((1+tau)/2).
    """
    a, b = _paired(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(stats.kendalltau(a, b).statistic)


@dataclass(frozen=True)
class RankAgreement:
    """How well one criterion's channel ranking matches the oracle's, on one layer."""

    criterion: str
    spearman: float
    kendall: float
    half_cut_overlap: float  # fraction of the oracle's least-important half that the criterion also puts there


def _bottom_half_overlap(scores: np.ndarray, oracle: np.ndarray) -> float:
    # The question a 50% prune actually asks: do we cut the same channels the oracle would?
    k = len(scores) // 2
    pick = set(np.argsort(scores, kind="stable")[:k].tolist())
    truth = set(np.argsort(oracle, kind="stable")[:k].tolist())
    return len(pick & truth) / max(k, 1)


def rank_agreement(scores: Mapping[str, ArrayLike], oracle: ArrayLike) -> list[RankAgreement]:
    """Spearman, Kendall and bottom-half overlap of every criterion in ``scores`` vs ``oracle``."""
    truth = _as_numpy(oracle)
    rows = []
    for name, s in scores.items():
        s = _as_numpy(s)
        rows.append(RankAgreement(name, spearman(s, truth), kendall(s, truth),
                                  _bottom_half_overlap(*_paired(s, truth))))
    return rows


def format_rank_table(rows: Sequence[RankAgreement]) -> str:
    """A fixed-width text table (deterministic, so notebook tests can compare it)."""
    lines = [f"{'criterion':<22}{'Spearman':>10}{'Kendall':>10}{'same 50% cut':>14}"]
    for r in rows:
        lines.append(f"{r.criterion:<22}{r.spearman:>+10.2f}{r.kendall:>+10.2f}{r.half_cut_overlap:>14.0%}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- 2. seeds and noise
def sweep(run: Callable[..., Mapping[str, float]], criteria: Iterable[str], ratios: Iterable[float],
          seeds: Iterable[int]) -> list[dict]:
    """Call ``run(criterion=..., ratio=..., seed=...)`` for every combination; one record each.

    ``run`` returns a dict of measurements (e.g. ``{"accuracy": 0.97, "macs": 1.2e6}``); the
    record is that dict plus the three keys. Keeping the experiment a plain function keeps
    this loop trivial and the experiment testable on its own.
    """
    criteria, ratios, seeds = list(criteria), list(ratios), list(seeds)
    records = []
    for criterion in criteria:
        for ratio in ratios:
            for seed in seeds:
                out = dict(run(criterion=criterion, ratio=ratio, seed=seed))
                records.append({"criterion": criterion, "ratio": ratio, "seed": seed, **out})
    return records


def aggregate(records: Sequence[Mapping], value: str, by: Sequence[str] = ("criterion", "ratio")) -> list[dict]:
    """Mean, sample standard deviation and count of ``value`` per group of ``by`` keys
    (groups in first-seen order). With one seed the std is 0.0: a single run shows no spread,
    which does NOT mean there is none."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r[value]))
    out = []
    for key, vals in groups.items():
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append({**dict(zip(by, key)), "mean": statistics.fmean(vals), "std": std, "n": len(vals)})
    return out


def format_table(rows: Sequence[Mapping], columns: Sequence[str], formats: Mapping[str, str] | None = None,
                 width: int = 12) -> str:
    """Rows of dicts as a fixed-width text table; ``formats`` maps a column to a format spec
    such as ``".2%"`` or ``",d"``."""
    formats = formats or {}
    lines = ["".join(f"{c:>{width}}" for c in columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row[c]
            cells.append(f"{v:>{width}{formats.get(c, '')}}" if c in formats else f"{str(v):>{width}}")
        lines.append("".join(cells))
    return "\n".join(lines)


def noise_floor_pp(n_test: int) -> float:
    """One test image, in percentage points of accuracy: the smallest difference a test set of
    ``n_test`` images can show at all (1,000 images -> 0.1 pt). Real noise is larger: the
    binomial standard error of an accuracy p is sqrt(p(1-p)/n) (p = 0.97, n = 1000: 0.54 pt)."""
    if n_test <= 0:
        raise ValueError(f"n_test must be positive, got {n_test}")
    return 100.0 / n_test


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the Pareto-optimal points, cheapest first: no other point has lower (or
    equal) cost AND higher (or equal) accuracy with at least one strictly better."""
    if len(costs) != len(accuracies):
        raise ValueError(f"pareto_front: {len(costs)} costs but {len(accuracies)} accuracies")
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    front, best = [], -np.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


# ----------------------------------------------------------------------------- 3. scratch baseline
def reinitialize(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with the same (pruned) architecture and fresh random weights.

    Every layer that knows how to initialise itself (``reset_parameters``) does so; BatchNorm
    running statistics are reset too. This is the *architecture* that pruning found, with
    everything it learned thrown away -- Liu et al. (2019)'s control experiment.
    """
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return fresh


def train_from_scratch(pruned: nn.Module, train_loader, epochs: int, seed: int = 0, lr: float = 0.05,
                       progress: bool = False) -> nn.Module:
    """Liu et al. (ICLR 2019): train the pruned architecture from random weights.

    Their finding (CIFAR-10 and ImageNet, with the same training budget as the big model):
    scratch-trained pruned architectures match or beat fine-tuned ones for structured pruning,
    so the *architecture* is what pruning contributes. With a tiny budget, as in a notebook,
    the inherited weights usually still win -- compare at equal epochs and say so.
    """
    from .train import train  # local import: compare is usable without the training stack

    model = reinitialize(pruned, seed)
    train(model, train_loader, epochs=epochs, lr=lr, seed=seed, progress=progress)
    return model


# ----------------------------------------------------------------------------- plots
def _new_axes(ax=None, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _finish(fig, ax, xlabel: str, ylabel: str, title: str):
    """Every comparison plot ends the same way: labelled axes, title, legend, light grid."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_rank_scatter(scores: Mapping[str, ArrayLike], oracle: ArrayLike, title: str = "Criterion vs oracle"):
    """One panel per criterion: channel rank by the criterion (x) vs rank by the oracle (y).

    Ranks, not raw values, because Spearman compares ranks; a perfect criterion is the
    diagonal. Each panel's title carries its Spearman rho. Returns the figure."""
    import matplotlib.pyplot as plt

    truth = _as_numpy(oracle)
    truth_rank = stats.rankdata(truth)
    n = len(scores)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.0), sharey=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], scores.items()):
        s = _as_numpy(s)
        ax.scatter(stats.rankdata(s), truth_rank, s=10, alpha=0.7)
        ax.plot([1, len(s)], [1, len(s)], color="grey", lw=0.8, ls="--")
        ax.set_title(f"{name}\nSpearman {spearman(s, truth):+.2f}", fontsize=9)
        ax.set_xlabel("rank by criterion")
    axes[0][0].set_ylabel("rank by oracle ΔL")
    fig.suptitle(f"{title}  (rank 1 = least important)")
    fig.tight_layout()
    return fig


def plot_ratio_sweep(summary: Sequence[Mapping], title: str = "Accuracy after pruning",
                     ylabel: str = "test accuracy (%)", scale: float = 100.0, floor_pp: float | None = None):
    """Mean +- std (error bars) of each criterion against the pruning ratio, from
    :func:`aggregate` rows. ``floor_pp`` draws the test set's resolution as a band."""
    fig, ax = _new_axes()
    criteria = list(dict.fromkeys(r["criterion"] for r in summary))
    for i, crit in enumerate(criteria):
        rows = [r for r in summary if r["criterion"] == crit]
        x = np.array([r["ratio"] for r in rows]) * 100 + (i - (len(criteria) - 1) / 2) * 0.6
        ax.errorbar(x, [r["mean"] * scale for r in rows], yerr=[r["std"] * scale for r in rows],
                    marker="o", capsize=3, label=crit)
    return _finish(fig, ax, "channels removed per layer (%)", ylabel,
                   title + (f"  (1 test image = {floor_pp:.1f} pt)" if floor_pp else ""))


def plot_pareto(points: Sequence[Mapping], title: str = "Accuracy vs compute",
                cost_key: str = "macs", acc_key: str = "accuracy", label_key: str = "label"):
    """Accuracy (%) against MACs (millions) for every point; the Pareto front is joined by a
    line. Each point is a dict with ``cost_key``, ``acc_key`` and ``label_key``."""
    fig, ax = _new_axes(figsize=(6.5, 4.2))
    costs = [p[cost_key] / 1e6 for p in points]
    accs = [p[acc_key] * 100 for p in points]
    groups = list(dict.fromkeys(p[label_key] for p in points))
    for g in groups:
        idx = [i for i, p in enumerate(points) if p[label_key] == g]
        ax.scatter([costs[i] for i in idx], [accs[i] for i in idx], label=g, s=30)
    front = pareto_front(costs, accs)
    ax.plot([costs[i] for i in front], [accs[i] for i in front], color="black", lw=1, ls="--",
            label="Pareto front")
    return _finish(fig, ax, "MACs per image (millions)", "test accuracy (%)", title)


def plot_latency(rows: Sequence[Mapping], title: str = "Measured speed-up vs MACs reduction"):
    """MACs ratio (x) against measured latency ratio (y), dense / pruned, one point per row
    (keys ``label``, ``macs_ratio``, ``latency_ratio``). Points below the diagonal are slower
    than the MAC count promises -- the usual case."""
    fig, ax = _new_axes()
    for r in rows:
        ax.scatter(r["macs_ratio"], r["latency_ratio"], s=40)
        ax.annotate(r["label"], (r["macs_ratio"], r["latency_ratio"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    hi = max(max(r["macs_ratio"] for r in rows), max(r["latency_ratio"] for r in rows)) * 1.1
    ax.plot([1, hi], [1, hi], color="grey", ls="--", lw=0.8, label="speed-up = MACs reduction")
    return _finish(fig, ax, "MACs reduction (dense / pruned, ×)",
                   "measured speed-up (dense / pruned latency, ×)", title)

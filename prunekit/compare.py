"""Comparing pruning criteria honestly: against an oracle, across seeds, and against scratch.

Three questions, one section each:

1. **Does a criterion rank channels the way the truth does?** The *oracle* importance of a
   channel is the loss increase measured when that one channel is zeroed (Molchanov et al.,
   "Importance Estimation for Neural Network Pruning", CVPR 2019, compare their criteria to it
   with Spearman's rank correlation). :func:`prunekit.importance.oracle` measures it for one
   layer; :func:`rank_agreement` turns scores into Spearman / Kendall correlations.
2. **Does the difference survive fine-tuning?** :func:`sweep` runs one experiment per
   (criterion, ratio, seed) and :func:`aggregate` reduces it to the mean, the seed-to-seed
   spread and the binomial standard error of the test set (:func:`binomial_se`). Criteria
   are compared at equal *cost*, not equal ratio: :func:`plan_at_macs` finds, for any
   criterion and scope, the plan that meets a MAC budget.
3. **Is pruning better than training the small network directly?** Liu et al., "Rethinking
   the Value of Network Pruning" (ICLR 2019) found that the pruned *architecture*, trained
   from scratch, often matches the fine-tuned pruned model: :func:`train_from_scratch`,
   with the budgets :func:`scratch_b_epochs` computes.

Plus :func:`pareto_front` (which models are not beaten on both accuracy and MACs),
:func:`scratch_b_epochs` (Liu et al.'s equal-compute budget) and the plots the notebooks
draw. Every plot function returns its figure and labels its axes with units.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from .graph import build_graph
from .importance import group_scores
from .planning import EPS, Plan, allowed_removals, choose
from .settings import Settings

__all__ = [
    "spearman", "kendall", "RankAgreement", "rank_agreement", "format_rank_table",
    "sweep", "aggregate", "format_table", "binomial_se", "resolution_pp", "plan_at_macs",
    "pareto_front", "reinitialize", "train_from_scratch", "scratch_b_epochs",
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


def aggregate(records: Sequence[Mapping], value: str, by: Sequence[str] = ("criterion", "ratio"),
              n_test: int | None = None) -> list[dict]:
    """Mean, sample standard deviation (the seed-to-seed spread), min, max and count of
    ``value`` per group of ``by`` keys (groups in first-seen order). With one seed the std is
    0.0: a single run shows no spread, which does NOT mean there is none.

    With ``n_test`` (and ``value`` an accuracy) each row also gets ``"se"``, the binomial
    standard error of an accuracy at the mean measured on ``n_test`` images
    (:func:`binomial_se`): the other source of noise, which more seeds do not reduce."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r[value]))
    out = []
    for key, vals in groups.items():
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        row = {**dict(zip(by, key)), "mean": statistics.fmean(vals), "std": std,
               "min": min(vals), "max": max(vals), "n": len(vals)}
        if n_test is not None:
            row["se"] = binomial_se(row["mean"], n_test)
        out.append(row)
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


def binomial_se(accuracy: float, n_test: int) -> float:
    """Standard error of an accuracy measured on ``n_test`` independent test images:
    ``sqrt(p (1 - p) / n)``. Each image is a coin that lands "correct" with probability ``p``,
    so another test set of the same size would give an accuracy about this far away
    (p = 0.95, n = 1000: 0.0069, i.e. 0.7 percentage points; two SE either side is a ~95%
    interval). This is noise in the *measurement*; retraining with another seed adds its own."""
    if n_test <= 0:
        raise ValueError(f"n_test must be positive, got {n_test}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {accuracy}")
    return math.sqrt(accuracy * (1.0 - accuracy) / n_test)


def resolution_pp(n_test: int) -> float:
    """One test image in percentage points (1,000 images -> 0.1 pt): the *resolution* of the
    test set -- the smallest step an accuracy can take. Not its noise: that is
    :func:`binomial_se`, several times larger."""
    if n_test <= 0:
        raise ValueError(f"n_test must be positive, got {n_test}")
    return 100.0 / n_test


# ----------------------------------------------------------------------------- equal cost
def plan_at_macs(model: nn.Module, example_inputs: Tensor, macs_fraction: float,
                 importance: str | Callable = "l1", scope: str = "local",
                 **settings: Any) -> Plan:
    """The plan that keeps at most ``macs_fraction`` of the model's MACs, removing as few
    channels as it can: the ratio is found by bisection, the scores computed once.

    Why: criteria must be compared at equal *cost*. At one local ratio every criterion keeps
    the same widths, but a global ranking (or an iterative schedule) puts the cuts elsewhere,
    and channels of early, high-resolution layers cost far more MACs than late ones: "50% of
    the channels" can mean 25% or 40% of the MACs. Arguments as :func:`prunekit.prune`
    (``scope`` ``"local"``: one ratio for every group; ``"global"``: one ranking, normalised
    by each group's mean unless ``normalise=False``). Returns a :class:`prunekit.planning.Plan`;
    ``plan.settings["ratio"]`` is the ratio found, ``plan.apply()`` cuts.
    """
    if not 0 < macs_fraction <= 1:
        raise ValueError(f"macs_fraction={macs_fraction!r} must be in (0, 1]: the share of MACs to keep")
    config = Settings.of(importance=importance, scope=scope, **settings)
    graph = build_graph(model, example_inputs)
    groups = graph.prunable_groups()
    scores = group_scores(graph.root, graph, groups, config.importance, config.data,
                          config.batches, config.loss_fn, config.seed)

    def removed_at(ratio: float) -> dict[int, Tensor]:
        local = {g.index: ratio for g in groups} if config.scope == "local" else {}
        return choose(groups, scores, local, config.but(ratio=min(ratio, 1 - EPS)))

    dense = graph.count_macs()
    budget = macs_fraction * dense
    lo, hi = 0.0, _largest_feasible_ratio(groups, config.max_ratio, config.scope)
    fewest = graph.count_macs(removed_at(hi))
    if fewest > budget:
        raise ValueError(f"cannot reach {macs_fraction:.1%} of the MACs with max_ratio="
                         f"{config.max_ratio}: the most it removes leaves {fewest / dense:.1%}")
    for _ in range(40):      # MACs fall monotonically with the ratio; find the smallest that fits
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if graph.count_macs(removed_at(mid)) <= budget else (mid, hi)
    summary = {**config.but(ratio=min(hi, 1 - EPS)).summary(), "ratio": hi,
               "macs_fraction": macs_fraction}
    return Plan(model, graph, removed_at(hi), scores, summary)


def _largest_feasible_ratio(groups: Sequence, max_ratio: float, scope: str) -> float:
    """The largest ratio the caps allow: every group at its largest allowed removal count."""
    if scope == "local":
        return max_ratio
    total = sum(g.size for g in groups)
    caps = [max(allowed_removals(g.size, g.blocks, 1, math.floor(max_ratio * g.size + EPS), g.min_keep))
            for g in groups]
    return sum(caps) / total


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

    Their finding (CIFAR-10 and ImageNet, with the dense model's training recipe): for
    structured pruning, scratch-trained pruned architectures match or beat fine-tuned ones.
    They draw two different conclusions. For a *predefined* architecture ("remove 50% of every
    layer") pruning found nothing -- the small network could have been trained directly. For
    an architecture an *automatic* method chose (a global ranking, network slimming), pruning
    acted as architecture search, and that architecture is what it contributes -- if it beats
    a uniform one of the same cost, trained the same way. Budgets: "Scratch-E" trains as many
    epochs as the dense model had, "Scratch-B" as much compute (:func:`scratch_b_epochs`).
    """
    from .train import train  # local import: compare is usable without the training stack

    model = reinitialize(pruned, seed)
    train(model, train_loader, epochs=epochs, lr=lr, seed=seed, progress=progress)
    return model


def scratch_b_epochs(epochs: int, dense_macs: float, pruned_macs: float, max_factor: float = 2.0) -> int:
    """Epochs for "Scratch-B" (Liu et al., ICLR 2019): the pruned network trained from scratch
    with the *same compute* as the dense one got -- ``epochs * dense_macs / pruned_macs``,
    rounded -- but at most ``max_factor`` times the epochs, as the paper does when the pruned
    model saves more than 2x FLOPs. "Scratch-E" is the same number of epochs, ``epochs``."""
    if epochs < 0 or dense_macs <= 0 or pruned_macs <= 0 or max_factor < 1:
        raise ValueError(f"need epochs >= 0, positive MACs and max_factor >= 1; got {epochs}, "
                         f"{dense_macs}, {pruned_macs}, {max_factor}")
    return int(round(epochs * min(dense_macs / pruned_macs, max_factor)))


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
                     ylabel: str = "test accuracy (%)", scale: float = 100.0, x_key: str = "ratio",
                     xlabel: str = "channels removed per layer (%)", x_scale: float = 100.0,
                     group_key: str = "criterion"):
    """Mean of each criterion (``group_key``) against ``x_key`` (the ratio, or the share of
    MACs kept), from :func:`aggregate` rows. Two error bars per point: the thick one is the
    seed-to-seed standard deviation, the thin, wider one +-1 binomial standard error of the
    test set (when the rows carry ``"se"``, see :func:`aggregate`)."""
    fig, ax = _new_axes()
    groups = list(dict.fromkeys(r[group_key] for r in summary))
    xs = sorted({r[x_key] for r in summary})
    step = (min(np.diff(xs)) if len(xs) > 1 else 0.1) * x_scale * 0.5 / max(len(groups), 1)
    for i, name in enumerate(groups):
        rows = [r for r in summary if r[group_key] == name]
        x = np.array([r[x_key] for r in rows]) * x_scale + (i - (len(groups) - 1) / 2) * step
        y = [r["mean"] * scale for r in rows]
        line = ax.errorbar(x, y, yerr=[r["std"] * scale for r in rows], marker="o", capsize=3,
                           elinewidth=2, label=name)
        if all("se" in r for r in rows):
            ax.errorbar(x, y, yerr=[r["se"] * scale for r in rows], fmt="none", capsize=6,
                        elinewidth=0.8, alpha=0.5, color=line[0].get_color())
    return _finish(fig, ax, xlabel, ylabel, title)


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

"""Pruning in steps: small cuts the network can recover from, instead of one big one.

:func:`prune_iteratively` alternates a cut and a fine-tune (Han et al., 2015; Molchanov et
al., 2017); :func:`schedule_keep` says how much of the network is left after each step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .errors import PruningError
from .graph import ChannelGraph, build_graph
from .metrics import count_params
from .planning import EPS, layer_names, plan_on_graph
from .settings import Settings

__all__ = ["prune_iteratively", "schedule_keep", "SCHEDULES"]

SCHEDULES = ("linear", "geometric", "agp")


def schedule_keep(target: float, steps: int, schedule: str = "linear") -> list[float]:
    """Fraction of channels *kept* after each step ``0..steps`` on the way to removing
    ``target`` of them (step 0 keeps everything, step ``steps`` keeps ``1 - target``).

    * ``"linear"``: the same share of the original channels goes at every step;
    * ``"geometric"``: the same fraction of what is *left* goes at every step;
    * ``"agp"``: automated gradual pruning's cubic schedule (Zhu & Gupta, "To prune, or not
      to prune", 2017): removed share ``target * (1 - (1 - i/steps)^3)`` -- big cuts while
      the network is redundant, ever smaller ones as it gets tight. With 3 steps to 70%:
      49%, 67%, 70% removed (linear: 23%, 47%, 70%).
    """
    if schedule == "linear":
        return [1 - target * i / steps for i in range(steps + 1)]
    if schedule == "geometric":
        return [(1 - target) ** (i / steps) for i in range(steps + 1)]
    if schedule == "agp":
        return [1 - target * (1 - (1 - i / steps) ** 3) for i in range(steps + 1)]
    raise PruningError(f"schedule={schedule!r}: use one of {', '.join(SCHEDULES)}")


def _accuracy(evaluate: Callable[[nn.Module], Any], model: nn.Module) -> float:
    out = evaluate(model)
    return float(getattr(out, "accuracy", out))


def _group_sizes(graph: ChannelGraph, skip: set[str]) -> dict[str, int]:
    """Current size of every prunable, not-ignored group, keyed by its first producing layer
    (a name that survives pruning, so steps can be compared with the start)."""
    return {g.name: g.size for g in graph.prunable_groups()
            if not any(n in skip for n in g.owners())}


def _step_ratios(start: dict[str, int], now: dict[str, int], cumulative: float,
                 scope: str) -> tuple[float, dict[str, float]]:
    """Ratios for the next step so that, after it, ``floor(cumulative * n_start)`` channels of
    each group (local) or of all groups (global) are gone: rounding never accumulates."""
    if scope == "global":
        total0, total = sum(start.values()), sum(now.values())
        gone = math.floor(cumulative * total0 + EPS) - (total0 - total)
        return max(gone, 0) / total, {}
    return 0.0, {name: max(math.floor(cumulative * n0 + EPS) - (n0 - now[name]), 0) / now[name]
                 for name, n0 in start.items()}


def prune_iteratively(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...],
                      target: float, steps: int,
                      fine_tune: Callable[[nn.Module], Any] | None = None,
                      evaluate: Callable[[nn.Module], Any] | None = None, schedule: str = "linear",
                      **prune_kwargs: Any) -> tuple[nn.Module, list[dict]]:
    """Prune to ``target`` in ``steps`` rounds, fine-tuning after each (Han et al., 2015;
    Molchanov et al., 2017): small cuts the network can recover from, instead of one big one.

    ``schedule="linear"`` removes an equal share of the original channels each step;
    ``"geometric"`` removes an equal *fraction of what is left*; ``"agp"`` is Zhu & Gupta's
    (2017) cubic schedule, front-loaded (see :func:`schedule_keep`). Each step's ratios are
    computed against the *original* widths, so the end result has exactly the widths of a
    one-shot ``prune(ratio=target)``. ``fine_tune(model)`` trains in place (or returns a new
    model); ``evaluate(model)`` returns an accuracy (or an object with ``.accuracy``).
    Other keyword arguments go to :func:`prune` (not ``ratio``, ``ratios``, ``inplace``).

    Returns ``(model, history)``: one dict per step (step 0 = the start) with ``step``,
    ``ratio`` (cumulative target), ``params``, ``macs`` and ``accuracy`` if ``evaluate`` is
    given. The model passed in is not modified.
    """
    if not 0 <= target < 1 or not isinstance(steps, int) or steps < 1:
        raise PruningError(f"need 0 <= target < 1 and an integer steps >= 1, got target={target!r},"
                           f" steps={steps!r}")
    if {"inplace", "ratio", "ratios"} & set(prune_kwargs):
        raise PruningError("prune_iteratively sets ratio, ratios and inplace itself; "
                           "pass target= and steps=")
    keep = schedule_keep(target, steps, schedule)
    config = Settings.of(**prune_kwargs)
    skip = layer_names(model, config.ignore)
    graph = build_graph(model, example_inputs)
    start = _group_sizes(graph, skip)
    current, history = model, []

    def record(step: int, macs: int) -> None:
        row = {"step": step, "ratio": 1 - keep[step], "params": count_params(current),
               "macs": macs}
        if evaluate is not None:
            row["accuracy"] = _accuracy(evaluate, current)
        history.append(row)

    record(0, graph.count_macs())
    for step in range(1, steps + 1):
        if current is not model:                    # one trace per step, of the model as it is
            graph = build_graph(current, example_inputs)
        ratio, ratios = _step_ratios(start, _group_sizes(graph, skip), 1 - keep[step],
                                     config.scope)
        result = plan_on_graph(current, graph, config, ratio=ratio,
                               ratios=ratios).apply(inplace=current is not model)
        current = result.model
        if fine_tune is not None:
            out = fine_tune(current)
            current = out if isinstance(out, nn.Module) else current
        record(step, result.after["macs"])
    return current, history

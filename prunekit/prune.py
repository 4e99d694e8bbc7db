"""The public API: one call from a model to a smaller model.

``prune`` walks the straight line of the course::

    graph.build_graph      -> coupled channel groups          (what must be cut together)
    importance.group_scores -> one score per group channel     (what matters least)
    plan.local/global_counts + select_lowest -> a Plan          (which channels go)
    Plan.apply -> surgery  -> a new, smaller nn.Module          (cut them out)

Nothing touches the caller's model until the plan is complete and every new layer is built;
with ``inplace=False`` (the default) it is never touched at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import Tensor, nn

from .errors import PruningError
from .graph import ChannelGraph, Group, as_input_tuple, build_graph
from .importance import criterion_name, group_scores, needs_data
from .metrics import count_params
from .plan import EPS, Plan, PruneResult, global_counts, local_counts, select_lowest

__all__ = ["prune", "plan", "plan_on_graph", "prune_iteratively", "schedule_keep", "SCHEDULES"]


def _check_settings(ratio: float, scope: str, ratios: Mapping[str, float] | None,
                    max_ratio: float, round_to: int, importance: Any, data: Any) -> None:
    """Refuse bad arguments before any work, each with what to do instead."""
    for name, r in [("ratio", ratio), *((f"ratios[{k!r}]", v) for k, v in (ratios or {}).items())]:
        if not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise PruningError(f"{name}={r!r} must be in [0, 1): the fraction of channels to "
                               "remove (1 would remove every channel)")
    if scope not in ("local", "global"):
        raise PruningError(f"scope={scope!r}: use 'local' (same ratio per group) or 'global' "
                           "(rank all groups together)")
    if not 0 < max_ratio <= 1:
        raise PruningError(f"max_ratio={max_ratio!r} must be in (0, 1]")
    if not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to={round_to!r} must be a positive integer")
    criterion_name(importance)
    if needs_data(importance) and data is None:
        raise PruningError(f"importance={importance!r} needs data: pass data=<a DataLoader of "
                           "(inputs, targets)> (and loss_fn= if not cross-entropy)")


def _names(model: nn.Module, layers: Iterable[str | nn.Module]) -> set[str]:
    """Layer names from names or module objects."""
    by_id = {id(m): n for n, m in model.named_modules()}
    out = set()
    for layer in layers:
        if isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise PruningError(f"ignore= holds a {type(layer).__name__} that is not part "
                                   "of the model")
            out.add(by_id[id(layer)])
        else:
            out.add(str(layer))
    return out


def _targets(graph: ChannelGraph, ratio: float, ratios: Mapping[str, float], ignore: set[str],
             scope: str) -> tuple[dict[int, float], list[Group]]:
    """Split groups into locally pruned ``{group: ratio}`` and globally ranked ones."""
    known = {n for g in graph.groups for n in g.owners()}
    for name in [*ratios, *ignore]:
        if name not in known:
            raise PruningError(f"{name!r} is not a layer whose output channels prunekit can "
                               f"cut; known layers: {', '.join(sorted(known))}")
    local: dict[int, float] = {}
    ranked: list[Group] = []
    for g in graph.groups:
        owners = g.owners()
        named = {n: ratios[n] for n in owners if n in ratios}
        if len(set(named.values())) > 1:
            raise PruningError(f"conflicting ratios {named} for layers that share one channel "
                               f"group ('{g.name}'); give one ratio")
        if g.pinned:
            if named:
                raise PruningError(f"ratios names {list(named)} but its channels are pinned "
                                   f"({g.pinned}); they cannot be pruned exactly")
            continue
        if any(n in ignore for n in owners) or (g.is_output and not named):
            continue
        if named:
            local[g.index] = next(iter(named.values()))
        elif scope == "local":
            local[g.index] = ratio
        else:
            ranked.append(g)
    return local, ranked


def plan(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], ratio: float = 0.5,
         importance: str | Callable[[nn.Module], Tensor] = "l1", scope: str = "local",
         ratios: Mapping[str, float] | None = None, ignore: Iterable[str | nn.Module] = (),
         max_ratio: float = 0.9, round_to: int = 1, data: Any = None,
         loss_fn: Callable | None = None, batches: int = 4, seed: int = 0,
         normalise: bool = True) -> Plan:
    """Decide which channels to remove, without removing them. Arguments as :func:`prune`."""
    _check_settings(ratio, scope, ratios, max_ratio, round_to, importance, data)
    as_input_tuple(example_inputs)
    graph = build_graph(model, example_inputs)
    return plan_on_graph(model, graph, ratio, importance, scope, ratios, ignore, max_ratio,
                         round_to, data, loss_fn, batches, seed, normalise)


def plan_on_graph(model: nn.Module, graph: ChannelGraph, ratio: float = 0.5,
                  importance: str | Callable[[nn.Module], Tensor] = "l1", scope: str = "local",
                  ratios: Mapping[str, float] | None = None,
                  ignore: Iterable[str | nn.Module] = (), max_ratio: float = 0.9,
                  round_to: int = 1, data: Any = None, loss_fn: Callable | None = None,
                  batches: int = 4, seed: int = 0, normalise: bool = True) -> Plan:
    """:func:`plan` on a graph already built from ``model`` (no second trace)."""
    _check_settings(ratio, scope, ratios, max_ratio, round_to, importance, data)
    local, ranked = _targets(graph, ratio, dict(ratios or {}), _names(model, ignore), scope)
    chosen = [g for g in graph.groups if g.index in local] + ranked
    scores = group_scores(model, graph, chosen, importance, data, batches, loss_fn, seed)
    counts = local_counts([g for g in chosen if g.index in local], local, max_ratio, round_to)
    counts.update(global_counts(ranked, scores, ratio, max_ratio, round_to, normalise))
    by_index = {g.index: g for g in chosen}
    removed = {i: select_lowest(scores[i], k, by_index[i].blocks, by_index[i].block_of)
               for i, k in counts.items() if k}
    settings = dict(ratio=ratio, importance=importance if isinstance(importance, str) else
                    getattr(importance, "__name__", "callable"), scope=scope, ratios=ratios,
                    max_ratio=max_ratio, round_to=round_to, normalise=normalise)
    return Plan(model, graph, removed, scores, settings)


def prune(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], ratio: float = 0.5,
          importance: str | Callable[[nn.Module], Tensor] = "l1", scope: str = "local",
          ratios: Mapping[str, float] | None = None, ignore: Iterable[str | nn.Module] = (),
          max_ratio: float = 0.9, round_to: int = 1, inplace: bool = False, data: Any = None,
          loss_fn: Callable | None = None, batches: int = 4, seed: int = 0,
          normalise: bool = True) -> PruneResult:
    """Remove channels from ``model``; return a :class:`~prunekit.plan.PruneResult`.

    Args:
        model: any ``torch.fx``-traceable CNN built from the ops in :mod:`prunekit.graph`.
        example_inputs: one batch-shaped input (or a tuple of them), e.g. ``(1, 1, 28, 28)``.
        ratio: fraction of channels to remove, in ``[0, 1)``; ``floor(ratio * n)`` per group.
        importance: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"``, ``"taylor_bn"``,
            ``"fpgm"``, ``"random"``, ``"oracle"``, or a callable ``fn(layer) -> Tensor
            [out_channels]`` (summed over a group's conv/linear producers).
        scope: ``"local"`` (each group by its ratio) or ``"global"`` (rank all groups
            together; reaches the requested fraction or raises).
        normalise: for ``scope="global"``: divide each group's scores by the group's mean
            before ranking (default; layers of different scale compete fairly). ``False``
            ranks raw scores -- network slimming's global |gamma| threshold (Liu et al.,
            2017), meaningful only when the scores are comparable across layers.
        ratios: ``{layer name: ratio}`` overrides for the group that layer's outputs belong
            to; naming the final classifier here is the only way to prune the classes.
        ignore: layers (names or modules) whose output-channel groups are left alone.
        max_ratio: no group loses more than this fraction of its channels.
        round_to: surviving channel counts are multiples of this (e.g. 8 for fast kernels).
        inplace: modify ``model`` itself instead of returning a pruned copy.
        data, loss_fn, batches: batches of ``(inputs, targets)`` for ``"taylor"``,
            ``"taylor_bn"`` and ``"oracle"`` (first ``batches`` batches; cross-entropy).
        seed: seed of the ``"random"`` baseline.

    Raises:
        PruningError: for bad arguments and for models it cannot prune *exactly*; the model
        passed in is left exactly as it was.
    """
    p = plan(model, example_inputs, ratio=ratio, importance=importance, scope=scope,
             ratios=ratios, ignore=ignore, max_ratio=max_ratio, round_to=round_to, data=data,
             loss_fn=loss_fn, batches=batches, seed=seed, normalise=normalise)
    return p.apply(inplace=inplace)


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
    scope, ignore = prune_kwargs.get("scope", "local"), prune_kwargs.get("ignore", ())
    skip = _names(model, ignore)
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
        ratio, ratios = _step_ratios(start, _group_sizes(graph, skip), 1 - keep[step], scope)
        result = plan_on_graph(current, graph, ratio=ratio, ratios=ratios,
                               **prune_kwargs).apply(inplace=current is not model)
        current = result.model
        if fine_tune is not None:
            out = fine_tune(current)
            current = out if isinstance(out, nn.Module) else current
        record(step, result.after["macs"])
    return current, history

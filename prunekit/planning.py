"""Which channels go? From settings and scores to a plan -- and a plan to a pruned model.

``prune`` walks the straight line of the course::

    graph.build_graph       -> coupled channel groups          (what must be cut together)
    importance.group_scores -> one score per group channel     (what matters least)
    local / global counts + select_lowest -> a Plan            (which channels go)
    Plan.apply -> surgery   -> a new, smaller nn.Module         (cut them out, check, swap in)

Nothing touches the caller's model until the plan is complete, every new layer is built and
the cut is checked against the zero-masked model; with ``inplace=False`` (the default) it is
never touched at all.

Two ways to decide how many channels each group loses:

* **local** -- every group loses ``floor(ratio * n)`` of its ``n`` channels (or the ratio
  given for one of its layers in ``ratios``). ``floor``, so ``ratio=0`` removes nothing: the
  seed outline's ``max(num_prune, 1)`` removed a channel even at ratio 0.
* **global** -- all channels of all groups are ranked together and the lowest
  ``floor(ratio * N)`` go, where ``N`` counts the channels of the groups taking part. By
  default each group's scores are first divided by the group's mean
  (:func:`prunekit.importance.normalise`), so layers of different scale compete fairly;
  ``normalise=False`` ranks the raw scores, as network slimming does with |gamma| after its
  sparsity training has made the gammas of all layers comparable (Liu et al., 2017). A group
  never loses more than ``max_ratio`` of its channels. If the caps make the request impossible we raise: a
  library that silently prunes less than you asked for misleads every plot after it.

Constraints every count obeys: at least one channel per group (per block) survives (two
where a ``squeeze()`` would otherwise drop the axis); a group
with ``blocks`` equal blocks (a grouped conv's outputs) loses the same number in each block;
with ``round_to = r`` the surviving count is a multiple of ``r`` (hardware likes multiples
of 8), so counts are rounded towards removing *less*, and a global plan then tops up with
the cheapest whole steps until the requested total is reached.

Inside a group the lowest-scoring channels go first (ties: lower index first, so plans are
deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import hf
from .errors import PruningError
from .graph import ChannelGraph, Group, as_input_tuple, build_graph
from .importance import group_scores, normalise
from .metrics import count_params
from .settings import Settings
from .surgery import mask as mask_model
from .surgery import pruned_modules, pruned_params, replace_modules
from .verify import output_error, run_twice, verify_cut

__all__ = ["plan", "prune", "plan_on_graph", "choose", "slimming_ratios", "Plan", "PruneResult",
           "GroupList", "layer_names", "allowed_removals", "select_lowest", "local_counts",
           "global_counts", "EPS"]

EPS = 1e-9   # floor(0.29 * 100) must be 29, not 28.999999999999996 -> 28


# ----------------------------------------------------------------------------------------------
# How many channels each group loses
# ----------------------------------------------------------------------------------------------

def allowed_removals(n: int, blocks: int, round_to: int, cap: int, keep: int = 1) -> list[int]:
    """Every removal count ``k <= cap`` a group of ``n`` channels allows: ``k`` a multiple of
    ``blocks``, at least one channel left per block (and ``keep`` in all), ``n - k`` a
    multiple of ``round_to``."""
    cap = max(0, min(cap, n - max(blocks, keep)))
    return [k for k in range(0, cap + 1, blocks) if k == 0 or (n - k) % round_to == 0]


def _cap(group: Group, max_ratio: float) -> int:
    return math.floor(max_ratio * group.size + EPS)


def local_counts(groups: list[Group], ratios: dict[int, float], max_ratio: float,
                 round_to: int) -> dict[int, int]:
    """Per group: the largest allowed removal count not above ``floor(ratio * n)``."""
    counts = {}
    for g in groups:
        r = ratios[g.index]
        if r > max_ratio + EPS:
            raise PruningError(f"ratio {r} for group '{g.name}' exceeds max_ratio={max_ratio}; "
                               "lower the ratio or raise max_ratio")
        wanted = math.floor(r * g.size + EPS)
        counts[g.index] = max(k for k in allowed_removals(g.size, g.blocks, round_to, wanted,
                                                          g.min_keep))
    return counts


def global_counts(groups: list[Group], scores: dict[int, Tensor], ratio: float,
                  max_ratio: float, round_to: int, normalised: bool = True) -> dict[int, int]:
    """Rank every channel of ``groups`` together (by score divided by its group's mean when
    ``normalised``, else by raw score); remove the lowest ``floor(ratio * N)``, at most
    ``max_ratio`` of any group. Raises if that is impossible."""
    if not groups:
        return {}
    total = sum(g.size for g in groups)
    target = math.floor(ratio * total + EPS)
    caps = {g.index: max(allowed_removals(g.size, g.blocks, round_to, _cap(g, max_ratio),
                                          g.min_keep)) for g in groups}
    if sum(caps.values()) < target:
        kept = next((g for g in groups if g.min_keep > 1), None)
        also = f", and '{kept.name}' must keep {kept.min_keep} ({kept.min_keep_why})" if kept \
            else ""
        raise PruningError(
            f"global ratio {ratio} asks for {target} of {total} channels, but max_ratio="
            f"{max_ratio} (with round_to={round_to}{also}) lets at most {sum(caps.values())} "
            "go; raise max_ratio or lower the ratio")
    scale = normalise if normalised else (lambda s: s)
    ranked = {g.index: torch.sort(scale(scores[g.index]), stable=True).values for g in groups}
    # Within a group the lowest scores go first, so a cap is a prefix: rank the prefixes only.
    pool = torch.cat([ranked[i][:c] for i, c in caps.items()])
    owner = torch.cat([torch.full((c,), i) for i, c in caps.items()])
    chosen = owner[torch.sort(pool, stable=True).indices[:target]]
    counts = {g.index: int((chosen == g.index).sum()) for g in groups}
    return _snap_and_top_up(groups, counts, ranked, target, round_to, max_ratio)


def _snap_and_top_up(groups: list[Group], counts: dict[int, int], ranked: dict[int, Tensor],
                     target: int, round_to: int, max_ratio: float) -> dict[int, int]:
    """Round each count down to an allowed one, then add the cheapest allowed steps (lowest
    mean normalised score) until the target is met (exact when round_to == blocks == 1)."""
    allowed = {g.index: allowed_removals(g.size, g.blocks, round_to, _cap(g, max_ratio),
                                         g.min_keep) for g in groups}
    counts = {i: max(k for k in allowed[i] if k <= c) for i, c in counts.items()}
    while sum(counts.values()) < target:
        options = []
        for i, c in counts.items():
            bigger = [k for k in allowed[i] if k > c]
            if bigger:
                options.append((float(ranked[i][c:bigger[0]].mean()), i, bigger[0]))
        if not options:   # cannot happen: the caps were checked before ranking
            raise PruningError("global ranking could not reach the requested ratio")
        _, i, k = min(options)
        counts[i] = k
    return counts


def select_lowest(scores: Tensor, k: int, blocks: int = 1,
                  block_of: Tensor | None = None) -> Tensor:
    """Sorted indices of the ``k`` lowest scores; with ``blocks`` > 1, ``k / blocks`` from each
    block (``block_of[i]`` is channel i's block; by default equal consecutive blocks, as in
    a grouped conv's groups)."""
    if k == 0:
        return torch.zeros(0, dtype=torch.long)
    if blocks == 1:
        return torch.sort(torch.sort(scores, stable=True).indices[:k]).values
    if block_of is None:
        block_of = torch.arange(len(scores)) // (len(scores) // blocks)
    order = torch.sort(scores, stable=True).indices
    order = order[torch.sort(block_of[order], stable=True).indices]    # by block, then score
    first = torch.searchsorted(block_of[order], block_of[order])       # start of each block
    rank = torch.arange(len(order)) - first                             # place within block
    return torch.sort(order[rank < k // blocks]).values


# ----------------------------------------------------------------------------------------------
# Which groups take part, and how many channels each loses
# ----------------------------------------------------------------------------------------------

def layer_names(model: nn.Module, layers: Iterable[str | nn.Module]) -> set[str]:
    """Layer names from names or module objects (``ignore=[model.fc]`` or ``["fc"]``)."""
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


def _targets(graph: ChannelGraph, settings: Settings,
             ignore: set[str]) -> tuple[dict[int, float], list[Group]]:
    """Split groups into locally pruned ``{group: ratio}`` and globally ranked ones."""
    ratios = settings.ratios
    known = {n for g in graph.groups for n in g.owners()}
    for name in [*ratios, *ignore]:
        if name not in known:
            raise PruningError(f"{name!r} is not a layer whose output channels prunekit can "
                               f"cut; known layers: {', '.join(sorted(known))}")
    local: dict[int, float] = {}
    ranked: list[Group] = []
    for g in graph.groups:
        named = {n: ratios[n] for n in g.owners() if n in ratios}
        if _excluded(g, named, ignore):
            continue
        if named:
            local[g.index] = next(iter(named.values()))
        elif settings.scope == "local":
            local[g.index] = settings.ratio
        else:
            ranked.append(g)
    return local, ranked


def _excluded(g: Group, named: dict[str, float], ignore: set[str]) -> bool:
    """Is group ``g`` left alone? (pinned, ignored, or the model output not named in ratios)
    Refuses conflicting or impossible requests for it."""
    if len(set(named.values())) > 1:
        raise PruningError(f"conflicting ratios {named} for layers that share one channel "
                           f"group ('{g.name}'); give one ratio")
    if g.pinned:
        if named:
            raise PruningError(f"ratios names {list(named)} but its channels are pinned "
                               f"({g.pinned}); they cannot be pruned exactly")
        return True
    return any(n in ignore for n in g.owners()) or (g.is_output and not named)


def choose(groups: list[Group], scores: dict[int, Tensor], local: Mapping[int, float],
           settings: Settings) -> dict[int, Tensor]:
    """``{group index: channels to remove}``: groups in ``local`` lose their own ratio, the
    others are ranked together at ``settings.ratio``; the lowest scores go."""
    ranked = [g for g in groups if g.index not in local]
    counts = local_counts([g for g in groups if g.index in local], dict(local),
                          settings.max_ratio, settings.round_to)
    counts.update(global_counts(ranked, scores, settings.ratio, settings.max_ratio,
                                settings.round_to, settings.normalise))
    by_index = {g.index: g for g in groups}
    return {i: select_lowest(scores[i], k, by_index[i].blocks, by_index[i].block_of)
            for i, k in counts.items() if k}


# ----------------------------------------------------------------------------------------------
# The three calls
# ----------------------------------------------------------------------------------------------

def plan(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], ratio: float = 0.5,
         **settings: Any) -> Plan:
    """Decide which channels to remove, without removing them: trace ``model`` on
    ``example_inputs``, score, choose. Settings as :class:`prunekit.settings.Settings`."""
    config = Settings.of(ratio=ratio, **settings)
    as_input_tuple(example_inputs)
    graph = build_graph(model, example_inputs, config.frontend, config.approximate)
    return plan_on_graph(model, graph, config)


def plan_on_graph(model: nn.Module, graph: ChannelGraph, settings: Settings | None = None,
                  **changes: Any) -> Plan:
    """:func:`plan` on a graph already built from ``model`` (no second trace); ``changes``
    override single settings (``plan_on_graph(m, g, s, ratio=0.3)``)."""
    if settings is None:
        config = Settings.of(**changes)
    else:                                     # checked once: when made, and again if changed
        config = settings.but(**changes) if changes else settings
    local, ranked = _targets(graph, config, layer_names(model, config.ignore))
    chosen = [g for g in graph.groups if g.index in local] + ranked
    scores = group_scores(graph.root, graph, chosen, config.importance, config.data,
                          config.batches, config.loss_fn, config.seed)
    return Plan(model, graph, choose(chosen, scores, local, config), scores, config.summary())


def prune(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], ratio: float = 0.5,
          *, inplace: bool = False, **settings: Any) -> PruneResult:
    """Remove channels from ``model``; return a :class:`PruneResult`.

    Args:
        model: any ``torch.fx``-traceable model built from the ops in :mod:`prunekit.graph`.
        example_inputs: one batch-shaped input (or a tuple of them), e.g. ``(1, 1, 28, 28)``.
        ratio: fraction of channels to remove, in ``[0, 1)``; ``floor(ratio * n)`` per group.
        inplace: modify ``model`` itself instead of returning a pruned copy.
        **settings: ``importance``, ``scope``, ``ratios``, ``ignore``, ``max_ratio``,
            ``round_to``, ``data``, ``loss_fn``, ``batches``, ``seed``, ``normalise`` --
            see :class:`prunekit.settings.Settings`.

    Raises:
        PruningError: for bad arguments and for models it cannot prune *exactly*; the model
        passed in is left exactly as it was.
    """
    return plan(model, example_inputs, ratio, **settings).apply(inplace=inplace)


def slimming_ratios(model: nn.Module, example_input: Tensor, ratio: float,
                    max_ratio: float = 0.9) -> dict[str, float]:
    """Network slimming's global threshold, with a per-layer cap, as per-layer ratios.

    All channels of all prunable groups are ranked together by |gamma| (summed over the
    group's BatchNorms: in a plain chain that is one BN, in a ResNet stage every BN that
    normalises the shared channels); the lowest ``floor(ratio * N)`` are marked -- exactly
    the channels under Liu et al.'s global threshold -- and then no group may lose more than
    ``floor(max_ratio * size)``. Returns ``{layer name: ratio}`` for :func:`prune`'s
    ``ratios=``. The cap means the total removed can fall short of ``ratio``: that is the
    point, it refuses to empty a layer (the outline's uncapped version empties whole layers).

    The raw |gamma| are compared, as in the paper (``prune(..., scope="global",
    normalise=False)`` ranks the same way but tops up elsewhere to reach the full ratio).
    A layer's gamma scale is not comparable to another's when BatchNorm follows the next
    conv -- scaling one layer's gammas is undone downstream (Ye et al., 2018) -- but after
    slimming the gammas split into a near-zero pile and the rest, orders of magnitude
    apart, so every threshold inside that gap removes the same channels."""
    if not 0.0 <= ratio < 1.0 or not 0.0 < max_ratio <= 1.0:
        raise ValueError(f"slimming_ratios: need 0 <= ratio < 1 and 0 < max_ratio <= 1, "
                         f"got {ratio}, {max_ratio}")
    graph = build_graph(model, example_input)
    groups = [g for g in graph.groups if g.prunable and g.modules("bn")]
    scores = group_scores(graph.root, graph, groups, "bn_scale")
    everything = torch.cat([scores[g.index] for g in groups])
    owner = torch.cat([torch.full((g.size,), i) for i, g in enumerate(groups)])
    lowest = everything.argsort(stable=True)[: int(ratio * everything.numel() + EPS)]
    below = torch.bincount(owner[lowest], minlength=len(groups)).tolist()
    return {g.name: min(k, math.floor(max_ratio * g.size + EPS)) / g.size
            for g, k in zip(groups, below)}


# ----------------------------------------------------------------------------------------------
# The plan and its result
# ----------------------------------------------------------------------------------------------

class GroupList(list):
    """The coupled groups of a model; ``print()`` shows every group and its layers."""

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self)


@dataclass
class PruneResult:
    """What :func:`prunekit.prune` returns.

    ``model``: the pruned model (a plain ``nn.Module``); ``removed``: ``{layer name: sorted
    removed output-channel indices}`` for every Conv / BatchNorm / Linear that lost any;
    ``groups``: the coupled groups (printable); ``before`` / ``after``: ``{"params", "macs"}``.
    """

    model: nn.Module
    removed: dict[str, list[int]]
    groups: GroupList
    before: dict[str, int]
    after: dict[str, int]
    plan: Plan | None = field(default=None, repr=False)
    #: ``None`` for an exact cut; after an approximate one (``approximate=True``):
    #: ``{"relative_error": e, "inputs": shapes, "groups": names}`` -- the output error of the
    #: pruned model against the dense model, measured on the example input.
    approximation: dict[str, Any] | None = None

    @property
    def exact(self) -> bool:
        """True when the pruned model equals the zero-masked dense model (checked)."""
        return self.approximation is None

    def __str__(self) -> str:
        b, a = self.before, self.after
        text = (f"PruneResult: params {b['params']:,} -> {a['params']:,} "
                f"(x{a['params'] / max(b['params'], 1):.3f}), MACs {b['macs']:,} -> "
                f"{a['macs']:,} (x{a['macs'] / max(b['macs'], 1):.3f}); "
                f"{len(self.removed)} layers cut")
        if self.approximation is not None:
            text += (f"; NOT EXACT: normalised streams cut approximately, relative output error "
                     f"{self.approximation['relative_error']:.3g} against the dense model on "
                     f"the example input {self.approximation['inputs']}")
        return text


@dataclass
class Plan:
    """A pruning decision, before anything is cut: for each group, which channels go.

    ``removed``: ``{group index: sorted channel indices}``; ``scores``: the group scores
    the decision was made from. ``apply()`` cuts them out (:class:`PruneResult`);
    ``mask()`` zeroes them in a copy instead -- the same function, still full size.
    """

    model: nn.Module
    graph: ChannelGraph
    removed: dict[int, Tensor]
    scores: dict[int, Tensor]
    settings: dict[str, Any] = field(default_factory=dict)
    _spent: bool = field(default=False, repr=False)

    @property
    def groups(self) -> GroupList:
        return GroupList(self.graph.groups)

    def removed_by_layer(self) -> dict[str, list[int]]:
        """``{layer: removed output indices}``, as ``PruneResult.removed`` will be."""
        return self.graph.removed_outputs(self.removed)

    def apply(self, inplace: bool = False) -> PruneResult:
        """Cut the planned channels. Builds every new layer first, checks the cut model
        against the zero-masked one on the example input (:func:`prunekit.verify.verify_cut`,
        two forward passes), then swaps the new layers in (into a copy, or into
        ``self.model`` if ``inplace``); a refusal or a failure leaves the model as it was."""
        if self._spent:
            raise PruningError("this plan was already applied in place; make a new plan")
        before = {"params": count_params(self.model), "macs": self.graph.count_macs()}
        approx = [g for g in self.graph.groups if g.approximate and len(self.removed.get(
            g.index, ()))]
        exact = {i: r for i, r in self.removed.items()
                 if not any(g.index == i for g in approx)}
        new, params, numbers = self._cut(exact)
        if any(len(r) for r in exact.values()):   # the exact part: checked against the mask
            probe = self.graph.root             # the caller's layers, run on probes only
            verify_cut(self.graph, exact,
                       replace_modules(probe, new, False, params, share=True, updates=numbers),
                       mask_model(probe, self.graph, exact, share=True))
        approximation = None
        if approx:                                # the approximate part: measured, reported
            new, params, numbers = self._cut(self.removed)
            approximation = self._measure(new, params, numbers, approx)
        model = replace_modules(self.model, new, inplace, params, updates=numbers)
        self._spent = inplace
        after = {"params": count_params(model), "macs": self.graph.count_macs(self.removed)}
        return PruneResult(model, self.removed_by_layer(), self.groups, before, after, self,
                           approximation)

    def _cut(self, removed: dict[int, Tensor]) -> tuple[dict, dict, Any]:
        new = pruned_modules(self.model, self.graph, removed)
        return new, pruned_params(self.model, self.graph, removed), hf.updates(self.model, new)

    def _measure(self, new: dict, params: dict, numbers: Any, approx: list[Group]) -> dict:
        """Output error of the (approximately) cut model against the dense one."""
        probe = self.graph.root
        try:
            got, want = run_twice(replace_modules(probe, new, False, params, share=True,
                                                  updates=numbers), probe,
                                  self.graph.example_inputs)
            error = output_error(got, want)
        except Exception as e:  # noqa: BLE001 -- the cut model's forward() fails
            raise PruningError(f"the approximate cut of {[g.name for g in approx]} gives a "
                               f"model that does not run ({type(e).__name__}: {e})") from e
        return {"relative_error": error, "groups": [g.name for g in approx],
                "inputs": [tuple(t.shape) for t in self.graph.example_inputs]}

    def mask(self) -> nn.Module:
        """A full-size copy of the model with the planned channels zeroed (conv / linear rows
        and biases, BN gamma and beta). Its outputs equal the pruned model's."""
        return mask_model(self.model, self.graph, self.removed)

    def __str__(self) -> str:
        lines = [f"Plan ({self.settings.get('importance')}, {self.settings.get('scope')}): "
                 f"{sum(len(r) for r in self.removed.values())} channels removed"]
        for g in self.graph.groups:
            if g.index in self.removed:
                gone = self.removed[g.index].tolist()
                shown = gone if len(gone) <= 12 else gone[:12] + ["..."]
                lines.append(f"  group {g.index:>3} {g.name:<28} {g.size:>5} -> "
                             f"{g.size - len(gone):>5}  remove {shown}")
        return "\n".join(lines)



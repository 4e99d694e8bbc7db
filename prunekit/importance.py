"""How much does a channel matter? One function per criterion, one score per output channel.

Every criterion answers the same question -- *which channels can go with the least damage?* --
from different evidence. Low score = prune first.

======================  ====================================================================
``l1_norm``             sum of |weights| of the filter that makes the channel (Li et al., 2017)
``l2_norm``             the same with the Euclidean norm
``bn_scale``            |gamma| of the channel's BatchNorm: the layer's own "volume knob"
                        (Liu et al., 2017, network slimming)
``taylor``              first-order estimate of the loss change when the channel is removed,
                        |sum over the channel's parameters of w * dL/dw| (Molchanov et al.,
                        2017, 2019); also on the BN gate gamma/beta ("taylor_bn")
``fpgm``                distance of the filter to all others: a filter near the geometric
                        median is replaceable by the rest (He et al., 2019)
``random``              a seeded random baseline: every criterion should beat it
``oracle``              the *true* loss increase when the channel is zeroed -- too slow to
                        prune with, the yardstick to evaluate the criteria against
======================  ====================================================================

The per-layer functions (``l1_norm(conv)``, ``bn_scale(bn)``, ``taylor(model, loader)``,
``oracle(model, name, loader)``) are what a notebook plots. :func:`group_scores` lifts them to
coupled groups (see :mod:`prunekit.graph`):

* **Reduction.** A group's score for channel ``c`` is the SUM of the per-layer scores of its
  members for ``c``: the output rows of every conv / linear / depthwise conv that produces the
  channel (``l1``, ``l2``, ``fpgm``, ``taylor``, callables) or every BatchNorm that scales it
  (``bn_scale``, ``taylor_bn``). In a ResNet stage a channel is produced by several convs;
  removing it removes all of those filters, so their evidence adds up.
* **Normalisation** (global ranking only, :func:`normalise`): each group's scores are divided
  by the group's mean score. Raw L1 norms of a 3x3x128 filter dwarf those of a 3x3x16 filter,
  so without it a global threshold empties some layers and skips others (the seed outline's
  global |gamma| threshold left ``[1, 1, 1, 105]`` channels at 70%).

A custom criterion is any callable ``fn(layer) -> Tensor[out_channels]`` taking a Conv / Linear
layer; it is summed over the producers of a group exactly like ``l1_norm``. A new *named*
criterion is one decorated function (:func:`register`): it receives a :class:`Scoring` (the
model, its graph, the groups, the data settings) and returns one score per channel of each
group -- ``prunekit.prune(importance="name")``, the settings check and the list of known
names all read :data:`REGISTRY`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import device_of, to_device
from .errors import PruningError
from .graph import PRODUCER_ROLES, ChannelGraph, Group, build_graph, eval_mode
from .graph.kinds import kind_of, weight_rows
from .replay import SuffixReplay

__all__ = [
    "l1_norm", "l2_norm", "bn_scale", "fpgm", "random", "taylor", "oracle",
    "group_oracle", "group_scores", "normalise", "criterion_name", "needs_data", "CRITERIA",
    "REGISTRY", "Criterion", "Scoring", "register",
]

LossFn = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------------
# Per-layer criteria
# ----------------------------------------------------------------------------------------------

def _row_params(layer: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    """(weight, bias) that hold one row per output channel -- for an attention layer, the
    packed q/k/v projection, one row per head dim."""
    if isinstance(getattr(layer, "in_proj_weight", None), Tensor):
        return layer.in_proj_weight, getattr(layer, "in_proj_bias", None)
    return getattr(layer, "weight", None), getattr(layer, "bias", None)


def _filters(layer: nn.Module) -> Tensor:
    """The weight as one row per output channel (:func:`prunekit.graph.kinds.weight_rows`)."""
    kind = kind_of(layer)
    if kind is None or kind.rows is None or not isinstance(_row_params(layer)[0], Tensor):
        raise PruningError(f"{type(layer).__name__} has no filter weights to score; pass a "
                           "Conv or Linear layer")
    return kind.rows(layer).detach()


def l1_norm(layer: nn.Module) -> Tensor:
    """Sum of absolute weights of each output filter (Li et al., 2017): a small filter writes
    small values, so its channel contributes little to the next layer."""
    return torch.linalg.vector_norm(_filters(layer), ord=1, dim=1)   # no |w| temporary


def l2_norm(layer: nn.Module) -> Tensor:
    """Euclidean norm of each output filter; ranks much like L1, punishes single large weights
    a little more."""
    return torch.linalg.vector_norm(_filters(layer), ord=2, dim=1)


def bn_scale(bn: nn.Module) -> Tensor:
    """|gamma| of a BatchNorm (Liu et al., 2017). After normalisation every channel has unit
    variance, so gamma alone sets how loud the channel is. Network slimming adds an L1
    penalty on gamma during training so many become ~0 and can go for free."""
    gamma = getattr(bn, "weight", None)
    if not isinstance(bn, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) or gamma is None:
        raise PruningError(f"bn_scale needs an affine BatchNorm layer, got {type(bn).__name__}")
    return gamma.detach().abs()


def fpgm(layer: nn.Module) -> Tensor:
    """Filter Pruning via Geometric Median (He et al., 2019): score = summed Euclidean distance
    of a filter to all filters of its layer. The filter closest to the geometric median is
    the one the others can best stand in for, so it goes first -- whatever its norm."""
    rows = _filters(layer).float()
    return torch.cdist(rows[None], rows[None])[0].sum(dim=1)


def random(layer_or_count: nn.Module | int, seed: int = 0) -> Tensor:
    """Uniform random scores from a seeded generator: the baseline every criterion must beat."""
    n = layer_or_count if isinstance(layer_or_count, int) else _filters(layer_or_count).shape[0]
    return torch.rand(n, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# Data-driven criteria
# ----------------------------------------------------------------------------------------------

def _batches(data: Any, batches: int) -> list[tuple[Tensor, Tensor]]:
    """The first ``batches`` (inputs, targets) pairs of a DataLoader / list (or one pair)."""
    if data is None:
        raise PruningError("this criterion needs data: pass data=<a DataLoader or a list of "
                           "(inputs, targets) batches>")
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor) \
            and isinstance(data[1], Tensor) and data[0].dim() > data[1].dim():
        data = [tuple(data)]
    taken = [(b[0], b[1]) for b in islice(iter(data), batches)]
    if not taken:
        raise PruningError("data yielded no batches; pass a non-empty DataLoader")
    return taken


def _out_rows(layer: nn.Module) -> int:
    """How many output rows a layer's scores have (a ConvTranspose's are its weight's dim 1)."""
    weight = _row_params(layer)[0]
    if not isinstance(weight, Tensor):
        return getattr(layer, "num_features", 0)
    return weight_rows(layer).shape[0] if weight.dim() > 1 else weight.shape[0]


def _scored_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer with a kind (:func:`prunekit.graph.kinds.kind_of`) and a weight."""
    return {n: m for n, m in model.named_modules()
            if kind_of(m) is not None and isinstance(_row_params(m)[0], Tensor)}


def taylor(model: nn.Module, data: Any, batches: int = 4,
           loss_fn: LossFn | None = None) -> dict[str, Tensor]:
    """First-order Taylor importance of every output channel of every Conv / Linear / BN.

    Removing channel ``c`` sets its parameters ``w`` to 0; to first order the loss changes by
    ``-sum_w w * dL/dw`` (Molchanov et al., 2017; 2019). We take the absolute value per batch
    and average over ``batches`` batches. For a BatchNorm the parameters are its gate
    ``gamma[c], beta[c]`` (Molchanov et al., 2019); for a conv/linear the filter and bias.

    Computed in **eval mode**: in train mode BatchNorm re-normalises every filter, the loss is
    invariant to a filter's scale, so ``sum w * dL/dw`` is ~1e-9 for conv weights. Gradients
    are taken with ``torch.autograd.grad``: the model's ``.grad`` fields stay untouched.
    Runs on the model's device; returns ``{module name: Tensor[out_channels]}`` on the CPU.
    """
    loss_fn = loss_fn or F.cross_entropy
    layers = _scored_layers(model)
    params = [(name, p) for name, m in layers.items() for p in _row_params(m)
              if isinstance(p, Tensor) and p.requires_grad]
    if not params:
        raise PruningError("taylor needs parameters with requires_grad=True")
    totals = {name: torch.zeros(_out_rows(m), device=_row_params(m)[0].device)
              for name, m in layers.items()}
    taken = to_device(_batches(data, batches), device_of(model))
    with eval_mode(model):
        for x, y in taken:
            grads = torch.autograd.grad(loss_fn(model(x), y), [p for _, p in params],
                                        allow_unused=True)
            per_batch = {name: torch.zeros_like(t) for name, t in totals.items()}
            for (name, p), g in zip(params, grads):
                if g is not None:
                    per_batch[name] += weight_rows(layers[name], p.detach() * g).sum(1) \
                        if p.dim() > 1 else p.detach() * g
            for name, t in per_batch.items():
                totals[name] += t.abs().float()
    return {name: (t / len(taken)).cpu() for name, t in totals.items()}


def group_oracle(model: nn.Module, graph: ChannelGraph, group: Group, data: Any,
                 batches: int = 2, loss_fn: LossFn | None = None) -> Tensor:
    """True loss increase when each channel of ``group`` alone is removed: zeroed everywhere
    it lives (producer rows and biases, depthwise rows, attention q/k/v rows, BN gamma and
    beta -- the tensor slices :meth:`prunekit.graph.ChannelGraph.zero_slices` names), so a
    residual channel goes from every block that writes it. Works on a copy of the graph's
    trace, in eval mode; ``batches`` batches of ``data``.

    Cost: one evaluation per channel -- use it to *judge* criteria, not to prune a network.
    An evaluation re-runs only the layers after the group's first layer
    (:class:`prunekit.replay.SuffixReplay`); the result equals full forward passes of the
    masked model.
    """
    loss_fn = loss_fn or F.cross_entropy
    taken = to_device(_batches(data, batches), device_of(model))
    scratch = copy.deepcopy(graph.gm).eval()
    scores = torch.zeros(group.size)
    rows = {m.label if m.module else m.tensor: [m.rows(torch.tensor([c]))
                                                for c in range(group.size)]
            for m in group.members if m.role != "in"}            # channel -> its rows
    with torch.no_grad():
        evaluate = SuffixReplay(scratch, rows, taken, loss_fn).loss
        base = evaluate(None)
        for c in range(group.size):
            slices = graph.zero_slices(scratch, group, torch.tensor([c]))
            saved = [t.index_select(d, i).clone() for t, d, i in slices]
            for t, d, i in slices:
                t.index_fill_(d, i, 0)
            scores[c] = evaluate(c) - base
            for (t, d, i), old in zip(slices, saved):
                t.index_copy_(d, i, old)
    return scores


def oracle(model: nn.Module, module_name: str, data: Any, batches: int = 2,
           loss_fn: LossFn | None = None) -> Tensor:
    """Oracle scores of the output channels of one layer: the loss increase when each channel
    is removed (with everything coupled to it, see :mod:`prunekit.graph`), on ``batches``
    batches of ``data``. Name the conv or the BatchNorm behind it: both give the same group.

    This is the yardstick Molchanov et al. (CVPR 2019) compare criteria against (Spearman
    rank correlation, :func:`prunekit.compare.rank_agreement`). Slow by design: one
    evaluation per channel, so one layer at a time in a notebook.
    """
    taken = _batches(data, batches)
    graph = build_graph(model, taken[0][0][:1])
    return group_oracle(model, graph, graph.group_of(module_name), taken, batches, loss_fn)


# ----------------------------------------------------------------------------------------------
# From layers to coupled groups
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scoring:
    """What a criterion may use to score the channels of ``groups``: the model (a probe that
    shares the caller's weights), its graph, and the data settings of the call."""

    model: nn.Module
    graph: ChannelGraph
    groups: list[Group]
    data: Any = None
    batches: int = 4
    loss_fn: LossFn | None = None
    seed: int = 0

    def summed(self, roles: tuple[str, ...],
               layer_score: Callable[[str, nn.Module], Tensor]) -> dict[int, Tensor]:
        """A per-layer score summed over each group's members with ``roles`` (the producers,
        or the BatchNorms): every row a channel owns adds to that channel."""
        return {g.index: _sum_members(self.model, g, roles, layer_score) for g in self.groups}


@dataclass(frozen=True)
class Criterion:
    """One entry of :data:`REGISTRY`: a line for the docs and the error messages, the
    function from a :class:`Scoring` to ``{group index: scores}``, and whether it needs data."""

    about: str
    score: Callable[[Scoring], dict[int, Tensor]]
    needs_data: bool = False


#: Every criterion ``prunekit.prune(importance=...)`` accepts, by name. Adding one is one
#: decorated function: ``@register("name", "what it measures")`` (see below).
REGISTRY: dict[str, Criterion] = {}
#: ``{name: about}`` of :data:`REGISTRY`, for printing.
CRITERIA: dict[str, str] = {}
_ALIASES = {"l1_norm": "l1", "l2_norm": "l2", "bn": "bn_scale"}
PRODUCERS, NORMS = PRODUCER_ROLES, ("bn",)


def register(name: str, about: str, needs_data: bool = False) -> Callable:
    """Decorator: make ``score(scoring) -> {group index: Tensor[size]}`` the criterion
    ``name``."""
    def add(score: Callable[[Scoring], dict[int, Tensor]]) -> Callable:
        REGISTRY[name] = Criterion(about, score, needs_data)
        CRITERIA[name] = about
        return score
    return add


@register("l1", "sum |w| of producing filters")
def _l1(s: Scoring) -> dict[int, Tensor]:
    return s.summed(PRODUCERS, lambda _, m: l1_norm(m))


@register("l2", "L2 norm of producing filters")
def _l2(s: Scoring) -> dict[int, Tensor]:
    return s.summed(PRODUCERS, lambda _, m: l2_norm(m))


@register("bn_scale", "|gamma| of the group's BatchNorms")
def _bn_scale(s: Scoring) -> dict[int, Tensor]:
    return s.summed(NORMS, lambda _, m: bn_scale(m))


@register("taylor", "Taylor on producing filters", needs_data=True)
def _taylor(s: Scoring) -> dict[int, Tensor]:
    table = taylor(s.model, s.data, s.batches, s.loss_fn) if s.groups else {}
    return s.summed(PRODUCERS, lambda name, _: table[name])


@register("taylor_bn", "Taylor on the BN gate (gamma, beta)", needs_data=True)
def _taylor_bn(s: Scoring) -> dict[int, Tensor]:
    table = taylor(s.model, s.data, s.batches, s.loss_fn) if s.groups else {}
    return s.summed(NORMS, lambda name, _: table[name])


@register("fpgm", "geometric-median distance")
def _fpgm(s: Scoring) -> dict[int, Tensor]:
    return s.summed(PRODUCERS, lambda _, m: fpgm(m))


@register("random", "seeded random baseline")
def _random(s: Scoring) -> dict[int, Tensor]:
    return {g.index: random(g.size, seed=s.seed + 7919 * g.index) for g in s.groups}


@register("oracle", "true loss increase (slow)", needs_data=True)
def _oracle(s: Scoring) -> dict[int, Tensor]:
    taken = _batches(s.data, s.batches)
    return {g.index: group_oracle(s.model, s.graph, g, taken, s.batches, s.loss_fn)
            for g in s.groups}


def criterion_name(importance: str | Callable) -> str | Callable:
    """Resolve aliases and refuse unknown names with the list of known ones."""
    if callable(importance):
        return importance
    name = _ALIASES.get(str(importance), str(importance))
    if name not in REGISTRY:
        raise PruningError(f"unknown importance {importance!r}; use one of {sorted(REGISTRY)} "
                           "or a callable fn(layer) -> Tensor[out_channels]")
    return name


def needs_data(importance: str | Callable) -> bool:
    return not callable(importance) and REGISTRY[criterion_name(importance)].needs_data


def _sum_members(model: nn.Module, group: Group, roles: tuple[str, ...],
                 layer_score: Callable[[str, nn.Module], Tensor]) -> Tensor:
    """Sum one per-layer score over the group's members with the given roles: every row a
    channel owns adds to that channel (several rows for a flattened channel or a head)."""
    total = torch.zeros(group.size)
    found = False
    for m in group.members:
        if m.role in roles:
            layer = model.get_submodule(m.module)
            scores = _checked(layer_score(m.module, layer), m.module, layer)
            total.index_add_(0, m.units, scores[m.positions])
            found = True
    if not found:
        what = "BatchNorm" if roles == NORMS else "conv or linear producer"
        raise PruningError(f"group '{group.name}' has no {what} to score; choose another "
                           "importance or put one of its layers in ignore=")
    return total


def _checked(scores: Any, name: str, layer: nn.Module) -> Tensor:
    """One finite score per output row of ``layer`` (the rows a criterion sees), as a float
    CPU tensor -- or a PruningError naming the layer (a custom criterion may return anything)."""
    rows = _out_rows(layer)
    if not isinstance(scores, Tensor) or scores.dim() != 1 or len(scores) != rows:
        got = f"{len(scores)} scores" if isinstance(scores, Tensor) and scores.dim() == 1 else \
            f"a {type(scores).__name__} of shape {tuple(getattr(scores, 'shape', ()))}"
        raise PruningError(f"the importance of layer '{name}' ({type(layer).__name__}) returned "
                           f"{got}; it must return one score per output channel: {rows}")
    scores = scores.detach().float().cpu()
    if not bool(torch.isfinite(scores).all()):
        raise PruningError(f"the importance of layer '{name}' returned NaN or inf scores")
    return scores


def group_scores(model: nn.Module, graph: ChannelGraph, groups: list[Group],
                 importance: str | Callable = "l1", data: Any = None, batches: int = 4,
                 loss_fn: LossFn | None = None, seed: int = 0) -> dict[int, Tensor]:
    """One score per channel for each group (``{group.index: Tensor[group.size]}``): the
    registered criterion (:data:`REGISTRY`), or a callable ``fn(layer)`` summed over the
    group's producers like ``l1``. See the module doc."""
    scoring = Scoring(model, graph, groups, data, batches, loss_fn, seed)
    crit = criterion_name(importance)
    if callable(crit):
        return scoring.summed(PRODUCERS, lambda _, m: crit(m))
    return REGISTRY[crit].score(scoring)


def normalise(scores: Tensor) -> Tensor:
    """Divide a group's scores by their mean, so groups of different size and scale can be
    ranked together: a channel scoring 0.3 is 'a third as important as this group's average
    channel', whatever layer it lives in. All-zero groups stay zero (prunable first)."""
    mean = scores.mean()
    return scores / mean if mean > 0 else scores

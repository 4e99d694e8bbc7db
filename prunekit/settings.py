"""What a pruning call asks for: one dataclass, checked once, before any work.

:func:`prunekit.prune`, :func:`prunekit.plan`, :func:`prunekit.prune_iteratively` and
:func:`prunekit.compare.plan_at_macs` all take these keywords and turn them into one
:class:`Settings`; a bad value is refused here with what to do instead, so nothing is traced,
scored or cut for a request that cannot be carried out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import Tensor, nn

from .errors import PruningError
from .importance import criterion_name, needs_data

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    """The keywords of a pruning call.

    Attributes:
        ratio: fraction of channels to remove, in ``[0, 1)``; ``floor(ratio * n)`` per group.
        importance: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"``, ``"taylor_bn"``,
            ``"fpgm"``, ``"random"``, ``"oracle"`` (:data:`prunekit.importance.REGISTRY`), or
            a callable ``fn(layer) -> Tensor[out_channels]`` (summed over a group's conv /
            linear producers).
        scope: ``"local"`` (each group by its ratio) or ``"global"`` (rank all groups
            together; reaches the requested fraction or raises).
        ratios: ``{layer name: ratio}`` overrides for the group that layer's outputs belong
            to; naming the final classifier here is the only way to prune the classes.
        ignore: layers (names or modules) whose output-channel groups are left alone.
        max_ratio: no group loses more than this fraction of its channels.
        round_to: surviving channel counts are multiples of this (e.g. 8 for fast kernels).
        data, loss_fn, batches: batches of ``(inputs, targets)`` for ``"taylor"``,
            ``"taylor_bn"`` and ``"oracle"`` (first ``batches`` batches; cross-entropy).
        seed: seed of the ``"random"`` baseline.
        approximate: also cut channels that a LayerNorm / RMSNorm normalises together (the
            residual stream of a transformer: Minitron's hidden-dimension pruning,
            Muralidharan et al., 2024). **Not exact** -- the kept channels are normalised by
            statistics over fewer channels -- so it is off by default; with it the result
            reports the output error measured against the dense model on the example input
            (``PruneResult.approximation``) and every other cut is still checked exact.
        frontend: how the model is traced: ``"auto"`` (``torch.fx``, and ``torch.export``
            where fx cannot trace -- Hugging Face language models), ``"fx"`` or ``"export"``
            (:mod:`prunekit.graph.export`).
        normalise: for ``scope="global"``: divide each group's scores by the group's mean
            before ranking (default; layers of different scale compete fairly). ``False``
            ranks raw scores -- network slimming's global |gamma| threshold (Liu et al.,
            2017), meaningful only when the scores are comparable across layers.
    """

    ratio: float = 0.5
    importance: str | Callable[[nn.Module], Tensor] = "l1"
    scope: str = "local"
    ratios: Mapping[str, float] = field(default_factory=dict)
    ignore: tuple[str | nn.Module, ...] = ()
    max_ratio: float = 0.9
    round_to: int = 1
    data: Any = None
    loss_fn: Callable | None = None
    batches: int = 4
    seed: int = 0
    normalise: bool = True
    frontend: str = "auto"
    approximate: bool = False

    @classmethod
    def of(cls, **keywords: Any) -> Settings:
        """Settings from keywords, refusing unknown ones by name (a typo must not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(keywords) - known)
        if unknown:
            raise PruningError(f"unknown setting(s) {unknown}; the settings are "
                               f"{', '.join(sorted(known))}")
        return cls(**keywords)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", dict(self.ratios or {}))
        object.__setattr__(self, "ignore", _as_tuple(self.ignore))
        self._check()

    def _check(self) -> None:
        """Refuse bad values, each with what to do instead."""
        for name, r in [("ratio", self.ratio),
                        *((f"ratios[{k!r}]", v) for k, v in self.ratios.items())]:
            if not isinstance(r, (int, float)) or not 0 <= r < 1:
                raise PruningError(f"{name}={r!r} must be in [0, 1): the fraction of channels to "
                                   "remove (1 would remove every channel)")
        if self.scope not in ("local", "global"):
            raise PruningError(f"scope={self.scope!r}: use 'local' (same ratio per group) or "
                               "'global' (rank all groups together)")
        if not isinstance(self.max_ratio, (int, float)) or not 0 < self.max_ratio <= 1:
            raise PruningError(f"max_ratio={self.max_ratio!r} must be in (0, 1]")
        if not isinstance(self.approximate, bool):
            raise PruningError(f"approximate={self.approximate!r} must be True or False")
        if self.frontend not in ("auto", "fx", "export"):
            raise PruningError(f"frontend={self.frontend!r}: use 'auto' (torch.fx, and "
                               "torch.export where fx cannot trace), 'fx' or 'export'")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise PruningError(f"round_to={self.round_to!r} must be a positive integer")
        criterion_name(self.importance)
        if needs_data(self.importance) and self.data is None:
            raise PruningError(f"importance={self.importance!r} needs data: pass data=<a "
                               "DataLoader of (inputs, targets)> (and loss_fn= if not "
                               "cross-entropy)")

    def but(self, **changes: Any) -> Settings:
        """A copy with some settings changed (checked again)."""
        return replace(self, **changes)

    def summary(self) -> dict[str, Any]:
        """What a plan records about how it was made (``plan.settings``): the settings, with
        a callable criterion by its name and without the data."""
        keep = ("ratio", "importance", "scope", "ratios", "max_ratio", "round_to", "normalise",
                "approximate")
        out = {k: getattr(self, k) for k in keep}
        if not isinstance(self.importance, str):
            out["importance"] = getattr(self.importance, "__name__", "callable")
        out["ratios"] = self.ratios or None
        return out


def _as_tuple(ignore: Iterable[str | nn.Module] | str | nn.Module) -> tuple:
    if isinstance(ignore, (str, nn.Module)):
        return (ignore,)
    return tuple(ignore or ())

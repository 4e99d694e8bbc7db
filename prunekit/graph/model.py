"""The result of tracing: groups of channels that must go together, and where each lives.

* A :class:`Group` is a set of channels (units) that are created together -- the outputs of
  one conv, or of every conv that writes into one residual stream. Removing unit ``u``
  removes it from every :class:`Member`: the output rows of each producer, the channels of
  each BatchNorm, the input columns of each reader.
* A :class:`ChannelGraph` holds the groups, and for every layer dimension the unit at each
  position (:attr:`ChannelGraph.dims`) -- all that surgery needs to cut, the zero-mask needs
  to zero, and importance needs to sum scores per channel.

A unit is usually one channel. It can cover several positions of one layer: a channel
flattened in front of a linear layer is ``H*W`` input features, an attention head is
``head_dim`` rows of each of q, k and v.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from ..errors import PruningError
from .kinds import KINDS

__all__ = ["Member", "Group", "ChannelGraph", "MacSite", "ROLE_TEXT", "PRODUCER_ROLES"]

#: How a layer touches a group's channels (the order ``print(group)`` lists them in).
ROLE_TEXT = {
    "out": "cuts output rows",
    "dw": "depthwise (rows = channels)",
    "heads": "attention heads (q, k, v rows)",
    "bn": "BatchNorm",
    "norm": "normalises them together",
    "param": "per-channel parameters",
    "in": "cuts input columns",
}
#: Roles that *write* the channel: zeroing them zeroes the channel everywhere downstream.
PRODUCER_ROLES = ("out", "dw", "heads")


@dataclass(eq=False)
class Member:
    """One layer's share in a group: ``positions`` along its ``role`` dimension hold the
    group's channels ``units`` (same length). For ``role == "param"`` the member is the
    parameter ``module.tensor``, cut along ``axis``."""

    module: str
    role: str
    positions: Tensor
    units: Tensor
    tensor: str = ""
    axis: int = 0

    @property
    def label(self) -> str:
        return f"{self.module}.{self.tensor}" if self.role == "param" else self.module

    def rows(self, units: Tensor) -> Tensor:
        """Positions of this member that hold any of ``units`` (sorted)."""
        return self.positions[torch.isin(self.units, units)]

    def __str__(self) -> str:
        text = self.label
        start = int(self.positions.min()) if len(self.positions) else 0
        if start:
            text += f"[{start}:]"
        per_unit = len(self.positions) // max(len(torch.unique(self.units)), 1)
        if per_unit > 1:
            text += f" (x{per_unit} each)"
        return text


@dataclass
class Group:
    """A set of channels that must be removed together, and every layer that touches it."""

    index: int
    size: int
    members: list[Member] = field(default_factory=list)
    pinned: str | None = None      # why this group may never be pruned (None: it may)
    is_output: bool = False        # reaches the model output (kept unless named in ratios)
    blocks: int = 1                # remove the same number from each of `blocks` blocks
    block_of: Tensor | None = None  # the block of each channel, when blocks > 1
    base: int = 0                  # global id of channel 0 (ids are base .. base + size - 1)
    min_keep: int = 1              # at least this many channels stay (e.g. a squeeze() reads it)
    min_keep_why: str = ""
    also: list[str] = field(default_factory=list)   # other kinds of reasons it is pinned
    approximate: str | None = None  # a pin lifted on request: cutting it is NOT exact (why)

    def pin(self, reason: str) -> None:
        """Pin the group; the first reason is :attr:`pinned`, a later one that is not the
        same (a tied weight beside a norm) is kept in :attr:`also`, printed with the group."""
        if self.pinned is None:
            self.pinned = reason
        elif reason != self.pinned and reason not in self.also:
            self.also.append(reason)

    def modules(self, role: str | None = None) -> list[str]:
        """Names of member layers (optionally only those with one role), in trace order."""
        return list(dict.fromkeys(m.module for m in self.members
                                  if role is None or m.role == role))

    def owners(self) -> list[str]:
        """Layers whose *output* channels are this group's: what a name in ``ratios=`` or
        ``ignore=`` refers to (producers, depthwise convs, BatchNorms, attention layers)."""
        return list(dict.fromkeys(m.module for m in self.members
                                  if m.role not in ("in", "param")))

    @property
    def name(self) -> str:
        """A readable name: the first layer that produces the channels."""
        for role in (*PRODUCER_ROLES, None):
            names = self.modules(role)
            if names:
                return names[0]
        return f"group{self.index}"

    @property
    def prunable(self) -> bool:
        return self.pinned is None and not self.is_output

    def __str__(self) -> str:
        state = f"pinned: {self.pinned}" if self.pinned else (
            "model output (kept unless named in ratios)" if self.is_output else
            f"prunable APPROXIMATELY (not exact: {self.approximate})" if self.approximate
            else "prunable")
        head = f"Group {self.index} '{self.name}': {self.size} channels, {state}"
        for reason in self.also:
            head += f"\n  also pinned: {reason}"
        if self.blocks > 1:
            head += f", {self.blocks} equal blocks"
        lines = [head]
        for role, text in ROLE_TEXT.items():
            names = [str(m) for m in self.members if m.role == role]
            if names:
                lines.append(f"  {text:<28} {', '.join(dict.fromkeys(names))}")
        return "\n".join(lines)


@dataclass
class MacSite:
    """Multiply-accumulates of one conv / linear / matmul / attention call: ``total`` in the
    dense model, and the channel ids (``maps``) whose removal scales it. The maps broadcast to
    one grid (e.g. output rows x input columns); every cell costs ``total / cells``."""

    total: int
    maps: tuple[Tensor, ...]

    def macs(self, alive: Tensor) -> int:
        cells = torch.broadcast_shapes(*(m.shape for m in self.maps))
        axes = [{d for d, s in enumerate(m.shape) if s > 1} for m in self.maps]
        if all(not (a & b) for i, a in enumerate(axes) for b in axes[i + 1:]):
            kept = 1                      # rows x columns: count each side, no grid needed
            for ids in self.maps:
                kept *= int(alive[ids].sum())
        else:
            grid = torch.ones((), dtype=torch.bool)
            for ids in self.maps:
                grid = grid & alive[ids]
            kept = int(grid.sum())
        return self.total * kept // max(math.prod(cells), 1)


@dataclass
class ChannelGraph:
    """The coupled groups of a model, and where each channel lives in every layer.

    ``dims[layer][dim]``: the global channel id (see :attr:`Group.base`) at each position of
    that layer's dimension -- ``"out"`` (rows), ``"in"`` (columns), ``"heads"`` (attention
    q/k/v rows); ``params[(owner, name)] = (axis, ids)`` for per-channel parameters;
    ``kinds[layer]`` names its kind in :data:`prunekit.graph.kinds.KINDS` (how it is cut,
    zeroed and scored).
    ``fx_graph`` is the ``torch.fx`` trace (eval mode) of ``root``, the model the graph was
    built from; :attr:`gm` makes it a runnable ``GraphModule`` (for the oracle's replay).
    """

    groups: list[Group]
    dims: dict[str, dict[str, Tensor]]
    kinds: dict[str, str]
    params: dict[tuple[str, str], tuple[int, Tensor]]
    mac_sites: list[MacSite]
    fx_graph: fx.Graph
    root: nn.Module = field(repr=False)
    example_inputs: tuple[Tensor, ...] = ()
    checks: dict[int, list[str]] = field(default_factory=dict)  # group -> run-time-size nodes
    divisors: set[tuple[str, str]] = field(default_factory=set)  # params we divide by: not zeroed
    node_ids: dict[str, Tensor] = field(default_factory=dict, repr=False)  # node -> channel ids

    @property
    def gm(self) -> fx.GraphModule:
        """The trace as a ``GraphModule`` on ``root``'s layers (built when asked for)."""
        return fx.GraphModule(self.root, self.fx_graph, type(self.root).__name__)

    # -- lookup --------------------------------------------------------------------------------
    def group_of(self, module: str) -> Group:
        """The group a layer's *output* channels belong to (raises if it has none)."""
        for g in self.groups:
            if module in g.owners():
                return g
        known = ", ".join(sorted(self.kinds)) or "(none)"
        raise PruningError(f"no layer called {module!r} produces prunable channels; "
                           f"layers prunekit knows: {known}")

    def groups_with(self, module: str) -> list[Group]:
        """Every group a layer takes part in (any role)."""
        return [g for g in self.groups if module in g.modules()]

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    @property
    def num_units(self) -> int:
        return sum(g.size for g in self.groups)

    # -- from removed channels to positions ----------------------------------------------------
    def alive(self, removed: Mapping[int, Tensor] | None = None) -> Tensor:
        """A boolean per global channel id: False for the ``removed`` ({group: channels})."""
        alive = torch.ones(self.num_units, dtype=torch.bool)
        for g in self.groups:
            gone = (removed or {}).get(g.index)
            if gone is not None and len(gone):
                alive[g.base + gone.to(torch.long)] = False
        return alive

    def keep(self, removed: Mapping[int, Tensor]) -> dict[str, dict[str, Tensor | None]]:
        """For every layer dimension: the positions to keep, or None where nothing goes."""
        alive = self.alive(removed)
        out: dict[str, dict[str, Tensor | None]] = {}
        for name, dims in self.dims.items():
            out[name] = {dim: _kept(alive, ids) for dim, ids in dims.items()}
        return out

    def keep_params(self, removed: Mapping[int, Tensor]) -> dict[tuple[str, str],
                                                                  tuple[int, Tensor]]:
        """For every per-channel parameter that loses entries: (axis, positions to keep)."""
        alive = self.alive(removed)
        out = {}
        for key, (axis, ids) in self.params.items():
            kept = _kept(alive, ids)
            if kept is not None:
                out[key] = (axis, kept)
        return out

    def removed_outputs(self, removed: Mapping[int, Tensor]) -> dict[str, list[int]]:
        """``{layer: sorted removed output positions}`` for every layer that loses any (an
        attention layer reports its removed heads)."""
        alive = self.alive(removed)
        report = {}
        for name, dims in self.dims.items():
            dim = "heads" if "heads" in dims else "out"
            if dim not in dims:
                continue
            ids = dims[dim]
            if dim == "heads":
                ids = ids[: len(ids) // 3].reshape(-1, _head_dim(self, name))[:, 0]
            gone = (~alive[ids]).nonzero().flatten()
            if len(gone):
                report[name] = gone.tolist()
        return report

    def count_macs(self, removed: Mapping[int, Tensor] | None = None) -> int:
        """MACs of one forward pass on the example input -- of the dense model, or of the
        model with ``removed`` channels cut -- without running it: every conv / linear /
        attention call's MACs from the trace, scaled by the share of its channels that stay.
        Equal to :func:`prunekit.metrics.count_macs` (FlopCounterMode); the tests check it."""
        alive = self.alive(removed)
        return sum(site.macs(alive) for site in self.mac_sites)

    def zero_sites(self, group: Group, units: Tensor) -> list[tuple[str, str, int, Tensor]]:
        """``(layer, tensor name, dim, index)``: the tensor slices that, set to zero, make
        ``units`` of ``group`` zero everywhere -- producer rows and biases, depthwise rows,
        attention q/k/v rows, BN gamma and beta (for a BN without affine parameters its
        running mean, so it maps 0 to 0), per-channel parameters (not those we divide by:
        ``x / g`` is 0 already, and ``g = 0`` would make it 0 / 0)."""
        sites = []
        for m in group.members:
            index = m.rows(units)
            if m.role == "in" or not len(index):
                continue
            if m.role == "param":
                if (m.module, m.tensor) not in self.divisors:
                    sites.append((m.module, m.tensor, m.axis, index))
                continue
            layer = self.root.get_submodule(m.module)
            for name, dim in KINDS[self.kinds[m.module]].zeroed(layer):
                sites.append((m.module, name, dim, index))
        return sites

    def zero_slices(self, model: nn.Module, group: Group,
                    units: Tensor) -> list[tuple[Tensor, int, Tensor]]:
        """:meth:`zero_sites` as ``(tensor, dim, index)`` triples of ``model`` (the index on
        the tensor's device): what the zero-mask twin and the oracle set to zero."""
        slices = []
        for path, name, dim, index in self.zero_sites(group, units):
            t = getattr(model.get_submodule(path), name, None)
            if isinstance(t, Tensor):
                slices.append((t.data, dim, index.to(t.device)))
        return slices

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)

    def __repr__(self) -> str:
        n = len(self.prunable_groups())
        return f"ChannelGraph({len(self.groups)} groups, {n} prunable)"


def _kept(alive: Tensor, ids: Tensor) -> Tensor | None:
    keep = alive[ids]
    return None if bool(keep.all()) else keep.nonzero().flatten()


def _head_dim(graph: ChannelGraph, name: str) -> int:
    ids = graph.dims[name]["heads"]
    third = ids[: len(ids) // 3]
    return int((third == third[0]).sum())

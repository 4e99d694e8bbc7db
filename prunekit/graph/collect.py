"""From atoms to groups: the last step of :func:`prunekit.graph.build_graph`.

* every union-find class of atoms is one **channel** (a unit that is removed whole);
* channels whose atoms come from sets that were ever united form one **group** -- e.g. the
  outputs of every conv that writes into one residual stream;
* a group is pinned if any of its channels is; it must lose equal numbers per block if a
  grouped conv reads or writes it; it is the model output if any channel reaches it;
* a deferred refusal fires now if its channels are not pinned after all.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

from ..errors import PruningError
from .model import ChannelGraph, Group, Member
from .tracer import ChannelTracer

__all__ = ["collect"]

_ROLES = {"conv": {"out": "out", "in": "in"}, "gconv": {"out": "out", "in": "in"},
          "linear": {"out": "out", "in": "in"}, "dwconv": {"out": "dw"}, "bn": {"out": "bn"},
          "mha": {"in": "in", "heads": "heads"}, "mha_out": {"out": "out"}}


class _Layout:
    """Atom -> (group, channel) numbering, fixed once all unions are done."""

    def __init__(self, tr: ChannelTracer) -> None:
        atoms = tr.atoms
        used = torch.cat([ids.reshape(-1) for dims in tr.sites.values() for ids in dims.values()]
                         + [ids for _, ids in tr.param_sites.values()]
                         + [torch.zeros(0, dtype=torch.long)]).unique()
        self.root = {a: atoms.find(a) for a in range(len(atoms))}
        set_parent = list(range(len(atoms.set_names)))

        def find(s: int) -> int:
            while set_parent[s] != s:
                set_parent[s] = set_parent[set_parent[s]]
                s = set_parent[s]
            return s

        for a, r in self.root.items():
            sa, sr = find(atoms.set_of[a]), find(atoms.set_of[r])
            if sa != sr:
                set_parent[max(sa, sr)] = min(sa, sr)
        classes: dict[int, list[int]] = defaultdict(list)     # group key -> channel roots
        for r in sorted({self.root[int(a)] for a in used}):
            classes[find(atoms.set_of[r])].append(r)
        self.groups = sorted(classes.values(), key=lambda roots: roots[0])
        self.uid, self.group_of, base = {}, {}, 0
        for g, roots in enumerate(self.groups):
            for u, r in enumerate(roots):
                self.uid[r], self.group_of[r] = base + u, g
            base += len(roots)
        self.bases = [sum(len(c) for c in self.groups[:g]) for g in range(len(self.groups))]

    def ids(self, atoms: Tensor) -> Tensor:
        """Global channel ids of atoms (any shape)."""
        flat = [self.uid.get(self.root[int(a)], -1) for a in atoms.reshape(-1).tolist()]
        return torch.tensor(flat, dtype=torch.long).reshape(atoms.shape)

    def groups_of(self, atoms: Tensor) -> set[int]:
        return {self.group_of[self.root[int(a)]] for a in atoms.reshape(-1).unique().tolist()
                if self.root[int(a)] in self.group_of}


def collect(tr: ChannelTracer, gm, inputs) -> ChannelGraph:  # noqa: ANN001 -- see build_graph
    layout = _Layout(tr)
    groups = [Group(i, len(roots), base=layout.bases[i]) for i, roots in enumerate(layout.groups)]
    _mark(tr, layout, groups)
    dims = {name: {dim: layout.ids(atoms) for dim, atoms in d.items()}
            for name, d in tr.sites.items()}
    params = {key: (axis, layout.ids(atoms)) for key, (axis, atoms) in tr.param_sites.items()}
    for name, d in dims.items():
        for dim, ids in d.items():
            _add_members(groups, name, _ROLES[tr.kinds[name]][dim], ids)
    for (owner, tensor), (axis, ids) in params.items():
        _add_members(groups, owner, "param", ids, tensor, axis)
    _pin_opaque_owners(tr, groups)
    _check_requirements(tr, layout, groups)
    sites = [type(s)(s.total, tuple(layout.ids(m) for m in s.maps)) for s in tr.mac_sites]
    checks: dict[int, list[str]] = defaultdict(list)
    for node, atoms in tr.checks:
        for g in layout.groups_of(atoms):
            checks[g].append(node)
    return ChannelGraph(groups, dims, dict(tr.kinds), params, sites, gm, inputs, dict(checks))


def _mark(tr: ChannelTracer, layout: _Layout, groups: list[Group]) -> None:
    """Pins, model-output marks and grouped-conv blocks, from atoms to groups."""
    for atoms, reason in tr.atoms.pins:
        for g in layout.groups_of(atoms):
            groups[g].pinned = groups[g].pinned or reason
    for atoms in tr.atoms.outputs:
        for g in layout.groups_of(atoms):
            groups[g].is_output = True
    for atoms, block, layer in tr.atoms.blocks:
        touched = layout.groups_of(atoms)
        for g in touched:
            if len(touched) > 1:     # equal cuts per block would couple separate groups
                groups[g].pinned = groups[g].pinned or f"grouped conv '{layer}' reads " \
                                                       "channels of several groups"
            else:
                _add_blocks(groups[g], layout.ids(atoms) - groups[g].base, block, layer)


def _add_blocks(group: Group, units: Tensor, block: Tensor, layer: str) -> None:
    """Channel ``units[i]`` lies in block ``block[i]`` of a grouped conv; combine with the
    blocks the group already has. Every channel in one block, equal blocks -- or pinned."""
    mine = units >= 0
    units, block = units[mine & (units < group.size)], block[mine & (units < group.size)]
    new = torch.full((group.size,), -1, dtype=torch.long)
    for u, b in zip(units.tolist(), block.tolist()):
        if new[u] not in (-1, b):
            group.pinned = group.pinned or f"a channel spans two groups of grouped conv '{layer}'"
            return
        new[u] = b
    if (new < 0).any():
        group.pinned = group.pinned or f"only part of it is read by grouped conv '{layer}'"
        return
    old = group.block_of if group.block_of is not None else torch.zeros_like(new)
    combined = torch.unique(old * (int(new.max()) + 1) + new, return_inverse=True)[1]
    counts = torch.bincount(combined)
    if len(set(counts.tolist())) > 1:
        group.pinned = group.pinned or "incompatible grouped-conv blocks"
        return
    group.block_of, group.blocks = combined, len(counts)


def _add_members(groups: list[Group], module: str, role: str, ids: Tensor, tensor: str = "",
                 axis: int = 0) -> None:
    for g in groups:
        here = (ids >= g.base) & (ids < g.base + g.size)
        if here.any():
            positions = here.nonzero().flatten()
            g.members.append(Member(module, role, positions, ids[positions] - g.base,
                                    tensor, axis))


def _pin_opaque_owners(tr: ChannelTracer, groups: list[Group]) -> None:
    """A layer whose parameters an unknown op also reads must keep them whole."""
    for g in groups:
        for m in g.members:
            if any(m.module == o or m.module.startswith(o + ".") for o in tr.opaque_owners):
                g.pinned = g.pinned or f"'{m.module}' is also used by an op prunekit has no " \
                                       "rule for"


def _check_requirements(tr: ChannelTracer, layout: _Layout, groups: list[Group]) -> None:
    for req in tr.atoms.requirements:
        if any(groups[g].pinned is None for g in layout.groups_of(req.atoms)):
            raise PruningError(req.message)

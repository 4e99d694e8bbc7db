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
from torch import Tensor, fx, nn

from ..errors import PruningError
from .flow import Flow
from .kinds import KINDS
from .preflight import WIDTHS
from .model import ChannelGraph, Group, Member
from .tracer import ChannelTracer, storage_key

__all__ = ["collect"]

class _Layout:
    """Atom -> (group, channel) numbering, fixed once all unions are done."""

    def __init__(self, tr: ChannelTracer) -> None:
        atoms = tr.atoms
        self.root = atoms.roots(torch.arange(len(atoms)))
        set_of = torch.tensor(atoms.set_of, dtype=torch.long)
        set_root = _all_roots(_set_parents(set_of, self.root, len(atoms.set_names)))
        used = torch.cat([ids.reshape(-1) for dims in tr.sites.values() for ids in dims.values()]
                         + [ids for _, ids in tr.param_sites.values()]
                         + [torch.zeros(0, dtype=torch.long)])
        channels = torch.unique(self.root[used])               # sorted: oldest atom first
        group_key = set_root[set_of[channels]]
        keys = torch.unique(group_key)
        first = torch.stack([channels[group_key == k].min() for k in keys]) if len(keys) \
            else torch.zeros(0, dtype=torch.long)
        keys = keys[torch.argsort(first)]                      # groups in creation order
        self.groups = [channels[group_key == k] for k in keys]
        self.uid = torch.full((len(atoms),), -1, dtype=torch.long)
        self.group_of = torch.full((len(atoms),), -1, dtype=torch.long)
        self.bases, base = [], 0
        for g, roots in enumerate(self.groups):
            self.uid[roots] = base + torch.arange(len(roots))
            self.group_of[roots] = g
            self.bases.append(base)
            base += len(roots)

    def ids(self, atoms: Tensor) -> Tensor:
        """Global channel ids of atoms (any shape; -1 for atoms no layer holds)."""
        return self.uid[self.root[atoms]]

    def groups_of(self, atoms: Tensor) -> set[int]:
        found = torch.unique(self.group_of[self.root[atoms.reshape(-1)]]).tolist()
        return {g for g in found if g >= 0}


def _all_roots(parent: Tensor) -> Tensor:
    """The union-find root of every element at once (pointer jumping)."""
    root = parent
    while True:
        nxt = root[root]
        if torch.equal(nxt, root):
            return root
        root = nxt


def _set_parents(set_of: Tensor, root: Tensor, count: int) -> Tensor:
    """A union-find forest over sets: two sets are one group if any of their atoms are
    one channel."""
    parent = list(range(count))

    def find(s: int) -> int:
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    keys = torch.unique(set_of * count + set_of[root]).tolist()     # each pair of sets once
    for a, b in ((k // count, k % count) for k in keys):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return torch.tensor(parent, dtype=torch.long)


def collect(tr: ChannelTracer, graph: fx.Graph, inputs: tuple[Tensor, ...]) -> ChannelGraph:
    _merge_layer_params(tr)
    layout = _Layout(tr)
    groups = [Group(i, len(roots), base=layout.bases[i]) for i, roots in enumerate(layout.groups)]
    _mark(tr, layout, groups)
    dims = {name: {dim: layout.ids(atoms) for dim, atoms in d.items()}
            for name, d in tr.sites.items()}
    params = {key: (axis, layout.ids(atoms)) for key, (axis, atoms) in tr.param_sites.items()}
    for name, d in dims.items():
        for dim, ids in d.items():
            _add_members(groups, name, KINDS[tr.kinds[name]].roles[dim], ids)
    for (owner, tensor), (axis, ids) in params.items():
        _add_members(groups, owner, "param", ids, tensor, axis)
    _pin_opaque_owners(tr, groups)
    _pin_whole_reads(tr, groups)
    _pin_width_reads(tr, groups)
    _pin_shared_tensors(tr.model, groups)
    for atoms, why in tr.min_keep:
        for g in layout.groups_of(atoms):
            groups[g].min_keep, groups[g].min_keep_why = 2, why
    _check_requirements(tr, layout, groups)
    sites = [type(s)(s.total, tuple(layout.ids(m) for m in s.maps)) for s in tr.mac_sites]
    checks: dict[int, list[str]] = defaultdict(list)
    for node, atoms in tr.checks:
        for g in layout.groups_of(atoms):
            checks[g].append(node)
    return ChannelGraph(groups, dims, dict(tr.kinds), params, sites, graph, tr.model, inputs,
                        dict(checks), divisors=set(tr.divisors) & set(params),
                        node_ids={n.name: layout.ids(f.labels) for n, f in tr.flows.items()
                                  if isinstance(f, Flow)})


def _mark(tr: ChannelTracer, layout: _Layout, groups: list[Group]) -> None:
    """Pins, model-output marks and grouped-conv blocks, from atoms to groups."""
    for atoms, reason in tr.atoms.pins:
        for g in layout.groups_of(atoms):
            if tr.approximate and reason in tr.approximable:
                groups[g].approximate = groups[g].approximate or reason
            else:
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
    new = torch.full((group.size,), -1, dtype=torch.long).scatter_(0, units, block)
    if not torch.equal(new[units], block):
        group.pinned = group.pinned or f"a channel spans two groups of grouped conv '{layer}'"
        return
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
    """One member per group that this layer dimension holds channels of."""
    bases = torch.tensor([g.base for g in groups])
    owner = torch.bucketize(ids, bases, right=True) - 1
    for g in torch.unique(owner).tolist():
        positions = (owner == g).nonzero().flatten()
        groups[g].members.append(Member(module, role, positions, ids[positions] - groups[g].base,
                                        tensor, axis))


def _pin_opaque_owners(tr: ChannelTracer, groups: list[Group]) -> None:
    """A layer whose parameters an unknown op also reads must keep them whole."""
    for g in groups:
        for m in g.members:
            if any(m.module == o or m.module.startswith(o + ".") for o in tr.opaque_owners):
                g.pinned = g.pinned or f"'{m.module}' is also used by an op prunekit has no " \
                                       "rule for"


def _merge_layer_params(tr: ChannelTracer) -> None:
    """A layer's own parameter used per channel somewhere else (``x * conv1.bias.view(...)``)
    is cut by two things: its layer's output channels and the channels it meets. Make those
    one channel each -- or pin both when the layouts differ."""
    for (owner, name), (axis, atoms) in list(tr.param_sites.items()):
        if owner not in tr.kinds:
            continue
        rows = tr.sites.get(owner, {}).get("out")
        del tr.param_sites[(owner, name)]
        why = f"'{owner}.{name}' is used per channel outside its layer in a layout prunekit " \
              "cannot cut with the layer"
        if name in KINDS[tr.kinds[owner]].per_channel and axis == 0 and \
                rows is not None and rows.shape == atoms.shape:
            tr.atoms.union_pairs(rows, atoms)
        else:
            tr.atoms.pin(atoms, why)
            if rows is not None:
                tr.atoms.pin(rows, why)


def _touches(member: Member, owner: str, name: str) -> bool:
    """Does cutting ``member`` change tensor ``owner.name``?"""
    if member.role == "param":
        return (member.module, member.tensor) == (owner, name)
    return member.module == owner


def _pin_whole_reads(tr: ChannelTracer, groups: list[Group]) -> None:
    """A tensor read whole (``g.mean()``, ``conv.weight.norm()``) must keep all its entries."""
    for (owner, name), node in tr.whole_params.items():
        for g in groups:
            if any(_touches(m, owner, name) for m in g.members):
                g.pinned = g.pinned or f"'{owner + '.' if owner else ''}{name}' is read whole " \
                                       f"at node '{node}' (a statistic of it changes with a cut)"


def _pin_width_reads(tr: ChannelTracer, groups: list[Group]) -> None:
    """``forward()`` read a layer's width as a Python number: it is a constant in the trace, so
    the channels it counts must keep their number."""
    for layer, attr in tr.width_reads:
        side = WIDTHS[attr]
        for g in groups:
            if any(m.module == layer and (m.role == "in") == (side == "in") and m.role != "param"
                   for m in g.members):
                g.pinned = g.pinned or f"forward() reads '{layer}.{attr}' as a number (a " \
                                       "constant in the trace, which a cut would change)"


def _pin_shared_tensors(model: nn.Module, groups: list[Group]) -> None:
    """Tied weights (``c2.weight = c1.weight``, or two Parameters on one storage): a cut of one
    layer would untie them, so every group that would cut such a tensor is pinned."""
    by_storage: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for path, m in model.named_modules():
        for name, t in [*m._parameters.items(), *m._buffers.items()]:
            key = storage_key(t) if isinstance(t, Tensor) else None
            if key is not None:
                by_storage[key].append((path, name))
    for owners in (o for o in by_storage.values() if len(o) > 1):
        text = " and ".join(f"'{p + '.' if p else ''}{n}'" for p, n in owners)
        for g in groups:
            if any(_touches(m, p, n) for m in g.members for p, n in owners):
                g.pin(f"{text} share one tensor (tied weights); cutting one would untie them")


def _check_requirements(tr: ChannelTracer, layout: _Layout, groups: list[Group]) -> None:
    for req in tr.atoms.requirements:
        if any(groups[g].pinned is None for g in layout.groups_of(req.atoms)):
            raise PruningError(req.message)

"""Atoms: the smallest things that can be removed, and union-find over them.

Every layer that *creates* channels (a conv's output rows, a linear's output features, the
model input) creates a *set* of atoms, one per channel. Every tensor the tracer sees then
says, position by position, which atom it holds (:class:`~prunekit.graph.flow.Flow`).

When an op forces two positions to be removed together -- ``a + b`` adds channel ``c`` of
``a`` to channel ``c`` of ``b``; a reshape keeps an axis of constant size; a head of an
attention layer is one unit -- their atoms are *united*. After tracing, every union-find
class of atoms is one **unit** (one prunable channel, or one attention head), and every
union-find class of *sets* is one **group** (see :mod:`prunekit.graph.collect`).

Pins, model-output marks, grouped-conv blocks and deferred refusals are recorded per atom
and resolved only at the end, because a later union can still merge a class with another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Atoms", "Requirement"]


@dataclass
class Requirement:
    """``atoms`` must end up pinned, or the model is refused with ``message``."""

    atoms: Tensor
    message: str


class Atoms:
    """Union-find over atoms, plus what the rules say about them."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.set_of: list[int] = []                 # the set (creating layer) of each atom
        self.set_names: list[str] = []
        self.pins: list[tuple[Tensor, str]] = []    # (atoms, reason), in trace order
        self.outputs: list[Tensor] = []             # atoms that reach the model output
        self.blocks: list[tuple[Tensor, Tensor, str]] = []   # (atoms, block id, layer)
        self.requirements: list[Requirement] = []

    # -- creating ------------------------------------------------------------------------------
    def new_set(self, size: int, name: str, pinned: str | None = None) -> Tensor:
        """``size`` fresh atoms created by ``name``; their ids, in channel order."""
        start = len(self.parent)
        self.parent.extend(range(start, start + size))
        self.set_of.extend([len(self.set_names)] * size)
        self.set_names.append(name)
        atoms = torch.arange(start, start + size)
        if pinned:
            self.pin(atoms, pinned)
        return atoms

    # -- union-find ----------------------------------------------------------------------------
    def find(self, a: int) -> int:
        parent = self.parent
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:                    # path compression
            parent[a], a = root, parent[a]
        return root

    def roots(self, atoms: Tensor) -> Tensor:
        """The class representative of every atom (same shape)."""
        flat = atoms.reshape(-1)
        unique, inverse = torch.unique(flat, return_inverse=True)
        found = torch.tensor([self.find(int(a)) for a in unique], dtype=torch.long)
        return found[inverse].reshape(atoms.shape)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)   # the oldest atom represents its class

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        """Position ``i`` of ``a`` and of ``b`` are one unit (broadcast shapes)."""
        a, b = torch.broadcast_tensors(a, b)
        pairs = torch.unique(torch.stack([a.reshape(-1), b.reshape(-1)], 1), dim=0)
        for x, y in pairs.tolist():
            if x != y:
                self.union(x, y)

    def union_all(self, atoms: Tensor) -> None:
        """All of ``atoms`` are one unit."""
        flat = torch.unique(atoms)
        for x in flat[1:].tolist():
            self.union(int(flat[0]), x)

    # -- facts resolved after tracing ----------------------------------------------------------
    def pin(self, atoms: Tensor, reason: str) -> None:
        """These atoms are never removed (exactness needs them as they are)."""
        self.pins.append((atoms.reshape(-1), reason))

    def mark_output(self, atoms: Tensor) -> None:
        self.outputs.append(atoms.reshape(-1))

    def block(self, atoms: Tensor, blocks: int, layer: str) -> None:
        """``atoms`` (a grouped conv's channels, in order) fall into ``blocks`` equal blocks
        that must each lose the same number of channels."""
        ids = torch.arange(len(atoms)) // (len(atoms) // blocks)
        self.blocks.append((atoms.reshape(-1), ids, layer))

    def require_pinned(self, atoms: Tensor, message: str) -> None:
        """A deferred refusal: fine if every one of ``atoms`` ends up pinned."""
        if atoms.numel():
            self.requirements.append(Requirement(atoms.reshape(-1), message))

    def __len__(self) -> int:
        return len(self.parent)

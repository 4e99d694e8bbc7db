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
    """Union-find over atoms, plus what the rules say about them.

    The forest is one int64 tensor (``parent[a]``), so finding or uniting thousands of atoms
    -- the channels of a residual add -- is a few vectorised steps, not a Python loop."""

    def __init__(self) -> None:
        self._parent = torch.zeros(0, dtype=torch.long)
        self.count = 0
        self.set_of: list[int] = []                 # the set (creating layer) of each atom
        self.set_names: list[str] = []
        self.pins: list[tuple[Tensor, str]] = []    # (atoms, reason), in trace order
        self.outputs: list[Tensor] = []             # atoms that reach the model output
        self.blocks: list[tuple[Tensor, Tensor, str]] = []   # (atoms, block id, layer)
        self.requirements: list[Requirement] = []

    @property
    def parent(self) -> Tensor:
        return self._parent[: self.count]

    # -- creating ------------------------------------------------------------------------------
    def new_set(self, size: int, name: str, pinned: str | None = None) -> Tensor:
        """``size`` fresh atoms created by ``name``; their ids, in channel order."""
        start = self.count
        if start + size > len(self._parent):            # grow by doubling
            grown = torch.arange(max(2 * len(self._parent), start + size, 1024))
            grown[:start] = self._parent[:start]
            self._parent = grown
        self._parent[start: start + size] = torch.arange(start, start + size)
        self.count = start + size
        self.set_of.extend([len(self.set_names)] * size)
        self.set_names.append(name)
        atoms = torch.arange(start, start + size)
        if pinned:
            self.pin(atoms, pinned)
        return atoms

    # -- union-find ----------------------------------------------------------------------------
    def roots(self, atoms: Tensor) -> Tensor:
        """The class representative of every atom (same shape), by pointer jumping."""
        x = self._parent[atoms]
        while True:
            y = self._parent[x]
            if torch.equal(x, y):
                break
            x = y
        self._parent[atoms] = x                          # path compression
        return x

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        """Position ``i`` of ``a`` and of ``b`` are one unit (broadcast shapes)."""
        a, b = (t.reshape(-1) for t in torch.broadcast_tensors(a, b))
        while True:
            ra, rb = self.roots(a), self.roots(b)
            differ = ra != rb
            if not bool(differ.any()):
                return
            low, high = torch.minimum(ra, rb)[differ], torch.maximum(ra, rb)[differ]
            self._parent[high] = low        # the oldest atom represents its class; where
            # several pairs hook the same root, one write wins and the loop unites the rest

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
        return self.count

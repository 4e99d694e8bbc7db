"""What the tracer knows about one tensor: which atom each position holds, and whether it
would be exactly zero if that atom were removed.

A :class:`Flow` has two small tensors of the same shape, broadcastable to the real value:

* ``labels`` (int64): the atom at each position. An axis along which the labels do not
  change is stored with size 1, so a ``(N, C, H, W)`` activation of a conv is ``(1, C, 1, 1)``
  and after ``permute(0, 2, 3, 1)`` it is ``(1, 1, 1, C)``: the channel axis moves with the
  data, whatever the layout (channels-first, channels-last, tokens, heads).
* ``zero`` (bool): *removing this atom makes this value exactly 0 in the zero-masked
  model*. True after the layer that creates the channel (its rows are zeroed) and after any
  op with f(0) = 0; False after ``sigmoid`` (sigmoid(0) = 0.5) or ``x + 1``. A False value
  may only be read where it does not matter -- multiplied by a value that is zero, or by a
  layer that zeroes its own rows (BatchNorm, depthwise conv); a conv or linear that reads
  it as an input is refused, because there removing is not zeroing.

Shape ops (reshape, permute, cat, split, indexing) move positions without computing, so the
tracer runs *the same op on the labels* to know where every channel went.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Flow", "ParamFlow", "compress", "strip_broadcast", "expand_to"]


@dataclass
class Flow:
    """Labels and zero flags of one tensor (see the module doc)."""

    labels: Tensor
    zero: Tensor
    why: str = field(default="")      # the op that first made a removed value non-zero

    @classmethod
    def along(cls, atoms: Tensor, axis: int, ndim: int, zero: bool = True) -> Flow:
        """Atoms laid out along one axis of an ``ndim``-d tensor (size 1 elsewhere)."""
        shape = [1] * ndim
        shape[axis] = len(atoms)
        labels = atoms.reshape(shape)
        return cls(labels, torch.full(labels.shape, zero))

    def with_zero(self, zero: bool | Tensor, why: str = "") -> Flow:
        flags = torch.broadcast_to(torch.as_tensor(zero), self.labels.shape).clone()
        return Flow(self.labels, flags, self.why or (why if not bool(flags.all()) else ""))

    def varying(self) -> list[int]:
        """Axes along which the labels or flags change (stored with size > 1)."""
        return [d for d, s in enumerate(self.labels.shape) if s > 1]


@dataclass
class ParamFlow:
    """A tensor read from a parameter or buffer (``get_attr``), possibly reshaped: ``ids`` holds,
    for each position, the index of the parameter element it came from."""

    owner: str          # module path of the parameter's owner ('' = the model itself)
    name: str           # attribute name on the owner
    ids: Tensor         # int64, shaped like the value (broadcast views allowed)
    shape: tuple[int, ...] = ()   # the parameter's own shape


def expand_to(t: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """``t`` broadcast to ``shape`` (a view: no memory), left-padding missing axes."""
    while t.dim() < len(shape):
        t = t.unsqueeze(0)
    return t.expand(*shape)


def strip_broadcast(labels: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """Axes that are broadcast views (stride 0 in both) are constant: keep size 1 there."""
    for d in range(labels.dim()):
        if labels.shape[d] > 1 and labels.stride(d) == 0 and zero.stride(d) == 0:
            labels, zero = labels.narrow(d, 0, 1), zero.narrow(d, 0, 1)
    return labels, zero


def compress(labels: Tensor, zero: Tensor, roots: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Store every axis along which nothing changes with size 1 (``roots``: the labels as
    class representatives, so positions of one unit count as equal)."""
    key = labels if roots is None else roots
    for d in range(labels.dim()):
        if labels.shape[d] > 1:
            k0, z0 = key.narrow(d, 0, 1), zero.narrow(d, 0, 1)
            if bool((key == k0).all()) and bool((zero == z0).all()):
                key, labels, zero = k0, labels.narrow(d, 0, 1), z0
    return labels.contiguous(), zero.contiguous()

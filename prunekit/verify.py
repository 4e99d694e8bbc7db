"""The proof, measured: does the pruned model compute what the zero-masked model computes?

A structured prune is *exact* when the smaller model gives the same outputs as the dense model
with the removed channels set to zero (:meth:`prunekit.planning.Plan.mask`). This module holds
the one comparison everything uses -- the check :meth:`~prunekit.planning.Plan.apply` runs
before it hands a model back, :mod:`prunekit.testing`, and the benchmarks.

Outputs are compared by their *relative* error, ``max |got - want| / max |want|``, so a
network whose logits are in the thousands and one whose logits are 1e-3 are judged alike.
A different structure (shape, number of outputs) or a NaN / inf on one side only counts as
an infinite error: that is not "a little off", it is another function.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["output_error", "TOLERANCE"]

#: Relative error below which two float32 outputs count as equal (a pruned model sums fewer
#: zeros than the masked one, so the last bits differ; a wrong cut is off by 1e-2 or more).
TOLERANCE = 1e-4


def _tensors(value: Any) -> list[Any]:
    """The leaves of a model output: tensors, numbers, None -- in a fixed order."""
    if isinstance(value, Mapping):
        return [x for k in sorted(value, key=str) for x in [k, *_tensors(value[k])]]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [x for v in value for x in [len(value), *_tensors(v)]]
    return [value]


def _tensor_error(got: Tensor, want: Tensor) -> float:
    if got.shape != want.shape or got.dtype != want.dtype:
        return math.inf
    if not got.is_floating_point() and not got.is_complex():
        return 0.0 if torch.equal(got, want) else math.inf
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    same_bad = torch.isnan(got) & torch.isnan(want) | (torch.isinf(got) & (got == want))
    if bool((~torch.isfinite(got) | ~torch.isfinite(want))[~same_bad].any()):
        return math.inf                      # NaN / inf on one side only
    ok = ~same_bad
    if not bool(ok.any()):
        return 0.0
    scale = max(float(want[ok].abs().max()), 1e-12)
    return float((got[ok] - want[ok]).abs().max()) / scale


def output_error(got: Any, want: Any) -> float:
    """Relative max error between two model outputs (tensors, or tuples / dicts of them);
    ``inf`` when their structure, shapes or dtypes differ or only one side is not finite."""
    a, b = _tensors(got), _tensors(want)
    if len(a) != len(b):
        return math.inf
    worst = 0.0
    for x, y in zip(a, b):
        if isinstance(x, Tensor) and isinstance(y, Tensor):
            worst = max(worst, _tensor_error(x, y))
        elif isinstance(x, Tensor) or isinstance(y, Tensor) or x != y:
            return math.inf
    return worst

"""``record(key, value)``: hand a value from a test cell to the grader, out of the student's reach.

Why this exists
---------------
An ``assert`` runs inside the student's kernel, so the student's code can defeat it: a solution
cell may replace ``torch.allclose`` with ``lambda *a, **k: True`` and every assert passes. A
*record* is different: the test cell only reports the value it computed; the comparison with
the expected value happens later, in the grader process, against the value the instructor's
own solution recorded in the same test cell. The expected values never enter the kernel, so
there is nothing to patch and nothing to copy.

The wire format
---------------
When the kernel runs under the grader (environment variable ``PRUNEKIT_GRADING=1``),
``record`` emits one ``display_data`` output with the MIME type :data:`RECORD_MIME`::

    {"key": "l1_scores", "value": <encoded>, "rtol": 1e-4 | null, "atol": 1e-6 | null[, "hint": "..."]}

``<encoded>`` is plain JSON: ``null``, booleans, ints, strings, lists and ``{str: ...}``
dicts stand for themselves; everything else is a tagged object::

    {"__float__": 0.5 | "nan" | "inf" | "-inf"}            a float (tagged: JSON has no NaN,
                                                         and 1 must stay distinct from 1.0)
    {"__array__": "float"|"int"|"bool", "shape": [...],  a torch.Tensor or numpy.ndarray
     "data": flat list}                                  (row-major; non-finite as strings)

Outside the grader ``record`` does nothing but return ``value``, so notebooks stay clean
when students run them.
"""

from __future__ import annotations

import math
import os
from typing import Any

RECORD_MIME = "application/vnd.prunekit.record+json"
GRADING_ENV = "PRUNEKIT_GRADING"
_TAGS = ("__float__", "__array__")
MAX_ELEMENTS = 100_000  # a record is a fingerprint of a result, not a dump of a model

__all__ = ["GRADING_ENV", "RECORD_MIME", "encode", "record"]


def record(key: str, value: Any, *, rtol: float | None = None, atol: float | None = None,
           hint: str | None = None) -> Any:
    """Report ``value`` under ``key`` to the grader and return ``value`` unchanged.

    Call it in a *test cell* on a value the student's code produced, e.g.
    ``record("l1_scores", l1_scores(conv.weight))``. The grader passes the task only if the
    value matches what the instructor's solution recorded under the same key in the same
    cell: exactly for ints, bools and strings, within ``rtol``/``atol`` for floats (the
    tolerances written in the *solution* notebook count; defaults 1e-4 / 1e-6).

    ``hint``: what the student reads when the value differs ("ties: the lower index goes
    first"). Use it in hidden tests instead of an ``assert`` against the expected value: such a
    literal would sit in the kernel, where the student's code can read it. The solution's
    hint counts, as its tolerances do.

    Supported values: ``torch.Tensor``, ``numpy.ndarray``, numbers, bools, strings, ``None``,
    and lists / tuples / ``{str: value}`` dicts of these.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"record() needs a non-empty string key, got {key!r}")
    if os.environ.get(GRADING_ENV) != "1":
        return value
    payload = {"key": key, "value": encode(value), "rtol": rtol, "atol": atol}
    if hint:
        payload["hint"] = str(hint)
    from IPython.display import display  # only under the grader, where IPython is the kernel

    display({RECORD_MIME: payload}, raw=True)
    return value


def encode(value: Any) -> Any:
    """Turn ``value`` into the JSON form described in the module docstring."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return {"__float__": _float(value)}
    if hasattr(value, "detach") and hasattr(value, "shape"):  # torch.Tensor, without importing torch
        return _array(value.detach().cpu().numpy())
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # numpy arrays and numpy scalars
        return _array(value)
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) and k not in _TAGS for k in value):
            raise TypeError(f"record(): dict keys must be strings other than {_TAGS}")
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(
        f"record() cannot encode a {type(value).__name__}; record a tensor, array, number, "
        "bool, string, or a list/tuple/dict of those"
    )


def _float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)  # 'nan', 'inf', '-inf'


def _array(array: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(array)
    if array.size > MAX_ELEMENTS:
        raise ValueError(
            f"record(): {array.size} elements is too many (limit {MAX_ELEMENTS}); record a "
            "summary instead (a slice, a norm per channel, a count)"
        )
    kind = {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(array.dtype.kind)
    if kind is None:
        raise TypeError(f"record(): arrays of dtype {array.dtype} are not supported")
    flat = array.reshape(-1).tolist()
    if kind == "float":
        flat = [_float(float(v)) for v in flat]
    return {"__array__": kind, "shape": list(array.shape), "data": flat}

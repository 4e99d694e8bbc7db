"""Compare a submission's recorded value with the reference, in the grader process.

Values arrive in the encoded form of :mod:`prunekit.grade.kernel.records`. The rules, strictest
first: the *shape* of the value must agree (same kind, same dict keys, same list length, same
array shape and element kind); bools, strings and ``None`` must be equal; numbers are compared
as numbers: ints exactly, floats within ``rtol``/``atol`` (NaN equals NaN, infinities must match
exactly). A tensor and an ndarray with the same numbers are the same value, and so are a
number and a zero-dimensional tensor or array or a NumPy scalar holding it (``np.int64(6)``,
``torch.tensor(6)``, ``6`` and ``6.0``): the task is about numbers, not containers. Booleans are
not numbers here (``True`` is not ``1``): a yes/no answer is a different answer.
"""

from __future__ import annotations

import math
from typing import Any

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6


def values_match(expected: Any, actual: Any, rtol: float | None = None, atol: float | None = None) -> bool:
    """True when ``actual`` equals ``expected`` under the rules above."""
    rtol = DEFAULT_RTOL if rtol is None else float(rtol)
    atol = DEFAULT_ATOL if atol is None else float(atol)
    try:
        return _match(expected, actual, rtol, atol)
    except (TypeError, ValueError, KeyError, AttributeError):
        return False  # a malformed submission value is simply wrong


def _match(e: Any, a: Any, rtol: float, atol: float) -> bool:
    e, a = _scalar(e), _scalar(a)
    if _is_number(e) and _is_number(a):
        if _is_int(e) and _is_int(a):
            return e == a
        return _close(_number(e), _number(a), rtol, atol) if not _is_int(e) else _number(a) == e
    if isinstance(e, dict) and "__array__" in e:
        return _array_match(e, a, rtol, atol)
    if isinstance(e, dict):
        return isinstance(a, dict) and set(a) == set(e) and all(_match(e[k], a[k], rtol, atol) for k in e)
    if isinstance(e, list):
        return isinstance(a, list) and len(a) == len(e) and all(_match(x, y, rtol, atol) for x, y in zip(e, a))
    # None, bool, int, str: exact, and of the same type (True is not 1)
    return type(a) is type(e) and a == e


def _scalar(v: Any) -> Any:
    """A zero-dimensional array (a NumPy scalar, a 0-d tensor) as the plain value it holds."""
    if isinstance(v, dict) and "__array__" in v and v.get("shape") == [] and len(v.get("data", [])) == 1:
        x = v["data"][0]
        return {"__float__": x} if v["__array__"] == "float" else x
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, dict) and set(v) == {"__float__"})


def _number(v: Any) -> float | str:
    return v if _is_int(v) else v["__float__"]


def _array_match(e: dict, a: Any, rtol: float, atol: float) -> bool:
    if not (isinstance(a, dict) and a.get("__array__") == e["__array__"]):
        return False
    if list(a.get("shape", [])) != list(e["shape"]) or len(a.get("data", [])) != len(e["data"]):
        return False
    if e["__array__"] != "float":
        return all(type(x) is type(y) and x == y for x, y in zip(e["data"], a["data"]))
    return all(_close(x, y, rtol, atol) for x, y in zip(e["data"], a["data"]))


def _close(e: float | str, a: float | str, rtol: float, atol: float) -> bool:
    e, a = _to_float(e), _to_float(a)
    if math.isnan(e) or math.isnan(a):
        return math.isnan(e) and math.isnan(a)
    if math.isinf(e) or math.isinf(a):
        return e == a
    return abs(a - e) <= atol + rtol * abs(e)  # numpy.isclose's rule, relative to the expected


def _to_float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise TypeError(f"not a float: {x!r}")
    return float(x)  # float("nan") / float("inf") read the tagged strings

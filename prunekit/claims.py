"""Claims: the numbers a lecture's prose states, checked with a band that holds on every machine.

A lecture says "one epoch of fine-tuning brings the pruned model back to 96.6%". That sentence is
a *claim* about a run, and the course checks every such claim next to the number it quotes. But a
trained number is not a constant of nature: float32 sums are rounded in an order that depends on
the CPU's kernels (AVX-512, AVX2, ARM NEON, plain scalar code), so two machines that run the same
seeded notebook end with weights that differ in the last digits -- and after an epoch of SGD, an
accuracy that differs by an image or two. Timing differs far more.

So a claim is checked with a **band**, measured by running the lecture under several kernel sets
(``benchmarks/portability.py``) and set wider than the spread seen there, with the reason written
beside it. Counts that do not depend on rounding (parameters, MACs, widths) are checked exactly.

How a claim behaves depends on who runs the notebook (environment variable ``PRUNEKIT_CLAIMS``):

* ``report`` (the default: a student's run) prints one line per claim -- "on this machine 96.7%,
  the text says 96.6% ± 1.5 points: fine" -- and, outside the band, a warning that names the
  claim, both numbers and why machines differ, instead of a traceback;
* ``strict`` (``make test``) raises :class:`ClaimError`, so a lecture whose prose drifted fails.

``PRUNEKIT_CLAIMS_LOG=path`` appends every claim as one JSON line (name, value, band, verdict):
that is how the bands are measured.

Usage in a notebook::

    check = Claims(default_run=DEFAULT_RUN)       # the prose describes the default configuration
    check.near("uniform 50%, after one epoch", tuned, 0.966, tol=0.015, fmt=".1%")
    check.beats("recalibration helps", recal, raw, margin=0.2, fmt=".1%")
    check.above("Taylor-BN vs oracle (Spearman)", rho, 0.6)
    check.exact("MACs of the uniform plan", macs, 9_145_216)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

MODES = ("report", "strict")
WHY_MACHINES_DIFFER = ("trained numbers differ in the last digits between CPUs (AVX-512, AVX2, ARM, "
                       "scalar kernels round sums in different orders) and timings differ with the "
                       "machine and its load")


class ClaimError(AssertionError):
    """A claim of the prose does not hold (raised only when ``PRUNEKIT_CLAIMS=strict``)."""


@dataclass(frozen=True)
class Verdict:
    """One checked claim: what the text says, what this run measured, and whether it fits."""

    name: str
    value: float
    stated: str          # the text's claim, e.g. "96.6% ± 1.5 points" or "> 0.60"
    measured: str        # this run's value, formatted like the text's
    holds: bool
    applies: bool        # False: this run is not the configuration the prose describes

    def _ipython_display_(self) -> None:
        """Shown as the last line of a cell, a verdict adds nothing: the claim printed its line."""

    def line(self) -> str:
        """The one line a student sees."""
        if not self.applies:
            return (f"  (not checked) {self.name}: {self.measured} in this run; the text describes "
                    f"the default configuration ({self.stated})")
        if self.holds:
            return f"  ok  {self.name}: {self.measured} on this machine; the text says {self.stated}"
        return (f"WARNING  claim {self.name!r} does not hold on this machine: {self.measured} here, "
                f"the text says {self.stated}.\n         Why it can differ: {WHY_MACHINES_DIFFER}; the "
                f"band was measured on several kernel sets, and this run fell outside it. Read the "
                f"lesson with this run's numbers.")


def _fmt(value: float, fmt: str) -> str:
    return format(value, fmt) if not isinstance(value, bool) else str(value)


def _band(tol: float | None, rel: float | None, fmt: str) -> str:
    if tol is not None and fmt.endswith("%"):
        return f" ± {100 * tol:.{_digits(fmt)}f} points"
    if tol is not None:
        return f" ± {_fmt(tol, fmt)}"
    return f" ± {100 * rel:.0f}%" if rel else ""


def _digits(fmt: str) -> int:
    spec = fmt.rstrip("%f").lstrip(",.")
    return int(spec) if spec.isdigit() else 1


class Claims:
    """Checks a notebook's claims; see the module docstring.

    ``default_run`` says whether this run is the configuration the prose describes (a student
    who changes ``MODEL`` gets other numbers, and the claims are then shown, not checked).
    """

    def __init__(self, default_run: bool = True, mode: str | None = None, log: str | None = None):
        self.default_run = default_run
        self.mode = mode or os.environ.get("PRUNEKIT_CLAIMS", "report")
        if self.mode not in MODES:
            raise ValueError(f"PRUNEKIT_CLAIMS must be one of {MODES}, got {self.mode!r}")
        self.log = log if log is not None else os.environ.get("PRUNEKIT_CLAIMS_LOG", "")
        self.verdicts: list[Verdict] = []

    # ---- the kinds of claim -------------------------------------------------------------------
    def near(self, name: str, value: float, stated: float, *, tol: float | None = None,
             rel: float | None = None, fmt: str = ".4g", always: bool = False) -> Verdict:
        """``value`` is within ``tol`` (absolute) or ``rel`` (relative) of the text's ``stated``."""
        if (tol is None) == (rel is None):
            raise ValueError("give exactly one of tol= (absolute) or rel= (relative)")
        bound = tol if tol is not None else rel * abs(stated)
        holds = math.isfinite(value) and abs(value - stated) <= bound
        return self._record(name, value, _fmt(stated, fmt) + _band(tol, rel, fmt), fmt, holds, always)

    def above(self, name: str, value: float, bound: float, *, fmt: str = ".4g",
              always: bool = False) -> Verdict:
        """``value`` is greater than ``bound`` (a floor the text states, e.g. a rank correlation)."""
        return self._record(name, value, f"> {_fmt(bound, fmt)}", fmt, value > bound, always)

    def below(self, name: str, value: float, bound: float, *, fmt: str = ".4g",
              always: bool = False) -> Verdict:
        """``value`` is less than ``bound``."""
        return self._record(name, value, f"< {_fmt(bound, fmt)}", fmt, value < bound, always)

    def between(self, name: str, value: float, low: float, high: float, *, fmt: str = ".4g",
                always: bool = False) -> Verdict:
        """``low <= value <= high`` (a band stated by the text, e.g. "within 10% of the ideal")."""
        stated = f"between {_fmt(low, fmt)} and {_fmt(high, fmt)}"
        return self._record(name, value, stated, fmt, low <= value <= high, always)

    def beats(self, name: str, a: float, b: float, *, margin: float = 0.0, fmt: str = ".4g",
              always: bool = False) -> Verdict:
        """``a`` exceeds ``b`` by more than ``margin`` ("recalibration helps by > 20 points")."""
        stated = f"ahead by > {_band_value(margin, fmt)}"
        return self._record(name, a - b, stated, fmt, a - b > margin, always,
                            measured=f"{_fmt(a, fmt)} vs {_fmt(b, fmt)}")

    def exact(self, name: str, value, stated, *, always: bool = True) -> Verdict:
        """A count or a structure that is the same on every machine (params, MACs, widths)."""
        return self._record(name, value, str(stated), "", value == stated, always,
                            measured=str(value))

    # ---- bookkeeping --------------------------------------------------------------------------
    def _record(self, name: str, value, stated: str, fmt: str, holds: bool, always: bool,
                measured: str | None = None) -> Verdict:
        applies = always or self.default_run
        measured = measured if measured is not None else _fmt(value, fmt) if fmt else str(value)
        verdict = Verdict(name, _as_number(value), stated, measured, bool(holds), applies)
        self.verdicts.append(verdict)
        self._write_log(verdict)
        print(verdict.line())
        if applies and not holds and self.mode == "strict":
            raise ClaimError(verdict.line())
        return verdict

    def _write_log(self, verdict: Verdict) -> None:
        if self.log:
            with open(self.log, "a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(verdict)) + "\n")


def _band_value(margin: float, fmt: str) -> str:
    return f"{100 * margin:.{_digits(fmt)}f} points" if fmt.endswith("%") else _fmt(margin, fmt)


def _as_number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan

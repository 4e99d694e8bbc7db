"""Adversarial review: prune every small model of ``tests/adversarial_nets.py`` under several
settings and seeds, and count the verdicts (see :class:`prunekit.testing.Verdict`).

A library keeps its promise when the table has no ``wrong`` (accepted, but not the
zero-masked model's function), no ``crash`` (accepted, and the pruned model raises -- or the
library raised something other than a PruningError), no ``bad-message`` and no ``mutated``
(the caller's model changed although the call was refused or made a copy).

Run from the repository root::

    python benchmarks/adversarial.py                  # every case x 8 settings x 3 seeds
    python benchmarks/adversarial.py --seeds 1 --only w1,w6   # cases whose name contains these
    python benchmarks/adversarial.py --show wrong,crash       # list those cases (default)
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # adversarial_nets
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))            # prunekit, this checkout

from adversarial_nets import CASES, builds  # noqa: E402
from prunekit.testing import sweep  # noqa: E402

SETTINGS: dict[str, dict] = {
    "l1 0.3": dict(ratio=0.3),
    "l1 0.5": dict(ratio=0.5),
    "l1 0.9": dict(ratio=0.9),
    "random 0.5": dict(ratio=0.5, importance="random"),
    "fpgm 0.5": dict(ratio=0.5, importance="fpgm"),
    "global 0.5": dict(ratio=0.5, scope="global"),
    "round_to 4": dict(ratio=0.5, round_to=4),
    "inplace": dict(ratio=0.5, inplace=True),
}
KINDS = ("exact", "refused", "bad-message", "wrong", "crash")
BAD = ("bad-message", "wrong", "crash")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated parts of case names")
    parser.add_argument("--show", default="wrong,crash,bad-message,mutated")
    parser.add_argument("--table", action="store_true", help="one line per model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    parts = [p for p in args.only.split(",") if p]
    chosen = {k: v for k, v in builds().items() if not parts or any(p in k for p in parts)}
    start = time.perf_counter()
    rows = sweep(chosen, SETTINGS, tuple(range(args.seeds)))
    print(f"{len(chosen)} models x {len(SETTINGS)} settings x {args.seeds} seeds = {len(rows)} "
          f"calls in {time.perf_counter() - start:.0f} s")
    report(rows, set(args.show.split(",")), args.table)


def report(rows: list, show: set[str], table: bool = False) -> None:
    counts = collections.Counter(v.kind for *_, v in rows)
    mutated = sum(1 for *_, v in rows if v.mutated)
    print("verdicts: " + ", ".join(f"{k} {counts.get(k, 0)}" for k in KINDS) +
          f"; mutated-caller {mutated}")
    by_model = collections.defaultdict(collections.Counter)
    for name, _, _, v in rows:
        by_model[name][v.kind] += 1
        by_model[name]["mutated"] += bool(v.mutated)
    models = {k: max(KINDS, key=lambda kind: (kind in BAD and c[kind] > 0, c[kind]))
              for k, c in by_model.items()}
    print("models (worst verdict): " + ", ".join(
        f"{k} {list(models.values()).count(k)}" for k in KINDS))
    if table:
        for name, c in by_model.items():
            print(f"  {name:<36} [{CASES[name].kind:<8}] " + " ".join(
                f"{k}={c[k]}" for k in (*KINDS, "mutated") if c[k]))
    seen = set()
    for name, setting, seed, v in rows:
        tag = "mutated" if v.mutated and "mutated" in show else v.kind
        if tag in show and (name, tag) not in seen:
            seen.add((name, tag))
            what = ", ".join(v.mutated[:3]) if tag == "mutated" else (
                f"rel err {v.error:.2g}" if v.kind == "wrong" else v.detail[:160])
            print(f"  {tag:<11} {name:<36} [{CASES[name].kind}] {setting}, seed {seed}: {what}")


if __name__ == "__main__":
    main()

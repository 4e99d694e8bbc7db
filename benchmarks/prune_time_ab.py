"""Time to prune of two checkouts of prunekit, interleaved: is a change slower?

Runs ``bench_prune.py``'s prunekit call (50% uniform L1, local scope, in place on a fresh
copy) on its five models, each (checkout, model) in its own child process so that each
imports its own ``prunekit``, alternating A, B, A, B ... for ``--rounds`` rounds, so a busy
neighbour slows both alike. Each child reports the median CPU time of the one working thread
over ``--repeats`` calls after a warm-up; the table gives, per model, the median over rounds
and the ratio B / A.

    git archive <commit> prunekit benchmarks | tar -x -C /tmp/before
    python benchmarks/prune_time_ab.py /tmp/before .          # A = before, B = this checkout
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

MODELS = ["vgg_small", "resnet56", "vgg16_bn", "resnet18", "mobilenet_v2"]
CHILD = r"""
import copy, json, statistics, sys, time
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
import bench_prune, prunekit
assert prunekit.__file__.startswith({root!r}), prunekit.__file__
original = bench_prune.build({model!r})
x = torch.randn(1, *bench_prune.MODELS[{model!r}].input_shape)
call = lambda m: prunekit.prune(m, x, ratio=0.5, importance="l1", scope="local", inplace=True)
call(copy.deepcopy(original))
times = []
for _ in range({repeats}):
    m = copy.deepcopy(original)
    t = time.thread_time(); call(m); times.append((time.thread_time() - t) * 1e3)
print("RESULT", json.dumps(statistics.median(times)))
"""


def child(root: Path, model: str, repeats: int) -> float:
    code = CHILD.format(root=str(root.resolve()), bench=str(root.resolve() / "benchmarks"),
                        model=model, repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("RESULT"))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print("| model | A: prune (ms) | B: prune (ms) | B / A | B / A per round |")
    print("|---|---|---|---|---|")
    for model in args.models:
        a, b = [], []
        for r in range(args.rounds):
            order = [(args.a, a), (args.b, b)] if r % 2 == 0 else [(args.b, b), (args.a, a)]
            for root, into in order:
                into.append(child(root, model, args.repeats))
        ratios = [y / x for x, y in zip(a, b)]
        print(f"| {model} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | "
              f"{statistics.median(b) / statistics.median(a):.2f} | "
              f"{', '.join(f'{q:.2f}' for q in ratios)} |", flush=True)


if __name__ == "__main__":
    main()

"""How long the autograder takes for a class: 40 submissions of exercise 2, graded with ``-j 2``.

    python benchmarks/bench_grade.py [--n 40] [--jobs 2] [--modes bwrap none] [--before REV]

The submissions are a realistic mix: a quarter the reference answer, a quarter a correct answer
written differently (``copy.deepcopy`` + slicing), a quarter a wrong one (running statistics
lost), a quarter the untouched exercise. For each sandbox mode the script times, through the
command line an instructor uses, (1) computing the expected values (once per exercise and
library version; cached afterwards) and (2) grading the folder with the cache warm, and samples
the peak memory of the grader and all its kernels (PSS: a shared page once). It checks every
score, so a fast but wrong grader cannot post a number. The acceptance bound: grading within 1.5x of the 83 s that
40 submissions took before the sandbox (``--baseline``).

``--before REV`` also times the grader of an older commit on the same kind of submissions (its
own ``prunekit`` and ``solutions/``, unpacked with ``git archive``) in the same run: on a shared
machine only a baseline measured side by side is a fair comparison. Its scores are not checked
(the old grader gave the ``deepcopy`` answers 4 / 7).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "grader_fixtures"))
import tiny  # noqa: E402
from variants import VARIANTS  # noqa: E402

from prunekit.grade.generate import make_exercise  # noqa: E402
from prunekit.grade.sandbox.watchdog import tree_memory  # noqa: E402

EXERCISE = "ex02_l1_norm"


def submissions(folder: Path, n: int, solutions: Path = REPO / "solutions") -> dict[str, float]:
    """Write ``n`` notebooks into ``folder``; return the score each must get."""
    solution = nbformat.read(solutions / f"{EXERCISE}.ipynb", as_version=4)
    deepcopy, wrong = (VARIANTS[name].sources for name in ("ex02-deepcopy-and-slicing", "ex02-stats-lost-grad-kept"))
    kinds = [("reference", solution, 7.0), ("deepcopy", tiny.with_solutions(solution, deepcopy), 7.0),
             ("wrong", tiny.with_solutions(solution, wrong), 3.0),
             ("blank", make_exercise(solution), 0.0)]
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i in range(n):
        kind, nb, score = kinds[i % len(kinds)]
        name = f"student{i:02d}-{kind}"
        nbformat.write(nb, folder / f"{name}.ipynb")
        expected[name] = score
    return expected


class PeakMemory:
    """Samples the memory (PSS) of a process and all its descendants."""

    def __init__(self, pid: int, every: float = 0.2):
        self.pid, self.every, self.peak, self._stop = pid, every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # the grader's own watchdog measures a kernel tree the same way: PSS, shared pages once (0 once gone)
            self.peak = max(self.peak, tree_memory(self.pid))
            self._stop.wait(self.every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def timed(cmd: list[str], code: Path = REPO) -> tuple[float, int, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=code,
                            env={**os.environ, "PYTHONPATH": str(code), "PRUNEKIT_PROGRESS": "0"})
    memory = PeakMemory(proc.pid)
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    return seconds, memory.stop(), subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_mode(mode: str, n: int, jobs: int, root: Path) -> dict:
    subs, cache, out = root / "submissions", root / f"cache-{mode}", root / f"out-{mode}"
    expected = submissions(subs, n)
    ref_s, _, done = timed([sys.executable, "-m", "prunekit.grade.reference", "--exercise", EXERCISE,
                            "--cache-dir", str(cache), "--sandbox", mode])
    if done.returncode:
        raise SystemExit(f"references failed ({mode}):\n{done.stderr}")
    out.mkdir(parents=True)
    grade_s, peak, done = timed([sys.executable, "-m", "prunekit.grade", str(subs), "--exercise", EXERCISE,
                                 "-j", str(jobs), "--cache-dir", str(cache), "--sandbox", mode,
                                 "--gradebook", str(out / "grades.csv")])
    if done.returncode:
        raise SystemExit(f"grading failed ({mode}):\n{done.stderr}")
    got = {line.split(":")[0]: float(line.split(":")[1].split("/")[0]) for line in done.stdout.splitlines()
           if line.startswith("student")}
    if got != expected:
        wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        raise SystemExit(f"{mode}: wrong scores (got, expected): {wrong}")
    return {"mode": mode, "n": n, "jobs": jobs, "references": ref_s, "grading": grade_s, "peak": peak}


def run_before(rev: str, n: int, jobs: int, root: Path) -> dict:
    """The grader of commit ``rev``, on submissions made from that commit's solutions."""
    code = root / f"before-{rev}"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "prunekit", "solutions"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    subs, cache = root / f"submissions-{rev}", root / f"cache-{rev}"
    submissions(subs, n, code / "solutions")
    one = subs / sorted(os.listdir(subs))[0]  # the first run computes the references: time it apart
    ref_s, _, done = timed([sys.executable, "-m", "prunekit.grade", str(one), "--solutions", str(code / "solutions"),
                            "--cache-dir", str(cache), "--json", str(root / "ref.json")], code)
    grade_s, peak, done = timed([sys.executable, "-m", "prunekit.grade", str(subs), "--solutions",
                                 str(code / "solutions"), "--exercise", EXERCISE, "-j", str(jobs), "--cache-dir",
                                 str(cache), "--gradebook", str(root / f"grades-{rev}.csv")], code)
    if done.returncode:
        raise SystemExit(f"grading at {rev} failed:\n{done.stderr}")
    return {"mode": f"before ({rev[:7]})", "n": n, "jobs": jobs, "references": ref_s, "grading": grade_s, "peak": peak}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["bwrap", "none"], choices=["bwrap", "none"])
    p.add_argument("--baseline", type=float, default=83.0, help="seconds for 40 before the sandbox (this machine)")
    p.add_argument("--before", default=None, help="also time the grader of this commit (e.g. 6a8982b)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
        if args.before:
            rows.append(run_before(args.before, args.n, args.jobs, Path(tmp)))
        for mode in args.modes:
            rows.append(run_mode(mode, args.n, args.jobs, Path(tmp)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.n} submissions of {EXERCISE}, -j {args.jobs}, {os.cpu_count()} CPUs, load average {load:.1f}\n")
    print(f"| sandbox | references (once) | grading, cache warm | per submission | peak memory "
          f"| vs. {args.baseline:g} s before |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['references']:.1f} s | {r['grading']:.1f} s | {r['grading'] / r['n']:.2f} s "
              f"| {r['peak'] / 2**30:.2f} GiB | x{r['grading'] / args.baseline * 40 / r['n']:.2f} |")


if __name__ == "__main__":
    main()

"""The autograder's command line.

    python -m prunekit.grade SUBMISSION.ipynb [--json result.json]
    python -m prunekit.grade SUBMISSIONS_DIR --gradebook grades.csv --feedback feedback/ -j 4

Exit status 0 whenever grading happened, whatever the scores (a broken submission is a row
with 0 points and its reason); 2 when the grader itself could not work (no solutions folder,
an instructor solution that fails its own tests, bad options).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import report
from .batch import grade_paths, resolve_limits
from .catalog import default_solutions_dir, load_catalog
from .runner import Limits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prunekit.grade",
                                description="Grade exercise notebooks against the instructor's solutions.")
    p.add_argument("submission", type=Path, help="a submitted .ipynb, or a folder of them")
    p.add_argument("--solutions", type=Path, default=None,
                   help="folder of solution notebooks (default: the repository's solutions/)")
    p.add_argument("--exercise", default=None,
                   help="reject notebooks that are not this exercise (e.g. ex02_l1_norm)")
    p.add_argument("--json", type=Path, default=None, help="write the result(s) as JSON here")
    p.add_argument("--gradebook", type=Path, default=None, help="write one CSV row per submission here")
    p.add_argument("--feedback", type=Path, default=None,
                   help="write <submission>.md feedback files into this folder")
    p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded in parallel")
    p.add_argument("--cell-timeout", type=float, default=60.0, help="seconds per cell (default 60)")
    p.add_argument("--total-timeout", type=float, default=900.0, help="seconds per notebook (default 900)")
    p.add_argument("--memory-mb", type=int, default=4096, help="memory limit per kernel in MiB (default 4096)")
    p.add_argument("--kernel-user", default=None,
                   help="run kernels as this user (default: nobody when root, else yourself; 'none' disables)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where expected values are cached (default: <solutions>/../.cache/prunekit-grade)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    solutions = args.solutions or default_solutions_dir()
    try:
        catalog = load_catalog(solutions)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.exercise and args.exercise not in catalog:
        print(f"error: unknown exercise {args.exercise!r}; known: {', '.join(sorted(catalog))}", file=sys.stderr)
        return 2
    if args.submission.is_dir():
        paths = sorted(args.submission.glob("*.ipynb"))
    elif args.submission.exists():
        paths = [args.submission]
    else:
        print(f"error: {args.submission} does not exist", file=sys.stderr)
        return 2
    limits = Limits(cell_timeout=args.cell_timeout, total_timeout=args.total_timeout, memory_mb=args.memory_mb)
    if args.kernel_user is not None:
        limits.user = None if args.kernel_user.lower() == "none" else args.kernel_user
    limits = resolve_limits(limits)
    cache = args.cache_dir or Path(solutions).resolve().parent / ".cache" / "prunekit-grade"
    results, problems = grade_paths(paths, catalog, limits, args.jobs, args.exercise, cache)
    _write(args, results, catalog)
    if not args.submission.is_dir() and not args.json:
        import json

        print(json.dumps(results[0][1].as_dict(), indent=2))
    for name, result in results:
        print(f"{name}: {result.score:g} / {result.max_score:g}" + (f"  ({result.error})" if result.error else ""))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _write(args: argparse.Namespace, results, catalog) -> None:
    if args.json:
        report.write_json(results[0][1] if not args.submission.is_dir() else results, args.json)
    if args.feedback:
        report.write_feedback(args.feedback, results)
    if args.gradebook:
        graded = {r.exercise for _, r in results}
        task_ids = [gid for ex in catalog.values() if ex.name in graded for gid, _ in ex.tests]
        report.write_gradebook(args.gradebook, results, task_ids)


if __name__ == "__main__":
    sys.exit(main())

"""The autograder's command line.

    python -m prunekit.grade SUBMISSION.ipynb [--json result.json]
    python -m prunekit.grade SUBMISSIONS_DIR --gradebook grades.csv --feedback feedback/ -j 4
    python -m prunekit.grade SUBMISSIONS_DIR --task-index 7 --json results/   # one job of an array

Exit status 0 whenever grading happened, whatever the scores (a broken submission is a row
with 0 points and its reason); 2 when the grader itself could not work (no solutions folder,
an instructor solution that fails its own tests, no sandbox where one is required, bad options,
a feedback page that could not be written). The gradebook is written first, so it exists
whatever happens to the feedback pages.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report
from .batch import grade_paths
from .catalog import default_cache_dir, default_solutions_dir, load_catalog
from .limits import SandboxUnavailable, add_limit_options, limits_from
from .results import clean_text
from .sandbox import ISOLATION, MODES, resolve_limits


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prunekit.grade",
                                description="Grade exercise notebooks against the instructor's solutions.")
    p.add_argument("submission", type=Path, help="a submitted .ipynb, or a folder of them")
    p.add_argument("--solutions", type=Path, default=None,
                   help="folder of solution notebooks (default: the repository's solutions/)")
    p.add_argument("--exercise", default=None,
                   help="reject notebooks that are not this exercise (e.g. ex02_l1_norm)")
    p.add_argument("--json", type=Path, default=None,
                   help="write the result(s) as JSON here (with --task-index: a folder, one <name>.json)")
    p.add_argument("--gradebook", type=Path, default=None, help="write one CSV row per submission here")
    p.add_argument("--feedback", type=Path, default=None,
                   help="write <submission>.md feedback files into this folder")
    p.add_argument("-j", "--jobs", type=int, default=1, help="submissions graded in parallel")
    p.add_argument("--task-index", type=int, default=None,
                   help="grade only the N-th notebook (0-based, by name) of the folder: one task of a "
                        "scheduler's job array; merge the JSON files with python -m prunekit.grade.merge")
    p.add_argument("--sandbox", choices=MODES, default="auto",
                   help="bwrap: require the bubblewrap sandbox; none: no isolation, for trusted notebooks "
                        "only; auto (default): bwrap, else an error under CI=true and a warning elsewhere")
    p.add_argument("--isolation", choices=ISOLATION, default="auto",
                   help="how kernels share CPU, memory and disk: cgroup (a control group per kernel; an error "
                        "where none can be made), watchdog (polled from outside), auto (default): cgroup where "
                        "possible, else the watchdog with a warning")
    add_limit_options(p)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the grader's own files: expected values and the kernels' copy of prunekit "
                        "(default: <solutions>/../.cache/prunekit-grade)")
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
    paths, problem = _select(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cache = args.cache_dir or default_cache_dir(solutions)
    try:
        limits = resolve_limits(limits_from(args), args.sandbox, cache, args.isolation)
    except SandboxUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"isolation: {limits.sandbox.isolation}", file=sys.stderr)
    results, problems = grade_paths(paths, catalog, limits, args.jobs, args.exercise, cache)
    problems += _write(args, results, catalog)
    if args.submission.is_file() and not args.json:
        print(json.dumps(results[0][1].as_dict(), indent=2))
    for name, result in results:
        pending = sum(m.max_score for m in result.manual if m.score is None)
        error = f"  ({result.error})" if result.error else ""
        print(f"{clean_text(name)}: {result.score:g} / {result.max_score:g}" + error
              + (f"  + written answers worth up to {pending:g} points: needs manual grading" if pending else ""))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 2 if problems else 0


def _select(args: argparse.Namespace) -> tuple[list[Path], str]:
    """The notebooks to grade, or a problem with the options."""
    if not args.submission.exists():
        return [], f"{args.submission} does not exist"
    if not args.submission.is_dir():
        return ([args.submission], "") if args.task_index is None else ([], "--task-index needs a folder")
    paths = sorted(args.submission.glob("*.ipynb"))
    if args.task_index is None:
        return paths, ""
    if not 0 <= args.task_index < len(paths):
        return [], f"--task-index {args.task_index}: {args.submission} has {len(paths)} notebooks (0..{len(paths) - 1})"
    if args.json is None:
        return [], "--task-index needs --json FOLDER (where this task's result goes)"
    return [paths[args.task_index]], ""


def _write(args: argparse.Namespace, results, catalog) -> list[str]:
    """Gradebook first, then the JSON, then the feedback pages (each on its own); returns problems."""
    if args.gradebook:
        report.write_gradebook(args.gradebook, results, report.task_columns(results, catalog))
    if args.json and args.task_index is not None:
        args.json.mkdir(parents=True, exist_ok=True)
        name, result = results[0]
        report.write_json(result, args.json / f"{name}.json")
    elif args.json:
        report.write_json(results[0][1] if not args.submission.is_dir() else results, args.json)
    return report.write_feedback(args.feedback, results) if args.feedback else []


if __name__ == "__main__":
    sys.exit(main())

"""Merge per-submission JSON results into one gradebook: the last step of a job array.

    python -m prunekit.grade.merge RESULTS_DIR --gradebook grades.csv --feedback feedback/ \\
        [--submissions SUBMISSIONS_DIR] [--json all.json]

Each ``RESULTS_DIR/<name>.json`` is what ``python -m prunekit.grade SUBMISSIONS_DIR
--task-index I --json RESULTS_DIR`` wrote for one notebook (the documented result object).
With ``--submissions``, a notebook without a result (its job was lost or killed) gets a row
with 0 points and says so, instead of silently missing from the gradebook; the exit status is
then 1, so the scheduler's final step shows that something needs a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import report
from .results import GradeResult


def read_results(folder: Path) -> list[tuple[str, GradeResult]]:
    """``[(name, result)]`` for every ``*.json`` in ``folder``, sorted by name."""
    results = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            results.append((path.stem, GradeResult.from_dict(json.loads(path.read_text(encoding="utf-8")))))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
            results.append((path.stem, GradeResult("", 0.0, 0.0, [], error=f"unreadable result file: {err}")))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m prunekit.grade.merge", description=__doc__.split("\n")[0])
    p.add_argument("results", type=Path, help="folder of <submission>.json files")
    p.add_argument("--gradebook", type=Path, default=None, help="write one CSV row per submission here")
    p.add_argument("--feedback", type=Path, default=None, help="write <submission>.md files into this folder")
    p.add_argument("--json", type=Path, default=None, help="write every result into one JSON file")
    p.add_argument("--submissions", type=Path, default=None,
                   help="the graded folder: every notebook in it must have a result")
    args = p.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results} is not a folder", file=sys.stderr)
        return 2
    results = read_results(args.results)
    missing = []
    if args.submissions is not None:
        have = {name for name, _ in results}
        missing = [q.stem for q in sorted(args.submissions.glob("*.ipynb")) if q.stem not in have]
        results += [(name, GradeResult("", 0.0, 0.0, [], error="no result: its grading job did not finish"))
                    for name in missing]
        results.sort(key=lambda item: item[0])
    if args.gradebook:  # first: whatever happens to the feedback pages, the gradebook exists
        report.write_gradebook(args.gradebook, results, report.task_columns(results))
    if args.json:
        report.write_json(results, args.json)
    problems = report.write_feedback(args.feedback, results) if args.feedback else []
    print(f"merged {len(results)} results" + (f"; missing: {', '.join(missing)}" if missing else ""))
    return 1 if missing or problems else 0


if __name__ == "__main__":
    sys.exit(main())

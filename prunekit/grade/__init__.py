"""Exercises and their autograder: generate student notebooks, grade what comes back.

The instructor writes ``solutions/exNN_*.ipynb`` in nbgrader's format (schema-3 cell metadata,
``### BEGIN SOLUTION`` / ``### BEGIN HIDDEN TESTS`` markers) plus one notebook-level entry,
``metadata["prunekit"] = {"exercise": "ex02_l1_norm"}``. From that single source:

``python -m prunekit.grade.generate solutions exercises``  (:mod:`.generate`)
    strips answers and hidden tests, clears outputs; byte-identical on every run.

``python -m prunekit.grade SUBMISSION.ipynb | FOLDER``  (:mod:`.__main__`)
    grades: per-task points, a message a student can act on, JSON, Markdown feedback, CSV.

How a submission is graded, one module per step
-----------------------------------------------
1. :mod:`.catalog` reads every solution notebook into memory once and works out which
   exercise a submission is (metadata, else the grade_ids of its solution cells).
2. :mod:`.autograde` assembles the notebook to run: the submission's *solution cells only*
   (by grade_id), everything else (setup, every visible and hidden test) from the solution
   notebook, in its order. Deleted or edited test cells therefore do not matter.
3. :mod:`.runner` executes it cell by cell with nbclient, in a fresh kernel started through
   :mod:`.sandbox` (own empty folder, clean environment, ``RLIMIT_AS``, an unprivileged user
   when the grader is root) under per-cell and total time limits and a memory watchdog.
   A failing cell does not stop later cells; a dead kernel ends the run with a reason.
4. :mod:`.reference` gets the expected values by running the *instructor's* notebook the
   same way (cached by content hash, in a folder only the grader can read).
5. :mod:`.autograde` scores each test cell: it passes if it ran without error **and** every
   value the solution recorded there is matched (:mod:`.compare`). :mod:`.report` writes
   the results; :mod:`.batch` grades folders in parallel worker processes.

Tamper-proof checks: ``record``
-------------------------------
Asserts run inside the student's kernel and can be defeated from there (``torch.allclose =
lambda *a, **k: True``). So test cells also *record* what the student's code produced::

    from prunekit.grade import record
    scores = record("l1_scores", l1_scores(conv.weight))          # returns its argument
    record("kept", sorted(kept_channels))
    record("accuracy", acc, atol=0.02)                             # looser float tolerance

``record(key, value, *, rtol=None, atol=None)`` -- value: Tensor / ndarray / number / bool / str /
None, or list / tuple / str-keyed dict of those. Under the grader it emits a ``display_data``
output of MIME type ``application/vnd.prunekit.record+json``; elsewhere it does nothing. The
grader compares, in its own process, against what the solution recorded in the same cell:
ints, bools and strings exactly, floats within the *solution's* ``rtol``/``atol`` (default
1e-4 / 1e-6). The expected values never enter the kernel, so they cannot be patched or read.
Give every test cell at least one record of a value the task computes.

Threat model, honestly: code in the kernel controls the kernel. It can make a test cell
*look* green, but it cannot produce values it was never shown. It can read files the kernel
user can read: keep ``solutions/`` and the grader's cache unreadable to that user.
"""

from .handin import hand_in
from .records import RECORD_MIME, record

__all__ = ["RECORD_MIME", "hand_in", "record"]

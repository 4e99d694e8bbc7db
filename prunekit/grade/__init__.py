"""Exercises and their autograder: generate student notebooks, grade what comes back.

The instructor writes ``solutions/exNN_*.ipynb`` in nbgrader's format (schema-3 cell metadata,
``### BEGIN SOLUTION`` / ``### BEGIN HIDDEN TESTS`` markers) plus one notebook-level entry,
``metadata["prunekit"] = {"exercise": "ex02_l1_norm"}``. From that single source:

``python -m prunekit.grade.generate solutions exercises``  (:mod:`.generate`)
    strips answers and hidden tests, clears outputs; byte-identical on every run.

``python -m prunekit.grade SUBMISSION.ipynb | FOLDER``  (:mod:`.__main__`)
    grades: per-task points, a message a student can act on, JSON, Markdown feedback, CSV.
    ``--task-index N`` grades one notebook of a folder (a job of a scheduler's array);
    ``python -m prunekit.grade.merge`` joins the results (:mod:`.merge`).

``python -m prunekit.grade.contract solutions``  (:mod:`.contract`)
    checks the rules that keep test cells fair and unforgeable.

Where the code runs
-------------------
``kernel/``
    imported *inside the student's kernel*: ``record`` (:mod:`.kernel.records`), ``hand_in``
    (:mod:`.kernel.handin`), the reseed before each test (:mod:`.kernel.seeding`). The
    student's code can replace any of it, so the grader trusts none of it -- only what it emits.
``sandbox/``
    the box the grader builds and polices: bubblewrap's options (:mod:`.sandbox.box`), the
    launcher that joins a control group and sets hard limits before bwrap
    (:mod:`.sandbox.launcher`, :mod:`.sandbox.cgroups`), the watchdog (:mod:`.sandbox.watchdog`),
    the installed copy of prunekit the box imports (:mod:`.sandbox.install`).
:mod:`.budget`
    a check program: runs in a box of its own on a handed-in file (and in the notebook, so
    that students see the same measurement).
everything else
    runs in the grader's process; :mod:`.limits` holds every limit, default and error once.

How a submission is graded, one module per step
-----------------------------------------------
1. :mod:`.submission` reads the file defensively (a regular file only, size and nesting
   capped, any failure that student's row); :mod:`.catalog` knows every solution notebook
   and works out which exercise a submission is (metadata, else its solution cells' grade_ids).
2. :mod:`.assemble` builds the notebook to run: the submission's *solution cells only*
   (by grade_id; of a copied cell, the last copy the student changed), everything else (setup,
   every visible and hidden test) from the solution notebook, in its order. Deleted or edited
   test cells therefore do not matter. Random generators are reseeded before every test and
   hidden block.
3. :mod:`.runner` executes it cell by cell with nbclient, in a fresh kernel inside bubblewrap
   (:mod:`.sandbox`: no network, own PID namespace, tmpfs home and ``/dev/shm``, nothing of the
   host but the interpreter and an installed copy of prunekit, its own uid, its own control
   group and run folder), under per-cell and total time limits. A failing cell does not stop
   later cells; a dead kernel ends the run with a reason.
4. :mod:`.reference` gets the expected values by running the *instructor's* notebook the
   same way, in a box of its own, before any submission runs (cached by the solution,
   library and runtime versions, in a folder no kernel can see).
5. :mod:`.score` scores each test cell: it passes if it ran without error **and** every
   value the solution recorded there is matched (:mod:`.compare`); checks (:mod:`.checks`)
   measure handed-in files in boxes of their own. :mod:`.autograde` strings steps 2-5
   together; :mod:`.results` holds what comes out (every string cleaned for writing),
   :mod:`.report` writes it (the gradebook first); :mod:`.batch` grades folders in parallel
   worker processes.

Tamper-proof checks: ``record``
-------------------------------
Asserts run inside the student's kernel and can be defeated from there (``torch.allclose =
lambda *a, **k: True``). So test cells also *record* what the student's code produced::

    from prunekit.grade import record
    scores = record("l1_scores", l1_scores(conv.weight))          # returns its argument
    record("kept", sorted(kept_channels))
    record("accuracy", acc, atol=0.02)                             # looser float tolerance

``record(key, value, *, rtol=None, atol=None, hint=None)`` -- value: Tensor / ndarray / number / bool / str /
None, or list / tuple / str-keyed dict of those. Under the grader it emits a ``display_data``
output of MIME type ``application/vnd.prunekit.record+json``; elsewhere it does nothing. The
grader compares, in its own process, against what the solution recorded in the same cell:
ints, bools and strings exactly, floats within the *solution's* ``rtol``/``atol`` (default
1e-4 / 1e-6). The expected values never enter the kernel, so they cannot be patched or read.
Give every test cell at least one record of a value the task computes.

Results the grader measures itself: checks
------------------------------------------
Some results are judged on a *file*, not a value: the design challenge (exercise 9) wants a
pruned model under a MAC budget and above an accuracy target. Its test cell saves the model
and calls ``hand_in("pruned.pt")`` (:mod:`.kernel.handin`); the cell's metadata names a check
(``"prunekit": {"check": {...}}``, :mod:`.checks`). After the run the grader copies the file
out of the box, measures it in a fresh box of its own (:mod:`.budget`: loaded with
``weights_only=True``, rebuilt by prunekit's builder, refused if masked or re-shaped) and
scores the task by that verdict alone.

Written answers graded by hand
------------------------------
nbgrader's manually graded cells (``solution`` and ``grade``, e.g. a Markdown answer with the
rubric between the solution markers) are never scored here: the result lists them with the
student's text as *needs manual grading* (0 when left as released), apart from the automatic
``score`` (:mod:`.assemble`, :mod:`.report`).

Threat model, honestly: code in the kernel controls the kernel. It can make a test cell
*look* green and forge a value it already knows, but it cannot produce a computed value it
was never shown -- so tests hold no expected values and no reference implementations
(:mod:`.contract`), and a failing hidden test shows only its exception's type and hint.
Everything outside the kernel -- solutions, cache, network, other runs, their share of CPU,
memory and disk -- the sandbox keeps out of reach.
"""

from .kernel import RECORD_MIME, hand_in, record

__all__ = ["RECORD_MIME", "hand_in", "record"]

"""Long experiments behind the lectures, run as scripts; their results are committed as JSON.

Each module is runnable from the repository root (``python -m experiments.criteria``,
``python -m experiments.recovery``, ...) and writes ``experiments/results/<name>.json``. The
lectures load those files and re-run a few of their runs live; ``tests/test_experiments.py``
re-runs a few more, so the cache cannot drift from the code. See ``experiments/README.md``.
"""

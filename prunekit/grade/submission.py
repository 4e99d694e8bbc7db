"""Reading a submitted notebook: untrusted bytes, parsed defensively, every failure the student's own.

The grader runs as a privileged user and reads files a student chose. So, before anything else:

* **only a regular file is read**: the path is opened with ``O_NOFOLLOW | O_NONBLOCK`` and
  checked with ``fstat`` on the open descriptor -- a symbolic link (to the solution, to
  ``/etc/shadow``), a FIFO (which would block the grader forever) or a device (``/dev/zero``,
  endless) is refused before a byte is read, and no check-then-open race is left;
* **size and shape are capped**: at most :data:`~prunekit.grade.limits.MAX_NOTEBOOK_BYTES`,
  UTF-8, JSON nested at most :data:`~prunekit.grade.limits.MAX_JSON_DEPTH` deep (measured on
  the bytes before parsing: a 100 KB file of 50,000 nested brackets would otherwise exhaust the
  parser's recursion), at most :data:`~prunekit.grade.limits.MAX_CELLS` cells;
* **any exception is the student's**: nbformat's validation, a cell that is a string instead of
  an object, a recursion error -- whatever goes wrong becomes a :class:`SubmissionError` with a
  message that quotes *nothing* of the file (a link's target once put the first line of
  ``/etc/shadow`` into a gradebook).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import nbformat

from . import limits as lim
from .limits import SubmissionError

_TOKENS = re.compile(rb'\\.|[\[\]{}"]', re.DOTALL)  # an escape sequence, a bracket or a quote
RESUBMIT = "submit the .ipynb file saved by Jupyter"


def read_bytes(path: Path, limit: int = lim.MAX_NOTEBOOK_BYTES) -> bytes:
    """The file's bytes, if it is a regular file of at most ``limit`` bytes (links are not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        if os.path.islink(path):
            raise SubmissionError(f"the submission is a symbolic link, not a file; {RESUBMIT}") from None
        raise SubmissionError(f"the submission cannot be opened ({err.strerror}); {RESUBMIT}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
        raise SubmissionError(f"the submission is {kind}, not a regular file; {RESUBMIT}")
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise SubmissionError(f"the notebook is larger than {limit >> 20} MiB; clear its outputs "
                              "(Edit > Clear Outputs of All Cells), save and submit it again")
    return data


def json_depth(data: bytes, cap: int = lim.MAX_JSON_DEPTH) -> int:
    """How deep the JSON in ``data`` nests (brackets inside strings do not count); stops past ``cap``."""
    depth = deepest = 0
    in_string = False
    for token in _TOKENS.findall(data):
        if len(token) == 2:  # an escape sequence: \" and \\ neither open nor close anything
            continue
        if in_string:
            in_string = token != b'"'
        elif token == b'"':
            in_string = True
        elif token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > cap:
                    return deepest
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def parse(data: bytes) -> nbformat.NotebookNode:
    """A validated version-4 notebook from the bytes, or :class:`SubmissionError` saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError(f"not a readable notebook (not UTF-8 text); {RESUBMIT}") from None
    if json_depth(data) > lim.MAX_JSON_DEPTH:
        raise SubmissionError(f"not a readable notebook (its JSON nests deeper than {lim.MAX_JSON_DEPTH} "
                              f"levels); {RESUBMIT}")
    try:
        raw = json.loads(text)
    except ValueError as err:
        where = f"line {err.lineno}, column {err.colno}" if hasattr(err, "lineno") else "somewhere"
        raise SubmissionError(f"not a readable notebook (invalid JSON at {where}); {RESUBMIT}") from None
    except RecursionError:
        raise SubmissionError(f"not a readable notebook (nested too deeply); {RESUBMIT}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cells", []), list):
        raise SubmissionError(f"not a readable notebook (no list of cells); {RESUBMIT}")
    if len(raw.get("cells", [])) > lim.MAX_CELLS:
        raise SubmissionError(f"the notebook has more than {lim.MAX_CELLS} cells; {RESUBMIT}")
    try:  # nbformat only logs what its schema finds (other editors add fields); it raises on broken cells
        return nbformat.reads(text, as_version=4)
    except Exception as err:  # noqa: BLE001 - whatever nbformat or jsonschema raises, it is this file's fault
        raise SubmissionError(f"not a valid notebook ({type(err).__name__}); {RESUBMIT}") from None


def read_submission(path: Path) -> nbformat.NotebookNode:
    """Open, check and parse a submitted notebook; any problem is a :class:`SubmissionError`."""
    return parse(read_bytes(Path(path)))

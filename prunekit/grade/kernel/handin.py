"""``hand_in(path)``: give the grader a file the notebook made, for a check outside the kernel.

Some results cannot be judged from inside the student's kernel, which the student's code
controls: a pruned model, say, whose size and accuracy the grader wants to measure itself.
The notebook saves the file and a test cell hands it in::

    save_pruned(model, "pruned.pt", architecture="vgg_small")
    hand_in("pruned.pt")

Under the grader the file is copied into the kernel's outbox (``$PRUNEKIT_OUTBOX``, a folder
bound into the sandbox); after the run the grader takes the files its checks name from there
(regular files only, never a link, size-capped) into a folder of its own
(:class:`prunekit.grade.runner.RunOptions`) and runs each check on its file in a fresh sandbox
(:func:`prunekit.grade.checks.run_check`).
Outside the grader ``hand_in`` does nothing, so notebooks stay clean when students run them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .records import GRADING_ENV

OUTBOX_ENV = "PRUNEKIT_OUTBOX"


def hand_in(path: str | os.PathLike, name: str | None = None) -> str | None:
    """Copy ``path`` into the grader's outbox as ``name`` (default: its file name).

    Returns the copy's path under the grader, None elsewhere.
    """
    name = name or Path(path).name
    if "/" in name or "\\" in name or name.startswith(".") or not name:
        raise ValueError(f"hand_in(): {name!r} is not a plain file name")
    outbox = os.environ.get(OUTBOX_ENV)
    if os.environ.get(GRADING_ENV) != "1" or not outbox:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"hand_in(): {path} is not a file; save it first")
    dest = Path(outbox) / name
    shutil.copyfile(path, dest)
    return str(dest)

"""Checks that run outside the student's kernel, on files the kernel handed in.

A test cell can only report what the kernel computed, and the kernel belongs to the student.
For results the grader must measure itself -- a pruned model's size, speed or accuracy -- the
notebook hands the file in (:func:`prunekit.grade.hand_in`) and the grader runs a *check*: a
Python module started in a fresh sandbox of its own (no network, nothing of the host but the
interpreter and the installed copy of prunekit), with the handed-in files bound read-only at
``/home/student/inbox/<name>``. The check prints one JSON document; the grader compares it
with the exercise's budget in its own process.

    result = run_check(sandbox, "prunekit.grade.checks", {"pruned.pt": path},
                       ["pruned-model", "/home/student/inbox/pruned.pt"])

This module is also such a check (``python -m prunekit.grade.checks pruned-model FILE``): it
loads a model saved by :func:`prunekit.export.save_pruned` with ``weights_only=True`` and
reports whether it is a plain model (no pruning hooks, no mask buffers) and its size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from . import sandbox as sb
from .runner import GraderError, _data_files
from .sandbox import Sandbox

MAX_OUTPUT_BYTES = 1 << 20


def run_check(box: Sandbox, module: str, inputs: dict[str, Path], args: list[str] | tuple[str, ...] = (),
              timeout: float = 300.0, memory_mb: int = 4096) -> dict:
    """Run ``python -m module *args`` in a fresh sandbox with ``inputs``; return its JSON output."""
    with tempfile.TemporaryDirectory(prefix="prunekit-check-") as tmp, sb.lease_uid(box) as uid:
        if box.boxed:
            ipc = sb.prepare_ipc(Path(tmp), uid)
            argv = (sb.limits_argv(memory_mb, int(timeout) + 10, uid is not None)
                    + sb.bwrap_argv(box, ipc, uid, _data_files(), inputs=inputs)
                    + [sb.kernel_python(box), "-m", module, *args])
            env = sb._outer_env()
        else:  # trusted mode: the same command, on the host, with the files where they are
            argv = sb.limits_argv(memory_mb, int(timeout) + 10, False) + [sys.executable, "-m", module]
            argv += [str(inputs[a[len(sb.INBOX) + 1:]]) if a.startswith(sb.INBOX + "/") else a for a in args]
            env = {**sb._outer_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        try:
            done = subprocess.run(argv, capture_output=True, timeout=timeout, env=env, cwd=tmp,
                                  start_new_session=True)
        except subprocess.TimeoutExpired as err:
            raise GraderError(f"check {module} took longer than {timeout:g} s") from err
    out = done.stdout[:MAX_OUTPUT_BYTES].decode(errors="replace")
    if done.returncode != 0:
        tail = done.stderr[-1000:].decode(errors="replace")
        raise GraderError(f"check {module} failed (exit code {done.returncode}): {tail}")
    try:
        return json.loads(out)
    except ValueError as err:
        raise GraderError(f"check {module} printed no JSON: {out[:200]!r}") from err


# ---------------------------------------------------------------- a check: is it a plain pruned model?
def pruned_model_report(path: str) -> dict:
    """Load a :func:`prunekit.export.save_pruned` file (``weights_only=True``) and describe it."""
    import torch

    from prunekit.export import load_pruned
    from prunekit.metrics import count_params

    model = load_pruned(path)
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    masks = [name for name, _ in model.named_buffers() if name.endswith("_mask")]
    originals = [name for name, _ in model.named_parameters() if name.endswith("_orig")]
    convs = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return {"plain": hooks == 0 and not masks and not originals, "params": count_params(model),
            "conv_out_channels": convs}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "pruned-model":
        print("usage: python -m prunekit.grade.checks pruned-model FILE", file=sys.stderr)
        return 2
    print(json.dumps(pruned_model_report(argv[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

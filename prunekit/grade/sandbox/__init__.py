"""The box every kernel runs in, and how the grader keeps it apart from the others.

This package is the grader's side of the sandbox: it builds the box, starts the kernel in it
and polices it while it runs. Nothing here runs in the student's kernel.

* :mod:`.box` -- bubblewrap's options: what the kernel sees (nothing of the host but the
  interpreter and an installed copy of prunekit), its uid, its run folder;
* :mod:`.launcher` -- the first program of each kernel: joins the run's control group, sets the
  hard per-process limits, executes bwrap;
* :mod:`.cgroups` -- a control group per kernel: a CPU quota and memory for the whole tree;
* :mod:`.watchdog` -- what the grader watches from outside while a kernel runs: memory, and,
  where there are no cgroups, the CPU share and the run folder's size;
* :mod:`.install` -- the copy of prunekit the box imports.

The programs the grader runs *in* a box on its own behalf (a check such as
:mod:`prunekit.grade.budget`) see the same box.
"""

from ..limits import SandboxUnavailable
from .box import (DATA, HOME, INBOX, ISOLATION, MODES, OUTBOX, RUN_TOKEN, SITE, UID_BASE, Sandbox, bwrap_argv,
                  control_group, data_files, default_state_dir, kernel_env, kernel_python, launch_argv, lease_uid,
                  outer_env, prepare_ipc, prepare_outbox, resolve, resolve_limits, run_folder,
                  unboxed_workdir)

__all__ = ["DATA", "HOME", "INBOX", "ISOLATION", "MODES", "OUTBOX", "RUN_TOKEN", "SITE", "UID_BASE", "Sandbox",
           "SandboxUnavailable", "bwrap_argv", "control_group", "data_files", "default_state_dir", "kernel_env",
           "kernel_python", "launch_argv", "lease_uid", "outer_env", "prepare_ipc", "prepare_outbox", "resolve",
           "resolve_limits", "run_folder", "unboxed_workdir"]

"""Which CPU kernels a recorded value was computed with: the machine's part of the reference key.

PyTorch picks its compute kernels when it starts, from what the CPU can do: AVX-512 on one
node, AVX2 on the next, NEON on Apple silicon and ARM servers (``torch.backends.cpu.
get_cpu_capability()``); oneDNN and MKL choose their own code paths the same way (MKL also by
vendor). The kernels sum in different orders, so a few epochs of training end a little apart
in the last digits -- more than a recorded value's tolerance allows. Expected values computed
on an AVX-512 node and reused on an AVX2 node (a job array on a mixed cluster sharing one
cache) would then cost honest students their points.

So the reference cache (:mod:`prunekit.grade.reference`) is keyed by :func:`cpu_identity` too:
the architecture, the CPU's vendor, model and feature flags, and the environment variables that
override the choice (:data:`KERNEL_SELECTION`). Those variables are passed on into every kernel
(:func:`prunekit.grade.sandbox.kernel_env`), so the reference run and the students' runs pick the
same kernels: ``ATEN_CPU_CAPABILITY=default``, say, grades with torch's scalar kernels.

Read from ``/proc/cpuinfo`` (Linux) and :mod:`platform`: the grader never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path

# Environment variables that change which kernels torch, oneDNN and MKL run.
KERNEL_SELECTION = ("ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")

# /proc/cpuinfo fields that say which CPU it is and what it can do (x86, then ARM); microcode,
# clock speed and cache sizes change no result and are left out.
IDENTITY_FIELDS = ("vendor_id", "cpu family", "model", "model name", "flags",
                   "CPU implementer", "CPU architecture", "CPU variant", "CPU part", "Features")


def cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The identity fields of the first processor listed in ``/proc/cpuinfo``'s text (flags sorted)."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if found:  # the end of the first processor's block
                break
            continue
        key, _, value = line.partition(":")
        key = key.strip()
        if key in IDENTITY_FIELDS and key not in found:
            value = value.strip()
            found[key] = " ".join(sorted(value.split())) if key in ("flags", "Features") else value
    return found


def kernel_selection(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The kernel-choosing variables set in ``environ`` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in KERNEL_SELECTION if name in environ}


def cpu_identity(cpuinfo: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """One line naming this machine's CPU kernel set: arch, CPU fields and override variables.

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None; where there is none, as on
    macOS, :func:`platform.processor` stands in for the model).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = cpu_fields(cpuinfo) or {"processor": platform.processor()}
    parts = [f"arch={platform.machine()}"]
    parts += [f"{key}={value}" for key, value in sorted(fields.items())]
    parts += [f"{key}={value}" for key, value in sorted(kernel_selection(environ).items())]
    return ";".join(parts)


def cpu_tag(identity: str | None = None) -> str:
    """A short name for :func:`cpu_identity` (8 hex digits), for cache file names."""
    return hashlib.sha256((identity or cpu_identity()).encode()).hexdigest()[:8]

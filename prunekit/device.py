"""Where the work runs: the CPU or a GPU -- chosen once, then inferred everywhere.

A course usually starts with ``device = "cuda" if torch.cuda.is_available() else "cpu"``.
prunekit follows one rule from there on: **a function that is given a model runs on the
model's device** (the device of its parameters) and moves every batch it reads to it. So you
move the model once -- ``model.to(DEVICE)`` -- and then train, evaluate, score, prune, measure
and fold it without naming the device again. Only functions that have no model to ask take a
device: :func:`default_device` itself, and loading a checkpoint
(``prunekit.zoo.load_pretrained(name, device=...)``, ``prunekit.export.load_pruned``).

The data loaders stay on the CPU (a GPU cannot hold a data set it is given batch by batch);
:func:`to_device` copies each batch just before it is used, with ``non_blocking=True`` so a
pinned-memory batch is copied while the GPU still works on the previous one.

Timing a GPU is different from timing a CPU: kernels are *queued* and the Python call returns
before the GPU has finished. :func:`synchronize` waits for the queue; see
:func:`prunekit.metrics.measure_latency` for why a GPU timing needs it (or CUDA events).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ENV", "default_device", "device_of", "to_device", "synchronize"]

#: Environment variable that overrides :func:`default_device` (``cpu``, ``cuda``, ``cuda:1``,
#: ``mps``): how ``make test-gpu`` runs the lectures on a GPU and ``make test`` on the CPU.
ENV = "PRUNEKIT_DEVICE"


def default_device() -> torch.device:
    """``$PRUNEKIT_DEVICE`` if set, else ``cuda`` when a CUDA GPU is usable, else ``cpu``.

    A device that is asked for but missing is an error, not a silent fall-back to the CPU:
    a "GPU" run that quietly ran on the CPU would report the wrong timings."""
    wanted = os.environ.get(ENV, "").strip()
    if not wanted:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(wanted)
    except RuntimeError as e:
        raise ValueError(f"{ENV}={wanted!r} is not a device name (use cpu, cuda, cuda:1, mps)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"{ENV}={wanted!r} but torch.cuda.is_available() is False: this torch "
                           f"build ({torch.__version__}) or machine has no usable CUDA GPU")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"{ENV}={wanted!r} but this machine has no usable MPS device")
    return device


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a model without
    tensors. A model split over several devices is the caller's business: prunekit moves
    inputs to the device of the first parameter, where the forward pass starts."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it (also inside tuples, lists and dicts) on ``device``.
    A tensor already there is returned as it is: on the CPU this costs nothing."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def synchronize(device: torch.device | str) -> None:
    """Wait until every kernel queued on ``device`` has finished (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()

"""How big and how fast is a model? Parameters, MACs, bytes and latency.

MACs vs FLOPs: one multiply-accumulate (``a += w * x``) is one MAC and, by the usual
convention, two FLOPs. Papers mix the two; prunekit reports MACs, and
``torch.utils.flop_counter`` reports FLOPs, so ``count_macs = flops // 2``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs", "model_size_bytes", "Latency", "measure_latency",
           "ModelSummary", "summary"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example_input`` (its batch size counts).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts the matrix-multiply
    work of convolutions, linear layers and attention (``2 * MACs`` FLOPs each) and ignores
    the cheap element-wise ops (BatchNorm, ReLU, adds, pooling) -- the usual convention in
    pruning papers. Attention is run on its plain-math path while counting: the fused CPU
    kernels (``nn.MultiheadAttention``'s fast path, flash attention) are invisible to it.
    """
    was_training = model.training
    fast_path = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), \
                FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
        model.train(was_training)
    return counter.get_total_flops() // 2


# ----------------------------------------------------------------------------- size
def model_size_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (BN running statistics included): the size of the
    model's ``state_dict`` in memory, and within a few KB of its ``torch.save`` file.

    Channel pruning shrinks this for real, because the tensors themselves get smaller;
    unstructured zero-masks do not (a zero costs as many bytes as any other float)."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}  # shared tensors once
    return sum(t.numel() * t.element_size() for t in tensors.values())


# ----------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Latency:
    """Wall-clock time of one forward pass: median and inter-quartile range (IQR) over
    ``repeats`` timed runs. The median ignores the odd slow run (another process, a page
    fault); the IQR says how much to trust it -- compare two models only when their
    difference is clearly larger than their IQRs."""

    median_ms: float
    iqr_ms: float
    threads: int
    batch: int
    repeats: int

    def __str__(self) -> str:
        s = "" if self.threads == 1 else "s"
        return (f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms), batch {self.batch}, "
                f"{self.threads} thread{s}")


def measure_latency(model: nn.Module, example_input: Tensor, threads: int = 1, repeats: int = 30,
                    warmup: int = 5) -> Latency:
    """Time ``model(example_input)`` in eval mode, without autograd, on ``threads`` CPU threads.

    Built on ``torch.utils.benchmark.Timer``, which sets the torch thread count for the
    measurement and restores it afterwards, and handles CUDA synchronisation. ``warmup``
    untimed runs first let the allocator and kernel caches settle; then ``repeats`` runs are
    timed one by one so their spread can be reported.

    Fix ``threads`` when comparing models: on a shared machine a multi-threaded time mostly
    measures the neighbours. The course uses 1 thread (and batch 1 and 64)."""
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, threads >= 1; got {repeats}, {warmup}, {threads}")
    was_training = model.training
    model.eval()
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": example_input},
                            num_threads=threads)
    try:
        with torch.no_grad():
            if warmup:
                timer.timeit(warmup)
            times = [timer.timeit(1).median for _ in range(repeats)]
    finally:
        model.train(was_training)
    q1, median, q3 = np.percentile(np.asarray(times) * 1e3, [25, 50, 75])
    return Latency(float(median), float(q3 - q1), threads, int(example_input.shape[0]), repeats)


# ----------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class ModelSummary:
    """One row of numbers about a model; prints as a table, renders as HTML in Jupyter."""

    params: int
    macs: int
    size_bytes: int
    latency: Latency | None = None
    accuracy: float | None = None
    correct: int | None = None
    total: int | None = None

    def as_dict(self) -> dict[str, object]:
        """Human-readable fields, in display order (latency/accuracy only when measured)."""
        row: dict[str, object] = {
            "params": f"{self.params:,}",
            "MACs": f"{self.macs / 1e6:,.2f} M",
            "size": f"{self.size_bytes / 1e6:.3f} MB",
        }
        if self.latency is not None:
            row["latency"] = f"{self.latency.median_ms:.3f} ms ± {self.latency.iqr_ms:.3f} (IQR), " \
                             f"batch {self.latency.batch}, {self.latency.threads} thr"
        if self.accuracy is not None:
            row["accuracy"] = f"{self.accuracy:.2%} ({self.correct}/{self.total})"
        return row

    def __str__(self) -> str:
        rows = self.as_dict()
        width = max(map(len, rows))
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                        f"<td style='text-align:right'>{html.escape(str(v))}</td></tr>"
                        for k, v in self.as_dict().items())
        return f"<table>{cells}</table>"


def summary(model: nn.Module, example_input: Tensor, loader: Iterable | None = None,
            latency: bool = True, threads: int = 1) -> ModelSummary:
    """Parameters, MACs, bytes, and -- optionally -- latency and accuracy, in one object.

    ``latency=False`` skips timing: timings differ run to run, so a notebook whose printed
    output is compared automatically should leave them out. With a ``loader``, accuracy is
    measured by :func:`prunekit.train.evaluate`."""
    from .train import evaluate  # local import: metrics stays usable without the training code

    result = evaluate(model, loader) if loader is not None else None
    return ModelSummary(
        params=count_params(model),
        macs=count_macs(model, example_input),
        size_bytes=model_size_bytes(model),
        latency=measure_latency(model, example_input, threads=threads) if latency else None,
        accuracy=result.accuracy if result else None,
        correct=result.correct if result else None,
        total=result.total if result else None,
    )

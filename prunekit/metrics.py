"""How big and how fast is a model? Parameters, MACs, bytes and latency.

MACs vs FLOPs: one multiply-accumulate (``a += w * x``) is one MAC and, by the usual
convention, two FLOPs. Papers mix the two; prunekit reports MACs, and
``torch.utils.flop_counter`` reports FLOPs, so ``count_macs = flops // 2``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .device import device_of, synchronize, to_device

__all__ = ["count_params", "count_macs", "model_size_bytes", "Latency", "CLOCKS", "latency_samples",
           "measure_latency", "compare_latency", "PairedComparison", "paired_comparison",
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
    Runs on the model's device; on the ``meta`` device it counts without computing anything.
    """
    example_input = to_device(example_input, device_of(model))
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
    difference is clearly larger than their IQRs.

    Both are times of one call on a whole batch; :attr:`per_image_ms` and
    :attr:`per_image_iqr_ms` divide both by the batch size (never mix a per-image median with
    a per-batch spread)."""

    median_ms: float
    iqr_ms: float
    threads: int
    batch: int
    repeats: int
    device: str = "cpu"
    clock: str = "wall"
    round_medians_ms: tuple[float, ...] = ()   # per round of compare_latency, in order

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch

    @property
    def per_image_iqr_ms(self) -> float:
        return self.iqr_ms / self.batch

    def __str__(self) -> str:
        s = "" if self.threads == 1 else "s"
        where = "" if self.device == "cpu" else f", {self.device}"
        clock = "" if self.clock == "wall" else f", {self.clock} clock"
        return (f"{self.median_ms:.3f} ms (IQR {self.iqr_ms:.3f} ms), batch {self.batch}, "
                f"{self.threads} thread{s}{where}{clock}")


#: What a millisecond is. ``wall``: elapsed time (``time.perf_counter``), the definition of
#: latency. ``cpu``: CPU time of the calling thread (``time.thread_time``). With one CPU
#: thread the whole forward pass runs in the calling thread (PyTorch, its compiled code and
#: ONNX Runtime with one intra-op thread alike), so on a quiet machine the two agree; on a
#: shared one the wall clock also counts the time the OS gave the core to another process,
#: the CPU clock does not -- it estimates what the quiet machine's wall clock would show.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _check_timing_args(repeats: int, warmup: int, threads: int, clock: str = "wall") -> None:
    if repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, threads >= 1; got {repeats}, {warmup}, {threads}")
    if clock not in CLOCKS:
        raise ValueError(f"clock={clock!r}: use one of {sorted(CLOCKS)}")
    if clock == "cpu" and threads != 1:
        raise ValueError("clock='cpu' measures the calling thread only: use threads=1")


def _cuda_times_ms(model: nn.Module, x: Tensor, repeats: int, warmup: int) -> list[float]:
    """CUDA: the call returns as soon as the kernels are *queued*, so a CPU clock around it
    measures the launch, not the work. A CUDA event is a timestamp written by the GPU itself
    when the queue reaches it: ``start.elapsed_time(end)`` is the GPU time between two of them.
    The warm-up also lets cuDNN pick its kernels (and lazy CUDA initialisation happen)."""
    for _ in range(warmup):
        model(x)
    torch.cuda.synchronize(x.device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        model(x)
        end.record()
        end.synchronize()               # wait for this run only
        times.append(start.elapsed_time(end))
    return times


def _clock_times_ms(model: nn.Module, x: Tensor, repeats: int, warmup: int,
                    clock: str) -> list[float]:
    """The CPU (and any device but CUDA, e.g. Apple's MPS): a clock read around each call
    (``time.perf_counter`` is what ``torch.utils.benchmark.Timer`` uses), one call per timed
    run (``Timer.timeit`` adds two warm-up calls to every measurement, which would triple the
    cost of timing runs one by one). On a device that queues its work, a synchronisation
    before and after each run makes the clock see the work, not the launch."""
    now = CLOCKS[clock]
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        synchronize(x.device)
        t = now()
        model(x)
        synchronize(x.device)
        times.append((now() - t) * 1e3)
    return times


def latency_samples(model: nn.Module, example_input: Tensor, threads: int = 1, repeats: int = 30,
                    warmup: int = 5, clock: str = "wall") -> list[float]:
    """Milliseconds of each of ``repeats`` timed calls ``model(example_input)``, after
    ``warmup`` untimed ones, in eval mode without autograd, on the model's device (the input
    is moved there first), by ``clock`` (see :data:`CLOCKS`; a CUDA GPU is always timed by
    its own events). The building block of :func:`measure_latency` and :func:`compare_latency`."""
    _check_timing_args(repeats, warmup, threads, clock)
    device = device_of(model)
    x = to_device(example_input, device)
    was_training = model.training
    model.eval()
    try:   # threads: the CPU's work, or on a GPU the CPU side of it (launching kernels)
        with torch.no_grad(), _torch_threads(threads):
            if device.type == "cuda":
                return _cuda_times_ms(model, x, repeats, warmup)
            return _clock_times_ms(model, x, repeats, warmup, clock)
    finally:
        model.train(was_training)


def _as_latency(times_ms: list[float], threads: int, batch: int, device: torch.device,
                clock: str, rounds: tuple[float, ...] = ()) -> Latency:
    q1, median, q3 = np.percentile(np.asarray(times_ms), [25, 50, 75])
    clock = "cuda events" if device.type == "cuda" else clock
    return Latency(float(median), float(q3 - q1), threads, batch, len(times_ms), str(device), clock,
                   rounds)


def measure_latency(model: nn.Module, example_input: Tensor, threads: int = 1, repeats: int = 30,
                    warmup: int = 5, clock: str = "wall") -> Latency:
    """Time ``model(example_input)`` in eval mode, without autograd, on the model's device.

    The rules (see lecture 08): ``warmup`` untimed runs first let the allocator and kernel
    caches settle (on a GPU also cuDNN's choice of kernels); then ``repeats`` runs are timed
    one by one so their spread can be reported. On the CPU the work runs on ``threads``
    threads (set for the measurement and restored after); on a CUDA GPU each run is timed
    by CUDA events, because a Python clock would only see the kernel launches (see
    :func:`latency_samples`).

    Fix ``threads`` when comparing models: on a shared machine a multi-threaded time mostly
    measures the neighbours. The course uses 1 thread (and batch 1 and 64); on a machine
    others use too, ``clock="cpu"`` times the working thread's CPU time (:data:`CLOCKS`).
    To compare several models, prefer :func:`compare_latency`, which interleaves them."""
    times = latency_samples(model, example_input, threads, repeats, warmup, clock)
    return _as_latency(times, threads, int(example_input.shape[0]), device_of(model), clock)


def compare_latency(models: Mapping[str, nn.Module], example_input: Tensor, threads: int = 1,
                    rounds: int = 5, repeats: int = 10, warmup: int = 3,
                    clock: str = "wall") -> dict[str, Latency]:
    """Latency of several models on the same input, measured in interleaved rounds.

    Timing model A for a minute and then model B compares A's minute with B's: if a
    neighbour starts a job (or the CPU's clock drops as it heats up) in between, B looks
    slower for nothing. Here every round times every model (``repeats`` runs each), in an
    order that rotates from round to round, so a slow spell hits all models alike and no
    model always runs right after a bigger one. Each result pools the ``rounds * repeats``
    runs of its model: the median, and an IQR that includes the drift between rounds.
    Every model is warmed up (``warmup`` runs) before the first round; each runs on its
    own device, the same way as :func:`measure_latency` (``clock`` as there).
    """
    _check_timing_args(repeats, warmup, threads, clock)
    if rounds < 1 or not models:
        raise ValueError(f"need rounds >= 1 and at least one model; got {rounds}, {len(models)}")
    names = list(models)
    for name in names:
        latency_samples(models[name], example_input, threads, 1, warmup, clock)
    times: dict[str, list[float]] = {name: [] for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            runs = latency_samples(models[name], example_input, threads, repeats, 0, clock)
            times[name] += runs
            per_round[name].append(float(np.median(runs)))
    batch = int(example_input.shape[0])
    return {name: _as_latency(times[name], threads, batch, device_of(models[name]), clock,
                              tuple(per_round[name])) for name in names}


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A, round by round (both from one :func:`compare_latency` call).

    Each round timed A and B back to back, so the ratio of their round medians is untouched
    by anything slower than a round (a neighbour's job, the clock speed). ``slower`` counts
    the rounds in which B was slower; under "no difference" that count is a fair coin's, and
    the two-sided binomial (sign) test turns it into ``p_value``: small means a real
    difference, however noisy the single runs were."""

    ratio: float           # median over rounds of B / A
    slower: int
    rounds: int
    p_value: float

    def __str__(self) -> str:
        return (f"B/A = {self.ratio:.3f} (median over rounds); B slower in {self.slower} of "
                f"{self.rounds} rounds, sign test p = {self.p_value:.2g}")


def paired_comparison(a: Latency, b: Latency) -> PairedComparison:
    """Sign test of B against A over the rounds of :func:`compare_latency` (see
    :class:`PairedComparison`)."""
    from scipy.stats import binomtest

    if not a.round_medians_ms or len(a.round_medians_ms) != len(b.round_medians_ms):
        raise ValueError("paired_comparison needs two results of the same compare_latency call")
    ratios = [rb / ra for ra, rb in zip(a.round_medians_ms, b.round_medians_ms)]
    slower, n = sum(r > 1 for r in ratios), len(ratios)
    return PairedComparison(float(np.median(ratios)), slower, n, float(binomtest(slower, n).pvalue))


class _torch_threads:
    """Context manager: torch's intra-op thread count set to ``n`` inside, restored after."""

    def __init__(self, n: int) -> None:
        self.n, self.saved = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.saved)


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

"""Benchmark: prunekit against Torch-Pruning, same models, same ratio, same run.

For every model it prunes 50% of the channels of every prunable layer (uniform ratio, L1
filter magnitude, each group ranked on its own: "local" scope) with both libraries and
reports, side by side:

* time to prune -- building the dependency graph, scoring, planning and cutting, i.e. one
  library call on a fresh copy of the model (median of a few repeats after one warm-up);
* parameters and MACs after / before (``prunekit.metrics``, the same counter for both);
* CPU latency after / before at 1 thread, batch 1 and a larger batch, medians after
  warm-up (``torch.utils.benchmark``; with ``--clock wall`` exactly
  ``prunekit.metrics.measure_latency``). By default both times are *CPU* time of the one
  working thread, which on a shared machine is what a quiet machine's wall clock would
  show (see ``CLOCKS``). The original and both pruned models are timed in interleaved,
  rotating rounds, so a busy neighbour slows all three alike instead of skewing one;
* "same arch": whether the two pruned models have identical layer shapes (every Conv,
  BatchNorm and Linear), i.e. whether the libraries agree on what 50% uniform means.

Run from the repository root (needs ``pip install torch-pruning``, the ``bench`` extra)::

    python benchmarks/bench_prune.py                      # all models, 80 CPU-seconds
    python benchmarks/bench_prune.py --quick --models vgg_small     # a smoke run, ~7 CPU-s
    python benchmarks/bench_prune.py --out table.md --clock wall    # on a quiet machine
    python benchmarks/bench_prune.py --models resnet56 --profile prunekit  # where time goes

Torch-Pruning: Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent))  # archs.py, when run as a script
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # prunekit from this checkout

import archs  # noqa: E402
from prunekit import models as pk_models  # noqa: E402
from prunekit.metrics import count_macs, count_params, measure_latency  # noqa: E402

RATIO = 0.5


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class BenchModel:
    """A model to benchmark: how to build it, its input shape, and the batch sizes timed."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    batches: tuple[int, int]


MODELS: dict[str, BenchModel] = {
    "vgg_small": BenchModel(lambda: pk_models.vgg_small(in_channels=1), (1, 28, 28), (1, 64)),
    "resnet56": BenchModel(lambda: pk_models.resnet56(in_channels=3), (3, 32, 32), (1, 64)),
    "vgg16_bn": BenchModel(lambda: archs.vgg16_bn(in_channels=3), (3, 32, 32), (1, 64)),
    # A 224x224 batch of 64 takes seconds per forward pass at 1 thread; 8 shows the trend.
    "resnet18": BenchModel(archs.resnet18, (3, 224, 224), (1, 8)),
    "mobilenet_v2": BenchModel(archs.mobilenet_v2, (3, 224, 224), (1, 8)),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)  # the same weights for both libraries, and in every run
    return MODELS[name].build().eval()


def final_classifier(model: nn.Module) -> nn.Linear:
    """The last Linear layer: its outputs are the classes, which must never be pruned."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to protect")
    return linears[-1]


# ----------------------------------------------------------------------------- the two libraries
def prune_prunekit(model: nn.Module, example: Tensor, ratio: float) -> nn.Module:
    """prunekit: one call. ``inplace=True`` because the benchmark already hands it a fresh
    copy, and Torch-Pruning also cuts in place: the copy is not part of pruning."""
    import prunekit

    return prunekit.prune(model, example, ratio=ratio, importance="l1", scope="local",
                          inplace=True).model


def prune_torch_pruning(model: nn.Module, example: Tensor, ratio: float) -> nn.Module:
    """Torch-Pruning 1.x: build the pruner (this traces the dependency graph), then step.

    ``MagnitudeImportance(p=1)`` with its defaults scores a channel by the mean L1 norm
    over every layer of its group; in local scope only the channel counts matter for the
    comparison below, and those do not depend on how channels are scored."""
    import torch_pruning as tp

    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
    pruner = pruner_cls(model, example, importance=tp.importance.MagnitudeImportance(p=1),
                        pruning_ratio=ratio, global_pruning=False,
                        ignored_layers=[final_classifier(model)])
    pruner.step()
    return model


PRUNERS: dict[str, Callable[[nn.Module, Tensor, float], nn.Module]] = {
    "prunekit": prune_prunekit,
    "Torch-Pruning": prune_torch_pruning,
}


def available_pruners() -> dict[str, Callable[[nn.Module, Tensor, float], nn.Module]]:
    """The libraries that import here; a missing one is reported, not fatal."""
    found = {}
    for label, module in (("prunekit", "prunekit"), ("Torch-Pruning", "torch_pruning")):
        try:
            lib = __import__(module)
            if module == "prunekit" and not hasattr(lib, "prune"):
                raise ImportError("this prunekit has no prune()")
            found[label] = PRUNERS[label]
        except ImportError as err:
            print(f"# skipping {label}: {err}", file=sys.stderr)
    return found


# ----------------------------------------------------------------------------- measurements
def time_to_prune(prune: Callable[[nn.Module, Tensor, float], nn.Module], original: nn.Module,
                  example: Tensor, repeats: int, clock: str) -> tuple[float, nn.Module]:
    """Median ms of ``prune`` on fresh deep copies (the copy itself untimed),
    after one untimed warm-up call (first-use costs: lazy imports, fx, allocator)."""
    prune(copy.deepcopy(original), example, RATIO)
    times, pruned = [], original
    for _ in range(repeats):
        model = copy.deepcopy(original)
        start = CLOCKS[clock]()
        pruned = prune(model, example, RATIO)
        times.append((CLOCKS[clock]() - start) * 1e3)
    return statistics.median(times), pruned.eval()


#: What a "millisecond" is. ``wall``: elapsed time, the definition of latency, right on a
#: quiet machine. ``cpu``: CPU time of the one thread doing the work (``time.thread_time``).
#: With 1 torch thread the whole forward pass runs in the calling thread, so on a quiet machine
#: the two agree; on a shared one the wall clock also counts the time the OS gave the core to
#: someone else (we measured 4x for ResNet-18 at load 10 on 2 cores), the CPU clock does not.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def latency_ms(model: nn.Module, x: Tensor, repeats: int, clock: str,
               budget_s: float = 0.1) -> float:
    """Median ms of ``model(x)`` at 1 thread after a warm-up run. The wall clock is exactly
    ``prunekit.metrics.measure_latency``; the CPU clock is the same ``torch.utils.benchmark``
    Timer with ``timer=time.thread_time`` (measure_latency has no clock argument).

    Sub-millisecond models are noisy, and cheap to repeat: at least ``repeats`` runs, more
    (up to 100) while they fit in ``budget_s``."""
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=1,
                            timer=CLOCKS[clock])
    with torch.no_grad():
        first = timer.timeit(1).median  # also the warm-up
    repeats = min(100, max(repeats, int(budget_s / max(first, 1e-6))))
    if clock == "wall":
        return measure_latency(model, x, threads=1, repeats=repeats, warmup=1).median_ms
    with torch.no_grad():
        return statistics.median(timer.timeit(1).median for _ in range(repeats)) * 1e3


def interleaved_latency(variants: dict[str, nn.Module], example: Tensor, rounds: int,
                        repeats: int, clock: str) -> dict[str, float]:
    """Median ms per forward pass of each model, measured round-robin: ``rounds`` rounds of
    ``repeats`` timed runs each, reporting the median of the per-round medians. Round-robin
    means a neighbour's burst of work slows all variants alike instead of skewing one, and
    rotating the order means no model is always timed right after a bigger one."""
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate: no fixed "first"
            per_round[name].append(latency_ms(variants[name], example, repeats, clock))
    return {name: statistics.median(ms) for name, ms in per_round.items()}


def layer_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Every Conv/BN/Linear by name -> its channel counts: two pruned models with equal
    shapes here have the same architecture (and the same parameter count)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            shapes[name] = (m.in_channels, m.out_channels, m.groups)
        elif isinstance(m, nn.Linear):
            shapes[name] = (m.in_features, m.out_features)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            shapes[name] = (m.num_features,)
    return shapes


@dataclass
class Row:
    """One line of the table: the original model or one library's pruned model."""

    model: str
    library: str
    params: int
    macs: int
    latency_ms: dict[int, float]
    prune_ms: float | None = None
    same_arch: bool | None = None


def bench_model(name: str, pruners: dict, prune_repeats: int, rounds: int, repeats: int,
                clock: str) -> list[Row]:
    """Prune one model with every library, then measure all versions side by side."""
    spec = MODELS[name]
    original = build(name)
    example = torch.randn(1, *spec.input_shape)
    variants: dict[str, nn.Module] = {"original": original}
    prune_ms: dict[str, float] = {}
    for label, prune in pruners.items():
        prune_ms[label], variants[label] = time_to_prune(prune, original, example,
                                                              prune_repeats, clock)

    latency: dict[str, dict[int, float]] = {label: {} for label in variants}
    for batch in spec.batches:
        x = torch.randn(batch, *spec.input_shape)
        for label, ms in interleaved_latency(variants, x, rounds, repeats, clock).items():
            latency[label][batch] = ms

    reference = layer_shapes(variants["Torch-Pruning"]) if "Torch-Pruning" in variants else None
    rows = []
    for label, model in variants.items():
        same = None
        if label not in ("original", "Torch-Pruning") and reference is not None:
            same = layer_shapes(model) == reference
        rows.append(Row(name, label, count_params(model), count_macs(model, example),
                        latency[label], prune_ms.get(label), same))
    return rows


# ----------------------------------------------------------------------------- report
def markdown_table(rows: list[Row]) -> str:
    """Original rows give absolute numbers; pruned rows give after / before ratios."""
    head = ("| model | input | library | time to prune (ms) | params | MACs "
            "| latency b=1 | latency b=N | same arch as TP |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    base: dict[str, Row] = {}
    for r in rows:
        spec = MODELS[r.model]
        b1, bn = spec.batches
        shape = "x".join(map(str, spec.input_shape))
        if r.library == "original":
            base[r.model] = r
            lines.append(f"| {r.model} | {shape} | original | - | {r.params / 1e6:.3f} M "
                         f"| {r.macs / 1e6:.1f} M | {r.latency_ms[b1]:.2f} ms "
                         f"| {r.latency_ms[bn]:.1f} ms (N={bn}) | - |")
            continue
        o = base[r.model]
        same = "-" if r.same_arch is None else ("yes" if r.same_arch else "**no**")
        lines.append(
            f"| {r.model} | {shape} | {r.library} | {r.prune_ms:.1f} "
            f"| x{r.params / o.params:.3f} | x{r.macs / o.macs:.3f} "
            f"| {r.latency_ms[b1]:.2f} ms (x{r.latency_ms[b1] / o.latency_ms[b1]:.2f}) "
            f"| {r.latency_ms[bn]:.1f} ms (x{r.latency_ms[bn] / o.latency_ms[bn]:.2f}) | {same} |")
    return "\n".join(lines)


def comparison_lines(rows: list[Row]) -> list[str]:
    """prunekit / Torch-Pruning ratios per model: the acceptance numbers."""
    by = {(r.model, r.library): r for r in rows}
    out = []
    for name in dict.fromkeys(r.model for r in rows):
        pk, tp = by.get((name, "prunekit")), by.get((name, "Torch-Pruning"))
        if pk is None or tp is None:
            continue
        b1, bn = MODELS[name].batches
        out.append(
            f"- {name}: prune time prunekit/TP = {pk.prune_ms / tp.prune_ms:.2f}; latency "
            f"prunekit/TP = {pk.latency_ms[b1] / tp.latency_ms[b1]:.2f} (b=1), "
            f"{pk.latency_ms[bn] / tp.latency_ms[bn]:.2f} (b={bn}); params "
            f"{'equal' if pk.params == tp.params else f'{pk.params} vs {tp.params}'}; "
            f"same arch: {'yes' if pk.same_arch else 'NO'}")
    return out


def environment() -> str:
    try:
        tp_version = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        tp_version = "not installed"
    return (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{os.cpu_count()} CPU cores ({platform.machine()}), 1 torch thread, "
            f"torch {torch.__version__}, torch-pruning {tp_version}, "
            f"Python {platform.python_version()}")


def profile_pruning(name: str, prune: Callable[[nn.Module, Tensor, float], nn.Module],
                    top: int) -> None:
    """Where does the time to prune go? cProfile of one call (after a warm-up call)."""
    import cProfile
    import pstats

    original = build(name)
    example = torch.randn(1, *MODELS[name].input_shape)
    prune(copy.deepcopy(original), example, RATIO)
    model = copy.deepcopy(original)
    profiler = cProfile.Profile()
    profiler.runcall(prune, model, example, RATIO)
    print(f"## {name}")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                   metavar="NAME", help=f"models to run (default: all of {', '.join(MODELS)})")
    p.add_argument("--quick", action="store_true", help="fewer repeats: a smoke run, noisier")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--clock", choices=list(CLOCKS), default="cpu",
                   help="cpu (default): CPU time of the working thread, robust on a shared "
                        "machine; wall: elapsed time, for a quiet machine")
    p.add_argument("--profile", choices=list(PRUNERS),
                   help="instead of the table, cProfile one pruning call of this library per model")
    p.add_argument("--profile-top", type=int, default=25, metavar="N",
                   help="functions to list with --profile (by cumulative time; default 25)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prune_repeats, rounds, repeats = (2, 2, 3) if args.quick else (5, 3, 5)
    pruners = available_pruners()
    if not pruners:
        sys.exit("neither prunekit.prune nor torch_pruning is importable; nothing to compare")
    torch.set_num_threads(1)  # pruning time too: same conditions for both libraries
    if args.profile and args.profile not in pruners:
        sys.exit(f"--profile {args.profile}: that library does not import here")
    if args.profile:
        for name in args.models:
            profile_pruning(name, pruners[args.profile], args.profile_top)
        return
    start = time.perf_counter()
    rows: list[Row] = []
    for name in args.models:
        t0 = time.perf_counter()
        rows += bench_model(name, pruners, prune_repeats, rounds, repeats, args.clock)
        print(f"# {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    command = "python benchmarks/bench_prune.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = "\n".join([
        f"Pruning ratio {RATIO}, uniform, L1, local scope; {args.clock} clock. {environment()}.",
        f"Command: `{command.strip()}` ({time.perf_counter() - start:.0f} s).", "",
        markdown_table(rows), "", *comparison_lines(rows)])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: how much of a pruned model's MAC reduction each runtime turns into speed.

For every model it prunes 50% of the channels of every group (L1, local) and times the dense
and the pruned model in each runtime, at batch 1 and a larger batch:

* ``eager``            -- plain PyTorch, one Python call per layer;
* ``BN folded``        -- the same after :func:`prunekit.fold.fold_batchnorm`;
* ``channels-last``    -- weights (and so activations) in NHWC memory layout;
* ``torch.compile``    -- TorchInductor (C++ on a CPU, Triton on a GPU), ``dynamic=False``:
  one compilation per input shape, not timed (its time is reported separately);
* ``ONNX Runtime``     -- :func:`prunekit.deploy.export_onnx` + :class:`~prunekit.deploy.OnnxRuntimeModel`
  (CPU execution provider; the CUDA one where ``onnxruntime-gpu`` provides it).

All variants of one (model, batch) are timed in the same interleaved, rotating rounds
(:func:`prunekit.metrics.compare_latency`), so a busy spell of the machine hits them alike.
The table gives dense ms, pruned ms, the latency ratio dense / pruned and that ratio as a
fraction of the MAC ratio (the ideal). On a machine with a CUDA GPU the same table is
produced for the GPU (``--device cuda``; ``cpu,cuda`` for both).

Run from the repository root::

    python benchmarks/bench_deploy.py                          # every model, this machine's devices
    python benchmarks/bench_deploy.py --quick --models vgg_small --no-compile   # smoke run, ~30 s
    python benchmarks/bench_deploy.py --device cuda --out gpu.md               # on a GPU machine

The committed tables and the machines they come from are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import copy
import datetime
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # archs.py, when run as a script
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # prunekit from this checkout

import archs  # noqa: E402
from machine import cpu_name  # noqa: E402
import prunekit  # noqa: E402
from prunekit import models as pk_models  # noqa: E402
from prunekit.deploy import OnnxRuntimeModel, export_onnx, max_abs_error  # noqa: E402
from prunekit.device import default_device  # noqa: E402
from prunekit.fold import fold_batchnorm  # noqa: E402
from prunekit.metrics import compare_latency, count_macs  # noqa: E402

RATIO = 0.5
MODELS = {  # name: (builder, input shape, batches)
    "vgg_small": (lambda: pk_models.vgg_small(in_channels=1), (1, 28, 28), (1, 64)),
    "resnet56": (lambda: pk_models.resnet56(in_channels=3), (3, 32, 32), (1, 64)),
    "vgg16_bn": (lambda: archs.vgg16_bn(in_channels=3), (3, 32, 32), (1, 64)),
}


@dataclass
class Row:
    model: str
    device: str
    runtime: str
    batch: int
    dense_ms: float
    pruned_ms: float
    mac_ratio: float
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.dense_ms / self.pruned_ms


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = MODELS[name][0]()
    with torch.no_grad():       # non-trivial BN statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def runtimes(dense: nn.Module, pruned: nn.Module, example: torch.Tensor, device: torch.device,
             compile_: bool, onnx_dir: Path) -> tuple[dict[str, tuple], dict[str, str]]:
    """``{runtime: (dense variant, pruned variant)}`` and notes (compile / export times, errors)."""
    pair = (dense.to(device), pruned.to(device))
    found = {"eager": pair, "BN folded": tuple(fold_batchnorm(m) for m in pair),
             "channels-last": tuple(copy.deepcopy(m).to(memory_format=torch.channels_last)
                                    for m in pair)}
    notes: dict[str, str] = {}
    if compile_:
        found["torch.compile"] = tuple(torch.compile(m, dynamic=False) for m in pair)
    providers = _onnx_providers(device)
    if providers:
        try:
            start = time.perf_counter()
            files = [export_onnx(m, example.repeat(2, 1, 1, 1), onnx_dir / f"{i}.onnx")
                     for i, m in enumerate(pair)]
            found["ONNX Runtime"] = tuple(OnnxRuntimeModel(f, threads=1, providers=providers)
                                          for f in files)
            notes["ONNX Runtime"] = f"export {time.perf_counter() - start:.1f} s"
            errors = [max_abs_error(m, o, example) for m, o in zip(pair, found["ONNX Runtime"])]
            if max(errors) > 1e-4:
                raise RuntimeError(f"ONNX Runtime differs from PyTorch by {max(errors):.1e}")
        except Exception as e:  # noqa: BLE001 -- report a runtime that fails, go on with the others
            found.pop("ONNX Runtime", None)
            notes["ONNX Runtime"] = f"skipped: {type(e).__name__}: {e}"[:120]
    return found, notes


def _onnx_providers(device: torch.device) -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    return [wanted] if wanted in ort.get_available_providers() else []


def bench_model(name: str, device: torch.device, compile_: bool, rounds: int,
                repeats: dict[int, int], clock: str) -> list[Row]:
    shape, batches = MODELS[name][1], MODELS[name][2]
    dense = build(name)
    x1 = torch.randn(1, *shape)
    pruned = prunekit.prune(dense, x1, ratio=RATIO, importance="l1").model
    mac_ratio = count_macs(dense, x1) / count_macs(pruned, x1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        variants, notes = runtimes(dense, pruned, x1, device, compile_, Path(tmp))
        for batch in batches:
            x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))
            if "torch.compile" in variants:      # compile (first call) outside the timing
                start = time.perf_counter()
                with torch.no_grad():
                    for m in variants["torch.compile"]:
                        m(x.to(device))
                notes[f"torch.compile b{batch}"] = f"compile {time.perf_counter() - start:.1f} s"
            timed = compare_latency({f"{r}|{i}": m for r, pair in variants.items()
                                     for i, m in enumerate(pair)},
                                    x, threads=1, rounds=rounds, repeats=repeats[batch], warmup=2,
                                    clock=clock)
            for r in variants:
                rows.append(Row(name, str(device), r, batch, timed[f"{r}|0"].median_ms,
                                timed[f"{r}|1"].median_ms, mac_ratio))
    for r in rows:
        r.notes = [v for k, v in notes.items() if k == r.runtime or k == f"{r.runtime} b{r.batch}"]
    return rows


def markdown(rows: list[Row]) -> str:
    head = ("| model | device | batch | runtime | dense ms | pruned ms | latency ratio "
            "| MAC ratio | of ideal | notes |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.device} | {r.batch} | {r.runtime} | {r.dense_ms:.3f} "
                     f"| {r.pruned_ms:.3f} | x{r.ratio:.2f} | x{r.mac_ratio:.2f} "
                     f"| {r.ratio / r.mac_ratio:.0%} | {'; '.join(r.notes)} |")
    return "\n".join(lines)


def environment(devices: list[torch.device], clock: str) -> str:
    names = []
    for d in devices:
        names.append(torch.cuda.get_device_name(d) + " (CUDA events)" if d.type == "cuda" else
                     f"{cpu_name()}, {os.cpu_count()} cores, 1 thread, {clock} clock")
    try:
        import onnxruntime as ort
        ort_version = ort.__version__
    except ImportError:
        ort_version = "not installed"
    return (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
            f"{'; '.join(names)}; torch {torch.__version__}, onnxruntime {ort_version}, "
            f"Python {platform.python_version()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--device", default=None,
                   help="cpu, cuda, or cpu,cuda (default: cpu, plus cuda when there is one)")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    p.add_argument("--quick", action="store_true", help="fewer rounds: a smoke run, noisier")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="cpu (default): CPU time of the one working thread, robust on a shared "
                        "machine; wall: elapsed time, for a quiet one (a GPU uses CUDA events)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    names = args.device.split(",") if args.device else \
        ["cpu"] + (["cuda"] if default_device().type == "cuda" else [])
    devices = [torch.device(n) for n in names]
    rounds, repeats = (2, {1: 5, 64: 1}) if args.quick else (5, {1: 20, 64: 3})
    start = time.perf_counter()
    rows = []
    for device in devices:
        for name in args.models:
            rows += bench_model(name, device, not args.no_compile, rounds, repeats, args.clock)
            print(f"# {name} on {device}: done after {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    table = markdown(rows)
    text = (f"Machine: {environment(devices, args.clock)}.\nCommand: `python benchmarks/bench_deploy.py "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}` -- "
            f"{time.perf_counter() - start:.0f} s.\n\n{table}\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

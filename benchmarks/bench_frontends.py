"""Benchmark: the two front-ends of prunekit's graph, torch.fx and torch.export, on the same
models -- which one traces, which one ends exact, and how long building the graph takes.

For every model: ``prunekit.graph.build_graph(model, x, frontend=...)`` timed on the CPU clock
of the one working thread (median of ``--repeats`` after one warm-up call), and a verdict of
``prunekit.testing.judge`` at 30% uniform L1 (local scope) through that front-end: ``exact``,
``refused: why`` (the first words of the message) or ``wrong``. The models: the course's CNNs,
the 22 torchvision classifiers of ``bench_archs.py`` (when torchvision imports), a hand-written
LLaMA-style decoder (``tests/hf_nets.py``) and tiny Hugging Face language models built from
configs (when ``transformers`` is installed). ``auto`` = fx, and export where fx fails.

    python benchmarks/bench_frontends.py                     # everything, ~5 min on 2 cores
    python benchmarks/bench_frontends.py --models resnet18 llama --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "tests"))

from prunekit import PruningError, models  # noqa: E402
from prunekit.graph import build_graph  # noqa: E402
from prunekit.testing import judge, randomise  # noqa: E402

Build = Callable[[], tuple[nn.Module, Tensor, Tensor]]


def _cnn(make: Callable[[], nn.Module], shape: tuple[int, ...]) -> Build:
    def build() -> tuple[nn.Module, Tensor, Tensor]:
        torch.manual_seed(0)
        g = torch.Generator().manual_seed(1)
        return randomise(make()), torch.randn(1, *shape, generator=g), \
            torch.randn(2, *shape, generator=g)
    return build


def _tokens(make: Callable[[], nn.Module]) -> Build:
    def build() -> tuple[nn.Module, Tensor, Tensor]:
        from hf_nets import tokens

        torch.manual_seed(0)
        return randomise(make()).eval(), tokens(1), tokens(2)
    return build


def catalogue() -> dict[str, Build]:
    import archs

    found: dict[str, Build] = {
        "vgg_small": _cnn(lambda: models.vgg_small(in_channels=1), (1, 28, 28)),
        "resnet56": _cnn(lambda: models.resnet56(in_channels=3), (3, 32, 32)),
        "mobilenet_v2 (archs)": _cnn(archs.mobilenet_v2, (3, 224, 224)),
    }
    try:
        import bench_archs

        bench_archs.import_torchvision()
        for name in bench_archs.ARCHS:
            found[name] = (lambda n: lambda: (bench_archs.build(n), *bench_archs.inputs(n)))(name)
    except Exception as err:  # noqa: BLE001 -- torchvision missing or not importable
        print(f"# skipping torchvision: {err}", file=sys.stderr)
    from hf_nets import MODELS, TinyDecoder

    found["decoder (hand-written)"] = _tokens(TinyDecoder)
    try:
        import transformers  # noqa: F401

        for name, make in MODELS.items():
            found[f"hf-{name}"] = _tokens(make)
    except ImportError as err:
        print(f"# skipping transformers: {err}", file=sys.stderr)
    return found


def graph_ms(model: nn.Module, x: Tensor, frontend: str, repeats: int) -> float | str:
    """Median CPU ms of build_graph, or the refusal's first words."""
    times = []
    for i in range(repeats + 1):
        start = time.thread_time()
        try:
            build_graph(model, x, frontend=frontend)
        except PruningError as err:
            return "fails: " + " ".join(str(err).split()[:14]) + " ..."
        if i:
            times.append((time.thread_time() - start) * 1e3)
    return statistics.median(times)


def verdict(model: nn.Module, x1: Tensor, x2: Tensor, frontend: str) -> str:
    v = judge(model, x2, x1, ratio=0.3, importance="l1", scope="local", frontend=frontend)
    if v.kind == "exact":
        return f"exact ({v.error:.0e})"
    if v.kind == "refused":
        text = v.detail
        if "node '" in text:
            text = text[text.index("node '"):]
        return "refused: " + " ".join(text.split()[:16]) + " ..."
    return f"{v.kind}: {v.detail[:120]}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    found = catalogue()
    names = args.models or list(found)
    print("| model | fx: graph (ms) | fx: 30% L1 | export: graph (ms) | export: 30% L1 | auto |")
    print("|---|---|---|---|---|---|")
    for name in names:
        model, x1, x2 = found[name]()
        cells = []
        for frontend in ("fx", "export"):
            ms = graph_ms(model, x1, frontend, args.repeats)
            cells.append(f"{ms:.0f}" if isinstance(ms, float) else ms)
            cells.append(verdict(model, x1, x2, frontend) if isinstance(ms, float) else "-")
        auto = "fx" if not cells[0].startswith("fails") else (
            "export" if not cells[2].startswith("fails") else "refused")
        print(f"| {name} | {' | '.join(cells)} | {auto} |", flush=True)


if __name__ == "__main__":
    main()

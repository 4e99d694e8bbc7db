"""Benchmark: prune real torchvision classification architectures with prunekit and Torch-Pruning.

Every model is built with random weights (``weights=None``, ``torch.manual_seed(0)``), random
BatchNorm statistics and random norm / bias parameters (so that a wrongly kept or dropped BN
shift shows up in the outputs; see ``prunekit.testing.randomise``), in eval mode. Each library then removes
30% of the channels of every prunable group (uniform ratio, L1 filter magnitude, local scope),
and the table reports per model:

* prunekit -- ``prunekit.plan(model, x, ratio=0.3, importance="l1", scope="local").apply()``:
  ``exact`` when the pruned model's outputs equal those of ``plan.mask()``, the dense model with
  the same channels zeroed (relative max error <= 1e-4 on a fixed batch of 2), ``WRONG`` when
  they do not, ``refused: why`` when it raises ``prunekit.PruningError`` (the first ~150
  characters of the message); params / MACs kept (after / before), layers cut, time to prune.
* Torch-Pruning 1.6.1 -- ``BasePruner(..., MagnitudeImportance(p=1), pruning_ratio=0.3,
  global_pruning=False, ignored_layers=[classifier])`` + ``step()``. It has no zero-mask twin,
  so one extra run prunes group by group (``step(interactive=True)``) and records, for every
  group, which output channels of which layer it removes; the same channels are then zeroed in
  a dense copy and the two models compared like prunekit's (``record_group``, ``zero_outputs``).
  Where they differ only because a LayerNorm lost channels (its mean and variance are then
  taken over fewer channels, which no zeroing reproduces), the result says ``LN-exact``.

Time to prune: the whole library call (prunekit: graph + plan + apply; Torch-Pruning: pruner
construction, which traces the graph, + ``step()``) on a fresh ``copy.deepcopy`` of the model
(the copy is not timed), median of 3 after one warm-up call, wall clock, torch's default number
of threads (``--threads 1`` for steadier numbers on a shared machine). prunekit cuts in place
here (``apply(inplace=True)``) because Torch-Pruning does and the copy is not part of
pruning; the exactness check uses a separate ``plan(...).apply()``.

Each (model, library) runs in its own child process with a time budget (default 120 s: a
model that takes longer is reported as skipped) and an address-space limit (default 6 GiB: an
allocation past it raises ``MemoryError`` instead of waking the OOM killer), so a crash, a
hang or a memory blow-up is a result in the table, not the end of the run.

Run from the repository root (needs ``torch-pruning`` and ``torchvision``; see
``torchvision_models.py`` for why torchvision is imported with a shim)::

    python benchmarks/bench_archs.py --quick                   # 4 models, ~30 s on 2 cores
    python benchmarks/bench_archs.py --models resnet18,vit_b_16
    python benchmarks/bench_archs.py --threads 1 --out /tmp/archs.md   # all 22, ~6 min
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torchvision_models.py, as a script
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # prunekit from this checkout

from prunekit.metrics import count_macs, count_params  # noqa: E402
from prunekit.testing import judge, randomise  # noqa: E402
from prunekit.verify import TOLERANCE, output_error  # noqa: E402
from machine import cpu_name  # noqa: E402
from torchvision_models import import_torchvision, torchvision_version  # noqa: E402

RATIO = 0.3
REASON_CHARS = 150  # how much of an error message goes into the table
LIBRARIES = ("prunekit", "Torch-Pruning")
RESULT_TAG = "BENCH_ARCHS_RESULT "  # marks the child's JSON line on its stdout


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class Arch:
    """A torchvision classification model: extra constructor arguments and input size."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    size: int = 224


#: No auxiliary heads (they only run in training mode) and PyTorch's default init: the
#: truncated-normal init of googlenet / inception_v3 is slow and changes nothing here.
_NO_AUX = {"aux_logits": False, "init_weights": False}

ARCHS: dict[str, Arch] = {
    "resnet18": Arch(), "resnet50": Arch(), "resnext50_32x4d": Arch(), "wide_resnet50_2": Arch(),
    "vgg11_bn": Arch(), "alexnet": Arch(), "squeezenet1_0": Arch(), "densenet121": Arch(),
    "googlenet": Arch(_NO_AUX), "inception_v3": Arch(_NO_AUX, size=299),
    "mobilenet_v2": Arch(), "mobilenet_v3_small": Arch(), "mobilenet_v3_large": Arch(),
    "mnasnet1_0": Arch(), "efficientnet_b0": Arch(), "efficientnet_v2_s": Arch(),
    "regnet_x_400mf": Arch(), "regnet_y_400mf": Arch(), "shufflenet_v2_x1_0": Arch(),
    "convnext_tiny": Arch(), "vit_b_16": Arch(), "swin_t": Arch(),
}

#: ``--quick``: a plain CNN, one with a conv classifier, one with squeeze-excite, one with LayerNorm.
QUICK = ["resnet18", "squeezenet1_0", "mobilenet_v3_small", "convnext_tiny"]


def build(name: str) -> nn.Module:
    """The model with random (seeded) weights and BN statistics, in eval mode."""
    models = import_torchvision()
    torch.manual_seed(0)
    return randomise(getattr(models, name)(weights=None, **ARCHS[name].kwargs))


def inputs(name: str) -> tuple[Tensor, Tensor]:
    """A batch-1 example input (tracing, MACs) and a fixed batch-2 input (the checks)."""
    shape = (3, ARCHS[name].size, ARCHS[name].size)
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, *shape, generator=g), torch.randn(2, *shape, generator=g)


def final_classifier(model: nn.Module) -> nn.Module:
    """The layer whose outputs are the classes: the last Linear, or for a fully convolutional
    classifier (squeezenet) the last Conv2d. It must never lose outputs."""
    for kind in (nn.Linear, nn.Conv2d):
        layers = [m for m in model.modules() if isinstance(m, kind)]
        if layers:
            return layers[-1]
    raise ValueError(f"{type(model).__name__} has no Linear or Conv2d classifier")


# ----------------------------------------------------------------------------- measuring
@dataclass
class Outcome:
    """One library on one model: what the child process reports."""

    result: str
    params: float | None = None  # kept: after / before
    macs: float | None = None
    layers_cut: int | None = None
    prune_ms: float | None = None
    runs: int = 0  # timed runs behind prune_ms
    notes: list[str] = field(default_factory=list)


def short_text(text: str, chars: int = REASON_CHARS) -> str:
    """``text`` on one line, cut to ``chars`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 3] + "..."


def short(err: BaseException, chars: int = REASON_CHARS) -> str:
    """An exception as one short line: its type, the start of its message, and where it was
    raised (``package/module.py:line``, so that a library bug can be found)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    where = f" [{'/'.join(Path(frames[-1].filename).parts[-2:])}:{frames[-1].lineno}]" if frames else ""
    text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return short_text(text, chars - len(where)) + where


def verdict(err: float, change: float, wrong: str) -> tuple[str, list[str]]:
    """``exact (err)`` when the pruned model's outputs are the zeroed dense model's within the
    tolerance (relative error, :func:`prunekit.verify.output_error`), else ``wrong (rel err
    err)``; and a note when the check proves nothing because pruning hardly changed the
    outputs at all (then anything passes)."""
    result = f"exact ({err:.0e})" if err <= TOLERANCE else f"{wrong} (rel err {err:.2g})"
    notes = [] if change > 10 * TOLERANCE else [
        f"pruning changed the outputs by only {change:.0e} (relative): the check is weak here"]
    return result, notes


def time_calls(prune: Callable[[nn.Module], Any], model: nn.Module, repeats: int,
               deadline: float) -> list[float]:
    """ms of ``prune`` on fresh deep copies (copies untimed), after one untimed warm-up call.

    Stops repeating when the next call (estimated by the last one), plus one more for the
    check, would end past ``deadline`` (a ``time.perf_counter`` value)."""
    start = time.perf_counter()
    prune(copy.deepcopy(model))
    last, times = time.perf_counter() - start, []
    for _ in range(repeats):
        if time.perf_counter() + 2 * last > deadline:
            break
        copied = copy.deepcopy(model)
        start = time.perf_counter()
        prune(copied)
        last = time.perf_counter() - start
        times.append(last * 1e3)
    return times


def kept(pruned: nn.Module, original: nn.Module, x: Tensor) -> tuple[float, float]:
    """(params, MACs) after / before, counted by prunekit.metrics for both libraries."""
    return (count_params(pruned) / count_params(original),
            count_macs(pruned, x) / count_macs(original, x))


def timed(outcome: Outcome, times: list[float], repeats: int) -> Outcome:
    """Fill in the median time (and say when the budget allowed fewer runs)."""
    outcome.runs = len(times)
    outcome.prune_ms = statistics.median(times) if times else None
    if len(times) < repeats:
        outcome.notes.append(f"time budget: {len(times)} timed run(s) instead of {repeats}")
    return outcome


# ----------------------------------------------------------------------------- prunekit
def prune_prunekit(model: nn.Module, x: Tensor) -> Any:
    """The call that is timed: graph + plan + apply, in place on the copy it is given."""
    import prunekit

    return prunekit.plan(model, x, ratio=RATIO, importance="l1", scope="local").apply(inplace=True)


def measure_prunekit(model: nn.Module, x1: Tensor, x2: Tensor, repeats: int,
                     deadline: float) -> Outcome:
    """Time prunekit, then check its result against its own zero-mask (``plan.mask()``)."""
    import prunekit

    try:
        times = time_calls(lambda m: prune_prunekit(m, x1), model, repeats, deadline)
    except prunekit.PruningError as err:
        return Outcome("refused: " + short_text(str(err)))
    checked = judge(model, x2, x1, tol=TOLERANCE, measure_change=True, ratio=RATIO,
                    importance="l1", scope="local")
    if checked.result is None:
        return Outcome(f"{checked.kind}: " + short_text(checked.detail))
    result = checked.result
    text, notes = verdict(checked.error, checked.change, "WRONG")
    params, macs = kept(result.model, model, x1)
    outcome = timed(Outcome(text, params, macs, len(result.removed)), times, repeats)
    outcome.notes += notes
    return outcome


# ----------------------------------------------------------------------------- Torch-Pruning
def tp_num_heads(model: nn.Module) -> dict[nn.Module, int]:
    """What Torch-Pruning needs to know about attention: ``{layer: number of heads}`` for every
    ``nn.MultiheadAttention`` (vit_b_16), and for the qkv projection of attention blocks that
    carry ``qkv`` + ``num_heads`` attributes (swin_t's ShiftedWindowAttention)."""
    heads: dict[nn.Module, int] = {}
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            heads[m] = m.num_heads
        elif isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "num_heads", None), int):
            heads[m.qkv] = m.num_heads
    return heads


def tp_ignored(model: nn.Module) -> list[nn.Module | nn.Parameter]:
    """The classifier, and swin's relative-position bias tables ``[positions, heads]``: TP would
    otherwise prune their last dimension, the heads, as if it were channels."""
    ignored: list[nn.Module | nn.Parameter] = [final_classifier(model)]
    ignored += [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    return ignored


def tp_pruner(model: nn.Module, x: Tensor) -> Any:
    """Torch-Pruning's pruner for ``model`` (construction traces the dependency graph).

    ``in_channel_groups`` / ``out_channel_groups`` are passed as fresh dicts: their defaults
    in 1.6.1 are shared mutable dicts that ``num_heads`` is merged into."""
    import torch_pruning as tp

    pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
    return pruner_cls(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                      pruning_ratio=RATIO, global_pruning=False,
                      ignored_layers=tp_ignored(model), num_heads=tp_num_heads(model),
                      in_channel_groups={}, out_channel_groups={})


def prune_tp(model: nn.Module, x: Tensor) -> nn.Module:
    """The call that is timed: pruner construction + one ``step()``, in place."""
    tp_pruner(model, x).step()
    return model


@dataclass
class ZeroRecord:
    """The output channels Torch-Pruning removed, in the original numbering, per tensor."""

    removed: dict[str, set[int]] = field(default_factory=dict)  # "name:dim" -> channels
    alive: dict[str, list[int]] = field(default_factory=dict)  # original index of each current one
    unhandled: set[str] = field(default_factory=set)  # layer types we cannot zero

    def remove(self, key: str, size: int, current: list[int]) -> None:
        """Record that ``current`` (indices into the tensor as it is now) are cut."""
        alive = self.alive.setdefault(key, list(range(size)))
        gone = {alive[i] for i in current}
        self.removed.setdefault(key, set()).update(gone)
        self.alive[key] = [c for c in alive if c not in gone]


def record_group(group: Any, dg: Any, names: dict[int, str], original: nn.Module,
                 record: ZeroRecord) -> None:
    """For one of Torch-Pruning's groups (before ``group.prune()``), note which *outputs* it
    removes. Inputs need no zeroing: a removed input channel is the output of a layer in the
    same group, which is zeroed. TP's own graph nodes (concat, split, reshape...) hold no weights.
    A layer can appear more than once in a group (a norm through both of its pruning functions):
    its indices are merged and recorded once, before the group changes any shape."""
    import torch_pruning as tp

    cuts: dict[str, tuple[int, set[int]]] = {}
    for dep, idxs in group.items:
        target, idxs = dep.target.module, tp._helpers.to_plain_idxs(idxs)
        if isinstance(target, nn.Parameter):  # TP renews a parameter it prunes: ask it the name
            name = dg._param_to_name[target]
            param = original.get_parameter(name)
            dim = dep.target.pruning_dim % param.dim()
            cuts.setdefault(f"{name}:{dim}", (param.shape[dim], set()))[1].update(idxs)
            continue
        name = names.get(id(target))
        if name is None or type(target).__module__.startswith("torch_pruning"):
            continue  # TP's bookkeeping nodes
        layer = original.get_submodule(name)
        same_in_out = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                       nn.MultiheadAttention, nn.PReLU)
        if isinstance(layer, same_in_out) or (isinstance(layer, (nn.Conv2d, nn.Linear))
                                              and dg.is_out_channel_pruning_fn(dep.handler)):
            cuts.setdefault(f"{name}:out", (output_size(layer), set()))[1].update(idxs)
        elif not isinstance(layer, (nn.Conv2d, nn.Linear)):
            record.unhandled.add(type(layer).__name__)
    for key, (size, current) in cuts.items():
        record.remove(key, size, sorted(current))


def output_size(layer: nn.Module) -> int:
    """Number of output channels of a layer that :func:`zero_outputs` knows."""
    if isinstance(layer, nn.MultiheadAttention):
        return layer.embed_dim
    if isinstance(layer, nn.LayerNorm):
        return layer.normalized_shape[-1]
    if isinstance(layer, nn.PReLU):
        return layer.num_parameters
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return layer.num_features
    if isinstance(layer, nn.GroupNorm):
        return layer.num_channels
    return layer.weight.shape[0]  # conv, linear


def zero_outputs(model: nn.Module, record: ZeroRecord) -> nn.Module:
    """Zero, in the dense ``model``, every output channel in ``record``: conv / linear rows and
    biases, norm gamma and beta, attention q/k/v rows and output projection, and slices of
    free parameters (class token, position embedding, layer scale) along TP's pruning dim."""
    with torch.no_grad():
        for key, channels in record.removed.items():
            name, dim = key.rsplit(":", 1)
            idx = torch.tensor(sorted(channels))
            if dim != "out":
                model.get_parameter(name).index_fill_(int(dim), idx, 0.0)
                continue
            layer = model.get_submodule(name)
            if isinstance(layer, nn.MultiheadAttention):
                e = layer.embed_dim
                qkv = torch.cat([idx, idx + e, idx + 2 * e])
                layer.in_proj_weight[qkv] = 0
                if layer.in_proj_bias is not None:
                    layer.in_proj_bias[qkv] = 0
                layer = layer.out_proj
            if isinstance(layer, nn.PReLU):
                continue  # PReLU(0) = 0
            if getattr(layer, "weight", None) is not None:
                layer.weight[idx] = 0
            if getattr(layer, "bias", None) is not None:
                layer.bias[idx] = 0
    return model


class LayerNormOverKept(TorchFunctionMode):
    """While active, every ``F.layer_norm`` of a LayerNorm that lost channels normalises over
    its kept channels only (and outputs 0 on the removed ones).

    That is what a LayerNorm computes after its removed channels are cut out, and what no
    zeroing can express (zeros still count in the mean and variance). A Torch-Pruning model
    equal to the zeroed twin under this mode ("LN-exact") differs from plain zeroing by the
    LayerNorm statistics alone. Works for subclasses too (convnext's LayerNorm2d permutes and
    then calls ``F.layer_norm``): layers are recognised by their weight tensor."""

    def __init__(self, twin: nn.Module, record: ZeroRecord) -> None:
        super().__init__()
        self.kept: dict[int, Tensor] = {}  # id(LayerNorm weight) -> kept channel indices
        for name, m in twin.named_modules():
            key = f"{name}:out"
            if isinstance(m, nn.LayerNorm) and m.weight is not None and key in record.alive:
                self.kept[id(m.weight)] = torch.tensor(record.alive[key])

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is F.layer_norm:
            call = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), args), **kwargs)
            keep = self.kept.get(id(call.get("weight")))
            if keep is not None:
                x, bias = call["input"], call.get("bias")
                out = torch.zeros_like(x)
                out[..., keep] = F.layer_norm(x[..., keep], (len(keep),), call["weight"][keep],
                                              None if bias is None else bias[keep],
                                              call.get("eps", 1e-5))
                return out
        return func(*args, **kwargs)


def tp_check_run(model: nn.Module, x1: Tensor) -> tuple[nn.Module, ZeroRecord]:
    """Prune a copy group by group (``step(interactive=True)``), recording each group's cuts."""
    pruned, record = copy.deepcopy(model), ZeroRecord()
    names = {id(m): n for n, m in pruned.named_modules()}
    pruner = tp_pruner(pruned, x1)
    for group in pruner.step(interactive=True):
        record_group(group, pruner.DG, names, model, record)
        group.prune()
    return pruned, record


def measure_tp(model: nn.Module, x1: Tensor, x2: Tensor, repeats: int,
               deadline: float) -> Outcome:
    """Time Torch-Pruning; check that the pruned model runs and equals the zeroed dense copy."""
    with warnings.catch_warnings(record=True) as caught:  # kept for the notes, not printed
        warnings.simplefilter("always")
        try:
            times = time_calls(lambda m: prune_tp(m, x1), model, repeats, deadline)
        except Exception as err:  # noqa: BLE001 -- an exception is a result
            return Outcome("error: " + short(err))
        try:
            pruned, record = tp_check_run(model, x1)
        except Exception as err:  # noqa: BLE001
            return timed(Outcome("error in the check run: " + short(err)), times, repeats)
    try:
        with torch.no_grad():
            out = pruned(x2)
    except Exception as err:  # noqa: BLE001
        return timed(Outcome("pruned model fails: " + short(err)), times, repeats)
    params, macs = kept(pruned, model, x1)
    notes: list[str] = []
    if record.unhandled:
        text = f"runs; not checked (no zeroing rule for {', '.join(sorted(record.unhandled))})"
    else:
        with torch.no_grad():
            twin = zero_outputs(copy.deepcopy(model), record)
            zeroed_err = output_error(out, twin(x2))
            text, notes = verdict(zeroed_err, output_error(out, model(x2)), "differs from zeroed")
            over_kept = LayerNormOverKept(twin, record)
            if zeroed_err > TOLERANCE and over_kept.kept:
                with over_kept:
                    err = output_error(out, twin(x2))
                if err <= TOLERANCE:
                    text = f"LN-exact ({err:.0e}); zeroed: rel err {zeroed_err:.2g}"
    outcome = timed(Outcome(text, params, macs), times, repeats)
    outcome.notes += notes + warning_notes(caught)
    return outcome


def warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    """One note per kind of warning (the text before its first colon), first occurrence."""
    seen: dict[str, str] = {}
    for w in caught:
        text = " ".join(str(w.message).split())
        seen.setdefault(text.split(":")[0], text)
    return ["TP warned: " + short_text(t) for t in seen.values()]


# ----------------------------------------------------------------------------- one child process
def worker(name: str, library: str, repeats: int, budget_s: float, memory_gib: float,
           threads: int | None) -> Outcome:
    """Everything for one (model, library), run in a child process; errors become results."""
    deadline = time.perf_counter() + budget_s - 5  # leave the parent time to read us
    if threads:
        torch.set_num_threads(threads)
    try:
        model = build(name)
        x1, x2 = inputs(name)
        measure = measure_prunekit if library == "prunekit" else measure_tp
        outcome = measure(model, x1, x2, repeats, deadline)
    except Exception as err:  # noqa: BLE001 -- an exception is a result, not a crash
        outcome = Outcome("error: " + short(err))
    if outcome.result.startswith("error: MemoryError"):
        outcome.result = outcome.result.replace("MemoryError", f"MemoryError (over {memory_gib:g} GiB)", 1)
    return outcome


def limit_memory(gib: float) -> Callable[[], None]:
    """A ``preexec_fn`` capping the child's address space (POSIX; a no-op elsewhere), so that a
    runaway allocation raises MemoryError in the child instead of waking the OOM killer."""
    def apply() -> None:
        try:
            import resource

            limit = int(gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    return apply


def run_child(name: str, library: str, args: argparse.Namespace) -> Outcome:
    """Run :func:`worker` in a fresh Python; a timeout, a crash or a kill is also an Outcome."""
    budget_s, memory_gib = args.budget, args.memory_gb
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, library,
           "--repeats", str(args.repeats), "--budget", str(budget_s),
           "--memory-gb", str(memory_gib), *(["--threads", str(args.threads)] if args.threads else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s,
                              preexec_fn=limit_memory(memory_gib) if os.name == "posix" else None)
    except subprocess.TimeoutExpired:
        return Outcome(f"skipped: over the {budget_s:.0f} s budget")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return Outcome(**json.loads(line[len(RESULT_TAG):]))
    tail = " ".join((proc.stderr.strip().splitlines() or ["no output"])[-1].split())
    return Outcome(f"crashed (exit {proc.returncode}): {tail[:REASON_CHARS]}")


# ----------------------------------------------------------------------------- report
@dataclass
class Row:
    """One model: its size, both libraries' outcomes, and the 1-minute load average before."""

    model: str
    params: int
    macs: int
    outcomes: dict[str, Outcome]
    seconds: float
    load: float | None = None


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def describe(name: str) -> tuple[int, int]:
    """The dense model's params and MACs (batch 1)."""
    model = build(name)
    return count_params(model), count_macs(model, inputs(name)[0])


def cell(text: str) -> str:
    """Table-safe text."""
    return text.replace("|", "\\|").replace("\n", " ")


def ratio(value: float | None) -> str:
    return "-" if value is None else f"x{value:.3f}"


def ms(outcome: Outcome) -> str:
    if outcome.prune_ms is None:
        return "-"
    return f"{outcome.prune_ms:.0f}" + ("" if outcome.runs >= 3 else f" (n={outcome.runs})")


HEADER = ("| model | input | params | MACs | prunekit: result | kept params | kept MACs | layers cut "
          "| prune time (ms) | TP: result | TP kept params | TP kept MACs | TP prune time (ms) |")


def table_row(row: Row) -> str:
    size = ARCHS[row.model].size
    pk = row.outcomes.get("prunekit", Outcome("not run"))
    tp = row.outcomes.get("Torch-Pruning", Outcome("not run"))
    cut = "-" if pk.layers_cut is None else str(pk.layers_cut)
    return (f"| {row.model} | 3x{size}x{size} | {row.params / 1e6:.2f} M | {row.macs / 1e9:.2f} G "
            f"| {cell(pk.result)} | {ratio(pk.params)} | {ratio(pk.macs)} | {cut} | {ms(pk)} "
            f"| {cell(tp.result)} | {ratio(tp.params)} | {ratio(tp.macs)} | {ms(tp)} |")


NOTES = f"""\
Notes.
- Setting: {RATIO:.0%} of the channels of every prunable group, uniform, L1 magnitude, local
  scope; the final classifier is never pruned. Random weights, random BN statistics, random
  norm gamma / beta and biases, no zero or 1e-6 scales (`randomise`): every channel matters.
- exact (e): the pruned model's outputs equal those of the dense model with the removed
  channels zeroed, relative max error e <= {TOLERANCE:g} on a fixed batch of 2. For prunekit the
  zeroed model is its own `plan.mask()`. Torch-Pruning has none: the benchmark prunes once more
  group by group (`step(interactive=True)`), records each group's removed output channels
  (conv / linear rows, norm channels, attention embedding dims, free parameters such as class
  token, position embedding, layer scale) and zeroes those in a dense copy.
- differs from zeroed: Torch-Pruning's model computes something else than the zeroed dense
  model. Expected where a removed channel changes the statistics of what is left: LayerNorm
  over channels (mean and variance over fewer channels) and attention (the 1/sqrt(head dim)
  scale changes when head dims are removed); a difference in a plain CNN would be a bug.
- LN-exact (e): differs from the zeroed model, but equals it (error e) once every LayerNorm
  that lost channels normalises over its kept channels only: the difference is the LayerNorm
  statistics and nothing else (`LayerNormOverKept`). prunekit keeps (pins) those channels instead.
- prune time: median of the timed runs after one warm-up, each on a fresh deepcopy (untimed),
  wall clock; prunekit `plan(...).apply(inplace=True)`, Torch-Pruning pruner construction +
  `step()`. With several torch threads on a shared machine these times swing by 10x and more
  with the neighbours' load (see the load average above); `--threads 1` is far steadier.
- kept params / MACs: after / before, both counted by `prunekit.metrics` (MACs at batch 1).
  layers cut: `len(result.removed)` (prunekit's Conv / BN / Linear layers that lost outputs).
- Each (model, library) runs in a child process with a time budget and a memory limit; a
  timeout is "skipped", a crash is "crashed", an exception "error"."""


def environment(threads: int, default_threads: bool, loads: list[float]) -> str:
    """Machine, versions and date, for the header."""
    try:
        tp_version = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        tp_version = "not installed"
    load = f", load average {min(loads):.1f}-{max(loads):.1f} during the run" if loads else ""
    return (f"Machine: {platform.platform()}, {cpu_name()}, {os.cpu_count()} CPU cores{load}; "
            f"{threads} torch thread(s){' (the default)' if default_threads else ''}; "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__}, torchvision {torchvision_version()}, "
            f"torch-pruning {tp_version}; "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.")


def report(rows: list[Row], command: str, seconds: float, threads: int,
           default_threads: bool) -> str:
    notes = [f"- {r.model}, {lib}: {n}" for r in rows for lib, o in r.outcomes.items() for n in o.notes]
    return "\n".join([
        "# prunekit vs Torch-Pruning on torchvision architectures", "",
        environment(threads, default_threads, [r.load for r in rows if r.load is not None]),
        f"Command: `{command}` ({seconds:.0f} s).", "", HEADER, "|---" * (HEADER.count("|") - 1) + "|",
        *map(table_row, rows), "", NOTES, *(["", "Per-model notes:", *notes] if notes else [])])


# ----------------------------------------------------------------------------- main
def parse_models(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {', '.join(ARCHS)}")
    return names


def parse_libraries(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or any(n not in LIBRARIES for n in names):
        raise argparse.ArgumentTypeError(f"choose from {','.join(LIBRARIES)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=parse_models, default=list(ARCHS), metavar="A,B,...",
                   help=f"comma-separated models (default: all {len(ARCHS)})")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    p.add_argument("--libraries", type=parse_libraries, default=list(LIBRARIES),
                   help="comma-separated, from: prunekit,Torch-Pruning (default: both)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (3)")
    p.add_argument("--budget", type=float, default=120.0, metavar="S",
                   help="seconds per model and library, child start to result (120)")
    p.add_argument("--memory-gb", type=float, default=6.0, metavar="GIB",
                   help="address-space limit of each child process (6)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads for pruning (default: torch's default, i.e. all cores; "
                        "on a busy machine 1 gives far steadier times)")
    p.add_argument("--out", type=Path, help="also write the report (markdown) to this file")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "LIBRARY"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        outcome = worker(*args.worker, args.repeats, args.budget, args.memory_gb, args.threads)
        print(RESULT_TAG + json.dumps(asdict(outcome)), flush=True)
        return
    import_torchvision()  # fail early, with the install hint, if torchvision is missing
    names = QUICK if args.quick else args.models
    command = "python benchmarks/bench_archs.py " + " ".join(argv if argv is not None else sys.argv[1:])
    threads = args.threads or torch.get_num_threads()
    start, rows = time.perf_counter(), []
    for name in names:
        t0, load = time.perf_counter(), load_average()
        outcomes = {lib: run_child(name, lib, args) for lib in args.libraries}
        rows.append(Row(name, *describe(name), outcomes, time.perf_counter() - t0, load))
        print(f"# {time.perf_counter() - t0:4.0f} s {table_row(rows[-1])}", file=sys.stderr, flush=True)
        if args.out:  # rewritten after every model: a long run that is stopped keeps its rows
            args.out.write_text(report(rows, command.strip(), time.perf_counter() - start,
                                       threads, args.threads is None) + "\n")
    print(report(rows, command.strip(), time.perf_counter() - start, threads, args.threads is None))


if __name__ == "__main__":
    main()

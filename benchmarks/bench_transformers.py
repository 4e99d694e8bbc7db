"""Benchmark: transformer language models, prunekit beside Torch-Pruning, run the same way.

Every model is a tiny one built from a config with random weights (``tests/hf_nets.py``:
LLaMA, Qwen2, Mistral, Phi-3, Gemma, GPT-2, OPT, BERT from Hugging Face ``transformers``,
and a hand-written LLaMA-style decoder), random norm gains, in eval mode. Each library removes
50% of every prunable group (uniform ratio, L1 magnitude, local scope; the output layer never),
and the table says per model:

* prunekit -- ``prunekit.plan(model, ids, ratio=0.5).apply()``: ``exact`` when the pruned
  model's logits equal those of ``plan.mask()`` (relative error <= 1e-4 on a batch of 2),
  ``refused: why`` otherwise; params kept; what was cut; time to prune (graph + plan + apply,
  in place on a fresh copy, CPU clock of the one thread, median of 3 after a warm-up);
  and whether ``model.config`` is true (a model built from the pruned config has the pruned
  model's shapes).
* Torch-Pruning 1.6.1 -- ``MetaPruner(model, ids, MagnitudeImportance(p=1), pruning_ratio=0.5,
  global_pruning=False, ignored_layers=[output layer], num_heads={q/k/v projection: heads},
  prune_num_heads=True, prune_head_dims=False)`` + ``step()`` (the head settings of its LLM
  example), timed the same way. It has no zero-mask twin: one more run prunes group by group
  (``step(interactive=True)``), records the removed output channels of every Linear /
  Embedding / norm / parameter, zeroes them in a dense copy and compares (``zeroed: rel err``),
  and says whether the pruned model still runs and its config is still true.

Each (model, library) runs in a child process with a time budget (``--budget``, 120 s).

    python benchmarks/bench_transformers.py           # all models, ~15 min on 2 cores
    python benchmarks/bench_transformers.py --models llama gpt2 --libraries prunekit
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
sys.path.insert(2, str(Path(__file__).resolve().parents[1] / "tests"))

import prunekit  # noqa: E402
from hf_nets import MODELS, TinyDecoder, tokens  # noqa: E402
from prunekit.metrics import count_params  # noqa: E402
from prunekit.testing import judge, randomise  # noqa: E402
from prunekit.verify import output_error  # noqa: E402

RATIO = 0.5


def builders() -> dict[str, Callable[[], nn.Module]]:
    return {"decoder (hand-written)": TinyDecoder, **{f"hf-{k}": v for k, v in MODELS.items()}}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomise(builders()[name]()).eval()


def logits(model: nn.Module, ids: Tensor) -> Tensor:
    kwargs = {"use_cache": False} if hasattr(model, "config") else {}
    with torch.no_grad():
        out = model(ids, **kwargs)
    return out if isinstance(out, Tensor) else out[0]


def cpu_ms(call: Callable[[nn.Module], Any], model: nn.Module, repeats: int = 3) -> float:
    call(copy.deepcopy(model))
    times = []
    for _ in range(repeats):
        m = copy.deepcopy(model)
        start = time.thread_time()
        call(m)
        times.append((time.thread_time() - start) * 1e3)
    return statistics.median(times)


def config_true(model: nn.Module) -> str:
    if not hasattr(model, "config"):
        return "-"
    try:
        rebuilt = type(model)(model.config)
    except Exception as err:  # noqa: BLE001
        return f"no ({type(err).__name__})"
    same = {k: tuple(t.shape) for k, t in rebuilt.state_dict().items()} == \
        {k: tuple(t.shape) for k, t in model.state_dict().items()}
    return "yes" if same else "no"


def cut_summary(model: nn.Module, pruned: nn.Module) -> str:
    """Heads / MLP width / hidden width after, from the layers themselves."""
    widths = []
    for kind in (nn.Linear, nn.Embedding):
        before = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, kind)}
        after = {n: m.weight.shape for n, m in pruned.named_modules() if isinstance(m, kind)}
        widths += [n for n in before if n in after and before[n] != after[n]]
    conv1d = [n for n, m in pruned.named_modules() if type(m).__name__ == "Conv1D" and
              m.weight.shape != model.get_submodule(n).weight.shape]
    return f"{len(widths) + len(conv1d)} layers cut"


# ----------------------------------------------------------------------------- prunekit
def run_prunekit(name: str) -> dict[str, Any]:
    model, x1, x2 = build(name), tokens(1), tokens(2)
    v = judge(model, x2, x1, tol=1e-4, ratio=RATIO, importance="l1", scope="local")
    if v.result is None:
        return {"result": f"{v.kind}: {' '.join(v.detail.split()[:18])} ..."}
    pruned = v.result.model
    ms = cpu_ms(lambda m: prunekit.plan(m, x1, ratio=RATIO).apply(inplace=True), model)
    return {"result": f"{v.kind} ({v.error:.0e})" if v.kind == "exact" else v.kind,
            "params": count_params(pruned) / count_params(model), "ms": ms,
            "cut": cut_summary(model, pruned), "config": config_true(pruned)}


# ----------------------------------------------------------------------------- Torch-Pruning
def output_layer(model: nn.Module) -> nn.Module:
    for attr in ("lm_head",):
        if isinstance(getattr(model, attr, None), nn.Module):
            return getattr(model, attr)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def tp_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{projection: heads}`` for q / k / v (and GPT-2's fused c_attn), as in TP's LLM example."""
    config = getattr(model, "config", None)
    heads: dict[nn.Module, int] = {}
    for m in model.modules():
        q = getattr(m, "q_proj", None) or getattr(m, "query", None) or getattr(m, "q", None)
        k = getattr(m, "k_proj", None) or getattr(m, "key", None) or getattr(m, "k", None)
        v = getattr(m, "v_proj", None) or getattr(m, "value", None) or getattr(m, "v", None)
        if isinstance(q, nn.Linear) and isinstance(k, nn.Linear) and isinstance(v, nn.Linear):
            head = getattr(m, "head_dim", None) or getattr(m, "attention_head_size", None)
            heads[q], heads[k], heads[v] = (q.out_features // head, k.out_features // head,
                                            v.out_features // head)
        elif isinstance(getattr(m, "qkv_proj", None), nn.Linear) and config is not None:
            heads[m.qkv_proj] = config.num_attention_heads + 2 * config.num_key_value_heads
    return heads


def tp_pruner(model: nn.Module, x: Tensor) -> Any:
    import torch_pruning as tp

    if hasattr(model, "config"):
        model.config.use_cache = False
    return tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATIO,
        global_pruning=False, ignored_layers=[output_layer(model)], num_heads=tp_heads(model),
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=RATIO,
        in_channel_groups={}, out_channel_groups={})


def tp_zero_twin(model: nn.Module, x: Tensor) -> tuple[nn.Module, nn.Module, list[str]]:
    """Prune a copy group by group and zero the same outputs in another copy."""
    import torch_pruning as tp

    pruned, twin = copy.deepcopy(model), copy.deepcopy(model)
    names = {id(m): n for n, m in pruned.named_modules()}
    alive: dict[str, list[int]] = {}
    gone: dict[str, set[int]] = {}
    unhandled: set[str] = set()
    pruner = tp_pruner(pruned, x)
    for group in pruner.step(interactive=True):
        cuts: dict[str, set[int]] = {}
        for dep, idxs in group.items:
            target, idxs = dep.target.module, tp._helpers.to_plain_idxs(idxs)
            out = pruner.DG.is_out_channel_pruning_fn(dep.handler)
            if isinstance(target, nn.Parameter):
                key = f"{pruner.DG._param_to_name[target]}:{dep.target.pruning_dim}"
            elif id(target) in names and out:
                key = f"{names[id(target)]}:out"
            else:
                if id(target) in names and not out and not isinstance(
                        target, (nn.Linear, nn.Embedding)) and type(target).__name__ != "Conv1D":
                    unhandled.add(type(target).__name__)
                continue
            cuts.setdefault(key, set()).update(idxs)
        for key, now in cuts.items():
            size = _size(model, key)
            live = alive.setdefault(key, list(range(size)))
            removed = {live[i] for i in now}
            gone.setdefault(key, set()).update(removed)
            alive[key] = [c for c in live if c not in removed]
        group.prune()
    with torch.no_grad():
        for key, channels in gone.items():
            name, dim = key.rsplit(":", 1)
            idx = torch.tensor(sorted(channels))
            if dim != "out":
                twin.get_parameter(name).index_fill_(int(dim), idx, 0.0)
                continue
            layer = twin.get_submodule(name)
            axis = 1 if isinstance(layer, nn.Embedding) or type(layer).__name__ == "Conv1D" else 0
            layer.weight.index_fill_(axis, idx, 0.0)
            if getattr(layer, "bias", None) is not None:
                layer.bias.index_fill_(0, idx, 0.0)
    return pruned, twin, sorted(unhandled)


def _size(model: nn.Module, key: str) -> int:
    name, dim = key.rsplit(":", 1)
    if dim != "out":
        return model.get_parameter(name).shape[int(dim)]
    layer = model.get_submodule(name)
    if isinstance(layer, nn.Embedding) or type(layer).__name__ == "Conv1D":
        return layer.weight.shape[1]
    return layer.weight.shape[0]


def run_tp(name: str) -> dict[str, Any]:
    model, x1, x2 = build(name), tokens(1), tokens(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ms = cpu_ms(lambda m: tp_pruner(m, x1).step(), model)
            pruned, twin, unhandled = tp_zero_twin(model, x1)
        except Exception as err:  # noqa: BLE001 -- the library's own failure is the result
            return {"result": f"error: {type(err).__name__}: {' '.join(str(err).split()[:12])}"}
        try:
            got = logits(pruned, x2)
        except Exception as err:  # noqa: BLE001
            return {"result": f"pruned model fails: {type(err).__name__}: "
                              f"{' '.join(str(err).split()[:12])}", "ms": ms,
                    "params": count_params(pruned) / count_params(model)}
    error = output_error(got, logits(twin, x2))
    text = f"exact ({error:.0e})" if error <= 1e-4 else f"zeroed: rel err {error:.2g}"
    if unhandled:
        text += f" (also cut: {', '.join(unhandled)})"
    return {"result": text, "params": count_params(pruned) / count_params(model), "ms": ms,
            "cut": cut_summary(model, pruned), "config": config_true(pruned)}


RUNS = {"prunekit": run_prunekit, "Torch-Pruning": run_tp}
TAG = "BENCH_TRANSFORMERS "


def in_child(lib: str, name: str, budget: float) -> dict[str, Any]:
    """Run one library on one model in a child process with a time budget: a hang (Torch-
    Pruning's graph construction on Hugging Face models) is a result, not the end of the run."""
    try:
        done = subprocess.run([sys.executable, __file__, "--child", lib, name],
                              capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"result": f"no result in {budget:.0f} s (killed)"}
    line = next((x for x in done.stdout.splitlines() if x.startswith(TAG)), None)
    if line is None:
        tail = " ".join(done.stderr.split()[-12:])
        return {"result": f"child failed (exit {done.returncode}): {tail}"}
    return json.loads(line[len(TAG):])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(builders()))
    p.add_argument("--libraries", nargs="+", default=["prunekit", "Torch-Pruning"])
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds per (model, library) before it is reported as no result")
    p.add_argument("--child", nargs=2, metavar=("LIBRARY", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if args.child:
        lib, name = args.child
        print(TAG + json.dumps(RUNS[lib](name)), flush=True)
        return
    print("| model | params | prunekit: result | kept params | prune (ms) | config true "
          "| TP: result | TP kept params | TP prune (ms) | TP config true |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        cells = [name, f"{count_params(build(name)):,}"]
        for lib in RUNS:
            r = in_child(lib, name, args.budget) if lib in args.libraries else {"result": "-"}
            cells += [r["result"], f"x{r['params']:.3f}" if "params" in r else "-",
                      f"{r['ms']:.0f}" if "ms" in r else "-", r.get("config", "-")]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

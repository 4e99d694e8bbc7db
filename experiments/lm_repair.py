"""Repairing a pruned language model: distillation against plain fine-tuning, at equal steps.

    python -m experiments.lm_repair            # the full run -> experiments/results/lm_repair.json
    python -m experiments.lm_repair --tiny     # 2 of those runs (what the tests re-run)

The shipped ``tiny_llama_shakespeare`` loses half of every block's key/value heads (each with
its group of query heads) and half of its SwiGLU neurons -- ``prunekit.prune``, L1, the exact
cut of lecture 10 (about half of the parameters). Then, for every seed and every budget of
``steps``, one copy is repaired by each method with the same optimiser, learning-rate
schedule and batches (:func:`prunekit.train_lm.train_lm`; the seed draws the batches):

* ``fine-tune`` -- the next-character cross-entropy on the text;
* ``distill`` -- the KL divergence from the dense model's next-character distribution at every
  position (:func:`prunekit.llm.lm_distillation_loss`, logits only, temperature 1, as Minitron
  does). Each step also runs the teacher forward: more compute per step, the same steps.

Every record holds the loss on the whole validation split (871 windows of 128 characters)
with the standard error of that mean over windows (``val_se``), and the loss on lecture 10b's
64 windows (``lecture_loss``).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from torch import nn

import prunekit
from prunekit import llm, text
from prunekit.metrics import count_params
from prunekit.train_lm import train_lm
from prunekit.zoo import load_pretrained

from .common import RESULTS_DIR, machine_facts, script_main, write_results

NAME = "lm_repair"

CONFIG = {
    "model": "tiny_llama_shakespeare",
    "cut": {"kv_heads": 0.5, "mlp": 0.5, "importance": "l1"},
    "methods": ["fine-tune", "distill"],
    "steps": [25, 100],
    "seeds": [0, 1, 2, 3, 4],
    "batch_size": 32,
    "lr": 3e-3,                 # the peak of the dense recipe
    "warmup": 5,
    "weight_decay": 0.1,
    "temperature": 1.0,
    "alpha": 1.0,               # distillation on the logits alone
    "lecture_windows": 64,
}

#: Seed 0 of the smaller budget, both methods: what the tests re-run.
TINY = {**CONFIG, "steps": [25], "seeds": [0]}


def cut_ratios(model: nn.Module, cut: dict) -> dict[str, float]:
    """``prunekit.prune``'s ``ratios=`` for the cut: the KV-head group and the MLP group of
    every block."""
    return {**{f"blocks.{b}.attn.q_proj": cut["kv_heads"] for b in range(len(model.blocks))},
            **{f"blocks.{b}.mlp.gate": cut["mlp"] for b in range(len(model.blocks))}}


def pruned(dense: nn.Module, config: dict) -> nn.Module:
    example = torch.zeros(1, dense.config.block_size, dtype=torch.long)
    return prunekit.prune(dense, example, ratio=0.0, ratios=cut_ratios(dense, config["cut"]),
                          importance=config["cut"]["importance"]).model


def measure(model: nn.Module, splits: text.TextSplits, lecture_windows: int) -> dict:
    """Validation loss (all windows) with its standard error, and the lecture's subset."""
    block = model.config.block_size
    per_window = text.window_losses(model, *text.eval_windows(splits.val, block))
    return {"val_loss": float(per_window.mean()),
            "val_se": float(per_window.std() / len(per_window) ** 0.5),
            "lecture_loss": text.evaluate_loss(model, *text.eval_windows(splits.val, block, lecture_windows))}


def run_one(dense: nn.Module, cut: nn.Module, splits: text.TextSplits, config: dict, method: str,
            steps: int, seed: int) -> dict:
    student = copy.deepcopy(cut)
    criterion = llm.lm_distillation_loss(dense, config["temperature"], config["alpha"]) \
        if method == "distill" else None
    if method not in ("fine-tune", "distill"):
        raise ValueError(f"unknown method {method!r}; choose from {CONFIG['methods']}")
    losses = train_lm(student, splits.train, steps, config["batch_size"], dense.config.block_size,
                      config["lr"], config["warmup"], config["weight_decay"], seed=seed, progress=False,
                      **({"criterion": criterion} if criterion else {}))
    return {"method": method, "steps": steps, "seed": seed, "params": count_params(student),
            "last_train_loss": losses[-1], **measure(student, splits, config["lecture_windows"])}


def jobs(config: dict) -> list[dict]:
    return [{"method": m, "steps": s, "seed": seed} for s in config["steps"] for m in config["methods"]
            for seed in config["seeds"]]


def run(config: dict, out: Path | None = RESULTS_DIR, log=print) -> dict:
    """Run every job of ``config`` at one thread; write ``lm_repair.json`` to ``out`` unless None."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    start, records = time.perf_counter(), []
    try:
        dense, splits = load_pretrained(config["model"]), text.load_splits()
        cut = pruned(dense, config)
        for i, job in enumerate(jobs(config), 1):
            t = time.perf_counter()
            records.append(run_one(dense, cut, splits, config, **job))
            log(f"[{i}/{len(jobs(config))}] {job} -> {records[-1]['val_loss']:.4f} ({time.perf_counter() - t:.0f} s)")
        results = {"experiment": NAME, "config": config, "records": records,
                   "dense": {"params": count_params(dense), **measure(dense, splits, config["lecture_windows"])},
                   "cut": {"params": count_params(cut), **measure(cut, splits, config["lecture_windows"])}}
    finally:
        torch.set_num_threads(saved)
    results.update(seconds=round(time.perf_counter() - start, 1), **machine_facts(1))
    if out is not None:
        write_results(results, Path(out) / f"{NAME}.json")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(NAME, run, CONFIG, TINY, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

"""Recovering from a cut, compared at an equal training budget -- and against training from scratch.

    python -m experiments.recovery            # the full run -> experiments/results/recovery.json
    python -m experiments.recovery --tiny     # 3 of those runs (what the tests re-run)

The dense checkpoint loses ``ratio`` of the channels of every layer (L1, local: a *predefined*
architecture in Liu et al.'s terms). Every pruned-weights method gets the same number of
gradient steps, ``budget_steps`` at ``lr``:

* ``one-shot`` -- cut once, then all the steps;
* ``iterative-linear`` / ``iterative-agp`` -- ``rounds`` cuts on a linear or on Zhu & Gupta's
  (2017) cubic schedule (:func:`prunekit.prune.schedule_keep`), the steps shared out evenly;
* ``one-shot+distill`` -- cut once, then the steps with the distillation loss against the
  dense model (Hinton et al., 2015); each step also runs the teacher forward (recorded in
  ``train_macs``).

Liu et al. (ICLR 2019)'s controls train the same architecture from random weights with the
dense model's recipe: ``scratch-E`` for as many epochs as the dense model had, ``scratch-B``
for the same compute (more epochs, at most twice as many: :func:`prunekit.compare.scratch_b_epochs`).

An architecture *found* by pruning is the other case they separate: ``found/fine-tuned`` and
``found/scratch-E`` take the widths a global ``found_by`` ranking picks at the same MACs as the
uniform cut; if its scratch-E beats the uniform scratch-E, the ranking found a better
architecture.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunekit import prune, prune_iteratively
from prunekit.compare import plan_at_macs, reinitialize, scratch_b_epochs
from prunekit.importance import needs_data
from prunekit.metrics import count_macs, count_params
from prunekit.train import train

from .common import (RESULTS_DIR, Setup, augment, conv_widths, correct, even_shares, load_setup,
                     recalibrate, repair, run_all, script_main, seeded_batches, training_macs,
                     write_results)

NAME = "recovery"

CONFIG = {
    "dataset": "mnist_hard",
    "model": "vgg_small",
    "criterion": "l1",
    "ratio": 0.7,
    "seeds": [0, 1, 2, 3, 4],
    "methods": ["one-shot", "iterative-linear", "iterative-agp", "one-shot+distill",
                "scratch-E", "scratch-B", "found/fine-tuned", "found/scratch-E"],
    "budget_steps": 162,       # three epochs of the 3,500 training images
    "lr": 0.01,
    "rounds": 3,
    "temperature": 4.0,
    "alpha": 0.9,
    "found_by": "taylor_bn/global",
    "taylor_batches": 16,
}

#: A few of CONFIG's runs (same settings, seed 0): what the tests re-run and compare with the
#: committed records, so the cache cannot drift away from the code.
TINY = {**CONFIG, "seeds": [0], "methods": ["one-shot", "iterative-agp", "one-shot+distill"]}


def _uniform(setup: Setup, config: dict):
    return prune(setup.dense, setup.example, ratio=config["ratio"], importance=config["criterion"]).model


def _found(setup: Setup, config: dict, seed: int):
    """The widths a global ranking chooses at the uniform cut's MACs."""
    criterion, scope = config["found_by"].split("/")
    budget = count_macs(_uniform(setup, config), setup.example) / setup.dense_macs
    data = seeded_batches(setup, seed, config["taylor_batches"]) if needs_data(criterion) else None
    return plan_at_macs(setup.dense, setup.example, budget, criterion, scope, data=data,
                        batches=len(data) if data else 4, seed=seed).apply().model


def _iterative(setup: Setup, config: dict, seed: int, schedule: str):
    rounds, budget = config["rounds"], config["budget_steps"]
    shares = even_shares(budget, rounds)
    done = []

    def fine_tune(model):
        i = len(done)
        repair(model, setup, shares[i], config["lr"], seed=100 * seed + i + 1)
        done.append(count_macs(model, setup.example))
        return model

    model, _ = prune_iteratively(setup.dense, setup.example, target=config["ratio"], steps=rounds,
                                 fine_tune=fine_tune, schedule=schedule,
                                 importance=config["criterion"])
    return model, sum(training_macs(m, s) for m, s in zip(done, shares))


def _scratch(setup: Setup, architecture, seed: int, epochs: int):
    """Liu et al.'s control: the same architecture, fresh weights, the dense model's recipe."""
    model = reinitialize(architecture, seed)
    train(model, setup.loaders.train, epochs=epochs, lr=setup.recipe["lr"], seed=seed,
          progress=False, weight_decay=setup.recipe["weight_decay"], augment=augment(setup.recipe))
    return recalibrate(model, setup), epochs * setup.steps_per_epoch


def run_one(setup: Setup, config: dict, method: str, seed: int) -> dict:
    """One record: build the model ``method`` describes, train it, measure it."""
    steps, lr = config["budget_steps"], config["lr"]
    extra: dict = {}
    if method in ("one-shot", "one-shot+distill", "found/fine-tuned"):
        model = _found(setup, config, seed) if method.startswith("found") else _uniform(setup, config)
        teacher = setup.dense if method.endswith("distill") else None
        repair(model, setup, steps, lr, seed, teacher, config["temperature"], config["alpha"])
        macs = count_macs(model, setup.example)
        train_macs = training_macs(macs, steps, setup.dense_macs if teacher is not None else 0)
    elif method.startswith("iterative-"):
        model, train_macs = _iterative(setup, config, seed, method.split("-", 1)[1])
    elif method in ("scratch-E", "scratch-B", "found/scratch-E"):
        architecture = _found(setup, config, seed) if method.startswith("found") else _uniform(setup, config)
        arch_macs = count_macs(architecture, setup.example)
        epochs = setup.dense_epochs if method.endswith("-E") else \
            scratch_b_epochs(setup.dense_epochs, setup.dense_macs, arch_macs)
        model, steps = _scratch(setup, architecture, seed, epochs)
        train_macs = training_macs(arch_macs, steps)
        extra = {"epochs": epochs}
    else:
        raise ValueError(f"unknown method {method!r}; choose from {CONFIG['methods']}")
    return {"method": method, "seed": seed, "macs": count_macs(model, setup.example),
            "params": count_params(model), "widths": conv_widths(model), "train_steps": steps,
            "train_macs": train_macs, **extra, "correct": correct(model, setup),
            "total": len(setup.loaders.test.dataset)}


def jobs(config: dict) -> list[dict]:
    return [{"method": m, "seed": s} for m in config["methods"] for s in config["seeds"]]


def run(config: dict, out: Path | None = RESULTS_DIR, setup: Setup | None = None,
        log=print) -> dict:
    """Run every job of ``config``; write ``recovery.json`` to ``out`` unless it is None."""
    setup = setup or load_setup(config["dataset"], config["model"])
    results = run_all(NAME, config, jobs(config), lambda job: run_one(setup, config, **job), log=log)
    results["dense"] = {"correct": setup.dense_eval.correct, "total": setup.dense_eval.total,
                        "macs": setup.dense_macs, "widths": conv_widths(setup.dense),
                        "epochs": setup.dense_epochs, "steps_per_epoch": setup.steps_per_epoch,
                        "train_macs": training_macs(setup.dense_macs,
                                                    setup.dense_epochs * setup.steps_per_epoch)}
    if out is not None:
        write_results(results, Path(out) / f"{NAME}.json")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(NAME, run, CONFIG, TINY, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

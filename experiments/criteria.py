"""Pruning criteria compared fairly: at equal MACs, over seeds, with enough data.

    python -m experiments.criteria            # the full sweep -> experiments/results/criteria.json
    python -m experiments.criteria --tiny     # 4 of those runs (what the tests re-run)

For every MAC budget, seed and method: prune the dense model to at most that share of its MACs
(:func:`prunekit.compare.plan_at_macs`), recalibrate BatchNorm (the "recal" accuracy), then
repair it -- ``repair_steps`` gradient steps at ``lr`` -- and measure the test accuracy.

Methods (``criterion/scope``):

* ``l1``, ``fpgm``, ``bn_scale``, ``taylor_bn``, ``random`` -- one-shot, ``local``: every layer
  loses the same share, so all of them have exactly the same widths and MACs;
* the same criteria ``global`` -- one ranking over all layers (each layer's scores divided by
  their mean): the criterion also decides the widths, so only an equal-MAC budget makes them
  comparable;
* ``taylor_bn@2fixed/local`` -- Taylor-BN from the same 2 training batches for every seed: how
  the course used to run it (and why it concluded that even random beats it);
* ``taylor_bn/iterative`` -- Molchanov et al. (2017): ``iterative_steps`` rounds of (fresh
  Taylor-BN scores -> global prune of about the same number of channels -> a share of the
  repair steps); the same total number of gradient steps as the one-shot methods.

The ``baseline`` block repeats the local one-shot criteria on the plain MNIST subset, where the
small VGG is nearly saturated: the yardstick for "do criteria separate on the harder task?".

Data-driven criteria see ``taylor_batches`` batches of 64 training images, drawn afresh for
every seed (``experiments.common.seeded_batches``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prunekit.compare import plan_at_macs
from prunekit.importance import needs_data
from prunekit.metrics import count_macs, count_params

from .common import (RESULTS_DIR, Setup, conv_widths, correct, even_shares, load_setup, recalibrate,
                     repair, run_all, script_main, seeded_batches, write_results)

NAME = "criteria"

#: The configuration the committed results were computed with.
CONFIG = {
    "dataset": "mnist_hard",
    "model": "vgg_small",
    # the same methods' baseline on the plain MNIST subset, where nearly everything recovers
    "baseline": {"dataset": "mnist", "methods": ["l1/local", "fpgm/local", "bn_scale/local",
                                                 "taylor_bn/local", "random/local"]},
    "macs_kept": [0.25, 0.1],
    "seeds": [0, 1, 2, 3, 4],
    "methods": ["l1/local", "fpgm/local", "bn_scale/local", "taylor_bn/local",
                "taylor_bn@2fixed/local", "random/local",
                "l1/global", "fpgm/global", "bn_scale/global", "taylor_bn/global",
                "taylor_bn/iterative"],
    "taylor_batches": 16,
    "repair_steps": 54,        # one epoch of the 3,500 training images
    "lr": 0.01,
    "iterative_steps": 6,
}

#: A few of CONFIG's runs (same settings, seed 0): what the tests re-run and compare with the
#: committed records, so the cache cannot drift away from the code.
TINY = {**CONFIG, "macs_kept": [0.25], "seeds": [0], "baseline": None,
        "methods": ["l1/local", "taylor_bn/local", "fpgm/global", "taylor_bn/iterative"]}


def _criterion_data(setup: Setup, criterion: str, seed: int, config: dict):
    if criterion == "taylor_bn@2fixed":               # the old recipe: 2 batches, never resampled
        return "taylor_bn", [b for b, _ in zip(setup.calib, range(2))]
    if needs_data(criterion):
        return criterion, seeded_batches(setup, seed, config["taylor_batches"])
    return criterion, None


def one_shot(setup: Setup, criterion: str, scope: str, macs_kept: float, seed: int, config: dict):
    """Prune once to the MAC budget; returns (model, ratio found)."""
    importance, data = _criterion_data(setup, criterion, seed, config)
    plan = plan_at_macs(setup.dense, setup.example, macs_kept, importance, scope, data=data,
                        batches=len(data) if data else 4, seed=seed)
    return plan.apply().model, plan.settings["ratio"]


def iterative_levels(macs_kept: float, rounds: int) -> list[float]:
    """The share of the dense MACs kept after each round 0..rounds of :func:`iterative_taylor`:
    the same share of the channels goes every round, and MACs scale with channels squared."""
    return [(1 - (1 - macs_kept ** 0.5) * i / rounds) ** 2 for i in range(rounds + 1)]


def iterative_taylor(setup: Setup, macs_kept: float, seed: int, config: dict):
    """Molchanov et al. (2017): re-score, prune a little (globally), fine-tune, repeat.

    They remove one feature map per iteration -- the same *number of channels* every time. A
    conv's MACs grow with (input channels) x (output channels), so removing an equal share of
    the channels per round means the kept MAC share after round ``i`` of ``n`` is about
    ``(1 - (1 - sqrt(macs_kept)) * i / n)^2`` (:func:`iterative_levels`). The last round is still
    the biggest relative cut -- going to 10% in 6 rounds, 46% of what is left (falling linearly
    in MACs it would be 60%). The repair steps are shared out evenly over the rounds; fresh
    Taylor-BN batches every round."""
    rounds, model = config["iterative_steps"], setup.dense
    steps = even_shares(config["repair_steps"], rounds)
    levels = iterative_levels(macs_kept, rounds)
    for i in range(1, rounds + 1):
        level, now = levels[i], count_macs(model, setup.example)
        batches = seeded_batches(setup, 100 * seed + i, config["taylor_batches"])
        plan = plan_at_macs(model, setup.example, min(1.0, level * setup.dense_macs / now),
                            "taylor_bn", "global", data=batches, batches=len(batches))
        model = plan.apply().model
        repair(model, setup, steps[i - 1], config["lr"], seed=100 * seed + i)
    return model


def run_one(setup: Setup, config: dict, dataset: str, method: str, macs_kept: float,
            seed: int) -> dict:
    """One record: prune ``setup.dense`` with ``method`` to ``macs_kept`` of its MACs, repair,
    measure. (``dataset`` names the task; it must be ``setup.dataset``.)"""
    if dataset != setup.dataset:
        raise ValueError(f"a {dataset!r} job needs a {dataset!r} setup, got {setup.dataset!r}")
    criterion, scope = method.split("/")
    record = {"dataset": dataset, "method": method, "macs_kept": macs_kept, "seed": seed}
    if scope == "iterative":
        model = iterative_taylor(setup, macs_kept, seed, config)
        record.update(ratio=None, correct_recal=None)
    else:
        model, ratio = one_shot(setup, criterion, scope, macs_kept, seed, config)
        recalibrate(model, setup)
        record.update(ratio=round(ratio, 4), correct_recal=correct(model, setup))
        repair(model, setup, config["repair_steps"], config["lr"], seed, recalibrated=True)
    record.update(macs=count_macs(model, setup.example), params=count_params(model),
                  widths=conv_widths(model), correct=correct(model, setup),
                  total=len(setup.loaders.test.dataset))
    return record


def jobs(config: dict) -> list[dict]:
    """Every run of ``config``: the main task's methods, then the baseline task's."""
    tasks = [(config["dataset"], config["methods"])]
    if config.get("baseline"):
        tasks.append((config["baseline"]["dataset"], config["baseline"]["methods"]))
    return [{"dataset": d, "method": m, "macs_kept": k, "seed": s}
            for d, methods in tasks for k in config["macs_kept"] for m in methods for s in config["seeds"]]


def run(config: dict, out: Path | None = RESULTS_DIR, setup: Setup | None = None,
        log=print) -> dict:
    """Run every job of ``config``; write ``criteria.json`` to ``out`` unless it is None.
    ``setup`` (optional) is the main task's, already loaded."""
    setups = {setup.dataset: setup} if setup else {}

    def setup_for(dataset: str) -> Setup:
        if dataset not in setups:
            setups[dataset] = load_setup(dataset, config["model"])
        return setups[dataset]

    results = run_all(NAME, config, jobs(config),
                      lambda job: run_one(setup_for(job["dataset"]), config, **job), log=log)
    results["dense"] = {d: {"correct": s.dense_eval.correct, "total": s.dense_eval.total,
                            "macs": s.dense_macs, "widths": conv_widths(s.dense), "model": s.model_name}
                        for d, s in setups.items()}
    if out is not None:
        write_results(results, Path(out) / f"{NAME}.json")
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(NAME, run, CONFIG, TINY, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

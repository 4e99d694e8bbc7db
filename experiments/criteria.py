"""Pruning criteria compared fairly: at equal MACs, over seeds, with enough data.

    python -m experiments.criteria            # the full sweep -> experiments/results/criteria.json
    python -m experiments.criteria --tiny     # 5 of those runs (what the tests re-run)
    python -m experiments.criteria --add taylor_bn_per_image/local,taylor_bn_per_image/global
                                              # only these methods' runs, merged into the JSON

For every MAC budget, seed and method: prune the dense model to at most that share of its MACs
(:func:`prunekit.compare.plan_at_macs`), recalibrate BatchNorm (the "recal" accuracy), then
repair it -- ``repair_steps`` gradient steps at ``lr`` -- and measure the test accuracy.

Methods (``criterion/scope``):

* ``l1``, ``fpgm``, ``bn_scale``, ``taylor_bn``, ``random`` -- one-shot, ``local``: every layer
  loses the same share, so all of them have exactly the same widths and MACs;
* the same criteria ``global`` -- one ranking over all layers (each layer's scores divided by
  their mean): the criterion also decides the widths, so only an equal-MAC budget makes them
  comparable;
* ``taylor_bn@2fixed/local`` -- Taylor-BN from the same 2 training batches for every seed: the
  starved recipe, a control (with it, even random seems to beat Taylor-BN);
* ``taylor_bn_per_image/local`` and ``/global`` -- Taylor-BN with the absolute value taken per
  *image* instead of per batch of 64 (Michel et al., 2019 define head importance that way):
  :func:`taylor_bn_per_image`, on the same batches as ``taylor_bn`` for the same seed;
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
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.compare import plan_at_macs
from prunekit.graph import PRODUCER_ROLES, build_graph, eval_mode
from prunekit.importance import needs_data
from prunekit.metrics import count_macs, count_params

from .common import (RESULTS_DIR, Setup, conv_widths, correct, even_shares, load_setup, machine_facts,
                     read_results, recalibrate, repair, run_all, script_main, seeded_batches,
                     write_results)

NAME = "criteria"

#: The configuration the committed results were computed with.
CONFIG = {
    "dataset": "mnist_hard",
    "model": "vgg_small",
    # the same methods' baseline on the plain MNIST subset, where nearly everything recovers
    "baseline": {"dataset": "mnist", "methods": ["l1/local", "fpgm/local", "bn_scale/local",
                                                 "taylor_bn/local", "random/local",
                                                 "taylor_bn_per_image/local"]},
    "macs_kept": [0.25, 0.1],
    "seeds": [0, 1, 2, 3, 4],
    "methods": ["l1/local", "fpgm/local", "bn_scale/local", "taylor_bn/local",
                "taylor_bn@2fixed/local", "random/local",
                "l1/global", "fpgm/global", "bn_scale/global", "taylor_bn/global",
                "taylor_bn/iterative", "taylor_bn_per_image/local", "taylor_bn_per_image/global"],
    "taylor_batches": 16,
    "repair_steps": 54,        # one epoch of the 3,500 training images
    "lr": 0.01,
    "iterative_steps": 6,
}

#: A few of CONFIG's runs (same settings, seed 0): what the tests re-run and compare with the
#: committed records, so the cache cannot drift away from the code.
TINY = {**CONFIG, "macs_kept": [0.25], "seeds": [0], "baseline": None,
        "methods": ["l1/local", "taylor_bn/local", "fpgm/global", "taylor_bn/iterative",
                    "taylor_bn_per_image/local"]}

#: Criteria this script defines itself (a callable importance, see :func:`taylor_bn_per_image`).
PER_IMAGE = "taylor_bn_per_image"


# ----------------------------------------------------------------------------- per-image Taylor
def bn_gate_taylor(model: nn.Module, batches: Sequence[tuple[Tensor, Tensor]],
                   per_image: bool) -> dict[str, Tensor]:
    """Taylor-BN of every BatchNorm channel: ``|gamma dL/dgamma + beta dL/dbeta|``, averaged.

    Removing channel ``c`` sets its gate ``gamma_c, beta_c`` to 0; to first order the loss
    changes by ``-(gamma_c dL/dgamma_c + beta_c dL/dbeta_c)``. With ``y = gamma * xhat + beta``
    (the BN output) that sum is exactly ``sum over positions of y * dL/dy`` -- so one backward
    pass gives it for every image: in eval mode the images of a batch do not interact, and with
    the *summed* loss ``dL/dy_i`` of image ``i`` is the gradient of that image's own loss.

    ``per_image=False``: the absolute value of each batch's mean (what ``prunekit``'s
    ``"taylor_bn"`` computes); ``per_image=True``: of each image's own value, then the mean over
    images. In a trained model the images' signed values largely cancel within a batch, so the
    two can rank channels differently. Returns ``{BatchNorm name: Tensor[channels]}`` (CPU).
    """
    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    outputs: dict[str, Tensor] = {}

    def keep_output(name: str):
        def hook(_module, _inputs, output):
            outputs[name] = output
            return output.clone()       # an in-place ReLU after it must not overwrite what we keep
        return hook

    handles = [m.register_forward_hook(keep_output(n)) for n, m in bns.items()]
    totals = {n: torch.zeros(m.num_features) for n, m in bns.items()}
    count = 0
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            for x, y in batches:
                outputs.clear()
                loss = F.cross_entropy(model(x.to(device)), y.to(device), reduction="sum")
                grads = torch.autograd.grad(loss, [outputs[n] for n in bns])
                for n, g in zip(bns, grads):
                    signed = (g * outputs[n]).detach().flatten(2).sum(2)     # (images, channels)
                    totals[n] += (signed.abs().sum(0) if per_image
                                  else signed.mean(0).abs() * len(y)).cpu()
                count += len(y)
    finally:
        for h in handles:
            h.remove()
    return {n: t / count for n, t in totals.items()}


def taylor_bn_per_image(model: nn.Module, example: Tensor,
                        batches: Sequence[tuple[Tensor, Tensor]]) -> Callable[[nn.Module], Tensor]:
    """Per-image Taylor-BN as a *callable importance* for ``prunekit`` (``fn(layer) -> scores``).

    prunekit sums a callable's scores over the layers that produce a group's channels; the
    score lives on the group's BatchNorms. So the callable hands each producer its share of the
    group's summed BN score -- the same group score ``"taylor_bn"`` forms, only with the
    absolute value taken per image (:func:`bn_gate_taylor`).
    """
    per_bn = bn_gate_taylor(model, batches, per_image=True)
    graph = build_graph(model, example)
    shares: dict[str, Tensor] = {}
    for group in graph.prunable_groups():
        total = torch.zeros(group.size)
        for m in group.members:
            if m.role == "bn":
                total.index_add_(0, m.units, per_bn[m.module][m.positions])
        producers = [m for m in group.members if m.role in PRODUCER_ROLES]
        for m in producers:
            layer = model.get_submodule(m.module)
            share = shares.setdefault(m.module, torch.zeros(layer.weight.shape[0]))
            share[m.positions] += total[m.units] / len(producers)
    # prunekit hands the callable its copy of each layer, so a layer is recognised by its weights
    weights = {name: model.get_submodule(name).weight.detach() for name in shares}

    def score(layer: nn.Module) -> Tensor:
        for name, weight in weights.items():
            if weight.shape == layer.weight.shape and torch.equal(weight, layer.weight.detach()):
                return shares[name]
        raise KeyError(f"{type(layer).__name__} is not a producer of this model's prunable groups")

    return score


def _criterion_data(setup: Setup, criterion: str, seed: int, config: dict):
    """(importance, data) for ``plan_at_macs``: the criterion's name or callable, and its batches."""
    if criterion == "taylor_bn@2fixed":               # the starved recipe: 2 batches, never resampled
        return "taylor_bn", [b for b, _ in zip(setup.calib, range(2))]
    if criterion == PER_IMAGE:                       # the same batches as taylor_bn for this seed
        batches = seeded_batches(setup, seed, config["taylor_batches"])
        return taylor_bn_per_image(setup.dense, setup.example, batches), None
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


def _methods_only(config: dict) -> dict:
    """``config`` without its method lists: what must match for records to be merged."""
    baseline = config.get("baseline") and {**config["baseline"], "methods": None}
    return {**config, "methods": None, "baseline": baseline}


def add_methods(methods: list[str], folder: Path = RESULTS_DIR, log=print) -> dict:
    """Run only the jobs of ``methods`` (new entries of ``CONFIG``'s method lists, for the main
    task and the baseline) and merge them into the committed ``criteria.json``, in the order a
    full run writes them.

    Refused unless everything else is unchanged -- every other setting, the methods already
    run, and the machine facts (CPU, torch, threads): one file must stay one machine's, or the
    exact re-run test means nothing.
    """
    committed = read_results(NAME, folder)
    key = ("dataset", "method", "macs_kept", "seed")
    done = {tuple(r[k] for k in key) for r in committed["records"]}
    if _methods_only(committed["config"]) != _methods_only(CONFIG):
        raise ValueError("CONFIG differs from the committed run in more than its methods: "
                         "run the whole sweep (python -m experiments.criteria)")
    new = [job for job in jobs(CONFIG) if tuple(job[k] for k in key) not in done]
    if {job["method"] for job in new} != set(methods) or \
            len(done) + len(new) != len(jobs(CONFIG)):
        raise ValueError(f"--add {methods}: the jobs the file lacks are those of "
                         f"{sorted({job['method'] for job in new})} (and it may hold runs CONFIG no longer lists)")
    facts = machine_facts(committed["threads"])
    if any(committed[k] != v for k, v in facts.items()):
        raise ValueError(f"the committed runs came from {committed['cpu']}, torch {committed['torch']}; "
                         f"this is {facts['cpu']}, torch {facts['torch']}: run the whole sweep here")
    setups: dict[str, Setup] = {}

    def run_job(job: dict) -> dict:
        if job["dataset"] not in setups:
            setups[job["dataset"]] = load_setup(job["dataset"], CONFIG["model"])
        return run_one(setups[job["dataset"]], CONFIG, **job)

    fresh = run_all(NAME, CONFIG, new, run_job, log=log)
    by_key = {tuple(r[k] for k in key): r for r in committed["records"] + fresh["records"]}
    merged = {**committed, "config": CONFIG, "seconds": round(committed["seconds"] + fresh["seconds"], 1),
              "records": [by_key[tuple(job[k] for k in key)] for job in jobs(CONFIG)]}
    write_results(merged, Path(folder) / f"{NAME}.json")
    return merged


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--add" in argv:          # python -m experiments.criteria --add m1,m2 [--out FOLDER]
        i = argv.index("--add")
        folder = Path(argv[argv.index("--out") + 1]) if "--out" in argv else RESULTS_DIR
        merged = add_methods(argv[i + 1].split(","), folder)
        print(f"{len(merged['records'])} runs in {folder / (NAME + '.json')}")
        return 0
    return script_main(NAME, run, CONFIG, TINY, argv, __doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

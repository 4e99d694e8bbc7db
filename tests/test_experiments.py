"""experiments/: the committed results are what the scripts compute, and the experiments are fair.

The long sweeps behind lectures 06 and 07 run as scripts (``python -m experiments.criteria``,
``python -m experiments.recovery``) and are committed as JSON. These tests keep that cache
honest: its configuration must be the script's, every run must be there, and a few runs
re-computed here must give the committed numbers -- exactly on the machine that computed
them, within a few test images elsewhere (other CPUs add floats in another order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                 # experiments/ is a folder of scripts, not installed
    sys.path.insert(0, str(ROOT))

from experiments import common, criteria, recovery  # noqa: E402
from prunekit.prune import SCHEDULES, schedule_keep  # noqa: E402
from prunekit.zoo import pretrained_info  # noqa: E402

CROSS_MACHINE_TOLERANCE = 10   # test images (1%): training amplifies float-order differences


@pytest.fixture(scope="module")
def setup():
    return common.load_setup(criteria.CONFIG["dataset"], criteria.CONFIG["model"])


def test_the_experiments_use_the_shipped_hard_checkpoint(setup):
    assert setup.model_name == "vgg_small_hard" and setup.dataset == "mnist_hard"
    assert setup.dense_eval.correct == pretrained_info("vgg_small_hard")["test_correct"]
    assert setup.recipe["max_shift"] == 2           # later training uses the dense recipe's shifts


def _same_machine(results: dict) -> bool:
    return all(results[k] == v for k, v in common.machine_facts(results["threads"]).items())


def _check_reproduces(committed: dict, fresh: dict) -> None:
    key_names = [k for k in ("dataset", "method", "macs_kept", "seed") if k in fresh["records"][0]]
    by_key = {tuple(r[k] for k in key_names): r for r in committed["records"]}
    exact = _same_machine(committed)
    for record in fresh["records"]:
        old = by_key[tuple(record[k] for k in key_names)]
        for field in ("macs", "params", "widths", "total"):
            assert record[field] == old[field], (record["method"], field)
        tolerance = 0 if exact else CROSS_MACHINE_TOLERANCE
        for field in ("correct", "correct_recal"):
            if old.get(field) is not None:
                assert abs(record[field] - old[field]) <= tolerance, (record, old)


@pytest.mark.parametrize("module", [criteria, recovery], ids=["criteria", "recovery"])
def test_committed_results_ran_the_scripts_configuration(module):
    results = common.read_results(module.NAME)
    assert results["config"] == module.CONFIG, "the script's CONFIG changed: re-run the script"
    keys = list(module.jobs(module.CONFIG)[0])
    done = [{k: r[k] for k in keys} for r in results["records"]]
    assert done == module.jobs(module.CONFIG), "records missing or out of order: re-run the script"
    assert all(r["total"] == 1000 for r in results["records"])


@pytest.mark.slow
@pytest.mark.parametrize("module", [criteria, recovery], ids=["criteria", "recovery"])
def test_tiny_run_reproduces_the_committed_records(module, setup):
    tiny = module.run(module.TINY, out=None, setup=setup, log=lambda _: None)
    assert len(tiny["records"]) == len(module.jobs(module.TINY)) >= 3
    _check_reproduces(common.read_results(module.NAME), tiny)


def test_a_changed_record_would_be_caught():
    committed = common.read_results(criteria.NAME)
    forged = {"records": [dict(committed["records"][0])]}
    forged["records"][0]["correct"] += CROSS_MACHINE_TOLERANCE + 1
    with pytest.raises(AssertionError):
        _check_reproduces(committed, forged)


def test_cli_tiny_writes_its_results(tmp_path, monkeypatch):
    # the CLI is the documented entry point; run it on a stand-in for the real experiment
    calls = []
    monkeypatch.setattr(criteria, "run", lambda config, out: calls.append((config, out)) or
                        {"records": [], "seconds": 0.0})
    assert criteria.main(["--tiny", "--out", str(tmp_path)]) == 0
    assert calls == [(criteria.TINY, tmp_path)]


def test_add_methods_merges_only_the_missing_runs_in_order(tmp_path, monkeypatch):
    committed = common.read_results(criteria.NAME)
    added = [m for m in criteria.CONFIG["methods"] if m.startswith(criteria.PER_IMAGE)]
    assert added, "the per-image Taylor runs are part of the committed sweep"
    older = {**committed, "records": [r for r in committed["records"] if r["method"] not in added]}
    older["config"] = {**criteria.CONFIG, "methods": [m for m in criteria.CONFIG["methods"] if m not in added],
                       "baseline": {**criteria.CONFIG["baseline"], "methods": [
                           m for m in criteria.CONFIG["baseline"]["methods"] if m not in added]}}
    older.update(common.machine_facts(committed["threads"]))       # as if computed on this machine
    common.write_results(older, tmp_path / "criteria.json")
    ran = []
    monkeypatch.setattr(criteria, "load_setup", lambda dataset, model: dataset)
    monkeypatch.setattr(criteria, "run_one", lambda setup, config, **job: ran.append(job) or {**job, "correct": 1})
    with pytest.raises(ValueError, match="lacks are those of"):
        criteria.add_methods(added[:1] + ["l1/local"], tmp_path, log=lambda _: None)
    merged = criteria.add_methods(added, tmp_path, log=lambda _: None)
    keys = [{k: r[k] for k in ("dataset", "method", "macs_kept", "seed")} for r in merged["records"]]
    assert keys == criteria.jobs(criteria.CONFIG)                   # every run, in the full run's order
    assert all(job["method"] in added for job in ran) and len(ran) == len(keys) - len(older["records"])
    assert merged["config"] == criteria.CONFIG


def test_add_methods_refuses_other_settings_and_other_machines(tmp_path):
    committed = common.read_results(criteria.NAME)
    changed = {**committed, "config": {**committed["config"], "lr": 0.02}}
    common.write_results(changed, tmp_path / "criteria.json")
    with pytest.raises(ValueError, match="more than its methods"):
        criteria.add_methods(["taylor_bn_per_image/local"], tmp_path)
    elsewhere = {**committed, "records": committed["records"][:-1], "cpu": "another CPU"}
    common.write_results(elsewhere, tmp_path / "criteria.json")
    with pytest.raises(ValueError, match="another CPU"):
        criteria.add_methods([committed["records"][-1]["method"]], tmp_path)


# ----------------------------------------------------------------------------- per-image Taylor
def test_bn_gate_taylor_per_batch_is_prunekits_taylor_bn(setup):
    from prunekit.importance import taylor
    batches = common.seeded_batches(setup, 0, 2)
    ours = criteria.bn_gate_taylor(setup.dense, batches, per_image=False)
    library = taylor(setup.dense, batches, batches=2)
    assert ours.keys() and all(torch.allclose(ours[n], library[n], rtol=1e-4, atol=1e-8) for n in ours)


def test_per_image_and_per_batch_differ_only_in_where_the_absolute_value_is_taken(setup):
    x, y = common.seeded_batches(setup, 1, 1)[0]
    singles = [(x[i:i + 1], y[i:i + 1]) for i in range(8)]
    per_image = criteria.bn_gate_taylor(setup.dense, [(x[:8], y[:8])], per_image=True)
    one_by_one = criteria.bn_gate_taylor(setup.dense, singles, per_image=False)   # a batch of one image
    per_batch = criteria.bn_gate_taylor(setup.dense, [(x[:8], y[:8])], per_image=False)
    for n in per_image:
        assert torch.allclose(per_image[n], one_by_one[n], rtol=1e-4, atol=1e-8)
        assert (per_image[n] >= per_batch[n] - 1e-7).all()              # |mean| <= mean of |.|
    assert any(not torch.allclose(per_image[n], per_batch[n]) for n in per_image)


def test_per_image_callable_gives_each_group_its_summed_bn_score(setup):
    from prunekit.graph import build_graph
    from prunekit.importance import group_scores
    batches = common.seeded_batches(setup, 2, 2)
    per_bn = criteria.bn_gate_taylor(setup.dense, batches, per_image=True)
    graph = build_graph(setup.dense, setup.example)
    groups = graph.prunable_groups()
    scores = group_scores(setup.dense, graph, groups, criteria.taylor_bn_per_image(setup.dense, setup.example, batches))
    for g in groups:
        (bn,) = g.modules("bn")
        assert torch.allclose(scores[g.index], per_bn[bn], rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------- fairness
def test_data_driven_criteria_get_enough_data_resampled_per_seed(setup):
    assert criteria.CONFIG["taylor_batches"] >= 16 and recovery.CONFIG["taylor_batches"] >= 16
    a, b = (common.seeded_batches(setup, seed, 16) for seed in (0, 1))
    assert len(a) == 16 and all(len(y) == common.BATCH for _, y in a)
    assert not torch.equal(a[0][1], b[0][1])                       # another seed, other images
    assert torch.equal(a[3][0], common.seeded_batches(setup, 0, 16)[3][0])   # and reproducible


def test_criteria_are_compared_at_equal_macs():
    results = common.read_results(criteria.NAME)
    for dataset, dense in results["dense"].items():
        for kept in criteria.CONFIG["macs_kept"]:
            macs = [r["macs"] / dense["macs"] for r in results["records"]
                    if r["macs_kept"] == kept and r["dataset"] == dataset]
            assert macs and max(macs) <= kept and min(macs) >= kept - 0.01, (dataset, kept, macs)


def test_recovery_methods_get_the_same_budget():
    results = common.read_results(recovery.NAME)
    pruned = [r for r in results["records"] if not r["method"].startswith(("scratch", "found/scratch"))]
    assert {r["train_steps"] for r in pruned} == {recovery.CONFIG["budget_steps"]}
    uniform = [r for r in results["records"] if not r["method"].startswith("found")]
    assert len({tuple(r["widths"]) for r in uniform}) == 1           # one architecture, many recipes
    by = {r["method"]: r for r in results["records"] if r["seed"] == 0}
    assert by["scratch-E"]["epochs"] == results["dense"]["epochs"]
    assert by["scratch-B"]["epochs"] == 2 * results["dense"]["epochs"]  # > 2x cheaper: capped at 2x


def test_step_loader_gives_exactly_the_budget(setup):
    batches = list(common.step_loader(setup, 70, seed=3))       # more than one epoch (54 steps)
    assert len(batches) == 70 and all(len(y) == common.BATCH for _, y in batches)
    again = list(common.step_loader(setup, 70, seed=3))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))


# ----------------------------------------------------------------------------- schedules
def test_agp_schedule_is_zhu_and_gupta_cubic():
    removed = [1 - k for k in schedule_keep(0.7, 3, "agp")]
    assert removed == pytest.approx([0.0, 0.7 * (1 - (2 / 3) ** 3), 0.7 * (1 - (1 / 3) ** 3), 0.7])
    linear = [1 - k for k in schedule_keep(0.7, 3, "linear")]
    assert linear == pytest.approx([0.0, 0.7 / 3, 1.4 / 3, 0.7])
    assert all(a > b for a, b in zip(removed[1:-1], linear[1:-1]))   # front-loaded
    assert "agp" in SCHEDULES
    with pytest.raises(Exception, match="agp"):
        schedule_keep(0.5, 2, "cosine")

"""experiments/lm_repair.py: the cached repair runs of lecture 10b are what the script computes,
and the two repairs are compared fairly (same cut, same steps, same batches)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                 # experiments/ is a folder of scripts, not installed
    sys.path.insert(0, str(ROOT))

from experiments import common, lm_repair  # noqa: E402
from prunekit.zoo import load_pretrained  # noqa: E402

#: nats: 25 training steps carry a float-order difference between CPUs into the loss
CROSS_MACHINE_TOLERANCE = 0.02


def _same_machine(results: dict) -> bool:
    return all(results[k] == v for k, v in common.machine_facts(results["threads"]).items())


def test_committed_results_ran_the_scripts_configuration():
    results = common.read_results(lm_repair.NAME)
    assert results["config"] == lm_repair.CONFIG, "the script's CONFIG changed: re-run the script"
    keys = list(lm_repair.jobs(lm_repair.CONFIG)[0])
    assert [{k: r[k] for k in keys} for r in results["records"]] == lm_repair.jobs(lm_repair.CONFIG)


def test_both_repairs_start_from_one_cut_with_the_same_budget():
    results = common.read_results(lm_repair.NAME)
    assert {r["params"] for r in results["records"]} == {results["cut"]["params"]}
    for steps in lm_repair.CONFIG["steps"]:
        seeds = {m: sorted(r["seed"] for r in results["records"] if (r["method"], r["steps"]) == (m, steps))
                 for m in lm_repair.CONFIG["methods"]}
        assert seeds == {m: lm_repair.CONFIG["seeds"] for m in lm_repair.CONFIG["methods"]}
    assert results["dense"]["val_loss"] < min(r["val_loss"] for r in results["records"]) < results["cut"]["val_loss"]
    assert all(0 < r["val_se"] < 0.05 for r in results["records"])


def test_the_cut_halves_kv_heads_and_neurons():
    dense = load_pretrained(lm_repair.CONFIG["model"])
    cut = lm_repair.pruned(dense, lm_repair.CONFIG)
    for block in cut.blocks:
        assert block.attn.k_proj.out_features == dense.config.head_dim          # 1 of 2 KV heads
        assert block.attn.q_proj.out_features == 2 * dense.config.head_dim      # its 2 query heads
        assert block.mlp.gate.out_features == dense.config.mlp_hidden // 2
    assert sum(p.numel() for p in cut.parameters()) == common.read_results(lm_repair.NAME)["cut"]["params"]


@pytest.mark.slow
def test_tiny_run_reproduces_the_committed_records():
    tiny = lm_repair.run(lm_repair.TINY, out=None, log=lambda _: None)
    committed = common.read_results(lm_repair.NAME)
    by_key = {(r["method"], r["steps"], r["seed"]): r for r in committed["records"]}
    tolerance = 0.0 if _same_machine(committed) else CROSS_MACHINE_TOLERANCE
    assert len(tiny["records"]) == 2
    for record in tiny["records"]:
        old = by_key[(record["method"], record["steps"], record["seed"])]
        assert record["params"] == old["params"]
        for field in ("val_loss", "lecture_loss"):
            assert abs(record[field] - old[field]) <= tolerance, (record, old)


def test_cli_tiny_writes_its_results(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(lm_repair, "run", lambda config, out: calls.append((config, out)) or
                        {"records": [], "seconds": 0.0})
    assert lm_repair.main(["--tiny", "--out", str(tmp_path)]) == 0
    assert calls == [(lm_repair.TINY, tmp_path)]

"""prunekit.compare: rank correlations, seed sweeps, Pareto, scratch (the oracle: test_importance)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import prunekit
from engine_nets import TinyConvNet
from prunekit import compare


def test_spearman_and_kendall_of_identical_and_reversed_rankings():
    a = [0.1, 0.5, 0.3, 2.0, 1.1]
    assert compare.spearman(a, a) == pytest.approx(1.0)
    assert compare.kendall(a, a) == pytest.approx(1.0)
    reversed_ = [-v for v in a]
    assert compare.spearman(a, reversed_) == pytest.approx(-1.0)
    assert compare.kendall(a, reversed_) == pytest.approx(-1.0)
    # only the order counts: a monotone transform changes nothing
    assert compare.spearman(a, np.exp(a)) == pytest.approx(1.0)


def test_rank_correlation_known_value_and_bad_input():
    # one swapped pair among 4: d^2 = 1 + 1 -> rho = 1 - 6*2/(4*15) = 0.8; tau = (5-1)/6
    assert compare.spearman([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.8)
    assert compare.kendall([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert compare.spearman([1, 1, 1], [1, 2, 3]) == 0.0  # a constant score carries no ranking
    with pytest.raises(ValueError, match="one score per channel"):
        compare.spearman([1, 2, 3], [1, 2])


def test_rank_agreement_bottom_half_overlap():
    oracle = torch.arange(8.0)
    rows = compare.rank_agreement({"same": oracle * 3, "reversed": -oracle, "half": [0, 1, 6, 7, 2, 3, 4, 5]},
                                  oracle)
    by = {r.criterion: r for r in rows}
    assert by["same"].half_cut_overlap == 1.0 and by["same"].spearman == pytest.approx(1.0)
    assert by["reversed"].half_cut_overlap == 0.0
    assert by["half"].half_cut_overlap == 0.5  # picks channels {0,1,4,5} as the least important; truth {0,1,2,3}
    table = compare.format_rank_table(rows)
    assert "same" in table and "+1.00" in table and "-1.00" in table




def test_sweep_and_aggregate_exact():
    def run(criterion, ratio, seed):
        return {"accuracy": ratio + seed / 10}

    records = compare.sweep(run, ["l1", "taylor"], [0.5], [0, 1, 2])
    assert len(records) == 6 and records[0] == {"criterion": "l1", "ratio": 0.5, "seed": 0, "accuracy": 0.5}
    summary = compare.aggregate(records, "accuracy")
    assert [r["criterion"] for r in summary] == ["l1", "taylor"]
    assert summary[0]["mean"] == pytest.approx(0.6)
    assert summary[0]["std"] == pytest.approx(0.1)  # sample std of 0.5, 0.6, 0.7
    assert summary[0]["n"] == 3
    assert compare.aggregate(records[:1], "accuracy")[0]["std"] == 0.0


def test_binomial_se_resolution_and_pareto_front():
    # the numbers: 95% on 1,000 images -> SE 0.69 pt, while one image is only 0.1 pt
    assert compare.binomial_se(0.95, 1000) == pytest.approx(0.006892, abs=1e-6)
    assert compare.binomial_se(1.0, 1000) == 0.0 and compare.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert compare.resolution_pp(1000) == pytest.approx(0.1)
    for bad in [lambda: compare.resolution_pp(0), lambda: compare.binomial_se(0.9, 0),
                lambda: compare.binomial_se(95.0, 1000)]:
        with pytest.raises(ValueError):
            bad()
    costs = [10, 5, 7, 5, 1]
    accs = [0.99, 0.90, 0.89, 0.95, 0.50]
    # (5, 0.90) is beaten by (5, 0.95); (7, 0.89) by (5, 0.95)
    assert compare.pareto_front(costs, accs) == [4, 3, 0]


def test_aggregate_reports_seed_spread_and_binomial_se():
    records = [{"criterion": "l1", "ratio": 0.5, "seed": s, "accuracy": a} for s, a in enumerate([0.80, 0.84, 0.82])]
    row = compare.aggregate(records, "accuracy", n_test=1000)[0]
    assert (row["min"], row["max"], row["n"]) == (0.80, 0.84, 3)
    assert row["std"] == pytest.approx(0.02) and row["se"] == pytest.approx((0.82 * 0.18 / 1000) ** 0.5)
    assert "se" not in compare.aggregate(records, "accuracy")[0]


def test_difference_noise_adds_test_set_and_seed_variances():
    a = {"mean": 0.80, "std": 0.02, "n": 4, "se": 0.013}
    b = {"mean": 0.78, "std": 0.00, "n": 1, "se": 0.013}
    assert compare.difference_noise(a, b) == pytest.approx(2 * (2 * 0.013 ** 2 + 0.02 ** 2 / 4) ** 0.5)
    assert compare.difference_noise(a, b) == compare.difference_noise(b, a)
    rows = compare.aggregate([{"m": "x", "acc": v} for v in (0.80, 0.82)] + [{"m": "y", "acc": 0.7}],
                             "acc", by=("m",), n_test=1000)
    expected = 2 * (compare.binomial_se(0.81, 1000) ** 2 + compare.binomial_se(0.7, 1000) ** 2
                    + 0.02 ** 2 / 2 / 2) ** 0.5       # the std of (0.80, 0.82) is 0.01414, squared 2e-4
    assert compare.difference_noise(*rows) == pytest.approx(expected)
    with pytest.raises(ValueError, match="se"):
        compare.difference_noise({"mean": 0.8, "std": 0.0, "n": 1}, b)


def test_scratch_b_epochs_matches_compute_and_is_capped():
    assert compare.scratch_b_epochs(10, 4e6, 4e6) == 10                    # nothing pruned: Scratch-E
    assert compare.scratch_b_epochs(10, 4e6, 2.5e6) == 16                  # 1.6x cheaper -> 1.6x epochs
    assert compare.scratch_b_epochs(10, 4e6, 1e6) == 20                    # 4x cheaper, capped at 2x
    assert compare.scratch_b_epochs(10, 4e6, 1e6, max_factor=4) == 40
    with pytest.raises(ValueError):
        compare.scratch_b_epochs(10, 4e6, 0)


# ----------------------------------------------------------------------------- equal MACs
@pytest.fixture(scope="module")
def vgg():
    from prunekit.models import build_model

    torch.manual_seed(0)
    return build_model("vgg_small").eval(), torch.zeros(1, 1, 28, 28)


@pytest.mark.parametrize("importance,scope", [("l1", "local"), ("l1", "global"), ("fpgm", "global"),
                                              ("random", "global")])
def test_plan_at_macs_meets_the_budget_as_closely_as_a_channel_allows(vgg, importance, scope):
    from prunekit.metrics import count_macs

    model, x = vgg
    dense = count_macs(model, x)
    plan = compare.plan_at_macs(model, x, 0.3, importance, scope)
    pruned = plan.apply().model
    macs = count_macs(pruned, x)
    assert macs <= 0.3 * dense                                   # within the budget ...
    # ... and minimal: one channel fewer removed (a slightly smaller ratio) breaks it
    ratio = plan.settings["ratio"]
    looser = prunekit.plan(model, x, ratio=ratio - 1e-3 if scope == "local" else ratio - 1 / 352,
                           importance=importance, scope=scope)
    assert looser.graph.count_macs(looser.removed) > 0.3 * dense
    assert plan.settings["macs_fraction"] == 0.3 and plan.settings["scope"] == scope


def test_plan_at_macs_local_equals_prune_at_the_found_ratio(vgg):
    model, x = vgg
    plan = compare.plan_at_macs(model, x, 0.25, "l1", "local")
    direct = prunekit.plan(model, x, ratio=plan.settings["ratio"], importance="l1")
    assert {k: v.tolist() for k, v in plan.removed.items()} == {k: v.tolist() for k, v in direct.removed.items()}


def test_plan_at_macs_global_differs_from_local_but_costs_the_same(vgg):
    from prunekit.metrics import count_macs

    model, x = vgg
    local = compare.plan_at_macs(model, x, 0.25, "l1", "local").apply().model
    glob = compare.plan_at_macs(model, x, 0.25, "l1", "global").apply().model
    widths = [[m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)] for net in (local, glob)]
    assert widths[0] != widths[1]
    dense = count_macs(model, x)
    assert abs(count_macs(local, x) - count_macs(glob, x)) < 0.01 * dense


@pytest.mark.parametrize("arch", ["resnet8", "mobilenetv2_small"])
def test_plan_at_macs_across_residual_adds_and_depthwise_convs(arch):
    from prunekit.metrics import count_macs
    from prunekit.models import build_model

    torch.manual_seed(0)
    model, x = build_model(arch).eval(), torch.zeros(1, 1, 28, 28)
    dense = count_macs(model, x)
    for scope in ("local", "global"):
        pruned = compare.plan_at_macs(model, x, 0.3, "l1", scope).apply().model
        assert 0.28 * dense <= count_macs(pruned, x) <= 0.3 * dense, scope


def test_plan_at_macs_refuses_impossible_budgets(vgg):
    model, x = vgg
    with pytest.raises(ValueError, match="must be in"):
        compare.plan_at_macs(model, x, 0.0)
    with pytest.raises(ValueError, match="cannot reach"):
        compare.plan_at_macs(model, x, 0.001, "l1", "local")
    with pytest.raises(ValueError, match="scope"):
        compare.plan_at_macs(model, x, 0.5, "l1", "sideways")


def test_reinitialize_keeps_architecture_and_forgets_weights():
    net = TinyConvNet()
    fresh_a = compare.reinitialize(net, seed=3)
    fresh_b = compare.reinitialize(net, seed=3)
    for (name, p), q, r in zip(net.state_dict().items(), fresh_a.state_dict().values(), fresh_b.state_dict().values()):
        assert p.shape == q.shape
        assert torch.equal(q, r), name  # seeded
    assert not torch.equal(net.conv.weight, fresh_a.conv.weight)


def test_train_from_scratch_trains_a_fresh_copy():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 6, 6)
    y = (x.mean((1, 2, 3)) > 0).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    net = TinyConvNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = compare.train_from_scratch(net, loader, epochs=2, seed=0, lr=0.1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # input untouched
    assert not model.training
    assert not torch.equal(model.conv.weight, compare.reinitialize(net, 0).conv.weight)


def test_plots_have_titles_and_labelled_axes():
    oracle = np.arange(6.0)
    figs = [
        compare.plot_rank_scatter({"a": oracle, "b": -oracle}, oracle),
        compare.plot_ratio_sweep(compare.aggregate(
            compare.sweep(lambda criterion, ratio, seed: {"accuracy": 0.9}, ["l1"], [0.3, 0.5], [0, 1]),
            "accuracy", n_test=1000)),
        compare.plot_pareto([{"macs": 2e6, "accuracy": 0.9, "label": "x"},
                             {"macs": 1e6, "accuracy": 0.95, "label": "y"}]),
        compare.plot_latency([{"label": "50%", "macs_ratio": 3.9, "latency_ratio": 2.6}]),
    ]
    for fig in figs:
        for ax in fig.axes:
            assert ax.get_xlabel() and (ax.get_ylabel() or ax is not fig.axes[0])
        assert fig.axes[0].get_title() or fig._suptitle is not None
    assert "(%)" in figs[1].axes[0].get_xlabel() and "(%)" in figs[1].axes[0].get_ylabel()
    assert "millions" in figs[2].axes[0].get_xlabel()


def test_format_table_is_fixed_width_and_formats_columns():
    text = compare.format_table([{"criterion": "l1", "mean": 0.953}], ["criterion", "mean"], {"mean": ".1%"}, width=8)
    assert text.splitlines() == ["criterion    mean", "      l1   95.3%"]

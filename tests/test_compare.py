"""prunekit.compare: rank correlations, seed sweeps, Pareto, scratch (the oracle: test_importance)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

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


def test_noise_floor_and_pareto_front():
    assert compare.noise_floor_pp(1000) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        compare.noise_floor_pp(0)
    costs = [10, 5, 7, 5, 1]
    accs = [0.99, 0.90, 0.89, 0.95, 0.50]
    # (5, 0.90) is beaten by (5, 0.95); (7, 0.89) by (5, 0.95)
    assert compare.pareto_front(costs, accs) == [4, 3, 0]


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
            "accuracy"), floor_pp=0.1),
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

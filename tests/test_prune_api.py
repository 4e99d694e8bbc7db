"""prunekit.prune / plan / prune_iteratively: exact counts, scopes, and transactions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import prunekit
from engine_nets import GroupedConvNet, SigmoidAct
from prunekit.testing import changes, randomise, snapshot
from prunekit import PruningError, models
from prunekit import surgery
from prunekit.graph import build_graph
from prunekit.metrics import count_macs, count_params

X = torch.randn(1, 1, 8, 8)


def _widths(model):
    return tuple(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


def _unchanged(model, snap):
    assert not changes(model, snap), changes(model, snap)


def test_vgg_half_local_exact_widths_and_metrics():
    model = models.vgg_small()
    snap = snapshot(model)
    result = prunekit.prune(model, X, ratio=0.5)
    assert _widths(result.model) == (16, 32, 64, 64)
    assert result.model.classifier.out_features == 10 and result.model.classifier.in_features == 64
    assert result.before == {"params": count_params(model), "macs": count_macs(model, X)}
    assert result.after == {"params": count_params(result.model),
                            "macs": count_macs(result.model, X)}
    assert result.after["params"] < result.before["params"]
    assert result.removed["features.0.0"] == result.removed["features.0.1"]
    assert len(result.removed["features.0.0"]) == 16
    assert result.removed["features.0.0"] == sorted(result.removed["features.0.0"])
    assert "classifier" not in result.removed
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in result.model.modules())
    _unchanged(model, snap)                             # the given model is untouched


def test_lowest_l1_channels_are_the_ones_removed():
    model = models.vgg_small()
    result = prunekit.prune(model, X, ratio=0.25)
    l1 = prunekit.importance.l1_norm(model.features[0][0])
    assert result.removed["features.0.0"] == sorted(torch.argsort(l1)[:8].tolist())


def test_resnet_mobilenet_grouped_exact_counts():
    r = prunekit.prune(models.resnet8(), X, ratio=0.5).model
    assert r.stem[0].out_channels == r.layer1[0].conv2.out_channels == 8
    assert r.layer2[0].shortcut[0].out_channels == r.layer2[0].conv2.out_channels == 16
    assert r.fc.in_features == 32 and r.fc.out_features == 10
    m = prunekit.prune(models.mobilenetv2_small(), X, ratio=0.5).model
    dw = m.features[2].block[1][0]
    assert dw.groups == dw.in_channels == dw.out_channels == 32
    g = prunekit.prune(GroupedConvNet(), X, ratio=0.5).model
    assert g.grouped[0].groups == 4 and g.grouped[0].out_channels == 8
    assert g.grouped[0].in_channels == 4                # inputs cut equally: 1 of 2 per group


def test_ratio_zero_removes_nothing():
    model = models.vgg_small()
    result = prunekit.prune(model, X, ratio=0.0)
    assert result.removed == {} and result.after == result.before


@pytest.mark.parametrize("build", [models.vgg_small, models.resnet8, models.mobilenetv2_small])
def test_pruned_copy_shares_no_tensors_or_modules(build):
    model = build()
    pruned = prunekit.prune(model, X, ratio=0.25, ignore=["features.0.0"]
                            if build is models.vgg_small else ()).model
    old = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    assert not old & {t.data_ptr() for t in [*pruned.parameters(), *pruned.buffers()]}
    assert not {id(m) for m in model.modules()} & {id(m) for m in pruned.modules()}
    assert [n for n, _ in model.named_modules()] == [n for n, _ in pruned.named_modules()]


def test_inplace_modifies_the_given_model():
    model = models.resnet8()
    result = prunekit.prune(model, X, ratio=0.5, inplace=True)
    assert result.model is model and model.stem[0].out_channels == 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(ratio=1.0), "ratio=1.0 must be in"),
    (dict(ratio=-0.1), "must be in"),
    (dict(ratios={"features.0.0": 1.0}), "ratios"),
    (dict(importance="l3"), "unknown importance"),
    (dict(importance="taylor"), "data="),
    (dict(scope="everywhere"), "scope"),
    (dict(round_to=0), "round_to"),
    (dict(ratio=0.95), "max_ratio"),
    (dict(ratios={"nope": 0.5}), "not a layer"),
    (dict(ratios={"features.0.1": 0.5, "features.0.0": 0.25}), "conflicting"),
    (dict(ignore=["features.9"]), "not a layer"),
    (dict(scope="global", ratio=0.8, max_ratio=0.5), "max_ratio"),
])
@pytest.mark.parametrize("inplace", [False, True])
def test_bad_requests_raise_and_leave_model_unchanged(kwargs, message, inplace):
    model = randomise(models.vgg_small()).train()
    snap = snapshot(model)
    with pytest.raises(PruningError, match=message):
        prunekit.prune(model, X, inplace=inplace, **kwargs)
    _unchanged(model, snap)
    assert model.training


@pytest.mark.parametrize("inplace", [False, True])
def test_unsupported_op_and_bad_input_leave_model_unchanged(inplace):
    model = randomise(SigmoidAct())
    snap = snapshot(model)
    with pytest.raises(PruningError, match="Sigmoid"):
        prunekit.prune(model, X, inplace=inplace)
    _unchanged(model, snap)
    vgg = models.vgg_small()
    snap = snapshot(vgg)
    with pytest.raises(PruningError, match="example input"):
        prunekit.prune(vgg, torch.randn(1, 3, 8, 8), inplace=inplace)
    _unchanged(vgg, snap)


def test_failure_half_way_through_inplace_surgery_rolls_back(monkeypatch):
    model = randomise(models.resnet8())
    snap = snapshot(model)
    real_swap, calls = surgery._swap, []

    def flaky_swap(root, name, module):
        calls.append(name)
        if len(calls) == 5:
            raise RuntimeError("simulated failure")
        real_swap(root, name, module)

    monkeypatch.setattr(surgery, "_swap", flaky_swap)
    with pytest.raises(RuntimeError, match="simulated"):
        prunekit.prune(model, X, ratio=0.5, inplace=True)
    _unchanged(model, snap)


@pytest.mark.parametrize("build", [models.vgg_small, models.resnet8, models.mobilenetv2_small])
@pytest.mark.parametrize("importance", ["l1", "bn_scale"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_global_reaches_exact_fraction_within_caps(build, importance, ratio):
    model = build()
    plan = prunekit.plan(model, X, ratio=ratio, scope="global", importance=importance,
                         max_ratio=0.8)
    groups = plan.graph.prunable_groups()
    total = sum(g.size for g in groups)
    removed = {i: len(r) for i, r in plan.removed.items()}
    assert sum(removed.values()) == math.floor(ratio * total)
    for g in groups:
        assert removed.get(g.index, 0) <= math.floor(0.8 * g.size)
    assert plan.apply().model(X).shape == (1, 10)      # classes kept


@pytest.mark.parametrize("build", [models.vgg_small, models.resnet8, models.mobilenetv2_small])
def test_global_with_round_to_stays_within_one_step(build):
    plan = prunekit.plan(build(), X, ratio=0.5, scope="global", round_to=4)
    groups = plan.graph.prunable_groups()
    target = math.floor(0.5 * sum(g.size for g in groups))
    removed = sum(len(r) for r in plan.removed.values())
    assert target <= removed < target + 4
    for g in groups:
        assert (g.size - len(plan.removed.get(g.index, []))) % 4 == 0


def test_global_iterative_reaches_the_one_shot_count():
    model = models.resnet8()
    final, history = prunekit.prune_iteratively(model, X, target=0.5, steps=3, scope="global")
    assert len(history) == 4 and history[-1]["params"] == count_params(final)

    def channels(m):
        return sum(g.size for g in build_graph(m, X).prunable_groups())
    assert channels(final) == channels(model) - math.floor(0.5 * channels(model))


def test_ratios_ignore_and_naming_the_classifier():
    model = models.vgg_small()
    r = prunekit.prune(model, X, ratio=0.0, ratios={"features.1.1": 0.25})
    assert _widths(r.model) == (32, 48, 128, 128)      # a BN name selects its group too
    r = prunekit.prune(model, X, ratio=0.5, ignore=["features.0.0", model.features[5][0]])
    assert _widths(r.model) == (32, 32, 64, 128)
    r = prunekit.prune(model, X, ratio=0.0, ratios={"classifier": 0.2})
    assert r.model.classifier.out_features == 8 and r.removed["classifier"]


def test_round_to_keeps_multiples():
    r = prunekit.prune(models.vgg_small(), X, ratio=0.3, round_to=8)
    assert _widths(r.model) == (24, 48, 96, 96)        # 32-9=23 -> 24, 64-19=45 -> 48, ...


def test_callable_importance_and_plan_printing():
    model = models.vgg_small()
    def negative_l1(layer):
        return -layer.weight.abs().flatten(1).sum(1)

    neg = prunekit.prune(model, X, ratio=0.25, importance=negative_l1)
    l1 = prunekit.importance.l1_norm(model.features[0][0])
    assert neg.removed["features.0.0"] == sorted(torch.argsort(l1, descending=True)[:8].tolist())
    plan = prunekit.plan(model, X, ratio=0.5)
    assert "features.0.0" in str(plan) and "32 ->    16" in str(plan)
    assert plan.apply().removed == plan.removed_by_layer()
    assert "cuts output rows" in str(plan.apply().groups)


def test_masked_copy_is_full_size_and_zeroes_bn_beta():
    model = randomise(models.vgg_small())
    plan = prunekit.plan(model, X, ratio=0.5)
    masked = plan.mask()
    gone = plan.apply().removed["features.0.1"]
    assert count_params(masked) == count_params(model)
    assert masked.features[0][1].bias[gone].abs().sum() == 0
    assert model.features[0][1].bias[gone].abs().sum() > 0


@pytest.mark.parametrize("schedule", ["linear", "geometric"])
def test_prune_iteratively(schedule):
    model = models.vgg_small()
    snap = snapshot(model)
    tuned = []
    final, history = prunekit.prune_iteratively(
        model, X, target=0.5, steps=2, schedule=schedule, fine_tune=tuned.append,
        evaluate=lambda m: 0.5)
    assert len(tuned) == 2 and len(history) == 3
    assert [round(h["ratio"], 6) for h in history] == [0.0, 0.25 if schedule == "linear"
                                                       else round(1 - 0.5 ** 0.5, 6), 0.5]
    assert history[0]["params"] > history[1]["params"] > history[2]["params"]
    assert history[-1]["params"] == count_params(final) and history[-1]["accuracy"] == 0.5
    assert _widths(final) == (16, 32, 64, 64)
    _unchanged(model, snap)


def test_global_raw_ranking_is_network_slimmings_threshold():
    """normalise=False ranks raw |gamma| across layers: exactly the channels below one global
    threshold go (here no cap binds), while the default normalised ranking removes a different set."""
    model = randomise(models.vgg_small())
    with torch.no_grad():                       # layers on very different gamma scales
        for scale, bn in zip((1.0, 1.0, 1.5, 2.0), [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]):
            bn.weight.mul_(scale)
    x = torch.randn(1, 1, 8, 8)
    raw = prunekit.prune(model, x, ratio=0.3, importance="bn_scale", scope="global", normalise=False,
                         max_ratio=1.0)
    gammas = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    threshold = torch.sort(gammas).values[math.floor(0.3 * len(gammas)) - 1]
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for (name, bn), conv in zip(bns, [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]):
        below = torch.nonzero(bn.weight.detach().abs() <= threshold).flatten().tolist()
        assert 0 < len(below) < bn.num_features - 1, "the test needs a threshold inside every layer"
        assert raw.removed.get(conv, []) == below, name
    normalised = prunekit.prune(model, x, ratio=0.3, importance="bn_scale", scope="global", max_ratio=1.0)
    assert normalised.removed != raw.removed
    assert sum(map(len, raw.removed.values())) == sum(map(len, normalised.removed.values()))


def test_settings_are_checked_once_per_call(monkeypatch):
    from prunekit.settings import Settings

    calls = []
    check = Settings._check
    monkeypatch.setattr(Settings, "_check", lambda self: (calls.append(1), check(self)))
    prunekit.prune(models.vgg_small(), X, ratio=0.5)
    assert len(calls) == 1
    with pytest.raises(PruningError, match=r"unknown setting\(s\) \['ration'\]"):
        prunekit.plan(models.vgg_small(), X, ration=0.5)


def test_old_import_paths_work_and_no_name_shadows_a_module():
    """``prunekit.plan`` / ``prunekit.prune`` are the functions; the modules that once had
    those names live on as import aliases of :mod:`prunekit.planning` (notebooks use them)."""
    from prunekit import iterative, planning
    from prunekit.plan import Plan
    from prunekit.prune import prune, schedule_keep

    assert Plan is planning.Plan and prune is planning.prune
    assert schedule_keep is iterative.schedule_keep
    assert prunekit.plan is planning.plan and prunekit.prune is planning.prune
    assert callable(prunekit.plan) and callable(prunekit.prune)

"""The slider callbacks return the right numbers, and the widgets carry the DOM contract.

A small VGG trained for two epochs on the 8x8 digits keeps this fast (~0.5 s to train)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import prunekit  # noqa: E402
from prunekit import widgets  # noqa: E402
from prunekit.data import example_input, make_loaders  # noqa: E402
from prunekit.importance import l1_norm  # noqa: E402
from prunekit.metrics import count_macs, count_params  # noqa: E402
from prunekit.models import vgg_small  # noqa: E402
from prunekit.train import evaluate, set_seed, train  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    loaders = make_loaders("digits", seed=0)
    set_seed(0)
    model = vgg_small()
    train(model, loaders.train, epochs=2, seed=0, progress=False)
    return model, example_input("digits"), loaders


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_sparsity_zero_gives_the_dense_numbers(setup):
    model, x, loaders = setup
    r = widgets.explore_l1(model, "features.1.0", 0.0, x, loaders.val, latency_repeats=0)
    dense = evaluate(model, loaders.val)
    assert r["removed"] == []
    assert (r["accuracy"], r["correct"], r["total"]) == (dense.accuracy, dense.correct, dense.total)
    assert r["macs"] == r["dense_macs"] == count_macs(model, x)
    assert r["params"] == r["dense_params"] == count_params(model)
    assert math.isnan(r["latency_ms"])


def test_half_sparsity_removes_the_lowest_l1_channels_and_measures_the_pruned_model(setup):
    model, x, loaders = setup
    before = _state(model)
    r = widgets.explore_l1(model, "features.1.0", 0.5, x, loaders.val, latency_repeats=2)
    scores = l1_norm(model.get_submodule("features.1.0"))
    assert r["channels"] == 64 and len(r["removed"]) == 32
    assert r["removed"] == sorted(scores.argsort()[:32].tolist())
    assert torch.equal(r["scores"], scores)
    assert r["macs"] < r["dense_macs"] and r["params"] < r["dense_params"]
    assert r["latency_ms"] > 0
    # the accuracy is that of the model with exactly these channels zeroed (pruned == masked)
    masked = prunekit.plan(model, x, ratio=0.0, ratios={"features.1.0": 0.5}, importance="l1").mask()
    assert r["correct"] == evaluate(masked, loaders.val).correct
    # and the caller's model was not touched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_more_sparsity_means_fewer_macs(setup):
    model, x, loaders = setup
    macs = [widgets.explore_l1(model, "features.3.0", s, x, loaders.val, latency_repeats=0)["macs"]
            for s in (0.0, 0.25, 0.5, 0.75)]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == 4


def test_recalibration_changes_only_the_pruned_copy(setup):
    model, x, loaders = setup
    before = _state(model)
    plain = widgets.explore_l1(model, "features.0.0", 0.5, x, loaders.val, latency_repeats=0)
    recal = widgets.explore_l1(model, "features.0.0", 0.5, x, loaders.val, latency_repeats=0,
                               recalibrate_loader=loaders.train, recal_batches=3)
    assert plain["removed"] == recal["removed"] and plain["macs"] == recal["macs"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_explore_l1_refuses_bad_input(setup):
    model, x, loaders = setup
    with pytest.raises(ValueError, match="features.0.0"):
        widgets.explore_l1(model, "classifier", 0.5, x, loaders.val)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        widgets.explore_l1(model, "features.0.0", 1.0, x, loaders.val)


def test_readout_contains_the_numbers(setup):
    model, x, loaders = setup
    r = widgets.explore_l1(model, "features.1.0", 0.5, x, loaders.val, latency_repeats=2)
    text = widgets.render_readout(r)
    assert "accuracy" in text and "MACs" in text
    assert f"{r['accuracy']:.2%}" in text and f"{r['correct']}/{r['total']}" in text
    assert f"{r['macs'] / 1e6:.2f} M" in text and f"{r['params']:,}" in text
    assert f"{r['latency_ms']:.3f} ms" in text and "32/64 channels kept" in text


def test_slimming_ratios_is_the_global_threshold_with_a_cap():
    model = vgg_small(in_channels=1)
    x = example_input("digits")
    widths = [32, 64, 128, 128]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():  # layer 0: tiny gammas; the others: 1.0 .. 2.0
        bns[0].weight.copy_(torch.linspace(1e-4, 1e-3, 32))
        for bn in bns[1:]:
            bn.weight.copy_(torch.linspace(1.0, 2.0, bn.num_features))
    n = sum(widths)
    # 10% of 352 = 35 lowest: all 32 of layer 0, but the cap 0.9 lets only 28 go there
    capped = widgets.slimming_ratios(model, x, 0.1, max_ratio=0.9)
    assert capped["features.0.0"] == 28 / 32
    # the other 3 lowest are the first (smallest-gamma) channel of each other layer
    assert [capped[f"features.{i}.0"] for i in (1, 3, 5)] == [1 / 64, 1 / 128, 1 / 128]
    uncapped = widgets.slimming_ratios(model, x, 0.05, max_ratio=1.0)
    assert uncapped["features.0.0"] == int(0.05 * n) / 32
    assert widgets.slimming_ratios(model, x, 0.0) == {f"features.{i}.0": 0.0 for i in (0, 1, 3, 5)}


def test_explore_slimming_numbers(setup):
    model, x, loaders = setup
    zero = widgets.explore_slimming(model, 0.0, x, loaders.val, latency_repeats=0)
    assert all(k == t for k, t in zero["per_layer"].values())
    assert zero["accuracy"] == zero["dense_accuracy"] and zero["macs"] == zero["dense_macs"]
    half = widgets.explore_slimming(model, 0.5, x, loaders.val, latency_repeats=0)
    kept = sum(k for k, _ in half["per_layer"].values())
    total = sum(t for _, t in half["per_layer"].values())
    assert half["removed_share"] == pytest.approx(1 - kept / total)
    assert 0 < half["removed_share"] <= 0.5
    assert all(k >= math.ceil(0.1 * t) for k, t in half["per_layer"].values())  # the cap holds
    assert half["macs"] < zero["macs"]
    text = widgets.render_readout(half)
    assert "accuracy" in text and "MACs" in text and f"{half['accuracy']:.2%}" in text


class _AddsToInput(nn.Module):
    """conv2's output is added to the model input, so its channels are pinned."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


def test_prunable_conv_names_leaves_out_pinned_layers():
    model = _AddsToInput()
    x = example_input("digits")
    assert widgets.conv_layer_names(model) == ["conv1", "conv2"]
    assert widgets.prunable_conv_names(model, x) == ["conv1"]


def _by_class(box, cls):
    found = []

    def walk(w):
        if cls in getattr(w, "_dom_classes", ()):
            found.append(w)
        for child in getattr(w, "children", ()):
            walk(child)
    walk(box)
    assert len(found) == 1, f"expected one widget with class {cls}"
    return found[0]


def test_l1_explorer_wiring(setup):
    import ipywidgets as w

    model, x, loaders = setup
    box = widgets.l1_explorer(model, x, loaders.val, sparsity=0.25, latency_repeats=1, layer="features.1.0")
    slider = _by_class(box, "pk-sparsity-slider")
    menu = _by_class(box, "pk-layer-select")
    readout = _by_class(box, "pk-readout")
    assert isinstance(slider, w.FloatSlider) and slider.description == "sparsity"
    assert slider.continuous_update is False
    assert isinstance(menu, w.Dropdown) and list(menu.options) == widgets.conv_layer_names(model)
    assert list(menu.options) == ["features.0.0", "features.1.0", "features.3.0", "features.5.0"]
    assert isinstance(_by_class(box, "pk-figure"), w.Output)
    assert "accuracy" in readout.value and "MACs" in readout.value
    assert box.result["sparsity"] == 0.25 and menu.value == box.result["layer"] == "features.1.0"
    slider.value = 0.5  # moving the slider re-runs the callback
    assert box.result["sparsity"] == 0.5 and f"{box.result['macs'] / 1e6:.2f} M" in readout.value
    menu.value = "features.3.0"
    assert box.result["layer"] == "features.3.0" and "features.3.0" in readout.value
    with pytest.raises(ValueError, match="classifier"):
        widgets.l1_explorer(model, x, loaders.val, layer="classifier")


def test_slimming_explorer_wiring(setup):
    import ipywidgets as w

    model, x, loaders = setup
    box = widgets.slimming_explorer(model, x, loaders.val, ratio=0.3, latency_repeats=1)
    slider = _by_class(box, "pk-ratio-slider")
    readout = _by_class(box, "pk-readout")
    assert isinstance(slider, w.FloatSlider) and slider.continuous_update is False
    assert isinstance(_by_class(box, "pk-figure"), w.Output)
    assert box.result["ratio"] == 0.3 and "accuracy" in readout.value and "MACs" in readout.value
    slider.value = 0.6
    assert box.result["ratio"] == 0.6 and f"{box.result['accuracy']:.2%}" in readout.value

"""The slider callbacks return the right numbers, and the widgets carry the DOM contract.

A small VGG trained for two epochs on the 8x8 digits keeps this fast (~0.5 s to train)."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import prunekit  # noqa: E402
from prunekit import standin, widgets  # noqa: E402
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
    assert all(math.isnan(r[key]) for key in widgets.LATENCY_KEYS)
    assert "latency: not measured" in widgets.render_readout(r)


def test_half_sparsity_removes_the_lowest_l1_channels_and_measures_the_pruned_model(setup):
    model, x, loaders = setup
    before = _state(model)
    r = widgets.explore_l1(model, "features.1.0", 0.5, x, loaders.val, latency_repeats=2, latency_rounds=3)
    scores = l1_norm(model.get_submodule("features.1.0"))
    assert r["channels"] == 64 and len(r["removed"]) == 32
    assert r["removed"] == sorted(scores.argsort()[:32].tolist())
    assert torch.equal(r["scores"], scores)
    assert r["macs"] < r["dense_macs"] and r["params"] < r["dense_params"]
    assert r["latency_ms"] > 0 and r["dense_latency_ms"] > 0 and r["latency_ratio"] > 0
    assert (r["latency_rounds"], r["latency_runs"]) == (3, 6) and 0 <= r["latency_faster_rounds"] <= 3
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
    r = widgets.explore_l1(model, "features.1.0", 0.5, x, loaders.val, latency_repeats=2, latency_rounds=3)
    text = widgets.render_readout(r)
    assert "accuracy" in text and "MACs" in text
    assert f"{r['accuracy']:.2%}" in text and f"{r['correct']}/{r['total']}" in text
    assert f"{r['macs'] / 1e6:.2f} M" in text and f"{r['params']:,}" in text
    assert "32/64 channels kept" in text
    # latency: both models, median and IQR, measured in the same rounds
    assert f"pruned {r['latency_ms']:.2f} ms [{r['latency_iqr_ms']:.2f}]" in text
    assert f"dense {r['dense_latency_ms']:.2f} ms [{r['dense_latency_iqr_ms']:.2f}]" in text
    assert f"pruned/dense {r['latency_ratio']:.2f}" in text and "same 3 rounds" in text


def _timed(ratio: float, faster: int, p_value: float, rounds: int = 9) -> dict:
    return {"latency_ms": 1.0 * ratio, "latency_iqr_ms": 0.1, "dense_latency_ms": 1.0, "dense_latency_iqr_ms": 0.1,
            "latency_ratio": ratio, "latency_faster_rounds": faster, "latency_rounds": rounds,
            "latency_p_value": p_value, "latency_runs": 4 * rounds}


def test_latency_verdict_follows_the_rounds_not_one_number():
    """What a student reads: "faster" only when the rounds agree; a noisy ratio above 1 with the
    rounds split is "no clear difference", never "slower"."""
    clear = widgets.latency_text(_timed(0.62, 9, 0.0039))
    assert "pruned/dense 0.62: faster in 9 of 9 rounds" in clear and "no clear" not in clear
    split = widgets.latency_text(_timed(1.10, 4, 1.0))
    assert "no clear difference (pruned/dense 1.10, faster in 4 of 9 rounds)" in split
    assert "slower" not in split
    assert "slower in 8 of 9 rounds" in widgets.latency_text(_timed(1.2, 1, 0.039))
    assert "median [IQR] of 36 runs each" in clear and "1 thread, CPU time" in clear
    on_gpu = widgets.latency_text({**_timed(0.62, 9, 0.0039), "latency_clock": "cuda events"})
    assert "GPU time by CUDA events" in on_gpu and "CPU time" not in on_gpu


def test_explore_l1_runs_on_the_models_device(setup):
    """The slider on a model that lives on another device (fakegpu: CPU kernels, so the
    numbers are the CPU's): pruning, recalibration, evaluation and both timings run there."""
    import copy

    import fake_device

    from torch.utils.data import DataLoader

    model, x, loaders = setup
    calib = DataLoader(loaders.train.dataset, batch_size=64)   # the same batches both times, as in the lectures
    moved = copy.deepcopy(model).to(fake_device.register())
    here = widgets.explore_l1(model, "features.1.0", 0.5, x, loaders.val, latency_repeats=1, latency_rounds=2,
                              recalibrate_loader=calib, recal_batches=2)
    there = widgets.explore_l1(moved, "features.1.0", 0.5, x, loaders.val, latency_repeats=1, latency_rounds=2,
                               recalibrate_loader=calib, recal_batches=2)
    assert (there["correct"], there["macs"], there["removed"]) == (here["correct"], here["macs"], here["removed"])
    assert there["latency_ms"] > 0 and there["dense_latency_ms"] > 0 and there["latency_clock"] == "cpu"


def test_latency_sign_test_decides_the_verdict(setup):
    """The verdict comes from paired_comparison over real rounds: an identical model against
    itself is never called faster or slower by more than chance allows, and the numbers in
    the text are the measured ones."""
    model, x, _ = setup
    timed = widgets.pruned_vs_dense_latency(model, model, x, rounds=5, repeats=2)
    assert timed["latency_rounds"] == 5 and timed["latency_runs"] == 10
    assert timed["latency_p_value"] >= 0.0625  # 5 rounds can never reach p < 0.05
    assert "no clear difference" in widgets.latency_text(timed)


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


# ----------------------------------------------------------------------------- the stand-in
#: How ipywidgets' repr of a container or control starts: what a reader must never see.
WIDGET_REPR = re.compile(r"\b(VBox|HBox|Box|GridBox|Dropdown|FloatSlider|IntSlider|Output|HTML)\(")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _displayed(widget) -> dict:
    """The bundle that ``display(widget)`` publishes, by the formatter a kernel uses."""
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(widget)
    return data


def _standin_png(html_text: str) -> bytes:
    found = re.search(r"<img class='pk-standin-figure'[^>]* src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html_text)
    assert found, "the stand-in has no inline PNG"
    return base64.b64decode(found.group(1))


def test_a_plain_widget_shows_its_repr():
    """The control: what ipywidgets puts in text/plain for an ordinary VBox is the repr the
    stand-in replaces, and the check below would catch it."""
    import ipywidgets as w

    data = _displayed(w.VBox([w.HBox([w.Dropdown(options=["a"])])]))
    assert WIDGET_REPR.search(data["text/plain"]) and "text/html" not in data


@pytest.mark.parametrize("kind", ["l1", "slimming"])
def test_explorer_bundle_is_the_widget_plus_a_readable_standin(setup, kind):
    """A live, trusted JupyterLab picks the widget view; everything else (an untrusted
    notebook, a viewer without widgets) picks text/html or text/plain: the stand-in says what
    the cell does, shows the first readout and a PNG of the first figure, and has no repr."""
    import matplotlib.image

    model, x, loaders = setup
    box = (widgets.l1_explorer(model, x, loaders.val, latency_repeats=0, layer="features.1.0")
           if kind == "l1" else widgets.slimming_explorer(model, x, loaders.val, latency_repeats=0))
    first = dict(box.result)
    data = _displayed(box)
    assert data[WIDGET_VIEW]["model_id"] == box.model_id
    for mime in ("text/plain", "text/html"):
        assert standin.MESSAGE in data[mime] and not WIDGET_REPR.search(data[mime]), data[mime][:300]
    assert not WIDGET_REPR.search(repr(box))
    assert widgets.render_readout(first) in data["text/html"]
    picture = matplotlib.image.imread(io.BytesIO(_standin_png(data["text/html"])), format="png")
    assert picture.shape[0] > 100 and picture.shape[1] > 200
    # the stand-in is the explorer's first state, whatever the slider did since
    slider = _by_class(box, "pk-sparsity-slider" if kind == "l1" else "pk-ratio-slider")
    slider.value = 0.8
    assert box.result != first and _displayed(box)["text/html"] == data["text/html"]


REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted([*REPO.glob("notebooks/*.ipynb"), *REPO.glob("solutions/*.ipynb")])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_widget_outputs_carry_the_standin(path):
    """What a reader of the committed notebook sees where the widget cannot render (GitHub,
    JupyterLab before the notebook is run): every saved widget output has a text/html
    stand-in and no widget repr. Re-execute a notebook after changing its widgets."""
    for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW not in data:
                continue
            plain = "".join(data.get("text/plain", ""))
            assert not WIDGET_REPR.search(plain), f"{path.name} cell {index} saved a widget repr: {plain[:120]!r}"
            assert standin.MESSAGE in "".join(data.get("text/html", "")), \
                f"{path.name} cell {index}: a widget output without the text/html stand-in"

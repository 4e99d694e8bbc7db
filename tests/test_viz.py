"""The plots show what they claim: right bars in the right colours, the threshold where the
cut is, titles and labelled axes with units on every figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from torch import nn  # noqa: E402

from prunekit import viz  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _assert_labelled(fig):
    for ax in fig.axes:
        assert ax.get_title(), "every panel needs a title"
        assert ax.get_xlabel() and ax.get_ylabel(), "every axis needs a label"
    # units: at least one axis label per panel carries a unit in parentheses
    for ax in fig.axes:
        assert "(" in ax.get_xlabel() + ax.get_ylabel()


def test_importance_panels_colours_exactly_the_removed_channels():
    scores = torch.tensor([5.0, 1.0, 3.0, 0.5, 4.0, 2.0])
    fig = viz.importance_panels(scores, removed=[1, 3], layer="conv1")
    _assert_labelled(fig)
    left, right = fig.axes
    colours = [to_hex(p.get_facecolor()) for p in left.patches]
    assert len(colours) == 6
    red = [i for i, c in enumerate(colours) if c == viz.REMOVED_COLOR]
    assert red == [1, 3]
    assert "2/6" in left.get_title()
    # the threshold lies between the largest removed (1.0) and the smallest kept (2.0)
    hlines = [line for line in right.get_lines() if line.get_linestyle() == "--"]
    assert len(hlines) == 1
    assert hlines[0].get_ydata()[0] == pytest.approx(1.5)
    # the sorted curve is really sorted
    curve = right.get_lines()[0].get_ydata()
    assert list(curve) == sorted(scores.tolist())


def test_importance_panels_without_removal_draws_no_threshold():
    fig = viz.importance_panels([1.0, 2.0, 3.0])
    right = fig.axes[1]
    assert not [line for line in right.get_lines() if line.get_linestyle() == "--"]
    assert all(to_hex(p.get_facecolor()) == viz.KEPT_COLOR for p in fig.axes[0].patches)


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]]])
def test_importance_panels_rejects_bad_scores(bad):
    with pytest.raises(ValueError, match="1-D"):
        viz.importance_panels(bad)


def test_importance_panels_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="0..2"):
        viz.importance_panels([1.0, 2.0, 3.0], removed=[3])


def test_bn_gammas_collects_abs_gamma_per_layer():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    g = viz.bn_gammas(model)
    assert list(g) == ["1", "3"]
    assert g["1"].tolist() == [1.0, 0.0, 2.0]
    g["1"][0] = 9.0  # a copy: the model is untouched
    assert model[1].weight[0].item() == -1.0


def test_gamma_histograms_counts_every_channel_on_a_log_axis():
    values = {"dense": np.array([0.5, 1.0, 2.0]), "slim": np.array([0.0, 1e-4, 1.0, 1.5])}
    fig = viz.gamma_histograms(values, bins=10, threshold=1e-2)
    _assert_labelled(fig)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.patches) == 2  # one step outline per model
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dense (3 channels)" in labels and "slim (4 channels)" in labels
    assert any("threshold" in label for label in labels)


def test_channel_counts_writes_the_numbers_on_the_bars():
    fig = viz.channel_counts({"original": {"a": 32, "b": 64}, "pruned": {"a": 10, "b": 40}})
    _assert_labelled(fig)
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["32", "64", "10", "40"])
    assert len(fig.axes[0].patches) == 4


def test_sensitivity_curves_one_line_per_layer_in_percent():
    curves = {"conv1": {0.0: 0.98, 0.5: 0.6}, "conv4": {0.0: 0.98, 0.5: 0.97}}
    fig = viz.sensitivity_curves(curves, baseline=0.98)
    _assert_labelled(fig)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3  # two layers + baseline
    assert list(lines[0].get_xdata()) == [0.0, 50.0]
    assert list(lines[0].get_ydata()) == pytest.approx([98.0, 60.0])


def test_sparsity_curves_checks_lengths_and_draws_each_series():
    fig = viz.sparsity_curves([0.0, 0.5, 0.9], {"dense": [1, 1, 1], "csr": [3, 2, 0.5]},
                              ylabel="latency (ms)", title="t", logy=True)
    _assert_labelled(fig)
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].get_lines()) == 2
    with pytest.raises(ValueError, match="2 points for 3"):
        viz.sparsity_curves([0.0, 0.5, 0.9], {"x": [1, 2]}, ylabel="ms", title="t")


def test_mask_images_reports_the_removed_share_per_panel():
    unstructured = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    channels = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    fig = viz.mask_images({"weights": unstructured, "channels": channels})
    _assert_labelled(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["weights: 50% removed", "channels: 50% removed"]
    image = fig.axes[1].get_images()[0].get_array()
    assert image.shape == (4, 2) and image[1].sum() == 0


# ----------------------------------------------------------------------------- lectures 05, 07, 09
def test_group_graph_colours_every_layer_by_the_group_it_writes():
    from prunekit.graph import build_graph
    from prunekit.models import build_model

    model = build_model("resnet8", 1, 10).eval()
    graph = build_graph(model, torch.randn(1, 1, 28, 28))
    fig = viz.group_graph(graph, "layer2.0.conv1", "layer2.0.relu2", title="stage 2")
    ax = fig.axes[0]
    boxes = [c for c in ax.collections if len(c.get_offsets())]
    names = [n.target for n in graph.fx_graph.nodes if n.op in ("call_module", "call_function")]
    drawn = names[names.index("layer2.0.conv1"):names.index("layer2.0.relu2") + 1]
    assert len(boxes) == len(drawn)
    colour = {str(name): to_hex(b.get_facecolor()[0]) for name, b in zip(drawn, boxes)}
    stream = {colour[n] for n in ("layer2.0.conv2", "layer2.0.bn2", "layer2.0.shortcut.0", "layer2.0.shortcut.1")}
    inner = {colour[n] for n in ("layer2.0.conv1", "layer2.0.bn1")}
    assert len(stream) == 1 and len(inner) == 1 and stream != inner    # one group each, told apart
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 2 and all("channels" in t for t in legend)
    with pytest.raises(ValueError, match="traced modules"):
        viz.group_graph(graph, "layer2.0.conv1", "no.such.layer")


def _sweep_rows():
    return [{"method": m, "macs_kept": k, "mean": 0.8 - i * 0.02 - (k == 0.1) * 0.1, "std": 0.01, "se": 0.012}
            for i, m in enumerate(["a", "b", "c", "d"]) for k in (0.1, 0.25)]


def test_sweep_panels_highlights_each_series_with_its_own_colour_and_marker():
    fig = viz.sweep_panels(_sweep_rows(), {"first": ["a", "b"], "second": ["b", "c", "d"]}, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["first", "second"]
    _assert_labelled(type("F", (), {"axes": [fig.axes[0]]})())
    styles = {}
    for ax in fig.axes:
        for container in ax.containers:                                # one errorbar per highlighted series
            line = container.lines[0]
            if container.get_label() in "abcd":
                styles.setdefault(container.get_label(), set()).add((to_hex(line.get_color()), line.get_marker()))
    assert set(styles) == {"a", "b", "c", "d"}
    assert all(len(s) == 1 for s in styles.values())                # the same style in every panel
    assert len({next(iter(s)) for s in styles.values()}) == 4        # and a different one per series
    with pytest.raises(ValueError, match="no rows"):
        viz.sweep_panels(_sweep_rows(), {"p": ["zzz"]})


def test_head_heatmaps_label_every_cell_with_its_rank():
    oracle = torch.tensor([[0.1, 0.4], [0.3, 0.2]])
    fig = viz.head_heatmaps({"oracle": oracle, "score": -oracle}, row_labels=["b0", "b1"])
    ranks = [t.get_text() for t in fig.axes[0].texts]
    assert ranks == ["4", "1", "2", "3"]                              # row by row, 1 = largest
    assert [t.get_text() for t in fig.axes[1].texts] == ["1", "4", "3", "2"]   # the colour bars come last
    with pytest.raises(ValueError, match="layers, heads"):
        viz.head_heatmaps({"a": torch.zeros(2, 2), "b": torch.zeros(3, 2)})

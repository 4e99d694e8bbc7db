"""prunekit.graph: the coupling rules, checked group by group on small known models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine_nets import (UNSUPPORTED, FlattenLinear, GroupedConvNet, HardCodedView,
                         OptionAShortcut, TwoBranchConcat)
from prunekit import PruningError, models
from prunekit.testing import randomise
from prunekit.graph import build_graph
from prunekit.metrics import count_macs

X = torch.randn(1, 1, 8, 8)


def _members(group, role):
    return sorted(group.modules(role))


def test_vgg_chain_groups():
    graph = build_graph(models.vgg_small(), X)
    prunable = graph.prunable_groups()
    assert [g.size for g in prunable] == [32, 64, 128, 128]
    first = graph.group_of("features.0.0")
    assert _members(first, "out") == ["features.0.0"]
    assert _members(first, "bn") == ["features.0.1"]
    assert _members(first, "in") == ["features.1.0"]
    assert graph.group_of("features.5.0").modules("in") == ["classifier"]
    assert graph.groups[0].pinned == "model input"
    out = graph.group_of("classifier")
    assert out.is_output and not out.prunable and out.size == 10


def test_resnet_stage_is_one_group():
    graph = build_graph(models.resnet8(), X)
    stem = graph.group_of("stem.0")
    assert _members(stem, "out") == ["layer1.0.conv2", "stem.0"]          # identity add
    assert _members(stem, "in") == ["layer1.0.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"]
    stage2 = graph.group_of("layer2.0.conv2")
    assert _members(stage2, "out") == ["layer2.0.conv2", "layer2.0.shortcut.0"]  # projection
    assert _members(stage2, "bn") == ["layer2.0.bn2", "layer2.0.shortcut.1"]
    assert graph.group_of("layer2.0.shortcut.0") is stage2
    inner = graph.group_of("layer1.0.conv1")
    assert _members(inner, "in") == ["layer1.0.conv2"]


def test_depthwise_shares_the_group_of_its_input():
    graph = build_graph(models.mobilenetv2_small(), X)
    expand = graph.group_of("features.2.block.0.0")
    assert _members(expand, "dw") == ["features.2.block.1.0"]
    assert _members(expand, "in") == ["features.2.block.2"]
    assert graph.kinds["features.2.block.1.0"] == "dwconv"


def _member(group, module, role):
    return next(m for m in group.members if m.module == module and m.role == role)


def test_concat_offsets():
    graph = build_graph(TwoBranchConcat(), X)
    left, right = graph.group_of("left"), graph.group_of("right")
    assert _member(right, "bn", "bn").positions.tolist() == list(range(6, 16))
    assert _member(right, "head", "in").units.tolist() == list(range(10))
    ids = graph.dims["head"]["in"]                    # the global channel id at each column
    assert ids.tolist() == [left.base + c for c in range(6)] + [right.base + c for c in range(10)]


def test_flatten_makes_feature_blocks():
    graph = build_graph(FlattenLinear(), X)
    last_conv = graph.group_of("features.2.0")
    fc1 = _member(last_conv, "fc1", "in")                 # 12 channels x 4x4 features
    assert fc1.positions.tolist() == list(range(192))
    assert fc1.units.tolist() == [c for c in range(12) for _ in range(16)]
    assert "fc1 (x16 each)" in str(last_conv)


def test_hard_coded_view_width_pins_the_channels():
    graph = build_graph(HardCodedView(), X)
    assert "hard-coded" in graph.group_of("features.2.0").pinned
    assert graph.group_of("features.0.0").prunable


def test_grouped_conv_cuts_inputs_and_outputs_in_equal_blocks():
    graph = build_graph(GroupedConvNet(), X)
    stem = graph.group_of("stem.0")                       # the grouped conv's input
    assert stem.prunable and stem.blocks == 4 and stem.block_of.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    out = graph.group_of("grouped.0")
    assert out.prunable and out.blocks == 4 and out.size == 16
    assert _members(out, "dw") == ["depthwise.0"]


def test_option_a_pad_pins_the_shortcut_channels():
    graph = build_graph(OptionAShortcut(), X)
    assert "F.pad" in graph.group_of("stem.0").pinned
    assert "F.pad" in graph.group_of("conv2").pinned
    assert graph.group_of("conv1.0").prunable


@pytest.mark.parametrize("cls", list(UNSUPPORTED), ids=lambda c: c.__name__)
def test_unsupported_ops_are_refused_by_name(cls):
    with pytest.raises(PruningError, match=UNSUPPORTED[cls]) as info:
        build_graph(cls(), X)
    assert "cannot prune through node" in str(info.value)


def test_broadcast_gate_unites_its_channels_with_the_gated_ones():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 4, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc((self.a(x) * self.b(x).mean((2, 3), keepdim=True)).mean((2, 3)))

    graph = build_graph(Scale(), X)
    assert graph.group_of("a") is graph.group_of("b") and graph.group_of("a").prunable


def test_one_channel_broadcast_over_channels_is_pinned_not_united():
    class SpatialGate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 1), nn.Conv2d(1, 1, 1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc((self.a(x) * torch.sigmoid(self.b(x))).mean((2, 3)))

    graph = build_graph(SpatialGate(), X)
    assert graph.group_of("a").prunable and graph.group_of("a").size == 4
    assert "broadcast across the channels" in graph.group_of("b").pinned


def test_wrong_input_shape_and_untraceable_model():
    with pytest.raises(PruningError, match="example input"):
        build_graph(models.vgg_small(), torch.randn(1, 3, 8, 8))

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(PruningError, match="torch.fx"):
        build_graph(Branchy(), X)


def test_tracing_changes_nothing():
    model = randomise(models.resnet8()).train()
    model.layer1.eval()                                 # a per-module choice must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_graph(model, torch.randn(2, 1, 8, 8))
    assert model.training and not model.layer1.training and model.layer2.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("build", [models.vgg_small, models.resnet8, models.mobilenetv2_small,
                                   TwoBranchConcat, FlattenLinear, GroupedConvNet])
def test_traced_macs_equal_flop_counter(build):
    model = build()
    x = torch.randn(2, 1, 8, 8)
    assert build_graph(model, x).count_macs() == count_macs(model, x)


def test_groups_print_for_teaching():
    text = str(build_graph(models.resnet8(), X))
    assert "cuts output rows" in text and "BatchNorm" in text and "cuts input columns" in text
    assert "layer2.0.shortcut.0" in text and "16 channels" in text

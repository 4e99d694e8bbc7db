"""The proof that surgery is right: the physically pruned model computes exactly what the
dense model computes with the same channels zeroed (Plan.mask), for every supported family.

Random weights AND random BatchNorm statistics (so BN's beta and running mean matter), eval
mode, 1x8x8 inputs. Non-vacuous: the outputs must also differ from the unpruned model's.
"""

from __future__ import annotations

import pytest
import torch

import prunekit
from engine_nets import (FlattenBN1d, FlattenLinear, GroupedConvNet, OptionAShortcut,
                         ShuffleNet, SigmoidGate, TwoBranchConcat)
from prunekit import models
from prunekit.metrics import count_macs, count_params
from prunekit.testing import assert_prunes_exactly, randomise

FAMILIES = {
    "vgg_small": models.vgg_small,
    "resnet8": models.resnet8,
    "mobilenetv2_small": models.mobilenetv2_small,
    "two_branch_concat": TwoBranchConcat,
    "flatten_linear": FlattenLinear,
    "flatten_bn1d": FlattenBN1d,
    "grouped_conv": GroupedConvNet,
    "option_a_shortcut": OptionAShortcut,
    "channel_shuffle": ShuffleNet,
    "sigmoid_gate": SigmoidGate,
}
# Groups with no BatchNorm cannot be scored by |gamma|; bn_scale runs leave them alone.
NO_BN = {"two_branch_concat": ["head"], "flatten_linear": ["fc1"], "channel_shuffle": ["conv"],
         "sigmoid_gate": ["conv"]}


def _data(seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(2)]


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise(FAMILIES[name]())


@pytest.mark.parametrize("importance", ["l1", "bn_scale", "taylor", "random"])
@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_pruned_equals_masked(name, scope, importance):
    model = _build(name)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    ignore = NO_BN.get(name, []) if importance.startswith("bn") else []
    result = assert_prunes_exactly(model, x, ratio=0.5, importance=importance, scope=scope,
                                   ignore=ignore, data=_data())
    assert result.after["params"] == count_params(result.model) < result.before["params"]
    assert result.after["macs"] == count_macs(result.model, x[:1]) < result.before["macs"]


@pytest.mark.parametrize("importance", ["l2", "fpgm", "taylor_bn"])
def test_more_criteria_equivalent(importance):
    model = _build("resnet8")
    x = torch.randn(2, 1, 8, 8)
    assert_prunes_exactly(model, x, ratio=0.3, importance=importance, data=_data())


@pytest.mark.parametrize("name", ["vgg_small", "resnet8", "mobilenetv2_small", "grouped_conv"])
def test_round_to_equivalent_and_multiples(name):
    model = _build(name)
    x = torch.randn(2, 1, 8, 8)
    plan = assert_prunes_exactly(model, x, ratio=0.4, round_to=4).plan
    for g in plan.graph.groups:
        if g.index in plan.removed:
            assert (g.size - len(plan.removed[g.index])) % 4 == 0


def test_option_a_shortcut_prunes_only_what_is_exact():
    """F.pad on channels: the padded stream is pinned, the block's inner conv is pruned."""
    model = _build("option_a_shortcut")
    result = prunekit.prune(model, torch.randn(1, 1, 8, 8), ratio=0.5)
    assert set(result.removed) == {"conv1.0", "conv1.1"}
    assert result.model.conv2.out_channels == 16 and result.model.conv2.in_channels == 8

"""prunekit.graph.rules.layers: conv, ConvTranspose, linear, BatchNorm and the norms -- what
is cut exactly, what is pinned, what is refused (naming the node)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunekit
from prunekit import PruningError
from prunekit.graph import build_graph
from rule_nets import X, Head, Lambda, exact


# -- functional layers inside modules that fx traces into --------------------------------------
class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d pattern: a BatchNorm subclass whose forward calls F.batch_norm and
    an activation child module (fx traces into it: it is not a torch.nn leaf)."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)
        return self.act(x)


class PaddedConv(nn.Conv2d):
    """timm's Conv2dSame pattern: pads in forward, then F.conv2d on its own weight."""

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias, self.stride, 0,
                        self.dilation, self.groups)


class FunctionalBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = PaddedConv(8, 12, 3)
        self.bn = BatchNormAct(12)
        self.proj = nn.Conv2d(12, 8, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.bn(self.conv(x)))


def test_functional_conv_and_batchnorm_subclasses_are_pruned_exactly():
    result = exact(Head(FunctionalBlock()))
    block = result.model.body
    assert block.conv.out_channels == block.bn.num_features == block.proj.in_channels == 6
    assert isinstance(block.bn, BatchNormAct) and isinstance(block.conv, PaddedConv)
    graph = build_graph(Head(FunctionalBlock()), X[:1])
    assert graph.kinds["body.conv"] == "conv" and graph.kinds["body.bn"] == "bn"


def test_a_weight_computed_in_forward_is_refused():
    class StandardisedConv(nn.Conv2d):
        def forward(self, x: Tensor) -> Tensor:
            w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
            return F.conv2d(x, w, self.bias, padding=1)

    with pytest.raises(PruningError, match="computed in forward"):
        build_graph(Head(StandardisedConv(8, 8, 3)), X[:1])


def test_a_functional_layer_with_another_layers_bias_is_refused():
    block = Lambda(lambda s, x: F.conv2d(x, s.a.weight, s.b.bias, padding=1),
                   a=nn.Conv2d(8, 8, 3), b=nn.Conv2d(8, 8, 3))
    with pytest.raises(PruningError, match=r"node 'conv2d'.*its bias 'body.b.bias' is not"):
        build_graph(Head(block), X[:1])


@pytest.mark.parametrize("fn", [
    lambda s, x: F.relu(s.a(x)) + F.conv2d(x, s.a.weight, padding=1),
    lambda s, x: F.relu(s.a(x) + F.conv2d(x, s.same.weight, s.a.bias, padding=1)),
], ids=["layer_and_functional", "under_a_second_name"])
def test_a_weight_read_by_its_layer_and_directly_in_forward_is_cut_exactly(fn):
    # The check's zero-mask must zero that weight where forward() reads it too (as
    # plan.mask() does), not only the layer's outputs, or an exact cut is refused.
    block = Lambda(fn, a=nn.Conv2d(8, 8, 3, padding=1))
    block.same = block.a
    for importance in ("l1", "random"):
        assert exact(Head(block), importance=importance).model.body.a.out_channels == 4


def test_batch_norm_with_batch_statistics_and_plain_affine_parameters_is_cut_per_channel():
    block = Lambda(lambda s, x: F.relu(F.batch_norm(s.conv(x), None, None, s.g, s.b, True)),
                   conv=nn.Conv2d(8, 8, 3, padding=1))
    block.g, block.b = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
    result = exact(Head(block))
    assert result.model.body.g.shape == (4,) and result.model.body.conv.out_channels == 4


# -- ConvTranspose --------------------------------------------------------------------------------
def test_conv_transpose_is_cut_like_a_conv_with_its_dims_swapped():
    block = nn.Sequential(nn.ConvTranspose2d(8, 8, 2, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3))
    result = exact(Head(block))
    t = result.model.body[0]
    assert (t.in_channels, t.out_channels) == (4, 4) and t.weight.shape[:2] == (4, 4)
    assert build_graph(Head(block), X[:1]).kinds["body.0"] == "convT"


def test_a_grouped_conv_transpose_keeps_both_sides():
    block = nn.Sequential(nn.ConvTranspose2d(8, 8, 3, padding=1, groups=2), nn.ReLU())
    graph = build_graph(Head(block), X[:1])
    assert "grouped ConvTranspose" in graph.group_of("stem.0").pinned
    assert "grouped ConvTranspose" in graph.group_of("body.0").pinned


# -- norms --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, name", [(nn.GroupNorm(2, 8), "GroupNorm"),
                                        (nn.LocalResponseNorm(3), "LocalResponseNorm")])
def test_norms_over_several_channels_pin_them(norm, name):
    graph = build_graph(Head(norm), X[:1])
    assert name in graph.group_of("stem.0").pinned and "removing is not zeroing" in \
        graph.group_of("stem.0").pinned
    with pytest.raises(PruningError, match=name):
        prunekit.prune(Head(norm), X[:1], ratios={"stem.0": 0.5})


@pytest.mark.parametrize("norm", [nn.InstanceNorm2d(8, affine=True), nn.InstanceNorm2d(8),
                                  nn.GroupNorm(8, 8)], ids=["instance_affine", "instance",
                                                            "group_per_channel"])
def test_norms_of_one_channel_each_are_cut_per_channel(norm):
    result = exact(Head(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), norm, nn.ReLU())))
    cut = result.model.body[1]
    assert getattr(cut, "num_features", getattr(cut, "num_channels", None)) == 4
    if isinstance(cut, nn.GroupNorm):
        assert cut.num_groups == 4


def test_instance_norm_as_a_function_is_per_channel():
    block = Lambda(lambda s, x: s.b(F.relu(F.instance_norm(s.a(x)))), a=nn.Conv2d(8, 8, 3),
                   b=nn.Conv2d(8, 8, 1))
    assert exact(Head(block)).model.body.a.out_channels == 4


def test_a_layer_width_read_in_forward_is_pinned():
    block = Lambda(lambda s, x: s.a(x) / s.a.out_channels, a=nn.Conv2d(8, 8, 1))
    graph = build_graph(Head(block), X[:1])
    assert "reads 'body.a.out_channels' as a number" in graph.group_of("body.a").pinned

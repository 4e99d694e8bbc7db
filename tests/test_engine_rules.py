"""prunekit.graph's rules one at a time: what is accepted (and proved exact), what is pinned
(and why), what is refused (naming the node and the op) -- on small purpose-built models.

Every accepted case goes through `_exact`: the pruned model equals the zero-masked dense
model, something was removed, and the outputs changed (the check is not vacuous).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunekit
from engine_nets import cbr, randomise
from prunekit import PruningError, importance
from prunekit.graph import build_graph
from prunekit.metrics import count_macs
from prunekit.modules import PrunedMultiheadAttention
from prunekit.planning import Plan

X = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _exact(model: nn.Module, x: Tensor = X, **kwargs) -> prunekit.PruneResult:
    torch.manual_seed(0)
    model = randomise(model)
    plan = prunekit.plan(model, x[:1], **{"ratio": 0.5, **kwargs})
    result = plan.apply()
    with torch.no_grad():
        dense, pruned, zeroed = model(x), result.model(x), plan.mask()(x)
    assert result.removed, "nothing was pruned"
    torch.testing.assert_close(pruned, zeroed, rtol=1e-5, atol=1e-5 * float(zeroed.abs().max()))
    assert (pruned - dense).abs().max() > 1e-3 * dense.abs().max(), "vacuous: nothing changed"
    assert result.after["macs"] == count_macs(result.model, x[:1])
    return result


class _Head(nn.Module):
    """stem -> body(x) -> global pool -> linear, for blocks that keep 8 channels."""

    def __init__(self, body: nn.Module | None = None, width: int = 8) -> None:
        super().__init__()
        self.stem = cbr(1, width)
        self.body = body if body is not None else nn.Identity()
        self.fc = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


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
    result = _exact(_Head(FunctionalBlock()))
    block = result.model.body
    assert block.conv.out_channels == block.bn.num_features == block.proj.in_channels == 6
    assert isinstance(block.bn, BatchNormAct) and isinstance(block.conv, PaddedConv)
    graph = build_graph(_Head(FunctionalBlock()), X[:1])
    assert graph.kinds["body.conv"] == "conv" and graph.kinds["body.bn"] == "bn"


def test_a_weight_computed_in_forward_is_refused():
    class StandardisedConv(nn.Conv2d):
        def forward(self, x: Tensor) -> Tensor:
            w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
            return F.conv2d(x, w, self.bias, padding=1)

    with pytest.raises(PruningError, match="computed in forward"):
        build_graph(_Head(StandardisedConv(8, 8, 3)), X[:1])


# -- norms --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm, name", [(nn.GroupNorm(2, 8), "GroupNorm"),
                                        (nn.LocalResponseNorm(3), "LocalResponseNorm")])
def test_norms_over_several_channels_pin_them(norm, name):
    graph = build_graph(_Head(norm), X[:1])
    assert name in graph.group_of("stem.0").pinned and "removing is not zeroing" in \
        graph.group_of("stem.0").pinned
    with pytest.raises(PruningError, match=name):
        prunekit.prune(_Head(norm), X[:1], ratios={"stem.0": 0.5})


def test_instance_norm_is_per_channel():
    result = _exact(_Head(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                                        nn.InstanceNorm2d(8, affine=True), nn.ReLU())))
    assert result.model.body[1].num_features == 4


# -- per-channel parameters -------------------------------------------------------------------
class LayerScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(8) + 0.5)
        self.shift = nn.Parameter(torch.rand(1, 8, 1, 1))
        self.act = nn.PReLU(8)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x) * self.gamma.view(1, -1, 1, 1) + self.shift)


def test_layer_scale_shift_and_prelu_are_cut_with_their_channels():
    result = _exact(_Head(LayerScale()))
    body = result.model.body
    assert body.gamma.shape == (4,) and body.shift.shape == (1, 4, 1, 1)
    assert body.act.weight.shape == (4,) and body.conv.out_channels == 4


# -- ops prunekit has no rule for ---------------------------------------------------------------
class Erfinv(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.erfinv(torch.tanh(x) * 0.5)


def test_an_unknown_op_on_prunable_channels_is_refused_by_name():
    with pytest.raises(PruningError, match="node 'erfinv' = function torch.erfinv: prunekit "
                                           "does not know how this op treats channels"):
        build_graph(_Head(Erfinv()), X[:1])


def test_an_unknown_op_on_pinned_channels_is_accepted():
    class Front(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.odd, self.body = Erfinv(), nn.Sequential(cbr(1, 8), cbr(8, 8))
            self.fc = nn.Linear(8, 10)

        def forward(self, x: Tensor) -> Tensor:                # erfinv on the model input
            return self.fc(self.body(self.odd(x)).mean((2, 3)))

    result = _exact(Front())
    assert result.model.body[0][0].out_channels == 4


# -- sizes written in forward() -----------------------------------------------------------------
def test_a_size_read_at_run_time_that_does_not_follow_the_cut_is_refused_and_nothing_changes():
    class HalfPlusOne(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x[:, : x.size(1) // 2 + 3]              # 7 of 8 channels, then 5 of 4 ...

    model = randomise(nn.Sequential(cbr(1, 8), HalfPlusOne(), nn.Conv2d(7, 4, 1),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    graph = build_graph(model, X[:1])
    stem = graph.group_of("0.0")
    assert graph.checks[stem.index] == ["getitem"]
    plan = Plan(model, graph, removed={stem.index: torch.arange(4)}, scores={})  # 4 of 8 go
    for inplace in (False, True):
        with pytest.raises(PruningError, match="getitem"):
            plan.apply(inplace=inplace)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_constant_width_pins_with_the_node_named():
    class Grouped(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.reshape(x.size(0), 2, 4, 8, 8).sum(2)          # 8 = 2 x 4, both constant

    graph = build_graph(_Head(nn.Sequential(Grouped(), nn.Conv2d(2, 8, 1))), X[:1])
    assert "hard-coded in 'reshape'" in graph.group_of("stem.0").pinned


def test_chunk_keeps_equal_halves_and_roll_is_refused():
    class Halves(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            a, b = x.chunk(2, dim=1)
            return torch.cat([b, a * 2.0], dim=1)

    result = _exact(_Head(Halves()))
    assert result.model.stem[0].out_channels == 4                 # 2 of each half go together

    class Roll(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.roll(x, 1, dims=1)

    with pytest.raises(PruningError, match="roll"):
        build_graph(_Head(Roll()), X[:1])


# -- attention heads ----------------------------------------------------------------------------
class Tokens(nn.Module):
    """(N, 1, 8, 8) -> 16 tokens of width 16 -> attention -> mean over tokens -> classes."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, 16, 2, stride=2)
        self.attn = attention
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        out = self.attn(t, t, t, need_weights=False)[0] if isinstance(
            self.attn, nn.MultiheadAttention) else self.attn(t)
        return self.fc(out.mean(1))


def test_multihead_attention_heads_are_one_channel_each_and_cut_whole():
    model = Tokens(nn.MultiheadAttention(16, 4, batch_first=True))
    graph = build_graph(model, X[:1])
    heads = next(g for g in graph.groups if g.modules("heads") == ["attn"])
    assert heads.size == 4 and heads.prunable
    rows = [m for m in heads.members if m.role == "heads"][0]
    assert len(rows.positions) == 48 and rows.units.tolist() == [h for h in range(4)
                                                                for _ in range(4)] * 3
    scores = importance.group_scores(model, graph, [heads], "l1")[heads.index]
    w = model.attn.in_proj_weight.detach().abs().sum(1).reshape(3, 4, 4)
    torch.testing.assert_close(scores, w.sum((0, 2)))          # q, k and v rows of each head
    result = _exact(model, ratios={"attn": 0.5}, ratio=0.0)
    attn = result.model.attn
    assert isinstance(attn, PrunedMultiheadAttention) and attn.num_heads == 2
    assert attn.in_proj_weight.shape == (24, 16) and attn.out_proj.weight.shape == (16, 8)


def test_used_attention_weights_pin_the_heads():
    class Weights(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, t: Tensor) -> Tensor:
            out, weights = self.attn(t, t, t)
            return out * weights.mean(-1, keepdim=True)

    graph = build_graph(Tokens(Weights()), X[:1])
    heads = next(g for g in graph.groups if g.modules("heads") == ["attn.attn"])
    assert "attention weights" in heads.pinned


def test_pruned_attention_can_be_pruned_again():
    model = randomise(Tokens(nn.MultiheadAttention(16, 4, batch_first=True)))
    once = prunekit.prune(model, X[:1], ratio=0.0, ratios={"attn": 0.25}).model
    twice = _exact(once, ratios={"attn": 0.5}, ratio=0.0).model
    assert twice.attn.num_heads == 2

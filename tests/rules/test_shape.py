"""prunekit.graph.rules.shape: reshape, cat, split, indexing, pad, shuffles -- ops that move
values; the question is whether the same op on the smaller tensor still puts every channel
where the zero-masked model has it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunekit
from engine_nets import cbr
from prunekit import PruningError
from prunekit.graph import build_graph
from prunekit.planning import Plan
from prunekit.testing import randomise
from rule_nets import X, Head, Lambda, exact


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

    graph = build_graph(Head(nn.Sequential(Grouped(), nn.Conv2d(2, 8, 1))), X[:1])
    assert "hard-coded in 'reshape'" in graph.group_of("stem.0").pinned


def test_chunk_keeps_equal_halves_and_roll_is_refused():
    class Halves(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            a, b = x.chunk(2, dim=1)
            return torch.cat([b, a * 2.0], dim=1)

    result = exact(Head(Halves()))
    assert result.model.stem[0].out_channels == 4                 # 2 of each half go together

    class Roll(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.roll(x, 1, dims=1)

    with pytest.raises(PruningError, match="roll"):
        build_graph(Head(Roll()), X[:1])


@pytest.mark.parametrize("take", [lambda t: t.narrow(1, -4, 4), lambda t: t[:, -4:]],
                         ids=["narrow", "slice"])
def test_positions_counted_from_the_end_pin_the_channels_after_them(take):
    block = Lambda(lambda s, x: s.c(take(torch.cat([s.a(x), s.b(x)], 1))),
                   a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 4, 1), c=nn.Conv2d(4, 8, 1))
    graph = build_graph(Head(block), X[:1])
    assert graph.group_of("body.b").pinned and graph.group_of("body.a").prunable
    exact(Head(block))


MOVERS = {
    "pixel_shuffle": (lambda s, x: s.b(F.pixel_shuffle(s.a(x), 2)), 32, 8),
    "pixel_unshuffle": (lambda s, x: s.b(F.pixel_unshuffle(s.a(x), 2)), 8, 32),
    "repeat_interleave": (lambda s, x: s.b(s.a(x).repeat_interleave(2, dim=1)), 8, 16),
    "tensor_split": (lambda s, x: s.b(torch.cat(torch.tensor_split(s.a(x), 2, dim=1)[::-1], 1)),
                     8, 8),
}


@pytest.mark.parametrize("name", list(MOVERS))
def test_ops_that_only_move_values_are_followed(name):
    """conv a (8 -> width) -> the op -> conv b (what the op hands it -> 8)."""
    fn, width, moved = MOVERS[name]
    block = Lambda(fn, a=nn.Conv2d(8, width, 1), b=nn.Conv2d(moved, 8, 1))
    result = exact(Head(block))
    assert result.model.body.a.out_channels < width


@pytest.mark.parametrize("pad", [nn.ZeroPad2d(1), nn.ReflectionPad2d(1), nn.ReplicationPad2d(1)],
                         ids=["zero", "reflection", "replication"])
def test_pad_layers_pad_each_channel_alone(pad):
    result = exact(Head(nn.Sequential(nn.Conv2d(8, 8, 1), pad, nn.Conv2d(8, 8, 3))))
    assert result.model.body[0].out_channels == 4


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_channels_padded_by_f_pad_and_read_by_a_conv_are_pinned_not_refused(value):
    # the padded tensor goes straight into a conv (not only into a residual add): the new
    # channels are pinned per channel, so the conv reads channels along one axis
    block = Lambda(lambda s, x: s.b(F.pad(s.a(x), (0, 0, 0, 0, 1, 1), value=value)),
                   a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(10, 8, 1))
    result = exact(Head(block))
    assert result.model.body.a.out_channels == 8 and result.model.body.b.in_channels == 10
    assert result.model.body.b.out_channels == 4
    assert "padded on channels by F.pad" in build_graph(Head(block), X[:1]).group_of(
        "body.a").pinned


def test_a_constant_pad_of_one_read_by_a_conv_is_refused():
    block = nn.Sequential(nn.Conv2d(8, 8, 1), nn.ConstantPad2d(1, 1.0), nn.Conv2d(8, 8, 3))
    with pytest.raises(PruningError, match="pads with the constant 1.0"):
        build_graph(Head(block), X[:1])


def test_a_squeeze_that_could_drop_the_channel_axis_keeps_two_channels():
    model = Lambda(lambda s, x: s.fc(s.a(s.stem(x)).mean((2, 3)).squeeze(1)), stem=cbr(1, 2),
                   a=nn.Conv2d(2, 2, 1), fc=nn.Linear(2, 10))
    graph = build_graph(model, X[:1])
    assert graph.group_of("a").min_keep == 2
    assert not prunekit.plan(model, X[:1], ratio=0.0, ratios={"a": 0.5}).removed

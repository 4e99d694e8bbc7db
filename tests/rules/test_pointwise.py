"""prunekit.graph.rules.pointwise: activations, ``a + b`` / ``a * b`` / ``a / b``, per-channel
parameters, clamp, reductions -- the question every rule answers: is a removed (zero) channel
still zero after this op?"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from prunekit import PruningError
from prunekit.graph import build_graph
from rule_nets import X, Head, Lambda, exact


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
    result = exact(Head(LayerScale()))
    body = result.model.body
    assert body.gamma.shape == (4,) and body.shift.shape == (1, 4, 1, 1)
    assert body.act.weight.shape == (4,) and body.conv.out_channels == 4


def test_a_parameter_we_divide_by_is_cut_but_not_zeroed_in_the_mask():
    block = Lambda(lambda s, x: s.b(s.a(x) / s.g.view(1, -1, 1, 1)), a=nn.Conv2d(8, 8, 1),
                   b=nn.Conv2d(8, 8, 1))
    block.g = nn.Parameter(torch.rand(8) + 0.5)
    result = exact(Head(block))                  # the mask would be 0 / 0 = NaN otherwise
    assert result.model.body.g.shape == (4,)
    masked = result.plan.mask().body.g
    assert bool((masked > 0).all())


def test_dividing_by_channels_that_are_zero_when_removed_is_refused():
    block = Lambda(lambda s, x: s.b(x / s.a(x)), a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 8, 1))
    with pytest.raises(PruningError, match="divides by channels"):
        build_graph(Head(block), X[:1])


def test_a_size_used_as_a_number_pins_the_channels_it_counts():
    block = Lambda(lambda s, x: s.a(x) * (s.a(x).sum(1, keepdim=True) / s.a(x).shape[1]),
                   a=nn.Conv2d(8, 8, 1))
    graph = build_graph(Head(block), X[:1])
    assert "used as a number at node 'truediv'" in graph.group_of("body.a").pinned


def test_a_statistic_of_a_parameter_pins_it():
    block = Lambda(lambda s, x: s.b(s.a(x)) * s.a.weight.abs().mean(), a=nn.Conv2d(8, 8, 1),
                   b=nn.Conv2d(8, 8, 1))
    graph = build_graph(Head(block), X[:1])
    assert "'body.a.weight' is read whole" in graph.group_of("body.a").pinned


def test_maximum_unites_channels_like_an_add():
    block = Lambda(lambda s, x: torch.maximum(s.a(x), s.b(x)), a=nn.Conv2d(8, 8, 1),
                   b=nn.Conv2d(8, 8, 3, padding=1))
    result = exact(Head(block))
    assert result.removed["body.a"] == result.removed["body.b"]


def test_clamp_with_a_per_channel_bound_cuts_the_bound():
    block = Lambda(lambda s, x: s.b(s.a(x).clamp(min=s.low)), a=nn.Conv2d(8, 8, 1),
                   b=nn.Conv2d(8, 8, 1))
    block.register_buffer("low", -torch.rand(1, 8, 1, 1))
    assert exact(Head(block)).model.body.low.shape == (1, 4, 1, 1)


@pytest.mark.parametrize("fn, what", [
    (lambda s, x: s.b(torch.sigmoid(s.a(x))), "f\\(0\\) != 0"),
    (lambda s, x: s.b(s.a(x).clamp(min=0.1)), "clamps 0 to another value"),
    (lambda s, x: s.b(s.a(x).mean(1, keepdim=True).expand_as(x)), "reduces over the channel"),
], ids=["sigmoid", "clamp_positive", "channel_mean"])
def test_a_nonzero_image_of_zero_read_by_a_layer_is_refused(fn, what):
    block = Lambda(fn, a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 8, 1))
    with pytest.raises(PruningError, match=what):
        build_graph(Head(block), X[:1])


def test_a_constant_moved_with_to_does_not_take_the_channels_of_its_target():
    block = Lambda(lambda s, x: s.b(s.a(x) * 2 + torch.ones(s.a(x).shape).to(s.a(x))),
                   a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 8, 1))
    graph = build_graph(Head(block), X[:1])
    assert "constant tensor" in graph.group_of("body.a").pinned


def _add_in_place(s, x):
    y = s.a(x)
    y.add_(1)                                  # changes y; fx records a node nobody uses
    return s.b(y)


def _relu_in_place(s, x):
    y = s.a(x)
    y.relu_()                                  # changes y, but zero stays zero
    return s.b(y)


def test_an_in_place_op_that_changes_what_a_later_node_reads_is_refused_by_name():
    block = Lambda(_add_in_place, a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 8, 1))
    with pytest.raises(PruningError, match=r"node 'add_' = method \.add_\(\): it changes 'body_a' "
                       r"in place and node 'body_b' reads it.*out-of-place 'add' instead"):
        build_graph(Head(block), X[:1])
    exact(Head(Lambda(_relu_in_place, a=nn.Conv2d(8, 8, 1), b=nn.Conv2d(8, 8, 1))))

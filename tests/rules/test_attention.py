"""prunekit.graph.rules.attention: whole heads are the units -- nn.MultiheadAttention,
hand-written attention, grouped-query attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import prunekit
from prunekit import importance
from prunekit.graph import build_graph
from prunekit.modules import PrunedMultiheadAttention
from prunekit.testing import randomise
from rule_nets import X, exact


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
    result = exact(model, ratios={"attn": 0.5}, ratio=0.0)
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
    twice = exact(once, ratios={"attn": 0.5}, ratio=0.0).model
    assert twice.attn.num_heads == 2


class GroupedQuery(nn.Module):
    """4 query heads share 2 key/value heads (repeat_interleave): one unit per kv head."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8)
        self.o = nn.Linear(16, 16)

    def forward(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        q = self.q(t).view(b, n, -1, 4).transpose(1, 2)
        k = self.k(t).view(b, n, -1, 4).transpose(1, 2).repeat_interleave(2, dim=1)
        v = self.v(t).view(b, n, -1, 4).transpose(1, 2).repeat_interleave(2, dim=1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.o(out.transpose(1, 2).reshape(b, n, -1))


def test_grouped_query_attention_loses_whole_key_value_groups():
    result = exact(Tokens(GroupedQuery()))
    attn = result.model.attn
    assert attn.k.out_features == attn.v.out_features == 4           # one kv head of two
    assert attn.q.out_features == attn.o.in_features == 8             # its two query heads

"""prunekit.importance: each criterion against a hand computation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine_nets import TinyConvNet
from prunekit.testing import randomise
from prunekit import PruningError, importance, models
from prunekit.graph import build_graph


def _data(n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(n)]


def test_norms_and_bn_scale():
    conv = nn.Conv2d(3, 4, 3)
    expected_l1 = torch.stack([conv.weight[i].abs().sum() for i in range(4)])
    torch.testing.assert_close(importance.l1_norm(conv), expected_l1.detach())
    torch.testing.assert_close(importance.l2_norm(conv),
                               torch.stack([conv.weight[i].norm() for i in range(4)]).detach())
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-2.0, 0.5, 0.0, 1.0]))
    assert importance.bn_scale(bn).tolist() == [2.0, 0.5, 0.0, 1.0]
    with pytest.raises(PruningError, match="BatchNorm"):
        importance.bn_scale(conv)


def test_fpgm_scores_the_median_filter_lowest():
    lin = nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0], [1.0], [5.0]]))
    # distances: filter 0 -> 1 + 5, filter 1 -> 1 + 4, filter 2 -> 5 + 4
    assert importance.fpgm(lin).tolist() == [6.0, 5.0, 9.0]


def test_random_is_seeded():
    a, b = importance.random(10, seed=3), importance.random(10, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, importance.random(10, seed=4))
    assert importance.random(nn.Conv2d(1, 5, 1)).shape == (5,)


def test_taylor_matches_hand_computation_and_touches_nothing():
    torch.manual_seed(0)
    model = randomise(models.vgg_small()).train()
    state = copy.deepcopy(model.state_dict())
    data = _data(1)
    scores = importance.taylor(model, data, batches=1)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    ref = copy.deepcopy(model).eval()
    loss = F.cross_entropy(ref(data[0][0]), data[0][1])
    loss.backward()
    conv, bn = ref.features[0][0], ref.features[0][1]
    torch.testing.assert_close(scores["features.0.0"],
                               (conv.weight * conv.weight.grad).sum((1, 2, 3)).abs().detach())
    gate = (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).abs().detach()
    torch.testing.assert_close(scores["features.0.1"], gate)
    assert scores["features.0.0"].max() > 1e-5    # eval mode: not the ~1e-9 of train mode


def test_oracle_is_the_loss_increase_of_removing_a_channel():
    torch.manual_seed(0)
    model = randomise(models.vgg_small())
    data = _data(1)
    scores = importance.oracle(model, "features.1.0", data, batches=1)
    assert scores.shape == (64,)
    c = int(scores.argmax())
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for t in (masked.features[1][0].weight, masked.features[1][1].weight,
                  masked.features[1][1].bias):
            t[c] = 0
        x, y = data[0]
        expected = F.cross_entropy(masked(x), y) - F.cross_entropy(model(x), y)
    assert abs(float(scores[c]) - float(expected)) < 1e-5




def _mean_loss(model, batches):
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) * len(y) for x, y in batches) / sum(
            len(y) for _, y in batches)


def test_oracle_equals_the_loss_change_of_a_hand_made_removal():
    net = TinyConvNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.bias.uniform_(-1, 1)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 2, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g))
               for n in (5, 3)]
    state = copy.deepcopy(net.state_dict())
    net.train()   # the oracle works on an eval-mode copy: mode and weights stay as they were
    scores = importance.oracle(net, "bn", batches)
    assert net.training and all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    torch.testing.assert_close(importance.oracle(net, "conv", batches), scores)  # same group
    net.eval()
    base = _mean_loss(net, batches)
    for c in range(4):
        cut = copy.deepcopy(net)
        with torch.no_grad():
            cut.head.weight[:, c] = 0
        assert float(scores[c]) == pytest.approx(_mean_loss(cut, batches) - base, abs=1e-6)
    with pytest.raises(PruningError, match="no layer called 'nope'"):
        importance.oracle(net, "nope", batches)


def _resnet8():
    torch.manual_seed(0)
    return randomise(models.resnet8())


def _trained_mobilenet():   # random weights barely react to one channel: use trained ones
    from prunekit.zoo import load_pretrained
    return load_pretrained("mobilenetv2_small")


@pytest.mark.parametrize("build, layer, size", [
    (_resnet8, "layer2.0.conv1", 8),                    # a plain conv-BN pair inside a block
    (_resnet8, "stem.0", 8),                            # residual: stem + every layer1 block
    (_trained_mobilenet, "features.2.block.0.0", 16),   # expansion conv, BN, depthwise conv, BN
])
def test_oracle_fast_path_equals_full_forward_passes(build, layer, size):
    from prunekit.surgery import mask

    model = build().eval()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 1, size, size, generator=g), torch.randint(0, 10, (8,), generator=g))
            for _ in range(2)]
    graph = build_graph(model, data[0][0][:1])
    group = graph.group_of(layer)
    fast = importance.group_oracle(model, graph, group, data, batches=2)
    base = _mean_loss(model, data)
    full = torch.tensor([_mean_loss(mask(model, graph, {group.index: torch.tensor([c])}), data)
                         - base for c in range(group.size)])
    assert fast.shape == (group.size,) and fast.abs().max() > 1e-3
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)


def test_group_score_sums_over_coupled_producers():
    model = models.resnet8()
    graph = build_graph(model, torch.randn(1, 1, 8, 8))
    stem = graph.group_of("stem.0")
    scores = importance.group_scores(model, graph, [stem], "l1")[stem.index]
    expected = importance.l1_norm(model.stem[0]) + importance.l1_norm(model.layer1[0].conv2)
    torch.testing.assert_close(scores, expected)
    custom = importance.group_scores(model, graph, [stem], importance.l1_norm)[stem.index]
    torch.testing.assert_close(custom, expected)


def test_normalise_and_unknown_names():
    s = importance.normalise(torch.tensor([1.0, 2.0, 3.0]))
    assert float(s.mean()) == pytest.approx(1.0)
    assert importance.normalise(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(PruningError, match="unknown importance 'l3'"):
        importance.criterion_name("l3")
    with pytest.raises(PruningError, match="data="):
        importance.taylor(models.vgg_small(), None)

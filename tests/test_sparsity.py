"""prunekit.sparsity: N:M masks, their validity, storage by hand, exact channel permutations."""

from __future__ import annotations

import copy

import pytest
import torch

from prunekit.testing import randomise
from prunekit import models, sparsity
from prunekit.errors import PruningError
from prunekit.graph import build_graph

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("shape", [(8, 16), (6, 8, 3, 3), (4, 12, 1, 1), (5, 4, 2, 5), (3, 32)])
@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_masks_are_n_of_m_along_the_input_dimension(shape, n, m):
    w = torch.randn(*shape, generator=G)
    if shape[1] % m:
        pytest.skip("width not a multiple of m")
    mask = sparsity.nm_mask(w, n, m)
    assert mask.shape == w.shape and sparsity.is_nm(mask, n, m) and sparsity.is_nm(w * mask, n, m)
    assert int(mask.sum()) == w.numel() * n // m                   # exactly n of every m
    inputs_last = (w.abs() * mask).movedim(1, -1).reshape(-1, m)  # the kept ones are the largest
    dropped = (w.abs() * (1 - mask)).movedim(1, -1).reshape(-1, m)
    kept_min = torch.where(inputs_last > 0, inputs_last, torch.inf).min(1).values
    assert bool((dropped.max(1).values <= kept_min).all())


def test_groups_run_along_input_channels_of_a_conv():
    w = torch.zeros(1, 4, 1, 2)
    w[0, :, 0, 0] = torch.tensor([1.0, 4.0, 3.0, 2.0])           # one group: channels 0..3 at (0, 0)
    w[0, :, 0, 1] = torch.tensor([5.0, 1.0, 1.0, 6.0])
    mask = sparsity.nm_mask(w, 2, 4)
    assert mask[0, :, 0, 0].tolist() == [0, 1, 1, 0] and mask[0, :, 0, 1].tolist() == [1, 0, 0, 1]
    assert not sparsity.is_nm(torch.ones(2, 8), 2, 4) and sparsity.is_nm(torch.zeros(2, 8), 2, 4)


def test_width_not_a_multiple_of_m_is_refused():
    with pytest.raises(ValueError, match="not a multiple of M=4"):
        sparsity.nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(ValueError, match="not a multiple"):
        sparsity.storage((4, 6), 2, 4)
    assert not sparsity.is_nm(torch.randn(4, 6))
    model = models.vgg_small()
    assert "features.0.0" not in sparsity.sparsifiable_layers(model)        # 1 input channel
    assert "features.1.0" in sparsity.sparsifiable_layers(model)


def test_storage_by_hand():
    s = sparsity.storage((64, 128), 2, 4, value_bytes=2, index_bytes=4)
    # 8192 weights, 4096 kept: 4096 x 2 B values + 4096 x 2 bits = 1024 B of positions
    assert (s.dense, s.nonzeros, s.nm) == (16384, 4096, 8192 + 1024)
    assert s.csr == 4096 * (2 + 4) + 65 * 4                     # values, columns, row pointers
    s8 = sparsity.storage((2, 8, 3, 3), 1, 8, value_bytes=4)
    assert s8.nonzeros == 18 and s8.nm == 18 * 4 + (18 * 3 + 7) // 8   # 3 bits pick one of 8


def test_apply_and_remove_keep_the_zeros_through_training():
    torch.manual_seed(0)
    model = randomise(models.vgg_small())
    masks = sparsity.apply_nm(model)
    assert set(masks) == set(sparsity.sparsifiable_layers(models.vgg_small()))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        opt.step()
    sparsity.remove_nm(model)
    for name in masks:
        w = model.get_submodule(name).weight
        assert sparsity.is_nm(w) and not hasattr(model.get_submodule(name), "weight_orig")
    copy.deepcopy(model)                                          # no hooks left


def test_permutation_keeps_the_function_and_helps_the_mask():
    torch.manual_seed(0)
    model = randomise(models.vgg_small())
    x = torch.randn(3, 1, 8, 8)
    graph = build_graph(model, x[:1])
    group = graph.group_of("features.1.0")                        # read by features.3.0
    consumer = model.get_submodule("features.3.0").weight
    perm = sparsity.search_permutation(consumer, rounds=600)
    permuted = sparsity.permute_channels(model, graph, group, perm)
    with torch.no_grad():
        torch.testing.assert_close(permuted(x), model(x), rtol=1e-5, atol=1e-5)
    new_weight = permuted.get_submodule("features.3.0").weight
    assert torch.equal(new_weight, consumer[:, perm])
    assert sparsity.kept_magnitude(new_weight) > sparsity.kept_magnitude(consumer)
    with pytest.raises(PruningError, match="permutation"):
        sparsity.permute_channels(model, graph, group, torch.zeros(group.size, dtype=torch.long))

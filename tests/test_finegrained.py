"""prunekit.finegrained: exact magnitude masks, a scan that leaves the model as it was, an
allocation that meets its size target and follows the scan, masks that hold through training."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch
from torch import nn

from prunekit.testing import randomise
from prunekit import finegrained as fg
from prunekit import models, viz
from prunekit.train import fine_tune

matplotlib.use("Agg")
G = torch.Generator().manual_seed(0)


def small_vgg() -> nn.Module:
    torch.manual_seed(0)
    return randomise(models.vgg_small()).eval()


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_magnitude_mask_removes_exactly_the_smallest(sparsity):
    w = torch.randn(16, 8, 3, 3, generator=G)
    mask = fg.magnitude_mask(w, sparsity)
    assert mask.shape == w.shape and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int((mask == 0).sum()) == round(sparsity * w.numel())
    if 0 < sparsity < 1:
        assert w.abs()[mask == 0].max() <= w.abs()[mask == 1].min()


def test_magnitude_mask_breaks_ties_by_position_and_refuses_bad_shares():
    w = torch.tensor([[1.0, -1.0, 1.0, 2.0]])
    assert fg.magnitude_mask(w, 0.5).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            fg.magnitude_mask(w, bad)


def test_prunable_layers_are_the_convs_and_linears_in_order():
    assert list(fg.prunable_layers(models.vgg_small())) == [
        "features.0.0", "features.1.0", "features.3.0", "features.5.0", "classifier"]


def test_temporarily_masked_restores_every_weight_even_after_an_error():
    model = small_vgg()
    before = copy.deepcopy(model.state_dict())
    with fg.temporarily_masked(model, {"features.1.0": 0.5, "classifier": 0.9}):
        assert fg.kept_share(model, ["features.1.0"]) == 0.5
        assert fg.kept_share(model, ["classifier"]) == pytest.approx(0.1)
    with pytest.raises(RuntimeError, match="inside"):
        with fg.temporarily_masked(model, {"features.3.0": 0.7}):
            raise RuntimeError("inside the block")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_temporarily_masked_refuses_a_layer_with_prune_hooks():
    model = fg.apply_masks(small_vgg(), {"features.1.0": 0.5})
    with pytest.raises(ValueError, match="hooks"):
        with fg.temporarily_masked(model, {"features.1.0": 0.7}):
            pass


def test_scan_masks_one_layer_at_a_time_and_leaves_the_model_unchanged():
    model = small_vgg()
    before = copy.deepcopy(model.state_dict())
    seen = []

    def score(m: nn.Module) -> float:       # records which layers are masked during each call
        shares = {n: fg.kept_share(m, [n]) for n in fg.prunable_layers(m)}
        seen.append({n: round(1 - s, 3) for n, s in shares.items() if s < 1})
        return 1 - sum(1 - s for s in shares.values())

    scan = fg.sensitivity_scan(model, [0.5, 0.8], score, layers=["features.1.0", "classifier"])
    assert seen == [{"features.1.0": 0.5}, {"features.1.0": 0.8}, {"classifier": 0.5}, {"classifier": 0.8}]
    # round(0.8 x 18,432) = 14,746 weights masked: 0.19998 kept
    assert scan == {"features.1.0": {0.5: 0.5, 0.8: pytest.approx(3686 / 18432)},
                    "classifier": {0.5: 0.5, 0.8: pytest.approx(0.2)}}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_allocation_meets_the_target_exactly_and_spares_the_sensitive_layer():
    sizes = {"small": 100, "big": 900}
    scan = {"small": {0.5: 0.50, 0.9: 0.10},      # falls at once: spare it
            "big": {0.5: 0.98, 0.9: 0.95}}        # robust
    alloc = fg.allocate(scan, sizes, keep=0.3, dense_score=0.99)
    assert sum(sizes[n] * (1 - s) for n, s in alloc.items()) == pytest.approx(0.3 * 1000)
    assert alloc["small"] == 0.0 and alloc["big"] == pytest.approx(1 - 200 / 900)   # 0.778: within big's 0.9 step


def test_allocation_divides_by_the_weights_a_step_removes():
    # the same score drop per step, but "big" removes 10x the weights per step: it goes first and further
    sizes = {"small": 100, "big": 1000}
    scan = {"small": {0.5: 0.9}, "big": {0.5: 0.9}}
    alloc = fg.allocate(scan, sizes, keep=0.6, dense_score=1.0)
    assert alloc == {"small": 0.0, "big": pytest.approx(0.44)}
    # and when the cheapest step is not enough, the next cheapest follows
    alloc = fg.allocate(scan, sizes, keep=0.5, dense_score=1.0)
    assert alloc == {"small": 0.5, "big": 0.5}     # big's 0.5 removes 500 of the 550; small's step the last 50


def test_allocation_refuses_an_unreachable_target():
    with pytest.raises(ValueError, match="highest scanned sparsity"):
        fg.allocate({"a": {0.5: 0.9}}, {"a": 10}, keep=0.2, dense_score=1.0)
    assert fg.allocate({"a": {0.5: 0.9}}, {"a": 10}, keep=1.0, dense_score=1.0) == {"a": 0.0}


def test_a_bad_request_leaves_the_model_unchanged():
    model = small_vgg()
    for bad in ({"features.1.0": 0.5, "features.3.0": 1.5}, {"features.1.0": 0.5, "features.9.0": 0.5}):
        with pytest.raises((ValueError, AttributeError)):
            fg.apply_masks(model, bad)
        assert not any(hasattr(m, "weight_mask") for m in model.modules()) and fg.kept_share(model) == 1.0


def test_global_magnitude_is_one_threshold_over_all_layers():
    model = small_vgg()
    with torch.no_grad():
        model.classifier.weight.mul_(100.0)                                # large weights: spared by a global cut
    shares = fg.global_magnitude(model, keep=0.3)
    sizes = {n: m.weight.numel() for n, m in fg.prunable_layers(model).items()}
    assert sum(sizes[n] * (1 - s) for n, s in shares.items()) == round(0.3 * sum(sizes.values()))
    assert shares["classifier"] < 0.01 and shares["features.5.0"] > 0.7
    masked = fg.masked_copy(model, shares)                                 # the same masks as one threshold
    kept = torch.cat([masked.get_submodule(n).weight.detach().abs().flatten() for n in sizes])
    cut = torch.cat([model.get_submodule(n).weight.detach().abs().flatten() for n in sizes])[kept == 0].max()
    assert kept[kept > 0].min() >= cut


def test_masks_equal_zeroed_weights_and_hold_through_fine_tuning():
    model = small_vgg()
    sparsities = {"features.1.0": 0.6, "features.5.0": 0.9, "classifier": 0.0}
    masked = fg.masked_copy(model, sparsities)
    assert fg.kept_share(model) == 1.0                                    # the original is untouched
    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, s in sparsities.items():
            zeroed.get_submodule(name).weight.mul_(fg.magnitude_mask(zeroed.get_submodule(name).weight, s))
    x = torch.randn(4, 1, 28, 28, generator=G)
    with torch.no_grad():
        assert torch.allclose(masked(x), zeroed(x), atol=1e-5)          # pruned == zero-masked
    data = torch.utils.data.TensorDataset(torch.randn(32, 1, 28, 28, generator=G),
                                          torch.randint(0, 10, (32,), generator=G))
    fine_tune(masked, torch.utils.data.DataLoader(data, batch_size=8), epochs=1, lr=0.1, progress=False)
    fg.remove_masks(masked)
    assert not any(hasattr(m, "weight_orig") for m in masked.modules())
    copy.deepcopy(masked)                                                 # a plain model again
    for name, s in sparsities.items():                                    # exactly the masked count is zero
        n = masked.get_submodule(name).weight.numel()
        assert fg.kept_share(masked, [name]) == (n - round(s * n)) / n
    assert not torch.equal(masked.features[1][0].weight, zeroed.features[1][0].weight)   # it did train


def test_weight_histograms_draw_one_panel_per_layer():
    model = small_vgg()
    fig = viz.weight_histograms(model, {"features.1.0": 0.5, "classifier": 0.0})
    assert len(fig.axes) == 2 and "50% removed" in fig.axes[0].get_title()
    with pytest.raises(ValueError, match="at least one layer"):
        viz.weight_histograms(model, {})

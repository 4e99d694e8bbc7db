"""prunekit.fold: a BatchNorm folded into its conv computes the same function, exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit
from prunekit.data import make_loaders
from prunekit.testing import randomise
from prunekit.verify import output_error
from prunekit.fold import fold_batchnorm, fold_conv_bn, foldable_pairs
from prunekit.zoo import list_pretrained, load_pretrained

TOLERANCE = 1e-5   # largest |folded - unfolded|, relative to the largest |logit|


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """A batch of real test digits (folding errors depend on the activations' scale)."""
    return next(iter(make_loaders("mnist", seed=0, eval_batch_size=256).test))[0]


def _with_negative_gammas(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    """prunekit.testing.randomise, with every other gamma negative (a fold must keep signs)."""
    randomise(bn, seed)
    with torch.no_grad():
        bn.weight[::2] *= -1
    return bn


@pytest.mark.parametrize("groups,bias", [(1, False), (1, True), (2, True), (6, False)])
def test_fold_conv_bn_equals_conv_then_bn_and_torchs_own_fusion(groups, bias):
    torch.manual_seed(groups)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups, bias=bias).eval()
    bn = _with_negative_gammas(nn.BatchNorm2d(6), groups)
    x = torch.randn(4, 6, 9, 9)
    folded = fold_conv_bn(conv, bn)
    with torch.no_grad():
        want = bn(conv(x))
        torch.testing.assert_close(folded(x), want, atol=1e-5, rtol=1e-5)
        reference = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)   # an independent fold
        torch.testing.assert_close(folded.weight, reference.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(folded.bias, reference.bias, atol=1e-6, rtol=1e-5)
    assert folded.bias is not None and folded.groups == groups
    assert conv.bias is None or not torch.equal(conv.bias, folded.bias)   # the inputs untouched


def test_fold_conv_bn_refuses_what_it_cannot_fold():
    with pytest.raises(TypeError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="3 channels"):
        fold_conv_bn(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="non-transposed"):
        fold_conv_bn(nn.ConvTranspose2d(2, 3, 1), nn.BatchNorm2d(3))


class _Shared(nn.Module):
    """A conv whose output is read twice, a BN after a ReLU, a BN without statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        y = self.conv(x)
        z = self.bn(y) + y                         # y is read twice: not foldable
        z = self.bn2(torch.relu(self.conv2(z)))    # BN after ReLU: not foldable
        return self.bn3(self.conv3(z))             # batch statistics: not foldable


def test_only_a_bn_that_alone_reads_a_conv_is_folded():
    model = _Shared().eval()
    for bn in (model.bn, model.bn2):
        _with_negative_gammas(bn, 3)
    assert foldable_pairs(model) == []
    x = torch.randn(2, 1, 7, 7)
    with torch.no_grad():
        assert torch.equal(fold_batchnorm(model)(x), model(x))


@pytest.mark.parametrize("name", list_pretrained())
def test_every_zoo_model_folded_equals_unfolded_dense_and_pruned(name, images):
    dense = load_pretrained(name)
    pruned = prunekit.prune(dense, images[:1], ratio=0.5).model
    for model in (dense, pruned):
        state = copy.deepcopy(model.state_dict())
        folded = fold_batchnorm(model)
        bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules()) == 0
        assert len(foldable_pairs(model)) == bns                # every BN of the zoo folds
        with torch.no_grad():
            want, got = model(images), folded(images)
        error = output_error(got, want)
        assert error < TOLERANCE, f"{name}: relative error {error:.2e}"
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_fold_in_place_and_on_a_training_model():
    model = load_pretrained("resnet8").train()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        want = copy.deepcopy(model).eval()(x)
    same = fold_batchnorm(model, inplace=True)
    assert same is model and not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)

"""Models: every architecture runs on every input shape the course uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import models
from prunekit.testing import assert_prunes_exactly, randomise
from prunekit.modules import PrunedMultiheadAttention

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32)]
SMALL = ["vgg_small", "resnet8", "resnet20", "mobilenetv2_small"]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", SMALL)
def test_forward_shape(name, shape):
    torch.manual_seed(0)
    model = models.build_model(name, in_channels=shape[0], num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_resnet56_depth():
    model = models.resnet56()
    convs3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3x3) == 1 + 6 * 9  # stem + 2 per block, 9 blocks per stage


def test_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n\\+2"):
        models.CifarResNet(depth=10)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg16'.*vgg_small"):
        models.build_model("vgg16")


def test_vgg_parameter_count_matches_the_layer_shapes():
    # conv k*k*in*out (no bias) + BN 2*out, per block; linear 128*10 + 10
    widths, prev, expected = (32, 64, 128, 128), 1, 0
    for w in widths:
        expected += 9 * prev * w + 2 * w
        prev = w
    expected += 128 * 10 + 10
    assert sum(p.numel() for p in models.vgg_small().parameters()) == expected


def test_mobilenet_blocks_use_depthwise_convs_and_residuals():
    model = models.mobilenetv2_small()
    blocks = [m for m in model.modules() if isinstance(m, models.InvertedResidual)]
    assert [b.use_residual for b in blocks] == [True, False, True, False, True, False, True]
    for b in blocks:
        dw = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][0]
        assert dw.groups == dw.in_channels == dw.out_channels


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_vit_tokens_follow_the_image_size(shape):
    c, size, _ = shape
    torch.manual_seed(0)
    model = models.build_model("vit_tiny", in_channels=c, num_classes=7, image_size=size).eval()
    patch = 4 if size >= 16 else 2
    assert model.pos_embed.shape == (1, (size // patch) ** 2 + 1, 64)   # + the class token
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_vit_rejects_a_patch_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="patch_size 3 does not divide image_size 28"):
        models.ViTTiny(image_size=28, patch_size=3)


def test_vit_heads_and_mlps_prune_exactly():
    """50% of the heads and MLP units go; the pruned model computes what the dense model
    computes with them zeroed; the LayerNorm-normalised stream keeps its 64 features."""
    torch.manual_seed(0)
    model = randomise(models.build_model("vit_tiny", image_size=8))   # 16 tokens: fast
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = assert_prunes_exactly(model, x, ratio=0.5)
    assert result.after["params"] < result.before["params"]
    assert result.after["macs"] < result.before["macs"]
    for block in result.model.blocks:
        assert isinstance(block.attn, PrunedMultiheadAttention)
        assert (block.attn.num_heads, block.attn.head_dim, block.attn.embed_dim) == (2, 16, 64)
        assert block.mlp[0].out_features == block.mlp[2].in_features == 64
        assert block.mlp[2].out_features == 64
    assert result.model.patch_embed.out_channels == result.model.norm.normalized_shape[0] == 64

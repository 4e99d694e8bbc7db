"""Exact pruning of modern architectures: the physically pruned model computes what the dense
model computes with the same channels zeroed (Plan.mask), for SE gates, MBConv, ResNeXt,
ShuffleNetV2, Res2Net, C2f, Ghost modules, ConvNeXt and vision transformers -- and the engine
still refuses what it cannot do exactly (LayerNorm-pinned streams, sigmoid activations, roll).

Networks: tests/modern_nets.py, (N, 3, 16, 16) inputs, 10 classes. Random weights, random
BatchNorm statistics and LayerNorm affines, eval mode. Non-vacuous: the pruned outputs must
differ from the dense model's. Family-specific checks say *what* was pruned: shrinking is
asserted for local plans (every group loses floor(ratio * n)); for global plans, which only
rank channels, the invariants (kept widths, groups, whole heads) are asserted.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

import modern_nets as mn
import prunekit
from prunekit import PruningError
from prunekit.graph import build_graph
from prunekit.metrics import count_macs, count_params
from prunekit.testing import assert_prunes_exactly, changes, randomise, snapshot

Check = Callable[[nn.Module, nn.Module, bool], None]   # (dense, pruned, local plan?) -> None


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def size(model: nn.Module, path: str, attr: str = "out_channels") -> int:
    """``attr`` of the submodule at ``path`` (e.g. ``"body.conv2.0"``)."""
    return getattr(model.get_submodule(path), attr)


def assert_shrank(dense: nn.Module, pruned: nn.Module, path: str,
                  attr: str = "out_channels") -> None:
    """The layer at ``path`` has fewer ``attr`` after pruning."""
    before, after = size(dense, path, attr), size(pruned, path, attr)
    assert after < before, f"{path}.{attr} was not pruned ({before} -> {after})"


def assert_depthwise(model: nn.Module, path: str) -> None:
    """The conv at ``path`` is still depthwise (groups == in == out channels)."""
    conv = model.get_submodule(path)
    assert conv.groups == conv.in_channels == conv.out_channels, f"{path} is no longer depthwise"


def inputs(n: int, seed: int = 2) -> Tensor:
    """A seeded batch of ``n`` images of shape modern_nets.INPUT_SHAPE."""
    return torch.randn(n, *mn.INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def batches(seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    """Two seeded (inputs, targets) batches of 4 for the Taylor criterion."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, *mn.INPUT_SHAPE, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(2)]


# ----------------------------------------------------------------------------------------------
# What each family must have pruned (local) and kept (always)
# ----------------------------------------------------------------------------------------------

def check_se_resnet(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """SE fc1 (squeeze), fc2 (excite) and the gated conv conv2 lost channels."""
    assert size(pruned, "body.se.fc2") == size(pruned, "body.conv2.0")
    if local:
        for path in ("body.se.fc1", "body.se.fc2", "body.conv2.0"):
            assert_shrank(dense, pruned, path)


def check_se_bneck(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """SE fc1/fc2 and the gated depthwise conv lost channels; the dw conv stays depthwise."""
    assert_depthwise(pruned, "body.dw.0")
    assert size(pruned, "body.se.fc2") == size(pruned, "body.dw.0")
    if local:
        for path in ("body.se.fc1", "body.se.fc2", "body.dw.0", "body.expand.0"):
            assert_shrank(dense, pruned, path)


def check_mbconv(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """Both MBConvs: expansion, depthwise and both SE convs lost channels."""
    for i in (0, 1):
        assert_depthwise(pruned, f"body.{i}.dw.0")
        if local:
            for part in ("expand.0", "dw.0", "se_reduce", "se_expand"):
                assert_shrank(dense, pruned, f"body.{i}.{part}")


def check_resnext(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The grouped convs keep groups=4 with whole channels per group, and got narrower."""
    for i in (0, 1):
        path = f"body.{i}.conv2.0"
        conv = pruned.get_submodule(path)
        assert conv.groups == 4, f"{path}: groups changed to {conv.groups}"
        assert conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0
        if local:
            assert_shrank(dense, pruned, path, "in_channels")
            assert_shrank(dense, pruned, path, "out_channels")


def check_shufflenet(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The main branches' inner 1x1 convs lost channels; depthwise convs stay depthwise."""
    for path in ("body.0.branch1.0.0", "body.0.branch2.1.0", "body.1.branch.1.0"):
        assert_depthwise(pruned, path)
    if local:
        assert_shrank(dense, pruned, "body.0.branch2.0.0")
        assert_shrank(dense, pruned, "body.1.branch.0.0")


def check_res2net(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """conv1 lost channels equally in its 4 splits; each split conv reads one split, and the
    two whose outputs are added to the next split write one split (the last one is free)."""
    split = size(pruned, "body.conv1.0") // 4
    assert size(pruned, "body.conv1.0") % 4 == 0
    for i in range(3):
        assert size(pruned, f"body.convs.{i}", "in_channels") == split
    for i in range(2):
        assert size(pruned, f"body.convs.{i}") == split
    if local:
        assert_shrank(dense, pruned, "body.conv1.0")
        assert_shrank(dense, pruned, "body.convs.0")


def check_c2f(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The bottlenecks' inner convs lost channels; cv1 still splits into two halves."""
    assert size(pruned, "body.cv1.0") % 2 == 0
    if local:
        assert_shrank(dense, pruned, "body.blocks.0.cv1.0")
        assert_shrank(dense, pruned, "body.blocks.1.cv1.0")


def check_ghost_even(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """ghost1's primary conv (and so its cheap depthwise twin) lost channels."""
    check_ghost_odd(dense, pruned, local)
    if local:
        assert_shrank(dense, pruned, "body.ghost1.primary.0")


def check_ghost_odd(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """Each cheap op is still depthwise over its primary conv's output; conv_head was pruned
    (ghost1's channels may be pinned by the slice that drops a channel)."""
    for g in ("ghost1", "ghost2"):
        assert_depthwise(pruned, f"body.{g}.cheap.0")
        assert size(pruned, f"body.{g}.cheap.0") == size(pruned, f"body.{g}.primary.0")
    if local:
        assert_shrank(dense, pruned, "conv_head")


def check_convnext(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The MLP hidden width shrank; the LayerNorm-pinned stream (LN, gamma, dwconv) did not."""
    assert size(pruned, "stem.0") == 16
    for i in (0, 1):
        block = pruned.blocks[i]
        assert block.norm.normalized_shape == (16,)
        assert block.gamma.shape == (16,) and block.dwconv.out_channels == 16
        assert block.pwconv2.in_features == block.pwconv1.out_features
        if local:
            assert_shrank(dense, pruned, f"blocks.{i}.pwconv1", "out_features")


def _check_vit_stream(pruned: nn.Module) -> None:
    """The embedding width (patch conv, class token, position embedding) is unchanged."""
    assert pruned.patch_embed.out_channels == 16
    assert pruned.cls_token.shape[-1] == pruned.pos_embed.shape[-1] == 16
    assert pruned.norm.normalized_shape == (16,)


def _check_mlps(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """Each encoder block's MLP hidden width shrank (local plans)."""
    if local:
        for i in (0, 1):
            assert_shrank(dense, pruned, f"blocks.{i}.mlp.fc1", "out_features")


def check_vit_mha(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """nn.MultiheadAttention lost whole heads (head_dim 4, embed_dim 16 kept)."""
    _check_vit_stream(pruned)
    _check_mlps(dense, pruned, local)
    for i in (0, 1):
        attn = pruned.blocks[i].attn
        assert attn.embed_dim == 16 and attn.head_dim == 4
        if local:
            assert attn.num_heads < 4, f"blocks.{i}.attn kept all {attn.num_heads} heads"


def check_vit_sdpa(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The fused qkv lost 3 x whole heads of rows, proj the same heads of columns."""
    _check_vit_stream(pruned)
    _check_mlps(dense, pruned, local)
    for i in (0, 1):
        attn = pruned.blocks[i].attn
        gone = 16 - attn.proj.in_features
        assert 48 - attn.qkv.out_features == 3 * gone and gone % attn.head_dim == 0
        assert attn.proj.out_features == 16
        if local:
            assert gone > 0, f"blocks.{i}.attn lost no head"


def check_vit_manual(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """q, k and v lost the same whole heads, proj the same columns."""
    _check_vit_stream(pruned)
    _check_mlps(dense, pruned, local)
    for i in (0, 1):
        attn = pruned.blocks[i].attn
        width = attn.proj.in_features
        assert attn.q.out_features == attn.k.out_features == attn.v.out_features == width
        assert (16 - width) % attn.head_dim == 0
        if local:
            assert width < 16, f"blocks.{i}.attn lost no head"


def check_vit_timm(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """Constant head counts: qkv and proj keep every head; the MLPs are still pruned."""
    _check_vit_stream(pruned)
    _check_mlps(dense, pruned, local)
    for i in (0, 1):
        attn = pruned.blocks[i].attn
        assert attn.qkv.out_features == 48 and attn.proj.in_features == 16


def check_control(dense: nn.Module, pruned: nn.Module, local: bool) -> None:
    """The basic block's inner conv lost channels."""
    if local:
        assert_shrank(dense, pruned, "body.conv1.0")


@dataclass(frozen=True)
class Family:
    """A network to prune, its structural check, and the ratio to plan at."""

    build: Callable[[], nn.Module]
    check: Check
    ratio: float = 0.5


FAMILIES: dict[str, Family] = {
    "se_resnet_sigmoid": Family(mn.SEResNet, check_se_resnet),
    "se_mobilenetv3_hardsigmoid": Family(mn.SEMobileNetV3, check_se_bneck),
    "se_timm_relu6_gate": Family(mn.SETimmHardSigmoid, check_se_bneck),
    "efficientnet_mbconv": Family(mn.EfficientNetTiny, check_mbconv),
    "resnext_grouped": Family(mn.ResNeXtTiny, check_resnext),
    "shufflenetv2": Family(mn.ShuffleNetV2Tiny, check_shufflenet),
    "res2net_split": Family(mn.Res2NetTiny, check_res2net),
    "csp_c2f": Family(mn.C2fNet, check_c2f),
    "ghost_even": Family(lambda: mn.GhostNetTiny(mid=16), check_ghost_even),
    "ghost_odd": Family(lambda: mn.GhostNetTiny(mid=15), check_ghost_odd),
    "convnext": Family(mn.ConvNeXtTiny, check_convnext),
    "vit_mha": Family(lambda: mn.TinyViT("mha"), check_vit_mha),
    "vit_sdpa": Family(lambda: mn.TinyViT("sdpa"), check_vit_sdpa),
    "vit_manual_softmax": Family(lambda: mn.TinyViT("manual"), check_vit_manual),
    "vit_timm_constant_heads": Family(lambda: mn.TinyViT("timm"), check_vit_timm),
    "control_resnet": Family(mn.ControlResNet, check_control),
}

REFUSED: dict[str, Callable[[], nn.Module]] = {
    "sigmoid_between_convs": mn.SigmoidBetweenConvs,
    "se_then_sigmoid_activation": mn.SigmoidActivationNet,
    "roll_channels": mn.RollNet,
}


def build(name: str) -> nn.Module:
    """The seeded, randomised (weights, BN statistics, LN affines), eval-mode network."""
    torch.manual_seed(0)
    make = FAMILIES[name].build if name in FAMILIES else REFUSED[name]
    return randomise(make())


# ----------------------------------------------------------------------------------------------
# The networks themselves
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*FAMILIES, *REFUSED])
def test_net_runs_and_traces(name: str) -> None:
    """Each net is small, gives 10 logits, and torch.fx traces it to the same function."""
    model = build(name)
    x = inputs(3)
    with torch.no_grad():
        out = model(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(traced, out, rtol=0, atol=0)
    assert count_params(model) < 10_000


# ----------------------------------------------------------------------------------------------
# Pruned == masked
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("importance", ["l1", "taylor", "random"])
@pytest.mark.parametrize("scope", ["local", "global"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_pruned_equals_masked(name: str, scope: str, importance: str) -> None:
    """Pruned == masked on 3 inputs, params/MACs down and recounted, the outputs changed, the
    family's interesting part pruned, and the dense model untouched."""
    family = FAMILIES[name]
    model = build(name)
    x = inputs(3)
    result = assert_prunes_exactly(model, x, ratio=family.ratio, importance=importance,
                                   scope=scope, data=batches())
    assert result.after["params"] == count_params(result.model) < result.before["params"]
    assert result.after["macs"] == count_macs(result.model, x[:1]) < result.before["macs"]
    family.check(model, result.model, scope == "local")


def test_timm_constant_heads_are_pinned_by_name() -> None:
    """reshape(B, N, 3, self.num_heads, self.head_dim): the heads are pinned, and the reason
    names the reshape node / the constant; the MLPs stay prunable."""
    graph = build_graph(build("vit_timm_constant_heads"), inputs(1))
    reasons = [g.pinned for g in graph.groups if g.pinned]
    assert any(re.search(r"reshape|constant", r, re.IGNORECASE) for r in reasons), reasons
    assert any(g.prunable for g in graph.groups)


# ----------------------------------------------------------------------------------------------
# Refusals: the model is left exactly as it was
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("name, layer", [
    ("convnext", "blocks.0.dwconv"),
    ("convnext", "blocks.1.pwconv2"),
    ("vit_mha", "patch_embed"),
    ("vit_sdpa", "blocks.1.attn.proj"),
], ids=["convnext_dwconv", "convnext_pwconv2", "vit_patch_embed", "vit_attn_proj"])
def test_layernorm_stream_cannot_be_named(name: str, layer: str, inplace: bool) -> None:
    """A layer whose output channels feed a LayerNorm is pinned: naming it in ratios= is
    refused with a message that says why."""
    model = build(name)
    state = snapshot(model)
    with pytest.raises(PruningError, match="LayerNorm"):
        prunekit.prune(model, inputs(1), ratio=0.5, ratios={layer: 0.5}, inplace=inplace)
    assert not changes(model, state)


@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
@pytest.mark.parametrize("name, pattern, node", [
    ("sigmoid_between_convs", r"(?i)sigmoid", "body.1"),
    ("se_then_sigmoid_activation", r"(?i)sigmoid", "body.2"),   # the activation, not the gate
    ("roll_channels", r"roll", None),
], ids=["sigmoid_between_convs", "se_then_sigmoid_activation", "roll_channels"])
def test_inexact_ops_are_still_refused(name: str, pattern: str, node: str | None,
                                       inplace: bool) -> None:
    """sigmoid(0) = 0.5 and roll moves channels: zeroing != removing, so prunekit refuses,
    naming the offending node."""
    model = build(name)
    state = snapshot(model)
    with pytest.raises(PruningError, match=pattern) as info:
        prunekit.prune(model, inputs(1), ratio=0.5, inplace=inplace)
    if node is not None:
        message = str(info.value)
        assert node in message or node.replace(".", "_") in message, message
    assert not changes(model, state)

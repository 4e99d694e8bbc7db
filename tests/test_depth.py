"""Depth pruning (prunekit.depth): whole residual blocks removed, exactly equal to the model
with those blocks replaced by the identity; ShortGPT's Block Influence; refusals that keep
the model as it was."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import hf_nets
import prunekit
from hf_nets import MODELS, TinyDecoder, tokens
from prunekit import PruningError, depth, models
from prunekit.testing import changes, randomise, snapshot
from prunekit.verify import output_error


def _check(model: nn.Module, x: Tensor, remove: int) -> depth.DepthResult:
    """Plan, apply, and compare with the identity-replaced twin and the dense model."""
    plan = depth.plan_depth(model, x, remove=remove)
    before = snapshot(model)
    result = plan.apply()
    got, want = depth._outputs(result.model, (x,)), depth._outputs(plan.mask(), (x,))
    assert output_error(got, want) <= 1e-5
    assert output_error(got, depth._outputs(model, (x,))) > 1e-3      # not vacuous
    assert not changes(model, before)
    assert len(result.removed) == remove and result.after["params"] < result.before["params"]
    return result


def test_hand_written_decoder_loses_whole_layers_exactly() -> None:
    torch.manual_seed(0)
    model = randomise(TinyDecoder(layers=4))
    result = _check(model, tokens(), 2)
    assert len(result.model.blocks) == 2


def test_hugging_face_llama_loses_layers_config_and_cache_follow() -> None:
    try:
        hf_nets._hf()
    except ImportError:
        pytest.skip("transformers is not installed")
    torch.manual_seed(0)
    model = randomise(MODELS["llama"]())
    result = _check(model, tokens(), 1)
    pruned = result.model
    assert pruned.config.num_hidden_layers == 1 and model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0]
    assert pruned.generate(tokens(1, 4), max_new_tokens=4, do_sample=False).shape == (1, 8)


def test_resnet_blocks_with_identity_shortcuts_go_projections_stay() -> None:
    torch.manual_seed(0)
    model = randomise(models.resnet20(in_channels=3))
    x = torch.randn(2, 3, 32, 32)
    blocks = {b.path: b for b in depth.find_blocks(model, x)}
    assert not blocks["layer2.0"].removable and "another shape" in blocks["layer2.0"].why
    assert sum(b.removable for b in blocks.values()) == 7          # 3 + 2 + 2
    result = _check(model, x, 3)
    assert all(not r.endswith(".0") or r.startswith("layer1") for r in result.removed)


def test_a_projection_with_the_same_shape_is_not_an_identity_shortcut() -> None:
    class Projected(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f, self.proj = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: Tensor) -> Tensor:
            return self.proj(x) + self.f(x)

    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(Projected(), Projected()))
    blocks = depth.find_blocks(model, torch.randn(2, 4))
    assert [b.removable for b in blocks if b.path.startswith("1.")] == [False, False]
    assert "identity shortcut" in blocks[-1].why
    with pytest.raises(PruningError, match="only 0 are residual blocks"):
        depth.plan_depth(model, torch.randn(2, 4), remove=1)


def test_block_influence_is_one_minus_the_cosine_of_input_and_output() -> None:
    torch.manual_seed(0)
    model = randomise(TinyDecoder(layers=2))
    x = tokens()
    scores = depth.block_influence(model, ["blocks.0"], [(x,)])
    with torch.no_grad():
        h = model.embed(x)
        y = model.blocks[0](h)
    want = 1 - torch.nn.functional.cosine_similarity(h, y, dim=-1).mean()
    assert scores["blocks.0"] == pytest.approx(float(want), abs=1e-6)


def test_a_forward_that_counts_its_blocks_is_refused_and_the_model_kept() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: Tensor) -> Tensor:
            return x + torch.relu(self.fc(x))

    class Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(Residual() for _ in range(3))

        def forward(self, x: Tensor) -> Tensor:
            for b in self.blocks:
                x = b(x)
            return x / len(self.blocks)

    model = Counted()
    before = snapshot(model)
    with pytest.raises(PruningError, match="replaced by the identity"):
        prunekit.prune_depth(model, torch.randn(2, 8), remove=1)
    assert not changes(model, before)

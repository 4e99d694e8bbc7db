"""prunekit.llm: the hand-made LLM cuts, each against its own exact reference.

Depth removal equals identity-replaced blocks; query-head removal equals zeroed ``o_proj``
columns; folding and rotating the residual stream leave the outputs unchanged; slicing the
stream is exact when the removed channels carry nothing and approximate otherwise; Wanda's
N:M masks keep what its scores say. All on a small random TinyLlama (weights not trained, so
RMSNorm scales are randomised too -- a fold that ignored them would fail)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunekit import llm
from prunekit.llama import LlamaConfig, TinyLlama
from prunekit.sparsity import is_nm
from prunekit.train_lm import train_lm

SMALL = LlamaConfig(vocab_size=65, block_size=16, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, mlp_hidden=24)
EXACT = 1e-5   # relative to the largest logit


@pytest.fixture()
def model() -> TinyLlama:
    torch.manual_seed(0)
    m = TinyLlama(SMALL).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.RMSNorm):
                mod.weight.uniform_(0.5, 1.5)          # trained norms are not all ones
            elif isinstance(mod, nn.Linear):
                mod.weight.mul_(10)                    # a stream that really turns
    return m


def ids(batch: int = 3, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 65, (batch, length), generator=torch.Generator().manual_seed(seed))


def rel_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    error = llm.relative_error(a, b, x)
    with torch.no_grad():
        assert error == pytest.approx(float((a(x) - b(x)).abs().max() / b(x).abs().max()), rel=1e-4, abs=1e-12)
    return error


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# -- depth ---------------------------------------------------------------------------------------
def test_block_influence_is_one_minus_cosine(model):
    x = ids()
    bi = llm.block_influence(model, x)
    assert bi.shape == (3,) and bool((bi > 0).all()) and bool((bi < 2).all())
    cos, sin = model.rope(x)
    h0 = model.embed(x)
    with torch.no_grad():
        h1 = model.blocks[0](h0, cos, sin)
    want = 1 - torch.nn.functional.cosine_similarity(h0, h1, dim=-1).mean()
    assert float(bi[0]) == pytest.approx(float(want.detach()), rel=1e-5)
    with torch.no_grad():                              # a block that adds nothing has influence 0
        for layer in (model.blocks[1].attn.o_proj, model.blocks[1].mlp.down):
            layer.weight.zero_()
    assert float(llm.block_influence(model, x)[1]) == pytest.approx(0.0, abs=1e-6)


def test_drop_blocks_equals_identity_replaced_blocks(model):
    x = ids()
    dropped = llm.drop_blocks(model, [1])
    assert len(dropped.blocks) == 2 and dropped.config.n_layers == 2 and len(model.blocks) == 3
    assert params(model) - params(dropped) == params(model.blocks[1])
    assert rel_diff(dropped, llm.skip_blocks(model, [1]), x) == 0.0
    assert rel_diff(dropped, model, x) > 1e-2             # it did change the function
    assert dropped.generate(x[:1, :3], 4).shape == (1, 7)
    with pytest.raises(ValueError, match="leave at least one block"):
        llm.drop_blocks(model, [0, 1, 2])
    with pytest.raises(ValueError, match="distinct indices"):
        llm.skip_blocks(model, [3])


# -- query heads ---------------------------------------------------------------------------------
def test_drop_query_heads_equals_zeroed_output_columns(model):
    x = ids()
    drop = {0: [1, 2], 2: [0, 3]}                      # one of each KV group's two query heads
    cut = llm.drop_query_heads(model, drop)
    assert rel_diff(cut, llm.mask_query_heads(model, drop), x) <= EXACT
    assert rel_diff(cut, model, x) > 1e-3
    attn = cut.blocks[0].attn
    assert attn.q_proj.out_features == 2 * SMALL.head_dim and attn.k_proj.out_features == 2 * SMALL.head_dim
    assert cut.blocks[1].attn.q_proj.out_features == 4 * SMALL.head_dim      # untouched block
    assert params(model) - params(cut) == 2 * 2 * (2 * SMALL.dim * SMALL.head_dim)   # q rows + o columns
    assert model.blocks[0].attn.q_proj.out_features == 4 * SMALL.head_dim       # the original is intact


@pytest.mark.parametrize("drop", [{0: [0, 1]}, {0: [0]}, {0: [4]}])
def test_query_heads_must_leave_every_group_alike(model, drop):
    with pytest.raises(ValueError, match="every KV group"):
        llm.drop_query_heads(model, drop)


def test_head_output_norms_see_a_silenced_head(model):
    x = ids()
    norms = llm.head_output_norms(model, x)
    assert norms.shape == (3, 4) and bool((norms > 0).all())
    silenced = llm.mask_query_heads(model, {1: [0, 2]})
    after = llm.head_output_norms(silenced, x)
    assert after[1, 0] == 0 and after[1, 2] == 0
    torch.testing.assert_close(after[0], norms[0])


# -- the residual stream -------------------------------------------------------------------------
def test_fold_then_rotate_leaves_outputs_unchanged(model):
    x = ids()
    folded = llm.fold_norms(model)
    assert all(bool((n.weight == 1).all()) for n in folded.modules() if isinstance(n, nn.RMSNorm))
    assert rel_diff(folded, model, x) <= EXACT
    q, share = llm.stream_basis(folded, x)
    torch.testing.assert_close(q.T @ q, torch.eye(SMALL.dim), atol=1e-5, rtol=0)
    assert share.sum().item() == pytest.approx(1.0, abs=1e-5) and bool((share[:-1] >= share[1:]).all())
    rotated = llm.rotate_stream(folded, q)
    assert rel_diff(rotated, model, x) <= EXACT
    assert not torch.allclose(rotated.embed.weight, model.embed.weight)
    random_q = torch.linalg.qr(torch.randn(SMALL.dim, SMALL.dim, generator=torch.Generator().manual_seed(1)))[0]
    assert rel_diff(llm.rotate_stream(folded, random_q), model, x) <= EXACT   # any orthogonal Q


def test_rotation_needs_folded_norms_and_an_orthogonal_matrix(model):
    q = torch.linalg.qr(torch.randn(SMALL.dim, SMALL.dim))[0]
    with pytest.raises(ValueError, match="fold the RMSNorm scales"):
        llm.rotate_stream(model, q)
    with pytest.raises(ValueError, match="orthogonal"):
        llm.rotate_stream(llm.fold_norms(model), 2 * q)


def test_slicing_is_exact_only_when_the_removed_channels_are_silent(model):
    x = ids()
    keep = torch.arange(0, SMALL.dim, 2)
    assert rel_diff(llm.slice_stream(model, torch.arange(SMALL.dim)), model, x) <= EXACT
    silent = llm.slice_stream(model, torch.arange(SMALL.dim))     # a copy whose odd channels carry nothing
    with torch.no_grad():
        silent.embed.weight[:, 1::2] = 0
        for layer in llm._writers(silent):
            layer.weight[1::2] = 0
    sliced = llm.slice_stream(silent, keep)
    assert sliced.embed.weight.shape == (65, SMALL.dim // 2) and sliced.norm.normalized_shape == (SMALL.dim // 2,)
    assert rel_diff(sliced, silent, x) <= EXACT                   # the RMS rescaling makes this exact
    assert rel_diff(llm.slice_stream(model, keep), model, x) > 1e-2   # a real cut is approximate
    d, k = SMALL.dim, SMALL.dim // 2
    kv = SMALL.n_kv_heads * SMALL.head_dim           # per block: q, o, k, v, gate, up, down, 2 norms
    per_block = (d - k) * (2 * SMALL.dim + 2 * kv + 3 * SMALL.mlp_hidden + 2)
    assert params(model) - params(sliced) == SMALL.n_layers * per_block + 2 * 65 * (d - k) + (d - k)
    with pytest.raises(ValueError, match="distinct channel indices"):
        llm.slice_stream(model, torch.tensor([0, 0, 1]))


def test_slicegpt_keeps_more_than_minitron_on_a_low_rank_stream():
    # a model whose stream lives mostly in a few rotated directions: there the principal
    # directions are the right ones to keep, single channels are not
    torch.manual_seed(0)
    model = TinyLlama(SMALL).eval()
    basis = torch.linalg.qr(torch.randn(SMALL.dim, SMALL.dim, generator=torch.Generator().manual_seed(2)))[0]
    with torch.no_grad():
        model.embed.weight.copy_(model.embed.weight[:, :8] @ basis[:, :8].T * 4)
        for layer in llm._writers(model):
            layer.weight.copy_(basis[:, :8] @ basis[:, :8].T @ layer.weight)
    x = ids()
    folded = llm.fold_norms(model)
    q, share = llm.stream_basis(folded, x)
    assert share[:8].sum() > 0.99
    sliced = llm.slice_stream(llm.rotate_stream(folded, q), torch.arange(8))
    minitron = llm.slice_stream(model, llm.channel_importance(model, x).argsort(descending=True)[:8])
    assert rel_diff(sliced, model, x) <= 1e-4 < rel_diff(minitron, model, x)


# -- Wanda and 2:4 -------------------------------------------------------------------------------
def test_input_norms_are_the_norms_of_each_feature(model):
    x = ids()
    norms = llm.input_norms(model, x)
    assert "head" not in norms and set(norms) >= {"blocks.0.attn.q_proj", "blocks.2.mlp.down"}
    cos, sin = model.rope(x)
    with torch.no_grad():
        h = model.blocks[0].attn_norm(model.embed(x))
    torch.testing.assert_close(norms["blocks.0.attn.q_proj"], h.flatten(0, 1).norm(dim=0), rtol=1e-5, atol=1e-6)
    assert norms["blocks.1.mlp.down"].shape == (SMALL.mlp_hidden,)


def test_wanda_masks_are_2_of_4_and_follow_the_activations(model):
    x = ids()
    norms = llm.input_norms(model, x)
    scores = {n: llm.wanda_scores(model.get_submodule(n).weight, v) for n, v in norms.items()}
    wanda, magnitude = llm.nm_masks(model, scores), llm.nm_masks(model)
    assert set(wanda) == set(magnitude) == set(norms)
    for mask in wanda.values():
        assert is_nm(mask) and mask.sum() == mask.numel() // 2
    assert any(not torch.equal(wanda[n], magnitude[n]) for n in wanda)
    # with equal norms Wanda is magnitude
    flat = {n: llm.wanda_scores(model.get_submodule(n).weight, torch.ones_like(v)) for n, v in norms.items()}
    assert all(torch.equal(llm.nm_masks(model, flat)[n], magnitude[n]) for n in norms)
    # a feature 100x larger keeps its weights in every row
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    loud = llm.nm_masks(nn.Linear(4, 1), {"x": llm.wanda_scores(w, torch.tensor([100.0, 1, 1, 1]))})["x"]
    assert loud.tolist() == [[1, 0, 0, 1]] and llm.nm_masks(nn.Linear(4, 1), {"x": w})["x"].tolist() == [[0, 0, 1, 1]]
    masked = llm.apply_masks(model, wanda)
    assert is_nm(masked.blocks[0].mlp.up.weight) and not is_nm(model.blocks[0].mlp.up.weight)
    with pytest.raises(ValueError, match="one norm per input feature"):
        llm.wanda_scores(w, torch.ones(3))


# -- repair --------------------------------------------------------------------------------------
def test_distilling_a_copy_of_the_teacher_costs_nothing():
    torch.manual_seed(0)
    teacher = TinyLlama(SMALL).eval()
    with torch.no_grad():
        teacher.head.weight.mul_(50)                   # confident predictions worth imitating
    x = ids()
    criterion = llm.lm_distillation_loss(teacher)
    with torch.no_grad():
        logits = teacher(x)
        assert float(criterion(logits, x, x)) == pytest.approx(0.0, abs=1e-5)
        assert float(criterion(logits + torch.randn_like(logits), x, x)) > 0.01
    torch.manual_seed(1)
    student = TinyLlama(SMALL)
    data = ids(1, 400, seed=3)[0]
    x = data[:64].view(4, 16)
    with torch.no_grad():
        before = float(criterion(student(x), x, x))
    train_lm(student, data, steps=30, batch_size=8, block_size=16, lr=1e-2, warmup=2,
             criterion=criterion, progress=False)
    with torch.no_grad():
        assert float(criterion(student(x), x, x)) < 0.5 * before
    assert not teacher.training and math.isfinite(before)

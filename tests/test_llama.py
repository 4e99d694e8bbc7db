"""The course's LLaMA-style decoder: shapes, causality, grouped-query attention, rotary
positions, seeded generation, torch.fx tracing -- and prunekit cutting its heads and SwiGLU
neurons exactly (pruned == zero-masked)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import fx
from torch.nn import functional as F

import prunekit
from prunekit.graph import build_graph
from prunekit.llama import LlamaConfig, TinyLlama, apply_rope, repeat_kv, tiny_llama

SMALL = LlamaConfig(vocab_size=65, block_size=16, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_hidden=24)


@pytest.fixture()
def model() -> TinyLlama:
    torch.manual_seed(0)
    return TinyLlama(SMALL).eval()


def ids(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 65, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_parameter_count():
    model = tiny_llama()
    assert model(ids()).shape == (2, 12, 65)
    dim, hidden, layers = 128, 256, 4
    per_block = 2 * dim * dim + 2 * dim * 64 + 3 * dim * hidden + 2 * dim     # q, o; k, v; MLP; 2 norms
    assert sum(p.numel() for p in model.parameters()) == layers * per_block + 2 * 65 * dim + dim == 607_616
    assert model.head.weight.data_ptr() != model.embed.weight.data_ptr()     # untied
    assert set(model.state_dict()) == {n for n, _ in model.named_parameters()}  # RoPE tables not saved


def test_config_is_checked():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="head_dim must be even"):
        LlamaConfig(head_dim=7)


def test_a_token_never_sees_later_tokens(model):
    x = ids(length=12)
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 65
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert torch.equal(a[:, :7], b[:, :7])                 # before the change: bit for bit
    assert not torch.allclose(a[:, 7:], b[:, 7:])          # from it on: different


def test_each_kv_head_serves_its_group_of_query_heads():
    k = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).view(2, 3, 5, 4)
    assert torch.equal(repeat_kv(k, 2), k.repeat_interleave(2, dim=1))      # heads 0,1 <- 0; 2,3 <- 1 ...
    model = TinyLlama(SMALL).eval()
    attn, x = model.blocks[0].attn, torch.randn(2, 6, SMALL.dim)
    cos, sin = model.rope(x[..., 0])
    q = apply_rope(attn._heads(attn.q_proj(x)), cos, sin)
    k = apply_rope(attn._heads(attn.k_proj(x)), cos, sin)
    v = attn._heads(attn.v_proj(x))
    heads = [F.scaled_dot_product_attention(q[:, h:h + 1], k[:, h // 2:h // 2 + 1], v[:, h // 2:h // 2 + 1],
                                            is_causal=True) for h in range(4)]  # one head at a time
    want = attn.o_proj(torch.cat(heads, dim=1).transpose(1, 2).flatten(2))
    torch.testing.assert_close(attn(x, cos, sin), want, rtol=1e-5, atol=1e-6)


def test_rotary_scores_depend_only_on_the_distance():
    model = TinyLlama(SMALL)
    q, k = torch.randn(SMALL.head_dim), torch.randn(SMALL.head_dim)
    cos, sin = model.rope(torch.zeros(1, 12))

    def score(i: int, j: int) -> float:
        return float(apply_rope(q, cos[i], sin[i]) @ apply_rope(k, cos[j], sin[j]))

    assert score(3, 1) == pytest.approx(score(10, 8), rel=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-2)
    assert apply_rope(q, cos[5], sin[5]).norm() == pytest.approx(float(q.norm()), rel=1e-5)   # a rotation


def test_generate_is_seeded_and_reproducible(model):
    prompt = ids(batch=1, length=3)
    a = model.generate(prompt, 30, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 30, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
    c = model.generate(prompt, 30, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 33) and torch.equal(a[:, :3], prompt)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.generate(prompt, 30), model.generate(prompt, 30))   # default: seed 0
    greedy = model.generate(prompt, 25, temperature=0)      # past block_size (16): a sliding context
    assert torch.equal(greedy, model.generate(prompt, 25, top_k=1))
    with torch.no_grad():
        assert int(greedy[0, 3]) == int(model(prompt)[0, -1].argmax())
    with pytest.raises(ValueError, match="temperature >= 0"):
        model.generate(prompt, 5, temperature=-1)


def test_torch_fx_traces_it(model):
    traced = fx.symbolic_trace(model)
    for length in (5, 16):
        x = ids(length=length)
        with torch.no_grad():
            assert torch.equal(traced(x), model(x))


def test_prunekit_finds_kv_groups_and_mlp_neurons(model):
    graph = build_graph(model, ids())
    prunable = {g.name: g for g in graph.prunable_groups()}
    for b in range(SMALL.n_layers):
        heads, mlp = prunable[f"blocks.{b}.attn.q_proj"], prunable[f"blocks.{b}.mlp.gate"]
        assert heads.size == SMALL.n_kv_heads and mlp.size == SMALL.mlp_hidden
        assert {f"blocks.{b}.attn.{n}" for n in ("q_proj", "k_proj", "v_proj")} <= set(heads.owners())
    stream = next(g for g in graph.groups if "blocks.0.attn.o_proj" in g.owners())
    assert stream.pinned                                  # the residual stream (embedding, RMSNorm)


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_pruned_equals_zero_masked(model, ratio):
    x = ids(length=16)
    plan = prunekit.plan(model, x, ratio=ratio)
    pruned = plan.apply().model
    with torch.no_grad():
        want, got = plan.mask()(x), pruned(x)
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
        assert not torch.allclose(got, model(x))           # something was cut
        shorter = x[:, :9]                                 # another length than the example
        torch.testing.assert_close(pruned(shorter), plan.mask()(shorter), rtol=1e-5, atol=1e-5)
    hidden = pruned.blocks[0].mlp.gate.out_features
    assert hidden == SMALL.mlp_hidden - math.floor(ratio * SMALL.mlp_hidden)
    kv_left = pruned.blocks[0].attn.k_proj.out_features // SMALL.head_dim
    assert kv_left == SMALL.n_kv_heads - math.floor(ratio * SMALL.n_kv_heads)
    assert pruned.blocks[0].attn.q_proj.out_features == 2 * kv_left * SMALL.head_dim   # groups go whole
    assert pruned.generate(x[:1, :3], 5).shape == (1, 8)

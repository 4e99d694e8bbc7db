"""Transformer language models, exactly: Hugging Face ``transformers`` models built from tiny
configs (random weights, no downloads) through the ``torch.export`` front-end, and a
hand-written LLaMA-style decoder through both front-ends.

What is checked: pruned == zero-masked (1e-5) with outputs that changed; whole attention heads
(a key/value head with its query heads under GQA), SwiGLU / GELU MLP neurons, GPT-2's Conv1D,
fused q/k/v (Phi-3) and the residual stream pinned with its reason; ``model.config`` true (a
model built from it has the pruned model's shapes) and ``generate()`` running; refusals that
leave the model unchanged and name the node or what cannot be described.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import prunekit
from hf_nets import MODELS, TinyDecoder, tokens
from prunekit import PruningError
from prunekit.graph import build_graph
from prunekit.testing import changes, judge, randomise, snapshot

try:
    import hf_nets

    hf_nets._hf()
except ImportError:
    pytest.skip("transformers is not installed", allow_module_level=True)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomise(MODELS[name]()).eval()


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(t.shape) for k, t in model.state_dict().items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_pruned_equals_zero_masked_and_the_config_stays_true(name: str) -> None:
    model = _model(name)
    verdict = judge(model, tokens(), ratio=0.5, measure_change=True)
    assert verdict.kind == "exact", verdict.detail
    assert verdict.error <= 1e-5 and verdict.change > 1e-3, (verdict.error, verdict.change)
    assert not verdict.mutated
    pruned = verdict.result.model
    assert verdict.result.after["params"] < 0.85 * verdict.result.before["params"]
    rebuilt = type(pruned)(pruned.config)                 # what a reload would build
    assert _shapes(rebuilt) == _shapes(pruned)
    assert pruned.config is not model.config and _shapes(type(model)(model.config)) == \
        _shapes(model)


def test_grouped_query_attention_cuts_a_kv_head_with_its_query_heads() -> None:
    model = _model("llama")
    graph = build_graph(model, tokens()[:1])
    heads = graph.group_of("model.layers.0.self_attn.q_proj")
    rows = {m.module.rpartition(".")[2]: len(m.positions) // heads.size for m in heads.members}
    assert heads.size == 4 and heads.prunable             # 4 KV heads, 2 query heads each
    assert rows == {"q_proj": 16, "k_proj": 8, "v_proj": 8, "o_proj": 16}
    result = prunekit.prune(model, tokens()[:1], ratio=0.5)
    attn = result.model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.o_proj.in_features) == \
        (32, 16, 32)
    config = result.model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.intermediate_size) == (4, 2, 8, 64)
    assert attn.num_key_value_groups == 2


def test_pruned_llama_generates_what_the_zero_masked_model_generates() -> None:
    model = _model("llama")
    plan = prunekit.plan(model, tokens()[:1], ratio=0.5)
    masked, pruned = plan.mask(), plan.apply().model
    prompt = tokens(1, 5, seed=3)
    with torch.no_grad():
        got, want = pruned(prompt).logits, masked(prompt).logits
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    out = pruned.generate(prompt, max_new_tokens=6, do_sample=False)
    ref = masked.generate(prompt, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 11) and torch.equal(out, ref)


def test_pinned_streams_and_heads_say_why() -> None:
    llama = str(prunekit.prune(_model("llama"), tokens()[:1], ratio=0.3).groups)
    assert "pinned: normalised together by LlamaRMSNorm 'model.layers.0.input_layernorm'" in llama
    gpt2 = str(prunekit.prune(_model("gpt2"), tokens()[:1], ratio=0.3).groups)
    assert "normalised together by LayerNorm 'transformer.h.0.ln_1'" in gpt2
    assert "'transformer.wte.weight' and 'lm_head.weight' share one tensor (tied weights)" in gpt2
    assert "GPT2Config derives the head size from hidden_size / num_attention_heads" in gpt2


def test_gpt2_conv1d_mlp_is_cut_and_fused_qkv_of_phi3_loses_whole_heads() -> None:
    gpt2 = prunekit.prune(_model("gpt2"), tokens()[:1], ratio=0.5).model
    block = gpt2.transformer.h[0]
    assert block.mlp.c_fc.weight.shape == (64, 128) and block.mlp.c_proj.weight.shape == (128, 64)
    assert block.attn.c_attn.weight.shape == (64, 192) and gpt2.config.n_inner == 128
    phi3 = prunekit.prune(_model("phi3"), tokens()[:1], ratio=0.5).model
    attn = phi3.model.layers[0].self_attn
    assert attn.qkv_proj.out_features == (4 + 2 + 2) * 8            # q, k, v rows of 2 KV groups
    assert phi3.model.layers[0].mlp.gate_up_proj.out_features == 2 * 64


def test_layers_that_would_disagree_with_one_config_are_refused_and_the_model_kept() -> None:
    model = _model("llama")
    before = snapshot(model)
    with pytest.raises(PruningError, match="different widths.*intermediate_size"):
        prunekit.prune(model, tokens()[:1], ratio=0.0, ratios={"model.layers.0.mlp.gate_proj": 0.5})
    assert not changes(model, before)


def test_hand_written_llama_block_prunes_the_same_through_fx_and_export() -> None:
    torch.manual_seed(0)
    model = randomise(TinyDecoder())
    results = {}
    for frontend in ("fx", "export"):
        verdict = judge(model, tokens(), ratio=0.5, frontend=frontend, measure_change=True)
        assert verdict.kind == "exact" and verdict.change > 1e-3, verdict.detail
        results[frontend] = verdict.result.removed
    assert results["fx"] == results["export"]
    assert len(results["fx"]["blocks.0.attn.k"]) == 8            # one KV head of two, whole


# -- the front-ends ---------------------------------------------------------------------------
def test_fx_failure_reports_fx_s_own_reason_and_export_takes_over() -> None:
    model = _model("llama")
    with pytest.raises(PruningError) as err:
        build_graph(model, tokens()[:1], frontend="fx")
    assert "torch.fx could not trace LlamaForCausalLM" in str(err.value)
    assert "control flow that depends on tensor values" not in str(err.value)
    assert build_graph(model, tokens()[:1]).prunable_groups()       # auto: torch.export


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class Unexportable(nn.Module):
    """fx fails on the Proxy's ``.tolist()``; export on the NumPy round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.as_tensor(x.detach().numpy()))


def test_when_both_front_ends_fail_the_error_gives_both_real_reasons() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(PruningError) as err:
        prunekit.prune(DataDependent(), x, ratio=0.5)
    text = str(err.value)
    assert "torch.fx could not trace DataDependent" in text and "torch.export" in text
    assert "control flow that depends on tensor values" in text     # it is, here
    with pytest.raises(PruningError) as err:
        prunekit.prune(Unexportable(), x, ratio=0.5)
    text = str(err.value)
    assert "torch.fx could not trace Unexportable" in text and "torch.export" in text
    assert "control flow that depends on tensor values" not in text


def test_refusals_in_an_exported_graph_name_the_node_and_the_module() -> None:
    class Sorted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.out(torch.sort(self.fc(x), dim=-1).values)

    with pytest.raises(PruningError, match=r"node 'sort' = aten.sort in module"):
        prunekit.prune(Sorted(), torch.randn(2, 4), ratio=0.5, frontend="export")


# -- approximate width of normalised streams (Minitron), only on request ----------------------
def test_the_stream_is_refused_by_default_and_the_model_kept() -> None:
    model = _model("llama")
    before = snapshot(model)
    with pytest.raises(PruningError, match="pinned \\(normalised together by LlamaRMSNorm"):
        prunekit.prune(model, tokens()[:1], ratio=0.0, ratios={"model.embed_tokens": 0.25})
    assert not changes(model, before)


@pytest.mark.parametrize("name", ["llama", "decoder"])
def test_approximate_stream_cut_reports_its_measured_error_and_is_never_exact(name: str) -> None:
    torch.manual_seed(0)
    model = randomise(TinyDecoder()) if name == "decoder" else _model(name)
    x = tokens()[:1]
    result = prunekit.prune(model, x, ratio=0.25, approximate=True)
    assert not result.exact and "NOT EXACT" in str(result)
    assert "prunable APPROXIMATELY (not exact: normalised together by" in str(result.groups)
    with torch.no_grad():
        kwargs = {"use_cache": False} if name == "llama" else {}
        got, want = result.model(x, **kwargs), model(x, **kwargs)
    got, want = (got.logits, want.logits) if name == "llama" else (got, want)
    measured = float((got - want).abs().max() / want.abs().max())
    assert result.approximation["relative_error"] == pytest.approx(measured, rel=1e-4)
    assert measured > 1e-3                                  # it is a different function
    if name == "llama":
        pruned = result.model
        assert pruned.config.hidden_size == 48 and model.config.hidden_size == 64
        assert _shapes(type(pruned)(pruned.config)) == _shapes(pruned)
        assert pruned.generate(tokens(1, 4), max_new_tokens=3, do_sample=False).shape == (1, 7)


def test_approximate_does_not_lift_other_pins() -> None:
    groups = str(prunekit.prune(_model("gpt2"), tokens()[:1], ratio=0.25,
                                approximate=True).groups)
    assert "Group 0 'transformer.wte': 64 channels, pinned: 'transformer.wte.weight' and " \
           "'lm_head.weight' share one tensor (tied weights)" in groups

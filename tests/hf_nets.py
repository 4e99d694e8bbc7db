"""Tiny language models for the transformer tests and benchmarks: Hugging Face ``transformers``
models built from configs (random weights, nothing downloaded), and a hand-written LLaMA-style
decoder that ``torch.fx`` can trace.

Every Hugging Face model here has 2 layers, a residual width of 64 and a vocabulary of 96;
the LLaMA-family ones have 8 query heads sharing 4 key/value heads (grouped-query attention)
of 8 dims each and an MLP of 128 neurons, so a KV head and its two query heads are one unit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB = 96


def _hf() -> object:
    """``transformers`` -- which imports torchvision when it is installed (``make bench``
    installs it); torchvision 0.28's compiled ops do not load beside the CPU torch, so its
    operator registrations are stubbed first, as ``benchmarks/torchvision_models.py`` does."""
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("torchvision") is not None:
        name = "torchvision._meta_registrations"
        sys.modules.setdefault(name, types.ModuleType(name))
    import transformers

    return transformers


def _llama_like(config_name: str, model_name: str, **extra: object) -> nn.Module:
    t = _hf()
    config = getattr(t, config_name)(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=8,
                                     num_key_value_heads=4, **extra)
    return getattr(t, model_name)(config)


#: name -> builder of a tiny model with random weights (call inside ``torch.manual_seed``).
MODELS: dict[str, Callable[[], nn.Module]] = {
    "llama": lambda: _llama_like("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": lambda: _llama_like("Qwen2Config", "Qwen2ForCausalLM"),
    "mistral": lambda: _llama_like("MistralConfig", "MistralForCausalLM"),
    "phi3": lambda: _llama_like("Phi3Config", "Phi3ForCausalLM", pad_token_id=0),
    "gemma": lambda: _llama_like("GemmaConfig", "GemmaForCausalLM", head_dim=8),
    "gpt2": lambda: _hf().GPT2LMHeadModel(_hf().GPT2Config(
        vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
        eos_token_id=0)),
    "opt": lambda: _hf().OPTForCausalLM(_hf().OPTConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
        max_position_embeddings=32, word_embed_proj_dim=64, pad_token_id=0, bos_token_id=0,
        eos_token_id=0)),
    "bert": lambda: _hf().BertModel(_hf().BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=32)),
}


def tokens(batch: int = 2, length: int = 7, seed: int = 1) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# A hand-written LLaMA-style decoder (fx-traceable)
# ----------------------------------------------------------------------------------------------

def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    """Grouped-query attention with rotary embeddings: ``heads`` query heads share
    ``kv_heads`` key/value heads (expand + reshape, as Hugging Face's ``repeat_kv``)."""

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim, self.group = head_dim, heads // kv_heads
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, dim, bias=False)
        inv = 1.0 / 10_000 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (p(x).view(b, t, -1, self.head_dim).transpose(1, 2)
                   for p in (self.q, self.k, self.v))
        angle = torch.arange(t, device=x.device).float()[:, None] * self.inv_freq[None, :]
        cos, sin = torch.cat([angle, angle], -1).cos(), torch.cat([angle, angle], -1).sin()
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = (y[:, :, None].expand(b, y.shape[1], self.group, t, self.head_dim)
                .reshape(b, -1, t, self.head_dim) for y in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(out.transpose(1, 2).reshape(b, t, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = Attention(dim, heads, kv_heads, head_dim)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyDecoder(nn.Module):
    """Embedding -> blocks -> RMSNorm -> untied head."""

    def __init__(self, layers: int = 2, dim: int = 32, heads: int = 4, kv_heads: int = 2,
                 head_dim: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, kv_heads, head_dim, hidden)
                                    for _ in range(layers))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

"""A small LLaMA-style decoder that fits on one screen: the course's language model.

The architecture of LLaMA (Touvron et al., 2023) and of most open language models since,
at a size that trains on a laptop CPU in minutes. One block, pre-norm::

    x = x + attention(rms_norm(x))      # each token reads the tokens before it
    x = x + swiglu_mlp(rms_norm(x))     # each token is transformed on its own

* **Token embedding**, no position embedding: positions enter through the rotation below.
* **RMSNorm** (Zhang & Sennrich, 2019) ``x / sqrt(mean(x**2) + eps) * weight`` -- LayerNorm
  without the mean: it normalises the whole residual stream together, so (like LayerNorm)
  it pins the stream's width for exact pruning.
* **Rotary position embeddings** (RoPE; Su et al., 2021): each query and key vector is
  rotated, pair of features by pair of features, by an angle proportional to its position,
  so ``q . k`` depends only on how far apart two tokens are. The pairs are feature ``i`` and
  ``i + head_dim / 2`` ("rotate half", the layout of Hugging Face's LLaMA). A head rotates as
  a whole -- so heads are removed whole, never single features of one.
* **Grouped-query attention** (GQA; Ainslie et al., 2023): ``n_heads`` query heads share
  ``n_kv_heads`` key/value heads, ``n_heads / n_kv_heads`` query heads per group, which
  shrinks the key/value cache. For pruning it couples structure: a KV head serves its whole
  group, so removing it removes the group's query heads too. Attention is
  ``F.scaled_dot_product_attention(..., is_causal=True)``: a token never sees later tokens.
* **SwiGLU MLP** (Shazeer, 2020): ``down(silu(gate(x)) * up(x))``. Hidden unit ``j`` is row
  ``j`` of ``gate`` and of ``up`` and column ``j`` of ``down`` -- one prunable neuron.
* An **untied output head**: the logits come from their own ``Linear(dim, vocab)``. Tying it
  to the embedding would save ``vocab x dim`` = 8,320 parameters here (1.4%) -- little with
  65 characters -- and would bind two layers to one weight: the hidden width would then be
  the embedding's columns *and* the head's inputs at once, so cutting or rotating the
  residual stream (the Minitron and SliceGPT sections) would have to treat them as one.
  Untied, every layer owns its weight. (LLaMA 1 and 2 are untied; small LLaMA 3.2 tie.)

No biases, no dropout (the model is small next to a million characters of text). The code
is written so ``torch.fx.symbolic_trace`` can follow it and prunekit can cut heads and MLP
neurons: no Python ``if`` on tensor values, and every width in ``forward`` is read from the
tensors (``-1``, ``x.size(...)``), never a constant -- a constant width could not shrink.

Why not ``transformers.LlamaForCausalLM``? It computes the same function (the lecture shows
the engine on it as well), but a student can read this module in one sitting, and the core
course needs no heavy dependency for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["LlamaConfig", "TinyLlama", "Attention", "SwiGLU", "Block", "rotate_half",
           "apply_rope", "repeat_kv", "tiny_llama"]


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a :class:`TinyLlama`. ``dim = n_heads * head_dim``; ``n_heads`` must be a
    multiple of ``n_kv_heads``. ``block_size`` is the context the model is trained for (the
    rotation itself works at any length; :meth:`TinyLlama.generate` keeps the last
    ``block_size`` tokens)."""

    vocab_size: int = 65
    block_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    mlp_hidden: int = 256
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5

    @property
    def dim(self) -> int:
        return self.n_heads * self.head_dim

    def __post_init__(self) -> None:
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (RoPE rotates pairs of features), got {self.head_dim}")


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dim: a 90-degree turn of
    every pair ``(x[i], x[i + d/2])``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate every pair of features of ``x`` ``(B, heads, T, head_dim)`` by its position's
    angle: ``x cos + rotate_half(x) sin`` (``cos``, ``sin``: ``(T, head_dim)``)."""
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: Tensor, group: Tensor | int) -> Tensor:
    """``(B, kv_heads, T, d) -> (B, kv_heads * group, T, d)``: KV head ``j`` serves query
    heads ``j * group ... (j + 1) * group - 1``. ``expand`` makes views, not copies."""
    return x.unsqueeze(2).expand(-1, -1, group, -1, -1).flatten(1, 2)


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary position embeddings."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, T, heads * d) -> (B, heads, T, d)``; the head count is ``-1``, so it follows
        the projection's width."""
        return x.unflatten(-1, (-1, self.head_dim)).transpose(1, 2)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q = apply_rope(self._heads(self.q_proj(x)), cos, sin)
        k = apply_rope(self._heads(self.k_proj(x)), cos, sin)
        v = self._heads(self.v_proj(x))
        group = q.size(1) // k.size(1)                  # query heads per KV head
        y = F.scaled_dot_product_attention(q, repeat_kv(k, group), repeat_kv(v, group),
                                           is_causal=True)
        return self.o_proj(y.transpose(1, 2).flatten(2))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``: the gate decides, feature by feature, how much of
    ``up(x)`` passes."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """One pre-norm decoder block: attention, then the MLP, each added to the stream."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """Token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``; see the module text."""

    def __init__(self, cfg: LlamaConfig = LlamaConfig()) -> None:
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # RoPE frequencies base^(-2i/d), i < d/2: fixed, so a buffer (not saved in checkpoints)
        inv_freq = cfg.rope_base ** (-torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights; the layers that write into the residual
        stream (``o_proj``, ``down``) scaled by ``1/sqrt(2 n_layers)`` so the stream's variance
        does not grow with depth."""
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / (2 * self.config.n_layers) ** 0.5 if name.endswith(("o_proj.weight", "down.weight")) \
                    else 0.02
                nn.init.normal_(p, std=std)

    def rope(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """``cos`` and ``sin`` of every position's angles, ``(T, head_dim)``."""
        positions = torch.arange(idx.size(1), device=idx.device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, idx: Tensor) -> Tensor:
        cos, sin = self.rope(idx)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` ``(B, T)``, one at a time, each
        from the logits of the last ``block_size`` tokens.

        ``temperature`` divides the logits (lower: more conservative; ``0``: always the most
        likely token); ``top_k`` keeps only the ``k`` most likely tokens. Sampling draws from
        ``generator`` -- by default a fresh one seeded with 0, so the same call gives the same
        text. Put the model in eval mode first (it has no dropout, but a pruned copy might)."""
        if temperature < 0 or (top_k is not None and top_k < 1) or max_new_tokens < 0:
            raise ValueError(f"need temperature >= 0, top_k >= 1, max_new_tokens >= 0; got "
                             f"{temperature}, {top_k}, {max_new_tokens}")
        generator = generator or torch.Generator(device=idx.device).manual_seed(0)
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1]
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
        return idx


def tiny_llama(vocab_size: int = 65, **overrides) -> TinyLlama:
    """The zoo's language model: 4 blocks, width 128, 4 query heads sharing 2 KV heads of
    32 features, SwiGLU with 256 hidden units, context 128 (~0.6 M parameters)."""
    return TinyLlama(LlamaConfig(vocab_size=vocab_size, **overrides))

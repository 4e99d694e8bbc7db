"""Layers that surgery creates when no ``torch.nn`` layer can hold the pruned shape.

``nn.MultiheadAttention`` insists that ``num_heads * head_dim == embed_dim``: its q, k and v
are exactly as wide as its input. Remove two of eight heads and that no longer holds, so
surgery puts a :class:`PrunedMultiheadAttention` in its place: the same computation (and the
same call signature and outputs), with ``num_heads`` heads of ``head_dim`` each between an
input of ``embed_dim`` and an output of ``out_dim`` features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PrunedMultiheadAttention"]


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """Multi-head attention with ``num_heads * head_dim`` independent of ``embed_dim``.

    Parameters as in ``nn.MultiheadAttention``: ``in_proj_weight`` stacks the q, k and v
    projections (``3 * num_heads * head_dim`` rows, ``embed_dim`` columns), ``out_proj`` maps
    the concatenated heads back to ``out_dim`` features. ``forward`` takes and returns what
    ``nn.MultiheadAttention.forward`` does (2-D ``attn_mask`` and ``key_padding_mask``). A
    subclass, so ``isinstance(m, nn.MultiheadAttention)`` in your code still holds.
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int, out_dim: int,
                 bias: bool = True, dropout: float = 0.0, batch_first: bool = False) -> None:
        nn.Module.__init__(self)          # not MultiheadAttention's: its shapes do not apply
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim, self.out_dim = (embed_dim, num_heads,
                                                                       head_dim, out_dim)
        self.kdim = self.vdim = embed_dim
        self.dropout, self.batch_first = dropout, batch_first
        self._qkv_same_embed_dim, self.bias_k, self.bias_v, self.add_zero_attn = (
            True, None, None, False)
        self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None
        self.out_proj = nn.Linear(inner, out_dim, bias=bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = self._project(query, key, value)
        mask = _additive_mask(attn_mask, key_padding_mask, q)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / self.head_dim ** 0.5
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores + _causal(q.shape[-2], k.shape[-2], q)
            weights = F.dropout(scores.softmax(dim=-1), p, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=is_causal and mask is None)
            weights = None
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        return out, weights

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> list[Tensor]:
        """q, k, v as (batch, heads, tokens, head_dim)."""
        weights = self.in_proj_weight.chunk(3)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else [None] * 3
        return [F.linear(x, w, b).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
                for x, w, b in zip((query, key, value), weights, biases)]

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, out_dim={self.out_dim}, "
                f"batch_first={self.batch_first}")


def _additive_mask(attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                   like: Tensor) -> Tensor | None:
    """nn.MultiheadAttention's masks (True = may NOT attend) as one additive float mask."""
    mask = None
    if attn_mask is not None:
        mask = _as_float(attn_mask, like)
    if key_padding_mask is not None:
        pad = _as_float(key_padding_mask, like)[:, None, None, :]
        mask = pad if mask is None else mask + pad
    return mask


def _as_float(mask: Tensor, like: Tensor) -> Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, float("-inf"))
    return mask.to(like.dtype)


def _causal(length: int, source: int, like: Tensor) -> Tensor:
    return torch.full((length, source), float("-inf"), dtype=like.dtype, device=like.device).triu(1)

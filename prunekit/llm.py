"""Pruning a language model by hand: the cuts the engine does not make, on :class:`TinyLlama`.

:func:`prunekit.prune` removes what it can prove exact -- a key/value head with its whole
group of query heads, SwiGLU neurons (lecture 10). The LLM recipes also cut along three axes
it refuses, and this module does each one in a few lines, each with its own check:

* **Query heads only** (:func:`drop_query_heads`). Under grouped-query attention every KV head
  serves ``n_heads / n_kv_heads`` query heads; removing the same number of query heads from
  every group keeps the grouping intact. Exact: equal to zeroing those heads' columns of
  ``o_proj`` (:func:`mask_query_heads`). It saves the query and output projections of a head,
  not its keys and values -- the KV cache keeps its size.
* **Depth** (ShortGPT; Men et al., 2024). A block adds its output to the residual stream; the
  *block influence* ``1 - cos(x_in, x_out)`` (:func:`block_influence`) says how much it turns
  the stream. Blocks that barely turn it are removed whole (:func:`drop_blocks`) -- exactly the
  model in which they are replaced by the identity (:func:`skip_blocks`).
* **The residual stream's width.** RMSNorm divides every token by the RMS of *all* its
  channels, so removing a channel is not zeroing it: the cut is approximate, and its error
  must be measured. Two ways to choose what goes:

  - **Minitron** (Muralidharan et al., 2024): rank the channels by activation importance --
    the mean ``|x_c|`` of the normalised stream over calibration text
    (:func:`channel_importance`) -- and keep the largest (:func:`slice_stream`).
  - **SliceGPT** (Ashkboos et al., 2024): first make the stream's basis free. Fold each
    RMSNorm's scale into the linears that read it (:func:`fold_norms`); a scale-free RMSNorm
    commutes with any orthogonal ``Q`` (``rms(x Q) = rms(x)``), so rotating the stream by
    ``Q`` -- embedding, every reader and writer -- leaves every output unchanged
    (:func:`rotate_stream`; *computational invariance*). Choose ``Q`` as the principal
    directions of the stream (:func:`stream_basis`), and the last coordinates carry the least
    signal: slice them off. SliceGPT uses one ``Q`` per block and adds a ``Q_l^T Q_{l+1}``
    matrix on each residual connection; here one ``Q`` serves the whole stream, which needs
    no extra matrices, so at equal width both methods have the same parameters.

* **Wanda** (Sun et al., 2024) scores each weight by ``|W_ij| * ||X_j||`` -- its magnitude
  times the norm of the input feature it multiplies over calibration tokens
  (:func:`input_norms`, :func:`wanda_scores`) -- and keeps the top ``n`` of every ``m`` inputs
  of each row (:func:`apply_masks` with :func:`prunekit.sparsity.nm_mask` of the scores).

Every function returns a new model and leaves its argument unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .llama import Block, TinyLlama
from .sparsity import nm_mask
from .train import distillation_loss
from .verify import output_error

__all__ = ["READERS", "WRITERS", "SkipBlock", "block_influence", "skip_blocks", "drop_blocks",
           "mask_query_heads", "drop_query_heads", "head_output_norms", "fold_norms",
           "rotate_stream", "stream_basis", "channel_importance", "slice_stream", "input_norms",
           "wanda_scores", "nm_masks", "apply_masks", "lm_distillation_loss", "relative_error"]

#: The linears of a block that read the (normalised) residual stream, by the norm they follow.
READERS = {"attn_norm": ("attn.q_proj", "attn.k_proj", "attn.v_proj"),
           "mlp_norm": ("mlp.gate", "mlp.up")}
#: The linears of a block that write into the residual stream.
WRITERS = ("attn.o_proj", "mlp.down")


def relative_error(a: nn.Module, b: nn.Module, idx: Tensor) -> float:
    """``max |a(idx) - b(idx)| / max |b(idx)|`` over all logits: the course's exactness measure
    (:func:`prunekit.verify.output_error`). Float32 rounding gives ~1e-7 to 1e-6; an exact cut
    stays below 1e-5, a wrong one is off by 1e-2 or more."""
    with torch.no_grad():
        return output_error(a(idx), b(idx))


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------

def _stream_at_blocks(model: TinyLlama, idx: Tensor) -> list[Tensor]:
    """The residual stream entering each block and leaving the last one: ``n_layers + 1``
    tensors ``(B, T, dim)``."""
    cos, sin = model.rope(idx)
    x = model.embed(idx)
    states = [x]
    for block in model.blocks:
        x = block(x, cos, sin)
        states.append(x)
    return states


@torch.no_grad()
def block_influence(model: TinyLlama, idx: Tensor) -> Tensor:
    """ShortGPT's block influence of every block: ``1 - cos(x_in, x_out)`` of the residual
    stream before and after the block, averaged over all tokens of ``idx``. Near 0: the block
    hardly changes the direction of the stream -- a candidate for removal."""
    states = _stream_at_blocks(model, idx)
    return torch.stack([1 - F.cosine_similarity(a, b, dim=-1).mean()
                        for a, b in zip(states[:-1], states[1:])])


class SkipBlock(nn.Module):
    """A block replaced by the identity: ``x -> x``, whatever the rotary tables."""

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return x


def _checked_blocks(model: TinyLlama, blocks: Iterable[int]) -> list[int]:
    chosen = sorted(set(int(b) for b in blocks))
    n = len(model.blocks)
    if any(not 0 <= b < n for b in chosen) or len(chosen) >= n:
        raise ValueError(f"blocks must be distinct indices in [0, {n}) and leave at least one block; "
                         f"got {chosen}")
    return chosen


def skip_blocks(model: TinyLlama, blocks: Iterable[int]) -> TinyLlama:
    """A copy in which ``blocks`` are replaced by :class:`SkipBlock`: the reference that
    :func:`drop_blocks` must equal (the "zero-masked" model of depth pruning)."""
    chosen = _checked_blocks(model, blocks)
    out = copy.deepcopy(model)
    for b in chosen:
        out.blocks[b] = SkipBlock()
    return out


def drop_blocks(model: TinyLlama, blocks: Iterable[int]) -> TinyLlama:
    """A copy without ``blocks``: the remaining blocks, in order, and a config with fewer
    layers. The pre-norm residual design makes this exact: a removed block's contribution was
    only ever *added* to the stream."""
    chosen = _checked_blocks(model, blocks)
    out = copy.deepcopy(model)
    out.blocks = nn.ModuleList(blk for i, blk in enumerate(out.blocks) if i not in chosen)
    out.config = replace(model.config, n_layers=len(out.blocks))
    return out


# ----------------------------------------------------------------------------------------------
# Query heads under grouped-query attention
# ----------------------------------------------------------------------------------------------

def _query_rows(head: int, head_dim: int) -> slice:
    return slice(head * head_dim, (head + 1) * head_dim)


def _check_query_heads(model: TinyLlama, drop: Mapping[int, Iterable[int]]) -> dict[int, list[int]]:
    """Every block drops the same number of query heads from each of its KV groups."""
    cfg = model.config
    group = cfg.n_heads // cfg.n_kv_heads
    out = {}
    for b, heads in drop.items():
        heads = sorted(set(int(h) for h in heads))
        per_group = [sum(h // group == g for h in heads) for g in range(cfg.n_kv_heads)]
        if any(not 0 <= h < cfg.n_heads for h in heads) or len(set(per_group)) != 1 \
                or per_group[0] >= group:
            raise ValueError(f"block {b}: drop the same number of query heads (fewer than {group}) from "
                             f"every KV group, got heads {heads} (per group {per_group})")
        out[int(b)] = heads
    return out


def mask_query_heads(model: TinyLlama, drop: Mapping[int, Iterable[int]]) -> TinyLlama:
    """A copy in which query heads ``drop[block]`` write nothing: their columns of ``o_proj``
    are zeroed. (Zeroing a head's query rows would not do: its softmax would turn uniform, not
    off.)"""
    drop, out = _check_query_heads(model, drop), copy.deepcopy(model)
    d = model.config.head_dim
    with torch.no_grad():
        for b, heads in drop.items():
            for h in heads:
                out.blocks[b].attn.o_proj.weight[:, _query_rows(h, d)] = 0
    return out


def drop_query_heads(model: TinyLlama, drop: Mapping[int, Iterable[int]]) -> TinyLlama:
    """A copy without query heads ``drop[block]`` (rows of ``q_proj``, columns of ``o_proj``);
    keys and values untouched. ``drop`` must take the same number from every KV group of a
    block, so that ``repeat_kv`` still pairs each query head with its own KV head."""
    drop, out = _check_query_heads(model, drop), copy.deepcopy(model)
    d = model.config.head_dim
    for b, heads in drop.items():
        attn = out.blocks[b].attn
        keep = torch.tensor([i for h in range(attn.q_proj.out_features // d) if h not in heads
                             for i in range(h * d, (h + 1) * d)])
        attn.q_proj = _linear(attn.q_proj.weight[keep])
        attn.o_proj = _linear(attn.o_proj.weight[:, keep])
    return out


@torch.no_grad()
def head_output_norms(model: TinyLlama, idx: Tensor) -> Tensor:
    """``(n_layers, heads)``: the mean norm, over the tokens of ``idx``, of what each query
    head adds to the stream (its attention output times its columns of ``o_proj``) --
    Minitron's activation importance of a head."""
    d = model.config.head_dim
    rows: list[Tensor] = []

    def record(module: nn.Module, args: tuple[Tensor]) -> None:
        y = args[0].unflatten(-1, (-1, d))                           # (B, T, heads, d)
        w = module.weight.unflatten(1, (-1, d))                      # (dim, heads, d)
        rows.append(torch.einsum("bthd,ohd->btho", y, w).norm(dim=-1).mean(dim=(0, 1)))

    hooks = [b.attn.o_proj.register_forward_pre_hook(record) for b in model.blocks]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(rows)


def _linear(weight: Tensor) -> nn.Linear:
    """A bias-free ``nn.Linear`` holding a copy of ``weight`` ``(out, in)``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer.weight = nn.Parameter(weight.detach().clone())
    return layer


# ----------------------------------------------------------------------------------------------
# The residual stream: fold, rotate, slice
# ----------------------------------------------------------------------------------------------

def _norms_and_readers(model: TinyLlama) -> list[tuple[nn.RMSNorm, list[nn.Linear]]]:
    """Every RMSNorm with the linears that read its output (the final norm: the head)."""
    pairs = [(getattr(b, norm), [b.get_submodule(r) for r in readers])
             for b in model.blocks if isinstance(b, Block) for norm, readers in READERS.items()]
    return pairs + [(model.norm, [model.head])]


def _writers(model: TinyLlama) -> list[nn.Linear]:
    return [b.get_submodule(w) for b in model.blocks if isinstance(b, Block) for w in WRITERS]


@torch.no_grad()
def fold_norms(model: TinyLlama) -> TinyLlama:
    """A copy with every RMSNorm's scale folded into the linears that read it: ``W[:, c] *=
    w_c``, then ``w = 1``. The same function (to rounding): ``(x / rms(x) * w) W^T =
    (x / rms(x)) (W diag(w))^T``."""
    out = copy.deepcopy(model)
    for norm, readers in _norms_and_readers(out):
        for layer in readers:
            layer.weight.mul_(norm.weight)
        norm.weight.fill_(1.0)
    return out


@torch.no_grad()
def rotate_stream(model: TinyLlama, q: Tensor) -> TinyLlama:
    """A copy whose residual stream is ``x Q`` instead of ``x`` (``Q`` orthogonal, ``dim x
    dim``): the embedding becomes ``E Q``, every reader ``W Q``, every writer ``Q^T W``.
    Outputs are unchanged **if the norms carry no scale** (:func:`fold_norms` first): an
    RMSNorm with weights ``w != 1`` would scale the rotated coordinates, not the original ones.
    Refuses a ``Q`` that is not orthogonal and a model whose norms are not folded."""
    dim = model.config.dim
    if q.shape != (dim, dim) or not torch.allclose(q.T @ q, torch.eye(dim, dtype=q.dtype), atol=1e-4):
        raise ValueError(f"Q must be an orthogonal {dim} x {dim} matrix")
    if any(not torch.all(norm.weight == 1) for norm, _ in _norms_and_readers(model)):
        raise ValueError("fold the RMSNorm scales first (fold_norms): a scaled norm does not commute "
                         "with a rotation")
    out = copy.deepcopy(model)
    q = q.to(out.embed.weight)
    out.embed.weight.copy_(out.embed.weight @ q)
    for _, readers in _norms_and_readers(out):
        for layer in readers:
            layer.weight.copy_(layer.weight @ q)
    for layer in _writers(out):
        layer.weight.copy_(q.T @ layer.weight)
    return out


@torch.no_grad()
def _normalised_stream(model: TinyLlama, idx: Tensor) -> Tensor:
    """``(tokens * (n_layers + 1), dim)``: the stream as every RMSNorm sees it, ``x / rms(x)``,
    at the input of each block and of the final norm."""
    states = torch.cat([s.flatten(0, 1) for s in _stream_at_blocks(model, idx)])
    return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + model.config.norm_eps)


def stream_basis(model: TinyLlama, idx: Tensor) -> tuple[Tensor, Tensor]:
    """SliceGPT's rotation: the eigenvectors of ``sum x^T x`` over the normalised stream (all
    blocks, all tokens of ``idx``), as the columns of an orthogonal ``Q``, largest eigenvalue
    first; and the share of the signal each direction carries (eigenvalues / their sum).
    Computed in float64; ``Q`` is returned in the model's dtype."""
    x = _normalised_stream(model, idx).double()
    values, vectors = torch.linalg.eigh(x.T @ x)
    order = values.argsort(descending=True)
    share = (values[order] / values.sum()).float()
    return vectors[:, order].to(model.embed.weight.dtype), share


@torch.no_grad()
def channel_importance(model: TinyLlama, idx: Tensor) -> Tensor:
    """Minitron's activation importance of every stream channel: the mean of ``|x_c|`` over
    the normalised stream (all blocks, all tokens of ``idx``)."""
    return _normalised_stream(model, idx).abs().mean(0)


@torch.no_grad()
def slice_stream(model: TinyLlama, keep: Tensor) -> TinyLlama:
    """A copy whose residual stream keeps only the channels ``keep`` (indices into ``dim``):
    columns of the embedding and of every reader, rows of every writer, entries of every
    RMSNorm.

    Approximate: each RMSNorm now takes the RMS of ``k`` channels instead of ``D``. Its scale
    is multiplied by ``sqrt(D / k)`` and its ``eps`` by ``D / k``, so that if the removed
    channels carried nothing the result would be exact: ``x_k / sqrt(|x_k|^2 / D + eps)``.
    Their signal is what the cut loses -- measure it."""
    keep = torch.as_tensor(keep, dtype=torch.long).sort().values
    dim, k = model.config.dim, len(keep)
    if k == 0 or k > dim or len(keep.unique()) != k or int(keep.min()) < 0 or int(keep.max()) >= dim:
        raise ValueError(f"keep must be distinct channel indices in [0, {dim}), got {k} of them")
    out = copy.deepcopy(model)
    out.embed.weight = nn.Parameter(out.embed.weight[:, keep].clone())
    for norm, readers in _norms_and_readers(out):
        norm.weight = nn.Parameter(norm.weight[keep] * math.sqrt(dim / k))
        norm.normalized_shape, norm.eps = (k,), norm.eps * dim / k
        for layer in readers:
            layer.weight = nn.Parameter(layer.weight[:, keep].clone())
            layer.in_features = k
    for layer in _writers(out):
        layer.weight = nn.Parameter(layer.weight[keep].clone())
        layer.out_features = k
    return out


# ----------------------------------------------------------------------------------------------
# Wanda and N:M masks
# ----------------------------------------------------------------------------------------------

def _linear_layers(model: nn.Module, skip: Iterable[str] = ("head",)) -> dict[str, nn.Linear]:
    skip = set(skip)
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip}


@torch.no_grad()
def input_norms(model: nn.Module, idx: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
    """``{layer: ||X_j||_2}``: for each linear layer (default: all but the output head), the
    Euclidean norm of each input feature ``j`` over all tokens of ``idx`` -- Wanda's
    activation statistic."""
    names = list(layers) if layers is not None else list(_linear_layers(model))
    sums = {n: 0.0 for n in names}

    def recorder(name: str) -> Callable:
        def record(module: nn.Module, args: tuple[Tensor]) -> None:
            sums[name] = sums[name] + args[0].flatten(0, -2).double().pow(2).sum(0)
        return record

    hooks = [model.get_submodule(n).register_forward_pre_hook(recorder(n)) for n in names]
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return {n: s.sqrt().float() for n, s in sums.items()}


def wanda_scores(weight: Tensor, norms: Tensor) -> Tensor:
    """Wanda's score of every weight ``(out, in)``: ``|W_ij| * ||X_j||``. A large weight on a
    feature that is always near zero matters little; a small weight on a large feature can
    matter a lot."""
    if norms.shape != (weight.shape[1],):
        raise ValueError(f"need one norm per input feature ({weight.shape[1]}), got {tuple(norms.shape)}")
    return weight.detach().abs() * norms


def nm_masks(model: nn.Module, scores: Mapping[str, Tensor] | None = None, n: int = 2,
             m: int = 4) -> dict[str, Tensor]:
    """``{layer: N:M mask}`` keeping the ``n`` highest scores of every ``m`` consecutive inputs
    of each row. ``scores``: ``{layer: (out, in) scores}`` (e.g. :func:`wanda_scores`); without
    it, the magnitude ``|W|`` of every linear layer but the head."""
    if scores is None:
        scores = {name: layer.weight.abs() for name, layer in _linear_layers(model).items()}
    return {name: nm_mask(s, n, m) for name, s in scores.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """A copy with each layer's weight multiplied by its mask (plain tensors: no hooks)."""
    out = copy.deepcopy(model)
    for name, mask in masks.items():
        out.get_submodule(name).weight.mul_(mask)
    return out


# ----------------------------------------------------------------------------------------------
# Repair
# ----------------------------------------------------------------------------------------------

def lm_distillation_loss(teacher: nn.Module, temperature: float = 1.0,
                         alpha: float = 1.0) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """A criterion for :func:`prunekit.train_lm.train_lm` that distils ``teacher``: at every
    position, the KL divergence from the teacher's next-character distribution (softened by
    ``temperature``) to the student's, mixed with the cross-entropy on the text by ``1 -
    alpha`` (:func:`prunekit.train.distillation_loss`). Minitron distils on the logits alone
    (``alpha = 1``, the default). The teacher runs in eval mode without gradients."""
    teacher.eval()

    def criterion(logits: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            target_logits = teacher(inputs)
        return distillation_loss(logits.flatten(0, 1), target_logits.flatten(0, 1), targets.flatten(),
                                 temperature, alpha)

    return criterion

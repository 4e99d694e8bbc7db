"""The baselines a character-level language model must beat: unigram and bigram counts.

A *unigram* model predicts every character with its frequency in the training text,
whatever came before; a *bigram* model predicts it from the one character before it
(Shannon, 1948, built his "approximations to English" this way). Both are fitted by counting
on the training split, with *add-k smoothing* (Laplace's add-one for ``k = 1``): ``k`` is
added to every count, so a pair never seen in training gets a small probability instead of
zero -- one unseen pair in the validation text would otherwise make the loss infinite.

Both are written as modules that return next-character logits ``(B, T, vocab)`` -- the
log-probabilities themselves -- so :func:`prunekit.text.evaluate_loss` measures them on the
same windows, by the same code, as the transformer. What the transformer adds over the
bigram is everything it learns from more than one character of context.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .text import TextSplits, eval_windows, evaluate_loss

__all__ = ["UnigramModel", "BigramModel", "fit_unigram", "fit_bigram", "baseline_losses"]


class UnigramModel(nn.Module):
    """``p(next) = (count(next) + k) / (N + k V)``, the same for every position."""

    def __init__(self, log_probs: Tensor) -> None:
        super().__init__()
        self.register_buffer("log_probs", log_probs)

    def forward(self, idx: Tensor) -> Tensor:
        return self.log_probs.expand(*idx.shape, -1)


class BigramModel(nn.Module):
    """``p(next | prev) = (count(prev, next) + k) / (count(prev) + k V)``: row ``prev`` of a
    ``V x V`` table. ``forward`` looks up the row of each input character."""

    def __init__(self, log_probs: Tensor) -> None:
        super().__init__()
        self.register_buffer("log_probs", log_probs)

    def forward(self, idx: Tensor) -> Tensor:
        return self.log_probs[idx]


def _check(ids: Tensor, vocab_size: int, k: float) -> None:
    if ids.dim() != 1 or ids.numel() < 2:
        raise ValueError(f"need a 1-d sequence of at least 2 token ids, got shape {tuple(ids.shape)}")
    if k <= 0:
        raise ValueError(f"k must be > 0 (k = 0 gives unseen characters probability 0), got {k}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")


def fit_unigram(train: Tensor, vocab_size: int, k: float = 1.0) -> UnigramModel:
    """Count the characters of ``train`` (1-d token ids), add ``k`` to each count."""
    _check(train, vocab_size, k)
    counts = torch.bincount(train, minlength=vocab_size).double() + k
    return UnigramModel((counts / counts.sum()).log().float())


def fit_bigram(train: Tensor, vocab_size: int, k: float = 1.0) -> BigramModel:
    """Count the pairs ``(train[i], train[i+1])``, add ``k`` to each of the ``V x V`` counts."""
    _check(train, vocab_size, k)
    pairs = train[:-1] * vocab_size + train[1:]
    counts = torch.bincount(pairs, minlength=vocab_size ** 2).double().view(vocab_size, vocab_size) + k
    return BigramModel((counts / counts.sum(dim=1, keepdim=True)).log().float())


def baseline_losses(splits: TextSplits, block_size: int, k: float = 1.0) -> dict[str, float]:
    """Validation loss (nats per character) of the unigram and bigram models fitted on
    ``splits.train``, on the same windows :func:`prunekit.text.eval_windows` gives a
    transformer with context ``block_size``: ``{"unigram": ..., "bigram": ...}``."""
    inputs, targets = eval_windows(splits.val, block_size)
    vocab = len(splits.vocab)
    return {"unigram": evaluate_loss(fit_unigram(splits.train, vocab, k), inputs, targets),
            "bigram": evaluate_loss(fit_bigram(splits.train, vocab, k), inputs, targets)}

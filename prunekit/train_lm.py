"""Training a character-level language model: seeded, step by step, on random windows.

A language model has no epochs in the image-classifier sense: each step draws
``batch_size`` random windows of ``block_size + 1`` characters from the training text
(:func:`prunekit.text.sample_batch`) and learns to predict every character of a window from
the ones before it -- ``block_size`` predictions per window, all in one forward pass thanks
to the causal mask.

The optimiser is the one transformers are trained with: AdamW (Loshchilov & Hutter, 2019)
with betas (0.9, 0.95), weight decay on the weight matrices only (not on the RMSNorm scales),
gradients clipped to norm 1, and a learning rate that rises linearly for ``warmup`` steps and
then follows a cosine down to 0 (a cold AdamW's first steps are too large for attention).

Every random number comes from one ``torch.Generator`` seeded with ``seed`` (the batches)
and from ``torch.manual_seed(seed)`` (the initial weights, drawn by the caller); at one
thread, the same recipe gives bit-identical weights on the same machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from .device import device_of
from .text import sample_batch
from .train import progress_enabled

__all__ = ["lm_loss", "lr_at", "train_lm"]

Criterion = Callable[[Tensor, Tensor, Tensor], Tensor]


def lm_loss(logits: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy of ``logits`` ``(B, T, V)`` against ``targets`` ``(B, T)``.
    (``inputs`` is unused here; a distillation loss needs them to run its teacher.)"""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup`` steps, then a cosine
    from ``lr`` to 0 at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * lr * (1 + math.cos(math.pi * progress))


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on matrices (``dim >= 2``) only: a decayed RMSNorm scale would just be
    pulled towards 0 for no gain."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def train_lm(model: nn.Module, train_ids: Tensor, steps: int, batch_size: int = 32,
             block_size: int = 128, lr: float = 3e-3, warmup: int = 100, weight_decay: float = 0.1,
             seed: int = 0, grad_clip: float = 1.0, criterion: Criterion = lm_loss,
             progress: bool = True, callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``steps`` steps on random windows of ``train_ids`` (1-d
    token ids); return the training loss of every step.

    ``criterion(logits, inputs, targets)`` is the loss (default :func:`lm_loss`; pass a
    distillation loss to learn from a teacher). ``callback(step, loss)`` runs after every
    step (e.g. to evaluate now and then). The model is left in eval mode."""
    if steps < 1 or batch_size < 1 or warmup < 1:
        raise ValueError(f"need steps, batch_size and warmup >= 1; got {steps}, {batch_size}, {warmup}")
    device = device_of(model)
    generator = torch.Generator().manual_seed(seed)      # the batches: CPU, so every device agrees
    optimizer = _adamw(model, lr, weight_decay)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(steps), desc="train", disable=not progress_enabled(progress), leave=False)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        inputs, targets = (t.to(device) for t in sample_batch(train_ids, batch_size, block_size, generator))
        loss = criterion(model(inputs), inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if callback is not None:
            callback(step, losses[-1])
    model.eval()
    return losses

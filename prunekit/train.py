"""Training, evaluation, fine-tuning and BatchNorm recalibration -- seeded and deterministic.

Pruning is only half of the story: right after channels are cut, accuracy usually collapses,
and what brings it back is one of two cheap repairs this module provides:

* :func:`recalibrate_bn` -- no gradient steps at all. The surviving channels' BatchNorm
  running mean / variance were measured on the *old* network; re-measuring them on a few
  batches recovers most of the loss (on the course's VGG: ~10-28% -> most of the way back).
* :func:`fine_tune` -- one or two epochs of ordinary training at a small learning rate.

:func:`bn_l1_penalty` is the extra loss term of *network slimming* (Liu et al., "Learning
Efficient Convolutional Networks through Network Slimming", ICCV 2017): an L1 penalty on the
BatchNorm scales gamma pushes many of them to ~0 during training, so the channels they scale
can later be removed for free. Pass it to :func:`train` through ``extra_loss``.

Everything is seeded: the same ``seed`` gives bit-identical weights (at a fixed number of
threads), which is what lets notebook outputs be compared automatically.

Every function here runs on the model's device (CPU or GPU, see :mod:`prunekit.device`) and
moves each batch of the (CPU) data loader there: ``model.to("cuda")`` is all it takes.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .device import device_of, to_device

__all__ = [
    "EvalResult", "set_seed", "progress_enabled", "train", "evaluate", "fine_tune",
    "recalibrate_bn", "bn_l1_penalty", "distillation_loss", "distill", "random_shift",
]

ExtraLoss = Callable[[nn.Module], Tensor]


@dataclass(frozen=True)
class EvalResult:
    """Accuracy (a fraction, 0..1), the counts behind it, and the mean cross-entropy loss."""

    accuracy: float
    correct: int
    total: int
    loss: float

    def __str__(self) -> str:
        return f"accuracy {self.accuracy:.2%} ({self.correct}/{self.total}), loss {self.loss:.4f}"


def set_seed(seed: int) -> None:
    """Seed every random number generator training touches: Python, NumPy and PyTorch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress_enabled(progress: bool = True) -> bool:
    """Whether to draw progress bars: ``progress`` and not switched off globally with the
    environment variable ``PRUNEKIT_PROGRESS=0`` (the notebook tests do this, because tqdm
    writes to stderr and stderr would break nbval's output comparison)."""
    return progress and os.environ.get("PRUNEKIT_PROGRESS", "1").strip().lower() not in {"0", "false", "no", "off"}


def _reseed_loader(loader: Iterable, seed: int) -> None:
    # A shuffling DataLoader draws its order from its own generator, which advances every
    # epoch; resetting it makes "same seed" mean "same batches", however often train() is called.
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)


def _cosine_lr(base_lr: float, step: int, total: int) -> float:
    """Cosine annealing from ``base_lr`` to 0 (Loshchilov & Hutter, SGDR, 2017)."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * step / max(total, 1)))


Criterion = Callable[[Tensor, Tensor, Tensor], Tensor]   # (logits, inputs, targets) -> loss
Augment = Callable[[Tensor], Tensor]                     # a batch of inputs -> a batch of inputs


def random_shift(x: Tensor, max_shift: int = 2) -> Tensor:
    """Data augmentation: move each image of the batch ``x`` (N, C, H, W) by its own random
    offset of up to ``max_shift`` pixels in each direction (pad by repeating the border, then
    crop back to H x W) -- a digit moved by two pixels is still the same digit.

    Convolutions with pooling are almost shift-invariant by construction; a vision
    transformer is not (each patch position has its own learned embedding) and must learn it
    from data. On the course's 3,500 MNIST training images the zoo's ViT recipe reaches 92.5%
    test accuracy without shifts (it memorises the training set) and 97.4% with them. The
    offsets come from torch's global generator, which :func:`train` seeds, so runs stay
    reproducible.
    """
    if max_shift <= 0:
        return x
    _, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2)).tolist()
    return torch.stack([img[:, dy:dy + h, dx:dx + w] for img, (dy, dx) in zip(padded, offsets)])


def _cross_entropy(logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
    return nn.functional.cross_entropy(logits, y)


def _train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                 extra_loss: ExtraLoss | None, lr_at: Callable[[int], float], first_step: int,
                 bar, criterion: Criterion = _cross_entropy,
                 augment: Augment | None = None) -> dict[str, float]:
    model.train()
    device = device_of(model)
    seen = correct = 0
    loss_sum = 0.0
    step = first_step
    for x, y in loader:
        x, y = to_device(x, device), to_device(y, device)
        if augment is not None:
            x = augment(x)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        logits = model(x)
        loss = criterion(logits, x, y)
        total_loss = loss + extra_loss(model) if extra_loss is not None else loss
        optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        optimizer.step()
        step += 1
        seen += len(y)
        correct += int((logits.detach().argmax(1) == y).sum())
        loss_sum += loss.item() * len(y)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return {"train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1), "steps": step}


def train(model: nn.Module, train_loader: DataLoader, epochs: int = 10, lr: float = 0.05,
          seed: int = 0, extra_loss: ExtraLoss | None = None, val_loader: DataLoader | None = None,
          progress: bool = True, momentum: float = 0.9, weight_decay: float = 5e-4,
          optimizer: str = "sgd", criterion: Criterion | None = None,
          augment: Augment | None = None) -> list[dict]:
    """Train ``model`` in place with SGD (Nesterov momentum) -- or ``optimizer="adamw"``, the
    usual choice for transformers -- and a cosine learning-rate decay.

    The loss is ``criterion(logits, inputs, targets)`` (default: cross-entropy; see
    :func:`distill` for another) plus ``extra_loss(model)`` if given -- the hook for
    regularisers such as network slimming: ``extra_loss=lambda m: 2e-2 * bn_l1_penalty(m)``.
    ``augment`` (default: none) transforms every training batch before the forward pass,
    e.g. ``augment=lambda x: random_shift(x, 1)`` (see :func:`random_shift`).
    ``seed`` seeds every generator *and* the loader's shuffle, so the same seed gives the same
    weights. Returns one dict per epoch: ``epoch, lr, train_loss, train_acc`` (+ ``val_loss,
    val_acc`` with a ``val_loader``); the model is left in eval mode.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    set_seed(seed)
    _reseed_loader(train_loader, seed)
    optimizer = _optimizer(model, optimizer, lr, momentum, weight_decay)
    total_steps = epochs * len(train_loader)
    history: list[dict] = []
    step = 0
    with tqdm(total=total_steps, desc="train", unit="batch", disable=not progress_enabled(progress)) as bar:
        for epoch in range(1, epochs + 1):
            bar.set_description(f"epoch {epoch}/{epochs}")
            lr_now = _cosine_lr(lr, step, total_steps)
            stats = _train_epoch(model, train_loader, optimizer, extra_loss,
                                 lambda s: _cosine_lr(lr, s, total_steps), step, bar,
                                 criterion or _cross_entropy, augment)
            step = int(stats.pop("steps"))
            record = {"epoch": epoch, "lr": lr_now, **stats}
            if val_loader is not None:
                val = evaluate(model, val_loader)
                record.update(val_loss=val.loss, val_acc=val.accuracy)
            history.append(record)
    model.eval()
    return history


def _optimizer(model: nn.Module, name: str, lr: float, momentum: float,
               weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                               nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r}: use 'sgd' or 'adamw'")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
                      temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a
    Neural Network"): match the teacher's *softened* class probabilities, not only the labels.

    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE``.
    A temperature ``T > 1`` spreads the teacher's probability over the wrong classes -- "this
    4 looks a bit like a 9" -- which is information a one-hot label does not carry; the
    ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` changes.
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ValueError(f"need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
    t = temperature
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / t, dim=1),
                                nn.functional.log_softmax(teacher_logits / t, dim=1),
                                reduction="batchmean", log_target=True) * t * t
    hard = nn.functional.cross_entropy(student_logits, targets)
    return alpha * soft + (1 - alpha) * hard


def distill(student: nn.Module, teacher: nn.Module, train_loader: DataLoader, epochs: int = 1,
            lr: float = 0.01, temperature: float = 4.0, alpha: float = 0.9, seed: int = 0,
            val_loader: DataLoader | None = None, progress: bool = True,
            optimizer: str = "sgd", weight_decay: float = 5e-4) -> list[dict]:
    """Fine-tune ``student`` (e.g. a pruned model) in place to imitate ``teacher`` (e.g. the
    dense model it came from) with :func:`distillation_loss` -- the recovery step of
    prune-then-distil recipes (e.g. Minitron, Muralidharan et al., 2024). The teacher runs in
    eval mode without gradients and is not changed. Same schedule and return value as
    :func:`train`."""
    was_training = teacher.training
    teacher.eval()

    def criterion(logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():   # the teacher may live on another device than the student
            target_logits = teacher(to_device(x, device_of(teacher))).to(logits.device)
        return distillation_loss(logits, target_logits, y, temperature, alpha)

    try:
        return train(student, train_loader, epochs=epochs, lr=lr, seed=seed,
                     val_loader=val_loader, progress=progress, optimizer=optimizer,
                     weight_decay=weight_decay, criterion=criterion)
    finally:
        teacher.train(was_training)


def fine_tune(model: nn.Module, train_loader: DataLoader, epochs: int = 1, lr: float = 0.01,
              seed: int = 0, extra_loss: ExtraLoss | None = None, val_loader: DataLoader | None = None,
              progress: bool = True) -> list[dict]:
    """A short :func:`train` at a small learning rate: the repair step after pruning.

    The pruned network already sits near a good solution, so a large learning rate would
    throw that away; 1-2 epochs at ``lr=0.01`` bring the course's VGG back to 95-98%."""
    return train(model, train_loader, epochs=epochs, lr=lr, seed=seed, extra_loss=extra_loss,
                 val_loader=val_loader, progress=progress)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable) -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` in eval mode (its mode is restored after)."""
    was_training = model.training
    model.eval()
    device = device_of(model)
    correct = total = 0
    loss_sum = 0.0
    try:
        for x, y in loader:
            x, y = to_device(x, device), to_device(y, device)
            logits = model(x)
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluate() got an empty loader: nothing to measure")
    return EvalResult(correct / total, correct, total, loss_sum / total)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int = 20) -> nn.Module:
    """Re-measure every BatchNorm's running mean and variance on ``batches`` batches of data.

    Why it works: in eval mode BN normalises with running statistics collected during training.
    After pruning, the channels feeding each BN have changed (inputs were removed), so those
    statistics are stale and every layer is mis-normalised -- errors compound layer by layer.
    Resetting them and forwarding a few batches in train mode (no gradients, no weight change)
    with ``momentum=None`` (a plain cumulative average, not an exponential one) fixes that.
    Only BN layers are switched to train mode, so dropout stays off. Returns the model, in
    eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return model.eval()
    saved_momentum = [bn.momentum for bn in bns]
    device = device_of(model)
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
        bn.train()
    try:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(to_device(x, device))
    finally:
        for bn, momentum in zip(bns, saved_momentum):
            bn.momentum = momentum
        model.eval()
    return model


def bn_l1_penalty(model: nn.Module) -> Tensor:
    """Sum of ``|gamma|`` over all ``BatchNorm2d`` layers: network slimming's sparsity term.

    Multiplied by a small lambda and added to the loss, its gradient ``lambda * sign(gamma)``
    drags every scale towards 0 at a constant rate; only channels the task really needs
    resist. Measured on the course's VGG over 10 epochs: lambda 1e-4...5e-3 gives no
    sparsity; 2e-2 (SGD, lr 0.1) sends 74% of gammas below 0.01 at 97.5% accuracy (98.0%
    without it), and zeroing the 50% smallest gammas then keeps 94.9% (10% without slimming).
    """
    terms = [m.weight.abs().sum() for m in model.modules()
             if isinstance(m, nn.BatchNorm2d) and m.weight is not None]
    if not terms:
        raise ValueError("bn_l1_penalty: the model has no BatchNorm2d with a learnable scale (affine=True)")
    return torch.stack(terms).sum()

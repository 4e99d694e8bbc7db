"""How big and how fast is a model? Parameters, MACs, bytes and latency.

MACs vs FLOPs: one multiply-accumulate (``a += w * x``) is one MAC and, by the usual
convention, two FLOPs. Papers mix the two; prunekit reports MACs, and
``torch.utils.flop_counter`` reports FLOPs, so ``count_macs = flops // 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, example_input: Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example_input`` (its batch size counts).

    Counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts the matrix-multiply
    work of convolutions and linear layers (``2 * MACs`` FLOPs each) and ignores the cheap
    element-wise ops (BatchNorm, ReLU, adds, pooling) -- the usual convention in pruning papers.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2

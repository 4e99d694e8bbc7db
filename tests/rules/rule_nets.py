"""What the rule tests share: a 1x8x8 input, a head around a block of 8 channels, and the
exactness check with the graph's MAC count compared to torch's flop counter."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engine_nets import cbr
from prunekit.metrics import count_macs
from prunekit.planning import PruneResult
from prunekit.testing import assert_prunes_exactly, randomise

X = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def exact(model: nn.Module, x: Tensor = X, **settings) -> PruneResult:
    """Random weights, then :func:`prunekit.testing.assert_prunes_exactly` (ratio 0.5 unless
    given) -- and the MACs the graph counts for the cut model are torch's own count."""
    torch.manual_seed(0)
    result = assert_prunes_exactly(randomise(model), x, **{"ratio": 0.5, **settings})
    assert result.after["macs"] == count_macs(result.model, x[:1])
    return result


class Head(nn.Module):
    """stem -> body(x) -> global pool -> linear, for blocks that keep 8 channels."""

    def __init__(self, body: nn.Module | None = None, width: int = 8) -> None:
        super().__init__()
        self.stem = cbr(1, width)
        self.body = body if body is not None else nn.Identity()
        self.fc = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


class Lambda(nn.Module):
    """A block whose forward is a plain function of ``x`` (fx traces through it)."""

    def __init__(self, fn, **layers: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, layer in layers.items():
            setattr(self, name, layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self, x)

"""prunekit.graph.rules (``opaque``): an op without a rule is refused where it sees prunable
channels, naming the node -- and accepted where everything it sees is pinned anyway."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from engine_nets import cbr
from prunekit import PruningError
from prunekit.graph import build_graph
from rule_nets import X, Head, exact


class Erfinv(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.erfinv(torch.tanh(x) * 0.5)


def test_an_unknown_op_on_prunable_channels_is_refused_by_name():
    with pytest.raises(PruningError, match="node 'erfinv' = function torch.erfinv: prunekit "
                                           "does not know how this op treats channels"):
        build_graph(Head(Erfinv()), X[:1])


def test_an_unknown_op_on_pinned_channels_is_accepted():
    class Front(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.odd, self.body = Erfinv(), nn.Sequential(cbr(1, 8), cbr(8, 8))
            self.fc = nn.Linear(8, 10)

        def forward(self, x: Tensor) -> Tensor:                # erfinv on the model input
            return self.fc(self.body(self.odd(x)).mean((2, 3)))

    result = exact(Front())
    assert result.model.body[0][0].out_channels == 4

"""Small test-only networks, each exercising one coupling rule of prunekit.graph (or one op it
must refuse). All take 1x8x8 inputs and end in 10 classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def cbr(cin: int, cout: int, groups: int = 1, stride: int = 1, bias: bool = False) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=bias),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TwoBranchConcat(nn.Module):
    """Two branches concatenated on channels (offsets), then BN over the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 8)
        self.left = nn.Conv2d(8, 6, 3, padding=1, bias=True)
        self.right = nn.Conv2d(8, 10, 1, bias=True)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.GELU()
        self.head = nn.Conv2d(16, 12, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.act(self.bn(torch.cat([self.left(x), self.right(x)], dim=1)))
        x = F.relu(self.head(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class FlattenLinear(nn.Module):
    """conv -> pool to 4x4 -> flatten -> MLP: channel c becomes features c*16 .. c*16+15."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(1, 8), nn.MaxPool2d(2), cbr(8, 12))
        self.fc1 = nn.Linear(12 * 4 * 4, 32)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class GroupedConvNet(nn.Module):
    """A grouped conv (groups=4, 1 < groups < channels) and a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 8)
        self.grouped = cbr(8, 16, groups=4, bias=True)
        self.depthwise = cbr(16, 16, groups=16)
        self.pointwise = cbr(16, 12)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pointwise(self.depthwise(self.grouped(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


class OptionAShortcut(nn.Module):
    """A CIFAR ResNet block with the "option A" shortcut: subsample, zero-pad channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 8)
        self.conv1 = cbr(8, 16, stride=2)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4), "constant", 0)
        out = F.relu(self.bn2(self.conv2(self.conv1(x))) + shortcut)
        return self.fc(torch.flatten(self.pool(out), 1))


class _Base(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(1, 8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def head(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))


class RollNet(_Base):
    """torch.roll along channels moves channel c to c+1: not a pass-through."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(torch.roll(self.stem(x), 1, dims=1)))


class ShuffleNet(_Base):
    """ShuffleNet's channel shuffle: view (N, g, C/g, H, W) -> transpose -> view back."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.conv(x))


class SigmoidGate(_Base):
    """A squeeze-and-excitation style gate: x * sigmoid(per-channel weights)."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        gate = torch.sigmoid(x.mean((2, 3), keepdim=True))
        return self.head(self.conv(x * gate))


class SigmoidAct(_Base):
    """nn.Sigmoid between two convs: sigmoid(0) = 0.5, zeroing != removing."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(self.act(self.stem[0](x))))


class BiasShift(_Base):
    """x + 1 between two convs: maps 0 to 1."""

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(self.stem(x) + 1.0))


UNSUPPORTED = {
    RollNet: "roll",
    SigmoidAct: "Sigmoid",
    BiasShift: "add",
}


class FlattenBN1d(nn.Module):
    """flatten (2x2 spatial) -> BatchNorm1d over features -> linear: BN sees feature blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(cbr(1, 6), nn.AdaptiveAvgPool2d(2))
        self.bn = nn.BatchNorm1d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.bn(torch.flatten(self.features(x), 1))))


class HardCodedView(FlattenLinear):
    """Like FlattenLinear, but forward() writes the flattened width as a constant."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).view(-1, 12 * 4 * 4)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class TinyConvNet(nn.Module):
    """conv -> BN -> ReLU -> global pool -> linear, 2 input channels, 4 channels, 3 classes:
    removing channel c == dropping column c of the head (the pool of an all-zero map is 0)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

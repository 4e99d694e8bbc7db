"""Reference architectures used only by the pruning benchmark.

The course's own models (``prunekit.models``) are small on purpose. To compare pruning
tools on the networks papers report, the benchmark also needs three classic ones. They are
assembled from the course's building blocks -- ``SmallVGG``, ``BasicBlock``,
``MobileNetV2Small`` -- so they exercise exactly the coupling patterns the course teaches:

* :func:`vgg16_bn` -- Simonyan & Zisserman (2015), the CIFAR variant used in most channel
  pruning papers (e.g. Li et al., 2017, "Pruning Filters for Efficient ConvNets"): 13
  conv-BN-ReLU layers, 5 max-pools (32x32 -> 1x1), one linear classifier. A plain chain.
* :func:`resnet18` -- He et al. (2016), the ImageNet ResNet-18: 7x7 stem, max-pool, four
  stages of two basic blocks (64-128-256-512), 1x1 projection shortcuts where shapes change.
  Residual adds couple every block of a stage into one channel group.
* :func:`mobilenet_v2` -- Sandler et al. (2018), the ImageNet MobileNetV2 at width 1.0:
  inverted residuals with depthwise convs, whose input and output channels are one set.

Parameter counts match the torchvision models (11,689,512 for ResNet-18 and 3,504,872 for
MobileNetV2; torchvision cannot be imported beside this torch build). One deliberate
difference: MobileNetV2 uses ReLU where the paper uses ReLU6, because the course's
``conv_bn_relu`` does; that changes neither parameters, MACs nor the pruning problem.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from prunekit.models import BasicBlock, MobileNetV2Small, SmallVGG

__all__ = ["vgg16_bn", "ResNet18", "resnet18", "MOBILENET_V2_CONFIG", "mobilenet_v2"]

VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG16_POOL_AFTER = (1, 3, 6, 9, 12)  # indices of the convs followed by a 2x2 max-pool


def vgg16_bn(in_channels: int = 3, num_classes: int = 10) -> SmallVGG:
    """CIFAR VGG-16 with BatchNorm (~14.7M parameters, ~313M MACs at 32x32).

    After five max-pools a 32x32 input is 1x1, so :class:`SmallVGG`'s global average pool
    is a no-op and the classifier is the single ``Linear(512, classes)`` of the CIFAR variant.
    """
    return SmallVGG(in_channels, num_classes, widths=VGG16_WIDTHS, pool_after=VGG16_POOL_AFTER)


class ResNet18(nn.Module):
    """ImageNet ResNet-18 (He et al., 2016), ~1.8G MACs at 224x224."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000,
                 widths: tuple[int, ...] = (64, 128, 256, 512), blocks_per_stage: int = 2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, width in enumerate(widths):
            first_stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(*[
                BasicBlock(prev if j == 0 else width, width, first_stride if j == 0 else 1)
                for j in range(blocks_per_stage)]))
            prev = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> ResNet18:
    return ResNet18(in_channels, num_classes)


#: Table 2 of Sandler et al. (2018): rows (expand t, width c, repeats n, first stride s).
MOBILENET_V2_CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2(in_channels: int = 3, num_classes: int = 1000) -> MobileNetV2Small:
    """ImageNet MobileNetV2 at width 1.0 (~300M MACs at 224x224): the course's
    :class:`~prunekit.models.MobileNetV2Small` with the paper's configuration."""
    return MobileNetV2Small(in_channels, num_classes, stem=32, config=MOBILENET_V2_CONFIG,
                            last=1280, stem_stride=2, dropout=0.2)

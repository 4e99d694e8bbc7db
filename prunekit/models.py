"""The course's model zoo architectures.

Four families, each chosen for what it teaches about channel coupling:

* :class:`SmallVGG` -- a plain chain conv-BN-ReLU. Removing an output channel of one conv
  only touches its BatchNorm and the *input* channels of the next conv (or the classifier).
* :class:`CifarResNet` -- He et al. (2016) CIFAR ResNets of depth 6n+2 (resnet8/20/56) with
  projection shortcuts (1x1 conv + BN, "option B"). Every block of a stage adds its output to
  the stage's running tensor, so all those convs share ONE channel set (a coupled group).
* :class:`MobileNetV2Small` -- Sandler et al. (2018) inverted residuals: 1x1 expand, 3x3
  depthwise (groups == channels, so its input and output channels are the same channels),
  1x1 project, residual add when shapes match.
* :class:`ViTTiny` -- a small Vision Transformer (Dosovitskiy et al., 2021): image patches
  become tokens, and pre-LayerNorm encoder blocks mix them with multi-head self-attention.
  What can be cut there is not a channel but a whole attention *head* and the hidden units
  of each block's MLP; the residual stream that every block reads and writes is normalised
  by LayerNorm and stays as wide as it is.

The three convolutional families accept any ``in_channels`` and input size (28x28 MNIST, 8x8
digits, 32x32 CIFAR) because they end with a global average pool before the linear
classifier. The transformer has one learned position embedding per token, so it is built for
one image size (``image_size``, default 28; :func:`build_model` passes it on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "SmallVGG",
    "CifarResNet",
    "BasicBlock",
    "MobileNetV2Small",
    "InvertedResidual",
    "ViTTiny",
    "EncoderBlock",
    "vgg_small",
    "resnet8",
    "resnet20",
    "resnet56",
    "mobilenetv2_small",
    "vit_tiny",
    "build_model",
    "MODEL_BUILDERS",
    "SIZED_MODELS",
]


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """The workhorse block: convolution (no bias, BN supplies it), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallVGG(nn.Module):
    """A VGG-style chain: conv-BN-ReLU blocks, max-pooling, global average pool, linear.

    ``widths=(32, 64, 128, 128)`` with a 2x2 max-pool after the 2nd and 3rd block gives
    ~240k parameters, about 98% test accuracy on the course's MNIST subset in 10 epochs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: Sequence[int] = (32, 64, 128, 128), pool_after: Sequence[int] = (1, 2)):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            layers.append(conv_bn_relu(prev, width))
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; the sum couples conv2's and the shortcut's
    output channels to the block input's channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            # Projection shortcut (option B): a real layer, so its channels can be cut too.
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (He et al., 2016): a stem, three stages of ``n``
    basic blocks with widths ``16, 32, 64`` (strides 1, 2, 2), global pool and linear."""

    def __init__(self, depth: int = 20, in_channels: int = 1, num_classes: int = 10,
                 widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        n = (depth - 2) // 6
        self.stem = conv_bn_relu(in_channels, widths[0])
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, width in enumerate(widths):
            blocks = [BasicBlock(prev if j == 0 else width, width, (1 if i == 0 else 2) if j == 0 else 1)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            prev = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped when ``expand == 1``), 3x3 depthwise,
    1x1 linear projection; a residual add when stride is 1 and widths match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int):
        super().__init__()
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu(in_ch, hidden, kernel=1))
        layers += [
            conv_bn_relu(hidden, hidden, kernel=3, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Small(nn.Module):
    """A small MobileNetV2 (Sandler et al., 2018) for 8x8 to 32x32 inputs.

    The defaults are the course's small net; the paper's ImageNet network is the same class
    with ``stem=32, last=1280, stem_stride=2, dropout=0.2`` and its Table 2 as ``config``
    (see ``benchmarks/archs.py``).

    ``config`` rows are ``(expand t, width c, repeats n, first stride s)`` as in the paper.
    """

    DEFAULT_CONFIG = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 1))

    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 16,
                 config: Sequence[tuple[int, int, int, int]] = DEFAULT_CONFIG, last: int = 256,
                 stem_stride: int = 1, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(in_channels, stem, stride=stem_stride)]
        prev = stem
        for t, c, n, s in config:
            for j in range(n):
                layers.append(InvertedResidual(prev, c, s if j == 0 else 1, t))
                prev = c
        layers.append(conv_bn_relu(prev, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


class EncoderBlock(nn.Module):
    """One pre-LayerNorm transformer encoder block (the ViT / GPT-2 arrangement)::

        x = x + attn(ln1(x))      # tokens exchange information
        x = x + mlp(ln2(x))       # each token is transformed on its own

    ``attn`` is ``nn.MultiheadAttention`` with ``heads`` heads of ``dim // heads`` features:
    each head projects a token to its own query, key and value, attends over all tokens, and
    the heads' outputs are concatenated and projected back to ``dim``. ``mlp`` is
    Linear(dim -> mlp_hidden) -> GELU -> Linear(mlp_hidden -> dim).

    What pruning can remove: whole heads (their q/k/v rows and the matching columns of the
    output projection) and hidden units of the MLP. What it cannot: the ``dim`` features of
    the residual stream ``x`` -- every block adds into them, and LayerNorm normalises them
    together (dropping one changes the mean and variance of the others).
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.GELU(), nn.Linear(mlp_hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]   # self-attention: q, k, v all from h
        return x + self.mlp(self.ln2(x))


class ViTTiny(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words").

    1. **Patch embedding**: a conv with kernel = stride = ``patch_size`` cuts the image into
       non-overlapping patches and maps each to a ``dim``-vector -- one token per patch
       (28x28 with patch 4: 7x7 = 49 tokens; 8x8 with patch 2: 16 tokens).
    2. A learned **class token** is put in front, and a learned **position embedding** (one
       vector per token position) is added: attention itself ignores order, so this is the
       only place the model learns where a patch was.
    3. ``depth`` :class:`EncoderBlock` s, a final LayerNorm, and a linear **head** on the
       class token, which has gathered what it needs from the patches through attention.

    The defaults (``dim=64``, 4 heads of 16, MLP 128, depth 4) give ~139k parameters
    (a 0.57 MB float32 checkpoint) and 97.4% test accuracy on the course's MNIST subset
    with the zoo's recipe. ``patch_size`` defaults to 4 for images of 16 pixels or more and
    2 below (the 8x8 digits); it must divide ``image_size``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 patch_size: int | None = None, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_hidden: int = 128):
        super().__init__()
        if patch_size is None:
            patch_size = 4 if image_size >= 16 else 2
        if image_size % patch_size != 0:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")
        if dim % heads != 0:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        tokens = (image_size // patch_size) ** 2
        self.image_size, self.patch_size = image_size, patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.empty(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)   # small random: ViT's initialisation
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, mlp_hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)     # (B, dim, h, w) -> (B, tokens, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])                              # the class token's features


def vgg_small(in_channels: int = 1, num_classes: int = 10) -> SmallVGG:
    return SmallVGG(in_channels, num_classes)


def resnet8(in_channels: int = 1, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(8, in_channels, num_classes)


def resnet20(in_channels: int = 1, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, in_channels, num_classes)


def resnet56(in_channels: int = 1, num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, in_channels, num_classes)


def mobilenetv2_small(in_channels: int = 1, num_classes: int = 10) -> MobileNetV2Small:
    return MobileNetV2Small(in_channels, num_classes)


def vit_tiny(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> ViTTiny:
    return ViTTiny(in_channels, num_classes, image_size)


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vgg_small": vgg_small,
    "resnet8": resnet8,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenetv2_small": mobilenetv2_small,
    "vit_tiny": vit_tiny,
}

#: Builders whose architecture depends on the image size (they take ``image_size=``).
SIZED_MODELS = frozenset({"vit_tiny"})


def build_model(name: str, in_channels: int = 1, num_classes: int = 10,
                image_size: int = 28) -> nn.Module:
    """Build an architecture by name (see ``MODEL_BUILDERS``) with fresh random weights.

    ``image_size`` (side of the square input, e.g. ``DatasetSpec.image_size``) matters only
    for the models in ``SIZED_MODELS`` (the transformer's token count); the convolutional
    nets end in a global pool and take any size."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_BUILDERS)}") from None
    if name in SIZED_MODELS:
        return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size)
    return builder(in_channels=in_channels, num_classes=num_classes)

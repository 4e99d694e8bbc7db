"""Tiny test-only classifiers of modern architecture families, for the equivalence tests in
tests/test_equivalence_modern.py.

Every image model takes (N, 3, 16, 16) inputs and ends in 10 logits. Each is a complete
classifier (stem, the family's block(s), global / token pooling, linear head) of a few
thousand parameters, written with ordinary ``nn`` modules and plain ``forward()`` code that
``torch.fx.symbolic_trace`` can trace in eval mode (no Python control flow on tensor values;
widths that must follow pruning are read from the tensor, e.g. ``x.size(1)`` or ``-1``).

The blocks are written from the papers and the common reference implementations (torchvision,
timm, the authors' repositories), not copied.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


INPUT_SHAPE = (3, 16, 16)


# ----------------------------------------------------------------------------------------------
# Shared pieces
# ----------------------------------------------------------------------------------------------

def conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016), per sample: the identity in eval mode (which is
    how the engine traces), otherwise drop the whole residual branch with probability p."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class ConvClassifier(nn.Module):
    """stem -> body -> global average pool -> linear: the frame of every CNN family below."""

    def __init__(self, stem: nn.Module, body: nn.Module, width: int) -> None:
        super().__init__()
        self.stem = stem
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.body(self.stem(x))), 1))


# ----------------------------------------------------------------------------------------------
# 1. Squeeze-and-excitation
# ----------------------------------------------------------------------------------------------

class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., 2018): ``x * gate(fc2(relu(fc1(avgpool(x)))))``
    with 1x1 convs as the two fully connected layers; ``gate`` is a module (nn.Sigmoid in the
    paper, nn.Hardsigmoid in MobileNetV3)."""

    def __init__(self, channels: int, squeeze: int, gate: nn.Module | None = None) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate if gate is not None else nn.Sigmoid()

    def excite(self, x: Tensor) -> Tensor:
        """The per-channel logits fc2(relu(fc1(avgpool(x)))), shape (N, C, 1, 1)."""
        return self.fc2(self.act(self.fc1(self.pool(x))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.excite(x))


class TimmSqueezeExcite(SqueezeExcite):
    """SE with timm's functional hard sigmoid written inline: ``relu6(g + 3) / 6``."""

    def forward(self, x: Tensor) -> Tensor:
        g = self.excite(x)
        return x * (F.relu6(g + 3.0) / 6.0)


class SEBasicBlock(nn.Module):
    """SE-ResNet basic block (Hu et al., 2018): conv-BN-ReLU, conv-BN, SE on the residual
    branch, + identity, ReLU."""

    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c, c, 3)
        self.conv2 = conv_bn(c, c, 3, act=None)
        self.se = SqueezeExcite(c, squeeze, nn.Sigmoid())
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.se(self.conv2(self.conv1(x))))


class SEResNet(ConvClassifier):
    """A one-block SE-ResNet with the paper's sigmoid gate. Gated conv: ``body.conv2``."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2), SEBasicBlock(16, 8), 16)


class InvertedResidualSE(nn.Module):
    """MobileNetV3 bneck (Howard et al., 2019): 1x1 expand-BN-ReLU, depthwise 3x3-BN-ReLU,
    SE on the expanded channels, 1x1 project-BN, + identity."""

    def __init__(self, c: int, expanded: int, se: SqueezeExcite) -> None:
        super().__init__()
        self.expand = conv_bn(c, expanded, 1)
        self.dw = conv_bn(expanded, expanded, 3, groups=expanded)
        self.se = se
        self.project = conv_bn(expanded, c, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.project(self.se(self.dw(self.expand(x))))


class SEMobileNetV3(ConvClassifier):
    """A one-bneck MobileNetV3 with ``nn.Hardsigmoid`` as the SE gate. Gated conv:
    ``body.dw``."""

    def __init__(self) -> None:
        se = SqueezeExcite(32, 8, nn.Hardsigmoid())
        super().__init__(conv_bn(3, 16, 3, stride=2, act=nn.Hardswish),
                         InvertedResidualSE(16, 32, se), 16)


class SETimmHardSigmoid(ConvClassifier):
    """The same bneck with timm's hard sigmoid ``F.relu6(g + 3.0) / 6.0`` written in
    forward(). Gated conv: ``body.dw``."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2, act=nn.Hardswish),
                         InvertedResidualSE(16, 32, TimmSqueezeExcite(32, 8)), 16)


# ----------------------------------------------------------------------------------------------
# 2. EfficientNet MBConv
# ----------------------------------------------------------------------------------------------

class MBConv(nn.Module):
    """EfficientNet's MBConv (Tan & Le, 2019): 1x1 expand-BN-SiLU, depthwise 3x3-BN-SiLU, SE
    (mean-pool, 1x1 reduce, SiLU, 1x1 expand, sigmoid gate; squeeze = in/4), 1x1 project-BN,
    drop path + residual add when the shape allows it."""

    def __init__(self, cin: int, cout: int, expand: int = 2, stride: int = 1) -> None:
        super().__init__()
        mid = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = conv_bn(cin, mid, 1, act=nn.SiLU)
        self.dw = conv_bn(mid, mid, 3, stride, groups=mid, act=nn.SiLU)
        self.se_reduce = nn.Conv2d(mid, max(1, cin // 4), 1)
        self.se_act = nn.SiLU()
        self.se_expand = nn.Conv2d(max(1, cin // 4), mid, 1)
        self.project = conv_bn(mid, cout, 1, act=None)
        self.drop_path = DropPath(0.1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw(self.expand(x))
        s = self.se_expand(self.se_act(self.se_reduce(h.mean((2, 3), keepdim=True))))
        h = self.project(h * torch.sigmoid(s))
        if self.use_residual:
            return x + self.drop_path(h)
        return h


class EfficientNetTiny(ConvClassifier):
    """Stem conv-BN-SiLU, an MBConv with residual (16 -> 16), a strided MBConv (16 -> 24)."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2, act=nn.SiLU),
                         nn.Sequential(MBConv(16, 16), MBConv(16, 24, stride=2)), 24)


# ----------------------------------------------------------------------------------------------
# 3. ResNeXt
# ----------------------------------------------------------------------------------------------

class ResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck (Xie et al., 2017): 1x1-BN-ReLU, grouped 3x3 (cardinality 4)-BN-ReLU,
    1x1-BN, + identity or 1x1 projection shortcut, ReLU."""

    def __init__(self, cin: int, width: int, cout: int, cardinality: int = 4) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, width, 1)
        self.conv2 = conv_bn(width, width, 3, groups=cardinality)
        self.conv3 = conv_bn(width, cout, 1, act=None)
        self.shortcut = conv_bn(cin, cout, 1, act=None) if cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNeXtTiny(ConvClassifier):
    """Two ResNeXt bottlenecks (projection, then identity shortcut); grouped convs are
    ``body.<i>.conv2.0`` with groups=4."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2),
                         nn.Sequential(ResNeXtBottleneck(16, 16, 32),
                                       ResNeXtBottleneck(32, 16, 32)), 32)


# ----------------------------------------------------------------------------------------------
# 4. ShuffleNetV2
# ----------------------------------------------------------------------------------------------

def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: (b, g, c/g, h, w) -> transpose -> (b, c, h, w)."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    x = x.view(b, c, h, w)
    return x


def shuffle_branch(cin: int, c: int, stride: int = 1) -> nn.Sequential:
    """The main branch: 1x1-BN-ReLU, depthwise 3x3-BN, 1x1-BN-ReLU."""
    return nn.Sequential(conv_bn(cin, c, 1), conv_bn(c, c, 3, stride, groups=c, act=None),
                         conv_bn(c, c, 1))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 stride-1 unit (Ma et al., 2018): chunk channels in two, keep the first
    half, run the branch on the second, concatenate, shuffle."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch = shuffle_branch(c // 2, c // 2)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat([x1, self.branch(x2)], 1)
        return channel_shuffle(out, 2)


class ShuffleDownUnit(nn.Module):
    """ShuffleNetV2 stride-2 unit: branch1 = depthwise 3x3 s2-BN, 1x1-BN-ReLU; branch2 = the
    main branch with a strided depthwise conv; concatenate, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.branch1 = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=None),
                                     conv_bn(cin, half, 1))
        self.branch2 = shuffle_branch(cin, half, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat([self.branch1(x), self.branch2(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2Tiny(ConvClassifier):
    """Stem, a stride-2 unit (16 -> 32), a stride-1 unit, 1x1 conv5-BN-ReLU, pool, linear."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2),
                         nn.Sequential(ShuffleDownUnit(16, 32), ShuffleUnit(32),
                                       conv_bn(32, 32, 1)), 32)


# ----------------------------------------------------------------------------------------------
# 5. Res2Net and CSP / YOLOv8 C2f
# ----------------------------------------------------------------------------------------------

class Res2NetBottleneck(nn.Module):
    """Res2Net bottleneck (Gao et al., 2019), 'normal' type: 1x1-BN-ReLU to width*scale,
    split into ``scale`` pieces (split size read from the tensor), hierarchical 3x3-BN-ReLU
    on ``sp = spx[i] (+ previous output)``, concatenate with the last untouched split, 1x1-BN,
    + projection shortcut, ReLU."""

    def __init__(self, cin: int, width: int, cout: int, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.nums = scale - 1
        self.conv1 = conv_bn(cin, width * scale, 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1, bias=False)
                                   for _ in range(self.nums))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        self.relu = nn.ReLU()
        self.conv3 = conv_bn(width * scale, cout, 1, act=None)
        self.shortcut = conv_bn(cin, cout, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        spx = torch.split(out, out.size(1) // self.scale, dim=1)
        for i in range(self.nums):
            sp = spx[i] if i == 0 else sp + spx[i]  # noqa: F821 (bound when i == 0)
            sp = self.relu(self.bns[i](self.convs[i](sp)))
            out = sp if i == 0 else torch.cat((out, sp), 1)
        out = torch.cat((out, spx[self.nums]), 1)
        return self.relu(self.conv3(out) + self.shortcut(x))


class Res2NetTiny(ConvClassifier):
    """Stem, one Res2Net bottleneck (16 -> width 4 x scale 4 -> 32), pool, linear."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2), Res2NetBottleneck(16, 4, 32), 32)


class C2fBottleneck(nn.Module):
    """YOLOv8's Bottleneck inside C2f: 3x3-BN-SiLU, 3x3-BN-SiLU, + identity."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = conv_bn(c, c, 3, act=nn.SiLU)
        self.cv2 = conv_bn(c, c, 3, act=nn.SiLU)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.cv2(self.cv1(x))


class C2f(nn.Module):
    """YOLOv8's C2f (a CSP block, Wang et al. 2020 / Ultralytics): 1x1 cv1 to 2c, chunk in
    two, each bottleneck takes the last piece, concatenate all pieces, 1x1 cv2.
    (``list(proxy.chunk(...))`` is not fx-traceable, so the two halves are unpacked.)"""

    def __init__(self, cin: int, cout: int, c: int, n: int = 2) -> None:
        super().__init__()
        self.cv1 = conv_bn(cin, 2 * c, 1, act=nn.SiLU)
        self.blocks = nn.ModuleList(C2fBottleneck(c) for _ in range(n))
        self.cv2 = conv_bn((2 + n) * c, cout, 1, act=nn.SiLU)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.cv1(x).chunk(2, 1)
        y = [a, b]
        for m in self.blocks:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class C2fNet(ConvClassifier):
    """Stem conv-BN-SiLU, a C2f (16 -> 16, hidden 8, two bottlenecks), pool, linear."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2, act=nn.SiLU), C2f(16, 16, 8), 16)


# ----------------------------------------------------------------------------------------------
# 6. GhostNet
# ----------------------------------------------------------------------------------------------

class GhostModule(nn.Module):
    """Ghost module (Han et al., 2020), ratio 2: primary 1x1-BN-(ReLU) to ceil(oup/2), cheap
    depthwise 3x3-BN-(ReLU) on its output, concatenate, keep the first ``oup`` channels."""

    def __init__(self, inp: int, oup: int, relu: bool = True) -> None:
        super().__init__()
        self.oup = oup
        init = math.ceil(oup / 2)
        act = nn.ReLU if relu else None
        self.primary = conv_bn(inp, init, 1, act=act)
        self.cheap = conv_bn(init, init, 3, groups=init, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary(x)
        x2 = self.cheap(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, :self.oup]


class GhostBottleneck(nn.Module):
    """GhostNet bottleneck, stride 1: Ghost (ReLU) to ``mid``, Ghost (no ReLU) back to c,
    + identity."""

    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.ghost1 = GhostModule(c, mid, relu=True)
        self.ghost2 = GhostModule(mid, c, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ghost2(self.ghost1(x))


class GhostNetTiny(nn.Module):
    """Stem, one Ghost bottleneck, global pool, GhostNet's 1x1 ``conv_head`` + ReLU, linear.
    ``mid`` even (16): ghost1's slice keeps all 16 channels; ``mid`` odd (15): it drops the
    last cheap channel."""

    def __init__(self, mid: int = 16) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, stride=2)
        self.body = GhostBottleneck(16, mid)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(16, 32, 1)
        self.act = nn.ReLU()
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv_head(self.pool(self.body(self.stem(x)))))
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------------------------------------
# 7. ConvNeXt
# ----------------------------------------------------------------------------------------------

class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm as ConvNeXt's stem writes it: permute -> LayerNorm ->
    permute back."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al., 2022): depthwise 3x3 (paper: 7x7) -> channels-last ->
    LayerNorm -> Linear(C, 4C) -> GELU -> Linear(4C, C) -> layer scale -> channels-first ->
    input + drop_path(x)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) * 0.75 + 0.25)   # random, not constant
        self.drop_path = DropPath(0.1)

    def forward(self, x: Tensor) -> Tensor:
        inp = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return inp + self.drop_path(x)


class ConvNeXtTiny(nn.Module):
    """Stem (2x2 stride-2 conv, channels-first LayerNorm), two ConvNeXt blocks at width 16,
    global average pool, LayerNorm, linear head."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 2, 2), LayerNorm2d(dim))
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.head(self.norm(x.mean((-2, -1))))


# ----------------------------------------------------------------------------------------------
# 8./9. Vision transformers
# ----------------------------------------------------------------------------------------------

class Mlp(nn.Module):
    """Transformer MLP: Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SDPAAttention(nn.Module):
    """Hand-written attention, fused qkv + ``F.scaled_dot_product_attention``. The head count
    (-1) and the merged width (-1) are read from the tensor, so heads can be removed."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, -1)
        x = self.proj(x)
        return x


class ManualAttention(nn.Module):
    """Hand-written attention with separate q/k/v projections and an explicit softmax
    (``(q @ k^T) * scale -> softmax -> @ v``); heads split as ``view(B, N, -1, head_dim)``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        q = self.q(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, N, -1, self.head_dim).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class TimmAttention(nn.Module):
    """timm-style attention with the head count and width as constants:
    ``reshape(B, N, 3, self.num_heads, self.head_dim)`` and merge ``reshape(B, N, C)``.
    Its heads cannot change (pinned); the rest of the model can."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class EncoderBlock(nn.Module):
    """Pre-LN transformer encoder block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, dim: int, attn: nn.Module, hidden: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = attn
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def attend(self, h: Tensor) -> Tensor:
        return self.attn(h)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attend(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class MHABlock(EncoderBlock):
    """The encoder block with ``nn.MultiheadAttention(batch_first=True)`` (self-attention)."""

    def attend(self, h: Tensor) -> Tensor:
        return self.attn(h, h, h, need_weights=False)[0]


class TinyViT(nn.Module):
    """ViT (Dosovitskiy et al., 2021): 4x4 patch-embedding conv (16 tokens of width 16),
    class token, learned position embedding, two pre-LN encoder blocks (4 heads of 4, MLP
    hidden 32), final LayerNorm, the class token's features -> linear head.

    ``attention``: "mha" (nn.MultiheadAttention), "sdpa" (:class:`SDPAAttention`), "manual"
    (:class:`ManualAttention`) or "timm" (:class:`TimmAttention`)."""

    ATTENTION: dict[str, Callable[[int, int], nn.Module]] = {
        "mha": lambda dim, heads: nn.MultiheadAttention(dim, heads, batch_first=True),
        "sdpa": SDPAAttention,
        "manual": ManualAttention,
        "timm": TimmAttention,
    }

    def __init__(self, attention: str = "mha", dim: int = 16, heads: int = 4, hidden: int = 32,
                 patch: int = 4, depth: int = 2) -> None:
        super().__init__()
        tokens = (INPUT_SHAPE[1] // patch) * (INPUT_SHAPE[2] // patch)
        block = MHABlock if attention == "mha" else EncoderBlock
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim) * 0.5)
        self.blocks = nn.Sequential(*(block(dim, self.ATTENTION[attention](dim, heads), hidden)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# ----------------------------------------------------------------------------------------------
# Models the engine must still refuse
# ----------------------------------------------------------------------------------------------

class SigmoidBetweenConvs(ConvClassifier):
    """nn.Sigmoid as the activation between two convs (no gate anywhere)."""

    def __init__(self) -> None:
        body = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.Sigmoid(),
                             nn.Conv2d(16, 16, 3, padding=1))
        super().__init__(conv_bn(3, 16, 3, stride=2), body, 16)


class SigmoidActivationNet(ConvClassifier):
    """A legitimate SE gate, then a sigmoid used as an ordinary activation between two convs
    (``body.2``): sigmoid(0) = 0.5, so zeroing a channel is not removing it."""

    def __init__(self) -> None:
        body = nn.Sequential(SqueezeExcite(16, 4), nn.Conv2d(16, 16, 3, padding=1),
                             nn.Sigmoid(), nn.Conv2d(16, 16, 3, padding=1))
        super().__init__(conv_bn(3, 16, 3, stride=2), body, 16)


class RollChannels(nn.Module):
    """``torch.roll`` by one along channels: channel c moves to c + 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.roll(x, 1, dims=1)


class RollNet(ConvClassifier):
    """conv-BN-ReLU -> roll channels -> conv: not a pass-through."""

    def __init__(self) -> None:
        body = nn.Sequential(RollChannels(), conv_bn(16, 16, 3))
        super().__init__(conv_bn(3, 16, 3, stride=2), body, 16)


class _BasicBlock(nn.Module):
    """conv-BN-ReLU, conv-BN, + identity, ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c, c, 3)
        self.conv2 = conv_bn(c, c, 3, act=None)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.conv2(self.conv1(x)))


class ControlResNet(ConvClassifier):
    """A plain ResNet basic block (conv-BN-ReLU, conv-BN, + identity, ReLU) that the engine
    already supports: the control that shows the test harness itself works."""

    def __init__(self) -> None:
        super().__init__(conv_bn(3, 16, 3, stride=2), _BasicBlock(16), 16)

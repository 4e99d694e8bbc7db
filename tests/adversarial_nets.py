"""An adversarial set: small models built from ordinary PyTorch constructs, each one a way a
pruning library can be fooled -- or an ordinary block it must get right.

Every case is a :class:`Case`: a builder, the input it takes and the class of problem it
stands for (``W1`` ... ``W9``, ``crash``, ``mutation``, ``message``, ``refusal`` for what a
library over-refuses, ``ordinary`` for everything else). Most are a :class:`Net`: named layers
and a ``forward`` written as a plain function, so a case is one line or a few.

``benchmarks/adversarial.py`` runs every case under several settings and prints the verdicts;
``tests/test_adversarial.py`` holds one regression test per class and runs the whole set at
one setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize
import torch.nn.utils.prune
from torch import Tensor, nn

C = 8                     # channels of the stem: every body below reads and writes C


def cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    """Layers by name, and ``forward(x) = fn(self, x)`` (fx traces through ``fn``)."""

    def __init__(self, fn: Callable[..., Tensor], **layers: nn.Module) -> None:
        super().__init__()
        for name, layer in layers.items():
            setattr(self, name, layer)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self, x)


def pool_fc(s: nn.Module, y: Tensor) -> Tensor:
    return s.fc(y.mean((2, 3)))


def img(fn: Callable[..., Tensor], width: int = C, **layers: nn.Module) -> Net:
    """stem (3 -> C, conv-BN-ReLU), ``fn``'s body, global pool, Linear(width, 10)."""
    return Net(fn, stem=cbr(3, C), fc=nn.Linear(width, 10), **layers)


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    kind: str = "ordinary"
    shape: tuple[int, ...] = (3, 8, 8)
    dtype: torch.dtype = torch.float32

    def inputs(self, batch: int = 3, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed + 100)
        if self.dtype == torch.long:
            return torch.randint(0, 20, (batch, *self.shape), generator=g)
        return torch.randn(batch, *self.shape, generator=g)


CASES: dict[str, Case] = {}


def case(name: str, kind: str = "ordinary", shape: tuple[int, ...] = (3, 8, 8),
         dtype: torch.dtype = torch.float32) -> Callable:
    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        CASES[name] = Case(build, kind, shape, dtype)
        return build
    return register


def body(name: str, fn: Callable[..., Tensor], kind: str = "ordinary", width: int = C,
         **layers: Callable[[], nn.Module]) -> None:
    """One case: stem -> ``fn(s, stem(x))`` -> pool -> fc (layers are built fresh each time)."""
    CASES[name] = Case(lambda: img(lambda s, x: pool_fc(s, fn(s, s.stem(x))), width,
                                   **{k: make() for k, make in layers.items()}), kind)


def conv(cin: int = C, cout: int = C, k: int = 3, **kw) -> Callable[[], nn.Module]:
    return lambda: nn.Conv2d(cin, cout, k, padding=k // 2, **kw)


def seq(*makers: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    return lambda: nn.Sequential(*[m() for m in makers])


def mod(cls: type, *args, **kw) -> Callable[[], nn.Module]:
    return lambda: cls(*args, **kw)


# ==============================================================================================
# Ordinary blocks: every library should prune these exactly (or refuse them honestly)
# ==============================================================================================

body("chain", lambda s, x: s.b(s.a(x)), a=mod(cbr, C, C), b=mod(cbr, C, C))
body("residual_add", lambda s, x: F.relu(s.b(s.a(x)) + x), a=mod(cbr, C, C), b=conv())
body("residual_projection", lambda s, x: s.b(s.a(x)) + s.p(x), width=12,
     a=mod(cbr, C, 12), b=conv(12, 12), p=conv(C, 12, 1))
body("two_residuals", lambda s, x: s.d(s.c(s.b(s.a(x)) + x)) + x,
     a=mod(cbr, C, C), b=conv(), c=mod(cbr, C, C), d=conv())
body("concat_branches", lambda s, x: torch.cat([s.a(x), s.b(x)], 1), width=12,
     a=conv(C, 4), b=conv(C, 8, 1))
body("dense_concat", lambda s, x: torch.cat([x, s.a(x)], dim=1), width=12, a=mod(cbr, C, 4))
body("concat_then_conv", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1)),
     a=conv(), b=conv(), c=conv(16, C, 1))
body("concat_three", lambda s, x: torch.cat([s.a(x), s.b(x), s.c(x)], 1), width=12,
     a=conv(C, 4, 1), b=conv(C, 4), c=conv(C, 4, 5))
body("depthwise_separable", lambda s, x: s.pw(s.dw(x)), dw=mod(cbr, C, C, groups=C),
     pw=mod(cbr, C, C, 1))
body("depthwise_multiplier", lambda s, x: s.pw(s.dw(x)), dw=conv(C, 2 * C, groups=C),
     pw=conv(2 * C, C, 1))
body("grouped_conv", lambda s, x: s.b(s.a(x)), a=conv(C, C, groups=2), b=conv(C, C, groups=4))
body("grouped_after_conv", lambda s, x: s.b(s.a(x)), a=mod(cbr, C, C), b=conv(C, C, groups=2))
body("mobilenet_block", lambda s, x: s.proj(s.dw(s.exp(x))) + x,
     exp=mod(cbr, C, 16, 1), dw=mod(cbr, 16, 16, groups=16), proj=conv(16, C, 1))
body("se_sigmoid", lambda s, x: s.c(x) * torch.sigmoid(s.f2(F.relu(s.f1(x.mean((2, 3), keepdim=True))))),
     c=conv(), f1=conv(C, 4, 1), f2=conv(4, C, 1))
body("se_hardsigmoid", lambda s, x: s.c(x) * F.hardsigmoid(s.f2(F.relu(s.f1(F.adaptive_avg_pool2d(x, 1))))),
     c=conv(), f1=conv(C, 4, 1), f2=conv(4, C, 1))
body("se_linear", lambda s, x: s.c(x) * torch.sigmoid(s.l2(F.relu(s.l1(x.mean((2, 3))))))[:, :, None, None],
     c=conv(), l1=mod(nn.Linear, C, 4), l2=mod(nn.Linear, 4, C))
body("cbam_channel", lambda s, x: s.c(x) * torch.sigmoid(
    s.mlp(F.adaptive_avg_pool2d(x, 1)) + s.mlp(F.adaptive_max_pool2d(x, 1))),
    c=conv(), mlp=seq(conv(C, 4, 1), nn.ReLU, conv(4, C, 1)))
body("cbam_spatial", lambda s, x: s.c(x) * torch.sigmoid(s.sp(torch.cat(
    [x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1))), c=conv(), sp=conv(2, 1, 7))
body("maxpool_module", lambda s, x: s.b(s.p(s.a(x))), a=conv(), p=mod(nn.MaxPool2d, 2),
     b=conv())
body("avgpool_function", lambda s, x: s.b(F.avg_pool2d(s.a(x), 2)), a=conv(), b=conv())
body("adaptive_maxpool", lambda s, x: s.b(s.p(s.a(x))), a=conv(), p=mod(nn.AdaptiveMaxPool2d, 2),
     b=conv())
body("upsample", lambda s, x: s.b(s.u(s.a(x))), a=conv(), u=mod(nn.Upsample, scale_factor=2),
     b=conv())
body("interpolate_bilinear", lambda s, x: s.b(F.interpolate(s.a(x), scale_factor=2,
                                                             mode="bilinear")), a=conv(), b=conv())
body("dropout2d", lambda s, x: s.b(s.d(s.a(x))), a=conv(), d=mod(nn.Dropout2d, 0.3), b=conv())
for _act in ("LeakyReLU", "GELU", "SiLU", "Hardswish", "ELU", "Mish", "Tanh", "ReLU6",
             "Softsign", "Hardshrink"):
    body(f"act_{_act.lower()}", lambda s, x: s.b(s.act(s.a(x))), a=conv(),
         act=mod(getattr(nn, _act)), b=conv())
body("act_softplus", lambda s, x: s.b(F.softplus(s.a(x))), a=conv(), b=conv())
body("act_sigmoid_between", lambda s, x: s.b(torch.sigmoid(s.a(x))), a=conv(), b=conv())
body("prelu_shared", lambda s, x: s.b(s.act(s.a(x))), a=conv(), act=mod(nn.PReLU), b=conv())
body("prelu_per_channel", lambda s, x: s.b(s.act(s.a(x))), a=conv(), act=mod(nn.PReLU, C), b=conv())
body("instancenorm_affine", lambda s, x: s.b(F.relu(s.n(s.a(x)))), a=conv(),
     n=mod(nn.InstanceNorm2d, C, affine=True), b=conv())
body("instancenorm_plain", lambda s, x: s.b(F.relu(s.n(s.a(x)))), a=conv(),
     n=mod(nn.InstanceNorm2d, C), b=conv())
body("groupnorm_two_groups", lambda s, x: s.b(F.relu(s.n(s.a(x)))), a=conv(),
     n=mod(nn.GroupNorm, 2, C), b=conv())
body("shuffle_view", lambda s, x: s.b(s.a(x).view(x.size(0), 2, C // 2, 8, 8).transpose(1, 2)
                                      .reshape(x.size(0), C, 8, 8)), a=conv(), b=conv())
body("shuffle_module", lambda s, x: s.b(s.sh(s.a(x))), a=conv(), sh=mod(nn.ChannelShuffle, 2),
     b=conv())
body("chunk_swap", lambda s, x: torch.cat(x.chunk(2, 1)[::-1], 1))
body("chunk_then_cat", lambda s, x: (lambda p: torch.cat([p[1], p[0] * 2], 1))(s.a(x).chunk(2, 1)),
     a=conv())
body("split_equal", lambda s, x: (lambda p: torch.cat([s.b(p[0]), p[1]], 1))(
    torch.split(s.a(x), C // 2, dim=1)), a=conv(), b=conv(C // 2, C // 2))
body("split_sizes_list", lambda s, x: (lambda p: torch.cat([p[1], p[0]], 1))(
    torch.split(s.a(x), [3, 5], dim=1)), a=conv())
body("slice_first_half", lambda s, x: s.b(s.a(x)[:, :4]), a=conv(), b=conv(4, C))
body("slice_last_four", lambda s, x: s.b(s.a(x)[:, -4:]), a=conv(), b=conv(4, C))
body("slice_step_two", lambda s, x: s.b(s.a(x)[:, ::2]), a=conv(), b=conv(4, C))
body("slice_of_concat_tail", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1)[:, -4:]),
     a=conv(), b=conv(C, 4), c=conv(4, C))
body("slice_of_concat_head", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1)[:, :C]),
     a=conv(), b=conv(C, 4), c=conv())
body("flip_channels", lambda s, x: s.b(s.a(x).flip(1)), a=conv(), b=conv())
body("scale_by_two", lambda s, x: s.b(2 * s.a(x) - s.a(x) / 2), a=conv(), b=conv())
body("sub_two_convs", lambda s, x: s.a(x) - s.b(x), a=conv(), b=conv())
body("mul_two_convs", lambda s, x: s.a(x) * s.b(x), a=conv(), b=conv())
body("torch_add_alpha", lambda s, x: torch.add(s.a(x), s.b(x), alpha=2), a=conv(), b=conv())
body("maximum_of_two", lambda s, x: torch.maximum(s.a(x), s.b(x)), a=conv(), b=conv())
body("abs_square", lambda s, x: s.b(torch.square(s.a(x).abs())), a=conv(), b=conv())
body("pow_three", lambda s, x: s.b(s.a(x) ** 3), a=conv(), b=conv())
body("clamp_zero_one", lambda s, x: s.b(s.a(x).clamp(-1, 1)), a=conv(), b=conv())
body("clamp_min_positive", lambda s, x: s.b(s.a(x).clamp(min=0.1)), a=conv(), b=conv())
body("hardtanh_module", lambda s, x: s.b(s.h(s.a(x))), a=conv(), h=mod(nn.Hardtanh), b=conv())
body("contiguous_clone", lambda s, x: s.b(s.a(x).contiguous().clone().float()), a=conv(),
     b=conv())
body("amax_pool", lambda s, x: s.a(x).amax((2, 3), keepdim=True).expand_as(x) * s.b(x),
     a=conv(), b=conv())
body("sum_channels_gate", lambda s, x: x * s.a(x).sum(1, keepdim=True), a=conv())
body("mean_channels_gate", lambda s, x: x * s.a(x).mean(1, keepdim=True), a=conv())
body("max_over_channels", lambda s, x: s.a(x) * s.a(x).max(1, keepdim=True)[0], a=conv())
body("softmax_spatial", lambda s, x: s.a(x) * s.a(x).flatten(2).softmax(-1).view_as(x), a=conv())
body("softmax_channels", lambda s, x: s.b(torch.softmax(s.a(x), 1)), a=conv(), b=conv())
body("normalize_channels", lambda s, x: s.b(F.normalize(s.a(x), dim=1)), a=conv(), b=conv())
body("where_positive", lambda s, x: torch.where(s.a(x) > 0, s.a(x), torch.zeros_like(x)),
     a=conv())
body("einsum_mix", lambda s, x: torch.einsum("nchw,dc->ndhw", s.a(x), s.w), a=conv(),
     w=lambda: nn.Parameter(torch.randn(C, C)))
body("gram_matrix", lambda s, x: (lambda f: (f @ f.transpose(1, 2)).unsqueeze(-1))(
    s.a(x).flatten(2)), a=conv())
body("stack_sum", lambda s, x: torch.stack([s.a(x), s.b(x)], 0).sum(0), a=conv(), b=conv())
body("unsqueeze_squeeze", lambda s, x: s.b(s.a(x).unsqueeze(2).squeeze(2)), a=conv(), b=conv())
body("expand_gate", lambda s, x: s.a(x) * s.g(x.mean((2, 3))).view(-1, C, 1, 1).expand_as(x),
     a=conv(), g=mod(nn.Linear, C, C))
body("layer_scale", lambda s, x: x + s.a(x) * s.gamma.view(1, -1, 1, 1), a=conv(),
     gamma=lambda: nn.Parameter(torch.rand(C) + 0.5))
body("bias_param_add", lambda s, x: s.b(F.relu(s.a(x) + s.shift)), a=conv(),
     shift=lambda: nn.Parameter(torch.randn(1, C, 1, 1)), b=conv())
body("sequential_nested", lambda s, x: s.seq(x),
     seq=lambda: nn.Sequential(nn.Sequential(cbr(C, C)), nn.Sequential(cbr(C, C), nn.Identity())))
body("module_list", lambda s, x: s.ml[1](s.ml[0](x)), ml=lambda: nn.ModuleList([cbr(C, C), cbr(C, C)]))
body("module_dict", lambda s, x: s.md["b"](s.md["a"](x)),
     md=lambda: nn.ModuleDict({"a": cbr(C, C), "b": cbr(C, C)}))
body("fire_module", lambda s, x: torch.cat([F.relu(s.e1(s.sq(x))), F.relu(s.e3(s.sq(x)))], 1),
     width=16, sq=conv(C, 4, 1), e1=conv(4, C, 1), e3=conv(4, C))
body("inception_pool_branch", lambda s, x: torch.cat([s.a(x), s.b(F.max_pool2d(x, 3, 1, 1))], 1),
     width=12, a=conv(C, 6), b=conv(C, 6, 1))
body("bias_free_chain", lambda s, x: s.b(F.relu(s.a(x))), a=conv(bias=False), b=conv(bias=False))
body("stride_two", lambda s, x: s.b(F.relu(s.a(x))), a=conv(C, C, 3, stride=2), b=conv())
body("dilated", lambda s, x: s.b(F.relu(s.a(x))), a=lambda: nn.Conv2d(C, C, 3, padding=2, dilation=2),
     b=conv())
body("channels_last_linear", lambda s, x: s.l2(F.gelu(s.l1(s.a(x).permute(0, 2, 3, 1)))).permute(0, 3, 1, 2),
     a=conv(), l1=mod(nn.Linear, C, 16), l2=mod(nn.Linear, 16, C))
body("convnext_block", lambda s, x: x + s.l2(F.gelu(s.l1(s.ln(s.dw(x).permute(0, 2, 3, 1))))).permute(0, 3, 1, 2),
     dw=conv(C, C, 7, groups=C), ln=mod(nn.LayerNorm, C), l1=mod(nn.Linear, C, 16), l2=mod(nn.Linear, 16, C))
body("bottleneck", lambda s, x: F.relu(s.c(s.b(s.a(x))) + x), a=mod(cbr, C, 4, 1), b=mod(cbr, 4, 4),
     c=seq(conv(4, C, 1), mod(nn.BatchNorm2d, C)))
body("hard_swish_gate_by_hand", lambda s, x: s.c(x) * (F.relu6(s.g(x.mean((2, 3), keepdim=True)) + 3) / 6),
     c=conv(), g=conv(C, C, 1))
body("drop_path_eval", lambda s, x: x + s.a(x) * (torch.rand(x.shape[0], 1, 1, 1) < 2).float()
     if s.training else x + s.a(x), a=mod(cbr, C, C))
body("if_training_branch", lambda s, x: s.a(x) if s.training else s.a(x) * 1.0, a=conv())
body("reflect_pad_function", lambda s, x: s.b(F.pad(s.a(x), (1, 1, 1, 1), mode="reflect")),
     a=conv(), b=lambda: nn.Conv2d(C, C, 3))
body("zero_pad_function", lambda s, x: s.b(F.pad(s.a(x), (1, 1, 1, 1))), a=conv(),
     b=lambda: nn.Conv2d(C, C, 3))
body("option_a_pad_channels", lambda s, x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2)), width=12)
body("cat_along_batch", lambda s, x: (lambda t: t[: x.size(0)] * t[x.size(0):])(
    torch.cat([s.a(x), s.b(x)], 0)), a=conv(), b=conv())
body("roll_spatial", lambda s, x: s.b(torch.roll(s.a(x), 1, dims=2)), a=conv(), b=conv())
body("roll_channels", lambda s, x: s.b(torch.roll(s.a(x), 1, dims=1)), a=conv(), b=conv())
body("glu_channels", lambda s, x: F.glu(s.a(x), 1), width=C // 2, a=conv())
body("chunk_three_unequal", lambda s, x: torch.cat(s.a(x).chunk(3, 1)[::-1], 1), a=conv())
body("conv_bias_only_linear_head", lambda s, x: s.a(x), a=conv(C, C, 1))


@case("flatten_linear")
def _flatten_linear() -> nn.Module:
    return Net(lambda s, x: s.fc2(F.relu(s.fc1(torch.flatten(s.pool(s.stem(x)), 1)))),
               stem=cbr(3, C), pool=nn.AdaptiveAvgPool2d(2), fc1=nn.Linear(4 * C, 16),
               fc2=nn.Linear(16, 10))


@case("view_minus_one")
def _view_minus_one() -> nn.Module:
    return Net(lambda s, x: s.fc(F.max_pool2d(s.stem(x), 4).view(x.size(0), -1)),
               stem=cbr(3, C), fc=nn.Linear(4 * C, 10))


@case("view_constant_width")
def _view_constant() -> nn.Module:
    return Net(lambda s, x: s.fc(F.max_pool2d(s.stem(x), 4).view(-1, 4 * C)),
               stem=cbr(3, C), fc=nn.Linear(4 * C, 10))


@case("flatten_bn1d")
def _flatten_bn1d() -> nn.Module:
    return Net(lambda s, x: s.fc(F.relu(s.bn(torch.flatten(F.avg_pool2d(s.stem(x), 4), 1)))),
               stem=cbr(3, C), bn=nn.BatchNorm1d(4 * C), fc=nn.Linear(4 * C, 10))


@case("mlp_only", shape=(12,))
def _mlp() -> nn.Module:
    return Net(lambda s, x: s.c(F.relu(s.b(F.relu(s.a(x))))), a=nn.Linear(12, 16),
               b=nn.Linear(16, 16), c=nn.Linear(16, 10))


@case("mlp_dropout_bn1d", shape=(12,))
def _mlp_bn() -> nn.Module:
    return Net(lambda s, x: s.c(s.d(F.relu(s.bn(s.a(x))))), a=nn.Linear(12, 16),
               bn=nn.BatchNorm1d(16), d=nn.Dropout(0.1), c=nn.Linear(16, 10))


@case("conv1d_net", shape=(3, 16))
def _conv1d() -> nn.Module:
    return Net(lambda s, x: s.fc(s.b(F.relu(s.bn(s.a(x)))).mean(-1)), a=nn.Conv1d(3, C, 3, padding=1),
               bn=nn.BatchNorm1d(C), b=nn.Conv1d(C, C, 3, padding=1), fc=nn.Linear(C, 10))


@case("conv1d_pool_upsample", shape=(3, 16))
def _conv1d_pool() -> nn.Module:
    return Net(lambda s, x: s.fc(s.b(F.interpolate(F.max_pool1d(F.relu(s.a(x)), 2), scale_factor=2)).mean(-1)),
               a=nn.Conv1d(3, C, 3, padding=1), b=nn.Conv1d(C, C, 3, padding=1), fc=nn.Linear(C, 10))


@case("conv3d_net", shape=(2, 4, 4, 4))
def _conv3d() -> nn.Module:
    return Net(lambda s, x: s.fc(s.b(F.relu(s.a(x))).mean((2, 3, 4))),
               a=nn.Conv3d(2, C, 3, padding=1), b=nn.Conv3d(C, C, 1), fc=nn.Linear(C, 10))


# -- tokens: (batch, tokens, features) -----------------------------------------------------------

def tok(fn: Callable[..., Tensor], **layers: nn.Module) -> Net:
    """(B, 6, 8) tokens -> ``fn`` -> mean over tokens -> Linear(8, 10)."""
    return Net(lambda s, x: s.head(fn(s, x).mean(1)), head=nn.Linear(8, 10), **layers)


def tokens(name: str, fn: Callable[..., Tensor], kind: str = "ordinary",
           **layers: Callable[[], nn.Module]) -> None:
    CASES[name] = Case(lambda: tok(fn, **{k: make() for k, make in layers.items()}), kind, (6, 8))


tokens("token_mlp", lambda s, x: s.b(F.gelu(s.a(x))), "refusal", a=mod(nn.Linear, 8, 16),
       b=mod(nn.Linear, 16, 8))
tokens("token_mlp_residual_ln", lambda s, x: x + s.b(F.gelu(s.a(s.ln(x)))), "refusal",
       ln=mod(nn.LayerNorm, 8), a=mod(nn.Linear, 8, 16), b=mod(nn.Linear, 16, 8))
tokens("token_swiglu", lambda s, x: s.down(F.silu(s.gate(x)) * s.up(x)), "refusal",
       gate=mod(nn.Linear, 8, 16), up=mod(nn.Linear, 8, 16), down=mod(nn.Linear, 16, 8))
tokens("token_mha", lambda s, x: s.attn(s.inp(x), s.inp(x), s.inp(x), need_weights=False)[0],
       inp=mod(nn.Linear, 8, 8), attn=mod(nn.MultiheadAttention, 8, 2, batch_first=True))
tokens("token_mixer", lambda s, x: s.tm(s.inp(x).transpose(1, 2)).transpose(1, 2),
       inp=mod(nn.Linear, 8, 8), tm=mod(nn.Linear, 6, 6))
tokens("token_conv1d", lambda s, x: s.c(s.inp(x).transpose(1, 2)).transpose(1, 2),
       inp=mod(nn.Linear, 8, 8), c=lambda: nn.Conv1d(8, 8, 3, padding=1))


class Attention(nn.Module):
    """Hand-written multi-head attention: qkv -> heads -> sdpa -> proj (head count as -1)."""

    def __init__(self, dim: int = 8, head_dim: int = 2, manual: bool = False) -> None:
        super().__init__()
        self.qkv, self.proj, self.head_dim, self.manual = (nn.Linear(dim, 3 * dim),
                                                           nn.Linear(dim, dim), head_dim, manual)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.manual:
            out = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class LlamaBlock(nn.Module):
    """RMSNorm, RoPE (rotate half), grouped-query attention (4 query heads, 2 kv heads), SwiGLU."""

    def __init__(self, dim: int = 8, hidden: int = 16) -> None:
        super().__init__()
        self.n1, self.n2 = RMSNorm(dim), RMSNorm(dim)
        self.q, self.k, self.v = nn.Linear(dim, dim, bias=False), nn.Linear(dim, 4, bias=False), \
            nn.Linear(dim, 4, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)
        self.gate, self.up = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        angle = torch.arange(6)[:, None] * torch.tensor([1.0])
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)

    def rope(self, t: Tensor) -> Tensor:
        a, b = t[..., :1], t[..., 1:]
        return t * self.cos + torch.cat([-b, a], -1) * self.sin

    def forward(self, x: Tensor) -> Tensor:
        bsz, n, _ = x.shape
        h = self.n1(x)
        q = self.rope(self.q(h).view(bsz, n, -1, 2).transpose(1, 2))
        k = self.rope(self.k(h).view(bsz, n, -1, 2).transpose(1, 2))
        v = self.v(h).view(bsz, n, -1, 2).transpose(1, 2)
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(bsz, n, -1))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


tokens("token_sdpa_attention", lambda s, x: s.attn(s.inp(x)), inp=mod(nn.Linear, 8, 8),
       attn=mod(Attention))
tokens("token_manual_attention", lambda s, x: s.attn(s.inp(x)), inp=mod(nn.Linear, 8, 8),
       attn=mod(Attention, manual=True))
tokens("token_llama_block", lambda s, x: s.blk(x), blk=mod(LlamaBlock))
tokens("token_llama_block_after_linear", lambda s, x: s.blk(s.inp(x)), inp=mod(nn.Linear, 8, 8),
       blk=mod(LlamaBlock))


class ViTTokens(nn.Module):
    """patch conv -> class token + position embedding -> encoder layer -> class token."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1) + self.pos
        return self.fc(self.enc(t)[:, 0])


CASES["vit_encoder_layer"] = Case(ViTTokens)


@case("embedding_linear", shape=(6,), dtype=torch.long)
def _embedding() -> nn.Module:
    return Net(lambda s, x: s.fc(F.relu(s.l(s.emb(x))).mean(1)), emb=nn.Embedding(20, 8),
               l=nn.Linear(8, 16), fc=nn.Linear(16, 10))


@case("lstm_linear", shape=(6, 4))
def _lstm() -> nn.Module:
    return Net(lambda s, x: s.fc(F.relu(s.l(s.rnn(x)[0][:, -1]))), rnn=nn.LSTM(4, 8, batch_first=True),
               l=nn.Linear(8, 16), fc=nn.Linear(16, 10))


@case("gru_linear", shape=(6, 4))
def _gru() -> nn.Module:
    return Net(lambda s, x: s.fc(F.relu(s.l(s.rnn(x)[0].mean(1)))), rnn=nn.GRU(4, 8, batch_first=True),
               l=nn.Linear(8, 16), fc=nn.Linear(16, 10))


# -- what libraries tend to over-refuse ----------------------------------------------------------
body("conv_transpose", lambda s, x: s.b(F.relu(s.t(s.a(x)))), "refusal", a=conv(),
     t=lambda: nn.ConvTranspose2d(C, C, 2, stride=2), b=conv())
body("conv_transpose_grouped", lambda s, x: s.b(F.relu(s.t(s.a(x)))), "ordinary", a=conv(),
     t=lambda: nn.ConvTranspose2d(C, C, 3, padding=1, groups=2), b=conv())
body("pixel_shuffle", lambda s, x: s.b(s.ps(s.a(x))), "refusal", a=conv(C, 4 * C), ps=mod(nn.PixelShuffle, 2),
     b=conv())
body("pixel_unshuffle", lambda s, x: s.b(s.pu(s.a(x))), "refusal", a=conv(), pu=mod(nn.PixelUnshuffle, 2),
     b=conv(4 * C, C))
body("zero_pad_module", lambda s, x: s.b(s.p(s.a(x))), "refusal", a=conv(), p=mod(nn.ZeroPad2d, 1),
     b=lambda: nn.Conv2d(C, C, 3))
body("reflection_pad_module", lambda s, x: s.b(s.p(s.a(x))), "refusal", a=conv(),
     p=mod(nn.ReflectionPad2d, 1), b=lambda: nn.Conv2d(C, C, 3))
body("replication_pad_module", lambda s, x: s.b(s.p(s.a(x))), "refusal", a=conv(),
     p=mod(nn.ReplicationPad2d, 1), b=lambda: nn.Conv2d(C, C, 3))
body("constant_pad_one", lambda s, x: s.b(s.p(s.a(x))), "ordinary", a=conv(),
     p=mod(nn.ConstantPad2d, 1, 1.0), b=lambda: nn.Conv2d(C, C, 3))
body("instance_norm_function", lambda s, x: s.b(F.relu(F.instance_norm(s.a(x)))), "refusal",
     a=conv(), b=conv())
body("repeat_interleave", lambda s, x: s.b(s.a(x).repeat_interleave(2, dim=1)), "refusal",
     a=conv(), b=conv(2 * C, C))
body("tensor_split", lambda s, x: (lambda p: torch.cat([p[1], s.b(p[0])], 1))(
    torch.tensor_split(s.a(x), 2, dim=1)), "refusal", a=conv(), b=conv(C // 2, C // 2))
body("groupnorm_per_channel", lambda s, x: s.b(F.relu(s.n(s.a(x)))), "refusal", a=conv(),
     n=mod(nn.GroupNorm, C, C), b=conv())


# ==============================================================================================
# W1: a size read at run time and used as a number
# ==============================================================================================

body("w1_mean_by_shape", lambda s, x: s.a(x) * (s.a(x).sum(1, keepdim=True) / s.a(x).shape[1]),
     "W1", a=conv())
body("w1_divide_by_out_channels", lambda s, x: s.a(x) / s.a.out_channels, "W1", a=conv())
body("w1_branch_on_width", lambda s, x: s.a(x) * 2 if s.a.out_channels == C else s.a(x), "W1",
     a=conv())
body("w1_times_size", lambda s, x: s.b(s.a(x) * s.a(x).size(1)), "W1", a=conv(), b=conv())
body("w1_numel_mean", lambda s, x: s.a(x) - s.a(x).sum() / s.a(x).numel(), "W1", a=conv())
body("w1_sqrt_width", lambda s, x: s.a(x) / math.sqrt(s.a(x).shape[1]), "W1", a=conv())
body("w1_spatial_mean_by_shape", lambda s, x: s.a(x) * (s.a(x).sum((2, 3), keepdim=True) /
                                                        (x.shape[2] * x.shape[3])), "W1", a=conv())
body("w1_full_of_width", lambda s, x: s.a(x) + x.new_full((1, 1, 1, 1), s.a(x).shape[1]), "W1",
     a=conv())


# ==============================================================================================
# W2: a statistic of a parameter that is cut
# ==============================================================================================

body("w2_param_mean", lambda s, x: s.a(x) * s.g.view(1, -1, 1, 1) / s.g.mean(), "W2", a=conv(),
     g=lambda: nn.Parameter(torch.rand(C) + 0.5))
body("w2_weight_abs_mean", lambda s, x: s.b(s.a(x)) * s.a.weight.abs().mean(), "W2", a=conv(),
     b=conv())
body("w2_weight_norm", lambda s, x: s.b(s.a(x)) / s.a.weight.norm(), "W2", a=conv(), b=conv())
body("w2_bn_gamma_sum", lambda s, x: s.bn(s.a(x)) * s.bn.weight.sum(), "W2", a=conv(),
     bn=mod(nn.BatchNorm2d, C))
body("w2_param_max", lambda s, x: s.a(x) * s.g.view(1, -1, 1, 1) / s.g.max(), "W2", a=conv(),
     g=lambda: nn.Parameter(torch.rand(C) + 0.5))
body("w2_bias_softmax", lambda s, x: s.b(s.a(x)) * s.a.bias.softmax(0).sum(), "W2", a=conv(),
     b=conv())


# ==============================================================================================
# W3: one parameter cut by two groups; W4: tied weights
# ==============================================================================================

body("w3_foreign_bias", lambda s, x: s.c2(s.c1(x)) * s.c1.bias.view(1, -1, 1, 1), "W3",
     c1=conv(), c2=conv())
body("w3_foreign_bias_add", lambda s, x: s.c2(x) + s.c1.bias.view(1, -1, 1, 1) + s.c1(x) * 0.5,
     "W3", c1=conv(), c2=conv())
body("w3_scale_shared_by_two_streams", lambda s, x: s.c(s.a(x) * s.g.view(1, -1, 1, 1)) +
     s.b(x) * s.g.view(1, -1, 1, 1), "W3", a=conv(), b=conv(), c=conv(),
     g=lambda: nn.Parameter(torch.rand(C) + 0.5))


def _tied(share: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = img(lambda s, x: pool_fc(s, s.c2(F.relu(s.c1(s.stem(x))))), c1=conv()(), c2=conv()())
        setattr(net.c2, share, getattr(net.c1, share))
        return net
    return build


CASES["w4_tied_weight"] = Case(_tied("weight"), "W4")
CASES["w4_tied_bias"] = Case(_tied("bias"), "W4")


@case("w4_tied_linear", "W4", shape=(8,))
def _tied_linear() -> nn.Module:
    net = Net(lambda s, x: s.fc(F.relu(s.b(F.relu(s.a(x))))), a=nn.Linear(8, 8), b=nn.Linear(8, 8),
              fc=nn.Linear(8, 10))
    net.b.weight = net.a.weight
    return net


@case("w4_same_module_twice", "W4")
def _same_module() -> nn.Module:
    shared = conv()()
    return img(lambda s, x: pool_fc(s, s.b(F.relu(s.a(s.stem(x))))), a=shared, b=shared)


@case("w4_shared_storage", "W4")
def _shared_storage() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, s.c2(F.relu(s.c1(s.stem(x))))), c1=conv()(), c2=conv()())
    net.c2.weight = nn.Parameter(net.c1.weight.data)        # another Parameter, same storage
    return net


# ==============================================================================================
# W5: hooks and parametrizations
# ==============================================================================================

def _hooked(attach: Callable[[nn.Module], object]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        net = img(lambda s, x: pool_fc(s, s.c2(F.relu(s.c1(s.stem(x))))), c1=conv()(), c2=conv()())
        attach(net)
        return net
    return build


CASES["w5_forward_hook_plus_one"] = Case(_hooked(
    lambda n: n.c1.register_forward_hook(lambda m, i, o: o + 1)), "W5")
CASES["w5_forward_pre_hook"] = Case(_hooked(
    lambda n: n.c2.register_forward_pre_hook(lambda m, i: (i[0] * 2,))), "W5")
CASES["w5_weight_norm_old"] = Case(_hooked(lambda n: nn.utils.weight_norm(n.c1)), "W5")
CASES["w5_weight_norm_parametrization"] = Case(_hooked(
    lambda n: nn.utils.parametrizations.weight_norm(n.c1)), "W5")
CASES["w5_spectral_norm_old"] = Case(_hooked(lambda n: nn.utils.spectral_norm(n.c1)), "W5")
CASES["w5_spectral_norm_parametrization"] = Case(_hooked(
    lambda n: nn.utils.parametrizations.spectral_norm(n.c1)), "W5")
CASES["w5_torch_prune_mask"] = Case(_hooked(
    lambda n: nn.utils.prune.l1_unstructured(n.c1, "weight", 0.3)), "W5")


class _Positive(nn.Module):
    def forward(self, w: Tensor) -> Tensor:
        return w.abs()


CASES["w5_custom_parametrization"] = Case(_hooked(
    lambda n: nn.utils.parametrize.register_parametrization(n.c1, "weight", _Positive())), "W5")
CASES["w5_model_forward_hook"] = Case(_hooked(
    lambda n: n.register_forward_hook(lambda m, i, o: o * 2)), "W5")


# ==============================================================================================
# W6: in-place ops on a tensor that something else reads
# ==============================================================================================

def _add_one_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    y.add_(1)
    return s.c2(y)


def _sigmoid_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    y.sigmoid_()
    return s.c2(y)


def _view_add_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    y.view(-1).add_(1)
    return s.c2(y)


def _iadd_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    z = y
    z += 1
    return s.c2(y)


def _relu_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    F.relu(y, inplace=True)
    return s.c2(y)


def _residual_iadd(s: nn.Module, x: Tensor) -> Tensor:
    out = s.c2(F.relu(s.c1(x)))
    out += x
    return F.relu(out)


def _clamp_in_place(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    y.clamp_(min=0.1)
    return s.c2(y)


def _fill_view(s: nn.Module, x: Tensor) -> Tensor:
    y = s.c1(x)
    y.select(1, 0).fill_(1.0)
    return s.c2(y)


for _name, _fn, _kind in [("w6_add_in_place", _add_one_in_place, "W6"),
                          ("w6_sigmoid_in_place", _sigmoid_in_place, "W6"),
                          ("w6_view_add_in_place", _view_add_in_place, "W6"),
                          ("w6_iadd_alias", _iadd_in_place, "W6"),
                          ("w6_clamp_in_place", _clamp_in_place, "W6"),
                          ("w6_fill_view", _fill_view, "W6"),
                          ("relu_in_place_function", _relu_in_place, "ordinary"),
                          ("residual_iadd", _residual_iadd, "ordinary")]:
    body(_name, _fn, _kind, c1=conv(), c2=conv())


# ==============================================================================================
# W7: a constant moved with .to(y) / .type_as(y); W8: narrow with a negative start
# ==============================================================================================

body("w7_to_like", lambda s, x: s.b(s.a(x) + torch.ones(1, 1, 1, 1).to(s.a(x))), "W7", a=conv(),
     b=conv())
body("w7_type_as", lambda s, x: s.b(s.a(x) + torch.ones(1, C, 1, 1).type_as(s.a(x))), "W7",
     a=conv(), b=conv())
body("w7_to_like_times", lambda s, x: s.b(s.a(x) * 2 + torch.full((1, C, 1, 1), 0.5).to(x)), "W7",
     a=conv(), b=conv())
body("w7_ones_of_shape_to", lambda s, x: s.b(s.a(x) + torch.ones(s.a(x).shape).to(s.a(x))), "W7",
     a=conv(), b=conv())
body("w7_ones_of_size_type_as", lambda s, x: s.b(s.a(x) * 2 + torch.ones(x.size()).type_as(
    s.a(x))), "W7", a=conv(), b=conv())
body("w7_zeros_like_plus", lambda s, x: s.b(s.a(x) + torch.zeros_like(x) + 1), "W7", a=conv(),
     b=conv())
body("w8_narrow_negative", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1).narrow(1, -4, 4)),
     "W8", a=conv(), b=conv(C, 4), c=conv(4, C))
body("w8_narrow_negative_single", lambda s, x: s.c(s.a(x).narrow(1, -4, 4)), "W8", a=conv(),
     c=conv(4, C))
body("w8_select_negative", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1).select(1, -1)
                                            .unsqueeze(1)), "W8", a=conv(), b=conv(C, 4),
     c=conv(1, C))
body("w8_narrow_positive", lambda s, x: s.c(torch.cat([s.a(x), s.b(x)], 1).narrow(1, 2, 4)),
     "W8", a=conv(), b=conv(C, 4), c=conv(4, C))


# ==============================================================================================
# W9: division by a per-channel parameter
# ==============================================================================================

body("w9_divide_by_param", lambda s, x: s.b(s.a(x) / s.g.view(1, -1, 1, 1)), "W9", a=conv(),
     g=lambda: nn.Parameter(torch.rand(C) + 0.5), b=conv())
body("w9_divide_by_bn_gamma", lambda s, x: s.b(s.a(x) / s.s.view(1, -1, 1, 1) * 2), "W9",
     a=conv(), s=lambda: nn.Parameter(torch.rand(C) + 1), b=conv())
body("w9_divide_param_times_param", lambda s, x: s.b(s.a(x) * s.m.view(1, -1, 1, 1) /
                                                     s.d.view(1, -1, 1, 1)), "W9", a=conv(),
     m=lambda: nn.Parameter(torch.rand(C)), d=lambda: nn.Parameter(torch.rand(C) + 1), b=conv())


# ==============================================================================================
# Crashes after accepting
# ==============================================================================================

@case("crash_squeeze_all", "crash")
def _squeeze_all() -> nn.Module:
    return Net(lambda s, x: s.fc(s.b(F.relu(s.a(s.stem(x)))).mean((2, 3), keepdim=True).squeeze()),
               stem=cbr(3, C), a=nn.Conv2d(C, 2, 1), b=nn.Conv2d(2, 2, 1), fc=nn.Linear(2, 10))


@case("crash_squeeze_channel_dim", "crash")
def _squeeze_channel() -> nn.Module:
    return Net(lambda s, x: s.fc(s.a(s.stem(x)).mean((2, 3)).squeeze(1)),
               stem=cbr(3, 2), a=nn.Conv2d(2, 2, 1), fc=nn.Linear(2, 10))


@case("crash_foreign_functional_bias", "crash")
def _foreign_bias() -> nn.Module:
    return Net(lambda s, x: s.fc(F.relu(F.linear(s.stem(x).mean((2, 3)), s.l1.weight, s.b1))),
               stem=cbr(3, C), l1=nn.Linear(C, 16), b1=nn.Parameter(torch.randn(16)),
               fc=nn.Linear(16, 10))


@case("crash_functional_conv_other_bias", "crash")
def _foreign_conv_bias() -> nn.Module:
    return Net(lambda s, x: pool_fc(s, F.conv2d(s.stem(x), s.a.weight, s.b.bias, padding=1)),
               stem=cbr(3, C), a=nn.Conv2d(C, C, 3), b=nn.Conv2d(C, C, 3), fc=nn.Linear(C, 10))


class _PlainTensorScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 1), nn.Linear(C, 10)
        self.scale = torch.rand(1, C, 1, 1) + 0.5          # a plain attribute, not a buffer

    def forward(self, x: Tensor) -> Tensor:
        return pool_fc(self, F.relu(self.a(self.stem(x))) * self.scale)


class _LazyConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 1), nn.Linear(C, 10)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.a(self.stem(x)))
        offsets = torch.arange(y.shape[1], dtype=y.dtype).view(1, -1, 1, 1)   # built in forward
        return pool_fc(self, y + offsets)


CASES["crash_plain_tensor_attribute"] = Case(_PlainTensorScale, "crash")
CASES["crash_constant_built_in_forward"] = Case(_LazyConstant, "crash")


@case("crash_module_registered_twice", "crash")
def _registered_twice() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, s.alias(F.relu(s.a(s.stem(x))))), a=conv()(), b=conv()())
    net.alias = net.b
    return net


@case("crash_buffer_constant", "crash")
def _buffer_constant() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, F.relu(s.a(s.stem(x))) * s.mask), a=conv()())
    net.register_buffer("mask", (torch.arange(C) % 2).float().view(1, -1, 1, 1) + 0.5)
    return net


# ==============================================================================================
# Mutation of the caller's model
# ==============================================================================================

class _Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 3, padding=1), nn.Linear(C, 10)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return pool_fc(self, self.a(self.stem(x)))


class _Remembers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 3, padding=1), nn.Linear(C, 10)
        self.last = None

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(self.stem(x))
        self.last = y
        return pool_fc(self, y)


class _BatchStats(nn.Module):
    """F.batch_norm with batch statistics that also updates the running ones."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 3, padding=1), nn.Linear(C, 10)
        self.bn = nn.BatchNorm2d(C)

    def forward(self, x: Tensor) -> Tensor:
        y = self.a(self.stem(x))
        y = F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                         True, 0.1, 1e-5)
        return pool_fc(self, F.relu(y))


class _SwitchesMode(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), nn.Conv2d(C, C, 3, padding=1), nn.Linear(C, 10)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls = self.calls + 1
        return pool_fc(self, self.a(self.stem(x)))


class _TrainModeNet(nn.Module):
    """A model handed over in train mode: BatchNorm must stay in train mode, stats untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.fc = cbr(3, C), cbr(C, C), nn.Linear(C, 10)

    def forward(self, x: Tensor) -> Tensor:
        return pool_fc(self, self.a(self.stem(x)))


CASES["mutation_buffer_counter"] = Case(_Counter, "mutation")
CASES["mutation_remembers_activation"] = Case(_Remembers, "mutation")
CASES["mutation_batch_stats_function"] = Case(_BatchStats, "mutation")
CASES["mutation_python_counter"] = Case(_SwitchesMode, "mutation")
CASES["mutation_train_mode_model"] = Case(lambda: _TrainModeNet().train(), "mutation")


# ==============================================================================================
# Refusals that used to blame the wrong thing
# ==============================================================================================

@case("message_clamp_min_buffer", "message")
def _clamp_buffer() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, s.b(s.a(s.stem(x)).clamp(min=s.low))), a=conv()(), b=conv()())
    net.register_buffer("low", torch.full((1, C, 1, 1), -0.5))
    return net


body("message_maxpool_indices", lambda s, x: s.b(s.p(s.a(x))[0]), "message", a=conv(),
     p=lambda: nn.MaxPool2d(2, return_indices=True), b=conv())
body("message_functional_maxpool_indices", lambda s, x: s.b(
    F.max_pool2d(s.a(x), 2, return_indices=True)[0]), "message", a=conv(), b=conv())
body("message_cat_reversed_chunks", lambda s, x: s.b(torch.cat(s.a(x).chunk(2, 1)[::-1], 1)),
     "message", a=conv(), b=conv())
body("message_var_positional_unbiased", lambda s, x: s.a(x) * s.a(x).var((2, 3), True)[:, :, None, None],
     "message", a=conv())
body("message_std_positional", lambda s, x: s.a(x) / (torch.std(s.a(x), (2, 3), True, True) + 1),
     "message", a=conv())


@case("message_batch_norm_batch_stats", "message")
def _bn_batch_stats() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, F.relu(F.batch_norm(s.a(s.stem(x)), None, None, s.g, s.b,
                                                          True))), a=conv()())
    net.g, net.b = nn.Parameter(torch.rand(C) + 0.5), nn.Parameter(torch.randn(C))
    return net


# ==============================================================================================
# A second round, written after the fixes: channel positions, sizes and parameters used in
# other ways, layers reused, weights read twice. Each is exact or refused by name.
# ==============================================================================================

body("index_times_channel", lambda s, x: s.b(s.a(x) * torch.arange(
    C, dtype=x.dtype).view(1, -1, 1, 1)), a=conv(), b=conv())
body("index_of_run_time_width", lambda s, x: (lambda y: s.b(y * torch.arange(
    y.shape[1], dtype=y.dtype).view(1, -1, 1, 1)))(s.a(x)), "W1", a=conv(), b=conv())
body("width_to_a_power", lambda s, x: (lambda y: s.b(y * y.shape[1] ** -0.5))(s.a(x)), "W1",
     a=conv(), b=conv())
body("fan_in_of_the_next_layer", lambda s, x: s.b(s.a(x) / s.b.weight.shape[1] ** 0.5), "W1",
     a=conv(), b=conv())
body("strided_channel_slice", lambda s, x: s.b(s.a(x)[:, ::2]), a=conv(), b=conv(C // 2, C))
body("channel_index_list", lambda s, x: s.b(s.a(x)[:, [0, 3, 5, 6]]), a=conv(), b=conv(4, C))
body("channel_slice_from_one", lambda s, x: s.b(s.a(x)[:, 1:]), a=conv(), b=conv(C - 1, C))
body("split_unequal", lambda s, x: (lambda p: torch.cat([s.b(p[0]), s.c(p[1])], 1))(
    s.a(x).split([3, 5], 1)), width=2 * C, a=conv(), b=conv(3, C), c=conv(5, C))
body("unflatten_then_sum", lambda s, x: s.b(s.a(x).unflatten(1, (2, C // 2)).sum(1)),
     a=conv(), b=conv(C // 2, C))
body("stack_on_the_channel_axis", lambda s, x: (lambda y: s.b(torch.stack([y, -y], 1).flatten(
    1, 2)))(s.a(x)), a=conv(), b=conv(2 * C, C))
body("repeat_channels", lambda s, x: s.b(s.a(x).repeat(1, 2, 1, 1)), a=conv(), b=conv(2 * C, C))
body("cumsum_over_channels", lambda s, x: s.b(s.a(x).cumsum(1)), a=conv(), b=conv())
body("channel_sum_added_back", lambda s, x: (lambda y: s.b(y + y.sum(1, keepdim=True)))(
    s.a(x)), a=conv(), b=conv())
body("sort_over_channels", lambda s, x: s.b(s.a(x).sort(1).values), a=conv(), b=conv())
body("layer_norm_channels_first", lambda s, x: (lambda y: s.b(
    (y - y.mean(1, keepdim=True)) / (y.var(1, keepdim=True) + 1e-6).sqrt()))(s.a(x)),
    a=conv(), b=conv())
body("prefix_of_a_longer_parameter", lambda s, x: (lambda y: s.b(
    y * s.g[: y.shape[1]].view(1, -1, 1, 1)))(s.a(x)), "W2", a=conv(), b=conv(),
    g=lambda: nn.Parameter(torch.rand(2 * C) + 0.5))
body("own_bias_added_again", lambda s, x: s.b(s.a(x) + s.a.bias.view(1, -1, 1, 1)), "W3",
     a=conv(), b=conv())
body("sum_of_the_next_weight", lambda s, x: s.b(s.a(x) * s.b.weight.sum()), "W2", a=conv(),
     b=conv())
body("weight_read_by_layer_and_function", lambda s, x: s.b(F.relu(s.a(x)) + F.conv2d(
    x, s.a.weight, padding=1)), "W4", a=conv(), b=conv())
body("same_conv_twice", lambda s, x: s.a(F.relu(s.a(x))), "W4", a=conv())
body("block_in_a_loop", lambda s, x: (lambda y: y + s.blk(y + s.blk(y + s.blk(y))))(x), "W4",
     blk=seq(conv(), lambda: nn.BatchNorm2d(C), nn.ReLU, conv()))
body("channel_pad_into_a_conv", lambda s, x: s.b(F.pad(s.a(x), (0, 0, 0, 0, 1, 1))), "refusal",
     a=conv(), b=conv(C + 2, C))
def _heads_from_width(s: nn.Module, x: Tensor) -> Tensor:
    """Two attention heads over pixels, the head size read from the run-time width."""
    y = s.qkv(x)
    q, k, v = y.view(y.shape[0], 3, 2, y.shape[1] // 6, -1).unbind(1)
    a = torch.softmax(q.transpose(-1, -2) @ k / (y.shape[1] // 6) ** 0.5, -1)
    return s.proj((v @ a.transpose(-1, -2)).reshape(x.shape))


body("heads_from_run_time_width", _heads_from_width, qkv=conv(C, 3 * C, 1), proj=conv(C, C, 1))


@case("channel_mask_buffer")
def _channel_mask() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, s.b(s.a(s.stem(x)).masked_fill(s.off, 0.0))),
              a=conv()(), b=conv()())
    net.register_buffer("off", torch.tensor([0, 1, 0, 0, 1, 0, 0, 0]).bool().view(1, -1, 1, 1))
    return net


@case("per_channel_buffer_indexed")
def _scale_buffer() -> nn.Module:
    net = img(lambda s, x: pool_fc(s, s.b(s.a(s.stem(x)) * s.scale[None, :, None, None])),
              a=conv()(), b=conv()())
    net.register_buffer("scale", torch.rand(C) + 0.5)
    return net


def _lm(tie: Callable[[nn.Module, Tensor], Tensor]) -> Callable[[], nn.Module]:
    """Embedding -> residual MLP -> a head tied to the embedding (``tie``) -> Linear(20, 10)."""
    def build() -> nn.Module:
        return Net(lambda s, x: (lambda h: s.out(tie(s, h + s.down(F.relu(s.up(h)))).mean(1)))(
            s.emb(x)), emb=nn.Embedding(20, 16), up=nn.Linear(16, 32), down=nn.Linear(32, 16),
            out=nn.Linear(20, 10))
    return build


CASES["lm_head_is_embedding_transposed"] = Case(_lm(lambda s, h: h @ s.emb.weight.t()), "W4",
                                                (6,), torch.long)
CASES["lm_head_by_f_linear"] = Case(_lm(lambda s, h: F.linear(h, s.emb.weight)), "W4", (6,),
                                    torch.long)


def builds() -> dict[str, Callable[[], tuple[nn.Module, Tensor]]]:
    """For :func:`prunekit.testing.sweep`: name -> () -> (model, inputs of batch 3)."""
    return {name: (lambda c=c: (c.build(), c.inputs())) for name, c in CASES.items()}

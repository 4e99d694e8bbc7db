"""Folding BatchNorm into the convolution before it: the same function with one layer fewer.

At inference a BatchNorm no longer normalises anything: it applies fixed numbers, the running
mean ``mu`` and variance ``var`` it measured during training, channel by channel::

    BN(z)[c] = gamma[c] * (z[c] - mu[c]) / sqrt(var[c] + eps) + beta[c]
             = s[c] * z[c] + (beta[c] - s[c] * mu[c]),        s = gamma / sqrt(var + eps)

and the convolution before it is linear in its weights: ``z[c] = W[c] * x + b[c]``. So::

    BN(conv(x))[c] = (s[c] W[c]) * x + s[c] (b[c] - mu[c]) + beta[c]

-- one convolution with every filter scaled by ``s[c]`` and a new bias. The folded model
computes the same function (up to float rounding) with one layer fewer per conv: one less
pass over every activation tensor, which at batch 1 is a real share of the time (lecture 08
measures it). Deployment tools do this on their own (ONNX Runtime's graph optimiser, and
``torch.compile`` fuses BN into the next kernel); folding by hand makes it visible and
works for every runtime. Paper: Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference" (CVPR 2018), section 3.2, folds BN the same
way before quantising.

Only a BatchNorm that reads a conv's output *alone* can be folded: if the conv's output is
also used elsewhere (a residual branch that reads it before the BN), scaling the filters
would change that use too. :func:`foldable_pairs` finds the pairs with ``torch.fx``; folding
is exact and needs the BN's running statistics (a BN with ``track_running_stats=False``
normalises with each batch's own statistics, which no fixed weight can express).

After pruning: fold *after* cutting channels and fine-tuning (a folded model has no BN left to
recalibrate, no gamma to score for network slimming, and trains differently).
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from .graph import trace
from .surgery import replace_modules

__all__ = ["fold_conv_bn", "foldable_pairs", "fold_batchnorm"]


def _scale_and_shift(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``s`` and ``beta - s * mu`` of the BN's inference map, computed in float64 so that the
    folded weights are rounded once, to the model's dtype, at the very end."""
    var, mu = bn.running_var.double(), bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - scale * mu


@torch.no_grad()
def fold_conv_bn(conv: _ConvNd, bn: _BatchNorm) -> _ConvNd:
    """A new convolution that computes ``bn(conv(x))`` of the BN in eval mode.

    Same class, device and dtype as ``conv``, always with a bias; ``conv`` and ``bn`` are
    not changed. Works for grouped and depthwise convolutions (every output channel has its
    own filter row) of any dimension."""
    if isinstance(conv, nn.modules.conv._ConvTransposeNd) or not isinstance(conv, _ConvNd):
        raise TypeError(f"fold_conv_bn needs a (non-transposed) convolution, got {type(conv).__name__}")
    if not isinstance(bn, _BatchNorm) or bn.running_mean is None or bn.running_var is None:
        raise TypeError(f"fold_conv_bn needs a BatchNorm with running statistics, got {bn!r}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"the BatchNorm has {bn.num_features} channels, the conv produces "
                         f"{conv.out_channels}")
    scale, shift = _scale_and_shift(bn)
    weight = conv.weight.double() * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(weight.to(conv.weight.dtype), conv.weight.requires_grad)
    folded.bias = nn.Parameter((scale * bias + shift).to(conv.weight.dtype), conv.weight.requires_grad)
    return folded


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``[(conv name, bn name), ...]``: every BatchNorm whose only input is a convolution's
    output that nothing else reads, found by tracing ``model`` with ``torch.fx``."""
    gm = trace(model)
    modules = dict(gm.named_modules())
    # a layer called twice (shared weights) cannot be folded for one of its calls only
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv, bn = modules[source.target], modules[node.target]
        if isinstance(conv, _ConvNd) and not isinstance(conv, nn.modules.conv._ConvTransposeNd) \
                and len(source.users) == 1 and bn.track_running_stats \
                and bn.running_mean is not None and bn.num_features == conv.out_channels \
                and calls[source.target] == calls[node.target] == 1:
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` (or a copy) with every foldable BatchNorm folded into its convolution and
    replaced by ``nn.Identity``; returned in eval mode, for inference only.

    The folded model computes what ``model.eval()`` computes, to float rounding (the tests
    check 1e-5 on every model of the zoo, dense and pruned). BatchNorms that cannot be folded
    (see :func:`foldable_pairs`) stay. ``model`` itself is untouched unless ``inplace``."""
    new: dict[str, nn.Module] = {}
    for conv_name, bn_name in foldable_pairs(model):
        new[conv_name] = fold_conv_bn(model.get_submodule(conv_name), model.get_submodule(bn_name))
        new[bn_name] = nn.Identity()
    # the same layer swap as pruning's: a copy that never copies the layers being replaced
    return replace_modules(model, new, inplace).eval()

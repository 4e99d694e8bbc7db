"""The table of layer kinds: everything prunekit needs to know about one kind of layer.

A rule that meets a layer with weights records it under a *kind* (``tr.kinds[name] =
"conv"``) and which channel sits at each position of its dims (``"out"``, ``"in"``,
``"heads"``). Everything after the trace reads the kind from this one table:

============  =======================  ===============================  ==================
kind          dims -> role in a group  cut by                           zeroed for a
                                                                        removed channel
============  =======================  ===============================  ==================
conv, gconv   out -> out, in -> in     :func:`~prunekit.cuts.prune_conv`  weight rows, bias
dwconv        out -> dw                ``prune_conv(depthwise=True)``   weight rows, bias
convT         out -> out, in -> in     ``prune_conv_transpose``         weight dim 1, bias
linear        out -> out, in -> in     ``prune_linear``                 weight rows, bias
bn            out -> bn                ``prune_batchnorm``              gamma, beta (or the
                                                                        running mean)
mha           in -> in, heads -> heads ``prune_attention``              q, k, v rows
mha_out       out -> out               (cut with its ``mha``)           weight rows, bias
linear_t      out -> out, in -> in     ``prune_linear_t`` (GPT-2's      weight dim 1, bias
                                       ``Conv1D``: weight ``(in, out)``)
embedding     out -> out               ``prune_embedding`` (columns)    weight dim 1
norm          out -> norm              ``prune_norm`` (LayerNorm /      gamma, beta (only
                                       RMSNorm; only when asked for an  cut approximately)
                                       approximate cut: Minitron)
============  =======================  ===============================  ==================

The roles are what a group lists (:data:`prunekit.graph.model.ROLE_TEXT`); the cut is what
surgery calls; the zeroed tensors are what :meth:`Plan.mask` and the oracle zero; ``rows``
gives a criterion one row of weights per output channel; ``per_channel`` names the layer's own
tensors that run along its output channels (so a use of ``conv.bias`` elsewhere is cut with
the conv); ``permutable`` kinds can be reordered by :func:`prunekit.sparsity.permute_channels`.
Adding a kind is one entry here and one rule that records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from ..cuts import (prune_attention, prune_batchnorm, prune_conv, prune_conv_transpose,
                    prune_embedding, prune_linear, prune_linear_t, prune_norm)
from ..modules import PrunedMultiheadAttention

__all__ = ["LayerKind", "KINDS", "kind_of", "weight_rows"]

Keep = Mapping[str, "Tensor | None"]       # dim -> positions to keep (None: all)


@dataclass(frozen=True)
class LayerKind:
    """How prunekit treats one kind of layer (see the module doc)."""

    name: str
    roles: Mapping[str, str]
    cut: Callable[[nn.Module, Keep], nn.Module] | None
    zeroed: Callable[[nn.Module], tuple[tuple[str, int], ...]]
    rows: Callable[[nn.Module], Tensor] | None = None
    per_channel: tuple[str, ...] = ()
    permutable: bool = False


def weight_rows(layer: nn.Module, weight: Tensor | None = None) -> Tensor:
    """A weight-shaped tensor (the layer's own by default) as one row per output channel:
    conv ``(out, in/g, kh, kw) -> (out, in/g*kh*kw)``; a ConvTranspose's weight is
    ``(in, out/g, kh, kw)``, its dim 1 the rows; attention: the packed q/k/v rows."""
    if weight is None:
        weight = layer.in_proj_weight if isinstance(layer, nn.MultiheadAttention) \
            else layer.weight
    if (getattr(layer, "transposed", False) or _stored_transposed(layer)) and weight.dim() > 1:
        weight = weight.transpose(0, 1)
    return weight.flatten(1)


def _stored_transposed(layer: nn.Module) -> bool:
    """A table or weight whose *columns* are the output channels: an embedding's, and GPT-2's
    ``Conv1D`` (``weight[in, out]``)."""
    return isinstance(layer, nn.Embedding) or _is_conv1d(layer)


def _is_conv1d(layer: nn.Module) -> bool:
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")


def _rows_and_bias(_: nn.Module) -> tuple[tuple[str, int], ...]:
    return (("weight", 0), ("bias", 0))


def _norm_zeroed(layer: nn.Module) -> tuple[tuple[str, int], ...]:
    """gamma and beta; without them the running mean, so (x - mean) maps 0 to 0."""
    if getattr(layer, "weight", None) is None:
        return (("running_mean", 0),)
    return (("weight", 0), ("bias", 0))


def _cut_conv(layer: nn.Module, keep: Keep) -> nn.Module:
    return prune_conv(layer, keep.get("out"), keep.get("in"))


def _cut_dwconv(layer: nn.Module, keep: Keep) -> nn.Module:
    return prune_conv(layer, keep.get("out"), None, depthwise=True)


def _cut_attention(layer: nn.Module, keep: Keep) -> nn.Module:
    return prune_attention(layer, keep.get("in"), keep.get("heads"), keep.get("out"))


_CONV = dict(roles={"out": "out", "in": "in"}, cut=_cut_conv, zeroed=_rows_and_bias,
             rows=weight_rows, per_channel=("weight", "bias"))

KINDS: dict[str, LayerKind] = {k.name: k for k in [
    LayerKind("conv", **_CONV, permutable=True),
    LayerKind("gconv", **_CONV),
    LayerKind("dwconv", {"out": "dw"}, _cut_dwconv, _rows_and_bias, weight_rows,
              ("weight", "bias")),
    LayerKind("convT", {"out": "out", "in": "in"},
              lambda m, k: prune_conv_transpose(m, k.get("out"), k.get("in")),
              lambda m: (("weight", 1), ("bias", 0)), weight_rows, ("bias",)),
    LayerKind("linear", {"out": "out", "in": "in"},
              lambda m, k: prune_linear(m, k.get("out"), k.get("in")), _rows_and_bias,
              weight_rows, ("weight", "bias"), permutable=True),
    LayerKind("bn", {"out": "bn"}, lambda m, k: prune_batchnorm(m, k["out"]), _norm_zeroed,
              None, ("weight", "bias", "running_mean", "running_var"), permutable=True),
    LayerKind("mha", {"in": "in", "heads": "heads"}, _cut_attention,
              lambda m: (("in_proj_weight", 0), ("in_proj_bias", 0)), weight_rows),
    LayerKind("mha_out", {"out": "out"}, None, _rows_and_bias),
    LayerKind("linear_t", {"out": "out", "in": "in"},
              lambda m, k: prune_linear_t(m, k.get("out"), k.get("in")),
              lambda m: (("weight", 1), ("bias", 0)), weight_rows, ("bias",)),
    LayerKind("embedding", {"out": "out"}, lambda m, k: prune_embedding(m, k.get("out")),
              lambda m: (("weight", 1),), weight_rows),
    LayerKind("norm", {"out": "norm"}, lambda m, k: prune_norm(m, k.get("out")),
              lambda m: (("weight", 0), ("bias", 0)), None, ("weight", "bias")),
]}


def kind_of(layer: nn.Module) -> LayerKind | None:
    """The kind a layer has wherever it stands (what a per-layer criterion needs to know):
    conv (transposed or not), linear, a per-channel norm, attention; None for anything else."""
    if isinstance(layer, nn.modules.conv._ConvNd):
        return KINDS["convT" if layer.transposed else "conv"]
    if isinstance(layer, nn.Linear):
        return KINDS["linear"]
    if _is_conv1d(layer):
        return KINDS["linear_t"]
    if isinstance(layer, nn.Embedding):
        return KINDS["embedding"]
    if isinstance(layer, (nn.MultiheadAttention, PrunedMultiheadAttention)):
        return KINDS["mha"]
    if isinstance(layer, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
        return KINDS["bn"]
    return None

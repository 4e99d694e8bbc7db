"""Hugging Face ``transformers`` models: what their Python code and config must say after a cut.

The graph (:mod:`prunekit.graph`, through the ``torch.export`` front-end) finds the channels
of a language model exactly as for any model: whole attention heads (a key/value head with
its group of query heads under grouped-query attention), the neurons of each MLP (SwiGLU:
row ``j`` of ``gate_proj`` and ``up_proj`` with column ``j`` of ``down_proj``), and the
residual stream, which every RMSNorm / LayerNorm normalises as a whole (pinned). Cutting the
layers is not all, though: a Hugging Face model also keeps widths as *numbers*

* in its attention modules (``num_heads``, ``num_key_value_heads``, ``all_head_size``, GPT-2's
  ``split_size``, which ``forward`` uses to split its fused q/k/v projection), and
* in ``model.config`` (``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``
  / ``n_inner``), which ``generate()``, ``save_pretrained`` and a reload read.

:func:`updates` computes the new numbers from the cut layers; surgery sets them on the new
model (never on yours, unless ``inplace=True``), and the check against the zero-masked model
runs with them. ``model.config`` must stay *true*: one config describes every layer, so the
layers must keep equal numbers of heads and of MLP neurons (``scope="local"`` does that), and
the config must be able to say "fewer heads of the same size" -- LLaMA, Qwen2, Mistral and
most recent models read ``config.head_dim``; GPT-2 and BERT derive the head size from
``hidden_size / num_attention_heads``, so there heads are pinned (:func:`pin_heads`), with the
reason in ``print(result.groups)``, and only the MLPs are cut.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import PruningError
from .graph.preflight import is_hf_config

__all__ = ["is_hf_model", "updates", "pin_heads", "Updates", "attention_modules"]

#: Children of an attention module that project q (and k, v), by family; a fused projection
#: (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``) holds q, k and v rows one after another.
_Q = ("q_proj", "query", "q")
_K = ("k_proj", "key", "k")
_FUSED = ("c_attn", "qkv_proj", "query_key_value", "Wqkv")
#: Attention-module attributes that hold the number of (query) heads, of key/value heads,
#: and widths of all heads together.
_HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
_INNER = ("all_head_size", "split_size", "inner_dim")
#: Names of the modules that hold a transformer layer's MLP.
_MLP = ("mlp", "intermediate", "feed_forward", "ffn", "fc1", "fc2")
#: Config fields that hold the MLP width (GPT-2's ``n_inner`` may be None: 4 x hidden).
_MLP_KEYS = ("intermediate_size", "ffn_dim", "d_ff", "n_inner")


def is_hf_model(model: nn.Module) -> bool:
    return is_hf_config(getattr(model, "config", None))


def _head_size(m: nn.Module) -> int | None:
    for name in ("head_dim", "attention_head_size", "head_size"):
        value = getattr(m, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own q/k/v projections and a head size: ``{path: module}``."""
    found = {}
    for path, m in model.named_modules():
        if _head_size(m) is None:
            continue
        children = dict(m.named_children())
        if any(n in children for n in (*_Q, *_FUSED)):
            found[path] = m
    return found


def _config_describes_heads(attention: nn.Module) -> bool:
    """Does this attention class take its head size from ``config.head_dim`` (so a config
    with fewer heads of the same size describes the cut model)? Read from its source."""
    try:
        source = inspect.getsource(type(attention))
    except (OSError, TypeError):
        return False
    return "config.head_dim" in source or '"head_dim"' in source


def pin_heads(model: nn.Module, graph: Any) -> None:
    """Pin the attention-head groups of a Hugging Face model whose config cannot describe
    fewer heads (see the module doc), naming the attention class and the config."""
    if not is_hf_model(model):
        return
    config = type(model.config).__name__
    for path, m in attention_modules(model).items():
        if _config_describes_heads(m):
            continue
        inside = [c for c, _ in m.named_children()]
        for g in graph.groups:
            if g.pinned is None and any(mem.module in {f"{path}.{c}" for c in inside} and
                                        mem.role == "out" for mem in g.members):
                g.pinned = (f"attention heads of {type(m).__name__} '{path}': {config} derives "
                            "the head size from hidden_size / num_attention_heads, so a config "
                            "with fewer heads would describe another model (only its MLP is cut)")


@dataclass
class Updates:
    """Numbers to set after a cut: ``attrs[(module path, name)]`` and ``config[name]``."""

    attrs: dict[tuple[str, str], Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.attrs or self.config)


def _out_width(layer: nn.Module) -> int:
    if hasattr(layer, "out_features"):
        return layer.out_features
    return layer.weight.shape[1] if type(layer).__name__ == "Conv1D" else layer.weight.shape[0]


def _in_width(layer: nn.Module) -> int:
    if hasattr(layer, "in_features"):
        return layer.in_features
    return layer.weight.shape[0] if type(layer).__name__ == "Conv1D" else layer.weight.shape[1]


def _layer(model: nn.Module, new: dict[str, nn.Module], path: str) -> nn.Module:
    return new.get(path) or model.get_submodule(path)


def _attention_numbers(model: nn.Module, new: dict[str, nn.Module], path: str,
                       m: nn.Module) -> tuple[int, int | None] | None:
    """(query heads, key/value heads) of attention module ``path`` after the cut."""
    head = _head_size(m)
    children = dict(m.named_children())
    q = next((c for c in _Q if c in children), None)
    if q is not None:
        k = next((c for c in _K if c in children), None)
        heads = _out_width(_layer(model, new, f"{path}.{q}")) // head
        kv = _out_width(_layer(model, new, f"{path}.{k}")) // head if k else None
        return heads, kv
    fused = next((c for c in _FUSED if c in children), None)
    if fused is None:
        return None
    width = _out_width(_layer(model, new, f"{path}.{fused}"))
    config = getattr(m, "config", None) or getattr(model, "config", None)
    old_heads = _first_int(m, _HEADS) or getattr(config, "num_attention_heads", None)
    kv_known = _first_int(m, _KV_HEADS) or getattr(config, "num_key_value_heads", None)
    old_kv = kv_known or old_heads
    if not isinstance(old_heads, int):
        return None
    rows = width // head                          # heads' worth of rows: q + k + v
    heads = round(rows * old_heads / (old_heads + 2 * old_kv))
    return heads, (heads * old_kv // old_heads if kv_known else None)


def _first_int(m: nn.Module, names: tuple[str, ...]) -> int | None:
    return next((getattr(m, n) for n in names if isinstance(getattr(m, n, None), int)), None)


def updates(model: nn.Module, new: dict[str, nn.Module]) -> Updates:
    """What must change besides the layers when ``new`` ({path: cut layer}) go into ``model``:
    head counts and widths in attention modules, MLP widths, and the config. Raises
    :class:`PruningError` where one config cannot describe the cut (layers that keep
    different numbers of heads or neurons)."""
    out = Updates()
    if not new:
        return out
    hf_model = is_hf_model(model)
    if hf_model:
        attention = attention_modules(model)
    else:                       # only the modules around a cut layer can hold its numbers
        parents = {p.rpartition(".")[0] for p in new}
        attention = {p: model.get_submodule(p) for p in parents
                     if p and _head_size(model.get_submodule(p)) is not None and any(
                         c in model.get_submodule(p)._modules for c in (*_Q, *_FUSED))}
    heads_per_layer: dict[str, tuple[int, int | None]] = {}
    for path, m in attention.items():
        if not any(p.startswith(path + ".") for p in new):
            numbers = _attention_numbers(model, {}, path, m)
        else:
            numbers = _attention_numbers(model, new, path, m)
        if numbers is None:
            continue
        heads_per_layer[path] = numbers
        heads, kv = numbers
        head = _head_size(m)
        for name in _HEADS:
            if isinstance(getattr(m, name, None), int) and getattr(m, name) != heads:
                out.attrs[(path, name)] = heads
        for name in _KV_HEADS:
            if kv is not None and isinstance(getattr(m, name, None), int) and \
                    getattr(m, name) != kv:
                out.attrs[(path, name)] = kv
        for name in _INNER:
            if isinstance(getattr(m, name, None), int) and getattr(m, name) != heads * head:
                out.attrs[(path, name)] = heads * head
    _mlp_attrs(model, new, out)
    if hf_model:
        _config_numbers(model, heads_per_layer, new, out)
        _hidden_size(model, new, out)
    return out


def _hidden_size(model: nn.Module, new: dict[str, nn.Module], out: Updates) -> None:
    """An approximate cut of the residual stream (``approximate=True``) changes
    ``hidden_size``: the config can say so only if the head size stays its own number."""
    config = model.config
    old = getattr(config, "hidden_size", None)
    widths = {layer.embedding_dim for p, layer in new.items() if isinstance(layer, nn.Embedding)}
    if not isinstance(old, int) or not widths or widths == {old}:
        return
    if len(widths) > 1:
        raise PruningError(f"embeddings would keep different widths {sorted(widths)}")
    width = widths.pop()
    blocked = [type(m).__name__ for m in attention_modules(model).values()
               if not _config_describes_heads(m)]
    if blocked:
        raise PruningError(f"{type(config).__name__} derives the head size of {blocked[0]} "
                           "from hidden_size / num_attention_heads, so a config with a narrower "
                           "hidden_size would describe other heads; the stream cannot be cut")
    out.config["hidden_size"] = width
    heads = attention_modules(model)
    if heads:
        out.config["head_dim"] = _head_size(next(iter(heads.values())))
    for path, m in model.named_modules():
        for name in ("hidden_size", "embed_dim"):
            if getattr(m, name, None) == old and not isinstance(m, nn.Embedding):
                out.attrs[(path, name)] = width


def _mlp_attrs(model: nn.Module, new: dict[str, nn.Module], out: Updates) -> None:
    """An MLP module that keeps its width as a number (``LlamaMLP.intermediate_size``)."""
    for path in {p.rpartition(".")[0] for p in new}:
        m = model.get_submodule(path)
        width = m.__dict__.get("intermediate_size")
        if not isinstance(width, int):
            continue
        for child, layer in m.named_children():
            if _out_width(layer) == width and f"{path}.{child}" in new:
                out.attrs[(path, "intermediate_size")] = _out_width(new[f"{path}.{child}"])
                break


def _config_numbers(model: nn.Module, heads: dict[str, tuple[int, int | None]],
                    new: dict[str, nn.Module], out: Updates) -> None:
    config = model.config
    if heads:
        counts = set(heads.values())
        if len(counts) > 1:
            raise PruningError(
                f"the attention layers would keep different numbers of heads ({sorted(counts)}), "
                f"but {type(config).__name__} holds one num_attention_heads for all of them; "
                "prune with scope='local' (the same ratio for every layer)")
        (q, kv), = counts
        if q != getattr(config, "num_attention_heads", q):
            head = _head_size(next(iter(attention_modules(model).values())))
            out.config["head_dim"] = head
            out.config["num_attention_heads"] = q
        if kv is not None and kv != getattr(config, "num_key_value_heads", kv):
            out.config["num_key_value_heads"] = kv
    key = next((k for k in _MLP_KEYS if isinstance(getattr(config, k, None), int)),
               "n_inner" if hasattr(config, "n_inner") else None)
    if key is None:
        return
    hidden = getattr(config, "hidden_size", None)
    old = getattr(config, key) or (4 * hidden if hidden else None)
    widths = {}
    for path, layer in model.named_modules():          # the MLP's up (out) or down (in) side
        if not _is_dense(layer) or not any(f".{w}." in f".{path}." for w in _MLP):
            continue
        now = new.get(path, layer)
        if _out_width(layer) == old:
            widths[path] = _out_width(now)
        elif _in_width(layer) == old:
            widths[path] = _in_width(now)
    kept = set(widths.values())
    if len(kept) > 1:
        raise PruningError(
            f"the MLPs would keep different widths ({sorted(kept)}), but "
            f"{type(config).__name__} holds one {key} for all of them; prune with "
            "scope='local' (the same ratio for every layer)")
    if kept and kept != {old}:
        out.config[key] = kept.pop()


def _is_dense(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or type(layer).__name__ == "Conv1D"

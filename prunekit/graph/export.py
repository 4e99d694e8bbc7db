"""The second front-end: ``torch.export``, for models ``torch.fx`` cannot trace.

``torch.fx.symbolic_trace`` runs ``forward()`` on proxies: every Python operation on a tensor
becomes a node, and any Python that needs a real value fails -- Hugging Face's language
models stop at ``co_varnames is too small`` (a decorator rewrites ``forward``) or at
``'Proxy' object does not support item assignment``. ``torch.export.export(..., strict=False)``
runs ``forward()`` on *fake tensors* instead (real shapes, no data) and records the ATen ops
each PyTorch call dispatches to: Python control flow on shapes and config values just runs.

What changes for the rules (they are the same functions; :mod:`prunekit.graph.rules`):

* **ops are ATen overloads** -- ``aten.linear.default``, ``aten.view.default``,
  ``aten.scaled_dot_product_attention.default`` -- registered under their base name
  (``linear``, ``view``, ...), with the arguments of the torch functions they come from;
* **parameters are graph inputs** in an exported program; :func:`export_graph` turns each one
  back into a ``get_attr`` of the module that owns it (the innermost module on the node's
  ``nn_module_stack`` that holds that tensor, so a tied ``lm_head.weight`` is read as
  ``lm_head``'s, not the embedding's), so layers are found by name as in an fx graph;
* **sizes are baked in**: ``x.view(b, t, -1, self.head_dim)`` keeps its ``-1``, but a size
  read from a tensor (``b, h, t, d = x.shape``) is a plain number in the graph, as is a
  constant. So in an exported graph a number along a channel axis is taken to follow the
  cut -- unless the same size list has a ``-1`` (then that axis is the one that follows, and
  the numbers beside it are constants) -- and every such size is re-checked when the plan is
  applied (:func:`prunekit.verify.verify_cut` runs the cut model against the zero-masked one).
  Constant indices into a channel axis (``x[..., :8]``) still pin what they count.

Which front-end runs: fx first (it keeps Python's own sizes: precise rules, and it is fast --
see benchmarks/README.md, "Front-ends"), ``torch.export`` when fx cannot trace; the setting
``frontend="fx" | "export" | "auto"`` chooses by hand. When both fail, the error says what each
one said, not a guess.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..errors import PruningError

__all__ = ["export_graph", "is_aten", "module_stack", "trace_failure", "EXPORT_KWARGS"]

#: Keyword arguments passed to ``forward`` when the model takes them: a Hugging Face model
#: would otherwise build a key/value cache object (not a tensor) as part of its output.
EXPORT_KWARGS = {"use_cache": False}


def is_aten(n: fx.Node) -> bool:
    """Is ``n`` a call of an ATen operator (an exported graph's node)?"""
    return isinstance(n.target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket))


def module_stack(n: fx.Node) -> list[tuple[str, str]]:
    """``[(module path, class name)]`` from the model down to the innermost module whose
    ``forward`` ran node ``n`` (an exported graph records it; empty for an fx graph)."""
    stack = n.meta.get("nn_module_stack") or {}
    out = []
    for path, cls in stack.values():
        name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        out.append((_plain_path(path), name.rpartition(".")[2]))
    return out


def _plain_path(path: str) -> str:
    """``L['self'].model.layers[0]`` / ``model.layers.0`` -> ``model.layers.0``."""
    for junk in ("L['self'].", "L['self']"):
        path = path.replace(junk, "")
    return path.replace("[", ".").replace("]", "").replace("'", "").strip(".")


def forward_kwargs(model: nn.Module) -> dict[str, Any]:
    """:data:`EXPORT_KWARGS` that ``model.forward`` accepts."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in EXPORT_KWARGS.items() if k in params}


def export_graph(probe: nn.Module, inputs: Sequence[Tensor]) -> fx.Graph:
    """The ATen graph of ``probe`` (a copy in eval mode: :func:`.preflight.probe_copy`) on
    ``inputs``, with parameters and buffers read as ``get_attr`` of their modules and the
    only placeholders the tensor inputs. Raises :class:`PruningError` with export's reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(probe, tuple(inputs), kwargs=forward_kwargs(probe),
                                          strict=False)
    except Exception as e:  # noqa: BLE001 -- export raises many types; the text is the reason
        raise PruningError(f"torch.export could not trace {type(probe).__name__}: "
                           f"{trace_failure(e)}") from e
    return _as_module_graph(probe, program)


def _as_module_graph(probe: nn.Module, program: torch.export.ExportedProgram) -> fx.Graph:
    """Replace the exported program's parameter / buffer / constant inputs by ``get_attr``
    nodes on ``probe``, and non-tensor user inputs by their values."""
    graph = program.graph_module.graph
    sig = program.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    constants = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    owners = _tensor_owners(probe)
    for node in list(graph.nodes):
        if node.op != "placeholder":
            continue
        if node.name in names:
            _to_attributes(graph, node, names[node.name], probe, owners)
        elif node.name in constants:
            value = program.constants[constants[node.name]]
            attr = f"_prunekit_constant_{len(probe.__dict__)}"
            probe.__dict__[attr] = value
            _replace_with_get_attr(graph, node, attr)
        elif not isinstance(node.meta.get("val"), Tensor):     # use_cache=False, None
            value = node.meta.get("val")
            for u in list(node.users):
                u.args = _substitute(u.args, node, value)
                u.kwargs = _substitute(u.kwargs, node, value)
            graph.erase_node(node)
    return graph


def _substitute(value: Any, node: fx.Node, new: Any) -> Any:
    if value is node:
        return new
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, node, new) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, node, new) for k, v in value.items()}
    return value


def _tensor_owners(model: nn.Module) -> dict[int, list[str]]:
    """Every name a parameter or buffer has (tied weights have several), by identity."""
    owners: dict[int, list[str]] = {}
    for path, m in model.named_modules(remove_duplicate=False):
        for name, t in [*m._parameters.items(), *m._buffers.items()]:
            if isinstance(t, Tensor):
                owners.setdefault(id(t), []).append(f"{path}.{name}" if path else name)
    return owners


def _to_attributes(graph: fx.Graph, node: fx.Node, fqn: str, probe: nn.Module,
                   owners: dict[int, list[str]]) -> None:
    """One ``get_attr`` per user of a parameter input, named after the module that reads it
    when that module owns the tensor (tied weights: each layer reads its own name)."""
    owner, _, attr = fqn.rpartition(".")
    tensor = getattr(probe.get_submodule(owner), attr)
    all_names = owners.get(id(tensor), [fqn])
    for u in list(node.users):
        target = fqn
        for path, _ in reversed(module_stack(u)):
            match = next((n for n in all_names if n.rpartition(".")[0] == path), None)
            if match is not None:
                target = match
                break
        with graph.inserting_before(u):
            get = graph.create_node("get_attr", target)
        get.meta = dict(node.meta)
        u.replace_input_with(node, get)
    graph.erase_node(node)


def _replace_with_get_attr(graph: fx.Graph, node: fx.Node, target: str) -> None:
    with graph.inserting_before(node):
        get = graph.create_node("get_attr", target)
    get.meta = dict(node.meta)
    node.replace_all_uses_with(get)
    graph.erase_node(node)


def trace_failure(e: BaseException) -> str:
    """The reason a trace failed, in a line: the exception's own first lines (not a guess),
    and a hint only where the error says what it is about."""
    text = " ".join(str(e).strip().splitlines()[:3]).strip() or type(e).__name__
    if len(text) > 400:
        text = text[:400] + " ..."
    text = f"{type(e).__name__}: {text}"
    lowered = text.lower()
    if "data-dependent" in lowered or "data dependent" in lowered or \
            "symbolically traced variables cannot be used as inputs to control flow" in lowered:
        text += " (Python control flow that depends on tensor values)"
    return text

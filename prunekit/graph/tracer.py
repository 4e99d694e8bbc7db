"""The tracer: run the ``torch.fx`` graph once on the example input, giving every tensor a
:class:`~prunekit.graph.flow.Flow` (which channel is where, and is it zero when removed).

``ChannelTracer`` is an ``fx.Interpreter``: it really computes every node (so shapes are
known) and then asks the rule for that op (:mod:`prunekit.graph.rules`) what became of the
channels. This module is the bookkeeping the rules share: creating channel sets, recording
which positions of which layer hold which channel, and refusing -- at once, or *deferred*:
an op that would be wrong if its channels were removed is fine where they end up pinned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..errors import PruningError
from .atoms import Atoms
from .flow import Flow, ParamFlow, compress, expand_to, strip_broadcast
from .model import MacSite

__all__ = ["ChannelTracer", "Rule", "op_name", "fn_name"]

Rule = Callable[["ChannelTracer", fx.Node, Any, "nn.Module | None"], Any]
SizeSources = frozenset   # of (fx.Node, axis): the tensor dimensions an int was read from

_TORCH_MODULES = ("torch", "_operator", "operator", "builtins", "math")


def op_name(node: fx.Node, module: nn.Module | None = None) -> str:
    """A short, readable name of what a node does (used in every error message)."""
    if node.op == "call_module":
        return f"module '{node.target}' ({type(module).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}()"
    name = getattr(node.target, "__name__", str(node.target))
    mod = getattr(node.target, "__module__", "") or ""
    return f"function {mod + '.' if mod and mod != '_operator' else ''}{name}"


def fn_name(node: fx.Node) -> str:
    """The name a rule is registered under: the method name, or the function's name for
    torch's / Python's operators ('' for functions from elsewhere: user code, other libraries,
    except the few that :mod:`prunekit.graph.rules` registers by qualified name)."""
    if node.op == "call_method":
        return str(node.target)
    mod = getattr(node.target, "__module__", "") or ""
    if mod.split(".")[0] in _TORCH_MODULES:
        return getattr(node.target, "__name__", "")
    return ""


class ChannelTracer(fx.Interpreter):
    """Runs the traced model node by node and applies the rules of :mod:`prunekit.graph`."""

    def __init__(self, model: nn.Module, graph: fx.Graph, modules: list[tuple[type, Rule]],
                 functions: dict[str, Rule], qualified: dict[str, Rule], opaque: Rule) -> None:
        super().__init__(model, graph=graph)   # runs the traced graph on the model's own layers
        self.model = model
        self.extra_traceback = False       # our errors already name the node
        self.module_rules, self.function_rules = modules, functions
        self.qualified_rules, self.opaque_rule = qualified, opaque
        self.atoms = Atoms()
        self.flows: dict[fx.Node, Any] = {}      # Flow, or a list of them for tuple values
        self.params: dict[fx.Node, ParamFlow] = {}
        self.sizes: dict[fx.Node, Any] = {}      # SizeSources, or a tuple of them
        self.sites: dict[str, dict[str, Tensor]] = {}   # layer -> dim -> atom per position
        self.kinds: dict[str, str] = {}
        self.param_sites: dict[tuple[str, str], tuple[int, Tensor]] = {}
        self.mac_sites: list[MacSite] = []
        self.checks: list[tuple[str, Tensor]] = []   # (node, atoms): sizes read at run time
        self.opaque_owners: set[str] = set()
        self.shapes: dict[fx.Node, torch.Size] = {}
        self._fresh: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------------
    # fx.Interpreter hook
    # ------------------------------------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if isinstance(value, Tensor):
            self.shapes[n] = value.shape       # fx frees values after their last use; shapes stay
        if n.op == "placeholder":
            if isinstance(value, Tensor):
                self.flows[n] = self.input_flow(value)
        elif n.op == "get_attr":
            if isinstance(value, Tensor):
                owner, _, name = str(n.target).rpartition(".")
                ids = torch.arange(value.numel()).reshape(value.shape)
                self.params[n] = ParamFlow(owner, name, ids, tuple(value.shape))
        elif n.op == "output":
            for arg in _nodes_in(n.args):
                for flow in _flows_in(self.flows.get(arg)):
                    self.atoms.mark_output(flow.labels)
        elif not self.track_sizes(n, value) and _has_tensor(value):
            if any(a in self.flows for a in n.all_input_nodes):
                self.flows[n] = self.rule(n, value)
                _check_layout(n, self.flows[n], value)
            elif any(a in self.params for a in n.all_input_nodes):
                self.move_param(n, value)
        return value

    def input_flow(self, value: Tensor) -> Flow:
        """A model input: its channels (dim 1) exist before the model, so they are pinned."""
        axis = 1 if value.dim() >= 2 else 0
        width = value.shape[axis] if value.dim() else 1
        atoms = self.atoms.new_set(width, "model input", pinned="model input")
        return Flow.along(atoms, axis, max(value.dim(), 1))

    def rule(self, n: fx.Node, value: Any) -> Any:
        if n.op == "call_module":
            m = self.module.get_submodule(str(n.target))
            for kinds, rule in self.module_rules:
                if isinstance(m, kinds):
                    return rule(self, n, value, m)
            return self.opaque_rule(self, n, value, m)
        qual = f"{getattr(n.target, '__module__', '')}.{getattr(n.target, '__name__', '')}"
        rule = self.function_rules.get(fn_name(n)) or self.qualified_rules.get(qual)
        return (rule or self.opaque_rule)(self, n, value, None)

    # ------------------------------------------------------------------------------------------
    # Sizes: ints read from tensor shapes (x.size(1), x.shape) and the arithmetic on them
    # ------------------------------------------------------------------------------------------
    def track_sizes(self, n: fx.Node, value: Any) -> bool:
        """Record where an int came from; True if ``n`` is such a size computation."""
        name, args = fn_name(n), n.args
        if name in ("size", "getattr") and args and isinstance(args[0], fx.Node) and (
                name == "size" or args[1] == "shape"):
            src = args[0]
            if name == "size" and len(args) > 1 or "dim" in n.kwargs:
                dim = args[1] if len(args) > 1 else n.kwargs["dim"]
                self.sizes[n] = frozenset({(src, dim % len(self.shapes[src]))})
            else:
                self.sizes[n] = tuple(frozenset({(src, d)}) for d in range(len(value)))
            return True
        sized = [a for a in n.all_input_nodes if a in self.sizes]
        if not sized or _has_tensor(value):
            return False
        if name == "getitem" and isinstance(self.sizes[args[0]], tuple):
            picked = self.sizes[args[0]][args[1]]
            self.sizes[n] = picked if isinstance(picked, frozenset) else tuple(picked)
        else:
            parts = [self.sizes[a] for a in sized]
            self.sizes[n] = frozenset().union(*[p for q in parts
                                                for p in (q if isinstance(q, tuple) else [q])])
        return True

    def sources(self, arg: Any) -> SizeSources:
        """The tensor dimensions an int argument was computed from (empty for a literal)."""
        found = self.sizes.get(arg, frozenset()) if isinstance(arg, fx.Node) else frozenset()
        return found if isinstance(found, frozenset) else frozenset().union(*found)

    # ------------------------------------------------------------------------------------------
    # Parameters read with get_attr and reshaped before use (layer scale, pos. embedding)
    # ------------------------------------------------------------------------------------------
    _PARAM_MOVES = frozenset({"view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as",
                              "permute", "transpose", "flatten", "contiguous", "clone", "detach",
                              "to", "type_as", "float", "half", "getitem", "repeat", "t"})

    def move_param(self, n: fx.Node, value: Any) -> None:
        """Follow a parameter through shape-only ops by running them on its element ids."""
        src = next(a for a in n.all_input_nodes if a in self.params)
        p = self.params[src]
        name = fn_name(n)
        if not isinstance(value, Tensor) or name not in self._PARAM_MOVES:
            return
        if name in ("to", "type_as", "float", "half", "contiguous", "clone", "detach"):
            ids = p.ids
        else:
            ids = self.replay(n, {src: p.ids})
        if isinstance(ids, Tensor) and ids.shape == value.shape:
            self.params[n] = ParamFlow(p.owner, p.name, ids, p.shape)

    # ------------------------------------------------------------------------------------------
    # Helpers for the rules
    # ------------------------------------------------------------------------------------------
    def concrete(self, n: fx.Node) -> tuple[tuple, dict]:
        return self.fetch_args_kwargs_from_env(n)

    def replay(self, n: fx.Node, replace: dict[fx.Node, Tensor]) -> Any:
        """Run node ``n``'s own op again with some tensor inputs replaced (by labels or
        parameter ids): shape ops move those exactly as they move the data."""
        args, kwargs = self.concrete(n)
        swap = {id(self.env[node]): t for node, t in replace.items()}

        def sub(v: Any) -> Any:
            if isinstance(v, (list, tuple)):
                return type(v)(sub(x) for x in v)
            return swap.get(id(v), v) if isinstance(v, Tensor) else v

        args, kwargs = sub(args), {k: sub(v) for k, v in kwargs.items()}
        if n.op == "call_method":
            method = "reshape" if n.target == "view" else str(n.target)
            return getattr(args[0], method)(*args[1:], **kwargs)
        if n.op == "call_module":
            return self.module.get_submodule(str(n.target))(*args, **kwargs)
        return n.target(*args, **kwargs)

    def flow(self, arg: Any) -> Flow | None:
        found = self.flows.get(arg) if isinstance(arg, fx.Node) else None
        return found if isinstance(found, Flow) else None

    def shape(self, arg: Any) -> torch.Size:
        return self.shapes[arg]

    def roots(self, labels: Tensor) -> Tensor:
        return self.atoms.roots(labels)

    def compressed(self, labels: Tensor, zero: Tensor, why: str = "") -> Flow:
        """A flow stored small: axes along which no channel changes get size 1."""
        labels, zero = strip_broadcast(labels, zero)
        labels, zero = compress(labels, zero, self.roots(labels))
        return Flow(labels, zero, why if not bool(zero.all()) else "")

    def full(self, flow: Flow, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """Labels and flags broadcast to the tensor's real shape (views)."""
        return expand_to(flow.labels, shape), expand_to(flow.zero, shape)

    def aligned(self, flow: Flow, ndim: int) -> Flow:
        """The same flow with leading size-1 axes added up to ``ndim`` (broadcasting)."""
        labels, zero = flow.labels, flow.zero
        while labels.dim() < ndim:
            labels, zero = labels.unsqueeze(0), zero.unsqueeze(0)
        return Flow(labels, zero, flow.why)

    def fresh(self, name: str, size: int) -> Tensor:
        """The channel set a layer creates (one per layer, shared by repeated calls)."""
        if name not in self._fresh:
            self._fresh[name] = self.atoms.new_set(size, name)
        elif len(self._fresh[name]) != size:
            raise PruningError(f"layer '{name}' is called twice with different widths")
        return self._fresh[name]

    def pinned_like(self, labels: Tensor, reason: str) -> Tensor:
        """Fresh pinned atoms, one per position of ``labels`` (a fixed tensor of that shape)."""
        atoms = self.atoms.new_set(labels.numel(), reason, pinned=reason)
        return atoms.reshape(labels.shape)

    def axis_atoms(self, n: fx.Node, flow: Flow, axis: int, size: int,
                   module: nn.Module | None = None) -> Tensor:
        """The atoms along ``axis`` (1-D, length ``size``) of a tensor whose channels lie
        only along that axis -- what a conv, linear or norm reads."""
        labels = self.aligned(flow, len(self.shape(n.args[0])) if n.args else 0).labels
        axis %= labels.dim()
        others = [d for d in range(labels.dim()) if d != axis and labels.shape[d] > 1]
        if others:
            raise self.refuse(n, f"its input carries channels along dim {others[0]} as well as "
                              f"along the dim it reads ({axis})", module)
        return labels.reshape(-1).expand(size).clone() if labels.shape[axis] == 1 \
            else labels.reshape(-1).clone()

    def record(self, layer: str, dim: str, atoms: Tensor, n: fx.Node) -> None:
        """Which atom each position of ``layer``'s ``dim`` holds (unified over calls)."""
        old = self.sites.setdefault(layer, {}).get(dim)
        if old is None:
            self.sites[layer][dim] = atoms
        elif old.shape != atoms.shape:
            raise self.refuse(n, f"layer '{layer}' is used with two different widths")
        else:
            self.atoms.union_pairs(old, atoms)

    def record_param(self, owner: str, name: str, axis: int, atoms: Tensor, n: fx.Node) -> None:
        key = (owner, name)
        if key in self.param_sites:
            old_axis, old = self.param_sites[key]
            if old_axis != axis or old.shape != atoms.shape:
                raise self.refuse(n, f"parameter '{owner}.{name}' is used along two different "
                                  "dimensions")
            self.atoms.union_pairs(old, atoms)
        else:
            self.param_sites[key] = (axis, atoms)

    def mac(self, total: int, *maps: Tensor) -> None:
        self.mac_sites.append(MacSite(int(total), tuple(maps)))

    def check(self, n: fx.Node, labels: Tensor) -> None:
        """Sizes read at run time (``x.size(1) // 2``): verified when the plan is applied."""
        self.checks.append((n.name, labels.reshape(-1)))

    # -- refusing ------------------------------------------------------------------------------
    def message(self, n: fx.Node, why: str, module: nn.Module | None = None) -> str:
        return (f"cannot prune through node '{n.name}' = {op_name(n, module)}: {why}. "
                "prunekit only prunes through ops it can prove exact (see prunekit.graph); "
                "rewrite that part of the model or prune a model without it")

    def refuse(self, n: fx.Node, why: str, module: nn.Module | None = None) -> PruningError:
        return PruningError(self.message(n, why, module))

    def require_pinned(self, atoms: Tensor, n: fx.Node, why: str,
                       module: nn.Module | None = None) -> None:
        """Refuse -- unless every one of ``atoms`` ends up pinned (then nothing changes)."""
        self.atoms.require_pinned(atoms, self.message(n, why, module))

    def require_zero(self, flow: Flow, n: fx.Node, module: nn.Module | None = None) -> None:
        """``n`` reads ``flow`` as data: a removed channel must be exactly zero there."""
        bad = flow.labels[~flow.zero]
        if bad.numel():
            self.atoms.require_pinned(bad, (
                f"cannot prune through {flow.why}: its output reaches node '{n.name}' = "
                f"{op_name(n, module)}, so a removed channel would not equal a zeroed one "
                "(pruning must equal zeroing). prunekit only prunes through ops it can prove "
                "exact (see prunekit.graph); rewrite that part of the model or prune a model "
                "without it"))

    def why(self, n: fx.Node, effect: str, module: nn.Module | None = None) -> str:
        """The clause that explains a value that is not zero when its channel is removed."""
        return f"node '{n.name}' = {op_name(n, module)} ({effect})"


def _nodes_in(value: Any) -> list[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _nodes_in(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _nodes_in(v)]
    return []


def _flows_in(value: Any) -> list[Flow]:
    if isinstance(value, Flow):
        return [value]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _flows_in(v)]
    return []


def _check_layout(n: fx.Node, flow: Any, value: Any) -> None:
    """Every rule must return labels that broadcast to the value (a bug otherwise)."""
    if isinstance(flow, Flow) and isinstance(value, Tensor):
        shape = flow.labels.shape
        if len(shape) != value.dim() or any(s not in (1, v) for s, v in zip(shape, value.shape)):
            raise RuntimeError(f"prunekit bug: the rule for node '{n.name}' gave labels of shape "
                               f"{tuple(shape)} for a value of shape {tuple(value.shape)}")
    elif isinstance(flow, list) and isinstance(value, (list, tuple)):
        for f, v in zip(flow, value):
            _check_layout(n, f, v)


def _has_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return False

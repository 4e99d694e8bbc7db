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
    """A short, readable name of what a node does (used in every error message); for an ATen
    op of an exported graph also the module whose ``forward`` called it."""
    if node.op == "call_module":
        return f"module '{node.target}' ({type(module).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}()"
    if _is_aten(node):
        stack = node.meta.get("nn_module_stack") or {}
        where = ""
        if stack:
            path, cls = list(stack.values())[-1]
            cls = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
            where = f" in module '{_plain(path)}' ({cls.rpartition('.')[2]})"
        return f"aten.{_aten_name(node)}{where}"
    name = getattr(node.target, "__name__", str(node.target))
    mod = getattr(node.target, "__module__", "") or ""
    return f"function {mod + '.' if mod and mod != '_operator' else ''}{name}"


def fn_name(node: fx.Node) -> str:
    """The name a rule is registered under: the method name, or the function's name for
    torch's / Python's operators ('' for functions from elsewhere: user code, other libraries,
    except the few that :mod:`prunekit.graph.rules` registers by qualified name)."""
    if node.op == "call_method":
        return str(node.target)
    if _is_aten(node):
        return _aten_name(node)
    mod = getattr(node.target, "__module__", "") or ""
    if mod.split(".")[0] in _TORCH_MODULES:
        return getattr(node.target, "__name__", "")
    return ""


_ATEN = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)


def _is_aten(node: fx.Node) -> bool:
    return isinstance(node.target, _ATEN)


def _aten_name(node: fx.Node) -> str:
    """``aten.linear.default`` -> ``linear``: the name its torch function has."""
    target = node.target
    packet = getattr(target, "overloadpacket", target)
    return getattr(packet, "__name__", str(target)).rpartition(".")[2]


def _plain(path: str) -> str:
    for junk in ("L['self'].", "L['self']"):
        path = path.replace(junk, "")
    return path.replace("[", ".").replace("]", "").replace("'", "").strip(".")


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
        self.whole_params: dict[tuple[str, str], str] = {}   # (owner, name) -> node reading it
        self.divisors: set[tuple[str, str]] = set()         # per-channel params we divide by
        self.min_keep: list[tuple[Tensor, str]] = []        # (atoms, why at least 2 must stay)
        self.input_shapes: list[tuple[int, ...]] = []
        self.width_reads: list[tuple[str, str]] = []        # (layer, "out_channels") read in forward
        self.shape_sources: dict[fx.Node, SizeSources] = {}  # constants shaped by run-time sizes
        self.order: dict[fx.Node, int] = {}
        self.param_memory: set[int] | None = None           # storage keys of the parameters
        self.shapes: dict[fx.Node, torch.Size] = {}
        self._fresh: dict[str, Tensor] = {}
        #: The graph came from torch.export: sizes are numbers in it, whether forward() read
        #: them from a tensor or wrote them as constants (see :mod:`prunekit.graph.export`).
        self.baked = any(_is_aten(node) for node in graph.nodes)
        #: Pin reasons of norms whose parameters are recorded along the channels: lifted when
        #: an approximate (not exact) cut of normalised streams is asked for (Minitron).
        self.approximable: set[str] = set()
        self.approximate = False

    # ------------------------------------------------------------------------------------------
    # fx.Interpreter hooks
    # ------------------------------------------------------------------------------------------
    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.input_shapes = [tuple(a.shape) for a in args if isinstance(a, Tensor)]
        self.order = {node: i for i, node in enumerate(self.graph.nodes)}
        return super().run(*args, **kwargs)

    def run_node(self, n: fx.Node) -> Any:
        """Compute node ``n`` (an error there is the model's, on this input), then follow its
        channels (an error there is a rule's: refused, naming the node)."""
        self.guard_parameters(n)
        try:
            value = super().run_node(n)
        except PruningError:
            raise
        except Exception as e:  # noqa: BLE001 -- a shape mismatch surfaces as many types
            raise PruningError(self.input_message(n, e)) from e
        if isinstance(value, Tensor):
            self.shapes[n] = value.shape       # fx frees values after their last use; shapes stay
        try:
            self.follow(n, value)
        except PruningError:
            raise
        except Exception as e:  # noqa: BLE001 -- a rule that does not know this case
            raise self.refuse(n, f"prunekit's rule for it does not handle this call "
                              f"({type(e).__name__}: {e})") from e
        return value

    def guard_parameters(self, n: fx.Node) -> None:
        """The probe shares its parameters with your model: an op that writes into one in
        place (``self.w.clamp_(-1, 1)`` in forward) is refused before it runs."""
        target = n.args[0] if n.args else None
        if not isinstance(target, fx.Node) or not in_place(n, self._module_of(n)):
            return
        value = self.env.get(target)
        if self.param_memory is None:
            self.param_memory = {storage_key(p) for p in self.module.parameters()} - {None}
        if isinstance(value, Tensor) and storage_key(value) in self.param_memory:
            raise self.refuse(n, "forward() writes into a parameter in place; prunekit "
                              "does not run code that changes your model's weights")

    def follow(self, n: fx.Node, value: Any) -> None:
        """Give ``n``'s value a flow (channels), a parameter view, a size -- or nothing."""
        if n.op == "placeholder":
            if isinstance(value, Tensor):
                self.flows[n] = self.input_flow(value)
        elif n.op == "get_attr":
            self.read_attribute(n, value)
        elif n.op == "output":
            for arg in _nodes_in(n.args):
                for flow in _flows_in(self.flows.get(arg)):
                    self.atoms.mark_output(flow.labels)
        elif not self.track_sizes(n, value) and _has_tensor(value):
            flow = None
            if any(a in self.flows for a in n.all_input_nodes) or self.creates_channels(n):
                flow = self.rule(n, value)
                if flow is not None:                # None: a constant (e.g. ones.to(x))
                    _check_layout(n, flow, value)
                    self.check_in_place(n, flow)
                    self.flows[n] = flow
            elif any(a in self.params for a in n.all_input_nodes):
                self.move_param(n, value)
            if flow is None and n not in self.params:
                self.constant_shape(n)

    def creates_channels(self, n: fx.Node) -> bool:
        """An op that makes channels from its parameters alone: an embedding lookup (its ids,
        e.g. positions from ``torch.arange``, need not come from the model input)."""
        if n.op == "call_module":
            return isinstance(self.module.get_submodule(str(n.target)), nn.Embedding)
        return fn_name(n) == "embedding" and any(a in self.params for a in n.all_input_nodes)

    def input_message(self, n: fx.Node, e: Exception) -> str:
        shapes = ", ".join(str(s) for s in self.input_shapes)
        return (f"running the model on example input(s) of shape {shapes} failed at node "
                f"'{n.name}' = {op_name(n, self._module_of(n))}: {e}. Pass an example input "
                "shaped like one real batch, e.g. torch.randn(1, C, H, W) with the channels "
                "and size the model was built for")

    def _module_of(self, n: fx.Node) -> nn.Module | None:
        return self.module.get_submodule(str(n.target)) if n.op == "call_module" else None

    def read_attribute(self, n: fx.Node, value: Any) -> None:
        """A registered parameter or buffer can be cut with its channels; any other tensor
        attribute (a plain ``self.scale = torch.ones(...)``, a constant fx stored) is a
        constant that surgery would not find, so it is left without a parameter view."""
        owner, _, name = str(n.target).rpartition(".")
        layer = self.module.get_submodule(owner)
        if isinstance(value, Tensor) and (name in layer._parameters or name in layer._buffers):
            ids = torch.arange(value.numel()).reshape(value.shape)
            self.params[n] = ParamFlow(owner, name, ids, tuple(value.shape))

    def input_flow(self, value: Tensor) -> Flow:
        """A model input exists before the model, so none of it can be removed: one pinned
        atom for the whole tensor -- whatever axis its channels are on (an image's (N, C, H, W)
        or a token sequence's (N, T, C))."""
        atoms = self.atoms.new_set(1, "model input", pinned="model input")
        return Flow.along(atoms, 0, value.dim()) if value.dim() else Flow(
            atoms.reshape(()), torch.ones((), dtype=torch.bool))

    # -- in-place ops ------------------------------------------------------------------------
    def check_in_place(self, n: fx.Node, flow: Any) -> None:
        """``y.add_(1)`` changes ``y`` itself: a later reader of ``y`` (or of a view of it) sees
        the new values under the old node. Fine when the channels and zeros stay as they were
        (``relu_``); otherwise refused, naming the reader."""
        target = n.args[0] if n.args else None
        if not in_place(n, self._module_of(n)) or not isinstance(target, fx.Node):
            return
        old = self.flows.get(target)
        if isinstance(old, Flow) and isinstance(flow, Flow) and _same_flow(old, flow,
                                                                           self.shapes[n]):
            return
        reader = self._read_after(target, n)
        if reader is not None:
            raise self.refuse(n, f"it changes '{target.name}' in place and node '{reader}' "
                              "reads it afterwards, so the channels there are not what the "
                              f"graph says; {_out_of_place_advice(n, target.name)}")

    def _read_after(self, target: fx.Node, n: fx.Node) -> str | None:
        """A node still to run that reads ``target``'s tensor or a view of its memory."""
        t = self.env.get(target)
        dying = set(self.user_to_last_uses.get(n, []))
        for node, value in self.env.items():
            if node in dying or not isinstance(value, Tensor) or not isinstance(t, Tensor):
                continue
            if node is target or _shares_memory(value, t):
                return next((u.name for u in node.users if u is not n and
                             self.order[u] > self.order[n]), node.name)
        return None

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
        if name == "numel" and args and isinstance(args[0], fx.Node) and args[0] in self.shapes:
            self.sizes[n] = frozenset((args[0], d) for d in range(len(self.shapes[args[0]])))
            return True
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

    def constant_shape(self, n: fx.Node) -> None:
        """A tensor built in forward() whose shape comes from sizes read at run time
        (``torch.ones(x.size())``, ``zeros_like(x)``, or an op on such a tensor): remember
        which tensor dims it follows."""
        found = frozenset(self.shape_sources.get(n, frozenset()))
        for a in n.all_input_nodes:
            found |= self.sources(a) | self.shape_sources.get(a, frozenset())
        if found:
            self.shape_sources[n] = found

    def pin_shape_sources(self, node: Any, n: fx.Node) -> None:
        """A constant meets channels at ``n``: the channels its shape was read from must not
        change (its shape would, and no longer fit)."""
        for src, axis in self.shape_sources.get(node, frozenset()) if isinstance(
                node, fx.Node) else ():
            self.pin_axis(src, axis, f"the shape of a tensor built in forward() follows node "
                          f"'{src.name}' (dim {axis}) and meets other channels at node '{n.name}'")

    def pin_axis(self, src: fx.Node, axis: int, reason: str) -> bool:
        """Pin the channels along ``axis`` of node ``src``'s output; False if it carries none."""
        flow = self.flow(src)
        if flow is None or src not in self.shapes:
            return False
        labels = self.aligned(flow, len(self.shapes[src])).labels
        if labels.shape[axis] > 1:
            self.atoms.pin(labels, reason)
        return True

    def size_as_number(self, arg: Any, n: fx.Node) -> None:
        """A size read at run time is used as a *number* by ``n`` (``x / x.shape[1]``,
        ``y * math.sqrt(c)``): a cut along that dim would change the result, so the channels
        it counts are pinned (and a parameter whose shape it reads is kept whole)."""
        for src, axis in self.sources(arg):
            reason = (f"the width of node '{src.name}' (dim {axis}) is used as a number at node "
                      f"'{n.name}' ({op_name(n)}): a cut would change it")
            if not self.pin_axis(src, axis, reason) and src in self.params:
                self.read_whole(src, n)

    # ------------------------------------------------------------------------------------------
    # Parameters read with get_attr and reshaped before use (layer scale, pos. embedding)
    # ------------------------------------------------------------------------------------------
    _PARAM_MOVES = frozenset({"view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as",
                              "permute", "transpose", "flatten", "contiguous", "clone", "detach",
                              "to", "type_as", "float", "half", "getitem", "repeat", "t"})

    def move_param(self, n: fx.Node, value: Any) -> None:
        """Follow a parameter through shape-only ops by running them on its element ids. Any
        other op (``g.mean()``, ``w.abs()``, ``w.norm()``) reads the parameter *whole*: its
        result depends on every entry, so the parameter must not be cut (see
        :meth:`read_whole`)."""
        sources = [a for a in n.all_input_nodes if a in self.params]
        name = fn_name(n)
        if not isinstance(value, Tensor) or name not in self._PARAM_MOVES or len(sources) > 1:
            for a in sources:
                self.read_whole(a, n)
            return
        src = sources[0]
        p = self.params[src]
        if name in ("to", "type_as", "float", "half", "contiguous", "clone", "detach"):
            ids = p.ids
        else:
            ids = self.replay(n, {src: p.ids})
        if isinstance(ids, Tensor) and ids.shape == value.shape:
            self.params[n] = ParamFlow(p.owner, p.name, ids, p.shape)
        else:
            self.read_whole(src, n)

    def read_whole(self, arg: Any, n: fx.Node) -> None:
        """Parameter ``arg`` is used by ``n`` as a whole (a statistic, an op without a rule):
        cutting it would change ``n``'s result, so every group that would cut it is pinned."""
        p = self.params.get(arg) if isinstance(arg, fx.Node) else None
        if p is not None:
            self.whole_params.setdefault((p.owner, p.name), n.name)

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
        """Sizes read at run time (``x.size(1) // 2``): which groups they depend on (every cut
        is checked when the plan is applied; these nodes are where to look first)."""
        self.checks.append((n.name, labels.reshape(-1)))

    # -- refusing ------------------------------------------------------------------------------
    def message(self, n: fx.Node, why: str, module: nn.Module | None = None) -> str:
        return (f"cannot prune through node '{n.name}' = {op_name(n, module)}: {why}. "
                "prunekit only prunes through ops it can prove exact (see prunekit.graph); "
                "rewrite that part of the model or prune a model without it")

    def refuse(self, n: fx.Node, why: str, module: nn.Module | None = None) -> PruningError:
        return PruningError(self.message(n, why, module or self._module_of(n)))

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


_INPLACE_OPERATORS = frozenset({"iadd", "isub", "imul", "itruediv", "ifloordiv", "imod", "ipow",
                                "iand", "ior", "ixor", "ilshift", "irshift", "imatmul"})


def in_place(n: fx.Node, module: nn.Module | None) -> bool:
    """Does ``n`` write into its first argument? (``x.add_()``, ``x += y``, ``torch.relu_``,
    ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``)"""
    if module is not None:
        return bool(getattr(module, "inplace", False))
    name = fn_name(n) or getattr(n.target, "__name__", "")
    return (name.endswith("_") and not name.startswith("_")) or name in _INPLACE_OPERATORS \
        or n.kwargs.get("inplace") is True


def _out_of_place_advice(n: fx.Node, name: str) -> str:
    """What to write instead of an in-place op: its out-of-place twin on a new name."""
    if n.op == "call_module" or n.kwargs.get("inplace") is True:
        return "construct it with inplace=False"
    op = fn_name(n) or getattr(n.target, "__name__", "")
    if op.endswith("_") and not op.startswith("_"):
        return f"use the out-of-place '{op[:-1]}' instead of '{op}' (a new tensor)"
    return f"write '{name} = {name} + ...' instead of an augmented assignment such as +="


def _same_flow(a: Flow, b: Flow, shape: torch.Size) -> bool:
    if a is b:
        return True
    try:
        return bool(torch.equal(expand_to(a.labels, shape), expand_to(b.labels, shape)) and
                    torch.equal(expand_to(a.zero, shape), expand_to(b.zero, shape)))
    except RuntimeError:
        return False


def storage_key(t: Tensor) -> int | None:
    """One number per block of memory: equal for tensors that share storage (views, tied
    weights). The data pointer, or, on a device that hides it, the storage's own handle;
    None for tensors without memory (empty, or on the "meta" device)."""
    if t.is_meta or not t.numel():
        return None
    storage = t.untyped_storage()
    try:
        return storage.data_ptr()
    except RuntimeError:
        return storage._cdata


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    key = storage_key(a)
    return key is not None and key == storage_key(b)


def _has_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    return False

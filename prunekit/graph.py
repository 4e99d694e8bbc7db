"""Which channels must be cut together? From a model to *coupled channel groups*.

Removing output channel ``c`` of a convolution is never a local edit. The channel lives on
in every tensor that carries it, so we must also cut

* the BatchNorm that normalises it (``gamma[c]``, ``beta[c]``, running statistics),
* the *input* column ``c`` of every layer that reads it (the next conv, or the block of
  ``H*W`` features it becomes after ``flatten`` in front of a linear layer), and
* every other layer whose output is *added* to it: in a ResNet stage all blocks add into one
  running tensor, so the stem, every ``conv2`` and every projection shortcut share ONE set of
  channels (Li et al., 2017, "Pruning Filters for Efficient ConvNets", section 3.3).

We find these sets by tracing the model once with ``torch.fx`` and running the traced graph on
an example input (so every tensor's shape is known). Every tensor gets a *channel layout*: a
list of segments, each a set of channels created by one layer. The rules:

===============================  ===========================================================
conv / linear                    creates a fresh set (its output rows); reads its input's sets
BatchNorm, f(0)=0 activations,   pass the layout through unchanged (the channels are the same)
pooling, dropout, identity
depthwise conv (groups == C)     passes it through too: output channel c *is* input channel c
grouped conv (1 < groups)        its input channels are *pinned* (never cut: every group would
                                 need the same change); its outputs are a fresh set that must
                                 lose the same number of channels in every group ("blocks")
``a + b``, ``a - b``, ``a * b``  unify the two layouts pairwise (union-find): the channels are
                                 now the same channels
``torch.cat(dim=1)``             concatenates the layouts (channel offsets)
flatten / view to (N, -1)        each channel becomes a block of ``H*W`` features (a width
                                 written as a constant, ``view(-1, 512*7*7)``, pins the channels)
``F.pad`` on channels            exact only if nothing there changes: all its channels pinned
model input / model output       pinned (the output keeps its classes unless named in ratios)
anything else touching channels  refused with :class:`~prunekit.PruningError`
===============================  ===========================================================

Why only activations with ``f(0) = 0``? Pruning must equal *zeroing*: a removed channel is a
channel that is 0 everywhere. ``sigmoid(0) = 0.5``, so behind a sigmoid a zeroed channel still
talks to the next layer, while a removed one does not. prunekit refuses rather than guesses.

A *group* is one union-find class of channel sets, with every layer that produces it (cuts
output rows), normalises it (BatchNorm), passes it through (depthwise) or reads it (cuts input
columns). ``print(graph)`` shows them all.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from .errors import PruningError

__all__ = ["Member", "Group", "ChannelGraph", "build_graph", "as_input_tuple", "ROLE_TEXT"]

#: How a layer touches a group's channels.
ROLE_TEXT = {
    "out": "cuts output rows",
    "dw": "depthwise (rows = channels)",
    "bn": "BatchNorm",
    "in": "cuts input columns",
}


@dataclass(frozen=True)
class Member:
    """One layer's share in a group: channels ``offset .. offset + size`` of the layer's
    ``role`` dimension; ``repeat > 1`` when each channel is a block of flattened features."""

    module: str
    role: str
    offset: int = 0
    repeat: int = 1


@dataclass
class Group:
    """A set of channels that must be removed together, and every layer that touches it."""

    index: int
    size: int
    members: list[Member] = field(default_factory=list)
    pinned: str | None = None      # why this group may never be pruned (None: it may)
    is_output: bool = False        # reaches the model output (kept unless named in ratios)
    blocks: int = 1                # remove the same number from each of `blocks` equal blocks

    def modules(self, role: str | None = None) -> list[str]:
        """Names of member layers (optionally only those with one role), in trace order."""
        names = [m.module for m in self.members if role is None or m.role == role]
        return list(dict.fromkeys(names))

    @property
    def name(self) -> str:
        """A readable name: the first layer that produces the channels."""
        producers = self.modules("out") or self.modules("dw") or self.modules()
        return producers[0] if producers else f"group{self.index}"

    @property
    def prunable(self) -> bool:
        return self.pinned is None and not self.is_output

    def __str__(self) -> str:
        state = f"pinned: {self.pinned}" if self.pinned else (
            "model output (kept unless named in ratios)" if self.is_output else "prunable")
        head = f"Group {self.index} '{self.name}': {self.size} channels, {state}"
        if self.blocks > 1:
            head += f", {self.blocks} equal blocks"
        lines = [head]
        for role, text in ROLE_TEXT.items():
            names = [_member_text(m) for m in self.members if m.role == role]
            if names:
                lines.append(f"  {text:<28} {', '.join(dict.fromkeys(names))}")
        return "\n".join(lines)


def _member_text(m: Member) -> str:
    extra = f"[{m.offset}:]" if m.offset else ""
    if m.repeat > 1:
        extra += f" (x{m.repeat} features each)"
    return m.module + extra


@dataclass
class ChannelGraph:
    """The result of tracing: the groups and, for each prunable layer, its channel layouts.

    ``layouts[name][dim]`` (dim ``"out"`` or ``"in"``) is a list of ``(group index, repeat)``
    segments in channel order -- all that surgery needs to turn removed group channels into
    the rows / columns of that layer to keep.
    """

    groups: list[Group]
    layouts: dict[str, dict[str, list[tuple[int, int]]]]
    kinds: dict[str, str]          # module name -> "conv" | "dwconv" | "gconv" | "linear" | "bn"
    mac_sites: list[tuple[str, int, int]]  # (layer, output positions, kernel size) per call

    def count_macs(self, model: nn.Module) -> int:
        """MACs of one forward pass of ``model`` -- the traced model or a pruned copy of it.

        A conv call costs ``positions * out_channels * in_channels / groups * kernel`` MACs
        (``positions`` = batch x output pixels), a linear ``positions * out * in``. The
        positions come from the trace, the channel counts from the layers as they are *now*,
        so no second forward pass is needed. Equal to :func:`prunekit.metrics.count_macs`
        (FlopCounterMode) for the models prunekit accepts; the tests check it.
        """
        total = 0
        for name, positions, kernel in self.mac_sites:
            m = model.get_submodule(name)
            if isinstance(m, nn.Linear):
                total += positions * m.out_features * m.in_features
            else:
                total += positions * m.out_channels * (m.in_channels // m.groups) * kernel
        return total

    def group_of(self, module: str) -> Group:
        """The group a layer's *output* channels belong to (raises if it has none)."""
        for g in self.groups:
            if any(m.module == module and m.role != "in" for m in g.members):
                return g
        known = ", ".join(sorted(self.kinds)) or "(none)"
        raise PruningError(f"no layer called {module!r} produces prunable channels; "
                           f"layers prunekit knows: {known}")

    def groups_with(self, module: str) -> list[Group]:
        """Every group a layer takes part in (any role)."""
        return [g for g in self.groups if any(m.module == module for m in g.members)]

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)

    def __repr__(self) -> str:
        n = len(self.prunable_groups())
        return f"ChannelGraph({len(self.groups)} groups, {n} prunable)"


# ----------------------------------------------------------------------------------------------
# Union-find over channel sets
# ----------------------------------------------------------------------------------------------

Segment = tuple[int, int]          # (channel-set id, repeat)


class _Sets:
    """Union-find of channel sets. ``union(a, b)`` says: channel i of a IS channel i of b."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.pinned: list[str | None] = []
        self.output: list[bool] = []
        self.blocks: list[int] = []

    def new(self, size: int, pinned: str | None = None, blocks: int = 1) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.pinned.append(pinned)
        self.output.append(False)
        self.blocks.append(blocks)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        self.pinned[ra] = self.pinned[ra] or self.pinned[rb]
        self.output[ra] = self.output[ra] or self.output[rb]
        blocks = math.lcm(self.blocks[ra], self.blocks[rb])
        if self.size[ra] % blocks:
            self.pinned[ra] = self.pinned[ra] or "incompatible grouped-conv blocks"
            blocks = 1
        self.blocks[ra] = blocks

    def pin(self, layout: Sequence[Segment], reason: str) -> None:
        for s, _ in layout:
            r = self.find(s)
            self.pinned[r] = self.pinned[r] or reason

    def width(self, layout: Sequence[Segment]) -> int:
        return sum(self.size[s] * rep for s, rep in layout)


# ----------------------------------------------------------------------------------------------
# Which ops pass channels through unchanged
# ----------------------------------------------------------------------------------------------

#: Layers that act on each channel separately and map 0 to 0.
PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.LeakyReLU, nn.Tanh, nn.ELU, nn.SELU,
    nn.CELU, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)
#: The same idea for functions (torch.*, torch.nn.functional.*) and tensor methods, by name.
PASS_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "gelu", "silu", "hardswish", "leaky_relu", "leaky_relu_", "tanh",
    "elu", "selu", "celu", "mish", "softsign", "tanhshrink",
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "interpolate",
    "contiguous", "clone", "detach", "float", "double", "half", "to", "identity",
})
#: Known activations with f(0) != 0 get a precise refusal instead of the generic one.
NONZERO_AT_ZERO = frozenset({
    "sigmoid", "Sigmoid", "hardsigmoid", "Hardsigmoid", "softplus", "Softplus", "exp", "cos",
    "logsigmoid", "LogSigmoid", "softmax", "Softmax", "log_softmax", "LogSoftmax",
})
REDUCTIONS = frozenset({"mean", "sum", "amax", "amin"})
BINARY = {operator.add: "add", operator.iadd: "add", operator.sub: "sub", operator.isub: "sub",
          operator.mul: "mul", operator.imul: "mul", operator.truediv: "div",
          operator.itruediv: "div"}
BINARY_NAMES = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul",
                "mul_": "mul", "div": "div", "div_": "div", "true_divide": "div"}
RESHAPES = frozenset({"flatten", "view", "reshape"})
CATS = frozenset({"cat", "concat", "concatenate"})


def _op_name(node: fx.Node, module: nn.Module | None) -> str:
    """A short, readable name of what a node does (used in every error message)."""
    if node.op == "call_module":
        return f"module '{node.target}' ({type(module).__name__})"
    if node.op == "call_method":
        return f"method .{node.target}()"
    name = getattr(node.target, "__name__", str(node.target))
    mod = getattr(node.target, "__module__", "") or ""
    return f"function {mod + '.' if mod and mod != '_operator' else ''}{name}"


def _fn_name(node: fx.Node) -> str:
    """Name of a call_function / call_method target, '' if it is not torch's or operator's."""
    if node.op == "call_method":
        return str(node.target)
    mod = getattr(node.target, "__module__", "") or ""
    if mod.startswith("torch") or mod in ("_operator", "operator", "builtins"):
        return getattr(node.target, "__name__", "")
    return ""


def _contains_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_contains_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_tensor(v) for v in value.values())
    return False


def as_input_tuple(example_inputs: Any) -> tuple[Tensor, ...]:
    """Accept one example tensor or a tuple/list of them; refuse anything else."""
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise PruningError("example_inputs must be a tensor shaped like one batch of real input, "
                           f"e.g. torch.randn(1, 3, 32, 32); got {type(example_inputs).__name__}")
    return tuple(inputs)


# ----------------------------------------------------------------------------------------------
# The tracer: run the fx graph once, giving every tensor a channel layout
# ----------------------------------------------------------------------------------------------

Layout = list[Segment]


class _ChannelTracer(fx.Interpreter):
    """Runs the traced model node by node and applies the coupling rules of the module doc."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.extra_traceback = False       # our errors already name the node
        self.sets = _Sets()
        self.layout: dict[fx.Node, Layout] = {}
        self.shape: dict[fx.Node, torch.Size] = {}
        self.dims: dict[str, dict[str, Layout]] = {}        # module -> {"out"/"in": layout}
        self.kinds: dict[str, str] = {}
        self.fresh: dict[str, int] = {}                      # producer -> its output set
        self.mac_sites: list[tuple[str, int, int]] = []

    # -- bookkeeping ---------------------------------------------------------------------------
    def count_site(self, n: fx.Node, out: Tensor) -> None:
        """Remember where a conv / linear runs and on how many positions (for MACs)."""
        if n.op != "call_module":
            return
        m = self.module.get_submodule(str(n.target))
        if isinstance(m, nn.Linear):
            self.mac_sites.append((str(n.target), out.numel() // m.out_features, 1))
        elif isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            self.mac_sites.append((str(n.target), out.numel() // m.out_channels,
                                   math.prod(m.kernel_size)))

    def refuse(self, node: fx.Node, why: str, module: nn.Module | None = None) -> PruningError:
        return PruningError(
            f"cannot prune through node '{node.name}' = {_op_name(node, module)}: {why}. "
            "prunekit only prunes through ops it can prove exact (see prunekit.graph); "
            "rewrite that part of the model or prune a model without it")

    def unify(self, a: Layout, b: Layout, node: fx.Node) -> None:
        """Declare that layouts ``a`` and ``b`` hold the same channels, position by position."""
        if len(a) != len(b) or any(self.sets.size[x] * rx != self.sets.size[y] * ry or rx != ry
                                   for (x, rx), (y, ry) in zip(a, b)):
            raise self.refuse(node, "it combines tensors whose channels come from differently "
                              "split sources (e.g. a torch.cat with a single conv output), which "
                              "prunekit cannot align")
        for (x, _), (y, _) in zip(a, b):
            if self.sets.size[x] != self.sets.size[y]:
                raise self.refuse(node, "misaligned channel sets")
            self.sets.union(x, y)

    def record(self, name: str, dim: str, layout: Layout, node: fx.Node) -> None:
        """Remember which channel sets a layer's dimension holds (unified over repeated calls)."""
        old = self.dims.setdefault(name, {}).get(dim)
        if old is None:
            self.dims[name][dim] = list(layout)
        else:
            self.unify(old, layout, node)

    # -- fx.Interpreter hooks ------------------------------------------------------------------
    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if isinstance(value, Tensor):
            self.shape[n] = value.shape
            self.count_site(n, value)
        if n.op == "placeholder":
            if isinstance(value, Tensor) and value.dim() >= 2:
                self.layout[n] = [(self.sets.new(value.shape[1], pinned="model input"), 1)]
            return value
        if n.op == "output":
            for arg in n.all_input_nodes:
                for s, _ in self.layout.get(arg, []):
                    self.sets.output[self.sets.find(s)] = True
            return value
        if not any(a in self.layout for a in n.all_input_nodes):
            return value                       # does not involve the input's channels at all
        if not isinstance(value, Tensor):
            if _contains_tensor(value):
                raise self.refuse(n, "it returns several tensors (a split or chunk of channels?)")
            return value                       # metadata such as x.size(0)
        self.layout[n] = self.rule(n, value)
        return value

    # -- the rules -----------------------------------------------------------------------------
    def rule(self, n: fx.Node, out: Tensor) -> Layout:
        if n.op == "call_module":
            return self.module_rule(n, self.module.get_submodule(str(n.target)), out)
        if n.op in ("call_function", "call_method"):
            return self.function_rule(n, _fn_name(n), out)
        raise self.refuse(n, f"unexpected fx op {n.op}")

    def first_input(self, n: fx.Node, module: nn.Module | None = None) -> tuple[fx.Node, Layout]:
        """The node's tensor input that carries channels (the first argument)."""
        arg = n.args[0] if n.args else next(iter(n.kwargs.values()), None)
        if not isinstance(arg, fx.Node) or arg not in self.layout:
            raise self.refuse(n, "its channel-carrying input is not its first argument", module)
        return arg, self.layout[arg]

    def pass_through(self, n: fx.Node, out: Tensor, module: nn.Module | None = None) -> Layout:
        """Channel-wise op: same channels out as in (checked on the real shapes)."""
        src, layout = self.first_input(n, module)
        shape = self.shape[src]
        if out.dim() < 2 or out.shape[:2] != shape[:2]:
            raise self.refuse(n, f"it changes the (batch, channel) dims {tuple(shape[:2])} -> "
                              f"{tuple(out.shape[:2])}", module)
        return layout

    # -- layers --------------------------------------------------------------------------------
    def module_rule(self, n: fx.Node, m: nn.Module, out: Tensor) -> Layout:
        name = str(n.target)
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            return self.conv_rule(n, name, m)
        if isinstance(m, nn.Linear):
            return self.linear_rule(n, name, m)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            layout = self.pass_through(n, out, m)
            self.kinds[name] = "bn"
            self.record(name, "out", layout, n)
            return layout
        if isinstance(m, nn.Flatten):
            return self.reshape_rule(n, out, m)
        if isinstance(m, nn.Hardtanh) and not m.min_val <= 0 <= m.max_val:
            raise self.refuse(n, "its output at 0 is not 0, so a removed channel would differ "
                              "from a zeroed one", m)
        if isinstance(m, nn.PReLU) and m.num_parameters != 1:
            raise self.refuse(n, "a per-channel PReLU has its own channel weights", m)
        if isinstance(m, PASS_MODULES + (nn.Hardtanh, nn.PReLU)):
            return self.pass_through(n, out, m)
        if type(m).__name__ in NONZERO_AT_ZERO:
            raise self.refuse(n, "f(0) != 0, so a removed channel would not equal a zeroed one "
                              "(pruning must equal zeroing)", m)
        raise self.refuse(n, "prunekit does not know how this layer treats channels", m)

    def conv_rule(self, n: fx.Node, name: str, m: nn.Module) -> Layout:
        src, layout = self.first_input(n, m)
        if self.sets.width(layout) != m.in_channels:
            raise self.refuse(n, "its input width does not match in_channels", m)
        if m.groups == 1:                                   # ordinary conv: new channels
            self.kinds[name] = "conv"
            self.record(name, "in", layout, n)
            return self.produce(n, name, m.out_channels)
        if m.groups == m.in_channels == m.out_channels:     # depthwise: out channel c = in c
            self.kinds[name] = "dwconv"
            self.record(name, "out", layout, n)
            return layout
        # Grouped conv: cutting input channel c would change one group only and leave the
        # groups unequal, so its inputs are pinned; its outputs go in equal numbers per group.
        self.kinds[name] = "gconv"
        self.sets.pin(layout, f"input of grouped conv '{name}' (groups={m.groups})")
        self.record(name, "in", layout, n)
        return self.produce(n, name, m.out_channels, blocks=m.groups)

    def linear_rule(self, n: fx.Node, name: str, m: nn.Linear) -> Layout:
        src, layout = self.first_input(n, m)
        if len(self.shape[src]) != 2:
            raise self.refuse(n, f"it is applied to a {len(self.shape[src])}-d tensor; prunekit "
                              "needs (batch, features): flatten first", m)
        self.kinds[name] = "linear"
        self.record(name, "in", layout, n)
        return self.produce(n, name, m.out_features)

    def produce(self, n: fx.Node, name: str, width: int, blocks: int = 1) -> Layout:
        """A layer that creates channels: one fresh set per layer (shared by repeated calls)."""
        if name not in self.fresh:
            self.fresh[name] = self.sets.new(width, blocks=blocks)
        layout = [(self.fresh[name], 1)]
        self.record(name, "out", layout, n)
        return layout

    # -- functions and methods -----------------------------------------------------------------
    def function_rule(self, n: fx.Node, name: str, out: Tensor) -> Layout:
        if name in PASS_FUNCTIONS:
            return self.pass_through(n, out)
        if n.target in BINARY or (name in BINARY_NAMES and name != ""):
            return self.binary_rule(n, BINARY.get(n.target) or BINARY_NAMES[name], out)
        if name in RESHAPES:
            return self.reshape_rule(n, out)
        if name in REDUCTIONS:
            return self.reduction_rule(n, out)
        if name in CATS:
            return self.cat_rule(n, out)
        if name == "getitem":
            return self.getitem_rule(n, out)
        if name == "pad":
            return self.pad_rule(n, out)
        if name in NONZERO_AT_ZERO:
            raise self.refuse(n, "f(0) != 0, so a removed channel would not equal a zeroed one "
                              "(pruning must equal zeroing)")
        raise self.refuse(n, "prunekit does not know how this op treats channels")

    def concrete_args(self, n: fx.Node) -> tuple[tuple, dict]:
        return self.fetch_args_kwargs_from_env(n)

    def binary_rule(self, n: fx.Node, op: str, out: Tensor) -> Layout:
        args, kwargs = self.concrete_args(n)
        operands = list(n.args[:2]) + ([n.kwargs["other"]] if "other" in n.kwargs else [])
        values = list(args[:2]) + ([kwargs["other"]] if "other" in kwargs else [])
        carried = [i for i, a in enumerate(operands) if isinstance(a, fx.Node) and a in self.layout]
        if len(carried) == 2:
            a, b = operands[0], operands[1]
            if self.shape[a] != self.shape[b]:
                raise self.refuse(n, f"it broadcasts shapes {tuple(self.shape[a])} and "
                                  f"{tuple(self.shape[b])} (a per-channel gate or scale?)")
            if op == "div":
                raise self.refuse(n, "it divides by a tensor of channels (a zeroed channel "
                                  "would divide by zero)")
            self.unify(self.layout[a], self.layout[b], n)
            return self.checked(n, a, out)
        if not carried:
            raise self.refuse(n, "its channels arrive through an unexpected argument")
        i = carried[0]
        other = values[1 - i] if len(values) > 1 else None
        if isinstance(other, Tensor):
            raise self.refuse(n, "it combines channels with a constant tensor")
        if op in ("add", "sub") and other not in (0, 0.0, None):
            raise self.refuse(n, f"adding the constant {other} maps 0 to {other}, so a removed "
                              "channel would not equal a zeroed one")
        if op == "div" and i == 1:
            raise self.refuse(n, "it divides by channels")
        return self.checked(n, operands[i], out)

    def checked(self, n: fx.Node, src: fx.Node, out: Tensor) -> Layout:
        if out.dim() < 2 or out.shape[:2] != self.shape[src][:2]:
            raise self.refuse(n, "it changes the (batch, channel) dims")
        return self.layout[src]

    def reshape_rule(self, n: fx.Node, out: Tensor, module: nn.Module | None = None) -> Layout:
        src, layout = self.first_input(n, module)
        before = self.shape[src]
        if self.hard_coded_width(n):
            # x.view(-1, 512 * 7 * 7): the width is a constant in forward(), so it must not change.
            self.sets.pin(layout, f"width hard-coded in '{n.name}' ({_op_name(n, module)})")
        if out.dim() >= 2 and out.shape[:2] == before[:2]:
            return layout                                   # channels untouched
        if out.dim() == 2 and out.shape[0] == before[0] and len(before) > 2:
            block = math.prod(before[2:])                   # channel c -> features c*HW..
            return [(s, rep * block) for s, rep in layout]
        raise self.refuse(n, f"it reshapes {tuple(before)} -> {tuple(out.shape)}, mixing the "
                          "channel dimension with others (a channel shuffle?)", module)

    @staticmethod
    def hard_coded_width(n: fx.Node) -> bool:
        """Is dim 1 of a view/reshape target a literal int (not -1, not computed)?"""
        if n.op == "call_module" or _fn_name(n) == "flatten":
            return False
        shape = list(n.args[1:]) or [n.kwargs.get("shape", ())]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = list(shape[0])
        return len(shape) >= 2 and isinstance(shape[1], int) and shape[1] != -1

    def reduction_rule(self, n: fx.Node, out: Tensor) -> Layout:
        args, kwargs = self.concrete_args(n)
        src, layout = self.first_input(n)
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        ndim = len(self.shape[src])
        dims = (dims,) if isinstance(dims, int) else dims
        if dims is None or any(d % ndim in (0, 1) for d in dims):
            raise self.refuse(n, "it reduces over the batch or channel dimension")
        return self.checked(n, src, out)

    def cat_rule(self, n: fx.Node, out: Tensor) -> Layout:
        args, kwargs = self.concrete_args(n)
        parts = n.args[0] if n.args else n.kwargs.get("tensors")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(parts, (list, tuple)) or not all(
                isinstance(p, fx.Node) and p in self.layout for p in parts):
            raise self.refuse(n, "it concatenates channels with a tensor that does not come "
                              "from the model input")
        if dim % out.dim() == 1:                           # channel concat: offsets
            return [seg for p in parts for seg in self.layout[p]]
        for p in parts[1:]:                                # cat along another dim: same channels
            self.unify(self.layout[parts[0]], self.layout[p], n)
        return self.checked(n, parts[0], out)

    def getitem_rule(self, n: fx.Node, out: Tensor) -> Layout:
        args, _ = self.concrete_args(n)
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        full = slice(None)
        if len(index) >= 2 and index[0] == full and index[1] == full:
            return self.checked(n, n.args[0], out)
        raise self.refuse(n, f"it indexes the channel dimension with {args[1]!r}")

    def pad_rule(self, n: fx.Node, out: Tensor) -> Layout:
        args, kwargs = self.concrete_args(n)
        src, layout = self.first_input(n)
        pad = list(args[1] if len(args) > 1 else kwargs["pad"])
        mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
        value = args[3] if len(args) > 3 else kwargs.get("value", None)
        ndim = len(self.shape[src])
        widths = {ndim - 1 - j: pad[2 * j: 2 * j + 2] for j in range(len(pad) // 2)}
        if any(widths.get(0, [])):
            raise self.refuse(n, "it pads the batch dimension")
        if any(widths.get(1, [])):
            # The "option A" shortcut of CIFAR ResNets: zero channels appended by F.pad. The pad
            # widths are constants in forward(), so the channels on both sides stay as they are.
            reason = f"padded on channels by F.pad at node '{n.name}' (option-A shortcut)"
            self.sets.pin(layout, reason)
            return [(self.sets.new(out.shape[1], pinned=reason), 1)]
        if mode == "constant" and value not in (None, 0, 0.0):
            raise self.refuse(n, f"padding with the constant {value} maps 0 to {value}")
        return self.checked(n, src, out)


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------

class eval_mode:
    """Context manager: every module in eval mode inside, each one's own flag restored after.

    Tracing and importance scoring must not touch BatchNorm running statistics, and restoring
    ``model.train()`` wholesale would lose per-module choices (e.g. a frozen BN in eval)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flags: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.flags:
            m.training = flag


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with an error message a student can act on."""
    try:
        return fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 -- fx raises many types; all mean the same here
        raise PruningError(
            f"torch.fx could not trace {type(model).__name__}: {e}. prunekit needs a forward() "
            "without Python control flow that depends on tensor values") from e


def build_graph(model: nn.Module, example_inputs: Tensor | Sequence[Tensor]) -> ChannelGraph:
    """Trace ``model`` once on ``example_inputs`` and return its coupled channel groups.

    The model is run in eval mode under ``torch.no_grad()`` (no BatchNorm statistic changes)
    and every module's train/eval flag is restored afterwards. The same forward pass is counted
    with ``FlopCounterMode`` so the "before" MACs come for free.
    """
    if not isinstance(model, nn.Module):
        raise PruningError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = as_input_tuple(example_inputs)
    tracer = _ChannelTracer(trace(model))
    with eval_mode(model), torch.no_grad():
        try:
            tracer.run(*inputs)
        except PruningError:
            raise
        except Exception as e:  # noqa: BLE001 -- a shape mismatch surfaces as many types
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            raise PruningError(
                f"running the model on example input(s) of shape {shapes} failed: {e}. Pass "
                "an example input shaped like one real batch, e.g. torch.randn(1, C, H, W) "
                "with the channels and size the model was built for") from e
    return _collect(tracer)


_ROLES = {"conv": {"out": "out", "in": "in"}, "linear": {"out": "out", "in": "in"},
          "gconv": {"out": "out", "in": "in"}, "bn": {"out": "bn"}, "dwconv": {"out": "dw"}}


def _collect(tracer: _ChannelTracer) -> ChannelGraph:
    """Turn union-find classes into numbered :class:`Group` s with their member layers."""
    sets = tracer.sets
    groups: dict[int, Group] = {}
    layouts: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for name, dims in tracer.dims.items():
        for dim, layout in dims.items():
            role = _ROLES[tracer.kinds[name]][dim]
            resolved, offset = [], 0
            for s, rep in layout:
                root = sets.find(s)
                if root not in groups:
                    groups[root] = Group(len(groups), sets.size[root], pinned=sets.pinned[root],
                                         is_output=sets.output[root], blocks=sets.blocks[root])
                groups[root].members.append(Member(name, role, offset, rep))
                resolved.append((groups[root].index, rep))
                offset += sets.size[root] * rep
            layouts.setdefault(name, {})[dim] = resolved
    return ChannelGraph(list(groups.values()), layouts, dict(tracer.kinds), tracer.mac_sites)

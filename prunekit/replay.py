"""Exact, cheaper re-evaluation of a network whose change is local: used by the oracle.

The oracle (:func:`prunekit.importance.oracle`) removes one channel at a time and measures
the loss: one evaluation per channel. Most of each forward pass is wasted work -- every layer
before the changed ones computes the same activations every time. :class:`SuffixReplay`
runs the traced model once per batch, keeps what flows into the changed part, and then
re-runs only the layers that can see the change. The result is identical to full forward
passes of the masked model (tests check this on VGG, ResNet and MobileNetV2 groups); only
the time differs (a 128-channel VGG layer: 2.8 s instead of 9.6 s).

This is an optimisation, not a lesson: read :mod:`prunekit.importance` first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PruningError

__all__ = ["SuffixReplay"]

LossFn = Callable[[Tensor, Tensor], Tensor]


class SuffixReplay:
    """Mean loss of a model whose parameters change only inside the ``changed`` modules,
    re-running only the part of the network that can see the change -- exact, not estimated.

    Everything *before* the group's first layer gives the same activations whichever channel
    we remove, so ``torch.fx`` traces the model once (as :func:`prunekit.graph.build_graph`
    does), each batch runs in full once, and the values that flow into the changed part (the
    *frontier*) are kept. Each evaluation starts from them. One more saving, also exact: a
    conv / linear / BatchNorm of the group whose input is unchanged outputs its old
    activations with the removed channel set to 0 (its rows, bias, gamma and beta are 0), so
    it is not re-run at all; nor is a per-channel layer of the group (BatchNorm, depthwise
    conv) whose input differs only in that channel. For a plain chain (VGG) an evaluation
    therefore costs only the layers after the studied one; in a ResNet, whose residual
    channel is written by every block of a stage, it re-runs the stage from its first block.
    """

    def __init__(self, gm: torch.fx.GraphModule, changed: dict[str, list[Tensor]],
                 taken: list[tuple[Tensor, Tensor]], loss_fn: LossFn) -> None:
        self.gm = gm
        self.loss_fn, self.taken, self.channel_index = loss_fn, taken, changed
        nodes = list(self.gm.graph.nodes)
        hit = {name: [n for n in nodes if _touches(n, name)] for name in changed}
        missing = [name for name, found in hit.items() if not found]
        if missing:
            raise PruningError(f"the traced model never calls {missing}; build the graph from "
                               "this model (build_graph(model, example_input))")
        self.roots = {n: name for name, found in hit.items() for n in found}
        self.downstream = _downstream(nodes, self.roots)
        self.suffix = [n for n in nodes if n in self.downstream]
        self.frontier = {a for n in self.suffix for a in n.all_input_nodes
                         if a not in self.downstream}
        self.output = next(n for n in nodes if n.op == "output")
        self.cached = [self._prefix(x) for x, _ in taken]
        self.reused: set[torch.fx.Node] = set()   # dense output with the channel's rows zeroed
        for n in self.suffix:
            if self._reusable(n):
                self.reused.add(n)
        self.needed = {a for n in self.suffix if n not in self.reused
                       for a in n.all_input_nodes if a in self.frontier}
        # a reused value read only by reused layers (the conv before its BN) is never built
        self.unread = {n for n in self.reused if all(u in self.reused for u in n.users)}

    def _reusable(self, n: torch.fx.Node) -> bool:
        if n not in self.roots or not _separable(self.gm, n, self.cached[0][n]):
            return False
        changed_inputs = [a for a in n.all_input_nodes if a in self.downstream]
        rows = self.channel_index[self.roots[n]]
        return not changed_inputs or (_per_channel(self.gm.get_submodule(n.target)) and all(
            a in self.reused and _same(self.channel_index[self.roots[a]], rows)
            for a in changed_inputs))

    @torch.no_grad()
    def _prefix(self, x: Tensor) -> dict:
        """One full run; keeps the frontier values and the base outputs of the changed layers."""
        keep, runner = {}, torch.fx.Interpreter(self.gm)
        run_node = runner.run_node

        def run_and_keep(node):
            if node in self.downstream:
                # a frontier value is kept when the suffix first reads it, so in-place ops
                # before that (ReLU(inplace=True)) are in it, as in a full forward pass
                keep.update({a: _clone(runner.env[a]) for a in node.all_input_nodes
                             if a in self.frontier and a not in keep})
            value = run_node(node)
            if node in self.roots or node is self.output:
                keep[node] = _clone(value)
            return value

        runner.run_node = run_and_keep
        runner.run(x)
        return keep

    @torch.no_grad()
    def loss(self, channel: int | None) -> float:
        """Mean loss per example with ``channel`` removed (None: the dense model)."""
        total = 0.0
        for (_, y), keep in zip(self.taken, self.cached):
            total += float(self.loss_fn(self._replay(keep, channel), y)) * len(y)
        return total / sum(len(y) for _, y in self.taken)

    def _replay(self, keep: dict, channel: int | None) -> Tensor:
        if self.output not in self.downstream:
            return keep[self.output]      # the change cannot reach the output
        replay = torch.fx.Interpreter(self.gm)
        reused = self.reused if channel is not None else set()
        needed = self.needed if channel is not None else self.frontier
        replay.env = {a: _clone(keep[a]) for a in needed}  # clone: `x += f(x)` writes into x
        for n in self.suffix:
            if n in reused:
                if n in self.unread:
                    continue
                out = keep[n].clone()
                out[:, self.channel_index[self.roots[n]][channel].to(out.device)] = 0
                replay.env[n] = out
            else:
                replay.env[n] = replay.run_node(n)
        return replay.env[self.output]


def _touches(node: torch.fx.Node, module: str) -> bool:
    """Does ``node`` run ``module`` (or a leaf containing it) or read one of its tensors?
    (``module`` may also name a parameter: ``blocks.0.gamma``.)"""
    target = node.target if isinstance(node.target, str) else ""
    if node.op == "call_module":
        return target == module or module.startswith(target + ".")
    return node.op == "get_attr" and (target == module or target.startswith(module + "."))


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _downstream(nodes: list[torch.fx.Node], roots: Any) -> set[torch.fx.Node]:
    """The roots and every node that depends on one (nodes come in topological order)."""
    down = set(roots)
    for n in nodes:
        if any(a in down for a in n.all_input_nodes):
            down.add(n)
    return down


def _separable(gm: torch.fx.GraphModule, node: torch.fx.Node, out: Any) -> bool:
    """A layer whose output channel c depends only on its own row c (filter + bias, or BN
    gamma + beta), on dim 1 of its output: zeroing that row zeroes exactly that channel."""
    if node.op != "call_module":
        return False
    m = gm.get_submodule(node.target)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.affine and not m.training
    if isinstance(m, nn.Linear):
        return isinstance(out, Tensor) and out.dim() == 2   # (batch, features) only
    return isinstance(m, nn.modules.conv._ConvNd)


def _per_channel(m: nn.Module) -> bool:
    """Output channel c depends on input channel c only (BatchNorm, depthwise conv)."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return True
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.in_channels == m.out_channels


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, Tensor) else value

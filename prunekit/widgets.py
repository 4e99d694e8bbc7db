"""Sliders for the lectures -- and the plain functions behind them.

A widget is only wiring. What a slider *does* lives in an ordinary function that takes
numbers and returns numbers, so it can be unit-tested and called from a notebook that runs
headless (where no slider is ever moved):

* :func:`explore_l1` -- prune ONE layer by L1 filter norm (Li et al., 2017) at a sparsity and
  report accuracy, MACs, parameters and latency of the result, plus the scores and the
  channels removed (for :func:`prunekit.viz.importance_panels`).
* :func:`explore_slimming` -- prune the WHOLE network with one global |gamma| threshold and a
  per-layer cap (network slimming, Liu et al., 2017;
  :func:`prunekit.planning.slimming_ratios`, also importable from here) and report
  survivors per layer.
* :func:`render_readout` -- either result as a few short HTML lines.

:func:`l1_explorer` and :func:`slimming_explorer` wire these to ipywidgets. They return a
:class:`prunekit.standin.ExplorerBox`: a saved notebook opened without a running kernel shows
a readable stand-in (what the explorer does, its first readout and figure) instead of the
widget's Python repr. The DOM classes (``pk-sparsity-slider``, ``pk-ratio-slider``,
``pk-layer-select``, ``pk-readout``, ``pk-figure``, and ``pk-standin`` for the stand-in) are a
contract with the browser test; keep them.

Every callback is meant to answer within about a second on the course's VGG and one CPU
thread: it evaluates on the loader you pass -- give it the 500-image validation split, not the
training set. Latency is the one number a slider could get wrong by accident: a single timing
on a shared laptop easily doubles from one move to the next. So the pruned copy is timed
*against the dense model*, both in the same interleaved rounds
(:func:`prunekit.metrics.compare_latency`) by the working thread's CPU time, and the readout
gives both medians with their spread and the ratio, and says whether the rounds agree on it
(:func:`prunekit.metrics.paired_comparison`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from .metrics import compare_latency, count_macs, count_params, paired_comparison
from .planning import slimming_ratios  # noqa: F401 -- lectures import it from here
from .train import evaluate, recalibrate_bn

__all__ = [
    "explore_l1", "explore_slimming", "slimming_ratios", "dense_reference", "render_readout",
    "latency_text", "pruned_vs_dense_latency", "conv_layer_names", "prunable_conv_names",
    "l1_explorer", "slimming_explorer",
]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the ordinary (``groups == 1``) convolutions: the layers a one-layer slider
    can prune on its own. (A depthwise conv's channels are its input's channels: it is
    pruned together with the layer feeding it, never alone.)"""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]


def prunable_conv_names(model: nn.Module, example_input: Tensor) -> list[str]:
    """The ordinary convolutions whose output channels prunekit may cut (not pinned, e.g. by
    a residual add that reaches the model input or output): the layer menu of
    :func:`l1_explorer`."""
    from .graph import build_graph

    graph = build_graph(model, example_input)
    cuttable = {m.module for g in graph.prunable_groups() for m in g.members if m.role == "out"}
    return [name for name in conv_layer_names(model) if name in cuttable]


def dense_reference(model: nn.Module, example_input: Tensor, loader: Iterable) -> dict:
    """The unpruned model's ``dense_accuracy, dense_macs, dense_params``: measured once by a
    widget and passed to every callback, so moving a slider does not re-evaluate it."""
    return {"dense_accuracy": evaluate(model, loader).accuracy,
            "dense_macs": count_macs(model, example_input), "dense_params": count_params(model)}


#: The latency entries of a result; all NaN when timing is skipped (``latency_repeats=0``).
LATENCY_KEYS = ("latency_ms", "latency_iqr_ms", "dense_latency_ms", "dense_latency_iqr_ms",
                "latency_ratio", "latency_faster_rounds", "latency_rounds", "latency_p_value", "latency_runs",
                "latency_clock")


def pruned_vs_dense_latency(dense: nn.Module, pruned: nn.Module, example_input: Tensor,
                            rounds: int = 9, repeats: int = 4) -> dict:
    """Time ``pruned`` against ``dense`` on ``example_input`` (one thread, CPU time of the
    working thread), ``repeats`` runs of each in every one of ``rounds`` interleaved rounds.

    A slow spell on a shared machine then hits both models alike, and the ratio of the two
    medians *within a round* is untouched by it. Returns the medians and IQRs in ms over all
    ``rounds * repeats`` runs (``latency_ms`` and ``latency_iqr_ms`` are the pruned model's),
    ``latency_ratio`` (pruned / dense, median over rounds), ``latency_faster_rounds`` (rounds
    in which the pruned model was faster), the sign test's ``latency_p_value`` over them,
    ``latency_runs`` (runs per model) and ``latency_clock`` (``"cpu"``; on a CUDA GPU
    ``"cuda events"``, the GPU's own time: see :func:`prunekit.metrics.latency_samples`)."""
    times = compare_latency({"dense": dense, "pruned": pruned}, example_input, threads=1,
                            rounds=rounds, repeats=repeats, warmup=2, clock="cpu")
    paired = paired_comparison(times["dense"], times["pruned"])
    return {
        "latency_ms": times["pruned"].median_ms, "latency_iqr_ms": times["pruned"].iqr_ms,
        "dense_latency_ms": times["dense"].median_ms, "dense_latency_iqr_ms": times["dense"].iqr_ms,
        "latency_ratio": paired.ratio, "latency_faster_rounds": paired.rounds - paired.slower,
        "latency_rounds": paired.rounds, "latency_p_value": paired.p_value, "latency_runs": rounds * repeats,
        "latency_clock": times["pruned"].clock,
    }


def _measure(dense: nn.Module, pruned: nn.Module, example_input: Tensor, loader: Iterable,
             latency_rounds: int, latency_repeats: int) -> dict:
    result = evaluate(pruned, loader)
    latency = pruned_vs_dense_latency(dense, pruned, example_input, latency_rounds, latency_repeats) \
        if latency_repeats > 0 else dict.fromkeys(LATENCY_KEYS, float("nan"))
    return {
        "accuracy": result.accuracy, "correct": result.correct, "total": result.total,
        "macs": count_macs(pruned, example_input), "params": count_params(pruned), **latency,
    }


def explore_l1(model: nn.Module, layer: str, sparsity: float, example_input: Tensor, loader: Iterable,
               recalibrate_loader: Iterable | None = None, recal_batches: int = 5,
               latency_repeats: int = 4, dense: dict | None = None, latency_rounds: int = 9) -> dict:
    """Remove the ``sparsity`` share (``floor(sparsity * n)`` channels) of ``layer``'s output
    channels with the smallest L1 norm ``||W_j||_1`` and measure the pruned copy (``model``
    itself is never changed). Only that layer's channel group is cut: its BatchNorm and the
    next layer's inputs follow, every other layer stays as it is.

    Returns a dict: ``layer, sparsity, channels, removed`` (indices), ``scores`` (L1 norm per
    channel), ``accuracy, correct, total, macs, params`` of the pruned model, its latency
    against the original's (:func:`pruned_vs_dense_latency`: ``latency_ms, dense_latency_ms,
    latency_ratio, ...``, timed in ``latency_rounds`` rounds of ``latency_repeats`` runs each)
    and ``dense_accuracy, dense_macs, dense_params`` of the original (from ``dense`` if given,
    see :func:`dense_reference`). With a ``recalibrate_loader`` the pruned model's BatchNorm
    statistics are re-measured on ``recal_batches`` batches first (see
    :func:`prunekit.train.recalibrate_bn`). ``latency_repeats=0`` skips timing (NaN)."""
    from .importance import l1_norm
    from .planning import prune

    modules = dict(model.named_modules())
    if layer not in modules or not isinstance(modules[layer], nn.Conv2d):
        raise ValueError(f"explore_l1: {layer!r} is not a Conv2d of this model; "
                         f"choose one of {conv_layer_names(model)}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"explore_l1: sparsity must be in [0, 1), got {sparsity}")
    scores = l1_norm(modules[layer])
    result = prune(model, example_input, ratio=0.0, ratios={layer: sparsity}, importance="l1")
    pruned = result.model
    if recalibrate_loader is not None and result.removed:
        recalibrate_bn(pruned, recalibrate_loader, batches=recal_batches)
    return {
        "layer": layer, "sparsity": float(sparsity), "channels": int(scores.numel()),
        "removed": list(result.removed.get(layer, [])), "scores": scores.detach().clone(),
        **_measure(model, pruned, example_input, loader, latency_rounds, latency_repeats),
        **(dense or dense_reference(model, example_input, loader)),
    }


def explore_slimming(model: nn.Module, ratio: float, example_input: Tensor, loader: Iterable,
                     max_ratio: float = 0.9, recalibrate_loader: Iterable | None = None,
                     recal_batches: int = 5, latency_repeats: int = 4, dense: dict | None = None,
                     latency_rounds: int = 9) -> dict:
    """Prune a copy of ``model`` by network slimming's global |gamma| threshold with a
    per-layer cap (:func:`prunekit.planning.slimming_ratios`) and measure it.

    Returns a dict: ``ratio, max_ratio, removed_share`` (what was really removed),
    ``per_layer`` (``{BatchNorm name: (kept, total)}``) and the same measurements as
    :func:`explore_l1` (``accuracy, macs, ...`` and ``dense_*``)."""
    from .planning import prune, slimming_ratios

    ratios = slimming_ratios(model, example_input, ratio, max_ratio)
    pruned = prune(model, example_input, ratio=0.0, ratios=ratios, importance="bn_scale",
                   max_ratio=max_ratio).model
    if recalibrate_loader is not None and any(ratios.values()):
        recalibrate_bn(pruned, recalibrate_loader, batches=recal_batches)
    before = {n: m.num_features for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    after = {n: m.num_features for n, m in pruned.named_modules() if isinstance(m, nn.BatchNorm2d)}
    return {
        "ratio": float(ratio), "max_ratio": float(max_ratio),
        "removed_share": 1 - sum(after.values()) / sum(before.values()),
        "per_layer": {n: (after[n], before[n]) for n in before},
        **_measure(model, pruned, example_input, loader, latency_rounds, latency_repeats),
        **(dense or dense_reference(model, example_input, loader)),
    }


def render_readout(result: dict) -> str:
    """A few HTML lines with the numbers of an :func:`explore_l1` or :func:`explore_slimming`
    result: accuracy (with the correct count), MACs and parameters (with the change against
    the dense model), and latency (:func:`latency_text`)."""
    def change(new: float, old: float) -> str:
        return f"{(new - old) / old:+.1%}" if old else "n/a"

    if "layer" in result:
        kept = result["channels"] - len(result["removed"])
        head = (f"<b>{html.escape(result['layer'])}</b>: {kept}/{result['channels']} channels kept "
                f"(sparsity {result['sparsity']:.0%})")
    else:
        layers = ", ".join(f"{html.escape(n)} {k}/{t}" for n, (k, t) in result["per_layer"].items())
        head = (f"<b>global |gamma| ratio {result['ratio']:.0%}</b> (cap {result['max_ratio']:.0%} per layer, "
                f"{result['removed_share']:.1%} removed); channels kept: {layers}")
    return (f"<div class='pk-readout-text'>{head}<br>"
            f"accuracy {result['accuracy']:.2%} ({result['correct']}/{result['total']}; "
            f"dense {result['dense_accuracy']:.2%}) &middot; "
            f"MACs {result['macs'] / 1e6:.2f} M ({change(result['macs'], result['dense_macs'])}) &middot; "
            f"params {result['params']:,} ({change(result['params'], result['dense_params'])})<br>"
            f"{html.escape(latency_text(result))}</div>")


#: How each clock of :func:`pruned_vs_dense_latency` is named in a readout.
CLOCK_WORDS = {"cpu": "1 thread, CPU time", "cuda events": "GPU time by CUDA events", "wall": "wall clock"}


def latency_text(result: dict) -> str:
    """The latency of a result in words: both medians with their IQR, and the ratio with how
    many rounds agree on its direction. "Faster" or "slower" is said only when the sign test
    over the rounds is clear (p < 0.05: at least 8 of 9 rounds); otherwise "no clear
    difference" -- at a low sparsity the two models really are about as fast."""
    if result["latency_ms"] != result["latency_ms"]:  # NaN: timing was skipped
        return "latency: not measured"
    ratio, rounds = result["latency_ratio"], result["latency_rounds"]
    faster = result["latency_faster_rounds"]
    if result["latency_p_value"] >= 0.05:
        verdict = f"no clear difference (pruned/dense {ratio:.2f}, faster in {faster} of {rounds} rounds)"
    elif ratio < 1:
        verdict = f"pruned/dense {ratio:.2f}: faster in {faster} of {rounds} rounds"
    else:
        verdict = f"pruned/dense {ratio:.2f}: slower in {rounds - faster} of {rounds} rounds"
    clock = CLOCK_WORDS.get(result.get("latency_clock", "cpu"), result.get("latency_clock"))
    return (f"latency per forward pass, pruned vs dense timed in the same {rounds} rounds "
            f"({clock}, median [IQR] of {result['latency_runs']} runs each): "
            f"pruned {result['latency_ms']:.2f} ms [{result['latency_iqr_ms']:.2f}], "
            f"dense {result['dense_latency_ms']:.2f} ms [{result['dense_latency_iqr_ms']:.2f}]; {verdict}")


# ----------------------------------------------------------------------------- wiring
def _figure_output():
    import ipywidgets as w

    out = w.Output()
    out.add_class("pk-figure")
    return out


def _show(out, fig, box=None, readout_html: str = "") -> None:
    """Draw ``fig`` into the Output ``out``; the first time (``box`` has no snapshot yet) also
    keep it, with the readout, as the stand-in of ``box`` (:mod:`prunekit.standin`)."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    if box is not None and not box.snapshot_html:
        box.snapshot(readout_html, fig)
    with out:
        out.clear_output(wait=True)
        display(fig)
    plt.close(fig)  # the Output keeps the rendered image; the live figure would leak memory


def l1_explorer(model: nn.Module, example_input: Tensor, loader: Iterable, layers: Sequence[str] | None = None,
                sparsity: float = 0.5, recalibrate_loader: Iterable | None = None,
                latency_repeats: int = 4, layer: str | None = None, latency_rounds: int = 9):
    """A sparsity slider and a layer menu over :func:`explore_l1`; redraws the importance
    panels and the readout when either changes. ``layers`` are the menu's choices (default:
    every conv prunekit can cut), ``layer`` the first one shown. Returns an
    :class:`~prunekit.standin.ExplorerBox` (an ``ipywidgets.VBox``) whose ``.result``
    attribute holds the latest :func:`explore_l1` dict."""
    import ipywidgets as w

    from .standin import ExplorerBox
    from .viz import importance_panels

    names = list(layers) if layers is not None else prunable_conv_names(model, example_input)
    slider = w.FloatSlider(value=sparsity, min=0.0, max=0.9, step=0.05, description="sparsity",
                           continuous_update=False, readout_format=".0%")
    slider.add_class("pk-sparsity-slider")
    if layer is not None and layer not in names:
        raise ValueError(f"l1_explorer: layer {layer!r} is not among {names}")
    menu = w.Dropdown(options=names, value=layer or names[0], description="layer")
    menu.add_class("pk-layer-select")
    readout = w.HTML()
    readout.add_class("pk-readout")
    out = _figure_output()
    box = ExplorerBox([w.HBox([menu, slider]), readout, out],
                      what="prune one layer by L1 norm: a layer menu and a sparsity slider")
    dense = dense_reference(model, example_input, loader)

    def update(_change=None) -> None:
        box.result = explore_l1(model, menu.value, slider.value, example_input, loader,
                                recalibrate_loader=recalibrate_loader, latency_repeats=latency_repeats,
                                dense=dense, latency_rounds=latency_rounds)
        readout.value = render_readout(box.result)
        _show(out, importance_panels(box.result["scores"], box.result["removed"], layer=menu.value),
              box, readout.value)

    slider.observe(update, names="value")
    menu.observe(update, names="value")
    update()
    return box


def slimming_explorer(model: nn.Module, example_input: Tensor, loader: Iterable, ratio: float = 0.5,
                      max_ratio: float = 0.9, recalibrate_loader: Iterable | None = None,
                      latency_repeats: int = 4, latency_rounds: int = 9):
    """A global-ratio slider over :func:`explore_slimming`; redraws the per-layer survivors
    and the readout. Returns an :class:`~prunekit.standin.ExplorerBox` (an
    ``ipywidgets.VBox``) with the latest result in ``.result``."""
    import ipywidgets as w

    from .standin import ExplorerBox
    from .viz import channel_counts

    slider = w.FloatSlider(value=ratio, min=0.0, max=0.9, step=0.05, description="ratio",
                           continuous_update=False, readout_format=".0%")
    slider.add_class("pk-ratio-slider")
    readout = w.HTML()
    readout.add_class("pk-readout")
    out = _figure_output()
    box = ExplorerBox([slider, readout, out],
                      what="network slimming: one global |gamma| threshold, set by a ratio slider")
    dense = dense_reference(model, example_input, loader)

    def update(_change=None) -> None:
        box.result = explore_slimming(model, slider.value, example_input, loader, max_ratio=max_ratio,
                                      recalibrate_loader=recalibrate_loader, latency_repeats=latency_repeats,
                                      dense=dense, latency_rounds=latency_rounds)
        readout.value = render_readout(box.result)
        per_layer = box.result["per_layer"]
        fig = channel_counts({"original": {n: t for n, (_, t) in per_layer.items()},
                              f"kept at global ratio {slider.value:.0%}": {n: k for n, (k, _) in per_layer.items()}},
                             title=f"Survivors per layer, global |gamma| threshold, cap {max_ratio:.0%}")
        _show(out, fig, box, readout.value)

    slider.observe(update, names="value")
    update()
    return box

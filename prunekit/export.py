"""Saving and reloading a pruned model -- whose shapes no longer match its class's defaults.

The problem: ``torch.save(model.state_dict())`` stores tensors only. To load them you build
the model and call ``load_state_dict``; but ``vgg_small()`` builds 64 channels where the pruned
model has 32, and loading fails with a size-mismatch error. Two ways out, both here:

1. **Architecture spec + weights** (:func:`save_pruned` / :func:`load_pruned`). Next to the
   state_dict we store, for every Conv2d / BatchNorm2d / Linear, the constructor arguments
   it now has (channels, groups, kernel, ...), plus the builder's name and, for the record,
   which channels were removed. Loading builds the dense model, swaps in layers of the
   stored shapes, and loads the weights with ``strict=True``. The file holds only tensors
   and plain Python values, so it loads with ``torch.load(weights_only=True)`` -- no
   pickled code runs. It needs the model's *class* (Python code) to rebuild the graph.
2. **A self-contained program** (:func:`export_program` / :func:`load_program`):
   ``torch.export`` traces the forward pass into a graph of ATen ops with the weights
   inside. Loading needs no model class at all -- the right artefact for deployment -- but
   the result is a fixed graph (no ``.train()`` semantics, no further pruning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .device import device_of

__all__ = ["FORMAT", "layer_spec", "architecture_spec", "apply_spec", "save_pruned", "load_pruned",
           "export_program", "load_program"]

FORMAT = "prunekit.pruned/1"


def layer_spec(module: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments that define a layer's shape, or None for layers without
    shape (ReLU, pooling) -- those need no rebuilding."""
    if isinstance(module, nn.Conv2d):
        return {"type": "Conv2d", "in_channels": module.in_channels, "out_channels": module.out_channels,
                "kernel_size": list(module.kernel_size), "stride": list(module.stride),
                "padding": list(module.padding) if not isinstance(module.padding, str) else module.padding,
                "dilation": list(module.dilation), "groups": module.groups, "bias": module.bias is not None,
                "padding_mode": module.padding_mode}
    if isinstance(module, nn.BatchNorm2d):
        return {"type": "BatchNorm2d", "num_features": module.num_features, "eps": module.eps,
                "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in_features": module.in_features, "out_features": module.out_features,
                "bias": module.bias is not None}
    return None


def architecture_spec(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{qualified module name: layer_spec}`` for every shaped layer of ``model``."""
    return {name: spec for name, m in model.named_modules() if name and (spec := layer_spec(m)) is not None}


def _build_layer(spec: Mapping[str, Any]) -> nn.Module:
    kind = spec["type"]
    args = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "type"}
    if kind == "Conv2d":
        return nn.Conv2d(**args)
    if kind == "BatchNorm2d":
        return nn.BatchNorm2d(**args)
    if kind == "Linear":
        return nn.Linear(**args)
    raise ValueError(f"unknown layer type {kind!r} in a saved architecture spec (known: Conv2d, BatchNorm2d, Linear)")


def apply_spec(model: nn.Module, spec: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Replace, in place, every layer whose shape differs from ``spec`` by a fresh layer of the
    stored shape (weights are loaded afterwards). Returns ``model``."""
    modules = dict(model.named_modules())
    for name, layer in spec.items():
        if name not in modules:
            raise ValueError(f"the saved architecture has a layer {name!r} that the rebuilt model lacks: "
                             "was it saved from a different architecture?")
        if layer_spec(modules[name]) == dict(layer):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _build_layer(layer))
    return model


def save_pruned(model: nn.Module, path: str | Path, architecture: str, in_channels: int = 1,
                num_classes: int = 10, removed: Mapping[str, list[int]] | None = None,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a (pruned) model as builder name + per-layer shapes + state_dict.

    ``architecture`` is the name passed to :func:`prunekit.models.build_model` when loading
    (or any name, if you give :func:`load_pruned` your own ``builder``). ``removed`` -- e.g.
    ``PruneResult.removed`` -- is stored for the record: which original channels are gone.
    ``metadata`` must be plain values (numbers, strings, lists, dicts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "architecture": architecture,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "spec": architecture_spec(model),
        "removed": {k: [int(i) for i in v] for k, v in (removed or {}).items()},
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)
    return path


def load_pruned(path: str | Path, builder: Callable[..., nn.Module] | None = None,
                device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned`; returned in eval mode on ``device``
    (the file always holds CPU tensors: it loads on any machine).

    The file is read with ``weights_only=True`` (tensors and plain values only). ``builder``
    (default: :func:`prunekit.models.build_model` by the stored name) must build the *dense*
    architecture from ``in_channels=..., num_classes=...``.
    """
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a prunekit pruned-model file (expected format {FORMAT!r}); "
                         "save it with prunekit.export.save_pruned")
    if builder is None:
        from .models import build_model

        model = build_model(payload["architecture"], payload["in_channels"], payload["num_classes"])
    else:
        model = builder(in_channels=payload["in_channels"], num_classes=payload["num_classes"])
    apply_spec(model, payload["spec"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.to(device).eval()


def export_program(model: nn.Module, example_input: Tensor, path: str | Path,
                   dynamic_batch: bool = True) -> Path:
    """Save ``model``'s forward pass as a self-contained ``torch.export`` program (``.pt2``).

    The model is exported in eval mode (inference BatchNorm). With ``dynamic_batch`` the batch
    dimension stays symbolic, so the loaded program accepts any batch size >= 1; the example
    input should then have a batch of at least 2 (a batch of 1 is treated as a constant).
    """
    from torch.export import Dim, export, save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The program stores its example input. A slice of a loader's batch is a *view*, and
    # saving a view saves the whole tensor behind it (a 2-image slice of the MNIST test
    # batch carried 1.57 MB): store a compact copy, on the model's device.
    example_input = example_input.detach().to(device_of(model)).clone(
        memory_format=torch.contiguous_format)
    was_training = model.training
    model.eval()
    try:
        shapes = ({0: Dim("batch", min=1, max=4096)},) if dynamic_batch else None
        program = export(model, (example_input,), dynamic_shapes=shapes)
    finally:
        model.train(was_training)
    save(program, path)
    return path


def load_program(path: str | Path) -> nn.Module:
    """Load a program saved by :func:`export_program`; call it like the original model.
    It runs on the device it was exported on (its weights are constants of the graph)."""
    from torch.export import load

    return load(Path(path)).module()

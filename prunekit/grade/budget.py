"""The measurement behind a design challenge: a pruned model's MACs and test accuracy, taken by the grader.

A design challenge asks for a model under a MAC budget and above an accuracy target (in the
spirit of MIT 6.5940's Lab 1). The student's kernel could report any numbers it likes, so the
grader measures the *file* the notebook handed in (:func:`prunekit.grade.hand_in`), in a fresh
sandbox of its own (:func:`prunekit.grade.checks.run_check`)::

    python -m prunekit.grade.budget FILE --dataset mnist_hard --architectures vgg_small

prints one JSON object: ``valid`` (and ``problem`` when it is not), the architecture, per-layer
widths, ``macs`` and ``dense_macs`` (:func:`prunekit.metrics.count_macs` on one input of the
data set), ``params``, and ``correct`` / ``total`` on the data set's held-out *test* split
(:func:`prunekit.data.make_splits`, seed 0 -- the split the course's loaders use). The grader
compares these with the exercise's budget and target in its own process
(:mod:`prunekit.grade.checks`); this module only measures.

What counts as a pruned model -- and why each rule exists:

* the file is a :func:`prunekit.export.save_pruned` file, read with ``torch.load(...,
  weights_only=True)``: tensors and plain values only, so no pickled code can run here;
* its architecture is one the exercise allows *and* a prunekit builder
  (:data:`prunekit.models.MODEL_BUILDERS`): the forward pass is prunekit's code, never the
  student's, so the MACs counted are the MACs the model costs;
* every layer has the dense layer's kernel, stride, padding, ... and may differ only in its
  widths (channels, features), each at most the dense width: a stride of 2 or a 1x1 kernel
  would cut MACs too, but that is a different network, not a pruned one;
* no ``torch.nn.utils.prune`` re-parametrisation (``weight_orig`` / ``weight_mask``): a
  masked model keeps every channel, and with its masks made permanent it still has the dense
  model's MACs -- zeros are multiplied like any other number (lecture 01).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

WIDTH_FIELDS = {"in_channels", "out_channels", "num_features", "in_features", "out_features"}
IGNORED_FIELDS = {"momentum"}  # BatchNorm's momentum has no effect in eval mode
MASK_SUFFIXES = ("_orig", "_mask")


class NotAPrunedModel(ValueError):
    """The handed-in file is not a plain pruned model of an allowed architecture (says why)."""


def read_payload(path: str | Path) -> dict[str, Any]:
    """The saved dictionary, loaded without running pickled code; refused if not a save_pruned file."""
    import pickle

    import torch

    from prunekit.export import FORMAT

    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError,
            AttributeError, ImportError, KeyError, IndexError) as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        why = f"it would call {found.group(1)} while loading" if found else type(err).__name__
        raise NotAPrunedModel(f"torch.load(weights_only=True) refuses the file ({why}); a save_pruned file holds "
                              "only tensors and plain values -- save it with prunekit.export.save_pruned") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NotAPrunedModel(f"not a prunekit pruned-model file (format {FORMAT!r}); "
                              "save it with prunekit.export.save_pruned")
    for key, kind in (("architecture", str), ("spec", dict), ("state_dict", dict),
                      ("in_channels", int), ("num_classes", int)):
        if not isinstance(payload.get(key), kind):
            raise NotAPrunedModel(f"the file's {key!r} entry is missing or not a {kind.__name__}")
    return payload


def refuse_masks(state_dict: dict) -> None:
    """``torch.nn.utils.prune`` leaves ``<name>_orig`` and ``<name>_mask`` in the state dict."""
    masked = sorted(k for k in state_dict if isinstance(k, str) and k.endswith(MASK_SUFFIXES))
    if masked:
        raise NotAPrunedModel(
            f"the model carries pruning masks ({', '.join(masked[:3])}{', ...' if len(masked) > 3 else ''}): "
            "a masked model keeps every channel and costs the dense model's MACs; remove the channels "
            "(prunekit.prune, or surgery as in exercises 2-6) instead")


def compare_spec(dense: dict[str, dict], saved: dict) -> None:
    """Every saved layer is the dense layer of the same name, changed only in its widths."""
    missing = sorted(set(dense) - set(saved))
    extra = sorted(set(saved) - set(dense))
    if missing or extra:
        raise NotAPrunedModel(f"the saved layers do not match the architecture (missing {missing[:3]}, "
                              f"unknown {extra[:3]})")
    for name, want in dense.items():
        got = saved[name]
        if not isinstance(got, dict) or got.get("type") != want["type"]:
            raise NotAPrunedModel(f"layer {name!r}: expected a {want['type']}")
        for field, value in want.items():
            if field in IGNORED_FIELDS or field in WIDTH_FIELDS:
                continue
            if field == "groups" and value > 1 and value == want["in_channels"]:  # depthwise: follows the width
                if got.get("groups") != got.get("in_channels"):
                    raise NotAPrunedModel(f"layer {name!r}: a depthwise conv must keep groups == in_channels")
                continue
            if got.get(field) != value:
                raise NotAPrunedModel(f"layer {name!r}: {field} is {got.get(field)!r}, the architecture has "
                                      f"{value!r}; only widths (channels, features) may change")
        for field in WIDTH_FIELDS & set(want):
            width = got.get(field)
            if type(width) is not int or not 1 <= width <= want[field]:
                raise NotAPrunedModel(f"layer {name!r}: {field} = {width!r}; it must be between 1 and the "
                                      f"dense width {want[field]}")


def load_model(path: str | Path, allowed: list[str], dataset: str):
    """``(architecture, model, dense model)``: the handed-in model rebuilt by prunekit's own
    builder, in eval mode, and a dense one to compare with; anything else is refused, saying why."""
    import torch

    from prunekit.data import SPECS
    from prunekit.export import apply_spec, architecture_spec
    from prunekit.models import MODEL_BUILDERS, build_model

    payload = read_payload(path)
    name = payload["architecture"]
    if name not in allowed or name not in MODEL_BUILDERS:
        raise NotAPrunedModel(f"architecture {name!r} is not allowed here; this exercise accepts "
                              f"{', '.join(allowed)}")
    spec = SPECS[dataset]
    if (payload["in_channels"], payload["num_classes"]) != (spec.in_channels, spec.num_classes):
        raise NotAPrunedModel(f"the model takes {payload['in_channels']} channels and predicts "
                              f"{payload['num_classes']} classes; {dataset} needs {spec.in_channels} and "
                              f"{spec.num_classes}")
    refuse_masks(payload["state_dict"])
    model = build_model(name, spec.in_channels, spec.num_classes, spec.image_size)
    dense = architecture_spec(model)
    compare_spec(dense, payload["spec"])
    try:
        apply_spec(model, payload["spec"])
        model.load_state_dict(payload["state_dict"], strict=True)
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size))
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise NotAPrunedModel(f"the saved weights do not fit the saved layers: {first}") from None
    if tuple(out.shape) != (2, spec.num_classes) or not torch.isfinite(out).all():
        raise NotAPrunedModel(f"the model must output {spec.num_classes} finite class scores per image")
    return name, model, build_model(name, spec.in_channels, spec.num_classes, spec.image_size)


def measure(path: str | Path, dataset: str, allowed: list[str]) -> dict[str, Any]:
    """The JSON report: ``valid`` (+ ``problem``), or the model's widths, MACs and test accuracy."""
    try:
        name, model, dense = load_model(path, allowed, dataset)
    except NotAPrunedModel as err:
        return {"valid": False, "problem": str(err)}
    import torch

    from prunekit.data import example_input, make_splits
    from prunekit.metrics import count_macs, count_params

    x = example_input(dataset)
    test = make_splits(dataset, seed=0).test
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 500):
            images, labels = test[start:start + 500]
            correct += int((model(images).argmax(1) == labels).sum())
    return {"valid": True, "architecture": name, "dataset": dataset,
            "widths": [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)],
            "macs": count_macs(model, x), "dense_macs": count_macs(dense, x), "params": count_params(model),
            "correct": correct, "total": len(test)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m prunekit.grade.budget", description=__doc__.split("\n")[0])
    p.add_argument("file", help="the handed-in save_pruned file")
    p.add_argument("--dataset", required=True, help="data set whose test split is measured (e.g. mnist_hard)")
    p.add_argument("--architectures", required=True, help="comma-separated builder names the exercise allows")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.file, args.dataset, args.architectures.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

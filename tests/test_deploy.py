"""prunekit.deploy: a pruned model exported to ONNX and run by ONNX Runtime computes what
PyTorch computes (1e-4), at any batch size, for every model of the zoo."""

from __future__ import annotations

import copy

import pytest
import torch

import prunekit
from prunekit.data import make_loaders
from prunekit.deploy import OnnxRuntimeModel, export_onnx, max_abs_error
from prunekit.fold import fold_batchnorm
from prunekit.metrics import measure_latency
from prunekit.zoo import list_pretrained, load_pretrained

pytest.importorskip("onnxruntime", reason="ONNX Runtime is in the test and deploy extras")
pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return next(iter(make_loaders("mnist", seed=0, eval_batch_size=128).test))[0]


@pytest.mark.parametrize("name", list_pretrained())
def test_onnx_runtime_equals_pytorch_for_every_pruned_zoo_model(name, images, tmp_path):
    pruned = prunekit.prune(load_pretrained(name), images[:1], ratio=0.5).model.train()
    state = copy.deepcopy(pruned.state_dict())
    path = export_onnx(pruned, images[:2], tmp_path / f"{name}.onnx")
    assert pruned.training and all(torch.equal(v, state[k]) for k, v in pruned.state_dict().items())
    assert list(tmp_path.iterdir()) == [path]            # weights inside, no external data file
    runtime = OnnxRuntimeModel(path)
    for batch in (images[:1], images[:7], images):       # the batch dimension is dynamic
        error = max_abs_error(pruned, runtime, batch)
        assert error < TOLERANCE, f"{name}, batch {len(batch)}: {error:.2e}"
    assert pruned.training                               # max_abs_error restored the mode


def test_a_folded_pruned_model_exports_the_same(images, tmp_path):
    pruned = prunekit.prune(load_pretrained("mobilenetv2_small"), images[:1], ratio=0.5).model
    folded = fold_batchnorm(pruned)
    runtime = OnnxRuntimeModel(export_onnx(folded, images[:2], tmp_path / "f.onnx"))
    assert max_abs_error(pruned, runtime, images) < TOLERANCE


def test_onnx_runtime_model_is_timed_like_any_model(images, tmp_path):
    runtime = OnnxRuntimeModel(export_onnx(load_pretrained("vgg_small"), images[:2],
                                           tmp_path / "v.onnx"), threads=1)
    assert runtime(images[:3]).shape == (3, 10) and "threads=1" in repr(runtime)
    lat = measure_latency(runtime, images[:1], repeats=3, warmup=1)
    assert lat.median_ms > 0 and lat.device == "cpu"


def test_a_wrong_export_is_caught(images, tmp_path):
    """The comparison can fail: a model changed after export no longer matches its file."""
    model = load_pretrained("resnet8")
    runtime = OnnxRuntimeModel(export_onnx(model, images[:2], tmp_path / "r.onnx"))
    with torch.no_grad():
        model.fc.bias += 1e-3
    assert max_abs_error(model, runtime, images) > TOLERANCE

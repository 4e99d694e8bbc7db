"""Nothing in prunekit hard-codes the CPU: every entry point runs on a second device.

On a machine without a GPU that device is ``fakegpu`` (``tests/fake_device.py``): a real
PyTorch device type whose kernels are the CPU's, so its results must equal the CPU's *bit for
bit*, and which fails -- as CUDA does -- whenever a CPU tensor meets one of its tensors. With
a CUDA GPU (``make test-gpu``, or any run where ``prunekit.device.default_device()`` is
``cuda``) every test also runs on the GPU, compared with the CPU within float tolerance.
The ``meta`` device (shapes without data) checks that planning, cutting and counting need no
data at all.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import fake_device
import prunekit
from prunekit.testing import assert_prunes_exactly
from prunekit import data, deploy, export, fold, importance, metrics, train as T
from prunekit.device import ENV, default_device, device_of, to_device
from prunekit.models import build_model
from prunekit.zoo import load_pretrained

FAKE = fake_device.register()
SECOND = ["fakegpu"] + (["cuda"] if default_device().type == "cuda" else [])
CRITERIA = ["l1", "l2", "bn_scale", "fpgm", "random", "taylor", "taylor_bn", "oracle"]


@pytest.fixture(params=SECOND)
def device(request) -> torch.device:
    return FAKE if request.param == "fakegpu" else torch.device(request.param)


def _exact(device: torch.device) -> bool:
    """The fake device runs the CPU's kernels: its results are the CPU's, bit for bit."""
    return device.type == fake_device.NAME


def _same(a: torch.Tensor, b: torch.Tensor, device: torch.device, atol: float = 1e-4,
          exact: bool | None = None) -> None:
    """Equal bit for bit on the fake device (unless ``exact=False``: a different computation,
    such as a folded or exported model, rounds differently), else within ``atol``."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if _exact(device) if exact is None else exact:
        assert torch.equal(a, b), f"max difference {(a - b).abs().max()}"
    else:
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


def _on(model: nn.Module, device: torch.device) -> bool:
    return all(t.device == device for t in [*model.parameters(), *model.buffers()])


@pytest.fixture(scope="module")
def digits():
    loaders = data.make_loaders("digits", batch_size=32, seed=0)
    small = DataLoader(Subset(loaders.train.dataset, range(256)), batch_size=32, shuffle=True,
                       drop_last=True, generator=torch.Generator().manual_seed(0))
    return small, loaders.test


# ----------------------------------------------------------------------------- the devices
def test_the_fake_device_refuses_a_cpu_tensor_as_cuda_does():
    """Without this, every test below could pass on a library that hard-codes the CPU."""
    conv = nn.Conv2d(1, 2, 3).to(FAKE)
    assert conv.weight.device == FAKE and torch.zeros(2, device=FAKE).device == FAKE
    with pytest.raises(RuntimeError, match="same device"):
        conv(torch.zeros(1, 1, 5, 5))                              # a forgotten .to(device)
    with pytest.raises(RuntimeError, match="same device"):
        conv.weight.data.index_fill_(0, torch.tensor([0]), 0.0)   # a CPU index
    x = torch.randn(1, 1, 5, 5)
    assert torch.equal(conv(x.to(FAKE)).cpu(), conv.cpu()(x))       # and it computes


def test_default_device_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv(ENV, "cpu")
    assert default_device() == torch.device("cpu")
    monkeypatch.setenv(ENV, "gpu please")
    with pytest.raises(ValueError, match="not a device name"):
        default_device()
    if not torch.cuda.is_available():
        monkeypatch.setenv(ENV, "cuda")
        with pytest.raises(RuntimeError, match="no usable CUDA"):
            default_device()


def test_to_device_and_device_of():
    from collections import namedtuple

    Pair = namedtuple("Pair", "x y")
    batch = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": Pair(torch.ones(1), "label")}
    moved = to_device(batch, FAKE)
    assert moved["a"][0].device == FAKE and moved["a"][1][0].device == FAKE
    assert moved["a"][1][1] == 3 and isinstance(moved["b"], Pair) and moved["b"].y == "label"
    assert device_of(nn.ReLU()) == torch.device("cpu")
    assert device_of(nn.BatchNorm2d(2, affine=False).to(FAKE)) == FAKE     # buffers only


# ----------------------------------------------------------------------------- training
def _train_all(model: nn.Module, teacher: nn.Module, loaders) -> dict:
    """Every training entry point once, in a fixed order; returns what they report."""
    train_loader, test_loader = loaders
    out = {"train": T.train(model, train_loader, epochs=1, lr=0.05, seed=0, progress=False,
                            val_loader=test_loader, augment=lambda x: T.random_shift(x, 1))}
    out["fine_tune"] = T.fine_tune(model, train_loader, epochs=1, seed=1, progress=False,
                                   extra_loss=lambda m: 1e-3 * T.bn_l1_penalty(m))
    out["distill"] = T.distill(model, teacher, train_loader, epochs=1, seed=2, progress=False,
                               optimizer="adamw", weight_decay=0.01)
    T.recalibrate_bn(model, train_loader, batches=3)
    out["evaluate"] = T.evaluate(model, test_loader)
    return out


def test_train_fine_tune_distill_recalibrate_evaluate(device, digits):
    T.set_seed(0)
    cpu_model, teacher = build_model("vgg_small"), build_model("vgg_small")
    dev_model, dev_teacher = copy.deepcopy(cpu_model).to(device), copy.deepcopy(teacher).to(device)
    on_cpu = _train_all(cpu_model, teacher, digits)
    on_dev = _train_all(dev_model, dev_teacher, digits)
    assert _on(dev_model, device) and _on(dev_teacher, device)
    if _exact(device):
        assert on_dev == on_cpu                   # every loss, accuracy and count
    else:
        assert abs(on_dev["evaluate"].accuracy - on_cpu["evaluate"].accuracy) < 0.05
    for a, b in zip(cpu_model.state_dict().values(), dev_model.state_dict().values()):
        if a.is_floating_point():
            _same(a, b, device, atol=1e-2)


# ----------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("criterion", CRITERIA)
def test_every_criterion_prunes_on_the_device(device, criterion):
    model = load_pretrained("vgg_small")
    x = torch.zeros(1, 1, 28, 28)
    mnist = [(torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)),
              torch.arange(16) % 10)]
    kwargs = dict(ratio=0.5, importance=criterion, data=mnist, batches=1)
    if criterion == "oracle":
        kwargs["ratios"] = {"features.3.0": 0.5}   # one group: the oracle costs a pass per channel
        kwargs["ratio"] = 0.0
    xs = mnist[0][0]
    on_cpu = prunekit.prune(model, x, **kwargs)
    on_dev = assert_prunes_exactly(copy.deepcopy(model).to(device), xs.to(device), x, tol=1e-4,
                                   **kwargs)          # pruned == zero-masked, on the device
    assert _on(on_dev.model, device)
    if _exact(device) or criterion not in ("taylor", "taylor_bn", "oracle"):
        assert on_dev.removed == on_cpu.removed
    with torch.no_grad():
        _same(on_dev.model(xs.to(device)), on_cpu.model(xs), device)


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv2_small", "vit_tiny"])
def test_residual_depthwise_and_attention_models_prune_on_the_device(device, name):
    model = load_pretrained(name).to(device)
    x = torch.randn(4, 1, 28, 28)
    result = prunekit.prune(model, x[:1], ratio=0.5, round_to=2)
    assert _on(result.model, device)
    reference = prunekit.prune(load_pretrained(name), x[:1], ratio=0.5, round_to=2)
    assert result.removed == reference.removed
    with torch.no_grad():   # attention's fused CPU fast path is for CPU/CUDA tensors only
        _same(result.model(x.to(device)), reference.model(x), device,
              exact=None if name != "vit_tiny" else False)
    it = prunekit.prune_iteratively(model, x[:1], 0.5, steps=2, fine_tune=lambda m: None)
    assert _on(it[0], device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_surgery_keeps_the_device_and_the_dtype(device, dtype):
    for name in ("vgg_small", "mobilenetv2_small", "vit_tiny"):
        model = load_pretrained(name).to(device, dtype)
        pruned = prunekit.prune(model, torch.zeros(1, 1, 28, 28, dtype=dtype), ratio=0.5).model
        kinds = {(t.device, t.dtype) for t in [*pruned.parameters(), *pruned.buffers()]
                 if t.is_floating_point()}
        assert kinds == {(device, dtype)}, name


def test_taylor_and_oracle_scores_on_the_device(device):
    model = load_pretrained("resnet8")
    batches = [(torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(s)),
                torch.arange(8)) for s in range(2)]
    moved = copy.deepcopy(model).to(device)
    want, got = importance.taylor(model, batches, 2), importance.taylor(moved, batches, 2)
    assert all(got[k].device.type == "cpu" for k in got)
    for k in want:
        _same(got[k], want[k], device, atol=1e-5)
    _same(importance.oracle(moved, "layer2.0.conv1", batches, 2),
          importance.oracle(model, "layer2.0.conv1", batches, 2), device, atol=1e-5)


def test_meta_device_plans_cuts_and_counts_without_data():
    """On ``meta`` tensors have shapes but no values: a pruned architecture and its MACs can
    be worked out for a model too large to allocate. (Criteria that read weights need
    values; the random baseline does not.)"""
    for name in ("vgg_small", "resnet8", "mobilenetv2_small", "vit_tiny"):
        real = build_model(name)
        x = torch.zeros(1, 1, 28, 28)
        meta = prunekit.prune(copy.deepcopy(real).to("meta"), x.to("meta"), ratio=0.5,
                              importance="random")
        cpu = prunekit.prune(real, x, ratio=0.5, importance="random")
        assert meta.removed == cpu.removed and meta.after == cpu.after
        assert metrics.count_macs(meta.model, x.to("meta")) == metrics.count_macs(cpu.model, x)
        assert {p.device.type for p in meta.model.parameters()} == {"meta"}
        folded = fold.fold_batchnorm(meta.model)
        assert {p.device.type for p in folded.parameters()} == {"meta"}


# ----------------------------------------------------------------------------- metrics
def test_metrics_on_the_device(device, digits):
    model = load_pretrained("vgg_small")
    moved = copy.deepcopy(model).to(device)
    x = torch.zeros(2, 1, 28, 28)
    assert metrics.count_macs(moved, x) == metrics.count_macs(model, x)
    assert metrics.count_params(moved) == metrics.count_params(model)
    assert metrics.model_size_bytes(moved) == metrics.model_size_bytes(model)
    lat = metrics.measure_latency(moved, x, repeats=3, warmup=1)
    assert lat.device == str(device) and lat.batch == 2 and lat.median_ms > 0
    both = metrics.compare_latency({"dense": moved, "copy": copy.deepcopy(moved)}, x,
                                   rounds=2, repeats=2, warmup=1)
    assert {k: v.repeats for k, v in both.items()} == {"dense": 4, "copy": 4}
    assert all(v.device == str(device) for v in both.values())
    loaders = data.make_loaders("mnist", batch_size=64, seed=0, eval_batch_size=250)
    few = [b for _, b in zip(range(2), loaders.test)]
    s_dev, s_cpu = metrics.summary(moved, x, few, latency=False), metrics.summary(model, x, few, latency=False)
    assert (s_dev.correct, s_dev.macs) == (s_cpu.correct, s_cpu.macs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make test-gpu)")
def test_cuda_latency_is_timed_by_events_after_warm_up():
    model = load_pretrained("vgg_small").cuda()
    x = torch.zeros(64, 1, 28, 28)
    times = metrics.latency_samples(model, x, repeats=5, warmup=3)
    assert len(times) == 5 and min(times) > 0
    lat = metrics.measure_latency(model, x, repeats=10)
    assert lat.device.startswith("cuda") and 0 < lat.iqr_ms < 10 * lat.median_ms


# ----------------------------------------------------------------------------- export and deploy
def test_save_load_export_fold_and_onnx_from_the_device(device, tmp_path):
    model = load_pretrained("resnet8")
    result = prunekit.prune(copy.deepcopy(model).to(device), torch.zeros(1, 1, 28, 28), ratio=0.5)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        want = result.model(x.to(device)).cpu()
    path = export.save_pruned(result.model, tmp_path / "r.pt", "resnet8", removed=result.removed)
    _same(export.load_pruned(path)(x), want, device, atol=1e-5)              # to the CPU
    back = export.load_pruned(path, device=device)
    assert _on(back, device)
    with torch.no_grad():
        _same(back(x.to(device)), want, device, atol=1e-5)
    folded = fold.fold_batchnorm(result.model)
    assert _on(folded, device) and _on(result.model, device)
    with torch.no_grad():
        _same(folded(x.to(device)), want, device, atol=1e-5, exact=False)
    saved = export.export_program(result.model, x[:2], tmp_path / "r.pt2")
    if not _exact(device):  # a fake-device tensor cannot be unpickled (weights_only): CUDA only
        with torch.no_grad():
            _same(export.load_program(saved)(x.to(device)), want, device, atol=1e-5, exact=False)
    onnx = deploy.OnnxRuntimeModel(deploy.export_onnx(result.model, x[:2], tmp_path / "r.onnx"))
    assert _on(result.model, device)                     # exported from a CPU copy
    assert deploy.max_abs_error(result.model, onnx, x) < 1e-4


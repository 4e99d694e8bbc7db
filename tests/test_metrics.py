"""Metrics: exact MAC and byte counts against hand computation; latency and summary behaviour."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunekit import metrics
from prunekit.models import vgg_small
from prunekit.train import evaluate


def test_count_macs_two_layer_model_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 5))
    x = torch.zeros(2, 3, 10, 10)
    conv = 8 * 10 * 10 * (3 * 3 * 3)  # every output value: one 3x3x3 dot product
    linear = 800 * 5
    assert metrics.count_macs(model, x) == 2 * (conv + linear)  # batch of 2 counts twice


def test_count_macs_small_vgg_by_hand():
    # widths 32-64-128-128, 3x3 'same' convs, 2x2 max-pool after blocks 2 and 3, on 28x28
    layers = [(1, 32, 28), (32, 64, 28), (64, 128, 14), (128, 128, 7)]  # (in, out, spatial size)
    convs = sum(9 * cin * cout * size * size for cin, cout, size in layers)
    classifier = 128 * 10
    assert metrics.count_macs(vgg_small(), torch.zeros(1, 1, 28, 28)) == convs + classifier == 36_352_512 + 1_280


def test_count_macs_restores_training_mode():
    model = vgg_small().train()
    metrics.count_macs(model, torch.zeros(1, 1, 8, 8))
    assert model.training


def test_count_params_excludes_buffers_and_can_skip_frozen():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert metrics.count_params(model) == 4 * 3 + 3 + 2 * 3
    model[0].weight.requires_grad_(False)
    assert metrics.count_params(model, trainable_only=True) == 3 + 2 * 3


def test_model_size_bytes_is_the_state_dict_size():
    model = vgg_small()
    expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert metrics.model_size_bytes(model) == expected
    assert metrics.model_size_bytes(model.half()) < expected // 2 + 100  # fp16 halves the floats


def test_model_size_counts_shared_weights_once():
    shared = nn.Linear(10, 10, bias=False)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert metrics.model_size_bytes(model) == 10 * 10 * 4


def test_measure_latency_reports_its_setting_and_restores_threads():
    model = vgg_small().train()
    before = torch.get_num_threads()
    lat = metrics.measure_latency(model, torch.zeros(3, 1, 8, 8), threads=1, repeats=5, warmup=1)
    assert (lat.threads, lat.batch, lat.repeats) == (1, 3, 5)
    assert lat.median_ms > 0 and lat.iqr_ms >= 0
    assert torch.get_num_threads() == before and model.training
    assert "batch 3, 1 thread" in str(lat)


def test_measure_latency_rejects_nonsense():
    import pytest

    with pytest.raises(ValueError, match="repeats >= 1"):
        metrics.measure_latency(vgg_small(), torch.zeros(1, 1, 8, 8), repeats=0)


def test_latency_per_image_divides_median_and_spread_alike():
    lat = metrics.Latency(median_ms=64.0, iqr_ms=6.4, threads=1, batch=64, repeats=5)
    assert (lat.per_image_ms, lat.per_image_iqr_ms) == (1.0, 0.1)
    assert str(lat) == "64.000 ms (IQR 6.400 ms), batch 64, 1 thread"   # CPU: no device suffix
    on_gpu = metrics.Latency(1.0, 0.1, 1, 1, 5, device="cuda:0")
    assert str(on_gpu).endswith("1 thread, cuda:0")


def test_the_cpu_clock_times_the_working_thread_only():
    import pytest

    model = vgg_small()
    lat = metrics.measure_latency(model, torch.zeros(1, 1, 8, 8), repeats=3, warmup=1, clock="cpu")
    assert lat.clock == "cpu" and str(lat).endswith("1 thread, cpu clock") and lat.median_ms > 0
    with pytest.raises(ValueError, match="threads=1"):
        metrics.measure_latency(model, torch.zeros(1, 1, 8, 8), threads=2, clock="cpu")
    with pytest.raises(ValueError, match="clock='sundial'"):
        metrics.compare_latency({"m": model}, torch.zeros(1, 1, 8, 8), clock="sundial")


class _Sleeper(nn.Module):
    def forward(self, x):
        import time

        time.sleep(0.02)            # wall time passes, the thread uses no CPU
        return x


def test_wall_and_cpu_clocks_differ_when_the_thread_waits():
    x = torch.zeros(1)
    wall = metrics.measure_latency(_Sleeper(), x, repeats=3, warmup=0)
    cpu = metrics.measure_latency(_Sleeper(), x, repeats=3, warmup=0, clock="cpu")
    assert wall.median_ms >= 19 and cpu.median_ms < 5


class _Recorder(nn.Module):
    """Records the order in which it is called."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_compare_latency_interleaves_rotating_rounds_and_pools_them():
    log: list[str] = []
    models = {n: _Recorder(n, log) for n in "abc"}
    result = metrics.compare_latency(models, torch.zeros(2, 3), rounds=3, repeats=2, warmup=1)
    runs = "".join(name for i, name in enumerate(log) if i == 0 or log[i - 1] != name)
    # warm-up of each model, then three rounds, each in an order rotated by one
    assert runs == "abc" + "abc" + "bca" + "cab"
    assert all(r.repeats == 6 and r.batch == 2 and len(r.round_medians_ms) == 3 for r in result.values())
    import pytest

    with pytest.raises(ValueError, match="rounds >= 1"):
        metrics.compare_latency(models, torch.zeros(1), rounds=0)


def test_summary_collects_exact_counts_and_accuracy():
    torch.manual_seed(0)
    model = vgg_small().eval()
    x = torch.zeros(1, 1, 8, 8)
    loader = DataLoader(TensorDataset(torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))), batch_size=8)
    s = metrics.summary(model, x, loader=loader, latency=False)
    ev = evaluate(model, loader)
    assert (s.params, s.macs, s.size_bytes) == (metrics.count_params(model), metrics.count_macs(model, x),
                                               metrics.model_size_bytes(model))
    assert (s.accuracy, s.correct, s.total) == (ev.accuracy, ev.correct, 20)
    assert s.latency is None
    assert list(s.as_dict()) == ["params", "MACs", "size", "accuracy"]
    assert f"{s.params:,}" in str(s) and "<table>" in s._repr_html_()


def test_summary_with_latency():
    s = metrics.summary(vgg_small(), torch.zeros(1, 1, 8, 8))
    assert s.latency is not None and s.accuracy is None
    assert list(s.as_dict()) == ["params", "MACs", "size", "latency"]


def test_paired_comparison_is_a_sign_test_over_rounds():
    import pytest

    def lat(rounds):
        return metrics.Latency(1.0, 0.1, 1, 1, 10, round_medians_ms=tuple(rounds))

    a = lat([1.0] * 16)
    slower = metrics.paired_comparison(a, lat([1.05] * 15 + [0.99]))
    assert (slower.slower, slower.rounds) == (15, 16) and slower.p_value < 0.001
    assert slower.ratio == pytest.approx(1.05) and "15 of 16 rounds" in str(slower)
    even = metrics.paired_comparison(a, lat([1.05, 0.95] * 8))
    assert even.slower == 8 and even.p_value == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same compare_latency call"):
        metrics.paired_comparison(a, lat([1.0] * 3))

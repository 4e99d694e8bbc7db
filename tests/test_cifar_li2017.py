"""benchmarks/cifar_li2017.py: Li et al.'s CIFAR-10 recipes cut exactly the MACs the paper
reports, and the whole script (train, prune, evaluate, retrain, table) runs -- on a tiny fake
CIFAR-10 archive built here (the real one cannot be downloaded on the CI machine)."""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit import data
from prunekit.metrics import count_macs, count_params

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cifar_li2017 as li  # noqa: E402


@pytest.mark.parametrize("model,variant", [("vgg16", "pruned-A"), ("resnet56", "pruned-A"),
                                           ("resnet56", "pruned-B")])
def test_each_recipe_cuts_the_macs_and_parameters_the_paper_reports(model, variant):
    import prunekit

    dense = li.build(model).eval()
    x = torch.zeros(1, 3, 32, 32)
    pruned = prunekit.prune(dense, x, ratio=0.0, ratios=li.RECIPES[model][variant](dense)).model
    paper = li.PAPER[model, variant]
    assert abs(1 - count_macs(pruned, x) / count_macs(dense, x) - paper.mac_cut) < 0.005
    assert abs(1 - count_params(pruned) / count_params(dense) - paper.param_cut) < 0.005


def _fake_cifar(folder: Path, per_batch: int = 8, test: int = 16) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(folder / data.CIFAR10_ARCHIVE, "w:gz") as tar:
        for name, n in [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", test)]:
            payload = pickle.dumps({b"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                                    b"labels": [int(v) for v in rng.integers(0, 10, n)]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return folder


def test_the_whole_script_runs_on_a_tiny_archive(tmp_path, capsys):
    folder = _fake_cifar(tmp_path)
    out = tmp_path / "table.md"
    code = li.main(["--data", str(folder), "--no-md5", "--subset", "16", "--epochs", "1",
                    "--finetune-epochs", "1", "--batch-size", "8", "--device", "cpu",
                    "--check-cuts", "--no-progress", "--out", str(out)])
    assert code == 0
    table = out.read_text()
    assert "16 training / 16 test images" in table
    for model, variant in li.PAPER:
        assert f"| {model} | {variant} |" in table
    assert table.count("%") >= 5 * 4
    with pytest.raises(ValueError, match="corrupt"):       # the real run checks the archive's MD5
        li.main(["--data", str(folder), "--subset", "16", "--device", "cpu"])

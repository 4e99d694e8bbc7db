"""Zoo: shipped checkpoints load safely, match their manifest exactly, and refuse corruption."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from prunekit import data, zoo
from prunekit.train import evaluate

SHIPPED = ["mobilenetv2_small", "resnet8", "vgg_small", "vgg_small_hard", "vgg_small_slim", "vit_tiny"]


@pytest.fixture(scope="module")
def test_loader():
    """The test split of a checkpoint's own dataset (each loaded once)."""
    cache = {}

    def get(dataset: str):
        if dataset not in cache:
            cache[dataset] = data.make_loaders(dataset, seed=0).test
        return cache[dataset]

    return get


def test_every_recipe_is_shipped():
    assert zoo.list_pretrained() == sorted(zoo.RECIPES) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_reproduces_its_manifest_exactly(name, test_loader):
    info = zoo.pretrained_info(name)
    path = zoo.CHECKPOINT_DIR / info["file"]
    assert path.stat().st_size == info["size_bytes"] <= 1.5e6
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, no code
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    model = zoo.load_pretrained(name)
    assert not model.training
    result = evaluate(model, test_loader(info["dataset"]))
    assert (result.correct, result.total) == (info["test_correct"], info["test_total"])
    assert result.accuracy == info["test_accuracy"]


def test_manifest_records_the_recipe():
    defaults = zoo.Recipe("any")
    for name, recipe in zoo.RECIPES.items():
        info = zoo.pretrained_info(name)
        for field in ("architecture", "dataset", "epochs", "seed", "lr", "batch_size", "weight_decay", "slim_lambda"):
            assert info[field] == getattr(recipe, field), (name, field)
        # "optimizer" holds the optimizer's description; entries older than max_shift lack it
        assert info["optimizer"] == zoo.OPTIMIZERS[recipe.optimizer], name
        assert info.get("max_shift", defaults.max_shift) == recipe.max_shift, name
        assert len(info["sha256"]) == 64


def test_vit_recipe_uses_adamw_and_shifts():
    recipe = zoo.RECIPES["vit_tiny"]
    assert (recipe.architecture, recipe.optimizer) == ("vit_tiny", "adamw") and recipe.max_shift > 0
    assert zoo.pretrained_info("vit_tiny")["test_correct"] >= 970
    assert zoo.load_pretrained("vit_tiny").pos_embed.shape == (1, 50, 64)   # 7x7 patches + class


def test_hard_checkpoint_is_the_plain_recipe_on_the_harder_digits():
    plain, hard = zoo.pretrained_info("vgg_small"), zoo.pretrained_info("vgg_small_hard")
    assert (hard["architecture"], hard["dataset"], hard["max_shift"]) == ("vgg_small", "mnist_hard", 2)
    assert hard["size_bytes"] < 1e6
    # the point of the harder task: far from saturated, where the plain subset is at ~98%
    assert plain["test_accuracy"] >= 0.97 and 0.8 <= hard["test_accuracy"] <= 0.92


def test_slim_checkpoint_is_sparse_and_plain_one_is_not():
    def small_gamma_fraction(model: nn.Module) -> float:
        g = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
        return float((g < 0.01).float().mean())

    assert small_gamma_fraction(zoo.load_pretrained("vgg_small")) < 0.05
    assert small_gamma_fraction(zoo.load_pretrained("vgg_small_slim")) > 0.6


@pytest.fixture()
def copied(tmp_path):
    for f in zoo.CHECKPOINT_DIR.iterdir():
        if f.suffix in {".pt", ".json"}:
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


def test_corrupted_checkpoint_is_refused_with_a_way_out(copied):
    path = copied / "vgg_small.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(zoo.CorruptCheckpointError) as err:
        zoo.load_pretrained("vgg_small", folder=copied)
    msg = str(err.value)
    assert str(path) in msg and "corrupt" in msg
    assert "git checkout" in msg and "python -m prunekit.zoo train vgg_small" in msg
    zoo.load_pretrained("resnet8", folder=copied)  # the others are unaffected


def test_missing_checkpoint_file_is_named(copied):
    (copied / "resnet8.pt").unlink()
    with pytest.raises(zoo.CorruptCheckpointError, match="resnet8.pt is missing.*git checkout"):
        zoo.load_pretrained("resnet8", folder=copied)


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="no pretrained model 'vgg16'.*vgg_small"):
        zoo.load_pretrained("vgg16")


def test_cli_list_shows_every_checkpoint(capsys):
    assert zoo.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        info = zoo.pretrained_info(name)
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert f"{info['test_correct']}/{info['test_total']}" in line
        assert line.endswith(info["sha256"]) and "sha256" in out.splitlines()[0]  # the README promises it


@pytest.mark.parametrize("recipe", [
    zoo.Recipe("vgg_small", dataset="digits", epochs=1),
    zoo.Recipe("vit_tiny", dataset="digits", epochs=1, lr=3e-3, optimizer="adamw", max_shift=1),
], ids=["vgg_small", "vit_tiny_adamw_shift"])
def test_cli_train_is_bitwise_reproducible(recipe, tmp_path, monkeypatch, capsys):
    # the real recipes take minutes; a one-epoch digits recipe exercises the same path
    monkeypatch.setitem(zoo.RECIPES, "tiny", recipe)
    threads = torch.get_num_threads()
    for out in ("a", "b"):
        assert zoo.main(["train", "tiny", "--out", str(tmp_path / out), "--no-progress"]) == 0
    assert torch.get_num_threads() == threads  # training ran on 1 thread, then restored
    assert "tiny: test accuracy" in capsys.readouterr().out
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text())["tiny"] for d in "ab")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a" / "tiny.pt").read_bytes() == (tmp_path / "b" / "tiny.pt").read_bytes()
    model = zoo.load_pretrained("tiny", folder=tmp_path / "a")
    result = evaluate(model, data.make_loaders("digits", seed=0).test)
    assert result.correct == a["test_correct"] and result.total == 360


def test_get_model_loads_what_is_shipped_and_trains_what_is_not(capsys):
    from prunekit.zoo import get_model, load_pretrained

    shipped = get_model("vgg_small", "mnist", verbose=True)
    reference = load_pretrained("vgg_small")
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), reference.state_dict().values()))
    assert get_model("vgg_small_hard", "mnist_hard") is not None and capsys.readouterr().out == ""
    trained = get_model("vgg_small_slim", "digits", epochs=1)           # the slim recipe, on 8x8 digits
    assert "training vgg_small here for 1 epochs" in capsys.readouterr().out
    again = get_model("vgg_small_slim", "digits", epochs=1, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))
    assert not trained.training

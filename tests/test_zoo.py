"""Zoo: shipped checkpoints load safely, match their manifest exactly, and refuse corruption."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from torch import nn

from prunekit import data, ngram, text, zoo
from prunekit.llama import LlamaConfig, TinyLlama
from prunekit.train import evaluate

SHIPPED = ["mobilenetv2_small", "resnet8", "vgg_small", "vgg_small_hard", "vgg_small_slim", "vit_tiny"]
LANGUAGE_MODELS = ["tiny_llama_shakespeare"]


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
    assert zoo.list_pretrained() == SHIPPED                      # the image classifiers, by default
    assert zoo.list_pretrained(task="language_model") == LANGUAGE_MODELS
    assert zoo.list_pretrained(task=None) == sorted(zoo.RECIPES) == sorted(SHIPPED + LANGUAGE_MODELS)
    with pytest.raises(ValueError, match="unknown task 'lm'"):
        zoo.list_pretrained(task="lm")


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
    for name in SHIPPED:
        recipe, info = zoo.RECIPES[name], zoo.pretrained_info(name)
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


# -- the language model ------------------------------------------------------------------------
#: How far the validation loss may move between CPUs and kernel sets (float32 sums rounded in
#: another order). Measured on an AVX-512 Xeon: 0 (native), +7.0e-10 (ATEN_CPU_CAPABILITY=avx2),
#: -4.1e-9 (=default, also with oneDNN capped at AVX2). A changed model moves it by far more:
#: removing half of the MLP neurons adds 0.6.
LM_LOSS_TOLERANCE = 1e-4


def test_language_model_manifest_records_recipe_and_baselines():
    recipe, info = zoo.RECIPES["tiny_llama_shakespeare"], zoo.pretrained_info("tiny_llama_shakespeare")
    assert zoo.task_of(info) == "language_model" and info["dataset"] == "shakespeare"
    for field in ("architecture", "steps", "batch_size", "lr", "warmup", "weight_decay", "seed"):
        assert info[field] == getattr(recipe, field), field
    assert info["optimizer"] == zoo.OPTIMIZERS[recipe.optimizer]
    assert info["model"] == {**dataclasses.asdict(recipe.model), "vocab_size": 65}
    splits = text.load_splits()
    baselines = ngram.baseline_losses(splits, recipe.model.block_size)
    for k, v in baselines.items():
        assert info[f"{k}_val_loss"] == pytest.approx(v, abs=1e-6), k
    assert info["val_tokens"] == 871 * 128
    assert info["val_perplexity"] == pytest.approx(math.exp(info["val_loss"]))


def test_language_model_checkpoint_loads_and_reproduces_its_validation_loss():
    info = zoo.pretrained_info("tiny_llama_shakespeare")
    path = zoo.CHECKPOINT_DIR / info["file"]
    assert path.stat().st_size == info["size_bytes"] <= 3e6
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())
    model = zoo.get_model("tiny_llama_shakespeare", "shakespeare", verbose=True)
    assert isinstance(model, TinyLlama) and not model.training
    assert sum(p.numel() for p in model.parameters()) == info["params"]
    loss = text.evaluate_loss(model, *text.eval_windows(text.load_splits().val, model.config.block_size))
    assert loss == pytest.approx(info["val_loss"], abs=LM_LOSS_TOLERANCE)
    # the point of a transformer: far better than one character of context
    assert loss < info["bigram_val_loss"] - 0.5 and loss < 1.8
    reference = zoo.load_pretrained("tiny_llama_shakespeare")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert zoo.checkpoint_for("shakespeare", "tiny_llama") == "tiny_llama_shakespeare"


def test_language_model_is_for_its_text_only():
    with pytest.raises(ValueError, match="language model of the text 'shakespeare'"):
        zoo.get_model("tiny_llama_shakespeare", "mnist")


def test_cli_lists_the_language_model_in_its_own_table(capsys):
    assert zoo.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("language model"))
    assert header > len(SHIPPED) and "val loss" in lines[header] and "sha256" in lines[header]
    info = zoo.pretrained_info("tiny_llama_shakespeare")
    row = lines[header + 1]
    assert row.startswith("tiny_llama_shakespeare ") and row.endswith(info["sha256"])
    assert f"{info['val_loss']:.4f}" in row and f"{info['val_perplexity']:.3f}" in row


def test_cli_train_language_model_is_bitwise_reproducible(tmp_path, monkeypatch, capsys):
    # the real recipe takes ~7 CPU-minutes; a few steps of a smaller model take the same path
    small = LlamaConfig(block_size=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, mlp_hidden=16)
    monkeypatch.setitem(zoo.RECIPES, "tiny_lm", zoo.LMRecipe(steps=3, batch_size=4, warmup=2, model=small))
    for out in ("a", "b"):
        assert zoo.main(["train", "tiny_lm", "--out", str(tmp_path / out), "--no-progress"]) == 0
    assert "tiny_lm: validation loss" in capsys.readouterr().out
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text())["tiny_lm"] for d in "ab")
    assert a == b and (tmp_path / "a" / "tiny_lm.pt").read_bytes() == (tmp_path / "b" / "tiny_lm.pt").read_bytes()
    model = zoo.load_pretrained("tiny_lm", folder=tmp_path / "a")
    assert model.config == dataclasses.replace(small, vocab_size=65)
    assert text.evaluate_loss(model, *text.eval_windows(text.load_splits().val, 32)) == a["val_loss"]
    assert zoo.list_pretrained(tmp_path / "a", task="language_model") == ["tiny_lm"]

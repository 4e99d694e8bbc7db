"""Pretrained checkpoints shipped with the course, so no notebook has to train from scratch.

Two kinds of model, each trained by the recipe in :data:`RECIPES` and rebuilt bit for bit
on the same machine by ``python -m prunekit.zoo train NAME``:

* **image classifiers** (:class:`Recipe`), trained on the embedded MNIST subset
  (``make_loaders("mnist")``) -- or, for ``vgg_small_hard``, on the same digits distorted
  (``"mnist_hard"``). The manifest records the test accuracy and the exact number of correct
  test predictions.
* **a language model** (:class:`LMRecipe`): ``tiny_llama_shakespeare``, the course's small
  LLaMA-style decoder (:mod:`prunekit.llama`) trained on the characters of Tiny Shakespeare
  (:mod:`prunekit.text`). A language model has no accuracy; the manifest records its mean
  validation loss (nats per character) and perplexity, beside the unigram and bigram
  baselines (:mod:`prunekit.ngram`). There is no test split: the recipe was tuned on the
  validation split. Its entries carry ``"task": "language_model"``.

::

    python -m prunekit.zoo list                  # what is shipped: accuracy / loss, size, sha256
    python -m prunekit.zoo train vgg_small       # retrain one (seeded, 1 thread) and print accuracy
    python -m prunekit.zoo train all --out DIR   # write elsewhere instead of prunekit/checkpoints

``checkpoints/manifest.json`` records, per model, the recipe, what it scored and the
SHA-256 of the file.
:func:`load_pretrained` refuses a file whose hash does not match, and loads with
``torch.load(weights_only=True)``, which unpickles tensors only -- never arbitrary code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from . import text
from .data import SPECS, file_digest, make_loaders
from .llama import LlamaConfig, TinyLlama
from .models import build_model
from .ngram import baseline_losses
from .train import bn_l1_penalty, evaluate, random_shift, set_seed, train
from .train_lm import train_lm

__all__ = ["Recipe", "LMRecipe", "RECIPES", "OPTIMIZERS", "TASKS", "CHECKPOINT_DIR", "CorruptCheckpointError",
           "task_of", "list_pretrained", "pretrained_info", "load_pretrained", "train_checkpoint", "train_by_recipe",
           "train_lm_by_recipe", "checkpoint_for", "get_model"]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "manifest.json"
#: What the manifest's ``"optimizer"`` entry says for each ``Recipe.optimizer``.
OPTIMIZERS = {
    "sgd": "SGD (Nesterov momentum 0.9), cosine learning rate to 0",
    "adamw": "AdamW, cosine learning rate to 0",
    "adamw_lm": "AdamW (betas 0.9, 0.95; weight decay on matrices only), gradients clipped to norm 1, "
                "linear warm-up, then cosine learning rate to 0",
}
#: What a checkpoint does: ``"classification"`` (the image models; a manifest entry without
#: ``"task"`` is one) or ``"language_model"``.
TASKS = ("classification", "language_model")
OPTIMIZER = OPTIMIZERS["sgd"]   # the description of the default, as before


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint is trained. ``slim_lambda > 0`` adds network slimming's
    ``slim_lambda * sum|gamma|`` to the loss (see :func:`prunekit.train.bn_l1_penalty`).
    ``optimizer`` is ``"sgd"`` or ``"adamw"`` (:func:`prunekit.train.train`); the manifest
    stores its description from :data:`OPTIMIZERS` under ``"optimizer"``. ``max_shift > 0``
    moves every training image by up to that many pixels (:func:`prunekit.train.random_shift`).

    Manifest entries written before a field existed lack it; its default here applies."""

    architecture: str
    dataset: str = "mnist"
    epochs: int = 10
    lr: float = 0.05
    seed: int = 0
    batch_size: int = 64
    weight_decay: float = 5e-4
    slim_lambda: float = 0.0
    optimizer: str = "sgd"
    max_shift: int = 0


@dataclass(frozen=True)
class LMRecipe:
    """How a language-model checkpoint is trained (:func:`prunekit.train_lm.train_lm`):
    ``steps`` AdamW steps on ``batch_size`` random windows of ``model.block_size + 1``
    characters of ``dataset``'s training split, learning rate ``lr`` after ``warmup`` steps,
    then a cosine to 0. ``model`` is the :class:`~prunekit.llama.LlamaConfig`; the manifest
    stores it as a dict, and :func:`load_pretrained` builds the model from that record."""

    architecture: str = "tiny_llama"
    dataset: str = text.DATASET
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    optimizer: str = "adamw_lm"
    model: LlamaConfig = LlamaConfig()


RECIPES: dict[str, Recipe | LMRecipe] = {
    "vgg_small": Recipe("vgg_small"),
    # a larger learning rate lets the L1 pull finish its job: lr 0.05 left 54% of gammas < 0.01
    # (global 50% prune: 66% accuracy), lr 0.1 leaves 74% (global 50% prune: 95%)
    "vgg_small_slim": Recipe("vgg_small", lr=0.1, slim_lambda=2e-2),
    "resnet8": Recipe("resnet8"),
    "mobilenetv2_small": Recipe("mobilenetv2_small"),
    # a transformer wants AdamW, a larger weight decay, more epochs and shifted images: without
    # the shifts it memorises the 3,500 training images: 92.5% test accuracy instead of 97.4%
    "vit_tiny": Recipe("vit_tiny", epochs=60, lr=3e-3, weight_decay=0.05, optimizer="adamw", max_shift=2),
    # the harder task of lecture 06 (distorted digits, prunekit.data "mnist_hard"): without the
    # shifts the VGG memorises the training set (99.9% train, 85.9% test accuracy); with them
    # it trains to ~94% and tests at ~89% -- a model whose gradients still carry information
    "vgg_small_hard": Recipe("vgg_small", dataset="mnist_hard", max_shift=2),
    # ~0.6 M parameters, 1,500 steps of 32 x 128 characters (~6 passes over the training text);
    # tuned on the validation split (there is no test split)
    "tiny_llama_shakespeare": LMRecipe(),
}


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing or does not match the SHA-256 in the manifest."""


def _read_manifest(folder: Path) -> dict[str, dict]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def task_of(info: dict) -> str:
    """The task of a manifest entry (see :data:`TASKS`)."""
    return info.get("task", "classification")


def list_pretrained(folder: Path | None = None, task: str | None = "classification") -> list[str]:
    """Names of the checkpoints in the manifest that do ``task``: the image classifiers by
    default (what every image lecture loops over), ``"language_model"``, or ``None`` for all."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS} or None")
    manifest = _read_manifest(Path(folder or CHECKPOINT_DIR))
    return sorted(n for n, e in manifest.items() if task is None or task_of(e) == task)


def pretrained_info(name: str, folder: Path | None = None) -> dict:
    """The manifest entry of one checkpoint: recipe, what it scored (test accuracy and correct
    count; for a language model its validation loss and perplexity), sha256, size."""
    manifest = _read_manifest(Path(folder or CHECKPOINT_DIR))
    if name not in manifest:
        raise ValueError(f"no pretrained model {name!r}; choose one of {sorted(manifest) or sorted(RECIPES)}")
    return manifest[name]


def _restore_hint(name: str) -> str:
    return (f"Restore it with `git checkout -- prunekit/checkpoints/{name}.pt`, or rebuild it with "
            f"`python -m prunekit.zoo train {name}`.")


def load_pretrained(name: str, folder: Path | None = None) -> nn.Module:
    """The pretrained model ``name``, verified against its SHA-256, in eval mode.

    ``folder`` defaults to the shipped ``prunekit/checkpoints``."""
    folder = Path(folder or CHECKPOINT_DIR)
    info = pretrained_info(name, folder)
    path = folder / info["file"]
    if not path.exists():
        raise CorruptCheckpointError(f"checkpoint file {path} is missing. {_restore_hint(name)}")
    if (actual := file_digest(path, "sha256")) != info["sha256"]:
        raise CorruptCheckpointError(
            f"checkpoint file {path} is corrupt: sha256 {actual[:12]}..., manifest says "
            f"{info['sha256'][:12]}.... {_restore_hint(name)}")
    model = _build_recorded(info)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def _build_recorded(info: dict) -> nn.Module:
    """A fresh model of the architecture a manifest entry records (random weights)."""
    if task_of(info) == "language_model":
        return TinyLlama(LlamaConfig(**info["model"]))
    spec = SPECS[info["dataset"]]
    return build_model(info["architecture"], spec.in_channels, spec.num_classes, spec.image_size)


def train_checkpoint(name: str, out: Path | None = None, progress: bool = True) -> dict:
    """Train ``name`` by its recipe, save ``out/name.pt`` and update ``out/manifest.json``.

    One thread and a fixed seed make the run bitwise reproducible on the same machine
    (multi-threaded kernels may add floating-point numbers in a different order)."""
    if name not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; choose one of {sorted(RECIPES)}")
    recipe = RECIPES[name]
    out = Path(out or CHECKPOINT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if isinstance(recipe, LMRecipe):
            return _train_and_save_lm(name, recipe, out, progress)
        return _train_and_save(name, recipe, out, progress)
    finally:
        torch.set_num_threads(threads)


def train_by_recipe(recipe: Recipe, loaders, progress: bool = False,
                    device: str | torch.device = "cpu") -> nn.Module:
    """A fresh ``recipe.architecture`` trained on ``loaders`` the way the recipe says (seeded:
    the weight initialisation and the batch order are drawn from ``recipe.seed``)."""
    set_seed(recipe.seed)  # the weight initialisation is drawn here
    spec = loaders.spec
    model = build_model(recipe.architecture, spec.in_channels, spec.num_classes, spec.image_size).to(device)
    extra = (lambda m: recipe.slim_lambda * bn_l1_penalty(m)) if recipe.slim_lambda > 0 else None
    augment = (lambda x: random_shift(x, recipe.max_shift)) if recipe.max_shift > 0 else None
    train(model, loaders.train, recipe.epochs, recipe.lr, recipe.seed, extra_loss=extra, progress=progress,
          weight_decay=recipe.weight_decay, optimizer=recipe.optimizer, augment=augment)
    return model.eval()


def train_lm_by_recipe(recipe: LMRecipe, splits: text.TextSplits | None = None,
                       progress: bool = False, device: str | torch.device = "cpu") -> TinyLlama:
    """A fresh :class:`~prunekit.llama.TinyLlama` trained on ``splits`` (default: Tiny
    Shakespeare) the way ``recipe`` says; seeded like :func:`train_by_recipe`."""
    splits = splits or text.load_splits()
    set_seed(recipe.seed)  # the weight initialisation is drawn here
    model = TinyLlama(replace(recipe.model, vocab_size=len(splits.vocab))).to(device)
    train_lm(model, splits.train, recipe.steps, recipe.batch_size, recipe.model.block_size, recipe.lr,
             recipe.warmup, recipe.weight_decay, recipe.seed, progress=progress)
    return model.eval()


def checkpoint_for(dataset: str, architecture: str) -> str | None:
    """The shipped checkpoint of ``architecture`` trained (without slimming) on ``dataset``."""
    for name in list_pretrained(task=None):
        info = pretrained_info(name)
        if (info["architecture"], info["dataset"], info.get("slim_lambda", 0.0)) == (architecture, dataset, 0.0):
            return name
    return None


def get_model(name: str, dataset: str = "mnist", *, loaders=None, seed: int = 0, epochs: int | None = None,
              device: str | torch.device = "cpu", verbose: bool = True) -> nn.Module:
    """The model every lecture and experiment starts from: ``name`` on ``dataset``, on ``device``.

    ``name`` is a checkpoint (``"vgg_small_slim"``, ``"vit_tiny"``) or an architecture
    (``"resnet8"``). Where the course ships that model trained on ``dataset`` it is loaded
    (verified by its sha256); otherwise -- you changed ``DATASET`` in a lecture -- the same recipe
    (optimizer, learning rate, slimming penalty, shifts) trains it here on ``loaders`` (default:
    the zoo's split of ``dataset``) from ``seed``, for ``epochs`` (default: the recipe's), and
    says so. Seconds on ``"digits"``; minutes on CIFAR-10.

    The language model (``"tiny_llama_shakespeare"``, or its architecture ``"tiny_llama"``)
    exists for one text only: ``get_model("tiny_llama_shakespeare", "shakespeare")``. Without
    its checkpoint, its recipe trains it here from ``seed`` (~7 CPU-minutes; ``epochs`` and
    ``loaders`` do not apply)."""
    shipped = name if name in list_pretrained(task=None) and pretrained_info(name)["dataset"] == dataset \
        else checkpoint_for(dataset, name)
    if shipped:
        return load_pretrained(shipped).to(device)
    if (lm := _lm_recipe(name)) is not None:
        return _train_lm_here(name, lm, dataset, seed, device, verbose)
    base = RECIPES.get(name) or Recipe(name)
    recipe = replace(base, dataset=dataset, seed=seed, epochs=epochs or base.epochs)
    if verbose:
        print(f"no shipped checkpoint for {name!r} on {dataset!r}: training {recipe.architecture} here "
              f"for {recipe.epochs} epochs (seed {seed})")
    loaders = loaders or make_loaders(dataset, batch_size=recipe.batch_size, seed=seed)
    return train_by_recipe(recipe, loaders, device=device)


def _lm_recipe(name: str) -> LMRecipe | None:
    """The language-model recipe called ``name``, or the first one of architecture ``name``."""
    recipe = RECIPES.get(name)
    if isinstance(recipe, LMRecipe):
        return recipe
    return next((r for r in RECIPES.values() if isinstance(r, LMRecipe) and r.architecture == name), None)


def _train_lm_here(name: str, recipe: LMRecipe, dataset: str, seed: int, device: str | torch.device,
                   verbose: bool) -> TinyLlama:
    if dataset != recipe.dataset:
        raise ValueError(f"{name!r} is a language model of the text {recipe.dataset!r}; it cannot be "
                         f"trained on {dataset!r}")
    recipe = replace(recipe, seed=seed)
    if verbose:
        print(f"no shipped checkpoint for {name!r}: training {recipe.architecture} here for "
              f"{recipe.steps} steps (seed {seed}; about 7 CPU-minutes)")
    return train_lm_by_recipe(recipe, device=device)


def _write_entry(out: Path, name: str, entry: dict) -> None:
    """Put ``entry`` into ``out/manifest.json`` (atomically: a crash leaves the old file)."""
    manifest = _read_manifest(out)
    manifest[name] = entry
    tmp = out / f"{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


def _save_weights(model: nn.Module, path: Path) -> None:
    torch.save({k: v.detach().float() if v.is_floating_point() else v for k, v in model.state_dict().items()},
               path)


def _train_and_save(name: str, recipe: Recipe, out: Path, progress: bool) -> dict:
    loaders = make_loaders(recipe.dataset, batch_size=recipe.batch_size, seed=recipe.seed)
    start = time.perf_counter()
    model = train_by_recipe(recipe, loaders, progress)
    seconds = time.perf_counter() - start
    result = evaluate(model, loaders.test)
    path = out / f"{name}.pt"
    _save_weights(model, path)
    entry = {**asdict(recipe), "optimizer": OPTIMIZERS[recipe.optimizer], "torch": torch.__version__, "file": path.name,
             "test_accuracy": result.accuracy, "test_correct": result.correct, "test_total": result.total,
             "sha256": file_digest(path, "sha256"), "size_bytes": path.stat().st_size}
    _write_entry(out, name, entry)
    return {**entry, "train_seconds": seconds}


def _train_and_save_lm(name: str, recipe: LMRecipe, out: Path, progress: bool) -> dict:
    """Train a language model, record its validation loss beside the n-gram baselines'."""
    splits = text.load_splits()
    start, cpu_start = time.perf_counter(), time.process_time()
    model = train_lm_by_recipe(recipe, splits, progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    block = model.config.block_size
    inputs, targets = text.eval_windows(splits.val, block)
    loss = text.evaluate_loss(model, inputs, targets)
    baselines = baseline_losses(splits, block)
    path = out / f"{name}.pt"
    _save_weights(model, path)
    entry = {**asdict(recipe), "model": asdict(model.config), "task": "language_model",
             "optimizer": OPTIMIZERS[recipe.optimizer], "torch": torch.__version__, "file": path.name,
             "params": sum(p.numel() for p in model.parameters()),
             "val_loss": loss, "val_perplexity": text.perplexity(loss), "val_tokens": targets.numel(),
             **{f"{k}_val_loss": v for k, v in baselines.items()},
             "sha256": file_digest(path, "sha256"), "size_bytes": path.stat().st_size}
    _write_entry(out, name, entry)
    return {**entry, "train_seconds": seconds, "train_cpu_seconds": cpu_seconds}


def _print_list(folder: Path) -> None:
    """One line per checkpoint: the image classifiers, then the language models (a table of
    their own: validation loss and perplexity instead of test accuracy). The full sha256 is
    printed so that a downloaded or copied file can be checked by hand (``sha256sum FILE``);
    :func:`load_pretrained` checks it anyway."""
    manifest = _read_manifest(folder)
    if not manifest:
        print(f"no checkpoints in {folder}")
        return
    classifiers = {n: e for n, e in manifest.items() if task_of(e) == "classification"}
    language_models = {n: e for n, e in manifest.items() if task_of(e) == "language_model"}
    if classifiers:
        _print_classifiers(classifiers)
    if language_models:
        if classifiers:
            print()
        _print_language_models(language_models)


def _print_classifiers(manifest: dict[str, dict]) -> None:
    print(f"{'name':<18}{'architecture':<19}{'dataset':<12}{'epochs':>6}{'test acc':>10}{'correct':>11}"
          f"{'size':>9}  sha256")
    for name, e in sorted(manifest.items()):
        correct = f"{e['test_correct']}/{e['test_total']}"
        print(f"{name:<18}{e['architecture']:<19}{e['dataset']:<12}{e['epochs']:>6}{e['test_accuracy']:>10.2%}"
              f"{correct:>11}{e['size_bytes'] / 1e6:>6.2f} MB  {e['sha256']}")


def _print_language_models(manifest: dict[str, dict]) -> None:
    """Validation loss in nats per character and perplexity, beside the bigram baseline's."""
    width = max(24, *(len(n) + 2 for n in manifest))
    print(f"{'language model':<{width}}{'architecture':<13}{'dataset':<13}{'steps':>6}{'params':>9}"
          f"{'val loss':>10}{'val ppl':>9}{'bigram ppl':>12}{'size':>9}  sha256")
    for name, e in sorted(manifest.items()):
        bigram = text.perplexity(e["bigram_val_loss"])
        print(f"{name:<{width}}{e['architecture']:<13}{e['dataset']:<13}{e['steps']:>6}{e['params']:>9,}"
              f"{e['val_loss']:>10.4f}{e['val_perplexity']:>9.3f}{bigram:>12.3f}"
              f"{e['size_bytes'] / 1e6:>6.2f} MB  {e['sha256']}")


def _print_trained(name: str, e: dict, out: Path) -> None:
    if task_of(e) == "language_model":
        print(f"{name}: validation loss {e['val_loss']:.4f} nats/char (perplexity {e['val_perplexity']:.3f}); "
              f"bigram {e['bigram_val_loss']:.4f} ({text.perplexity(e['bigram_val_loss']):.3f}), "
              f"unigram {e['unigram_val_loss']:.4f} ({text.perplexity(e['unigram_val_loss']):.3f}); "
              f"{e['params']:,} parameters, {e['size_bytes'] / 1e6:.2f} MB, sha256 {e['sha256'][:12]}, trained in "
              f"{e['train_cpu_seconds']:.0f} CPU-s ({e['train_seconds']:.0f} s wall) -> {out / e['file']}")
        return
    print(f"{name}: test accuracy {e['test_accuracy']:.2%} ({e['test_correct']}/{e['test_total']}), "
          f"{e['size_bytes'] / 1e6:.2f} MB, sha256 {e['sha256'][:12]}, trained in {e['train_seconds']:.0f} s "
          f"-> {out / e['file']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunekit.zoo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="show the shipped checkpoints")
    p_list.add_argument("--dir", type=Path, default=CHECKPOINT_DIR, help="checkpoint folder")
    p_train = sub.add_parser("train", help="retrain a checkpoint by its recipe")
    p_train.add_argument("name", choices=[*sorted(RECIPES), "all"])
    p_train.add_argument("--out", type=Path, default=CHECKPOINT_DIR, help="where to write (default: shipped folder)")
    p_train.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.command == "list":
        _print_list(args.dir)
        return 0
    names = sorted(RECIPES) if args.name == "all" else [args.name]
    for name in names:
        _print_trained(name, train_checkpoint(name, args.out, progress=not args.no_progress), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

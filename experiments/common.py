"""What the experiments share: the set-up, seeded batches, the repair, and the results file.

Every run must be reproducible *on its own* -- the lecture re-runs single records live and the
tests re-run a tiny configuration -- so nothing here depends on the order of runs: batches are
drawn from generators seeded per run, BatchNorm is recalibrated on fixed batches, and training
runs a fixed number of gradient steps on a seeded sample of the training set.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler

from prunekit.data import Loaders, example_input, make_loaders
from prunekit.metrics import count_macs
from prunekit.train import (EvalResult, distillation_loss, evaluate, random_shift, recalibrate_bn,
                            train)
from prunekit.zoo import checkpoint_for, get_model, pretrained_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCH = 64              # every training and scoring batch
RECAL_BATCHES = 10      # BatchNorm recalibration: 10 fixed batches of 64, no gradient steps


@dataclass
class Setup:
    """One dataset and one trained dense model, plus what every run needs from them."""

    dataset: str
    model_name: str             # the checkpoint's name, or the architecture trained here
    loaders: Loaders
    dense: nn.Module
    example: Tensor
    dense_eval: EvalResult
    dense_macs: int
    dense_epochs: int           # how long the dense model trained (the Scratch-E budget)
    calib: DataLoader           # fixed batches for BN recalibration
    recipe: dict                # the dense model's lr, weight_decay, max_shift: scratch runs reuse it

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loaders.train.dataset) // BATCH


def load_setup(dataset: str, architecture: str, train_epochs: int = 10,
               device: str | torch.device = "cpu") -> Setup:
    """The dense model of ``architecture`` on ``dataset`` (:func:`prunekit.zoo.get_model`: the
    shipped checkpoint, or where none is shipped the architecture trained here, seed 0, for
    ``train_epochs`` epochs by its zoo recipe), on ``device``. The splits are always the zoo's
    (seed 0): another seed would put the checkpoint's training images in the test set. Every run
    copies the dense model, so every run works on ``device``."""
    seed = 0
    loaders = make_loaders(dataset, batch_size=BATCH, seed=seed)
    name = checkpoint_for(dataset, architecture)
    info = pretrained_info(name) if name else {}
    recipe = {"lr": info.get("lr", 0.05), "weight_decay": info.get("weight_decay", 5e-4),
              "max_shift": info.get("max_shift", 0)}
    dense = get_model(architecture, dataset, loaders=loaders, seed=seed, epochs=train_epochs,
                      device=device, verbose=False)
    epochs = info["epochs"] if name else train_epochs
    x = example_input(dataset)
    calib = DataLoader(loaders.train.dataset, batch_size=BATCH)   # the split is already shuffled
    return Setup(dataset, name or architecture, loaders, dense.eval(), x,
                 evaluate(dense, loaders.test), count_macs(dense, x), epochs, calib, recipe)


def augment(recipe: dict) -> Callable[[Tensor], Tensor] | None:
    """The dense recipe's data augmentation (random shifts), for every later training run:
    fine-tuning and scratch training see the same kind of images the dense model saw."""
    shift = recipe.get("max_shift", 0)
    return (lambda x: random_shift(x, shift)) if shift > 0 else None


def seeded_batches(setup: Setup, seed: int, count: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` batches of training images drawn with ``seed``: a data-driven criterion gets a
    fresh sample for every seed, so its own sampling noise shows up in the seed spread."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    loader = DataLoader(setup.loaders.train.dataset, batch_size=BATCH, shuffle=True,
                        drop_last=True, generator=gen)
    return [batch for batch, _ in zip(loader, range(count))]


def step_loader(setup: Setup, steps: int, seed: int) -> DataLoader:
    """Exactly ``steps`` batches of 64 training images, drawn without replacement (epoch after
    epoch) by a generator seeded with ``seed``: a training budget counted in gradient steps."""
    data = setup.loaders.train.dataset
    sampler = RandomSampler(data, num_samples=steps * BATCH,
                            generator=torch.Generator().manual_seed(20_000 + seed))
    return DataLoader(data, batch_size=BATCH, sampler=sampler, drop_last=True)


def recalibrate(model: nn.Module, setup: Setup) -> nn.Module:
    return recalibrate_bn(model, setup.calib, batches=RECAL_BATCHES)


def repair(model: nn.Module, setup: Setup, steps: int, lr: float, seed: int,
           teacher: nn.Module | None = None, temperature: float = 4.0,
           alpha: float = 0.9, recalibrated: bool = False) -> nn.Module:
    """Recalibrate BN (unless ``recalibrated`` already), train ``steps`` gradient steps at
    ``lr`` (cross-entropy, or distillation from ``teacher``), recalibrate again (the short
    run's exponential BN averages lag behind the weights). In place; returns the model."""
    if not recalibrated:
        recalibrate(model, setup)
    if steps > 0:
        train(model, step_loader(setup, steps, seed), epochs=1, lr=lr, seed=seed, progress=False,
              augment=augment(setup.recipe), criterion=_distilling(teacher, temperature, alpha))
    return recalibrate(model, setup)


def _distilling(teacher: nn.Module | None, temperature: float, alpha: float):
    """The loss of :func:`prunekit.train.distill` (as a ``train`` criterion, so the shifts
    apply): the teacher sees the same shifted images as the student. None: cross-entropy."""
    if teacher is None:
        return None
    teacher.eval()

    def criterion(logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            target = teacher(x)
        return distillation_loss(logits, target, y, temperature, alpha)

    return criterion


def correct(model: nn.Module, setup: Setup) -> int:
    """Correctly classified test images (of ``len(setup.loaders.test.dataset)``)."""
    return evaluate(model, setup.loaders.test).correct


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def even_shares(total: int, parts: int) -> list[int]:
    """``total`` gradient steps shared out over ``parts`` rounds, as evenly as integers allow
    (they sum to exactly ``total``): an iterative method gets the one-shot methods' budget."""
    return [total * (i + 1) // parts - total * i // parts for i in range(parts)]


def training_macs(model_macs: int, steps: int, teacher_macs: int = 0) -> int:
    """Compute of ``steps`` training steps: forward + backward ~ 3x the forward MACs per image
    (the usual estimate), plus a forward pass of the teacher when distilling."""
    return steps * BATCH * (3 * model_macs + teacher_macs)


# ----------------------------------------------------------------------------- results files
def run_all(name: str, config: dict, jobs: Sequence[dict], run_one: Callable[[dict], dict],
            threads: int = 1, log: Callable[[str], None] = print) -> dict:
    """Run every job (a dict of keyword arguments) through ``run_one`` at a fixed thread count.
    Returns the results dict; the caller adds what it knows only afterwards (the dense models'
    numbers) and writes it with :func:`write_results`."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    start, records = time.perf_counter(), []
    try:
        for i, job in enumerate(jobs, 1):
            t = time.perf_counter()
            records.append(run_one(job))
            log(f"[{i}/{len(jobs)}] {job} -> {records[-1].get('correct')} "
                f"({time.perf_counter() - t:.1f} s)")
    finally:
        torch.set_num_threads(saved)
    return {"experiment": name, "config": config, "records": records,
            "seconds": round(time.perf_counter() - start, 1), **machine_facts(threads)}


def machine_facts(threads: int) -> dict:
    """What decides whether a re-run is bit-identical: torch, the thread count and the CPU's
    vector unit (AVX2 and AVX-512 kernels add floating-point numbers in different orders)."""
    cpu = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                     if line.startswith("model name")), cpu)
        cpu = f"{name} ({'avx512' if 'avx512f' in info else 'no avx512'})"
    except OSError:
        pass
    return {"torch": torch.__version__, "threads": threads, "cpu": cpu}


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def read_results(name: str, folder: Path | None = None) -> dict:
    path = Path(folder or RESULTS_DIR) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m experiments.{name}` from the "
                                "repository root to compute it")
    return json.loads(path.read_text())


def script_main(name: str, run: Callable[[dict, Path | None], dict], config: dict, tiny: dict,
                argv: list[str] | None, description: str) -> int:
    """The command line every experiment shares: ``--tiny`` runs only ``tiny``, ``--out``
    chooses the folder of ``<name>.json``."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    parser.add_argument("--tiny", action="store_true", help="only the runs of TINY (seed 0)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"folder for {name}.json")
    args = parser.parse_args(argv)
    results = run(tiny if args.tiny else config, args.out)
    print(f"{len(results['records'])} runs in {results['seconds']:.0f} s -> {args.out / (name + '.json')}")
    return 0

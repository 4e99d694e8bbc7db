"""Li et al. (2017) on CIFAR-10 with prunekit: the shape of their Tables 1 and 2, end to end.

H. Li, A. Kadav, I. Durdanovic, H. Samet, H. P. Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017, prune whole filters by their L1 norm, layer by layer, with a per-layer
recipe chosen from a sensitivity analysis, then retrain. Their CIFAR-10 results:

* **VGG-16-pruned-A** -- 50% of the filters of conv 1 and convs 8-13 (the late layers are
  insensitive): MACs -34.2%, parameters -64.0%, test error 6.75% -> 6.60% after retraining.
* **ResNet-56-pruned-A** -- 10% of the filters of the *first* conv of every residual block
  (the second conv's output is tied to the shortcut), skipping the sensitive layers 16, 20,
  38 and 54: MACs -10.4%, parameters -9.4%, error 6.96% -> 6.90%.
* **ResNet-56-pruned-B** -- 60%, 30% and 10% in the three stages, skipping layers 16, 18, 20,
  34, 38 and 54: MACs -27.6%, parameters -13.7%, error 6.94%.

(Their "FLOP" counts are multiply-accumulates, the MACs prunekit counts.) Layer numbers count
convolutions from the stem (layer 1), so block ``b`` (0-26) of ResNet-56 has its first conv
at layer ``2 + 2b``. Li et al. round the number of filters to remove *up*; prunekit's ratio
removes ``floor(ratio * n)``, so the recipe asks for ``ceil(p * n) / n``. With that, the MAC
and parameter cuts below match the paper's to 0.1 point before any training (our ResNet-56
uses 1x1 projection shortcuts where the paper pads with zeros: 0.6% more parameters).

What this script does, per model: train the dense network from scratch (SGD, Nesterov
momentum, cosine schedule, random 4-pixel shifts and horizontal flips), prune each recipe
with ``prunekit.prune`` (L1, layer by layer), evaluate it before and after retraining (at a
10x smaller learning rate), and print one table: MACs and parameters (with their cuts, next
to the paper's), test error dense / pruned / retrained (next to the paper's).

It needs the official CIFAR-10 python archive in the data folder (``$PRUNEKIT_DATA``, default
``~/.cache/prunekit``) and, for the paper's schedule (160 + 40 epochs), a GPU: ~1 min per epoch
on a 2-core CPU for ResNet-56 alone. Commands::

    python benchmarks/cifar_li2017.py                              # full run, default device (GPU if any)
    python benchmarks/cifar_li2017.py --epochs 30 --finetune-epochs 10 --out li2017.md   # shorter
    python benchmarks/cifar_li2017.py --subset 64 --epochs 1 --finetune-epochs 1 --batch-size 16  # smoke

``--check-cuts`` exits 1 if a recipe's MAC cut is more than 0.5 point from the paper's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))      # archs.py, when run as a script
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # prunekit from this checkout

import archs  # noqa: E402
import prunekit  # noqa: E402
from prunekit import data, train as T  # noqa: E402
from prunekit.device import default_device  # noqa: E402
from prunekit.metrics import count_macs, count_params  # noqa: E402
from prunekit.models import resnet56  # noqa: E402


@dataclass(frozen=True)
class Paper:
    """One row of Li et al.'s tables: MAC and parameter cuts (fractions), test error (%)."""

    mac_cut: float
    param_cut: float
    error: float


PAPER = {
    ("vgg16", "dense"): Paper(0.0, 0.0, 6.75),
    ("vgg16", "pruned-A"): Paper(0.342, 0.640, 6.60),
    ("resnet56", "dense"): Paper(0.0, 0.0, 6.96),
    ("resnet56", "pruned-A"): Paper(0.104, 0.094, 6.90),
    ("resnet56", "pruned-B"): Paper(0.276, 0.137, 6.94),
}
#: weight decay when training each dense model (VGG as in Zagoruyko's CIFAR VGG, ResNet as He et al.)
WEIGHT_DECAY = {"vgg16": 5e-4, "resnet56": 1e-4}


def build(name: str) -> nn.Module:
    return archs.vgg16_bn(in_channels=3, num_classes=10) if name == "vgg16" else \
        resnet56(in_channels=3, num_classes=10)


def _up(p: float, n: int) -> float:
    """The ratio that makes prunekit (floor) remove ceil(p * n) of n filters, as Li et al. do."""
    return (math.ceil(p * n) + 1e-6) / n


def vgg16_recipe(model: nn.Module) -> dict[str, float]:
    """Pruned-A: 50% of conv 1 and convs 8-13."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {name: _up(0.5, conv.out_channels) for i, (name, conv) in enumerate(convs, start=1)
            if i == 1 or i >= 8}


def resnet56_recipe(model: nn.Module, per_stage: tuple[float, float, float],
                    skip_layers: set[int]) -> dict[str, float]:
    """The first conv of every block (layer 2 + 2b), per-stage ratios, sensitive layers skipped."""
    recipe = {}
    for b in range(27):
        stage, index = b // 9, b % 9
        if 2 + 2 * b in skip_layers:
            continue
        name = f"layer{stage + 1}.{index}.conv1"
        recipe[name] = _up(per_stage[stage], model.get_submodule(name).out_channels)
    return recipe


RECIPES = {
    "vgg16": {"pruned-A": vgg16_recipe},
    "resnet56": {
        "pruned-A": lambda m: resnet56_recipe(m, (0.1, 0.1, 0.1), {16, 20, 38, 54}),
        "pruned-B": lambda m: resnet56_recipe(m, (0.6, 0.3, 0.1), {16, 18, 20, 34, 38, 54}),
    },
}


# ----------------------------------------------------------------------------- data
def cifar_loaders(folder: Path, batch_size: int, subset: int | None, md5: bool,
                  seed: int) -> tuple[DataLoader, DataLoader]:
    """The official split: 50,000 training and 10,000 test images (Li et al. report test
    error), normalised per channel; ``subset`` keeps the first N of each (smoke runs)."""
    (xtr, ytr), (xte, yte) = data.load_cifar10(folder, download=False,
                                               md5=data.CIFAR10_MD5 if md5 else None)

    def dataset(x, y):
        x, y = (x[:subset], y[:subset]) if subset else (x, y)
        # the normalisation of prunekit's own CIFAR-10 splits
        return TensorDataset(data._to_tensor(x, data.SPECS["cifar10"]), torch.from_numpy(y).long())

    train = DataLoader(dataset(xtr, ytr), batch_size=batch_size, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(dataset(xte, yte), batch_size=500)


def augment(x: Tensor) -> Tensor:
    """The standard CIFAR augmentation: shifts of up to 4 pixels, horizontal flips."""
    x = T.random_shift(x, 4)
    flip = torch.rand(len(x)) < 0.5          # torch's global generator: seeded by train()
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


# ----------------------------------------------------------------------------- the run
@dataclass
class Row:
    model: str
    variant: str
    params: int
    macs: int
    error_pruned: float | None
    error: float
    seconds: float


def error_pct(model: nn.Module, loader: DataLoader) -> float:
    return 100 * (1 - T.evaluate(model, loader).accuracy)


def run_model(name: str, loaders: tuple[DataLoader, DataLoader], args, device: torch.device) -> list[Row]:
    train_loader, test_loader = loaders
    T.set_seed(args.seed)
    model = build(name).to(device)
    start = time.perf_counter()
    T.train(model, train_loader, epochs=args.epochs, lr=args.lr, seed=args.seed, augment=augment,
            weight_decay=WEIGHT_DECAY[name], progress=args.progress)
    x = torch.zeros(1, 3, 32, 32)
    rows = [Row(name, "dense", count_params(model), count_macs(model, x), None,
                error_pct(model, test_loader), time.perf_counter() - start)]
    for variant, recipe in RECIPES[name].items():
        start = time.perf_counter()
        pruned = prunekit.prune(model, x, ratio=0.0, ratios=recipe(model), importance="l1").model
        before = error_pct(pruned, test_loader)
        T.fine_tune(pruned, train_loader, epochs=args.finetune_epochs, lr=args.lr / 10,
                    seed=args.seed, progress=args.progress)
        rows.append(Row(name, variant, count_params(pruned), count_macs(pruned, x), before,
                        error_pct(pruned, test_loader), time.perf_counter() - start))
    return rows


def markdown(rows: list[Row]) -> str:
    head = ("| model | variant | params | cut (paper) | MACs | cut (paper) | test error, pruned, "
            "not retrained | test error, (re)trained (paper) | time |")
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    dense = {r.model: r for r in rows if r.variant == "dense"}
    for r in rows:
        d, paper = dense[r.model], PAPER[r.model, r.variant]
        pruned_error = "-" if r.error_pruned is None else f"{r.error_pruned:.2f}%"
        lines.append(f"| {r.model} | {r.variant} | {r.params / 1e6:.3f} M "
                     f"| {1 - r.params / d.params:.1%} ({paper.param_cut:.1%}) "
                     f"| {r.macs / 1e6:.1f} M | {1 - r.macs / d.macs:.1%} ({paper.mac_cut:.1%}) "
                     f"| {pruned_error} | {r.error:.2f}% ({paper.error:.2f}%) | {r.seconds:.0f} s |")
    return "\n".join(lines)


def cut_mismatches(rows: list[Row]) -> list[str]:
    dense = {r.model: r for r in rows if r.variant == "dense"}
    return [f"{r.model} {r.variant}: MAC cut {1 - r.macs / dense[r.model].macs:.1%}, paper "
            f"{PAPER[r.model, r.variant].mac_cut:.1%}" for r in rows
            if abs(1 - r.macs / dense[r.model].macs - PAPER[r.model, r.variant].mac_cut) > 0.005]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vgg16", "resnet56"], choices=list(RECIPES))
    p.add_argument("--data", type=Path, default=None, help="folder with cifar-10-python.tar.gz")
    p.add_argument("--epochs", type=int, default=160, help="training the dense model")
    p.add_argument("--finetune-epochs", type=int, default=40, help="retraining each pruned model")
    p.add_argument("--lr", type=float, default=0.1, help="training; retraining uses lr / 10")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--subset", type=int, default=None, help="first N train and test images")
    p.add_argument("--no-md5", action="store_true", help="skip the archive's MD5 (test archives)")
    p.add_argument("--device", default=None, help="default: prunekit.device.default_device()")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the table to this file")
    p.add_argument("--check-cuts", action="store_true", help="exit 1 if a MAC cut is off the paper's")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    folder = args.data or data.data_dir()
    loaders = cifar_loaders(folder, args.batch_size, args.subset, not args.no_md5, args.seed)
    start = time.perf_counter()
    rows = [row for name in args.models for row in run_model(name, loaders, args, device)]
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    text = (f"Device: {device}{gpu}; torch {torch.__version__}; {len(loaders[0].dataset)} training / "
            f"{len(loaders[1].dataset)} test images; {args.epochs} + {args.finetune_epochs} epochs; "
            f"{time.perf_counter() - start:.0f} s.\n\n{markdown(rows)}\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    mismatches = cut_mismatches(rows)
    for line in mismatches:
        print("MAC cut differs from the paper:", line, file=sys.stderr)
    return 1 if args.check_cuts and mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

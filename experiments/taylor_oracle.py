"""The held-out oracle behind lecture 04: per-batch loss increases, computed once and cached.

    python -m experiments.taylor_oracle                      # vgg_small, its four conv layers
    python -m experiments.taylor_oracle --model resnet8 --layers layer2.0.bn1 layer3.0.bn1

Writes ``experiments/results/taylor_oracle.json`` (see :mod:`prunekit.oracle_cache`): for each
layer, the oracle of every channel on each of ``--heldout`` batches of 64 training images that
the Taylor criterion of lecture 04 never sees (it uses the ``--fit`` batches before them in
the same seeded permutation). Lecture 04 loads the rows and recomputes one batch per layer
live. About 3 minutes for vgg_small on one thread of a 2-core laptop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from prunekit.data import make_loaders
from prunekit.oracle_cache import cached_oracle, fingerprint, heldout_batches, save_rows
from prunekit.zoo import load_pretrained

RESULTS = Path(__file__).resolve().parent / "results" / "taylor_oracle.json"


def batchnorms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg_small", help="a shipped checkpoint (prunekit.zoo)")
    parser.add_argument("--layers", nargs="*", help="BatchNorm names (default: every BatchNorm2d)")
    parser.add_argument("--fit", type=int, default=24, help="batches reserved for the criterion")
    parser.add_argument("--heldout", type=int, default=30, help="batches the oracle is measured on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    model = load_pretrained(args.model)
    loaders = make_loaders("mnist", batch_size=64, seed=args.seed)
    _, heldout = heldout_batches(loaders.train.dataset, args.fit, args.heldout, seed=args.seed)
    for layer in args.layers or batchnorms(model):
        start = time.perf_counter()
        rows, how = cached_oracle(model, layer, heldout, args.out, verify=1)
        if how.startswith("computed"):
            save_rows(args.out, fingerprint(model, layer, heldout), rows,
                      note=f"{args.model} {layer}: oracle on {args.heldout} held-out batches of 64 "
                           f"(after {args.fit} batches for the criterion), seed {args.seed}")
        print(f"{layer}: {rows.shape[1]} channels x {rows.shape[0]} batches, {how} "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()

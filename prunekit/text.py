"""Text for the language-model lectures: Tiny Shakespeare, one character per token.

The corpus
    The works of Shakespeare (public domain) as the *Tiny Shakespeare* file that Andrej
    Karpathy assembled for char-rnn (2015): 1,115,394 bytes of plays, 65 distinct
    characters. It ships inside the package, gzip-compressed
    (``prunekit/corpora/tinyshakespeare.txt.gz``, ~0.43 MB), and every load checks that the
    decompressed bytes have the SHA-256 in :data:`SHA256` -- so every student trains and
    evaluates on exactly the same text, offline.

Tokens
    One token per character; the vocabulary is the corpus' 65 distinct characters in sorted
    order (``"\\n"``, space, punctuation, ``A-Z``, ``a-z``). A character-level model needs
    no tokenizer library, and its loss is measured in nats per character.

The split
    Fixed, not random: the first 90% of the characters train, the last 10% validate (the
    split char-rnn and nanoGPT use). There is **no test split**: every choice of the course's
    model (size, learning rate, steps) was made on the validation split, so its validation
    loss is a slightly optimistic estimate -- which is fine for comparing pruned models with
    their dense parent on the same text.

Measuring a language model
    The loss is the mean cross-entropy of the next character, in nats; the *perplexity*
    ``exp(loss)`` is the number of characters the model is, on average, as unsure as if it
    chose uniformly among them (65 for a model that knows nothing, 1 for a perfect one).
    :func:`evaluate_loss` averages over a fixed list of validation windows
    (:func:`eval_windows`), so the same model always gets the same number on one machine,
    and numbers that agree to ~1e-5 on others.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["DATASET", "CORPUS_FILE", "SHA256", "N_BYTES", "TRAIN_FRACTION", "CharVocab", "TextSplits",
           "load_text", "load_splits", "sample_batch", "eval_windows", "evaluate_loss",
           "window_losses", "perplexity"]

#: The corpus' name where the zoo records a model's data set.
DATASET = "shakespeare"
CORPUS_FILE = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt.gz"
#: SHA-256 of the *decompressed* corpus, checked at every load.
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
N_BYTES = 1_115_394
TRAIN_FRACTION = 0.9


def load_text(path: Path = CORPUS_FILE) -> str:
    """The Tiny Shakespeare corpus as one string, verified by its SHA-256.

    ``path`` is the gzip file (the shipped one by default). A file whose content differs by
    one byte is refused: a changed corpus would silently change every number in the course."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus file {path} is missing; restore it with "
                                f"`git checkout -- prunekit/corpora/{path.name}`")
    raw = gzip.decompress(path.read_bytes())
    if (actual := hashlib.sha256(raw).hexdigest()) != SHA256:
        raise ValueError(f"corpus {path} is corrupt: sha256 of its text is {actual[:12]}..., "
                         f"expected {SHA256[:12]}... ({len(raw):,} bytes, expected {N_BYTES:,})")
    return raw.decode("ascii")


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> token ids: id ``i`` is the ``i``-th character of ``chars`` (sorted)."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """A 1-d int64 tensor of token ids; a character outside the vocabulary is an error."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        """The string of a 1-d sequence of token ids."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.chars[i] for i in ids)


@dataclass(frozen=True)
class TextSplits:
    """The encoded corpus, split: ``train`` (first 90%) and ``val`` (last 10%) token ids."""

    train: Tensor
    val: Tensor
    vocab: CharVocab


def load_splits(path: Path = CORPUS_FILE) -> TextSplits:
    """Encode the verified corpus and split it: 1,003,854 training and 111,540 validation
    characters. The ids are computed with one table lookup over the bytes (~10 ms)."""
    text = load_text(path)
    vocab = CharVocab.from_text(text)
    table = torch.zeros(128, dtype=torch.long)
    table[torch.tensor([ord(c) for c in vocab.chars])] = torch.arange(len(vocab))
    ids = table[torch.frombuffer(bytearray(text.encode("ascii")), dtype=torch.uint8).long()]
    n_train = int(TRAIN_FRACTION * len(ids))
    return TextSplits(ids[:n_train], ids[n_train:], vocab)


def _windows(data: Tensor, starts: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Inputs ``data[s : s+T]`` and targets ``data[s+1 : s+T+1]`` for every start ``s``."""
    index = starts[:, None] + torch.arange(block_size + 1)
    chunk = data[index]
    return chunk[:, :-1], chunk[:, 1:]


def sample_batch(data: Tensor, batch_size: int, block_size: int,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``block_size + 1`` characters: inputs ``(B, T)`` and
    the same windows shifted by one as targets. Seeded: the same ``generator`` state gives the
    same batch, so a training run is reproducible."""
    if len(data) <= block_size:
        raise ValueError(f"the text ({len(data)} tokens) is shorter than block_size + 1 "
                         f"({block_size + 1})")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    return _windows(data, starts, block_size)


def eval_windows(data: Tensor, block_size: int,
                 max_windows: int | None = None) -> tuple[Tensor, Tensor]:
    """A fixed set of windows for evaluation: consecutive, non-overlapping windows of
    ``block_size`` targets that tile ``data`` from its start (the validation split: 871
    windows of 128, 111,488 of its 111,540 characters predicted). ``max_windows`` keeps that
    many of them, evenly spaced, for a quicker estimate. No randomness: the same windows
    every time."""
    count = (len(data) - 1) // block_size
    starts = torch.arange(count) * block_size
    if max_windows is not None and max_windows < count:
        starts = starts[torch.linspace(0, count - 1, max_windows).round().long()]
    return _windows(data, starts, block_size)


@torch.no_grad()
def evaluate_loss(model: nn.Module | Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor,
                  batch_size: int = 64) -> float:
    """Mean cross-entropy (nats per character) of ``model``'s next-character logits over the
    windows ``(inputs, targets)``, e.g. from :func:`eval_windows`. The model is run as it is
    (put it in eval mode first if it has dropout); sums are taken in float64 so the mean does
    not depend on the batch size."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start:start + batch_size])
        losses = F.cross_entropy(logits.flatten(0, 1), targets[start:start + batch_size].flatten(),
                                 reduction="none")
        total += losses.double().sum()
    return float(total / targets.numel())


@torch.no_grad()
def window_losses(model: nn.Module | Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor,
                  batch_size: int = 64) -> Tensor:
    """The mean cross-entropy of every window (float64, one value per window): their mean is
    :func:`evaluate_loss`, and their spread says how much that mean would move on other text --
    the standard error ``std / sqrt(windows)`` (windows far apart are close to independent;
    characters next to each other are not)."""
    out = []
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start:start + batch_size])
        losses = F.cross_entropy(logits.transpose(1, 2), targets[start:start + batch_size], reduction="none")
        out.append(losses.double().mean(dim=1))
    return torch.cat(out)


def perplexity(loss: float) -> float:
    """``exp(loss)``: the effective number of equally likely next characters."""
    return math.exp(loss)

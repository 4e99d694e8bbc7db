"""The oracle, measured once on held-out data and re-checked cheaply.

Judging a criterion needs a *trustworthy* oracle: the true loss increase when each channel is
removed (:func:`prunekit.importance.oracle`). Two things make it trustworthy, and both cost
time:

* **held-out data.** If the criterion and the oracle are computed on the same few batches,
  their sampling noise is shared and inflates their agreement (a Taylor score from 2 batches
  "agrees" best with an oracle on those 2 batches). The oracle must use images the criterion
  never saw.
* **enough data.** An oracle on 2 batches of 64 images is itself noisy; Molchanov et al.
  (CVPR 2019) average over much more data before comparing.

30 held-out batches for the four conv layers of the course's VGG take minutes -- too slow for
a lecture that must run in a minute, and too important to replace by a smaller, noisier
oracle. So a script (``experiments/taylor_oracle.py``) measures the *per-batch* loss
increases once and stores them with a fingerprint of everything they depend on (the model's
weights, the layer, the images). A notebook loads them when the fingerprint matches and
**recomputes a few batches live**, comparing them with the stored rows: a cache that no
longer describes this model and data fails loudly instead of teaching stale numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from .graph import build_graph
from .importance import group_oracle

__all__ = ["heldout_batches", "fingerprint", "per_batch_oracle", "load_rows", "save_rows",
           "cached_oracle", "StaleCacheError"]

Batches = list[tuple[Tensor, Tensor]]


class StaleCacheError(RuntimeError):
    """Stored oracle rows disagree with a live recomputation."""


def heldout_batches(dataset: TensorDataset, fit: int, heldout: int, batch_size: int = 64,
                    seed: int = 0) -> tuple[Batches, Batches]:
    """Two disjoint lists of batches from one seeded permutation of ``dataset``: ``fit``
    batches for the criterion, then ``heldout`` batches that only the oracle sees."""
    images, labels = dataset.tensors
    need = (fit + heldout) * batch_size
    if need > len(labels):
        raise ValueError(f"{fit} + {heldout} batches of {batch_size} need {need} images; the "
                         f"dataset has {len(labels)}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:need]
    batches = [(images[order[i:i + batch_size]], labels[order[i:i + batch_size]])
               for i in range(0, need, batch_size)]
    return batches[:fit], batches[fit:]


def fingerprint(model: nn.Module, layer: str, batches: Batches) -> str:
    """sha256 over the model's state (names, shapes, values), the layer name and the batches:
    anything that changes the oracle changes the fingerprint."""
    digest = hashlib.sha256(layer.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for x, y in batches:
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
        digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def per_batch_oracle(model: nn.Module, layer: str, batches: Batches) -> Tensor:
    """``Tensor[len(batches), channels]``: the oracle of ``layer`` on each batch alone (their
    mean over batches is the oracle on all of them). What :func:`prunekit.importance.oracle`
    computes batch by batch, with the model traced once for all of them."""
    graph = build_graph(model, batches[0][0][:1])
    group = graph.group_of(layer)
    return torch.stack([group_oracle(model, graph, group, [batch], batches=1) for batch in batches])


def load_rows(path: Path, key: str) -> Tensor | None:
    """The rows stored under ``key`` in the JSON file ``path``, or None."""
    path = Path(path)
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(key)
    return None if entry is None else torch.tensor(entry["rows"], dtype=torch.float32)


def save_rows(path: Path, key: str, rows: Tensor, note: str = "") -> None:
    """Add (or replace) ``key`` in the JSON file ``path``; values to 7 significant digits."""
    path = Path(path)
    store = json.loads(path.read_text()) if path.exists() else {}
    store[key] = {"note": note, "rows": [[float(f"{v:.7g}") for v in row] for row in rows.tolist()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(store, indent=0, sort_keys=True) + "\n")


def cached_oracle(model: nn.Module, layer: str, batches: Batches, path: Path,
                  verify: int = 1, rtol: float = 1e-3, atol: float = 1e-6) -> tuple[Tensor, str]:
    """Per-batch oracle rows of ``layer`` on ``batches``: from the cache file ``path`` if it
    holds rows with this fingerprint (then the first ``verify`` batches are recomputed and
    must match, else :class:`StaleCacheError`), otherwise computed now (slow). Returns
    ``(rows, how)`` with ``how`` saying which happened."""
    key = fingerprint(model, layer, batches)
    rows = load_rows(path, key)
    if rows is None:
        return per_batch_oracle(model, layer, batches), "computed now (no cached rows for this model and data)"
    if verify == 0:
        return rows, f"loaded from {Path(path).name} (fingerprint matched, not recomputed)"
    live = per_batch_oracle(model, layer, batches[:verify])
    if not torch.allclose(live, rows[:verify], rtol=rtol, atol=atol):
        worst = (live - rows[:verify]).abs().max().item()
        raise StaleCacheError(f"cached oracle rows for {layer!r} differ from a live recomputation "
                              f"by up to {worst:.2e}; rerun experiments/taylor_oracle.py")
    return rows, f"loaded from {Path(path).name}, {verify} of {len(batches)} batches recomputed and equal"

"""prunekit.oracle_cache: disjoint held-out batches, per-batch rows that add up to the oracle,
a cache that is used only for the same model and data and refuses to be stale -- and the
committed cache of lecture 04 matches the shipped checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from engine_nets import TinyConvNet
from prunekit.testing import randomise
from prunekit import oracle_cache
from prunekit.data import make_loaders
from prunekit.importance import oracle
from prunekit.zoo import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:                 # experiments/ is a folder of scripts, not installed
    sys.path.insert(0, str(ROOT))
from experiments.taylor_oracle import RESULTS, batchnorms  # noqa: E402


def _data(n=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 2, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_heldout_batches_are_disjoint_and_seeded():
    data = _data()
    fit, held = oracle_cache.heldout_batches(data, 2, 3, batch_size=32, seed=1)
    assert len(fit) == 2 and len(held) == 3 and all(len(y) == 32 for _, y in fit + held)
    seen = [tuple(x.flatten()[:4].tolist()) for b, _ in fit + held for x in b]
    assert len(set(seen)) == len(seen)                                   # no image twice
    again, _ = oracle_cache.heldout_batches(data, 2, 3, batch_size=32, seed=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(fit, again))
    other, _ = oracle_cache.heldout_batches(data, 2, 3, batch_size=32, seed=2)
    assert not torch.equal(fit[0][0], other[0][0])
    with pytest.raises(ValueError, match="need 352 images"):
        oracle_cache.heldout_batches(data, 5, 6, batch_size=32)


def test_per_batch_rows_average_to_the_oracle_on_all_batches():
    model = randomise(TinyConvNet())
    _, held = oracle_cache.heldout_batches(_data(), 0, 3, batch_size=32)
    rows = oracle_cache.per_batch_oracle(model, "bn", held)
    assert rows.shape == (3, model.bn.num_features)
    torch.testing.assert_close(rows.mean(0), oracle(model, "bn", held, batches=3), rtol=1e-4, atol=1e-6)


def test_cache_is_used_only_when_it_matches_and_refuses_when_stale(tmp_path):
    model = randomise(TinyConvNet())
    _, held = oracle_cache.heldout_batches(_data(), 0, 3, batch_size=32)
    path = tmp_path / "cache.json"
    rows, how = oracle_cache.cached_oracle(model, "bn", held, path)
    assert how.startswith("computed")
    key = oracle_cache.fingerprint(model, "bn", held)
    oracle_cache.save_rows(path, key, rows, note="test")
    again, how = oracle_cache.cached_oracle(model, "bn", held, path, verify=2)
    assert how.startswith("loaded") and torch.allclose(again, rows, rtol=1e-6, atol=1e-9)
    other = randomise(TinyConvNet(), seed=1)                       # another model: another key
    assert oracle_cache.fingerprint(other, "bn", held) != key
    assert oracle_cache.cached_oracle(other, "bn", held, path)[1].startswith("computed")
    assert oracle_cache.fingerprint(model, "bn", held[:2]) != key   # other data: another key
    store = json.loads(path.read_text())
    store[key]["rows"][0][0] += 0.5                                  # a cache that lies
    path.write_text(json.dumps(store))
    with pytest.raises(oracle_cache.StaleCacheError, match="differ from a live recomputation"):
        oracle_cache.cached_oracle(model, "bn", held, path)


def test_committed_cache_covers_the_shipped_checkpoint_and_is_what_the_code_computes():
    """Lecture 04 must find its rows (else it would compute them for minutes), and they must be
    what the oracle computes today (the lecture re-checks only its studied layer): regenerate
    with `python -m experiments.taylor_oracle` whenever the checkpoint, the data or the oracle
    changes."""
    model = load_pretrained("vgg_small")
    loaders = make_loaders("mnist", batch_size=64, seed=0)
    _, held = oracle_cache.heldout_batches(loaders.train.dataset, 24, 30, seed=0)
    for layer in batchnorms(model):
        rows = oracle_cache.load_rows(RESULTS, oracle_cache.fingerprint(model, layer, held))
        assert rows is not None, f"no cached oracle for {layer}"
        assert rows.shape == (30, model.get_submodule(layer).num_features)
        _, how = oracle_cache.cached_oracle(model, layer, held, RESULTS, verify=1)   # raises if stale
        assert how.startswith("loaded")

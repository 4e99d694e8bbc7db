"""Tiny Shakespeare: the shipped corpus is the verified text, split and encoded as documented,
batches are seeded, evaluation is deterministic, and the n-gram baselines are what they should be."""

from __future__ import annotations

import gzip
import hashlib
import math

import pytest
import torch

from prunekit import ngram, text


@pytest.fixture(scope="module")
def splits() -> text.TextSplits:
    return text.load_splits()


def test_the_shipped_corpus_is_the_verified_text():
    raw = gzip.decompress(text.CORPUS_FILE.read_bytes())
    assert len(raw) == text.N_BYTES == 1_115_394
    assert hashlib.sha256(raw).hexdigest() == text.SHA256
    assert text.load_text() == raw.decode("ascii")


def test_a_changed_corpus_is_refused(tmp_path):
    raw = bytearray(gzip.decompress(text.CORPUS_FILE.read_bytes()))
    raw[500_000] = ord("X") if raw[500_000] != ord("X") else ord("Y")    # one character changed
    path = tmp_path / "changed.txt.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ValueError, match="corrupt: sha256"):
        text.load_text(path)
    with pytest.raises(FileNotFoundError, match="git checkout"):
        text.load_text(tmp_path / "missing.txt.gz")


def test_split_is_first_90_percent_then_last_10(splits):
    assert (len(splits.train), len(splits.val)) == (1_003_854, 111_540)
    whole = text.load_text()
    assert splits.vocab.decode(splits.train[:14]) == whole[:14] == "First Citizen:"
    assert splits.vocab.decode(splits.val) == whole[1_003_854:]


def test_vocabulary_is_the_65_sorted_characters_and_round_trips(splits):
    vocab = splits.vocab
    assert len(vocab) == 65 and list(vocab.chars) == sorted(vocab.chars)
    assert vocab.chars[:2] == "\n " and vocab.chars.endswith("xyz")
    sample = "O Romeo, Romeo! wherefore art thou Romeo?\n"
    ids = vocab.encode(sample)
    assert ids.dtype == torch.long and vocab.decode(ids) == sample
    assert torch.equal(vocab.encode(text.load_text()[:1000]), splits.train[:1000])   # the fast path agrees
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode("café")


def test_batches_are_seeded_windows_and_targets_are_shifted(splits):
    def batch(seed):
        return text.sample_batch(splits.train, 8, 16, torch.Generator().manual_seed(seed))

    (x, y), (x2, y2), (x3, _) = batch(0), batch(0), batch(1)
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert torch.equal(x[:, 1:], y[:, :-1])                # the same window, one character on
    with pytest.raises(ValueError, match="shorter than block_size"):
        text.sample_batch(splits.train[:10], 2, 16, torch.Generator())


def test_eval_windows_tile_the_validation_split(splits):
    x, y = text.eval_windows(splits.val, 128)
    assert x.shape == (871, 128) and torch.equal(x.flatten(), splits.val[:871 * 128])
    assert torch.equal(y.flatten(), splits.val[1:871 * 128 + 1])
    xs, _ = text.eval_windows(splits.val, 128, max_windows=10)
    assert torch.equal(xs[0], x[0]) and torch.equal(xs[-1], x[-1]) and len(xs) == 10


def test_evaluate_loss_is_mean_cross_entropy_whatever_the_batch_size(splits):
    x, y = text.eval_windows(splits.val, 32, max_windows=50)
    uniform = ngram.UnigramModel(torch.full((65,), -math.log(65)))
    assert text.evaluate_loss(uniform, x, y) == pytest.approx(math.log(65), abs=1e-6)
    bigram = ngram.fit_bigram(splits.train, 65)
    assert text.evaluate_loss(bigram, x, y, batch_size=7) == text.evaluate_loss(bigram, x, y, batch_size=50)
    assert text.perplexity(math.log(65)) == pytest.approx(65)


def test_window_losses_average_to_the_loss(splits):
    x, y = text.eval_windows(splits.val, 32, max_windows=50)
    bigram = ngram.fit_bigram(splits.train, 65)
    per_window = text.window_losses(bigram, x, y, batch_size=7)
    assert per_window.shape == (50,) and per_window.dtype == torch.float64
    assert float(per_window.mean()) == pytest.approx(text.evaluate_loss(bigram, x, y), rel=1e-6)
    assert torch.equal(per_window, text.window_losses(bigram, x, y, batch_size=50))
    first = torch.nn.functional.cross_entropy(bigram(x[:1])[0], y[0])
    assert float(per_window[0]) == pytest.approx(float(first), rel=1e-6)
    assert float(per_window.std()) > 0.05                  # windows differ: the mean has an error


def test_ngram_baselines(splits):
    losses = ngram.baseline_losses(splits, 128)
    # a model that knows nothing: ln 65 = 4.17; letter frequencies alone ~3.3; one character
    # of context ~2.5 nats (perplexity ~12)
    assert 3.2 < losses["unigram"] < 3.5 and 2.4 < losses["bigram"] < 2.55 < math.log(65)
    bigram = ngram.fit_bigram(splits.train, 65)
    assert torch.allclose(bigram.log_probs.exp().sum(dim=1), torch.ones(65))
    assert bigram.log_probs.isfinite().all()               # add-one: no zero probabilities
    q = splits.vocab.chars.index("q")
    assert splits.vocab.chars[int(bigram.log_probs[q].argmax())] == "u"   # q is followed by u
    with pytest.raises(ValueError, match="k must be > 0"):
        ngram.fit_bigram(splits.train, 65, k=0)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 10\)"):
        ngram.fit_unigram(splits.train, 10)

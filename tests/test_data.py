"""Data: fixed, disjoint, stratified, seeded splits; the CIFAR-10 reader on a tiny fake archive."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit import data


def _rows(ds) -> set[bytes]:
    """Each image as bytes, to test set membership across splits."""
    return {x.numpy().tobytes() for x in ds.tensors[0]}


@pytest.fixture(scope="module")
def digits():
    return data.make_splits("digits", seed=0)


def test_digits_split_sizes_are_exactly_the_spec(digits):
    spec = data.SPECS["digits"]
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1797 - 180 - 360, spec.n_val, spec.n_test)


def test_splits_are_disjoint_and_cover_the_dataset(digits):
    # the 1,797 digits images are pairwise distinct, so comparing pixels compares images
    train, val, test = _rows(digits.train), _rows(digits.val), _rows(digits.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert len(train | val | test) == 1797


def test_split_indices_partition_the_dataset():
    labels = np.repeat(np.arange(10), 37)
    idx = data._stratified_indices(labels, n_val=40, n_test=70, seed=3)
    together = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert sorted(together.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert (len(idx["val"]), len(idx["test"])) == (40, 70)


def test_splits_are_stratified(digits):
    _, y_all = data.load_arrays("digits")
    frac_all = np.bincount(y_all, minlength=10) / len(y_all)
    for split in (digits.train, digits.val, digits.test):
        frac = np.bincount(split.tensors[1].numpy(), minlength=10) / len(split)
        # per-class share within one image of the split's exact proportion
        assert np.all(np.abs(frac - frac_all) <= 1.0 / len(split) + 1e-9)


def test_splits_are_deterministic_and_seed_dependent(digits):
    again = data.make_splits("digits", seed=0)
    other = data.make_splits("digits", seed=1)
    assert torch.equal(again.test.tensors[0], digits.test.tensors[0])
    assert torch.equal(again.train.tensors[1], digits.train.tensors[1])
    assert not torch.equal(other.test.tensors[0], digits.test.tensors[0])


def test_train_loader_drops_the_last_partial_batch():
    loaders = data.make_loaders("digits", batch_size=100, seed=0)
    sizes = [len(y) for _, y in loaders.train]
    assert sizes == [100] * (1257 // 100)
    assert sum(len(y) for _, y in loaders.test) == 360  # evaluation keeps every image


def test_mnist_subset_splits():
    splits = data.make_splits("mnist", seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3500, 500, 1000)
    assert torch.equal(torch.bincount(splits.test.tensors[1]), torch.full((10,), 100))
    assert splits.train.tensors[0].shape[1:] == (1, 28, 28)


def test_example_input_shapes():
    assert data.example_input("mnist", 4).shape == (4, 1, 28, 28)
    assert data.example_input("cifar10").shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.example_input("svhn")


# ----------------------------------------------------------------------------- CIFAR-10
def _add_pickle(tar: tarfile.TarFile, name: str, images: np.ndarray, labels: list[int]) -> None:
    payload = pickle.dumps({b"data": images.reshape(len(labels), -1), b"labels": labels})
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


@pytest.fixture()
def cifar_folder(tmp_path: Path) -> Path:
    """A miniature archive in the official layout: 5 training batches of 4 and a test batch of 6.
    Every image is filled with its own serial number, so order can be checked exactly."""
    with tarfile.open(tmp_path / data.CIFAR10_ARCHIVE, "w:gz") as tar:
        serial = 0
        for i, n in [(f"data_batch_{b}", 4) for b in range(1, 6)] + [("test_batch", 6)]:
            imgs = np.stack([np.full(3 * 32 * 32, serial + k, np.uint8) for k in range(n)])
            _add_pickle(tar, i, imgs, [(serial + k) % 10 for k in range(n)])
            serial += n
    return tmp_path


def test_cifar10_reads_official_format_in_order(cifar_folder):
    (xtr, ytr), (xte, yte) = data.load_cifar10(cifar_folder, download=False, md5=None)
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (6, 3, 32, 32)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert xtr[:, 0, 0, 0].tolist() == list(range(20))
    assert xte[:, 2, 31, 31].tolist() == list(range(20, 26))
    assert yte.tolist() == [k % 10 for k in range(20, 26)]


def test_cifar10_accepts_the_right_md5(cifar_folder):
    md5 = hashlib.md5((cifar_folder / data.CIFAR10_ARCHIVE).read_bytes()).hexdigest()
    (xtr, _), _ = data.load_cifar10(cifar_folder, download=False, md5=md5)
    assert len(xtr) == 20


def test_cifar10_refuses_a_corrupt_archive(cifar_folder):
    with pytest.raises(ValueError, match="corrupt: md5"):
        data.load_cifar10(cifar_folder, download=False)  # the official md5 cannot match


def test_cifar10_missing_without_download_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_cifar10(tmp_path, download=False)
    assert str(tmp_path) in str(err.value) and data.CIFAR10_ARCHIVE in str(err.value)


def test_cifar10_unreachable_url_says_where_to_put_the_file(tmp_path):
    with pytest.raises(RuntimeError) as err:
        data.load_cifar10(tmp_path, url=f"file://{tmp_path}/nowhere.tar.gz")
    msg = str(err.value)
    assert "Offline?" in msg and str(tmp_path) in msg and data.CIFAR10_ARCHIVE in msg
    assert not list(tmp_path.iterdir())  # no half-downloaded file left behind

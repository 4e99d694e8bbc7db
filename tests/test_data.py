"""Data: fixed, disjoint, stratified, seeded splits; the CIFAR-10 reader on a tiny fake archive."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
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


# ----------------------------------------------------------------------------- MNIST, harder
def _digit_like(n: int = 6) -> np.ndarray:
    """Small uint8 'digits': a bright bar on black, so a transform visibly moves pixels."""
    images = np.zeros((n, 1, 28, 28), np.uint8)
    images[:, 0, 6:22, 12:16] = 255
    return images


def test_distort_is_deterministic_and_seeded():
    images = _digit_like()
    a, b = data.distort(images), data.distort(images)
    assert a.dtype == np.uint8 and a.shape == images.shape
    assert np.array_equal(a, b)                                   # same seed, same bytes
    other = data.distort(images, data.Distortion(seed=data.HARD_DISTORTION.seed + 1))
    assert not np.array_equal(a, other)
    assert not np.array_equal(a, images)                          # it does change the images


def test_distort_components_do_what_the_docstring_says():
    images = _digit_like()
    only = dict(rotation=0.0, scale=(1.0, 1.0), shear=0.0, shift=0.0, occlusion=(0, 0), noise=0.0)
    assert np.array_equal(data.distort(images, data.Distortion(**only)), images)  # identity
    occluded = data.distort(np.full((4, 1, 28, 28), 200, np.uint8),
                            data.Distortion(**{**only, "occlusion": (6, 6)}))
    # every image gets exactly one 6x6 black rectangle, nothing else changes
    assert [int((img == 0).sum()) for img in occluded] == [36] * 4
    assert set(np.unique(occluded)) == {0, 200}
    noisy = data.distort(np.full((2, 1, 28, 28), 128, np.uint8), data.Distortion(**{**only, "noise": 0.1}))
    assert abs(float(noisy.std()) - 25.5) < 2.0                   # std 0.1 * 255


def test_distort_refuses_colour_or_float_images():
    with pytest.raises(ValueError, match="uint8 grey images"):
        data.distort(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 grey images"):
        data.distort(np.zeros((2, 1, 8, 8), np.float32))


def test_mnist_hard_is_the_same_digits_cached_and_split_alike(tmp_path, monkeypatch):
    data.load_arrays("mnist")                                      # the plain cache, parsed once
    shutil.copy(data.data_dir() / "mnist5k.npz", tmp_path)        # -> a fresh folder without the hard one
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path))
    plain_x, plain_y = data.load_arrays("mnist")
    hard_x, hard_y = data.load_arrays("mnist_hard")
    assert (tmp_path / "mnist5k_hard_v1.npz").exists()           # cached in the data folder
    assert np.array_equal(hard_y, plain_y) and hard_x.shape == plain_x.shape == (5000, 1, 28, 28)
    assert np.array_equal(data.distort(plain_x[:50]), hard_x[:50])  # the cache is distort()'s output
    again_x, _ = data.load_arrays("mnist_hard")
    assert np.array_equal(again_x, hard_x)
    spec = data.SPECS["mnist_hard"]
    assert abs(hard_x.mean() / 255 - spec.mean[0]) < 1e-4 and abs((hard_x / 255).std() - spec.std[0]) < 1e-4
    plain, hard = data.make_splits("mnist", seed=0), data.make_splits("mnist_hard", seed=0)
    assert torch.equal(plain.test.tensors[1], hard.test.tensors[1])  # the same digits in each split
    assert (len(hard.train), len(hard.val), len(hard.test)) == (3500, 500, 1000)


MNIST_HARD_SHA256 = "cfc0950bf5eee999c10aa8e305cfce43a7aa0b82fc74dbf79a7f90831662360c"


def test_mnist_hard_bytes_are_pinned():
    # a changed distortion (or a library that interpolates differently) changes the dataset the
    # shipped vgg_small_hard checkpoint and the committed experiment results were computed on
    fresh = data.distort(data.load_arrays("mnist")[0])            # not the cache: recomputed now
    assert hashlib.sha256(fresh.tobytes()).hexdigest() == MNIST_HARD_SHA256

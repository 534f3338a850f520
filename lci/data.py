"""Data sets as whole uint8 tensors (airbench style).

``load_data(name)`` returns a :class:`DataBundle`: every training and test image of the set
as one ``uint8 [N, C, H, W]`` tensor plus int64 labels, on the CPU. The trainer moves the
tensors to the device once and draws and augments batches there (``lci.augment``); nothing
here is a per-sample ``Dataset``.

Supported sources (``TrainConfig.dataset``):

- ``digits``: scikit-learn's 8x8 digits (ships with scikit-learn, no download). A fixed,
  stratified 500-image test split drawn with the constant seed 12345, so that every run and
  every seed sees the same test set.
- ``cifar10`` / ``cifar100``: torchvision's on-disk format under ``data_dir``, read with
  torchvision's own classes. Nothing is downloaded here: the files must already be there.
- ``clothing1m`` / ``webvision``: the real-world noisy sets of method.md section 6, read from
  their standard file lists under ``data_dir`` (:mod:`lci.realworld`). Too large for memory,
  they are **file-backed**: ``x_train``/``x_test`` are :class:`lci.realworld.ImageFiles`,
  decoded in DataLoader workers; ``labels_are_noisy`` with no ``y_train_true``.
- a ``.npz`` file with ``x_train, y_train, x_test, y_test`` (optional ``y_train_true``: then
  ``y_train`` is taken as already noisy; optional ``class_names`` and ``hflip``).
- a ``.csv`` file list with header ``path,label[,split]``.
- an image folder: ``root/train/<class>/*`` + ``root/test/<class>/*``, or ``root/<class>/*``.

File-list and folder images are converted to RGB. When all images have the same size they
keep it; when sizes differ every image is resized (bilinear) to 32x32, the scale the default
``small_cnn`` and the CIFAR recipes are built for. Sets without an explicit test split hold
out a fixed, stratified 20% (constant seed 12345, like digits).

User data (npz, csv, folder) gets ``hflip=True``: natural photos are mirror-invariant. For
text, digits or other chirality-sensitive images store ``hflip=False`` in the npz (or use
``augment=none``).

Results are memoized per process (key: the data set, ``data_dir`` and the files' mtimes), so
Ray trials that share a worker process load each set once. Treat the tensors of a bundle as
read-only: a later ``load_data`` call of the same set returns the same tensors.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import ConfigError, DataError, allowed

#: Names ``load_data`` accepts besides paths.
REGISTERED = ("digits", "cifar10", "cifar100", "clothing1m", "webvision")
#: The file-backed real-world sets of :mod:`lci.realworld`.
REALWORLD = ("clothing1m", "webvision")
#: Constant seed of the fixed test hold-outs: the test set must not depend on the run seed.
HOLDOUT_SEED = 12345
DIGITS_TEST_SIZE = 500
HOLDOUT_FRACTION = 0.2
#: Size every image of a file list / folder is resized to when the images' sizes differ.
MIXED_SIZE_TARGET = (32, 32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Normalisation of the CIFAR recipes (method.md §5, from the GJS code).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}


@dataclass
class DataBundle:
    """A whole data set in memory (or, for the real-world sets, as image files); see the
    module docstring."""

    name: str
    x_train: torch.Tensor      # uint8 [N, C, H, W] (CPU; the trainer moves it to the device),
                               # or lci.realworld.ImageFiles (file-backed: decoded in workers)
    y_train: torch.Tensor      # int64 [N]: the labels as given (clean for synthetic-noise sets)
    x_test: torch.Tensor       # uint8 [M, C, H, W] (or ImageFiles)
    y_test: torch.Tensor       # int64 [M]
    num_classes: int
    mean: tuple                # per-channel normalisation in [0, 1] pixel units
    std: tuple
    pad: int                   # crop padding of the weak view (4 for 32px, 1 for 8px digits)
    hflip: bool                # horizontal flip is label-preserving (False for digits)
    y_train_true: Optional[torch.Tensor] = None  # known true labels when y_train is already noisy
    labels_are_noisy: bool = False  # y_train already noisy (user data / real world): no synthetic noise
    class_names: Optional[list] = None
    crop: int = 0              # views are random crop x crop windows, eval the centre (0: none)
    color_jitter: Optional[tuple] = None  # (brightness, contrast, saturation, hue) of the views
    # further labelled test sets, reported as <name>_acc (e.g. clean_val, imagenet_test)
    extra_tests: Dict[str, Tuple[object, torch.Tensor]] = dataclasses.field(default_factory=dict)

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        """``(C, H, W)`` of every image as stored (before the ``crop`` of the views)."""
        return tuple(self.x_train.shape[1:])

    @property
    def file_backed(self) -> bool:
        """Images are files decoded on demand (:class:`lci.realworld.ImageFiles`)."""
        return not isinstance(self.x_train, torch.Tensor)


# ------------------------------------------------------------------------------ entry point
_CACHE: Dict[tuple, DataBundle] = {}


def clear_cache() -> None:
    """Forget every memoized data set (tests, or after files changed in place)."""
    _CACHE.clear()


def load_data(dataset: str, data_dir: str = "data", *, num_workers: int = 0,
              image_size: int = 224, resize_size: int = 256) -> DataBundle:
    """Load a registered data set or a user's ``.npz`` / ``.csv`` / image folder.

    ``num_workers`` threads decode the images of file lists and folders (0: in this thread).
    ``clothing1m`` and ``webvision`` are file-backed (:mod:`lci.realworld`): their images are
    decoded later, at ``resize_size``, and their views are ``image_size`` crops; the other
    sets ignore both sizes.
    Raises :class:`DataError` for missing or malformed data and :class:`ConfigError` for a
    name that is neither registered nor a path.
    """
    dataset = os.fspath(dataset)
    data_dir = os.fspath(data_dir)
    kind, files = _resolve(dataset, data_dir)
    key = (kind, os.path.abspath(dataset) if kind in ("npz", "csv", "folder") else dataset,
           os.path.abspath(data_dir), _mtimes(files))
    if kind in REALWORLD:
        key += (int(image_size), int(resize_size))
    if key not in _CACHE:
        if kind in REALWORLD:
            from .realworld import LOADERS as REAL_LOADERS
            _CACHE[key] = REAL_LOADERS[kind](data_dir, image_size=int(image_size),
                                             resize_size=int(resize_size),
                                             num_workers=num_workers)
        else:
            _CACHE[key] = _LOADERS[kind](dataset, data_dir, num_workers)
    # a shallow copy: callers may rebind fields without touching the cached bundle
    return dataclasses.replace(_CACHE[key])


def _resolve(dataset: str, data_dir: str) -> Tuple[str, List[str]]:
    """Which loader reads ``dataset``, and the files whose mtimes key the cache."""
    if dataset == "digits":
        return "digits", []
    if dataset in ("cifar10", "cifar100"):
        cls = _unchecked(dataset)
        folder = os.path.join(data_dir, cls.base_folder)
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return dataset, [os.path.join(folder, f) for f in names]
    if dataset in REALWORLD:
        from .realworld import list_files
        return dataset, list_files(dataset, data_dir)
    if dataset.lower().endswith(".npz") or dataset.lower().endswith(".csv"):
        if not os.path.isfile(dataset):
            raise DataError(f"dataset file {dataset!r} does not exist")
        return dataset.lower()[-3:], [dataset]
    if os.path.isdir(dataset):
        # the root, the split folders and the class folders: adding or removing an image or
        # a class changes one of their mtimes (the image files themselves are not stat'ed)
        files = [dataset] + [os.path.join(dataset, d) for d in _subdirs(dataset)]
        for split in ("train", "test"):
            if os.path.isdir(os.path.join(dataset, split)):
                files += [os.path.join(dataset, split, d)
                          for d in _subdirs(os.path.join(dataset, split))]
        return "folder", files
    if os.path.exists(dataset):
        raise DataError(f"dataset {dataset!r} is a file of an unsupported type; give a .npz "
                        "file, a .csv file list or an image folder")
    if os.sep in dataset or (os.altsep and os.altsep in dataset):
        raise DataError(f"dataset path {dataset!r} does not exist")
    raise ConfigError(f"unknown dataset {dataset!r}; allowed: "
                      f"{allowed(REGISTERED)}, or the path of a .npz "
                      "file, a .csv file list or an image folder")


def _mtimes(files: Sequence[str]) -> tuple:
    return tuple(os.stat(f).st_mtime_ns if os.path.exists(f) else None for f in files)


# ----------------------------------------------------------------------------------- splits
def split_validation(n: int, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Random ``(train_idx, val_idx)`` of ``range(n)``, both sorted int64 arrays.

    ``round(fraction * n)`` samples are held out (at least one when ``fraction > 0``, and at
    least one stays in training). ``fraction = 0`` gives an empty validation set.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction={fraction!r} must be in [0, 1)")
    n_val = int(round(fraction * n))
    if fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    if n_val <= 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # A local generator seeded by (seed, tag): the noise module may also draw a permutation
    # from `default_rng(seed)`, and the same stream would make the validation set exactly
    # the samples whose labels were flipped.
    rng = np.random.default_rng([seed, 0x5E1_1D])
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def balanced_subset(labels: np.ndarray, n: int, num_classes: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples, an equal number per (given) label, drawn with ``seed``.

    Each class gets ``n // num_classes``; the ``n % num_classes`` left over go one each to
    classes picked at random. A class with fewer samples than its share gives all it has (the
    subset is then smaller than ``n``). ``n >= len(labels)`` keeps everything.
    """
    labels = np.asarray(labels)
    if n <= 0 or n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng([seed, 0xC1_07])  # its own stream: not the noise's, not the split's
    quota = np.full(num_classes, n // num_classes, dtype=np.int64)
    quota[rng.permutation(num_classes)[: n % num_classes]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:quota[c]] for c in range(num_classes)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def _fixed_holdout(labels: np.ndarray, n_test: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_idx, test_idx)`` with exactly ``n_test`` test samples.

    Each class gives its share of ``n_test`` (largest remainders get the rounding), drawn
    with the constant :data:`HOLDOUT_SEED`, so the split is the same in every run.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / len(labels)
    take = np.floor(quota).astype(np.int64)
    # stable sort: ties go to the lower class id, deterministically
    extra = np.argsort(-(quota - take), kind="stable")[: n_test - int(take.sum())]
    take[extra] += 1
    rng = np.random.default_rng(HOLDOUT_SEED)
    test = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    test_idx = np.sort(np.concatenate(test)).astype(np.int64)
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    return np.flatnonzero(train_mask).astype(np.int64), test_idx


def _holdout_count(n: int, where: str) -> int:
    if n < 2:
        raise DataError(f"{where} holds {n} image(s); at least 2 are needed to hold out a "
                        "test set")
    return min(max(1, int(round(HOLDOUT_FRACTION * n))), n - 1)


# ------------------------------------------------------------------------------ statistics
def _channel_stats(x: np.ndarray) -> Tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 images ``[N, C, H, W]`` in [0, 1] units.

    Computed exactly from a 256-bin histogram per channel: no float copy of the whole set.
    A constant channel gets std 1 so normalisation never divides by zero.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        m = float((p * values).sum())
        s = float(np.sqrt(max((p * (values - m) ** 2).sum(), 0.0)))
        means.append(m)
        stds.append(s if s > 1e-8 else 1.0)
    return tuple(means), tuple(stds)


def _bundle(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
            y_test: np.ndarray, *, num_classes: int, pad: int, hflip: bool,
            mean: Optional[tuple] = None, std: Optional[tuple] = None,
            y_train_true: Optional[np.ndarray] = None,
            class_names: Optional[list] = None) -> DataBundle:
    """Numpy arrays -> a :class:`DataBundle` of contiguous CPU tensors."""
    if mean is None or std is None:
        mean, std = _channel_stats(x_train)
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))  # noqa: E731
    as_labels = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return DataBundle(
        name=name, x_train=as_images(x_train), y_train=as_labels(y_train),
        x_test=as_images(x_test), y_test=as_labels(y_test), num_classes=int(num_classes),
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std), pad=int(pad),
        hflip=bool(hflip),
        y_train_true=None if y_train_true is None else as_labels(y_train_true),
        labels_are_noisy=y_train_true is not None,
        class_names=None if class_names is None else [str(c) for c in class_names])


# ----------------------------------------------------------------------------------- digits
def _load_digits(dataset: str, data_dir: str, num_workers: int) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    # pixel values are 0..16; stretch them to the 0..255 of every other set
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    train_idx, test_idx = _fixed_holdout(y, DIGITS_TEST_SIZE)
    # digits are not mirror-invariant (a flipped 2 is no 2); 1 px of padding on 8 px images
    return _bundle("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                   num_classes=10, pad=1, hflip=False,
                   class_names=[str(c) for c in range(10)])


# ------------------------------------------------------------------------------------ CIFAR
def _unchecked(dataset: str):
    """torchvision's CIFAR class with the md5 checks reduced to "the file exists".

    torchvision verifies every file's md5 before reading, which rejects anything but the
    original archives (and re-hashes 170 MB per load). With the md5s set to ``None`` its own
    ``check_integrity`` only checks that the file exists; reading stays torchvision's code.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if dataset == "cifar10" else CIFAR100
    return type(f"Unchecked{base.__name__}", (base,), {
        "train_list": [[f, None] for f, _ in base.train_list],
        "test_list": [[f, None] for f, _ in base.test_list],
        "meta": {**base.meta, "md5": None},
    })


def _load_cifar(dataset: str, data_dir: str, num_workers: int) -> DataBundle:
    cls = _unchecked(dataset)
    folder = os.path.join(data_dir, cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
        raise DataError(
            f"{dataset}: expected torchvision's {label} files {', '.join(expected)} in "
            f"{folder!r}, missing: {', '.join(missing)}. Data sets cannot be downloaded here; "
            f"place torchvision's download (the extracted {cls.filename}) in {data_dir!r} "
            "or set data_dir to where it is")
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=data_dir, train=train, download=False)
        except Exception as e:  # a truncated pickle, a missing key, a wrong array size
            raise DataError(f"{dataset}: the files in {folder!r} are not in torchvision's "
                            f"CIFAR format ({type(e).__name__}: {e})") from e
        # torchvision keeps HWC for PIL; the trainer wants NCHW
        x = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        splits.append((x, np.asarray(ds.targets, dtype=np.int64)))
    classes = list(ds.classes)
    for (x, y), part in zip(splits, ("training", "test")):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(f"{dataset}: {part} labels must be in [0, {len(classes)}) "
                            f"(the class names in {cls.meta['filename']!r}), found "
                            f"[{y.min()}, {y.max()}]")
    mean, std = CIFAR_STATS[dataset]
    (x_tr, y_tr), (x_te, y_te) = splits
    return _bundle(dataset, x_tr, y_tr, x_te, y_te, num_classes=len(classes), pad=4,
                   hflip=True, mean=mean, std=std, class_names=classes)


# -------------------------------------------------------------------------------------- npz
def _images_nchw(x: np.ndarray, key: str, path: str) -> np.ndarray:
    """A user's image array -> uint8 ``[N, C, H, W]``; see the module docstring."""
    if x.ndim == 3:                                    # [N, H, W]: grey
        x = x[:, None]
    elif x.ndim == 4:
        # channels-last when the last axis looks like channels and the second does not
        if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{path}: {key} has shape {x.shape}; expected images [N, H, W], "
                        "[N, H, W, C] or [N, C, H, W]")
    if x.shape[0] == 0 or x.size == 0:
        raise DataError(f"{path}: {key} is empty")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise DataError(f"{path}: {key} holds NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(f"{path}: {key} is float with values in [{lo:g}, {hi:g}]; float "
                            "images must be in [0, 1] (or give uint8 0..255)")
        return np.round(x * 255.0).astype(np.uint8)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: {key} has integer values in [{lo}, {hi}]; expected 0..255")
        return x.astype(np.uint8)
    raise DataError(f"{path}: {key} has dtype {x.dtype}; expected uint8 or float images")


def _labels(y: np.ndarray, key: str, path: str) -> np.ndarray:
    """Integer class ids >= 0 (floats holding whole numbers are accepted)."""
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}; expected one label per image [N]")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer)
                               or np.issubdtype(y.dtype, np.floating)):
        raise DataError(f"{path}: {key} has dtype {y.dtype}; expected integer class ids")
    if np.issubdtype(y.dtype, np.floating) and not (np.isfinite(y).all()
                                                    and (y == np.round(y)).all()):
        raise DataError(f"{path}: {key} holds non-integer values; expected integer class ids")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: {key} has a negative label ({y.min():g}); class ids must be "
                        ">= 0")
    return y.astype(np.int64)


def _load_npz(dataset: str, data_dir: str, num_workers: int) -> DataBundle:
    try:
        with np.load(dataset, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # not a zip, truncated, or object arrays (pickles are refused)
        raise DataError(f"{dataset}: cannot be read as a .npz file ({type(e).__name__}: {e})") from e
    required = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{dataset}: missing array(s) {', '.join(missing)}; a .npz data set "
                        f"needs {', '.join(required)} (optional: y_train_true, class_names, "
                        f"hflip); found {', '.join(sorted(arrays)) or 'none'}")
    x_tr = _images_nchw(arrays["x_train"], "x_train", dataset)
    x_te = _images_nchw(arrays["x_test"], "x_test", dataset)
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{dataset}: x_train images are {x_tr.shape[1:]} (C, H, W) but x_test "
                        f"images are {x_te.shape[1:]}")
    labels = {k: _labels(arrays[k], k, dataset)
              for k in ("y_train", "y_test", "y_train_true") if k in arrays}
    for x_key, y_key, x in (("x_train", "y_train", x_tr), ("x_test", "y_test", x_te),
                            ("x_train", "y_train_true", x_tr)):
        if y_key in labels and len(labels[y_key]) != len(x):
            raise DataError(f"{dataset}: {x_key} has {len(x)} images but {y_key} has "
                            f"{len(labels[y_key])} labels")
    num_classes = int(max(int(y.max()) for y in labels.values())) + 1
    class_names = None
    if "class_names" in arrays:
        class_names = [str(c) for c in np.asarray(arrays["class_names"]).reshape(-1)]
        if len(class_names) < num_classes:
            raise DataError(f"{dataset}: class_names has {len(class_names)} names but the "
                            f"labels go up to {num_classes - 1}")
        num_classes = len(class_names)
    hflip = bool(np.asarray(arrays["hflip"]).reshape(-1)[0]) if "hflip" in arrays else True
    return _bundle(dataset, x_tr, labels["y_train"], x_te, labels["y_test"],
                   num_classes=num_classes, pad=max(1, x_tr.shape[2] // 8), hflip=hflip,
                   y_train_true=labels.get("y_train_true"), class_names=class_names)


# ---------------------------------------------------------------------- images from files
def _read_images(paths: Sequence[str], where: Callable[[int], str],
                 num_workers: int) -> np.ndarray:
    """Decode image files to uint8 ``[N, 3, H, W]`` (RGB), ``num_workers`` threads.

    Two passes: image headers first (cheap: PIL reads only the header), to pick the common
    size and to name a missing or unreadable file before any decoding; then decoding, each
    worker writing its own slot of the output array. PIL releases the GIL while decoding, so
    threads do run in parallel.
    """
    from PIL import Image, UnidentifiedImageError

    def run(fn, items):
        if num_workers > 0 and len(items) > 1:
            with ThreadPoolExecutor(num_workers) as pool:
                return list(pool.map(fn, items))
        return [fn(i) for i in items]

    def size_of(i: int) -> Tuple[int, int]:
        p = paths[i]
        if not os.path.isfile(p):
            raise DataError(f"image file {p!r} ({where(i)}) does not exist")
        try:
            with Image.open(p) as im:
                return im.size  # (W, H)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"image file {p!r} ({where(i)}) cannot be read as an image: {e}") from e

    indices = list(range(len(paths)))
    sizes = run(size_of, indices)
    w, h = sizes[0] if len(set(sizes)) == 1 else MIXED_SIZE_TARGET
    out = np.empty((len(paths), h, w, 3), dtype=np.uint8)

    def decode(i: int) -> None:
        try:
            with Image.open(paths[i]) as im:
                im = im.convert("RGB")
                if im.size != (w, h):
                    im = im.resize((w, h), Image.BILINEAR)
                out[i] = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"image file {paths[i]!r} ({where(i)}) cannot be decoded: {e}") from e

    run(decode, indices)
    return out.transpose(0, 3, 1, 2)


def _from_records(name: str, paths: List[str], labels: np.ndarray, is_test: Optional[np.ndarray],
                  where: Callable[[int], str], num_workers: int, *, num_classes: int,
                  class_names: Optional[list], source: str) -> DataBundle:
    """Images + labels (+ optional test flags) -> bundle; the fixed hold-out without flags."""
    if not paths:
        raise DataError(f"{source} lists no images")
    if is_test is None:
        train_idx, test_idx = _fixed_holdout(labels, _holdout_count(len(paths), source))
    else:
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        for idx, part in ((train_idx, "training"), (test_idx, "test")):
            if len(idx) == 0:
                raise DataError(f"{source} has no {part} images")
    x = _read_images(paths, where, num_workers)
    return _bundle(name, x[train_idx], labels[train_idx], x[test_idx], labels[test_idx],
                   num_classes=num_classes, pad=max(1, x.shape[2] // 8), hflip=True,
                   class_names=class_names)


_INT_RE = re.compile(r"^[+-]?\d+$")


def _load_csv(dataset: str, data_dir: str, num_workers: int) -> DataBundle:
    root = os.path.dirname(os.path.abspath(dataset))
    with open(dataset, newline="", encoding="utf-8-sig") as fh:  # tolerate a BOM (Excel)
        reader = csv.DictReader(fh)
        header = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in header or "label" not in header:
            raise DataError(f"{dataset}: needs a header line with columns path,label (and an "
                            f"optional split); found {','.join(header) or 'no header'}")
        reader.fieldnames = header
        has_split = "split" in header
        paths, raw_labels, lines, splits = [], [], [], []
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values()):
                continue  # blank line
            path, label = (row["path"] or "").strip(), (row["label"] or "").strip()
            if not path or not label:
                raise DataError(f"{dataset}: line {line} has an empty path or label")
            if has_split:
                split = (row["split"] or "").strip().lower()
                if split not in ("train", "test"):
                    raise DataError(f"{dataset}: line {line} has split {row['split']!r}; "
                                    f"allowed: {allowed(('train', 'test'))}")
                splits.append(split == "test")
            paths.append(os.path.join(root, path))
            raw_labels.append(label)
            lines.append(line)
    # integer labels are class ids; anything else is a class name (sorted names -> ids)
    if raw_labels and all(_INT_RE.match(v) for v in raw_labels):
        labels = np.array([int(v) for v in raw_labels], dtype=np.int64)
        if labels.min() < 0:
            bad = int(np.argmin(labels))
            raise DataError(f"{dataset}: line {lines[bad]} has the negative label "
                            f"{labels[bad]}; class ids must be >= 0")
        class_names, num_classes = None, int(labels.max()) + 1
    else:
        class_names = sorted(set(raw_labels))
        ids = {c: i for i, c in enumerate(class_names)}
        labels = np.array([ids[v] for v in raw_labels], dtype=np.int64)
        num_classes = len(class_names)
    return _from_records(dataset, paths, labels, np.array(splits, dtype=bool) if has_split else None,
                         lambda i: f"line {lines[i]} of {dataset!r}", num_workers,
                         num_classes=max(num_classes, 1), class_names=class_names,
                         source=f"file list {dataset!r}")


def _subdirs(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _images_in(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))


def _load_folder(dataset: str, data_dir: str, num_workers: int) -> DataBundle:
    train_dir, test_dir = os.path.join(dataset, "train"), os.path.join(dataset, "test")
    two_level = os.path.isdir(train_dir)
    if two_level and not os.path.isdir(test_dir):
        raise DataError(f"image folder {dataset!r} has train/ but no test/; give both "
                        "train/<class>/ and test/<class>/, or only <class>/ folders")
    class_names = _subdirs(train_dir if two_level else dataset)
    if not class_names:
        raise DataError(f"image folder {dataset!r} has no class folders; expected "
                        "train/<class>/*.png and test/<class>/*.png, or <class>/*.png")
    ids = {c: i for i, c in enumerate(class_names)}
    paths: List[str] = []
    labels: List[int] = []
    is_test: List[bool] = []
    for split_dir, test in ([(train_dir, False), (test_dir, True)] if two_level
                            else [(dataset, False)]):
        for c in _subdirs(split_dir):
            if c not in ids:
                raise DataError(f"image folder {dataset!r}: test class {c!r} has no training "
                                f"folder; training classes: {', '.join(class_names)}")
            files = _images_in(os.path.join(split_dir, c))
            paths += files
            labels += [ids[c]] * len(files)
            is_test += [test] * len(files)
    return _from_records(dataset, paths, np.array(labels, dtype=np.int64),
                         np.array(is_test, dtype=bool) if two_level else None,
                         lambda i: f"class {class_names[labels[i]]!r}", num_workers,
                         num_classes=len(class_names), class_names=class_names,
                         source=f"image folder {dataset!r}")


_LOADERS = {"digits": _load_digits, "cifar10": _load_cifar, "cifar100": _load_cifar,
            "npz": _load_npz, "csv": _load_csv, "folder": _load_folder}

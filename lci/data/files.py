"""A user's own data: a ``.npz`` file, a ``.csv`` file list or an image folder.

- ``.npz`` with ``x_train, y_train, x_test, y_test`` (optional ``y_train_true``: then
  ``y_train`` is taken as already noisy; optional ``num_classes``, ``class_names`` and
  ``hflip``).
- ``.csv`` file list with header ``path,label[,split]`` (paths relative to the file).
- image folder: ``root/train/<class>/*`` + ``root/test/<class>/*``, or ``root/<class>/*``.

File-list and folder images are converted to RGB. When all images have the same size they
keep it; when sizes differ every image is resized (bilinear) to 32x32, the scale the default
``small_cnn`` and the CIFAR recipes are built for. Sets without an explicit test split hold
out a fixed, stratified 20% (constant seed, like digits).

User data gets ``hflip=True``: natural photos are mirror-invariant. For text, digits or other
chirality-sensitive images store ``hflip=False`` in the npz (or use ``augment=none``).
"""
from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError, allowed
from .bundle import DataBundle, make_bundle
from .labels import check_class_count, check_label_range
from .registry import LoadOptions, register_format
from .splits import fixed_holdout, holdout_count

#: Size every image of a file list / folder is resized to when the images' sizes differ.
MIXED_SIZE_TARGET = (32, 32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _images_nchw(x: np.ndarray, key: str, path: str) -> np.ndarray:
    """A user's image array -> uint8 ``[N, C, H, W]`` (grey, channels-last or first)."""
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


def _npz_classes(arrays: dict, y_test: np.ndarray, class_names: Optional[List[str]], path: str,
                 num_images: int) -> Tuple[int, str]:
    """The class count an .npz declares, and by what: its ``num_classes`` array, else its
    ``class_names``, else the test labels' range (a training label beyond every test label
    would be a class with no test image, mostly a typo)."""
    if "num_classes" in arrays:
        v = np.asarray(arrays["num_classes"]).reshape(-1)
        if (v.size != 1 or not np.issubdtype(v.dtype, np.number) or v.dtype == bool
                or not np.isfinite(v[0]) or v[0] != np.round(v[0]) or v[0] < 1):
            raise DataError(f"{path}: num_classes must be one positive integer, found "
                            f"{v.tolist()!r}")
        k = int(v[0])
        if class_names is not None and len(class_names) != k:
            raise DataError(f"{path}: class_names has {len(class_names)} names but num_classes "
                            f"is {k}")
        check_class_count(k, num_images, f"{path}: num_classes is {k}")
        return k, "num_classes in the .npz"
    if class_names is not None:
        k = len(class_names)
        check_class_count(k, num_images, f"{path}: class_names has {k} names")
        return k, f"the {k} entries of class_names in the .npz"
    k = int(y_test.max()) + 1
    check_class_count(k, num_images, f"{path}: y_test has label {k - 1}")
    return k, ("the test labels' range; declare more classes with a num_classes array in "
               "the .npz")


def locate_file(dataset: str, data_dir: str) -> List[str]:
    if not os.path.isfile(dataset):
        raise DataError(f"dataset file {dataset!r} does not exist")
    return [dataset]


@register_format("npz", locate=locate_file)
def load_npz(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    try:
        with np.load(dataset, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # not a zip, truncated, or object arrays (pickles are refused)
        raise DataError(f"{dataset}: cannot be read as a .npz file ({type(e).__name__}: {e})") from e
    required = ("x_train", "y_train", "x_test", "y_test")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{dataset}: missing array(s) {', '.join(missing)}; a .npz data set "
                        f"needs {', '.join(required)} (optional: y_train_true, num_classes, "
                        f"class_names, hflip); found {', '.join(sorted(arrays)) or 'none'}")
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
    class_names = None
    if "class_names" in arrays:
        class_names = [str(c) for c in np.asarray(arrays["class_names"]).reshape(-1)]
    num_classes, declared_by = _npz_classes(arrays, labels["y_test"], class_names, dataset,
                                            len(x_tr) + len(x_te))
    for key, y in labels.items():
        check_label_range(y, num_classes, lambda i, key=key: f"{dataset}: {key}[{i}]",
                          declared_by)
    hflip = bool(np.asarray(arrays["hflip"]).reshape(-1)[0]) if "hflip" in arrays else True
    return make_bundle(dataset, x_tr, labels["y_train"], x_te, labels["y_test"],
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
        train_idx, test_idx = fixed_holdout(labels, holdout_count(len(paths), source))
    else:
        train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
        for idx, part in ((train_idx, "training"), (test_idx, "test")):
            if len(idx) == 0:
                raise DataError(f"{source} has no {part} images")
    x = _read_images(paths, where, num_workers)
    return make_bundle(name, x[train_idx], labels[train_idx], x[test_idx], labels[test_idx],
                       num_classes=num_classes, pad=max(1, x.shape[2] // 8), hflip=True,
                       class_names=class_names)


_INT_RE = re.compile(r"^[+-]?\d+$")


@register_format("csv", locate=locate_file)
def load_csv(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
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
        class_names = None
        num_classes = _csv_classes(dataset, labels, lines,
                                   np.array(splits, dtype=bool) if has_split else None)
    else:
        class_names = sorted(set(raw_labels))
        ids = {c: i for i, c in enumerate(class_names)}
        labels = np.array([ids[v] for v in raw_labels], dtype=np.int64)
        num_classes = len(class_names)
    return _from_records(dataset, paths, labels, np.array(splits, dtype=bool) if has_split else None,
                         lambda i: f"line {lines[i]} of {dataset!r}", opts.num_workers,
                         num_classes=max(num_classes, 1), class_names=class_names,
                         source=f"file list {dataset!r}")


def _csv_classes(path: str, labels: np.ndarray, lines: List[int],
                 is_test: Optional[np.ndarray]) -> int:
    """The class count of integer labels: the test labels' range with a split column (as for
    an .npz), else the range of all labels; more classes than rows are refused."""
    declared = is_test if is_test is not None and is_test.any() else np.ones(len(labels), bool)
    top = int(np.flatnonzero(declared)[np.argmax(labels[declared])])
    k = int(labels[top]) + 1
    check_class_count(k, len(labels), f"{path}: line {lines[top]} has label {labels[top]}")
    check_label_range(labels, k, lambda i: f"{path}: line {lines[i]}", "the test labels' range")
    return k


def _subdirs(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder)
                  if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))


def _images_in(folder: str) -> List[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))


def _folder_images(dataset: str) -> Tuple[List[str], bool, List[Tuple[int, bool, List[str]]]]:
    """The class names of an image folder, whether it has train/ and test/, and the image
    files of every ``(class id, is_test)`` folder; a :class:`DataError` for a broken layout
    or a class folder without images (it would add a class that only noise fills). Folders
    are listed, no image is opened."""
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
    groups = []
    for split_dir, test in ([(train_dir, False), (test_dir, True)] if two_level
                            else [(dataset, False)]):
        for c in _subdirs(split_dir):
            if c not in ids:
                raise DataError(f"image folder {dataset!r}: test class {c!r} has no training "
                                f"folder; training classes: {', '.join(class_names)}")
            files = _images_in(os.path.join(split_dir, c))
            if not files:
                raise DataError(f"image folder {dataset!r}: class folder "
                                f"{os.path.join(split_dir, c)!r} holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove it")
            groups.append((ids[c], test, files))
    return class_names, two_level, groups


def locate_folder(dataset: str, data_dir: str) -> List[str]:
    _folder_images(dataset)
    # the root, the split folders and the class folders: adding or removing an image or
    # a class changes one of their mtimes (the image files themselves are not stat'ed)
    files = [dataset] + [os.path.join(dataset, d) for d in _subdirs(dataset)]
    for split in ("train", "test"):
        if os.path.isdir(os.path.join(dataset, split)):
            files += [os.path.join(dataset, split, d)
                      for d in _subdirs(os.path.join(dataset, split))]
    return files


@register_format("folder", locate=locate_folder)
def load_folder(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    class_names, two_level, groups = _folder_images(dataset)
    paths: List[str] = []
    labels: List[int] = []
    is_test: List[bool] = []
    for class_id, test, files in groups:
        paths += files
        labels += [class_id] * len(files)
        is_test += [test] * len(files)
    return _from_records(dataset, paths, np.array(labels, dtype=np.int64),
                         np.array(is_test, dtype=bool) if two_level else None,
                         lambda i: f"class {class_names[labels[i]]!r}", opts.num_workers,
                         num_classes=len(class_names), class_names=class_names,
                         source=f"image folder {dataset!r}")

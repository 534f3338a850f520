"""Real-world noisy sets (method.md section 6): Clothing1M and mini-WebVision, file-backed.

Neither set fits in memory as uint8 tensors (Clothing1M's 128,000-image subset alone is 25 GB
at 256 px), so their :class:`~lci.data.DataBundle` holds :class:`ImageFiles` instead of
tensors: file paths that DataLoader workers decode to a fixed uint8 size (``Resize(s)`` of the
shorter side + ``CenterCrop(s)``, ``s = resize_size``, 256 by default). The trainer moves each
uint8 batch to the device, where :class:`lci.augment.Augmenter` crops ``image_size`` (224)
at random and flips per view (plus ColorJitter for WebVision); evaluation uses the centre crop.

Layouts (``<data_dir>`` is ``TrainConfig.data_dir``):

- Clothing1M under ``<data_dir>/clothing1m/``: ``noisy_label_kv.txt`` and
  ``clean_label_kv.txt`` (lines ``images/<path> <label>``), ``noisy_train_key_list.txt``,
  ``clean_val_key_list.txt``, ``clean_test_key_list.txt`` (lines ``images/<path>``); image
  paths are relative to ``clothing1m/``. 14 classes (names from ``category_names_eng.txt``
  when present). Training labels are the noisy ones, test and validation labels the clean
  ones; the clean validation set is reported as ``clean_val_acc``. The paper's class-balanced
  128,000-sample subset is drawn by the trainer with the run seed (``train_subset``).
- mini-WebVision under ``<data_dir>/webvision/``: ``info/train_filelist_google.txt`` (lines
  ``<path> <label>``, paths relative to ``webvision/``) and ``info/val_filelist.txt`` (lines
  ``<file> <label>``, images in ``val_images_256/``), both restricted to classes < 50; the
  WebVision validation set is the test set (``test_acc``, ``test_acc_top5``). Optional: the
  ILSVRC12 validation images of the same 50 classes in ``<data_dir>/imagenet/val/<synset>/``,
  class ``k`` being line ``k`` of ``webvision/info/synsets.txt`` (without that file: the
  sorted synset folders, torchvision's ImageNet order, which WebVision's class ids follow);
  reported as ``imagenet_test_acc`` and ``imagenet_test_acc_top5``.

Every listed file is checked to exist before anything is decoded (one directory listing per
folder, not one ``stat`` per file); a missing one is a :class:`~lci.errors.DataError` that
names the list file, the line and the path.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import DataError

# Normalisation (method.md section 6): Clothing1M's own statistics, ImageNet's for WebVision.
CLOTHING_STATS = ((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: ColorJitter(brightness, contrast, saturation, hue) of the WebVision views (GJS).
WEBVISION_JITTER = (0.4, 0.4, 0.4, 0.2)
CLOTHING_CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                    "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
WEBVISION_CLASSES = 50  # mini-WebVision: the first 50 classes of WebVision 1.0 (Google)
#: Images per eval batch when streaming from files.
EVAL_BATCH = 256


# ------------------------------------------------------------------------------ image files
def decode_image(path: str, size: int) -> torch.Tensor:
    """One image file -> uint8 ``[3, size, size]`` RGB: Resize(size) + CenterCrop(size).

    The resize matches torchvision's ``Resize(size)`` on a PIL image (shorter side to
    ``size``, bilinear with antialiasing); JPEGs are first decoded at the largest DCT
    scale-down that keeps the shorter side >= ``size`` (``Image.draft``), which cuts the
    decode time of large photos several-fold for an invisible difference.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            im = im.convert("RGB")
            w, h = im.size
            if w <= h:
                nw, nh = size, max(size, int(size * h / w))
            else:
                nw, nh = max(size, int(size * w / h)), size
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BILINEAR)
            top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file {path!r} does not exist (it was there when the file "
                        "lists were checked)") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image file {path!r} cannot be decoded: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Image files decoded on demand to uint8 ``[3, size, size]``; a map-style Dataset.

    ``__getitem__(i)`` returns ``(image, i)`` so that a DataLoader batch carries the positions
    (the trainer looks the labels up on the device). Paths are kept as one numpy bytes array
    (relative to ``root``): no per-path Python objects, so forked DataLoader workers do not
    copy them page by page as reference counts change.
    """

    def __init__(self, root: str, rel_paths: Sequence[str] | np.ndarray, size: int):
        self.root = root
        self.rel = (rel_paths if isinstance(rel_paths, np.ndarray) and rel_paths.dtype.kind == "S"
                    else np.array([p.encode() for p in rel_paths], dtype="S"))
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.rel)

    @property
    def shape(self) -> Tuple[int, int, int, int]:
        """``(N, 3, size, size)``, like the uint8 tensors of in-memory sets."""
        return (len(self.rel), 3, self.size, self.size)

    def path(self, i: int) -> str:
        return os.path.join(self.root, self.rel[i].decode())

    def relative_paths(self) -> List[str]:
        return [p.decode() for p in self.rel]

    def subset(self, idx) -> "ImageFiles":
        return ImageFiles(self.root, self.rel[np.asarray(idx, dtype=np.int64)], self.size)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        return decode_image(self.path(i), self.size), i

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} images under {self.root!r}, decoded at {self.size}px)"


# --------------------------------------------------------------------------------- loaders
class EpochBatches(Sampler):
    """Batches of positions in the order set by the trainer before each epoch.

    The trainer draws the epoch's permutation from the run's generator (as for in-memory
    sets), so batches, resumption and determinism do not depend on the DataLoader. The
    sampler runs in the main process, hence a persistent loader sees each new ``order``.
    """

    def __init__(self, batch_size: int):
        self.batch_size = int(batch_size)
        self.order: List[int] = []

    def __iter__(self) -> Iterator[List[int]]:
        o, bs = self.order, self.batch_size
        for i in range(len(o) // bs):  # the last partial batch is dropped, as in memory
            yield o[i * bs:(i + 1) * bs]

    def __len__(self) -> int:
        return len(self.order) // self.batch_size


def train_loader(images: ImageFiles, batch_size: int, num_workers: int,
                 pin_memory: bool) -> Tuple[DataLoader, EpochBatches]:
    """A persistent loader of uint8 batches ``(x [B,3,s,s], positions [B])`` and its sampler."""
    batches = EpochBatches(batch_size)
    loader = DataLoader(images, batch_sampler=batches, num_workers=num_workers,
                        pin_memory=pin_memory, persistent_workers=num_workers > 0,
                        prefetch_factor=4 if num_workers > 0 else None)
    return loader, batches


def eval_loader(images: ImageFiles, num_workers: int, pin_memory: bool,
                batch_size: int = EVAL_BATCH) -> DataLoader:
    """Every image once, in order (evaluation streams: nothing is kept but the logits)."""
    return DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory)


# --------------------------------------------------------------------------- list parsing
Where = Callable[[int], str]


def _read_lines(path: str) -> List[Tuple[int, List[str]]]:
    """(line number, fields) of each non-blank line."""
    if not os.path.isfile(path):
        raise DataError(f"list file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        return [(n, line.split()) for n, line in enumerate(fh, 1) if line.strip()]


def _path_labels(path: str) -> Tuple[List[str], np.ndarray, List[int]]:
    """A ``<path> <label>`` list -> paths, int64 labels, line numbers."""
    paths, labels, lines = [], [], []
    for n, f in _read_lines(path):
        if len(f) != 2 or not f[1].lstrip("-").isdigit():
            raise DataError(f"{path}, line {n}: expected '<path> <label>' with an integer "
                            f"label, found {' '.join(f)!r}")
        paths.append(f[0])
        labels.append(int(f[1]))
        lines.append(n)
    return paths, np.array(labels, dtype=np.int64), lines


def _keys(path: str) -> Tuple[List[str], List[int]]:
    keys, lines = [], []
    for n, f in _read_lines(path):
        if len(f) != 1:
            raise DataError(f"{path}, line {n}: expected one image path, found {' '.join(f)!r}")
        keys.append(f[0])
        lines.append(n)
    return keys, lines


def check_files_exist(root: str, rel_paths: Sequence[str], where: Where,
                      num_workers: int = 0) -> None:
    """Raise :class:`DataError` for the first listed path that is not a file under ``root``.

    One ``os.listdir`` per folder (threads when ``num_workers > 0``) instead of a ``stat`` per
    file: Clothing1M's million paths live in about a thousand folders.
    """
    by_dir: Dict[str, List[int]] = {}
    for i, p in enumerate(rel_paths):
        by_dir.setdefault(os.path.dirname(p), []).append(i)
    folders = list(by_dir)

    def listing(d: str) -> Optional[set]:
        try:
            return set(os.listdir(os.path.join(root, d) if d else root))
        except (FileNotFoundError, NotADirectoryError):
            return None

    if num_workers > 0 and len(folders) > 1:
        with ThreadPoolExecutor(max(num_workers, 4)) as pool:
            listings = list(pool.map(listing, folders))
    else:
        listings = [listing(d) for d in folders]
    first_missing = None
    for d, names in zip(folders, listings):
        for i in by_dir[d]:
            if names is None or os.path.basename(rel_paths[i]) not in names:
                first_missing = i if first_missing is None else min(first_missing, i)
                break  # later entries of this folder come after i
    if first_missing is not None:
        i = first_missing
        raise DataError(f"{where(i)}: image file {os.path.join(root, rel_paths[i])!r} does "
                        "not exist")


def _check_labels(labels: np.ndarray, num_classes: int, where: Where) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{where(i)} has label {labels[i]}; labels must be in "
                        f"[0, {num_classes})")


def _at(list_file: str, lines: Sequence[int], names: Optional[Sequence[str]] = None) -> Where:
    """``"<list file>, line <n>"`` (and the entry as written) for the i-th entry of a list."""
    if names is None:
        return lambda i: f"{list_file}, line {lines[i]}"
    return lambda i: f"{list_file}, line {lines[i]} ({names[i]!r})"


# ------------------------------------------------------------------------------ Clothing1M
def load_clothing1m(data_dir: str, *, image_size: int, resize_size: int, num_workers: int = 0):
    from .data import DataBundle

    root = os.path.join(data_dir, "clothing1m")
    if not os.path.isdir(root):
        raise DataError(f"clothing1m: folder {root!r} does not exist; expected Clothing1M's "
                        "noisy_label_kv.txt, clean_label_kv.txt, noisy_train_key_list.txt, "
                        "clean_val_key_list.txt, clean_test_key_list.txt and images/ there "
                        "(set data_dir to the folder that holds clothing1m/)")
    f = {k: os.path.join(root, k + ".txt") for k in (
        "noisy_label_kv", "clean_label_kv", "noisy_train_key_list", "clean_val_key_list",
        "clean_test_key_list")}
    num_classes = len(CLOTHING_CLASSES)

    def kv(name: str) -> Dict[str, int]:
        paths, labels, lines = _path_labels(f[name])
        _check_labels(labels, num_classes, _at(f[name], lines))
        return dict(zip(paths, labels.tolist()))

    noisy_kv, clean_kv = kv("noisy_label_kv"), kv("clean_label_kv")

    def split(list_name: str, labels_kv: Dict[str, int], kv_name: str):
        keys, lines = _keys(f[list_name])
        if not keys:
            raise DataError(f"{f[list_name]} lists no images")
        where = _at(f[list_name], lines)
        missing = next((i for i, k in enumerate(keys) if k not in labels_kv), None)
        if missing is not None:
            raise DataError(f"{where(missing)} names {keys[missing]!r}, which has no label in "
                            f"{f[kv_name]}")
        check_files_exist(root, keys, _at(f[list_name], lines, keys), num_workers)
        return (ImageFiles(root, keys, resize_size),
                torch.tensor([labels_kv[k] for k in keys], dtype=torch.int64))

    x_train, y_train = split("noisy_train_key_list", noisy_kv, "noisy_label_kv")
    x_val, y_val = split("clean_val_key_list", clean_kv, "clean_label_kv")
    x_test, y_test = split("clean_test_key_list", clean_kv, "clean_label_kv")
    names_file = os.path.join(root, "category_names_eng.txt")
    names = list(CLOTHING_CLASSES)
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as fh:
            listed = [ln.strip() for ln in fh if ln.strip()]
        names = listed if len(listed) == num_classes else names
    mean, std = CLOTHING_STATS
    return DataBundle(name="clothing1m", x_train=x_train, y_train=y_train, x_test=x_test,
                      y_test=y_test, num_classes=num_classes, mean=mean, std=std, pad=0,
                      hflip=True, y_train_true=None, labels_are_noisy=True, class_names=names,
                      crop=image_size, extra_tests={"clean_val": (x_val, y_val)})


# ----------------------------------------------------------------------------- WebVision
def load_webvision(data_dir: str, *, image_size: int, resize_size: int, num_workers: int = 0):
    from .data import DataBundle

    root = os.path.join(data_dir, "webvision")
    train_list = os.path.join(root, "info", "train_filelist_google.txt")
    val_list = os.path.join(root, "info", "val_filelist.txt")
    if not os.path.isdir(root):
        raise DataError(f"webvision: folder {root!r} does not exist; expected "
                        "info/train_filelist_google.txt, info/val_filelist.txt, the training "
                        "images and val_images_256/ there (set data_dir to the folder that "
                        "holds webvision/)")
    C = WEBVISION_CLASSES

    def mini(list_file: str, prefix: str):
        paths, labels, lines = _path_labels(list_file)
        _check_labels(labels, 1000, _at(list_file, lines))  # WebVision 1.0 has 1000 classes
        keep = np.flatnonzero(labels < C)
        if len(keep) == 0:
            raise DataError(f"{list_file} lists no image of the first {C} classes")
        rel = [os.path.join(prefix, paths[i]) for i in keep]
        check_files_exist(root, rel, _at(list_file, [lines[i] for i in keep],
                                         [paths[i] for i in keep]), num_workers)
        return ImageFiles(root, rel, resize_size), torch.from_numpy(labels[keep])

    x_train, y_train = mini(train_list, "")
    x_test, y_test = mini(val_list, "val_images_256")
    synsets = _webvision_synsets(root)
    extra = {}
    imagenet = _imagenet_val(data_dir, synsets, resize_size, num_workers)
    if imagenet is not None:
        extra["imagenet_test"] = imagenet
    mean, std = IMAGENET_STATS
    names = [s[1] or s[0] for s in synsets[:C]] if synsets and len(synsets) >= C else None
    return DataBundle(name="webvision", x_train=x_train, y_train=y_train, x_test=x_test,
                      y_test=y_test, num_classes=C, mean=mean, std=std, pad=0, hflip=True,
                      y_train_true=None, labels_are_noisy=True, class_names=names,
                      crop=image_size, color_jitter=WEBVISION_JITTER, extra_tests=extra)


def _webvision_synsets(root: str) -> Optional[List[Tuple[str, str]]]:
    """``info/synsets.txt`` -> [(synset, name)], line k = class k; None without the file."""
    path = os.path.join(root, "info", "synsets.txt")
    if not os.path.isfile(path):
        return None
    out = []
    for n, f in _read_lines(path):
        if not f[0].startswith("n"):
            raise DataError(f"{path}, line {n}: expected '<synset id> <name>', e.g. "
                            f"'n01440764 tench', found {' '.join(f)!r}")
        out.append((f[0], " ".join(f[1:]).split(",")[0].strip()))
    return out


def _imagenet_val(data_dir: str, synsets, resize_size: int, num_workers: int):
    """ILSVRC12 val images of WebVision's 50 classes, or None when the folder is absent."""
    val = os.path.join(data_dir, "imagenet", "val")
    if not os.path.isdir(val):
        return None
    folders = sorted(d for d in os.listdir(val) if os.path.isdir(os.path.join(val, d)))
    if synsets is not None:
        wanted = [s for s, _ in synsets[:WEBVISION_CLASSES]]
        source = "webvision/info/synsets.txt"
    else:
        wanted = folders[:WEBVISION_CLASSES]  # torchvision's ImageNet order: sorted synsets
        source = "the sorted synset folders"
    missing = [s for s in wanted if s not in folders]
    if missing or len(wanted) < WEBVISION_CLASSES:
        raise DataError(f"ImageNet validation folder {val!r} lacks the synset folder(s) "
                        f"{', '.join(missing[:5]) or '(too few folders)'} of WebVision's first "
                        f"{WEBVISION_CLASSES} classes (class -> synset from {source}); give all "
                        "50, or remove the folder to skip the ImageNet test")
    rel, labels = [], []
    for k, s in enumerate(wanted):
        files = sorted(f for f in os.listdir(os.path.join(val, s))
                       if f.lower().endswith((".jpeg", ".jpg", ".png")))
        rel += [os.path.join(s, f) for f in files]
        labels += [k] * len(files)
    if not rel:
        raise DataError(f"ImageNet validation folder {val!r} holds no images of WebVision's "
                        f"first {WEBVISION_CLASSES} classes")
    return ImageFiles(val, rel, resize_size), torch.tensor(labels, dtype=torch.int64)


LOADERS = {"clothing1m": load_clothing1m, "webvision": load_webvision}


def list_files(dataset: str, data_dir: str) -> List[str]:
    """The files whose mtimes key the data cache (the lists; images are not stat'ed)."""
    if dataset == "clothing1m":
        root = os.path.join(data_dir, "clothing1m")
        names = ["noisy_label_kv", "clean_label_kv", "noisy_train_key_list",
                 "clean_val_key_list", "clean_test_key_list"]
        return [root] + [os.path.join(root, n + ".txt") for n in names]
    root = os.path.join(data_dir, "webvision")
    return [root, os.path.join(root, "info", "train_filelist_google.txt"),
            os.path.join(root, "info", "val_filelist.txt"),
            os.path.join(root, "info", "synsets.txt"),
            os.path.join(data_dir, "imagenet", "val")]

"""Real-world noisy sets (paper Section 4.2): Clothing1M and mini-WebVision, file-backed.

Their bundles hold :class:`~lci.data.imagefiles.ImageFiles` (decoded at ``resize_size``, 256
by default) instead of tensors; the views are random ``image_size`` (224) crops with flips
(plus ColorJitter for WebVision), evaluation uses the centre crop.

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import DataError
from .bundle import DataBundle
from .imagefiles import ImageFiles
from .labels import check_label_range
from .registry import DatasetProfile, LoadOptions, register_dataset

# Normalisation: Clothing1M's own statistics, ImageNet's for WebVision.
CLOTHING_STATS = ((0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: ColorJitter(brightness, contrast, saturation, hue) of the WebVision views (GJS).
WEBVISION_JITTER = (0.4, 0.4, 0.4, 0.2)
CLOTHING_CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                    "Jacket", "Down Coat", "Suit", "Shawl", "Dress", "Vest", "Underwear")
WEBVISION_CLASSES = 50  # mini-WebVision: the first 50 classes of WebVision 1.0 (Google)
CLOTHING_LISTS = ("noisy_label_kv", "clean_label_kv", "noisy_train_key_list",
                  "clean_val_key_list", "clean_test_key_list")


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


def _at(list_file: str, lines: Sequence[int], names: Optional[Sequence[str]] = None) -> Where:
    """``"<list file>, line <n>"`` (and the entry as written) for the i-th entry of a list."""
    if names is None:
        return lambda i: f"{list_file}, line {lines[i]}"
    return lambda i: f"{list_file}, line {lines[i]} ({names[i]!r})"


def _required(dataset: str, folder: str, expected: str, lists: Sequence[str]) -> None:
    """The set's folder and its list files exist; the errors ``load`` would raise otherwise."""
    if not os.path.isdir(folder):
        raise DataError(f"{dataset}: folder {folder!r} does not exist; expected {expected} "
                        f"there (set data_dir to the folder that holds {dataset}/)")
    for path in lists:
        if not os.path.isfile(path):
            raise DataError(f"list file {path!r} does not exist")


# ------------------------------------------------------------------------------ Clothing1M
def locate_clothing1m(dataset: str, data_dir: str) -> List[str]:
    root = os.path.join(data_dir, "clothing1m")
    lists = [os.path.join(root, n + ".txt") for n in CLOTHING_LISTS]
    _required("clothing1m", root, "Clothing1M's " + ", ".join(n + ".txt" for n in CLOTHING_LISTS)
              + " and images/", lists)
    return [root] + lists


# Clothing1M / mini-WebVision: the ELR+ settings the paper adopts (Section 4.2; ELR+'s
# config_clothing1m.json / config_webvision.json): SGD momentum 0.9, Clothing1M lr 0.002,
# wd 1e-3, batch 64, 15 epochs; WebVision lr 0.02, wd 5e-4, batch 32, 100 epochs. ELR+
# decays x0.1 once (epoch 7 / epoch 50): the presets set lr_milestones to match. Clothing1M
# trains on the paper's class-balanced subset (128,000 = 2,000 batches of 64, ELR+).
CLOTHING1M_PROFILE = DatasetProfile(model="resnet50", epochs=15, batch_size=64, lr=0.002,
                                    weight_decay=1e-3, augment="weak", lr_schedule="multistep",
                                    train_subset=128000)
WEBVISION_PROFILE = DatasetProfile(model="resnet50", epochs=100, batch_size=32, lr=0.02,
                                   weight_decay=5e-4, augment="weak", lr_schedule="multistep")


@register_dataset("clothing1m", locate=locate_clothing1m, file_backed=True,
                  profile=CLOTHING1M_PROFILE)
def load_clothing1m(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    root = os.path.join(data_dir, "clothing1m")
    image_size, resize_size, num_workers = opts.image_size, opts.resize_size, opts.num_workers
    f = {k: os.path.join(root, k + ".txt") for k in CLOTHING_LISTS}
    num_classes = len(CLOTHING_CLASSES)

    def kv(name: str) -> Dict[str, int]:
        paths, labels, lines = _path_labels(f[name])
        check_label_range(labels, num_classes, _at(f[name], lines))
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
def _webvision_lists(data_dir: str) -> Tuple[str, str, str]:
    root = os.path.join(data_dir, "webvision")
    return (root, os.path.join(root, "info", "train_filelist_google.txt"),
            os.path.join(root, "info", "val_filelist.txt"))


def locate_webvision(dataset: str, data_dir: str) -> List[str]:
    root, train_list, val_list = _webvision_lists(data_dir)
    _required("webvision", root, "info/train_filelist_google.txt, info/val_filelist.txt, the "
              "training images and val_images_256/", [train_list, val_list])
    # the optional class names and ImageNet test images change the bundle too
    return [root, train_list, val_list, os.path.join(root, "info", "synsets.txt"),
            os.path.join(data_dir, "imagenet", "val")]


@register_dataset("webvision", locate=locate_webvision, file_backed=True,
                  profile=WEBVISION_PROFILE)
def load_webvision(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    root, train_list, val_list = _webvision_lists(data_dir)
    image_size, resize_size, num_workers = opts.image_size, opts.resize_size, opts.num_workers
    C = WEBVISION_CLASSES

    def mini(list_file: str, prefix: str):
        paths, labels, lines = _path_labels(list_file)
        check_label_range(labels, 1000, _at(list_file, lines))  # WebVision 1.0 has 1000 classes
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

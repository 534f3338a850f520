"""CIFAR-N (Wei et al., ICLR 2022): CIFAR's training images relabelled by human annotators.

``noise: human:KEY`` reads the noisy labels from the data set's label file under ``data_dir``
instead of drawing synthetic noise. The files are those of the repository UCSC-REAL/cifar-10-100n:
``torch.save`` of a dict of int arrays, one entry per training image in the order of
torchvision's CIFAR pickles (``data_batch_1`` .. ``data_batch_5``; ``train``).

The file is trusted only as far as it proves itself: its ``clean_label`` must equal the CIFAR
training labels (a wrong file, or images in another order, would otherwise train on labels
that belong to other images), the asked key must be there, and a CIFAR-10 file under the
CIFAR-100 name (or the reverse) is named as such.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from ..errors import DataError
from ..names import HUMAN_NOISE_KEYS

#: The label file of each data set, under ``data_dir``.
HUMAN_LABEL_FILES = {"cifar10": "CIFAR-10_human.pt", "cifar100": "CIFAR-100_human.pt"}
#: ``noise: human:KEY`` -> the array of the file.
HUMAN_FIELDS = {"aggre": "aggre_label", "random1": "random_label1", "random2": "random_label2",
                "random3": "random_label3", "worse": "worse_label", "noisy": "noisy_label"}
#: Noise rates the CIFAR-N paper publishes (share of labels != clean_label), for the README.
PUBLISHED_RATES = {("cifar10", "aggre"): 0.0903, ("cifar10", "random1"): 0.1723,
                   ("cifar10", "random2"): 0.1812, ("cifar10", "random3"): 0.1764,
                   ("cifar10", "worse"): 0.4021, ("cifar100", "noisy"): 0.4020}


def human_label_path(dataset: str, data_dir: str) -> str:
    """Where the CIFAR-N label file of ``dataset`` must be; a :class:`DataError` if it is not."""
    path = os.path.join(data_dir, HUMAN_LABEL_FILES[dataset])
    if not os.path.isfile(path):
        raise DataError(f"noise human:* on {dataset} reads {HUMAN_LABEL_FILES[dataset]!r} "
                        f"(CIFAR-N, github.com/UCSC-REAL/cifar-10-100n) from data_dir, but "
                        f"{path!r} does not exist")
    return path


def _read(path: str) -> Dict[str, np.ndarray]:
    import torch

    # weights_only: a label file never needs to run code; the numpy names its pickle uses
    # (numpy 1 wrote numpy.core..., numpy 2 writes numpy._core...) are allowed by name
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray

    allow = [multiarray._reconstruct, (multiarray._reconstruct,
                                       "numpy.core.multiarray._reconstruct"),
             np.ndarray, np.dtype] + [type(np.dtype(t)) for t in
                                      (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                       np.uint16, np.uint32, np.uint64)]
    try:
        with torch.serialization.safe_globals(allow):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or a pickle of anything but arrays
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's weights-only refusal is many lines; the one naming the global is the point
        msg = next((ln for ln in lines if "Unsupported global" in ln),
                   lines[0] if lines else type(e).__name__)[:200]
        raise DataError(f"{path!r} is not a CIFAR-N label file (torch.save of a dict of int "
                        f"arrays): {msg}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path!r} holds a {type(obj).__name__}, not the dict of label arrays "
                        "of a CIFAR-N label file")
    return obj


def _as_labels(v, path: str, name: str, n: int) -> np.ndarray:
    try:
        a = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
    except Exception:  # noqa: BLE001 - anything not array-like
        a = np.zeros(0)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{path!r}: {name!r} must be a 1-D int array, got "
                        f"{getattr(a, 'dtype', '?')} of shape {getattr(a, 'shape', '?')}")
    if a.size != n:
        raise DataError(f"{path!r}: {name!r} has {a.size} labels but the CIFAR training set "
                        f"has {n} images (a file for another copy of the data set?)")
    return a.astype(np.int64)


def _other(dataset: str) -> str:
    return next(d for d in HUMAN_LABEL_FILES if d != dataset)


def load_human_labels(dataset: str, data_dir: str, key: str,
                      train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The noisy labels ``key`` (e.g. ``"aggre"``) of CIFAR-N for ``dataset``, int64, one per
    training image; :class:`DataError` for a missing file or key, a file of the other data
    set, or a ``clean_label`` that differs from ``train_labels``."""
    path = human_label_path(dataset, data_dir)
    obj = _read(path)
    keys = sorted(str(k) for k in obj)
    wanted = {HUMAN_FIELDS[k] for k in HUMAN_NOISE_KEYS[dataset]}
    theirs = {HUMAN_FIELDS[k] for k in HUMAN_NOISE_KEYS[_other(dataset)]}
    if not wanted & set(keys) and theirs & set(keys):
        raise DataError(f"{path!r} is the {_label(_other(dataset))}N label file (keys "
                        f"{', '.join(keys)}), not {_label(dataset)}N's; place "
                        f"{HUMAN_LABEL_FILES[_other(dataset)]!r} data under its own name")
    field = HUMAN_FIELDS[key]
    for need in ("clean_label", field):
        if need not in obj:
            raise DataError(f"{path!r} has no {need!r} (noise human:{key}); its keys: "
                            f"{', '.join(keys) or 'none'}")
    n = len(train_labels)
    clean = _as_labels(obj["clean_label"], path, "clean_label", n)
    noisy = _as_labels(obj[field], path, field, n)
    bad = np.flatnonzero((noisy < 0) | (noisy >= num_classes))
    if bad.size:
        raise DataError(f"{path!r}: {field}[{int(bad[0])}] = {int(noisy[bad[0]])} is outside "
                        f"[0, {num_classes}) for {dataset}")
    diff = np.flatnonzero(clean != np.asarray(train_labels))
    if diff.size:
        i = int(diff[0])
        raise DataError(f"{path!r}: clean_label differs from the {dataset} training labels at "
                        f"{diff.size} of {n} images (first: image {i}, clean_label "
                        f"{int(clean[i])}, training label {int(train_labels[i])}); the file "
                        "is for another data set or the images are not in torchvision's "
                        "pickle order")
    return noisy


def _label(dataset: str) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[dataset]

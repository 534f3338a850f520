"""``cifar10`` / ``cifar100``: torchvision's on-disk format under ``data_dir``.

Read with torchvision's own classes. When the files are missing and the config allows it
(``download: auto``, the default), :func:`fetch_cifar` downloads torchvision's archive once
per node (a file lock in ``data_dir`` makes concurrent trials wait for the first one's
download instead of racing it), checked by torchvision against the archive's md5; with
``download: false`` ``locate`` names the missing files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import List

import numpy as np

from ..errors import DataError
from .bundle import DataBundle, make_bundle
from .registry import DatasetProfile, LoadOptions, register_dataset

# Normalisation of the CIFAR recipes (from the GJS code).
CIFAR_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}


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


def locate_cifar(dataset: str, data_dir: str) -> List[str]:
    """torchvision's files of ``dataset`` under ``data_dir``; a :class:`DataError` naming the
    missing ones."""
    cls = _unchecked(dataset)
    folder = os.path.join(data_dir, cls.base_folder)
    expected = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        label = "CIFAR-10" if dataset == "cifar10" else "CIFAR-100"
        raise DataError(
            f"{dataset}: expected torchvision's {label} files {', '.join(expected)} in "
            f"{folder!r}, missing: {', '.join(missing)}. Place torchvision's download (the "
            f"extracted {cls.filename}) in {data_dir!r}, set data_dir to where it is, or "
            "let the run download it (download: auto, the default)")
    return [os.path.join(folder, f) for f in expected]


def _source(dataset: str):
    """torchvision's own class: where the archive is (``url``, ``filename``) and its md5."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if dataset == "cifar10" else CIFAR100


def fetch_cifar(dataset: str, data_dir: str) -> List[str]:
    """Download and extract torchvision's archive of ``dataset`` into ``data_dir`` (only the
    files that are missing are put there); returns ``locate``'s files.

    One download per node: the trials of a node that find the set missing wait on an OS lock
    of ``<data_dir>/.<dataset>.download.lock``; the first downloads, the others find the files
    when they get the lock. The archive is fetched and extracted in a temporary folder of
    ``data_dir`` and each file moved into place whole, so a run that dies half-way leaves no
    truncated file behind. torchvision checks the archive against its md5."""
    import fcntl

    from torchvision.datasets.utils import download_and_extract_archive

    src = _source(dataset)
    try:
        os.makedirs(data_dir, exist_ok=True)
        lock = open(os.path.join(data_dir, f".{dataset}.download.lock"), "a")
    except OSError as e:
        raise DataError(f"{dataset}: cannot download it into {data_dir!r} ({e}); place "
                        f"torchvision's {src.filename} there or set data_dir") from None
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file closes
        try:
            return locate_cifar(dataset, data_dir)  # another trial of this node fetched it
        except DataError:
            pass
        tmp = tempfile.mkdtemp(prefix=f".{dataset}-download-", dir=data_dir)
        try:
            download_and_extract_archive(src.url, tmp, filename=src.filename, md5=src.tgz_md5)
            dest = os.path.join(data_dir, src.base_folder)
            os.makedirs(dest, exist_ok=True)
            got = os.path.join(tmp, src.base_folder)
            for name in os.listdir(got):
                if not os.path.exists(os.path.join(dest, name)):
                    os.replace(os.path.join(got, name), os.path.join(dest, name))
        except Exception as e:  # no network, a wrong md5, a full disk: one line
            raise DataError(f"{dataset}: downloading {src.url} into {data_dir!r} failed "
                            f"({type(e).__name__}: {e}; md5 expected {src.tgz_md5}); place "
                            f"torchvision's {src.filename} there, or set data_dir") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return locate_cifar(dataset, data_dir)


# The GJS code's settings (docs/method.md §8), augment "strong": GJS's view for every loss (its
# train.py default --augs s; scripts: RandAugment N=1 M=3 + Cutout 16; the README's protocol
# section). Asymmetric rates in the GJS protocol use another weight decay on CIFAR-10 and
# another lr on CIFAR-100.
CIFAR10_PROFILE = DatasetProfile(model="preact_resnet34", epochs=400, batch_size=128, lr=0.1,
                                 weight_decay=5e-4, augment="strong", lr_schedule="multistep",
                                 asym=dict(weight_decay=1e-3))
CIFAR100_PROFILE = DatasetProfile(model="preact_resnet34", epochs=400, batch_size=128, lr=0.2,
                                  weight_decay=5e-5, augment="strong", lr_schedule="multistep",
                                  asym=dict(lr=0.4, weight_decay=1e-4))


# decorators apply bottom-up: cifar10 is registered first
@register_dataset("cifar100", locate=locate_cifar, profile=CIFAR100_PROFILE, fetch=fetch_cifar)
@register_dataset("cifar10", locate=locate_cifar, profile=CIFAR10_PROFILE, fetch=fetch_cifar)
def load_cifar(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    cls = _unchecked(dataset)
    folder = os.path.join(data_dir, cls.base_folder)
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
    return make_bundle(dataset, x_tr, y_tr, x_te, y_te, num_classes=len(classes), pad=4,
                       hflip=True, mean=mean, std=std, class_names=classes)

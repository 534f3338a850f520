"""``load_data`` and ``check_dataset``: which registered loader reads a set, and the cache.

Results are memoized per process (key: the set, ``data_dir`` and the mtimes of the files its
``locate`` names), so Ray trials that share a worker process load each set once. Treat the
tensors of a bundle as read-only: a later ``load_data`` call of the same set returns the same
tensors.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigError, DataError, allowed
from ..names import human_noise_key
from .bundle import DataBundle
from .cifarn import HUMAN_LABEL_FILES, human_label_path
from .registry import DATASETS, FORMATS, DatasetSource, LoadOptions, dataset_names

_CACHE: Dict[tuple, DataBundle] = {}


def clear_cache() -> None:
    """Forget every memoized data set (tests, or after files changed in place)."""
    _CACHE.clear()


def source_of(dataset: str) -> DatasetSource:
    """The registered set or user-data format that reads ``dataset``.

    Raises :class:`DataError` for a path that does not exist or is of an unsupported type and
    :class:`ConfigError` for a name that is neither registered nor a path.
    """
    if dataset in DATASETS:
        return DATASETS.get(dataset)
    for suffix in ("npz", "csv"):
        if dataset.lower().endswith("." + suffix):
            return FORMATS.get(suffix)  # a missing file is reported by its locate
    if os.path.isdir(dataset):
        return FORMATS.get("folder")
    if os.path.exists(dataset):
        raise DataError(f"dataset {dataset!r} is a file of an unsupported type; give a .npz "
                        "file, a .csv file list or an image folder")
    if os.sep in dataset or (os.altsep and os.altsep in dataset):
        raise DataError(f"dataset path {dataset!r} does not exist")
    raise ConfigError(f"unknown dataset {dataset!r}; allowed: "
                      f"{allowed(dataset_names())}, or the path of a .npz "
                      "file, a .csv file list or an image folder")


def locate_dataset(dataset: str, data_dir: str = "data") -> List[str]:
    """Check that the files ``load_data(dataset, data_dir)`` needs are there, without reading
    them; the same :class:`~lci.errors.LCIError` as the load otherwise. Returns the files
    whose mtimes key the cache."""
    dataset, data_dir = os.fspath(dataset), os.fspath(data_dir)
    return source_of(dataset).locate(dataset, data_dir)


def check_dataset(cfg: Any) -> Optional[str]:
    """Raise the error ``load_data`` would raise for a missing file or folder of the data set
    of ``cfg`` (a :class:`~lci.config.TrainConfig` or a mapping with ``dataset`` and optional
    ``data_dir``, ``noise`` and ``download``; not imported here, as lci.config reads this
    package), without loading it: existence checks of the npz / csv file, the image folder's
    class folders, the CIFAR files under ``data_dir`` (and the CIFAR-N label file for
    ``noise: human:KEY``), the Clothing1M / WebVision list files. Images listed inside a file
    are not checked (that is the load's job). A missing set that the load will download
    (``download``) is no error: returns a note."""
    if isinstance(cfg, Mapping):
        dataset, data_dir = cfg.get("dataset", "digits"), cfg.get("data_dir", "data")
        noise = cfg.get("noise")
        download = str(cfg.get("download", "auto")).lower() not in ("false", "no", "off", "0")
    else:
        dataset, data_dir, noise = cfg.dataset, cfg.data_dir, cfg.noise
        download = bool(cfg.download)
    note = None
    try:
        locate_dataset(dataset, data_dir)
    except DataError:
        if not (download and source_of(os.fspath(dataset)).fetch):
            raise
        note = (f"{dataset}: not in {os.fspath(data_dir)!r} here; downloaded on first use "
                "(download: auto)")
    if human_noise_key(noise) is not None and dataset in HUMAN_LABEL_FILES:
        human_label_path(dataset, data_dir)  # CIFAR-N noise: its label file too
    return note


def load_data(dataset: str, data_dir: str = "data", *, num_workers: int = 0,
              image_size: int = 224, resize_size: int = 256,
              download: bool = False) -> DataBundle:
    """Load a registered data set or a user's ``.npz`` / ``.csv`` / image folder.

    ``num_workers`` threads decode the images of file lists and folders (0: in this thread).
    File-backed sets (``clothing1m``, ``webvision``) are decoded later, at ``resize_size``,
    and their views are ``image_size`` crops; the other sets ignore both sizes.
    ``download``: a registered set whose files are missing is downloaded when it can be
    (CIFAR: :func:`~lci.data.cifar.fetch_cifar`), instead of the error.
    Raises :class:`DataError` for missing or malformed data and :class:`ConfigError` for a
    name that is neither registered nor a path.
    """
    dataset, data_dir = os.fspath(dataset), os.fspath(data_dir)
    source = source_of(dataset)
    try:
        files = source.locate(dataset, data_dir)
    except DataError:
        if not (download and source.fetch):
            raise
        files = source.fetch(dataset, data_dir)
    is_format = dataset not in DATASETS
    key = (source.name, os.path.abspath(dataset) if is_format else dataset,
           os.path.abspath(data_dir), _mtimes(files))
    opts = LoadOptions(num_workers=num_workers)
    if source.file_backed:
        opts = LoadOptions(num_workers, int(image_size), int(resize_size))
        key += (opts.image_size, opts.resize_size)
    if key not in _CACHE:
        _CACHE[key] = source.load(dataset, data_dir, opts)
    # a shallow copy: callers may rebind fields without touching the cached bundle
    return dataclasses.replace(_CACHE[key])


def _mtimes(files: Sequence[str]) -> tuple:
    return tuple(os.stat(f).st_mtime_ns if os.path.exists(f) else None for f in files)

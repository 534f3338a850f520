"""Data sets as whole uint8 tensors (airbench style), behind a registry of loaders.

``load_data(name)`` returns a :class:`DataBundle`: every training and test image of the set
as one ``uint8 [N, C, H, W]`` tensor plus int64 labels, on the CPU. The trainer moves the
tensors to the device once and draws and augments batches there (``lci.augment``); nothing
here is a per-sample ``Dataset``.

Supported sources (``TrainConfig.dataset``), one module each:

- ``digits`` (:mod:`.digits`): scikit-learn's 8x8 digits, a fixed 500-image test split.
- ``cifar10`` / ``cifar100`` (:mod:`.cifar`): torchvision's on-disk format under
  ``data_dir``; downloaded there on first use when missing (``load_data(download=True)``,
  what a config's ``download: auto`` asks for).
- ``clothing1m`` / ``webvision`` (:mod:`.realworld`): the real-world noisy sets, read from
  their standard file lists under ``data_dir``. **File-backed**: ``x_train``/``x_test`` are
  :class:`~.imagefiles.ImageFiles`, decoded in DataLoader workers; ``labels_are_noisy``.
- a user's ``.npz`` file, ``.csv`` file list or image folder (:mod:`.files`).

A new set is one function decorated with :func:`register_dataset` (see :mod:`.registry`) in a
module imported below, with its :class:`DatasetProfile` (the config's "auto" values for it);
:func:`dataset_names` (and so the config's validation) follows.
:func:`check_dataset` checks that a config's files are there without loading them.
"""
# Importing a family registers its sets; this order is the order of dataset_names().
from . import digits  # noqa: F401  (isort: skip)
from . import cifar  # noqa: F401
from . import realworld  # noqa: F401
from . import files  # noqa: F401
from .bundle import DataBundle
from .cifar import CIFAR_STATS
from .digits import DIGITS_TEST_SIZE
from .files import IMAGE_EXTENSIONS, MIXED_SIZE_TARGET
from .load import check_dataset, clear_cache, load_data, locate_dataset, source_of
from .registry import (DATASETS, FORMATS, USER_DATA_PROFILE, DatasetProfile, DatasetSource,
                       LoadOptions, dataset_names, file_backed_names, profile_of,
                       register_dataset, register_format)
from .splits import HOLDOUT_FRACTION, HOLDOUT_SEED, balanced_subset, split_validation


__all__ = [
    "DataBundle", "load_data", "check_dataset", "locate_dataset", "clear_cache", "source_of",
    "split_validation", "balanced_subset", "register_dataset", "register_format",
    "dataset_names", "file_backed_names", "DATASETS", "FORMATS", "DatasetSource",
    "DatasetProfile", "USER_DATA_PROFILE", "profile_of", "LoadOptions", "HOLDOUT_SEED", "HOLDOUT_FRACTION",
    "DIGITS_TEST_SIZE", "MIXED_SIZE_TARGET", "IMAGE_EXTENSIONS", "CIFAR_STATS",
]

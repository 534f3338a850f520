"""``digits``: scikit-learn's 8x8 digits (ships with scikit-learn: nothing to download).

A fixed, stratified 500-image test split drawn with the constant seed
:data:`~lci.data.splits.HOLDOUT_SEED`, so that every run and every seed sees the same test set.
"""
from __future__ import annotations

from typing import List

import numpy as np

from .bundle import DataBundle, make_bundle
from .registry import DatasetProfile, LoadOptions, register_dataset
from .splits import fixed_holdout

DIGITS_TEST_SIZE = 500


def _nothing_to_locate(dataset: str, data_dir: str) -> List[str]:
    return []  # the images ship inside scikit-learn


# calibrated so that a CPU run takes seconds (see README)
DIGITS_PROFILE = DatasetProfile(model="small_cnn", epochs=60, batch_size=64, lr=0.05,
                                weight_decay=5e-4, augment="weak", lr_schedule="cosine")


@register_dataset("digits", locate=_nothing_to_locate, profile=DIGITS_PROFILE)
def load_digits(dataset: str, data_dir: str, opts: LoadOptions) -> DataBundle:
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    # pixel values are 0..16; stretch them to the 0..255 of every other set
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    train_idx, test_idx = fixed_holdout(y, DIGITS_TEST_SIZE)
    # digits are not mirror-invariant (a flipped 2 is no 2); 1 px of padding on 8 px images
    return make_bundle("digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx],
                       num_classes=10, pad=1, hflip=False,
                       class_names=[str(c) for c in range(10)])

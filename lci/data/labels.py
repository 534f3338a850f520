"""Checks that labels name classes the data set declares (no phantom classes).

A label above every declared class would silently widen the output layer: symmetric noise then
moves labels into classes with no image, and a stray label of 5,000,000 builds a 5-million-way
classifier. Every loader checks its labels here before it builds a bundle.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import DataError


def check_label_range(labels: np.ndarray, num_classes: int, where: Callable[[int], str],
                      declared_by: str = "") -> None:
    """A :class:`DataError` for the first label outside ``[0, num_classes)``.

    ``where(i)`` names the i-th label (file and line or array position); ``declared_by`` says
    where the class count comes from.
    """
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        i = int(bad[0])
        reason = f" ({declared_by})" if declared_by else ""
        raise DataError(f"{where(i)} has label {labels[i]}; labels must be in "
                        f"[0, {num_classes}){reason}")


def check_class_count(num_classes: int, num_images: int, what: str) -> None:
    """Refuse more classes than images: most classes would then hold no image at all.

    ``what`` says where the count comes from, as a clause: ``"d.npz: y_test has label 9"``.
    """
    if num_classes > num_images:
        raise DataError(f"{what}, which makes {num_classes} classes for {num_images} images; "
                        f"class ids must be in [0, {num_images}) at most (one class per image): "
                        "check the labels or the declared class count")

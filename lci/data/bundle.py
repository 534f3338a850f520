""":class:`DataBundle`, the one thing every loader returns, and its construction from arrays."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch


@dataclass
class DataBundle:
    """A whole data set in memory (or, for the real-world sets, as image files); see
    :mod:`lci.data`."""

    name: str
    x_train: torch.Tensor      # uint8 [N, C, H, W] (CPU; the trainer moves it to the device),
                               # or ImageFiles (lci.data.imagefiles: decoded in workers)
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
        """Images are files decoded on demand (:class:`lci.data.imagefiles.ImageFiles`)."""
        return not isinstance(self.x_train, torch.Tensor)



def channel_stats(x: np.ndarray) -> Tuple[tuple, tuple]:
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


def make_bundle(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, *, num_classes: int, pad: int, hflip: bool,
                mean: Optional[tuple] = None, std: Optional[tuple] = None,
                y_train_true: Optional[np.ndarray] = None,
                class_names: Optional[list] = None) -> DataBundle:
    """Numpy arrays -> a :class:`DataBundle` of contiguous CPU tensors."""
    if mean is None or std is None:
        mean, std = channel_stats(x_train)
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

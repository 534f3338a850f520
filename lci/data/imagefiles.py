"""Image files decoded on demand, and the DataLoaders that stream them (file-backed sets).

The real-world sets do not fit in memory as uint8 tensors (Clothing1M's 128,000-image subset
alone is 25 GB at 256 px), so their bundle holds :class:`ImageFiles` instead of tensors: file
paths that DataLoader workers decode to a fixed uint8 size (``Resize(s)`` of the shorter side
+ ``CenterCrop(s)``, ``s = resize_size``). The trainer moves each uint8 batch to the device,
where :class:`lci.augment.Augmenter` crops and flips the views.
"""
from __future__ import annotations

import os
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError

#: Images per eval batch when streaming from files.
EVAL_BATCH = 256


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

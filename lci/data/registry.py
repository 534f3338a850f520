"""The data set registry: a name -> :class:`DatasetSource` (how to find a set, how to load it).

Like the loss and model registries (:mod:`lci.registry`), each family module registers its
sets with a decorator on the loader::

    @register_dataset("cifar10", locate=cifar_files)
    def load_cifar(dataset, data_dir, opts): ...

Named sets (``digits``, ``cifar10``, ...) live in :data:`DATASETS`; the formats a user's own
data may come in (``npz``, ``csv``, ``folder``) in :data:`FORMATS`. The names a config may give
are :func:`dataset_names`, in registration order; nothing else lists them.

Each named set is registered with its :class:`DatasetProfile`, the values of a config's "auto"
fields for it (:meth:`lci.TrainConfig.resolved` reads them through :func:`profile_of`); a
user's own data, and a set registered without one, get :data:`USER_DATA_PROFILE`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..registry import Registry

#: File-backed sets: the side of the crops the network sees, ImageNet style (docs/method.md
#: §8: decode at 256, crop 224); a config's ``image_size: auto``.
REALWORLD_IMAGE_SIZE = 224


@dataclass(frozen=True)
class LoadOptions:
    """Settings every loader receives; each uses the ones that apply to it."""

    num_workers: int = 0     # threads (decoding) or DataLoader workers (file-backed sets)
    image_size: int = REALWORLD_IMAGE_SIZE  # file-backed sets: side of the views' random crops
    resize_size: int = 256   # file-backed sets: side images are decoded to


@dataclass(frozen=True)
class DatasetProfile:
    """A set's values for the config fields whose default is ``"auto"``."""

    model: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    augment: str
    lr_schedule: str
    train_subset: int = 0    # class-balanced subset of N training samples drawn (0 = all)
    asym: Mapping[str, Any] = field(default_factory=dict)  # changes under asym noise

    def auto_values(self, noise_kind: str) -> Dict[str, Any]:
        """The "auto" fields' values (``train_subset`` aside) for noise of ``noise_kind``."""
        out = {k: getattr(self, k) for k in ("model", "epochs", "batch_size", "lr",
                                             "weight_decay", "augment", "lr_schedule")}
        if noise_kind == "asym":
            out.update(self.asym)
        return out


#: A user's own .npz / .csv / image folder: a small network, calibrated on digits-sized data.
USER_DATA_PROFILE = DatasetProfile(model="small_cnn", epochs=60, batch_size=128, lr=0.05,
                                   weight_decay=5e-4, augment="weak", lr_schedule="cosine")


@dataclass(frozen=True)
class DatasetSource:
    """One registered set or format.

    ``locate(dataset, data_dir)`` checks that the files the loader needs are there, without
    reading them, and raises the loader's own :class:`~lci.errors.DataError` when one is not;
    it returns the paths whose mtimes key the in-process cache. ``load(dataset, data_dir,
    opts)`` returns a :class:`~lci.data.bundle.DataBundle`; it runs only after ``locate``.
    """

    name: str
    load: Callable
    locate: Callable[[str, str], List[str]]
    file_backed: bool = False  # images stay files, decoded in DataLoader workers
    # fetch(dataset, data_dir): put the missing files there (a download), then locate's result
    fetch: Optional[Callable[[str, str], List[str]]] = None
    profile: DatasetProfile = USER_DATA_PROFILE  # its "auto" config values


DATASETS: Registry[DatasetSource] = Registry("dataset")
FORMATS: Registry[DatasetSource] = Registry("dataset format")


def _registrar(registry: Registry, name: str, locate, file_backed: bool,
               profile: DatasetProfile, fetch=None):
    def deco(load: Callable) -> Callable:
        registry.register(name)(DatasetSource(name, load, locate, file_backed, fetch, profile))
        return load

    return deco


def register_dataset(name: str, *, locate: Callable[[str, str], List[str]],
                     file_backed: bool = False, profile: DatasetProfile = USER_DATA_PROFILE,
                     fetch: Optional[Callable[[str, str], List[str]]] = None
                     ) -> Callable[[Callable], Callable]:
    """Register ``load`` as the loader of the named set ``name`` (a config's ``dataset``),
    with the values of the config's "auto" fields for it; ``fetch`` downloads it when its
    files are missing and the config allows (``download``)."""
    return _registrar(DATASETS, name, locate, file_backed, profile, fetch)


def register_format(name: str, *, locate: Callable[[str, str], List[str]]
                    ) -> Callable[[Callable], Callable]:
    """Register ``load`` as the loader of the user-data format ``name`` (npz, csv, folder)."""
    return _registrar(FORMATS, name, locate, False, USER_DATA_PROFILE)


def dataset_names() -> Tuple[str, ...]:
    """The registered set names, in registration order."""
    return tuple(DATASETS)


def file_backed_names() -> Tuple[str, ...]:
    """The registered sets whose images stay files (the real-world sets)."""
    return tuple(n for n in DATASETS if DATASETS.get(n).file_backed)


def profile_of(dataset: str) -> DatasetProfile:
    """The profile of a registered set; :data:`USER_DATA_PROFILE` for a path to a user's data."""
    return DATASETS.get(dataset).profile if dataset in DATASETS else USER_DATA_PROFILE

"""The data set registry: a name -> :class:`DatasetSource` (how to find a set, how to load it).

Like the loss and model registries (:mod:`lci.registry`), each family module registers its
sets with a decorator on the loader::

    @register_dataset("cifar10", locate=cifar_files)
    def load_cifar(dataset, data_dir, opts): ...

Named sets (``digits``, ``cifar10``, ...) live in :data:`DATASETS`; the formats a user's own
data may come in (``npz``, ``csv``, ``folder``) in :data:`FORMATS`. The names a config may give
are :func:`dataset_names`, in registration order; nothing else lists them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..registry import Registry


@dataclass(frozen=True)
class LoadOptions:
    """Settings every loader receives; each uses the ones that apply to it."""

    num_workers: int = 0     # threads (decoding) or DataLoader workers (file-backed sets)
    image_size: int = 224    # file-backed sets: side of the views' random crops
    resize_size: int = 256   # file-backed sets: side images are decoded to


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


DATASETS: Registry[DatasetSource] = Registry("dataset")
FORMATS: Registry[DatasetSource] = Registry("dataset format")


def _registrar(registry: Registry, name: str, locate, file_backed: bool, fetch=None):
    def deco(load: Callable) -> Callable:
        registry.register(name)(DatasetSource(name, load, locate, file_backed, fetch))
        return load

    return deco


def register_dataset(name: str, *, locate: Callable[[str, str], List[str]],
                     file_backed: bool = False,
                     fetch: Optional[Callable[[str, str], List[str]]] = None
                     ) -> Callable[[Callable], Callable]:
    """Register ``load`` as the loader of the named set ``name`` (a config's ``dataset``);
    ``fetch`` downloads it when its files are missing and the config allows (``download``)."""
    return _registrar(DATASETS, name, locate, file_backed, fetch)


def register_format(name: str, *, locate: Callable[[str, str], List[str]]
                    ) -> Callable[[Callable], Callable]:
    """Register ``load`` as the loader of the user-data format ``name`` (npz, csv, folder)."""
    return _registrar(FORMATS, name, locate, False)


def dataset_names() -> Tuple[str, ...]:
    """The registered set names, in registration order."""
    return tuple(DATASETS)


def file_backed_names() -> Tuple[str, ...]:
    """The registered sets whose images stay files (the real-world sets)."""
    return tuple(n for n in DATASETS if DATASETS.get(n).file_backed)

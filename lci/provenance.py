"""Provenance of a run: what code, software, machine, data and noisy labels produced it.

Recorded under one key, ``provenance``, in every run's ``result.json`` (the trainer calls
:func:`collect` when it finishes), so that ``lci report`` can show which runs of a table were
made with which code and data, and warn when the runs of one table do not match (a table
mixing two code versions, or two copies of a data set, or -- for the same seed and noise --
two different noisy label vectors, which would break the pairing by seed).

Digests are sha256 hex strings:

- ``data_sha256``: over the loaded training and test arrays (images, labels, true labels;
  dtype and shape included), or for file-backed sets (Clothing1M, WebVision) over the
  relative image paths with their file sizes and the labels (hashing 100 GB of JPEGs per run
  is not an option; a replaced file of another size still shows);
- ``noisy_labels_sha256``: over the training positions the run trained on and their noisy
  labels (int64): the noise realisation actually used, after any subset and validation split.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys
import weakref
from typing import Any, Dict, Optional

import numpy as np
import torch

#: Packages whose versions are recorded (``None`` when not installed).
PACKAGES = ("torch", "torchvision", "ray", "optuna", "numpy")
#: The keys of ``provenance`` that identify the code (``lci report`` warns when they differ).
CODE_KEYS = ("version", "git_commit", "git_dirty")

_DATA_DIGESTS: Dict[int, tuple] = {}  # id(x_train) -> (weakref to it, digest): one hash per set


def _pkg_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def code_version() -> Dict[str, Any]:
    """``version`` (the installed lci-study), ``git_commit`` and ``git_dirty`` of the checkout
    the ``lci`` package is imported from (both ``None`` when it is not a git checkout, or git
    is not installed). Once per process: Ray workers run many trials."""
    import lci

    root = os.path.dirname(os.path.dirname(os.path.abspath(lci.__file__)))
    out: Dict[str, Any] = {"version": None if lci.__version__ == "unknown" else lci.__version__,
                           "git_commit": None, "git_dirty": None}
    if not os.path.exists(os.path.join(root, ".git")):  # a wheel install in site-packages
        return out

    def git(*args: str) -> Optional[str]:
        try:
            r = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                               timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        out["git_commit"] = commit
        status = git("status", "--porcelain", "--untracked-files=no")
        out["git_dirty"] = None if status is None else bool(status)
    return out


def _device_info(device: torch.device) -> Dict[str, Any]:
    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{device.type}: {platform.processor() or platform.machine() or 'unknown'}"
    return {"cuda": torch.version.cuda if cuda else None, "cudnn": cudnn if cuda else None,
            "device": name}


def _update(h, a: Any) -> None:
    """Feed an array (or tensor) into ``h`` with its dtype and shape, so that equal bytes of
    another layout never collide."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(memoryview(a).cast("B"))


def _files_part(h, files) -> None:
    h.update(f"files{len(files)};".encode())
    for i in range(len(files)):
        path = files.path(i)
        size = os.path.getsize(path) if os.path.exists(path) else -1
        h.update(files.rel[i] + f"\0{size}\n".encode())


def data_digest(data) -> str:
    """sha256 of a :class:`~lci.data.DataBundle` (see the module docstring); cached per
    loaded set, as :func:`lci.data.load_data` returns the same tensors each time."""
    hit = _DATA_DIGESTS.get(id(data.x_train))
    if hit is not None and hit[0]() is data.x_train:
        return hit[1]
    h = hashlib.sha256()
    for part in ("x_train", "y_train", "x_test", "y_test", "y_train_true"):
        v = getattr(data, part)
        h.update(part.encode())
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            _update(h, v)
        else:
            _files_part(h, v)
    for name, (x, y) in sorted(data.extra_tests.items()):
        h.update(name.encode())
        if isinstance(x, torch.Tensor):
            _update(h, x)
        else:
            _files_part(h, x)
        _update(h, y)
    digest = h.hexdigest()
    try:
        _DATA_DIGESTS[id(data.x_train)] = (weakref.ref(data.x_train), digest)
    except TypeError:  # not weak-referenceable: no cache
        pass
    return digest


def labels_digest(positions: Any, labels: Any) -> str:
    """sha256 of the training positions and the noisy labels trained on (both as int64)."""
    h = hashlib.sha256()
    _update(h, np.asarray(positions, dtype=np.int64))
    lab = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
    _update(h, np.asarray(lab, dtype=np.int64))
    return h.hexdigest()


def collect(data, positions: Any, noisy_labels: Any, device: torch.device) -> Dict[str, Any]:
    """The ``provenance`` of a run (see the module docstring): code, package versions, CUDA /
    cuDNN and device, host, and the data and noisy-label digests."""
    out: Dict[str, Any] = dict(code_version())
    out["python"] = platform.python_version()
    out.update({name: _pkg_version(name) for name in PACKAGES})
    out["torch"] = torch.__version__  # the running build (+cu130), not only the dist's
    out.update(_device_info(device))
    out["host"] = socket.gethostname()
    out["platform"] = f"{sys.platform}-{platform.machine()}"
    out["data_sha256"] = data_digest(data)
    out["noisy_labels_sha256"] = labels_digest(positions, noisy_labels)
    return out

"""Checkpoints: written atomically, read with ``weights_only=True``, checked against the config."""
from __future__ import annotations

import os
from typing import Any, Dict

import torch

from .errors import CheckpointError
from .outputs import atomic_open

FORMAT = 1
#: Config keys that may differ between a run and its resumption (they do not change results).
RESUMABLE_DIFFS = {"epochs", "device", "num_workers", "threads", "checkpoint_every", "data_dir",
                   "compile", "cuda_graphs", "download"}
#: Config keys added after runs were already being saved, with the value that reproduces
#: those runs: a checkpoint without the key resumes when the run has that value.
ADDED_KEYS = {"train_subset": 0, "image_size": 0, "resize_size": 0,
              "init_scheme": "kaiming"}  # every network was kaiming-initialised before the key


def save_atomic(obj: Dict[str, Any], path: str) -> None:
    """Write through a temporary file renamed over ``path``: a crash mid-write leaves the
    previous checkpoint intact."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def load(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path!r}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding non-tensor objects
        raise CheckpointError(f"checkpoint {path!r} is corrupt or unreadable "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r} is not an lci checkpoint of format {FORMAT}")
    return obj


def load_into(target: Any, path: str, what: str) -> None:
    """``target.load_state_dict(<checkpoint at path>)``; a checkpoint whose tensors or keys do
    not fit ``target`` (``what``: "this run", "these fused runs") is a CheckpointError."""
    try:
        target.load_state_dict(load(path), source=path)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path!r} does not fit {what} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def check_config(saved: Dict[str, Any], current: Dict[str, Any], path: str) -> None:
    """A resumed run must be the same run: refuse when a result-changing key differs."""
    saved = {**{k: v for k, v in ADDED_KEYS.items() if k not in saved}, **saved}
    diffs = sorted(k for k in set(saved) | set(current)
                   if k not in RESUMABLE_DIFFS and saved.get(k) != current.get(k))
    if diffs:
        shown = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
                          for k in diffs[:4])
        raise CheckpointError(f"checkpoint {path!r} belongs to another config ({shown}); "
                              "resume with the same config or start a new run")

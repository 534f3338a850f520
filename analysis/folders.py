"""Finding the folders to read under the given paths, and the files around them.

Two kinds of folders, wherever they sit:

- a **Tune trial** folder: read through the study's one reader of trials
  (:func:`study.trials.read_trial`), which also says that a fused trial's own folder is no
  trial (its seeds' folders beside it are); a ``study.json`` one to four levels up gives the
  study name, the seeds it asked for and the searched parameters;
- an **``lci train``** run folder: any folder with ``config.json`` and ``history.csv``.

What a folder holds is turned into rows by :mod:`analysis.frames`.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from lci.names import PARAMS_FILE
from lci.outputs import CONFIG_FILE, HISTORY_FILE, LABEL_ISSUES_FILE
from study.trials import STUDY_FILE, TrialRecord, read_trial

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Sequence[PathLike]]

TUNE, RUN = "tune", "run"  # the two kinds of folders
CHECKPOINT_DIR = re.compile(r"^checkpoint[_-]")
_CHECKPOINT_NUM = re.compile(r"^checkpoint_(\d+)$")


def read_json(path: Path) -> Any:
    """A JSON file written by hand or by a run; None (and a warning) when it is unreadable,
    so that one bad file does not hide the rest of an experiment."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        warnings.warn(f"cannot read {path}: {e}", stacklevel=3)
        return None


@dataclass
class Source:
    """One trial or run folder and what its study says about it."""
    path: Path
    kind: str                                   # TUNE or RUN
    study_dir: Optional[Path] = None
    study: Dict[str, Any] = field(default_factory=dict)
    record: Optional[TrialRecord] = None        # a Tune trial's, from study.trials


def _find_study(folder: Path, cache: Dict[Path, Optional[Path]]) -> Optional[Path]:
    """The nearest ``study.json`` in the folder or up to four levels above it."""
    p = folder
    for _ in range(5):
        if p in cache:
            return cache[p]
        if (p / STUDY_FILE).is_file():
            cache[p] = p
            return p
        if p.parent == p:
            break
        p = p.parent
    cache[folder] = None
    return None


def discover(paths: Paths) -> List[Source]:
    """Every Tune trial folder and ``lci train`` run folder under ``paths`` (recursive).

    ``checkpoint_*`` folders are skipped, and nothing below a trial or run folder is searched,
    so a run written inside a trial folder is not counted twice.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    study_cache: Dict[Path, Optional[Path]] = {}
    studies: Dict[Path, Dict[str, Any]] = {}
    seen = set()
    sources: List[Source] = []
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"no such experiment folder: {root}")
        for dirpath, dirnames, filenames in os.walk(root):
            files = set(filenames)
            folder = Path(dirpath)
            if PARAMS_FILE in files:
                kind = TUNE
            elif CONFIG_FILE in files and HISTORY_FILE in files:
                kind = RUN
            else:
                dirnames[:] = sorted(d for d in dirnames
                                     if not CHECKPOINT_DIR.match(d) and not d.startswith(".")
                                     and d != "__pycache__")
                continue
            dirnames[:] = []
            real = folder.resolve()
            if real in seen:
                continue
            seen.add(real)
            record = read_trial(str(folder)) if kind == TUNE else None
            if kind == TUNE and record is None:
                continue  # a fused trial's own folder: its seeds' trials are beside it
            if record is not None and record.torn:
                warnings.warn(f"cannot read {folder / PARAMS_FILE}: empty or cut short "
                              "(an incomplete trial)", stacklevel=2)
            sdir = _find_study(folder, study_cache)
            if sdir is not None and sdir not in studies:
                spec = read_json(sdir / STUDY_FILE)
                studies[sdir] = spec if isinstance(spec, dict) else {}
            sources.append(Source(folder, kind, sdir, studies.get(sdir, {}) if sdir else {},
                                  record))
    return sources


def checkpoints(folder: Path) -> List[Path]:
    """The trial's ``checkpoint_NNNNNN`` folders, latest first."""
    found = []
    for sub in folder.iterdir():
        m = _CHECKPOINT_NUM.match(sub.name)
        if m and sub.is_dir():
            found.append((int(m.group(1)), sub))
    return [p for _, p in sorted(found, reverse=True)]


def find_label_issues(folder: Path, checkpoint_dirs: Sequence[Path] = ()) -> Optional[str]:
    """``label_issues.csv`` of the run: in the folder, in its latest checkpoint (our trainable
    uploads the run folder as the checkpoint), or one level down."""
    p = folder / LABEL_ISSUES_FILE
    if p.is_file():
        return str(p)
    for ck in checkpoint_dirs:
        if (ck / LABEL_ISSUES_FILE).is_file():
            return str(ck / LABEL_ISSUES_FILE)
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not CHECKPOINT_DIR.match(sub.name) and (sub / LABEL_ISSUES_FILE).is_file():
            return str(sub / LABEL_ISSUES_FILE)
    return None

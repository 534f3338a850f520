"""The one lookup from what Tune unpickles to the live driver of this process.

Tune pickles the study's searcher and its callbacks into ``<study>/trials/`` and, on
``--resume``, unpickles them in the new driver process. A restored object cannot hold a
reference to that driver (it did not exist when the object was saved), so it finds it here,
by study folder: the :class:`~study.runner.StudyRunner` of this process registers itself for
the time of its Tune run (:func:`live`). Only two things look it up: the searcher's
``restore`` (to reach the study's Optuna storage and give itself to the driver) and the
progress callback (:class:`~study.progress.TrialEvents`, to reach the driver's progress view).
A saved object keeps the study folder's old path, so when the folder was moved (or copied to
another machine) and this process runs exactly one study, that one is the answer.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

_DRIVERS: Dict[str, Any] = {}


@contextmanager
def live(study_dir: str, driver: Any) -> Iterator[Any]:
    """``driver`` is the live driver of ``study_dir`` inside the ``with`` block."""
    _DRIVERS[study_dir] = driver
    try:
        yield driver
    finally:
        if _DRIVERS.get(study_dir) is driver:
            del _DRIVERS[study_dir]


def find(study_dir: Optional[str]) -> Optional[Any]:
    """The live driver of ``study_dir``; else the one live driver of this process (a moved
    study folder); else None."""
    if study_dir in _DRIVERS:
        return _DRIVERS[study_dir]
    if len(_DRIVERS) == 1:
        return next(iter(_DRIVERS.values()))
    return None

"""The study folder's own files, and nothing else: where they are, reading and writing them.

``<storage>/<name>/`` holds

- ``study.json``: the spec as analysis/ reads it (name, seeds, metric, cells, search_params...);
- ``study_state.json``: which experiments finished and the best parameters of each searched
  cell, so ``--resume`` skips finished experiments and evaluates the same best configuration;
- ``driver.lock.<g>``: the running driver's lease (see :mod:`study.lock`);
- ``optuna.db`` (or ``optuna.journal``): one Optuna study per searched cell, named by the cell id;
- ``summary.json``: the end-of-study table;
- ``trials/``: the study's one Tune run (:mod:`study.multiplex`), with Tune's state files and
  one folder per trial, ``<experiment>-<trial id>`` where the experiment is ``<cell>__search``,
  ``<cell>__eval`` or ``sweep_<param>__<cell>`` (Tune's ``params.json`` and ``result.json``,
  the checkpoints, and ``run/``: the lci run's own files).

Every change of the state goes through one lock and is written at once.
"""
from __future__ import annotations

import json
import threading
from typing import Any, Dict, Optional

from lci.errors import LCIError

from . import storage
from .secrets import mask

STUDY_FILE, STATE_FILE, SUMMARY_FILE = "study.json", "study_state.json", "summary.json"
#: what must be the same for ``--resume`` to continue a study with a spec
RESUME_KEYS = ("cells", "search", "sweep", "seed_values", "experiments", "scheduler",
               "search_params")


def _jsonish(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str, sort_keys=True))


class StudyState:
    """``study.json`` + ``study_state.json`` of one study folder."""

    def __init__(self, study_dir: str):
        self.dir = study_dir
        self._lock = threading.Lock()
        self.data: Dict[str, Any] = {"experiments": {}, "best": {}}

    def path(self, *parts: str) -> str:
        return storage.join(self.dir, *parts)

    # --------------------------------------------------------------------- checks (no writes)
    def check(self, info: Dict[str, Any], resume: bool) -> Optional[Dict[str, Any]]:
        """Whether a study with ``info`` (``StudySpec.to_json()``) may start or resume here;
        raises :class:`LCIError` otherwise. Writes nothing. Returns the old ``study.json``."""
        old = storage.read_json(self.path(STUDY_FILE))
        if old is None:
            return None
        if not resume:
            raise LCIError(f"{self.dir} already holds study {old.get('name')!r}; pass --resume "
                           "to continue it, or choose another --storage or study name")
        diffs = [k for k in RESUME_KEYS
                 if _jsonish(old.get(k)) != _jsonish(mask(info.get(k)))]
        if diffs:
            raise LCIError(f"--resume: the spec differs from the study in {self.dir} "
                           f"(changed: {', '.join(diffs)}); resume with the same spec, or "
                           "start a new study under another name or storage")
        return old

    # ------------------------------------------------------------------------------- writes
    def open(self, info: Dict[str, Any]) -> None:
        """Load the saved state (when resuming) and write ``study.json``."""
        saved = storage.read_json(self.path(STATE_FILE))
        if saved:
            self.data = {"experiments": {}, "best": {}, **saved}
        # the spec as written may hold a database password (study.secrets)
        storage.write_json(self.path(STUDY_FILE), mask(info))
        self.save()

    def save(self) -> None:
        with self._lock:
            storage.write_json(self.path(STATE_FILE), self.data)

    def write_summary(self, summary: Dict[str, Any]) -> None:
        storage.write_json(self.path(SUMMARY_FILE), summary)

    # ------------------------------------------------------------------------------ queries
    def experiment_done(self, name: str) -> bool:
        return (self.data["experiments"].get(name) or {}).get("status") == "done"

    def experiment_ended(self, name: str) -> bool:
        """Every trial of the experiment ended (finished, failed or stopped)."""
        return name in self.data["experiments"]

    def set_experiment(self, name: str, **info: Any) -> None:
        with self._lock:
            self.data["experiments"][name] = info
        self.save()

    def best(self, cell_id: str) -> Optional[Dict[str, Any]]:
        return self.data["best"].get(cell_id)

    def set_best(self, cell_id: str, best: Optional[Dict[str, Any]]) -> None:
        with self._lock:
            if best is None:
                self.data["best"].pop(cell_id, None)
            else:
                self.data["best"][cell_id] = best
        self.save()

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

Every change of the state is written at once, whole (temporary file, then rename).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from lci.errors import LCIError

from . import storage
from .trials import STATE_FILE, STUDY_FILE, SUMMARY_FILE  # noqa: F401  (their home)
from .secrets import mask

#: what must be the same for ``--resume`` to continue a study with a spec: the spec as
#: written (every key but those below), and what the version resuming it derives from it
RESUME_KEYS = ("cells", "search", "sweep", "seed_values", "experiments", "scheduler",
               "search_params", "fuse_seeds")
#: keys of a spec (as written) that cannot change what a trial computes: where and how many
#: trials run, how often they are retried and checkpointed, where results are logged
NEUTRAL_SPEC_KEYS = ("name", "description", "resources", "max_concurrent", "max_failures",
                     "keep_checkpoints", "storage", "tracking", "search.max_concurrent",
                     "budget")
#: TrainConfig keys that cannot change results, wherever a spec sets them (fixed, phases)
NEUTRAL_CONFIG_KEYS = ("checkpoint_every", "num_workers", "threads", "download")


def _jsonish(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str, sort_keys=True))


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a.b": value}`` of nested dicts (lists are values: their order matters)."""
    if not isinstance(d, dict) or (prefix and not d):
        return {prefix: d} if prefix else {}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _neutral(key: str) -> bool:
    if any(key == k or key.startswith(k + ".") for k in NEUTRAL_SPEC_KEYS):
        return True
    return key.rsplit(".", 1)[-1] in NEUTRAL_CONFIG_KEYS and "fixed" in key.split(".")


def spec_changes(old: Dict[str, Any], new: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """``(changes that alter results, changes that cannot)`` between two ``study.json``
    infos, each as ``"key: old -> new"``: the spec as written compared key by key, then what
    this version derives from it (a preset or a default that changed between versions)."""
    a, b = _flat(_jsonish(old.get("spec") or {})), _flat(_jsonish(new.get("spec") or {}))
    result, neutral = [], []
    for k in sorted(set(a) | set(b)):
        if a.get(k, _MISSING) != b.get(k, _MISSING):
            line = f"{k}: {_show(a.get(k, _MISSING))} -> {_show(b.get(k, _MISSING))}"
            (neutral if _neutral(k) else result).append(line)
    if not result:
        result = [f"{k} (as this version reads the spec)" for k in RESUME_KEYS
                  if _jsonish(old.get(k)) != _jsonish(new.get(k))]
    return result, neutral


class _Missing:
    def __repr__(self) -> str:
        return "(unset)"


_MISSING = _Missing()


def _show(v: Any) -> str:
    text = v if isinstance(v, _Missing) else json.dumps(v, default=str)
    text = str(text)
    return text if len(text) <= 60 else text[:57] + "..."


class StudyState:
    """``study.json`` + ``study_state.json`` of one study folder."""

    def __init__(self, study_dir: str):
        self.dir = study_dir
        self.data: Dict[str, Any] = {"experiments": {}, "best": {}}

    def path(self, *parts: str) -> str:
        return storage.join(self.dir, *parts)

    # --------------------------------------------------------------------- checks (no writes)
    def check(self, info: Dict[str, Any], resume: bool) -> List[str]:
        """Whether a study with ``info`` (``StudySpec.to_json()``) may start or resume here;
        raises :class:`LCIError` otherwise. Writes nothing. Returns the changes of the spec
        that are allowed on resume (they cannot change results), as lines to show."""
        old = self._read(STUDY_FILE, "the spec the study was started with")
        if old is None:
            return []
        if not resume:
            raise LCIError(f"{self.dir} already holds study {old.get('name')!r}; pass --resume "
                           "to continue it, or choose another --storage or study name")
        self._read(STATE_FILE, "which experiments finished and each cell's best parameters")
        # study.json holds the spec with its passwords masked: compare it so (study.secrets)
        changed, neutral = spec_changes(old, mask(info))
        if changed:
            raise LCIError(f"--resume: the spec differs from the one study {old.get('name')!r} "
                           f"was started with, in what trials compute ({'; '.join(changed)}); "
                           "resume with the same spec, or start a new study under another name "
                           "or --storage")
        return neutral

    def _read(self, name: str, holds: str) -> Optional[Dict[str, Any]]:
        """One of the study's own files; a torn one is an error that says what to do (the
        driver writes them atomically, so it was cut or changed by something else)."""
        try:
            data = storage.read_json(self.path(name))
        except storage.TornFile as e:
            raise LCIError(f"{e.path} is unreadable ({e.why}); it holds {holds}: put back a "
                           "copy of it, or start the study again under another name or "
                           "--storage") from None
        if data is not None and not isinstance(data, dict):
            raise LCIError(f"{self.path(name)} is unreadable (not a JSON object); it holds "
                           f"{holds}: put back a copy of it, or start the study again under "
                           "another name or --storage")
        return data

    # ------------------------------------------------------------------------------- writes
    def open(self, info: Dict[str, Any]) -> None:
        """Load the saved state (when resuming) and write ``study.json``."""
        saved = self._read(STATE_FILE, "which experiments finished")
        if saved:
            self.data = {"experiments": {}, "best": {}, **saved}
        # the spec as written may hold a database password (study.secrets)
        storage.write_json(self.path(STUDY_FILE), mask(info))
        self.save()

    def save(self) -> None:
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
        self.data["experiments"][name] = info
        self.save()

    def best(self, cell_id: str) -> Optional[Dict[str, Any]]:
        return self.data["best"].get(cell_id)

    def set_best(self, cell_id: str, best: Optional[Dict[str, Any]]) -> None:
        if best is None:
            self.data["best"].pop(cell_id, None)
        else:
            self.data["best"][cell_id] = best
        self.save()

"""Trial and run folders (found by :mod:`analysis.folders`) -> tidy pandas frames.

- a **Tune trial** is read through :mod:`study.trials` (the study's one reader): its config
  (``params.json``, plus our keys ``cell``, ``phase`` and maybe ``study``), its results (the
  lines of ``result.json``; the last one is the final result) and its status. The latest
  ``checkpoint_NNNNNN/`` folder, which our trainable fills with the run folder, supplies the
  resolved values of ``"auto"`` config keys and ``label_issues.csv``.
- an **``lci train``** run folder: ``config.json``, ``history.csv``, ``result.json`` (a plain
  JSON dict of final metrics, written when the run ends) and optional ``meta.json`` with
  ``phase``, ``cell``, ``study``.

Both get the study's status vocabulary (:mod:`study.trials`): ``finished``, ``failed``,
``stopped`` or ``incomplete``.

:func:`load` gives one row per trial or run, :func:`history` one row per epoch. Both carry
the identity columns (``study, cell, phase, seed, status, ...``), the flattened config
(``robust_loss_params.q``) and the metrics under the names of docs/interfaces.md.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from lci.names import default_cell, setting_id
from lci.outputs import CONFIG_FILE, HISTORY_FILE, RESULT_FILE
from study.phases import EVALUATION, SEARCH, SWEEP
from study.trials import ERROR_FILE, FAILED, FINISHED, INCOMPLETE, TrialRecord, failure_reason

from .folders import (RUN, TUNE, Paths, Source, checkpoints, discover, find_label_issues,
                      read_json)

# ------------------------------------------------------------------------------ names
#: Tune's own keys in ``result.json``; dropped, except the ones in ``TUNE_KEPT``.
TUNE_BOOKKEEPING = frozenset({
    "timestamp", "date", "hostname", "pid", "node_ip", "config", "done", "time_this_iter_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "experiment_id", "experiment_tag", "should_checkpoint",
    "checkpoint_dir_name", "trial_id", "training_iteration", "time_total_s", "warmup_time",
    "episode_reward_mean", "episode_reward_max", "episode_reward_min", "episodes_this_iter",
    "timesteps_this_iter", "perf",
})
TUNE_KEPT = ("trial_id", "training_iteration", "time_total_s")

#: Config keys that say where or how fast a run ran, not what it computed; they never split a
#: cell (two seeds of one cell may run on different devices).
RUNTIME_KEYS = frozenset({
    "device", "data_dir", "num_workers", "threads", "compile", "amp", "channels_last",
    "checkpoint_every", "eval_train", "fuse_views", "cuda_graphs",
})

#: Identity columns every frame starts with, in this order.
ID_COLUMNS = [
    "study", "phase", "cell", "seed", "status", "error", "epochs_done", "kind", "experiment",
    "trial_id", "config_id", "n_expected", "dataset", "noise", "setting", "method",
    "robust_loss", "path", "study_dir", "label_issues",
]

#: The phase of an ``lci train`` run that no study started (not a study phase).
RUN_PHASE = "run"
#: Phases whose trials train a cell's final configuration, one per seed (tables, curves).
FINAL_PHASES = (EVALUATION, RUN_PHASE)
#: Phases whose trials are repeated seeds of one configuration (search trials are not).
SEEDED_PHASES = (EVALUATION, SWEEP, RUN_PHASE)
#: Other spellings of a phase in records written by hand or by other tools.
PHASE_ALIASES = {"eval": EVALUATION, "evaluate": EVALUATION, "final": EVALUATION,
                 "tune": SEARCH, "hpo": SEARCH}


class NoRunsFound(ValueError):
    """No Tune trial and no ``lci train`` run folder under the given paths."""


# ------------------------------------------------------------------------------ file reading
def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts → dotted keys (``robust_loss_params.q``); ``/`` in keys (Optuna) → ``.``;
    lists → JSON strings so that every cell is hashable."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{str(k).replace('/', '.')}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


def _scalars(d: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in d.items() if v is None or isinstance(v, (int, float, str, bool))}


def _metrics(record: Mapping[str, Any]) -> Dict[str, Any]:
    """Our metrics from a Tune result line: Tune's bookkeeping dropped; nested dicts (the
    final result's ``provenance``) as dotted columns, ``provenance.torch``, as for runs."""
    ours = {k: v for k, v in record.items() if k not in TUNE_BOOKKEEPING}
    nested = {k: v for k, v in ours.items() if isinstance(v, Mapping)}
    return {**_scalars(ours), **_scalars(flatten(nested))}


def config_id(config: Mapping[str, Any]) -> str:
    """Short hash of a flattened config without seed and runtime keys: same id, same cell."""
    items = sorted((k, repr(v)) for k, v in config.items()
                   if k != "seed" and k not in RUNTIME_KEYS and not k.startswith("__"))
    return hashlib.sha1(repr(items).encode()).hexdigest()[:10]


def _as_int(v: Any) -> Optional[int]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


# ------------------------------------------------------------------------------ identity
def _n_expected(study: Mapping[str, Any], cell: Optional[str], phase: str) -> float:
    """Seeds the study asked for in this cell and phase (NaN for searches and unknown)."""
    if phase == SEARCH or not study:
        return float("nan")
    n = study.get("seeds")
    if phase == SWEEP and isinstance(study.get(SWEEP), Mapping) and "seeds" in study[SWEEP]:
        n = study[SWEEP]["seeds"]
    for c in study.get("cells") or []:
        if isinstance(c, Mapping) and c.get("id") == cell and "seeds" in c:
            n = c["seeds"]
    if isinstance(n, (list, tuple)):          # seeds given as a list of seed values
        n = len(n)
    v = _as_int(n)
    return float(v) if v is not None else float("nan")


def _phase_from_name(name: str) -> Optional[str]:
    """The phase an experiment folder's name says (``<cell>__search``, ``<cell>__eval``,
    ``sweep_<param>__<cell>``), for trials whose config does not."""
    low = name.lower()
    if low.startswith(SWEEP) or f"__{SWEEP}" in low:
        return SWEEP
    if low.endswith(SEARCH):
        return SEARCH
    if low.endswith("eval") or low.endswith(EVALUATION):
        return EVALUATION
    return None


def _norm_phase(phase: Any) -> Optional[str]:
    if phase is None or (isinstance(phase, float) and math.isnan(phase)):
        return None
    p = str(phase).strip().lower()
    return PHASE_ALIASES.get(p, p)


# ------------------------------------------------------------------------------ one folder
@dataclass
class _Trial:
    ident: Dict[str, Any]
    config: Dict[str, Any]
    epochs: pd.DataFrame          # one row per epoch (metrics only, deduplicated)
    final: Dict[str, Any]


def _epoch_frame(records: List[Dict[str, Any]], epoch_key: str = "epoch") -> pd.DataFrame:
    if not records:
        return pd.DataFrame()
    df = pd.DataFrame.from_records(records)
    if epoch_key not in df.columns and "training_iteration" in df.columns:
        df[epoch_key] = df["training_iteration"]
    if epoch_key in df.columns:
        # a trial restored from a checkpoint reports some epochs again: keep the latest
        df = df.drop_duplicates(subset=[epoch_key], keep="last").sort_values(epoch_key)
    return df.reset_index(drop=True)


def _best(epochs: pd.DataFrame) -> Dict[str, Any]:
    out = {}
    for m in ("test_acc", "robust_test_acc", "val_acc"):
        if m in epochs.columns:
            v = pd.to_numeric(epochs[m], errors="coerce")
            if v.notna().any():
                out[f"best_{m}"] = float(v.max())
    return out


def _failure(rec_last: Mapping[str, Any], error_text: Optional[str]) -> str:
    return failure_reason(rec_last, error_text) or f"failed (empty {ERROR_FILE})"


def _trial_status(rec: TrialRecord, n_epochs: Optional[int],
                  n_done: int) -> Tuple[str, Optional[str]]:
    """(status, error) of a Tune trial by the study's definition (:meth:`TrialRecord.status`),
    against ``n_epochs`` (its config's epochs, resolved from its checkpoint when "auto");
    ``error`` is the one-line reason of a failure, also of one Tune recovered from."""
    planned = n_epochs if n_epochs is not None else rec.planned_epochs()
    status = rec.status(planned)
    error = _failure(rec.last, rec.error_text) \
        if rec.error_text is not None or status == FAILED else None
    if status == INCOMPLETE and planned is None and n_done and not rec.torn:
        status = FINISHED  # results, and no planned epochs to hold them against
    return status, error


def _run_status(folder: Path, result: Any, n_epochs: Optional[int],
                n_done: int) -> Tuple[str, Optional[str]]:
    """(status, error) of an ``lci train`` run folder in the study's words: *finished* once it
    wrote ``result.json`` (or its history holds every epoch), *failed* when it wrote an
    ``error.txt`` instead, else *incomplete* (still running, or interrupted)."""
    error_file = folder / ERROR_FILE
    error = None
    if error_file.is_file():
        try:
            error = _failure({}, error_file.read_text(errors="replace"))
        except OSError:
            error = f"{ERROR_FILE} unreadable"
    if error is not None and result is None:
        return FAILED, error
    if result is not None or (n_epochs is not None and n_done >= n_epochs):
        return FINISHED, error
    return INCOMPLETE, error


def _read_tune_trial(src: Source) -> _Trial:
    folder, rec = src.path, src.record
    records = [r for r in rec.results() if isinstance(r, dict)]
    params = {} if rec.torn else dict(rec.config)
    if not params and records and isinstance(records[0].get("config"), dict):
        params = dict(records[0]["config"])  # a torn params.json: Tune's copy in the results
    phase = _norm_phase(params.pop("phase", None)) or _phase_from_name(folder.parent.name) or SEARCH
    cell = params.pop("cell", None)
    study_name = params.pop("study", None) or src.study.get("name")
    config = flatten(params)
    ckpts = checkpoints(folder)
    if ckpts and (ckpts[0] / CONFIG_FILE).is_file():
        # the run's resolved config (our trainable uploads its run folder as the checkpoint):
        # fills keys that params.json leaves "auto" (epochs, model, lr, ...)
        resolved = read_json(ckpts[0] / CONFIG_FILE)
        if isinstance(resolved, dict):
            for k, v in flatten(resolved).items():
                if k in config and config[k] == "auto":
                    config[k] = v
    cell = cell or default_cell(config)

    epochs = _epoch_frame([{**_metrics(r), **{k: r[k] for k in TUNE_KEPT if k in r}}
                           for r in records])
    final = dict(epochs.iloc[-1].dropna()) if len(epochs) else {}
    if records:
        final.update({k: records[-1][k] for k in TUNE_KEPT if k in records[-1]})
    for k, v in _best(epochs).items():       # unless the run reported its own
        final.setdefault(k, v)
    n_done = len(epochs)
    n_epochs = _as_int(config.get("epochs"))
    status, error = _trial_status(rec, n_epochs, n_done)
    ident = dict(
        study=study_name, phase=phase, cell=cell, seed=_as_int(config.get("seed")),
        status=status, error=error, epochs_done=n_done, kind=TUNE,
        experiment=folder.parent.name,
        trial_id=(records[-1].get("trial_id") if records else None) or folder.name,
        started=records[0].get("timestamp") if records else None,
        n_expected=_n_expected(src.study, cell, phase),
        path=str(folder), study_dir=str(src.study_dir) if src.study_dir else None,
        label_issues=find_label_issues(folder, ckpts),
    )
    return _Trial(ident, config, epochs, final)


def _read_run(src: Source) -> _Trial:
    folder = src.path
    cfg = read_json(folder / CONFIG_FILE)
    config = flatten(cfg if isinstance(cfg, dict) else {})
    meta = read_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    meta = meta if isinstance(meta, dict) else {}
    try:
        epochs = pd.read_csv(folder / HISTORY_FILE)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        epochs = pd.DataFrame()
    if "epoch" in epochs.columns:
        epochs = epochs.drop_duplicates(subset=["epoch"], keep="last").sort_values("epoch")
    epochs = epochs.reset_index(drop=True)
    result_path = folder / RESULT_FILE
    result = read_json(result_path) if result_path.is_file() else None
    final = dict(epochs.iloc[-1].dropna()) if len(epochs) else {}
    if isinstance(result, dict):
        final.update(_scalars(flatten(result)))
    for k, v in _best(epochs).items():       # unless the run reported its own
        final.setdefault(k, v)
    phase = _norm_phase(meta.get("phase")) or RUN_PHASE
    cell = meta.get("cell") or default_cell(config)
    n_done = len(epochs)
    n_epochs = _as_int(config.get("epochs"))
    status, error = _run_status(folder, result, n_epochs, n_done)
    n_exp = meta.get("n_expected", meta.get("seeds"))
    n_exp = _as_int(len(n_exp) if isinstance(n_exp, list) else n_exp)
    ident = dict(
        study=meta.get("study") or src.study.get("name"), phase=phase, cell=cell,
        seed=_as_int(config.get("seed")), status=status, error=error, epochs_done=n_done,
        kind=RUN, experiment=folder.parent.name, trial_id=folder.name, started=None,
        n_expected=float(n_exp) if n_exp is not None else _n_expected(src.study, cell, phase),
        path=str(folder), study_dir=str(src.study_dir) if src.study_dir else None,
        label_issues=find_label_issues(folder),
    )
    return _Trial(ident, config, epochs, final)


def _read(src: Source) -> _Trial:
    t = _read_tune_trial(src) if src.kind == TUNE else _read_run(src)
    c = t.config
    t.ident.update(
        config_id=config_id(c), dataset=c.get("dataset"), noise=c.get("noise"),
        setting=setting_id(c.get("noise")), method=c.get("method"),
        robust_loss=c.get("robust_loss"),
    )
    return t


# ------------------------------------------------------------------------------ frames
def _order(df: pd.DataFrame, config_cols: List[str]) -> pd.DataFrame:
    first = [c for c in ID_COLUMNS + ["started"] if c in df.columns]
    cfg = [c for c in config_cols if c in df.columns and c not in first]
    rest = [c for c in df.columns if c not in first and c not in cfg]
    df = df[first + cfg + rest]
    df.attrs["config_columns"] = [c for c in config_cols if c in df.columns]
    return df


def _sort(df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    keys = [k for k in ("study", "phase", "cell", "seed", "path", *extra) if k in df.columns]
    return df.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


def _read_all(paths: Paths) -> List[_Trial]:
    return [_read(s) for s in discover(paths)]


def load(paths: Paths) -> pd.DataFrame:
    """One row per Tune trial or ``lci train`` run found (recursively) under ``paths``.

    Columns: the identity columns (``study, phase, cell, seed, status, error, epochs_done,
    kind, experiment, trial_id, config_id, n_expected, dataset, noise, setting, method,
    robust_loss, path, study_dir, label_issues``), then the flattened config, then the final
    metrics (the last report) and ``best_test_acc``/``best_robust_test_acc``/``best_val_acc``
    (maximum over epochs). ``status`` is the study's (:mod:`study.trials`): ``"finished"``,
    ``"failed"`` (``error`` holds the reason), ``"stopped"`` or ``"incomplete"`` (fewer epochs
    than the config asked for, and no error). ``df.attrs["config_columns"]`` lists the config
    columns. An empty frame when nothing is found.
    """
    trials = _read_all(paths)
    config_cols: List[str] = []
    rows = []
    for t in trials:
        for k in t.config:
            if k not in config_cols:
                config_cols.append(k)
        rows.append({**t.final, **t.config, **t.ident})
    if not rows:
        return _order(pd.DataFrame(columns=ID_COLUMNS), [])
    return _order(_sort(pd.DataFrame.from_records(rows)), config_cols)


def history(paths: Paths) -> pd.DataFrame:
    """One row per epoch of every trial or run under ``paths``: identity and config columns
    as in :func:`load`, then that epoch's metrics (``epoch`` always present; for Tune trials
    without an ``epoch`` metric it is ``training_iteration``)."""
    trials = _read_all(paths)
    config_cols: List[str] = []
    parts = []
    for t in trials:
        if not len(t.epochs):
            continue
        for k in t.config:
            if k not in config_cols:
                config_cols.append(k)
        ep = t.epochs.copy()
        if "epoch" not in ep.columns:
            ep["epoch"] = np.arange(1, len(ep) + 1)
        const = {**t.config, **t.ident}
        const = {k: v for k, v in const.items() if k not in ep.columns}
        parts.append(ep.assign(**{k: [v] * len(ep) for k, v in const.items()}))
    if not parts:
        return _order(pd.DataFrame(columns=ID_COLUMNS + ["epoch"]), [])
    df = pd.concat(parts, ignore_index=True)
    return _order(_sort(df, ("epoch",)), config_cols)

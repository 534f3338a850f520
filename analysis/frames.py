"""Experiment folders → tidy pandas frames.

Two kinds of folders are read, wherever they sit under the given paths:

- a **Tune trial** folder: any folder with ``params.json`` (the trial config, plus our keys
  ``cell``, ``phase`` and maybe ``study``) and ``result.json`` (JSON lines, one object per
  ``tune.report``; the last line is the final result). ``error.txt`` marks a failed trial.
  The latest ``checkpoint_NNNNNN/`` folder, which our trainable fills with the run folder,
  supplies the resolved values of ``"auto"`` config keys and ``label_issues.csv``.
  A ``study.json`` one to four levels up gives the study name, the seeds it asked for and
  the searched parameters.
- an **``lci train``** run folder: any folder with ``config.json`` and ``history.csv``
  (``result.json`` a plain JSON dict of final metrics; optional ``meta.json`` with
  ``phase``, ``cell``, ``study``).

:func:`load` gives one row per trial or run, :func:`history` one row per epoch. Both carry
the identity columns (``study, cell, phase, seed, status, ...``), the flattened config
(``robust_loss_params.q``) and the metrics under the names of docs/interfaces.md.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from lci.names import default_cell, is_fused_container, setting_id

from .files import _error_reason, _read_json, _read_json_records, _tune_status

PathLike = Union[str, "os.PathLike[str]"]
Paths = Union[PathLike, Sequence[PathLike]]

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

PHASES = ("search", "evaluation", "sweep", "run")
PHASE_ALIASES = {"eval": "evaluation", "evaluate": "evaluation", "final": "evaluation",
                 "tune": "search", "hpo": "search"}

_CHECKPOINT_DIR = re.compile(r"^checkpoint[_-]")
_CHECKPOINT_NUM = re.compile(r"^checkpoint_(\d+)$")


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


# ------------------------------------------------------------------------------ discovery
@dataclass
class Source:
    """One trial or run folder and what its study says about it."""
    path: Path
    kind: str                                   # "tune" or "run"
    study_dir: Optional[Path] = None
    study: Dict[str, Any] = field(default_factory=dict)


def _find_study(folder: Path, cache: Dict[Path, Optional[Path]]) -> Optional[Path]:
    """The nearest ``study.json`` in the folder or up to four levels above it."""
    p = folder
    for _ in range(5):
        if p in cache:
            return cache[p]
        if (p / "study.json").is_file():
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
            kind = None
            if "params.json" in files:
                params = _read_json(folder / "params.json")
                if isinstance(params, dict) and is_fused_container(params):
                    # a fused trial's own folder holds only its checkpoint: its seeds' runs
                    # are trial folders beside it
                    dirnames[:] = []
                    continue
                kind = "tune"
            elif "config.json" in files and "history.csv" in files:
                kind = "run"
            if kind is None:
                dirnames[:] = sorted(d for d in dirnames
                                     if not _CHECKPOINT_DIR.match(d) and not d.startswith(".")
                                     and d != "__pycache__")
                continue
            dirnames[:] = []
            real = folder.resolve()
            if real in seen:
                continue
            seen.add(real)
            sdir = _find_study(folder, study_cache)
            if sdir is not None and sdir not in studies:
                spec = _read_json(sdir / "study.json")
                studies[sdir] = spec if isinstance(spec, dict) else {}
            sources.append(Source(folder, kind, sdir, studies.get(sdir, {}) if sdir else {}))
    return sources


def _checkpoints(folder: Path) -> List[Path]:
    """The trial's ``checkpoint_NNNNNN`` folders, latest first."""
    found = []
    for sub in folder.iterdir():
        m = _CHECKPOINT_NUM.match(sub.name)
        if m and sub.is_dir():
            found.append((int(m.group(1)), sub))
    return [p for _, p in sorted(found, reverse=True)]


def _find_label_issues(folder: Path, checkpoints: Sequence[Path] = ()) -> Optional[str]:
    """``label_issues.csv`` of the run: in the folder, in its latest checkpoint (our trainable
    uploads the run folder as the checkpoint), or one level down."""
    p = folder / "label_issues.csv"
    if p.is_file():
        return str(p)
    for ck in checkpoints:
        if (ck / "label_issues.csv").is_file():
            return str(ck / "label_issues.csv")
    for sub in sorted(folder.iterdir()):
        if sub.is_dir() and not _CHECKPOINT_DIR.match(sub.name) and (sub / "label_issues.csv").is_file():
            return str(sub / "label_issues.csv")
    return None


def _n_expected(study: Mapping[str, Any], cell: Optional[str], phase: str) -> float:
    """Seeds the study asked for in this cell and phase (NaN for searches and unknown)."""
    if phase == "search" or not study:
        return float("nan")
    n = study.get("seeds")
    if phase == "sweep" and isinstance(study.get("sweep"), Mapping) and "seeds" in study["sweep"]:
        n = study["sweep"]["seeds"]
    for c in study.get("cells") or []:
        if isinstance(c, Mapping) and c.get("id") == cell and "seeds" in c:
            n = c["seeds"]
    if isinstance(n, (list, tuple)):          # seeds given as a list of seed values
        n = len(n)
    v = _as_int(n)
    return float(v) if v is not None else float("nan")


def _phase_from_name(name: str) -> Optional[str]:
    low = name.lower()
    if low.startswith("sweep") or "__sweep" in low:
        return "sweep"
    if low.endswith("search"):
        return "search"
    if low.endswith("eval") or low.endswith("evaluation"):
        return "evaluation"
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


def _read_tune_trial(src: Source) -> _Trial:
    folder = src.path
    params = _read_json(folder / "params.json")
    params = params if isinstance(params, dict) else {}
    records = _read_json_records(folder / "result.json")
    if not params and records and isinstance(records[0].get("config"), dict):
        params = records[0]["config"]
    params = dict(params)
    phase = _norm_phase(params.pop("phase", None)) or _phase_from_name(folder.parent.name) or "search"
    cell = params.pop("cell", None)
    study_name = params.pop("study", None) or src.study.get("name")
    config = flatten(params)
    checkpoints = _checkpoints(folder)
    if checkpoints and (checkpoints[0] / "config.json").is_file():
        # the run's resolved config (our trainable uploads its run folder as the checkpoint):
        # fills keys that params.json leaves "auto" (epochs, model, lr, ...)
        resolved = _read_json(checkpoints[0] / "config.json")
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
    status, error = _tune_status(folder, n_epochs, n_done)
    ident = dict(
        study=study_name, phase=phase, cell=cell, seed=_as_int(config.get("seed")),
        status=status, error=error, epochs_done=n_done, kind="tune",
        experiment=folder.parent.name,
        trial_id=(records[-1].get("trial_id") if records else None) or folder.name,
        started=records[0].get("timestamp") if records else None,
        n_expected=_n_expected(src.study, cell, phase),
        path=str(folder), study_dir=str(src.study_dir) if src.study_dir else None,
        label_issues=_find_label_issues(folder, checkpoints),
    )
    return _Trial(ident, config, epochs, final)


def _read_run(src: Source) -> _Trial:
    folder = src.path
    cfg = _read_json(folder / "config.json")
    config = flatten(cfg if isinstance(cfg, dict) else {})
    meta = _read_json(folder / "meta.json") if (folder / "meta.json").is_file() else {}
    meta = meta if isinstance(meta, dict) else {}
    try:
        epochs = pd.read_csv(folder / "history.csv")
    except (OSError, ValueError, pd.errors.EmptyDataError):
        epochs = pd.DataFrame()
    if "epoch" in epochs.columns:
        epochs = epochs.drop_duplicates(subset=["epoch"], keep="last").sort_values("epoch")
    epochs = epochs.reset_index(drop=True)
    result_path = folder / "result.json"
    result = _read_json(result_path) if result_path.is_file() else None
    final = dict(epochs.iloc[-1].dropna()) if len(epochs) else {}
    if isinstance(result, dict):
        final.update(_scalars(flatten(result)))
    for k, v in _best(epochs).items():       # unless the run reported its own
        final.setdefault(k, v)
    phase = _norm_phase(meta.get("phase")) or "run"
    cell = meta.get("cell") or default_cell(config)
    n_done = len(epochs)
    n_epochs = _as_int(config.get("epochs"))
    error_file = folder / "error.txt"
    error = _error_reason(error_file) if error_file.is_file() else None
    if error is not None and result is None:
        status = "error"
    elif result is not None or (n_epochs is not None and n_done >= n_epochs):
        status = "ok"
    else:
        status = "incomplete"
    n_exp = meta.get("n_expected", meta.get("seeds"))
    n_exp = _as_int(len(n_exp) if isinstance(n_exp, list) else n_exp)
    ident = dict(
        study=meta.get("study") or src.study.get("name"), phase=phase, cell=cell,
        seed=_as_int(config.get("seed")), status=status, error=error, epochs_done=n_done,
        kind="run", experiment=folder.parent.name, trial_id=folder.name, started=None,
        n_expected=float(n_exp) if n_exp is not None else _n_expected(src.study, cell, phase),
        path=str(folder), study_dir=str(src.study_dir) if src.study_dir else None,
        label_issues=_find_label_issues(folder),
    )
    return _Trial(ident, config, epochs, final)


def _read(src: Source) -> _Trial:
    t = _read_tune_trial(src) if src.kind == "tune" else _read_run(src)
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
    (maximum over epochs). ``status`` is ``"ok"``, ``"error"`` (``error`` holds the reason) or
    ``"incomplete"`` (fewer epochs than the config asked for). ``df.attrs["config_columns"]``
    lists the config columns. An empty frame when nothing is found.
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

"""Which code, software, machines and data made the runs of a report, and whether the runs
of one table match.

Every run records a ``provenance`` object in its ``result.json`` (:mod:`lci.provenance`);
:func:`analysis.load` reads it as ``provenance.*`` columns. Runs written before provenance
existed have none of them: they show as ``unknown`` and are left out of the checks.
"""
from __future__ import annotations

import warnings
from typing import List, Sequence

import pandas as pd

from study.trials import FINISHED

PREFIX = "provenance."
#: The environment columns of :func:`provenance_table`, in display order.
ENVIRONMENT = ["python", "torch", "torchvision", "ray", "optuna", "numpy", "cuda", "cudnn",
               "device", "host"]
UNKNOWN = "unknown"


class ProvenanceWarning(UserWarning):
    """Runs of one table that differ in code version, data, or noisy labels."""


def _col(runs: pd.DataFrame, key: str) -> pd.Series:
    c = PREFIX + key
    return runs[c] if c in runs.columns else pd.Series(None, index=runs.index, dtype=object)


def _text(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def code_version(runs: pd.DataFrame) -> pd.Series:
    """Per run: ``0.3.0 2f891005fe`` (version and short commit, ``+dirty`` for a checkout
    with uncommitted changes), ``0.3.0`` outside a checkout, ``unknown`` without provenance."""
    out = []
    for ver, commit, dirty in zip(_col(runs, "version"), _col(runs, "git_commit"),
                                  _col(runs, "git_dirty")):
        ver, commit = _text(ver), _text(commit)
        if not ver and not commit:
            out.append(UNKNOWN)
            continue
        label = " ".join(p for p in (ver or "?", commit[:10]) if p)
        if dirty is True or str(dirty).lower() == "true":
            label += "+dirty"
        out.append(label)
    return pd.Series(out, index=runs.index, dtype=object)


def provenance_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct code version and environment (package versions, CUDA, cuDNN,
    device, host) with the number of runs and the data sets they trained on."""
    if runs.empty:
        return pd.DataFrame(columns=["code"] + ENVIRONMENT + ["runs", "datasets"])
    df = pd.DataFrame({"code": code_version(runs)}, index=runs.index)
    for k in ENVIRONMENT:
        df[k] = [_text(v) for v in _col(runs, k)]
    df["dataset"] = runs["dataset"].astype(str) if "dataset" in runs.columns else ""
    keys = ["code"] + ENVIRONMENT
    out = (df.groupby(keys, dropna=False, sort=True)
           .agg(runs=("dataset", "size"), datasets=("dataset", lambda s: ", ".join(sorted(set(s)))))
           .reset_index())
    return out


def data_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per data set and training-data digest (first 12 hex digits): the number of runs."""
    if runs.empty or PREFIX + "data_sha256" not in runs.columns:
        return pd.DataFrame(columns=["dataset", "data_sha256", "runs"])
    df = pd.DataFrame({"dataset": runs["dataset"].astype(str),
                       "data_sha256": [_text(v)[:12] or UNKNOWN for v in _col(runs, "data_sha256")]})
    return df.groupby(["dataset", "data_sha256"]).size().reset_index(name="runs")


def table_runs(runs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """The finished runs behind a table's entries (``Table.cells``: phase, cell, config_id)."""
    if cells.empty or runs.empty:
        return runs.iloc[0:0]
    keys = [k for k in ("phase", "cell", "config_id") if k in cells.columns and k in runs.columns]
    wanted = set(map(tuple, cells[keys].astype(str).values.tolist()))
    mask = [tuple(r) in wanted for r in runs[keys].astype(str).values.tolist()]
    sel = runs[mask]
    return sel[sel["status"] == FINISHED] if "status" in sel.columns else sel


def _counts(labels: pd.Series) -> str:
    vc = labels.value_counts()
    return ", ".join(f"{k} ({v} run{'s' if v != 1 else ''})" for k, v in vc.items())


def check_table(name: str, runs: pd.DataFrame) -> List[str]:
    """Warnings for the runs of one table: more than one code version; more than one training
    data digest for a data set; for one data set, noise setting and seed, more than one noisy
    label digest (the methods did not see the same noisy labels: the pairing by seed breaks)."""
    out: List[str] = []
    if runs.empty:
        return out
    code = code_version(runs)
    known = code[code != UNKNOWN]
    if known.nunique() > 1:
        out.append(f"{name}: its runs mix {known.nunique()} code versions: {_counts(known)}")
    data = pd.Series([_text(v) for v in _col(runs, "data_sha256")], index=runs.index)
    noisy = pd.Series([_text(v) for v in _col(runs, "noisy_labels_sha256")], index=runs.index)
    ds = runs["dataset"].astype(str) if "dataset" in runs.columns else pd.Series("", index=runs.index)
    for d, g in data[data != ""].groupby(ds):
        if g.nunique() > 1:
            out.append(f"{name}: runs on {d} read different training data: data_sha256 "
                       + _counts(g.str[:12]))
    if "noise" in runs.columns and "seed" in runs.columns:
        frame = pd.DataFrame({"dataset": ds, "noise": runs["noise"].astype(str),
                              "seed": runs["seed"], "digest": noisy})
        frame = frame[frame["digest"] != ""]
        for (d, noise, seed), g in frame.groupby(["dataset", "noise", "seed"]):
            if g["digest"].nunique() > 1:
                out.append(f"{name}: {d} noise {noise} seed {_text(seed)}: the runs trained on "
                           f"{g['digest'].nunique()} different noisy label vectors "
                           f"(noisy_labels_sha256 {_counts(g['digest'].str[:12])}); methods "
                           "are not paired on the same labels")
    return out


def check_tables(runs: pd.DataFrame, tables: Sequence) -> List[str]:
    """:func:`check_table` for each :class:`~analysis.tables.Table`; each finding is also
    issued as a :class:`ProvenanceWarning`."""
    found: List[str] = []
    for t in tables:
        found += check_table(t.name, table_runs(runs, t.cells))
    for msg in found:
        warnings.warn(msg, ProvenanceWarning, stacklevel=2)
    return found

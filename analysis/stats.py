"""Aggregation by cell over seeds: mean, std, n and a 95% t-interval, incomplete cells flagged.

A *cell* is a set of trials that differ only in their seed: the same study, phase, cell id
and config (``config_id`` hashes the config without the seed and runtime keys). Only trials
with ``status == "ok"`` count; a cell with fewer of them than the study asked for
(``n_expected``) gets ``complete = False`` and keeps its ``n`` visible, so it is never read as
a full five-seed figure.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

# the one summary over seeds, shared with the study's end-of-study table; re-exported here
from study.summary_stats import summarize, t_quantile  # noqa: F401

#: Phases whose trials are repeated seeds of one configuration (``search`` trials are not).
SEEDED_PHASES = ("evaluation", "sweep", "run")
CELL_KEYS = ["study", "phase", "cell", "config_id"]
#: Columns copied from a cell's first trial to describe it.
DESCRIPTIVE = ["dataset", "noise", "setting", "method", "robust_loss", "m", "lam", "rho", "alpha"]


def _config_columns(df: pd.DataFrame) -> List[str]:
    cols = df.attrs.get("config_columns")
    if cols:
        return [c for c in cols if c in df.columns]
    return [c for c in DESCRIPTIVE if c in df.columns]


def aggregate(
    runs: pd.DataFrame,
    metric: str = "test_acc",
    *,
    by: Optional[Sequence[str]] = None,
    phases: Optional[Sequence[str]] = SEEDED_PHASES,
    n_expected: Optional[int] = None,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per cell: its keys, descriptive config, and ``metric`` summarized over seeds.

    ``by`` defaults to ``study, phase, cell, config_id``. ``phases`` keeps only those phases
    (``None``: all). Columns: ``n`` (finished seeds), ``n_expected`` (from the study; else the
    ``n_expected`` argument; else the largest ``n`` among cells of the same phase, or the
    number of trials the cell started if larger), ``complete``, ``mean``,
    ``std``, ``sem``, ``ci95`` (half-width of the t-interval), ``ci_low``, ``ci_high``, ``min``,
    ``max``, ``n_error``, ``n_incomplete``, ``seeds`` (the finished seeds, comma-separated).
    """
    df = runs
    if phases is not None and "phase" in df.columns:
        df = df[df["phase"].isin(list(phases))]
    keys = list(by) if by is not None else [k for k in CELL_KEYS if k in df.columns]
    descr = [c for c in DESCRIPTIVE if c in df.columns and c not in keys]
    descr += sorted(c for c in _config_columns(runs)
                    if c.startswith("robust_loss_params.") and c not in keys and c not in descr)
    cols = keys + descr + ["metric", "n", "n_expected", "complete", "mean", "std", "sem",
                           "ci95", "ci_low", "ci_high", "min", "max", "n_error",
                           "n_incomplete", "seeds"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    status = df["status"] if "status" in df.columns else pd.Series("ok", index=df.index)
    rows = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        st = status.loc[g.index]
        ok = g[st == "ok"]
        if "seed" in ok.columns and ok["seed"].notna().any() and ok["seed"].duplicated().any():
            warnings.warn(f"cell {dict(zip(keys, key))}: seed repeated; the last trial of each "
                          "seed (by path) is used", stacklevel=2)
            ok = ok.sort_values("path").drop_duplicates("seed", keep="last")
        values = (pd.to_numeric(ok[metric], errors="coerce") if metric in ok.columns
                  else pd.Series(dtype=float))
        s = summarize(values.tolist(), level)
        seeds = (ok.loc[values.notna(), "seed"] if "seed" in ok.columns else pd.Series(dtype=float))
        n_exp = np.nan
        if "n_expected" in g.columns:
            e = pd.to_numeric(g["n_expected"], errors="coerce")
            n_exp = float(e.max()) if e.notna().any() else np.nan
        row = dict(zip(keys, key))
        row.update({c: g[c].iloc[0] for c in descr})
        row.update(metric=metric, n_expected=n_exp, n_error=int((st == "error").sum()),
                   n_incomplete=int((st == "incomplete").sum()),
                   seeds=",".join(str(int(x)) for x in sorted(seeds.dropna())), **s)
        rows.append(row)
    out = pd.DataFrame.from_records(rows)
    if n_expected is not None:
        fallback = pd.Series(n_expected, index=out.index)
    elif "phase" in out.columns:          # the best-seeded cell of the same phase
        fallback = out.groupby("phase", dropna=False)["n"].transform("max")
    else:
        fallback = pd.Series(out["n"].max(), index=out.index)
    attempted = out["n"] + out["n_error"] + out["n_incomplete"]   # seeds this cell started
    fallback = np.maximum(fallback, attempted)
    out["n_expected"] = out["n_expected"].fillna(fallback).astype(int)
    out["complete"] = out["n"] >= out["n_expected"]
    return out[cols]

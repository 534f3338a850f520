"""Aggregation by cell over seeds: mean, std, n and a 95% t-interval, incomplete cells flagged;
paired tests of two methods over the seeds they share (:func:`paired`).

A *cell* is a set of trials that differ only in their seed: the same study, phase, cell id
and config (``config_id`` hashes the config without the seed and runtime keys). Only trials
that finished (``status == "finished"``, the study's word: :mod:`study.trials`) count; a cell with fewer of them than the study asked for
(``n_expected``) gets ``complete = False`` and keeps its ``n`` visible, so it is never read as
a full five-seed figure.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

# the one summary over seeds, shared with the study's end-of-study table; re-exported here
from study.summary_stats import finite_number, summarize, t_quantile  # noqa: F401
from study.trials import FAILED, FINISHED, INCOMPLETE

from .frames import SEEDED_PHASES
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
    ``max``, ``n_failed``, ``n_incomplete``, ``seeds`` (the finished seeds, comma-separated).
    """
    df = runs
    if phases is not None and "phase" in df.columns:
        df = df[df["phase"].isin(list(phases))]
    keys = list(by) if by is not None else [k for k in CELL_KEYS if k in df.columns]
    descr = [c for c in DESCRIPTIVE if c in df.columns and c not in keys]
    descr += sorted(c for c in _config_columns(runs)
                    if c.startswith("robust_loss_params.") and c not in keys and c not in descr)
    cols = keys + descr + ["metric", "n", "n_expected", "complete", "mean", "std", "sem",
                           "ci95", "ci_low", "ci_high", "min", "max", "n_failed",
                           "n_incomplete", "seeds"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    status = df["status"] if "status" in df.columns else pd.Series(FINISHED, index=df.index)
    rows = []
    for key, g in df.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        st = status.loc[g.index]
        ok = g[st == FINISHED]
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
        row.update(metric=metric, n_expected=n_exp, n_failed=int((st == FAILED).sum()),
                   n_incomplete=int((st == INCOMPLETE).sum()),
                   seeds=",".join(str(int(x)) for x in sorted(seeds.dropna())), **s)
        rows.append(row)
    out = pd.DataFrame.from_records(rows)
    if n_expected is not None:
        fallback = pd.Series(n_expected, index=out.index)
    elif "phase" in out.columns:          # the best-seeded cell of the same phase
        fallback = out.groupby("phase", dropna=False)["n"].transform("max")
    else:
        fallback = pd.Series(out["n"].max(), index=out.index)
    attempted = out["n"] + out["n_failed"] + out["n_incomplete"]   # seeds this cell started
    fallback = np.maximum(fallback, attempted)
    out["n_expected"] = out["n_expected"].fillna(fallback).astype(int)
    out["complete"] = out["n"] >= out["n_expected"]
    return out[cols]


# ------------------------------------------------------------------ paired tests over seeds
# The same seed gives every method the same noisy labels, split and batch order, so two
# methods' results on one setting are paired by seed: the tests below work on the per-seed
# differences. scipy is not a direct dependency; scikit-learn (a declared one) requires it,
# so scipy.stats (the t and noncentral t distributions) is always installed.

#: Significance level of the table markers and of :func:`seeds_needed`.
ALPHA = 0.05
#: Power :func:`seeds_needed` asks of the paired t-test.
POWER = 0.8
#: Up to this many pairs the sign-flip test enumerates all 2**n sign patterns.
EXACT_MAX_PAIRS = 16
_SIGNFLIP_DRAWS = 2 ** 16


def sign_flip_p(diffs: Sequence[float]) -> float:
    """Two-sided sign-flip (paired permutation) p-value of the mean difference being 0.

    Under the null each difference is as likely positive as negative: the p-value is the share
    of the 2**n sign patterns whose |sum| reaches the observed |sum|. Exact up to
    :data:`EXACT_MAX_PAIRS` pairs (the smallest possible value is 2 / 2**n: 0.0625 for 5
    seeds, so 5 seeds can never reach p < 0.05); beyond, a seeded Monte Carlo estimate
    ``(1 + hits) / (1 + draws)``. NaN without pairs.
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))       # float sums of equal patterns
    if n <= EXACT_MAX_PAIRS:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        signs = 1 - 2 * bits                                # every +-1 pattern once
        sums = np.abs(signs @ d)
        return float((sums >= observed - tol).mean())
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(_SIGNFLIP_DRAWS, n))
    hits = int((np.abs(signs @ d) >= observed - tol).sum())
    return (1 + hits) / (1 + _SIGNFLIP_DRAWS)


def paired_t_p(diffs: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel`` on the differences).

    NaN for fewer than 2 pairs; when all differences are equal: 1.0 if they are 0, else 0.0
    (no seed-to-seed spread at all: the difference is not chance).
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2:
        return float("nan")
    sd = float(d.std(ddof=1))
    mean = float(d.mean())
    if sd == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    from scipy import stats

    t = mean / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def min_signflip_seeds(alpha: float = ALPHA) -> int:
    """The fewest pairs for which the exact two-sided sign-flip test can reach p < ``alpha``
    (2 / 2**n < alpha: 6 for 0.05)."""
    n = 1
    while 2.0 / 2 ** n >= alpha:
        n += 1
    return n


def seeds_needed(mean_diff: float, sd_diff: float, *, alpha: float = ALPHA,
                 power: float = POWER, limit: int = 1000) -> float:
    """Seeds a paired difference of this size and seed-to-seed spread would need: the fewest
    ``n`` at which the two-sided paired t-test at ``alpha`` has ``power`` (noncentral t), and
    at least :func:`min_signflip_seeds` so the exact sign-flip test can reach ``alpha`` too.
    NaN for no difference or an unknown spread; ``inf`` beyond ``limit``."""
    if not (math.isfinite(mean_diff) and math.isfinite(sd_diff)) or mean_diff == 0.0:
        return float("nan")
    floor = min_signflip_seeds(alpha)
    if sd_diff == 0.0:
        return float(floor)
    from scipy import stats

    effect = abs(mean_diff) / sd_diff
    for n in range(2, limit + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        nc = effect * math.sqrt(n)
        achieved = stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)
        if achieved >= power:
            return float(max(n, floor))
    return float("inf")


def paired(a: Mapping[Any, float], b: Mapping[Any, float], level: float = 0.95
           ) -> Dict[str, float]:
    """``a`` against ``b``, each a seed -> value mapping, over the seeds both have.

    Returns ``n_paired``, ``diff`` (mean of a - b), ``diff_std``, ``diff_ci_low`` /
    ``diff_ci_high`` (its ``level`` t-interval), ``p_t`` (paired t-test), ``p_signflip``
    (exact sign-flip permutation test), ``p_improve`` (share of the seeds where a > b) and
    ``seeds_needed`` (:func:`seeds_needed`), all two-sided.
    """
    seeds = sorted(set(k for k, v in a.items() if finite_number(v) is not None)
                   & set(k for k, v in b.items() if finite_number(v) is not None))
    d = np.array([float(a[s]) - float(b[s]) for s in seeds], dtype=float)
    s = summarize(d.tolist(), level)
    nan = float("nan")
    return dict(n_paired=len(d), diff=s["mean"], diff_std=s["std"], diff_ci_low=s["ci_low"],
                diff_ci_high=s["ci_high"], p_t=paired_t_p(d), p_signflip=sign_flip_p(d),
                p_improve=float((d > 0).mean()) if len(d) else nan,
                seeds_needed=seeds_needed(s["mean"], s["std"]) if len(d) > 1 else nan)


def seed_values(runs: pd.DataFrame, metric: str, **keys: Any) -> Dict[int, float]:
    """seed -> ``metric`` of the finished runs matching ``keys`` (column == value); a seed
    run twice counts once, its last run by path (as :func:`aggregate`)."""
    df = runs
    for k, v in keys.items():
        if k in df.columns:
            df = df[df[k].isna()] if v is None or (isinstance(v, float) and math.isnan(v)) \
                else df[df[k] == v]
    if "status" in df.columns:
        df = df[df["status"] == FINISHED]
    if metric not in df.columns or "seed" not in df.columns:
        return {}
    df = df.sort_values("path") if "path" in df.columns else df
    out: Dict[int, float] = {}
    for seed, v in zip(df["seed"], pd.to_numeric(df[metric], errors="coerce")):
        if pd.notna(seed) and pd.notna(v):
            out[int(seed)] = float(v)
    return out

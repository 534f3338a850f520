"""Mean, spread and a t-interval of a metric over seeds: the one summary used by the study's
end-of-study table and by ``analysis``. Plain Python and numpy, no Ray.

scipy is not a direct dependency of this project; it is always installed because
scikit-learn (a declared dependency) requires it, and only its Student-t quantile is used.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterable, Optional

import numpy as np


def finite_number(v: Any) -> Optional[float]:
    """``v`` as a float when it is a finite real number (bools, None, strings and NaN: None)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student-t quantile for a ``level`` interval with ``df`` degrees of freedom
    (NaN when ``df < 1``)."""
    if df < 1:
        return float("nan")
    from scipy import stats  # imported here: most callers never build an interval

    return float(stats.t.ppf(0.5 + level / 2, df))


def summarize(values: Iterable[Any], level: float = 0.95) -> Dict[str, float]:
    """``n`` (finite numbers among ``values``; anything else is skipped), ``mean``, ``std``
    (sample std, ddof 1), ``sem``, ``ci95`` (half-width of the ``level`` t-interval),
    ``ci_low``, ``ci_high``, ``min`` and ``max``.

    With one value the spread is unknown, so ``std``, ``sem`` and the interval are NaN (not 0:
    one seed says nothing about seed-to-seed variation); with none, everything but ``n`` is NaN.
    """
    v = np.asarray([x for x in (finite_number(x) for x in values) if x is not None], dtype=float)
    n = len(v)
    nan = float("nan")
    if n == 0:
        return dict(n=0, mean=nan, std=nan, sem=nan, ci95=nan, ci_low=nan, ci_high=nan,
                    min=nan, max=nan)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if n > 1 else nan
    sem = std / math.sqrt(n) if n > 1 else nan
    half = t_quantile(n - 1, level) * sem if n > 1 else nan
    return dict(n=n, mean=mean, std=std, sem=sem, ci95=half, ci_low=mean - half,
                ci_high=mean + half, min=float(v.min()), max=float(v.max()))

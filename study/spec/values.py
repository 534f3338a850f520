"""Checks of single values in a spec: each returns the value in its checked form or raises a
:class:`SpecError` that names where the value is (``search.trials``) and what is allowed."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from lci.config import TrainConfig
from lci.errors import allowed

from .keys import AXIS_KEYS, PHASE_KEYS, SpecError


def check_keys(d: Mapping[str, Any], keys, where: str) -> None:
    """Every key of ``d`` must be one of ``keys``."""
    for k in d:
        if k not in keys:
            raise SpecError(f"unknown key {k!r} in {where}; allowed: {', '.join(keys)}")


def mapping(v: Any, where: str) -> Dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise SpecError(f"{where} must be a mapping, got {type(v).__name__} {v!r}")
    return dict(v)


def str_list(v: Any, where: str, options: Optional[Sequence[str]] = None) -> List[str]:
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v:
        raise SpecError(f"{where} must be a non-empty list")
    out = []
    for x in v:
        if not isinstance(x, str):
            raise SpecError(f"{where}: {x!r} must be a string")
        if options is not None and x not in options:
            raise SpecError(f"{where}: unknown value {x!r}; allowed: {allowed(options)}")
        if x in out:
            raise SpecError(f"{where}: {x!r} is listed twice")
        out.append(x)
    return out


def integer(v: Any, where: str, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SpecError(f"{where}={v!r} must be an integer >= {low}")
    return v


def flag(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(f"{where}={v!r} must be true or false")
    return v


def seed_list(v: Any, where: str) -> List[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise SpecError(f"{where}={v!r} must be at least 1")
        return list(range(v))
    if isinstance(v, (list, tuple)) and v and all(isinstance(s, int) and not isinstance(s, bool)
                                                  and s >= 0 for s in v):
        if len(set(v)) != len(v):
            raise SpecError(f"{where}: seeds must be distinct, got {list(v)}")
        return list(v)
    raise SpecError(f"{where}={v!r} must be a number of seeds or a list of seeds >= 0")


def number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)  # YAML reads 1e-5 as a string
        except (TypeError, ValueError):
            raise SpecError(f"{where}={v!r} must be a number") from None
    if not math.isfinite(v):
        raise SpecError(f"{where}={v!r} must be a finite number")
    return float(v)


def metric_name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{where}={v!r} must be a metric name such as 'val_acc' or 'test_acc'")
    return v


def settings(v: Any, where: str, *, forbid=AXIS_KEYS + PHASE_KEYS) -> Dict[str, Any]:
    """TrainConfig settings (``fixed``, ``set``, a phase's ``fixed``); the keys that the axes or
    the phases set are refused."""
    d = mapping(v, where)
    names = TrainConfig.field_names()
    for k in d:
        if k not in names:
            raise SpecError(f"unknown setting {k!r} in {where}; allowed: TrainConfig fields "
                            f"({', '.join(names)})")
        if k in forbid:
            raise SpecError(f"{where}: {k!r} is set by the study itself ("
                            + ("use the 'noise'/'methods'/'robust_losses' axes" if k in AXIS_KEYS
                               else "the search sets val_fraction (search.val_fraction), "
                               "evaluation and sweeps train on the full training set") + ")")
    return d

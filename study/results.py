"""The best trial of a search and the end-of-study summary table, from the trial records of
:mod:`study.trials`. Ray-free (plain files)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .summary_stats import finite_number, summarize
from .trials import TrialRecord, get_path, read_trials  # noqa: F401  (re-exported)


def best_trial(records: Sequence[TrialRecord], metric: str, mode: str,
               epochs: int) -> Optional[TrialRecord]:
    """The best *finished* trial (ran all its epochs, no error): a trial stopped early by
    ASHA never wins on a truncated score."""
    done = [r for r in records if r.finished(epochs) and finite_number(r.last.get(metric)) is not None]
    if not done:
        return None
    sign = 1.0 if mode == "max" else -1.0
    # ties -> the earlier trial (ids are in creation order)
    return max(sorted(done, key=lambda r: r.trial_id), key=lambda r: sign * r.last[metric])


def mean_std(values: Sequence[Any]) -> Dict[str, float]:
    """n, mean and std over seeds (the columns of the end-of-study table), from the one
    summary that analysis/ uses too."""
    st = summarize(values)
    return {"n": st["n"], "mean": st["mean"], "std": st["std"]}


def fmt_params(params: Mapping[str, Any]) -> str:
    if not params:
        return "-"
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def fmt_acc(s: Mapping[str, float]) -> str:
    if not s or not s.get("n"):
        return "-"
    if not math.isfinite(s.get("std", float("nan"))):  # one seed: no spread to show
        return f"{s['mean']:.4f} (n={s['n']})"
    return f"{s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})"


@dataclass
class Summary:
    study_dir: str
    metric: str
    cells: List[Dict[str, Any]] = field(default_factory=list)
    sweeps: List[Dict[str, Any]] = field(default_factory=list)
    errors: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"study_dir": self.study_dir, "metric": self.metric, "cells": self.cells,
                "sweeps": self.sweeps, "errored_trials": self.errors}

    def table(self) -> str:
        rows = [("cell", "best params", f"{self.metric} (mean ± std over seeds)")]
        for c in self.cells:
            rows.append((c["cell"], fmt_params(c.get("params") or {}), fmt_acc(c.get(self.metric, {}))))
        w0 = max(len(r[0]) for r in rows)
        w1 = min(max(len(r[1]) for r in rows), 60)
        lines = [f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}" for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        for s in self.sweeps:
            pts = "  ".join(f"{p['value']:g}: {fmt_acc(p).replace(' ± ', '±')}"
                            for p in s["points"] if p.get("n"))
            lines.append(f"sweep {s['param']} ({s['cell']}, {s['metric']}): {pts}")
        if self.errors:
            lines.append(f"{self.errors} trial(s) failed; `lci sweep SPEC --resume` retries them")
        lines.append(f"results: {self.study_dir}")
        return "\n".join(lines)

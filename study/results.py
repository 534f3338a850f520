"""The best trial of a search and the end-of-study summary table, from the trial records of
:mod:`study.trials`. Ray-free (plain files)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .phases import EVALUATION, SWEEP
from .summary_stats import finite_number, summarize
from .trials import CRASHED, DIVERGED, FAILED, REFUSED, TrialRecord, get_path


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
    #: one entry per failed trial: experiment, trial_id, kind (diverged/refused/crashed), reason
    failures: List[Dict[str, str]] = field(default_factory=list)

    def add_failure(self, experiment: str, rec: TrialRecord) -> None:
        self.errors += 1
        self.failures.append({"experiment": experiment, "trial_id": rec.trial_id,
                              "kind": rec.failure_kind(), "reason": rec.reason()})

    def to_json(self) -> Dict[str, Any]:
        return {"study_dir": self.study_dir, "metric": self.metric, "cells": self.cells,
                "sweeps": self.sweeps, "errored_trials": self.errors,
                "failed_trials": self.failures}

    def failure_lines(self) -> List[str]:
        """What failed, by kind, and what ``--resume`` will do about each kind."""
        says = {DIVERGED: "diverged (non-finite loss; the same config and seed diverge again, "
                          "so --resume does not rerun them: lower lr in a new study)",
                REFUSED: "stopped on bad input (not rerun by --resume; fix the spec)",
                CRASHED: "crashed after their retries; `lci sweep SPEC --resume` reruns them "
                         "from their last checkpoints"}
        lines = []
        for kind, text in says.items():
            hit = [f for f in self.failures if f["kind"] == kind]
            if hit:
                names = ", ".join(f"{f['experiment']}/{f['trial_id']}" for f in hit[:4])
                more = f" and {len(hit) - 4} more" if len(hit) > 4 else ""
                lines.append(f"{len(hit)} trial(s) {text}: {names}{more}; first reason: "
                             f"{hit[0]['reason'][:160]}")
        return lines

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
        lines += self.failure_lines()
        lines.append(f"results: {self.study_dir}")
        return "\n".join(lines)


def build_summary(spec, nodes, trials: Mapping[str, List[TrialRecord]],
                  chosen_params: Callable[[Any], Dict[str, Any]],
                  best: Callable[[str], Optional[Dict[str, Any]]]) -> Summary:
    """The end-of-study summary of ``spec``: per evaluation its cell's parameters
    (``chosen_params(cell)``), the metric's mean ± std over the finished seeds and the
    search's best score (``best(cell id)``); per sweep the points; every failed trial by
    kind. ``trials``: the study's trials by experiment (:func:`study.trials.read_study_trials`)."""
    metric = spec.evaluation.metric
    s = Summary(spec.study_dir, metric)
    for node in nodes:
        recs = trials.get(node.name, [])
        for r in recs:
            if r.status() == FAILED:
                s.add_failure(node.name, r)
        done = [r for r in recs if r.finished()]
        cell = node.cell
        if node.phase == EVALUATION:
            row = {"cell": cell.id, "method": cell.method, "noise": cell.noise,
                   "robust_loss": cell.robust_loss, "params": chosen_params(cell),
                   metric: mean_std([r.last.get(metric) for r in done]),
                   "seeds": sorted(r.config.get("seed") for r in done)}
            found = best(cell.id)
            if found and spec.search:
                row["search_" + spec.search.metric] = found.get(spec.search.metric)
            s.cells.append(row)
        elif node.phase == SWEEP:
            sw = spec.sweep
            points = [{"value": v, **mean_std([r.last.get(sw.metric) for r in done
                                               if get_path(r.config, sw.param.path) == v])}
                      for v in sw.values]
            s.sweeps.append({"cell": cell.id, "param": sw.param.name, "metric": sw.metric,
                             "points": points})
    return s

"""The validated spec: :class:`StudySpec` and its phase settings, and what it derives from
its cells (phase configs, experiment names, trial counts, ``study.json``, the dry-run text)."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..phases import EVALUATION, SEARCH, SWEEP
from ..storage import join as join_path
from .cells import Cell
from .params import Param, param_applies, set_path


@dataclass
class SearchSpec:
    trials: int
    metric: str = "val_acc"
    mode: str = "max"
    seed: int = 0
    n_startup_trials: Optional[int] = None
    val_fraction: float = 0.1
    methods: Tuple[str, ...] = ()
    params: Dict[str, Param] = field(default_factory=dict)
    fixed: Dict[str, Any] = field(default_factory=dict)
    max_concurrent: Optional[int] = None

    @property
    def startup_trials(self) -> int:
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return max(1, min(10, self.trials // 2))


def seed_groups(seeds: List[int], fuse: bool) -> List[List[int]]:
    """The seeds of each trial: all in one fused trial (:mod:`lci.fused`), or one per trial."""
    return [list(seeds)] if fuse and len(seeds) > 1 else [[s] for s in seeds]


@dataclass
class EvalSpec:
    seeds: List[int]
    metric: str = "test_acc"
    fixed: Dict[str, Any] = field(default_factory=dict)
    methods: Tuple[str, ...] = ()
    fuse_seeds: bool = False

    def seed_groups(self) -> List[List[int]]:
        return seed_groups(self.seeds, self.fuse_seeds)


@dataclass
class SweepSpec:
    param: Param                      # kind "categorical": the list of values
    seeds: List[int]
    methods: Tuple[str, ...] = ()
    noise: Tuple[str, ...] = ()
    robust_losses: Tuple[str, ...] = ()
    datasets: Tuple[str, ...] = ()
    fixed: Dict[str, Any] = field(default_factory=dict)
    metric: str = "test_acc"
    fuse_seeds: bool = False

    @property
    def values(self) -> List[float]:
        return list(self.param.choices)

    def seed_groups(self) -> List[List[int]]:
        return seed_groups(self.seeds, self.fuse_seeds)


@dataclass
class SchedulerSpec:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 3
    max_t: Optional[int] = None


@dataclass
class StudySpec:
    name: str
    fixed: Dict[str, Any]
    datasets: List[str]
    noise: List[str]
    methods: List[str]
    robust_losses: List[str]
    overrides: List[Dict[str, Any]]
    search: Optional[SearchSpec]
    evaluation: EvalSpec
    sweep: Optional[SweepSpec]
    scheduler: Optional[SchedulerSpec]
    cpu: float = 1.0
    gpu: float = 0.0
    max_concurrent: Optional[int] = None
    max_failures: int = 1
    keep_checkpoints: int = 2
    storage: str = "./results"
    optuna_storage: str = "sqlite"
    tracking: Dict[str, Any] = field(default_factory=dict)   # study.tracking; not compared on resume
    description: str = ""
    source: Optional[str] = None      # the YAML file, if any
    raw: Dict[str, Any] = field(default_factory=dict)  # the spec as written
    cells: List[Cell] = field(default_factory=list)

    # ------------------------------------------------------------------------- locations
    @property
    def study_dir(self) -> str:
        return join_path(self.storage, self.name)

    # ------------------------------------------------------------------------- phases
    def search_cells(self) -> List[Cell]:
        return [c for c in self.cells if c.searched] if self.search else []

    def eval_cells(self) -> List[Cell]:
        ms = self.evaluation.methods
        return [c for c in self.cells if not ms or c.method in ms]

    def sweep_cells(self) -> List[Cell]:
        sw = self.sweep
        if sw is None:
            return []
        out = []
        for c in self.cells:
            if sw.methods and c.method not in sw.methods:
                continue
            if sw.noise and c.noise not in sw.noise:
                continue
            if sw.datasets and c.dataset not in sw.datasets:
                continue
            if sw.robust_losses and c.is_lci and c.robust_loss not in sw.robust_losses:
                continue
            if param_applies(sw.param.name, c.method, c.robust_loss):
                out.append(c)
        return out

    def experiment_name(self, cell: Cell, phase: str) -> str:
        if phase == SEARCH:
            return f"{cell.id}__search"
        if phase == EVALUATION:
            return f"{cell.id}__eval"
        return f"sweep_{self.sweep.param.name}__{cell.id}"

    def phase_config(self, cell: Cell, phase: str) -> Dict[str, Any]:
        """The TrainConfig keys of a trial of this cell and phase, before searched/best
        parameters and the seed (which the runner adds)."""
        cfg = copy.deepcopy(cell.base)
        if phase == SEARCH:
            cfg.update(copy.deepcopy(self.search.fixed))
            cfg["val_fraction"] = self.search.val_fraction
            for p in cell.fixed_params:
                set_path(cfg, p.path, p.value)
        elif phase == EVALUATION:
            cfg.update(copy.deepcopy(self.evaluation.fixed))
            cfg["val_fraction"] = 0.0
        else:
            cfg.update(copy.deepcopy(self.sweep.fixed))
            cfg["val_fraction"] = 0.0
        return cfg

    def phase_trials(self, phase: str) -> int:
        """The Tune trials of one cell's experiment of ``phase`` (the one place they are
        counted: the graph, the searcher's plans and :meth:`trial_counts` read it). A fused
        trial trains several seeds, and counts once."""
        if phase == SEARCH:
            return self.search.trials if self.search else 0
        if phase == EVALUATION:
            return len(self.evaluation.seed_groups())
        return len(self.sweep.values) * len(self.sweep.seed_groups()) if self.sweep else 0

    def trial_counts(self) -> Dict[str, int]:
        s = len(self.search_cells()) * self.phase_trials(SEARCH)
        e = len(self.eval_cells()) * self.phase_trials(EVALUATION)
        w = len(self.sweep_cells()) * self.phase_trials(SWEEP)
        return {SEARCH: s, EVALUATION: e, SWEEP: w, "total": s + e + w}

    def search_param_names(self) -> List[str]:
        names: List[str] = []
        for c in self.search_cells():
            names += [p.name for p in c.search_params if p.name not in names]
        return names

    def to_json(self) -> Dict[str, Any]:
        """``study.json``: what analysis/ reads (name, seeds, metric, cells, search_params)
        plus the whole spec as written."""
        sw = self.sweep
        return {
            "name": self.name,
            "description": self.description,
            "seeds": len(self.evaluation.seeds),
            "seed_values": list(self.evaluation.seeds),
            "metric": self.evaluation.metric,
            "search_metric": self.search.metric if self.search else None,
            "mode": self.search.mode if self.search else "max",
            "dataset": self.datasets[0] if len(self.datasets) == 1 else list(self.datasets),
            "datasets": list(self.datasets),
            "cells": [c.to_dict() for c in self.cells],
            "search_params": self.search_param_names(),
            "search": ({"trials": self.search.trials, "seed": self.search.seed,
                        "val_fraction": self.search.val_fraction,
                        "methods": list(self.search.methods),
                        "params": {k: p.to_dict() for k, p in self.search.params.items()}}
                       if self.search else None),
            "sweep": ({"param": sw.param.name, "values": sw.values, "seeds": len(sw.seeds),
                       "seed_values": list(sw.seeds), "cells": [c.id for c in self.sweep_cells()]}
                      if sw else None),
            "scheduler": dataclasses.asdict(self.scheduler) if self.scheduler else None,
            "experiments": self.experiment_names(),
            "trial_counts": self.trial_counts(),
            # None unless a phase fuses (the value of study.json files written before fusing)
            "fuse_seeds": ({"evaluation": self.evaluation.fuse_seeds,
                            "sweep": bool(sw and sw.fuse_seeds)}
                           if self.evaluation.fuse_seeds or (sw and sw.fuse_seeds) else None),
            "spec": self.raw,
        }

    def experiment_names(self) -> List[str]:
        names = [self.experiment_name(c, SEARCH) for c in self.search_cells()]
        names += [self.experiment_name(c, EVALUATION) for c in self.eval_cells()]
        names += [self.experiment_name(c, SWEEP) for c in self.sweep_cells()]
        return names

    def describe(self) -> str:
        """The dry-run text: cells, searched parameters and trial counts."""
        lines = [f"study {self.name!r}: {len(self.cells)} cells -> {self.study_dir}"]
        if self.description:
            lines.append(f"  {self.description.strip()}")
        ds = ", ".join(self.datasets)
        lines.append(f"  dataset {ds}; resources per trial: cpu={self.cpu:g} gpu={self.gpu:g}; "
                     f"max_concurrent={self.max_concurrent or 'auto'}")
        w = max([len(c.id) for c in self.cells] + [4])
        n_eval, n_seeds = set(c.id for c in self.eval_cells()), len(self.evaluation.seeds)
        sweep_ids = set(c.id for c in self.sweep_cells())
        lines.append(f"  {'cell':<{w}}  {'search':>6}  {'eval':>4}  {'sweep':>5}  searched parameters")
        for c in self.cells:
            s = self.search.trials if (self.search and c.searched) else 0
            e = n_seeds if c.id in n_eval else 0
            sw = len(self.sweep.values) * len(self.sweep.seeds) if c.id in sweep_ids else 0
            params = ", ".join(p.describe() for p in c.search_params) if s else "-"
            if s and c.fixed_params:
                params += "; fixed " + ", ".join(p.describe() for p in c.fixed_params)
            lines.append(f"  {c.id:<{w}}  {s:>6}  {e:>4}  {sw:>5}  {params}")
        t = self.trial_counts()
        lines.append(f"  trials: search {t[SEARCH]}, evaluation {t[EVALUATION]}, "
                     f"sweep {t[SWEEP]}, total {t['total']}")
        if self.search:
            lines.append(f"  search: {self.search.metric} ({self.search.mode}) on a "
                         f"{self.search.val_fraction:g} noisy validation split, TPE seed "
                         f"{self.search.seed}, {self.search.trials} trials per searched cell"
                         + (f"; ASHA grace {self.scheduler.grace_period}, reduction "
                            f"{self.scheduler.reduction_factor:g}" if self.scheduler else ""))
        lines.append(f"  evaluation: {self.evaluation.metric} over seeds {self.evaluation.seeds}")
        if self.sweep:
            lines.append(f"  sweep: {self.sweep.param.name} over {self.sweep.values} x seeds "
                         f"{self.sweep.seeds}")
        return "\n".join(lines)

"""Study specs: a YAML file -> a validated :class:`StudySpec` -> cells, phases and trial configs.

A study is a set of **cells** (each combination of a noise setting, a method and, for the lci
methods, a robust loss) and up to three **phases** per cell, each one Tune experiment folder
under ``<storage>/<name>/``:

- ``<cell>__search``: an Optuna (seeded TPE) search of the cell's parameters on a noisy
  validation split (``val_fraction > 0``; the metric is never a test-set metric);
- ``<cell>__eval``: the best configuration (or the fixed one when the cell is not searched)
  retrained on the full training set with N seeds, reporting ``test_acc``;
- ``sweep_<param>__<cell>``: one parameter over a list of values x seeds (Figure 4), other
  parameters at the best / fixed values.

This module imports neither Ray nor Optuna, so ``lci sweep --dry-run`` is quick. The YAML
format is documented in the README ("Writing a study spec") and in :data:`SPEC_KEYS`.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from lci.config import (BASELINE_METHODS, LCI_METHODS, METHODS, REGISTERED_DATASETS as REGISTERED,
                        ROBUST_LOSSES, TrainConfig, parse_noise)
from lci.errors import ConfigError, LCIError, allowed
from lci.losses import LOSS_DEFAULTS, LOSS_SEARCH_SPACE

from .storage import join as join_path


class SpecError(ConfigError):
    """A study spec that is not valid; the message names the key and what is allowed."""


# ----------------------------------------------------------------------------------- keys
#: Top-level keys of a spec, with a one-line meaning each (printed in errors and the README).
SPEC_KEYS: Dict[str, str] = {
    "name": "study name: the folder <storage>/<name> (default: the file's stem)",
    "description": "free text",
    "fixed": "TrainConfig settings shared by every trial",
    "datasets": "optional list of data sets (an axis of the cells; else fixed.dataset)",
    "noise": "list of noise settings, e.g. ['sym:0.8', 'asym:0.4'] (one axis of the cells)",
    "methods": "list of methods (lci, lci-two-models, lci-single and the baselines)",
    "robust_losses": "robust losses of the lci methods (baselines ignore this axis)",
    "overrides": "list of {when: {dataset/method/noise/robust_loss/cell: value(s)}, set: {...}}",
    "search": "the Optuna search phase (omit: no search, cells use their fixed settings)",
    "evaluation": "the evaluation phase: best config x seeds on the full training set",
    "sweep": "optional one-parameter sweep x seeds (Figure 4)",
    "scheduler": "optional ASHA early stopping of the search phase",
    "resources": "per-trial resources {cpu, gpu} (fractions allowed)",
    "max_concurrent": "most trials running at once (default: as many as resources allow)",
    "max_failures": "retries of a failed trial, from its last checkpoint (default 1)",
    "keep_checkpoints": "checkpoints kept per trial (default 2; the last one is the run folder)",
    "storage": "where experiments go: absolute path, relative (made absolute) or s3://...",
    "optuna_storage": "'sqlite' (<study>/optuna.db, default), 'none', or a database URL",
}
SEARCH_KEYS: Dict[str, str] = {
    "trials": "Optuna trials per searched cell",
    "metric": "the searched metric (default val_acc; never a test-set metric)",
    "mode": "max or min (default max)",
    "seed": "seed of the TPE sampler (default 0)",
    "n_startup_trials": "random trials before TPE models the space (default min(10, trials//2))",
    "val_fraction": "noisy validation split held out during the search (default 0.1)",
    "methods": "methods whose cells are searched (default: the lci methods of the study)",
    "params": "search space: name -> [low, high] | {low, high, log} | {values: [...]} | value",
    "default_space": "start from the default space of method.md section 1 (default true)",
    "fixed": "settings for the search phase only (e.g. fewer epochs)",
    "max_concurrent": "concurrent trials of a search (default: the study's max_concurrent)",
}
EVAL_KEYS: Dict[str, str] = {
    "seeds": "number of seeds (0..N-1) or a list of seeds (default 5)",
    "metric": "headline metric (default test_acc)",
    "fixed": "settings for the evaluation phase only",
    "methods": "methods whose cells are evaluated (default: all)",
}
SWEEP_KEYS: Dict[str, str] = {
    "param": "the swept parameter, e.g. m (or gce.q)",
    "values": "list of values, or {start, stop, num} for an evenly spaced list",
    "seeds": "number of seeds or a list (default: the evaluation's)",
    "methods": "methods swept (default: those the parameter applies to)",
    "noise": "noise settings swept (default: all of the study's)",
    "datasets": "data sets swept (default: all of the study's)",
    "robust_losses": "robust losses swept (default: all)",
    "fixed": "settings for the sweep only",
    "metric": "headline metric (default test_acc)",
}
SCHEDULER_KEYS: Dict[str, str] = {
    "type": "asha",
    "grace_period": "epochs every trial runs before it may be stopped (default 1)",
    "reduction_factor": "keep the top 1/reduction_factor at each rung (default 3)",
    "max_t": "epochs of a full trial (default: the search's epochs)",
}
RESOURCE_KEYS = {"cpu": "CPUs per trial (default 1)", "gpu": "GPUs per trial (default 0)"}
OVERRIDE_KEYS = {"when": "conditions", "set": "settings"}
WHEN_KEYS = ("dataset", "method", "noise", "robust_loss", "cell")

#: Cell-defining keys: given by the axes, not by ``fixed``/``overrides``/phase settings.
AXIS_KEYS = ("noise", "method", "robust_loss")
#: Keys the phases set themselves.
PHASE_KEYS = ("val_fraction",)

#: Default search space (method.md section 1): name -> (low, high, log).
DEFAULT_SPACE: Dict[str, Tuple[float, float, bool]] = {
    "m": (-5.0, 5.0, False),
    "lam": (1e-5, 1e-1, True),
    "rho": (0.0, 5.0, False),
    "alpha": (0.1, 10.0, True),
}
#: Which lci-only parameters each method uses (lci-two-models has no JSD term, lci-single no
#: second model, hence no λ penalty and no ρ).
LCI_PARAMS: Dict[str, Tuple[str, ...]] = {
    "lci": ("m", "lam", "rho", "alpha", "slope", "mu_momentum", "correction_start",
            "correction_weight"),
    "lci-two-models": ("m", "lam", "alpha", "slope", "mu_momentum"),
    "lci-single": ("m", "alpha", "slope", "mu_momentum"),
}
LCI_ONLY_PARAMS = tuple(sorted(set(p for ps in LCI_PARAMS.values() for p in ps)))
#: Other float fields a search or sweep may vary for every method.
GENERAL_PARAMS = ("lr", "momentum", "weight_decay")
PHASES = ("search", "evaluation", "sweep")


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """One searched or fixed parameter. ``name`` is the spec's (``m``, ``gce.q``);
    ``path`` the config path (``("m",)``, ``("robust_loss_params", "q")``)."""

    name: str
    kind: str                         # "float", "int", "categorical" or "fixed"
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    value: Any = None

    @property
    def path(self) -> Tuple[str, ...]:
        return param_path(self.name)

    @property
    def optuna_name(self) -> str:
        # "/" is the separator OptunaSearch unflattens on: robust_loss_params/q -> nested dict
        return "/".join(self.path)

    @property
    def loss(self) -> Optional[str]:
        return self.name.split(".", 1)[0] if "." in self.name else None

    def describe(self) -> str:
        if self.kind == "fixed":
            v = f"{self.value:g}" if isinstance(self.value, float) else repr(self.value)
            return f"{self.name}={v}"
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        return f"{self.name} in [{self.low:g}, {self.high:g}]" + (" (log)" if self.log else "")

    def to_dict(self) -> Dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


def param_path(name: str) -> Tuple[str, ...]:
    if "." in name:
        loss, p = name.split(".", 1)
        return ("robust_loss_params", p)
    return (name,)


def param_applies(name: str, method: str, loss: str) -> bool:
    """Whether parameter ``name`` changes a run of ``method`` whose loss is ``loss`` (the
    robust loss for lci methods, the method itself for baselines)."""
    if "." in name:
        return name.split(".", 1)[0] == loss
    if name in LCI_ONLY_PARAMS:
        return name in LCI_PARAMS.get(method, ())
    return True


def _allowed_param_names() -> List[str]:
    losses = [f"{l}.{p}" for l in sorted(LOSS_DEFAULTS) for p in LOSS_DEFAULTS[l]]
    return list(LCI_ONLY_PARAMS) + list(GENERAL_PARAMS) + losses


def _check_param_name(name: str, where: str) -> None:
    if "." in name:
        loss, p = name.split(".", 1)
        if loss not in LOSS_DEFAULTS:
            raise SpecError(f"{where}: unknown loss {loss!r} in parameter {name!r}; allowed "
                            f"losses: {allowed(sorted(LOSS_DEFAULTS))}")
        if p not in LOSS_DEFAULTS[loss]:
            ok = allowed(LOSS_DEFAULTS[loss]) if LOSS_DEFAULTS[loss] else "none (it has no parameters)"
            raise SpecError(f"{where}: loss {loss!r} has no parameter {p!r}; allowed: {ok}")
        return
    if name not in LCI_ONLY_PARAMS and name not in GENERAL_PARAMS:
        raise SpecError(f"{where}: {name!r} cannot be searched or swept; allowed: "
                        f"{', '.join(_allowed_param_names())}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)  # YAML reads 1e-5 as a string
        except (TypeError, ValueError):
            raise SpecError(f"{where}={v!r} must be a number") from None
    if not math.isfinite(v):
        raise SpecError(f"{where}={v!r} must be a finite number")
    return float(v)


def parse_param(name: str, value: Any, where: str) -> Param:
    """``[lo, hi]`` | ``{low, high, log, step}`` | ``{values: [...]}`` | a constant."""
    _check_param_name(name, where)
    w = f"{where}.{name}"
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(f"{w}={list(value)!r}: a range is [low, high]; for a list of values "
                            "write {values: [...]}")
        value = {"low": value[0], "high": value[1]}
    if isinstance(value, Mapping):
        keys = set(value)
        if "values" in keys:
            extra = keys - {"values"}
            if extra:
                raise SpecError(f"{w}: unknown key {sorted(extra)[0]!r} beside 'values'")
            vals = value["values"]
            if not isinstance(vals, (list, tuple)) or not vals:
                raise SpecError(f"{w}.values must be a non-empty list")
            return Param(name, "categorical", choices=tuple(_number(x, w) for x in vals))
        ok = {"low", "high", "log", "step", "int"}
        extra = keys - ok
        if extra:
            raise SpecError(f"{w}: unknown key {sorted(extra)[0]!r}; allowed: "
                            f"{allowed(sorted(ok))} or 'values'")
        if "low" not in keys or "high" not in keys:
            raise SpecError(f"{w} needs both 'low' and 'high'")
        low, high = _number(value["low"], f"{w}.low"), _number(value["high"], f"{w}.high")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise SpecError(f"{w}.log={log!r} must be true or false")
        if not low < high:
            raise SpecError(f"{w}: low={low:g} must be below high={high:g}")
        if log and low <= 0:
            raise SpecError(f"{w}: a log range needs low > 0, got {low:g}")
        step = _number(value["step"], f"{w}.step") if value.get("step") is not None else None
        if step is not None and log:
            raise SpecError(f"{w}: step and log cannot be combined")
        return Param(name, "float", low=low, high=high, log=log, step=step)
    if value is None:
        raise SpecError(f"{w} is empty; give a range [low, high], {{values: [...]}} or a value")
    return Param(name, "fixed", value=_number(value, w))


def default_params(loss_names: Sequence[str]) -> Dict[str, Param]:
    """The default space: m, lam, rho, alpha and each robust loss's own parameters."""
    out = {n: Param(n, "float", low=lo, high=hi, log=lg) for n, (lo, hi, lg) in DEFAULT_SPACE.items()}
    for loss in loss_names:
        for p, (lo, hi, lg) in LOSS_SEARCH_SPACE.get(loss, {}).items():
            out[f"{loss}.{p}"] = Param(f"{loss}.{p}", "float", low=lo, high=hi, log=lg)
    return out


# ---------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    id: str
    dataset: str
    method: str
    noise: str
    robust_loss: str                  # the robust loss of lci methods, the method for baselines
    base: Dict[str, Any]              # TrainConfig keys (fixed + overrides + axes)
    search_params: List[Param] = field(default_factory=list)  # searched (not fixed) ones
    fixed_params: List[Param] = field(default_factory=list)   # search params fixed by the spec

    @property
    def searched(self) -> bool:
        return bool(self.search_params)

    @property
    def is_lci(self) -> bool:
        return self.method in LCI_METHODS

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "method": self.method, "noise": self.noise,
                "robust_loss": self.robust_loss, "searched": self.searched,
                "search_params": [p.name for p in self.search_params],
                "fixed_params": {p.name: p.value for p in self.fixed_params}}


def noise_tag(noise: str) -> str:
    kind, rate = parse_noise(noise)
    if kind in ("none", "matrix"):
        return kind
    return f"{kind}{rate:g}"


def dataset_tag(dataset: str) -> str:
    """``cifar10`` -> ``cifar10``; ``/data/my_set.npz`` -> ``my_set``."""
    base = os.path.splitext(os.path.basename(dataset.rstrip("/")))[0]
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in base) or "data"


def cell_id(method: str, robust_loss: str, noise: str, dataset: Optional[str] = None) -> str:
    """``lci_gce_sym0.8``, ``ce_asym0.4``; with a datasets axis ``cifar10_lci_gce_sym0.8``."""
    prefix = f"{dataset_tag(dataset)}_" if dataset else ""
    if method in LCI_METHODS:
        return f"{prefix}{method}_{robust_loss}_{noise_tag(noise)}"
    return f"{prefix}{method}_{noise_tag(noise)}"


# ----------------------------------------------------------------------------------- spec
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


@dataclass
class EvalSpec:
    seeds: List[int]
    metric: str = "test_acc"
    fixed: Dict[str, Any] = field(default_factory=dict)
    methods: Tuple[str, ...] = ()


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

    @property
    def values(self) -> List[float]:
        return list(self.param.choices)


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
        if phase == "search":
            return f"{cell.id}__search"
        if phase == "evaluation":
            return f"{cell.id}__eval"
        return f"sweep_{self.sweep.param.name}__{cell.id}"

    def phase_config(self, cell: Cell, phase: str) -> Dict[str, Any]:
        """The TrainConfig keys of a trial of this cell and phase, before searched/best
        parameters and the seed (which the runner adds)."""
        cfg = copy.deepcopy(cell.base)
        if phase == "search":
            cfg.update(copy.deepcopy(self.search.fixed))
            cfg["val_fraction"] = self.search.val_fraction
            for p in cell.fixed_params:
                _set_path(cfg, p.path, p.value)
        elif phase == "evaluation":
            cfg.update(copy.deepcopy(self.evaluation.fixed))
            cfg["val_fraction"] = 0.0
        else:
            cfg.update(copy.deepcopy(self.sweep.fixed))
            cfg["val_fraction"] = 0.0
        return cfg

    def trial_counts(self) -> Dict[str, int]:
        s = len(self.search_cells()) * (self.search.trials if self.search else 0)
        e = len(self.eval_cells()) * len(self.evaluation.seeds)
        w = (len(self.sweep_cells()) * len(self.sweep.values) * len(self.sweep.seeds)
             if self.sweep else 0)
        return {"search": s, "evaluation": e, "sweep": w, "total": s + e + w}

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
            "spec": self.raw,
        }

    def experiment_names(self) -> List[str]:
        names = [self.experiment_name(c, "search") for c in self.search_cells()]
        names += [self.experiment_name(c, "evaluation") for c in self.eval_cells()]
        names += [self.experiment_name(c, "sweep") for c in self.sweep_cells()]
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
        lines.append(f"  trials: search {t['search']}, evaluation {t['evaluation']}, "
                     f"sweep {t['sweep']}, total {t['total']}")
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


# ----------------------------------------------------------------------------- loading
def load_spec(source: Any, *, storage: Optional[str] = None, name: Optional[str] = None) -> StudySpec:
    """Read and validate a spec: a YAML path, a preset name (``demo``) or a mapping."""
    path = None
    if isinstance(source, Mapping):
        raw = copy.deepcopy(dict(source))
    else:
        path = resolve_spec_path(str(source))
        import yaml

        with open(path) as fh:
            try:
                raw = yaml.safe_load(fh)
            except yaml.YAMLError as e:
                raise SpecError(f"study spec {path!r} is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise SpecError(f"study spec {path!r} must be a mapping of keys "
                            f"({', '.join(SPEC_KEYS)})")
    if name is not None:
        raw["name"] = name
    if storage is not None:
        raw["storage"] = storage
    where = os.path.basename(path) if path else "study spec"
    try:
        return _build(raw, path)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None


def presets_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def preset_names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(presets_dir()) if f.endswith(".yaml"))


def resolve_spec_path(s: str) -> str:
    if os.path.isfile(s):
        return os.path.abspath(s)
    cand = os.path.join(presets_dir(), s if s.endswith(".yaml") else s + ".yaml")
    if os.sep not in s and os.path.isfile(cand):
        return cand
    raise SpecError(f"study spec {s!r} is neither a file nor a preset; presets: "
                    f"{', '.join(preset_names())}")


def _unknown(d: Mapping[str, Any], keys, where: str) -> None:
    for k in d:
        if k not in keys:
            raise SpecError(f"unknown key {k!r} in {where}; allowed: {', '.join(keys)}")


def _mapping(v: Any, where: str) -> Dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise SpecError(f"{where} must be a mapping, got {type(v).__name__} {v!r}")
    return dict(v)


def _str_list(v: Any, where: str, options: Optional[Sequence[str]] = None) -> List[str]:
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


def _int(v: Any, where: str, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise SpecError(f"{where}={v!r} must be an integer >= {low}")
    return v


def _seeds(v: Any, where: str) -> List[int]:
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


def _settings(v: Any, where: str, *, forbid=AXIS_KEYS + PHASE_KEYS) -> Dict[str, Any]:
    d = _mapping(v, where)
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


def _abs_dataset(ds: Any) -> Any:
    if isinstance(ds, str) and ds not in REGISTERED and not os.path.isabs(ds) and "://" not in ds:
        return os.path.abspath(ds)
    return ds


def _absolute_paths(cfg: Dict[str, Any]) -> None:
    """Trials run elsewhere (a worker's folder, another node): make relative paths absolute,
    relative to where ``lci sweep`` runs."""
    if isinstance(cfg.get("data_dir"), str) and "://" not in cfg["data_dir"]:
        cfg["data_dir"] = os.path.abspath(cfg["data_dir"])
    if "dataset" in cfg:
        cfg["dataset"] = _abs_dataset(cfg["dataset"])
    pre = cfg.get("pretrained")
    if isinstance(pre, str) and pre and not os.path.isabs(pre):
        cfg["pretrained"] = os.path.abspath(pre)


def absolute_storage(s: str) -> str:
    if not isinstance(s, str) or not s:
        raise SpecError(f"storage={s!r} must be a path or a URI like s3://bucket/folder")
    if "://" in s:
        return s.rstrip("/")
    return os.path.abspath(os.path.expanduser(s))


def _build(raw: Dict[str, Any], path: Optional[str]) -> StudySpec:
    _unknown(raw, list(SPEC_KEYS), "the spec")
    name = raw.get("name") or (os.path.splitext(os.path.basename(path))[0] if path else None)
    if not isinstance(name, str) or not name:
        raise SpecError("'name' is missing (the study's folder name)")
    if "/" in name or "__" in name or name.startswith("."):
        raise SpecError(f"name={name!r} must be a plain folder name (no '/', no '__')")

    fixed = _settings(raw.get("fixed"), "'fixed'", forbid=PHASE_KEYS)
    try:  # early, so that a bad value is reported against 'fixed' (loss params: per cell)
        TrainConfig.from_dict({k: v for k, v in fixed.items()
                               if k not in AXIS_KEYS + ("robust_loss_params",)})
    except LCIError as e:
        raise SpecError(f"fixed: {e}") from None
    # axes; `fixed` may give a single noise/method/robust_loss instead of a list
    if raw.get("datasets") is not None and "dataset" in fixed:
        raise SpecError("give the data set either as 'datasets' (an axis) or as fixed.dataset, "
                        "not both")
    datasets = _str_list(raw.get("datasets"), "'datasets'")
    dataset_axis = bool(datasets)
    datasets = ([_abs_dataset(d) for d in datasets]
                or [_abs_dataset(fixed.get("dataset", TrainConfig().dataset))])
    if dataset_axis and len({dataset_tag(d) for d in datasets}) != len(datasets):
        raise SpecError(f"'datasets': two data sets share a name: {datasets}")
    noise = _str_list(raw.get("noise"), "'noise'") or [fixed.get("noise", TrainConfig().noise)]
    for n in noise:
        try:
            parse_noise(n)
        except ConfigError as e:
            raise SpecError(f"'noise': {e}") from None
    methods = _str_list(raw.get("methods"), "'methods'", METHODS) or [fixed.get("method", "lci")]
    if raw.get("methods") is None and methods[0] not in METHODS:
        raise SpecError(f"fixed.method: unknown method {methods[0]!r}; allowed: {allowed(METHODS)}")
    losses = (_str_list(raw.get("robust_losses"), "'robust_losses'", ROBUST_LOSSES)
              or [fixed.get("robust_loss", "gce")])
    for k in AXIS_KEYS + ("dataset",):
        fixed.pop(k, None)
    _absolute_paths(fixed)

    # overrides
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list):
        raise SpecError("'overrides' must be a list of {when: {...}, set: {...}}")
    ovs = []
    for i, o in enumerate(overrides):
        w = f"overrides[{i}]"
        o = _mapping(o, w)
        _unknown(o, list(OVERRIDE_KEYS), w)
        when = _mapping(o.get("when"), f"{w}.when")
        _unknown(when, list(WHEN_KEYS), f"{w}.when")
        when = {k: ([v] if isinstance(v, str) else list(v)) for k, v in when.items()}
        ovs.append({"when": when, "set": _settings(o.get("set"), f"{w}.set")})
        _absolute_paths(ovs[-1]["set"])

    # resources and run options
    res = _mapping(raw.get("resources"), "'resources'")
    _unknown(res, list(RESOURCE_KEYS), "'resources'")
    cpu = _number(res.get("cpu", 1), "resources.cpu")
    gpu = _number(res.get("gpu", 0), "resources.gpu")
    if cpu <= 0 or gpu < 0:
        raise SpecError(f"resources: cpu={cpu:g} must be > 0 and gpu={gpu:g} >= 0")
    if gpu > 1 and not float(gpu).is_integer():
        raise SpecError(f"resources.gpu={gpu:g}: more than one GPU must be a whole number")
    max_conc = raw.get("max_concurrent")
    if max_conc is not None:
        max_conc = _int(max_conc, "max_concurrent", 1)

    # phases
    search = _search(raw.get("search"), methods, losses) if raw.get("search") is not None else None
    ev = _mapping(raw.get("evaluation"), "'evaluation'")
    _unknown(ev, list(EVAL_KEYS), "'evaluation'")
    evaluation = EvalSpec(seeds=_seeds(ev.get("seeds", 5), "evaluation.seeds"),
                          metric=_metric(ev.get("metric", "test_acc"), "evaluation.metric"),
                          fixed=_settings(ev.get("fixed"), "evaluation.fixed"),
                          methods=tuple(_str_list(ev.get("methods"), "evaluation.methods", methods)))
    sweep = _sweep(raw.get("sweep"), evaluation, methods, noise, losses, datasets) \
        if raw.get("sweep") is not None else None
    sched = _scheduler(raw.get("scheduler")) if raw.get("scheduler") is not None else None
    if sched is not None and search is None:
        raise SpecError("'scheduler' early-stops the search phase, but there is no 'search'")

    ostore = raw.get("optuna_storage", "sqlite")
    if ostore is None or ostore is False:
        ostore = "none"
    if not isinstance(ostore, str) or not (ostore in ("sqlite", "none") or "://" in ostore):
        raise SpecError(f"optuna_storage={ostore!r}; allowed: 'sqlite', 'none' or a database URL "
                        "like 'postgresql://host/db'")
    desc = raw.get("description", "")
    spec = StudySpec(
        name=name, fixed=fixed, datasets=datasets, noise=noise, methods=methods,
        robust_losses=losses,
        overrides=ovs, search=search, evaluation=evaluation, sweep=sweep, scheduler=sched,
        cpu=cpu, gpu=gpu, max_concurrent=max_conc,
        max_failures=_int(raw.get("max_failures", 1), "max_failures"),
        keep_checkpoints=_int(raw.get("keep_checkpoints", 2), "keep_checkpoints", 1),
        storage=absolute_storage(raw.get("storage", "./results")),
        optuna_storage=ostore, description=str(desc or ""), source=path, raw=raw)
    spec.cells = _cells(spec, dataset_axis)
    _validate_configs(spec)
    return spec


def _metric(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise SpecError(f"{where}={v!r} must be a metric name such as 'val_acc' or 'test_acc'")
    return v


def _search(v: Any, methods: List[str], losses: List[str]) -> SearchSpec:
    d = _mapping(v, "'search'")
    _unknown(d, list(SEARCH_KEYS), "'search'")
    if "trials" not in d:
        raise SpecError("search.trials is missing (Optuna trials per searched cell)")
    metric = _metric(d.get("metric", "val_acc"), "search.metric")
    if "test" in metric:
        raise SpecError(f"search.metric={metric!r}: a search must never select on the test set; "
                        "use 'val_acc' (accuracy on the noisy validation split)")
    mode = d.get("mode", "max")
    if mode not in ("max", "min"):
        raise SpecError(f"search.mode={mode!r}; allowed: 'max', 'min'")
    vf = _number(d.get("val_fraction", 0.1), "search.val_fraction")
    if not 0.0 < vf < 1.0:
        raise SpecError(f"search.val_fraction={vf:g} must be in (0, 1): the search selects on "
                        "a held-out noisy validation split, never on the test set")
    s_methods = _str_list(d.get("methods"), "search.methods", methods) or \
        [m for m in methods if m in LCI_METHODS]
    default_space = d.get("default_space", True)
    if not isinstance(default_space, bool):
        raise SpecError(f"search.default_space={default_space!r} must be true or false")
    params_in = _mapping(d.get("params"), "search.params")
    base_losses = sorted(set(losses) | {m for m in s_methods if m in BASELINE_METHODS})
    params = default_params(base_losses) if default_space else {}
    for k, val in params_in.items():
        params[str(k)] = parse_param(str(k), val, "search.params")
    if not params:
        raise SpecError("search.params is empty and default_space is false: nothing to search")
    nst = d.get("n_startup_trials")
    mc = d.get("max_concurrent")
    return SearchSpec(trials=_int(d["trials"], "search.trials", 1), metric=metric, mode=mode,
                      seed=_int(d.get("seed", 0), "search.seed"),
                      n_startup_trials=None if nst is None else _int(nst, "search.n_startup_trials"),
                      val_fraction=vf, methods=tuple(s_methods), params=params,
                      fixed=_settings(d.get("fixed"), "search.fixed"),
                      max_concurrent=None if mc is None else _int(mc, "search.max_concurrent", 1))


def _sweep(v: Any, ev: EvalSpec, methods, noise, losses, datasets) -> SweepSpec:
    d = _mapping(v, "'sweep'")
    _unknown(d, list(SWEEP_KEYS), "'sweep'")
    name = d.get("param")
    if not isinstance(name, str):
        raise SpecError("sweep.param is missing (the swept parameter, e.g. m)")
    vals = d.get("values")
    if isinstance(vals, Mapping):
        _unknown(vals, ["start", "stop", "num"], "sweep.values")
        start = _number(vals.get("start"), "sweep.values.start")
        stop = _number(vals.get("stop"), "sweep.values.stop")
        num = _int(vals.get("num"), "sweep.values.num", 2)
        vals = [round(start + (stop - start) * i / (num - 1), 10) for i in range(num)]
    if not isinstance(vals, (list, tuple)) or not vals:
        raise SpecError("sweep.values must be a non-empty list (or {start, stop, num})")
    param = parse_param(name, {"values": list(vals)}, "sweep")
    return SweepSpec(param=param, seeds=_seeds(d.get("seeds", list(ev.seeds)), "sweep.seeds"),
                     methods=tuple(_str_list(d.get("methods"), "sweep.methods", methods)),
                     noise=tuple(_str_list(d.get("noise"), "sweep.noise", noise)),
                     robust_losses=tuple(_str_list(d.get("robust_losses"), "sweep.robust_losses",
                                                   losses)),
                     datasets=tuple(_abs_dataset(x) for x in
                                    _str_list(d.get("datasets"), "sweep.datasets", datasets)),
                     fixed=_settings(d.get("fixed"), "sweep.fixed"),
                     metric=_metric(d.get("metric", "test_acc"), "sweep.metric"))


def _scheduler(v: Any) -> SchedulerSpec:
    d = _mapping(v, "'scheduler'")
    _unknown(d, list(SCHEDULER_KEYS), "'scheduler'")
    t = d.get("type", "asha")
    if t != "asha":
        raise SpecError(f"scheduler.type={t!r}; allowed: 'asha'")
    rf = _number(d.get("reduction_factor", 3), "scheduler.reduction_factor")
    if rf <= 1:
        raise SpecError(f"scheduler.reduction_factor={rf:g} must be > 1")
    mt = d.get("max_t")
    return SchedulerSpec(type=t,
                         grace_period=_int(d.get("grace_period", 1), "scheduler.grace_period", 1),
                         reduction_factor=rf,
                         max_t=None if mt is None else _int(mt, "scheduler.max_t", 1))


def _matches(when: Mapping[str, List[str]], c: Cell) -> bool:
    attrs = {"method": c.method, "noise": c.noise, "robust_loss": c.robust_loss, "cell": c.id,
             "dataset": c.dataset}
    return all(attrs[k] in vals for k, vals in when.items())


def _cells(spec: StudySpec, dataset_axis: bool) -> List[Cell]:
    cells: List[Cell] = []
    seen = set()
    for dataset, noise, method in itertools.product(spec.datasets, spec.noise, spec.methods):
        # baselines have one loss, their own: one cell, not one per robust loss
        for loss in (spec.robust_losses if method in LCI_METHODS else [method]):
            cid = cell_id(method, loss, noise, dataset if dataset_axis else None)
            if cid in seen:
                continue
            seen.add(cid)
            base = dict(copy.deepcopy(spec.fixed), dataset=dataset, noise=noise,
                        method=method, robust_loss=loss)
            c = Cell(cid, dataset, method, noise, loss, base)
            for o in spec.overrides:
                if _matches(o["when"], c):
                    c.base.update(copy.deepcopy(o["set"]))
            if spec.search and method in spec.search.methods:
                for p in spec.search.params.values():
                    if param_applies(p.name, method, loss):
                        (c.fixed_params if p.kind == "fixed" else c.search_params).append(p)
            cells.append(c)
    return cells


def _set_path(d: Dict[str, Any], path: Tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise SpecError(f"cannot set {'.'.join(path)}: {k} is not a mapping")
    d[path[-1]] = value


def with_params(cfg: Dict[str, Any], params: Mapping[str, Any]) -> Dict[str, Any]:
    """``cfg`` with spec-named parameters (``m``, ``gce.q``) set at their config paths."""
    out = copy.deepcopy(cfg)
    for name, value in params.items():
        _set_path(out, param_path(name), value)
    return out


def _validate_configs(spec: StudySpec) -> None:
    """Every phase config of every cell must be a valid TrainConfig, and so must the corners
    of the search space and every sweep value."""
    def check(cfg: Dict[str, Any], where: str) -> None:
        try:
            TrainConfig.from_dict(cfg)
        except LCIError as e:
            raise SpecError(f"{where}: {e}") from None

    sweep_ids = {c.id for c in spec.sweep_cells()}
    for c in spec.cells:
        check(c.base, f"cell {c.id}")
        if c.searched and spec.search:
            base = spec.phase_config(c, "search")
            check(base, f"cell {c.id} (search)")
            for corner in ("low", "high"):
                vals = {p.name: (getattr(p, corner) if p.kind == "float" else
                                 (min(p.choices) if corner == "low" else max(p.choices)))
                        for p in c.search_params}
                check(with_params(base, vals), f"cell {c.id}: search.params at their {corner} ends")
        check(spec.phase_config(c, "evaluation"), f"cell {c.id} (evaluation)")
        if c.id in sweep_ids:
            base = spec.phase_config(c, "sweep")
            for v in spec.sweep.values:
                check(with_params(base, {spec.sweep.param.name: v}),
                      f"cell {c.id}: sweep {spec.sweep.param.name}={v:g}")
    if spec.sweep and not sweep_ids:
        raise SpecError(f"sweep.param {spec.sweep.param.name!r} applies to none of the cells "
                        "(lci parameters apply to lci methods, loss.param to that loss's cells)")
    if spec.search and not spec.search_cells():
        raise SpecError(f"search: no cell has a parameter to search (search.methods="
                        f"{list(spec.search.methods)}); remove 'search' or list methods/params")

"""Loading a spec: YAML file, preset name or mapping -> a validated :class:`StudySpec`.

:func:`load_spec` reads the source and :func:`build` checks it part by part (name, fixed
settings, axes, overrides, resources, phases), so that an error names the key it is about;
then it makes the cells and checks that every trial config they imply is a valid TrainConfig.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from lci.config import TrainConfig
from lci.errors import ConfigError, LCIError, allowed
from ..phases import EVALUATION, SEARCH, SWEEP
from lci.names import (BASELINE_METHODS, LCI_METHODS, METHODS, ROBUST_LOSSES,
                       dataset_tag, human_noise_datasets, human_noise_key, noise_applies,
                       parse_noise)

from .cells import build_cells
from .keys import (AXIS_KEYS, EVAL_KEYS, OVERRIDE_KEYS, PHASE_KEYS, RESOURCE_KEYS,
                   SCHEDULER_KEYS, SEARCH_KEYS, SPEC_KEYS, SWEEP_KEYS, WHEN_KEYS, SpecError)
from .model import EvalSpec, SchedulerSpec, SearchSpec, StudySpec, SweepSpec
from .params import default_params, parse_param, with_params
from .paths import absolute_dataset, absolute_paths, absolute_storage, resolve_spec_path
from .values import (check_keys, flag, integer, mapping, metric_name, number, seed_list,
                     settings, str_list)


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
        return build(raw, path)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None


class _Axes(NamedTuple):
    datasets: List[str]
    dataset_axis: bool                # True: 'datasets' lists them and cell ids carry the name
    noise: List[str]
    methods: List[str]
    robust_losses: List[str]


def build(raw: Dict[str, Any], path: Optional[str]) -> StudySpec:
    """Check ``raw`` (the spec as written) part by part and make its cells; the first bad
    value found is the error."""
    check_keys(raw, list(SPEC_KEYS), "the spec")
    name = _name(raw, path)
    fixed = _fixed(raw)
    axes = _axes(raw, fixed)
    for k in AXIS_KEYS + ("dataset",):  # the axes carry them from here on
        fixed.pop(k, None)
    absolute_paths(fixed)
    overrides = _overrides(raw)
    cpu, gpu = _resources(raw)
    max_conc = raw.get("max_concurrent")
    if max_conc is not None:
        max_conc = integer(max_conc, "max_concurrent", 1)
    search = (_search(raw["search"], axes.methods, axes.robust_losses)
              if raw.get("search") is not None else None)
    evaluation = _evaluation(raw, axes.methods)
    sweep = (_sweep(raw["sweep"], evaluation, axes.methods, axes.noise, axes.robust_losses,
                    axes.datasets) if raw.get("sweep") is not None else None)
    sched = _scheduler(raw["scheduler"]) if raw.get("scheduler") is not None else None
    if sched is not None and search is None:
        raise SpecError("'scheduler' early-stops the search phase, but there is no 'search'")
    ostore = _optuna_storage(raw)
    _budget(raw)
    spec = StudySpec(
        name=name, fixed=fixed, datasets=axes.datasets, noise=axes.noise, methods=axes.methods,
        robust_losses=axes.robust_losses, overrides=overrides, search=search,
        evaluation=evaluation, sweep=sweep, scheduler=sched, cpu=cpu, gpu=gpu,
        max_concurrent=max_conc,
        max_failures=integer(raw.get("max_failures", 1), "max_failures"),
        keep_checkpoints=integer(raw.get("keep_checkpoints", 2), "keep_checkpoints", 1),
        storage=absolute_storage(raw.get("storage", "./results")),
        optuna_storage=ostore, tracking=_tracking(raw), description=str(raw.get("description", "") or ""),
        source=path, raw=raw)
    spec.cells = build_cells(spec, axes.dataset_axis)
    _validate_configs(spec)
    return spec


def _name(raw: Mapping[str, Any], path: Optional[str]) -> str:
    name = raw.get("name") or (os.path.splitext(os.path.basename(path))[0] if path else None)
    if not isinstance(name, str) or not name:
        raise SpecError("'name' is missing (the study's folder name)")
    if "/" in name or "__" in name or name.startswith("."):
        raise SpecError(f"name={name!r} must be a plain folder name (no '/', no '__')")
    return name


def _fixed(raw: Mapping[str, Any]) -> Dict[str, Any]:
    fixed = settings(raw.get("fixed"), "'fixed'", forbid=PHASE_KEYS)
    try:  # early, so that a bad value is reported against 'fixed' (loss params: per cell)
        TrainConfig.from_dict({k: v for k, v in fixed.items()
                               if k not in AXIS_KEYS + ("robust_loss_params",)})
    except LCIError as e:
        raise SpecError(f"fixed: {e}") from None
    return fixed


def _axes(raw: Mapping[str, Any], fixed: Mapping[str, Any]) -> _Axes:
    """The axes of the cells; ``fixed`` may give a single noise/method/robust_loss/dataset
    instead of a list."""
    if raw.get("datasets") is not None and "dataset" in fixed:
        raise SpecError("give the data set either as 'datasets' (an axis) or as fixed.dataset, "
                        "not both")
    datasets = str_list(raw.get("datasets"), "'datasets'")
    dataset_axis = bool(datasets)
    datasets = ([absolute_dataset(d) for d in datasets]
                or [absolute_dataset(fixed.get("dataset", TrainConfig().dataset))])
    if dataset_axis and len({dataset_tag(d) for d in datasets}) != len(datasets):
        raise SpecError(f"'datasets': two data sets share a name: {datasets}")
    noise = str_list(raw.get("noise"), "'noise'") or [fixed.get("noise", TrainConfig().noise)]
    for n in noise:
        try:
            parse_noise(n)
        except ConfigError as e:
            raise SpecError(f"'noise': {e}") from None
        if not any(noise_applies(n, d) for d in datasets):
            raise SpecError(f"'noise': {n!r} (CIFAR-N) applies to "
                            f"{allowed(human_noise_datasets(human_noise_key(n)))}, "
                            f"not to the study's data sets {datasets}")
    methods = str_list(raw.get("methods"), "'methods'", METHODS) or [fixed.get("method", "lci")]
    if raw.get("methods") is None and methods[0] not in METHODS:
        raise SpecError(f"fixed.method: unknown method {methods[0]!r}; allowed: {allowed(METHODS)}")
    losses = (str_list(raw.get("robust_losses"), "'robust_losses'", ROBUST_LOSSES)
              or [fixed.get("robust_loss", "gce")])
    return _Axes(datasets, dataset_axis, noise, methods, losses)


def _overrides(raw: Mapping[str, Any]) -> List[Dict[str, Any]]:
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list):
        raise SpecError("'overrides' must be a list of {when: {...}, set: {...}}")
    ovs = []
    for i, o in enumerate(overrides):
        w = f"overrides[{i}]"
        o = mapping(o, w)
        check_keys(o, list(OVERRIDE_KEYS), w)
        when = mapping(o.get("when"), f"{w}.when")
        check_keys(when, list(WHEN_KEYS), f"{w}.when")
        when = {k: ([v] if isinstance(v, str) else list(v)) for k, v in when.items()}
        ovs.append({"when": when, "set": settings(o.get("set"), f"{w}.set")})
        absolute_paths(ovs[-1]["set"])
    return ovs


def _resources(raw: Mapping[str, Any]) -> Tuple[float, float]:
    res = mapping(raw.get("resources"), "'resources'")
    check_keys(res, list(RESOURCE_KEYS), "'resources'")
    cpu = number(res.get("cpu", 1), "resources.cpu")
    gpu = number(res.get("gpu", 0), "resources.gpu")
    if cpu <= 0 or gpu < 0:
        raise SpecError(f"resources: cpu={cpu:g} must be > 0 and gpu={gpu:g} >= 0")
    if gpu > 1 and not float(gpu).is_integer():
        raise SpecError(f"resources.gpu={gpu:g}: more than one GPU must be a whole number")
    return cpu, gpu


def _optuna_storage(raw: Mapping[str, Any]) -> str:
    from ..optuna_storage import normalize_optuna_storage

    try:
        return normalize_optuna_storage(raw.get("optuna_storage", "sqlite"))
    except LCIError as e:
        raise SpecError(str(e)) from None


def _budget(raw: Mapping[str, Any]) -> None:
    from ..cost import validate_budget

    try:
        validate_budget(raw.get("budget"))
    except LCIError as e:
        raise SpecError(str(e)) from None


def _tracking(raw: Mapping[str, Any]) -> Dict[str, Any]:
    from ..tracking import validate_tracking

    try:
        return validate_tracking(raw.get("tracking"))
    except LCIError as e:
        raise SpecError(str(e)) from None


def _evaluation(raw: Mapping[str, Any], methods: List[str]) -> EvalSpec:
    ev = mapping(raw.get("evaluation"), "'evaluation'")
    check_keys(ev, list(EVAL_KEYS), "'evaluation'")
    return EvalSpec(seeds=seed_list(ev.get("seeds", 5), "evaluation.seeds"),
                    metric=metric_name(ev.get("metric", "test_acc"), "evaluation.metric"),
                    fixed=settings(ev.get("fixed"), "evaluation.fixed"),
                    methods=tuple(str_list(ev.get("methods"), "evaluation.methods", methods)),
                    fuse_seeds=flag(ev.get("fuse_seeds", False), "evaluation.fuse_seeds"))

def _search(v: Any, methods: List[str], losses: List[str]) -> SearchSpec:
    d = mapping(v, "'search'")
    check_keys(d, list(SEARCH_KEYS), "'search'")
    if "trials" not in d:
        raise SpecError("search.trials is missing (Optuna trials per searched cell)")
    metric = metric_name(d.get("metric", "val_acc"), "search.metric")
    if "test" in metric:
        raise SpecError(f"search.metric={metric!r}: a search must never select on the test set; "
                        "use 'val_acc' (accuracy on the noisy validation split)")
    mode = d.get("mode", "max")
    if mode not in ("max", "min"):
        raise SpecError(f"search.mode={mode!r}; allowed: 'max', 'min'")
    vf = number(d.get("val_fraction", 0.1), "search.val_fraction")
    if not 0.0 < vf < 1.0:
        raise SpecError(f"search.val_fraction={vf:g} must be in (0, 1): the search selects on "
                        "a held-out noisy validation split, never on the test set")
    s_methods = str_list(d.get("methods"), "search.methods", methods) or \
        [m for m in methods if m in LCI_METHODS]
    default_space = d.get("default_space", True)
    if not isinstance(default_space, bool):
        raise SpecError(f"search.default_space={default_space!r} must be true or false")
    params_in = mapping(d.get("params"), "search.params")
    base_losses = sorted(set(losses) | {m for m in s_methods if m in BASELINE_METHODS})
    params = default_params(base_losses) if default_space else {}
    for k, val in params_in.items():
        params[str(k)] = parse_param(str(k), val, "search.params")
    if not params:
        raise SpecError("search.params is empty and default_space is false: nothing to search")
    nst = d.get("n_startup_trials")
    mc = d.get("max_concurrent")
    return SearchSpec(trials=integer(d["trials"], "search.trials", 1), metric=metric, mode=mode,
                      seed=integer(d.get("seed", 0), "search.seed"),
                      n_startup_trials=None if nst is None else integer(nst, "search.n_startup_trials"),
                      val_fraction=vf, methods=tuple(s_methods), params=params,
                      fixed=settings(d.get("fixed"), "search.fixed"),
                      max_concurrent=None if mc is None else integer(mc, "search.max_concurrent", 1))


def _sweep(v: Any, ev: EvalSpec, methods, noise, losses, datasets) -> SweepSpec:
    d = mapping(v, "'sweep'")
    check_keys(d, list(SWEEP_KEYS), "'sweep'")
    name = d.get("param")
    if not isinstance(name, str):
        raise SpecError("sweep.param is missing (the swept parameter, e.g. m)")
    vals = d.get("values")
    if isinstance(vals, Mapping):
        check_keys(vals, ["start", "stop", "num"], "sweep.values")
        start = number(vals.get("start"), "sweep.values.start")
        stop = number(vals.get("stop"), "sweep.values.stop")
        num = integer(vals.get("num"), "sweep.values.num", 2)
        vals = [round(start + (stop - start) * i / (num - 1), 10) for i in range(num)]
    if not isinstance(vals, (list, tuple)) or not vals:
        raise SpecError("sweep.values must be a non-empty list (or {start, stop, num})")
    param = parse_param(name, {"values": list(vals)}, "sweep")
    return SweepSpec(param=param, seeds=seed_list(d.get("seeds", list(ev.seeds)), "sweep.seeds"),
                     methods=tuple(str_list(d.get("methods"), "sweep.methods", methods)),
                     noise=tuple(str_list(d.get("noise"), "sweep.noise", noise)),
                     robust_losses=tuple(str_list(d.get("robust_losses"), "sweep.robust_losses",
                                                   losses)),
                     datasets=tuple(absolute_dataset(x) for x in
                                    str_list(d.get("datasets"), "sweep.datasets", datasets)),
                     fixed=settings(d.get("fixed"), "sweep.fixed"),
                     metric=metric_name(d.get("metric", "test_acc"), "sweep.metric"),
                     fuse_seeds=flag(d.get("fuse_seeds", ev.fuse_seeds), "sweep.fuse_seeds"))


def _scheduler(v: Any) -> SchedulerSpec:
    d = mapping(v, "'scheduler'")
    check_keys(d, list(SCHEDULER_KEYS), "'scheduler'")
    t = d.get("type", "asha")
    if t != "asha":
        raise SpecError(f"scheduler.type={t!r}; allowed: 'asha'")
    rf = number(d.get("reduction_factor", 3), "scheduler.reduction_factor")
    if rf <= 1:
        raise SpecError(f"scheduler.reduction_factor={rf:g} must be > 1")
    mt = d.get("max_t")
    return SchedulerSpec(type=t,
                         grace_period=integer(d.get("grace_period", 1), "scheduler.grace_period", 1),
                         reduction_factor=rf,
                         max_t=None if mt is None else integer(mt, "scheduler.max_t", 1))


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
            base = spec.phase_config(c, SEARCH)
            check(base, f"cell {c.id} (search)")
            for corner in ("low", "high"):
                vals = {p.name: (getattr(p, corner) if p.kind == "float" else
                                 (min(p.choices) if corner == "low" else max(p.choices)))
                        for p in c.search_params}
                check(with_params(base, vals), f"cell {c.id}: search.params at their {corner} ends")
        check(spec.phase_config(c, EVALUATION), f"cell {c.id} (evaluation)")
        if c.id in sweep_ids:
            base = spec.phase_config(c, SWEEP)
            for v in spec.sweep.values:
                check(with_params(base, {spec.sweep.param.name: v}),
                      f"cell {c.id}: sweep {spec.sweep.param.name}={v:g}")
    if spec.sweep and not sweep_ids:
        raise SpecError(f"sweep.param {spec.sweep.param.name!r} applies to none of the cells "
                        "(lci parameters apply to lci methods, loss.param to that loss's cells)")
    if spec.search and not spec.search_cells():
        raise SpecError(f"search: no cell has a parameter to search (search.methods="
                        f"{list(spec.search.methods)}); remove 'search' or list methods/params")

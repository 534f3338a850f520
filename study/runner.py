"""Running a study on Ray Tune: one ``tune.Tuner`` per cell and phase, in order
search -> evaluation -> sweep, each a Tune experiment folder under ``<storage>/<name>/``.

The study folder holds

- ``study.json``: the spec as analysis/ reads it (name, seeds, metric, cells, search_params...);
- ``study_state.json``: which experiments finished and the best parameters of each cell, so
  ``--resume`` skips finished phases and evaluates the same best configuration;
- ``optuna.db``: one Optuna study per searched cell, named by the cell id (optional);
- ``summary.json``: the end-of-study table;
- one Tune experiment folder per cell and phase (``<cell>__search``, ``<cell>__eval``,
  ``sweep_<param>__<cell>``), each with one folder per trial (Tune's ``params.json`` and
  ``result.json``, the checkpoints, and ``run/``: the lci run's own files).
"""
from __future__ import annotations

import copy
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional

from lci.config import TrainConfig
from lci.errors import LCIError

from . import storage
from .results import Summary, best_trial, get_path, mean_std, read_trials
from .spec import Cell, StudySpec, set_path as _set_path, with_params

logger = logging.getLogger(__name__)

STATE_FILE = "study_state.json"


class StudyInterrupted(LCIError):
    """The study stopped before its trials finished (Ctrl-C); ``--resume`` continues it."""


def trial_dirname(trial) -> str:
    """Short trial folder names (the default embeds every parameter and breaks long paths)."""
    return trial.trial_id


def trial_name(trial) -> str:
    return trial.trial_id


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Start local Ray (dashboard off) or join a cluster; returns whether we started it."""
    import ray

    # Tune's classic reporter honours verbose=0; our ProgressCallback prints instead
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # checkpoints every few epochs with num_to_keep set force frequent experiment snapshots;
    # that is expected here (small experiment state), not worth a warning per trial
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    # Trial workers' stdout/stderr stay in the Ray session's log files (log_to_driver=False):
    # the console shows our progress lines, and a failed trial's reason from its error.txt.
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # address="local": a new Ray on this machine even if `ray start` left an address
        # behind; no dashboard, so nothing listens beyond localhost
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return True


class StudyRunner:
    def __init__(self, spec: StudySpec, *, resume: bool = False,
                 max_concurrent: Optional[int] = None, echo: Callable[[str], None] = print):
        self.spec = spec
        self.resume = resume
        self.max_concurrent = max_concurrent or spec.max_concurrent
        self.echo = echo
        self.dir = spec.study_dir
        self.state: Dict[str, Any] = {"experiments": {}, "best": {}}
        self._trainable = None
        self._optuna = None
        self._prepared = False

    # ----------------------------------------------------------------------------- setup
    @property
    def trainable(self):
        # one object for every Tuner and Tuner.restore (the same with_resources wrapping)
        if self._trainable is None:
            from trainables import make_trainable

            self._trainable = make_trainable(cpu=self.spec.cpu, gpu=self.spec.gpu)
        return self._trainable

    @property
    def optuna_storage(self):
        if self._optuna is None:
            from .searcher import optuna_storage

            self._optuna = [optuna_storage(self.spec.optuna_storage, self.dir)]
        return self._optuna[0]

    def _state_path(self) -> str:
        return storage.join(self.dir, STATE_FILE)

    def _save_state(self) -> None:
        storage.write_json(self._state_path(), self.state)

    def prepare(self) -> None:
        """Create the study folder, or check that an existing one is this study (--resume)."""
        info = self.spec.to_json()
        if not storage.is_uri(self.dir):
            # a read-only path or a full disk fails here, before Ray starts or anything trains
            from lci.outputs import check_writable
            check_writable(self.dir)
        old = storage.read_json(storage.join(self.dir, "study.json"))
        if old is not None:
            if not self.resume:
                raise LCIError(f"{self.dir} already holds study {old.get('name')!r}; pass --resume "
                               "to continue it, or choose another --storage or study name")
            diffs = [k for k in ("cells", "search", "sweep", "seed_values", "experiments",
                                 "scheduler", "search_params")
                     if _jsonish(old.get(k)) != _jsonish(info.get(k))]
            if diffs:
                raise LCIError(f"--resume: the spec differs from the study in {self.dir} "
                               f"(changed: {', '.join(diffs)}); resume with the same spec, or "
                               "start a new study under another name or storage")
            st = storage.read_json(self._state_path())
            if st:
                self.state = st
        elif self.resume:
            self.echo(f"nothing to resume in {self.dir}; starting the study")
        storage.write_json(storage.join(self.dir, "study.json"), info)
        self._save_state()
        self._prepared = True

    # ------------------------------------------------------------------------------- run
    def run(self) -> Summary:
        if not self._prepared:
            self.prepare()
        spec = self.spec
        counts = spec.trial_counts()
        self.echo(f"study {spec.name}: {len(spec.cells)} cells, {counts['total']} trials "
                  f"(search {counts['search']}, evaluation {counts['evaluation']}, "
                  f"sweep {counts['sweep']}) -> {self.dir}")
        if self.spec.search and self.optuna_storage is not None and not storage.is_uri(self.dir):
            self.echo(f"  watch the searches: optuna-dashboard sqlite:///{self.dir}/optuna.db")
        phases = ([(c, "search") for c in spec.search_cells()]
                  + [(c, "evaluation") for c in spec.eval_cells()]
                  + [(c, "sweep") for c in spec.sweep_cells()])
        for i, (cell, phase) in enumerate(phases, 1):
            getattr(self, f"_{phase}")(cell, f"[{i}/{len(phases)}]")
        summary = self.summary()
        storage.write_json(storage.join(self.dir, "summary.json"), summary.to_json())
        return summary

    def _threads(self) -> int:
        return int(self.spec.fixed.get("threads") or max(1, int(self.spec.cpu)))

    def _labels(self, cell: Cell, phase: str) -> Dict[str, Any]:
        return {"cell": cell.id, "phase": phase, "study": self.spec.name}

    def _epochs(self, cfg: Dict[str, Any]) -> int:
        return int(TrainConfig.from_dict(cfg).resolved().epochs)

    def chosen_params(self, cell: Cell) -> Dict[str, Any]:
        """The cell's parameters for evaluation and sweeps: the spec's fixed search values
        and the best searched ones."""
        params = {p.name: p.value for p in cell.fixed_params}
        best = self.state["best"].get(cell.id)
        if best:
            params.update(best["params"])
        return params

    # --------------------------------------------------------------------------- phases
    def _search(self, cell: Cell, step: str) -> None:
        from .searcher import make_searcher

        spec, search = self.spec, self.spec.search
        name = spec.experiment_name(cell, "search")
        base = spec.phase_config(cell, "search")
        base.setdefault("threads", self._threads())
        epochs = self._epochs(base)

        def new_tuner():
            searcher = make_searcher(cell.search_params, metric=search.metric, mode=search.mode,
                                     seed=search.seed, n_startup_trials=search.startup_trials,
                                     epochs=epochs, study_name=cell.id,
                                     storage=self.optuna_storage)
            scheduler = None
            if spec.scheduler is not None:
                # ASHA stops weak trials at its rungs. Those trials reach the searcher with a
                # truncated score; TruncationAwareOptunaSearch tells Optuna they were PRUNED,
                # not COMPLETE, so TPE does not learn from truncated scores. ASHA is used in
                # the search phase only: evaluation and sweeps must run every seed to the end.
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(time_attr="epoch",
                                          max_t=spec.scheduler.max_t or epochs,
                                          grace_period=spec.scheduler.grace_period,
                                          reduction_factor=spec.scheduler.reduction_factor)
            return self._tuner(name, {**base, **self._labels(cell, "search")}, search.trials,
                               metric=search.metric, mode=search.mode, search_alg=searcher,
                               scheduler=scheduler,
                               max_concurrent=_smallest(search.max_concurrent,
                                                        self.max_concurrent))

        def fresh_start():
            if self.optuna_storage is not None:  # the Optuna study restarts with the Tune one
                import optuna

                try:
                    optuna.delete_study(study_name=cell.id, storage=self.optuna_storage)
                except KeyError:
                    pass

        records = self._experiment(name, f"{step} {cell.id} search", search.trials,
                                   search.metric, search.mode, new_tuner, fresh_start)
        if records is None:
            return
        best = best_trial(records, search.metric, search.mode, epochs)
        if best is None:
            self.echo(f"  {cell.id}: no search trial finished; evaluating the fixed settings")
            self.state["best"].pop(cell.id, None)
        else:
            params = {p.name: get_path(best.config, p.path) for p in cell.search_params}
            self.state["best"][cell.id] = {"params": params, search.metric: best.last[search.metric],
                                           "trial_id": best.trial_id, "experiment": name}
            self.echo(f"  {cell.id}: best {search.metric}={best.last[search.metric]:.4f} "
                      + " ".join(f"{k}={v:.4g}" for k, v in params.items()))
        self._save_state()

    def _evaluation(self, cell: Cell, step: str) -> None:
        from ray import tune

        spec = self.spec
        name = spec.experiment_name(cell, "evaluation")
        cfg = with_params(spec.phase_config(cell, "evaluation"), self.chosen_params(cell))
        cfg.setdefault("threads", self._threads())
        space = {**cfg, **self._labels(cell, "evaluation"),
                 "seed": tune.grid_search(list(spec.evaluation.seeds))}
        self._experiment(name, f"{step} {cell.id} eval", len(spec.evaluation.seeds),
                         spec.evaluation.metric, "max",
                         lambda: self._tuner(name, space, 1, metric=spec.evaluation.metric,
                                             mode="max"))

    def _sweep(self, cell: Cell, step: str) -> None:
        from ray import tune

        spec, sw = self.spec, self.spec.sweep
        name = spec.experiment_name(cell, "sweep")
        cfg = with_params(spec.phase_config(cell, "sweep"), self.chosen_params(cell))
        cfg.setdefault("threads", self._threads())
        space = {**copy.deepcopy(cfg), **self._labels(cell, "sweep"),
                 "seed": tune.grid_search(list(sw.seeds))}
        _set_path(space, sw.param.path, tune.grid_search(sw.values))
        self._experiment(name, f"{step} {cell.id} sweep {sw.param.name}",
                         len(sw.values) * len(sw.seeds), sw.metric, "max",
                         lambda: self._tuner(name, space, 1, metric=sw.metric, mode="max"))

    # ------------------------------------------------------------------------ machinery
    def _tuner(self, name: str, param_space: Dict[str, Any], num_samples: int, *, metric: str,
               mode: str, search_alg=None, scheduler=None, max_concurrent: Optional[int] = None):
        from ray import tune

        from .progress import ProgressCallback

        total = num_samples if search_alg is not None else _grid_size(param_space)
        return tune.Tuner(
            self.trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=search_alg, scheduler=scheduler,
                num_samples=num_samples, max_concurrent_trials=max_concurrent or self.max_concurrent,
                # a worker process that runs several trials keeps its memoized data sets
                reuse_actors=True,
                trial_dirname_creator=trial_dirname, trial_name_creator=trial_name),
            run_config=tune.RunConfig(
                name=name, storage_path=self.dir, verbose=0,
                failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=self.spec.keep_checkpoints),
                callbacks=[ProgressCallback(name, total, metric, mode)]))

    def _experiment(self, name: str, label: str, expected: int, metric: str, mode: str,
                    new_tuner: Callable[[], Any],
                    fresh_start: Optional[Callable[[], None]] = None) -> Optional[List]:
        """Run (or resume, or skip) one experiment; returns its trial records."""
        from ray import tune

        path = storage.join(self.dir, name)
        st = self.state["experiments"].get(name)
        if st and st.get("status") == "done":
            self.echo(f"{label}: finished earlier, skipped")
            return read_trials(path)
        t0 = time.time()
        if storage.exists(path) and tune.Tuner.can_restore(path):
            self.echo(f"{label}: resuming {path}")
            tuner = tune.Tuner.restore(path, self.trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            if storage.exists(path):  # started, but died before Tune saved any state
                storage.remove_tree(path)
            if fresh_start is not None:
                fresh_start()
            self.echo(f"{label}: {expected} trials")
            tuner = new_tuner()
        tuner.fit()
        records = read_trials(path)
        n_err = sum(r.error for r in records)
        finished = _finished_trials(path)
        if finished < expected:  # Ctrl-C: Tune stopped early and saved its state
            self._save_state()
            raise StudyInterrupted(
                f"{label} stopped with {finished} of {expected} trials finished; continue with "
                f"`lci sweep <spec> --storage {self.spec.storage} --resume`")
        self.state["experiments"][name] = {"status": "done" if not n_err else "errors",
                                           "trials": len(records), "errors": n_err,
                                           "wall_s": round(time.time() - t0, 1)}
        self._save_state()
        if n_err:
            self.echo(f"{label}: {n_err} trial(s) failed (see error.txt in their folders)")
        return records

    # ---------------------------------------------------------------------------- report
    def summary(self) -> Summary:
        spec = self.spec
        metric = spec.evaluation.metric
        s = Summary(self.dir, metric)
        for cell in spec.eval_cells():
            recs = read_trials(storage.join(self.dir, spec.experiment_name(cell, "evaluation")))
            s.errors += sum(r.error for r in recs)
            done = [r for r in recs if not r.error]
            row = {"cell": cell.id, "method": cell.method, "noise": cell.noise,
                   "robust_loss": cell.robust_loss, "params": self.chosen_params(cell),
                   metric: mean_std([r.last.get(metric) for r in done]),
                   "seeds": sorted(r.config.get("seed") for r in done)}
            best = self.state["best"].get(cell.id)
            if best and spec.search:
                row["search_" + spec.search.metric] = best.get(spec.search.metric)
            s.cells.append(row)
        for cell in spec.sweep_cells():
            sw = spec.sweep
            recs = read_trials(storage.join(self.dir, spec.experiment_name(cell, "sweep")))
            s.errors += sum(r.error for r in recs)
            points = []
            for v in sw.values:
                vals = [r.last.get(sw.metric) for r in recs
                        if not r.error and get_path(r.config, sw.param.path) == v]
                points.append({"value": v, **mean_std(vals)})
            s.sweeps.append({"cell": cell.id, "param": sw.param.name, "metric": sw.metric,
                             "points": points})
        for cell in spec.search_cells():
            s.errors += sum(r.error for r in read_trials(
                storage.join(self.dir, spec.experiment_name(cell, "search"))))
        return s


def _smallest(*caps: Optional[int]) -> Optional[int]:
    """The tightest of the concurrency caps that are set (None: no cap)."""
    given = [c for c in caps if c]
    return min(given) if given else None


def _finished_trials(path: str) -> int:
    """Trials TERMINATED or ERROR in the experiment state Tune saved last. (The ResultGrid of
    an interrupted ``fit()`` reports its stopped trials as terminated; the saved state has
    them PENDING, which is what ``Tuner.restore`` resumes. A trial ASHA stopped is TERMINATED.)"""
    from ray import tune

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # trials without results yet are expected here
    try:
        trials = tune.ExperimentAnalysis(path).trials
    finally:
        quiet.setLevel(level)
    return sum(t.status in ("TERMINATED", "ERROR") for t in trials)


def _grid_size(space: Any) -> int:
    """Trials of a param_space made of grid_search values."""
    n = 1
    if isinstance(space, dict):
        if set(space) == {"grid_search"}:
            return len(space["grid_search"])
        for v in space.values():
            n *= _grid_size(v)
    return n


def _jsonish(v: Any) -> Any:
    import json

    return json.loads(json.dumps(v, default=str, sort_keys=True))


def run_study(spec: StudySpec, *, address: Optional[str] = None, resume: bool = False,
              max_concurrent: Optional[int] = None, num_cpus: Optional[int] = None,
              echo: Callable[[str], None] = print) -> Summary:
    """Run a whole study on local Ray (or the cluster at ``address``); Ray is shut down
    afterwards only if this call started it."""
    runner = StudyRunner(spec, resume=resume, max_concurrent=max_concurrent, echo=echo)
    runner.prepare()  # a study folder that is in the way fails here, before Ray starts
    started = connect(address, num_cpus)
    try:
        return runner.run()
    finally:
        if started:
            import ray

            ray.shutdown()

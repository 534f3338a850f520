"""One Tune experiment of a study: build its ``Tuner``, or restore it, run it, read it back.

An :class:`Experiment` knows its node of the graph (:mod:`study.graph`), the trainable and the
study-wide settings (:class:`ExperimentContext`). It does not know about other experiments:
the scheduler decides when it runs, the state store records what it found.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from lci.config import TrainConfig
from lci.errors import LCIError

from . import storage, tune_compat
from .graph import ExperimentNode
from .progress import TrialEvents
from .spec import StudySpec, set_path, with_params
from .trials import FAILED, FINISHED, TrialRecord, read_trials

logger = logging.getLogger(__name__)


class StudyInterrupted(LCIError):
    """The study stopped before its trials finished (Ctrl-C, SIGTERM); ``--resume`` continues it."""


def trial_dirname(trial) -> str:
    """Short trial folder names (the default embeds every parameter and breaks long paths)."""
    return trial.trial_id


@dataclass
class ExperimentContext:
    """What every experiment of one study run shares."""
    spec: StudySpec
    trainable: Any
    optuna_storage: Any               # an Optuna storage object, or None (in memory)
    key: str                          # the study's key for the gate and the progress view
    # extra Tune callbacks (tracking), made anew for each Tuner: a callback keeps per-run state
    callbacks: Callable[[], List[Any]] = lambda: []

    @property
    def threads(self) -> int:
        return int(self.spec.fixed.get("threads") or max(1, int(self.spec.cpu)))


class Experiment:
    def __init__(self, node: ExperimentNode, ctx: ExperimentContext):
        self.node, self.ctx = node, ctx
        self.path = storage.join(ctx.spec.study_dir, node.name)

    # ------------------------------------------------------------------------- configs
    def labels(self) -> Dict[str, Any]:
        return {"cell": self.node.cell.id, "phase": self.node.phase, "study": self.ctx.spec.name}

    def base_config(self, params: Dict[str, Any]) -> Dict[str, Any]:
        cfg = with_params(self.ctx.spec.phase_config(self.node.cell, self.node.phase), params)
        cfg.setdefault("threads", self.ctx.threads)
        return {**cfg, **self.labels()}

    def epochs(self, cfg: Dict[str, Any]) -> int:
        return int(TrainConfig.from_known(cfg).resolved().epochs)

    def trial_configs(self) -> List[Dict[str, Any]]:
        """Evaluation: one config per seed; sweep: values x seeds (the value varies slowest)."""
        spec, phase = self.ctx.spec, self.node.phase
        if phase == "evaluation":
            return [{"seed": s} for s in spec.evaluation.seeds]
        sw = spec.sweep
        out = []
        for v in sw.values:
            for s in sw.seeds:
                c: Dict[str, Any] = {"seed": s}
                set_path(c, sw.param.path, v)
                out.append(c)
        return out

    # --------------------------------------------------------------------------- tuner
    def _tuner(self, params: Dict[str, Any]):
        from ray import tune

        from .searcher import ConfigListSearcher, make_searcher

        spec, node = self.ctx.spec, self.node
        base = self.base_config(params)
        scheduler, metric, mode = None, spec.evaluation.metric, "max"
        if node.phase == "search":
            search = spec.search
            metric, mode = search.metric, search.mode
            epochs = self.epochs(base)
            searcher = make_searcher(node.cell.search_params, metric=metric, mode=mode,
                                     seed=search.seed, n_startup_trials=search.startup_trials,
                                     epochs=epochs, study_name=node.cell.id,
                                     storage=self.ctx.optuna_storage, gate_key=self.ctx.key)
            if spec.scheduler is not None:
                # ASHA stops weak trials at its rungs; TruncationAwareOptunaSearch tells Optuna
                # they were PRUNED. Search phase only: evaluations and sweeps run to the end.
                from ray.tune.schedulers import ASHAScheduler

                scheduler = ASHAScheduler(time_attr="epoch",
                                          max_t=spec.scheduler.max_t or epochs,
                                          grace_period=spec.scheduler.grace_period,
                                          reduction_factor=spec.scheduler.reduction_factor)
        else:
            if node.phase == "sweep":
                metric = spec.sweep.metric
            searcher = ConfigListSearcher(self.trial_configs(), metric=metric, mode=mode,
                                          gate_key=self.ctx.key)
        return tune.Tuner(
            self.ctx.trainable,
            param_space=base,
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, search_alg=searcher, scheduler=scheduler,
                num_samples=node.trials,
                max_concurrent_trials=node.cap,
                # a worker process that runs several trials keeps its memoized data sets
                reuse_actors=True, trial_dirname_creator=trial_dirname,
                trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=node.name, storage_path=spec.study_dir, verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
                callbacks=[tune_compat.StartedCallback(), TrialEvents(self.ctx.key, node.name),
                           *self.ctx.callbacks()]))

    def _fresh_start(self) -> None:
        """A search that starts over also starts its Optuna study over."""
        if self.node.phase == "search" and self.ctx.optuna_storage is not None:
            import optuna

            try:
                optuna.delete_study(study_name=self.node.cell.id, storage=self.ctx.optuna_storage)
            except KeyError:
                pass

    # ----------------------------------------------------------------------------- run
    def run(self, params: Dict[str, Any], echo: Callable[[str], None]) -> List[TrialRecord]:
        """Run, or resume, this experiment to its end; returns its trial records. Raises
        :class:`StudyInterrupted` when it was stopped before every trial ended."""
        from ray import tune

        lock = tune_compat.startup_lock()
        lock.acquire()
        try:
            if storage.exists(self.path) and tune.Tuner.can_restore(self.path):
                echo(f"{self.node.name}: resuming")
                tuner = tune.Tuner.restore(self.path, self.ctx.trainable,
                                           resume_unfinished=True, resume_errored=True)
            else:
                if storage.exists(self.path):  # started, but died before Tune saved any state
                    storage.remove_tree(self.path)
                self._fresh_start()
                tuner = self._tuner(params)
            tuner.fit()
        finally:
            tune_compat.release_startup()  # if fit failed before Tune's setup released it
        ended = _ended_trials(self.path)
        if tune_compat.STOP.is_set() and ended < self.node.trials:
            raise StudyInterrupted(f"{self.node.name}: {ended} of {self.node.trials} trials ended")
        return read_trials(self.path)

    def outcome(self, records: List[TrialRecord]) -> Dict[str, int]:
        statuses = [r.status() for r in records]
        return {"trials": len(records), "finished": statuses.count(FINISHED),
                "failed": statuses.count(FAILED)}


def _ended_trials(path: str) -> int:
    """Trials TERMINATED or ERROR in the experiment state Tune saved last. (An interrupted
    ``fit()`` reports its stopped trials as terminated in the ResultGrid, but saves them as
    PENDING, which is what ``Tuner.restore`` resumes. A trial ASHA stopped is TERMINATED.)"""
    from ray import tune

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # trials without results yet are expected here
    try:
        trials = tune.ExperimentAnalysis(path).trials
    finally:
        quiet.setLevel(level)
    return sum(t.status in ("TERMINATED", "ERROR") for t in trials)


"""Running a study on Ray Tune: checks, the lock, the graph of experiments, the summary.

``run_study`` is the whole sequence. Everything that can refuse the study (the spec, the
folder, the data sets of every cell, the lock, the resources per trial) is checked before
anything is written or any trial starts; then every experiment runs, at once where its inputs
are ready, inside the study's one Tune run (:mod:`study.multiplex`), resumable from
``<study>/trials/``; the summary is read back from the trial folders (:mod:`study.trials`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List, Optional

from lci.errors import LCIError

from . import storage, tune_compat
from .atomicfs import atomic_local_filesystem
from .cost import check_budget
from .experiment import (Experiment, ExperimentContext, StorageFull,  # noqa: F401
                         StudyInterrupted, disk_full, trial_dirname, trial_name)
from .graph import ExperimentNode, build_graph, study_width
from .lock import StudyLock
from .live import live
from .multiplex import Plan, StudySearcher, StudyTrialScheduler
from .connect import PENDING_ENV, connect, pending_trials
from .preflight import (check_datasets, check_resources, check_resumable, check_services,
                        check_storage)
from .progress import StudyProgress, TrialEvents
from .results import Summary, best_trial, build_summary, get_path
from .signals import StopSignals
from .spec import StudySpec
from .state import StudyState
from .trials import INCOMPLETE, STUDY_FILE, TRIALS_DIR, read_study_trials
from .phases import EVALUATION, SEARCH, SWEEP

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ runner
class StudyRunner:
    """Runs the graph of one study as one Tune run; owns the state store, and answers the
    study's searcher (:class:`~study.multiplex.StudyHooks`): the sub-searcher of an experiment
    that starts, and what to record when one ends."""

    def __init__(self, spec: StudySpec, *, resume: bool = False,
                 max_concurrent: Optional[int] = None, echo: Callable[[str], None] = print,
                 address: Optional[str] = None, max_experiments: Optional[int] = None):
        self.spec = spec
        self.address = address
        self.max_experiments = max_experiments  # 1 runs experiments one after another
        self.resume = resume
        self.max_concurrent = max_concurrent or spec.max_concurrent
        self.echo = echo
        self.dir = spec.study_dir
        self.tune_dir = storage.join(self.dir, TRIALS_DIR)  # the study's one Tune run
        self.state = StudyState(self.dir)
        self.nodes = build_graph(spec)
        self.key = self.dir  # one driver per study folder (study.lock)
        self.slots: Optional[int] = None
        self.progress: Optional[StudyProgress] = None  # found by TrialEvents (study.live)
        self.experiments: Dict[str, Experiment] = {}
        self.searcher: Optional[StudySearcher] = None  # the live one, once Tune runs it
        self._ctx: Optional[ExperimentContext] = None
        self._resuming = False
        self._on_disk: Dict[str, List[Any]] = {}  # trials found at start (only when resuming)

    # --------------------------------------------------------------------------- setup
    def check(self) -> None:
        """Everything that can refuse the study without writing anything."""
        for change in self.state.check(self.spec.to_json(), self.resume):
            self.echo(f"resume: {change} (cannot change results)")
        check_budget(self.spec)
        if self.resume:
            check_resumable(self.spec, self.dir, [n.name for n in self.nodes],
                            [n.name for n in self.nodes if n.phase == SEARCH])
        check_services(self.spec)
        for w in check_datasets(self.spec, named_sets_here=not self.address):
            self.echo(f"warning: {w}")
        check_storage(self.dir)

    def prepare(self) -> None:
        from .tracking import tracking_callbacks

        tracking_callbacks(self.spec.tracking, self.spec.name, self.dir)  # MLflow installed?
        if self.resume and storage.read_json(self.state.path(STUDY_FILE)) is None:
            self.echo(f"nothing to resume in {self.dir}; starting the study")
        self.state.open(self.spec.to_json())

    def context(self) -> ExperimentContext:
        from .optuna_storage import resolve_optuna_storage

        spec = self.spec
        opt = resolve_optuna_storage(spec.optuna_storage, self.dir) if spec.search else None
        return ExperimentContext(spec=spec, optuna_storage=opt)

    # ------------------------------------------------------------------------------ run
    def run(self) -> Summary:
        spec = self.spec
        counts = spec.trial_counts()
        self.echo(f"study {spec.name}: {len(spec.cells)} cells, {len(self.nodes)} experiments, "
                  f"{counts['total']} trials (search {counts[SEARCH]}, evaluation "
                  f"{counts[EVALUATION]}, sweep {counts[SWEEP]}) -> {self.dir}")
        ctx = self._ctx = self.context()
        self.experiments = {n.name: Experiment(n, ctx) for n in self.nodes}
        if spec.search:
            from .optuna_storage import dashboard_command

            cmd = dashboard_command(spec.optuna_storage, self.dir)
            if cmd:
                self.echo(f"  watch the searches: {cmd}")
        # what an earlier driver ended: whole experiments, and trials of interrupted ones
        on_disk = self._on_disk = read_study_trials(self.dir) if self.resume else {}
        # trials already ended, by Tune trial id: the progress counts each id once (a trial that
        # Tune's older saved state runs again is not counted twice; a fused trial's seeds are
        # one trial), including every trial of an experiment the state file has as done (one
        # whose last result line a full disk cut off still ended)
        ended_ids = {r.trial_id for recs in on_disk.values() for r in recs
                     if r.status() != INCOMPLETE}
        for n in self.nodes:
            if self.state.experiment_done(n.name):
                ended_ids |= {r.trial_id for r in on_disk.get(n.name, [])}
                self.echo(f"{n.name}: finished earlier, skipped")
            elif on_disk.get(n.name):
                ended = len({r.trial_id for r in on_disk[n.name] if r.status() != INCOMPLETE})
                self.echo(f"{n.name}: resuming ({ended} of {n.trials} trials ended; "
                          "interrupted ones continue from their checkpoints)")
        self.progress = StudyProgress(
            self.key, counts["total"], len(ended_ids), echo=self.echo, ended_ids=ended_ids)
        stop = tune_compat.install_stop_event()
        # Tune reads this when the run starts; a value the user set is kept
        pending_set = PENDING_ENV not in os.environ
        if pending_set:
            os.environ[PENDING_ENV] = str(pending_trials(
                study_width(self.nodes, self.max_concurrent), self.slots, bool(self.address)))
        try:
            # the searcher and callbacks Tune restores find this driver (study.live)
            with live(self.dir, self):
                self._run_tuner()
        finally:
            if pending_set:
                os.environ.pop(PENDING_ENV, None)
            self.progress.close()
        if not all(self.state.experiment_ended(n.name) for n in self.nodes):
            if stop.is_set():
                raise StudyInterrupted(
                    f"study {spec.name} stopped; its finished trials are kept. Continue with "
                    f"`lci sweep {spec.source or spec.name} --storage {spec.storage} --resume`")
            raise LCIError(f"study {spec.name}: Ray Tune returned before every trial ended; "
                           "continue with --resume")
        self._export_searches()
        summary = self.summary()
        self.state.write_summary(summary.to_json())
        return summary

    def _run_tuner(self) -> None:
        """Tune's run to its end; a full disk (anywhere: Tune, the searcher, the state) is
        :class:`StorageFull` with what to do."""
        spec = self.spec
        try:
            self._tuner().fit()
            self._check_searcher()
        except Exception as e:
            failure = self.searcher.failure if self.searcher is not None else None
            if disk_full(e) or disk_full(failure):
                raise StorageFull(
                    f"study {spec.name} stopped: no space left on the device that holds "
                    f"{self.dir}. Free space, then continue with `lci sweep "
                    f"{spec.source or spec.name} --storage {spec.storage} --resume` "
                    "(ended trials are kept; running ones start again from their last "
                    "checkpoints)") from None
            raise

    def _tuner(self):
        """The study's one Tune run (:mod:`study.multiplex`): restored from the study folder
        when Tune saved its state there, else new."""
        from ray import tune

        from trainables import make_trainable

        from .tracking import tracking_callbacks

        spec = self.spec
        trainable = make_trainable(cpu=spec.cpu, gpu=spec.gpu)
        # a local study folder: Tune's writes land whole or not at all (study.atomicfs), so a
        # full disk or a killed driver never leaves its run state cut short
        fs = None if storage.is_uri(self.dir) else atomic_local_filesystem()
        self._resuming = tune.Tuner.can_restore(self.tune_dir, storage_filesystem=fs)
        if self._resuming:
            return tune.Tuner.restore(self.tune_dir, trainable, resume_unfinished=True,
                                      resume_errored=True, storage_filesystem=fs)
        # trial folders of a driver that died before Tune saved its state
        for recs in self._on_disk.values():
            for r in recs:
                storage.remove_tree(r.path)
        for e in self.experiments.values():
            e.fresh_start()
        plans = [Plan(n) for n in self.nodes]
        searcher = StudySearcher(self.dir, plans, max_concurrent=self.max_concurrent,
                                 max_experiments=self.max_experiments, hooks=self)
        self.searcher = searcher
        asha = {name: a for name, e in self.experiments.items() if (a := e.asha())}
        return tune.Tuner(
            trainable, param_space={},
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=StudyTrialScheduler(asha),
                num_samples=sum(n.trials for n in self.nodes),
                # a slot's worker process goes on to the next trial, of any cell: no new
                # process (torch and Tune imports) per trial, and data sets stay memoized
                reuse_actors=True, trial_dirname_creator=trial_dirname,
                trial_name_creator=trial_name),
            run_config=tune.RunConfig(
                name=TRIALS_DIR, storage_path=self.dir, storage_filesystem=fs, verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.keep_checkpoints),
                callbacks=[TrialEvents(self.key),
                           *tracking_callbacks(spec.tracking, spec.name, self.dir)]))

    def _check_searcher(self) -> None:
        """What Tune does not report: a searcher that failed (or, resuming, was never
        restored: Tune then starts a run over instead of failing), and ends it missed."""
        s = self.searcher
        if s is not None and s.failure is not None:
            raise LCIError(f"study {self.spec.name}: {type(s.failure).__name__}: {s.failure}")
        if self._resuming and (s is None or not s.restored):
            raise LCIError(f"study {self.spec.name}: Ray Tune could not restore the study's run "
                           f"from {self.tune_dir} (see the log above)")
        self.record_missed_ends()

    # ------------------------------------------------------- what the study's searcher asks
    @property
    def optuna_storage(self):
        return self._ctx.optuna_storage if self._ctx is not None else None

    def attach(self, searcher: StudySearcher) -> None:
        self.searcher = searcher
        # a restored searcher has the caps of the run that saved it: this run's apply
        searcher.max_concurrent, searcher.max_experiments = self.max_concurrent, self.max_experiments
        self.record_missed_ends()

    def record_missed_ends(self) -> None:
        """Experiments the searcher saw end but the state file does not have (a driver that
        died between the two writes, or a write that failed during the run)."""
        for name, records in self.searcher.ended_experiments() if self.searcher else []:
            if not self.state.experiment_ended(name):
                self.experiment_ended(name, records)

    def sub_searcher(self, name: str):
        exp = self.experiments[name]
        params = {} if exp.node.phase == SEARCH else self.chosen_params(exp.node.cell)
        return exp.searcher(params)

    def experiment_ended(self, name: str, records) -> None:
        exp = self.experiments[name]
        node = exp.node
        out = exp.outcome(records)
        # a search ends again when --resume reruns its errored trials; once an evaluation or
        # sweep has started with its best parameters, those stay the cell's parameters
        started = self.searcher is not None and self.searcher.dependents_started(node.name)
        if node.phase == SEARCH and not started:
            self._record_best(node, exp, records)
        self.state.set_experiment(node.name, status="done" if not out["failed"] else "errors",
                                  **out)
        if node.phase == SEARCH:
            self._export_searches()
        tail = f", {out['failed']} failed (see error.txt in their folders)" if out["failed"] else ""
        self.progress.experiment_line(f"{node.name}: done, {out['finished']} of "
                                       f"{out['trials']} trials finished{tail}")

    def _export_searches(self) -> None:
        """A study folder on S3 keeps its Optuna studies only in Tune's searcher state: copy
        every finished search into an ``optuna.db`` there (dashboard, importances)."""
        from .optuna_storage import export_searches, needs_export

        if not self.spec.search or not needs_export(self.spec.optuna_storage, self.dir):
            return
        subs = self.searcher.searches() if self.searcher is not None else {}
        done = {self.experiments[name].node.cell.id: sub.optuna_study()[1]
                for name, sub in subs.items()
                if self.experiments[name].node.phase == SEARCH
                and self.state.experiment_ended(name)}
        if done:
            export_searches(list(done), done, self.dir)

    def _record_best(self, node: ExperimentNode, exp: Experiment, records) -> None:
        search = self.spec.search
        epochs = exp.epochs(exp.base_config({}))
        best = best_trial(records, search.metric, search.mode, epochs)
        if best is None:
            self.progress.experiment_line(f"  {node.cell.id}: no search trial finished; "
                                           "evaluating the fixed settings")
            self.state.set_best(node.cell.id, None)
            return
        params = {p.name: get_path(best.config, p.path) for p in node.cell.search_params}
        self.state.set_best(node.cell.id, {"params": params,
                                           search.metric: best.last[search.metric],
                                           "trial_id": best.trial_id, "experiment": node.name})
        self.progress.experiment_line(
            f"  {node.cell.id}: best {search.metric}={best.last[search.metric]:.4f} "
            + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in params.items()))

    def chosen_params(self, cell) -> Dict[str, Any]:
        """The cell's parameters for evaluation and sweeps: the spec's fixed search values
        and the best searched ones."""
        params = {p.name: p.value for p in cell.fixed_params}
        best = self.state.best(cell.id)
        if best:
            params.update(best["params"])
        return params

    # --------------------------------------------------------------------------- report
    def summary(self) -> Summary:
        """The end-of-study table, read back from the trial folders."""
        return build_summary(self.spec, self.nodes, read_study_trials(self.dir),
                             self.chosen_params, self.state.best)


# ----------------------------------------------------------------------------- entry point
def run_study(spec: StudySpec, *, address: Optional[str] = None, resume: bool = False,
              max_concurrent: Optional[int] = None, num_cpus: Optional[int] = None,
              echo: Callable[[str], None] = print) -> Summary:
    """Run a whole study on local Ray (or the cluster at ``address``); Ray is shut down
    afterwards only if this call started it. A refused study writes nothing."""
    runner = StudyRunner(spec, resume=resume, max_concurrent=max_concurrent, echo=echo,
                         address=address)
    runner.check()
    lock = StudyLock(runner.dir, echo=echo)
    lock.acquire()  # a second driver is refused here, before Ray starts
    started = False
    prepared = False
    try:
        started = connect(address, num_cpus)
        runner.slots = check_resources(spec, cluster=bool(address))
        runner.prepare()
        prepared = True
        with StopSignals() as sig:
            try:
                return runner.run()
            except StudyInterrupted as e:
                e.signal = sig.received  # type: ignore[attr-defined]
                raise
    finally:
        lock.release(remove_dir=not prepared)
        if started:
            import ray

            ray.shutdown()

"""One Tune run for a whole study: a searcher and a trial scheduler that multiplex its experiments.

A study is a graph of experiments (:mod:`study.graph`): per cell a search, an evaluation and a
sweep, where the evaluation and the sweep of a searched cell wait for its search. All of them
run inside **one** ``tune.Tuner``:

- :class:`StudySearcher` is the Tuner's search algorithm. It holds one sub-searcher per
  experiment (an Optuna TPE search per searched cell, a fixed list of configs for an
  evaluation or a sweep) and, each time Tune asks for a trial, suggests one from the first
  experiment that is ready (everything it waits for has ended), has trials left and is under
  its own cap (a search's ``max_concurrent``) and the study's (``max_concurrent``). Every
  trial's config carries its experiment's name; results and completions go back to the
  sub-searcher that suggested the trial.
- :class:`StudyTrialScheduler` routes each search trial to its own ASHA, so trials are only
  ever compared with trials of the same search.

Why one Tuner rather than one per experiment: Tune reuses a trial's worker process for the
next trial (``reuse_actors``) only within one Tuner. A new worker imports torch and Ray Tune,
seconds of CPU per trial, which is as long as a short trial; with one Tuner a slot goes
straight from one trial to the next, whichever cell it belongs to. Ray's resource scheduler
still decides where and when each trial runs.

The searcher holds its state (the plans, every sub-searcher) and saves and restores it whole.
What the driver does when an experiment starts or ends (choose a dependent's parameters, record
a search's best parameters, write the study state) it asks of the :class:`StudyHooks` it was
made with. Tune pickles the searcher into the study folder; a restored one finds the new
driver's hooks in its ``restore``, the one place it looks them up (:mod:`study.live`).
"""
from __future__ import annotations

import copy
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol, Set, Tuple

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from .live import find
from .phases import PHASES
from .trials import EXPERIMENT_KEY, TrialRecord

logger = logging.getLogger(__name__)

PHASE_ORDER = {phase: i for i, phase in enumerate(PHASES)}  # searches first


class StudyHooks(Protocol):
    optuna_storage: Any  # the study's Optuna storage in this driver (None: in memory)

    def attach(self, searcher: "StudySearcher") -> None:
        """The searcher Tune runs (after a restore, the one Tune unpickled)."""

    def sub_searcher(self, name: str) -> Tuple[Searcher, Dict[str, Any]]:
        """The searcher of experiment ``name`` and the config its suggestions complete."""

    def experiment_ended(self, name: str, records: List[TrialRecord]) -> None:
        """Every trial of experiment ``name`` ended (called again if a retried one ends)."""


@dataclass
class Plan:
    """The searcher's state of one experiment of the study's graph: the experiment itself is
    its :class:`~study.graph.ExperimentNode` (name, phase, trials, what it waits for, its
    cap), made once from the spec; this adds what was suggested and what ended."""
    node: Any                               # study.graph.ExperimentNode
    suggested: int = 0
    live: Set[str] = field(default_factory=set)
    ended: Dict[str, Tuple[Dict[str, Any], Dict[str, Any], bool]] = field(default_factory=dict)
    base: Optional[Dict[str, Any]] = None   # set when the experiment starts
    configs: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # trial id -> config

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def phase(self) -> str:
        return self.node.phase

    @property
    def trials(self) -> int:
        return self.node.trials

    @property
    def needs(self) -> Tuple[str, ...]:
        return self.node.needs

    @property
    def cap(self) -> Optional[int]:
        return self.node.cap

    @property
    def done(self) -> bool:
        return len(self.ended) >= self.trials

    def records(self) -> List[TrialRecord]:
        return [TrialRecord(trial_id=tid, path="", config=cfg, last=last, n_results=1,
                            error_text="error" if err else None)
                for tid, (cfg, last, err) in sorted(self.ended.items())]


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with the (nested) keys of ``update`` set; neither is changed."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class StudySearcher(Searcher):
    def __init__(self, study_dir: str, plans: List[Plan], *, max_concurrent: Optional[int] = None,
                 max_experiments: Optional[int] = None, hooks: Optional[StudyHooks] = None):
        super().__init__(metric=None, mode=None)
        self.study_dir = study_dir
        self._driver = hooks              # not saved: the live driver (see restore)
        index = {p.name: i for i, p in enumerate(plans)}
        self.plans = sorted(plans, key=lambda p: (PHASE_ORDER[p.phase], index[p.name]))
        self.max_concurrent = max_concurrent
        self.max_experiments = max_experiments      # experiments at once (1: one after another)
        self._subs: Dict[str, Searcher] = {}
        self._of: Dict[str, str] = {}     # trial id -> experiment name
        self.restored = False             # by restore(), from a saved state
        self.failure: Optional[BaseException] = None  # see _fail

    def __getstate__(self) -> Dict[str, Any]:
        # Tune pickles the searcher (tuner.pkl) while this driver holds it: never the driver
        return {**self.__dict__, "_driver": None}

    # ----------------------------------------------------------------------------- tune
    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # every experiment has its own metric, set on its sub-searcher

    def _plan(self, name: str) -> Plan:
        return next(p for p in self.plans if p.name == name)

    def _ready(self, p: Plan) -> bool:
        return all(self._plan(n).done for n in p.needs)

    def _active(self) -> Set[str]:
        return {p.name for p in self.plans if p.suggested and not p.done}

    def _hooks(self) -> StudyHooks:
        if self._driver is None:
            raise RuntimeError(f"the study searcher of {self.study_dir} has no driver: make it "
                               "with hooks=..., or restore it while its driver is live")
        return self._driver

    def _sub(self, p: Plan) -> Searcher:
        if p.name not in self._subs:
            sub, base = self._hooks().sub_searcher(p.name)
            self._subs[p.name], p.base = sub, base
        return self._subs[p.name]

    def _fail(self, e: BaseException) -> None:
        """Tune swallows an exception raised in ``restore`` (it starts the run over) and turns
        one raised in ``on_trial_complete`` into a failed trial; so the error is kept here,
        raised from the next ``suggest``, and checked by the runner after the run."""
        logger.error("study searcher: %s: %s", type(e).__name__, e)
        if self.failure is None:
            self.failure = e

    def suggest(self, trial_id: str) -> Optional[Dict]:
        if self.failure is not None:  # stop Tune: nothing more runs on a broken state
            raise RuntimeError(f"the study's searcher failed: {type(self.failure).__name__}: "
                               f"{self.failure}")
        if all(p.suggested >= p.trials for p in self.plans):
            return Searcher.FINISHED
        live = sum(len(p.live) for p in self.plans)
        if self.max_concurrent and live >= self.max_concurrent:
            return None
        active = self._active()
        for p in self.plans:
            if p.suggested >= p.trials or not self._ready(p):
                continue
            if p.cap and len(p.live) >= p.cap:
                continue
            if self.max_experiments and p.name not in active and len(active) >= self.max_experiments:
                continue
            cfg = self._sub(p).suggest(trial_id)
            if cfg is None or cfg == Searcher.FINISHED:
                continue
            p.suggested += 1
            p.live.add(trial_id)
            self._of[trial_id] = p.name
            full = merge(p.base or {}, cfg)
            full[EXPERIMENT_KEY] = p.name
            p.configs[trial_id] = full
            return full
        return None  # nothing ready now (waiting for a search, or at a cap): Tune asks again

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        name = self._of.get(trial_id)
        if name is not None:
            self._subs[name].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None,
                          error: bool = False) -> None:
        name = self._of.get(trial_id)
        if name is None:
            return
        p = self._plan(name)
        self._subs[name].on_trial_complete(trial_id, result, error)
        p.live.discard(trial_id)
        p.ended[trial_id] = (p.configs.get(trial_id, {}), dict(result or {}), bool(error))
        if p.done:
            try:
                self._hooks().experiment_ended(name, p.records())
            except Exception as e:  # noqa: BLE001 - the runner records it again after the run
                self._fail(e)

    # ------------------------------------------------------------------------- queries
    def searches(self) -> Dict[str, Searcher]:
        """The sub-searchers of the experiments that started (name -> searcher)."""
        return dict(self._subs)

    def ended_experiments(self) -> List[Tuple[str, List[TrialRecord]]]:
        """Every experiment whose trials all ended, with their records."""
        return [(p.name, p.records()) for p in self.plans if p.done]

    def dependents_started(self, name: str) -> bool:
        """Whether an experiment that waits for ``name`` has had a trial suggested."""
        return any(p.suggested for p in self.plans if name in p.needs)

    # ---------------------------------------------------------------------- save/restore
    def save(self, checkpoint_path: str) -> None:
        subs = {}
        with tempfile.TemporaryDirectory(prefix="lci-searcher-") as tmp:
            for name, sub in self._subs.items():
                f = os.path.join(tmp, "s.pkl")
                sub.save(f)  # each sub-searcher's own format (OptunaSearch: its __dict__)
                with open(f, "rb") as fh:
                    subs[name] = (type(sub), fh.read())
        state = {k: v for k, v in self.__dict__.items() if k not in ("_subs", "_driver")}
        with open(checkpoint_path, "wb") as fh:
            pickle.dump({"state": state, "subs": subs}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """All or nothing: the saved state with every sub-searcher, or (on any error) this
        searcher unchanged with the error kept (:meth:`_fail`). A search's Optuna study is
        reloaded by name from the study's storage in this driver, which may have moved.
        Trials that ended in an error are live again: ``--resume`` reruns them
        (``resume_errored``), so their experiment ends again when they do."""
        try:
            with open(checkpoint_path, "rb") as fh:
                saved = pickle.load(fh)
            state, subs = dict(saved["state"]), {}
            h = find(state["study_dir"])  # the one lookup (study.live)
            if h is None:
                raise RuntimeError(f"no live driver for the study {state['study_dir']} in "
                                   "this process")
            with tempfile.TemporaryDirectory(prefix="lci-searcher-") as tmp:
                for name, (cls, blob) in saved["subs"].items():
                    f = os.path.join(tmp, "s.pkl")
                    with open(f, "wb") as fh:
                        fh.write(blob)
                    sub = cls.__new__(cls)
                    if hasattr(sub, "restore_with_storage"):
                        sub.restore_with_storage(f, h.optuna_storage)
                    else:
                        sub.restore(f)
                    subs[name] = sub
            for p in state["plans"]:
                for tid, (_, _, err) in list(p.ended.items()):
                    if err:
                        del p.ended[tid]
                        p.live.add(tid)
        except Exception as e:  # noqa: BLE001 - Tune would swallow it and start over
            self._fail(e)
            driver = find(self.study_dir)
            if driver is not None:
                driver.attach(self)  # the runner sees the failure after the run
            return
        self.__dict__.update(state)
        self._subs, self.restored, self.failure, self._driver = subs, True, None, h
        try:
            h.attach(self)  # the runner re-applies its caps and records missed ends now
        except Exception as e:  # noqa: BLE001
            self._fail(e)


class StudyTrialScheduler(FIFOScheduler):
    """FIFO for every trial, except that the trials of a search go through that search's own
    ASHA (made on first use from ``asha[experiment name]``, the ASHAScheduler arguments)."""

    def __init__(self, asha: Dict[str, Dict[str, Any]]):
        super().__init__()
        self.asha = asha
        self._subs: Dict[str, TrialScheduler] = {}

    def _sub(self, trial) -> Optional[TrialScheduler]:
        name = (trial.config or {}).get(EXPERIMENT_KEY)
        if name not in self.asha:
            return None
        if name not in self._subs:
            from ray.tune.schedulers import ASHAScheduler

            self._subs[name] = ASHAScheduler(**self.asha[name])
        return self._subs[name]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        s = self._sub(trial)
        if s is not None:
            s.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        s = self._sub(trial)
        if s is not None:
            s.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result) -> str:
        s = self._sub(trial)
        if s is None:
            return TrialScheduler.CONTINUE
        return s.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result) -> None:
        s = self._sub(trial)
        if s is not None:
            s.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        s = self._sub(trial)
        if s is not None:
            s.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"one ASHA per search ({len(self._subs)} started)"

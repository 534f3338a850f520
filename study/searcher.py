"""The Optuna side of a search: the define-by-run space of a cell and the Tune searcher.

Both are plain picklable objects: Tune saves the searcher (space included) in the experiment
folder, and ``Tuner.restore`` brings it back to continue an interrupted search.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any, Dict, List, Optional, Sequence

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from lci.errors import LCIError

from .spec import Param
from .trials import FAILED_KEY

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per created study / trial


class SearchSpace:
    """Define-by-run space of one cell: ``space(trial)`` calls ``trial.suggest_*`` for each
    searched parameter. The robust loss's own parameters (``gce.q``...) appear only in the
    cells whose loss they belong to: that is decided when the cell is built
    (``study/spec/cells.py``), so the space is conditional on the robust loss. Names with a
    ``/`` (``robust_loss_params/q``) are unflattened by OptunaSearch into the nested config key."""

    def __init__(self, params: Sequence[Param]):
        self.params = list(params)

    def __call__(self, trial: "optuna.Trial") -> Optional[Dict[str, Any]]:
        for p in self.params:
            if p.kind == "float":
                trial.suggest_float(p.optuna_name, p.low, p.high, log=p.log, step=p.step)
            elif p.kind == "categorical":
                trial.suggest_categorical(p.optuna_name, list(p.choices))
        return None


class TruncationAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials stopped early.

    Tune hands a searcher the *last* result of a trial however it ended. A trial that ASHA
    (or any stopper) cut at epoch 3 of 30 would enter Optuna as COMPLETE with a 3-epoch score,
    and TPE would learn from truncated scores as if they were final ones, which biases it
    toward fast starters. Here a trial whose last ``epoch`` is short of the planned
    ``epochs`` is told as PRUNED instead: TPE then ranks it below every complete trial
    (using its intermediate values, which OptunaSearch reports per epoch), as it would a
    trial pruned by an Optuna pruner. Errored trials stay FAIL.
    """

    def __init__(self, *args, epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.epochs = int(epochs)

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        if trial_id not in self._ot_trials:  # e.g. a trial restored without searcher state
            return
        if FAILED_KEY in result or self.metric not in result:
            return  # the trial's last word on an error that would recur: no value to report
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None,
                          error: bool = False) -> None:
        if trial_id not in self._ot_trials:  # not asked by this searcher (see above)
            return
        if trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)  # logs and ignores
        if result and FAILED_KEY in result:  # ended on an error that would recur: FAIL
            return super().on_trial_complete(trial_id, None, error=True)
        epoch = (result or {}).get("epoch")
        if not error and result and epoch is not None and int(epoch) < self.epochs:
            ot_trial = self._ot_trials[trial_id]
            # the result that made the scheduler stop the trial never went through
            # on_trial_result: record it, so the pruned trial's last value is its real one
            step, value = result.get("training_iteration"), result.get(self.metric)
            try:
                if step is not None and value is not None:
                    with warnings.catch_warnings():  # "already reported" after a restore
                        warnings.simplefilter("ignore")
                        ot_trial.report(value, step)
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            except Exception as exc:  # already told (a resumed study)
                logger.warning("could not tell Optuna trial %s as pruned: %s", trial_id, exc)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """OptunaSearch's state, except that a study kept in a storage (SQLite or a journal
        in the study folder, a database) is saved by name and trial ids, not as pickled
        storage objects that hold its path: :meth:`restore_with_storage` reloads it from the
        storage of the driver that resumes (the study folder may have moved). A study in
        memory (an s3:// study folder) is saved whole, as OptunaSearch does."""
        import pickle

        state = self.__dict__.copy()
        if state.get("_storage") is not None:
            state["_storage"] = state["_ot_study"] = None
            state["_ot_trials"] = {tid: t._trial_id for tid, t in self._ot_trials.items()}
            state["_by_name"] = True
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's way: into a searcher made with its storage (or one in memory)."""
        self.restore_with_storage(checkpoint_path, getattr(self, "_storage", None))

    def restore_with_storage(self, checkpoint_path: str, storage) -> None:
        """Restore (see :meth:`save`), then repair what a crashed driver can leave behind:
        Optuna trials still RUNNING in the storage that this searcher never recorded (asked
        for after Tune's last snapshot of the searcher) would stay RUNNING forever; they are
        marked FAIL. The unfinished trials it did record are resumed by Tune."""
        import pickle

        with open(checkpoint_path, "rb") as fh:
            state = pickle.load(fh)
        if state.pop("_by_name", False):
            if storage is None:
                raise LCIError(f"search {state['_study_name']!r}: its Optuna study is kept in "
                               "the study's storage, which this driver did not open")
            study = optuna.load_study(study_name=state["_study_name"], storage=storage,
                                      sampler=state["_sampler"])
            state["_storage"], state["_ot_study"] = storage, study
            state["_ot_trials"] = {tid: optuna.trial.Trial(study, ot_id)
                                   for tid, ot_id in state["_ot_trials"].items()}
        self.__dict__.update(state)
        self.repair_orphans()

    def repair_orphans(self) -> int:
        known = {t._trial_id for t in self._ot_trials.values()}
        n = 0
        for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in known:
                self._ot_study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                n += 1
        if n:
            logger.warning("marked %d Optuna trial(s) of %s FAIL: left RUNNING by a driver "
                           "that stopped before Tune saved them", n, self._study_name)
        return n


class ConfigListSearcher(Searcher):
    """The trials of an evaluation or a sweep: a fixed list of configs (seeds x values), each
    suggested once, in order."""

    def __init__(self, configs: List[Dict[str, Any]], *, metric: str, mode: str = "max"):
        super().__init__(metric=metric, mode=mode)
        self.configs = list(configs)
        self.next = 0

    def suggest(self, trial_id: str) -> Optional[Dict]:
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None,
                          error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__.copy(), fh)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


def make_sampler(seed: int, n_startup_trials: int) -> "optuna.samplers.TPESampler":
    """Seeded TPE for trials that run in parallel. ``constant_liar`` makes TPE treat running
    trials as bad results, so concurrent suggestions spread out instead of collapsing onto
    one point; ``multivariate`` models the parameters jointly (m, λ, ρ, α interact). Both are
    set here explicitly: their defaults differ between Optuna versions."""
    with warnings.catch_warnings():  # both options are flagged experimental by Optuna
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials,
                                          constant_liar=True, multivariate=True)


def make_searcher(params: Sequence[Param], *, metric: str, mode: str, seed: int,
                  n_startup_trials: int, epochs: int, study_name: str,
                  storage: Optional["optuna.storages.BaseStorage"]) -> TruncationAwareOptunaSearch:
    """A seeded-TPE searcher for one cell; ``storage`` None keeps the study in memory."""
    return TruncationAwareOptunaSearch(
        space=SearchSpace(params), metric=metric, mode=mode,
        sampler=make_sampler(seed, n_startup_trials), study_name=study_name,
        storage=storage, epochs=epochs)


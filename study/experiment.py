"""One experiment of a study: what its trials are, and how they are searched.

An :class:`Experiment` knows its node of the graph (:mod:`study.graph`) and the study-wide
settings (:class:`ExperimentContext`): the configs of its trials, its searcher and its ASHA.
It does not know about other experiments: the study's one Tune run schedules it
(:mod:`study.multiplex`), the state store records what it found.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from lci.config import TrainConfig
from lci.errors import LCIError
from lci.names import FUSED_KEY, MEMBERS_LIVE_KEY

from .graph import ExperimentNode
from .phases import EVALUATION, SEARCH, SWEEP
from .spec import StudySpec, set_path, with_params
from .trials import EXPERIMENT_KEY, FAILED, FINISHED, TrialRecord, trial_folder_name


class StudyInterrupted(LCIError):
    """The study stopped before its trials finished (Ctrl-C, SIGTERM); ``--resume`` continues it."""


class StorageFull(RuntimeError):
    """The study stopped because its storage ran out of space; once space is free,
    ``--resume`` continues it (the driver's own files are written atomically, and a trial
    folder cut short is read as a trial that has not run)."""


def disk_full(e: Optional[BaseException]) -> bool:
    """Whether ``e`` or an exception it was raised from is ENOSPC (or EDQUOT, a quota)."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        e = e.__cause__ or e.__context__
    return False


def trial_dirname(trial) -> str:
    """``<experiment>-<trial id>`` in the study folder: sorted by experiment, and short (Tune's
    default embeds every parameter and breaks long paths)."""
    name = (trial.config or {}).get(EXPERIMENT_KEY)
    return trial_folder_name(name, trial.trial_id) if name else trial.trial_id


def trial_name(trial) -> str:
    return trial.trial_id


@dataclass
class ExperimentContext:
    """What every experiment of one study run shares."""
    spec: StudySpec
    optuna_storage: Any = None        # an Optuna storage object, or None (in memory)

    @property
    def threads(self) -> int:
        return int(self.spec.fixed.get("threads") or max(1, int(self.spec.cpu)))


def _seeds_config(seeds: List[int]) -> Dict[str, Any]:
    # a fused trial's ``seed`` is its first seed, so its config is a valid TrainConfig
    return {"seed": seeds[0], FUSED_KEY: list(seeds)} if len(seeds) > 1 else {"seed": seeds[0]}


class Experiment:
    def __init__(self, node: ExperimentNode, ctx: ExperimentContext):
        self.node, self.ctx = node, ctx

    # ------------------------------------------------------------------------- configs
    def labels(self) -> Dict[str, Any]:
        return {"cell": self.node.cell.id, "phase": self.node.phase, "study": self.ctx.spec.name,
                EXPERIMENT_KEY: self.node.name}

    def base_config(self, params: Dict[str, Any]) -> Dict[str, Any]:
        cfg = with_params(self.ctx.spec.phase_config(self.node.cell, self.node.phase), params)
        cfg.setdefault("threads", self.ctx.threads)
        return {**cfg, **self.labels()}

    def epochs(self, cfg: Dict[str, Any]) -> int:
        return int(TrainConfig.from_known(cfg).resolved().epochs)

    def trial_configs(self) -> List[Dict[str, Any]]:
        """Evaluation: one config per seed; sweep: values x seeds (the value varies slowest).
        With ``fuse_seeds`` one config per value holds all the seeds (``FUSED_KEY``)."""
        spec, phase = self.ctx.spec, self.node.phase
        if phase == EVALUATION:
            return [_seeds_config(g) for g in spec.evaluation.seed_groups()]
        sw = spec.sweep
        out = []
        for v in sw.values:
            for g in sw.seed_groups():
                c = _seeds_config(g)
                set_path(c, sw.param.path, v)
                out.append(c)
        return out

    # ------------------------------------------------------------------ what Tune runs
    def searcher(self, params: Dict[str, Any]):
        """This experiment's sub-searcher (see :mod:`study.multiplex`) and the config its
        suggestions complete (the cell's phase config with ``params`` set, and the labels)."""
        from .searcher import ConfigListSearcher, make_searcher

        spec, node = self.ctx.spec, self.node
        base = self.base_config(params)
        if node.phase == SEARCH:
            search = spec.search
            return make_searcher(node.cell.search_params, metric=search.metric,
                                 mode=search.mode, seed=search.seed,
                                 n_startup_trials=search.startup_trials,
                                 epochs=self.epochs(base), study_name=node.cell.id,
                                 storage=self.ctx.optuna_storage), base
        metric = spec.sweep.metric if node.phase == SWEEP else spec.evaluation.metric
        return ConfigListSearcher(self.trial_configs(), metric=metric, mode="max"), base

    def asha(self) -> Optional[Dict[str, Any]]:
        """ASHAScheduler arguments for a search when the spec has a scheduler, else None.
        ASHA stops weak trials at its rungs and TruncationAwareOptunaSearch tells Optuna they
        were PRUNED. Search phase only: evaluations and sweeps run to the end."""
        spec = self.ctx.spec
        if self.node.phase != SEARCH or spec.scheduler is None:
            return None
        return {"metric": spec.search.metric, "mode": spec.search.mode, "time_attr": "epoch",
                "max_t": spec.scheduler.max_t or self.epochs(self.base_config({})),
                "grace_period": spec.scheduler.grace_period,
                "reduction_factor": spec.scheduler.reduction_factor}

    def fresh_start(self) -> None:
        """A search that starts over also starts its Optuna study over."""
        if self.node.phase == SEARCH and self.ctx.optuna_storage is not None:
            import optuna

            try:
                optuna.delete_study(study_name=self.node.cell.id, storage=self.ctx.optuna_storage)
            except KeyError:
                pass

    def outcome(self, records: List[TrialRecord]) -> Dict[str, int]:
        """Runs (seeds) of the experiment, finished and failed: a fused trial counts each of
        its seeds, those that diverged as failed (its last result says how many live)."""
        out = {"trials": 0, "finished": 0, "failed": 0}
        for r in records:
            seeds = len(r.config.get(FUSED_KEY) or [None])
            live = int(r.last.get(MEMBERS_LIVE_KEY, seeds))
            status = r.status()
            out["trials"] += seeds
            if status == FINISHED:
                out["finished"] += live
                out["failed"] += seeds - live
            elif status == FAILED:
                out["failed"] += seeds
        return out

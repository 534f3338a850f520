"""Connecting the driver to Ray: a local Ray it starts, or a cluster it joins, with the
environment Tune reads set for a study."""
from __future__ import annotations

import logging
import os
from typing import Optional

#: Tune's queue of trials waiting for resources (set by the runner for the run)
PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None) -> bool:
    """Start local Ray (dashboard off) or join a cluster; returns whether we started it."""
    import ray

    # Tune's classic reporter honours verbose=0; our StudyProgress prints instead
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # checkpoints every few epochs with num_to_keep set force frequent experiment snapshots;
    # that is expected here (small experiment state), not worth a warning per trial
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # a trial that ends on an error that would recur reports its reason without the metric
    # (study.trials.FAILED_KEY); our searchers handle that result, Tune's strict check would not
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    if ray.is_initialized():
        return False
    # Trial workers' stdout/stderr stay in the Ray session's log files (log_to_driver=False):
    # the console shows our progress lines, and a failed trial's reason.
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        # address="local": a new Ray on this machine even if `ray start` left an address
        # behind; no dashboard, so nothing listens beyond localhost
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                 include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return True


def pending_trials(width: int, slots: Optional[int], cluster: bool) -> int:
    """What Tune keeps queued for resources (``PENDING_ENV``), and so starts at once: every
    slot's worth, so all slots start together and a slot never waits for the searcher; on a
    cluster with an autoscaler at least 32, so that it sees the whole demand and scales to
    ``max_workers`` at once. Bounded by the study's ``width``."""
    want = max(1, slots or 1)
    if cluster:
        from .autoscaling import autoscaler

        if autoscaler() is not None:
            want = max(want, 32)
    return max(1, min(width, want))

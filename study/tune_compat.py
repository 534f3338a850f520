"""The two places where running several ``Tuner.fit`` calls at once in one driver needs more
than Tune's public API. Both are checked by ``tests/test_tune_compat.py``, which fails loudly
when a Ray release changes them (``pyproject.toml`` pins the Ray versions they were checked on).

1. **Interrupts.** ``tune.run`` catches SIGINT only in the main thread (signals reach no other
   thread): a Tuner in a worker thread would never stop, and Ctrl-C would leave the study
   running. Tune's own stop path is an event it creates in ``_setup_signal_catching``; we hand
   every Tuner of the study one shared event instead, and the driver's main thread sets it on
   SIGINT or SIGTERM. Each Tuner then does what Ctrl-C does to a single one: stops its trials,
   saves its experiment state for ``Tuner.restore``, and returns.
2. **Start-up.** Each ``Tuner.fit`` registers its trainable in Tune's process-wide registry,
   which is not thread-safe (two registrations at once raise "dictionary changed size during
   iteration"). Experiments therefore start one at a time: :func:`startup_lock` is held from
   the Tuner's construction until Tune calls the experiment's callbacks' ``setup`` (after the
   registration); :class:`StartedCallback` releases it there.
"""
from __future__ import annotations

import threading
from typing import List

import ray.tune.tune as _tune_module
from ray import tune

STOP = threading.Event()
_startup = threading.Lock()


def install_stop_event() -> threading.Event:
    """Route Tune's interrupt handling to :data:`STOP` (cleared) for this process."""
    STOP.clear()
    _tune_module._setup_signal_catching = lambda: STOP
    return STOP


def startup_lock() -> threading.Lock:
    return _startup


class StartedCallback(tune.Callback):
    """Releases :func:`startup_lock` once Tune has set the experiment up."""

    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        release_startup()


def release_startup() -> None:
    try:
        _startup.release()
    except RuntimeError:  # released already (setup runs once per fit)
        pass


def private_apis() -> List[str]:
    """What this module (and the searcher, the trainable) rely on beyond the public API; the
    compat test checks each one still exists."""
    return ["ray.tune.tune._setup_signal_catching",
            "ray.tune.search.optuna.OptunaSearch._ot_trials / _ot_study / _completed_trials",
            "ray.tune.get_context().get_storage()"]

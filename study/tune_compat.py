"""Where the study driver needs more than Tune's public API. Checked by
``tests/test_scaleout.py``, which fails loudly when a Ray release changes them
(``pyproject.toml`` pins the Ray versions they were checked on).

**Interrupts.** Tune stops a run on SIGINT only: it installs its own handler, which sets an
event it creates in ``_setup_signal_catching``. A batch scheduler, ``kill`` or Kubernetes stop
a job with SIGTERM. We hand Tune one event of ours instead (:data:`STOP`), which the driver's
own handler sets on SIGINT *and* SIGTERM; Tune then does what Ctrl-C does: stops its trials,
saves its experiment state for ``Tuner.restore``, and returns.
"""
from __future__ import annotations

import threading
from typing import List

import ray.tune.tune as _tune_module

STOP = threading.Event()


def install_stop_event() -> threading.Event:
    """Route Tune's interrupt handling to :data:`STOP` (cleared) for this process."""
    STOP.clear()
    _tune_module._setup_signal_catching = lambda: STOP
    return STOP


def private_apis() -> List[str]:
    """What this module (and the searcher, the trainable) rely on beyond the public API; the
    compat test checks each one still exists."""
    return ["ray.tune.tune._setup_signal_catching",
            "ray.tune.search.optuna.OptunaSearch._ot_trials / _ot_study / _completed_trials",
            "ray.tune.get_context().get_storage()"]

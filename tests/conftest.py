"""One local Ray per test session for the study/trainable tests (a Ray start costs seconds)."""
from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """``ray.init(num_cpus=2)`` once; tests that need their own Ray (a ``ray start`` head
    node, the CLI in a subprocess) do not use this fixture."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()

"""A trainable for fault tests that says when to strike, so no test depends on speed.

``held_trainable`` is the project's trainable with one addition: after the report of epoch
``HOLD_AT`` it writes ``<CONTROL>/ready-<trial_id>.json`` (its pid, cell, seed, epoch) and then
waits until ``<CONTROL>/release-all``, ``<CONTROL>/release-<cell>`` or
``<CONTROL>/release-<cell>-<seed>`` exists (while
``<CONTROL>/hold`` exists; without it the trial runs straight through). The test acts on the
ready file (kills the worker, kills or signals the driver) at a moment the trial itself chose.

The module is pickled *by value* (``ray.cloudpickle.register_pickle_by_value``), so Ray workers
need not import ``tests``; ``CONTROL`` and ``HOLD_AT`` are captured when the trainable is
pickled, so set them first (:func:`configure`).
"""
from __future__ import annotations

import json
import os
import time

CONTROL = ""
HOLD_AT = 1


def configure(control: str, hold_at: int = 1) -> None:
    global CONTROL, HOLD_AT
    CONTROL, HOLD_AT = control, int(hold_at)
    os.makedirs(control, exist_ok=True)


def held_trainable(config):
    import ray.tune as tune_mod

    from trainables.lci_trainable import train_lci

    control, hold_at = CONTROL, HOLD_AT
    real_report = tune_mod.report

    def report(metrics, checkpoint=None):
        real_report(metrics, checkpoint=checkpoint)
        if metrics.get("epoch") != hold_at or not os.path.exists(os.path.join(control, "hold")):
            return
        tid = tune_mod.get_context().get_trial_id()
        cell, seed = config.get("cell"), config.get("seed")
        import ray

        info = {"pid": os.getpid(), "cell": cell, "seed": seed, "epoch": hold_at,
                "trial_id": tid, "node_id": ray.get_runtime_context().get_node_id()}
        tmp = os.path.join(control, f".ready-{tid}.tmp")
        with open(tmp, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, os.path.join(control, f"ready-{tid}.json"))
        releases = [os.path.join(control, "release-all"),
                    os.path.join(control, f"release-{cell}"),
                    os.path.join(control, f"release-{cell}-{seed}")]
        while not any(os.path.exists(p) for p in releases):
            time.sleep(0.02)

    tune_mod.report = report
    try:
        train_lci(config)
    finally:
        tune_mod.report = real_report


def fail_once_trainable(config):
    """The project's trainable, but its first attempt raises right after reporting epoch
    ``HOLD_AT`` (a marker ``<CONTROL>/failed-<trial_id>`` makes the retry run through)."""
    import ray.tune as tune_mod

    from trainables.lci_trainable import train_lci

    control, fail_at = CONTROL, HOLD_AT
    real_report = tune_mod.report

    def report(metrics, checkpoint=None):
        real_report(metrics, checkpoint=checkpoint)
        marker = os.path.join(control, f"failed-{tune_mod.get_context().get_trial_id()}")
        if metrics.get("epoch") == fail_at and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"injected failure after epoch {fail_at}")

    tune_mod.report = report
    try:
        train_lci(config)
    finally:
        tune_mod.report = real_report


def make_held_trainable(cpu: float = 1.0, fn=None):
    """``held_trainable`` with its resources, picklable by value."""
    import sys

    import ray.cloudpickle
    from ray import tune

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return tune.with_resources(fn or held_trainable, {"cpu": float(cpu), "gpu": 0.0})


def ready(control: str):
    """The ready files written so far, as dicts."""
    out = []
    for name in sorted(os.listdir(control)):
        if name.startswith("ready-") and name.endswith(".json"):
            with open(os.path.join(control, name)) as fh:
                out.append(json.load(fh))
    return out


def wait_for(predicate, what: str, limit_s: float = 300.0, poll_s: float = 0.05):
    """Wait for an event; the limit only turns a hang into a failure (it is never the
    condition under test)."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


def fused_fault_trainable(config):
    """The project's trainable for a fused trial (``fused_seeds``) with two faults: its first
    attempt raises right after reporting epoch ``HOLD_AT`` (the retry resumes from that
    checkpoint; a marker ``<CONTROL>/failed-<trial_id>`` makes it run through), and when the
    trial starts epoch ``HOLD_AT + 1`` the first convolution of member 1 turns NaN."""
    import math

    import ray.tune as tune_mod
    import torch
    from torch import nn

    from lci import fused, hfta
    from trainables.lci_trainable import train_lci

    control, at = CONTROL, HOLD_AT
    real_report, real_epoch = tune_mod.report, fused.FusedTrainer.train_epoch

    def report(metrics, checkpoint=None):
        real_report(metrics, checkpoint=checkpoint)
        marker = os.path.join(control, f"failed-{tune_mod.get_context().get_trial_id()}")
        if metrics.get("epoch") == at and not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError(f"injected failure after epoch {at}")

    def train_epoch(self):
        if self.epoch == at:
            conv = next(m for m in self.engine.theta.net.modules() if isinstance(m, nn.Conv2d))
            shape = (conv.weight.shape[0] // self.k, *conv.weight.shape[1:])
            with torch.no_grad():
                hfta.member_view(conv.weight, self.k, 1, shape).fill_(math.nan)
        return real_epoch(self)

    tune_mod.report, fused.FusedTrainer.train_epoch = report, train_epoch
    try:
        train_lci(config)
    finally:
        tune_mod.report, fused.FusedTrainer.train_epoch = real_report, real_epoch

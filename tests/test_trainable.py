"""The Tune function trainable around lci's Trainer, on a real local Ray (session fixture)."""
from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.slow

BASE = {"dataset": "digits", "noise": "sym:0.6", "epochs": 4, "checkpoint_every": 1,
        "eval_train": False, "batch_size": 128}


def _lines(trial_dir):
    with open(os.path.join(trial_dir, "result.json")) as fh:
        return [json.loads(l) for l in fh if l.strip()]


def _tuner(tmp_path, space, name, max_failures=0, cpu=1.0):
    from ray import tune

    from study.runner import trial_dirname
    from trainables import make_trainable

    return tune.Tuner(
        make_trainable(cpu=cpu), param_space=space,
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)))


def test_trial_reports_every_epoch_and_leaves_a_complete_run_folder(ray_session, tmp_path):
    """One report per epoch, a checkpoint that is a complete lci run folder, the run's files
    under run/. (A trial restored from its checkpoint after a crash: tests/test_faults.py.)"""
    space = {**BASE, "method": "lci", "cell": "c", "phase": "evaluation", "study": "s"}
    grid = _tuner(tmp_path, space, "restore", max_failures=1, cpu=2).fit()
    assert grid.num_errors == 0 and len(grid) == 1
    res = grid[0]
    lines = _lines(res.path)
    assert [l["epoch"] for l in lines] == [1, 2, 3, 4]
    assert [l["training_iteration"] for l in lines] == [1, 2, 3, 4]
    assert res.metrics["epoch"] == 4 and res.metrics["epochs_done"] == 4
    # the final checkpoint is a complete lci run folder; run/ holds the run files
    # (label_issues.csv too, when eval_train is on: see test_study_sweep)
    with res.checkpoint.as_directory() as d:
        assert {"checkpoint.pt", "config.json", "history.csv", "result.json"} <= set(os.listdir(d))
    run = os.path.join(res.path, "run")
    assert {"config.json", "history.csv", "result.json"} <= set(os.listdir(run))
    with open(os.path.join(run, "config.json")) as fh:
        assert json.load(fh)["threads"] == 2  # torch threads = the trial's CPU share
    with open(os.path.join(run, "history.csv")) as fh:
        assert len(fh.read().strip().splitlines()) == 1 + 4  # header + 4 epochs, no duplicates
    # metric names of docs/interfaces.md, every epoch
    for key in ("test_acc", "robust_test_acc", "loss", "loss_robust", "loss_ce", "loss_jsd",
                "loss_penalty", "realized_noise_rate", "epoch_s", "samples_per_s"):
        assert key in lines[-1], key
    # Tune's params.json: the trial config with the study's labels
    with open(os.path.join(res.path, "params.json")) as fh:
        params = json.load(fh)
    assert params["cell"] == "c" and params["phase"] == "evaluation" and params["method"] == "lci"


def test_divergence_fails_its_trial_alone_and_is_not_retried(ray_session, tmp_path):
    """A diverging trial would diverge again on every retry (training is deterministic for a
    seed): it ends at once, although max_failures allows two retries, with its reason in
    error.txt and in its last result; the study's reader counts it failed."""
    from ray import tune

    from lci.errors import FAILED_KEY
    from study.trials import FAILED, FINISHED, read_trial

    space = {**BASE, "epochs": 2, "method": "ce", "lr": tune.grid_search([1e4, 0.05])}
    grid = _tuner(tmp_path, space, "diverge", max_failures=2).fit()
    assert len(grid) == 2
    bad = next(r for r in grid if r.config["lr"] == 1e4)
    assert "DivergenceError" in bad.metrics[FAILED_KEY]
    lines = _lines(bad.path)
    assert len({l["pid"] for l in lines}) == 1 and len(lines) == 1  # one attempt, one report
    with open(os.path.join(bad.path, "error.txt")) as fh:
        assert fh.read().strip().splitlines() == [bad.metrics[FAILED_KEY]]
    assert read_trial(bad.path).status() == FAILED
    good = next(r for r in grid if r.config["lr"] == 0.05)
    assert good.metrics["epoch"] == 2 and read_trial(good.path).status() == FINISHED

"""Studies end to end on a real local Ray (session fixture) and real Optuna (SQLite)."""
from __future__ import annotations

import json
import os

import optuna
import pytest

from study.trials import experiment_trials, read_study_trials
from study.runner import run_study
from study.spec import load_spec

pytestmark = pytest.mark.slow

FIXED = {"dataset": "digits", "epochs": 2, "batch_size": 128, "checkpoint_every": 1}


def _optuna_trials(study_dir, name):
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir}/optuna.db")
    return optuna.load_study(study_name=name, storage=storage).trials


def test_small_optuna_study_end_to_end(ray_session, tmp_path, capsys):
    spec = load_spec({
        "name": "small", "fixed": {**FIXED, "eval_train": False},
        "noise": ["sym:0.6"], "methods": ["ce", "lci"],
        "search": {"trials": 3, "seed": 1, "params": {"gce.q": 0.7}},
        "evaluation": {"seeds": 2, "fixed": {"eval_train": True}},  # label_issues.csv
        "sweep": {"param": "m", "values": [-2, 2], "seeds": 1},
        "max_concurrent": 2,
    }, storage=str(tmp_path))
    summary = run_study(spec)
    sdir = tmp_path / "small"

    # study.json (analysis/'s contract) and one experiment folder per cell and phase
    info = json.loads((sdir / "study.json").read_text())
    assert info["name"] == "small" and info["seeds"] == 2 and info["metric"] == "test_acc"
    assert info["search_params"] == ["m", "lam", "rho", "alpha"]
    assert {c["id"] for c in info["cells"]} == {"ce_sym0.6", "lci_gce_sym0.6"}
    assert set(read_study_trials(str(sdir))) == {
        "lci_gce_sym0.6__search", "ce_sym0.6__eval", "lci_gce_sym0.6__eval",
        "sweep_m__lci_gce_sym0.6"}

    # search: 3 trials on the noisy validation split, each with its config and per-epoch results
    search = experiment_trials(str(sdir), "lci_gce_sym0.6__search")
    assert len(search) == 3
    for r in search:
        assert r.config["phase"] == "search" and r.config["cell"] == "lci_gce_sym0.6"
        assert r.config["study"] == "small" and r.config["val_fraction"] == 0.1
        assert r.config["robust_loss_params"] == {"q": 0.7}  # fixed by the spec
        assert r.n_results == 2 and r.last["epoch"] == 2 and "val_acc" in r.last
    # the searcher got every result: one COMPLETE Optuna trial per Tune trial, same score
    ot = _optuna_trials(sdir, "lci_gce_sym0.6")
    assert [t.state.name for t in ot] == ["COMPLETE"] * 3
    assert sorted(t.value for t in ot) == sorted(r.last["val_acc"] for r in search)
    for t in ot:
        assert set(t.params) == {"m", "lam", "rho", "alpha"}
        assert len(t.intermediate_values) == 2  # one per epoch

    # evaluation: the best search config, retrained on the full training set, 2 seeds
    best = max(search, key=lambda r: r.last["val_acc"])
    state = json.loads((sdir / "study_state.json").read_text())
    assert state["best"]["lci_gce_sym0.6"]["trial_id"] == best.trial_id
    ev = experiment_trials(str(sdir), "lci_gce_sym0.6__eval")
    assert sorted(r.config["seed"] for r in ev) == [0, 1]
    for r in ev:
        assert r.config["phase"] == "evaluation" and r.config["val_fraction"] == 0.0
        for k in ("m", "lam", "rho", "alpha"):
            assert r.config[k] == best.config[k]
        assert r.last["epoch"] == 2 and "test_acc" in r.last and "val_acc" not in r.last
        assert os.path.isfile(os.path.join(r.path, "run", "label_issues.csv"))
    ce = experiment_trials(str(sdir), "ce_sym0.6__eval")
    assert sorted(r.config["seed"] for r in ce) == [0, 1]
    assert all(r.config["robust_loss"] == "ce" for r in ce)

    # sweep: m in {-2, 2} x 1 seed, other parameters at the best values
    sw = experiment_trials(str(sdir), "sweep_m__lci_gce_sym0.6")
    assert sorted(r.config["m"] for r in sw) == [-2, 2]
    assert all(r.config["lam"] == best.config["lam"] and r.config["phase"] == "sweep" for r in sw)

    # the end-of-study table
    table = summary.table()
    assert "lci_gce_sym0.6" in table and "ce_sym0.6" in table and "± " in table
    assert str(sdir) in table and summary.errors == 0
    row = next(c for c in summary.cells if c["cell"] == "lci_gce_sym0.6")
    assert row["test_acc"]["n"] == 2 and row["params"]["gce.q"] == 0.7

    # analysis/ reads the study's folder: one row per trial, each phase counted
    import analysis

    runs = analysis.load(str(sdir))
    assert runs.groupby("phase").size().to_dict() == {"search": 3, "evaluation": 4, "sweep": 2}


def test_asha_stopped_trials_do_not_enter_optuna_as_complete(ray_session, tmp_path):
    """ASHA on the search phase: the trials it stops reach Optuna as PRUNED (with their
    per-epoch values), only trials that ran every epoch are COMPLETE, and the best
    configuration handed to the evaluation is a finished one."""
    spec = load_spec({
        "name": "asha", "fixed": {**FIXED, "epochs": 4, "eval_train": False},
        "noise": ["none"], "methods": ["lci"],
        # lr spans three decades, so some trials are clearly behind at the first rung
        "search": {"trials": 6, "seed": 3, "default_space": False,
                   "params": {"lr": {"low": 1e-4, "high": 0.3, "log": True}},
                   "max_concurrent": 1},
        "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
        "evaluation": {"seeds": 1},
    }, storage=str(tmp_path))
    run_study(spec)
    sdir = tmp_path / "asha"
    tune_trials = experiment_trials(str(sdir), "lci_gce_none__search")
    assert len(tune_trials) == 6
    stopped = {r.trial_id for r in tune_trials if r.last["epoch"] < 4}
    assert stopped, "ASHA stopped no trial; the test needs at least one"
    by_lr = {r.config["lr"]: r for r in tune_trials}
    ot = _optuna_trials(sdir, "lci_gce_none")
    assert len(ot) == 6
    for t in ot:
        r = by_lr[t.params["lr"]]
        if r.trial_id in stopped:
            assert t.state.name == "PRUNED"
            assert max(t.intermediate_values) == r.last["epoch"]
        else:
            assert t.state.name == "COMPLETE" and t.value == r.last["val_acc"]
    best = json.loads((sdir / "study_state.json").read_text())["best"]["lci_gce_none"]
    assert best["trial_id"] not in stopped


def test_one_worker_process_runs_trials_of_every_cell(ray_session, tmp_path):
    """The study is one Tune run, so a slot's worker goes on to the next trial of any cell
    (no new process, with its torch and Tune imports, per experiment): on one slot, four
    cells' trials all report the same worker pid (Tune's ``pid`` in every result)."""
    spec = load_spec({
        "name": "reuse", "fixed": {**FIXED, "epochs": 1, "eval_train": False},
        "noise": ["sym:0.6", "asym:0.4"], "methods": ["ce", "gce"],
        "evaluation": {"seeds": 1}, "resources": {"cpu": 2, "gpu": 0},
    }, storage=str(tmp_path))
    run_study(spec)
    trials = read_study_trials(str(tmp_path / "reuse"))
    assert len(trials) == 4 and all(len(t) == 1 for t in trials.values())
    pids = {r.last["pid"] for recs in trials.values() for r in recs}
    assert len(pids) == 1, pids

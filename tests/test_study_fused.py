"""A study with ``fuse_seeds``: each cell's seeds train as one fused trial (trainables.fused),
and everything that reads trials (study summary, analysis/, ``lci report``) sees what an
unfused study of the same spec gives: one trial folder per seed, the same tables."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import analysis
from lci.names import FUSED_KEY
from study.runner import run_study
from study.spec import SpecError, load_spec
from study.trials import TRIALS_DIR, read_study_trials

SPEC = {
    "name": "fz", "fixed": {"dataset": "digits", "epochs": 2, "batch_size": 128,
                            "checkpoint_every": 1, "train_subset": 512},
    "noise": ["sym:0.4"], "methods": ["ce", "lci"],
    "evaluation": {"seeds": 2},
    "sweep": {"param": "m", "values": [-1, 1], "seeds": 2},
    "max_concurrent": 2,
}


def _study(tmp_path, fuse: bool):
    raw = json.loads(json.dumps(SPEC))
    raw["evaluation"]["fuse_seeds"] = fuse  # the sweep follows the evaluation's setting
    spec = load_spec(raw, storage=str(tmp_path / ("fused" if fuse else "plain")))
    assert spec.sweep.fuse_seeds is fuse
    summary = run_study(spec)
    return spec.study_dir, summary


def _runs(study_dir):
    return {name: sorted((json.dumps(r.config, sort_keys=True), r.status()) for r in recs)
            for name, recs in read_study_trials(study_dir).items()}


@pytest.mark.slow
def test_fused_study_reads_like_an_unfused_one(ray_session, tmp_path):
    fused_dir, fused = _study(tmp_path, True)
    plain_dir, plain = _study(tmp_path, False)

    # one Tune trial per cell (per sweep value), whose own folder is not a run ...
    containers = [p for p in (tmp_path / "fused" / "fz" / TRIALS_DIR).iterdir()
                  if (p / "params.json").is_file()
                  and FUSED_KEY in json.loads((p / "params.json").read_text())]
    assert len(containers) == 2 + 2  # ce and lci evaluations, lci's two sweep values
    # ... and one finished trial folder per seed, with the config an unfused trial has
    runs = _runs(fused_dir)
    assert runs == _runs(plain_dir)
    assert all(status == "finished" for recs in runs.values() for _, status in recs)
    assert sum(len(v) for v in runs.values()) == 4 + 4

    # the members trained as their seeds alone (one thread per trial: last-bit differences)
    recs = {(n, r.config["seed"], r.config.get("m")): r
            for n, rs in read_study_trials(plain_dir).items() for r in rs}
    for n, rs in read_study_trials(fused_dir).items():
        for r in rs:
            alone = recs[(n, r.config["seed"], r.config.get("m"))]
            assert r.n_results == alone.n_results == 2
            assert r.last["loss"] == pytest.approx(alone.last["loss"], rel=1e-3)
            assert r.last["test_acc"] == pytest.approx(alone.last["test_acc"], abs=0.03)
            assert r.last["epochs_done"] == 2 and "best_test_acc" in r.last

    # the study's summary and lci report: the same rows and columns
    assert [c["seeds"] for c in fused.cells] == [c["seeds"] for c in plain.cells] == [[0, 1]] * 2
    out = {}
    for name, d in (("fused", fused_dir), ("plain", plain_dir)):
        md = analysis.report(d, tmp_path / f"report-{name}")
        out[name] = md.parent
    for table in ("table1.csv", "cells.csv"):
        a, b = (pd.read_csv(out[n] / table) for n in ("fused", "plain"))
        assert a.shape == b.shape and list(a.columns) == list(b.columns), table
    runs_f, runs_p = (pd.read_csv(out[n] / "runs.csv") for n in ("fused", "plain"))
    assert len(runs_f) == len(runs_p) == 8
    assert runs_f["label_issues"].notna().all()  # run/label_issues.csv of every seed


def test_fuse_seeds_must_be_a_boolean(tmp_path):
    raw = json.loads(json.dumps(SPEC))
    raw["evaluation"]["fuse_seeds"] = "yes"
    with pytest.raises(SpecError, match="evaluation.fuse_seeds='yes' must be true or false"):
        load_spec(raw, storage=str(tmp_path))


def test_fused_trials_per_cell(tmp_path):
    raw = json.loads(json.dumps(SPEC))
    raw["evaluation"]["fuse_seeds"] = True
    raw["sweep"]["fuse_seeds"] = False
    spec = load_spec(raw, storage=str(tmp_path))
    # evaluation: one trial per cell; sweep: values x seeds
    assert spec.trial_counts() == {"search": 0, "evaluation": 2, "sweep": 4, "total": 6}


@pytest.mark.slow
def test_fused_trial_resumes_and_outlives_a_diverged_member(ray_session, tmp_path):
    """A fused trial that fails after epoch 1 resumes from its checkpoint (Tune's retry), and
    when member 1 diverges in epoch 2, members 0 and 2 run to the end, equal to a fused run
    that nobody disturbed; member 1's folder says why it ended."""
    import faultkit
    from ray import tune

    from lci.config import TrainConfig
    from lci.fused import FusedTrainer
    from study.experiment import trial_dirname
    from study.trials import read_result_lines, read_trials

    faultkit.configure(str(tmp_path / "markers"), hold_at=1)
    base = {"dataset": "digits", "noise": "sym:0.4", "epochs": 3, "batch_size": 64,
            "train_subset": 512, "threads": 1, "checkpoint_every": 1, "method": "lci"}
    labels = {"cell": "c", "phase": "evaluation", "study": "s", "experiment": "c__eval"}
    grid = tune.Tuner(
        faultkit.make_held_trainable(cpu=1, fn=faultkit.fused_fault_trainable),
        param_space={**base, **labels, "seed": 0, FUSED_KEY: [0, 1, 2]},
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="trials", storage_path=str(tmp_path / "s"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1))).fit()
    assert grid.num_errors == 0 and len(os.listdir(tmp_path / "markers")) == 1  # one retry
    # the retry went on from epoch 1's checkpoint (a fresh start would report epoch 1 again)
    reports = read_result_lines((Path(grid[0].path) / "result.json").read_text())
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert [r["members_live"] for r in reports] == [3, 2, 2]

    recs = {r.config["seed"]: r for r in read_trials(str(tmp_path / "s" / "trials"))}
    assert sorted(recs) == [0, 1, 2]
    assert recs[1].status() == "failed" and "DivergenceError" in recs[1].reason()
    # as an unfused trial reports it: its epoch-1 line, then the epoch that diverged
    assert recs[1].error_text and [l["epoch"] for l in recs[1].results()] == [1, 2]
    ref = FusedTrainer([TrainConfig.from_dict({**base, "seed": s}) for s in (0, 1, 2)])
    for _ in range(3):
        ref.train_epoch()
    for seed in (0, 2):
        r = recs[seed]
        assert r.status() == "finished"
        lines = r.results()
        assert [l["epoch"] for l in lines] == [1, 2, 3]
        for line, h in zip(lines, ref.members[seed].history):
            assert line["loss"] == pytest.approx(h["loss"], rel=1e-5)
            assert line["test_acc"] == pytest.approx(h["test_acc"], abs=1e-6)


def test_resume_refuses_a_changed_fuse_seeds(tmp_path):
    from lci.errors import LCIError
    from study.state import StudyState

    specs = []
    for fuse in (False, True):
        raw = json.loads(json.dumps(SPEC))
        raw["evaluation"]["fuse_seeds"] = fuse
        specs.append(load_spec(raw, storage=str(tmp_path)))
    assert specs[0].to_json()["fuse_seeds"] is None  # as in a study.json written before
    state = StudyState(specs[0].study_dir)
    state.open(specs[0].to_json())
    assert state.check(specs[0].to_json(), resume=True) is not None
    with pytest.raises(LCIError, match="changed: fuse_seeds"):
        state.check(specs[1].to_json(), resume=True)


def test_experiment_outcome_counts_each_fused_seed(tmp_path):
    from study.experiment import Experiment, ExperimentContext
    from study.graph import build_graph
    from study.trials import TrialRecord

    raw = json.loads(json.dumps(SPEC))
    raw["evaluation"]["fuse_seeds"] = True
    spec = load_spec(raw, storage=str(tmp_path))
    node = next(n for n in build_graph(spec) if n.phase == "evaluation")
    exp = Experiment(node, ExperimentContext(spec))
    cfg = {**exp.base_config({}), **exp.trial_configs()[0]}
    assert cfg[FUSED_KEY] == [0, 1] and node.trials == 1

    def rec(last):
        return TrialRecord("t", "", cfg, last, 1, None)

    assert exp.outcome([rec({"epoch": 2, "members_live": 2})]) == {
        "trials": 2, "finished": 2, "failed": 0}
    assert exp.outcome([rec({"epoch": 2, "members_live": 1})]) == {
        "trials": 2, "finished": 1, "failed": 1}
    assert exp.outcome([rec({"epoch": 1, "lci_failed": "every fused seed failed"})]) == {
        "trials": 2, "finished": 0, "failed": 2}

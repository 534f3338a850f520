"""A study with ``fuse_seeds``: each cell's seeds train as one fused trial (trainables.fused),
and everything that reads trials (study summary, analysis/, ``lci report``) sees what an
unfused study of the same spec gives: one trial folder per seed, the same tables."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import analysis
from study.runner import run_study
from study.spec import SpecError, load_spec
from study.trials import FUSED_KEY, TRIALS_DIR, read_study_trials

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

"""An interrupted `lci sweep` continued with `--resume`: finished trials are not rerun.

The driver runs in a subprocess with its own local Ray (not the session's). It gets a SIGINT
(Ctrl-C) in the middle of the second cell's search, after the first cell's search finished
and while the second one has one finished trial and one half-trained.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml

from study.results import read_trials

pytestmark = pytest.mark.slow

EPOCHS = 4
SPEC = {
    "name": "resumable",
    "fixed": {"dataset": "digits", "epochs": EPOCHS, "batch_size": 128, "checkpoint_every": 1,
              "eval_train": False},
    "noise": ["sym:0.6", "asym:0.4"],
    "methods": ["lci"],
    "search": {"trials": 2, "seed": 0, "max_concurrent": 1},
    "evaluation": {"seeds": 1},
}
FIRST, SECOND = "lci_gce_sym0.6__search", "lci_gce_asym0.4__search"


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _snapshot(exp_dir):
    return {r.trial_id: (os.path.getmtime(os.path.join(r.path, "result.json")), r.n_results)
            for r in read_trials(exp_dir)}


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    sdir = tmp_path / "results" / "resumable"
    cmd = [sys.executable, "-m", "lci_study", "sweep", str(spec_path), "--storage",
           str(tmp_path / "results"), "--num-cpus", "2"]
    log1 = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)
    try:
        # wait for: 2nd search has a finished trial and a started one; then press Ctrl-C
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            lines = sorted(r.n_results for r in read_trials(str(sdir / SECOND)))
            if len(lines) == 2 and EPOCHS > lines[0] >= 1 and lines[1] == EPOCHS:
                break
            time.sleep(0.1)
        assert p.poll() is None, open(tmp_path / "run1.log").read()[-3000:]
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
        log1.close()
    out1 = (tmp_path / "run1.log").read_text()
    assert rc == 130, out1[-3000:]  # interrupted, not finished
    state = json.loads((sdir / "study_state.json").read_text())
    assert state["experiments"][FIRST]["status"] == "done"
    assert SECOND not in state["experiments"]
    first_before = _snapshot(str(sdir / FIRST))
    second = {r.trial_id: r for r in read_trials(str(sdir / SECOND))}
    finished_id = next(t for t, r in second.items() if r.n_results == EPOCHS)
    finished_before = _snapshot(str(sdir / SECOND))[finished_id]
    best_first = state["best"]["lci_gce_sym0.6"]

    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=_env(),
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "finished earlier, skipped" in r.stdout and "resuming" in r.stdout
    # finished trials untouched: same ids, same result files, no new trials
    assert _snapshot(str(sdir / FIRST)) == first_before
    after = _snapshot(str(sdir / SECOND))
    assert set(after) == set(second)                  # the same two trials, none added
    assert after[finished_id] == finished_before      # the finished one was not rerun
    # the half-trained trial went on from its checkpoint: epochs never restart at 1
    resumed = next(x for x in read_trials(str(sdir / SECOND)) if x.trial_id != finished_id)
    with open(os.path.join(resumed.path, "result.json")) as fh:
        epochs = [json.loads(l)["epoch"] for l in fh if l.strip()]
    assert epochs.count(1) == 1 and epochs[-1] == EPOCHS
    # Optuna saw each search trial once, all complete, none left running
    storage = optuna.storages.RDBStorage(f"sqlite:///{sdir}/optuna.db")
    for cell in ("lci_gce_sym0.6", "lci_gce_asym0.4"):
        ot = optuna.load_study(study_name=cell, storage=storage).trials
        assert [t.state.name for t in ot] == ["COMPLETE", "COMPLETE"], cell
    state = json.loads((sdir / "study_state.json").read_text())
    assert all(v["status"] == "done" for v in state["experiments"].values())
    assert len(state["experiments"]) == 4
    assert state["best"]["lci_gce_sym0.6"] == best_first
    assert "lci_gce_asym0.4" in r.stdout and str(sdir) in r.stdout  # the final table


def test_existing_study_needs_resume(tmp_path):
    from lci_study.cli import main

    spec = dict(SPEC, search=None, methods=["ce"], evaluation={"seeds": 1})
    spec.pop("search")
    (tmp_path / "resumable").mkdir()
    (tmp_path / "resumable" / "study.json").write_text(json.dumps({"name": "resumable"}))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(spec_path), "--storage", str(tmp_path)]) == 2

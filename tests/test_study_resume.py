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

import optuna
import pytest
import yaml

from study.trials import experiment_trials

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


HERE = os.path.dirname(os.path.abspath(__file__))


def _env():
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return env


def _snapshot(sdir, experiment):
    return {r.trial_id: (os.path.getmtime(os.path.join(r.path, "result.json")), r.n_results)
            for r in experiment_trials(str(sdir), experiment)}


def _state(sdir):
    try:
        return json.loads((sdir / "study_state.json").read_text())
    except (OSError, ValueError):
        return {"experiments": {}}


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    """Both cells' searches run at once and their trials hold after epoch 1
    (tests/faultkit.py). The first cell is released and its search and evaluation finish;
    then Ctrl-C while the second search holds its first trial. ``--resume`` skips what
    finished, continues the held trial from its checkpoint, and completes the study."""
    import faultkit

    control = tmp_path / "control"
    os.makedirs(control)
    open(control / "hold", "w").close()
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    sdir = tmp_path / "results" / "resumable"
    cmd = [sys.executable, os.path.join(HERE, "held_driver.py"), str(control), str(spec_path),
           "--storage", str(tmp_path / "results"), "--num-cpus", "2"]
    log1 = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path)

    def alive():
        assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        return True

    try:
        def holding():
            return alive() and {r["cell"]: r for r in faultkit.ready(str(control))}

        held = faultkit.wait_for(lambda: len(holding()) == 2 and holding(),
                                 "both searches to hold a trial")
        first = held["lci_gce_sym0.6"]
        open(control / f"release-{first['cell']}", "w").close()  # its search and evaluation
        faultkit.wait_for(lambda: alive() and _state(sdir)["experiments"].get(
            "lci_gce_sym0.6__eval", {}).get("status") == "done", "the first cell to finish")
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
        log1.close()
    out1 = (tmp_path / "run1.log").read_text()
    assert rc == 130, out1[-3000:]  # interrupted, not finished
    state = _state(sdir)
    assert state["experiments"][FIRST]["status"] == "done"
    assert SECOND not in state["experiments"]
    first_before = _snapshot(sdir, FIRST)
    second_before = _snapshot(sdir, SECOND)
    assert len(second_before) == 1 and list(second_before.values())[0][1] == 1
    best_first = state["best"]["lci_gce_sym0.6"]

    open(control / "release-all", "w").close()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=_env(),
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"{FIRST}: finished earlier, skipped" in r.stdout
    assert f"{SECOND}: resuming" in r.stdout
    assert _snapshot(sdir, FIRST) == first_before   # finished trials untouched
    after = {x.trial_id: x for x in experiment_trials(str(sdir), SECOND)}
    assert set(second_before) <= set(after) and len(after) == 2
    # the held trial went on from its epoch-1 checkpoint: epochs never restart at 1
    resumed = after[next(iter(second_before))]
    with open(os.path.join(resumed.path, "result.json")) as fh:
        epochs = [json.loads(l)["epoch"] for l in fh if l.strip()]
    assert epochs == list(range(1, EPOCHS + 1))
    # Optuna saw each search trial once, all complete, none left running
    storage = optuna.storages.RDBStorage(f"sqlite:///{sdir}/optuna.db")
    for cell in ("lci_gce_sym0.6", "lci_gce_asym0.4"):
        ot = optuna.load_study(study_name=cell, storage=storage).trials
        assert [t.state.name for t in ot] == ["COMPLETE", "COMPLETE"], cell
    state = _state(sdir)
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

"""Real faults on a real local Ray: a trial's worker process killed with SIGKILL, and the
study's driver killed (with its local Ray) in the middle of a sweep."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

pytestmark = pytest.mark.slow


def _lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        out = []
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                pass
        return out


def test_killed_worker_is_retried_from_its_last_checkpoint(ray_session, tmp_path):
    """SIGKILL the trial's worker process after epoch 2: Tune restarts the trial on a new
    worker from its latest checkpoint; epochs go on from there, not from 1."""
    from ray import tune

    from study.runner import trial_dirname
    from trainables import make_trainable

    space = {"dataset": "digits", "noise": "sym:0.6", "epochs": 30, "checkpoint_every": 1,
             "eval_train": False, "method": "lci", "cell": "c", "phase": "evaluation",
             "study": "faults"}
    tuner = tune.Tuner(
        make_trainable(cpu=1), param_space=space,
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="kill", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)))
    killed = {}

    def killer():
        deadline = time.time() + 180
        while time.time() < deadline and not killed:
            for root, _, files in os.walk(tmp_path / "kill"):
                if "result.json" in files:
                    lines = _lines(os.path.join(root, "result.json"))
                    if lines and lines[-1].get("epoch", 0) >= 2:
                        killed["pid"], killed["epoch"] = lines[-1]["pid"], lines[-1]["epoch"]
                        os.kill(killed["pid"], signal.SIGKILL)
                        return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    grid = tuner.fit()
    t.join(timeout=5)
    assert killed and killed["epoch"] < 30, "the worker was never killed mid-run"
    assert grid.num_errors == 0 and len(grid) == 1
    lines = _lines(os.path.join(grid[0].path, "result.json"))
    pids = [l["pid"] for l in lines]
    assert killed["pid"] in pids and pids[-1] != killed["pid"]  # finished on a new worker
    after = [l["epoch"] for l in lines if l["pid"] != killed["pid"]]
    # resumed from the checkpoint of the last reported epoch (or the one before, if the kill
    # landed between report and checkpoint upload), never from scratch
    assert after[0] >= killed["epoch"] and after[0] > 1, after
    assert after[-1] == 30
    assert grid[0].metrics["epoch"] == 30


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    """Kill `lci sweep` and its local Ray (the whole process group, SIGKILL, as a crash or a
    reclaimed node would) during the evaluation phase; `--resume` keeps the finished search
    and the finished seeds, and completes the study."""
    from study.results import read_trials

    spec = {"name": "crash",
            "fixed": {"dataset": "digits", "epochs": 6, "checkpoint_every": 1,
                      "eval_train": False},
            "noise": ["sym:0.6"], "methods": ["gce"],
            "evaluation": {"seeds": 3}, "max_concurrent": 1}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    storage = tmp_path / "results"
    cmd = [sys.executable, "-m", "lci_study", "sweep", str(spec_path), "--storage", str(storage),
           "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    exp = storage / "crash" / "gce_sym0.6__eval"
    log = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                         start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and p.poll() is None:
            done = [r for r in read_trials(str(exp)) if r.n_results == 6]
            if len(done) >= 1 and len(read_trials(str(exp))) >= 2:
                break
            time.sleep(0.1)
        assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        time.sleep(1.0)  # let Tune snapshot its experiment state once more
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()
    def history_of(t):
        return [(l["epoch"], l["test_acc"], l["loss"])
                for l in _lines(os.path.join(t.path, "result.json"))]

    finished = {r.trial_id: (history_of(r),
                             os.path.getmtime(os.path.join(r.path, "run", "history.csv")))
                for r in read_trials(str(exp)) if r.n_results == 6}
    assert finished
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    trials = read_trials(str(exp))
    assert sorted(t.n_results for t in trials) == [6, 6, 6]
    for tid, (hist, mtime) in finished.items():  # finished seeds were kept, not retrained
        t = next(x for x in trials if x.trial_id == tid)
        assert history_of(t) == hist
        assert os.path.getmtime(os.path.join(t.path, "run", "history.csv")) == mtime
    seeds = sorted(json.load(open(os.path.join(t.path, "params.json")))["seed"] for t in trials)
    assert seeds == [0, 1, 2]

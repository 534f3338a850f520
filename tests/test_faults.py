"""Real faults on a real local Ray, each at a moment the trial itself chose (tests/faultkit.py):
a trial's worker killed with SIGKILL, the study's driver killed while several experiments run,
and SIGTERM to the driver. Nothing here waits for an amount of time."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

import faultkit

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


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
    """The trial holds after reporting epoch 2 (with its checkpoint); once the driver has
    recorded that result, its worker is SIGKILLed. Tune restarts the trial on a new worker
    from the epoch-2 checkpoint: the next epoch is 3, not 1."""
    from ray import tune

    from study.experiment import trial_dirname

    control = str(tmp_path / "control")
    faultkit.configure(control, hold_at=2)
    open(os.path.join(control, "hold"), "w").close()
    space = {"dataset": "digits", "noise": "sym:0.6", "epochs": 4, "checkpoint_every": 1,
             "eval_train": False, "method": "lci", "cell": "c", "phase": "evaluation",
             "study": "faults", "seed": 0}
    tuner = tune.Tuner(
        faultkit.make_held_trainable(cpu=1), param_space=space,
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="kill", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)))
    killed = {}

    def strike():
        info = faultkit.wait_for(lambda: faultkit.ready(control), "the trial to hold")[0]
        result = os.path.join(str(tmp_path), "kill", info["trial_id"], "result.json")
        faultkit.wait_for(lambda: any(l.get("epoch") == 2 for l in _lines(result)),
                          "the driver to record epoch 2")
        os.unlink(os.path.join(control, "hold"))  # the retry runs straight through
        killed.update(info)
        os.kill(info["pid"], signal.SIGKILL)

    import threading

    t = threading.Thread(target=strike, daemon=True)
    t.start()
    grid = tuner.fit()
    t.join(timeout=60)
    assert killed, "the worker was never killed"
    assert grid.num_errors == 0 and len(grid) == 1
    lines = _lines(os.path.join(grid[0].path, "result.json"))
    pids = [l["pid"] for l in lines]
    assert killed["pid"] in pids and pids[-1] != killed["pid"]  # finished on a new worker
    assert [l["epoch"] for l in lines] == [1, 2, 3, 4]          # resumed at 3, nothing repeated
    assert [l["epoch"] for l in lines if l["pid"] != killed["pid"]] == [3, 4]
    assert grid[0].metrics["epoch"] == 4


def _spec(tmp_path, name, cells_methods, seeds=2, epochs=3):
    spec = {"name": name,
            "fixed": {"dataset": "digits", "epochs": epochs, "checkpoint_every": 1,
                      "eval_train": False},
            "noise": ["sym:0.6"], "methods": cells_methods, "evaluation": {"seeds": seeds}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _driver(control, spec_path, storage, num_cpus, *extra, **kw):
    cmd = [sys.executable, os.path.join(HERE, "held_driver.py"), str(control),
           str(spec_path), "--storage", str(storage), "--num-cpus", str(num_cpus), *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return cmd, env


def _finished(study_dir, epochs):
    from study.trials import read_study_trials

    return {(exp, r.trial_id): r for exp, recs in read_study_trials(study_dir).items()
            for r in recs if r.finished(epochs)}


def test_killed_driver_resumes_with_several_experiments_running(tmp_path):
    """Three cells x 2 seeds on 3 CPUs: the trials hold after epoch 1. One seed of the first
    cell is released and finishes; then, with trials of at least two experiments holding,
    the driver and its local Ray are SIGKILLed (the whole process group, as a crash or a
    reclaimed node would). ``--resume`` keeps the finished trial untouched and completes the
    study with every cell and seed."""
    control = tmp_path / "control"
    os.makedirs(control)
    open(control / "hold", "w").close()
    spec_path = _spec(tmp_path, "crash", ["ce", "gce", "lci"])
    storage = tmp_path / "results"
    study_dir = storage / "crash"
    cmd, env = _driver(control, spec_path, storage, 3)
    log = open(tmp_path / "run1.log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                         start_new_session=True)
    try:
        def alive():
            assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
            return True

        first = faultkit.wait_for(lambda: alive() and faultkit.ready(str(control)),
                                  "a trial to hold")[0]
        open(control / f"release-{first['cell']}-{first['seed']}", "w").close()
        faultkit.wait_for(lambda: alive() and _finished(str(study_dir), 3),
                          "the released trial to finish")

        def two_experiments_holding():
            held = [r for r in faultkit.ready(str(control))
                    if (r["cell"], r["seed"]) != (first["cell"], first["seed"])]
            return alive() and len({r["cell"] for r in held}) >= 2

        faultkit.wait_for(two_experiments_holding, "trials of two experiments to hold")
        assert p.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        log.close()
    before = _finished(str(study_dir), 3)
    assert len(before) == 1
    snap = {k: (_lines(os.path.join(r.path, "result.json")),
                os.path.getmtime(os.path.join(r.path, "run", "history.csv")))
            for k, r in before.items()}

    open(control / "release-all", "w").close()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    after = _finished(str(study_dir), 3)
    assert len(after) == 6
    for k, (lines, mtime) in snap.items():  # the finished trial was kept, not retrained
        assert _lines(os.path.join(after[k].path, "result.json")) == lines
        assert os.path.getmtime(os.path.join(after[k].path, "run", "history.csv")) == mtime
    cells_seeds = sorted((rec.config["cell"], rec.config["seed"]) for rec in after.values())
    assert cells_seeds == sorted((c, s) for c in ("ce_sym0.6", "gce_sym0.6", "lci_gce_sym0.6")
                                 for s in (0, 1))
    summary = json.load(open(study_dir / "summary.json"))
    assert [c["seeds"] for c in summary["cells"]] == [[0, 1]] * 3


def test_sigterm_stops_the_driver_like_ctrl_c(tmp_path):
    """SIGTERM (how schedulers and `kill` stop jobs) while a trial holds: the driver saves
    Tune's state and exits 143 with the --resume line; --resume then completes the study."""
    control = tmp_path / "control"
    os.makedirs(control)
    open(control / "hold", "w").close()
    spec_path = _spec(tmp_path, "term", ["ce"], seeds=2, epochs=2)
    storage = tmp_path / "results"
    cmd, env = _driver(control, spec_path, storage, 2)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         cwd=tmp_path)
    try:
        faultkit.wait_for(lambda: faultkit.ready(str(control)) or p.poll() is not None,
                          "a trial to hold")
        assert p.poll() is None
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 143, (out + err)[-3000:]
    assert "--resume" in err and "Traceback" not in err, err[-3000:]
    open(control / "release-all", "w").close()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert len(_finished(str(storage / "term"), 2)) == 2

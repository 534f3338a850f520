"""What the study driver refuses, and how: the study lock, resources the cluster does not
have, data sets that are missing, errors that would recur, and the one trial reader."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from lci.errors import LCIError

HERE = os.path.dirname(os.path.abspath(__file__))


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return env


def _lci(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lci_study", *args], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=600)


def _spec(tmp_path, **over):
    spec = {"name": "s", "fixed": {"dataset": "digits", "epochs": 2, "eval_train": False},
            "noise": ["sym:0.6"], "methods": ["ce"], "evaluation": {"seeds": 1}}
    spec.update(over)
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _tree(path):
    return sorted(os.path.relpath(os.path.join(r, f), path)
                  for r, _, fs in os.walk(path) for f in fs) if os.path.exists(path) else None


# --------------------------------------------------------------------------------- the lock
def test_second_driver_is_refused_at_once_naming_the_holder(tmp_path):
    from study.lock import StudyLock

    study_dir = tmp_path / "res" / "s"
    lock = StudyLock(str(study_dir))
    lock.acquire()
    try:
        before = _tree(study_dir)
        r = _lci("sweep", str(_spec(tmp_path)), "--storage", str(tmp_path / "res"), "--resume",
                 cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert f"PID {os.getpid()}" in r.stderr and socket.gethostname() in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert _tree(study_dir) == before  # nothing written by the refused driver
    finally:
        lock.release()


def _lock_record(study_dir, gen=0, **over):
    """A lock record as a driver writes it (``over`` simulates another host, a dead PID, an
    old renewal)."""
    from study.lock import generation_path

    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": "earlier",
            "renewed": time.time(), "lease_s": 60.0, "token": f"t{gen}", **over}
    os.makedirs(study_dir, exist_ok=True)
    with open(generation_path(str(study_dir), gen), "w") as f:
        f.write(json.dumps(info))
    return info


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from study.lock import StudyLock, holder

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # a PID that is certainly dead now
    _lock_record(tmp_path / "s", pid=p.pid)  # a fresh lease, but its process is gone
    said = []
    lock = StudyLock(str(tmp_path / "s"), echo=said.append)
    lock.acquire()
    try:
        assert holder(str(tmp_path / "s"))["pid"] == os.getpid()
        assert said and "stale" in said[0] and str(p.pid) in said[0]
    finally:
        lock.release()


def test_live_lease_of_another_host_is_respected(tmp_path):
    from study.lock import StudyLock, holder

    _lock_record(tmp_path / "s", pid=1, host="elsewhere", renewed=1000.0, lease_s=60)
    lock = StudyLock(str(tmp_path / "s"), clock=lambda: 1030.0)  # renewed 30 s ago
    with pytest.raises(LCIError, match=r"'elsewhere'.*expires in 30s"):
        lock.acquire()
    assert holder(str(tmp_path / "s"))["host"] == "elsewhere"  # untouched


def test_expired_lease_of_a_dead_host_is_taken_over(tmp_path):
    """The head that held the study is gone (its lease ran out): a driver on a new host takes
    over without anyone deleting files; the old record names the dead host."""
    from study.lock import StudyLock, holder

    _lock_record(tmp_path / "s", pid=1, host="dead-head", renewed=1000.0, lease_s=60)
    said = []
    lock = StudyLock(str(tmp_path / "s"), echo=said.append, clock=lambda: 1061.0)
    lock.acquire()
    try:
        now = holder(str(tmp_path / "s"))
        assert now["host"] == socket.gethostname() and now["pid"] == os.getpid()
        assert len(said) == 1 and "expired" in said[0] and "dead-head" in said[0]
        # a third driver is refused: the lease is live again, and ours
        with pytest.raises(LCIError, match=f"PID {os.getpid()}"):
            StudyLock(str(tmp_path / "s"), clock=lambda: 1062.0).acquire()
    finally:
        lock.release()
    assert holder(str(tmp_path / "s"))["released"] is True


def _race_for_lock(study_dir, barrier, results, hold):
    from study.lock import StudyLock

    lock = StudyLock(study_dir, echo=lambda m: None)
    barrier.wait()
    try:
        lock.acquire()
        results.put("won")
    except LCIError as e:
        results.put(f"refused: {e}")
        lock = None
    hold.wait()  # winners keep the lease until every driver has tried
    if lock is not None:
        lock.release()


def test_two_drivers_taking_over_an_expired_lease_only_one_wins(tmp_path):
    import multiprocessing as mp

    _lock_record(tmp_path / "s", pid=1, host="dead-head", renewed=0.0, lease_s=60)
    ctx = mp.get_context("spawn")
    n = 4
    barrier, hold, results = ctx.Barrier(n), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race_for_lock, args=(str(tmp_path / "s"), barrier, results,
                                                      hold)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    hold.set()
    for p in procs:
        p.join(timeout=120)
    assert sorted(o.split(":")[0] for o in outcomes) == ["refused"] * (n - 1) + ["won"]
    assert all("being run by another driver" in o for o in outcomes if o != "won")


def test_renewal_keeps_the_lease_and_a_taken_over_lease_stops_the_driver(tmp_path):
    from study.lock import StudyLock, holder

    now = [1000.0]
    lost = []
    lock = StudyLock(str(tmp_path / "s"), lease_s=3600, clock=lambda: now[0],
                     on_lost=lost.append)
    lock.acquire()
    try:
        now[0] = 1000.0 + 3000
        assert lock.renew()
        assert holder(str(tmp_path / "s"))["renewed"] == 4000.0
        # a driver elsewhere took over (this one stalled past its lease): the next renewal
        # must notice, and the driver stop
        _lock_record(tmp_path / "s", gen=lock.gen + 1, host="new-head", pid=7)
        assert not lock.renew()
        assert len(lost) == 1 and "new-head" in lost[0] and "taken over" in lost[0]
    finally:
        lock.release()
    assert holder(str(tmp_path / "s"))["host"] == "new-head"  # our release left it alone


def test_the_renewal_thread_notices_a_takeover(tmp_path):
    import threading

    from study.lock import StudyLock

    noticed = threading.Event()
    lock = StudyLock(str(tmp_path / "s"), lease_s=0.2, on_lost=lambda m: noticed.set())
    lock.acquire()
    try:
        _lock_record(tmp_path / "s", gen=lock.gen + 1, host="new-head", pid=7)
        assert noticed.wait(120)  # the thread renews every lease/4
    finally:
        lock.release()


def test_sweep_resumes_a_study_whose_lock_a_dead_host_left(tmp_path):
    """End to end: a live lease elsewhere refuses the study (exit 2, nothing written); once
    that lease has expired, the same command runs the study without anyone deleting files."""
    from study.lock import holder

    study = tmp_path / "res" / "s"
    _lock_record(study, pid=1, host="dead-head", renewed=time.time() + 3600)
    before = _tree(study)
    r = _lci("sweep", str(_spec(tmp_path)), "--storage", str(tmp_path / "res"), "--resume",
             cwd=tmp_path)
    assert r.returncode == 2 and "dead-head" in r.stderr, r.stderr
    assert _tree(study) == before
    _lock_record(study, pid=1, host="dead-head", renewed=time.time() - 3600)
    r = _lci("sweep", str(_spec(tmp_path)), "--storage", str(tmp_path / "res"), "--resume",
             "--num-cpus", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "taking over the expired lock" in r.stdout and "dead-head" in r.stdout
    assert (study / "summary.json").is_file()
    assert holder(str(study))["released"] is True


# ---------------------------------------------------------------------- checks before Ray
def test_dry_run_checks_every_cells_data_set(tmp_path):
    missing = tmp_path / "gone.npz"
    r = _lci("sweep", str(_spec(tmp_path, fixed={"dataset": str(missing), "epochs": 2})),
             "--dry-run", cwd=tmp_path)
    assert r.returncode == 2 and "gone.npz" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_data_set_fails_before_ray_and_writes_nothing(tmp_path):
    missing = tmp_path / "gone.npz"
    r = _lci("sweep", str(_spec(tmp_path, fixed={"dataset": str(missing), "epochs": 2})),
             "--storage", str(tmp_path / "res"), cwd=tmp_path)
    assert r.returncode == 2 and "gone.npz" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "res").exists()


def test_resources_beyond_every_node_are_refused(ray_session):
    from study.runner import check_resources
    from study.spec import load_spec

    base = {"name": "r", "fixed": {"dataset": "digits"}, "noise": ["sym:0.6"],
            "methods": ["ce"]}
    with pytest.raises(LCIError, match=r"cpu=100 gpu=0.*2 CPU / 0 GPU"):
        check_resources(load_spec({**base, "resources": {"cpu": 100}}))
    with pytest.raises(LCIError, match=r"cpu=1 gpu=1.*0 GPU"):
        check_resources(load_spec({**base, "resources": {"gpu": 1}}))
    assert check_resources(load_spec({**base, "resources": {"cpu": 1}})) == 2


@pytest.mark.slow
def test_refused_resources_exit_2_and_write_nothing(tmp_path):
    r = _lci("sweep", str(_spec(tmp_path, resources={"cpu": 100})), "--storage",
             str(tmp_path / "res"), "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 2 and "cpu=100" in r.stderr, r.stderr
    assert not (tmp_path / "res" / "s").exists()


def test_study_folder_of_the_older_layout_is_refused_on_resume(tmp_path):
    """A 0.2 study folder (one Tune run per experiment folder) cannot be continued by one
    Tune run for the whole study: --resume says so, exit 2, nothing touched."""
    from study.spec import load_spec

    spec_path = _spec(tmp_path)
    storage = tmp_path / "res"
    spec = load_spec(str(spec_path), storage=str(storage))
    sdir = storage / "s"
    (sdir / "ce_sym0.6__eval").mkdir(parents=True)
    (sdir / "ce_sym0.6__eval" / "tuner.pkl").write_bytes(b"old")
    (sdir / "study.json").write_text(json.dumps(spec.to_json()))
    before = _tree(str(sdir))
    r = _lci("sweep", str(spec_path), "--storage", str(storage), "--resume", "--num-cpus", "2",
             cwd=tmp_path)
    assert r.returncode == 2 and "lci-study 0.2" in r.stderr, r.stderr
    assert _tree(str(sdir)) == before


# ------------------------------------------------------------------- lci train, one run
def test_refused_resume_changes_nothing_and_plain_resume_still_works(tmp_path):
    out = tmp_path / "run"
    r = _lci("train", "--set", "epochs=1", "--set", "eval_train=false", "--out", str(out),
             "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = (out / "config.json").read_text()
    r = _lci("train", "--out", str(out), "--resume", "--set", "epochs=1", "--set", "lr=0.5",
             "--set", "eval_train=false", cwd=tmp_path)
    assert r.returncode == 2 and "lr" in r.stderr
    assert (out / "config.json").read_text() == before
    r = _lci("train", "--out", str(out), "--resume", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_diverging_run_is_one_line_and_its_own_exit_status(tmp_path):
    from lci.cli import EXIT_DIVERGED

    r = _lci("train", "--set", "method=ce", "--set", "lr=1000", "--set", "epochs=3",
             "--set", "eval_train=false", "--out", str(tmp_path / "d"), "--quiet", cwd=tmp_path)
    assert r.returncode == EXIT_DIVERGED == 3
    assert "diverged" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------- Optuna after a crash
def test_resume_marks_orphaned_running_optuna_trials_failed(tmp_path):
    import optuna

    from study.searcher import make_searcher
    from study.spec import parse_param

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    s = make_searcher([parse_param("m", [-3, 3], "test")], metric="val_acc", mode="max", seed=0,
                      n_startup_trials=1, epochs=2, study_name="cell", storage=storage)
    s.set_search_properties("val_acc", "max", {})
    s.suggest("t1")
    ckpt = str(tmp_path / "searcher.pkl")
    s.save(ckpt)
    s.suggest("t2")  # asked after the last snapshot, then the driver died
    states = lambda: [t.state for t in optuna.load_study(study_name="cell",
                                                         storage=storage).trials]
    assert states() == [optuna.trial.TrialState.RUNNING] * 2
    restored = make_searcher([parse_param("m", [-3, 3], "test")], metric="val_acc", mode="max",
                             seed=0, n_startup_trials=1, epochs=2, study_name="cell",
                             storage=storage)
    restored.restore(ckpt)
    assert states() == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL]


# ------------------------------------------------------------------ the one trial reader
def _trial(folder, epochs_done, planned=3, error=None):
    os.makedirs(folder)
    with open(os.path.join(folder, "params.json"), "w") as fh:
        json.dump({"dataset": "digits", "epochs": planned, "method": "ce", "seed": 0,
                   "cell": "ce_sym0.6", "phase": "evaluation", "study": "x"}, fh)
    with open(os.path.join(folder, "result.json"), "w") as fh:
        for e in range(1, epochs_done + 1):
            fh.write(json.dumps({"epoch": e, "test_acc": 0.5, "trial_id": os.path.basename(folder),
                                 "training_iteration": e}) + "\n")
    if error:
        with open(os.path.join(folder, "error.txt"), "w") as fh:
            fh.write(error)


def test_one_definition_of_finished_and_failed(tmp_path):
    """A trial that failed once and recovered (Tune left its error.txt) counts as finished
    for the study's summary and for analysis/ alike; one that stopped on its error is failed."""
    from study.trials import FAILED, FINISHED, INCOMPLETE, read_trials

    exp = tmp_path / "study" / "ce_sym0.6__eval"
    _trial(str(exp / "recovered"), 3, error="RuntimeError: worker died\n")
    _trial(str(exp / "broken"), 1, error="Traceback...\nRuntimeError: boom\n")
    _trial(str(exp / "running"), 2)
    st = {r.trial_id: r.status() for r in read_trials(str(exp))}
    assert st == {"recovered": FINISHED, "broken": FAILED, "running": INCOMPLETE}
    assert [r.reason() for r in read_trials(str(exp)) if r.trial_id == "broken"] == \
        ["RuntimeError: boom"]


# ------------------------------------------------------------------------------ GPU visibility
_GPU_STUDY = """
import logging, sys
import ray
from study.runner import run_study
from study.spec import load_spec
# a node that declares a GPU on a machine whose torch sees none: what a `ray up` worker
# without the NVIDIA runtime's variables looks like
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False,
         logging_level=logging.WARNING, log_to_driver=False)
summary = run_study(load_spec(sys.argv[1], storage=sys.argv[2]))
print("ERRORS", summary.errors)
"""


def test_trial_given_a_gpu_that_torch_cannot_see_fails_at_once_and_is_not_retried(tmp_path):
    import torch

    from study.trials import FAILED, read_study_trials

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    spec = _spec(tmp_path, resources={"cpu": 1, "gpu": 1}, max_failures=3)
    r = subprocess.run([sys.executable, "-c", _GPU_STUDY, str(spec), str(tmp_path / "res")],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert r.returncode == 0 and "ERRORS 1" in r.stdout, r.stdout + r.stderr
    (recs,) = read_study_trials(str(tmp_path / "res" / "s")).values()
    (rec,) = recs
    assert rec.status() == FAILED
    with open(os.path.join(rec.path, "error.txt")) as fh:
        (line,) = fh.read().strip().splitlines()
    assert f"node {socket.gethostname()}" in line and "torch sees no CUDA device" in line
    with open(os.path.join(rec.path, "result.json")) as fh:
        lines = [json.loads(l) for l in fh if l.strip()]
    # one attempt, one report, no epoch trained: max_failures=3 would have retried it
    assert len(lines) == 1 and lines[0]["epoch"] == 0
    assert not [d for d in os.listdir(rec.path) if d.startswith("checkpoint_")]


# ---------------------------------------------------------------------------- secrets in URLs
def test_storage_passwords_are_masked_in_study_json_and_printed_lines(tmp_path, monkeypatch):
    from study.optuna_storage import dashboard_command
    from study.secrets import mask
    from study.spec import load_spec
    from study.state import STUDY_FILE, StudyState

    db = "postgresql://lci:s3cret-pw@db.example:5432/optuna"
    spec = load_spec(str(_spec(tmp_path, optuna_storage=db, tracking={"mlflow": {
        "uri": "https://me:mlflow-pw@mlflow.example/x?password=q-pw"}})),
        storage=str(tmp_path / "res"))
    state = StudyState(spec.study_dir)
    state.open(spec.to_json())
    written = (tmp_path / "res" / "s" / STUDY_FILE).read_text()
    for pw in ("s3cret-pw", "mlflow-pw", "q-pw"):
        assert pw not in written
    assert "postgresql://lci:***@db.example:5432/optuna" in written
    assert "s3cret-pw" not in dashboard_command(db, spec.study_dir)
    state.check(spec.to_json(), resume=True)  # the masked study.json still resumes
    # the ${VAR} form is not a secret and stays as written
    assert mask("postgresql://lci:${PW}@h/db") == "postgresql://lci:${PW}@h/db"
    monkeypatch.setenv("PW", "from-env")
    assert dashboard_command("postgresql://lci:${PW}@h/db", spec.study_dir) == \
        "optuna-dashboard postgresql://lci:${PW}@h/db"  # runs as printed, in the same shell
    assert mask("sqlite:////a/b.db") == "sqlite:////a/b.db"


def test_an_error_line_never_shows_a_password(tmp_path):
    r = _lci("sweep", "https://u:hunter2@127.0.0.1:1/spec.yaml", "--dry-run", cwd=tmp_path)
    assert r.returncode == 2 and "https://u:***@127.0.0.1:1/spec.yaml" in r.stderr, r.stderr


def test_optuna_storage_reads_a_password_from_the_environment(tmp_path, monkeypatch):
    from study.optuna_storage import resolve_optuna_storage
    from study.spec import load_spec

    with pytest.raises(LCIError, match=r"\$\{LCI_TEST_DB\}.*not set"):
        load_spec(str(_spec(tmp_path, optuna_storage="sqlite:///${LCI_TEST_DB}")))
    monkeypatch.setenv("LCI_TEST_DB", str(tmp_path / "x.db"))
    spec = load_spec(str(_spec(tmp_path, optuna_storage="sqlite:///${LCI_TEST_DB}")))
    assert spec.optuna_storage == "sqlite:///${LCI_TEST_DB}"  # stays unexpanded in the spec
    store = resolve_optuna_storage(spec.optuna_storage, str(tmp_path / "res"))
    import optuna

    optuna.create_study(study_name="t", storage=store)
    assert (tmp_path / "x.db").is_file()


def test_a_fused_trial_given_a_gpu_that_torch_cannot_see_fails_at_once_too(tmp_path):
    import glob

    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    spec = _spec(tmp_path, resources={"cpu": 1, "gpu": 1}, max_failures=3,
                 evaluation={"seeds": 2, "fuse_seeds": True})
    r = subprocess.run([sys.executable, "-c", _GPU_STUDY, str(spec), str(tmp_path / "res")],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 of 2 trials finished, 2 failed" in r.stdout, r.stdout
    (err,) = glob.glob(str(tmp_path / "res" / "s" / "trials" / "*" / "error.txt"))
    with open(err) as fh:
        (line,) = fh.read().strip().splitlines()
    assert f"node {socket.gethostname()}" in line and "torch sees no CUDA device" in line
    with open(os.path.join(os.path.dirname(err), "result.json")) as fh:
        assert len([l for l in fh if l.strip()]) == 1  # one attempt, not retried

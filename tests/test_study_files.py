"""A study folder whose files were cut short, corrupted or changed, services that are down,
and bad numbers: every reader copes or refuses with one line, and a refusal changes nothing.

The fast tests build folders by hand; the ``slow`` ones run real studies on local Ray (one
small study shared by the refusal tests, and a study that fills a real tmpfs)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from lci.errors import LCIError

import synthetic

HERE = os.path.dirname(os.path.abspath(__file__))


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _lci(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "lci_study", *args], capture_output=True,
                          text=True, env=_env(), cwd=cwd, timeout=timeout)


def _hashes(root):
    """sha256 of every file under root, by relative path."""
    out = {}
    for r, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(r, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _one_line(stderr):
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


# ------------------------------------------------------------------------- torn trial files
def _trial(tmp_path, name, params_text=None, result_text=None, epochs=3):
    params = {"dataset": "digits", "epochs": epochs, "method": "ce", "noise": "sym:0.6",
              "seed": 0, "cell": "ce_sym0.6", "phase": "evaluation", "study": "s",
              "experiment": "ce_sym0.6__eval"}
    metrics = synthetic.epoch_metrics(params, 0.8, epochs)
    d = synthetic.write_tune_trial(tmp_path / "s" / "trials", name, params, metrics,
                                   trial_id=name.rsplit("-", 1)[-1])
    if params_text is not None:
        (d / "params.json").write_text(params_text)
    if result_text is not None:
        (d / "result.json").write_text(result_text)
    return d


def test_empty_params_json_is_an_incomplete_trial_for_every_reader(tmp_path):
    """Tune creates params.json before it writes it; a driver that dies (or a disk that fills)
    in between leaves it empty. The study's reader, the summary and analysis/ read such a
    folder as a trial that never started, next to a finished one, instead of crashing."""
    from study.results import Summary
    from study.trials import INCOMPLETE, read_study_trials

    _trial(tmp_path, "ce_sym0.6__eval-aaaa0001")
    _trial(tmp_path, "ce_sym0.6__eval-aaaa0002", params_text="")
    _trial(tmp_path, "ce_sym0.6__eval-aaaa0003", params_text='{"dataset": "dig')
    recs = read_study_trials(str(tmp_path / "s"))["ce_sym0.6__eval"]
    by_id = {r.trial_id: r for r in recs}
    assert set(by_id) == {"aaaa0001", "ce_sym0.6__eval-aaaa0002", "ce_sym0.6__eval-aaaa0003"}
    torn = [r for r in recs if r.torn]
    assert len(torn) == 2 and all(r.status() == INCOMPLETE for r in torn)
    assert by_id["aaaa0001"].status() == "finished"
    s = Summary(str(tmp_path / "s"), "test_acc")
    for r in recs:  # the summary counts failures only; a torn trial is not one
        if r.status() == "failed":
            s.add_failure("ce_sym0.6__eval", r)
    assert s.errors == 0

    import analysis

    with pytest.warns(UserWarning, match="params.json"):
        df = analysis.load(str(tmp_path / "s"))
    assert sorted(df["status"]) == ["finished", "incomplete", "incomplete"]


def test_half_written_result_json_keeps_the_whole_lines(tmp_path):
    from study.trials import read_study_trials

    d = _trial(tmp_path, "ce_sym0.6__eval-bbbb0001")
    lines = (d / "result.json").read_text().splitlines()
    (d / "result.json").write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    rec = read_study_trials(str(tmp_path / "s"))["ce_sym0.6__eval"][0]
    assert rec.n_results == 2 and rec.epoch == 2 and rec.status() == "incomplete"
    (d / "result.json").write_bytes(b"\xff\xfe\x00garbage")  # not even text
    rec = read_study_trials(str(tmp_path / "s"))["ce_sym0.6__eval"][0]
    assert rec.n_results == 0 and rec.status() == "incomplete"

    import analysis

    df = analysis.load(str(tmp_path / "s"))
    assert list(df["status"]) == ["incomplete"]


def test_unreadable_json_in_a_study_folder_is_a_warning_in_analysis(tmp_path):
    """analysis/ warned through a module it never imported (NameError in `lci report`)."""
    import analysis

    _trial(tmp_path, "ce_sym0.6__eval-cccc0001")
    (tmp_path / "s" / "study.json").write_text("{not json")
    with pytest.warns(UserWarning, match="study.json"):
        df = analysis.load(str(tmp_path / "s"))
    assert len(df) == 1


def test_storage_write_leaves_the_old_file_whole_when_the_disk_is_full(tmp_path, monkeypatch):
    """A write that fails half-way (ENOSPC) keeps the previous file and leaves no temp file."""
    import errno

    from study import storage

    p = str(tmp_path / "state.json")
    storage.write_json(p, {"a": 1})
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        storage.write_json(p, {"a": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert storage.read_json(p) == {"a": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_torn_state_files_are_one_line_errors(tmp_path):
    from study.state import STATE_FILE, STUDY_FILE, StudyState

    d = tmp_path / "s"
    d.mkdir()
    (d / STUDY_FILE).write_text(json.dumps({"name": "s", "spec": {"name": "s"}}))
    (d / STATE_FILE).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(LCIError, match=r"study_state\.json is unreadable \(not UTF-8"):
        StudyState(str(d)).check({"name": "s", "spec": {"name": "s"}}, resume=True)
    (d / STATE_FILE).write_text("")
    with pytest.raises(LCIError, match=r"study_state\.json is unreadable \(empty\)"):
        StudyState(str(d)).check({"name": "s", "spec": {"name": "s"}}, resume=True)
    (d / STUDY_FILE).write_text('{"name": "s", "sp')
    with pytest.raises(LCIError, match=r"study\.json is unreadable \(not valid JSON"):
        StudyState(str(d)).check({"name": "s", "spec": {"name": "s"}}, resume=True)


# -------------------------------------------------------------------------- changed specs
def test_spec_changes_split_into_result_changing_and_neutral():
    from study.state import spec_changes

    old = {"spec": {"name": "s", "fixed": {"epochs": 4, "checkpoint_every": 1},
                    "noise": ["sym:0.8"], "resources": {"cpu": 1}, "max_concurrent": 2,
                    "search": {"trials": 8, "max_concurrent": 2}}}
    new = {"spec": {"name": "s", "fixed": {"epochs": 12, "checkpoint_every": 5},
                    "noise": ["sym:0.8"], "resources": {"cpu": 2, "gpu": 1},
                    "max_concurrent": 4, "search": {"trials": 8, "max_concurrent": 1},
                    "tracking": {"mlflow": {"uri": "http://x"}}}}
    changed, neutral = spec_changes(old, new)
    assert changed == ["fixed.epochs: 4 -> 12"]
    assert "max_concurrent: 2 -> 4" in neutral and "resources.gpu: (unset) -> 1" in neutral
    assert "fixed.checkpoint_every: 1 -> 5" in neutral
    assert "search.max_concurrent: 2 -> 1" in neutral
    assert any(n.startswith("tracking.mlflow.uri") for n in neutral)
    # the same spec as written, read differently by this version: named as such
    changed, _ = spec_changes({"spec": {"a": 1}, "cells": [1]}, {"spec": {"a": 1}, "cells": [2]})
    assert changed == ["cells (as this version reads the spec)"]
    assert spec_changes(old, old) == ([], [])


# ------------------------------------------------------------------------ services, numbers
def test_unreachable_mlflow_and_a_database_without_its_driver_are_refused_fast(tmp_path):
    """Before Ray starts: one line, exit 2, the password masked, nothing written."""
    spec = {"name": "s", "fixed": {"dataset": "digits", "epochs": 1}, "noise": ["sym:0.6"],
            "methods": ["ce"], "evaluation": {"seeds": 1},
            "tracking": {"mlflow": {"uri": "http://127.0.0.1:9"}}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(spec))
    r = _lci("sweep", str(tmp_path / "a.yaml"), "--storage", str(tmp_path / "res"),
             cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert "tracking.mlflow.uri=http://127.0.0.1:9" in line and "cannot be reached" in line
    assert not (tmp_path / "res").exists()

    spec.pop("tracking")
    spec.update(methods=["lci"], search={"trials": 2},
                optuna_storage="postgresql://alice:s3cret@127.0.0.1:9/optuna")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(spec))
    r = _lci("sweep", str(tmp_path / "b.yaml"), "--storage", str(tmp_path / "res"),
             cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    line = _one_line(r.stderr)
    assert "driver is not installed" in line and "psycopg2" in line
    assert "s3cret" not in r.stderr and "alice:***@127.0.0.1:9" in line
    assert not (tmp_path / "res").exists()


def test_preflight_masks_passwords_and_times_out():
    import threading

    from study.preflight import _within, masked

    assert masked("postgresql://u:pw@db.example:5432/x") == "postgresql://u:***@db.example:5432/x"
    assert masked("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    gate = threading.Event()
    with pytest.raises(LCIError, match="no answer within 0.1 s"):
        _within(0.1, gate.wait, "svc")  # a service that never answers
    gate.set()


@pytest.mark.parametrize("args", [["--num-cpus", "-3"], ["--num-cpus", "0"],
                                  ["--max-concurrent", "0"]])
def test_bad_numbers_on_the_command_line(tmp_path, args):
    r = _lci("sweep", "demo", "--storage", str(tmp_path / "res"), *args, cwd=tmp_path,
             timeout=120)
    assert r.returncode == 2
    assert args[0] in _one_line(r.stderr) and "at least 1" in r.stderr
    assert not (tmp_path / "res").exists()
    r = _lci("demo", "--out", str(tmp_path / "d"), "--num-cpus", "-1", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "--num-cpus=-1" in _one_line(r.stderr)


# ------------------------------------------------------------------------------ lci train
def test_train_refuses_a_foreign_out_folder_touching_nothing(tmp_path):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "config.json").write_text('{"not": "a run"}')
    (out / "notes.txt").write_text("mine")
    before = _hashes(out)
    r = subprocess.run([sys.executable, "-m", "lci_study", "train", "--set", "epochs=1",
                        "--out", str(out), "--quiet"], capture_output=True, text=True,
                       env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 2
    assert "is not empty (config.json, notes.txt)" in _one_line(r.stderr)
    assert _hashes(out) == before


def test_a_training_set_under_one_batch_trains_one_step_per_epoch_and_says_so(tmp_path, caplog):
    import logging

    import numpy as np

    from lci import fit

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.random((20, 1, 8, 8)).astype("float32"),
             y_train=rng.integers(0, 10, 20), x_test=rng.random((30, 1, 8, 8)).astype("float32"),
             y_test=rng.integers(0, 10, 30), num_classes=10)
    with caplog.at_level(logging.WARNING, logger="lci.trainer"):
        res = fit({"dataset": str(path), "epochs": 2, "batch_size": 64, "noise": "none",
                   "method": "ce", "eval_train": False})
    assert "batch_size=64 is more than the 20 training samples" in caplog.text
    assert res["epochs_done"] == 2 and res["samples_per_s"] > 0
    with pytest.raises(LCIError, match="1 training sample.*at least 2"):
        fit({"dataset": str(path), "epochs": 1, "noise": "none", "method": "ce",
             "val_fraction": 0.99})


# -------------------------------------------------------------------------------- summary
def test_summary_names_diverged_trials_and_does_not_promise_a_rerun(tmp_path):
    from study.results import Summary
    from study.trials import read_trials

    params = {"dataset": "digits", "epochs": 3, "method": "lci", "seed": 0}
    synthetic.write_tune_trial(tmp_path, "x__eval-dddd0001", params,
                               [{"epoch": 1, "lci_failed": "DivergenceError: non-finite loss "
                                                          "in epoch 1: loss=nan"}],
                               trial_id="dddd0001")
    synthetic.write_tune_trial(tmp_path, "x__eval-dddd0002", params, [{"epoch": 1}],
                               trial_id="dddd0002", error="RuntimeError: worker died")
    s = Summary(str(tmp_path), "test_acc")
    for r in read_trials(str(tmp_path)):
        s.add_failure("x__eval", r)
    kinds = {f["trial_id"]: f["kind"] for f in s.to_json()["failed_trials"]}
    assert kinds == {"dddd0001": "diverged", "dddd0002": "crashed"}
    table = s.table()
    diverged = next(l for l in table.splitlines() if "diverged" in l)
    assert "x__eval/dddd0001" in diverged and "does not rerun" in diverged
    crashed = next(l for l in table.splitlines() if "crashed" in l)
    assert "x__eval/dddd0002" in crashed and "--resume" in crashed


# ---------------------------------------------------------------- real studies (slow, Ray)
SPEC = {"name": "rs", "fixed": {"dataset": "digits", "epochs": 2, "eval_train": False,
                                "checkpoint_every": 1},
        "noise": ["sym:0.6"], "methods": ["ce", "lci"], "robust_losses": ["gce"],
        "search": {"trials": 2, "fixed": {"epochs": 1}}, "evaluation": {"seeds": 1},
        "resources": {"cpu": 1}}


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    (root / "rs.yaml").write_text(yaml.safe_dump(SPEC))
    r = _lci("sweep", str(root / "rs.yaml"), "--storage", str(root / "res"), "--num-cpus", "2",
             cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def _copy(finished, tmp_path, spec=None):
    shutil.copytree(finished / "res", tmp_path / "res")
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(spec or SPEC))
    return tmp_path / "res" / "rs"


@pytest.mark.slow
def test_resume_refusals_name_the_file_or_keys_and_change_nothing(finished_study, tmp_path):
    cases = {
        "state": ("study_state.json", lambda d: (d / "study_state.json").write_bytes(
            (d / "study_state.json").read_bytes()[:-7] + b"\xff\xfe")),
        "db": ("optuna.db", lambda d: (d / "optuna.db").unlink()),
    }
    for name, (needle, damage) in cases.items():
        work = tmp_path / name
        d = _copy(finished_study, work)
        damage(d)
        before = _hashes(d)
        r = _lci("sweep", str(work / "rs.yaml"), "--storage", str(work / "res"), "--resume",
                 cwd=work, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        line = _one_line(r.stderr)
        assert needle in line and ("put back" in line), line
        assert _hashes(d) == before

    # a changed spec: epochs 2 -> 3 changes what trials compute; the folder stays as it was
    work = tmp_path / "spec"
    changed = {**SPEC, "fixed": {**SPEC["fixed"], "epochs": 3}}
    d = _copy(finished_study, work, changed)
    before = _hashes(d)
    r = _lci("sweep", str(work / "rs.yaml"), "--storage", str(work / "res"), "--resume",
             cwd=work, timeout=120)
    assert r.returncode == 2
    assert "fixed.epochs: 2 -> 3" in _one_line(r.stderr)
    assert _hashes(d) == before
    assert json.loads((d / "study.json").read_text())["spec"]["fixed"]["epochs"] == 2


@pytest.mark.slow
def test_a_neutral_change_is_allowed_and_said(finished_study, tmp_path):
    spec = {**SPEC, "max_concurrent": 1}
    d = _copy(finished_study, tmp_path, spec)
    r = _lci("sweep", str(tmp_path / "rs.yaml"), "--storage", str(tmp_path / "res"), "--resume",
             "--num-cpus", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resume: max_concurrent: (unset) -> 1 (cannot change results)" in r.stdout
    assert json.loads((d / "study.json").read_text())["spec"]["max_concurrent"] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs: a real file system that really fills up (needs root, as in CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(folder):
    """Write until the file system says ENOSPC."""
    import errno

    path = os.path.join(folder, "filler")
    with open(path, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


@pytest.mark.slow
def test_a_study_that_filled_the_disk_resumes_once_space_is_free(small_disk, tmp_path):
    """The disk fills once the first trial has reported: the driver stops with one line
    (exit 1). With space freed, --resume finishes the study: every planned trial finished,
    each in exactly one trial folder."""
    import time

    from study.trials import read_study_trials

    spec = {**SPEC, "fixed": {**SPEC["fixed"], "epochs": 4}, "evaluation": {"seeds": 2}}
    (tmp_path / "rs.yaml").write_text(yaml.safe_dump(spec))
    storage = small_disk / "res"
    cmd = [sys.executable, "-m", "lci_study", "sweep", str(tmp_path / "rs.yaml"), "--storage",
           str(storage), "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path)
    trials = storage / "rs" / "trials"
    while proc.poll() is None:  # the event: a trial folder with a result in it
        if trials.is_dir() and any((t / "result.json").is_file()
                                   and (t / "result.json").stat().st_size
                                   for t in trials.iterdir() if t.is_dir()):
            break
        time.sleep(0.2)
    filler = _fill(str(small_disk))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, (out[-2000:], err[-3000:])
    assert "no space left" in err and "--resume" in err

    os.unlink(filler)
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=_env(),
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    by_exp = read_study_trials(str(storage / "rs"))
    planned = {"lci_gce_sym0.6__search": 2, "ce_sym0.6__eval": 2, "lci_gce_sym0.6__eval": 2}
    assert {k: len(v) for k, v in by_exp.items()} == planned
    assert all(r.status() == "finished" for recs in by_exp.values() for r in recs)
    # the progress never counts a trial twice
    assert "[7/6]" not in r.stdout


def test_a_fused_trial_that_failed_before_its_seeds_is_counted_as_failed(tmp_path):
    """A fused trial refused at its start (bad input) writes no seed folder: its own folder
    is then the record of the failure (the summary counts it, and the exit status is 1)."""
    from study.results import Summary
    from study.trials import read_study_trials

    params = {"dataset": "digits", "epochs": 3, "method": "ce", "seed": 0,
              "fused_seeds": [0, 1], "experiment": "ce_sym0.6__eval"}
    trials = tmp_path / "s" / "trials"
    synthetic.write_tune_trial(trials, "ce_sym0.6__eval-ffff0001", params,
                               [{"epoch": 0, "lci_failed": "DataError: no such file"}],
                               trial_id="ffff0001", error="DataError: no such file")
    recs = read_study_trials(str(tmp_path / "s"))["ce_sym0.6__eval"]
    assert [r.status() for r in recs] == ["failed"]
    s = Summary(str(tmp_path / "s"), "test_acc")
    s.add_failure("ce_sym0.6__eval", recs[0])
    assert s.errors == 1 and s.failures[0]["kind"] == "refused"
    # once a seed's folder exists, the seeds are the records and the container is skipped
    synthetic.write_tune_trial(trials, "ce_sym0.6__eval-ffff0001-s0",
                               {**{k: v for k, v in params.items() if k != "fused_seeds"}},
                               synthetic.epoch_metrics(params, 0.8, 3), trial_id="ffff0001")
    recs = read_study_trials(str(tmp_path / "s"))["ce_sym0.6__eval"]
    assert [r.status() for r in recs] == ["finished"]

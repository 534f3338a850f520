"""Scale-out pieces: where Optuna keeps a study's searches (SQLite, a journal on NFS, a
database, or exported after an S3-style study), MLflow tracking of a real Tune run, and the
Ray/Optuna private and developer APIs that the searcher and the trainable rely on."""
from __future__ import annotations

import os
import pickle
import re

import pytest
import yaml

from lci.errors import LCIError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------- Optuna storage
def test_local_folder_gets_sqlite(tmp_path):
    import optuna

    from study.optuna_storage import dashboard_command, needs_export, resolve_optuna_storage

    st = resolve_optuna_storage("sqlite", str(tmp_path / "s"))
    assert isinstance(st, optuna.storages.RDBStorage)
    optuna.create_study(storage=st, study_name="c")
    assert (tmp_path / "s" / "optuna.db").is_file()
    assert not needs_export("sqlite", str(tmp_path / "s"))
    assert dashboard_command("sqlite", str(tmp_path / "s")).endswith("/s/optuna.db")
    assert resolve_optuna_storage("none", str(tmp_path / "n")) is None
    assert not (tmp_path / "n").exists()


def test_database_url_gets_rdb_storage(tmp_path):
    import optuna

    from study.optuna_storage import resolve_optuna_storage

    url = f"sqlite:///{tmp_path}/elsewhere.db"
    st = resolve_optuna_storage(url, "s3://bucket/study")  # the URL wins over the folder
    assert isinstance(st, optuna.storages.RDBStorage)
    optuna.create_study(storage=st, study_name="c")
    assert (tmp_path / "elsewhere.db").is_file()


@pytest.mark.parametrize("bad", ["postgres", "jornal", 3, ["sqlite"]])
def test_bad_optuna_storage_setting_is_one_line_error(bad):
    from study.optuna_storage import normalize_optuna_storage

    with pytest.raises(LCIError) as e:
        normalize_optuna_storage(bad)
    msg = str(e.value)
    assert "\n" not in msg and repr(bad) in msg and "'journal'" in msg and "'sqlite'" in msg


def test_normalize_accepts_the_documented_values():
    from study.optuna_storage import normalize_optuna_storage

    assert [normalize_optuna_storage(v) for v in ("sqlite", "journal", "none", None, False,
                                                  "postgresql://h/db")] == \
        ["sqlite", "journal", "none", "none", "none", "postgresql://h/db"]


def _searcher(storage, study_name="cell_a", epochs=3):
    from study.searcher import make_searcher
    from study.spec import Param

    p = Param(name="lam", kind="float", low=1e-4, high=1e-1, log=True)
    s = make_searcher([p], metric="val_acc", mode="max", seed=0, n_startup_trials=2,
                      epochs=epochs, study_name=study_name, storage=storage)
    assert s._ot_study is not None  # metric, mode and space given: the study exists already
    return s


def _fake_nfs(monkeypatch, mount_point):
    """/proc/mounts as a machine with `mount_point` on NFSv4 would show it."""
    from study import optuna_storage

    monkeypatch.setattr(optuna_storage, "_mounts",
                        lambda path="/proc/mounts": [("/", "ext4"), ("/proc", "proc"),
                                                     (str(mount_point), "nfs4")])


def test_folder_on_nfs_uses_the_journal_backend(tmp_path, monkeypatch):
    """A study folder on NFS/EFS gets Optuna's journal file (not SQLite, whose locking is
    unreliable there): the searcher writes <study>/optuna.journal, which a fresh
    JournalStorage (what optuna-dashboard opens) reads back with the told trial."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from study.optuna_storage import dashboard_command, filesystem_type, resolve_optuna_storage

    nfs = tmp_path / "efs"
    _fake_nfs(monkeypatch, nfs)
    study_dir = nfs / "lci-study" / "s1"
    assert filesystem_type(str(study_dir)) == "nfs4"
    assert filesystem_type(str(tmp_path / "local")) == "ext4"
    st = resolve_optuna_storage("sqlite", str(study_dir))  # the default setting
    assert isinstance(st, optuna.storages.JournalStorage)
    assert dashboard_command("sqlite", str(study_dir)) == \
        f"optuna-dashboard {study_dir}/optuna.journal"

    s = _searcher(st)
    cfg = s.suggest("t1")
    assert 1e-4 <= cfg["lam"] <= 1e-1
    s.on_trial_complete("t1", {"val_acc": 0.7, "epoch": 3, "training_iteration": 3})
    assert (study_dir / "optuna.journal").is_file()
    assert not (study_dir / "optuna.db").exists()
    again = optuna.load_study(study_name="cell_a", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(study_dir / "optuna.journal"))))
    assert [(t.state, t.value) for t in again.trials] == [(TrialState.COMPLETE, 0.7)]
    # Tune pickles the searcher (storage included) to resume it: the journal survives that
    s2 = pickle.loads(pickle.dumps(s))
    s2.suggest("t2")
    # ... and the restored searcher goes on writing the same journal file
    assert [t.state for t in again.trials] == [TrialState.COMPLETE, TrialState.RUNNING]


def test_explicit_journal_setting_on_a_local_folder(tmp_path):
    import optuna

    from study.optuna_storage import resolve_optuna_storage

    st = resolve_optuna_storage("journal", str(tmp_path / "s"))
    assert isinstance(st, optuna.storages.JournalStorage)
    optuna.create_study(storage=st, study_name="x")
    assert (tmp_path / "s" / "optuna.journal").is_file()


def test_remote_study_folder_keeps_studies_in_memory():
    from study.optuna_storage import needs_export, resolve_optuna_storage

    for setting in ("sqlite", "journal"):
        assert resolve_optuna_storage(setting, "s3://bucket/lci-study/s") is None
        assert needs_export(setting, "s3://bucket/lci-study/s")
    assert not needs_export("none", "s3://bucket/lci-study/s")
    assert not needs_export("postgresql://h/db", "s3://bucket/lci-study/s")


def test_export_searches_rebuilds_the_file(tmp_path):
    """Studies from several storages end up in one optuna.db; empty or missing ones are
    skipped; exporting again replaces the file (it is rebuilt, not appended to)."""
    import optuna

    from study.optuna_storage import export_searches

    def study(name, n):
        st = optuna.create_study(study_name=name, direction="maximize")
        for i in range(n):
            st.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=float(i),
                                                   distributions={"x": optuna.distributions.FloatDistribution(0, 10)}))
        return st

    a, b, empty = study("a", 3), study("b", 2), study("e", 0)
    out = export_searches(["a", "b", "e", "missing"],
                          {"a": a._storage, "b": b._storage, "e": empty._storage},
                          str(tmp_path / "study"))
    assert out == str(tmp_path / "study" / "optuna.db")
    db = f"sqlite:///{out}"
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(db)) == ["a", "b"]
    assert [t.value for t in optuna.load_study(study_name="a", storage=db).trials] == [0, 1, 2]
    export_searches(["b"], b._storage, str(tmp_path / "study"))
    assert [s.study_name for s in optuna.get_all_study_summaries(db)] == ["b"]
    assert export_searches(["e"], empty._storage, str(tmp_path / "none")) is None
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_s3_style_study_leaves_every_search_in_optuna_db(ray_session, tmp_path):
    """A whole study (``run_study``) whose storage is a URI (file://, which study.storage
    treats as remote like s3://): the Optuna studies live in memory while the searches run;
    when each search ends the driver copies every finished search into <study>/optuna.db,
    which then holds both cells' searches with all their trials and Tune's scores."""
    import json

    import optuna
    from optuna.trial import TrialState

    from study.runner import run_study
    from study.spec import load_spec
    from study.trials import experiment_trials

    spec = load_spec({"name": "s3study", "storage": f"file://{tmp_path}/res",
                      "fixed": {"dataset": "digits", "epochs": 1, "batch_size": 128,
                                "eval_train": False},
                      "noise": ["sym:0.6", "asym:0.4"], "methods": ["lci"],
                      "search": {"trials": 2},
                      "evaluation": {"seeds": 1}})
    assert spec.study_dir.startswith("file://")
    run_study(spec, echo=lambda s: None)
    folder = tmp_path / "res" / "s3study"
    db = f"sqlite:///{folder / 'optuna.db'}"
    cells = sorted(c.id for c in spec.search_cells())
    assert sorted(s.study_name for s in optuna.get_all_study_summaries(db)) == cells
    for cell in cells:
        trials = optuna.load_study(study_name=cell, storage=db).trials
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
        tune_scores = sorted(r.last["val_acc"] for r in experiment_trials(str(folder), f"{cell}__search"))
        assert sorted(t.value for t in trials) == pytest.approx(tune_scores)
    summary = json.loads((folder / "summary.json").read_text())
    assert [c["cell"] for c in summary["cells"]] == [c.id for c in spec.cells]


# -------------------------------------------------------------------------------- tracking
def test_validate_tracking_accepts_and_normalises():
    from study.tracking import validate_tracking

    assert validate_tracking(None) == {}
    assert validate_tracking({"mlflow": False}) == {}
    assert validate_tracking({"mlflow": True}) == {
        "mlflow": {"uri": None, "experiment": None, "tags": {}, "save_artifact": False}}
    out = validate_tracking({"mlflow": {"uri": "http://m:5000", "experiment": "e",
                                        "tags": {"team": 1}}})
    assert out["mlflow"]["tags"] == {"team": "1"} and out["mlflow"]["uri"] == "http://m:5000"


@pytest.mark.parametrize("cfg,needle", [
    ({"wandb": {}}, "'wandb' in tracking"),
    ({"mlflow": {"url": "x"}}, "'url' in tracking.mlflow"),
    ({"mlflow": {"uri": ""}}, "tracking.mlflow.uri"),
    ({"mlflow": {"save_artifact": "yes"}}, "tracking.mlflow.save_artifact"),
    ({"mlflow": {"tags": ["a"]}}, "tracking.mlflow.tags"),
    ({"mlflow": "sqlite:///x"}, "tracking.mlflow must be a mapping"),
    ("mlflow", "tracking must be a mapping"),
])
def test_validate_tracking_rejects_bad_keys_in_one_line(cfg, needle):
    from study.tracking import validate_tracking

    with pytest.raises(LCIError) as e:
        validate_tracking(cfg)
    assert needle in str(e.value) and "\n" not in str(e.value)
    if "unknown key" in str(e.value):
        assert "allowed:" in str(e.value)


def test_tracking_without_mlflow_installed_says_how_to_install(monkeypatch):
    import builtins

    from study.tracking import tracking_callbacks

    real_import = builtins.__import__

    def no_mlflow(name, *a, **k):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ImportError("No module named 'mlflow'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(LCIError, match=re.escape("pip install 'lci-study[mlflow]'")):
        tracking_callbacks({"mlflow": {"uri": "sqlite:////tmp/x.db"}}, "s")
    assert tracking_callbacks({}, "s") == []


def test_remote_study_needs_an_mlflow_uri(monkeypatch):
    pytest.importorskip("mlflow")
    from study.tracking import tracking_callbacks

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(LCIError, match="tracking.mlflow.uri"):
        tracking_callbacks({"mlflow": {}}, "s", "s3://bucket/study")


@pytest.mark.slow
def test_mlflow_tracking_leaves_one_run_per_trial_with_per_epoch_metrics(ray_session, tmp_path,
                                                                         monkeypatch):
    """A real Tune run of the project trainable with the callbacks of
    ``tracking: {mlflow: {...}}``, interrupted (both trials fail after epoch 1) and resumed
    with Tuner.restore as ``--resume`` does: the local MLflow store holds one finished run per
    trial, with the trial's val_acc/test_acc at every epoch (step = epoch, none twice) and its
    config as parameters. Tune's TensorBoard event files are there too (tensorboardX)."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from ray import tune

    from study.runner import trial_dirname
    from study.tracking import tracking_callbacks

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # anything MLflow writes by default stays in tmp_path
    study_dir = tmp_path / "res" / "tracked"
    callbacks = tracking_callbacks({"mlflow": {"experiment": "lci-tracked",
                                               "tags": {"team": "noisy"}}},
                                   "tracked", str(study_dir))
    assert len(callbacks) == 1
    epochs = 2
    import faultkit

    faultkit.configure(str(tmp_path / "markers"), hold_at=1)
    trainable = faultkit.make_held_trainable(cpu=1, fn=faultkit.fail_once_trainable)
    first = tune.Tuner(
        trainable,
        param_space={"dataset": "digits", "noise": "sym:0.6", "epochs": epochs,
                     "batch_size": 128, "eval_train": False, "val_fraction": 0.1,
                     "model": "small_cnn", "method": tune.grid_search(["ce", "lci"]),
                     "cell": "c", "phase": "evaluation", "study": "tracked"},
        tune_config=tune.TuneConfig(trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name="tracked__eval", storage_path=str(study_dir),
                                  verbose=0, callbacks=callbacks)).fit()
    assert first.num_errors == 2  # interrupted after epoch 1
    grid = tune.Tuner.restore(str(study_dir / "tracked__eval"), trainable,
                              resume_errored=True).fit()
    assert grid.num_errors == 0 and len(grid) == 2
    assert len(os.listdir(tmp_path / "markers")) == 2

    db = study_dir / "mlflow.db"  # the default store of a local study folder
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("lci-tracked")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2
    assert sorted(r.data.params["method"] for r in runs) == ["ce", "lci"]
    final_val = {r.metrics["val_acc"] for r in grid}
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["study"] == "tracked" and run.data.tags["team"] == "noisy"
        for key in ("val_acc", "test_acc", "epoch"):
            hist = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2], key
        epoch_hist = sorted(client.get_metric_history(run.info.run_id, "epoch"),
                            key=lambda m: m.step)
        assert [m.value for m in epoch_hist] == [1.0, 2.0]
        last_val = max(client.get_metric_history(run.info.run_id, "val_acc"),
                       key=lambda m: m.step).value
        assert last_val in final_val  # the run's last val_acc is its trial's final result
    # TensorBoard: Tune wrote event files into the trial folders (tensorboardX is installed)
    pytest.importorskip("tensorboardX")
    for r in grid:  # one event file per session of the trial (the restore opened a second)
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(r.path)), r.path


# ------------------------------------------------------------ private and developer APIs
def _ray_pin():
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    reqs = [Requirement(d) for d in deps]
    return next(r for r in reqs if r.name == "ray")


def test_installed_ray_is_within_the_pinned_range():
    """pyproject pins ray[tune] to the minor release whose private/developer APIs are
    checked below; an upgrade must re-run these checks and move the pin."""
    import ray

    req = _ray_pin()
    assert "tune" in req.extras
    assert req.specifier.contains(ray.__version__), (ray.__version__, str(req.specifier))
    # a real upper bound (not just >=): the next minor release is outside the range
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert not req.specifier.contains(f"{major}.{minor + 1}.0")


def test_optuna_search_private_state_the_searcher_subclass_relies_on(tmp_path):
    """TruncationAwareOptunaSearch reads OptunaSearch's _ot_trials, _completed_trials,
    _ot_study and metric, and relies on save/restore pickling the study. If Ray renames or
    reshapes any of them this fails here, not silently in a resumed or pruned search."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    from study.searcher import TruncationAwareOptunaSearch

    assert issubclass(TruncationAwareOptunaSearch, OptunaSearch)
    import inspect
    assert "storage" in inspect.signature(OptunaSearch.__init__).parameters
    s = _searcher(None, epochs=3)
    assert s.metric == "val_acc"
    s.suggest("full")
    s.suggest("cut")
    assert isinstance(s._ot_trials, dict) and set(s._ot_trials) == {"full", "cut"}
    assert all(isinstance(t, optuna.Trial) for t in s._ot_trials.values())
    assert isinstance(s._completed_trials, set)
    assert isinstance(s._ot_study, optuna.Study)
    s.on_trial_result("cut", {"val_acc": 0.3, "epoch": 1, "training_iteration": 1})
    s.on_trial_complete("full", {"val_acc": 0.8, "epoch": 3, "training_iteration": 3})
    s.on_trial_complete("cut", {"val_acc": 0.4, "epoch": 2, "training_iteration": 2})
    assert s._completed_trials == {"full", "cut"}
    states = {t.number: (t.state, t.value) for t in s._ot_study.trials}
    assert states == {0: (TrialState.COMPLETE, 0.8), 1: (TrialState.PRUNED, 0.4)}
    assert s._ot_study.trials[1].intermediate_values == {1: 0.3, 2: 0.4}
    # Tune's save/restore of the searcher (what --resume uses) keeps the in-memory study
    path = str(tmp_path / "searcher.pkl")
    s.save(path)
    r = TruncationAwareOptunaSearch(epochs=3)
    r.restore(path)
    assert [t.state for t in r._ot_study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert r.epochs == 3 and r._completed_trials == {"full", "cut"}


def test_trial_storage_developer_api_is_there(tmp_path):
    """The trainable publishes run files through tune.get_context().get_storage() (a
    DeveloperAPI): its trial_fs_path and storage_filesystem, and reads its CPU share from
    get_trial_resources()."""
    import pyarrow.fs
    from ray import tune
    from ray.train._internal.storage import StorageContext

    ctx = tune.get_context()
    for name in ("get_storage", "get_trial_resources", "get_trial_id"):
        assert callable(getattr(ctx, name, None)), name
    sc = StorageContext(storage_path=str(tmp_path), experiment_dir_name="e", trial_dir_name="t")
    assert sc.trial_fs_path.endswith("e/t")
    assert isinstance(sc.storage_filesystem, pyarrow.fs.FileSystem)


def test_mlflow_callback_internals_and_run_reuse_after_restore(tmp_path):
    """ResumableMLflowLoggerCallback relies on MLflowLoggerCallback's ``_trial_runs`` (set in
    setup), ``tracking_uri`` and log_trial_start/log_trial_end, and on Tune's callback
    get_state/set_state: a trial restored in a new driver logs into its old run."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from ray.tune.callback import Callback

    from study.mlflow_callback import ResumableMLflowLoggerCallback

    assert {"get_state", "set_state"} <= set(vars(Callback))

    class FakeTrial:  # what the callback reads of a Tune Trial
        def __init__(self):
            self.trial_id, self.config = "abc_00000", {"lr": 0.1}

        def __str__(self):
            return "train_lci_abc_00000"

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cb = ResumableMLflowLoggerCallback(tracking_uri=uri, experiment_name="e")
    cb.setup()
    assert cb._trial_runs == {} and cb.tracking_uri == uri
    t = FakeTrial()
    cb.log_trial_start(t)
    cb.log_trial_result(1, t, {"training_iteration": 1, "val_acc": 0.5})
    run_id = cb._trial_runs[t]
    state = cb.get_state()
    assert state == {"runs": {"abc_00000": run_id}}
    cb.log_trial_end(t, failed=True)

    cb2 = ResumableMLflowLoggerCallback(tracking_uri=uri, experiment_name="e")
    cb2.set_state(state)  # Tune restores callback state before setup
    cb2.setup()
    t2 = FakeTrial()  # a new Trial object for the same trial after Tuner.restore
    cb2.log_trial_start(t2)
    assert cb2._trial_runs[t2] == run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    cb2.log_trial_result(2, t2, {"training_iteration": 2, "val_acc": 0.6})
    cb2.log_trial_end(t2)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2]
    assert len(client.search_runs([client.get_experiment_by_name("e").experiment_id])) == 1


def test_watch_commands_name_the_right_store(tmp_path, monkeypatch):
    from study.optuna_storage import dashboard_command
    from study.tracking import tensorboard_command

    d = str(tmp_path / "s")
    assert dashboard_command("journal", d) == f"optuna-dashboard {d}/optuna.journal"
    assert dashboard_command("postgresql://h/db", d) == "optuna-dashboard postgresql://h/db"
    assert "s3://b/s/optuna.db" in dashboard_command("sqlite", "s3://b/s")
    assert dashboard_command("none", d) is None
    pytest.importorskip("tensorboardX")
    assert tensorboard_command(d) == f"watch in TensorBoard: tensorboard --logdir {d}"


def test_tune_stop_event_hook_is_where_the_driver_puts_it():
    """study.tune_compat hands Tune the driver's stop event through
    ray.tune.tune._setup_signal_catching, which tune.run must still call to get its event."""
    import inspect

    import ray.tune.tune as tune_module

    from study import tune_compat

    assert "_setup_signal_catching()" in inspect.getsource(tune_module.run)
    original = tune_module._setup_signal_catching
    try:
        stop = tune_compat.install_stop_event()
        assert tune_module._setup_signal_catching() is stop and not stop.is_set()
    finally:
        tune_module._setup_signal_catching = original

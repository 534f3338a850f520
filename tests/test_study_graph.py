"""The study as a graph of experiments: dependencies, width, and the study's searcher that
runs every ready experiment at once inside one Tune run (study.multiplex), with its caps, its
saved state and one ASHA per search. No Ray cluster here: the searcher and the trial scheduler
are driven the way Tune's controller drives them."""
from __future__ import annotations

import dataclasses

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from study.experiment import Experiment, ExperimentContext
from study.graph import build_graph, describe_graph, study_width
from study.live import find, live
from study.multiplex import Plan, StudySearcher, StudyTrialScheduler
from study.spec import load_spec


def test_table1_is_70_independent_evaluations_350_trials_wide():
    nodes = build_graph(load_spec("table1_cifar10"))
    assert len(nodes) == 70 and all(not n.needs for n in nodes)
    assert study_width(nodes) == 350
    assert study_width(nodes, max_concurrent=32) == 32
    assert study_width(nodes, slots=8) == 8
    assert "width: 350 trials" in describe_graph(nodes)


def test_evaluation_and_sweep_wait_for_their_cells_search():
    spec = load_spec("demo")
    nodes = {n.name: n for n in build_graph(spec)}
    for n in nodes.values():
        if n.phase in ("evaluation", "sweep") and n.cell.searched:
            assert n.needs == (spec.experiment_name(n.cell, "search"),)
        else:
            assert n.needs == ()
    # per cell the wider of (its search) and (its evaluation + sweep) can run at once
    per_cell = {}
    for n in nodes.values():
        d = per_cell.setdefault(n.cell.id, [0, 0])
        d[0 if n.phase == "search" else 1] += n.width
    assert study_width(list(nodes.values())) == sum(max(a, b) for a, b in per_cell.values())


class Hooks:
    """The runner's side of the searcher: real sub-searchers of the study's experiments;
    records which experiments ended, and gives the dependents a fixed best value."""

    optuna_storage = None  # the sub-searchers keep their Optuna studies in memory

    def __init__(self, spec, study_dir):
        self.spec, self.dir = spec, study_dir
        self.nodes = {n.name: n for n in build_graph(spec)}
        self.ended, self.searcher = [], None

    def attach(self, searcher):
        self.searcher = searcher

    def sub_searcher(self, name):
        exp = Experiment(self.nodes[name], ExperimentContext(self.spec))
        searched = exp.node.phase != "search" and exp.node.cell.searched
        return exp.searcher({"m": 0.5} if searched else {})

    def experiment_ended(self, name, records):
        self.ended.append((name, len(records)))


def _mux(spec, tmp_path, **kw):
    hooks = Hooks(spec, str(tmp_path))
    plans = [Plan(n) for n in build_graph(spec)]
    return StudySearcher(str(tmp_path), plans, hooks=hooks, **kw), hooks


def _complete(mux, tid, cfg, epochs=None):
    mux.on_trial_complete(tid, {"val_acc": 0.5, "test_acc": 0.5, "training_iteration": 1,
                                "epoch": epochs or cfg.get("epochs", 1)})


def test_every_ready_experiment_runs_at_once_and_dependents_after_their_search(tmp_path):
    spec = load_spec("demo")
    mux, hooks = _mux(spec, tmp_path)
    nodes = build_graph(spec)
    search = next(n for n in nodes if n.phase == "search")
    configs = {}
    while True:
        cfg = mux.suggest(f"t{len(configs):03d}")
        if cfg is None:
            break
        configs[f"t{len(configs):03d}"] = cfg
    by_exp = {}
    for tid, cfg in configs.items():
        by_exp.setdefault(cfg["experiment"], []).append(tid)
    # every experiment that waits for nothing got all its trials at once; no dependent did
    assert set(by_exp) == {n.name for n in nodes if not n.needs}
    assert all(len(by_exp[n.name]) == n.trials for n in nodes if not n.needs)
    assert configs[by_exp[search.name][0]]["phase"] == "search"
    # the search's trials end: its dependents start, with the best value the runner chose
    for tid in by_exp[search.name]:
        _complete(mux, tid, configs[tid], epochs=spec.fixed["epochs"])
    assert (search.name, search.trials) in hooks.ended
    cfg = mux.suggest("t900")
    dependents = {n.name for n in nodes if search.name in n.needs}
    assert cfg["experiment"] in dependents and cfg["m"] == 0.5


def test_caps_study_wide_per_search_and_one_experiment_at_a_time(tmp_path):
    spec = load_spec("table1_cifar10")  # 70 evaluations x 5 seeds, no search
    mux, _ = _mux(spec, tmp_path, max_concurrent=7)
    got = [mux.suggest(f"a{i}") for i in range(10)]
    assert sum(c is not None for c in got) == 7  # the study-wide cap
    _complete(mux, "a0", got[0])
    assert mux.suggest("a10") is not None and mux.suggest("a11") is None

    one, _ = _mux(spec, tmp_path / "one", max_experiments=1)
    first = [one.suggest(f"b{i}") for i in range(6)]
    assert len({c["experiment"] for c in first[:5]}) == 1 and first[5] is None
    for i in range(5):
        _complete(one, f"b{i}", first[i])
    assert one.suggest("b6")["experiment"] != first[0]["experiment"]

    search = load_spec("demo")
    capped, _ = _mux(search, tmp_path / "cap")
    for p in capped.plans:
        if p.phase == "search":
            p.node = dataclasses.replace(p.node, cap=2)
    names = [c["experiment"] for c in (capped.suggest(f"c{i}") for i in range(40)) if c]
    for p in capped.plans:
        if p.phase == "search":
            assert names.count(p.name) == 2  # a search's own max_concurrent


def test_saved_searcher_state_continues_where_it_stopped(tmp_path):
    """What ``Tuner.restore`` does with the study's searcher: every experiment's sub-searcher
    (Optuna's study included) and the trials already asked for come back; nothing is asked
    for twice."""
    spec = load_spec("demo")
    mux, hooks = _mux(spec, tmp_path)
    first = {f"t{i}": mux.suggest(f"t{i}") for i in range(4)}
    _complete(mux, "t0", first["t0"], epochs=spec.fixed["epochs"])
    path = str(tmp_path / "searcher-state.pkl")
    mux.save(path)
    restored = StudySearcher(str(tmp_path), [])
    with live(str(tmp_path), hooks):  # as in a resuming driver
        restored.restore(path)
    assert hooks.searcher is restored
    assert [p.name for p in restored.plans] == [p.name for p in mux.plans]
    assert {k: len(p.live) for k, p in ((p.name, p) for p in restored.plans)} == \
        {p.name: len(p.live) for p in mux.plans}
    assert set(restored.searches()) == set(mux.searches())
    search = next(p for p in restored.plans if p.phase == "search")
    ot = restored.searches()[search.name]._ot_study
    assert len(ot.trials) == sum(1 for c in first.values() if c["experiment"] == search.name)
    nxt = restored.suggest("t4")
    assert nxt is not None and nxt != first["t3"]
    assert sum(p.suggested for p in restored.plans) == 5


def test_restore_reruns_errored_trials_and_fails_loudly(tmp_path):
    """--resume reruns errored trials (resume_errored): the restored searcher counts them as
    running again, so their experiment ends when they do. A state that cannot be restored
    leaves the searcher as it was and stops the run at its next suggestion (Tune would
    otherwise swallow the error and start the study over)."""
    spec = load_spec("table1_cifar10")
    mux, hooks = _mux(spec, tmp_path)
    cfgs = {f"t{i}": mux.suggest(f"t{i}") for i in range(5)}  # the first evaluation's seeds
    name = cfgs["t0"]["experiment"]
    for tid in ("t0", "t1", "t2", "t3"):
        _complete(mux, tid, cfgs[tid])
    mux.on_trial_complete("t4", None, error=True)
    plan = next(p for p in mux.plans if p.name == name)
    assert plan.done and not plan.live
    path = str(tmp_path / "state.pkl")
    mux.save(path)
    restored = StudySearcher(str(tmp_path), [])
    with live(str(tmp_path), hooks):
        restored.restore(path)
    again = next(p for p in restored.plans if p.name == name)
    assert restored.restored and not again.done and again.live == {"t4"}

    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"not a pickle")
    fresh = StudySearcher(str(tmp_path), [])
    with live(str(tmp_path), hooks):
        fresh.restore(str(broken))
    assert not fresh.restored and fresh.failure is not None and fresh.plans == []
    with pytest.raises(RuntimeError, match="searcher failed"):
        fresh.suggest("t9")


def test_search_saved_by_name_reloads_from_the_storage_of_the_resuming_driver(tmp_path):
    """A search whose Optuna study lives in the study folder's SQLite file is saved without
    the file's path, so a study folder that moved resumes from its new place."""
    import shutil

    import optuna

    from study.searcher import make_searcher
    from study.spec.params import Param

    old = tmp_path / "old"
    old.mkdir()
    params = [Param(name="m", kind="float", low=-5.0, high=5.0)]
    s = make_searcher(params, metric="val_acc", mode="max", seed=1, n_startup_trials=2,
                      epochs=3, study_name="cell",
                      storage=optuna.storages.RDBStorage(f"sqlite:///{old}/optuna.db"))
    s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", {"val_acc": 0.7, "epoch": 3, "training_iteration": 3})
    s.save(str(tmp_path / "s.pkl"))
    s._storage.engine.dispose()
    new = tmp_path / "new"
    shutil.move(str(old), str(new))
    r = type(s).__new__(type(s))
    r.restore_with_storage(str(tmp_path / "s.pkl"),
                           optuna.storages.RDBStorage(f"sqlite:///{new}/optuna.db"))
    assert [t.state.name for t in r._ot_study.trials] == ["COMPLETE", "RUNNING"]
    r.on_trial_complete("b", {"val_acc": 0.8, "epoch": 3, "training_iteration": 3})
    assert [t.value for t in r._ot_study.trials] == [0.7, 0.8]
    assert not old.exists()


class _Trial:
    def __init__(self, tid, experiment):
        self.trial_id, self.config = tid, {"experiment": experiment}
        self.status = "RUNNING"

    def __repr__(self):
        return self.trial_id


def test_each_search_has_its_own_asha():
    asha = {name: {"metric": "val_acc", "mode": "max", "time_attr": "epoch", "max_t": 9,
                   "grace_period": 1, "reduction_factor": 3} for name in ("A", "B")}
    sched = StudyTrialScheduler(asha)
    good_a, weak_b, ev = _Trial("a1", "A"), _Trial("b1", "B"), _Trial("e1", "cell__eval")
    for t in (good_a, weak_b, ev):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, good_a, {"epoch": 1, "val_acc": 0.9}) == \
        TrialScheduler.CONTINUE
    # B's first trial is not compared with A's (one ASHA would stop it: 0.1 < 0.9)
    assert sched.on_trial_result(None, weak_b, {"epoch": 1, "val_acc": 0.1}) == \
        TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, ev, {"epoch": 1}) == TrialScheduler.CONTINUE
    weak_a = _Trial("a2", "A")
    sched.on_trial_add(None, weak_a)
    assert sched.on_trial_result(None, weak_a, {"epoch": 1, "val_acc": 0.1}) == \
        TrialScheduler.STOP
    assert set(sched._subs) == {"A", "B"}


def test_list_searcher_suggests_each_config_once(tmp_path):
    from study.searcher import ConfigListSearcher

    s = ConfigListSearcher([{"seed": 0}, {"seed": 1}], metric="test_acc")
    assert s.suggest("t0") == {"seed": 0}
    path = str(tmp_path / "s.pkl")
    s.save(path)
    r = ConfigListSearcher([], metric="test_acc")
    r.restore(path)
    assert r.suggest("t1") == {"seed": 1}
    assert r.suggest("t2") is Searcher.FINISHED and r.metric == "test_acc"


def test_a_moved_study_finds_its_runner_and_missed_ends_are_recorded(tmp_path):
    """A saved searcher keeps the study folder's old path: restored in a driver that runs one
    study, it still reaches that driver through the one lookup (study.live). And an
    experiment the searcher saw end, but the state file missed (a driver killed between the
    two writes), is recorded when the restored searcher gives itself to the runner."""
    from study.progress import StudyProgress
    from study.runner import StudyRunner

    spec = load_spec("table1_cifar10", storage=str(tmp_path))
    runner = StudyRunner(spec, echo=lambda s: None)
    runner.state.open(spec.to_json())
    runner.experiments = {n.name: Experiment(n, ExperimentContext(spec)) for n in runner.nodes}
    runner.progress = StudyProgress(runner.key, 10, echo=lambda s: None)
    plans = [Plan(n) for n in runner.nodes]
    first = plans[0]
    first.ended = {f"t{i}": ({"seed": i}, {"epoch": 400, "test_acc": 0.5}, False)
                   for i in range(first.trials)}
    saved = StudySearcher("/somewhere/else/table1_cifar10", plans)
    saved.save(str(tmp_path / "searcher.pkl"))
    restored = StudySearcher("/somewhere/else/table1_cifar10", [])
    try:
        with live(runner.dir, runner):
            assert find("/somewhere/else/table1_cifar10") is runner
            assert not runner.state.experiment_ended(first.name)
            restored.restore(str(tmp_path / "searcher.pkl"))  # Tune's restore on --resume
        assert restored.restored and restored.failure is None
        assert runner.searcher is restored and runner.state.experiment_ended(first.name)
        assert not runner.state.experiment_ended(plans[1].name)
        assert find(runner.dir) is None  # nothing left registered after the run
    finally:
        runner.progress.close()

"""The study as a graph of experiments: dependencies, width, the scheduler that runs ready
experiments at once, and the study-wide cap on trials. No Ray here: the scheduler is driven
with stand-in experiments that wait on events."""
from __future__ import annotations

import threading

import pytest

from study.concurrency import TrialGate, drop_gate, gate, set_gate
from study.graph import build_graph, describe_graph, study_width
from study.scheduler import StudyScheduler
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


def _run_scheduler(nodes, target=None):
    """Stand-in experiments: each records that it started, then waits for its release."""
    started, release = [], {n.name: threading.Event() for n in nodes}
    lock = threading.Condition()

    def run_node(node):
        with lock:
            started.append(node.name)
            lock.notify_all()
        assert release[node.name].wait(timeout=60)

    stop = threading.Event()
    sched = StudyScheduler(nodes, run_node, done=lambda n: False, stop=stop,
                           demand=lambda running: sum(n.trials for n in running),
                           target_demand=lambda: target)
    t = threading.Thread(target=sched.run, daemon=True)
    t.start()
    return sched, t, started, release, lock


def test_ready_experiments_start_at_once_and_dependents_after_their_search():
    nodes = build_graph(load_spec("demo"))
    sched, t, started, release, lock = _run_scheduler(nodes)
    free = {n.name for n in nodes if not n.needs}
    with lock:
        assert lock.wait_for(lambda: set(started) == free, timeout=60)
    # nothing that waits for a search started before that search ended
    search = next(n for n in nodes if n.phase == "search")
    dependents = {n.name for n in nodes if search.name in n.needs}
    release[search.name].set()
    with lock:
        assert lock.wait_for(lambda: dependents <= set(started), timeout=60)
    for e in release.values():
        e.set()
    t.join(timeout=60)
    assert not t.is_alive() and sched.errors == []
    assert sorted(sched.order) == sorted(n.name for n in nodes)
    for n in nodes:
        for need in n.needs:
            assert sched.order.index(need) < sched.order.index(n.name)


def test_target_demand_limits_how_many_experiments_are_queued():
    nodes = build_graph(load_spec("table1_cifar10"))[:6]  # 6 x 5 trials, no deps
    sched, t, started, release, cond = _run_scheduler(nodes, target=10)
    with cond:
        assert cond.wait_for(lambda: len(started) == 2, timeout=60)
    assert len(started) == 2  # 2 x 5 queued trials reach the target of 10
    release[started[0]].set()
    with cond:
        assert cond.wait_for(lambda: len(started) == 3, timeout=60)
    for e in release.values():
        e.set()
    t.join(timeout=60)
    assert not t.is_alive() and len(sched.order) == 6


def test_a_failing_experiment_stops_the_others_and_raises():
    nodes = build_graph(load_spec("table1_cifar10"))[:3]
    stop = threading.Event()

    def run_node(node):
        if node is nodes[0]:
            raise RuntimeError("boom")
        assert stop.wait(timeout=60)  # the others end when the study is stopped

    sched = StudyScheduler(nodes, run_node, done=lambda n: False, stop=stop,
                           demand=lambda r: 0, target_demand=lambda: None)
    with pytest.raises(RuntimeError, match="boom"):
        sched.run()
    assert stop.is_set()


def test_gate_caps_trials_across_searchers():
    key = "test-study"
    set_gate(key, 2)
    try:
        g = gate(key)
        assert g.acquire("a") and g.acquire("b") and not g.acquire("c")
        assert g.acquire("a")  # a trial that holds its slot already
        g.release("a")
        assert g.acquire("c") and g.running == 2
        g.hold("d")  # resumed trials count even past the cap
        assert g.running == 3
    finally:
        drop_gate(key)
    assert gate(key).cap is None and isinstance(gate(None), TrialGate)


def test_list_searcher_suggests_each_config_once_through_the_gate(tmp_path):
    from ray.tune.search import Searcher

    from study.searcher import ConfigListSearcher

    key = "test-list"
    set_gate(key, 1)
    try:
        s = ConfigListSearcher([{"seed": 0}, {"seed": 1}], metric="test_acc", gate_key=key)
        assert s.suggest("t0") == {"seed": 0}
        assert s.suggest("t1") is None  # the study runs its one allowed trial
        s.on_trial_complete("t0", {"test_acc": 0.5})
        assert s.suggest("t1") == {"seed": 1}
        path = str(tmp_path / "s.pkl")
        s.save(path)
        r = ConfigListSearcher([], metric="test_acc")
        drop_gate(key)
        set_gate(key, 1)
        r.restore(path)  # the running trial t1 holds its slot again
        assert gate(key).running == 1
        assert r.suggest("t2") is Searcher.FINISHED
    finally:
        drop_gate(key)

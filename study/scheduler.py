"""Runs the experiments of a study graph at once, each ``Tuner.fit`` in a thread of the driver.

Why threads of one driver (and not one Tuner per phase, or Ray tasks): every experiment keeps
its own Tune searcher, scheduler (ASHA) and experiment folder, so resume, pruning and the
folder layout stay what a single ``Tuner`` gives; all of them share the cluster through Ray's
own resource scheduler (their trials queue for CPUs/GPUs as usual); and the driver stays one
process that can hold the study lock, write the state file and show one progress bar. A Tuner
spends its time waiting on Ray, so threads cost little. The two places where Tune needs help
for this are in :mod:`study.tune_compat`.

The scheduler starts an experiment when everything it waits for has finished and the trials
already queued do not fill the cluster twice over (``target_demand``): enough queued work that
no slot idles and an autoscaler sees the demand, without a thread per experiment of a
350-trial study.
"""
from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional

from .graph import ExperimentNode

PHASE_ORDER = {"search": 0, "evaluation": 1, "sweep": 2}


class StudyScheduler:
    def __init__(self, nodes: List[ExperimentNode], run_node: Callable[[ExperimentNode], None],
                 *, done: Callable[[ExperimentNode], bool], stop: threading.Event,
                 demand: Callable[[List[ExperimentNode]], int],
                 target_demand: Callable[[], Optional[int]], max_running: Optional[int] = None):
        self.nodes = nodes
        self.run_node = run_node
        self.is_done = done
        self.stop = stop
        self.demand = demand              # unfinished trials of the running experiments
        self.target_demand = target_demand  # None: no limit
        self.max_running = max_running    # experiments at once (1: the old one-at-a-time order)
        self._wake = threading.Condition()
        self.errors: List[BaseException] = []
        self.order: List[str] = []        # the order experiments started in (for tests)

    def _ready(self, pending: Dict[str, ExperimentNode], finished: set) -> List[ExperimentNode]:
        ready = [n for n in pending.values() if all(d in finished for d in n.needs)]
        index = {n.name: i for i, n in enumerate(self.nodes)}
        return sorted(ready, key=lambda n: (PHASE_ORDER[n.phase], index[n.name]))

    def _room(self, running: Dict[str, ExperimentNode]) -> bool:
        if not running:
            return True
        if self.max_running and len(running) >= self.max_running:
            return False
        target = self.target_demand()
        return target is None or self.demand(list(running.values())) < target

    def run(self) -> None:
        """Until every experiment finished, or the stop event is set (then the running ones
        save their state and return), or one raised (then the others are stopped too and the
        first error is raised)."""
        finished = {n.name for n in self.nodes if self.is_done(n)}
        pending = {n.name: n for n in self.nodes if n.name not in finished}
        running: Dict[str, ExperimentNode] = {}
        threads: Dict[str, threading.Thread] = {}
        ended: List[str] = []

        def body(node: ExperimentNode) -> None:
            try:
                self.run_node(node)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                self.errors.append(e)
                self.stop.set()  # the others stop and save their state
            finally:
                with self._wake:
                    ended.append(node.name)
                    self._wake.notify_all()

        while (pending or running) and not self.stop.is_set():
            for node in self._ready(pending, finished):
                if not self._room(running):
                    break
                pending.pop(node.name)
                running[node.name] = node
                self.order.append(node.name)
                t = threading.Thread(target=body, args=(node,), name=f"exp-{node.name}",
                                     daemon=True)
                threads[node.name] = t
                t.start()
            with self._wake:
                # woken when an experiment ends; the timeout re-checks the room (trials end
                # inside running experiments) and lets the main thread take signals
                self._wake.wait_for(lambda: bool(ended) or self.stop.is_set(), timeout=0.5)
                names, ended[:] = list(ended), []
            for name in names:
                running.pop(name, None)
                threads.pop(name).join()
                if not self.errors:
                    finished.add(name)
        for t in list(threads.values()):
            while t.is_alive():
                t.join(timeout=0.5)  # short joins: the main thread keeps taking signals
        if self.errors:
            raise self.errors[0]

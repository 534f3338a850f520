"""The study's one progress view: a single bar on a terminal, one line per trial elsewhere,
a line for each failure and each finished experiment (no Ray needed)."""
from __future__ import annotations

import io
import sys
from types import SimpleNamespace

from lci.errors import FAILED_KEY
from study.live import live
from study.progress import StudyProgress, TrialEvents, view


class Tty(io.StringIO):
    def isatty(self):
        return True


def _trial(tid, seed, last, experiment="a__eval"):
    return SimpleNamespace(trial_id=tid, config={"seed": seed, "experiment": experiment},
                           last_result=last, local_path="")


def test_one_bar_on_a_terminal(monkeypatch):
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    p = StudyProgress("k-tty", total=4, done=1)
    with live("k-tty", SimpleNamespace(progress=p)):  # the driver's run: callbacks find its view
        ev = TrialEvents("k-tty")
        ev.on_trial_start(iteration=1, trials=[], trial=_trial("t1", 0, {}))
        ev.on_trial_start(iteration=1, trials=[], trial=_trial("t2", 0, {}, "b__eval"))
        assert len(p.running) == 2
        ev.on_trial_complete(iteration=2, trials=[], trial=_trial("t1", 0, {"epoch": 3}))
        ev.on_trial_complete(iteration=2, trials=[],
                             trial=_trial("t2", 0, {"epoch": 1, FAILED_KEY: "DivergenceError: x"},
                                          "b__eval"))
        p.experiment_line("a__eval: done")
    assert p.done == 3 and p.failed == 1 and p.ended_by_experiment() == {"a__eval": 1,
                                                                         "b__eval": 1}
    p.close()
    out = err.getvalue()
    assert "study" in out and "3/4" in out and "failed 1" in out
    assert "b__eval: trial t2 FAILED DivergenceError: x" in out and "a__eval: done" in out
    assert view("k-tty") is None  # a driver's view is found only while it runs


def test_lines_elsewhere(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    lines = []
    p = StudyProgress("k-log", total=2, echo=lines.append)
    with live("k-log", SimpleNamespace(progress=p)):
        TrialEvents("k-log").on_trial_complete(
            iteration=1, trials=[], trial=_trial("t9", 4, {"epoch": 6}, "c__eval"))
    p.close()
    assert lines == ["  [1/2] c__eval  t9  seed=4  epoch=6"]

"""A study-wide cap on running trials, shared by the experiments that run at once.

Every experiment of a study runs its own ``tune.Tuner`` in a thread of one driver process
(:mod:`study.scheduler`). Tune's ``max_concurrent_trials`` caps one experiment; the study's
``max_concurrent`` caps them all together. The cap is a :class:`TrialGate` in this process:
every searcher of the study asks the gate before it suggests a trial and gives the slot back
when the trial completes. A searcher holds only the gate's *key* (Tune pickles searchers into
the experiment folder, and a restored searcher must find the live gate of the new driver).
"""
from __future__ import annotations

import threading
from typing import Dict, Optional, Set

_GATES: Dict[str, "TrialGate"] = {}
_REGISTRY_LOCK = threading.Lock()


class TrialGate:
    def __init__(self, cap: Optional[int] = None):
        self.cap = cap
        self._lock = threading.Lock()
        self._held: Set[str] = set()

    def acquire(self, trial_key: str) -> bool:
        """A slot for a new trial, or False when the study runs ``cap`` trials already."""
        with self._lock:
            if trial_key in self._held:
                return True
            if self.cap is not None and len(self._held) >= self.cap:
                return False
            self._held.add(trial_key)
            return True

    def hold(self, trial_key: str) -> None:
        """Count a trial that runs anyway (resumed from an interrupted experiment)."""
        with self._lock:
            self._held.add(trial_key)

    def release(self, trial_key: str) -> None:
        with self._lock:
            self._held.discard(trial_key)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._held)


def set_gate(key: str, cap: Optional[int]) -> TrialGate:
    with _REGISTRY_LOCK:
        _GATES[key] = TrialGate(cap)
        return _GATES[key]


def gate(key: Optional[str]) -> TrialGate:
    """The gate registered under ``key``; an unlimited one when there is none (a searcher
    used outside a study, or in a process that did not set one)."""
    with _REGISTRY_LOCK:
        if key is None or key not in _GATES:
            return TrialGate(None)
        return _GATES[key]


def drop_gate(key: str) -> None:
    with _REGISTRY_LOCK:
        _GATES.pop(key, None)

"""How the study's driver stops: SIGINT and SIGTERM, both like Ctrl-C of one Tune run."""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional

from . import tune_compat


class StopSignals:
    """SIGINT and SIGTERM (how schedulers and ``kill`` stop jobs) both stop the study the way
    Ctrl-C stops one Tune run: the study's Tune run saves its state, the driver exits 130
    (SIGINT) or 143 (SIGTERM) with the ``--resume`` line."""

    def __init__(self):
        self.received: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second Ctrl-C: stop waiting for the snapshots
            raise KeyboardInterrupt
        self.received = signum
        tune_compat.STOP.set()

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

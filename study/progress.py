"""One progress view for a whole study (instead of Ray's status tables).

Several experiments run at once, so per-experiment bars would interleave. The study has one
:class:`StudyProgress`: on a terminal a single tqdm bar (trials done / total, running now,
failures, ETA), elsewhere (CI logs, ``ray job`` logs) one line per finished trial; plus one
line when an experiment finishes or a trial fails. The study's Tuner gets a
:class:`TrialEvents` callback that forwards trial events to the view of the study's live
driver (:mod:`study.live`: Tune pickles callbacks into the study folder, and a restored run
must reach the view of the new driver).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from ray import tune

from .trials import ERROR_FILE, EXPERIMENT_KEY, FAILED_KEY
from .trials import failure_reason as _reason_of

class StudyProgress:
    def __init__(self, key: str, total: int, done: int = 0,
                 echo: Callable[[str], None] = print, ended_ids: Iterable[str] = ()):
        self.key, self.total, self.done = key, int(total), int(done)
        self.failed = 0
        self.running: set = set()
        self._ended: Dict[str, int] = {}
        # trials already counted (``done``): a trial that Tune's restored state still had
        # running although it had ended (the driver stopped before Tune saved its state)
        # ends again on resume, and is not counted twice
        self._counted = set(ended_ids)
        self.echo = echo
        self._t0 = time.time()
        self._done_at_start = self.done
        self._bar = None
        if _tty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc="study", unit="trial",
                             dynamic_ncols=True, file=sys.stderr)

    # ---------------------------------------------------------------------------- events
    def trial_started(self, experiment: str, trial_id: str) -> None:
        self.running.add((experiment, trial_id))
        self._refresh()

    def trial_ended(self, experiment: str, trial: Any, failed: bool, reason: str = "") -> None:
        self.running.discard((experiment, trial.trial_id))
        if trial.trial_id in self._counted:
            self._refresh()
            return
        self._counted.add(trial.trial_id)
        self._ended[experiment] = self._ended.get(experiment, 0) + 1
        self.done += 1
        self.failed += int(failed)
        last = trial.last_result or {}
        if failed:
            self._line(f"  {experiment}: trial {trial.trial_id} FAILED {reason}".rstrip())
        elif self._bar is None:
            seed = trial.config.get("seed")
            self._line(f"  [{self.done}/{self.total}] {experiment}  {trial.trial_id}  "
                       f"seed={seed}  epoch={last.get('epoch')}")
        self._refresh()

    def ended_by_experiment(self) -> Dict[str, int]:
        """Trials that ended in this driver, per experiment."""
        return dict(self._ended)

    def experiment_line(self, text: str) -> None:
        self._line(text)

    # ---------------------------------------------------------------------------- output
    def _line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)  # above the bar, on its stream
        else:
            self.echo(text)

    def _eta(self) -> str:
        n = self.done - self._done_at_start
        left = self.total - self.done
        if n <= 0 or left <= 0:
            return "?"
        s = (time.time() - self._t0) / n * left
        return time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s / 3600:.0f}h"

    def _refresh(self) -> None:
        if self._bar is None:
            return
        self._bar.n = self.done
        post = f"running {len(self.running)}"
        if self.failed:
            post += f", failed {self.failed}"
        self._bar.set_postfix_str(f"{post}, eta {self._eta()}", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _tty() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def view(key: Optional[str]) -> Optional[StudyProgress]:
    """The progress view of the live driver of study folder ``key`` (:mod:`study.live`)."""
    from .live import find

    return getattr(find(key), "progress", None)


def failure_reason(trial: Any) -> str:
    """One line: the trainable's own reason, or the last line of Tune's error.txt."""
    try:
        with open(f"{trial.local_path}/{ERROR_FILE}") as fh:
            text = fh.read()
    except (OSError, TypeError):
        text = None
    return _reason_of(trial.last_result or {}, text)


class TrialEvents(tune.Callback):
    """Forwards the study's trial events to its :class:`StudyProgress`, each under the
    experiment named in the trial's config."""

    def __init__(self, view_key: str):
        self.view_key = view_key

    def _experiment(self, trial: Any) -> str:
        return str((trial.config or {}).get(EXPERIMENT_KEY, "?"))

    def on_trial_start(self, iteration: int, trials: List[Any], trial: Any, **info) -> None:
        v = view(self.view_key)
        if v is not None:
            v.trial_started(self._experiment(trial), trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any, **info) -> None:
        v = view(self.view_key)
        if v is not None:
            failed = FAILED_KEY in (trial.last_result or {})
            v.trial_ended(self._experiment(trial), trial, failed, failure_reason(trial) if failed else "")

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info) -> None:
        v = view(self.view_key)
        if v is not None:
            v.trial_ended(self._experiment(trial), trial, True, failure_reason(trial))


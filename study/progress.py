"""A compact progress view of one Tune experiment (instead of Ray's own status tables).

On a terminal: one tqdm bar per experiment with the best score so far. Elsewhere (CI logs,
``ray job`` logs): one line per finished trial. Tune's own output is switched off by the
runner (``RunConfig(verbose=0)`` with the classic reporter).
"""
from __future__ import annotations

import math
import sys
from typing import Any, Dict, List, Optional

from ray import tune


class ProgressCallback(tune.Callback):
    def __init__(self, label: str, total: int, metric: str, mode: str = "max"):
        self.label, self.total, self.metric, self.mode = label, int(total), metric, mode
        self._bar = None
        self._best: Optional[float] = None
        self._seen: set = set()

    # Tune pickles the run config (callbacks included) into the experiment folder
    def __getstate__(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["_bar"] = None
        return d

    def _tty(self) -> bool:
        return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()

    def _ensure_bar(self, done: int) -> None:
        if self._bar is None and self._tty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=done, desc=self.label, unit="trial",
                             leave=True, dynamic_ncols=True, file=sys.stderr)

    def _finished(self, trials: List[Any], trial: Any = None) -> int:
        # the trial being reported may not carry its final status yet: count it as finished
        return sum(t.status in ("TERMINATED", "ERROR") or t is trial for t in trials)

    def _note(self, trial: Any, status: str) -> None:
        if trial.trial_id in self._seen:
            return
        self._seen.add(trial.trial_id)
        last = trial.last_result or {}
        v = last.get(self.metric)
        if isinstance(v, (int, float)) and math.isfinite(v) and status == "ok":
            better = self._best is None or (v > self._best if self.mode == "max" else v < self._best)
            self._best = v if better else self._best

    def _update(self, trials: List[Any], trial: Any, status: str, detail: str = "") -> None:
        self._note(trial, status)
        done = self._finished(trials, trial)
        self._ensure_bar(done - 1)
        last = trial.last_result or {}
        v = last.get(self.metric)
        best = f"{self._best:.4f}" if self._best is not None else "-"
        if self._bar is not None:
            self._bar.n = done
            self._bar.set_postfix_str(f"best {self.metric}={best}", refresh=True)
            if detail:
                self._bar.write(f"  {self.label}: trial {trial.trial_id} {detail}")
        else:
            seed = trial.config.get("seed")
            score = f"{self.metric}={v:.4f}" if isinstance(v, (int, float)) else ""
            ep = last.get("epoch")
            who = f"seed={seed}" if "__search" not in self.label else ""
            print(f"  [{done}/{self.total}] {self.label}  {trial.trial_id}  {who}  "
                  f"epoch={ep}  {score}  {detail}".rstrip(), file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any, **info) -> None:
        self._update(trials, trial, "ok")

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info) -> None:
        err = ""
        try:
            path = trial.local_path or ""
            err = open(f"{path}/error.txt").read().strip().splitlines()[-1][:200]
        except Exception:
            pass
        self._update(trials, trial, "error", f"FAILED {err}".strip())

    def on_experiment_end(self, trials: List[Any], **info) -> None:
        if self._bar is not None:
            self._bar.n = self._finished(trials)
            self._bar.refresh()
            self._bar.close()
            self._bar = None

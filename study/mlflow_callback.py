"""Ray's MLflowLoggerCallback, kept at one MLflow run per trial across ``--resume``.

Ray's callback remembers which MLflow run belongs to which trial only in memory, keyed by the
Trial object; after ``Tuner.restore`` every resumed trial would open a second run. Here the
trial id -> run id map is part of Tune's callback state (saved with the experiment), so a
resumed trial goes on logging into its own run. Imported only when tracking is on (it
imports Ray; mlflow itself is imported by Ray's callback when it is created).
"""
from __future__ import annotations

from typing import Dict, Optional

from ray.air.integrations.mlflow import MLflowLoggerCallback


class ResumableMLflowLoggerCallback(MLflowLoggerCallback):
    def get_state(self) -> Optional[Dict]:
        runs = getattr(self, "_trial_runs", None) or {}
        known = {**getattr(self, "_restored_runs", {}),
                 **{t.trial_id: run_id for t, run_id in runs.items()}}
        return {"runs": known} if known else None

    def set_state(self, state: Dict) -> None:
        self._restored_runs = dict(state.get("runs", {}))

    def log_trial_start(self, trial) -> None:
        restored = getattr(self, "_restored_runs", {})
        if trial not in self._trial_runs and trial.trial_id in restored:
            run_id = restored.pop(trial.trial_id)
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            try:
                client.update_run(run_id, status="RUNNING")  # it was ended FAILED or KILLED
                self._trial_runs[trial] = run_id
            except Exception:  # the run was deleted meanwhile: Ray opens a new one
                pass
        super().log_trial_start(trial)

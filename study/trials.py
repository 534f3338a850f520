"""The one reader of Tune trial folders, and the one definition of a trial's outcome.

``study/`` (best trial of a search, the end-of-study summary, resume) and ``analysis/`` (tidy
frames, tables, counts of missing seeds) both read trials through :func:`read_trial`, so a
trial is counted the same way everywhere. A study's trial folders are
``<study>/trials/<experiment>-<trial id>`` (:func:`read_study_trials` groups them):

- **finished**: its last result reached the planned number of epochs. This holds even when
  the folder has an ``error.txt``: Tune leaves one behind after a failure it recovered from
  (the trial was restarted from its checkpoint and then ran to the end).
- **failed**: not finished, and an ``error.txt`` says why (Tune's traceback after the last
  retry, or the one-line reason the trainable writes for an error that would recur).
- **stopped**: not finished, no error, ended by a scheduler (ASHA) before its last epoch.
- **incomplete**: none of the above: still running, or interrupted (``--resume`` continues it).
  A folder whose ``params.json`` is empty or torn (Tune had created it but not written it when
  the driver died or the disk filled up) is an incomplete trial too: it never started.

Ray-free (plain files, local or ``s3://`` through :mod:`study.storage`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

from lci.errors import FAILED_KEY
from lci.names import ERROR_FILE, PARAMS_FILE, TUNE_RESULT_FILE, is_fused_container

from . import storage

FINISHED, FAILED, STOPPED, INCOMPLETE = "finished", "failed", "stopped", "incomplete"
#: kinds of failure (:meth:`TrialRecord.failure_kind`)
DIVERGED, REFUSED, CRASHED = "diverged", "refused", "crashed"


@dataclass
class TrialRecord:
    trial_id: str
    path: str
    config: Dict[str, Any]
    last: Dict[str, Any]               # the last line of Tune's result.json
    n_results: int
    error_text: Optional[str]          # error.txt, when there is one
    torn: bool = False                 # params.json empty or cut short: the trial never started

    @property
    def epoch(self) -> int:
        return int(self.last.get("epoch", 0) or 0)

    def planned_epochs(self) -> Optional[int]:
        """The epochs the trial was set up to run (from its resolved config)."""
        from lci.config import TrainConfig
        from lci.errors import LCIError

        try:
            return int(TrainConfig.from_known(self.config).resolved().epochs)
        except (LCIError, TypeError, ValueError):
            return None

    def status(self, epochs: Optional[int] = None, stopped: bool = False) -> str:
        """finished / failed / stopped / incomplete (module docstring). ``epochs`` defaults to
        the planned epochs of the trial's config; ``stopped`` says that Tune ended the trial
        (TERMINATED), which makes an unfinished trial without error *stopped*."""
        if self.torn:
            return INCOMPLETE
        planned = epochs if epochs is not None else self.planned_epochs()
        if planned is not None and self.epoch >= planned and FAILED_KEY not in self.last:
            return FINISHED
        if self.error_text is not None or FAILED_KEY in self.last:
            return FAILED
        return STOPPED if stopped else INCOMPLETE

    def finished(self, epochs: Optional[int] = None) -> bool:
        return self.status(epochs) == FINISHED

    def failed(self, epochs: Optional[int] = None) -> bool:
        return self.status(epochs) == FAILED

    def results(self) -> List[Dict[str, Any]]:
        """Every result of the trial (the lines of Tune's ``result.json``)."""
        return _result_lines(self.path)

    def reason(self) -> str:
        """One line on why the trial failed (empty when it did not)."""
        return failure_reason(self.last, self.error_text)

    def failure_kind(self) -> str:
        """Why a failed trial failed, as what ``--resume`` does about it: *diverged* (a
        non-finite loss: the same config and seed diverge again, so it is not rerun),
        *refused* (bad input found by the trial: not rerun either), or *crashed* (an
        exception after Tune's retries: ``--resume`` reruns it from its checkpoint)."""
        if FAILED_KEY in self.last:
            return DIVERGED if str(self.last[FAILED_KEY]).startswith("DivergenceError") \
                else REFUSED
        return CRASHED


def failure_reason(last: Mapping[str, Any], error_text: Optional[str]) -> str:
    """One line (at most 300 characters) on why a trial failed: the trainable's own reason
    in its last result, else the last line of ``error.txt`` (Tune's exception); empty when
    there is neither."""
    if FAILED_KEY in last:
        return str(last[FAILED_KEY])[:300]
    lines = [l.strip() for l in (error_text or "").splitlines() if l.strip()]
    return lines[-1][:300] if lines else ""


def read_result_lines(text: str) -> List[Dict[str, Any]]:
    """The JSON lines of a ``result.json``; a line cut by a crash is skipped."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def _result_lines(trial_path: str) -> List[Dict[str, Any]]:
    return read_result_lines(_text_or_empty(storage.join(trial_path, TUNE_RESULT_FILE)))


def _text_or_empty(path: str) -> str:
    """A trial file's text; a missing or undecodable one reads as empty (cut short)."""
    try:
        return storage.read_text(path) or ""
    except storage.TornFile:
        return ""


def read_trial(path: str, name: Optional[str] = None) -> Optional[TrialRecord]:
    """One trial folder (one with Tune's ``params.json``), or None when it is not one. A
    ``params.json`` that is empty or torn gives a *torn* record: incomplete, with only the
    experiment label its folder name carries (:func:`trial_folder_name`). A fused trial's own
    folder is no trial either: its seeds' folders are read instead."""
    folder = name or path.rstrip("/").rsplit("/", 1)[-1]
    try:
        config = storage.read_json(storage.join(path, PARAMS_FILE))
        torn = not isinstance(config, dict)
    except storage.TornFile:
        config, torn = None, True
    if config is None and not storage.exists(storage.join(path, PARAMS_FILE)):
        return None
    if not torn and is_fused_container(config) and not _failed_before_seeds(path, config):
        return None  # its seeds' folders are read instead
    if torn:
        config = {EXPERIMENT_KEY: folder.rsplit("-", 1)[0]} if "-" in folder else {}
    lines = [] if torn else _result_lines(path)
    last = lines[-1] if lines else {}
    error_path = storage.join(path, ERROR_FILE)
    error_text = _text_or_empty(error_path) if storage.exists(error_path) else None
    return TrialRecord(trial_id=last.get("trial_id", folder), path=path, config=config,
                       last=last, n_results=len(lines), error_text=error_text, torn=torn)


def _failed_before_seeds(path: str, config: Dict[str, Any]) -> bool:
    """A fused trial that failed before any seed's folder was written (bad input found at
    its start): then the container is the only record of that failure."""
    from lci.names import FUSED_KEY, fused_member_folder

    if not storage.exists(storage.join(path, ERROR_FILE)) and \
            FAILED_KEY not in (_result_lines(path)[-1:] or [{}])[0]:
        return False
    return not any(storage.exists(fused_member_folder(path.rstrip("/"), int(s)))
                   for s in config.get(FUSED_KEY) or [])


def read_trials(folder: str) -> List[TrialRecord]:
    """Every trial folder directly in ``folder``, in folder-name order."""
    out = []
    for d in storage.listdir(folder):
        rec = read_trial(storage.join(folder, d), d)
        if rec is not None:
            out.append(rec)
    return out


#: The study folder's own files (:mod:`study.state` writes them; analysis/ reads study.json):
#: the one home of their names, beside TRIALS_DIR below.
STUDY_FILE, STATE_FILE, SUMMARY_FILE = "study.json", "study_state.json", "summary.json"
EXPERIMENT_KEY = "experiment"  # the config label naming a trial's experiment
#: the study's Tune run inside the study folder: Tune's state files and every trial folder.
#: (Not the study folder itself: a restored Tune run copies the top-level .json files of its
#: folder and writes them back later, which would undo the study's own state file.)
TRIALS_DIR = "trials"


def trial_folder_name(experiment: str, trial_id: str) -> str:
    """A trial's folder in ``<study>/trials/``: its experiment's name, then Tune's trial id."""
    return f"{experiment}-{trial_id}"


def read_study_trials(study_dir: str) -> Dict[str, List[TrialRecord]]:
    """Every trial of a study folder, by experiment name (the ``experiment`` label of its
    config): those in ``trials/``; studies written before lci-study 0.3 kept one folder per
    experiment with the trials inside, and those are read too, under the folder's name."""
    out: Dict[str, List[TrialRecord]] = {}
    for d in storage.listdir(study_dir):
        path = storage.join(study_dir, d)
        rec = read_trial(path, d)
        if rec is not None:
            out.setdefault(str(rec.config.get(EXPERIMENT_KEY) or d), []).append(rec)
        else:
            for r in read_trials(path):  # the older layout
                out.setdefault(str(r.config.get(EXPERIMENT_KEY) or d), []).append(r)
    return out


def experiment_trials(study_dir: str, experiment: str) -> List[TrialRecord]:
    """The trials of one experiment of a study folder."""
    return read_study_trials(study_dir).get(experiment, [])


def get_path(cfg: Mapping[str, Any], path) -> Any:
    v: Any = cfg
    for k in path:
        if not isinstance(v, Mapping) or k not in v:
            return None
        v = v[k]
    return v

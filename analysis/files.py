"""Reading one trial's files for analysis/: JSON, JSON lines cut by a crash, and the trial's
status by the study's own definitions (:mod:`study.trials`)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional


def _read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        warnings.warn(f"cannot read {path}: {e}", stacklevel=3)
        return None


def _read_json_records(path: Path) -> List[Dict[str, Any]]:
    """A JSON dict, a JSON list of dicts, or JSON lines (Tune); a torn last line is skipped."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):  # missing, or overwritten with bytes: no records
        return []
    if not text.strip():
        return []
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return [obj]
        if isinstance(obj, list):
            return [o for o in obj if isinstance(o, dict)]
    except ValueError:
        pass
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if isinstance(obj, dict):
            records.append(obj)
    return records


def _error_reason(path: Path) -> str:
    """The last non-empty line of Tune's ``error.txt`` (the exception), at most 300 chars."""
    from study.trials import failure_reason

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "error.txt unreadable"
    return failure_reason({}, text) or "failed (empty error.txt)"


def _tune_status(folder: Path, n_epochs: Optional[int], n_done: int):
    """(status, error) of a Tune trial folder by the study's own definitions
    (:mod:`study.trials`): finished -> "ok" (also after a failure Tune recovered from),
    failed -> "error" with its one-line reason, anything else -> "incomplete"."""
    from study.trials import FAILED, FINISHED, read_trial

    rec = read_trial(str(folder))
    if rec is None:  # no params.json: only the error file can tell
        err = folder / "error.txt"
        return ("error", _error_reason(err)) if err.is_file() else ("ok", None)
    planned = n_epochs if n_epochs is not None else rec.planned_epochs()
    st = rec.status(planned)
    error = (rec.reason() or "failed (empty error.txt)") if rec.error_text is not None \
        or st == FAILED else None
    if st == FINISHED:
        return "ok", error
    if st == FAILED:
        return "error", error
    return ("incomplete" if planned is not None or n_done == 0 else "ok"), error

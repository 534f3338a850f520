"""A run's output folder: config.json, history.csv, result.json, label_issues.csv."""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from contextlib import contextmanager
from typing import IO, Any, Dict, Iterator, List

#: The files of a run folder: the one home of their names (lci, trainables, analysis read them)
CONFIG_FILE, HISTORY_FILE, RESULT_FILE = "config.json", "history.csv", "result.json"
LABEL_ISSUES_FILE, CHECKPOINT_FILE = "label_issues.csv", "checkpoint.pt"
#: what a trial copies to its folder when it ends (the checkpoint holds them too)
RUN_FILES = (CONFIG_FILE, HISTORY_FILE, RESULT_FILE, LABEL_ISSUES_FILE)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; a missing value reads back as null
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """A file to write ``path`` through: a temporary file beside it, synced and renamed over
    ``path`` when the block ends, removed when it fails (a crash, a full disk), so ``path``
    is always either the previous file or the new one whole. The one atomic writer of local
    files (checkpoints, run files, the study folder's own files)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str, obj: Dict[str, Any]) -> None:
    with atomic_open(path) as fh:
        json.dump(_jsonable(obj), fh, indent=2, sort_keys=True)


def check_writable(folder: str) -> None:
    """Fail before any training when results could not be saved (read-only path, full disk)."""
    from .errors import LCIError

    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, ".write-probe")
        with open(probe, "wb") as fh:
            fh.write(b"0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        os.unlink(probe)
    except OSError as e:
        raise LCIError(f"cannot write results to {folder!r}: {e.strerror or e}") from None


class RunWriter:
    """Writes the files of one run; the history is appended epoch by epoch."""

    def __init__(self, out_dir: str):
        self.out_dir = os.path.abspath(out_dir)
        check_writable(self.out_dir)
        self.history_path = os.path.join(self.out_dir, HISTORY_FILE)
        self._columns: List[str] = []

    def write_config(self, cfg: Dict[str, Any]) -> None:
        write_json_atomic(os.path.join(self.out_dir, CONFIG_FILE), cfg)

    def append_history(self, row: Dict[str, float]) -> None:
        if not self._columns or any(k not in self._columns for k in row):
            # first row, or a metric appeared: rewrite with the widened header
            rows = self._read() + [row]
            self.rewrite_history(rows)
            return
        with open(self.history_path, "a", newline="") as fh:
            csv.DictWriter(fh, self._columns).writerow(row)

    def _read(self) -> List[Dict[str, Any]]:
        if not os.path.exists(self.history_path):
            return []
        with open(self.history_path, newline="") as fh:
            return list(csv.DictReader(fh))

    def rewrite_history(self, rows: List[Dict[str, Any]]) -> None:
        cols: List[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
        self._columns = cols
        with atomic_open(self.history_path, newline="") as fh:
            w = csv.DictWriter(fh, cols)
            w.writeheader()
            w.writerows(rows)

    def write_result(self, result: Dict[str, Any]) -> None:
        write_json_atomic(os.path.join(self.out_dir, RESULT_FILE), result)

    def write_label_issues(self, df) -> None:
        with atomic_open(os.path.join(self.out_dir, LABEL_ISSUES_FILE), newline="") as fh:
            df.to_csv(fh, index=False)

"""One driver per study folder.

Two ``lci sweep`` drivers on one study would both drive its Tune experiments and its Optuna
studies, and corrupt them for good (trials told twice, a state file written by two writers).
The running driver holds ``<study>/driver.lock``:

- an OS lock (``fcntl.flock``) on the open file, which the kernel drops when the process dies,
  however it dies, so a crashed driver never blocks a ``--resume``;
- the holder written in the file (PID, host, start time), so the refusal can name it.

A second driver is refused at once (exit 2) with the holder's PID and host. On a shared file
system where ``flock`` is not honoured across hosts, the PID/host record is the fallback: a lock
file of a PID that is dead on *this* host is stale and taken over with a message; one from
another host is respected (delete the file by hand if that host is gone).
For a remote (``s3://``) study folder there is no lock: run one driver per study there.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Callable, Optional

from lci.errors import LCIError

from . import storage

LOCK_FILE = "driver.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder_text(info: dict) -> str:
    return (f"PID {info.get('pid')} on host {info.get('host')!r} "
            f"(since {info.get('started', '?')})")


class StudyLock:
    def __init__(self, study_dir: str, echo: Callable[[str], None] = print):
        self.dir = study_dir
        self.path = os.path.join(study_dir, LOCK_FILE)
        self.echo = echo
        self._fh = None
        self.created_dir = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`LCIError` naming the holder. Creates the study folder
        when it does not exist yet (``created_dir`` says so, for a clean refusal later)."""
        if storage.is_uri(self.dir):
            return
        import fcntl

        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, exist_ok=True)
            self.created_dir = True
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            info = self._read()
            fh.close()
            raise LCIError(f"study {self.dir} is being run by another driver: "
                           f"{_holder_text(info)}; wait for it, or stop it first") from None
        info = self._read()
        here = socket.gethostname()
        if info.get("pid") and info.get("pid") != os.getpid():
            if info.get("host") == here and not _alive(int(info["pid"])):
                self.echo(f"taking over the stale lock of {_holder_text(info)}: that process "
                          "is gone")
            elif info.get("host") != here:
                fh.close()
                raise LCIError(f"study {self.dir} is locked by {_holder_text(info)} "
                               f"({self.path}); if that driver is gone, delete the file")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": here,
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        self._fh = fh

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.loads(f.read() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self, remove_dir: bool = False) -> None:
        """Drop the lock; ``remove_dir`` removes a study folder this lock created and that
        holds nothing else (a study refused before it started leaves no trace)."""
        if self._fh is None:
            return
        # emptied, not deleted: a driver that opened the file just before would otherwise
        # lock the deleted inode while a third one locks a new file of the same name
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.flush()
        if remove_dir and self.created_dir:
            try:
                os.unlink(self.path)
                os.rmdir(self.dir)
            except OSError:
                pass
        self._fh.close()  # drops the flock
        self._fh = None

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(study_dir: str) -> Optional[dict]:
    """The recorded holder of a study folder's lock, if any (for messages and tests)."""
    p = os.path.join(study_dir, LOCK_FILE)
    try:
        with open(p) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None

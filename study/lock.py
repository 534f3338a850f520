"""One driver per study folder, also across hosts: a lease the live driver renews.

Two ``lci sweep`` drivers on one study would both drive its Tune experiments and its Optuna
studies, and corrupt them for good (trials told twice, a state file written by two writers).
The running driver holds a *lease* on the study, a small JSON record (PID, host, start time,
last renewal, lease length, a random token) in ``<study>/driver.lock.<generation>``; the
record of the highest generation is the one that counts.

- **Renewal**: a daemon thread of the driver rewrites its record every quarter of the lease
  (default 60 s, ``LCI_LOCK_LEASE_S``). A thread, not the driver's loop: the lease is taken
  before Ray starts and kept through ``ray.init`` on a cluster, Tune's restore and its
  experiment snapshots to slow storage, any of which can block the loop for longer than a
  lease; the thread only writes this one file.
- **Expiry**: a record whose last renewal is older than its lease length is expired (its driver
  died, or its host did, or lost the storage); so is one of a PID that is gone on this host
  (no need to wait), and a released one (the driver ended). A new driver on any host takes an
  expired lease over, with a message; a live lease is refused at once (exit 2) naming the
  holder and when the lease would expire. Expiry compares the holder's clock with the
  reader's: hosts must keep their clocks in step to well under a lease (NTP does).
- **Atomic takeover**: the new driver creates generation ``g+1`` with ``os.link`` of a file
  already holding its record, which fails when that name exists, on local disks and on NFS
  alike (the server decides). Of two drivers that saw generation ``g`` expire, one links
  ``g+1``; the other fails, reads the winner's live record and is refused. The winner then
  re-reads the generations to confirm it holds the highest one before anything starts.
  Records are written whole (temporary file + rename), so a reader never sees half a record.
  A few older generations are kept (a host whose directory listing lags may otherwise claim a
  deleted one); the ones before those are removed.
- **Lost lease**: a renewal that finds a higher generation (this driver stalled for longer
  than its lease and another took over) ends this process at once with one line: the other
  driver owns the study now, and this one must not write to it again.

For a remote (``s3://``) study folder there is no lock: run one driver per study there.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional, Tuple

from lci.errors import LCIError

from . import storage

LOCK_FILE = "driver.lock"
LEASE_ENV = "LCI_LOCK_LEASE_S"
DEFAULT_LEASE_S = 60.0
KEEP_GENERATIONS = 8
_GEN = re.compile(re.escape(LOCK_FILE) + r"\.(\d+)$")


def lease_seconds() -> float:
    """The lease length of this process: ``LCI_LOCK_LEASE_S`` or 60 s."""
    raw = os.environ.get(LEASE_ENV)
    if raw is None:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise LCIError(f"{LEASE_ENV}={raw!r} must be a number of seconds above 0")
    return value


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


def generation_path(study_dir: str, gen: int) -> str:
    return os.path.join(study_dir, f"{LOCK_FILE}.{gen}")


def _generations(study_dir: str) -> List[int]:
    try:
        names = os.listdir(study_dir)
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _GEN.match(n)))


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            info = json.loads(f.read() or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def current(study_dir: str) -> Tuple[int, Optional[dict]]:
    """The highest generation and its record: ``(-1, None)`` when no driver ever held it."""
    gens = _generations(study_dir)
    if not gens:
        return -1, None
    return gens[-1], _read(generation_path(study_dir, gens[-1]))


def expired(info: dict, now: float) -> bool:
    """Whether a record no longer holds the study: released, past its lease, or unreadable."""
    if info.get("released"):
        return True
    try:
        return now > float(info["renewed"]) + float(info["lease_s"])
    except (KeyError, TypeError, ValueError):
        return True


def _exit_lost(message: str) -> None:
    # another driver owns the study now: any further write (Tune's snapshot on a graceful
    # stop included) would corrupt it, so no clean-up runs
    print(message, file=sys.stderr, flush=True)
    os._exit(2)


class StudyLock:
    """The lease on one study folder. ``clock`` (wall-clock seconds) and ``lease_s`` are
    parameters for tests; ``on_lost(message)`` runs when a renewal finds the lease taken over
    (default: the message on stderr and exit status 2 at once)."""

    def __init__(self, study_dir: str, echo: Callable[[str], None] = print, *,
                 lease_s: Optional[float] = None, clock: Callable[[], float] = time.time,
                 on_lost: Callable[[str], None] = _exit_lost):
        self.dir = study_dir
        self.path = os.path.join(study_dir, LOCK_FILE)  # the generations' common prefix
        self.echo = echo
        self.lease_s = float(lease_s) if lease_s is not None else lease_seconds()
        self.clock = clock
        self.on_lost = on_lost
        self.created_dir = False
        self.gen: Optional[int] = None
        self._info: Dict[str, object] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._write = threading.Lock()  # renewal and release never interleave

    # ------------------------------------------------------------------------------ acquire
    def acquire(self) -> None:
        """Take the lease or raise :class:`LCIError` naming the holder. Creates the study folder
        when it does not exist yet (``created_dir`` says so, for a clean refusal later)."""
        if storage.is_uri(self.dir):
            return
        if not os.path.isdir(self.dir):
            os.makedirs(self.dir, exist_ok=True)
            self.created_dir = True
        for _ in range(8):  # each lost race means another driver just took it: re-read
            gen, info = current(self.dir)
            note = self._takeover_note(info) if info else None
            if self._claim(gen + 1):
                if note:
                    self.echo(note)
                self._cleanup()
                self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                                name="lci-study-lease")
                self._thread.start()
                return
        raise LCIError(f"study {self.dir}: could not take its lock ({self.path}.*), other "
                       "drivers keep taking it; run one driver per study")

    def _takeover_note(self, info: dict) -> Optional[str]:
        """None for a lease nobody holds; the message of a takeover; LCIError for a live one."""
        if info.get("released"):
            return None
        here, now = socket.gethostname(), self.clock()
        pid = info.get("pid")
        if info.get("host") == here and isinstance(pid, int) and not _alive(pid):
            return f"taking over the stale lock of {_holder_text(info)}: that process is gone"
        if expired(info, now):
            try:
                ago = f"{now - float(info['renewed']):.0f}s ago"
            except (KeyError, TypeError, ValueError):
                ago = "never (unreadable record)"
            return (f"taking over the expired lock of {_holder_text(info)}: its lease of "
                    f"{info.get('lease_s', '?')}s was last renewed {ago}")
        left = float(info["renewed"]) + float(info["lease_s"]) - now
        raise LCIError(f"study {self.dir} is being run by another driver: {_holder_text(info)}; "
                       f"wait for it, or stop it first (if it is gone, its lease expires in "
                       f"{max(left, 0):.0f}s and a new driver takes over)")

    def _record(self) -> Dict[str, object]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "renewed": self.clock(),
                "lease_s": self.lease_s, "token": uuid.uuid4().hex}

    def _claim(self, gen: int) -> bool:
        """Create generation ``gen`` holding our record (fails when it exists), then confirm
        it is the highest one and ours."""
        info = self._record()
        path = generation_path(self.dir, gen)
        tmp = f"{path}.{info['token']}.tmp"
        try:
            storage.write_text(tmp, json.dumps(info))  # whole before it gets its real name
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:  # a full disk, a read-only folder
            raise LCIError(f"cannot take the study lock {path}: {e}") from None
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        top, now_info = current(self.dir)
        if top != gen or now_info.get("token") != info["token"]:
            return False  # a driver with a fresher view claimed a higher one meanwhile
        self.gen, self._info = gen, info
        return True

    def _cleanup(self) -> None:
        for g in _generations(self.dir):
            if g < self.gen - KEEP_GENERATIONS:
                try:
                    os.unlink(generation_path(self.dir, g))
                except OSError:
                    pass

    # ------------------------------------------------------------------------------- renew
    def renew(self) -> bool:
        """Rewrite our record with a fresh renewal time; False (and ``on_lost``) when another
        driver holds a higher generation or our record was replaced."""
        with self._write:
            if self.gen is None:
                return False
            top, info = current(self.dir)
            if top != self.gen or info.get("token") != self._info["token"]:
                self.gen = None
                lost = (f"study {self.dir}: this driver's lock was taken over by "
                        f"{_holder_text(info or {})} (no renewal for longer than its lease "
                        f"of {self.lease_s:g}s); stopping at once")
            else:
                self._info["renewed"] = self.clock()
                # replaced whole (temporary file + rename): readers see the old or the new one
                storage.write_text(generation_path(self.dir, self.gen), json.dumps(self._info))
                return True
        self._stop.set()
        self.on_lost(lost)
        return False

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.renew():
                    return
            except OSError as e:  # storage hiccup: the next renewal may succeed in time
                self.echo(f"warning: could not renew the study lock: {e}")

    # ----------------------------------------------------------------------------- release
    def release(self, remove_dir: bool = False) -> None:
        """Drop the lease; ``remove_dir`` removes a study folder this lock created and that
        holds nothing else (a study refused before it started leaves no trace)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._write:
            if self.gen is None:
                return
            path = generation_path(self.dir, self.gen)
            top, info = current(self.dir)
            if top == self.gen and info.get("token") == self._info["token"]:
                # kept, marked released: generations only grow, so no stale view can reuse it
                try:
                    storage.write_text(path, json.dumps({**self._info, "released": True}))
                except OSError as e:  # a full disk: the lease expires by itself (and its PID
                    # is gone, which a driver on this host sees at once)
                    self.echo(f"warning: could not release the study lock {path}: {e}")
            self.gen = None
        if remove_dir and self.created_dir:
            try:
                os.unlink(path)
                os.rmdir(self.dir)
            except OSError:
                pass

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(study_dir: str) -> Optional[dict]:
    """The record of the current (highest) generation, if any (for messages and tests)."""
    return current(study_dir)[1]

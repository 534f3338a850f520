"""Where a study keeps its Optuna studies (one per searched cell), safely for its storage.

- a local study folder: SQLite, ``<study>/optuna.db``;
- a study folder on a network file system (NFS, EFS, Lustre, a FUSE mount), or the setting
  ``journal``: Optuna's ``JournalStorage`` with a file backend, ``<study>/optuna.journal``.
  SQLite's file locking is unreliable there (Optuna's documentation warns against it); the
  journal appends under a lock that works on NFS. ``optuna-dashboard <study>/optuna.journal``
  reads it;
- a database URL (``postgresql://...``, ``mysql://...``, ``sqlite:///...``): that database
  (``${VAR}`` in it is read from the driver's environment, :mod:`study.secrets`);
- a remote study folder (``s3://...``): no Optuna storage during the run (each searcher keeps
  its study in memory, inside the searcher state that Tune saves and ``--resume`` restores);
  :func:`export_searches` copies every finished search into ``<study>/optuna.db``
  afterwards, so the dashboard and the importance plots work there too.

The runner calls :func:`resolve_optuna_storage` once per study, :func:`needs_export` to know
whether searches must be exported, and :func:`export_searches` after each search (or
once at the end: the export rebuilds the whole file, so calling it again is harmless).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from lci.errors import LCIError

from . import storage as fsutil
from .secrets import expand, mask

logger = logging.getLogger(__name__)

SETTINGS = ("sqlite", "journal", "none")
DB_FILE = "optuna.db"
JOURNAL_FILE = "optuna.journal"
# file systems where SQLite's POSIX locks are not to be trusted ("nfs4", "fuse.sshfs", ...)
NETWORK_FS_PREFIXES = ("nfs", "efs", "lustre", "fuse", "cifs", "smb", "9p", "glusterfs",
                       "ceph", "gpfs", "beegfs")


def normalize_optuna_storage(value: Any) -> str:
    """The spec's ``optuna_storage`` value, checked: 'sqlite' (default), 'journal', 'none'
    (also null/false) or a database URL. Raises LCIError otherwise (for spec validation)."""
    if value is None or value is False:
        return "none"
    if isinstance(value, str) and (value in SETTINGS or "://" in value):
        expand(value, "optuna_storage")  # a ${VAR} that is not set: refused before anything runs
        return value
    raise LCIError(f"optuna_storage={mask(value)!r}; allowed: 'sqlite', 'journal', 'none' or a "
                   "database URL like 'postgresql://host/db'")


# ----------------------------------------------------------------------------- file systems
def _mounts(path: str = "/proc/mounts") -> List[Tuple[str, str]]:
    """(mount point, fs type) of every mount; empty where /proc/mounts is not readable."""
    try:
        with open(path) as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return []
    # mount points escape blanks as \040
    return [(r[1].replace("\\040", " "), r[2]) for r in rows if len(r) >= 3]


def filesystem_type(path: str) -> Optional[str]:
    """The type of the file system that holds ``path`` (or would hold it: the nearest existing
    parent counts), from the longest matching mount point; None when unknown."""
    p = os.path.realpath(os.path.abspath(path))
    best: Optional[Tuple[str, str]] = None
    for mnt, fstype in _mounts():
        if p == mnt or p.startswith(mnt.rstrip("/") + "/") or mnt == "/":
            if best is None or len(mnt) > len(best[0]):
                best = (mnt, fstype)
    return best[1] if best else None


def is_network_fs(path: str) -> bool:
    fstype = (filesystem_type(path) or "").lower()
    return fstype.startswith(NETWORK_FS_PREFIXES)


# ---------------------------------------------------------------------------------- resolve
def storage_kind(setting: str, study_dir: str) -> str:
    """What :func:`resolve_optuna_storage` will use: 'sqlite', 'journal', 'url', 'memory'
    (a remote study folder: exported at the end) or 'none'."""
    setting = normalize_optuna_storage(setting)
    if setting == "none":
        return "none"
    if setting not in SETTINGS:
        return "url"
    if fsutil.is_uri(study_dir):
        return "memory"
    if setting == "journal" or is_network_fs(study_dir):
        return "journal"
    return "sqlite"


def resolve_optuna_storage(setting: str, study_dir: str):
    """The Optuna storage object for a study (what OptunaSearch(storage=...) takes), or None
    for in-memory studies. See the module docstring for the rules."""
    kind = storage_kind(setting, study_dir)
    if kind in ("none", "memory"):
        if kind == "memory":
            logger.info("study folder %s is remote: the Optuna studies stay in memory and are "
                        "copied into %s/%s when each search finishes", study_dir, study_dir,
                        DB_FILE)
        return None
    import optuna

    if kind == "url":
        return optuna.storages.RDBStorage(expand(setting, "optuna_storage"))
    os.makedirs(study_dir, exist_ok=True)
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        # the default lock (a symlink) is atomic on NFS and EFS too
        return optuna.storages.JournalStorage(
            JournalFileBackend(os.path.join(study_dir, JOURNAL_FILE)))
    return optuna.storages.RDBStorage(f"sqlite:///{os.path.join(study_dir, DB_FILE)}")


def dashboard_command(setting: str, study_dir: str) -> Optional[str]:
    """The optuna-dashboard command that watches this study's searches (None: no storage)."""
    kind = storage_kind(setting, study_dir)
    if kind == "sqlite":
        return f"optuna-dashboard sqlite:///{os.path.join(study_dir, DB_FILE)}"
    if kind == "journal":
        return f"optuna-dashboard {os.path.join(study_dir, JOURNAL_FILE)}"
    if kind == "url":
        return f"optuna-dashboard {mask(setting)}"
    if kind == "memory":  # only after the export, on a copy of the file
        return f"optuna-dashboard sqlite:///{DB_FILE}  (after copying {fsutil.join(study_dir, DB_FILE)} here)"
    return None


def needs_export(setting: str, study_dir: str) -> bool:
    """Whether finished searches must be copied into ``<study>/optuna.db`` by the runner."""
    return storage_kind(setting, study_dir) == "memory"


# ---------------------------------------------------------------------------------- export
StorageLike = Union[str, Any]


def export_searches(study_names: Iterable[str],
                    from_storage: Union[StorageLike, Mapping[str, StorageLike]],
                    dest: str) -> Optional[str]:
    """Copy Optuna studies into ``<dest>/optuna.db`` (dest: a local folder or a URI; the
    file is rebuilt from scratch, written next to its final place and then moved, or
    uploaded). ``from_storage``: one storage (object or URL) holding every study, or a
    mapping study name -> storage. Studies that are missing or have no trial are skipped.
    Returns the path of the file, or None when there was nothing to copy."""
    import optuna

    names = list(study_names)
    tmpdir = tempfile.mkdtemp(prefix="lci-optuna-")
    try:
        tmp_db = os.path.join(tmpdir, DB_FILE)
        target = optuna.storages.RDBStorage(f"sqlite:///{tmp_db}")
        copied = 0
        for name in names:
            src = from_storage.get(name) if isinstance(from_storage, Mapping) else from_storage
            if src is None:
                continue
            try:
                if not optuna.load_study(study_name=name, storage=src).trials:
                    continue
            except KeyError:  # no such study in that storage
                continue
            optuna.copy_study(from_study_name=name, from_storage=src, to_storage=target)
            copied += 1
        target.remove_session()
        target.engine.dispose()
        if not copied:
            return None
        out = fsutil.join(dest, DB_FILE)
        if fsutil.is_uri(dest):
            import pyarrow.fs

            fs, p = pyarrow.fs.FileSystem.from_uri(out)
            fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
            pyarrow.fs.copy_files(tmp_db, p, destination_filesystem=fs)
        else:
            os.makedirs(dest, exist_ok=True)
            part = out + ".part"
            shutil.copyfile(tmp_db, part)
            os.replace(part, out)  # a reader never sees a half-written file
        return out
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

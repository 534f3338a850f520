"""What can refuse a study before anything is written: the services it talks to, its data
sets, and the resources per trial. A service that is down, a driver or data set that is
missing, or a trial no node can hold would otherwise show up minutes later as a hang or a
traceback (or as one failure per trial).

- the Optuna database URL (``optuna_storage: postgresql://...``): its SQLAlchemy driver is
  installed and the database answers;
- the MLflow tracking URI (``tracking: {mlflow: {uri: ...}}``): an ``http(s)`` server
  answers, a database URI has its driver;
- on ``--resume``, the study's own Optuna file (``optuna.db`` / ``optuna.journal``) is still
  there when its searches have started.

Each check ends in one :class:`LCIError` line naming the setting, the value (password masked)
and what to do; each waits at most :data:`TIMEOUT_S` for an answer.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional

from lci.errors import LCIError

from . import storage
from .secrets import expand
from .secrets import mask as masked  # for messages
from .spec import StudySpec

logger = logging.getLogger(__name__)

#: seconds a service may take to answer the preflight
TIMEOUT_S = 10.0
#: the pip package of the usual driver of each SQLAlchemy dialect, for the error message
DRIVER_HINTS = {"postgresql": "psycopg2-binary", "mysql": "pymysql", "mariadb": "pymysql",
                "mssql": "pyodbc", "oracle": "oracledb"}


def _within(timeout: float, fn: Callable[[], Any], what: str) -> None:
    """Run ``fn`` in a daemon thread; a hang past ``timeout`` or an exception is an error."""
    box: dict = {}

    def call() -> None:
        try:
            fn()
        except BaseException as e:  # reported below, in the caller's thread
            box["error"] = e

    t = threading.Thread(target=call, daemon=True, name="lci-preflight")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LCIError(f"{what}: no answer within {timeout:g} s; start the service or fix the "
                       "address")
    if "error" in box:
        e = box["error"]
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LCIError(f"{what}: cannot be reached ({type(e).__name__}: {first}); start the "
                       "service or fix the address")


def check_database(url: str, setting: str, timeout: float = TIMEOUT_S,
                   connect: bool = True) -> None:
    """A SQLAlchemy database URL: its driver is installed and (``connect``) it answers."""
    what = f"{setting}={masked(url)}"
    try:
        import sqlalchemy
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    except ImportError:
        raise LCIError(f"{what} needs SQLAlchemy, which is not installed: pip install "
                       "sqlalchemy") from None
    try:
        engine = sqlalchemy.create_engine(url)
    except ImportError as e:
        dialect = url.split(":", 1)[0].split("+", 1)[0]
        hint = DRIVER_HINTS.get(dialect)
        raise LCIError(f"{what}: its database driver is not installed ({e.name or e}); "
                       + (f"pip install {hint}" if hint else "install the driver the URL names")
                       ) from None
    except (NoSuchModuleError, ArgumentError) as e:
        raise LCIError(f"{what} is not a database URL SQLAlchemy knows ({e})") from None
    if not connect:
        engine.dispose()
        return

    def ping() -> None:
        with engine.connect():
            pass
        engine.dispose()

    _within(timeout, ping, what)


def check_http(url: str, setting: str, timeout: float = TIMEOUT_S) -> None:
    """An HTTP(S) server answers at ``url`` (any HTTP status counts: it is up)."""
    import urllib.error
    import urllib.request

    def get() -> None:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout).close()
        except urllib.error.HTTPError:
            pass  # it answered

    _within(timeout + 1, get, f"{setting}={masked(url)}")


def check_mlflow(uri: str, timeout: float = TIMEOUT_S) -> None:
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        check_http(uri, "tracking.mlflow.uri", timeout)
    elif scheme.split("+", 1)[0] in ("sqlite", *DRIVER_HINTS):
        # MLflow's SQL store opens the database itself; a local SQLite file is made there
        check_database(uri, "tracking.mlflow.uri", timeout, connect=scheme != "sqlite")


def check_services(spec, timeout: float = TIMEOUT_S) -> None:
    """Every service the spec names (module docstring)."""
    from .optuna_storage import storage_kind
    from .tracking import mlflow_uri, validate_tracking

    if spec.search and storage_kind(spec.optuna_storage, spec.study_dir) == "url":
        check_database(expand(spec.optuna_storage, "optuna_storage"), "optuna_storage",
                       timeout)
    ml = validate_tracking(spec.tracking).get("mlflow")
    if ml is not None:
        check_mlflow(mlflow_uri(ml, spec.study_dir), timeout)


def check_resumable(spec, study_dir: str, experiments: List[str], searches: List[str]) -> None:
    """``--resume``: a study folder of this version's layout, with its searches' Optuna file."""
    from .trials import TRIALS_DIR, read_study_trials

    if not storage.exists(storage.join(study_dir, TRIALS_DIR, "tuner.pkl")) and any(
            storage.exists(storage.join(study_dir, name, "tuner.pkl")) for name in experiments):
        raise LCIError(f"{study_dir} was started by lci-study 0.2 or earlier (one Tune run per "
                       "experiment) and cannot be resumed by this version; finish it with "
                       "0.2, or start it again under another name or --storage")
    started = any(name in searches and recs
                  for name, recs in read_study_trials(study_dir).items())
    check_search_files(spec, started)


def check_storage(study_dir: str) -> None:
    """A local study folder can be written (probing the nearest folder that exists, which
    leaves nothing behind); an ``s3://`` one is checked by Tune."""
    import os

    from lci.outputs import check_writable

    if storage.is_uri(study_dir):
        return
    here = study_dir
    while not os.path.exists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise LCIError(f"cannot write results to {study_dir!r}: {here!r} is a file, not a "
                       "folder")
    check_writable(here)


def check_search_files(spec, searches_started: bool) -> Optional[str]:
    """On ``--resume``: the study's own Optuna file must still be there when its searches
    have started (else Optuna fails deep inside the restored searcher). Returns its path."""
    from .optuna_storage import DB_FILE, JOURNAL_FILE, storage_kind

    kind = storage_kind(spec.optuna_storage, spec.study_dir) if spec.search else "none"
    if kind not in ("sqlite", "journal") or not searches_started:
        return None
    path = storage.join(spec.study_dir, DB_FILE if kind == "sqlite" else JOURNAL_FILE)
    if not storage.exists(path):
        raise LCIError(f"{path} is missing: it holds the Optuna searches this study started, "
                       "which --resume continues; put back a copy of it, or start the study again under "
                       "another name or --storage")
    return path


# ------------------------------------------------------------------ data sets and resources
def check_datasets(spec: StudySpec, *, named_sets_here: bool = True) -> List[str]:
    """Every data set of every cell exists, before Ray starts (the dry run too): a missing
    file would fail every trial the same way. A file the spec names (``.npz``, ``.csv``, an
    image folder) must exist here. A named set (``cifar10`` under ``data_dir``) must exist here
    when the trials run here (``named_sets_here``); on a cluster the workers may hold it while
    the driver does not, so then it is returned as a warning instead."""
    from lci.config import TrainConfig
    from lci.data import check_dataset
    from lci.data.registry import dataset_names

    seen, warnings = set(), []
    for cell in spec.cells:
        cfg = TrainConfig.from_known(cell.base)
        key = (cfg.dataset, cfg.data_dir)
        if key in seen:
            continue
        seen.add(key)
        try:
            note = check_dataset(cfg)  # a set that will be downloaded on first use says so
            if note:
                warnings.append(note)
        except LCIError as e:
            if cfg.dataset in dataset_names() and not named_sets_here:
                warnings.append(f"{cfg.dataset}: not found here ({e}); the trials' machines "
                                "must have it")
            else:
                raise LCIError(f"cell {cell.id}: {e}") from None
    return warnings


def _slots(resources: Dict[str, float], cpu: float, gpu: float) -> int:
    """Trials of (cpu, gpu) that fit in ``resources`` at once."""
    fits = []
    if cpu > 0:
        fits.append(int(resources.get("CPU", 0) // cpu))
    if gpu > 0:
        fits.append(int(resources.get("GPU", 0) // gpu))
    return min(fits) if fits else 0


def _resources_text(resources: List[Dict[str, float]]) -> str:
    return ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in resources)


def check_resources(spec: StudySpec, cluster: bool = False) -> int:
    """A trial's resources must fit on one node; returns the cluster's slots for such trials
    now. On the local Ray this driver started that is final: :class:`LCIError` with the
    numbers. On a cluster (``cluster``) with an autoscaler (:mod:`study.autoscaling`) no node
    may fit yet (a fresh cluster has no worker): then the trial must fit a node type the
    autoscaler can launch, where those are visible, and is accepted where they are not."""
    import ray

    from .autoscaling import autoscaler

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(_slots(r, spec.cpu, spec.gpu) for r in nodes):
        need = f"each trial needs cpu={spec.cpu:g} gpu={spec.gpu:g}"
        have = f"nodes: {_resources_text(nodes) or 'none'}"
        scaler = autoscaler() if cluster else None
        if scaler is None:
            raise LCIError(f"{need}, but no node of the cluster has that much ({have}); lower "
                           "`resources:` in the spec")
        types = scaler.node_types
        if types is not None and not any(_slots(r, spec.cpu, spec.gpu) for r in types.values()):
            listed = ", ".join(f"{k}: {_resources_text([r])}" for k, r in sorted(types.items()))
            raise LCIError(f"{need}, but no node of the cluster has that much ({have}) nor "
                           f"any node type its autoscaler can add ({listed}); lower "
                           "`resources:` in the spec")
        label = f"v{scaler.version}" if scaler.version else "of the cluster config"
        logger.warning("%s and no node of the cluster has that much yet (%s): the autoscaler "
                       "(%s) adds nodes for the pending trials%s", need, have, label,
                       "" if types is not None else "; its node types are not visible here, "
                       "so a trial larger than all of them waits forever")
    return _slots(ray.cluster_resources(), spec.cpu, spec.gpu)

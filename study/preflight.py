"""Checks of the services a study talks to, before Ray starts: a service that is down or a
driver that is missing would otherwise show up minutes later as a hang or a traceback.

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

import threading
from typing import Any, Callable, Optional

from lci.errors import LCIError

from . import storage
from .secrets import expand
from .secrets import mask as masked  # for messages

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

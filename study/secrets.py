"""Passwords in storage URLs: never written to the study folder, never printed.

A database URL (``optuna_storage: postgresql://user:password@host/db``) or an MLflow tracking
URI may carry a password. :func:`mask` replaces it by ``***`` in anything the study writes
(``study.json``) or prints (the dashboard line, every error line of ``lci``). To keep the
password out of the spec file too, write ``${VAR}`` in ``optuna_storage``: :func:`expand`
fills it from the driver's environment only when the storage is opened (for MLflow, MLflow's
own ``MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_PASSWORD`` do the same).
"""
from __future__ import annotations

import os
import re
from typing import Any

from lci.errors import LCIError

# scheme://user:PASSWORD@host ... and ?password=... / &pwd=... in a query string
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
_QUERY = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)(?P<pw>[^&\s]+)", re.IGNORECASE)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _hide(m: re.Match) -> str:
    # a ${VAR} reference is not a secret: kept, so a printed command still works
    return m.group(0) if _VAR.fullmatch(m.group("pw")) else m.group("head") + "***"


def mask(value: Any) -> Any:
    """``value`` with every URL password replaced by ``***`` (strings, and the strings inside
    lists and mappings)."""
    if isinstance(value, str):
        return _QUERY.sub(_hide, _USERINFO.sub(_hide, value))
    if isinstance(value, dict):
        return {k: mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask(v) for v in value)
    return value


def expand(value: str, key: str) -> str:
    """``${VAR}`` references in ``value`` filled from the environment; :class:`LCIError` naming
    ``key`` and the variable when one is not set."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise LCIError(f"{key} refers to ${{{m.group(1)}}}, which is not set in the "
                           "driver's environment")
        return os.environ[m.group(1)]

    return _VAR.sub(sub, value)

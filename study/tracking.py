"""Experiment tracking beyond the study's own files: the spec's ``tracking:`` section.

    tracking:
      mlflow:
        uri: sqlite:////abs/path/mlflow.db   # or http://mlflow-server:5000; default below
        experiment: my-study                 # default: the study name
        tags: {team: vision}                 # optional, set on every run
        save_artifact: false                 # true: upload each trial folder as run artifacts

With ``mlflow`` set, Ray's ``MLflowLoggerCallback`` opens one MLflow run per trial (also
across ``--resume``: see mlflow_callback.py) and logs
every per-epoch result (``val_acc``, ``test_acc``, ``loss``...) at its step (the
epoch), plus the trial's config as parameters. It runs in the driver, so only the machine
that runs ``lci sweep`` needs MLflow (``pip install 'lci-study[mlflow]'``) and must reach
``uri``. Without ``uri``: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<study
folder>/mlflow.db`` for a local study folder. (MLflow 3 keeps the plain-folder ``file:``
store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``.)

TensorBoard needs nothing here: Tune writes event files into every trial folder when
``tensorboardX`` is installed (it comes with ``ray[tune]``); :func:`tensorboard_command`
says where to point TensorBoard.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from lci.errors import LCIError, allowed

from . import storage as fsutil

TRACKING_KEYS: Dict[str, str] = {
    "mlflow": "log every trial as an MLflow run (pip install 'lci-study[mlflow]')",
}
MLFLOW_KEYS: Dict[str, str] = {
    "uri": "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<study>/mlflow.db)",
    "experiment": "MLflow experiment name (default: the study name)",
    "tags": "mapping of tags set on every run",
    "save_artifact": "upload each trial folder as the run's artifacts (default false)",
}
INSTALL_HINT = "pip install 'lci-study[mlflow]'"


def validate_tracking(cfg: Any) -> Dict[str, Any]:
    """Check the spec's ``tracking`` section; returns it as a plain dict ({} when absent).
    Raises LCIError with one line naming the bad key or value and the allowed ones. Does not
    import MLflow (a spec can be checked on a machine without it)."""
    from .spec.values import check_keys, mapping

    cfg = mapping(cfg, "tracking")
    check_keys(cfg, list(TRACKING_KEYS), "tracking")
    out: Dict[str, Any] = {}
    ml = cfg.get("mlflow")
    if ml is None or ml is False:
        return out
    ml = mapping({} if ml is True else ml, "tracking.mlflow")
    check_keys(ml, list(MLFLOW_KEYS), "tracking.mlflow")
    for key in ("uri", "experiment"):
        v = ml.get(key)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise LCIError(f"tracking.mlflow.{key}={v!r} must be a non-empty string")
    tags = ml.get("tags")
    if tags is not None and (not isinstance(tags, Mapping)
                             or not all(isinstance(k, str) for k in tags)):
        raise LCIError(f"tracking.mlflow.tags={tags!r} must be a mapping of names to values")
    sa = ml.get("save_artifact", False)
    if not isinstance(sa, bool):
        raise LCIError(f"tracking.mlflow.save_artifact={sa!r}; allowed: true, false")
    out["mlflow"] = {"uri": ml.get("uri"), "experiment": ml.get("experiment"),
                     "tags": {k: str(v) for k, v in (tags or {}).items()},
                     "save_artifact": sa}
    return out


def mlflow_uri(mlflow_cfg: Mapping[str, Any], study_dir: Optional[str]) -> str:
    """The tracking URI that the callback will use (see the module docstring)."""
    uri = mlflow_cfg.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    if study_dir and not fsutil.is_uri(study_dir):
        return f"sqlite:///{os.path.join(os.path.abspath(study_dir), 'mlflow.db')}"
    raise LCIError(f"tracking.mlflow.uri is needed: the study folder {study_dir} is not local "
                   "(give e.g. uri: http://your-mlflow-server:5000)")


def tracking_callbacks(tracking_cfg: Any, study_name: str,
                       study_dir: Optional[str] = None) -> List[Any]:
    """Tune callbacks for the ``tracking`` section (validated here too): add them to every
    experiment's ``RunConfig(callbacks=[...])``. Empty without tracking."""
    cfg = validate_tracking(tracking_cfg)
    callbacks: List[Any] = []
    ml = cfg.get("mlflow")
    if ml is not None:
        try:
            import mlflow  # noqa: F401  (Ray's callback imports it lazily, too late to say why)
        except ImportError:
            raise LCIError("tracking.mlflow needs MLflow, which is not installed: "
                           f"{INSTALL_HINT}") from None
        from .mlflow_callback import ResumableMLflowLoggerCallback

        uri = mlflow_uri(ml, study_dir)
        if uri.startswith("sqlite:///") and not fsutil.is_uri(uri[len("sqlite:///"):]):
            os.makedirs(os.path.dirname(uri[len("sqlite:///"):]) or ".", exist_ok=True)
        callbacks.append(ResumableMLflowLoggerCallback(
            tracking_uri=uri, experiment_name=ml.get("experiment") or study_name,
            tags={"study": study_name, **ml.get("tags", {})},
            save_artifact=bool(ml.get("save_artifact"))))
    return callbacks


def tensorboard_command(study_dir: str) -> str:
    """How to watch the study in TensorBoard (one line for the runner to print)."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return ("TensorBoard: pip install tensorboardX, then Tune writes event files into "
                "every trial folder")
    return f"watch in TensorBoard: tensorboard --logdir {study_dir}"

"""Where specs and their files are: the presets, a spec given by name or path, and the
relative paths of a spec made absolute (trials run in other folders and on other nodes)."""
from __future__ import annotations

import os
from typing import Any, Dict, List

from .keys import SpecError


def presets_dir() -> str:
    """``study/presets/``: the paper's tables and figures and the demo, as spec files."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")


def preset_names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(presets_dir()) if f.endswith(".yaml"))


def resolve_spec_path(s: str) -> str:
    if os.path.isfile(s):
        return os.path.abspath(s)
    cand = os.path.join(presets_dir(), s if s.endswith(".yaml") else s + ".yaml")
    if os.sep not in s and os.path.isfile(cand):
        return cand
    raise SpecError(f"study spec {s!r} is neither a file nor a preset; presets: "
                    f"{', '.join(preset_names())}")


def absolute_dataset(ds: Any) -> Any:
    from lci.data import dataset_names  # the data set registry (imports torch)

    if isinstance(ds, str) and ds not in dataset_names() and not os.path.isabs(ds) and "://" not in ds:
        return os.path.abspath(ds)
    return ds


def absolute_paths(cfg: Dict[str, Any]) -> None:
    """Trials run elsewhere (a worker's folder, another node): make relative paths absolute,
    relative to where ``lci sweep`` runs."""
    if isinstance(cfg.get("data_dir"), str) and "://" not in cfg["data_dir"]:
        cfg["data_dir"] = os.path.abspath(cfg["data_dir"])
    if "dataset" in cfg:
        cfg["dataset"] = absolute_dataset(cfg["dataset"])
    pre = cfg.get("pretrained")
    if isinstance(pre, str) and pre and not os.path.isabs(pre):
        cfg["pretrained"] = os.path.abspath(pre)


def absolute_storage(s: str) -> str:
    if not isinstance(s, str) or not s:
        raise SpecError(f"storage={s!r} must be a path or a URI like s3://bucket/folder")
    if "://" in s:
        return s.rstrip("/")
    return os.path.abspath(os.path.expanduser(s))

"""Names shared by every layer: methods, losses of the robust model, data sets, noise settings,
cell ids and the labels of a fused trial. ``lci`` (the config), ``study`` (the spec) and ``analysis`` (the frames) all
import them from here, so that a method or a noise spelling is defined once.

Two noise parsers, on purpose:

- :func:`parse_noise` is strict: what a config or a spec may say (``"sym:0.8"``), anything
  else is a :class:`ConfigError` naming the allowed forms;
- :func:`normalize_noise` is lenient, for reading records written by hand or by other tools
  (``"sym 80%"``, ``"asym_0.4"``, a setting id ``"sym-0.8"``, ``None``): it never raises.

This module imports nothing but :mod:`lci.errors` and :mod:`lci.methods` (torch-free both), so
that ``analysis`` may use it without torch.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Optional, Tuple

from .errors import ConfigError
from .methods import BASELINE_METHODS, LCI_METHODS, METHODS  # noqa: F401  (names of the layers)

# --------------------------------------------------------------------------------- methods
# Method names come from the method registry (lci.methods), where each method is registered
# with its step, loss terms, models and parameters; the layers take the names from here.
#: Losses the noise-robust model of an lci method may use.
ROBUST_LOSSES = ("gce", "mae", "sce", "nce_rce", "js", "gjs", "ce", "bs", "ls")

# Data set names live in the data set registry (lci.data), where each set is registered with
# its loader; lci.data.dataset_names() lists them.

# ------------------------------------------------------------------------------------ noise
NOISE_KINDS = ("none", "sym", "asym", "matrix")
#: Real human label noise (CIFAR-N, Wei et al., ICLR 2022): ``noise: human:KEY``, the noisy
#: labels read from the data set's label file (lci.data.cifarn); keys per data set.
HUMAN_NOISE_KEYS = {"cifar10": ("aggre", "random1", "random2", "random3", "worse"),
                    "cifar100": ("noisy",)}
# lenient spellings: "sym:0.8", "sym 80%", "asym_0.4", "sym-0.8" (a setting id)
_LOOSE_NOISE = re.compile(r"^\s*(sym|asym)\s*[:_\- ]?\s*([0-9]*\.?[0-9]+)\s*%?\s*$", re.IGNORECASE)


def human_noise_key(noise: Any) -> Optional[str]:
    """``"human:aggre"`` -> ``"aggre"``; ``None`` for anything that is not CIFAR-N noise
    (the key is not checked here; :func:`parse_noise` does)."""
    if not isinstance(noise, str):
        return None
    kind, sep, key = noise.strip().lower().partition(":")
    return key.strip() if kind.strip() == "human" and sep else None


def human_noise_datasets(key: str) -> Tuple[str, ...]:
    """The data sets whose label file has human noise ``key`` (empty for an unknown key)."""
    return tuple(d for d, keys in HUMAN_NOISE_KEYS.items() if key in keys)


def noise_applies(noise: Any, dataset: Any) -> bool:
    """False only for CIFAR-N noise whose key belongs to another data set (``human:noisy``
    is CIFAR-100N's): a study with both CIFARs on its axes skips those pairs."""
    key = human_noise_key(noise)
    return key is None or str(dataset) in human_noise_datasets(key)


def parse_noise(spec: str) -> Tuple[str, float]:
    """``"sym:0.8"`` -> ``("sym", 0.8)``; ``"none"`` -> ``("none", 0.0)``; CIFAR-N noise
    ``"human:aggre"`` -> ``("human", nan)`` (no nominal rate; :func:`human_noise_key` gives
    the key)."""
    if not isinstance(spec, str):
        raise ConfigError(f"noise={spec!r} must be a string like 'sym:0.8', 'asym:0.4' or 'none'")
    s = spec.strip().lower()
    if s in ("none", "clean", ""):
        return "none", 0.0
    if s == "matrix":
        return "matrix", 1.0
    key = human_noise_key(s)
    if key is not None:
        if not human_noise_datasets(key):
            keys = [k for ks in HUMAN_NOISE_KEYS.values() for k in ks]
            raise ConfigError(f"noise={spec!r}: unknown CIFAR-N key {key!r}; allowed: "
                              + ", ".join(f"'human:{k}'" for k in keys)
                              + " (" + "; ".join(f"{d}: {', '.join(ks)}"
                                                 for d, ks in HUMAN_NOISE_KEYS.items()) + ")")
        return "human", float("nan")
    kind, sep, rate_s = s.partition(":")
    if kind not in NOISE_KINDS or not sep:
        raise ConfigError(f"noise={spec!r} is not a noise setting; allowed: 'none', 'sym:R', "
                          "'asym:R' with R in [0, 1], 'matrix', or 'human:KEY' (CIFAR-N)")
    try:
        rate = float(rate_s)
    except ValueError:
        raise ConfigError(f"noise={spec!r}: rate {rate_s!r} is not a number in [0, 1]") from None
    if not 0.0 <= rate <= 1.0 or math.isnan(rate):
        raise ConfigError(f"noise={spec!r}: rate {rate} is outside [0, 1]")
    return kind, rate


def normalize_noise(noise: Any) -> Tuple[str, float]:
    """Lenient :func:`parse_noise` for reading records: ``"sym 80%"`` -> ``("sym", 0.8)``;
    symmetric noise at rate 0 is clean data, ``("none", 0.0)``, so that it groups with
    ``"none"``; a missing value is ``("unknown", nan)`` and anything unreadable is
    ``(the text, nan)``."""
    if noise is None or (isinstance(noise, float) and math.isnan(noise)):
        return ("unknown", float("nan"))
    s = str(noise).strip()
    try:
        kind, rate = parse_noise(s)
    except ConfigError:
        m = _LOOSE_NOISE.match(s)
        if not m:
            return (s, float("nan"))
        kind, rate = m.group(1).lower(), float(m.group(2))
        if rate > 1.0:  # a percentage
            rate /= 100.0
    if kind == "sym" and rate == 0.0:
        return ("none", 0.0)
    return (kind, rate)


def _noise_tag(kind: str, rate: float) -> str:
    return f"{kind}{rate:g}" if kind in ("sym", "asym") else kind


def noise_tag(noise: str) -> str:
    """The noise part of a cell id: ``"sym:0.8"`` -> ``"sym0.8"``, ``"none"``, ``"matrix"``,
    ``"human:aggre"`` -> ``"human-aggre"``."""
    kind, rate = parse_noise(noise)
    return f"human-{human_noise_key(noise)}" if kind == "human" else _noise_tag(kind, rate)


def setting_id(noise: Any) -> str:
    """A noise setting as the analysis tables' columns name it (lenient): ``"sym:0.8"`` ->
    ``"sym-0.8"``; ``"sym:0"`` -> ``"none"``; ``"human:aggre"`` -> ``"human-aggre"``."""
    key = human_noise_key(noise)
    if key is not None:
        return f"human-{key}"
    kind, rate = normalize_noise(noise)
    if kind in ("sym", "asym"):
        return f"{kind}-{rate:g}"
    return kind


# ------------------------------------------------------------------------------------ cells
def dataset_tag(dataset: str) -> str:
    """``cifar10`` -> ``cifar10``; ``/data/my_set.npz`` -> ``my_set``."""
    base = os.path.splitext(os.path.basename(dataset.rstrip("/")))[0]
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in base) or "data"


def _cell_id(method: str, robust_loss: Any, tag: str, dataset: Optional[str]) -> str:
    prefix = f"{dataset_tag(dataset)}_" if dataset else ""
    if method in LCI_METHODS:
        return f"{prefix}{method}_{robust_loss}_{tag}"
    return f"{prefix}{method}_{tag}"


def cell_id(method: str, robust_loss: str, noise: str, dataset: Optional[str] = None) -> str:
    """``lci_gce_sym0.8``, ``ce_asym0.4`` (a baseline has no robust loss); with a datasets
    axis ``cifar10_lci_gce_sym0.8``."""
    return _cell_id(method, robust_loss, noise_tag(noise), dataset)


def default_cell(config: Mapping[str, Any]) -> str:
    """The cell id of a run that does not name one (an ``lci train`` run), as :func:`cell_id`
    names it; a noise setting that :func:`parse_noise` refuses is read leniently."""
    noise = config.get("noise")
    try:
        tag = noise_tag(noise)
    except ConfigError:
        tag = _noise_tag(*normalize_noise(noise))
    return _cell_id(str(config.get("method", "unknown")), config.get("robust_loss", "gce"), tag,
                    None)


#: The files of a Tune trial folder (Tune's config and per-epoch results, and the one-line
#: reason of a failure): the one home of their names, for the trainables that write seed
#: folders, the study's trial reader and analysis/.
PARAMS_FILE, TUNE_RESULT_FILE, ERROR_FILE = "params.json", "result.json", "error.txt"


# ------------------------------------------------------------------------- fused trials
#: The config label of a fused trial (a study's ``fuse_seeds``): the seeds it trains as one
#: network (:mod:`lci.fused`, ``trainables/fused.py``). Its own Tune folder holds only the fused
#: checkpoint; each seed's run is a trial folder of its own (:func:`fused_member_folder`) with
#: the files an unfused trial of that seed has, so every reader of trials reads those.
FUSED_KEY = "fused_seeds"
#: A fused trial's result key: how many of its seeds are still training (not diverged).
MEMBERS_LIVE_KEY = "members_live"


def is_fused_container(config: Mapping[str, Any]) -> bool:
    """The Tune folder of a fused trial (by its ``params.json``): not a run itself."""
    return FUSED_KEY in config


def fused_member_folder(folder: str, seed: int) -> str:
    """The trial folder of one seed of the fused trial in ``folder`` (a sibling of it)."""
    return f"{folder}-s{seed}"

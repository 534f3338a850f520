"""The paper's published numbers (docs/method.md §10) and display names for methods and settings."""
from __future__ import annotations

import math
from typing import Any, Optional

from lci.names import LCI_METHODS, normalize_noise

#: Test accuracy (%) of Ahn et al. (ICCV 2023), ResNet-34, five seeds:
#: (dataset, setting, method) → mean. ``lci`` is the full method with a GCE robust model.
_PUBLISHED = {
    ("cifar10", "sym-0.8"): {"ce": 66.51, "gce": 79.19, "gjs": 79.11, "lci": 91.13},
    ("cifar10", "asym-0.4"): {"gce": 87.00, "lci": 93.17},
    ("cifar100", "sym-0.8"): {"ce": 10.74, "gce": 49.68, "gjs": 44.49, "lci": 61.05},
    ("cifar100", "asym-0.4"): {"gce": 51.50, "lci": 68.05},
}
PAPER = {(ds, setting, m): v for (ds, setting), row in _PUBLISHED.items() for m, v in row.items()}
PAPER_SOURCE = "Ahn et al., ICCV 2023 (ResNet-34, five seeds)"

#: Row order of Table 1: the baselines as in the paper, then the LCI variants.
METHOD_ORDER = ["ce", "bs", "ls", "mae", "gce", "sce", "nce_rce", "js", "gjs",
                "lci-single", "lci-two-models", "lci"]
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits",
                 "clothing1m": "Clothing1M", "webvision": "mini-WebVision"}


def method_label(method: Any, robust_loss: Any = None) -> str:
    """``lci`` (GCE robust model, as in the paper) or ``lci (mae)``; baselines by name."""
    m = str(method)
    if m in LCI_METHODS and isinstance(robust_loss, str) and robust_loss not in ("gce", ""):
        return f"{m} ({robust_loss})"
    return m


def paper_value(dataset: Any, setting: Any, method: Any, robust_loss: Any = None) -> Optional[float]:
    """The published figure for this dataset, setting and method, or ``None``."""
    if str(method) in LCI_METHODS and robust_loss not in (None, "gce") and not (
            isinstance(robust_loss, float) and math.isnan(robust_loss)):
        return None
    return PAPER.get((str(dataset), str(setting), str(method)))


def setting_label(setting: Any) -> str:
    """``sym-0.8`` → ``sym 80%``; ``none`` → ``clean``; ``human-aggre`` → ``human aggre``."""
    kind, rate = normalize_noise(str(setting).replace("-", ":", 1))
    if kind in ("sym", "asym"):
        return f"{kind} {rate * 100:g}%"
    if kind == "human":
        return str(setting).replace("-", " ", 1)
    return "clean" if kind == "none" else str(setting)


def setting_sort_key(setting: Any) -> tuple:
    kind, rate = normalize_noise(str(setting).replace("-", ":", 1))
    order = {"none": 0, "sym": 1, "asym": 2}.get(kind, 3)
    return (order, 0.0 if math.isnan(rate) else rate, str(setting))


def dataset_label(dataset: Any) -> str:
    return DATASET_NAMES.get(str(dataset), str(dataset))

"""lci.data as a package: the data set registry is the one list of set names; no import cycle."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import lci.config
import lci.data
from lci.config import DATASET_PROFILES, TrainConfig
from lci.data import (DATASETS, clear_cache, dataset_names, file_backed_names, load_data,
                      register_dataset)
from lci.data.bundle import make_bundle
from lci.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_names_come_from_the_registry():
    assert dataset_names() == ("digits", "cifar10", "cifar100", "clothing1m", "webvision")
    assert lci.config.REGISTERED_DATASETS == dataset_names() == lci.data.REGISTERED
    assert lci.config.REALWORLD_DATASETS == file_backed_names() == ("clothing1m", "webvision")
    assert lci.data.REALWORLD == file_backed_names()
    # every registered set has its "auto" defaults
    assert set(dataset_names()) <= set(DATASET_PROFILES)
    with pytest.raises(ConfigError, match="'digits', 'cifar10', 'cifar100', 'clothing1m'"):
        TrainConfig(dataset="mnist")


def test_a_registered_set_is_loadable_and_a_valid_config(monkeypatch):
    # a private copy of the registry, restored afterwards
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    located = []

    def locate(dataset, data_dir):
        located.append((dataset, data_dir))
        return []

    @register_dataset("toy", locate=locate)
    def load_toy(dataset, data_dir, opts):
        x = np.zeros((4, 1, 4, 4), np.uint8)
        return make_bundle("toy", x, np.array([0, 1, 0, 1]), x, np.array([0, 1, 0, 1]),
                           num_classes=2, pad=1, hflip=False)

    with pytest.raises(ConfigError, match="'toy'"):
        load_data("toy_2")          # the error lists the new name
    assert TrainConfig(dataset="toy").dataset == "toy"
    clear_cache()
    try:
        assert load_data("toy", "somewhere").num_classes == 2
    finally:
        clear_cache()
    assert located == [("toy", "somewhere")]
    with pytest.raises(RuntimeError, match="registered twice"):
        register_dataset("toy", locate=locate)(load_toy)


def _module_imports(path: str):
    """Modules imported at module level (not inside functions) by the file, as written."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
            out += ["." * node.level + (node.module + "." if node.module else "") + a.name
                    for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def test_no_import_cycle_between_config_and_data():
    data_dir = os.path.join(ROOT, "lci", "data")
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(".py"):
            imports = _module_imports(os.path.join(data_dir, name))
            assert not [m for m in imports if m in ("..config", "lci.config")], name
    config_imports = _module_imports(os.path.join(ROOT, "lci", "config.py"))
    assert not [m for m in config_imports if m.startswith((".data", "lci.data"))]
    # `import lci` stays light: neither the data package nor torch is loaded
    code = "import sys, lci; print('lci.data' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, check=True)
    assert out.stdout.split() == ["False", "False"]


"""lci.data as a package: the data set registry is the one list of set names; no import cycle."""
from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import lci.config
import lci.data
from lci.config import TrainConfig
from lci.data import (DATASETS, clear_cache, dataset_names, file_backed_names, load_data,
                      register_dataset)
from lci.data.bundle import make_bundle
from lci.data.registry import USER_DATA_PROFILE, DatasetProfile, profile_of
from lci.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_names_come_from_the_registry():
    assert dataset_names() == ("digits", "cifar10", "cifar100", "clothing1m", "webvision")
    assert file_backed_names() == ("clothing1m", "webvision")
    # one list, one name: no copies of it elsewhere
    assert not hasattr(lci.data, "REGISTERED") and not hasattr(lci.config, "REGISTERED_DATASETS")
    # every registered set has its "auto" defaults
    assert all(profile_of(n) is DATASETS.get(n).profile is not USER_DATA_PROFILE
               for n in dataset_names())
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


def test_the_auto_values_are_the_registered_profile(monkeypatch):
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    toy = DatasetProfile(model="small_cnn", epochs=3, batch_size=8, lr=0.3, weight_decay=0.0,
                         augment="none", lr_schedule="constant", train_subset=10)
    register_dataset("toy", locate=lambda d, r: [], profile=toy)(lambda d, r, o: None)
    register_dataset("plain", locate=lambda d, r: [])(lambda d, r, o: None)
    got = TrainConfig(dataset="toy").resolved()
    assert (got.model, got.epochs, got.batch_size, got.lr, got.weight_decay, got.augment,
            got.lr_schedule, got.train_subset) == ("small_cnn", 3, 8, 0.3, 0.0, "none",
                                                   "constant", 10)
    assert TrainConfig(dataset="toy", epochs=5).resolved().epochs == 5  # only "auto" is filled
    # a set registered without a profile, and a user's file, get the user-data profile
    assert TrainConfig(dataset="plain").resolved().batch_size == USER_DATA_PROFILE.batch_size
    assert TrainConfig(dataset="x.npz").resolved().lr == USER_DATA_PROFILE.lr
    # the asymmetric-noise changes are the profile's too
    digits = DATASETS.get("digits")
    asym = dataclasses.replace(digits.profile, asym={"lr": 0.7})
    monkeypatch.setitem(DATASETS._items, "digits", dataclasses.replace(digits, profile=asym))
    assert TrainConfig(dataset="digits", noise="asym:0.2").resolved().lr == 0.7
    assert TrainConfig(dataset="digits", noise="sym:0.2").resolved().lr == digits.profile.lr


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


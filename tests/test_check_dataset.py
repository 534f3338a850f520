"""check_dataset: the data set's files checked without loading it (the dry run's check)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from lci.config import TrainConfig
from lci.data import check_dataset, clear_cache, load_data
from lci.errors import ConfigError, DataError, LCIError


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _same_error(dataset, data_dir="data"):
    """check_dataset raises exactly the error load_data raises; returns its message."""
    with pytest.raises(LCIError) as checked:
        check_dataset({"dataset": dataset, "data_dir": data_dir, "download": False})
    with pytest.raises(LCIError) as loaded:
        load_data(dataset, data_dir)
    assert type(checked.value) is type(loaded.value)
    assert str(checked.value) == str(loaded.value)
    assert "\n" not in str(checked.value)
    return str(checked.value)


def _touch(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def test_missing_user_files_and_folders(tmp_path):
    assert "does not exist" in _same_error(str(tmp_path / "nope.npz"))
    assert "does not exist" in _same_error(str(tmp_path / "nope.csv"))
    assert "does not exist" in _same_error(str(tmp_path / "no" / "folder"))
    os.makedirs(tmp_path / "half" / "train" / "cat")
    assert "no test/" in _same_error(str(tmp_path / "half"))
    os.makedirs(tmp_path / "bare")
    assert "no class folders" in _same_error(str(tmp_path / "bare"))
    os.makedirs(tmp_path / "flat" / "cat")
    assert "holds no images" in _same_error(str(tmp_path / "flat"))
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        check_dataset({"dataset": "mnist"})


def test_missing_registered_set_files(tmp_path):
    msg = _same_error("cifar10", str(tmp_path))
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg
    folder = tmp_path / "cifar-100-python"
    _touch(str(folder / "train"))
    msg = _same_error("cifar100", str(tmp_path))
    assert "missing: test, meta" in msg
    assert "clothing1m" in _same_error("clothing1m", str(tmp_path))
    root = tmp_path / "clothing1m"
    for name in ("noisy_label_kv", "clean_label_kv", "noisy_train_key_list"):
        _touch(str(root / f"{name}.txt"))
    assert "clean_val_key_list.txt" in _same_error("clothing1m", str(tmp_path))
    assert "webvision" in _same_error("webvision", str(tmp_path))
    _touch(str(tmp_path / "webvision" / "info" / "train_filelist_google.txt"))
    assert "val_filelist.txt" in _same_error("webvision", str(tmp_path))


def test_present_files_pass_without_being_read(tmp_path):
    # every file is present but none holds data: only a load would notice
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "junk.csv").write_text("no header\n")
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch", "batches.meta"):
        _touch(str(tmp_path / "cifar-10-batches-py" / name), "junk")
    for name in ("noisy_label_kv", "clean_label_kv", "noisy_train_key_list",
                 "clean_val_key_list", "clean_test_key_list"):
        _touch(str(tmp_path / "clothing1m" / f"{name}.txt"), "junk line with fields\n")
    for name in ("train_filelist_google", "val_filelist"):
        _touch(str(tmp_path / "webvision" / "info" / f"{name}.txt"), "junk\n")
    _touch(str(tmp_path / "folder" / "cat" / "0.png"), "not a png")
    cases = [(str(tmp_path / "junk.npz"), "data"), (str(tmp_path / "junk.csv"), "data"),
             ("cifar10", str(tmp_path)), ("clothing1m", str(tmp_path)),
             ("webvision", str(tmp_path)), (str(tmp_path / "folder"), "data"), ("digits", "x")]
    for dataset, data_dir in cases:
        check_dataset(TrainConfig(dataset=dataset, data_dir=data_dir))  # no error
        if dataset != "digits":
            with pytest.raises(DataError):
                load_data(dataset, data_dir)  # the load does read them, and fails


def test_relative_paths_are_checked_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = np.zeros((4, 8, 8), np.uint8)
    np.savez("d.npz", x_train=x, y_train=[0, 1, 0, 1], x_test=x, y_test=[0, 1, 0, 1])
    check_dataset(TrainConfig(dataset="d.npz"))
    check_dataset({"dataset": "d.npz"})
    with pytest.raises(DataError, match="'e.npz' does not exist"):
        check_dataset({"dataset": "e.npz"})

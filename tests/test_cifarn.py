"""CIFAR-N human noise (``noise: human:KEY``): runs on CIFAR pickles and label files written
here in the real formats (torchvision's pickles; ``torch.save`` of a dict of numpy int arrays,
as UCSC-REAL/cifar-10-100n publishes them)."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from test_data import write_cifar10, write_cifar100

from lci.config import TrainConfig
from lci.data import check_dataset, clear_cache
from lci.errors import ConfigError, DataError
from lci.names import cell_id, noise_applies, parse_noise, setting_id
from lci_study.cli import main as lci_main

N_TRAIN = 50


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _human10(y_clean, seed=0):
    """CIFAR-10N's keys, each with its own number of wrong labels (noise differs per key)."""
    rng = np.random.default_rng(seed)
    out = {"clean_label": np.asarray(y_clean, dtype=np.int64)}
    for name, k in (("aggre_label", 4), ("random_label1", 9), ("random_label2", 10),
                    ("random_label3", 11), ("worse_label", 21)):
        y = out["clean_label"].copy()
        idx = rng.choice(len(y), size=k, replace=False)
        y[idx] = (y[idx] + rng.integers(1, 10, size=k)) % 10   # never the clean label
        out[name] = y
    return out


def _as_written_by_numpy1(path):
    """The published label files were pickled under numpy 1, whose arrays name
    ``numpy.core.multiarray._reconstruct`` (numpy 2 writes ``numpy._core``): rewrite the
    pickle inside torch's zip so the test reads what the real files hold."""
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in parts if n.endswith("/data.pkl"))
    assert b"numpy._core.multiarray" in parts[pkl]
    parts[pkl] = parts[pkl].replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n, data in parts.items():
            z.writestr(n, data)


@pytest.fixture
def cifar10n(tmp_path):
    _, y_train, *_ = write_cifar10(tmp_path, n_train=N_TRAIN, n_test=10)
    labels = _human10(y_train)
    torch.save(labels, tmp_path / "CIFAR-10_human.pt")
    _as_written_by_numpy1(tmp_path / "CIFAR-10_human.pt")
    return tmp_path, labels


def _args(root, out, noise, dataset="cifar10", **extra):
    sets = dict(dataset=dataset, data_dir=str(root), noise=noise, model="small_cnn", epochs=1,
                batch_size=10, augment="none", device="cpu", threads=1, **extra)
    return ["train", "--quiet", "--out", str(out)] + [x for k, v in sets.items()
                                                      for x in ("--set", f"{k}={v}")]


@pytest.mark.parametrize("key,field", [("aggre", "aggre_label"), ("worse", "worse_label")])
def test_run_reports_the_realized_rate_of_the_chosen_key_exactly(cifar10n, tmp_path, key, field):
    root, labels = cifar10n
    out = tmp_path / f"run-{key}"
    assert lci_main(_args(root, out, f"human:{key}")) == 0
    res = json.loads((out / "result.json").read_text())
    wrong = int((labels[field] != labels["clean_label"]).sum())           # 4 resp. 21 of 50
    # the trainer's float32 mean of N booleans: exactly the float32 quotient
    assert res["realized_noise_rate"] == float(np.float32(wrong) / np.float32(N_TRAIN))
    assert res["realized_noise_rate"] == pytest.approx({"aggre": 0.08, "worse": 0.42}[key])
    # the labels trained on are the file's, image by image
    issues = __import__("pandas").read_csv(out / "label_issues.csv").sort_values("index")
    assert issues["given_label"].tolist() == labels[field][issues["index"]].tolist()
    assert issues["is_noisy"].sum() == wrong


def test_cifar100n_run(tmp_path):
    _, y_train, *_ = write_cifar100(tmp_path, n_train=N_TRAIN, n_test=10)
    noisy = np.asarray(y_train, dtype=np.int64).copy()
    noisy[:7] = (noisy[:7] + 1) % 100
    torch.save({"clean_label": np.asarray(y_train), "noisy_label": noisy},
               tmp_path / "CIFAR-100_human.pt")
    out = tmp_path / "run"
    assert lci_main(_args(tmp_path, out, "human:noisy", dataset="cifar100")) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["realized_noise_rate"] == float(np.float32(7) / np.float32(N_TRAIN))


def _refused(capsys, argv, *words):
    assert lci_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, err
    return err


def test_clean_label_that_disagrees_with_the_training_labels_is_refused(cifar10n, tmp_path,
                                                                       capsys):
    root, labels = cifar10n
    shuffled = {k: v[::-1].copy() for k, v in labels.items()}   # images in another order
    torch.save(shuffled, root / "CIFAR-10_human.pt")
    out = tmp_path / "run"
    _refused(capsys, _args(root, out, "human:aggre"), "clean_label differs", "pickle order")
    assert not out.exists() or not any(out.iterdir())          # nothing ran, nothing written


def test_missing_key_is_refused(cifar10n, tmp_path, capsys):
    root, labels = cifar10n
    torch.save({k: v for k, v in labels.items() if k != "worse_label"},
               root / "CIFAR-10_human.pt")
    _refused(capsys, _args(root, tmp_path / "run", "human:worse"), "'worse_label'",
             "aggre_label")


def test_file_of_the_other_data_set_is_refused(cifar10n, tmp_path, capsys):
    root, labels = cifar10n
    # CIFAR-100N's file saved under the CIFAR-10 name
    torch.save({"clean_label": labels["clean_label"], "noisy_label": labels["aggre_label"]},
               root / "CIFAR-10_human.pt")
    _refused(capsys, _args(root, tmp_path / "run", "human:aggre"), "CIFAR-100N label file")
    # and the CIFAR-10N file under the CIFAR-100 name
    _, y100, *_ = write_cifar100(root, n_train=N_TRAIN, n_test=10)
    torch.save(_human10(np.asarray(y100) % 10), root / "CIFAR-100_human.pt")
    _refused(capsys, _args(root, tmp_path / "run2", "human:noisy", dataset="cifar100"),
             "CIFAR-10N label file")


def test_missing_file_and_a_key_of_the_other_data_set(tmp_path, capsys):
    write_cifar10(tmp_path, n_train=N_TRAIN, n_test=10)
    _refused(capsys, _args(tmp_path, tmp_path / "run", "human:aggre"), "CIFAR-10_human.pt",
             "does not exist")
    with pytest.raises(DataError, match="CIFAR-10_human.pt"):
        check_dataset({"dataset": "cifar10", "data_dir": str(tmp_path), "noise": "human:aggre"})
    check_dataset({"dataset": "cifar10", "data_dir": str(tmp_path), "noise": "sym:0.2"})
    _refused(capsys, _args(tmp_path, tmp_path / "run", "human:noisy"), "'human:noisy'",
             "'human:aggre'")


def test_noise_names():
    assert parse_noise("human:aggre")[0] == "human"
    assert setting_id("human:random1") == "human-random1"
    assert cell_id("lci", "gce", "human:worse", "cifar10") == "cifar10_lci_gce_human-worse"
    assert noise_applies("human:noisy", "cifar100") and not noise_applies("human:noisy", "cifar10")
    assert noise_applies("sym:0.2", "cifar10")
    with pytest.raises(ConfigError, match="unknown CIFAR-N key 'clean'.*'human:aggre'"):
        parse_noise("human:clean")
    with pytest.raises(ConfigError, match="needs dataset 'cifar10', 'cifar100'"):
        TrainConfig(dataset="digits", noise="human:aggre")


def test_cifar_n_preset_skips_the_other_datasets_keys():
    from study import load_spec
    from study.spec.keys import SpecError

    spec = load_spec("cifar_n")
    ids = {c.id for c in spec.cells}
    assert len(ids) == 16                          # 4 methods x (3 CIFAR-10N + 1 CIFAR-100N)
    assert "cifar100_lci_gce_human-noisy" in ids and "cifar10_ce_human-worse" in ids
    assert not any(i.startswith("cifar10_") and i.endswith("human-noisy") for i in ids)
    assert not any(i.startswith("cifar100_") and "human-aggre" in i for i in ids)
    with pytest.raises(SpecError, match="'human:noisy'.*applies to 'cifar100'"):
        load_spec({"name": "x", "fixed": {"dataset": "cifar10"}, "noise": ["human:noisy"],
                   "methods": ["ce"]})

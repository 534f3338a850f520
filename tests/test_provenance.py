"""Provenance in result.json (lci.provenance) and the report's checks (analysis.provenance), on
real `lci train` runs over CIFAR files written in the real format."""
from __future__ import annotations

import json

import pytest
from test_data import write_cifar10

from analysis import cli as report_cli
from lci.data import clear_cache
from lci_study.cli import main as lci_main

KEYS = {"version", "git_commit", "git_dirty", "python", "torch", "torchvision", "ray", "optuna",
        "numpy", "cuda", "cudnn", "device", "host", "data_sha256", "noisy_labels_sha256"}


def _train(root, out, **sets):
    sets = dict(dataset="cifar10", data_dir=str(root), noise="sym:0.4", model="small_cnn",
                epochs=1, batch_size=10, augment="none", device="cpu", threads=1, **sets)
    argv = ["train", "--quiet", "--out", str(out)]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    clear_cache()   # each run loads the files itself, as separate processes would
    assert lci_main(argv) == 0
    return json.loads((out / "result.json").read_text())["provenance"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_train=40, n_test=10)
    exp = tmp_path_factory.mktemp("exp")
    prov = {
        "ce0": _train(root, exp / "table" / "ce0", method="ce", seed=0),
        "ce0_again": _train(root, exp / "again" / "ce0", method="ce", seed=0),
        "gce0": _train(root, exp / "table" / "gce0", method="gce", seed=0),
        "ce1": _train(root, exp / "table" / "ce1", method="ce", seed=1),
    }
    return exp, prov


def test_every_result_records_its_provenance(runs):
    _, prov = runs
    p = prov["ce0"]
    assert set(p) >= KEYS
    import numpy
    import torch

    assert p["torch"] == torch.__version__ and p["numpy"] == numpy.__version__
    assert p["device"].startswith("cpu") and p["cuda"] is None
    for k in ("data_sha256", "noisy_labels_sha256"):
        assert len(p[k]) == 64 and int(p[k], 16) >= 0


def test_digests_repeat_for_one_config_and_change_with_the_noise_seed(runs):
    _, prov = runs
    a, again, gce, other_seed = prov["ce0"], prov["ce0_again"], prov["gce0"], prov["ce1"]
    assert a["data_sha256"] == again["data_sha256"] == other_seed["data_sha256"]
    assert a["noisy_labels_sha256"] == again["noisy_labels_sha256"]
    # another method on the same seed trains on the same noisy labels: the pairing by seed
    assert gce["noisy_labels_sha256"] == a["noisy_labels_sha256"]
    assert other_seed["noisy_labels_sha256"] != a["noisy_labels_sha256"]


def _report(capsys, *dirs, out):
    assert report_cli.main([str(d) for d in dirs] + ["--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(out / "report.md")
    return cap.err, (out / "report.md").read_text()


def test_report_prints_provenance_and_warns_on_mixed_code_versions(runs, tmp_path, capsys):
    exp, prov = runs
    err, text = _report(capsys, exp / "table", out=tmp_path / "r1")
    assert "lci report: provenance of the runs:" in err and prov["ce0"]["torch"] in err
    assert "warning" not in err
    assert "## Provenance" in text and prov["ce0"]["data_sha256"][:12] in text
    # one run of the table made by other code
    path = exp / "table" / "ce1" / "result.json"
    original = path.read_text()
    res = json.loads(original)
    res["provenance"]["git_commit"] = "0123456789abcdef0123456789abcdef01234567"
    res["provenance"]["version"] = "0.2.9"
    path.write_text(json.dumps(res))
    try:
        err, text = _report(capsys, exp / "table", out=tmp_path / "r2")
    finally:
        path.write_text(original)
    warned = [ln for ln in err.splitlines() if ln.startswith("lci report: warning: ")]
    assert warned and all("mix 2 code versions" in w for w in warned)
    assert "0.2.9 0123456789 (1 run)" in warned[0]
    assert "**Warnings**" in text and "mix 2 code versions" in text


def test_report_warns_when_one_seed_trained_on_other_noisy_labels(runs, tmp_path, capsys):
    exp, _ = runs
    path = exp / "table" / "gce0" / "result.json"
    original = path.read_text()
    res = json.loads(original)
    res["provenance"]["noisy_labels_sha256"] = "f" * 64
    path.write_text(json.dumps(res))
    try:
        err, _ = _report(capsys, exp / "table", out=tmp_path / "r")
    finally:
        path.write_text(original)
    warned = [ln for ln in err.splitlines() if ln.startswith("lci report: warning: ")]
    assert len(warned) == 1
    assert "noise sym:0.4 seed 0: the runs trained on 2 different noisy label vectors" in warned[0]

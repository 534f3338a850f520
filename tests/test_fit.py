"""The fit loop: output files, metrics, checkpoint/resume equivalence, divergence, CLI."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

import lci
from lci.config import TrainConfig
from lci.errors import CheckpointError, DivergenceError, LCIError
from lci.trainer import Trainer

FAST = dict(dataset="digits", epochs=3, device="cpu", seed=1, noise="sym:0.6")


def test_fit_writes_every_output_file(tmp_path):
    out = tmp_path / "run"
    res = lci.fit(TrainConfig.from_dict({**FAST, "val_fraction": 0.1}), str(out))
    for f in ("config.json", "history.csv", "result.json", "label_issues.csv", "checkpoint.pt"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "small_cnn" and cfg["epochs"] == 3  # resolved, not "auto"
    hist = pd.read_csv(out / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3]
    for col in ("test_acc", "robust_test_acc", "val_acc", "train_acc_clean", "train_acc_noisy",
                "train_acc_noisy_true", "conf_auroc", "conf_mean_clean", "conf_mean_noisy",
                "dce_fraction", "loss", "loss_robust", "loss_ce", "loss_jsd", "loss_penalty",
                "realized_noise_rate", "epoch_s", "samples_per_s"):
        assert col in hist.columns, col
    result = json.loads((out / "result.json").read_text())
    assert result["test_acc"] == pytest.approx(res["test_acc"])
    assert "wall_s" in result and "samples_per_s" in result
    issues = pd.read_csv(out / "label_issues.csv")
    assert list(issues.columns[:5]) == ["index", "given_label", "predicted_label",
                                        "label_confidence", "is_label_issue"]
    assert "is_noisy" in issues.columns
    assert issues["label_confidence"].is_monotonic_increasing
    assert len(issues) == int(round(0.9 * 1297))  # train minus the validation split
    # the noisy labels are lower-confidence than the clean ones on average
    assert issues.loc[issues.is_noisy, "label_confidence"].mean() < \
        issues.loc[~issues.is_noisy, "label_confidence"].mean()
    assert 0.0 < result["realized_noise_rate"] < 0.6


def test_existing_run_is_not_overwritten(tmp_path):
    out = str(tmp_path / "run")
    lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1}), out)
    before = open(os.path.join(out, "result.json")).read()
    with pytest.raises(LCIError, match="already holds a run"):
        lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1}), out)
    assert open(os.path.join(out, "result.json")).read() == before


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.engine.state_dict()["theta_star"].items()}


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path):
    cfg = TrainConfig.from_dict({**FAST, "epochs": 4, "method": "lci"})
    full = Trainer(cfg)
    while not full.done:
        full.train_epoch()

    out = str(tmp_path / "run")
    first = Trainer(cfg, out)
    first.train_epoch()
    first.train_epoch()
    first.save_checkpoint()
    del first  # the process "dies" after epoch 2
    resumed = lci.fit(cfg, out, resume=True)

    again = Trainer(cfg)
    again.load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert again.epoch == 4
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(again)[k]), k
    assert again.engine.mu.item() == full.engine.mu.item()
    for key in ("test_acc", "robust_test_acc", "conf_auroc", "loss"):
        assert resumed[key] == full.history[-1][key], key
    hist = pd.read_csv(os.path.join(out, "history.csv"))
    assert list(hist["epoch"]) == [1, 2, 3, 4]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    out = str(tmp_path / "run")
    lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1}), out)
    other = Trainer(TrainConfig.from_dict({**FAST, "epochs": 2, "m": 1.5}))
    with pytest.raises(CheckpointError, match="m: checkpoint 0.0 vs now 1.5"):
        other.load_checkpoint(os.path.join(out, "checkpoint.pt"))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1}), str(out))
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        lci.fit(TrainConfig.from_dict({**FAST, "epochs": 2}), str(out), resume=True)


def test_diverging_run_stops_with_its_reason():
    tr = Trainer(TrainConfig.from_dict({**FAST, "method": "ce", "lr": 1e30, "momentum": 0.0}))
    with pytest.raises(DivergenceError, match="non-finite loss"):
        for _ in range(3):
            tr.train_epoch()


def test_same_seed_same_metrics_and_labels():
    a = lci.fit(TrainConfig.from_dict({**FAST, "epochs": 2, "method": "gce"}))
    b = lci.fit(TrainConfig.from_dict({**FAST, "epochs": 2, "method": "gce"}))
    for k in ("test_acc", "loss", "conf_auroc", "realized_noise_rate"):
        assert a[k] == b[k]


def test_baselines_report_no_robust_metrics(tmp_path):
    res = lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1, "method": "ce"}))
    assert "robust_test_acc" not in res and "loss_ce" not in res
    assert "test_acc" in res and "conf_auroc" in res


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "lci_study", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.mark.parametrize("args,needle", [
    (["--set", "metod=lci"], "unknown config key 'metod'"),
    (["--set", "method=lcx"], "unknown method 'lcx'; allowed: 'lci'"),
    (["--set", "noise=sym:1.5"], "outside [0, 1]"),
    (["--set", "robust_loss=foo"], "allowed: 'gce'"),
    (["--set", "epochs=many"], "epochs='many' must be an integer"),
])
def test_cli_bad_input_exits_2_with_one_line(args, needle, tmp_path):
    p = run_cli("train", *args, "--out", str(tmp_path / "r"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr
    assert not (tmp_path / "r").exists()


def test_cli_train_and_resume(tmp_path):
    out = str(tmp_path / "r")
    p = run_cli("train", "--set", "epochs=2", "--set", "method=gce", "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert "test_acc=" in p.stdout
    # resume with a larger epoch budget continues from epoch 2
    p = run_cli("train", "--set", "epochs=3", "--set", "method=gce", "--out", out, "--quiet",
                "--resume")
    assert p.returncode == 0, p.stderr
    assert list(pd.read_csv(os.path.join(out, "history.csv"))["epoch"]) == [1, 2, 3]


def test_unwritable_output_folder_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(LCIError, match="cannot write results to"):
        lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1}), str(blocker / "run"))
    p = run_cli("train", "--set", "epochs=1", "--out", str(blocker / "run"))
    assert p.returncode == 2 and "cannot write results" in p.stderr


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """The checkpoint is written beside the old one and renamed over it: a crash mid-write
    (here: torch.save dying after half the bytes) leaves the previous checkpoint usable."""
    from lci import checkpoint as ckpt

    out = str(tmp_path / "run")
    cfg = TrainConfig.from_dict({**FAST, "epochs": 2})
    tr = Trainer(cfg, out)
    tr.train_epoch()
    path = tr.save_checkpoint()
    good = open(path, "rb").read()
    tr.train_epoch()

    real_save = torch.save

    def dying_save(obj, fh):
        real_save(obj, fh)
        fh.seek(0)
        fh.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        tr.save_checkpoint()
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert open(path, "rb").read() == good
    assert [f for f in os.listdir(out) if f.endswith(".tmp")] == []  # no debris left
    resumed = Trainer(cfg, str(tmp_path / "other"))
    resumed.load_checkpoint(path)
    assert resumed.epoch == 1


def test_label_issues_are_written_without_per_epoch_train_evaluation(tmp_path):
    out = tmp_path / "run"
    lci.fit(TrainConfig.from_dict({**FAST, "epochs": 1, "eval_train": False}), str(out))
    hist = pd.read_csv(out / "history.csv")
    assert "conf_auroc" not in hist.columns  # no per-epoch train-set pass
    issues = pd.read_csv(out / "label_issues.csv")
    assert len(issues) == 1297 and issues["label_confidence"].is_monotonic_increasing

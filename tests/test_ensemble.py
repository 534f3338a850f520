"""Ensemble "(E)": accuracy of the averaged softmax of two real runs."""
import json
import subprocess
import sys

import torch

import lci
from lci.config import TrainConfig
from lci.ensemble import ensemble_eval, load_run, topk_accuracy


def test_ensemble_of_two_runs(tmp_path):
    dirs = []
    for seed in (0, 1):
        d = str(tmp_path / f"run{seed}")
        lci.fit(TrainConfig(dataset="digits", method="gce", epochs=2, seed=seed, device="cpu",
                            eval_train=False), d)
        dirs.append(d)
    res = ensemble_eval(dirs)
    # recompute by hand from the two restored models
    runs = [load_run(d) for d in dirs]
    probs = [r.probabilities(r.x_test) for r in runs]
    labels = runs[0].y_test
    expected = ((probs[0] + probs[1]) / 2).argmax(1).eq(labels).float().mean().item()
    assert res["test_acc"] == expected
    assert [m["test_acc"] for m in res["members"]] == \
        [json.load(open(f"{d}/result.json"))["test_acc"] for d in dirs]
    assert res["test_acc_top5"] >= res["test_acc"]

    p = subprocess.run([sys.executable, "-m", "lci_study", "ensemble", *dirs, "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["test_acc"] == expected


def test_ensemble_needs_two_runs_with_checkpoints(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lci_study", "ensemble", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "at least two runs" in p.stderr
    p = subprocess.run([sys.executable, "-m", "lci_study", "ensemble", str(tmp_path), str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "config.json" in p.stderr


def test_topk():
    probs = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]])
    labels = torch.tensor([1, 0])
    assert topk_accuracy(probs, labels, 1) == 0.5
    assert topk_accuracy(probs, labels, 2) == 1.0

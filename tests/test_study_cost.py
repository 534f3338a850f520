"""``lci sweep --dry-run`` prints what a study costs (trial-epochs, GPU-hours per phase) from the
measured epoch times kept in the repository, and ``budget:`` refuses a study over it."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def _lci(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "lci_study", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def _spec(tmp_path, **over):
    spec = {"name": "c", "fixed": {"dataset": "cifar10", "data_dir": str(tmp_path / "none"),
                                   "epochs": 40},
            "noise": ["sym:0.4", "sym:0.8"], "methods": ["ce", "gce", "lci"],
            "search": {"trials": 6, "methods": ["lci"], "fixed": {"epochs": 20}},
            "evaluation": {"seeds": 3}, "resources": {"cpu": 2, "gpu": 0.5},
            "storage": str(tmp_path / "res")}
    spec.update(over)
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _row(out, phase):
    line = next(l for l in out.splitlines() if l.strip().startswith(phase + " "))
    trials, epochs, hours = line.split()[1:]
    return int(trials), int(epochs.replace(",", "")), None if hours == "-" else float(hours)


def test_dry_run_prints_trial_epochs_and_gpu_hours_per_phase(tmp_path):
    from study.cost import epoch_times

    r = _lci("sweep", str(_spec(tmp_path)), "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = epoch_times()
    images, ce_s = table[("H200", "preact_resnet34", "ce")]
    _, lci_s = table[("H200", "preact_resnet34", "lci")]
    # search: 2 lci cells x 6 trials x 20 epochs on 90% of 50,000 images (the validation split)
    assert _row(r.stdout, "search") == (12, 240, round(240 * lci_s * 0.9 / 3600, 1))
    # evaluation: 6 cells x 3 seeds x 40 epochs; gce has no measured time, so is not in hours
    eval_s = 2 * 3 * 40 * (ce_s + lci_s) * 50000 / images
    assert _row(r.stdout, "evaluation") == (18, 720, round(eval_s / 3600, 1))
    assert _row(r.stdout, "total")[:2] == (30, 960)
    assert "unmeasured: gce on preact_resnet34 (no H200 row): 6 trials, 240 trial-epochs" \
        in r.stdout
    unmeasured = [l for l in r.stdout.splitlines() if "unmeasured:" in l]
    assert len(unmeasured) == 1  # measured pairs (ce, lci) are not listed


def test_a_study_over_its_budget_is_refused_before_anything_is_written(tmp_path):
    spec = _spec(tmp_path, budget={"gpu_hours": 0.01})
    r = _lci("sweep", str(spec), cwd=tmp_path)
    assert r.returncode == 2 and "over budget.gpu_hours=0.01" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "res").exists()
    # the dry run prints the cost, then refuses the same way
    r = _lci("sweep", str(spec), "--dry-run", cwd=tmp_path)
    assert r.returncode == 2 and "over budget" in r.stderr and "GPU-hours" in r.stdout
    # within the budget: the dry run passes
    assert _lci("sweep", str(_spec(tmp_path, budget={"gpu_hours": 1000})), "--dry-run",
                cwd=tmp_path).returncode == 0


def test_budget_keys_are_checked(tmp_path):
    for budget, msg in (({"gpu_hours": -1}, "budget.gpu_hours=-1"),
                        ({"gpu_hours": 5, "gpu": "Z80"}, "budget.gpu='Z80'; allowed"),
                        ({"hours": 5}, "unknown key budget.hours")):
        r = _lci("sweep", str(_spec(tmp_path, budget=budget)), "--dry-run", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr, r.stderr


def test_cpu_studies_cost_no_gpu_hours(tmp_path):
    r = _lci("sweep", str(_spec(tmp_path, resources={"cpu": 1}, budget={"gpu_hours": 0.01})),
             "--dry-run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no GPU-hours" in r.stdout and _row(r.stdout, "total") == (30, 960, None)


def test_a_trial_holding_two_gpus_counts_both(tmp_path):
    one = _lci("sweep", str(_spec(tmp_path)), "--dry-run", cwd=tmp_path)
    two = _lci("sweep", str(_spec(tmp_path, resources={"cpu": 2, "gpu": 2})), "--dry-run",
               cwd=tmp_path)
    assert one.returncode == two.returncode == 0, two.stderr
    # each row is rounded to 0.1 h
    assert abs(_row(two.stdout, "total")[2] - 2 * _row(one.stdout, "total")[2]) < 0.15

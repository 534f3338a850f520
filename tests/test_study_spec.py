"""Study specs: validation messages, cells, search spaces, presets (`--dry-run`). No Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from lci_study.cli import main as lci_main
from study.searcher import SearchSpace, TruncationAwareOptunaSearch
from lci.losses import LOSS_DEFAULTS, check_params
from study.spec import LOSS_SEARCH_SPACE, SPEC_KEYS, SpecError, load_spec, preset_names


def tiny(**extra):
    spec = {"name": "t", "fixed": {"dataset": "digits", "epochs": 2},
            "noise": ["sym:0.8"], "methods": ["ce", "lci"], "evaluation": {"seeds": 2}}
    spec.update(extra)
    return spec


def write(tmp_path, spec, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec))
    return str(p)


# --------------------------------------------------------------------------- presets / CLI
@pytest.mark.parametrize("preset", ["demo", "table1_cifar10", "table1_cifar100", "table2_ablation",
                                    "figure3_curves", "figure4_m", "search_cifar10"])
def test_every_preset_passes_dry_run(preset, capsys, tmp_path):
    assert preset in preset_names()
    rc = lci_main(["sweep", preset, "--dry-run", "--storage", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"study '{preset}'" in out and "trials: search" in out
    assert not (tmp_path / preset).exists()  # a dry run writes nothing


def test_presets_cover_the_paper():
    t1 = load_spec("table1_cifar10")
    assert set(t1.methods) == {"ce", "bs", "ls", "mae", "gce", "sce", "nce_rce", "js", "gjs", "lci"}
    assert set(t1.noise) == {"sym:0.0", "sym:0.2", "sym:0.4", "sym:0.6", "sym:0.8",
                             "asym:0.2", "asym:0.4"}
    assert len(t1.cells) == 70 and t1.trial_counts()["evaluation"] == 350
    assert t1.fixed["epochs"] == 400
    assert load_spec("table1_cifar100").datasets == ["cifar100"]
    t2 = load_spec("table2_ablation")
    assert {c.method for c in t2.cells} == {"gce", "lci-single", "lci-two-models", "lci"}
    f4 = load_spec("figure4_m")
    assert f4.sweep.values == [float(v) for v in range(-5, 6)]
    assert {c.method for c in f4.sweep_cells()} == {"lci"}
    assert {c.method for c in f4.eval_cells()} == {"ce", "gce"}
    s = load_spec("search_cifar10")
    assert s.search_param_names() == ["m", "lam", "rho", "alpha", "gce.q"]
    assert s.scheduler is not None


def test_dry_run_prints_cells_params_and_counts(tmp_path, capsys):
    spec = tiny(search={"trials": 3, "params": {"rho": 1.0}}, robust_losses=["gce", "sce"],
                sweep={"param": "m", "values": [-1, 1], "seeds": 1})
    rc = lci_main(["sweep", write(tmp_path, spec), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "lci_gce_sym0.8" in out and "lci_sce_sym0.8" in out and "ce_sym0.8" in out
    assert "gce.q in [0.1, 1]" in out and "sce.a in" in out and "fixed rho=1" in out
    # search 2 cells x 3, evaluation 3 cells x 2 seeds, sweep 2 lci cells x 2 values x 1 seed
    assert "trials: search 6, evaluation 6, sweep 4, total 16" in out


# ------------------------------------------------------------------------------ bad specs
def test_malformed_spec_exits_2_naming_the_key(tmp_path):
    path = write(tmp_path, tiny(serach={"trials": 3}))
    r = subprocess.run([sys.executable, "-m", "lci_study", "sweep", path, "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "unknown key 'serach'" in lines[0] and "allowed:" in lines[0]
    assert all(k in lines[0] for k in SPEC_KEYS)


@pytest.mark.parametrize("change, message", [
    ({"fixed": {"dataset": "digits", "epochs": 2, "lamda": 1}}, "unknown setting 'lamda' in 'fixed'"),
    ({"fixed": {"dataset": "digits", "epochs": -3}}, "epochs=-3"),
    ({"methods": ["ce", "lcii"]}, "unknown value 'lcii'"),
    ({"noise": ["sym:1.5"]}, "outside [0, 1]"),
    ({"search": {"trials": 2, "params": {"mm": [0, 1]}}}, "'mm' cannot be searched"),
    ({"search": {"trials": 2, "params": {"gce.k": [0, 1]}}}, "loss 'gce' has no parameter 'k'"),
    ({"search": {"trials": 2, "metric": "test_acc"}}, "never select on the test set"),
    ({"search": {"trials": 2, "val_fraction": 0}}, "must be in (0, 1)"),
    ({"search": {"trials": 2, "params": {"lam": {"low": 0, "high": 1, "log": True}}}},
     "log range needs low > 0"),
    ({"search": {"trials": 2, "params": {"rho": [-1, 2]}}}, "rho=-1.0 is outside"),
    ({"search": {"trials": 2, "params": {"gce.q": [0.0, 0.5]}}}, "q=0.0 is outside"),
    ({"search": {"params": {}}}, "search.trials is missing"),
    ({"evaluation": {"seeds": 0}}, "evaluation.seeds=0"),
    ({"fixed": {"dataset": "digits", "val_fraction": 0.2}}, "'val_fraction' is set by the study"),
    ({"resources": {"cpu": 1, "gpus": 1}}, "unknown key 'gpus' in 'resources'"),
    ({"scheduler": {"type": "asha"}}, "there is no 'search'"),
    ({"sweep": {"param": "sce.a", "values": [0.1]}}, "applies to none of the cells"),
    ({"overrides": [{"when": {"method": "lci"}, "set": {"robust_loss_params": {"z": 1}}}]},
     "cell lci_gce_sym0.8: unknown parameter 'z' for loss 'gce'"),
])
def test_bad_values_are_named(change, message):
    with pytest.raises(SpecError) as e:
        load_spec(tiny(**change))
    assert message in str(e.value)


def test_unknown_file_or_preset(capsys):
    assert lci_main(["sweep", "no_such_preset", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "neither a file nor a preset" in err and "demo" in err


# ---------------------------------------------------------------------------------- cells
def test_baselines_are_not_duplicated_per_robust_loss():
    spec = load_spec(tiny(methods=["ce", "gce", "lci", "lci-single"],
                          robust_losses=["gce", "sce", "js"], noise=["sym:0.8", "asym:0.4"]))
    ids = [c.id for c in spec.cells]
    assert len(ids) == len(set(ids)) == 2 * (2 + 3 + 3)
    assert "ce_sym0.8" in ids and "gce_asym0.4" in ids
    ce = next(c for c in spec.cells if c.id == "ce_sym0.8")
    assert ce.robust_loss == "ce" and ce.base["robust_loss"] == "ce"


def test_search_space_is_conditional_on_method_and_loss():
    spec = load_spec(tiny(methods=["gce", "lci", "lci-two-models", "lci-single"],
                          robust_losses=["gce", "sce"],
                          search={"trials": 2, "methods": ["gce", "lci", "lci-two-models",
                                                           "lci-single"]}))
    names = {c.id: [p.name for p in c.search_params] for c in spec.cells}
    assert names["lci_gce_sym0.8"] == ["m", "lam", "rho", "alpha", "gce.q"]
    assert names["lci_sce_sym0.8"] == ["m", "lam", "rho", "alpha", "sce.a", "sce.b"]
    assert names["lci-two-models_gce_sym0.8"] == ["m", "lam", "alpha", "gce.q"]  # no JSD: no rho
    assert names["lci-single_gce_sym0.8"] == ["m", "alpha", "gce.q"]          # one model
    assert names["gce_sym0.8"] == ["gce.q"]                                   # baseline: own param


def test_default_ranges_and_narrowing():
    spec = load_spec(tiny(search={"trials": 2, "params": {
        "m": [-1, 2], "alpha": 1.5, "lam": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    cell = next(c for c in spec.cells if c.method == "lci")
    p = {x.name: x for x in cell.search_params}
    assert (p["m"].low, p["m"].high, p["m"].log) == (-1, 2, False)
    assert (p["lam"].low, p["lam"].high, p["lam"].log) == (1e-4, 1e-2, True)
    assert (p["rho"].low, p["rho"].high) == (0, 5)
    assert "alpha" not in p and [f.name for f in cell.fixed_params] == ["alpha"]
    cfg = spec.phase_config(cell, "search")
    assert cfg["alpha"] == 1.5 and cfg["val_fraction"] == 0.1
    assert spec.phase_config(cell, "evaluation")["val_fraction"] == 0.0
    assert "seed" not in spec.search_param_names()  # seeds are trials, never searched


def test_default_loss_ranges_are_valid_loss_params():
    # the study keeps the search ranges, lci the losses: every range must be one lci accepts
    assert set(LOSS_SEARCH_SPACE) == set(LOSS_DEFAULTS)
    for name, space in LOSS_SEARCH_SPACE.items():
        for key, (lo, hi, log) in space.items():
            assert key in LOSS_DEFAULTS[name]
            assert lo < hi and (not log or lo > 0)
            check_params(name, {key: lo})
            check_params(name, {key: hi})
    assert LOSS_SEARCH_SPACE["gce"] == {"q": (0.1, 1.0, False)}


def test_define_by_run_space_with_real_optuna():
    spec = load_spec(tiny(search={"trials": 2}))
    cell = next(c for c in spec.cells if c.method == "lci")
    space = SearchSpace(cell.search_params)

    def sample(seed):
        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for _ in range(3):
            t = study.ask()
            space(t)
            study.tell(t, 0.5)
            out.append(t.params)
        return out

    a, b = sample(7), sample(7)
    assert a == b  # seeded TPE: reproducible suggestions
    for params in a:
        assert set(params) == {"m", "lam", "rho", "alpha", "robust_loss_params/q"}
        assert -5 <= params["m"] <= 5 and 1e-5 <= params["lam"] <= 1e-1
        assert 0 <= params["rho"] <= 5 and 0.1 <= params["alpha"] <= 10
        assert 0.1 <= params["robust_loss_params/q"] <= 1


def test_truncated_trials_are_told_to_optuna_as_pruned():
    """The searcher's own bookkeeping, with a real in-memory Optuna study: a trial whose last
    result is short of the planned epochs is PRUNED, a full one COMPLETE, an error FAIL."""
    spec = load_spec(tiny(search={"trials": 3}))
    cell = next(c for c in spec.cells if c.method == "lci")
    s = TruncationAwareOptunaSearch(space=SearchSpace(cell.search_params), metric="val_acc",
                                    mode="max", epochs=10,
                                    sampler=optuna.samplers.TPESampler(seed=0))
    for tid in ("a", "b", "c"):
        assert "m" in s.suggest(tid)
        s.on_trial_result(tid, {"val_acc": 0.3, "training_iteration": 1, "epoch": 1})
    s.on_trial_complete("a", {"val_acc": 0.9, "epoch": 3, "training_iteration": 3})  # ASHA-stopped
    s.on_trial_complete("b", {"val_acc": 0.5, "epoch": 10, "training_iteration": 10})
    s.on_trial_complete("c", None, error=True)
    states = [t.state.name for t in s._ot_study.trials]
    assert states == ["PRUNED", "COMPLETE", "FAIL"]
    assert s._ot_study.best_trial.value == 0.5  # the truncated 0.9 never counts


def test_study_json_contract(tmp_path):
    spec = load_spec(tiny(search={"trials": 2}, sweep={"param": "m", "values": [0, 1]}),
                     storage=str(tmp_path))
    info = spec.to_json()
    json.dumps(info)
    assert info["name"] == "t" and info["seeds"] == 2 and info["metric"] == "test_acc"
    assert info["search_params"] == ["m", "lam", "rho", "alpha", "gce.q"]
    assert {"id", "noise", "robust_loss", "method"} <= set(info["cells"][0])
    assert spec.study_dir == os.path.join(str(tmp_path), "t")
    assert info["experiments"] == ["lci_gce_sym0.8__search", "ce_sym0.8__eval",
                                   "lci_gce_sym0.8__eval", "sweep_m__lci_gce_sym0.8"]


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = load_spec(tiny(storage="out", fixed={"dataset": "digits", "data_dir": "data"}))
    assert spec.storage == str(tmp_path / "out")
    assert spec.cells[0].base["data_dir"] == str(tmp_path / "data")


def test_unwritable_storage_fails_before_ray_starts(tmp_path, capsys):
    from lci_study.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["sweep", "demo", "--storage", str(blocker / "results")]) == 2
    err = capsys.readouterr().err
    assert "cannot write results to" in err and str(blocker) in err


def test_demo_reading_is_one_line_on_the_sym80_gap():
    from study.cli import demo_reading
    from study.results import Summary

    def cell(method, noise, mean):
        return {"cell": f"{method}_{noise}", "method": method, "noise": noise,
                "test_acc": {"n": 3, "mean": mean, "std": 0.01}}

    s = Summary("/x", "test_acc", cells=[cell("ce", "sym:0.8", 0.41), cell("gce", "sym:0.8", 0.66),
                                         cell("lci", "sym:0.8", 0.72), cell("lci", "asym:0.4", 0.9)])
    line = demo_reading(s)
    assert "\n" not in line
    assert "LCI 72.0 % vs CE 41.0 % (+31.0 points) and GCE 66.0 %" in line
    assert "Memorisation" in line  # where the report shows the curve
    s.cells[0]["test_acc"] = {"n": 0}  # CE not finished: no gap to state
    assert "+" not in demo_reading(s) and "\n" not in demo_reading(s)

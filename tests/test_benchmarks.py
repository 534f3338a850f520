"""The scripts under benchmarks/: they run, and their last line is the JSON they promise.

No timing assertions: these only check the output's shape (times on a shared machine are noise).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEP_COST_METHODS = ["ce", "gce", "gjs", "lci", "lci:view", "lci:fused", "lci:view+fused",
                     "lci-two-models", "lci-single"]


def run_script(*args: str, timeout: float = 600) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) > 1, "expected a readable table before the JSON line"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def step_cost():
    # one thread: two-thread torch on a busy two-core machine is many times slower
    return run_script("benchmarks/step_cost.py", "--models", "small_cnn", "--steps", "2",
                      "--warmup", "1", "--repeats", "1", "--threads", "1", "--json")


def test_step_cost_json_structure(step_cost):
    assert step_cost["device"] in ("cpu", "cuda") or step_cost["device"].startswith("cuda:")
    rows = step_cost["rows"]
    assert [r["model"] for r in rows] == ["small_cnn"] * len(STEP_COST_METHODS)
    assert [r["method"] for r in rows] == STEP_COST_METHODS
    for r in rows:
        assert {"model", "method", "ms_per_step", "ratio_to_ce"} <= set(r)
        assert r["ms_per_step"] > 0 and r["ratio_to_ce"] > 0
        assert len(r["ms_per_step_runs"]) == 1  # --repeats 1
    by_method = {r["method"]: r for r in rows}
    assert by_method["ce"]["ratio_to_ce"] == 1.0
    assert by_method["lci:view"]["options"] == {"method": "lci", "correction_source": "view"}


def test_step_cost_steps_stay_finite_and_never_sync(step_cost):
    """Every method's step reads nothing back to the host (no .item(), no `if tensor:`)."""
    for r in step_cost["rows"]:
        assert r["finite"], r["method"]
        assert r["host_syncs"] == [], (r["method"], r["host_syncs"])


def test_step_cost_counts_operators_and_reports_the_eager_mode(step_cost):
    by_method = {r["method"]: r for r in step_cost["rows"]}
    assert all(r["mode"] == "eager" for r in step_cost["rows"])  # no --graphs on a CPU
    # lci runs three networks' forwards and backwards where ce runs one: more operators
    assert 0 < by_method["ce"]["ops_per_step"] < by_method["lci"]["ops_per_step"]


def test_sync_debug_mode_notice_is_not_a_host_sync():
    sys.path.insert(0, str(ROOT))
    from benchmarks.step_cost import is_sync_warning

    assert is_sync_warning("called a synchronizing CUDA operation")
    assert not is_sync_warning("torch.cuda.set_sync_debug_mode: the synchronization debug mode "
                               "is a prototype feature")


@pytest.mark.slow
def test_epoch_time_runs_whole_epochs_solo_and_packed(tmp_path):
    """A tiny CPU run of benchmarks/epoch_time.py: torchvision-format data, `lci train`
    processes solo and two at once, a table and the JSON line."""
    res = run_script("benchmarks/epoch_time.py", "--device", "cpu", "--model", "small_cnn",
                     "--n-train", "256", "--n-test", "64", "--epochs", "2", "--methods", "lci",
                     "--modes", "eager", "--packs", "1", "2", "--threads", "1",
                     "--keep", str(tmp_path), "--json")
    (solo,) = res["solo"]
    assert solo["method"] == "lci" and solo["epochs"] == 2 and solo["samples_per_s"] > 0
    assert [p["processes"] for p in res["packed"]] == [1, 2]
    assert len(res["packed"][1]["epoch_s_each"]) == 2
    assert (tmp_path / "data" / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_fused_throughput_runs_each_k_and_says_what_it_skipped():
    out = run_script("benchmarks/fused_throughput.py", "--members", "1", "2", "--steps", "1",
                     "--warmup", "1", "--repeats", "1", "--threads", "1", "--json")
    cpu = [r for r in out["rows"] if r["device"] == "cpu"]
    assert [(r["mode"], r["members"]) for r in cpu] == [("eager", 1), ("eager", 2)]
    assert cpu[0]["ratio_to_k1"] == 1.0
    for r in cpu:
        assert r["finite"] and r["samples_per_s"] > 0 and r["ops_per_step"] > 0
    import torch

    if not torch.cuda.is_available():
        assert any(s.startswith("cuda") for s in out["skipped"])

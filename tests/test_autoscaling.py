"""Studies on Ray's own autoscaler (v1 and v2) with its fake multi-node provider
(tests/fakecluster.py): a head that takes no trial and no worker, as cluster.yaml and the
KubeRay manifests start; `lci sweep --address` makes the autoscaler launch the workers, to
max_workers at once, and a worker taken away mid-trial (a spot reclaim) costs only the epochs
after the last checkpoint. Nothing waits for an amount of time: every step waits for an event
(a ready file, a checkpoint on disk, the driver's exit)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

import faultkit
from fakecluster import FakeAutoscalingCluster, kill_node, node_of

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = "worker.cpu"


def _cluster(v2: bool, max_workers: int, cpus: int = 1) -> FakeAutoscalingCluster:
    env = dict(os.environ)
    # the trials' workers run in processes the autoscaler starts: they import this checkout
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    return FakeAutoscalingCluster(
        {WORKER: {"resources": {"CPU": cpus}, "node_config": {}, "min_workers": 0,
                  "max_workers": max_workers}}, v2=v2, env=env)


def _spec(tmp_path, name: str, seeds: int, epochs: int) -> str:
    spec = {"name": name,
            "fixed": {"dataset": "digits", "epochs": epochs, "checkpoint_every": 1,
                      "eval_train": False},
            "noise": ["sym:0.6"], "methods": ["lci"], "evaluation": {"seeds": seeds},
            "resources": {"cpu": 1, "gpu": 0}, "max_failures": 2}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _finished(study_dir: str, epochs: int):
    from study.trials import read_study_trials

    return [r for recs in read_study_trials(study_dir).values() for r in recs
            if r.finished(epochs)]


@pytest.mark.parametrize("v2", [False, True], ids=["autoscaler_v1", "autoscaler_v2"])
def test_study_starts_on_zero_workers_and_scales_to_max_at_once(tmp_path, v2):
    """No worker at the start: the study is accepted (autoscaler v2 writes no
    ``__autoscaling_status``), its pending trials show the autoscaler a demand for all of
    max_workers nodes at once (not one node per trial that starts), the autoscaler launches
    them, and the study completes."""
    max_workers, seeds, epochs = 2, 2, 2
    spec = _spec(tmp_path, "scale", seeds, epochs)
    with _cluster(v2, max_workers) as cluster:
        watcher = cluster.watch(str(tmp_path / "watch.jsonl"))
        try:
            r = subprocess.run([sys.executable, "-m", "lci_study", "sweep", spec, "--address",
                                cluster.address, "--storage", str(tmp_path / "res")],
                               capture_output=True, text=True, env=cluster.env, timeout=600,
                               cwd=tmp_path)
        finally:
            seen = watcher.stop()
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-4000:]
        assert "autoscaler" in out and f"(v{2 if v2 else 1})" in out, out[-4000:]
    assert seen and seen[0]["workers"] == 0, seen[:3]          # it started with no worker
    # the trials' demand reached the autoscaler whole: both bundles pending at one moment
    assert max(s["pending"] for s in seen) >= max_workers, seen
    # ... and the autoscaler went to max_workers nodes (GCS node table: every node ever)
    assert seen[-1]["workers"] == max_workers, seen
    assert max(s["alive"] for s in seen) == max_workers, seen
    study_dir = str(tmp_path / "res" / "scale")
    state = json.load(open(os.path.join(study_dir, "study_state.json")))
    assert {k: v["status"] for k, v in state["experiments"].items()} == {
        "lci_gce_sym0.6__eval": "done"}
    assert sorted(r.config["seed"] for r in _finished(study_dir, epochs)) == list(range(seeds))


@pytest.mark.parametrize("v2", [False, True], ids=["autoscaler_v1", "autoscaler_v2"])
def test_node_taken_away_mid_trial_resumes_from_checkpoint_on_another_node(tmp_path, v2):
    """Two trials, each on a worker the autoscaler launched, hold after epoch 1 (their
    checkpoint written). One worker node is then taken away whole (raylet, agents, the trial's
    process: a spot reclaim). The trial is retried on another node from its epoch-1
    checkpoint (its next epoch is 2, not 1); the study completes and each planned trial ran
    to its end exactly once."""
    from study.trials import read_study_trials

    epochs, seeds = 3, 2
    spec = _spec(tmp_path, "reclaim", seeds, epochs)
    control = tmp_path / "control"
    os.makedirs(control)
    open(control / "hold", "w").close()
    study_dir = str(tmp_path / "res" / "reclaim")
    # room for a replacement node beside the two that run the trials
    with _cluster(v2, max_workers=3) as cluster:
        log = open(tmp_path / "driver.log", "w")
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "held_driver.py"),
                              str(control), spec, "--address", cluster.address, "--storage",
                              str(tmp_path / "res")],
                             stdout=log, stderr=subprocess.STDOUT, env=cluster.env,
                             cwd=tmp_path)
        try:
            def alive():
                assert p.poll() is None, (tmp_path / "driver.log").read_text()[-4000:]
                return True

            held = faultkit.wait_for(
                lambda: alive() and len(faultkit.ready(str(control))) == seeds and
                faultkit.ready(str(control)), "both trials to hold after epoch 1")
            assert len({h["node_id"] for h in held}) == seeds  # one trial per worker node
            victim = held[0]

            def recorded():  # checkpoint on disk and the driver has the result with it
                recs = {r.trial_id: r for v in read_study_trials(study_dir).values()
                        for r in v}
                r = recs.get(victim["trial_id"])
                return alive() and r is not None and r.epoch == 1 and any(
                    n.startswith("checkpoint_") for n in os.listdir(r.path)) and r

            trial = faultkit.wait_for(recorded, "the victim's epoch-1 checkpoint")
            os.unlink(control / "hold")  # the retry runs straight through
            killed = kill_node(node_of(victim["pid"]))
            assert victim["pid"] in killed
            open(control / "release-all", "w").close()
            rc = p.wait(timeout=600)
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
        out = (tmp_path / "driver.log").read_text()
        assert rc == 0, out[-4000:]
    recs = [r for v in read_study_trials(study_dir).values() for r in v]
    assert len(recs) == seeds and all(r.finished(epochs) for r in recs), out[-4000:]
    assert sorted(r.config["seed"] for r in recs) == list(range(seeds))
    state = json.load(open(os.path.join(study_dir, "study_state.json")))
    assert state["experiments"]["lci_gce_sym0.6__eval"] == {
        "status": "done", "trials": seeds, "finished": seeds, "failed": 0}
    lines = {r.trial_id: r.results() for r in recs}[victim["trial_id"]]
    assert [x["epoch"] for x in lines] == list(range(1, epochs + 1))  # nothing repeated
    assert lines[0]["pid"] == victim["pid"]
    after = [x for x in lines if x["pid"] != victim["pid"]]
    assert [x["epoch"] for x in after] == list(range(2, epochs + 1))  # resumed at epoch 2
    assert trial.path == {r.trial_id: r for r in recs}[victim["trial_id"]].path


REPORT_CONFIG = """
import sys
from ray._raylet import GcsClient
from ray.core.generated.autoscaler_pb2 import ClusterConfig
cfg = ClusterConfig()
group = cfg.node_group_configs.add(name="worker.small", min_count=0, max_count=4)
group.resources["CPU"] = 2
GcsClient(address=sys.argv[1]).report_cluster_config(cfg.SerializeToString())
"""


def test_trial_larger_than_every_node_is_refused_without_an_autoscaler_or_node_type(tmp_path):
    """A plain head (`ray start --head`: its monitor is read-only, though it writes the
    autoscaler status key) is no autoscaling cluster: a trial larger than its node is refused
    at once (exit 2, nothing written) instead of waiting forever. Where the GCS holds the node
    types an autoscaler can add (a reported cluster config), a trial larger than all of them
    is refused too, naming them."""
    spec_path = tmp_path / "big.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "big", "fixed": {"dataset": "digits", "epochs": 1},
        "noise": ["sym:0.6"], "methods": ["lci"], "evaluation": {"seeds": 1},
        "resources": {"cpu": 4, "gpu": 0}}))
    storage = tmp_path / "res"
    with FakeAutoscalingCluster(None, v2=False, head_resources={"CPU": 2}) as head:
        def sweep():
            return subprocess.run([sys.executable, "-m", "lci_study", "sweep", str(spec_path),
                                   "--address", head.address, "--storage", str(storage)],
                                  capture_output=True, text=True, env=head.env, timeout=300,
                                  cwd=tmp_path)

        r = sweep()
        assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
        assert "needs cpu=4 gpu=0, but no node of the cluster has that much (nodes: 2 CPU / " \
               "0 GPU)" in r.stderr, r.stderr[-3000:]
        subprocess.run([sys.executable, "-c", REPORT_CONFIG, head.address], env=head.env,
                       check=True, timeout=120)
        r = sweep()
        assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
        assert "nor any node type its autoscaler can add (worker.small: 2 CPU / 0 GPU)" \
            in r.stderr, r.stderr[-3000:]
    assert not (storage / "big").exists() or not os.listdir(storage / "big")

"""A study on a simulated multi-node cluster (``ray.cluster_utils.Cluster``: a real Ray with
three nodes of two CPUs each): trials of different cells run on different nodes at once."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

import faultkit

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))


def test_trials_of_different_cells_run_on_different_nodes_at_once(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        control = tmp_path / "control"
        os.makedirs(control)
        open(control / "hold", "w").close()
        spec = {"name": "wide",
                "fixed": {"dataset": "digits", "epochs": 2, "eval_train": False},
                "noise": ["sym:0.6"], "methods": ["ce", "gce", "lci"],
                "evaluation": {"seeds": 2}}
        spec_path = tmp_path / "wide.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
        log = open(tmp_path / "driver.log", "w")
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "held_driver.py"), str(control),
                              str(spec_path), "--address", cluster.address, "--storage",
                              str(tmp_path / "res")],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            def six_holding():
                assert p.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
                return len(faultkit.ready(str(control))) == 6

            # all six trials (3 cells x 2 seeds) hold at once: the cluster's 6 CPUs are full
            faultkit.wait_for(six_holding, "six trials to hold at once")
            held = faultkit.ready(str(control))
            open(control / "release-all", "w").close()
            rc = p.wait(timeout=600)
        finally:
            if p.poll() is None:
                p.kill()
            log.close()
        assert rc == 0, (tmp_path / "driver.log").read_text()[-3000:]
        nodes = {r["node_id"] for r in held}
        assert len(nodes) == 3                          # every node ran trials
        # different cells on different nodes at the same moment (all six were holding)
        assert any(x["cell"] != y["cell"] and x["node_id"] != y["node_id"]
                   for x in held for y in held)
        assert len({r["cell"] for r in held}) == 3
    finally:
        cluster.shutdown()

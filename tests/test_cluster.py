"""cluster.yaml under Ray's own validator, and `lci sweep --address` against a head node
started with `ray start --head` (its own Ray, not the session's)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    with open(os.path.join(ROOT, "cluster.yaml")) as fh:
        cfg = yaml.safe_load(fh)
    validate_config(prepare_config(cfg))  # raises on any schema error
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert any("g5" in t["node_config"]["InstanceType"] or "p3" in t["node_config"]["InstanceType"]
               for t in types.values())
    setup = "\n".join(cfg["setup_commands"])
    assert "-e ~/lci-study" in setup and "torch==" in setup
    text = open(os.path.join(ROOT, "cluster.yaml")).read().lower()
    for secret in ("aws_secret_access_key", "aws_access_key_id", "password"):
        assert secret not in text
    assert "0.0.0.0" not in text  # the dashboard is not exposed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _auth_env() -> dict:
    """Environment for the head node and the driver. Recent Ray enables token authentication;
    unless the environment turns it off (RAY_AUTH_MODE=disabled), run the cluster with a
    token of its own, given to both sides (RAY_AUTH_TOKEN wins over ~/.ray/auth_token)."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    if env.get("RAY_AUTH_MODE", "token").lower() != "disabled":
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


@pytest.fixture
def head_node():
    """`ray start --head --block` in its own process group and temp dir; stopped by SIGTERM
    to that process at teardown (not `ray stop`, which kills every Ray process on the
    machine, the test session's own Ray included)."""
    env = _auth_env()
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: socket paths are limited
    log = open(os.path.join(temp_dir, "head.log"), "w")
    proc = subprocess.Popen(
        ["ray", "start", "--head", "--num-cpus=2", f"--port={port}", "--disable-usage-stats",
         "--include-dashboard=false", f"--temp-dir={temp_dir}", "--block"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if "Ray runtime started" in open(log.name).read():
                break
            if proc.poll() is not None:
                pytest.fail("ray start failed:\n" + open(log.name).read()[-3000:])
            time.sleep(0.5)
        else:
            pytest.fail("ray start did not come up:\n" + open(log.name).read()[-3000:])
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp_dir": temp_dir}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
                proc.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_sweep_on_an_existing_head_node(head_node, tmp_path):
    spec = {"name": "onhead",
            "fixed": {"dataset": "digits", "epochs": 2, "batch_size": 128, "eval_train": False},
            "noise": ["sym:0.6"], "methods": ["lci"],
            "search": {"trials": 2}, "evaluation": {"seeds": 1}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "lci_study", "sweep", str(spec_path),
                        "--address", head_node["address"], "--storage", str(tmp_path / "res")],
                       capture_output=True, text=True, env=head_node["env"], timeout=400,
                       cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    sdir = tmp_path / "res" / "onhead"
    state = json.loads((sdir / "study_state.json").read_text())
    assert {k: v["status"] for k, v in state["experiments"].items()} == {
        "lci_gce_sym0.6__search": "done", "lci_gce_sym0.6__eval": "done"}
    # the trials ran on the head node's Ray: their workers' logs are in its session folder
    sessions = [d for d in os.listdir(head_node["temp_dir"]) if d.startswith("session_2")]
    assert sessions
    logs = os.listdir(os.path.join(head_node["temp_dir"], sessions[0], "logs"))
    assert any(f.startswith("worker-") for f in logs)
    assert "lci_gce_sym0.6" in r.stdout and str(sdir) in r.stdout

"""A Ray cluster with Ray's own autoscaler (v1 or v2) and its fake multi-node provider, for
tests, that lives beside other Ray users of the machine.

``ray.cluster_utils.AutoscalingCluster`` does the same but its ``start()`` and ``shutdown()``
run ``ray stop --force``, which ends every Ray process on the machine, and it needs a template
the wheel does not ship (nor the provider defaults it reads). Here the head is started with the environment it sets (fake cluster,
autoscaler v2 switches, a fixed head node id), on a free port and in a temp dir of its own;
the provider launches worker nodes (real raylets, in the autoscaler's process) against that
port. Shutdown kills exactly the processes whose command line names this cluster's temp dir or
GCS address, and checks that none is left.
"""
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
from typing import Dict, List, Optional

FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
HEAD_TYPE = "ray.head.default"
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def auth_env(base: Optional[dict] = None) -> dict:
    """Environment for a head node and its drivers. Recent Ray enables token authentication;
    unless the environment turns it off (RAY_AUTH_MODE=disabled), the cluster gets a token of
    its own, given to both sides (RAY_AUTH_TOKEN wins over ~/.ray/auth_token)."""
    env = dict(os.environ if base is None else base)
    env.pop("RAY_ADDRESS", None)
    if env.get("RAY_AUTH_MODE", "token").lower() != "disabled":
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    return env


def ray_bin() -> str:
    """The `ray` of this interpreter's environment (PATH may not have its bin folder)."""
    return os.path.join(os.path.dirname(sys.executable), "ray")


def _node_ip() -> str:
    """The address Ray picks for this machine (a UDP "connect" sends nothing), found without
    importing ray: Ray reads RAY_AUTH_* once, when a test's driver side imports it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("8.8.8.8", 80))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _cmdlines() -> Dict[int, str]:
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                out[int(pid)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return out


class FakeAutoscalingCluster:
    """A head with ``head_resources`` (``{"CPU": 0}``: no trial on the head) and the autoscaler
    of Ray's fake multi-node provider, which launches the ``worker_types`` on demand.
    ``worker_types=None``: a plain head (``ray start --head``, whose monitor is read-only)."""

    def __init__(self, worker_types: Optional[Dict[str, dict]], *, v2: bool,
                 head_resources: Optional[Dict[str, float]] = None,
                 idle_timeout_minutes: float = 5.0, env: Optional[dict] = None):
        self.v2 = v2
        self.port = free_port()
        self.ip = _node_ip()
        self.address = f"{self.ip}:{self.port}"
        # short: Ray's socket paths are limited in length
        self.temp_dir = tempfile.mkdtemp(prefix="rayas", dir="/tmp")
        self.env = auth_env(env)
        self.env.update({"AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1",
                         "RAY_USAGE_STATS_ENABLED": "0"})
        # `ray start` turns v2 on for KubeRay-like environments only; be explicit both ways
        self.env["RAY_enable_autoscaler_v2"] = "1" if v2 else "0"
        if v2:
            # what `ray up` gives a v2 head (autoscaler/_private/commands.py), the id the fake
            # provider knows the head by
            self.env.update({"RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                             "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
                             "RAY_NODE_TYPE_NAME": HEAD_TYPE})
        head = dict(head_resources if head_resources is not None else {"CPU": 0})
        self.head_cpus = head.pop("CPU", 0)
        types = {HEAD_TYPE: {"resources": dict(head, CPU=self.head_cpus), "node_config": {},
                             "max_workers": 0}}
        types.update(worker_types or {})
        # "external" with the fake provider's class is the provider "fake_multinode" is, less
        # the defaults file that type reads and the wheel lacks (fake_multi_node/example.yaml)
        provider = {"type": "external", "module": FAKE_PROVIDER, "use_node_id_as_ip": True,
                    "disable_node_updaters": True, "disable_launch_config_check": True,
                    # the provider starts workers against this GCS (its default is :6379)
                    "gcs_address": self.address}
        if v2:
            provider.update({"launch_multiple": True, "head_node_id": FAKE_HEAD_NODE_ID})
        self.config = {
            "cluster_name": "lci-fake", "max_workers": sum(
                int(t.get("max_workers", 0)) for t in (worker_types or {}).values()),
            "provider": provider, "available_node_types": types, "head_node_type": HEAD_TYPE,
            "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": idle_timeout_minutes,
            "docker": {}, "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
            "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": []}
        self.config_path = (os.path.join(self.temp_dir, "autoscaling.json")
                            if worker_types is not None else None)
        self.log_path = os.path.join(self.temp_dir, "start.log")

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeAutoscalingCluster":
        cmd = [ray_bin(), "start", "--head", f"--port={self.port}",
               f"--num-cpus={self.head_cpus:g}", "--num-gpus=0", f"--temp-dir={self.temp_dir}",
               "--include-dashboard=false", "--disable-usage-stats"]
        if self.config_path:
            with open(self.config_path, "w") as fh:
                json.dump(self.config, fh)
            cmd.append(f"--autoscaling-config={self.config_path}")
        with open(self.log_path, "w") as log:
            r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                               timeout=300)
        if r.returncode != 0:
            text = open(self.log_path).read()[-3000:]
            self.shutdown()
            raise RuntimeError(f"ray start failed ({r.returncode}):\n{text}")
        if self.config_path:  # up = its autoscaler has reported once (as after `ray up`)
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "ready",
                                self.address, "1" if self.v2 else "0"], env=self.env,
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                self.shutdown()
                raise RuntimeError(f"the autoscaler did not report:\n{r.stderr[-3000:]}")
        return self

    def processes(self) -> List[int]:
        """This cluster's processes: every Ray process names its temp dir (or session dir
        under it) or the GCS address on its command line."""
        me = os.getpid()
        keys = (self.temp_dir, f"{self.ip}:{self.port}", f"--gcs-address={self.address}",
                f"--gcs_server_port={self.port}")
        return [pid for pid, cmd in _cmdlines().items()
                if pid != me and any(k in cmd for k in keys)]

    def shutdown(self) -> None:
        """SIGKILL this cluster's processes (no `ray stop`: other Ray users live on this
        machine) until none is left; the temp dir goes last."""
        import faultkit

        def gone() -> bool:
            pids = self.processes()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return not pids

        # the event: none of its processes left (the limit only turns a hang into a failure)
        faultkit.wait_for(gone, f"the processes of the cluster at {self.address} to end",
                          limit_s=60, poll_s=0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.shutdown()

    # ------------------------------------------------------------------------ observing
    def session_dir(self) -> str:
        return os.path.join(self.temp_dir, "session_latest")

    def logs(self, prefix: str) -> str:
        d = os.path.join(self.session_dir(), "logs")
        out = []
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name.startswith(prefix):
                with open(os.path.join(d, name), errors="replace") as fh:
                    out.append(fh.read())
        return "\n".join(out)

    # ------------------------------------------------------------------------ watching
    def watch(self, out: str) -> "Watcher":
        """Record the cluster as its autoscaler sees it (:func:`watch_main`) in ``out``."""
        return Watcher(self, out)


class Watcher:
    """``python tests/fakecluster.py watch ADDRESS OUT STOP`` in a process of its own (this
    one may have imported Ray under other auth settings): one JSON line per change of the
    worker nodes or of the pending placement-group bundles, until STOP exists."""

    def __init__(self, cluster: FakeAutoscalingCluster, out: str):
        self.out, self.stop_file = out, out + ".stop"
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "watch",
                                      cluster.address, out, self.stop_file], env=cluster.env)

    def stop(self) -> List[dict]:
        open(self.stop_file, "w").close()
        try:
            self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.lines()

    def lines(self) -> List[dict]:
        if not os.path.exists(self.out):
            return []
        with open(self.out) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]


def watch_main(address: str, out: str, stop: str) -> int:
    """Poll the GCS's resource state (what autoscaler v2 reads; v1 reads the same load):
    ``workers`` (every worker node ever registered, dead ones too), ``alive`` and ``pending``
    (bundles of placement groups waiting for resources, i.e. the trials' demand)."""
    from ray._raylet import GcsClient
    from ray.autoscaler.v2.sdk import get_cluster_resource_state
    from ray.core.generated.autoscaler_pb2 import NodeStatus

    gcs = GcsClient(address=address)
    last = None
    with open(out, "a") as fh:
        while True:
            done = os.path.exists(stop)
            state = get_cluster_resource_state(gcs)
            workers = {n.node_id.hex(): n.status != NodeStatus.DEAD for n in state.node_states
                       if "node:__internal_head__" not in n.total_resources}
            now = {"workers": len(workers), "alive": sum(workers.values()),
                   "pending": sum(len(g.requests) for g in state.pending_gang_resource_requests)}
            if now != last or done:
                fh.write(json.dumps({"t": time.time(), **now, "final": done}) + "\n")
                fh.flush()
                last = now
            if done:
                return 0
            time.sleep(0.05)


def ready_main(address: str, v2: str) -> int:
    """Wait for the autoscaler's first report: v1 its status key, v2 its state in the GCS."""
    import ray
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.autoscaler.v2.sdk import get_cluster_status
    from ray.experimental.internal_kv import _internal_kv_get

    ray.init(address=address, logging_level="ERROR")

    def reported():
        if v2 == "1":
            return get_cluster_status(address).stats.autoscaler_version not in ("", "0")
        return _internal_kv_get(DEBUG_AUTOSCALING_STATUS) is not None

    while not reported():
        time.sleep(0.1)
    return 0


def node_of(pid: int) -> int:
    """The raylet a Ray worker process belongs to (its parent)."""
    with open(f"/proc/{pid}/stat") as fh:
        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{ppid}/cmdline", "rb") as fh:
        assert b"raylet" in fh.read(), f"the parent of {pid} is no raylet"
    return ppid


def kill_node(raylet_pid: int) -> List[int]:
    """Take a node away as a spot reclaim does: SIGKILL its raylet and every process under
    it (the trials' workers, the node's agents) at once. Returns the pids killed."""
    children: Dict[int, List[int]] = {}
    for pid in _cmdlines():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [raylet_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    for pid in tree:
        try:
            os.kill(pid, signal.SIGSTOP)  # none of them acts on the others' deaths first
        except ProcessLookupError:
            pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return tree


if __name__ == "__main__":
    if sys.argv[1] == "watch":
        sys.exit(watch_main(*sys.argv[2:5]))
    if sys.argv[1] == "ready":
        sys.exit(ready_main(*sys.argv[2:4]))
    sys.exit(f"usage: {sys.argv[0]} watch ADDRESS OUT STOP | ready ADDRESS V2")

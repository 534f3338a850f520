"""cluster.yaml under Ray's own validator, and `lci sweep --address` against a head node
started with `ray start --head` (its own Ray, not the session's)."""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from fakecluster import auth_env, free_port, ray_bin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cluster_cfg() -> dict:
    with open(os.path.join(ROOT, "cluster.yaml")) as fh:
        return yaml.safe_load(fh)


def test_cluster_yaml_passes_rays_validator():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _cluster_cfg()
    validate_config(prepare_config(cfg))  # raises on any schema error
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    text = open(os.path.join(ROOT, "cluster.yaml")).read().lower()
    for secret in ("aws_secret_access_key", "aws_access_key_id", "password"):
        assert secret not in text
    assert "0.0.0.0" not in text  # the dashboard is not exposed


# Instance family -> (GPU, CUDA compute capability) of the AWS GPU instances. A GPU worker
# type in cluster.yaml whose family is not here fails the test: add it with its GPU.
AWS_GPU_FAMILIES = {
    "p3": ("V100", (7, 0)), "p3dn": ("V100", (7, 0)),
    "g4dn": ("T4", (7, 5)),
    "g5": ("A10G", (8, 6)),
    "g6": ("L4", (8, 9)), "gr6": ("L4", (8, 9)), "g6e": ("L40S", (8, 9)),
    "p4d": ("A100", (8, 0)), "p4de": ("A100", (8, 0)),
    "p5": ("H100", (9, 0)), "p5e": ("H200", (9, 0)), "p5en": ("H200", (9, 0)),
    "p6-b200": ("B200", (10, 0)),
}
GPU_FAMILY = re.compile(r"^(g\d|gr\d|p\d)")


def _torch_cuda_archs():
    """The CUDA architectures the installed torch build has code for ('sm_86', 'compute_90')."""
    import torch

    flags = ""
    if hasattr(torch._C, "_cuda_getArchFlags"):
        flags = torch._C._cuda_getArchFlags() or ""
    archs = flags.split() or list(torch.cuda.get_arch_list())
    if not archs:
        pytest.skip("this torch build has no CUDA kernels (CPU-only build)")
    return archs


def arch_supported(cc, archs) -> bool:
    """Can a GPU of compute capability ``cc`` run this build? A cubin for sm_XY runs on
    devices X.Z with Z >= Y (same major); PTX (compute_XY) is JIT-compiled for any X.Y or
    newer; arch-specific cubins (sm_90a) run on exactly that device."""
    for a in archs:
        m = re.fullmatch(r"(sm|compute)_(\d+)(\d)([a-z]?)", a)
        if not m:
            continue
        kind, major, minor, suffix = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if kind == "compute" and (major, minor) <= cc:
            return True
        if kind == "sm" and major == cc[0] and (minor == cc[1] if suffix else minor <= cc[1]):
            return True
    return False


def test_arch_check_against_known_builds():
    cu130 = "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120".split()
    assert not arch_supported((7, 0), cu130)          # V100: no kernels (the p3 trap)
    assert arch_supported((8, 9), cu130)              # L4/L40S run the sm_86 cubins
    assert arch_supported((9, 0), cu130) and arch_supported((7, 5), cu130)
    assert arch_supported((9, 0), ["sm_90a"]) and not arch_supported((10, 0), ["sm_90a"])
    assert arch_supported((7, 0), ["sm_80", "compute_70"])  # PTX covers older devices


def test_every_gpu_worker_type_is_supported_by_the_pinned_torch():
    """Each GPU worker type's accelerator has kernels in the installed torch build (the one
    the Dockerfile pins): no V100 (sm_70) with the CUDA 13 build, for instance."""
    import torch

    archs = _torch_cuda_archs()
    cfg = _cluster_cfg()
    gpu_types = []
    for name, t in cfg["available_node_types"].items():
        family = t["node_config"]["InstanceType"].split(".")[0]
        if not GPU_FAMILY.match(family):
            continue
        assert family in AWS_GPU_FAMILIES, f"{name}: add {family} to AWS_GPU_FAMILIES"
        gpu, cc = AWS_GPU_FAMILIES[family]
        assert arch_supported(cc, archs), \
            f"{name}: {gpu} (sm_{cc[0]}{cc[1]}) has no kernels in torch {torch.__version__} ({archs})"
        gpu_types.append(name)
    assert gpu_types, "cluster.yaml has no GPU worker type"


def _dockerfile_args() -> dict:
    with open(os.path.join(ROOT, "Dockerfile")) as fh:
        return dict(re.findall(r"^ARG (\w+)=(\S+)$", fh.read(), flags=re.M))


def _image_tag() -> str:
    """The image tag the Dockerfile's pins make: <project version>-torch<T>-ray<R>."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    a = _dockerfile_args()
    return f"{version}-torch{a['TORCH_VERSION']}-ray{a['RAY_VERSION']}"


def test_dockerfile_pins_the_tested_versions():
    """The image holds the torch, torchvision and Ray this checkout is tested with."""
    import ray
    import torch
    import torchvision

    a = _dockerfile_args()
    assert a["TORCH_VERSION"] == torch.__version__.split("+")[0]
    assert a["TORCHVISION_VERSION"] == torchvision.__version__.split("+")[0]
    assert a["RAY_VERSION"] == ray.__version__
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    for src in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert os.path.exists(os.path.join(ROOT, src)), src
    ignored = open(os.path.join(ROOT, ".dockerignore")).read().split()
    assert {".git", ".venv", "results", "runs"} <= set(ignored)


def test_cluster_image_and_amis_are_pinned_and_head_takes_no_trials():
    cfg = _cluster_cfg()
    image = cfg["docker"]["image"]
    name, _, tag = image.rpartition(":")
    assert name and tag == _image_tag(), (image, _image_tag())
    for key in ("head_image", "worker_image"):
        assert key not in cfg["docker"]  # one image everywhere
    # workers pull the image: nothing pip-installs torch or the project at node start
    commands = "\n".join(cfg.get(k) and "\n".join(cfg[k]) or "" for k in
                         ("initialization_commands", "setup_commands", "head_setup_commands",
                          "worker_setup_commands"))
    assert "pip install" not in commands
    for node_name, t in cfg["available_node_types"].items():
        ami = t["node_config"].get("ImageId", "")
        # never Ray's built-in default (an Ubuntu 18.04 DLAMI with CUDA 11.2)
        assert ami.lower() not in ("", "latest_dlami"), node_name
        assert re.fullmatch(r"ami-[0-9a-f]{8,17}", ami) or re.fullmatch(
            r"resolve:ssm:/aws/service/deeplearning/ami/x86_64/"
            r"base-oss-nvidia-driver-gpu-ubuntu-2[24]\.04/(latest|\d+)/ami-id", ami), ami
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert not GPU_FAMILY.match(head["node_config"]["InstanceType"])
    # token authentication reaches every Ray process in the containers
    assert "--env RAY_AUTH_MODE=token" in cfg["docker"]["run_options"]
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


# ---------------------------------------------------------------------------- KubeRay
KUBERAY_VERSION = "v1.7.0"


def _crd_dir() -> str:
    """LCI_KUBERAY_CRDS, relative to the checkout (.ci/run points it at the CRDs kept beside
    the clone when they are there)."""
    d = os.environ.get("LCI_KUBERAY_CRDS")
    return os.path.join(ROOT, d) if d else os.path.join(
        ROOT, "tests", "data", f"kuberay-{KUBERAY_VERSION}")


def _strict(schema):
    """The CRD's structural schema as the API server applies it with strict field validation
    (kubectl's default): objects with listed properties accept no other field."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.lru_cache(maxsize=None)
def _crd_schema(kind: str):
    files = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
    path = os.path.join(_crd_dir(), files[kind])
    if not os.path.isfile(path):
        pytest.skip(f"KubeRay {KUBERAY_VERSION} CRD {files[kind]} not found in {_crd_dir()} "
                    "(see tests/data/README.md)")
    with open(path) as fh:  # about 1 MB of YAML: the C loader where PyYAML has it
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _strict(version["schema"]["openAPIV3Schema"])


def _manifests():
    d = os.path.join(ROOT, "deploy", "kuberay")
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(d, name)) as fh:
                out += [(name, doc) for doc in yaml.safe_load_all(fh) if doc]
    return out


def _cluster_spec(doc):
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def test_kuberay_manifests_match_the_crd_schema():
    import jsonschema

    docs = _manifests()
    assert {d["kind"] for _, d in docs} >= {"RayJob"}
    for name, doc in docs:
        assert doc["apiVersion"] == "ray.io/v1", name
        schema = _crd_schema(doc["kind"])
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{name}: " + "; ".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])


def test_crd_check_catches_a_misspelt_field():
    import copy

    import jsonschema

    name, doc = next((n, d) for n, d in _manifests() if d["kind"] == "RayJob")
    bad = copy.deepcopy(doc)
    bad["spec"]["shutdownAfterJobFinish"] = bad["spec"].pop("shutdownAfterJobFinishes")
    assert list(jsonschema.Draft7Validator(_crd_schema("RayJob")).iter_errors(bad))
    bad = copy.deepcopy(doc)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    assert list(jsonschema.Draft7Validator(_crd_schema("RayJob")).iter_errors(bad))


def test_kuberay_pods_use_the_pinned_image_and_head_takes_no_trials():
    import ray

    image = _cluster_cfg()["docker"]["image"]
    for name, doc in _manifests():
        spec = _cluster_spec(doc)
        assert spec["rayVersion"] == ray.__version__, name
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", name
        assert spec.get("authOptions", {}).get("mode") == "token", name
        pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in
                                                      spec["workerGroupSpecs"]]
        for pod in pods:
            for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
                assert c["image"] == image, (name, c["name"])
        gpus = [g for g in spec["workerGroupSpecs"]
                if g["template"]["spec"]["containers"][0]["resources"]["limits"].get(
                    "nvidia.com/gpu")]
        assert gpus, f"{name}: no GPU worker group"
        if doc["kind"] == "RayJob":
            assert doc["spec"]["shutdownAfterJobFinishes"] is True, name


# What a pod can request on the 4-vCPU, 16-GiB GPU nodes the README names, from the kubelet
# reserves of EKS (CPU 80m for 4 cores; memory 255 MiB + 11 MiB per pod (58 on a g5.xlarge)
# + 100 MiB eviction) and GKE (CPU 80m; memory 25% of the first 4 GiB, 20% of the next 4,
# 10% of the next 8, + 100 MiB), less a margin for the node's daemonsets (CNI, kube-proxy,
# NVIDIA device plugin, logging): 0.4 CPU and 0.6 GiB.
GPU_NODE_BUDGET = {
    "g5.xlarge": (3.92 - 0.4, 14.3 - 0.6),       # EKS, 1x A10G
    "g6.xlarge": (3.92 - 0.4, 14.3 - 0.6),       # EKS, 1x L4
    "g2-standard-4": (3.92 - 0.4, 13.0 - 0.6),   # GKE, 1x L4
}


def _quantity(q) -> float:
    """A Kubernetes quantity as a number: CPUs, or GiB for memory."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2 ** -20, "Mi": 2 ** -10, "Gi": 1.0, "Ti": 2 ** 10}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[:-len(suffix)]) * factor
    return float(q)


def test_kuberay_gpu_workers_fit_the_named_nodes_and_take_two_preset_trials():
    """A GPU worker pod requests no more than a 4-vCPU GPU node can give (a request of 4 CPUs
    never schedules there), while Ray still counts enough CPUs for two trials of the presets
    per GPU; the head advertises no GPU."""
    from study.spec import load_spec

    preset = load_spec("table1_cifar10")
    readme = open(os.path.join(ROOT, "README.md")).read()
    for node in GPU_NODE_BUDGET:
        assert node in readme, f"README names no {node}"
    for name, doc in _manifests():
        spec = _cluster_spec(doc)
        assert spec["headGroupSpec"]["rayStartParams"].get("num-gpus") == "0", name
        for group in spec["workerGroupSpecs"]:
            res = group["template"]["spec"]["containers"][0]["resources"]
            gpus = int(res["limits"].get("nvidia.com/gpu", 0))
            if not gpus:
                continue
            cpu, mem = _quantity(res["requests"]["cpu"]), _quantity(res["requests"]["memory"])
            for node, (cpu_max, mem_max) in GPU_NODE_BUDGET.items():
                assert cpu <= cpu_max and mem <= mem_max, (name, node, cpu, mem)
            ray_cpus = float(group["rayStartParams"].get("num-cpus") or cpu)
            per_gpu = min(int(ray_cpus // preset.cpu), int(gpus // preset.gpu))
            assert per_gpu >= 2, (name, ray_cpus, preset.cpu, preset.gpu)


def test_rayjob_has_a_cost_cap_and_a_small_submitter():
    image = _cluster_cfg()["docker"]["image"]
    for name, doc in _manifests():
        if doc["kind"] != "RayJob":
            continue
        deadline = doc["spec"].get("activeDeadlineSeconds")
        assert isinstance(deadline, int) and 0 < deadline <= 7 * 24 * 3600, (name, deadline)
        pod = doc["spec"]["submitterPodTemplate"]["spec"]
        assert pod["restartPolicy"] == "Never"
        submitter = pod["containers"][0]   # KubeRay gives the first container the command
        assert submitter["image"] == image and "command" not in submitter
        req, lim = submitter["resources"]["requests"], submitter["resources"]["limits"]
        assert _quantity(req["cpu"]) <= 0.25 and _quantity(req["memory"]) <= 0.5, req
        assert _quantity(lim["memory"]) <= 1.0, lim


def test_image_exposes_the_gpus_to_the_nvidia_runtime():
    """`ray up` runs GPU workers with --runtime=nvidia, which mounts the GPUs and the driver
    only into containers whose environment asks for them (CUDA base images do; the slim
    Python image this one starts from does not)."""
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    env = dict(re.findall(r"(NVIDIA_\w+)=(\S+)", text))
    assert env.get("NVIDIA_VISIBLE_DEVICES") == "all", env
    assert "compute" in env.get("NVIDIA_DRIVER_CAPABILITIES", "").split(","), env


def _sweep_args(entrypoint: str):
    """The `lci sweep` arguments of an entrypoint, less --address and --resume."""
    import shlex

    argv = shlex.split(entrypoint)
    assert argv[:2] == ["lci", "sweep"], entrypoint
    out, i = [], 2
    while i < len(argv):
        if argv[i] == "--address":
            i += 2
            continue
        if argv[i].startswith("--address=") or argv[i] == "--resume":
            i += 1
            continue
        out.append(argv[i])
        i += 1
    return argv, out


def test_rayjob_entrypoints_are_commands_lci_sweep_accepts(tmp_path):
    jobs = [(n, d) for n, d in _manifests() if d["kind"] == "RayJob"]
    assert jobs
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name, doc in jobs:
        argv, args = _sweep_args(doc["spec"]["entrypoint"])
        assert "--address" in argv and argv[argv.index("--address") + 1] == "auto", name
        storage = args[args.index("--storage") + 1]
        # shared storage every pod reaches (the head pod's disk is gone with the cluster)
        assert storage.startswith(("s3://", "gs://")) or storage.startswith("/mnt/"), storage
        r = subprocess.run([sys.executable, "-m", "lci_study", "sweep", *args, "--dry-run"],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert r.returncode == 0, (name, r.stdout + r.stderr)
        assert f"-> {storage.rstrip('/')}/" in r.stdout, r.stdout[:500]
        assert not os.listdir(tmp_path)  # a dry run writes nothing


@pytest.fixture
def head_node():
    """`ray start --head --block` in its own process group and temp dir; stopped by SIGTERM
    to that process at teardown (not `ray stop`, which kills every Ray process on the
    machine, the test session's own Ray included)."""
    env = auth_env()
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: socket paths are limited
    log = open(os.path.join(temp_dir, "head.log"), "w")
    proc = subprocess.Popen(
        [ray_bin(), "start", "--head", "--num-cpus=2", f"--port={port}", "--disable-usage-stats",
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

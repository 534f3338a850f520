# Container image of lci-study for Ray clusters: the cluster launcher (cluster.yaml, `docker:`)
# and KubeRay (deploy/kuberay/) run every node in it. It holds the pinned torch, torchvision,
# Ray and this project, so a node starts by pulling one image instead of pip-installing
# several GB of CUDA libraries.
#
#   docker build -t YOUR-REGISTRY/lci-study:0.4.0-torch2.14.1-ray2.60.0 .
#   docker push YOUR-REGISTRY/lci-study:0.4.0-torch2.14.1-ray2.60.0
#
# The tag names the pinned versions; cluster.yaml and deploy/kuberay/*.yaml use the same one
# (tests/test_cluster.py checks that they agree with each other and with this file).
#
# GPUs: torch's CUDA 13.0 build brings its CUDA libraries as pip packages; the NVIDIA driver
# (580 or newer) comes from the host through the NVIDIA container runtime. Its kernels cover
# compute capability 7.5 and newer (T4, A10G, L4, L40S, A100, H100, B200), not V100.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG RAY_VERSION=2.60.0
# PyTorch's own wheel index for the CUDA 13.0 build (the build this project is tested with)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

# NVIDIA_*: the NVIDIA container runtime (which `ray up` adds with --runtime=nvidia on GPU
# hosts) exposes the GPUs and the CUDA driver libraries only to containers that ask for them;
# CUDA base images set these, python:3.11-slim does not (without them a GPU worker's torch
# sees no GPU while Ray still advertises one). Kubernetes' device plugin narrows
# NVIDIA_VISIBLE_DEVICES to the GPUs a pod was given; a CPU host ignores both.
ENV PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

# openssh-client + rsync: the cluster launcher's autoscaler (inside the head's container)
# starts and updates workers over SSH; wget: KubeRay's health probes; procps: `ray stop`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client rsync wget procps ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# the heavy, rarely changing layer first: a code change rebuilds only the last layers
RUN pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
 && pip install "ray[default,tune]==${RAY_VERSION}" boto3

WORKDIR /opt/lci-study
COPY pyproject.toml README.md ./
COPY lci lci
COPY trainables trainables
COPY study study
COPY analysis analysis
# the project (not editable) with MLflow tracking; torch is already there and satisfies it
RUN pip install ".[mlflow]" \
 && python -c "import lci, study, trainables, ray, torch; print('torch', torch.__version__, 'ray', ray.__version__)"

WORKDIR /root
CMD ["bash"]

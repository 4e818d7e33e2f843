"""The layout (issue 20 point 3): what may import what, and importing does nothing.

``tasks`` is what the web tier and the miners both run, so it imports neither; the
web tier and the miners never import each other; the chat service is the web tier's,
except for the one miner engine that classifies with it. Importing ``tasks``,
``celeryconfig`` or ``miners`` reads no environment and builds no Celery app, so a
process decides when its settings are read (``Settings.from_env``) and which app it
runs. ``scripts/``, ``bench/`` and ``tests/`` may import anything: not checked.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import tasks
from tests.conftest import ROOT

PACKAGES = ("tasks", "web", "miners", "chat_service")
FIRST_PARTY = {*PACKAGES, "celeryconfig", "scripts", "bench", "tests"}
# Every import from one first-party package into another is one of these.
ALLOWED = {
    ("web", "tasks"),
    ("web", "chat_service"),
    ("miners", "tasks"),
    ("chat_service", "tasks"),
    ("celeryconfig", "tasks"),
    ("miners", "chat_service"),
}
# ... and these edges come from this one file only.
ONLY_FROM = {("miners", "chat_service"): "miners/engines/lexical.py"}


@dataclass(frozen=True)
class Import:
    path: str  # the importing file, relative to the repository
    line: int
    module: str  # the importing module
    target: str  # the module imported
    top_level: bool  # run when the module is imported (not inside a function)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def product_files() -> dict[str, Path]:
    files = {module_of(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    return {**files, "celeryconfig": ROOT / "celeryconfig.py"}


class Imports(ast.NodeVisitor):
    """Every import statement of one file, and whether it runs at import time."""

    def __init__(self, path: Path, module: str, known: set[str]) -> None:
        self.path, self.module, self.known = path, module, known
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            parent = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{parent}.{base}" if base else parent
        for alias in node.names:  # ``from tasks import metrics`` imports tasks.metrics
            name = f"{base}.{alias.name}"
            self._add(node, name if name in self.known else base)

    def _add(self, node: ast.stmt, target: str) -> None:
        where = str(self.path.relative_to(ROOT))
        self.found.append(Import(where, node.lineno, self.module, target, self.depth == 0))


@cache
def all_imports() -> tuple[Import, ...]:
    files = product_files()
    found: list[Import] = []
    for module, path in files.items():
        visitor = Imports(path, module, set(files))
        visitor.visit(ast.parse(path.read_text(), str(path)))
        found += visitor.found
    return tuple(found)


def package(module: str) -> str:
    return module.split(".")[0]


def cross_package() -> list[Import]:
    return [
        i
        for i in all_imports()
        if package(i.target) in FIRST_PARTY and package(i.target) != package(i.module)
    ]


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(edges).static_order())
    except CycleError as exc:
        cycle: list[str] = exc.args[1]
        return cycle
    return None


def run_python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- the import graph ----------------------------------------------------------------


def test_the_graph_sees_imports_at_module_and_function_level():
    """The checks below are only as good as the parse: it finds both kinds."""
    found = {(i.path, i.target, i.top_level) for i in all_imports()}
    assert ("miners/engines/lexical.py", "chat_service.intents", True) in found
    assert ("miners/engines/__init__.py", "miners.engines.echo", False) in found
    assert ("tasks/keys.py", "tasks.broker.layout", True) in found


def test_packages_import_each_other_only_as_the_layout_allows():
    wrong = [
        str(i)
        for i in cross_package()
        if (package(i.module), package(i.target)) not in ALLOWED
        or ONLY_FROM.get((package(i.module), package(i.target)), i.path) != i.path
    ]
    assert not wrong, "imports across packages the layout does not allow:\n" + "\n".join(wrong)


def test_no_cycle_between_packages():
    edges: dict[str, set[str]] = {}
    for i in cross_package():
        edges.setdefault(package(i.module), set()).add(package(i.target))
    assert cycle_in(edges) is None, f"packages import each other in a cycle: {cycle_in(edges)}"


def test_no_cycle_between_the_modules_of_tasks_at_import_time():
    edges: dict[str, set[str]] = {}
    for i in all_imports():
        if i.top_level and package(i.module) == "tasks" and package(i.target) == "tasks":
            edges.setdefault(i.module, set()).add(i.target)
    assert cycle_in(edges) is None, f"tasks modules import each other: {cycle_in(edges)}"


FLEET = ["web.fleet", *(f"web.fleet.{m.name}" for m in pkgutil.iter_modules([ROOT / "web/fleet"]))]
FLASK_LOADED = "import sys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'flask'))"
# ``web/__init__.py`` (the Flask app factory) left out: only web.fleet and what it imports.
WITHOUT_WEB_INIT = (
    "import sys, types; web = types.ModuleType('web'); web.__path__ = ['web']; "
    "sys.modules['web'] = web; "
)


@pytest.mark.parametrize("name", FLEET)
def test_web_fleet_imports_no_flask(name):
    """web.fleet is the web process's work without Flask (usable from the MQTT
    gateway, the reaper, scripts): neither it nor anything it imports loads Flask."""
    loaded = run_python(f"{WITHOUT_WEB_INIT}import {name}; {FLASK_LOADED}")
    assert loaded.strip() == "[]", f"importing {name} loads Flask: {loaded}"


def test_importing_a_web_fleet_module_loads_no_flask():
    loaded = run_python(f"import web.fleet.db; {FLASK_LOADED}")
    assert loaded.strip() == "[]", f"importing web.fleet.db loads Flask: {loaded}"


# -- import-time side effects --------------------------------------------------------

# Run in a fresh interpreter: os.environ replaced by one that notes each read (and
# write) made while one of our modules is executing at import time, then the module
# imported. Reads by a third-party module's own import (celery, kombu, ...) are that
# library's and not counted; reads by what our module calls at import time are.
PROBE = r"""
import importlib, json, os, sys

OURS = tuple(os.path.join(os.getcwd(), p) for p in
             ("tasks" + os.sep, "web" + os.sep, "miners" + os.sep, "chat_service" + os.sep,
              "celeryconfig.py"))
noted = []


class Recording(os._Environ):
    def _note(self, what):
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_name != "<module>":
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(OURS):
            where = os.path.relpath(frame.f_code.co_filename)
            noted.append(f"{where}:{frame.f_lineno}: {what}")

    def __getitem__(self, key):
        self._note(f"reads {key}")
        return super().__getitem__(key)

    def __iter__(self):
        self._note("lists the environment")
        return super().__iter__()

    def __setitem__(self, key, value):
        self._note(f"sets {key}")
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self._note(f"removes {key}")
        super().__delitem__(key)


recording = Recording.__new__(Recording)
recording.__dict__.update(os.environ.__dict__)
os.environ = recording
importlib.import_module(sys.argv[1])
celery_loaded = "celery" in sys.modules
from celery import _state

apps = [app.main for app in _state._apps] + ([] if _state.default_app is None else ["default"])
print(json.dumps({"env": noted, "apps": apps, "celery": celery_loaded}))
"""


def probe(name: str) -> dict[str, object]:
    found: dict[str, object] = json.loads(run_python(PROBE, name).splitlines()[-1])
    return found


TASKS = sorted(m.name for m in pkgutil.walk_packages(tasks.__path__, "tasks."))


@pytest.mark.parametrize("name", ["celeryconfig", "miners", "tasks", *TASKS])
def test_importing_reads_no_environment_and_builds_no_app(name):
    found = probe(name)
    assert found["env"] == [], f"importing {name} touches the environment: {found['env']}"
    assert found["apps"] == [], f"importing {name} builds a Celery app: {found['apps']}"


def test_the_probe_sees_an_environment_read_and_an_app():
    """``miners.celery`` builds the app from the environment on purpose (Celery's
    ``-A miners``): the probe must see both, or the test above proves nothing."""
    found = probe("miners.celery")
    assert any("MIA_" in line for line in found["env"]), found  # type: ignore[attr-defined]
    assert found["apps"] == ["miners"], found


def test_settings_import_without_celery():
    """Reading settings (a script, the MQTT gateway) does not pay for Celery."""
    assert probe("tasks.settings")["celery"] is False

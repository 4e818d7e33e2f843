"""web/, tasks/, chat_service/ import and build the app with torch, vllm, llama_cpp blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

PROGRAM = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {"torch", "vllm", "llama_cpp"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name}")
            return None

    sys.meta_path.insert(0, Block())
    import chat_service, tasks, web, celeryconfig
    import web.fleet.auth, web.fleet.client, web.fleet.db, web.fleet.registry, web.fleet.results
    from tasks.settings import Settings
    web.create_app(Settings(database_url="sqlite://"))
    loaded = BLOCKED & {m.split(".")[0] for m in sys.modules}
    assert not loaded, loaded
    print("clean")
    """
)


def test_gateway_packages_never_import_torch_vllm_or_llama_cpp():
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "clean"


def test_the_blocker_really_blocks():
    probe = PROGRAM.replace("import chat_service, tasks, web, celeryconfig", "import llama_cpp")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "blocked import of llama_cpp" in result.stderr

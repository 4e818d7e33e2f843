"""The vLLM engine's configuration, without vLLM: which model it loads (a directory or a
hub id, offline only when told), the engine arguments built from the settings, and a
model that cannot load reported by name with vLLM's own message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from miners.engines import EngineUnavailable, load_engine, vllm_model
from miners.engines import vllm as engine
from miners.engines.vllm_model import VllmSettings, engine_args, load, resolve_model
from tasks.settings import Settings

HUB_ID = "Qwen/Qwen2.5-7B-Instruct-AWQ"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


@pytest.fixture(autouse=True)
def no_hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def test_a_directory_is_loaded_from_its_path_with_home_expanded(model_dir, monkeypatch):
    assert resolve_model(str(model_dir)) == str(model_dir)
    monkeypatch.setenv("HOME", str(model_dir.parent))
    assert resolve_model(f"~/{model_dir.name}") == str(model_dir)
    with pytest.raises(EngineUnavailable, match="no model at"):
        resolve_model(str(model_dir / "missing"))


def test_a_hub_id_is_passed_on_online_and_a_bad_one_is_refused():
    assert resolve_model(HUB_ID) == HUB_ID
    for bad in ("qwen", "a/b/c", "org/-name", "org--x/name", "org/na me", "/"):
        with pytest.raises(EngineUnavailable):
            resolve_model(bad)


def test_offline_a_hub_id_needs_the_local_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineUnavailable, match=f"model {HUB_ID} .*HF_HUB_OFFLINE"):
        resolve_model(HUB_ID)
    repo = tmp_path / "hf/hub/models--Qwen--Qwen2.5-7B-Instruct-AWQ"
    (repo / "snapshots/abc").mkdir(parents=True)
    (repo / "snapshots/abc/config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("abc")  # the cache's layout: main -> that snapshot
    assert resolve_model(HUB_ID) == HUB_ID


def test_the_offline_setting_turns_hf_hub_offline_on(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored (unset) after the test
    assert not vllm_model.offline()
    with pytest.raises(EngineUnavailable, match="HF_HUB_OFFLINE is set"):
        load(VllmSettings(model=HUB_ID, offline=True), lambda args: None)
    assert vllm_model.offline()


def test_engine_args_carry_every_setting_through(model_dir):
    settings = Settings(
        vllm_model=str(model_dir),
        vllm_quantization="awq",
        vllm_tensor_parallel_size=2,
        vllm_max_model_len=8192,
        vllm_dtype="float16",
        vllm_trust_remote_code=1,
        vllm_kv_cache_bytes=1 << 28,
    )
    seen: list[dict[str, Any]] = []

    def fake(args: dict[str, Any]) -> Any:
        seen.append(args)
        raise RuntimeError("stop here")

    with pytest.raises(EngineUnavailable):
        engine.VllmEngine(_vllm_settings(settings), loader=fake)
    (args,) = seen
    assert args["model"] == str(model_dir)
    assert args["quantization"] == "awq"
    assert args["tensor_parallel_size"] == 2
    assert args["max_model_len"] == 8192
    assert args["dtype"] == "float16"
    assert args["trust_remote_code"] is True
    assert args["kv_cache_memory_bytes"] == 1 << 28
    defaults = engine_args(VllmSettings(), "m")
    assert defaults["trust_remote_code"] is False
    assert "quantization" not in defaults and "kv_cache_memory_bytes" not in defaults
    assert (defaults["dtype"], defaults["tensor_parallel_size"]) == ("auto", 1)


def _vllm_settings(settings: Settings) -> VllmSettings:
    """VllmSettings exactly as the miner builds them (start_engine), vLLM left out."""
    captured: list[VllmSettings] = []

    class Capture:
        def __init__(self, vllm_settings: VllmSettings) -> None:
            captured.append(vllm_settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "VllmEngine", Capture)
        from miners.engines import start_engine

        start_engine("vllm", settings)
    return captured[0]


def test_a_model_that_cannot_load_is_named_with_vllms_reason(model_dir):
    def broken(args: dict[str, Any]) -> Any:
        raise ValueError("Unknown quantization method: awq2")

    with pytest.raises(EngineUnavailable) as caught:
        load(VllmSettings(model=str(model_dir), quantization="awq2"), broken)
    message = str(caught.value)
    assert f"could not load model {model_dir}" in message
    assert "ValueError: Unknown quantization method: awq2" in message
    assert isinstance(caught.value.__cause__, ValueError)


def test_the_fallback_reports_the_model_that_could_not_load(model_dir, monkeypatch):
    def broken(args: dict[str, Any]) -> Any:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(vllm_model, "vllm_loader", lambda: broken)
    loaded = load_engine(Settings(engines="vllm,echo", vllm_model=str(model_dir)))
    assert loaded.engine.name == "echo"
    ((name, reason),) = loaded.skipped
    assert name == "vllm"
    assert f"could not load model {model_dir}: RuntimeError: CUDA out of memory" in reason

"""Settings: every ``MIA_*`` environment variable, read once into one typed object.

Each field below is the lower-case name of its variable without the prefix
(``redis_url`` is ``MIA_REDIS_URL``). Fields are grouped by the component that reads
them (a dataclass each); ``Settings`` is all of them in one flat object, read once
per process. docs/configuration.md lists every field, by group, with its default;
``tests/test_docs.py`` keeps the two in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from tasks.errors import ConfigError
from tasks.keys import check_prefix

PREFIX = "MIA_"


@dataclass(frozen=True)
class ConnectionSettings:
    """Redis (or Redis Sentinel), TLS and message signing: every process."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 1.0
    redis_sentinel_master: str = "mymaster"  # the master's name, with a sentinel:// URL
    redis_wait_replicas: int = -1  # -1: 1 with a sentinel:// URL, else 0 (tasks.replication)
    redis_wait_timeout_ms: int = 500
    redis_tls_ca_file: str = ""
    redis_tls_cert_file: str = ""
    redis_tls_key_file: str = ""
    redis_tls_cert_reqs: str = "required"
    sessions_redis_url: str = ""  # sessions, turn locks, rate buckets ('': MIA_REDIS_URL)
    message_signing: int = 0
    signing_key_file: str = ""
    signing_cert_file: str = ""
    signing_cert_store: str = ""
    signing_digest: str = "sha256"
    key_prefix: str = "mia"
    data_dir: str = "var"
    log_format: str = "json"


@dataclass(frozen=True)
class JobSettings:
    """How jobs run and end, read by the web tier and the miners alike."""

    max_tokens: int = 128
    result_ttl_s: int = 86400
    visibility_timeout_s: int = 3600
    max_attempts: int = 3
    retry_backoff_s: float = 0.1
    retry_backoff_max_s: float = 5.0
    heartbeat_ttl_s: float = 3.0
    heartbeat_interval_s: float = 1.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 5.0
    breaker_max_cooldown_s: float = 60.0
    catalogue_file: str = ""
    projects_file: str = ""
    model: str = ""
    affinity: int = 1  # a session's turns go to the miner that ran it last (tasks.dispatch)
    affinity_prompt_chars: int = 1000  # system prompts this long share a miner too (0: no)


@dataclass(frozen=True)
class WebSettings:
    """The web tier: HTTP, auth, the legacy path, sessions, alerts, ``make run``."""

    database_url: str = "sqlite:///var/mia.db"
    host: str = "127.0.0.1"
    port: int = 5000
    web_workers: int = 2
    web_threads: int = 16
    trusted_proxies: int = 0
    embedded_redis_port: int = 6399
    registration_token: str = ""
    registration_token_file: str = "var/registration-token"
    admin_token: str = ""
    admin_token_file: str = "var/admin-token"
    legacy_open_renewal: int = 1
    request_timeout_s: float = 60.0
    max_message_chars: int = 8000
    max_wait_s: float = 20.0
    max_result_chars: int = 65536
    lease_s: float = 30.0
    legacy_poll_s: float = 2.0
    session_ttl_s: int = 1800
    max_sessions: int = 10000
    autoload: int = 0
    alert_webhook: str = ""
    auto_drain: int = 0
    offline_window_s: float = 300.0


@dataclass(frozen=True)
class ReaperSettings:
    """The reaper (in the web tier): what happens to a dead miner's jobs."""

    reaper_grace_s: float = 10.0
    reaper_batch: int = 200
    reaper_mass_batch: int = 20
    mass_expiry_fraction: float = 0.5
    mass_expiry_min: int = 3


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT gateway (``python -m web.mqtt``)."""

    mqtt_url: str = ""  # mqtt://[user:pass@]host[:1883] or mqtts://...[:8883] (TLS)
    mqtt_client_id: str = ""  # the gateway's MQTT client id ("": mia-gateway-<hostname>)
    mqtt_session_expiry_s: int = 60  # the broker keeps the gateway's session this long after it
    mqtt_in_flight: int = 32  # messages handled at once (beyond: back-pressure)
    mqtt_tls_ca_file: str = ""  # mqtts: CA that signs the broker ("": the system's CAs)
    mqtt_tls_cert_file: str = ""  # mqtts: the gateway's client certificate ("": none)
    mqtt_tls_key_file: str = ""  # mqtts: its private key (with the certificate)
    mqtt_rate_limit: int = 30  # messages per client per period (0: no limit)
    mqtt_rate_period_s: float = 60.0
    mqtt_rate_burst: int = 10  # the token bucket's size: messages a client may send at once
    mqtt_stats_s: float = 60.0  # how often the summary line is logged
    mqtt_health_host: str = "127.0.0.1"  # Kubernetes: 0.0.0.0, for httpGet probes
    mqtt_health_port: int = 8081  # GET /healthz (0: no health endpoint)


@dataclass(frozen=True)
class MinerSettings:
    """A miner: who it is, where the web tier is, its slots and auto-tuning."""

    miner_id: str = ""
    api_url: str = "http://127.0.0.1:5000"
    miner_key_file: str = ""
    slots: int = 1
    device_memory_mb: float = 0.0
    legacy_wait_s: float = 0.0
    legacy_state_file: str = ""  # a legacy miner's id and key ("": in MIA_DATA_DIR)
    autotune: int = 0
    autotune_max_slots: int = 16
    autotune_min_gain: float = 0.15
    autotune_max_latency_ms: float = 0.0
    autotune_tokens: int = 32
    autotune_rounds: int = 2
    checkpoint_s: float = 1.0  # an unstreamed answer so far is saved this often (miners.resume)


@dataclass(frozen=True)
class EngineSettings:
    """A miner's engines: which, in what order of preference, and each one's options."""

    engine: str = "llamacpp"
    engines: str = ""
    llama_threads: int = 0
    llama_ctx: int = 2048
    vllm_model: str = "~/.cache/mia/models/smollm2-135m-instruct"
    vllm_served_name: str = "smollm2-135m-instruct"
    vllm_gpu_memory_utilization: float = 0.9
    vllm_max_model_len: int = 2048
    vllm_tensor_parallel_size: int = 1
    vllm_quantization: str = ""
    vllm_enable_prefix_caching: int = 1
    vllm_kv_cache_bytes: int = 0
    vllm_dtype: str = "auto"
    vllm_enforce_eager: int = 0
    vllm_trust_remote_code: int = 0
    vllm_offline: int = 0
    echo_delay_ms: float = 0.0
    echo_load_ms: float = 0.0
    echo_batch: int = 0


@dataclass(frozen=True)
class FaultInjectionSettings:
    """TEST ONLY: fault injection. Never set these in production."""

    echo_fail_on: str = ""
    fault_file: str = ""


@dataclass(frozen=True)
class Settings(
    FaultInjectionSettings,
    EngineSettings,
    MinerSettings,
    MqttSettings,
    ReaperSettings,
    WebSettings,
    JobSettings,
    ConnectionSettings,
):
    """One process's configuration: every group above, as one flat, typed object
    (``settings.redis_url``), so a field's name is its variable's name."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``MIA_*`` variables; unset ones keep their default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            if name in env:
                values[f.name] = _coerce(name, str(f.type), env[name])
        try:
            check_prefix(values.get("key_prefix", "mia"))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(**values)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, the stack runner)."""
        return replace(self, **changes)


def _coerce(name: str, kind: str, raw: str) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind}, got {raw!r}") from None
    return raw

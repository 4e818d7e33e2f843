"""Where the broker is and how to reach it: ``MIA_MQTT_URL`` and the TLS settings.

``mqtt://[user:pass@]host[:1883]`` is plain TCP; ``mqtts://[user:pass@]host[:8883]`` is
TLS, verified against ``MIA_MQTT_TLS_CA_FILE`` (the system's CAs when unset), with the
client certificate ``MIA_MQTT_TLS_CERT_FILE``/``MIA_MQTT_TLS_KEY_FILE`` when the broker
asks for one (``require_certificate true``). A user name and password in the URL are
percent-decoded (``p%40ss`` is ``p@ss``).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tasks.errors import ConfigError
from tasks.settings import Settings

PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_EXPIRY_S = 2**32 - 1  # MQTT v5's largest Session Expiry Interval ("never")
MAX_RECEIVE = 65535  # and its largest Receive Maximum


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> Broker:
        """The broker of ``MIA_MQTT_URL``; ConfigError for a setting that cannot work."""
        url = urlparse(settings.mqtt_url)
        if url.scheme not in PORTS:
            raise ConfigError(f"MIA_MQTT_URL must start mqtt:// or mqtts://, not {url.scheme!r}")
        tls = url.scheme == "mqtts"
        files = (settings.mqtt_tls_ca_file, settings.mqtt_tls_cert_file, settings.mqtt_tls_key_file)
        if any(files) and not tls:
            raise ConfigError("MIA_MQTT_TLS_* are set but MIA_MQTT_URL is not mqtts://")
        if bool(settings.mqtt_tls_cert_file) != bool(settings.mqtt_tls_key_file):
            raise ConfigError("MIA_MQTT_TLS_CERT_FILE and MIA_MQTT_TLS_KEY_FILE go together")
        return cls(
            host=url.hostname or "127.0.0.1",
            port=url.port or PORTS[url.scheme],
            tls=tls,
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password is not None else None,
            ca_file=settings.mqtt_tls_ca_file,
            cert_file=settings.mqtt_tls_cert_file,
            key_file=settings.mqtt_tls_key_file,
        )

    def configure(self, client: mqtt.Client) -> None:
        """Credentials and TLS (certificate and host name verified) on ``client``."""
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(
                ca_certs=self.ca_file or None,
                certfile=self.cert_file or None,
                keyfile=self.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at the broker URL ``mqtt(s)://host:port``."""
    parsed = urlparse(url)
    port = parsed.port or PORTS.get(parsed.scheme, 1883)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout_s):
            return True
    except OSError:
        return False


def no_delay(client: mqtt.Client) -> None:
    """Small MQTT packets go out at once: without it, Nagle's algorithm and delayed ACKs
    hold a QoS 1 exchange for tens of milliseconds."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # an SSLSocket is one too
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def session(expiry_s: int, receive_maximum: int) -> Properties:
    """The CONNECT properties of the gateway's MQTT v5 session: the broker keeps it (its
    subscription, the messages for it) ``expiry_s`` after the connection ends, then drops
    it; and sends at most ``receive_maximum`` messages not yet acknowledged at once."""
    if not 0 <= expiry_s <= MAX_EXPIRY_S:
        raise ConfigError(f"MIA_MQTT_SESSION_EXPIRY_S must be between 0 and {MAX_EXPIRY_S}")
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = expiry_s
    properties.ReceiveMaximum = min(max(receive_maximum, 1), MAX_RECEIVE)
    return properties

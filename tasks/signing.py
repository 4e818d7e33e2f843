"""Celery message signing (the ``auth`` serializer), switched on by ``MIA_MESSAGE_SIGNING=1``.

Every process that sends tasks (the web tier) or runs them (miners) signs what it
publishes with its private key (``MIA_SIGNING_KEY_FILE``, certificate
``MIA_SIGNING_CERT_FILE``) and accepts only task messages signed by a certificate in
``MIA_SIGNING_CERT_STORE`` (a directory, or a glob, of PEM certificates). Results stay
JSON: miners write them straight to the result store, which the Redis ACL guards.

Celery's ``setup_security`` changes kombu's serializer registry for the whole process
(it turns off every serializer but JSON and ``auth``), so a process signs with one key.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from tasks.errors import ConfigError
from tasks.settings import Settings

SERIALIZER = "auth"
CONTENT_TYPE = "application/data"  # what the auth serializer labels messages


def signing_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings signing needs (none when it is off)."""
    if not settings.message_signing:
        return {}
    missing = [
        name
        for name, value in (
            ("MIA_SIGNING_KEY_FILE", settings.signing_key_file),
            ("MIA_SIGNING_CERT_FILE", settings.signing_cert_file),
            ("MIA_SIGNING_CERT_STORE", settings.signing_cert_store),
        )
        if not value
    ]
    if missing:
        raise ConfigError(f"MIA_MESSAGE_SIGNING=1 needs {', '.join(missing)}")
    return {
        "task_serializer": SERIALIZER,
        "accept_content": [SERIALIZER],
        "result_accept_content": ["json"],
        "security_key": settings.signing_key_file,
        "security_certificate": settings.signing_cert_file,
        "security_cert_store": settings.signing_cert_store,
        "security_digest": settings.signing_digest,
    }


def setup_signing(app: Celery, settings: Settings) -> None:
    """Register the ``auth`` serializer with this process's key (no-op when off)."""
    if settings.message_signing:
        app.setup_security(
            # content types: the ``auth`` name is not registered before the first call
            allowed_serializers=["application/json", CONTENT_TYPE],
            digest=settings.signing_digest,
            serializer="json",
        )

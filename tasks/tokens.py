"""The two shared secrets, each a setting or a file: the registration token (miners
register with it) and the admin token (operator endpoints).

``MIA_REGISTRATION_TOKEN`` / ``MIA_ADMIN_TOKEN`` win; else the file named by
``MIA_REGISTRATION_TOKEN_FILE`` / ``MIA_ADMIN_TOKEN_FILE``, if it exists. ``make run``
makes each file once (``kept``), readable by its owner only.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from tasks.settings import Settings


def _value(token: str, file: str, make: bool) -> str:
    if token:
        return token
    if not file:
        return ""
    path = Path(file)
    if make and not path.is_file():
        kept(path)
    return path.read_text().strip() if path.is_file() else ""


def registration_token(settings: Settings, make: bool = False) -> str:
    """The registration token ('' if none); ``make`` creates its file if missing."""
    return _value(settings.registration_token, settings.registration_token_file, make)


def admin_token(settings: Settings, make: bool = False) -> str:
    """The admin token ('' if none: admin endpoints are off); ``make`` as above."""
    return _value(settings.admin_token, settings.admin_token_file, make)


def kept(path: Path) -> str:
    """The secret in ``path``, made (readable by its owner only) if there is none."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()

"""Credentials of the cloud storage services: where they are kept, and that they never show.

``soopervisor login NAME`` stores a service's tokens in the system keyring, or,
where no keyring exists (servers, containers), in a file readable only by the
user (0600) under the user's config directory. CI passes them in environment
variables instead (each backend documents its names). Every value loaded or
saved is registered with :data:`soopervisor.redact.CREDENTIALS`, so no token
reaches a log, an error, a manifest or ``--json`` output.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import SoopervisorError
from .redact import CREDENTIALS

KEYRING_SERVICE = "soopervisor"


class CredentialsError(SoopervisorError):
    """Missing, expired or revoked credentials; the hint names the login command."""

    exit_code = 3
    topic = "cloud-credentials"


def register(data: Any) -> None:
    """Mask every string value in ``data`` (nested dicts/lists too) from now on."""
    if isinstance(data, str):
        if len(data) >= 6:  # short values (ids like "1", flags) would mask ordinary text
            CREDENTIALS.add(data)
    elif isinstance(data, dict):
        for value in data.values():
            register(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            register(value)


def _file(service: str) -> Path:
    base = os.environ.get("SOOPERVISOR_CONFIG_DIR")
    if base:
        root = Path(base)
    else:
        from platformdirs import user_config_dir

        root = Path(user_config_dir("soopervisor", appauthor=False))
    return root / "credentials" / f"{service}.json"


def _keyring():
    """The system keyring, or None where there is none (or SOOPERVISOR_NO_KEYRING is set)."""
    if os.environ.get("SOOPERVISOR_NO_KEYRING"):
        return None
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or "chainer" in type(backend).__module__ and not backend.backends:
            return None
        return keyring
    except Exception:  # noqa: BLE001 - no usable keyring: fall back to the file
        return None


def save(service: str, data: dict[str, Any]) -> str:
    """Store ``data`` for ``service``; returns where ("system keyring" or the file's path)."""
    register(data)
    text = json.dumps(data, sort_keys=True)
    kr = _keyring()
    if kr is not None:
        try:
            kr.set_password(KEYRING_SERVICE, service, text)
            return "system keyring"
        except Exception:  # noqa: BLE001,S110 - a locked or read-only keyring: use the file
            pass
    path = _file(service)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # a crash never leaves half a token file
    return str(path)


def load(service: str) -> dict[str, Any] | None:
    """What ``save`` stored for ``service``, or None."""
    text = None
    kr = _keyring()
    if kr is not None:
        try:
            text = kr.get_password(KEYRING_SERVICE, service)
        except Exception:  # noqa: BLE001 - unreadable keyring: try the file
            text = None
    if text is None:
        path = _file(service)
        if path.is_file():
            text = path.read_text()
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise CredentialsError(
            f"the stored {service} credentials are damaged", f"soopervisor login {service}"
        ) from None
    register(data)
    return data


def delete(service: str) -> bool:
    """Forget ``service``'s credentials; whether there were any."""
    found = False
    kr = _keyring()
    if kr is not None:
        try:
            kr.delete_password(KEYRING_SERVICE, service)
            found = True
        except Exception:  # noqa: BLE001,S110 - none stored there
            pass
    path = _file(service)
    if path.exists():
        path.unlink()
        found = True
    return found


def from_env(names: dict[str, str]) -> dict[str, str] | None:
    """``{field: value}`` from environment variables ``{field: VARIABLE}``; None unless all required are set.

    Fields whose variable name ends in ``?`` are optional.
    """
    data = {}
    for field, var in names.items():
        optional = var.endswith("?")
        var = var.rstrip("?")
        value = os.environ.get(var)
        if value:
            data[field] = value
        elif not optional:
            return None
    register(data)
    return data


def env_or_stored(service: str, names: dict[str, str]) -> tuple[dict[str, Any], str] | None:
    """The CI variables when all required ones are set, else the stored login when it is complete.

    Returns ``(credentials, "environment" | "stored login")``, or None when neither is there.
    """
    data = from_env(names)
    if data:
        return data, "environment"
    stored = load(service)
    required = [field for field, var in names.items() if not var.endswith("?")]
    if stored and all(stored.get(field) for field in required):
        return stored, "stored login"
    return None


def required(service: str, names: dict[str, str], label: str, hint: str) -> tuple[dict[str, Any], str]:
    """:func:`env_or_stored`, or CredentialsError("not signed in to LABEL") with ``hint``."""
    found = env_or_stored(service, names)
    if found:
        return found
    raise CredentialsError(f"not signed in to {label}", hint=hint)

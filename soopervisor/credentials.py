"""Credentials of the cloud storage services: where they are kept, and that they never show.

``soopervisor login NAME`` stores a service's tokens in the system keyring, or,
where no keyring exists (servers, containers), in a file readable only by the
user (0600) under the user's config directory. CI passes them in environment
variables instead (each backend documents its names). Every value loaded or
saved is registered with :data:`soopervisor.redact.CREDENTIALS`, so no token
reaches a log, an error, a manifest or ``--json`` output.

Services whose refresh tokens are single-use (Box) refresh under
:func:`refresh_lock`, a lock shared by every process of the user on this
machine: the one that waited reads the token the other saved instead of
spending the old one again.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import SoopervisorError
from .redact import CREDENTIALS

KEYRING_SERVICE = "soopervisor"
#: seconds a process waits for another one's token refresh before giving up
REFRESH_LOCK_TIMEOUT = 300.0


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


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def refresh_lock(service: str, timeout: float | None = None) -> Iterator[None]:
    """Hold ``service``'s token-refresh lock, shared by all of this user's processes on this machine.

    Inside it, read the stored credentials again before refreshing: another process
    may have refreshed (and saved) while this one waited. The lock is an
    ``fcntl.flock`` on ``credentials/SERVICE.lock`` beside the stored tokens; the
    kernel drops it when its holder dies, so a killed run never blocks the next.
    Threads of one process take turns too. Where there is no ``fcntl`` (Windows) or
    the folder cannot be written, only the threads of this process are serialised.
    CredentialsError after ``timeout`` seconds (default :data:`REFRESH_LOCK_TIMEOUT`).
    """
    timeout = REFRESH_LOCK_TIMEOUT if timeout is None else timeout
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(service, threading.Lock())
    if not thread_lock.acquire(timeout=max(timeout, 0.001)):
        raise _lock_timeout(service, timeout)
    try:
        with _file_lock(service, timeout):
            yield
    finally:
        thread_lock.release()


def _lock_timeout(service: str, timeout: float) -> CredentialsError:
    return CredentialsError(
        f"another soopervisor process on this machine has been refreshing the {service} sign-in "
        f"for over {timeout:.0f} s",
        f"try again when it has finished (or stop it); `soopervisor login {service}` if this keeps happening",
    )


@contextlib.contextmanager
def _file_lock(service: str, timeout: float) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: threads of this process only
        yield
        return
    path = _file(service).with_suffix(".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:  # a read-only config folder: nothing could be saved anyway
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _lock_timeout(service, timeout) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

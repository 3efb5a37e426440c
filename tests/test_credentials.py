"""Where cloud tokens are kept, and that a value once known is masked everywhere."""
from __future__ import annotations

import multiprocessing
import os
import stat
import threading
import time

import keyring
import pytest
from keyring.backend import KeyringBackend

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.redact import CREDENTIALS, Redactor

from .conftest import cli


class MemoryKeyring(KeyringBackend):
    """A keyring backend holding passwords in a dict (keyring's documented backend API)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        if (service, username) not in self.items:
            raise keyring.errors.PasswordDeleteError("not stored")
        del self.items[(service, username)]


@pytest.fixture
def memory_keyring(monkeypatch):
    monkeypatch.delenv("SOOPERVISOR_NO_KEYRING")
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def test_without_a_keyring_tokens_go_to_a_file_only_the_user_can_read(tmp_path):
    where = credentials.save("dropbox", {"refresh_token": "rt-secret-value-1", "app_key": "key123"})
    path = tmp_path / "soopervisor-config" / "credentials" / "dropbox.json"
    assert where == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert credentials.load("dropbox") == {"refresh_token": "rt-secret-value-1", "app_key": "key123"}
    assert credentials.delete("dropbox") and not path.exists()
    assert credentials.load("dropbox") is None
    assert not credentials.delete("dropbox")


def test_with_a_keyring_tokens_go_there_and_not_to_a_file(memory_keyring, tmp_path):
    assert credentials.save("box", {"refresh_token": "rt-secret-value-2"}) == "system keyring"
    assert ("soopervisor", "box") in memory_keyring.items
    assert not (tmp_path / "soopervisor-config" / "credentials" / "box.json").exists()
    assert credentials.load("box") == {"refresh_token": "rt-secret-value-2"}
    assert credentials.delete("box") and credentials.load("box") is None


def test_every_saved_or_loaded_value_is_masked_from_then_on():
    credentials.save("onedrive", {"token": {"refresh": "very-secret-refresh-token"}, "n": "1"})
    assert CREDENTIALS.redact("got very-secret-refresh-token!") == "got ***!"
    assert "1" not in CREDENTIALS.secrets  # short values would mask ordinary text
    # a run's redactor is built with them (lifecycle.ActiveRun), so its log cannot show them
    run_redactor = Redactor([*CREDENTIALS.secrets])
    assert "very-secret" not in run_redactor.redact("very-secret-refresh-token")


def test_damaged_store_is_a_clear_error(tmp_path):
    path = tmp_path / "soopervisor-config" / "credentials" / "gdrive.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(CredentialsError) as e:
        credentials.load("gdrive")
    assert e.value.hint == "soopervisor login gdrive"


def test_from_env_needs_every_required_variable(monkeypatch):
    names = {"app_key": "T_APP_KEY", "refresh_token": "T_REFRESH", "team": "T_TEAM?"}
    monkeypatch.setenv("T_APP_KEY", "k")
    assert credentials.from_env(names) is None
    monkeypatch.setenv("T_REFRESH", "env-refresh-token-value")
    assert credentials.from_env(names) == {"app_key": "k", "refresh_token": "env-refresh-token-value"}
    assert "env-refresh-token-value" in CREDENTIALS.secrets


def test_logout_and_login_usage_from_the_cli():
    credentials.save("box", {"refresh_token": "rt-secret-value-3"})
    proc = cli("logout", "box", check=0)
    assert "signed out of box" in proc.stdout
    proc = cli("logout", "box", check=0)
    assert "no stored box tokens" in proc.stdout
    proc = cli("login", check=2)
    assert "name the service" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("login", "nope", check=2)
    assert "nope" in proc.stderr


def test_an_error_never_carries_a_known_credential():
    from soopervisor.errors import StorageUnavailable

    credentials.register("leaked-token-in-an-error-123")
    e = StorageUnavailable("upload failed: bearer leaked-token-in-an-error-123", "retry leaked-token-in-an-error-123")
    assert "leaked-token" not in str(e) and e.message == "upload failed: bearer ***" and e.hint == "retry ***"


def _hold_refresh_lock(config: str, started, release) -> None:
    os.environ["SOOPERVISOR_CONFIG_DIR"] = config
    with credentials.refresh_lock("box"):
        started.set()
        release.wait(60)


def test_the_refresh_lock_is_shared_by_the_processes_of_a_machine(tmp_path):
    """Another process holding it makes this one wait (here: time out); it is free once released or killed."""
    ctx = multiprocessing.get_context("spawn")
    for end in ("release", "kill"):
        started, release = ctx.Event(), ctx.Event()
        holder = ctx.Process(target=_hold_refresh_lock,
                             args=(os.environ["SOOPERVISOR_CONFIG_DIR"], started, release))
        holder.start()
        try:
            assert started.wait(60)
            with pytest.raises(CredentialsError) as e, credentials.refresh_lock("box", timeout=0.3):
                pass
            assert "another soopervisor process" in e.value.message and "box" in e.value.message
            with credentials.refresh_lock("dropbox", timeout=0.3):
                pass  # one lock per service
            if end == "release":
                release.set()
            else:
                holder.kill()  # the kernel drops the lock of a process that dies
            holder.join(30)
            with credentials.refresh_lock("box", timeout=10):
                pass
        finally:
            if holder.is_alive():
                holder.kill()
    lock = tmp_path / "soopervisor-config" / "credentials" / "box.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_the_refresh_lock_serialises_threads_too():
    inside, overlaps = [], []

    def work():
        with credentials.refresh_lock("box"):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.05)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []

"""Dropbox for the storage contract suite: the real SDK against a fresh fake of the Dropbox API."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soopervisor.storage import dropbox as backend
from soopervisor.storage.base import Storage
from tests.backends import env
from tests.fakes.dropbox_api import FakeDropbox


@contextmanager
def storage(tmp_path: Path, fake: FakeDropbox | None = None, url: str = "dropbox://soopervisor-tests") -> Iterator[Storage]:
    fake = fake or FakeDropbox()
    with env(SOOPERVISOR_DROPBOX_APP_KEY=fake.app_key,
             SOOPERVISOR_DROPBOX_REFRESH_TOKEN=fake.issue_refresh_token(),
             SOOPERVISOR_CONFIG_DIR=str(tmp_path / "config"), SOOPERVISOR_NO_KEYRING="1"):
        store = backend.open_url(url, session=fake.session())
        store.fake = fake  # for backend-specific checks
        yield store

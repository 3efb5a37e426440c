"""Box for the storage contract suite: the real SDK against a fresh fake of the Box API."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soopervisor.storage import box as backend
from soopervisor.storage.base import Storage
from tests.backends import env
from tests.fakes.box_api import FakeBox


@contextmanager
def storage(tmp_path: Path, fake: FakeBox | None = None, url: str = "box://soopervisor-tests") -> Iterator[Storage]:
    fake = fake or FakeBox()
    with env(SOOPERVISOR_BOX_CLIENT_ID=fake.client_id, SOOPERVISOR_BOX_CLIENT_SECRET=fake.client_secret,
             SOOPERVISOR_BOX_REFRESH_TOKEN=fake.issue_refresh_token(),
             SOOPERVISOR_CONFIG_DIR=str(tmp_path / "config"), SOOPERVISOR_NO_KEYRING="1"):
        store = backend.open_url(url, session=fake.session())
        store.fake = fake  # for backend-specific checks
        yield store

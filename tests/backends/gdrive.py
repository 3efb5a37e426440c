"""Google Drive for the storage contract suite: google-api-python-client against a fresh fake Drive API."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soopervisor.storage import gdrive as backend
from soopervisor.storage.remote import RemoteStorage
from tests.backends import env
from tests.fakes.gdrive_api import FakeDrive


@contextmanager
def fake_env(fake: FakeDrive, tmp_path: Path, refresh_token: str | None = None) -> Iterator[None]:
    """The backend pointed at ``fake``, signed in through the CI variables."""
    with env(**{backend.API_URL_ENV: fake.url, backend.TOKEN_URL_ENV: fake.token_url,
                backend.AUTH_URL_ENV: fake.auth_url,
                backend.ENV["client_id"]: fake.client_id, backend.ENV["client_secret"]: fake.client_secret,
                backend.ENV["refresh_token"]: refresh_token or fake.issue_refresh_token(),
                "SOOPERVISOR_CONFIG_DIR": str(tmp_path / "config"), "SOOPERVISOR_NO_KEYRING": "1"}):
        yield


@contextmanager
def storage(tmp_path: Path, fake: FakeDrive | None = None, url: str = "gdrive://soopervisor-tests") -> Iterator[RemoteStorage]:
    own = fake is None
    fake = fake or FakeDrive(page_size=3)  # small pages: listings exercise pageToken paging
    try:
        with fake_env(fake, tmp_path):
            store = backend.open_url(url)
            store.store.sleep = lambda s: None  # backoff without waiting
            store.fake = fake  # for backend-specific checks
            yield store
    finally:
        if own:
            fake.close()

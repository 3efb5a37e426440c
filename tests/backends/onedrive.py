"""OneDrive for the storage contract suite: msal + requests against a fresh fake of Microsoft Graph."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soopervisor.storage import onedrive as backend
from soopervisor.storage.remote import RemoteStorage
from tests.backends import env
from tests.fakes.graph_api import FakeGraph


@contextmanager
def fake_env(fake: FakeGraph, tmp_path: Path, refresh_token: str | None = None, ci: bool = True,
             tenant: str | None = "consumers") -> Iterator[None]:
    """The backend pointed at ``fake``; signed in through the CI variables when ``ci``.

    ``tenant`` picks the authority (``consumers``, ``organizations``, ``common`` or the fake app's
    directory); None leaves ``SOOPERVISOR_ONEDRIVE_AUTHORITY`` unset (a stored login's own authority).
    """
    values = {backend.GRAPH_URL_ENV: fake.graph_url,
              backend.AUTHORITY_ENV: fake.authority_for(tenant) if tenant else None,
              backend.ISSUED_ENV: None,
              "SOOPERVISOR_CONFIG_DIR": str(tmp_path / "config"), "SOOPERVISOR_NO_KEYRING": "1"}
    if ci:
        values.update({backend.ENV["client_id"]: fake.client_id,
                       backend.ENV["refresh_token"]: refresh_token or fake.issue_refresh_token()})
    with env(**values):
        yield


@contextmanager
def storage(tmp_path: Path, fake: FakeGraph | None = None, url: str = "onedrive://soopervisor/tests") -> Iterator[RemoteStorage]:
    own = fake is None
    fake = fake or FakeGraph(page_size=3)  # small pages: listings follow @odata.nextLink
    try:
        with fake_env(fake, tmp_path):
            store = backend.open_url(url)
            store.store.sleep = lambda s: None  # backoff without waiting
            store.fake = fake  # for backend-specific checks
            yield store
    finally:
        if own:
            fake.close()

"""`soopervisor storage check` against the real services: what a maintainer runs before a release.

Each test runs only where its service's credentials are in the environment (the
variables CI uses, docs/how-to/<service>.md) and is skipped otherwise; the
`live` marker selects them all: `python3 -m pytest -m live tests/test_storage_live.py`.
The storage URL is SOOPERVISOR_<SERVICE>_LIVE_URL, else a folder named
soopervisor-live-tests; the check writes, reads back and removes a tiny set there.
"""
from __future__ import annotations

import os

import pytest

from soopervisor.storage.check import check_storage

#: service -> (the variables that sign it in, any of these tuples; the default URL)
SERVICES = {
    "s3": ((("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SOOPERVISOR_S3_LIVE_URL"),), None),
    "gdrive": ((("SOOPERVISOR_GDRIVE_CLIENT_ID", "SOOPERVISOR_GDRIVE_CLIENT_SECRET",
                 "SOOPERVISOR_GDRIVE_REFRESH_TOKEN"),), "gdrive://soopervisor-live-tests"),
    "dropbox": ((("SOOPERVISOR_DROPBOX_APP_KEY", "SOOPERVISOR_DROPBOX_REFRESH_TOKEN"),),
                "dropbox://soopervisor-live-tests"),
    "onedrive": ((("SOOPERVISOR_ONEDRIVE_CLIENT_ID", "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN"),),
                 "onedrive://soopervisor-live-tests"),
    "box": ((("SOOPERVISOR_BOX_CLIENT_ID", "SOOPERVISOR_BOX_CLIENT_SECRET", "SOOPERVISOR_BOX_REFRESH_TOKEN"),
             ("SOOPERVISOR_BOX_DEVELOPER_TOKEN",)), "box://soopervisor-live-tests"),
}


def _signed_in(service: str) -> bool:
    return any(all(os.environ.get(v) for v in names) for names in SERVICES[service][0])


@pytest.mark.live
@pytest.mark.parametrize("service", list(SERVICES))
def test_storage_check_against_the_real_service(service: str) -> None:
    if not _signed_in(service):
        names = " or ".join(", ".join(n) for n in SERVICES[service][0])
        pytest.skip(f"live {service} check: set {names}")
    url = os.environ.get(f"SOOPERVISOR_{service.upper()}_LIVE_URL") or SERVICES[service][1]
    result = check_storage(url)
    assert result.ok, result.to_dict()
    assert result.left_behind == [], result.left_behind

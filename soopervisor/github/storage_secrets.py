"""The environment variables a CI job needs to reach a storage URL.

Derived from :mod:`soopervisor.storage.ci_env`, the table the backends read
their CI credentials through, so adding a credential to a backend adds it to
the generated workflow and to the Action's early check.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UsageError
from ..storage import _CLOUD, _SCHEME, ci_env  # the one list of schemes and the one rule of what is a URL

#: S3 reads the usual AWS variables (see soopervisor/storage/s3.py); a CI job
#: has no profile or instance role, so the keys are the ones it needs
_AWS = (
    ("AWS_ACCESS_KEY_ID", True, "the access key id of a key allowed to read and write the bucket"),
    ("AWS_SECRET_ACCESS_KEY", True, "that key's secret"),
    ("AWS_ENDPOINT_URL", False, "the endpoint of an S3-compatible service (MinIO, Cloudflare R2, Backblaze B2)"),
    ("AWS_REGION", False, "the bucket's region, when the endpoint needs one"),
)

#: what each backend variable holds, for the printed instructions
_WHAT = {
    "SOOPERVISOR_GDRIVE_CLIENT_ID": "your Google OAuth client's id (the one `soopervisor login gdrive` used)",
    "SOOPERVISOR_GDRIVE_CLIENT_SECRET": "that OAuth client's secret",
    "SOOPERVISOR_GDRIVE_REFRESH_TOKEN": "a refresh token of CI's own, from `soopervisor login gdrive --ci`",
    "SOOPERVISOR_DROPBOX_APP_KEY": "your Dropbox app's key",
    "SOOPERVISOR_DROPBOX_REFRESH_TOKEN": "a refresh token of CI's own, from `soopervisor login dropbox --ci`",
    "SOOPERVISOR_DROPBOX_APP_SECRET": "your Dropbox app's secret (only for tokens issued without PKCE)",
    "SOOPERVISOR_ONEDRIVE_CLIENT_ID": "your Microsoft Entra app's (client) id",
    "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN": "a refresh token of CI's own, from `soopervisor login onedrive --ci`",
    "SOOPERVISOR_BOX_CLIENT_ID": "your Box app's client id",
    "SOOPERVISOR_BOX_CLIENT_SECRET": "your Box app's client secret",
    "SOOPERVISOR_BOX_REFRESH_TOKEN": "a refresh token of CI's own, from `soopervisor login box --ci` "
                                     "(single-use: never the laptop's; or use the client-credentials grant)",
}

_LOCAL_SCHEMES = ("file",)


@dataclass(frozen=True)
class Secret:
    name: str
    required: bool
    what: str


def secrets_for(storage_url: str | None) -> list[Secret]:
    """The variables a CI job needs for ``storage_url``: required ones first, in the backend's order.

    A local path, ``file://`` or None needs none. An unknown scheme is a UsageError.
    """
    scheme = storage_scheme(storage_url)
    if scheme is None:
        return []
    if scheme == "s3":
        found = [Secret(name, required, what) for name, required, what in _AWS]
    else:
        found = [Secret(name.rstrip("?"), not name.endswith("?"), _WHAT.get(name.rstrip("?"), name.rstrip("?")))
                 for name in ci_env.ENV[scheme].values()]
        if scheme == "box":
            # kept optional: the three OAuth variables are what a lasting workflow needs
            found.append(Secret(ci_env.BOX_SUBJECT_TYPE_ENV, False,
                                "with the client id and secret, Box's client-credentials grant instead of a "
                                "refresh token: 'enterprise' (the app's service account) or 'user'"))
            found.append(Secret(ci_env.BOX_SUBJECT_ID_ENV, False, "that enterprise's or user's id"))
            found.append(Secret(ci_env.BOX_DEVELOPER_TOKEN_ENV, False,
                                "instead of the three above, a 60-minute developer token from the "
                                "Box app's console (for a one-off run)"))
        if scheme == "onedrive":
            # not credentials, but what `login onedrive --ci` prints beside them
            found.append(Secret("SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED", False,
                                "the day the refresh token was issued: runs warn before its 90 days end"))
            found.append(Secret("SOOPERVISOR_ONEDRIVE_AUTHORITY", False,
                                "who signs in, when not a personal account: organizations, common or a tenant"))
    return sorted(found, key=lambda s: not s.required)  # stable: keeps the backend's order within each group


def missing_secrets(storage_url: str | None, environ: Mapping[str, str] = os.environ) -> list[Secret]:
    """The required variables of ``storage_url`` that are unset or empty in ``environ``.

    Empty counts as missing: GitHub expands a secret that does not exist to "".
    For Box, a non-empty developer token stands in for all of them.
    """
    box = storage_scheme(storage_url) == "box"
    if box and environ.get(ci_env.BOX_DEVELOPER_TOKEN_ENV):
        return []
    # the client-credentials grant needs no refresh token
    ccg = box and environ.get(ci_env.BOX_SUBJECT_TYPE_ENV) and environ.get(ci_env.BOX_SUBJECT_ID_ENV)
    return [s for s in secrets_for(storage_url)
            if s.required and not environ.get(s.name) and not (ccg and s.name == ci_env.ENV["box"]["refresh_token"])]


def storage_scheme(storage_url: str | None) -> str | None:
    """The cloud scheme of ``storage_url`` (``"s3"``...), None for a local folder; UsageError when unknown."""
    if not storage_url:
        return None
    m = _SCHEME.match(storage_url)
    if m is None:
        return None
    scheme = m.group(1).lower()
    if scheme in _LOCAL_SCHEMES:
        return None
    if scheme not in _CLOUD:
        supported = ", ".join(f"{s}://" for s in (*_LOCAL_SCHEMES, *_CLOUD))
        raise UsageError(f"unknown storage scheme '{scheme}://' in {storage_url!r}",
                         hint=f"supported: a local path, {supported}")
    return scheme

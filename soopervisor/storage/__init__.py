"""Storage backends, chosen by the URL that names a storage target.

``/some/path``, ``relative/path``, ``~/x`` and ``file:///abs/path`` are local
folders; ``s3://``, ``gdrive://``, ``dropbox://``, ``onedrive://`` and ``box://``
name the cloud backends (each module's ``open_url(url)``), built on
:mod:`soopervisor.storage.remote`. Others register with :func:`register_backend`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

from soopervisor import config
from soopervisor.errors import UsageError
from soopervisor.storage.base import MANIFEST, Storage, check_name, check_relpath
from soopervisor.storage.local import LocalStorage

__all__ = [
    "MANIFEST",
    "LocalStorage",
    "Storage",
    "check_name",
    "check_relpath",
    "open_storage",
    "register_backend",
]

#: scheme -> factory taking the full URL
_BACKENDS: dict[str, Callable[[str], Storage]] = {}

#: cloud backends, imported on first use (their SDKs are heavy): scheme -> module
_CLOUD = {
    "s3": "soopervisor.storage.s3",
    "gdrive": "soopervisor.storage.gdrive",
    "dropbox": "soopervisor.storage.dropbox",
    "onedrive": "soopervisor.storage.onedrive",
    "box": "soopervisor.storage.box",
}
#: the pip package of an SDK module a backend imports
_PACKAGES = {"s3fs": "s3fs", "googleapiclient": "google-api-python-client", "google_auth_oauthlib": "google-auth-oauthlib",
             "dropbox": "dropbox", "msal": "msal", "box_sdk_gen": "boxsdk>=10", "keyring": "keyring"}

_NAMES = {"s3": "S3", "gdrive": "Google Drive", "dropbox": "Dropbox", "onedrive": "OneDrive", "box": "Box"}

# only "scheme://" makes a URL, so "C:\\x" or "a:b" stay plain paths
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def register_backend(scheme: str, factory: Callable[[str], Storage]) -> None:
    """Make ``<scheme>://...`` URLs open with ``factory(url)``."""
    _BACKENDS[scheme.lower()] = factory


def _open_file_url(url: str) -> Storage:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise UsageError(
            f"file URL {url!r} names another host ({parts.netloc})",
            hint="use file:///absolute/path or a plain path",
        )
    return LocalStorage(unquote(parts.path))


register_backend("file", _open_file_url)


def cloud_module(scheme: str):
    """The module of a cloud backend; UsageError naming the package to install when its SDK is missing."""
    import importlib

    try:
        return importlib.import_module(_CLOUD[scheme])
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        package = _PACKAGES.get(top, top)
        raise UsageError(
            f"{_NAMES[scheme]} storage needs the package {package}", hint=f"pip install '{package}'"
        ) from None


def open_storage(url: str | os.PathLike[str] | None = None) -> Storage:
    """The storage named by ``url``; None means ``config.default_storage_url()``."""
    if url is None:
        url = config.default_storage_url()
    url = os.fspath(url)
    if not url:
        raise UsageError("the storage URL is empty", hint="use --storage /path")
    m = _SCHEME.match(url)
    if m is None:
        return LocalStorage(url)
    scheme = m.group(1).lower()
    if scheme in _BACKENDS:
        return _BACKENDS[scheme](url)
    if scheme in _CLOUD:
        module = cloud_module(scheme)
        return module.open_url(url)
    supported = ", ".join(f"{s}://" for s in sorted({*_BACKENDS, *_CLOUD}))
    raise UsageError(
        f"unknown storage scheme '{scheme}://' in {url!r}",
        hint=f"supported: a local path, {supported}",
    )

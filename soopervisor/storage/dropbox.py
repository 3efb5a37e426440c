"""Dropbox storage: ``dropbox://path/in/dropbox``, through the official ``dropbox`` SDK.

URL: ``dropbox://artifacts/ml`` stores under ``/artifacts/ml``. For an app with
the *App folder* permission that path is inside ``Apps/<app name>/``; for a
*Full Dropbox* app it is from the Dropbox root. ``dropbox://`` alone is the
top (the app folder itself for an app-folder app).

Sign-in (``soopervisor login dropbox``): create an app at
https://www.dropbox.com/developers/apps (Scoped access, App folder, permissions
``files.content.write``, ``files.content.read``, ``files.metadata.read``,
``account_info.read``), copy its *App key*, and run the command; it prints a
link, you allow the app and paste the code it shows. PKCE is used, so no app
secret is needed, and the offline refresh token is kept in the system keyring
(or a 0600 file). In CI set ``SOOPERVISOR_DROPBOX_APP_KEY`` and
``SOOPERVISOR_DROPBOX_REFRESH_TOKEN`` (``SOOPERVISOR_DROPBOX_APP_SECRET`` only for
apps whose tokens were issued without PKCE).

Uploads up to :data:`SINGLE_UPLOAD_LIMIT` (150 MB, the documented limit of
``files/upload``) take one request; larger files go through an upload session
in :data:`CHUNK_SIZE` pieces, resuming at the offset Dropbox reports after a
failed piece.
"""
from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import requests
from dropbox import Dropbox, DropboxOAuth2FlowNoRedirect, create_session
from dropbox.exceptions import (
    ApiError,
    AuthError,
    BadInputError,
    HttpError,
    InternalServerError,
    RateLimitError,
)
from dropbox.files import CommitInfo, FileMetadata, UploadSessionCursor, WriteMode

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage

SERVICE = "dropbox"
#: CI credentials: field -> environment variable ("?" marks an optional one)
ENV = ci_env.ENV[SERVICE]
LOGIN_HINT = f"soopervisor login {SERVICE}"

MiB = 1024 * 1024
#: files up to this size go in one files/upload request (the documented 150 MB maximum)
SINGLE_UPLOAD_LIMIT = 150 * MiB
#: upload-session piece size; a multiple of 4 MiB as Dropbox recommends, well under 150 MB
CHUNK_SIZE = 8 * MiB
#: attempts per request on throttling (429), server errors (5xx) and dropped connections
MAX_ATTEMPTS = 6
#: first backoff in seconds when the service gives no Retry-After; doubles each time
BACKOFF = 1.0
#: download buffer
READ_CHUNK = 1 * MiB

_sleep = time.sleep  # tests replace it to see the waits without waiting
T = TypeVar("T")


# -- credentials ---------------------------------------------------------------------
def _env_names() -> str:
    return ", ".join(v.rstrip("?") for v in ENV.values() if not v.endswith("?"))


def load_credentials() -> tuple[dict[str, str], str]:
    """The credentials and where they came from ("environment" or "stored login"); CredentialsError when none."""
    return credentials.required(SERVICE, ENV, "Dropbox", hint=f"run `{LOGIN_HINT}`, or set {_env_names()} (for CI)")


def describe() -> str:
    """For ``login --status``: whether Dropbox credentials are there, and from where (never a token)."""
    try:
        _, origin = load_credentials()
    except CredentialsError as e:  # none, or damaged
        return f"{e.message}; {e.hint}"
    if origin == "environment":
        return "signed in through environment variables"
    return "signed in (stored tokens)"


def login(echo: Callable[[str], None], prompt: Callable[[str], str], *, app_key: str | None = None,
          session: requests.Session | None = None) -> str:
    """Dropbox's PKCE no-redirect sign-in; saves the refresh token and returns where.

    ``app_key`` defaults to ``SOOPERVISOR_DROPBOX_APP_KEY``, else it is asked for.
    ``session`` is for tests (a requests session reaching a fake).
    """
    app_key = (app_key or os.environ.get("SOOPERVISOR_DROPBOX_APP_KEY") or "").strip()
    if not app_key:
        echo("Create a Dropbox app at https://www.dropbox.com/developers/apps (Scoped access, App folder;")
        echo("permissions files.content.write, files.content.read, files.metadata.read, account_info.read),")
        echo("then copy its App key. Set SOOPERVISOR_DROPBOX_APP_KEY to skip this question.")
        app_key = prompt("Dropbox app key").strip()
    if not app_key:
        raise CredentialsError("no Dropbox app key given", hint="set SOOPERVISOR_DROPBOX_APP_KEY or paste the key")
    flow = DropboxOAuth2FlowNoRedirect(app_key, use_pkce=True, token_access_type="offline")
    if session is not None:
        flow.requests_session = session
    echo("1. Open this link and sign in to Dropbox:")
    echo(f"   {flow.start()}")
    echo("2. Click Allow, then copy the code Dropbox shows.")
    code = prompt("Authorization code").strip()
    try:
        result = flow.finish(code)
    except Exception:  # noqa: BLE001 - any refusal means the same thing to the user
        raise CredentialsError(
            "Dropbox did not accept that code (wrong, already used or expired)",
            hint=f"run `{LOGIN_HINT}` again and paste the new code right away",
        ) from None
    credentials.register([result.access_token or "", result.refresh_token or ""])
    if not result.refresh_token:
        raise CredentialsError("Dropbox returned no refresh token", hint=f"run `{LOGIN_HINT}` again")
    return credentials.save(SERVICE, {"app_key": app_key, "refresh_token": result.refresh_token})


# -- URL -------------------------------------------------------------------------------
def parse_url(url: str) -> str:
    """The Dropbox folder a ``dropbox://`` URL names: "" (the top) or "/a/b"."""
    if not url.lower().startswith("dropbox://"):
        raise UsageError(f"not a Dropbox URL: {url!r}", hint="use dropbox://path/in/dropbox")
    rest = unquote(url[len("dropbox://"):]).split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in rest.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\0" in part:
            raise UsageError(
                f"invalid Dropbox path in {url!r}",
                hint="use folder names separated by '/', without '..' or backslashes: dropbox://artifacts/ml",
            )
    return "/" + "/".join(parts) if parts else ""


def open_url(url: str, *, session: requests.Session | None = None) -> RemoteStorage:
    """The storage named by ``dropbox://path``; ``session`` (tests) reaches a fake instead of Dropbox."""
    return RemoteStorage(DropboxStore(url, session=session))


# -- the object store ------------------------------------------------------------------
def _is_tag(error: Any, *path: str) -> bool:
    """Whether a stone union error matches the tag path, e.g. ("path", "not_found")."""
    for tag in path:
        if error is None or getattr(error, "_tag", None) != tag:
            return False
        error = getattr(error, "_value", None)
    return True


def _mentions(error: Any, tag: str) -> bool:
    # quota errors sit at different depths of each route's error union
    # (path/insufficient_space, path/reason/insufficient_space, insufficient_quota)
    return tag in repr(error)


def _boundary(fn: Callable[..., T]) -> Callable[..., T]:
    """No SDK exception leaves the store: the user gets a message, not a traceback."""
    @functools.wraps(fn)
    def wrapper(self: DropboxStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except ApiError as e:
            summary = getattr(e, "user_message_text", None) or repr(e.error)
            raise StorageUnavailable(f"Dropbox refused a request on {self.url}: {summary}",
                                     hint="check the path in the URL and the app's permissions") from None

    return wrapper


class _Dropbox(Dropbox):
    """The SDK client, refreshing the access token once for all threads and masking every new one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refresh_lock = threading.Lock()

    def check_and_refresh_access_token(self) -> None:
        with self._refresh_lock:
            super().check_and_refresh_access_token()

    def refresh_access_token(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_access_token(*args, **kwargs)
        if self._oauth2_access_token:
            credentials.register(self._oauth2_access_token)


class DropboxStore:
    """:class:`~soopervisor.storage.remote.ObjectStore` on Dropbox; keys live under ``root``."""

    def __init__(self, url: str, *, session: requests.Session | None = None) -> None:
        self.url = url
        self.root = parse_url(url)
        creds, self.origin = load_credentials()
        credentials.register(creds)
        # Our own retry loop (below) honours Retry-After, bounds the waits and also
        # covers dropped connections, which the SDK does not retry.
        self.dbx = _Dropbox(
            oauth2_refresh_token=creds["refresh_token"],
            app_key=creds["app_key"],
            app_secret=creds.get("app_secret"),
            session=self._watch_retry_after(session or create_session()),
            max_retries_on_error=0,
            max_retries_on_rate_limit=0,
            timeout=120,
        )
        self._root_made = False
        self._lock = threading.Lock()

    # -- helpers -----------------------------------------------------------------
    def _watch_retry_after(self, session: requests.Session) -> requests.Session:
        """Remember each thread's last Retry-After, which the SDK does not pass on for 5xx answers."""
        self._seen = threading.local()

        def hook(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
            value = resp.headers.get("Retry-After")
            self._seen.retry_after = float(value) if value and value.isdigit() else None

        session.hooks["response"].append(hook)
        return session

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _key(self, path_display: str) -> str:
        return path_display[len(self.root) + 1:]

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` with retries on throttling, server errors and dropped connections; errors made clear."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return fn(*args, **kwargs)
            except RateLimitError as e:
                wait = float(e.backoff) if e.backoff is not None else BACKOFF * 2 ** (attempt - 1)
                what = "Dropbox is throttling requests (429)"
            except InternalServerError as e:
                told = getattr(self._seen, "retry_after", None)  # the SDK drops a 503's headers
                wait = told if told is not None else BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random())
                what = f"Dropbox answered {e.status_code}"
            except (requests.ConnectionError, requests.Timeout):
                wait = BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random())
                what = "the connection to Dropbox failed"
            except AuthError as e:
                if e.error is not None and e.error.is_missing_scope():
                    scope = e.error.get_missing_scope().required_scope
                    raise CredentialsError(
                        f"the Dropbox app lacks the permission {scope}",
                        hint=f"tick {scope} in the app's Permissions tab, then run `{LOGIN_HINT}` again",
                    ) from None
                raise CredentialsError(
                    "Dropbox refused the credentials: the token is expired or was revoked",
                    hint=f"run `{LOGIN_HINT}` (or update {ENV['refresh_token']} in CI)",
                ) from None
            except BadInputError as e:
                if "client" not in str(e.message).lower():
                    raise StorageUnavailable("Dropbox rejected a request as malformed",
                                             hint="report this as a soopervisor bug") from None
                # the token endpoint answers 400 invalid_client to an unknown app key
                raise CredentialsError(
                    "Dropbox rejected the request: the app key or the token is invalid",
                    hint=f"run `{LOGIN_HINT}` (or check {ENV['app_key']} in CI)",
                ) from None
            except ApiError as e:
                if _mentions(e.error, "insufficient_space") or _mentions(e.error, "insufficient_quota"):
                    raise StorageUnavailable(
                        "your Dropbox is full (insufficient_space)",
                        hint="free some space in Dropbox, or store the artifacts elsewhere with --storage",
                    ) from None
                if not _mentions(e.error, "too_many_write_operations"):
                    raise
                wait = BACKOFF * 2 ** (attempt - 1) * (0.5 + random.random())
                what = "Dropbox is busy with other writes to the same folder"
            except HttpError as e:
                raise StorageUnavailable(f"Dropbox answered HTTP {e.status_code}",
                                         hint="try again later; https://status.dropbox.com") from None
            if attempt == MAX_ATTEMPTS:
                raise StorageUnavailable(f"{what}; gave up after {MAX_ATTEMPTS} attempts",
                                         hint="try again in a few minutes")
            _sleep(wait)
        raise AssertionError("unreachable")

    def _ensure_root(self) -> None:
        if self._root_made or not self.root:
            return
        with self._lock:
            try:
                self._call(self.dbx.files_create_folder_v2, self.root)
            except ApiError as e:
                if not _is_tag(e.error, "path", "conflict"):
                    raise StorageUnavailable(f"cannot create the Dropbox folder {self.root}",
                                             hint="check the path in the dropbox:// URL") from None
            self._root_made = True

    # -- ObjectStore ---------------------------------------------------------------
    @_boundary
    def check_writable(self) -> None:
        usage = self._call(self.dbx.users_get_space_usage)
        alloc = usage.allocation
        allocated = alloc.get_individual().allocated if alloc.is_individual() else (
            alloc.get_team().allocated if alloc.is_team() else 0)
        if allocated and usage.used >= allocated:
            raise StorageUnavailable("your Dropbox is full",
                                     hint="free some space in Dropbox, or store the artifacts elsewhere with --storage")
        self._ensure_root()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            yield from self._list(prefix)
        except ApiError as e:
            raise StorageUnavailable(f"Dropbox refused to list {self.url}: {e.error!r}",
                                     hint="check the path in the URL and the app's permissions") from None

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        path = self._path(prefix.rstrip("/")) if prefix else self.root
        try:
            page = self._call(self.dbx.files_list_folder, path, recursive=True, limit=2000)
        except ApiError as e:
            if _is_tag(e.error, "path", "not_found") or _is_tag(e.error, "path", "not_folder"):
                return
            raise
        while True:
            for entry in page.entries:
                if isinstance(entry, FileMetadata):
                    yield ObjectInfo(self._key(entry.path_display), entry.size)
            if not page.has_more:
                return
            page = self._call(self.dbx.files_list_folder_continue, page.cursor)

    def _open(self, key: str) -> requests.Response:
        try:
            _, resp = self._call(self.dbx.files_download, self._path(key))
        except ApiError as e:
            if _is_tag(e.error, "path", "not_found"):
                raise ArtifactsNotFound(f"{key} is not in {self.url}",
                                        hint="soopervisor artifacts list shows what is stored") from None
            raise
        return resp

    @_boundary
    def read(self, key: str) -> bytes:
        resp = self._open(key)
        with resp:
            return resp.content

    @_boundary
    def download(self, key: str, dest: Path, progress: Progress) -> None:
        resp = self._open(key)
        with resp, open(dest, "wb") as f:
            for chunk in resp.iter_content(READ_CHUNK):
                f.write(chunk)
                progress(len(chunk))

    @_boundary
    def write(self, key: str, data: bytes) -> None:
        self._ensure_root()
        self._call(self.dbx.files_upload, data, self._path(key), mode=WriteMode.overwrite)

    @_boundary
    def upload(self, key: str, src: Path, progress: Progress) -> None:
        self._ensure_root()
        size = src.stat().st_size
        with open(src, "rb") as f:
            if size <= SINGLE_UPLOAD_LIMIT:
                self._call(self.dbx.files_upload, f.read(), self._path(key), mode=WriteMode.overwrite)
                progress(size)
                return
            try:
                self._upload_session(f, size, key, progress)
            except _SessionLost:
                # the session expired or vanished: start over once, cleanly
                self._upload_session(f, size, key, progress)

    def _upload_session(self, f: Any, size: int, key: str, progress: Progress) -> None:
        f.seek(0)
        first = f.read(CHUNK_SIZE)
        session_id = self._call(self.dbx.files_upload_session_start, first).session_id
        offset = len(first)
        progress(offset)
        while offset < size:
            f.seek(offset)
            chunk = f.read(min(CHUNK_SIZE, size - offset))
            try:
                self._call(self.dbx.files_upload_session_append_v2, chunk, UploadSessionCursor(session_id, offset))
            except ApiError as e:
                offset = self._resume_offset(e.error, offset, progress)
                continue
            offset += len(chunk)
            progress(len(chunk))
        commit = CommitInfo(self._path(key), mode=WriteMode.overwrite)
        try:
            self._call(self.dbx.files_upload_session_finish, b"", UploadSessionCursor(session_id, offset), commit)
        except ApiError as e:
            if _is_tag(e.error, "lookup_failed"):
                raise _SessionLost() from None
            raise

    @staticmethod
    def _resume_offset(error: Any, offset: int, progress: Progress) -> int:
        """Where to continue after a refused piece: Dropbox's ``correct_offset`` (a lost reply) or a restart."""
        if getattr(error, "is_incorrect_offset", lambda: False)():
            correct = error.get_incorrect_offset().correct_offset
            if correct > offset:
                progress(correct - offset)
            return correct
        if getattr(error, "is_not_found", lambda: False)() or getattr(error, "is_closed", lambda: False)():
            raise _SessionLost()
        raise StorageUnavailable(f"Dropbox refused a piece of an upload ({error!r})",
                                 hint="try again; report it if it keeps happening")

    @_boundary
    def copy(self, src_key: str, dst_key: str) -> None:
        self._ensure_root()
        for _ in range(2):
            try:
                self._call(self.dbx.files_copy_v2, self._path(src_key), self._path(dst_key))
                return
            except ApiError as e:
                if _is_tag(e.error, "from_lookup", "not_found"):
                    raise ArtifactsNotFound(f"{src_key} is not in {self.url}") from None
                if not _is_tag(e.error, "to", "conflict"):
                    raise
                # copy_v2 never overwrites: remove the old object, then copy again
                self.delete([dst_key])
        raise StorageUnavailable(f"cannot replace {dst_key} in {self.url}", hint="try again")

    @_boundary
    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._call(self.dbx.files_delete_v2, self._path(key))
            except ApiError as e:
                if not _is_tag(e.error, "path_lookup", "not_found"):
                    raise


class _SessionLost(Exception):
    """The upload session is gone (expired, closed or unknown); the upload starts over."""

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
apps whose tokens were issued without PKCE); :func:`login_for_ci` makes a
refresh token of its own for CI, stored nowhere on this machine.

Transfers:

* files under :data:`SINGLE_UPLOAD_LIMIT` take one ``files/upload`` request;
  larger ones go through an upload session, read from the file one
  :data:`CHUNK_SIZE` piece at a time (a worker never holds more than one
  piece), resuming at the offset Dropbox reports after a dropped piece, and
  checking what Dropbox stored when the answer to the final commit is lost;
* ``too_many_write_operations`` (another write holds the folder's lock) is
  waited out with a growing backoff that is never shorter than Dropbox's
  Retry-After, and makes this store send one write at a time for a while
  (see :class:`_Writers`);
* downloads resume from the byte they reached after a dropped stream (an HTTP
  ``Range`` request, which Dropbox's download endpoint supports).

Names: Dropbox is case-insensitive and keeps the case of a folder's first
writer, so listings derive keys from ``path_lower`` in the caller's own case
(see :meth:`DropboxStore._key_of`); names Dropbox refuses are said before a put
(:func:`refused_name`).
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import unquote

import requests
from dropbox import Dropbox, DropboxOAuth2FlowNoRedirect, create_session
from dropbox.content_hash import DropboxContentHasher
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
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage, retry_delay
from soopervisor.troubleshooting import page_url

SERVICE = "dropbox"
#: CI credentials: field -> environment variable ("?" marks an optional one)
ENV = ci_env.ENV[SERVICE]
LOGIN_HINT = f"soopervisor login {SERVICE}"

MiB = 1024 * 1024
#: files from this size go through an upload session; smaller ones take one files/upload request
#: (never more than CHUNK_SIZE: a single request is read whole)
SINGLE_UPLOAD_LIMIT = 16 * MiB
#: upload-session piece, read from the file when it is sent: the most a worker holds in memory
#: (four workers: 64 MiB). A multiple of 4 MiB, as Dropbox recommends; far under its 150 MB per request
CHUNK_SIZE = 16 * MiB
#: attempts per request on server errors (5xx) and dropped connections
MAX_ATTEMPTS = 6
#: attempts per request while Dropbox throttles (429 too_many_requests) or other writes hold the
#: folder's lock (too_many_write_operations); with the growing backoff, about five minutes in all
THROTTLED_ATTEMPTS = 12
#: write requests in flight at once while Dropbox reports no lock contention (more than any pool uses)
MAX_WRITERS = 16
#: writes that must succeed in a row, after contention, before one more writer is let in again
CALM_WRITES = 8
#: download buffer
READ_CHUNK = 1 * MiB
#: the longest file or folder name Dropbox stores, in characters (UTF-16 code units, to be safe)
MAX_NAME = 255
#: names Dropbox will not store (``disallowed_name``): the files its apps ignore
#: (https://help.dropbox.com/sync/ignored-files)
IGNORED_NAMES = frozenset({"desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"})

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


def _sign_in(echo: Callable[[str], None], prompt: Callable[[str], str], app_key: str | None,
             session: requests.Session | None, again: str) -> tuple[str, str]:
    """Dropbox's PKCE no-redirect sign-in: (app key, refresh token). ``again``: the command to run anew."""
    app_key = (app_key or "").strip()
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
            hint=f"run `{again}` again and paste the new code right away",
        ) from None
    credentials.register([result.access_token or "", result.refresh_token or ""])
    if not result.refresh_token:
        raise CredentialsError("Dropbox returned no refresh token", hint=f"run `{again}` again")
    return app_key, result.refresh_token


def login(echo: Callable[[str], None], prompt: Callable[[str], str], *, app_key: str | None = None,
          session: requests.Session | None = None) -> str:
    """Dropbox's PKCE no-redirect sign-in; saves the refresh token and returns where.

    ``app_key`` defaults to ``SOOPERVISOR_DROPBOX_APP_KEY``, else it is asked for.
    ``session`` is for tests (a requests session reaching a fake).
    """
    key, token = _sign_in(echo, prompt, app_key or os.environ.get(ENV["app_key"]), session, LOGIN_HINT)
    return credentials.save(SERVICE, {"app_key": key, "refresh_token": token})


def login_for_ci(echo: Callable[[str], None], prompt: Callable[[str], str], *, app_key: str | None = None,
                 session: requests.Session | None = None) -> dict[str, str]:
    """Sign in anew for a CI machine: nothing is stored on this machine; returns the environment
    variables CI needs (SOOPERVISOR_DROPBOX_APP_KEY, SOOPERVISOR_DROPBOX_REFRESH_TOKEN) -> values.

    The same PKCE sign-in as :func:`login`, but its refresh token is CI's own: the
    laptop's stored one is neither copied nor replaced. The app key defaults to
    ``SOOPERVISOR_DROPBOX_APP_KEY``, else the stored login's, else it is asked for.
    """
    stored = credentials.load(SERVICE) or {}
    default_key = app_key or os.environ.get(ENV["app_key"]) or stored.get("app_key")
    echo("This sign-in makes a refresh token for CI only; it is not stored on this machine.")
    key, token = _sign_in(echo, prompt, default_key, session, f"{LOGIN_HINT} --ci")
    values = {ENV["app_key"]: key, ENV["refresh_token"]: token}
    credentials.register(values)
    return values


# -- URL and names -----------------------------------------------------------------------
def _length(name: str) -> int:
    """A name's length as Dropbox counts it, at worst: UTF-16 code units (an emoji counts twice)."""
    return len(name.encode("utf-16-le", "surrogatepass")) // 2


def refused_name(path: str) -> str | None:
    """Why Dropbox would refuse to store ``path`` (segments separated by "/"), or None.

    Dropbox's documented restrictions (https://help.dropbox.com/sync/files-not-syncing),
    as rclone found them in use: no file or folder name over 255 characters, none
    ending in a space, and not the names its apps ignore (``desktop.ini``,
    ``thumbs.db``, ``.ds_store``, ``.dropbox``, ...). ``/``, ``\\\\``, control
    characters and DEL are refused too, but never reach it: product names are
    percent-encoded and project, commit and run names may not have them.
    """
    for segment in path.split("/"):
        if segment.lower() in IGNORED_NAMES:
            return f"Dropbox does not store files named {segment!r}"
        if segment.endswith(" "):
            return f"the name {segment!r} ends in a space, which Dropbox does not store"
        if _length(segment) > MAX_NAME:
            return (f"a stored name of {_length(segment)} characters (names are percent-encoded); "
                    f"Dropbox takes at most {MAX_NAME} per file or folder name")
    return None


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
    why = refused_name("/".join(parts))
    if why:
        raise UsageError(f"Dropbox cannot store under {url!r}: {why}", hint="pick another folder name in the URL")
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


class _Writers:
    """How many write requests (uploads, commits, copies, deletes) may be in flight at once.

    Dropbox serialises the writes to one folder tree (a "namespace") under a lock
    and answers ``too_many_write_operations`` to a write that finds it taken.
    Dropbox's data-ingress guide offers two cures: write serially, or commit many
    upload sessions in one ``upload_session/finish_batch_v2``. The batch does not
    fit here: :class:`~soopervisor.storage.remote.ObjectStore` stores one file per
    call and the set protocol needs each file committed before its manifest, so a
    batch would mean holding every upload until a coordinator flushes it (and
    small files would need sessions too). Fewer writers is local and cannot
    strand a file: after contention one write goes at a time, and one more is let
    in after every :data:`CALM_WRITES` that succeed. Only the writes are gated:
    the pieces of upload sessions (which take no lock) and reads stay parallel.
    """

    def __init__(self, limit: int = MAX_WRITERS) -> None:
        self.most = limit
        self.limit = limit
        self.active = 0
        self._calm = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        with self._cond:
            while self.active >= self.limit:
                self._cond.wait()
            self.active += 1
        try:
            yield
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify_all()

    def contended(self) -> None:
        with self._cond:
            self.limit, self._calm = 1, 0

    def succeeded(self) -> None:
        with self._cond:
            if self.limit < self.most:
                self._calm += 1
                if self._calm >= CALM_WRITES:
                    self.limit, self._calm = self.limit + 1, 0
                    self._cond.notify_all()


class DropboxStore:
    """:class:`~soopervisor.storage.remote.ObjectStore` on Dropbox; keys live under ``root``."""

    service = "Dropbox"
    #: Dropbox treats "A.csv" and "a.csv" as one file
    case_insensitive = True

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
        self._writers = _Writers()
        #: lower-cased key -> the key as this process stored it (Dropbox keeps whichever case came first)
        self._written: dict[str, str] = {}

    # -- names ---------------------------------------------------------------------
    def refused(self, key: str) -> str | None:
        """Why Dropbox would refuse ``key``'s name (see :func:`refused_name`), checked before a put."""
        return refused_name(key)

    # -- helpers -----------------------------------------------------------------
    def _watch_retry_after(self, session: requests.Session) -> requests.Session:
        """Remember each thread's last Retry-After, which the SDK does not pass on for 5xx answers."""
        self._seen = threading.local()

        def hook(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
            self._seen.retry_after = resp.headers.get("Retry-After")

        session.hooks["response"].append(hook)
        return session

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def _stored(self, key: str) -> None:
        self._written[key.lower()] = key

    def _key_of(self, entry: Any, ours: list[str], skip: int) -> str:
        """The key of a listed entry, in our own case.

        ``path_display`` may differ in case from what we wrote: Dropbox is
        case-insensitive, a folder keeps the case of whoever made it first, and
        only the last segment's case is promised. So the folders we asked to list
        (``ours``, after the root's ``skip`` segments) are named as we named them,
        the segments below them as Dropbox shows them, and a key this process
        stored comes back exactly as it was stored.
        """
        lower = (entry.path_lower or "").split("/")[1:]
        shown = (entry.path_display or "").split("/")[1:]
        if len(shown) != len(lower):
            shown = lower
        key = "/".join(ours + shown[skip:])
        return self._written.get(key.lower(), key)

    def _call(self, fn: Callable[..., T], *args: Any, _write: bool = False, **kwargs: Any) -> T:
        """``fn`` with retries on throttling, lock contention, server errors and dropped connections.

        ``_write``: the request takes Dropbox's write lock (see :class:`_Writers`).
        """
        failures = throttled = 0
        while True:
            try:
                with self._writers.slot() if _write else contextlib.nullcontext():
                    result = fn(*args, **kwargs)
                if _write:
                    self._writers.succeeded()
                return result
            except RateLimitError as e:
                throttled += 1
                reason = getattr(e.error, "reason", None)
                contention = reason is not None and reason.is_too_many_write_operations()
                wait, what = self._throttled(e.backoff, throttled, contention)
            except InternalServerError as e:
                failures += 1
                wait = retry_delay(getattr(self._seen, "retry_after", None), failures)  # the SDK drops its headers
                what = f"Dropbox answered {e.status_code}"
            except (requests.ConnectionError, requests.Timeout):
                failures += 1
                wait = retry_delay(None, failures)
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
                throttled += 1  # the same contention, reported in the route's own error
                wait, what = self._throttled(None, throttled, contention=True)
            except HttpError as e:
                raise StorageUnavailable(f"Dropbox answered HTTP {e.status_code}",
                                         hint="try again later; https://status.dropbox.com") from None
            if failures >= MAX_ATTEMPTS or throttled >= THROTTLED_ATTEMPTS:
                raise StorageUnavailable(
                    f"{what}; gave up after {failures + throttled} attempts",
                    hint=f"try again in a few minutes; see {page_url('how-to/dropbox')}",
                )
            _sleep(wait)

    def _throttled(self, retry_after: Any, attempt: int, contention: bool) -> tuple[float, str]:
        """Seconds to wait before the next attempt of a throttled request, and what happened."""
        told = None if retry_after is None else str(retry_after)
        if not contention:
            # a rate limit: Dropbox says how long; a shorter wait is throttled again and counts against it
            return retry_delay(told, attempt), "Dropbox is throttling requests (too_many_requests)"
        self._writers.contended()
        # other writes hold the folder's lock (this process's or another client's): at least as long as
        # Dropbox asks (often 1 s), and longer each time, so the attempts outlast a burst of heavy writes
        wait = max(retry_delay(told, attempt) if told else 0.0, retry_delay(None, attempt))
        return wait, "Dropbox is busy with other writes to the same folder (too_many_write_operations)"

    def _ensure_root(self) -> None:
        if self._root_made or not self.root:
            return
        with self._lock:
            try:
                self._call(self.dbx.files_create_folder_v2, self.root, _write=True)
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
        folder = prefix.rstrip("/")
        path = self._path(folder) if folder else self.root
        ours = folder.split("/") if folder else []
        skip = len([p for p in self.root.split("/") if p]) + len(ours)
        try:
            page = self._call(self.dbx.files_list_folder, path, recursive=True, limit=2000)
        except ApiError as e:
            if _is_tag(e.error, "path", "not_found") or _is_tag(e.error, "path", "not_folder"):
                return
            raise
        while True:
            for entry in page.entries:
                if isinstance(entry, FileMetadata):
                    yield ObjectInfo(self._key_of(entry, ours, skip), entry.size)
            if not page.has_more:
                return
            page = self._call(self.dbx.files_list_folder_continue, page.cursor)

    def _open(self, key: str, start: int = 0) -> tuple[FileMetadata, requests.Response]:
        """The metadata and the streamed body of ``key`` from byte ``start`` on."""
        headers = {"Range": f"bytes={start}-"} if start else None
        try:
            return self._call(self.dbx.files_download, self._path(key), extra_headers=headers)
        except ApiError as e:
            if _is_tag(e.error, "path", "not_found"):
                raise ArtifactsNotFound(f"{key} is not in {self.url}",
                                        hint="soopervisor artifacts list shows what is stored") from None
            raise

    def _fetch(self, key: str, sink: Callable[[], BinaryIO], progress: Progress) -> None:
        """``key``'s bytes into ``sink()`` (opened once Dropbox has answered: a missing key makes no file);
        a dropped stream resumes from the byte it reached (HTTP Range)."""
        got, rev, drops = 0, None, 0
        out: BinaryIO | None = None
        while True:
            meta, resp = self._open(key, got)
            with resp:
                if out is None:
                    out = sink()
                restart = got and meta.rev != rev  # replaced since: what we have is of no use
                if got and (restart or resp.status_code != 206):
                    out.seek(0)
                    out.truncate()
                    got = 0
                if restart and resp.status_code == 206:  # this body starts mid-file: ask for all of it
                    drops += 1
                    rev = None
                    continue
                rev, before = meta.rev, got
                try:
                    for chunk in resp.iter_content(READ_CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        progress(len(chunk))
                except requests.RequestException:
                    pass  # the stream broke off: ask for the rest below
            if got >= meta.size:
                return
            drops = 0 if got > before else drops + 1
            if drops >= MAX_ATTEMPTS:
                raise StorageUnavailable(
                    f"the download of {key} from Dropbox broke off {drops} times in a row at byte {got}",
                    hint="check the network connection and try again",
                )
            _sleep(retry_delay(None, drops))

    @_boundary
    def read(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._fetch(key, lambda: buf, lambda n: None)
        return buf.getvalue()

    @_boundary
    def download(self, key: str, dest: Path, progress: Progress) -> None:
        with contextlib.ExitStack() as files:
            self._fetch(key, lambda: files.enter_context(open(dest, "wb")), progress)

    @_boundary
    def write(self, key: str, data: bytes) -> None:
        self._ensure_root()
        self._call(self.dbx.files_upload, data, self._path(key), mode=WriteMode.overwrite, _write=True)
        self._stored(key)

    @_boundary
    def upload(self, key: str, src: Path, progress: Progress) -> None:
        self._ensure_root()
        size = src.stat().st_size
        with open(src, "rb") as f:
            if size < min(SINGLE_UPLOAD_LIMIT, CHUNK_SIZE):
                data = f.read(size)  # less than one piece
                self._call(self.dbx.files_upload, data, self._path(key), mode=WriteMode.overwrite, _write=True)
                progress(len(data))
            else:
                try:
                    self._upload_session(f, size, key, progress)
                except _SessionLost:
                    # the session expired or vanished: start over once, cleanly
                    try:
                        self._upload_session(f, size, key, progress)
                    except _SessionLost:
                        raise StorageUnavailable(f"Dropbox lost the upload session of {key} twice",
                                                 hint="try again; report it if it keeps happening") from None
        self._stored(key)

    def _piece(self, f: BinaryIO, offset: int, size: int) -> bytes:
        f.seek(offset)
        piece = f.read(min(CHUNK_SIZE, size - offset))
        if not piece:
            raise StorageUnavailable(f"{f.name} got shorter while it was being uploaded",
                                     hint="store the set once the pipeline has finished writing it")
        return piece

    def _upload_session(self, f: BinaryIO, size: int, key: str, progress: Progress) -> None:
        piece = self._piece(f, 0, size)
        session_id = self._call(self.dbx.files_upload_session_start, piece).session_id
        offset = len(piece)
        progress(offset)
        while offset < size:
            piece = b""  # the last piece goes before the next is read: one piece in memory at a time
            piece = self._piece(f, offset, size)
            try:
                self._call(self.dbx.files_upload_session_append_v2, piece, UploadSessionCursor(session_id, offset))
            except ApiError as e:
                offset = self._resume_offset(e.error, offset, progress)
                continue
            offset += len(piece)
            progress(len(piece))
        piece = b""
        commit = CommitInfo(self._path(key), mode=WriteMode.overwrite)
        try:
            self._call(self.dbx.files_upload_session_finish, b"", UploadSessionCursor(session_id, offset), commit,
                       _write=True)
        except ApiError as e:
            if not _is_tag(e.error, "lookup_failed"):
                raise
            # the session is gone: expired, or committed by an attempt whose answer was lost
            if not self._has_content(key, f, size):
                raise _SessionLost() from None

    def _has_content(self, key: str, f: BinaryIO, size: int) -> bool:
        """Whether Dropbox already holds the file at ``key`` (its size and content_hash), read in pieces."""
        try:
            meta = self._call(self.dbx.files_get_metadata, self._path(key))
        except ApiError:
            return False
        if not isinstance(meta, FileMetadata) or meta.size != size:
            return False
        hasher = DropboxContentHasher()
        f.seek(0)
        while block := f.read(min(READ_CHUNK, CHUNK_SIZE)):
            hasher.update(block)
        return hasher.hexdigest() == meta.content_hash

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
                self._call(self.dbx.files_copy_v2, self._path(src_key), self._path(dst_key), _write=True)
                self._stored(dst_key)
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
            mine = self._written.get(key.lower())
            if mine is not None and mine != key:
                # the object this process stored as `mine`, named in another case by a listing made before
                # (a folder renamed only in case between two puts): Dropbox would delete the new file
                continue
            try:
                self._call(self.dbx.files_delete_v2, self._path(key), _write=True)
            except ApiError as e:
                if not _is_tag(e.error, "path_lookup", "not_found"):
                    raise
            self._written.pop(key.lower(), None)

    @_boundary
    def remove_folder(self, key: str) -> None:
        """Remove the folder ``key`` and all in it (a folder already gone is fine)."""
        try:
            self._call(self.dbx.files_delete_v2, self._path(key), _write=True)
        except ApiError as e:
            if not _is_tag(e.error, "path_lookup", "not_found"):
                raise
        prefix = key.lower().rstrip("/") + "/"
        for written in [k for k in self._written if k.startswith(prefix)]:
            del self._written[written]


class _SessionLost(Exception):
    """The upload session is gone (expired, closed or unknown); the upload starts over."""

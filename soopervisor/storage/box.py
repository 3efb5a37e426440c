"""Box storage: ``box://FOLDER``, through Box's official SDK (boxsdk >= 10, module ``box_sdk_gen``).

URL forms:

* ``box://0`` or ``box://`` — the root of "All Files";
* ``box://123456789`` — the folder with that id (the number at the end of the
  folder's address in the Box web app, ``https://app.box.com/folder/123456789``);
* ``box://123456789/runs/ml`` — folders ``runs/ml`` under that folder;
* ``box://artifacts/ml`` — folders by name from the root (a first segment that
  is all digits is read as an id, so write ``box://0/2024`` for a folder named 2024).

Missing folders are created.

Sign-in (``soopervisor login box``): create a *Custom App* with *User
Authentication (OAuth 2.0)* at https://app.box.com/developers/console, add the
redirect URI ``http://localhost:8765/callback`` (nothing needs to listen there;
you paste the address the browser ends on), tick *Read and write all files and
folders*, and copy its client id and secret. The command prints a link; after
you allow the app, paste the code or the whole redirect address (within 30
seconds: Box codes are short-lived). Box refresh tokens are single-use: every
refresh returns a new one, which is saved at once (keyring or 0600 file).

CI: ``SOOPERVISOR_BOX_CLIENT_ID``, ``SOOPERVISOR_BOX_CLIENT_SECRET`` and
``SOOPERVISOR_BOX_REFRESH_TOKEN``; because that refresh token is single-use, its
successor is saved on the machine and used by later runs there (a fresh CI
machine needs a fresh token per run). For a one-off job,
``SOOPERVISOR_BOX_DEVELOPER_TOKEN`` (a 60-minute token from the app's console)
is enough.

Files from :data:`CHUNKED_MIN` (20 MB, Box's minimum for chunked uploads) go
through an upload session in the part size Box chooses; smaller ones in one
request. A file larger than the account's upload limit (250 MB on free
accounts) is refused before anything is sent.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import requests
from box_sdk_gen import (
    AccessToken,
    BaseUrls,
    BoxAPIError,
    BoxClient,
    BoxDeveloperTokenAuth,
    BoxNetworkClient,
    BoxOAuth,
    BoxRetryStrategy,
    BoxSDKError,
    CopyFileParent,
    CreateFolderParent,
    GetAuthorizeUrlOptions,
    NetworkSession,
    OAuthConfig,
    TokenStorage,
    UploadFileAttributes,
    UploadFileAttributesParentField,
    UploadFileVersionAttributes,
    UploadPart,
)

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage

SERVICE = "box"
#: CI credentials: field -> environment variable
ENV = ci_env.ENV[SERVICE]
#: a developer token from the app's console (60 minutes); for one-off jobs
DEVELOPER_TOKEN_ENV = ci_env.BOX_DEVELOPER_TOKEN_ENV
#: where the login's redirect goes; must be listed in the app's configuration
REDIRECT_URI = "http://localhost:8765/callback"
LOGIN_HINT = f"soopervisor login {SERVICE}"

MB = 1000 * 1000
#: Box accepts chunked upload sessions for files of 20 MB and more
CHUNKED_MIN = 20 * MB
#: attempts per request (the SDK's retry strategy: 429 and 5xx honouring Retry-After, and 401 → refresh)
MAX_ATTEMPTS = 5
#: retries of a dropped connection per request
MAX_RETRIES_ON_EXCEPTION = 3
#: rounds of re-sending the parts Box does not have after a part failed
PART_ROUNDS = 3
#: polls of a commit that Box is still processing (202)
COMMIT_POLLS = 10
READ_CHUNK = 1024 * 1024

_sleep = time.sleep
T = TypeVar("T")
#: the SDK's own (non-HTTP) errors that mean "no usable token"
_TOKEN_PROBLEM = re.compile(r"Developer token has expired|tokens not available|No access token", re.IGNORECASE)


# -- credentials ---------------------------------------------------------------------
def _fingerprint(token: str) -> str:
    # names the environment's refresh token in the store without keeping it
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _env_hint() -> str:
    return f"set {', '.join(ENV.values())} for CI (or {DEVELOPER_TOKEN_ENV} for a single job)"


def load_credentials() -> tuple[dict[str, Any], str]:
    """``(credentials, origin)``; origin is "developer token", "environment" or "stored"."""
    dev = os.environ.get(DEVELOPER_TOKEN_ENV)
    if dev:
        credentials.register(dev)
        return {"developer_token": dev}, "developer token"
    stored = credentials.load(SERVICE)
    env = credentials.from_env(ENV)
    if env:
        # the env token is single-use; once refreshed, its successor was saved with its fingerprint
        if stored and stored.get("rotated_from") == _fingerprint(env["refresh_token"]):
            return stored, "environment"
        return {**env, "rotated_from": _fingerprint(env["refresh_token"])}, "environment"
    if stored and stored.get("refresh_token") and stored.get("client_id"):
        return stored, "stored"
    raise CredentialsError("not signed in to Box", hint=f"run `{LOGIN_HINT}`, or {_env_hint()}")


def describe() -> str:
    """For ``login --status``: whether Box credentials are there, and from where (never a token)."""
    try:
        _, origin = load_credentials()
    except CredentialsError as e:  # none, or damaged
        return f"{e.message}; {e.hint}"
    if origin == "developer token":
        return f"using a developer token from {DEVELOPER_TOKEN_ENV} (valid 60 minutes)"
    if origin == "environment":
        return "signed in through environment variables"
    return "signed in (stored tokens)"


class SavingTokenStorage(TokenStorage):
    """Keeps the current token and saves every new one at once: Box refresh tokens are single-use."""

    def __init__(self, creds: dict[str, Any]) -> None:
        self.creds = dict(creds)
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self.where = ""  # where the last token was saved
        if creds.get("refresh_token"):
            self._token = AccessToken(access_token=creds.get("access_token") or "",
                                      refresh_token=creds["refresh_token"], token_type="bearer")

    def store(self, token: AccessToken) -> None:
        with self._lock:
            self._token = token
            self.creds.update(access_token=token.access_token or "", refresh_token=token.refresh_token,
                              expires_at=time.time() + (token.expires_in or 0))
            credentials.register(self.creds)
            try:
                self.where = credentials.save(SERVICE, self.creds)
            except OSError as e:
                # this run goes on with the new token in memory; the next one will ask to log in again
                self.where = f"nowhere ({type(e).__name__}: the config folder is not writable)"

    def get(self) -> AccessToken | None:
        return self._token

    def clear(self) -> None:
        self._token = None

    def expired(self) -> bool:
        # refresh a minute early rather than have requests fail with 401 first
        return not self.creds.get("access_token") or self.creds.get("expires_at", 0) < time.time() + 60


class _OAuth(BoxOAuth):
    """BoxOAuth that refreshes once for all threads and before the access token expires."""

    def __init__(self, config: OAuthConfig) -> None:
        super().__init__(config)
        self._refresh_lock = threading.Lock()
        self._refreshed_at = 0.0

    def retrieve_token(self, *, network_session: NetworkSession | None = None) -> AccessToken:
        storage = self.token_storage
        if isinstance(storage, SavingTokenStorage) and storage.expired():
            return self.refresh_token(network_session=network_session)
        return super().retrieve_token(network_session=network_session)

    def refresh_token(self, *, network_session: NetworkSession | None = None) -> AccessToken:
        with self._refresh_lock:
            # several threads see the same 401; the single-use refresh token may be spent once only
            if time.monotonic() - self._refreshed_at < 30 and self.token_storage.get() is not None:
                return self.token_storage.get()
            token = super().refresh_token(network_session=network_session)
            self._refreshed_at = time.monotonic()
            return token


def network_session(session: requests.Session | None = None, base_urls: BaseUrls | None = None) -> NetworkSession:
    """The SDK's network session: our retry policy; ``session``/``base_urls`` reach a fake in tests."""
    return NetworkSession(
        network_client=BoxNetworkClient(requests_session=session) if session is not None else None,
        retry_strategy=BoxRetryStrategy(max_attempts=MAX_ATTEMPTS, max_retries_on_exception=MAX_RETRIES_ON_EXCEPTION),
        base_urls=base_urls,
    )


def _auth(creds: dict[str, Any]) -> BoxOAuth | BoxDeveloperTokenAuth:
    if creds.get("developer_token"):
        return BoxDeveloperTokenAuth(token=creds["developer_token"])
    return _OAuth(OAuthConfig(creds["client_id"], creds["client_secret"], token_storage=SavingTokenStorage(creds)))


def login(echo: Callable[[str], None], prompt: Callable[[str], str], *, client_id: str | None = None,
          client_secret: str | None = None, session: requests.Session | None = None) -> str:
    """Box's OAuth2 authorization-code sign-in; saves the tokens and returns where.

    The client id/secret default to ``SOOPERVISOR_BOX_CLIENT_ID``/``_SECRET``, else they are asked for.
    ``session`` is for tests (a requests session reaching a fake).
    """
    client_id = client_id or os.environ.get(ENV["client_id"])
    client_secret = client_secret or os.environ.get(ENV["client_secret"])
    if not (client_id and client_secret):
        echo("Create a Box app at https://app.box.com/developers/console: Custom App, User Authentication (OAuth 2.0);")
        echo(f"add the redirect URI {REDIRECT_URI}, tick 'Read and write all files and folders',")
        echo(f"and copy its client id and secret (or set {ENV['client_id']} and {ENV['client_secret']}).")
        client_id = client_id or prompt("Box client id").strip()
        client_secret = client_secret or prompt("Box client secret").strip()
    if not (client_id and client_secret):
        raise CredentialsError("no Box client id or secret given", hint=f"set {ENV['client_id']} and {ENV['client_secret']}")
    credentials.register([client_id, client_secret])
    storage = SavingTokenStorage({"client_id": client_id, "client_secret": client_secret})
    auth = _OAuth(OAuthConfig(client_id, client_secret, token_storage=storage))
    state = secrets.token_urlsafe(16)
    url = auth.get_authorize_url(options=GetAuthorizeUrlOptions(redirect_uri=REDIRECT_URI, state=state))
    echo("1. Open this link and sign in to Box:")
    echo(f"   {url}")
    echo(f"2. Click 'Grant access'. The browser then opens {REDIRECT_URI}?... (the page may not load):")
    echo("   copy that whole address from the address bar, or just its code, within 30 seconds.")
    answer = prompt("Redirect address or code").strip()
    code = answer
    if "?" in answer or answer.startswith("http"):
        query = {k: v[-1] for k, v in parse_qs(urlsplit(answer).query).items()}
        if query.get("error"):
            raise CredentialsError(f"Box sign-in was refused ({query['error']})", hint=f"run `{LOGIN_HINT}` again")
        if query.get("state") not in (None, state):
            raise CredentialsError("that address belongs to another sign-in", hint=f"run `{LOGIN_HINT}` again")
        code = query.get("code", "")
    if not code:
        raise CredentialsError("no authorization code given", hint=f"run `{LOGIN_HINT}` again")
    try:
        auth.get_tokens_authorization_code_grant(code, network_session=network_session(session))
    except BoxSDKError:
        raise CredentialsError(
            "Box did not accept that code (wrong, already used or older than 30 seconds)",
            hint=f"run `{LOGIN_HINT}` again and paste the address right away",
        ) from None
    return storage.where


# -- URL -------------------------------------------------------------------------------
def parse_url(url: str) -> tuple[str, list[str]]:
    """``(folder id, [folder names under it])`` named by a ``box://`` URL."""
    if not url.lower().startswith("box://"):
        raise UsageError(f"not a Box URL: {url!r}", hint="use box://FOLDER_ID or box://folder/names")
    rest = unquote(url[len("box://"):]).split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in rest.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\0" in part or len(part) > 255:
            raise UsageError(
                f"invalid Box folder name in {url!r}",
                hint="use box://FOLDER_ID, box://FOLDER_ID/sub/folders or box://folder/names (no '..')",
            )
    if parts and parts[0].isdigit():
        return parts[0], parts[1:]
    return "0", parts


def open_url(url: str, *, session: requests.Session | None = None) -> RemoteStorage:
    """The storage named by ``box://...``; ``session`` (tests) reaches a fake instead of Box."""
    return RemoteStorage(BoxStore(url, session=session))


# -- the object store ------------------------------------------------------------------
def _status(e: BoxAPIError) -> int:
    return e.response_info.status_code


def _code(e: BoxAPIError) -> str:
    body = e.response_info.body or {}
    return str(e.response_info.code or body.get("error") or "")


def _limit_error(size: int | None, limit: int | None) -> StorageUnavailable:
    what = f"a file of {size / MB:.0f} MB" if size else "a file"
    per_file = f" ({limit / MB:.0f} MB per file)" if limit else ""
    return StorageUnavailable(
        f"{what} is larger than this Box account accepts{per_file}; free Box accounts take files up to 250 MB",
        hint="upgrade the Box plan, make the pipeline write smaller files, or store the artifacts elsewhere with --storage",
    )


def _boundary(fn: Callable[..., T]) -> Callable[..., T]:
    """No SDK exception leaves the store: its text may quote requests and would tell the user nothing."""
    @functools.wraps(fn)
    def wrapper(self: BoxStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except BoxAPIError as e:
            raise StorageUnavailable(f"Box refused a request on {self.url} ({_status(e)} {_code(e)})".rstrip(),
                                     hint="check the folder in the URL still exists, then try again") from None

    return wrapper


class BoxStore:
    """:class:`~soopervisor.storage.remote.ObjectStore` on Box; keys are paths under the URL's folder."""

    def __init__(self, url: str, *, session: requests.Session | None = None,
                 base_urls: BaseUrls | None = None) -> None:
        self.url = url
        self.base_id, self.base_path = parse_url(url)
        creds, self.origin = load_credentials()
        self.client = BoxClient(_auth(creds), network_session=network_session(session, base_urls))
        self._folders: dict[str, str] = {}  # folder key ("" = the URL's folder) -> id
        self._files: dict[str, str] = {}  # key -> file id (a hint; re-checked when Box says 404)
        self._indexed: set[str] = set()  # folder keys whose files are all in _files
        self._lock = threading.RLock()
        self._max_upload: int | None = None

    # -- errors ------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` (the SDK retries 429/5xx honouring Retry-After); errors the user can act on made clear."""
        try:
            return fn(*args, **kwargs)
        except BoxAPIError as e:
            raise self._translate(e) from None
        except BoxSDKError as e:
            if _TOKEN_PROBLEM.search(e.message or ""):  # developer token expired, or no tokens at all
                raise CredentialsError("Box refused the credentials: the token has expired",
                                       hint=f"run `{LOGIN_HINT}` (or renew {DEVELOPER_TOKEN_ENV})") from None
            raise StorageUnavailable("Box could not be reached (the connection failed repeatedly)",
                                     hint="check the network, then try again") from None

    def _translate(self, e: BoxAPIError) -> Exception:
        status, code = _status(e), _code(e)
        if status == 401 or "oauth2/token" in (e.request_info.url or "") or code in ("invalid_grant", "invalid_client"):
            return CredentialsError("Box refused the credentials: the token is expired or was revoked",
                                    hint=f"run `{LOGIN_HINT}` (or update {ENV['refresh_token']} in CI)")
        if code == "storage_limit_exceeded" or status == 507:
            return StorageUnavailable("your Box account is full (storage_limit_exceeded)",
                                      hint="free some space in Box, or store the artifacts elsewhere with --storage")
        if code == "file_size_limit_exceeded" or status == 413:
            return _limit_error(None, self._upload_limit(cached=True))
        if status == 429 or status >= 500:
            return StorageUnavailable(f"Box kept answering {status}; gave up after {MAX_ATTEMPTS} attempts",
                                      hint="try again in a few minutes; https://status.box.com")
        if status == 403:
            return StorageUnavailable(f"Box denied access to the folder of {self.url} ({code or 'forbidden'})",
                                      hint="check the folder id and that the app may read and write all files")
        if status in (404, 409):
            return e  # the callers decide: missing objects, names taken
        return StorageUnavailable(f"Box refused a request ({status} {code})".rstrip(),
                                  hint="try again; report it if it keeps happening")

    def _upload_limit(self, cached: bool = False) -> int | None:
        if self._max_upload is None and not cached:
            me = self._call(self.client.users.get_user_me, fields=["max_upload_size", "space_amount", "space_used"])
            self._max_upload = me.max_upload_size
        return self._max_upload

    # -- folders and ids ---------------------------------------------------------
    def _items(self, folder_id: str) -> Iterator[Any]:
        marker = None
        while True:
            page = self._call(self.client.folders.get_folder_items, folder_id, fields=["type", "id", "name", "size"],
                              usemarker=True, marker=marker, limit=1000)
            yield from page.entries or []
            marker = page.next_marker
            if not marker:
                return

    def _child(self, folder_id: str, name: str, kind: str) -> Any | None:
        folded = name.casefold()  # Box names are unique case-insensitively
        for item in self._items(folder_id):
            if item.type == kind and item.name.casefold() == folded:
                return item
        return None

    def _mkdir(self, parent_id: str, name: str) -> str:
        try:
            return self._call(self.client.folders.create_folder, name, CreateFolderParent(id=parent_id)).id
        except BoxAPIError as e:
            if _status(e) != 409:
                raise
            conflicts = (e.response_info.context_info or {}).get("conflicts")
            conflict = conflicts[0] if isinstance(conflicts, list) and conflicts else conflicts
            if isinstance(conflict, dict) and conflict.get("type") == "folder":
                return conflict["id"]
            raise StorageUnavailable(f"a file named {name!r} in Box stands where {self.url} needs a folder",
                                     hint="rename or remove that file, or choose another folder") from None

    def _index(self, folder_key: str, folder_id: str) -> list[tuple[str, Any]]:
        """List a folder once and remember the ids of what it holds; ``[(key, item)]``.

        Afterwards a name missing from the cache is taken as absent without asking
        Box again: an upload that then meets the name (409) or a remembered id that
        went stale (404) looks it up afresh, so the cache only saves round trips.
        """
        entries = []
        for item in self._items(folder_id):
            entries.append((f"{folder_key}/{item.name}" if folder_key else item.name, item))
        with self._lock:
            inside = folder_key + "/" if folder_key else ""
            for key in [k for k in self._files if k.startswith(inside) and "/" not in k[len(inside):]]:
                del self._files[key]
            for key, item in entries:
                if item.type == "file":
                    self._files[key] = item.id
                elif item.type == "folder":
                    self._folders[key] = item.id
            self._indexed.add(folder_key)
        return entries

    def _folder_id(self, folder_key: str, create: bool) -> str | None:
        """The id of a folder (its key relative to the URL's folder); None when missing and not ``create``."""
        with self._lock:  # one thread creates a folder; the others then find it
            if folder_key in self._folders:
                return self._folders[folder_key]
            if not folder_key:
                folder_id: str | None = self.base_id
                for name in self.base_path:
                    item = self._child(folder_id, name, "folder")
                    folder_id = item.id if item else (self._mkdir(folder_id, name) if create else None)
                    if folder_id is None:
                        return None
                self._folders[""] = folder_id
                return folder_id
            parent, _, name = folder_key.rpartition("/")
            parent_id = self._folder_id(parent, create)
            if parent_id is None:
                return None
            if parent not in self._indexed:
                self._index(parent, parent_id)
            if folder_key not in self._folders:
                if not create:
                    return None
                self._folders[folder_key] = self._mkdir(parent_id, name)
                self._indexed.add(folder_key)  # new, hence empty
            return self._folders[folder_key]

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        return folder, name

    def _file_id(self, key: str, fresh: bool = False) -> str | None:
        folder, _ = self._split(key)
        with self._lock:
            if not fresh and (key in self._files or folder in self._indexed):
                return self._files.get(key)
        folder_id = self._folder_id(folder, create=False)
        if folder_id is None:
            return None
        self._index(folder, folder_id)
        return self._files.get(key)

    def _with_file(self, key: str, fn: Callable[[str], T]) -> T:
        """``fn(file id)``, looking the id up again once when a remembered one is stale (404)."""
        for fresh in (False, True):
            file_id = self._file_id(key, fresh=fresh)
            if file_id is None:
                break
            try:
                return fn(file_id)
            except BoxAPIError as e:
                if _status(e) != 404:
                    raise
        raise ArtifactsNotFound(f"{key} is not in {self.url}", hint="soopervisor artifacts list shows what is stored")

    # -- ObjectStore ---------------------------------------------------------------
    @_boundary
    def check_writable(self) -> None:
        me = self._call(self.client.users.get_user_me, fields=["max_upload_size", "space_amount", "space_used"])
        self._max_upload = me.max_upload_size
        if me.space_amount and me.space_used is not None and me.space_used >= me.space_amount:
            raise StorageUnavailable("your Box account is full",
                                     hint="free some space in Box, or store the artifacts elsewhere with --storage")
        folder_id = self._folder_id("", create=True)
        try:
            self._index("", folder_id)
        except BoxAPIError as e:
            if _status(e) != 404:
                raise
            raise StorageUnavailable(f"Box has no folder {self.base_id} that this account can see ({self.url})",
                                     hint="copy the id from the folder's address in the Box web app, or use box://0") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            yield from self._list(prefix)
        except BoxAPIError as e:
            raise StorageUnavailable(f"Box refused to list {self.url} ({_status(e)} {_code(e)})".rstrip(),
                                     hint="check the folder in the URL still exists, then try again") from None

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder_key = prefix.rstrip("/")
        folder_id = self._folder_id(folder_key, create=False)
        if folder_id is None:
            return
        stack = [(folder_key, folder_id)]
        while stack:
            key, fid = stack.pop()
            for child, item in self._index(key, fid):
                if item.type == "folder":
                    stack.append((child, item.id))
                elif item.type == "file":
                    yield ObjectInfo(child, item.size or 0)

    def _stream(self, file_id: str) -> Any:
        stream = self._call(self.client.downloads.download_file, file_id)
        if stream is None:  # 202: Box has not finished processing the file
            raise StorageUnavailable("Box is still processing a file", hint="try again in a minute")
        return stream

    @_boundary
    def read(self, key: str) -> bytes:
        return self._with_file(key, lambda fid: self._stream(fid).read())

    @_boundary
    def download(self, key: str, dest: Path, progress: Progress) -> None:
        def fetch(file_id: str) -> None:
            stream = self._stream(file_id)
            with open(dest, "wb") as f:
                while chunk := stream.read(READ_CHUNK):
                    f.write(chunk)
                    progress(len(chunk))

        self._with_file(key, fetch)

    @_boundary
    def write(self, key: str, data: bytes) -> None:
        self._put_small(key, lambda: io.BytesIO(data))

    @_boundary
    def upload(self, key: str, src: Path, progress: Progress) -> None:
        size = src.stat().st_size
        limit = self._upload_limit()
        if limit and size > limit:
            raise _limit_error(size, limit)  # before a byte is sent
        if size < CHUNKED_MIN:
            self._put_small(key, lambda: open(src, "rb"))  # noqa: SIM115 - opened per attempt, closed by _put_small
            progress(size)
            return
        with open(src, "rb") as f:
            self._put_chunked(key, f, size, progress)

    def _put_small(self, key: str, opener: Callable[[], Any]) -> None:
        folder, name = self._split(key)
        folder_id = self._folder_id(folder, create=True)
        file_id = self._file_id(key)
        for _ in range(3):
            with opener() as stream:
                try:
                    if file_id is None:
                        files = self._call(self.client.uploads.upload_file,
                                           UploadFileAttributes(name=name, parent=UploadFileAttributesParentField(id=folder_id)),
                                           stream)
                    else:
                        files = self._call(self.client.uploads.upload_file_version, file_id,
                                           UploadFileVersionAttributes(name=name), stream)
                except BoxAPIError as e:
                    file_id = self._after_conflict(e, key)
                    continue
            with self._lock:
                self._files[key] = files.entries[0].id
            return
        raise StorageUnavailable(f"cannot replace {key} in {self.url}", hint="try again")

    def _after_conflict(self, e: BoxAPIError, key: str) -> str | None:
        """The id to upload a new version to, after Box refused to create (409) or found no file (404)."""
        if _status(e) == 409:
            conflicts = (e.response_info.context_info or {}).get("conflicts")
            conflict = conflicts[0] if isinstance(conflicts, list) and conflicts else conflicts
            if isinstance(conflict, dict) and conflict.get("type") == "file":
                return conflict["id"]
            return self._file_id(key, fresh=True)
        if _status(e) == 404:  # the remembered file is gone
            return self._file_id(key, fresh=True)
        raise e

    def _put_chunked(self, key: str, f: Any, size: int, progress: Progress) -> None:
        folder, name = self._split(key)
        folder_id = self._folder_id(folder, create=True)
        file_id = self._file_id(key)
        up = self.client.chunked_uploads
        for attempt in range(2):  # a session that vanishes (expired, 404) restarts once
            try:
                if file_id is None:
                    session = self._call(up.create_file_upload_session, folder_id, size, name)
                else:
                    session = self._call(up.create_file_upload_session_for_existing_file, file_id, size, file_name=name)
            except BoxAPIError as e:
                file_id = self._after_conflict(e, key)
                continue
            try:
                files = self._send_parts(session, f, size, progress)
            except _SessionLost:
                self._abort(session)
                if attempt:
                    raise StorageUnavailable(f"Box lost the upload session of {key} twice", hint="try again") from None
                continue
            except BaseException:
                self._abort(session)  # Box keeps no half file; free the session's parts now
                raise
            with self._lock:
                self._files[key] = files.entries[0].id
            return
        raise StorageUnavailable(f"cannot upload {key} to {self.url}", hint="try again")

    def _abort(self, session: Any) -> None:
        try:
            self.client.chunked_uploads.delete_file_upload_session_by_url(session.session_endpoints.abort)
        except BoxSDKError:
            pass  # best effort: an abandoned session expires by itself

    def _send_parts(self, session: Any, f: Any, size: int, progress: Progress) -> Any:
        up = self.client.chunked_uploads
        endpoints, part_size = session.session_endpoints, session.part_size
        offsets = list(range(0, size, part_size))
        done: dict[int, UploadPart] = {}
        whole = hashlib.sha1()
        for _ in range(PART_ROUNDS):
            failed = False
            for offset in offsets:
                if offset in done:
                    continue
                f.seek(offset)
                chunk = f.read(min(part_size, size - offset))
                digest = "sha=" + base64.b64encode(hashlib.sha1(chunk).digest()).decode()
                rng = f"bytes {offset}-{offset + len(chunk) - 1}/{size}"
                try:
                    part = self._call(up.upload_file_part_by_url, endpoints.upload_part, io.BytesIO(chunk), digest, rng).part
                except BoxAPIError as e:
                    if _status(e) == 404:
                        raise _SessionLost() from None
                    raise
                except StorageUnavailable:
                    failed = True  # retried parts exhausted; ask Box what it has, then resend the rest
                    continue
                done[offset] = part
                progress(len(chunk))
            if not failed:
                break
            done = self._parts_box_has(endpoints.list_parts, done)
        missing = [o for o in offsets if o not in done]
        if missing:
            raise StorageUnavailable(f"Box kept refusing parts of an upload ({len(missing)} missing)",
                                     hint="try again in a few minutes")
        f.seek(0)
        while block := f.read(READ_CHUNK):
            whole.update(block)
        parts = [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha_1)
                 for p in sorted(done.values(), key=lambda p: p.offset)]
        digest = "sha=" + base64.b64encode(whole.digest()).decode()
        for _ in range(COMMIT_POLLS):
            try:
                files = self._call(up.create_file_upload_session_commit_by_url, endpoints.commit, parts, digest)
            except BoxAPIError as e:
                if _status(e) == 404:
                    raise _SessionLost() from None
                raise
            if files is not None:
                return files
            _sleep(1)  # 202: Box is still processing the parts
        raise StorageUnavailable("Box did not finish assembling an uploaded file", hint="try again later")

    def _parts_box_has(self, list_url: str, done: dict[int, UploadPart]) -> dict[int, UploadPart]:
        try:
            listed = self._call(self.client.chunked_uploads.get_file_upload_session_parts_by_url, list_url)
        except (BoxAPIError, StorageUnavailable):
            return done
        return {**done, **{p.offset: p for p in listed.entries or []}}

    @_boundary
    def copy(self, src_key: str, dst_key: str) -> None:
        folder, name = self._split(dst_key)
        folder_id = self._folder_id(folder, create=True)
        self.delete([dst_key])  # Box copies never overwrite

        def copy(file_id: str) -> Any:
            return self._call(self.client.files.copy_file, file_id, CopyFileParent(id=folder_id), name=name)

        for _ in range(2):
            try:
                new = self._with_file(src_key, copy)
                with self._lock:
                    self._files[dst_key] = new.id
                return
            except BoxAPIError as e:
                if _status(e) != 409:
                    raise
                self.delete([dst_key])  # created meanwhile
        raise StorageUnavailable(f"cannot replace {dst_key} in {self.url}", hint="try again")

    @_boundary
    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._with_file(key, lambda fid: self._call(self.client.files.delete_file_by_id, fid))
            except ArtifactsNotFound:
                pass
            with self._lock:
                self._files.pop(key, None)


class _SessionLost(Exception):
    """The upload session is gone (expired or aborted); the upload starts over."""

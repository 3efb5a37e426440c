"""OneDrive storage: ``onedrive://path`` through Microsoft Graph, with msal for sign-in.

``onedrive://soopervisor/artifacts`` names the folder ``/soopervisor/artifacts``
under the root of the signed-in user's OneDrive (personal Microsoft accounts;
Graph's ``/me/drive/root:/soopervisor/artifacts:``), created on first write.
Sets are stored as ``path/<project>/<commit>/<name>``, real folders.

Transfers: files up to :data:`SIMPLE_LIMIT` (4 MB) are one ``PUT …/content``;
larger ones go through an upload session (``createUploadSession``), in
:data:`CHUNK_SIZE` fragments (multiples of 320 KiB, as Graph requires). After a
failed fragment the session is asked for its ``nextExpectedRanges`` and the
upload continues from there; an expired session starts over. Copies are
server-side (``/copy`` answers 202 and a monitor URL, polled until done).
Throttling (429/503 with ``Retry-After``) and dropped connections are retried.

Sign-in (``soopervisor login onedrive``): msal's device-code flow — the
terminal shows a code to enter at https://microsoft.com/devicelogin — with the
scopes ``Files.ReadWrite offline_access``; the refresh token goes to the
keyring (or the 0600 file). Microsoft rotates refresh tokens: each new one is
saved as soon as it arrives. The sign-in uses an application (client) ID: an
app registration in Microsoft Entra (Azure portal → App registrations → New
registration; *Personal Microsoft accounts only* or *any directory and
personal accounts*; Authentication → *Allow public client flows*: Yes; API
permissions: Microsoft Graph delegated ``Files.ReadWrite``). Give its ID once
at the prompt or in ``SOOPERVISOR_ONEDRIVE_CLIENT_ID``.

CI: ``SOOPERVISOR_ONEDRIVE_CLIENT_ID`` and ``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN``.

Other endpoints (sovereign clouds, tests): ``SOOPERVISOR_GRAPH_URL`` replaces
``https://graph.microsoft.com/v1.0`` and ``SOOPERVISOR_ONEDRIVE_AUTHORITY``
replaces ``https://login.microsoftonline.com/consumers``. msal accepts only
https authorities; a plain ``http://127.0.0.1`` authority (a local test server)
is reached through an HTTP session that rewrites that one origin.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage, RetryLater, retry_delay
from soopervisor.troubleshooting import page_url

SERVICE = "onedrive"
#: field -> environment variable, for CI (both are needed)
ENV = ci_env.ENV[SERVICE]
GRAPH_URL_ENV = "SOOPERVISOR_GRAPH_URL"
AUTHORITY_ENV = "SOOPERVISOR_ONEDRIVE_AUTHORITY"
GRAPH_URL = "https://graph.microsoft.com/v1.0"
AUTHORITY = "https://login.microsoftonline.com/consumers"
#: msal adds offline_access (a refresh token) itself and refuses it in this list
SCOPES = ["Files.ReadWrite"]

KiB = 1024
#: files up to this size are one PUT; Graph documents simple upload "up to 4 MB"
SIMPLE_LIMIT = 4 * 1024 * KiB
#: upload-session fragment: Graph requires multiples of 320 KiB (and at most 60 MiB)
CHUNK_SIZE = 32 * 320 * KiB
#: attempts of one request on throttling and transient errors
MAX_TRIES = 6
#: how long a server-side copy may take before we give up
COPY_TIMEOUT = 600.0
HTTP_TIMEOUT = 120

LOGIN_HINT = "soopervisor login onedrive"
FULL_HINT = "free space in your OneDrive (and empty its recycle bin), or store elsewhere with --storage"


def _env_hint() -> str:
    return f"{LOGIN_HINT} (in CI: set {' and '.join(ENV.values())})"


# -- credentials -------------------------------------------------------------------
def load_credentials() -> tuple[dict[str, str], str]:
    """(client_id/refresh_token, "environment" or "stored login"); CredentialsError if none."""
    return credentials.required(SERVICE, ENV, "OneDrive", hint=_env_hint())


class _PlainHttpOrigin(requests.Session):
    """Sends requests for ``https://HOST:PORT`` to ``http://HOST:PORT``: msal insists on https
    authorities, local test servers speak plain http."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self._https, self._http = "https://" + origin, "http://" + origin

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if url.startswith(self._https):
            url = self._http + url[len(self._https):]
        return super().request(method, url, *args, **kwargs)


def _msal_app(client_id: str) -> Any:
    import msal

    authority = (os.environ.get(AUTHORITY_ENV) or AUTHORITY).rstrip("/")
    kwargs: dict[str, Any] = {}
    if os.environ.get(AUTHORITY_ENV):
        # a chosen authority is trusted as given (no instance discovery at login.microsoftonline.com)
        kwargs["instance_discovery"] = False
    parts = urlsplit(authority)
    if parts.scheme == "http":
        authority = "https://" + authority[len("http://"):]
        kwargs["http_client"] = _PlainHttpOrigin(parts.netloc)
    return msal.PublicClientApplication(client_id, authority=authority, timeout=HTTP_TIMEOUT, **kwargs)


def _token_error(result: dict[str, Any], source: str) -> CredentialsError:
    # error_description may quote request details; only the error code is shown
    code = result.get("error", "unknown_error")
    if source == "environment":
        hint = f"{LOGIN_HINT}, then put the new refresh token in {ENV['refresh_token']}"
    else:
        hint = LOGIN_HINT
    if code in ("invalid_grant", "interaction_required", "invalid_client", "unauthorized_client"):
        return CredentialsError(f"the OneDrive sign-in has expired or was revoked ({code})", hint=hint)
    return CredentialsError(f"OneDrive sign-in failed ({code})", hint=hint)


class _Tokens:
    """Access tokens from the refresh token; a rotated refresh token is saved at once."""

    def __init__(self, data: dict[str, str], source: str) -> None:
        self.client_id = data["client_id"]
        self.refresh_token = data["refresh_token"]
        self.source = source
        self._app: Any = None
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self, force: bool = False, stale: str | None = None) -> str:
        """A valid access token; ``force`` renews unless another thread already replaced ``stale``."""
        with self._lock:
            if self._access and not (force and self._access == stale) and time.time() < self._expires - 60:
                return self._access
            if self._app is None:
                try:
                    self._app = _msal_app(self.client_id)
                except ValueError:  # msal: the authority's OpenID configuration did not load
                    raise StorageUnavailable("the Microsoft sign-in service did not answer",
                                             hint=f"check the network (and {AUTHORITY_ENV} if set); try again later"
                                             ) from None
            result = self._app.acquire_token_by_refresh_token(self.refresh_token, scopes=SCOPES)
            if "access_token" not in result:
                raise _token_error(result, self.source)
            credentials.register(result["access_token"])
            self._access = result["access_token"]
            self._expires = time.time() + float(result.get("expires_in", 3600))
            new = result.get("refresh_token")
            if new and new != self.refresh_token:
                credentials.register(new)
                self.refresh_token = new
                if self.source == "stored login":  # the old one may stop working: keep the new one
                    credentials.save(SERVICE, {"client_id": self.client_id, "refresh_token": new})
            return self._access


# -- errors ------------------------------------------------------------------------
def _graph_error(resp: requests.Response) -> tuple[str, str]:
    """(code, message) of a Graph error body ``{"error": {"code", "message"}}``."""
    try:
        error = resp.json()["error"]
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", ""


def _backoff(resp: requests.Response | None, attempt: int) -> float:
    return retry_delay(resp.headers.get("Retry-After") if resp is not None else None, attempt)


# -- the object store --------------------------------------------------------------
class GraphStore:
    """Objects as files under one OneDrive folder; see the module docstring."""

    def __init__(self, url: str, base: str, creds: dict[str, str], source: str) -> None:
        self.url = url
        self.base = base  # "soopervisor/artifacts"
        self.graph = (os.environ.get(GRAPH_URL_ENV) or GRAPH_URL).rstrip("/")
        self.tokens = _Tokens(creds, source)
        self._local = threading.local()
        self._lock = threading.Lock()  # folder creation
        self._folders: dict[str, str] = {}  # folder key ("" = base) -> item id
        self._drive_id: str | None = None
        self.sleep: Callable[[float], None] = time.sleep

    # plumbing
    @property
    def _http(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _path_url(self, key: str) -> str:
        full = "/".join(p for p in (self.base, key) if p)
        return f"{self.graph}/me/drive/root:/{quote(full, safe='/')}:"

    def _item_url(self, item_id: str) -> str:
        return f"{self.graph}/me/drive/items/{quote(item_id, safe='')}"

    def _check(self, resp: requests.Response, what: str, attempt: int,
               accept: tuple[int, ...] = ()) -> requests.Response:
        """``resp`` when it succeeded or its status is in ``accept``; else an error, or RetryLater."""
        status = resp.status_code
        if status < 400 or status in accept:
            return resp
        code, message = _graph_error(resp)
        if status in (429, 500, 502, 503, 504) or code in ("activityLimitReached", "serviceNotAvailable"):
            raise RetryLater(_backoff(resp, attempt), f"{status} {code}".strip())
        if status == 507 or code in ("quotaLimitReached", "insufficientStorage"):
            raise StorageUnavailable(f"OneDrive storage is full while {what}", hint=FULL_HINT)
        if status == 401:
            raise CredentialsError("OneDrive refused the sign-in (401)", hint=LOGIN_HINT)
        if status == 404:
            raise ArtifactsNotFound(f"not found in OneDrive: {what}")
        if status == 403:
            raise StorageUnavailable(f"OneDrive denied {what} ({code or status})",
                                     hint=f"check the onedrive:// URL; sign in again with {LOGIN_HINT}")
        raise StorageUnavailable(f"OneDrive refused {what}: HTTP {status} {code} {message}".rstrip(),
                                 hint="check the onedrive:// URL; soopervisor login --status shows the sign-in")

    def _call(self, method: str, url: str, what: str, *, auth: bool = True, accept: tuple[int, ...] = (),
              headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """One Graph request with retries; a 401 renews the access token once.

        Statuses in ``accept`` come back to the caller; a 404 otherwise is ArtifactsNotFound.
        """
        renewed = False
        for attempt in range(MAX_TRIES):
            sent = dict(headers or {})
            token = None
            try:
                if auth:  # inside: a dropped connection to the token endpoint is retried too
                    token = self.tokens.get()
                    sent["Authorization"] = f"Bearer {token}"
                resp = self._http.request(method, url, headers=sent, timeout=HTTP_TIMEOUT, **kwargs)
                if resp.status_code == 401 and auth and not renewed:
                    renewed = True  # the access token expired early or was revoked: renew once
                    self.tokens.get(force=True, stale=token)
                    continue
                return self._check(resp, what, attempt, accept)
            except RetryLater as r:
                delay, why = r.delay, r.why
            except (requests.ConnectionError, requests.Timeout) as e:
                delay, why = _backoff(None, attempt), type(e).__name__
            if attempt == MAX_TRIES - 1:
                raise StorageUnavailable(f"OneDrive kept failing while {what} ({why})", hint="try again later")
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _drive(self) -> dict[str, Any]:
        drive = self._call("GET", f"{self.graph}/me/drive", "reading the drive").json()
        self._drive_id = drive.get("id")
        return drive

    def _folder(self, key: str, create: bool) -> str | None:
        """The item id of folder ``key`` ("" = the base folder), made when ``create``."""
        if key in self._folders:
            return self._folders[key]
        resp = self._call("GET", self._path_url(key), f"finding folder {key or self.base}", accept=(404,))
        if resp.status_code == 404:
            if not create:
                return None
            full = "/".join(p for p in (self.base, key) if p)
            head, _, name = full.rpartition("/")
            if key:
                parent = self._folder(key.rpartition("/")[0], create=True)
            elif head:
                parent = self._root_folder(head)
            else:
                parent = "root"
            with self._lock:
                resp = self._call("POST", f"{self._item_url(parent)}/children", f"creating folder {name}",
                                  json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}, accept=(409,))
                if resp.status_code == 409:  # made by another thread or process meanwhile
                    resp = self._call("GET", self._path_url(key), f"finding folder {key}")
        item = resp.json()
        if "folder" not in item:
            raise StorageUnavailable(f"{self.url}/{key} is a file, not a folder", hint="use another onedrive:// path")
        self._folders[key] = item["id"]
        return item["id"]

    def _root_folder(self, path: str) -> str:
        """Item id of a folder above the base (``a/b`` of base ``a/b/c``), made as needed."""
        url = f"{self.graph}/me/drive/root:/{quote(path, safe='/')}:"
        resp = self._call("GET", url, f"finding folder {path}", accept=(404,))
        if resp.status_code != 404:
            return resp.json()["id"]
        head, _, name = path.rpartition("/")
        parent = self._root_folder(head) if head else "root"
        resp = self._call("POST", f"{self._item_url(parent)}/children", f"creating folder {name}",
                          json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}, accept=(409,))
        if resp.status_code == 409:
            return self._call("GET", url, f"finding folder {path}").json()["id"]
        return resp.json()["id"]

    def _parent_and_name(self, key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        parent = self._folder(folder, create=True)
        assert parent is not None
        return parent, name

    # ObjectStore
    def check_writable(self) -> None:
        self._folder("", create=True)
        quota = self._drive().get("quota") or {}
        if quota.get("state") == "exceeded" or (quota.get("remaining") is not None and int(quota["remaining"]) <= 0):
            raise StorageUnavailable("OneDrive storage is full", hint=FULL_HINT)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = prefix.rstrip("/")
        folder = self._folder(start, create=False)
        if folder is None:
            return
        stack = [(folder, start)]
        while stack:
            fid, key = stack.pop()
            url: str | None = f"{self._item_url(fid)}/children?$select=id,name,size,folder,file&$top=200"
            while url:
                resp = self._call("GET", url, f"listing {self.url}/{key}", accept=(404,))
                if resp.status_code == 404:
                    break  # deleted meanwhile
                page = resp.json()
                for item in page.get("value", []):
                    child = f"{key}/{item['name']}" if key else item["name"]
                    if "folder" in item:
                        self._folders.setdefault(child, item["id"])
                        stack.append((item["id"], child))
                    else:
                        yield ObjectInfo(child, int(item.get("size", 0)))
                url = page.get("@odata.nextLink")

    def read(self, key: str) -> bytes:
        resp = self._call("GET", f"{self._path_url(key)}/content", f"reading {key}")
        return resp.content

    def write(self, key: str, data: bytes) -> None:
        if len(data) > SIMPLE_LIMIT:  # a manifest carries the run's log: it may outgrow one PUT
            with tempfile.TemporaryDirectory(prefix="soopervisor-") as tmp:
                path = Path(tmp) / "object"
                path.write_bytes(data)
                self.upload(key, path, lambda n: None)
            return
        parent, name = self._parent_and_name(key)
        self._put_small(parent, name, data, key)

    def _put_small(self, parent: str, name: str, data: bytes, key: str) -> None:
        url = f"{self._item_url(parent)}:/{quote(name, safe='')}:/content?@microsoft.graph.conflictBehavior=replace"
        self._call("PUT", url, f"uploading {key}", data=data,
                   headers={"Content-Type": "application/octet-stream"})

    def upload(self, key: str, src: Path, progress: Progress) -> None:
        size = src.stat().st_size
        parent, name = self._parent_and_name(key)
        if size <= SIMPLE_LIMIT:
            self._put_small(parent, name, src.read_bytes(), key)
            progress(size)
            return
        for _ in range(3):  # an expired or lost session starts over
            if self._session_upload(parent, name, key, src, size, progress):
                return
        raise StorageUnavailable(f"OneDrive kept dropping the upload session of {key}", hint="try again later")

    def _session_upload(self, parent: str, name: str, key: str, src: Path, size: int, progress: Progress) -> bool:
        """One upload session; False when the session vanished (start a new one)."""
        url = f"{self._item_url(parent)}:/{quote(name, safe='')}:/createUploadSession"
        session = self._call("POST", url, f"starting the upload of {key}",
                             json={"item": {"@microsoft.graph.conflictBehavior": "replace"}}).json()
        upload_url = session["uploadUrl"]  # pre-authenticated: no Authorization header (documented)
        offset, sent, failures = 0, 0, 0
        try:
            with open(src, "rb") as f:
                while offset < size:
                    f.seek(offset)
                    chunk = f.read(min(CHUNK_SIZE, size - offset))
                    headers = {"Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{size}",
                               "Content-Length": str(len(chunk))}
                    try:
                        resp = self._http.put(upload_url, data=chunk, headers=headers, timeout=HTTP_TIMEOUT)
                        if resp.status_code == 404:
                            progress(-sent)
                            return False
                        if resp.status_code != 416:  # 416: those bytes arrived already; ask where to go on
                            self._check(resp, f"uploading {key}", failures, accept=(404,))
                    except (RetryLater, requests.ConnectionError, requests.Timeout) as e:
                        failures += 1
                        if failures >= MAX_TRIES:
                            raise StorageUnavailable(f"OneDrive kept failing while uploading {key}",
                                                     hint="try again later; the set stays incomplete") from None
                        self.sleep(e.delay if isinstance(e, RetryLater) else _backoff(None, failures))
                        resp = None
                    if resp is not None and resp.status_code in (200, 201):
                        progress(size - sent)
                        return True
                    if resp is not None and resp.status_code == 202:
                        failures = 0
                        ranges = resp.json().get("nextExpectedRanges") or []
                    else:  # after a failure, the session says which bytes it still needs
                        status = self._call("GET", upload_url, f"resuming the upload of {key}", auth=False, accept=(404,))
                        if status.status_code == 404:
                            progress(-sent)
                            return False
                        ranges = status.json().get("nextExpectedRanges") or []
                    if not ranges:
                        # every byte arrived but the final answer was lost: the item is complete
                        progress(size - sent)
                        return True
                    offset = int(str(ranges[0]).split("-")[0])
                    if offset != sent:
                        progress(offset - sent)
                        sent = offset
        except BaseException:
            try:  # free the server's temporary space; it also expires by itself
                self._http.delete(upload_url, timeout=10)
            except requests.RequestException:
                pass
            raise
        return True

    def download(self, key: str, dest: Path, progress: Progress) -> None:
        for attempt in range(MAX_TRIES):
            resp = self._call("GET", f"{self._path_url(key)}/content", f"downloading {key}",
                              stream=True)
            got = 0
            try:
                with resp, open(dest, "wb") as f:
                    for block in resp.iter_content(1024 * KiB):
                        f.write(block)
                        got += len(block)
                        progress(len(block))
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                progress(-got)  # start over; the file is truncated by the next open
                if attempt == MAX_TRIES - 1:
                    raise StorageUnavailable(f"OneDrive kept failing while downloading {key}",
                                             hint="try again later") from None
                self.sleep(_backoff(None, attempt))

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._call("GET", self._path_url(src_key), f"copying {src_key}").json()
        parent, name = self._parent_and_name(dst_key)
        if self._drive_id is None:
            self._drive()
        # OneDrive personal ignores conflictBehavior on copy: make room first
        self.delete([dst_key])
        resp = self._call("POST", f"{self._item_url(src['id'])}/copy", f"copying {src_key}",
                          json={"parentReference": {"driveId": self._drive_id, "id": parent}, "name": name})
        monitor = resp.headers.get("Location")
        if resp.status_code != 202 or not monitor:
            return  # done at once
        self._wait_copy(monitor, src_key)

    def _wait_copy(self, monitor: str, what: str) -> None:
        """Poll the copy's monitor URL (no Authorization: it is pre-authenticated)."""
        deadline = time.monotonic() + COPY_TIMEOUT
        delay = 0.05
        while time.monotonic() < deadline:
            resp = self._call("GET", monitor, f"copying {what}", auth=False, allow_redirects=False)
            if resp.status_code == 303:
                return  # redirected to the new item: done
            status = (resp.json() if resp.content else {}).get("status")
            if status == "completed":
                return
            if status == "failed":
                code = ((resp.json().get("error") or {}).get("code")) or "failed"
                if code in ("quotaLimitReached", "insufficientStorage"):
                    raise StorageUnavailable(f"OneDrive storage is full while copying {what}", hint=FULL_HINT)
                raise StorageUnavailable(f"OneDrive could not copy {what} ({code})", hint="try again later")
            self.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise StorageUnavailable(f"OneDrive did not finish copying {what} in {COPY_TIMEOUT:.0f} s",
                                 hint="try again later")

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._call("DELETE", self._path_url(key), f"deleting {key}", accept=(404,))  # 404: already gone


# -- entry points ------------------------------------------------------------------
def parse_url(url: str) -> str:
    """The folder path of ``onedrive://path``; UsageError when empty or unsafe."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "onedrive":
        raise UsageError(f"not a OneDrive URL: {url!r}", hint="use onedrive://folder/path")
    names = [p for p in f"{parts.netloc}{parts.path}".split("/") if p]
    if not names or any(n in (".", "..") or ":" in n for n in names) or parts.query or parts.fragment:
        raise UsageError(
            f"bad OneDrive URL {url!r}",
            hint="use onedrive://folder/path: a folder under the root of your OneDrive, made on first use",
        )
    return "/".join(names)


def open_url(url: str) -> RemoteStorage:
    """A storage on ``onedrive://path``; credentials from the environment, else the stored login."""
    base = parse_url(url)
    data, source = load_credentials()
    return RemoteStorage(GraphStore(f"onedrive://{base}", base, data, source))


def login(echo: Callable[[str], None], prompt: Callable[[str], str]) -> str:
    """Device-code sign-in for a personal Microsoft account; stores the refresh token. Returns where."""
    stored = credentials.load(SERVICE) or {}
    client_id = os.environ.get(ENV["client_id"]) or stored.get("client_id")
    if not client_id:
        echo("OneDrive sign-in needs an application (client) ID: an app registration with public client "
             f"flows allowed and the Files.ReadWrite permission; the steps: {page_url('how-to/onedrive')}")
        client_id = prompt("Application (client) ID").strip()
    if not client_id:
        raise UsageError("an application (client) ID is needed", hint=f"the steps: {page_url('how-to/onedrive')}",
                         topic="cloud-credentials")
    app = _msal_app(client_id)
    flow = app.initiate_device_flow(scopes=SCOPES)
    if "user_code" not in flow:
        raise CredentialsError(f"OneDrive sign-in could not start ({flow.get('error', 'unknown error')})",
                               hint="check the application (client) ID and that it allows public client flows")
    echo(flow["message"])  # "To sign in, use a web browser to open ... and enter the code ..."
    result = app.acquire_token_by_device_flow(flow)
    if "refresh_token" not in result:
        raise _token_error(result if "error" in result else {"error": "no_refresh_token"}, "login")
    credentials.register(result.get("access_token", ""))
    return credentials.save(SERVICE, {"client_id": client_id, "refresh_token": result["refresh_token"]})


def describe() -> str:
    """One line for ``login --status``: signed in or not, and from where; never a token."""
    try:
        _, source = load_credentials()
    except CredentialsError:
        return f"not signed in ({LOGIN_HINT}, or set {' and '.join(ENV.values())})"
    return f"signed in (from the {source})"

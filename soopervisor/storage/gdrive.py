"""Google Drive storage: ``gdrive://FOLDER`` through the Drive v3 API (google-api-python-client).

``gdrive://FOLDER`` names a folder **by name** directly under *My Drive*
(``gdrive://soopervisor/artifacts`` a folder inside it). soopervisor asks
only for the ``drive.file`` scope, so it sees the files and folders it created
itself and nothing else in the account: it finds its own folder by that name,
or creates it on the first write. A folder of the same name created in the
Drive web page is invisible to it (and left alone).

Sets are stored as ``FOLDER/<project>/<commit>/<name>`` — real folders, so
the artifacts are browsable in Drive. Files above :data:`RESUMABLE_THRESHOLD`
go through Drive's resumable upload protocol in :data:`CHUNK_SIZE` chunks; a
failed chunk is resumed from the byte the server reports it has.

Setting up sign-in (once) — why your own OAuth client
------------------------------------------------------
Google lets an OAuth client be used by the public with Drive scopes only after
the app is verified, and a client secret shipped inside an open-source package
is not a secret. So each user brings a client of their own, in their own
Google Cloud project; with the non-sensitive ``drive.file`` scope it works for
its owner without any review:

1. https://console.cloud.google.com/ → create (or pick) a project.
2. *APIs & Services → Library* → enable the **Google Drive API**.
3. *APIs & Services → OAuth consent screen* (Google Auth Platform): user type
   *External*, fill in the app name and your e-mail, add the scope
   ``.../auth/drive.file``, add yourself as a test user — then **Publish app**
   (status *In production*): in *Testing* status Google expires refresh tokens
   after 7 days. Publishing an app with only non-sensitive scopes needs no
   verification.
4. *Credentials → Create credentials → OAuth client ID*, type **Desktop app**.
   Note its client ID and client secret.
5. ``soopervisor login gdrive`` asks for them (or reads
   ``SOOPERVISOR_GDRIVE_CLIENT_ID`` / ``SOOPERVISOR_GDRIVE_CLIENT_SECRET``),
   opens the consent page (or prints its link), and stores the refresh token.

CI: set ``SOOPERVISOR_GDRIVE_CLIENT_ID``, ``SOOPERVISOR_GDRIVE_CLIENT_SECRET``
and ``SOOPERVISOR_GDRIVE_REFRESH_TOKEN`` (the stored refresh token; the
environment wins over the stored login).

Other endpoints (tests, private deployments): ``SOOPERVISOR_GDRIVE_API_URL``
replaces ``https://www.googleapis.com/`` (the API *and* the upload URLs, which
the client derives from the discovery document's ``rootUrl``),
``SOOPERVISOR_GDRIVE_TOKEN_URL`` the token endpoint and
``SOOPERVISOR_GDRIVE_AUTH_URL`` the consent page.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage, RetryLater, retry_delay
from soopervisor.troubleshooting import page_url

SERVICE = "gdrive"
#: field -> environment variable, for CI (all three are needed)
ENV = ci_env.ENV[SERVICE]
API_URL_ENV = "SOOPERVISOR_GDRIVE_API_URL"
TOKEN_URL_ENV = "SOOPERVISOR_GDRIVE_TOKEN_URL"
AUTH_URL_ENV = "SOOPERVISOR_GDRIVE_AUTH_URL"

SCOPES = ["https://www.googleapis.com/auth/drive.file"]
TOKEN_URL = "https://oauth2.googleapis.com/token"
AUTH_URL = "https://accounts.google.com/o/oauth2/auth"
FOLDER_MIME = "application/vnd.google-apps.folder"

#: files larger than this use the resumable protocol (Drive: simple/multipart up to 5 MB)
RESUMABLE_THRESHOLD = 5 * 1024 * 1024
#: resumable chunk; Drive requires a multiple of 256 KiB
CHUNK_SIZE = 32 * 256 * 1024
#: attempts of one request on throttling and transient errors
MAX_TRIES = 6
HTTP_TIMEOUT = 120

LOGIN_HINT = "soopervisor login gdrive"


def _env_hint() -> str:
    return f"{LOGIN_HINT} (in CI: set {', '.join(ENV.values())})"


# -- credentials -------------------------------------------------------------------
def load_credentials() -> tuple[dict[str, str], str]:
    """(client_id/client_secret/refresh_token, "environment" or "stored login"); CredentialsError if none."""
    return credentials.required(SERVICE, ENV, "Google Drive", hint=_env_hint())


def _google_credentials(data: dict[str, str]):
    from google.oauth2.credentials import Credentials

    class _Registered(Credentials):
        """Masks each new access token (see credentials.register) as soon as it arrives."""

        def refresh(self, request: Any) -> None:
            super().refresh(request)
            credentials.register(self.token)

    return _Registered(
        token=None,
        refresh_token=data["refresh_token"],
        client_id=data["client_id"],
        client_secret=data["client_secret"],
        token_uri=os.environ.get(TOKEN_URL_ENV) or TOKEN_URL,
        scopes=SCOPES,
    )


def _build_service(creds) -> Any:
    """A Drive v3 client over its own httplib2 connection (httplib2 is not thread-safe)."""
    import google_auth_httplib2
    import httplib2
    from googleapiclient import discovery
    from googleapiclient.discovery_cache import get_static_doc

    raw = httplib2.Http(timeout=HTTP_TIMEOUT)
    # 308 means "Resume Incomplete" to Drive, not a redirect (as googleapiclient's build_http does)
    raw.redirect_codes = raw.redirect_codes - {308}
    http = google_auth_httplib2.AuthorizedHttp(creds, http=raw)
    doc = json.loads(get_static_doc("drive", "v3"))
    root = os.environ.get(API_URL_ENV)
    if root:
        # client_options' api_endpoint alone keeps the upload URLs' https scheme;
        # the upload URLs come from rootUrl, so rebase the (packaged) document itself.
        root = root.rstrip("/") + "/"
        doc["rootUrl"] = root
        doc["baseUrl"] = root + doc["servicePath"]
        doc["batchPath"] = "batch/drive/v3"
    return discovery.build_from_document(doc, http=http)


# -- errors ------------------------------------------------------------------------
def _reason(e) -> str:
    """Google's error reason ("storageQuotaExceeded", "rateLimitExceeded", ...) of an HttpError."""
    try:
        error = json.loads(e.content.decode("utf-8"))["error"]
        errors = error.get("errors") or [{}]
        return errors[0].get("reason") or error.get("status") or ""
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return ""


def _retry_after(headers: Any, attempt: int) -> float:
    """Seconds to wait, from a response's headers (or None: a dropped connection)."""
    try:
        value = headers.get("retry-after")
    except AttributeError:
        value = None
    return retry_delay(value, attempt)


def _translate(e: BaseException, what: str, attempt: int, source: str) -> BaseException:
    """A user-facing error for ``e``, or RetryLater when it is worth another attempt."""
    from google.auth.exceptions import RefreshError, TransportError
    from googleapiclient.errors import HttpError

    if isinstance(e, RefreshError):
        # the refresh token is expired, revoked, or its client was deleted
        hint = LOGIN_HINT if source != "environment" else (
            f"{LOGIN_HINT}, then put the new refresh token in {ENV['refresh_token']}")
        return CredentialsError("the Google Drive sign-in has expired or was revoked", hint=hint)
    if isinstance(e, HttpError):
        status, reason = e.resp.status, _reason(e)
        if status == 429 or status >= 500 or reason in ("rateLimitExceeded", "userRateLimitExceeded"):
            return RetryLater(_retry_after(e.resp, attempt), f"{status} {reason}".strip())
        if status == 401:
            return CredentialsError("Google Drive refused the sign-in (401)", hint=LOGIN_HINT)
        if reason in ("storageQuotaExceeded", "quotaExceeded", "teamDriveFileLimitExceeded"):
            return StorageUnavailable(
                f"Google Drive storage is full while {what}",
                hint="free space in Google Drive (and empty its trash), or store elsewhere with --storage",
            )
        if status == 404:
            return ArtifactsNotFound(f"not found in Google Drive: {what}")
        return StorageUnavailable(f"Google Drive refused {what}: HTTP {status} {reason}".rstrip(),
                                  hint="check the gdrive:// URL and your sign-in (soopervisor login --status)")
    if isinstance(e, (TransportError, OSError)) or type(e).__module__.startswith("httplib2"):
        return RetryLater(_retry_after(None, attempt), type(e).__name__)
    return e


# -- the object store --------------------------------------------------------------
def _q(value: str) -> str:
    """A string literal of Drive's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class DriveStore:
    """Objects as files in a folder tree under My Drive; see the module docstring."""

    def __init__(self, url: str, folder: list[str], creds: dict[str, str], source: str) -> None:
        self.url = url
        self.folder = folder
        self.source = source
        self._creds = _google_credentials(creds)
        self._local = threading.local()
        self._lock = threading.Lock()  # folder creation: two threads must not make twin folders
        self._folders: dict[str, str] = {}  # folder key ("" is the root) -> id
        self.sleep: Callable[[float], None] = time.sleep

    # plumbing
    @property
    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = _build_service(self._creds)
        return api

    def _run(self, what: str, make: Callable[[], Any]) -> Any:
        """``make().execute()`` with retries; user-facing errors."""
        for attempt in range(MAX_TRIES):
            try:
                return make().execute()
            except Exception as e:  # noqa: BLE001 - translated below
                err = _translate(e, what, attempt, self.source)
                if not isinstance(err, RetryLater) or attempt == MAX_TRIES - 1:
                    if isinstance(err, RetryLater):
                        raise StorageUnavailable(f"Google Drive kept failing while {what} ({err.why})",
                                                 hint="try again later") from None
                    raise err from None
                self.sleep(err.delay)
        raise AssertionError("unreachable")

    def _children(self, parent: str, name: str | None = None, folders: bool | None = None) -> Iterator[dict]:
        q = [f"{_q(parent)} in parents", "trashed = false"]
        if name is not None:
            q.append(f"name = {_q(name)}")
        if folders is not None:
            q.append(f"mimeType {'=' if folders else '!='} {_q(FOLDER_MIME)}")
        token = None
        while True:
            page = self._run(f"listing {self.url}", lambda token=token: self._api.files().list(
                q=" and ".join(q), spaces="drive", pageSize=1000, pageToken=token,
                fields="nextPageToken, files(id, name, mimeType, size)"))
            yield from page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return

    def _folder(self, key: str, create: bool) -> str | None:
        """The id of folder ``key`` ("" = the store's root), made when ``create``; None when missing."""
        if key in self._folders:
            return self._folders[key]
        if key == "":
            fid: str | None = "root"  # Drive's alias of My Drive
            for name in self.folder:
                fid = self._child_folder(fid, name, create)
                if fid is None:
                    return None
        else:
            head, _, name = key.rpartition("/")
            parent = self._folder(head, create)
            fid = None if parent is None else self._child_folder(parent, name, create)
        if fid is not None:
            self._folders[key] = fid
        return fid

    def _child_folder(self, parent: str, name: str, create: bool) -> str | None:
        found = next(iter(self._children(parent, name, folders=True)), None)
        if found is None and create:
            with self._lock:  # another thread may have made it meanwhile
                found = next(iter(self._children(parent, name, folders=True)), None)
                if found is None:
                    found = self._run(f"creating folder {name}", lambda: self._api.files().create(
                        body={"name": name, "mimeType": FOLDER_MIME, "parents": [parent]}, fields="id"))
        return found["id"] if found else None

    def _split(self, key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        return folder, name

    def _file_ids(self, key: str) -> list[str]:
        folder, name = self._split(key)
        parent = self._folder(folder, create=False)
        if parent is None:
            return []
        return [f["id"] for f in self._children(parent, name, folders=False)]

    def _file_id(self, key: str) -> str:
        ids = self._file_ids(key)
        if not ids:
            raise ArtifactsNotFound(f"{key} is not in {self.url}")
        return ids[0]

    # ObjectStore
    def check_writable(self) -> None:
        self._folder("", create=True)
        about = self._run("reading the storage quota", lambda: self._api.about().get(fields="storageQuota"))
        quota = about.get("storageQuota", {})
        if quota.get("limit") and int(quota.get("usage", 0)) >= int(quota["limit"]):
            raise StorageUnavailable(
                "Google Drive storage is full",
                hint="free space in Google Drive (and empty its trash), or store elsewhere with --storage",
            )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = prefix.rstrip("/")
        folder = self._folder(start, create=False)
        if folder is None:
            return
        stack = [(folder, start)]
        while stack:
            fid, key = stack.pop()
            for item in self._children(fid):
                child = f"{key}/{item['name']}" if key else item["name"]
                if item.get("mimeType") == FOLDER_MIME:
                    self._folders.setdefault(child, item["id"])
                    stack.append((item["id"], child))
                else:
                    yield ObjectInfo(child, int(item.get("size", 0)))

    def read(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._download(key, buf, lambda n: None)
        return buf.getvalue()

    def write(self, key: str, data: bytes) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        # a manifest carries the run's log: it may outgrow a single request
        resumable = len(data) > RESUMABLE_THRESHOLD
        self._replace(key, lambda: MediaIoBaseUpload(io.BytesIO(data), mimetype="application/octet-stream",
                                                     resumable=resumable,
                                                     chunksize=CHUNK_SIZE if resumable else -1),
                      len(data), lambda n: None)

    def upload(self, key: str, src: Path, progress: Progress) -> None:
        from googleapiclient.http import MediaFileUpload

        size = src.stat().st_size
        resumable = size > RESUMABLE_THRESHOLD
        self._replace(key, lambda: MediaFileUpload(str(src), mimetype="application/octet-stream", resumable=resumable,
                                                   chunksize=CHUNK_SIZE if resumable else -1),
                      size, progress)

    def _replace(self, key: str, media: Callable[[], Any], size: int, progress: Progress) -> None:
        folder, name = self._split(key)
        old = self._file_ids(key)
        parent = self._folder(folder, create=True)
        body = {"name": name, "parents": [parent]}
        m = media()
        if not m.resumable():
            self._run(f"uploading {key}", lambda: self._api.files().create(body=body, media_body=m, fields="id"))
            progress(size)
        else:
            self._resumable(key, body, m, progress)
        # the new file exists before the old one goes: readers never find neither
        self._delete_ids(old, key)

    def _resumable(self, key: str, body: dict, media: Any, progress: Progress) -> None:
        """Drive's resumable protocol, chunk by chunk; after a failure the client asks the
        session which bytes arrived (an empty PUT with ``Content-Range: bytes */size``)
        and continues from there."""
        request = self._api.files().create(body=body, media_body=media, fields="id")
        sent, failures, restarts = 0, 0, 0
        response = None
        while response is None:
            try:
                _, response = request.next_chunk()
            except Exception as e:  # noqa: BLE001 - translated below
                from googleapiclient.errors import HttpError

                if isinstance(e, HttpError) and e.resp.status in (404, 410) and restarts < 2:
                    # the session expired or is unknown: start a new one
                    restarts += 1
                    request = self._api.files().create(body=body, media_body=media, fields="id")
                    progress(-sent)
                    sent = 0
                    continue
                err = _translate(e, f"uploading {key}", failures, self.source)
                if not isinstance(err, RetryLater):
                    raise err from None
                failures += 1
                if failures >= MAX_TRIES:
                    raise StorageUnavailable(f"Google Drive kept failing while uploading {key} ({err.why})",
                                             hint="try again later; the set stays incomplete") from None
                self.sleep(err.delay)
                continue
            failures = 0
            done = media.size() if response is not None else request.resumable_progress
            if done != sent:
                progress(done - sent)
                sent = done

    def download(self, key: str, dest: Path, progress: Progress) -> None:
        with open(dest, "wb") as f:
            self._download(key, f, progress)

    def _download(self, key: str, out: Any, progress: Progress) -> None:
        from googleapiclient.http import MediaIoBaseDownload

        fid = self._file_id(key)
        dl = MediaIoBaseDownload(out, self._api.files().get_media(fileId=fid), chunksize=CHUNK_SIZE)
        done, failures, got = False, 0, 0
        while not done:
            try:
                status, done = dl.next_chunk()
            except Exception as e:  # noqa: BLE001 - translated below
                err = _translate(e, f"downloading {key}", failures, self.source)
                if not isinstance(err, RetryLater):
                    raise err from None
                failures += 1
                if failures >= MAX_TRIES:
                    raise StorageUnavailable(f"Google Drive kept failing while downloading {key} ({err.why})",
                                             hint="try again later") from None
                self.sleep(err.delay)
                continue
            failures = 0
            if status.resumable_progress != got:
                progress(status.resumable_progress - got)
                got = status.resumable_progress

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._file_id(src_key)
        folder, name = self._split(dst_key)
        old = self._file_ids(dst_key)
        parent = self._folder(folder, create=True)
        self._run(f"copying {src_key}", lambda: self._api.files().copy(
            fileId=src, body={"name": name, "parents": [parent]}, fields="id"))
        self._delete_ids(old, dst_key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._delete_ids(self._file_ids(key), key)

    def _delete_ids(self, ids: list[str], key: str) -> None:
        for fid in ids:
            try:
                self._run(f"deleting {key}", lambda fid=fid: self._api.files().delete(fileId=fid))
            except ArtifactsNotFound:
                pass  # already gone


# -- entry points ------------------------------------------------------------------
def parse_url(url: str) -> list[str]:
    """The folder names of ``gdrive://FOLDER[/SUB...]``; UsageError when there are none."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "gdrive":
        raise UsageError(f"not a Google Drive URL: {url!r}", hint="use gdrive://FOLDER")
    names = [p for p in f"{parts.netloc}{parts.path}".split("/") if p]
    if not names or any(n in (".", "..") for n in names) or parts.query or parts.fragment:
        raise UsageError(
            f"bad Google Drive URL {url!r}",
            hint="use gdrive://FOLDER: a folder name under My Drive, made by soopervisor on first use",
        )
    return names


def open_url(url: str) -> RemoteStorage:
    """A storage on ``gdrive://FOLDER``; credentials from the environment, else the stored login."""
    folder = parse_url(url)
    data, source = load_credentials()
    return RemoteStorage(DriveStore(f"gdrive://{'/'.join(folder)}", folder, data, source))


def _client_config(client_id: str, client_secret: str) -> dict[str, Any]:
    return {"installed": {
        "client_id": client_id,
        "client_secret": client_secret,
        "auth_uri": os.environ.get(AUTH_URL_ENV) or AUTH_URL,
        "token_uri": os.environ.get(TOKEN_URL_ENV) or TOKEN_URL,
        "redirect_uris": ["http://127.0.0.1", "http://localhost"],
    }}


def _has_browser() -> bool:
    try:
        webbrowser.get()
        return True
    except webbrowser.Error:
        return False


def login(echo: Callable[[str], None], prompt: Callable[[str], str], console: bool | None = None) -> str:
    """Sign in with the user's own OAuth client; stores the refresh token. Returns where.

    ``console`` (default: when no browser is available) prints the consent link and
    asks for the address the browser was sent back to, for machines without a browser.
    """
    from google_auth_oauthlib.flow import InstalledAppFlow

    stored = credentials.load(SERVICE) or {}
    client_id = os.environ.get(ENV["client_id"]) or stored.get("client_id")
    client_secret = os.environ.get(ENV["client_secret"]) or stored.get("client_secret")
    if not client_id or not client_secret:
        echo("Google Drive needs an OAuth client of your own (a 'Desktop app' client in your Google Cloud "
             f"project, with the Drive API enabled and the drive.file scope); the steps: "
             f"{page_url('how-to/google-drive')}")
        client_id = client_id or prompt("OAuth client ID").strip()
        client_secret = client_secret or prompt("OAuth client secret").strip()
    if not client_id or not client_secret:
        raise UsageError("a client ID and a client secret are needed",
                         hint=f"the steps: {page_url('how-to/google-drive')}", topic="cloud-credentials")
    credentials.register({"client_secret": client_secret})
    flow = InstalledAppFlow.from_client_config(_client_config(client_id, client_secret), scopes=SCOPES)
    if console is None:
        console = not _has_browser()
    if console:
        # Google retired the copy-the-code (oob) flow: the browser is sent to a loopback
        # address that nothing answers here, and the user pastes that address back.
        flow.redirect_uri = "http://127.0.0.1:1/"
        auth_url, _ = flow.authorization_url(access_type="offline", prompt="consent")
        echo("Open this link in a browser and allow access:")
        echo(auth_url)
        echo("The browser then fails to open a 127.0.0.1 page: that is expected.")
        answer = prompt("Paste the address it shows (or just its code= value)").strip()
        code = parse_qs(urlsplit(answer).query).get("code", [answer])[0] if "code=" in answer else answer
        if not code:
            raise UsageError("no authorization code was given", hint=LOGIN_HINT)
        try:
            flow.fetch_token(code=code)
        except Exception as e:  # noqa: BLE001 - oauthlib raises many kinds
            raise CredentialsError(f"Google did not accept the code ({type(e).__name__})", hint=LOGIN_HINT) from None
    else:
        flow.run_local_server(
            host="127.0.0.1", port=0, open_browser=True, access_type="offline", prompt="consent",
            authorization_prompt_message="Opening your browser; if it does not open, visit: {url}",
            success_message="soopervisor is signed in to Google Drive; you can close this tab.",
        )
    token = flow.credentials.refresh_token
    if not token:
        raise CredentialsError("Google returned no refresh token", hint=f"{LOGIN_HINT} (allow offline access)")
    return credentials.save(SERVICE, {"client_id": client_id, "client_secret": client_secret,
                                      "refresh_token": token})


def describe() -> str:
    """One line for ``login --status``: signed in or not, and from where; never a token."""
    try:
        _, source = load_credentials()
    except CredentialsError:
        return f"not signed in ({LOGIN_HINT}, or set {', '.join(ENV.values())})"
    return f"signed in (from the {source})"

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

Drive allows many items of one name in a folder, so a create retried after its
reply was lost (httplib2 itself resends a request whose answer never came)
would make a twin. Every folder, file and copy is therefore created with an id
reserved beforehand (``files.generateIds``): a repeated create gets ``409``,
and is done once the item of that id is checked to be the one we meant. Folder
look-ups go through what this process already made or found; where twins
exist anyway (made by an older soopervisor, or by two runs creating the same
folder at once) the oldest (``createdTime``, then id) is used, and the others
are healed: their contents are moved into it, and a twin left empty goes to the
Drive trash once nothing was written into it for :data:`TWIN_GRACE` seconds
(a younger one may still be in use by a run). Where a move is refused, a
warning names both folders. Of several files of one name, the newest counts.

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
and ``SOOPERVISOR_GDRIVE_REFRESH_TOKEN`` (the environment wins over the stored
login); :func:`login_for_ci` (``soopervisor login gdrive --ci``) signs in anew
and returns them without storing anything, so CI holds a token of its own.

Other endpoints (tests, private deployments): ``SOOPERVISOR_GDRIVE_API_URL``
replaces ``https://www.googleapis.com/`` (the API *and* the upload URLs, which
the client derives from the discovery document's ``rootUrl``),
``SOOPERVISOR_GDRIVE_TOKEN_URL`` the token endpoint and
``SOOPERVISOR_GDRIVE_AUTH_URL`` the consent page.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import webbrowser
from collections.abc import Callable, Iterator
from datetime import datetime
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
#: ids reserved by one files.generateIds call (Drive gives up to 1000)
ID_BATCH = 50
#: seconds without anything new in a twin folder before it is trashed (an active run writes within minutes)
TWIN_GRACE = 24 * 3600
#: documented: My Drive holds at most 100 levels of nested folders
MAX_DEPTH = 100
#: Drive's error reasons: throttling (retried with backoff) and quotas
RATE_LIMITS = ("rateLimitExceeded", "userRateLimitExceeded")
REQUEST_QUOTAS = ("quotaExceeded", "dailyLimitExceeded")
ITEM_LIMITS = {
    "teamDriveFileLimitExceeded": "the shared drive holds the most items it may",
    "numChildrenInNonRootLimitExceeded": "a folder holds the most items it may (500,000)",
    "myDriveHierarchyDepthLimitExceeded": "My Drive allows at most 100 levels of nested folders",
}

log = logging.getLogger(__name__)


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


class _Exists(Exception):  # a signal: a create with a reserved id found the item made (409)
    pass


def _expired_hint(source: str) -> str:
    fix = LOGIN_HINT if source != "environment" else (
        f"{LOGIN_HINT} --ci, then put the new refresh token in {ENV['refresh_token']}")
    return (f"{fix}; if it keeps expiring after 7 days, your OAuth app is in 'Testing' status: publish it "
            f"(Google Auth Platform → Audience → Publish app), then sign in again: {page_url('how-to/google-drive')}")


def _translate(e: BaseException, what: str, attempt: int, source: str) -> BaseException:
    """A user-facing error for ``e``, or RetryLater when it is worth another attempt."""
    from google.auth.exceptions import RefreshError, TransportError
    from googleapiclient.errors import HttpError

    if isinstance(e, RefreshError):
        # the refresh token is expired (7 days for apps in "Testing"), revoked, or its client was deleted
        return CredentialsError("the Google Drive sign-in has expired or was revoked", hint=_expired_hint(source))
    if isinstance(e, HttpError):
        status, reason = e.resp.status, _reason(e)
        if status == 409:
            return _Exists(what)
        if status == 429 or status >= 500 or reason in RATE_LIMITS or reason in REQUEST_QUOTAS:
            # quotaExceeded is a quota of requests (often per minute), not of storage
            return RetryLater(_retry_after(e.resp, attempt), f"{status} {reason}".strip())
        if status == 401:
            return CredentialsError("Google Drive refused the sign-in (401)", hint=LOGIN_HINT)
        if reason == "storageQuotaExceeded":
            return StorageUnavailable(
                f"Google Drive storage is full while {what}",
                hint="free space in Google Drive (and empty its trash), or store elsewhere with --storage",
            )
        if reason in ITEM_LIMITS:
            return StorageUnavailable(f"Google Drive refused {what}: {ITEM_LIMITS[reason]} ({reason})",
                                      hint="store the set elsewhere with --storage, or in a new gdrive:// folder")
        if status == 404:
            return ArtifactsNotFound(f"not found in Google Drive: {what}")
        return StorageUnavailable(f"Google Drive refused {what}: HTTP {status} {reason}".rstrip(),
                                  hint="check the gdrive:// URL and your sign-in (soopervisor login --status)")
    if isinstance(e, (TransportError, OSError)) or type(e).__module__.startswith("httplib2"):
        return RetryLater(_retry_after(None, attempt), type(e).__name__)
    return e


def _gave_up(what: str, why: str, tail: str = "") -> StorageUnavailable:
    """The error once the retries of a throttled or failing request are spent."""
    if any(r in why for r in REQUEST_QUOTAS):
        return StorageUnavailable(
            f"Google Drive's request quota is used up while {what} ({why})",
            hint="wait and try again; your OAuth project's Drive API quotas are in the Google Cloud console "
                 "(APIs & Services → Google Drive API → Quotas)")
    return StorageUnavailable(f"Google Drive kept failing while {what} ({why})", hint=f"try again later{tail}")


def _time(stamp: str | None) -> float | None:
    """An RFC 3339 time of Drive as seconds since the epoch; None when absent or unreadable."""
    try:
        return datetime.fromisoformat(stamp or "").timestamp()
    except ValueError:
        return None


def _oldest(items: list[dict]) -> list[dict]:
    """Twins in the order every client agrees on: oldest createdTime, then id."""
    return sorted(items, key=lambda f: (f.get("createdTime") or "9999", f["id"]))


def _newest(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda f: (f.get("createdTime") or "", f["id"]), reverse=True)


# -- the object store --------------------------------------------------------------
def _q(value: str) -> str:
    """A string literal of Drive's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class DriveStore:
    """Objects as files in a folder tree under My Drive; see the module docstring."""

    service = "Google Drive"

    def __init__(self, url: str, folder: list[str], creds: dict[str, str], source: str) -> None:
        self.url = url
        self.folder = folder
        self.source = source
        self._creds = _google_credentials(creds)
        self._local = threading.local()
        # folder look-ups and creation, twin healing: one at a time, so two threads never make twin folders
        self._lock = threading.RLock()
        self._known: dict[tuple[str, str], str] = {}  # (parent id, name) -> folder id made or found here
        self._unmerged: dict[tuple[str, str], list[str]] = {}  # twins that could not be merged: read them too
        self._ids: list[str] = []  # reserved by files.generateIds, not used yet
        self._ids_lock = threading.Lock()
        self.sleep: Callable[[float], None] = time.sleep
        self.now: Callable[[], float] = time.time

    # plumbing
    @property
    def _api(self) -> Any:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = _build_service(self._creds)
        return api

    def _run(self, what: str, make: Callable[[], Any]) -> Any:
        """``make().execute()`` with retries; user-facing errors (and _Exists for a 409)."""
        for attempt in range(MAX_TRIES):
            try:
                return make().execute()
            except Exception as e:  # noqa: BLE001 - translated below
                err = _translate(e, what, attempt, self.source)
                if not isinstance(err, RetryLater) or attempt == MAX_TRIES - 1:
                    if isinstance(err, RetryLater):
                        raise _gave_up(what, err.why) from None
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
                fields="nextPageToken, files(id, name, mimeType, size, createdTime)"))
            yield from page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return

    # creates with reserved ids: a repeated create is harmless
    def _new_id(self) -> str:
        with self._ids_lock:
            if not self._ids:
                got = self._run("reserving file ids", lambda: self._api.files().generateIds(
                    count=ID_BATCH, space="drive", type="files"))
                self._ids = list(got.get("ids") or [])
                if not self._ids:
                    raise StorageUnavailable("Google Drive gave no file ids", hint="try again later")
            return self._ids.pop()

    def _create(self, what: str, body: dict, make: Callable[[dict], Any], size: int | None = None) -> str:
        """Create the item of ``body`` (its ``id`` reserved) through ``make(body)``; its id.

        A 409 means an earlier attempt, whose reply was lost, made it: done, once the
        item of that id is the one we meant (same name and folder, and size)."""
        try:
            self._run(what, lambda: make(body))
        except _Exists:
            self._check_ours(what, body, size)
        return body["id"]

    def _check_ours(self, what: str, body: dict, size: int | None) -> None:
        try:
            got = self._run(what, lambda: self._api.files().get(
                fileId=body["id"], fields="id, name, mimeType, parents, size, trashed"))
        except ArtifactsNotFound:
            got = {}
        ours = (got.get("name") == body["name"] and body["parents"][0] in (got.get("parents") or [])
                and not got.get("trashed")
                and (size is None or int(got.get("size") or 0) == size))
        if not ours:
            raise StorageUnavailable(
                f"Google Drive refused {what}: its reserved id {body['id']} names another item",
                hint="try again (a new id is reserved)")

    # folders
    def _folder(self, key: str, create: bool) -> str | None:
        """The id of folder ``key`` ("" = the store's root), made when ``create``; None when missing."""
        fid = "root"  # Drive's alias of My Drive
        names = [*self.folder, *(key.split("/") if key else [])]
        for depth, name in enumerate(names, 1):
            fid = self._child_folder(fid, name, create, "/".join(names[:depth]))
            if fid is None:
                return None
        return fid

    def _folder_ids(self, key: str) -> list[str]:
        """Every folder that holds ``key``'s contents: the one in use and twins that could not be merged."""
        ids = ["root"]
        names = [*self.folder, *(key.split("/") if key else [])]
        for depth, name in enumerate(names, 1):
            found = []
            for parent in ids:
                fid = self._child_folder(parent, name, False, "/".join(names[:depth]))
                if fid is not None:
                    found += [fid, *self._unmerged.get((parent, name), [])]
            ids = found
            if not ids:
                break
        return ids

    def _child_folder(self, parent: str, name: str, create: bool, path: str) -> str | None:
        fid = self._known.get((parent, name))
        if fid is None:
            fid = self._find_folder(parent, name, path)
        if fid is None and create:
            with self._lock:
                # what this process made meanwhile first: Drive's listing may not show it yet
                fid = self._known.get((parent, name)) or self._find_folder(parent, name, path)
                if fid is None:
                    fid = self._create(f"creating folder {path}", {
                        "id": self._new_id(), "name": name, "mimeType": FOLDER_MIME, "parents": [parent]},
                        lambda body: self._api.files().create(body=body, fields="id"))
                self._known[(parent, name)] = fid
        elif fid is not None:
            self._known.setdefault((parent, name), fid)
        return fid

    def _find_folder(self, parent: str, name: str, path: str) -> str | None:
        found = list(self._children(parent, name, folders=True))
        if not found:
            return None
        if len(found) == 1:
            return found[0]["id"]
        return self._heal(parent, found, path)[0]

    def _heal(self, parent: str, twins: list[dict], path: str) -> tuple[str, list[str]]:
        """Folders of one name in one folder: the oldest is kept, the others are merged into it.
        Returns the kept id and the ids of twins that could not be merged (a warning names them)."""
        with self._lock:
            keep, *others = _oldest(twins)
            name = keep["name"]
            known = self._known.get((parent, name))
            if known is not None:
                # healed, or made, by this process already: it stays in use; a twin made meanwhile by
                # another run is read and listed as well, and merged by the next process to look it up
                others = [t["id"] for t in twins if t["id"] != known]
                self._unmerged[(parent, name)] = others
                return known, others
            left = []
            for twin in others:
                try:
                    newest = self._merge(keep["id"], twin, path)
                    age = self.now() - (_time(newest) or self.now())
                    if age >= TWIN_GRACE:
                        self._run(f"trashing the emptied twin of {path}", lambda twin=twin: self._api.files().update(
                            fileId=twin["id"], body={"trashed": True}, fields="id"))
                        log.warning("soopervisor: warning: gdrive://%s had twin folders; the contents of %s were "
                                    "moved into %s, and the empty twin is in the Drive trash", path, twin["id"],
                                    keep["id"])
                    else:
                        log.warning("soopervisor: warning: gdrive://%s had twin folders; the contents of %s were "
                                    "moved into %s; the empty twin is left for now (a run may still be writing "
                                    "into it) and goes to the trash once it has been quiet for a day", path,
                                    twin["id"], keep["id"])
                except (StorageUnavailable, ArtifactsNotFound) as e:
                    left.append(twin["id"])
                    log.warning("soopervisor: warning: gdrive://%s has twin folders %s (used) and %s, which could "
                                "not be merged (%s); move the contents of the second into the first in Drive, then "
                                "delete it", path, keep["id"], twin["id"], e.message)
            self._known[(parent, name)] = keep["id"]
            if left:
                self._unmerged[(parent, name)] = left
            return keep["id"], left

    def _merge(self, keep: str, twin: dict, path: str) -> str:
        """Move everything in ``twin`` into folder ``keep`` (sub-folders of one name merged in turn);
        returns the newest createdTime seen in the twin."""
        newest = twin.get("createdTime") or ""
        for _ in range(2):  # again: a run may have added items while they moved
            children = list(self._children(twin["id"]))
            moved = False
            kept = {}
            for f in _newest(list(self._children(keep, folders=True))):
                kept[f["name"]] = f  # the oldest of each name ends up here
            for child in children:
                newest = max(newest, child.get("createdTime") or "")
                inner = kept.get(child["name"]) if child.get("mimeType") == FOLDER_MIME else None
                if inner is not None:
                    if inner["id"] != child["id"]:
                        newest = max(newest, self._merge(inner["id"], child, f"{path}/{child['name']}"))
                    continue
                self._run(f"moving {child['name']} out of a twin of {path}", lambda child=child: self._api.files(
                    ).update(fileId=child["id"], addParents=keep, removeParents=twin["id"], body={}, fields="id"))
                moved = True
            if not moved:
                break
        return newest

    def _split(self, key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        return folder, name

    def _file_ids(self, key: str) -> list[str]:
        """The ids of the files at ``key``, newest first (after a failed replace there may be two)."""
        folder, name = self._split(key)
        found = [f for parent in self._folder_ids(folder) for f in self._children(parent, name, folders=False)]
        return [f["id"] for f in _newest(found)]

    def _file_id(self, key: str) -> str:
        ids = self._file_ids(key)
        if not ids:
            raise ArtifactsNotFound(f"{key} is not in {self.url}")
        return ids[0]

    # ObjectStore
    def refused(self, key: str) -> str | None:
        """Why Drive would refuse ``key``: it takes any name, but My Drive nests at most 100 folders."""
        depth = len(self.folder) + key.count("/")
        if depth > MAX_DEPTH:
            return f"{depth} levels of folders; My Drive allows at most {MAX_DEPTH}"
        return None

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
        stack = [(folder, start) for folder in reversed(self._folder_ids(start))]
        seen: set[str] = set()
        while stack:
            fid, key = stack.pop()
            folders: dict[str, list[dict]] = {}
            files: dict[str, dict] = {}
            for item in self._children(fid):
                if item.get("mimeType") == FOLDER_MIME:
                    folders.setdefault(item["name"], []).append(item)
                else:
                    files.setdefault(item["name"], item)
                    if _newest([files[item["name"]], item])[0] is item:
                        files[item["name"]] = item  # of several files of one name, the newest counts
            for name, group in folders.items():
                child = f"{key}/{name}" if key else name
                if len(group) == 1:
                    self._known.setdefault((fid, name), group[0]["id"])
                    stack.append((group[0]["id"], child))
                else:
                    kept, left = self._heal(fid, group, f"{'/'.join(self.folder)}/{child}")
                    stack.extend((i, child) for i in [kept, *left])  # unmerged twins are listed too
            for name, item in files.items():
                child = f"{key}/{name}" if key else name
                if child not in seen:
                    seen.add(child)
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
        body = {"id": self._new_id(), "name": name, "parents": [parent]}
        m = media()
        # each chunk as bytes, not as a slice of the file: httplib2 sends a request again by itself when
        # its reply is lost, and a slice already read would go out empty (the request then hangs until
        # the timeout instead of being resumed)
        m.has_stream = lambda: False
        if not m.resumable():
            self._create(f"uploading {key}", body,
                         lambda body: self._api.files().create(body=body, media_body=m, fields="id"), size)
            progress(size)
        else:
            self._resumable(key, body, m, size, progress)
        # the new file exists before the old one goes: readers never find neither
        self._delete_ids([i for i in old if i != body["id"]], key)

    def _resumable(self, key: str, body: dict, media: Any, size: int, progress: Progress) -> None:
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
                if isinstance(err, _Exists):  # an earlier session made the file; its answer was lost
                    self._check_ours(f"uploading {key}", body, size)
                    progress(size - sent)
                    return
                if not isinstance(err, RetryLater):
                    raise err from None
                failures += 1
                if failures >= MAX_TRIES:
                    raise _gave_up(f"uploading {key}", err.why, "; the set stays incomplete") from None
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
                    raise _gave_up(f"downloading {key}", err.why) from None
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
        body = {"id": self._new_id(), "name": name, "parents": [parent]}
        self._create(f"copying {src_key}", body,
                     lambda body: self._api.files().copy(fileId=src, body=body, fields="id"))
        self._delete_ids([i for i in old if i != body["id"]], dst_key)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._delete_ids(self._file_ids(key), key)

    def remove_folder(self, key: str) -> None:
        """Remove the folder ``key`` and all in it (its twins too); a folder already gone is fine."""
        gone = set(self._folder_ids(key)) - {"root"}
        self._delete_ids(sorted(gone), key)
        with self._lock:  # forget them and what was known below them
            while True:
                stale = [k for k, v in self._known.items() if v in gone or k[0] in gone]
                if not stale:
                    break
                for k in stale:
                    gone.add(self._known.pop(k))

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


def _sign_in(echo: Callable[[str], None], prompt: Callable[[str], str],
             console: bool | None) -> dict[str, str]:
    """Google's consent flow with the user's own OAuth client: client_id, client_secret, refresh_token.

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
    credentials.register(token)
    return {"client_id": client_id, "client_secret": client_secret, "refresh_token": token}


def login(echo: Callable[[str], None], prompt: Callable[[str], str], console: bool | None = None) -> str:
    """Sign in with the user's own OAuth client; stores the refresh token. Returns where."""
    return credentials.save(SERVICE, _sign_in(echo, prompt, console))


def login_for_ci(echo: Callable[[str], None], prompt: Callable[[str], str],
                 console: bool | None = None) -> dict[str, str]:
    """Sign in anew for a CI machine: nothing is stored on this machine; returns the environment
    variables CI needs (SOOPERVISOR_GDRIVE_CLIENT_ID, _CLIENT_SECRET, _REFRESH_TOKEN) -> values.

    The refresh token is a new one, not the laptop's: revoking either leaves the other working.
    """
    data = _sign_in(echo, prompt, console)
    credentials.register(data)
    return {ENV[field]: data[field] for field in ("client_id", "client_secret", "refresh_token")}


def describe() -> str:
    """One line for ``login --status``: signed in or not, and from where; never a token."""
    try:
        _, source = load_credentials()
    except CredentialsError:
        return f"not signed in ({LOGIN_HINT}, or set {', '.join(ENV.values())})"
    return f"signed in (from the {source})"

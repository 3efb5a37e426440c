"""A stateful fake of Microsoft Graph's OneDrive API and of the Microsoft identity platform, on 127.0.0.1.

msal and requests build and parse every request; this server keeps an
in-memory drive and answers as the documentation says:

* items by path (``/me/drive/root:/a/b:`` and ``/me/drive/items/{id}:/name:``),
  names case-insensitive; ``children`` paged by ``$top`` with ``@odata.nextLink``;
  folder creation (``409 nameAlreadyExists`` under ``conflictBehavior: fail``);
* ``PUT …/content`` for small files (at most :data:`SIMPLE_UPLOAD_MAX`, the 4 MB
  the backend documents; larger → ``413 requestTooLarge``); ``GET …/content``
  answers ``302`` to a pre-authenticated download URL;
* upload sessions: ``createUploadSession`` → ``uploadUrl``; fragments PUT with
  ``Content-Range``, each a multiple of 320 KiB except the last, at most 60 MiB,
  in order (``416`` for bytes already received), **without** an Authorization
  header (documented: it may give 401); ``202`` with ``nextExpectedRanges``, the
  item at the end; ``GET uploadUrl`` reports ``nextExpectedRanges``;
* ``/copy`` → ``202`` + ``Location`` monitor URL (``inProgress`` then
  ``completed``); ``409 nameAlreadyExists`` when the target exists (OneDrive
  personal ignores ``conflictBehavior`` on copy); ``DELETE`` → 204;
* ``/me/drive`` with its quota; ``507 insufficientStorage`` past the quota;
* errors ``{"error": {"code", "message"}}``; injected failures
  (:meth:`FakeGraph.fail`: 429/503 with ``Retry-After``, a dropped connection,
  before or after the request took effect);
* OneDrive's name rules ("Restrictions and limitations in OneDrive and
  SharePoint"): reserved names (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``9``,
  ``LPT0``-``9``, also with an extension; ``.lock``; ``desktop.ini``), ``~$`` at
  the start, ``_vti_`` anywhere, ``: * ? " < > | \\``, a trailing dot or space, a name
  over 255 characters, a whole path over 400: ``400 invalidRequest`` with the
  innererror ``invalidPath`` (``pathIsTooLong``/``parameterIsTooLong`` for lengths),
  on every create (PUT, upload session, folder, copy);
* the identity platform under ``/{tenant}`` (``consumers``, ``organizations``,
  ``common``, the app's directory by ID or domain; others: ``AADSTS90002``):
  OpenID configuration (https endpoint URLs, as msal requires), device-code and
  refresh-token grants with rotating refresh tokens. Errors are the real
  endpoint's JSON (``error``, ``error_description`` starting ``AADSTSnnn:``,
  ``error_codes``, ``trace_id``...) for: an unknown client ID (``unauthorized_client``,
  AADSTS700016), an app audience the authority cannot use (AADSTS50194,
  AADSTS9002331, AADSTS9002332), an account the app or authority does not take
  (AADSTS50020, AADSTS500208), public client flows off (``invalid_client``,
  AADSTS7000218), consent missing (AADSTS65001), a revoked (AADSTS70000) or
  expired (90 days after issue, AADSTS700082) refresh token, a device code
  declined (``authorization_declined``) or expired (``expired_token``). On the
  real service the account errors show in the browser and the poll fails; here
  the poll answers them. A personal account signing in at its own directory's
  tenant gets a token whose Graph calls answer 400 "Tenant does not have a SPO
  license" (a directory user has no OneDrive). Expired access tokens give 401
  ``InvalidAuthenticationToken``.
"""
from __future__ import annotations

import itertools
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

KiB = 1024
MiB = 1024 * KiB
#: documented for upload-session fragments
FRAGMENT_MULTIPLE = 320 * KiB
FRAGMENT_MAX = 60 * MiB
#: what the backend documents for a single PUT
SIMPLE_UPLOAD_MAX = 4 * MiB
#: the tenant of personal Microsoft accounts
MSA_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
#: Microsoft's refresh-token lifetime
REFRESH_TOKEN_LIFETIME = 90 * 86400
#: OneDrive's documented limits
MAX_PATH = 400
MAX_NAME = 255
_DEVICES = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def name_problem(name: str) -> tuple[str, str] | None:
    """(innererror code, message) when OneDrive refuses ``name`` (one segment), else None."""
    low = name.lower()
    if (low in (".lock", "desktop.ini") or low.split(".")[0] in _DEVICES or low.startswith("~$") or "_vti_" in low
            or any(c in name for c in ':*?"<>|\\') or name.endswith((".", " ")) or name.startswith(" ")):
        return "invalidPath", f"The name '{name}' is not allowed."
    if len(name) > MAX_NAME:
        return "parameterIsTooLong", "The name is too long."
    return None


@dataclass
class Item:
    id: str
    name: str
    parent: str | None
    folder: bool
    data: bytes = b""

    def resource(self, fake: FakeGraph) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name,
                               "parentReference": {"driveId": fake.drive_id, "id": self.parent}}
        if self.folder:
            out["folder"] = {"childCount": sum(1 for i in fake.items.values() if i.parent == self.id)}
            out["size"] = 0
        else:
            out["file"] = {"mimeType": "application/octet-stream"}
            out["size"] = len(self.data)
        return out


@dataclass
class Session:
    parent: str
    name: str
    size: int | None = None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Failure:
    status: int
    method: str | None
    path: str | None
    times: int
    code: str
    headers: dict[str, str]
    after: bool
    skip: int = 0
    drop: bool = False


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 inner: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers, self.inner = status, code, message, headers or {}, inner


class FakeGraph:
    """The fake services; ``graph_url`` stands for https://graph.microsoft.com/v1.0 and
    ``authority`` for https://login.microsoftonline.com/consumers."""

    def __init__(self, page_size: int = 200, copy_polls: int = 1) -> None:
        self.drive_id = "fakedrive" + secrets.token_hex(4)
        self.items: dict[str, Item] = {"root": Item("root", "root", None, True)}
        self.sessions: dict[str, Session] = {}
        self.copies: dict[str, dict[str, Any]] = {}
        self.page_size = page_size
        self.copy_polls = copy_polls
        self.quota = 5 * 1024 * MiB
        self.client_id = "00000000-fake-" + secrets.token_hex(4)
        #: the app registration: who may sign in ("signInAudience"), public client flows, consent given
        self.audience = "AzureADandPersonalMicrosoftAccount"  # or PersonalMicrosoftAccount, AzureADMyOrg,
        self.public_client = True                              # AzureADMultipleOrgs
        self.consented = True
        self.tenant_id = str(uuid.uuid4())  # the app's directory (where it was registered)
        self.tenant_domain = "soopervisorfake.onmicrosoft.com"
        #: who enters the device code: "personal" (an outlook.com account) or "work"; and what they do
        self.account = "personal"
        self.device_outcome = "approve"  # or "decline", "expire"
        self.clock = 0.0  # seconds added to the time (refresh-token ages)
        self.refresh_tokens: dict[str, dict[str, Any]] = {}  # token -> {"issued": t, "kind": "drive"|"directory"}
        self.access_tokens: dict[str, str] = {}  # token -> "drive" | "directory"
        self.rotate = True  # Microsoft issues a new refresh token with each refresh
        self.device_codes: dict[str, dict[str, Any]] = {}  # device code -> {"polls": n, "tenant": t}
        self.failures: list[Failure] = []
        #: the next this many downloads send half their bytes, then the connection breaks
        self.break_downloads = 0
        self.log: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.origin = f"127.0.0.1:{self._server.server_address[1]}"
        self.url = f"http://{self.origin}"
        self.graph_url = self.url + "/v1.0"
        self.authority = self.url + "/consumers"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # test controls
    def now(self) -> float:
        return time.time() + self.clock

    def advance(self, days: float) -> None:
        """Move the identity platform's clock on (refresh tokens age)."""
        self.clock += days * 86400

    def authority_for(self, tenant: str) -> str:
        """The authority URL of ``tenant`` ("consumers", "organizations", "common", or the app's directory)."""
        return f"{self.url}/{tenant}"

    def issue_refresh_token(self, kind: str = "drive", issued: float | None = None) -> str:
        token = "M.C5-fake-refresh-" + secrets.token_urlsafe(16)
        self.refresh_tokens[token] = {"issued": self.now() if issued is None else issued, "kind": kind}
        return token

    def revoke(self) -> None:
        self.refresh_tokens.clear()
        self.access_tokens.clear()

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def fail(self, status: int = 503, method: str | None = None, path: str | None = None, times: int = 1,
             code: str = "", headers: dict[str, str] | None = None, after: bool = False, skip: int = 0,
             drop: bool = False) -> None:
        """The next ``times`` matching requests (after ``skip``) get ``status`` (or a dropped connection)."""
        self.failures.append(Failure(status, method, path, times, code or _default_code(status), headers or {},
                                     after, skip, drop))

    def used(self) -> int:
        return sum(len(i.data) for i in self.items.values())

    def file(self, path: str) -> Item:
        return self._by_path("root", path)

    # the drive
    def _new_id(self) -> str:
        return f"{self.drive_id.upper()}!{next(self._ids)}"

    def _child(self, parent: str, name: str) -> Item | None:
        for i in self.items.values():
            if i.parent == parent and i.name.lower() == name.lower():
                return i
        return None

    def _by_path(self, base: str, path: str) -> Item:
        item = self._get(base)
        for name in [p for p in path.split("/") if p]:
            child = self._child(item.id, name)
            if child is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            item = child
        return item

    def _get(self, item_id: str) -> Item:
        if item_id not in self.items:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        return self.items[item_id]

    def _folder(self, item_id: str) -> Item:
        item = self._get(item_id)
        if not item.folder:
            raise GraphError(400, "invalidRequest", "The parent is not a folder.")
        return item

    def _path(self, item_id: str) -> str:
        """``/a/b`` of an item ("" for the root)."""
        names = []
        while item_id != "root":
            item = self.items[item_id]
            names.append(item.name)
            item_id = item.parent or "root"
        return "".join(f"/{n}" for n in reversed(names))

    def check_name(self, parent: str, name: str) -> None:
        """OneDrive's answer to creating ``name`` in ``parent`` when it breaks a name rule."""
        problem = name_problem(name)
        if problem:
            raise GraphError(400, "invalidRequest", problem[1], inner=problem[0])
        if len(f"{self._path(parent)}/{name}") > MAX_PATH:
            raise GraphError(400, "invalidRequest", "The path is too long.", inner="pathIsTooLong")

    def _put(self, parent: str, name: str, data: bytes) -> tuple[int, Item]:
        self._folder(parent)
        self.check_name(parent, name)
        old = self._child(parent, name)
        if old is not None and old.folder:
            raise GraphError(409, "nameAlreadyExists", "A folder of that name exists.")
        if self.used() - (len(old.data) if old else 0) + len(data) > self.quota:
            raise GraphError(507, "insufficientStorage", "Insufficient Space Available")
        if old is not None:
            old.data = data
            return 200, old
        item = Item(self._new_id(), name, parent, False, data)
        self.items[item.id] = item
        return 201, item

    def _delete(self, item: Item) -> None:
        if item.id == "root":
            raise GraphError(403, "accessDenied", "The root cannot be deleted.")
        for child in [i for i in self.items.values() if i.parent == item.id]:
            self._delete(child)
        del self.items[item.id]


def _default_code(status: int) -> str:
    return {429: "activityLimitReached", 503: "serviceNotAvailable", 500: "generalException",
            507: "insufficientStorage", 401: "InvalidAuthenticationToken", 404: "itemNotFound"}.get(status, "error")


_IDENTITY = re.compile(r"/(?P<tenant>[^/]+)(?P<rest>/v2\.0/\.well-known/openid-configuration|/oauth2/v2\.0/\w+)")
_ADDRESS = re.compile(r"/v1\.0/me/drive/(?:root|items/(?P<id>[^/:]+)):(?P<path>/?[^:]*):(?P<rest>/.*)?")
_ITEM = re.compile(r"/v1\.0/me/drive/(?:(?P<root>root)|items/(?P<id>[^/:]+))(?P<rest>/[^:]*)?")


def _handler(fake: FakeGraph) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body is not None and not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: GraphError) -> None:
            error: dict[str, Any] = {"code": e.code, "message": e.message}
            if e.inner:
                error["innererror"] = {"code": e.inner}
            self._send(e.status, {"error": error}, e.headers)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            with fake._lock:
                fake.log.append({"method": self.command, "path": parts.path, "query": query, "size": len(body),
                                 "content_range": self.headers.get("Content-Range"),
                                 "range": self.headers.get("Range"),
                                 "auth": self.headers.get("Authorization")})
                failure = None
                for f in fake.failures:
                    if f.times > 0 and f.method in (None, self.command) and (f.path is None or f.path in self.path):
                        if f.skip:
                            f.skip -= 1
                            continue
                        f.times -= 1
                        failure = f
                        break
            if failure is not None and not failure.after:
                return self._fail(failure)
            try:
                with fake._lock:
                    status, out, headers = self._route(parts.path, query, body)
            except GraphError as e:
                return self._error(e)
            if failure is not None:
                return self._fail(failure)
            if headers.pop("X-Fake-Break", None):  # a download whose connection breaks half-way
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out[: len(out) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._send(status, out, headers)

        def _download(self, data: bytes) -> tuple[int, bytes, dict[str, str]]:
            """The pre-authenticated download address: the bytes, or the ``Range: bytes=N-`` asked for."""
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            status, start = 200, 0
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if m:
                start = int(m.group(1))
                if start >= len(data):
                    raise GraphError(416, "invalidRange", "The requested range is not satisfiable.",
                                     {"Content-Range": f"bytes */{len(data)}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            if fake.break_downloads > 0 and len(data) - start > 1:
                fake.break_downloads -= 1
                headers["X-Fake-Break"] = "1"
            return status, data[start:], headers

        def _fail(self, f: Failure) -> None:
            if f.drop:
                self.close_connection = True
                self.connection.shutdown(2)  # no response at all: a dropped connection
                return
            self._error(GraphError(f.status, f.code, f"injected {f.status}", f.headers))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def _authorized(self) -> None:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in fake.access_tokens:
                raise GraphError(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.",
                                 {"WWW-Authenticate": 'Bearer realm=""'})
            if fake.access_tokens[token] == "directory":
                raise GraphError(400, "BadRequest", "Tenant does not have a SPO license.")

        def _route(self, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
            m = _IDENTITY.fullmatch(path)
            if m:
                return self._identity(m.group("tenant"), m.group("rest"), body)
            if path.startswith("/upload/"):
                return self._session(path.removeprefix("/upload/"), body)
            if path.startswith("/monitor/"):
                return self._monitor(path.removeprefix("/monitor/"))
            if path.startswith("/download/"):
                return self._download(fake._get(path.removeprefix("/download/")).data)
            self._authorized()
            if path == "/v1.0/me/drive":
                used = fake.used()
                return 200, {"id": fake.drive_id, "driveType": "personal",
                             "quota": {"total": fake.quota, "used": used, "remaining": max(fake.quota - used, 0),
                                       "state": "exceeded" if used >= fake.quota else "normal"}}, {}
            m = _ADDRESS.fullmatch(path)
            if m:
                base = unquote(m.group("id") or "root")
                rel, rest = unquote(m.group("path")), m.group("rest") or ""
                return self._addressed(base, rel, rest, query, body)
            m = _ITEM.fullmatch(path)
            if m:
                item = fake._get("root" if m.group("root") else unquote(m.group("id")))
                return self._item(item, m.group("rest") or "", query, body)
            raise GraphError(400, "invalidRequest", f"no route {self.command} {path}")

        def _addressed(self, base: str, rel: str, rest: str, query: dict[str, str],
                       body: bytes) -> tuple[int, Any, dict[str, str]]:
            parent_path, _, name = rel.strip("/").rpartition("/")
            if rest == "/content" and self.command == "PUT":
                if len(body) > SIMPLE_UPLOAD_MAX:
                    raise GraphError(413, "requestTooLarge", "Use an upload session for files above 4 MB.")
                parent = fake._by_path(base, parent_path)
                status, item = fake._put(parent.id, name, body)
                return status, item.resource(fake), {}
            if rest == "/createUploadSession" and self.command == "POST":
                parent = fake._by_path(base, parent_path)
                fake._folder(parent.id)
                fake.check_name(parent.id, name)
                sid = secrets.token_urlsafe(12)
                fake.sessions[sid] = Session(parent.id, name)
                return 200, {"uploadUrl": f"{fake.url}/upload/{sid}", "expirationDateTime": "2099-01-01T00:00:00Z",
                             "nextExpectedRanges": ["0-"]}, {}
            return self._item(fake._by_path(base, rel), rest, query, body)

        def _item(self, item: Item, rest: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
            if rest == "" and self.command == "GET":
                return 200, item.resource(fake), {}
            if rest == "" and self.command == "DELETE":
                fake._delete(item)
                return 204, None, {}
            if rest == "/content" and self.command == "GET":
                if item.folder:
                    raise GraphError(400, "invalidRequest", "Folders have no content.")
                return 302, b"", {"Location": f"{fake.url}/download/{item.id}"}
            if rest == "/children" and self.command == "GET":
                kids = sorted((i for i in fake.items.values() if i.parent == item.id), key=lambda i: i.name)
                start = int(query.get("$skiptoken") or 0)
                top = min(int(query.get("$top") or 200), fake.page_size)
                out: dict[str, Any] = {"value": [i.resource(fake) for i in kids[start:start + top]]}
                if start + top < len(kids):
                    out["@odata.nextLink"] = (f"{fake.graph_url}/me/drive/items/{item.id}/children"
                                              f"?$top={top}&$skiptoken={start + top}")
                return 200, out, {}
            if rest == "/children" and self.command == "POST":
                spec = json.loads(body or b"{}")
                fake._folder(item.id)
                existing = fake._child(item.id, spec.get("name", ""))
                if existing is not None:
                    if spec.get("@microsoft.graph.conflictBehavior", "fail") == "fail":
                        raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
                    return 200, existing.resource(fake), {}
                fake.check_name(item.id, spec["name"])
                new = Item(fake._new_id(), spec["name"], item.id, "folder" in spec)
                fake.items[new.id] = new
                return 201, new.resource(fake), {}
            if rest == "/copy" and self.command == "POST":
                spec = json.loads(body or b"{}")
                ref = spec.get("parentReference") or {}
                target = fake._folder(ref.get("id") or item.parent or "root")
                name = spec.get("name") or item.name
                fake.check_name(target.id, name)
                if fake._child(target.id, name) is not None:
                    raise GraphError(409, "nameAlreadyExists", "The specified item name already exists.")
                mid = secrets.token_urlsafe(8)
                fake.copies[mid] = {"src": item.id, "parent": target.id, "name": name, "polls": fake.copy_polls}
                return 202, b"", {"Location": f"{fake.url}/monitor/{mid}"}
            raise GraphError(400, "invalidRequest", f"no route {self.command} {rest}")

        def _monitor(self, mid: str) -> tuple[int, Any, dict[str, str]]:
            job = fake.copies.get(mid)
            if job is None:
                raise GraphError(404, "itemNotFound", "no such operation")
            if job["polls"] > 0:
                job["polls"] -= 1
                return 202, {"operation": "itemCopy", "status": "inProgress", "percentageComplete": 50.0}, {}
            if "resourceId" not in job:
                try:
                    _, new = fake._put(job["parent"], job["name"], fake._get(job["src"]).data)
                except GraphError as e:
                    return 200, {"operation": "itemCopy", "status": "failed",
                                 "error": {"code": e.code, "message": e.message}}, {}
                job["resourceId"] = new.id
            return 200, {"operation": "itemCopy", "status": "completed", "percentageComplete": 100.0,
                         "resourceId": job["resourceId"]}, {}

        def _session(self, sid: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
            session = fake.sessions.get(sid)
            if session is None:
                raise GraphError(404, "itemNotFound", "The upload session was not found or has expired.")
            got = len(session.data)

            def remaining() -> dict[str, Any]:
                end = "" if session.size is None else str(session.size - 1)
                return {"expirationDateTime": "2099-01-01T00:00:00Z", "nextExpectedRanges": [f"{got}-{end}"]}

            if self.command == "GET":
                return 200, remaining(), {}
            if self.command == "DELETE":
                del fake.sessions[sid]
                return 204, None, {}
            if self.headers.get("Authorization"):
                raise GraphError(401, "unauthenticated", "Do not send an Authorization header to the uploadUrl.")
            m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers.get("Content-Range") or "")
            if m is None:
                raise GraphError(400, "invalidRange", "Content-Range is missing or malformed.")
            start, end, total = map(int, m.groups())
            if end - start + 1 != len(body) or (session.size is not None and total != session.size):
                raise GraphError(400, "invalidRange", "Content-Range does not match the request.")
            if len(body) > FRAGMENT_MAX:
                raise GraphError(413, "requestTooLarge", "Fragments are at most 60 MiB.")
            if end + 1 != total and len(body) % FRAGMENT_MULTIPLE:
                raise GraphError(400, "invalidRange", "Fragment sizes must be multiples of 320 KiB.")
            if start < got:
                raise GraphError(416, "invalidRange", "The fragment overlaps data already received.")
            if start > got:
                raise GraphError(400, "invalidRange", f"Expected the fragment at {got}.")
            session.size = total
            session.data += body
            got = len(session.data)
            if got < total:
                return 202, remaining(), {}
            del fake.sessions[sid]
            status, item = fake._put(session.parent, session.name, bytes(session.data))
            return status, item.resource(fake), {}

        def _identity(self, tenant: str, rest: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
            seg = tenant.lower()
            own = seg in (fake.tenant_id, fake.tenant_domain)
            if seg not in ("consumers", "organizations", "common") and not own:
                return _aad(400, "invalid_tenant", 90002, f"Tenant '{tenant}' not found. Check to make sure you have "
                            "the correct tenant ID and are signing into the correct cloud.")
            https = f"https://{fake.origin}/{tenant}"
            if rest == "/v2.0/.well-known/openid-configuration":
                issuer = MSA_TENANT if seg == "consumers" else fake.tenant_id if own else "{tenantid}"
                return 200, {"issuer": f"https://login.microsoftonline.com/{issuer}/v2.0",
                             "authorization_endpoint": f"{https}/oauth2/v2.0/authorize",
                             "token_endpoint": f"{https}/oauth2/v2.0/token",
                             "device_authorization_endpoint": f"{https}/oauth2/v2.0/devicecode"}, {}
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            client = form.get("client_id", "")
            refused = self._app_refused(seg, own, client)
            if refused is not None:
                return refused
            if rest == "/oauth2/v2.0/devicecode":
                code = secrets.token_urlsafe(12)
                fake.device_codes[code] = {"polls": 1, "tenant": seg, "own": own}
                return 200, {"device_code": code, "user_code": "FAKE1234", "verification_uri":
                             "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 1,
                             "message": "To sign in, use a web browser to open the page "
                                        "https://microsoft.com/devicelogin and enter the code FAKE1234 to authenticate."}, {}
            if rest != "/oauth2/v2.0/token":
                raise GraphError(404, "not_found", rest)
            if not fake.public_client:  # a request without a client secret from an app that is not a public client
                return _aad(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                            "'client_assertion' or 'client_secret'.")
            grant = form.get("grant_type")
            if grant == "refresh_token":
                record = fake.refresh_tokens.get(form.get("refresh_token", ""))
                if record is None:
                    return _aad(400, "invalid_grant", 70000, "The provided grant has expired or was revoked.")
                if fake.now() - record["issued"] > REFRESH_TOKEN_LIFETIME:
                    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["issued"]))
                    return _aad(400, "invalid_grant", 700082, "The refresh token has expired due to inactivity. The "
                                f"token was issued on {issued} and was inactive for 90.00:00:00.")
                if not fake.consented:
                    return _aad(400, "invalid_grant", 65001, "The user or administrator has not consented to use the "
                                f"application with ID '{client}' named 'soopervisor'. Send an interactive "
                                "authorization request for this user and resource.")
                kind = record["kind"]
                if fake.rotate:
                    del fake.refresh_tokens[form["refresh_token"]]
            elif grant == "urn:ietf:params:oauth:grant-type:device_code":
                flow = fake.device_codes.get(form.get("device_code", ""))
                if flow is None or fake.device_outcome == "expire":
                    return _aad(400, "expired_token", 70019, "Verification code expired.")
                if flow["polls"] > 0:
                    flow["polls"] -= 1
                    return _aad(400, "authorization_pending", 70016, "OAuth 2.0 device flow error. Authorization "
                                "is pending. Continue polling.")
                del fake.device_codes[form["device_code"]]
                if fake.device_outcome == "decline":
                    return _aad(400, "authorization_declined", 65004, "User declined to consent to access the app.")
                kind = self._account_refused(flow, client)
                if not isinstance(kind, str):
                    return kind
            else:
                return _aad(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
            access = "EwB-fake-access-" + secrets.token_urlsafe(16)
            fake.access_tokens[access] = kind
            if fake.rotate or grant != "refresh_token":
                refresh = fake.issue_refresh_token(kind)
            else:
                refresh = form["refresh_token"]
            return 200, {"token_type": "Bearer", "scope": "https://graph.microsoft.com/Files.ReadWrite",
                         "expires_in": 3600, "ext_expires_in": 3600,
                         "access_token": access, "refresh_token": refresh}, {}

        def _app_refused(self, seg: str, own: bool, client: str) -> tuple[int, Any, dict[str, str]] | None:
            """The answer when the app is unknown, or its audience does not fit the authority."""
            if client != fake.client_id:
                directory = MSA_TENANT if seg == "consumers" else fake.tenant_id
                return _aad(400, "unauthorized_client", 700016, f"Application with identifier '{client}' was not "
                            f"found in the directory '{directory}'. This can happen if the application has not been "
                            "installed by the administrator of the tenant or consented to by any user in the tenant. "
                            "You may have sent your authentication request to the wrong tenant.")
            audience = fake.audience
            if audience == "AzureADMyOrg" and seg in ("common", "organizations"):
                return _aad(400, "invalid_request", 50194, f"Application '{client}'(soopervisor) is not configured as "
                            "a multi-tenant application. Usage of the /common endpoint is not supported for such "
                            "applications created after '10/15/2018'. Use a tenant-specific endpoint or configure "
                            "the application to be multi-tenant.")
            if audience in ("AzureADMyOrg", "AzureADMultipleOrgs") and seg == "consumers":
                return _aad(400, "invalid_request", 9002332, f"Application '{client}'(soopervisor) is configured for "
                            "use by Azure Active Directory users only. Please do not use the /consumers endpoint to "
                            "serve this request.")
            if audience == "PersonalMicrosoftAccount" and (seg == "organizations" or own):
                return _aad(400, "invalid_request", 9002331, f"Application '{client}'(soopervisor) is configured for "
                            "use by Microsoft Account users only. Please use the /consumers endpoint to serve this "
                            "request.")
            return None

        def _account_refused(self, flow: dict[str, Any], client: str) -> str | tuple[int, Any, dict[str, str]]:
            """The kind of token the signed-in account gets ("drive" or "directory"), or the refusal."""
            seg, own, audience = flow["tenant"], flow["own"], fake.audience
            personal_app = audience in ("PersonalMicrosoftAccount", "AzureADandPersonalMicrosoftAccount")
            if fake.account == "personal":
                if own:
                    return "directory"  # the directory's owner, as a directory user: no OneDrive there
                if seg in ("consumers", "common") and personal_app:
                    return "drive"
                return _aad(400, "invalid_grant", 50020, "User account 'someone@outlook.com' from identity "
                            "provider 'live.com' does not exist in tenant 'Default Directory' and cannot access the "
                            f"application '{client}'(soopervisor) in that tenant. The account needs to be added as an "
                            "external user in the tenant first.")
            if seg == "consumers" or audience == "PersonalMicrosoftAccount":
                return _aad(400, "invalid_grant", 500208, "The domain is not a valid login domain for the account "
                            "type.")
            return "drive"

    return Handler


def _aad(status: int, error: str, code: int, text: str) -> tuple[int, Any, dict[str, str]]:
    """An error of the Microsoft identity platform's token endpoints, as it sends them."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return status, {"error": error,
                    "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {correlation} "
                                         f"Timestamp: {stamp}",
                    "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
                    "error_uri": f"https://login.microsoftonline.com/error?code={code}"}, {}

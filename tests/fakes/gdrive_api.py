"""A stateful fake of the Google Drive v3 HTTP API, served on 127.0.0.1 for the real client library.

google-api-python-client (over httplib2) and google-auth build and parse every
request; this server keeps an in-memory tree and answers as the documented API
does:

* ``files.create``: metadata only (folders), ``uploadType=multipart``
  (multipart/related: JSON metadata, then the media; at most 5 MB, Drive's
  documented simple-upload limit — larger media must use the resumable
  protocol) and ``uploadType=resumable`` (POST → 200 + ``Location`` session
  URI; PUT chunks with ``Content-Range: bytes a-b/total``, each a multiple of
  256 KiB except the last; ``308 Resume Incomplete`` with ``Range: bytes=0-n``;
  ``Content-Range: bytes */total`` asks for the status; 200 with the file at
  the end);
* ``files.generateIds``, and ``files.create``/``files.copy`` with such an ``id``
  (documented: an id not generated for this user is refused; once the item
  exists, a retried create gets ``409`` and no duplicate is made);
* ``files.update``: ``addParents``/``removeParents`` (a move) and
  ``{"trashed": true}`` (trashing a folder hides everything inside it);
  items carry ``createdTime`` (RFC 3339, strictly increasing);
* My Drive's documented depth limit: at most 100 levels of nested folders
  (``403 myDriveHierarchyDepthLimitExceeded``);
* ``files.list`` (optionally lagging behind creates: :attr:`FakeDrive.listing_lag`) with ``q`` (``'ID' in parents``, ``name = '…'``,
  ``mimeType = / != '…'``, ``trashed = false``, joined by ``and``) and
  ``pageToken`` paging; ``files.get?alt=media`` with ``Range``;
  ``files.copy``, ``files.delete``, ``about.get`` (storage quota);
* errors in Google's JSON shape; ``storageQuotaExceeded`` past the quota;
  injected failures (:meth:`FakeDrive.fail`: 429 with ``Retry-After``, 403
  ``rateLimitExceeded``, 5xx — before or after the request took effect) and
  dropped replies (:meth:`FakeDrive.drop`: the request takes effect, then the
  connection closes without an answer, as a lost reply looks to the client);
* a resumable session asked for its status after it finished answers with the
  file (200), as Drive does;
* an OAuth token endpoint: refresh and authorization-code grants,
  ``invalid_grant`` once revoked; expired access tokens give 401.
"""
from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

FOLDER = "application/vnd.google-apps.folder"
KiB = 1024
#: documented: chunks are multiples of 256 KiB, except the last
CHUNK_MULTIPLE = 256 * KiB
#: documented: simple and multipart uploads are for media up to 5 MB
SIMPLE_LIMIT = 5 * 1024 * KiB
#: documented: My Drive holds at most 100 levels of nested folders
MAX_DEPTH = 100


@dataclass
class Item:
    id: str
    name: str
    mimeType: str
    parents: list[str]
    data: bytes = b""
    createdTime: str = "1970-01-01T00:00:00.000Z"
    trashed: bool = False
    listed_from: int = 0  # the files.list call from which on the item shows up (see FakeDrive.listing_lag)

    def resource(self) -> dict[str, Any]:
        out = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mimeType,
               "parents": list(self.parents), "createdTime": self.createdTime, "modifiedTime": self.createdTime,
               "trashed": self.trashed}
        if self.mimeType != FOLDER:
            out["size"] = str(len(self.data))
        return out


@dataclass
class Session:
    meta: dict[str, Any]
    size: int | None
    data: bytearray = field(default_factory=bytearray)
    item: str | None = None  # the file made when the last chunk arrived


@dataclass
class Failure:
    status: int
    method: str | None
    path: str | None  # a substring of the path (with query)
    times: int
    reason: str
    headers: dict[str, str]
    after: bool  # the request takes effect, then the response reports the error
    skip: int = 0  # matching requests let through before failing
    drop: bool = False  # the request takes effect, then the connection closes without an answer


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers or {}


class FakeDrive:
    """The fake service; ``url`` is its root (stands for https://www.googleapis.com/)."""

    def __init__(self, page_size: int = 100) -> None:
        self.items: dict[str, Item] = {"root": Item("root", "My Drive", FOLDER, [])}
        self.sessions: dict[str, Session] = {}
        self.page_size = page_size
        self.quota: int | None = None  # bytes; None: unlimited
        self.client_id = "fake-client-id.apps.googleusercontent.com"
        self.client_secret = "fake-client-secret-" + secrets.token_hex(6)
        self.refresh_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.codes: dict[str, str] = {}  # authorization code -> redirect_uri
        self.failures: list[Failure] = []
        self.log: list[dict[str, Any]] = []
        self.generated: set[str] = set()  # ids from generateIds, not used yet
        self.used_ids: set[str] = set()
        self._ids = itertools.count(1)
        self._clock = 0.0
        #: files.list answers by Drive's search index, which may show a new item late: it shows up
        #: only after this many further list calls (files.get finds it at once)
        self.listing_lag = 0
        self._lists = 0
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self.token_url = self.url + "token"
        self.auth_url = self.url + "o/oauth2/auth"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # test controls
    def issue_refresh_token(self) -> str:
        token = "1//fake-refresh-" + secrets.token_urlsafe(16)
        self.refresh_tokens.add(token)
        return token

    def issue_code(self, redirect_uri: str) -> str:
        code = "4/fake-code-" + secrets.token_urlsafe(8)
        self.codes[code] = redirect_uri
        return code

    def revoke(self) -> None:
        self.refresh_tokens.clear()
        self.access_tokens.clear()

    def expire_access_tokens(self) -> None:
        self.access_tokens.clear()

    def fail(self, status: int, method: str | None = None, path: str | None = None, times: int = 1,
             reason: str = "", headers: dict[str, str] | None = None, after: bool = False, skip: int = 0) -> None:
        """The next ``times`` matching requests (after ``skip``) get ``status``."""
        self.failures.append(Failure(status, method, path, times, reason or _default_reason(status),
                                     headers or {}, after, skip))

    def drop(self, method: str | None = None, path: str | None = None, times: int = 1, skip: int = 0) -> None:
        """The next ``times`` matching requests (after ``skip``) take effect, but their reply is lost: the
        connection closes before any answer (the client sees a connection error)."""
        self.failures.append(Failure(0, method, path, times, "", {}, True, skip, drop=True))

    def folder(self, name: str, parent: str = "root", created: str | None = None) -> Item:
        """A folder made behind the client's back (another client, an older soopervisor)."""
        item = self._store({"name": name, "mimeType": FOLDER, "parents": [parent]}, b"")
        if created:
            item.createdTime = created
        return item

    def put(self, name: str, data: bytes, parent: str, created: str | None = None) -> Item:
        item = self._store({"name": name, "parents": [parent]}, data)
        if created:
            item.createdTime = created
        return item

    def folders_named(self, name: str, visible: bool = True) -> list[Item]:
        return [i for i in self.items.values()
                if i.name == name and i.mimeType == FOLDER and not (visible and self.is_trashed(i))]

    def is_trashed(self, item: Item) -> bool:
        seen = set()
        while item is not None and item.id not in seen:
            if item.trashed:
                return True
            seen.add(item.id)
            item = self.items.get(item.parents[0]) if item.parents else None
        return False

    def depth(self, parent: str) -> int:
        """Levels of folders from My Drive down to ``parent`` (My Drive itself: 0)."""
        n = 0
        while parent != "root" and parent in self.items:
            n += 1
            parent = (self.items[parent].parents or ["root"])[0]
        return n

    def files_named(self, name: str) -> list[Item]:
        return [i for i in self.items.values() if i.name == name and i.mimeType != FOLDER and not self.is_trashed(i)]

    def used(self) -> int:
        return sum(len(i.data) for i in self.items.values())

    # the API
    def _new_id(self) -> str:
        return f"id{next(self._ids):06d}" + secrets.token_hex(4)

    def _check_parent(self, parents: list[str]) -> list[str]:
        parents = parents or ["root"]
        for p in parents:
            if p not in self.items or self.items[p].mimeType != FOLDER:
                raise ApiError(404, "notFound", f"File not found: {p}.")
        return parents

    def generate_ids(self, count: int) -> list[str]:
        if not 1 <= count <= 1000:
            raise ApiError(400, "invalid", "Invalid value for count")
        ids = [self._new_id() for _ in range(count)]
        self.generated.update(ids)
        return ids

    def _check_id(self, meta: dict[str, Any]) -> None:
        """A create or copy with a pre-generated id: 409 once it exists, 400 when Drive never gave it out."""
        fid = meta.get("id")
        if fid is None:
            return
        if fid in self.items or fid in self.used_ids:
            raise ApiError(409, "duplicate", "A file already exists with the provided ID.")
        if fid not in self.generated:
            raise ApiError(400, "invalid", "The provided file ID is not usable.")

    def _now(self) -> str:
        # strictly increasing, millisecond precision as Drive reports it
        self._clock = max(time.time(), self._clock + 0.001)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self._clock)) + f".{int(self._clock * 1000) % 1000:03d}Z"

    def _store(self, meta: dict[str, Any], data: bytes) -> Item:
        self._check_id(meta)
        if self.quota is not None and self.used() + len(data) > self.quota:
            raise ApiError(403, "storageQuotaExceeded", "The user's Drive storage quota has been exceeded.")
        parents = self._check_parent(meta.get("parents") or [])
        mime = meta.get("mimeType") or "application/octet-stream"
        if mime == FOLDER and self.depth(parents[0]) + 1 > MAX_DEPTH:
            raise ApiError(403, "myDriveHierarchyDepthLimitExceeded",
                           "The file has exceeded the My Drive's maximum depth level.")
        fid = meta.get("id") or self._new_id()
        self.generated.discard(fid)
        self.used_ids.add(fid)
        item = Item(fid, meta.get("name") or "Untitled", mime, parents, data, self._now(),
                    listed_from=self._lists + self.listing_lag)
        self.items[item.id] = item
        return item

    def update(self, fid: str, query: dict[str, str], meta: dict[str, Any]) -> Item:
        item = self._get(fid)
        add = [p for p in (query.get("addParents") or "").split(",") if p]
        remove = [p for p in (query.get("removeParents") or "").split(",") if p]
        if add:
            self._check_parent(add)
            if len(set(item.parents) - set(remove) | set(add)) > 1:
                raise ApiError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
            if item.mimeType == FOLDER and (fid in add or any(self._inside(a, fid) for a in add)):
                raise ApiError(400, "invalidParent", "A folder cannot be moved into itself.")
        item.parents = [p for p in item.parents if p not in remove] + [p for p in add if p not in item.parents]
        if "trashed" in meta:
            item.trashed = bool(meta["trashed"])
        if "name" in meta:
            item.name = meta["name"]
        return item

    def _inside(self, fid: str, folder: str) -> bool:
        while fid in self.items and self.items[fid].parents:
            fid = self.items[fid].parents[0]
            if fid == folder:
                return True
        return False

    def _get(self, fid: str) -> Item:
        if fid not in self.items:
            raise ApiError(404, "notFound", f"File not found: {fid}.")
        return self.items[fid]

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        match = _parse_q(query.get("q", ""))
        self._lists += 1
        found = sorted((i for i in self.items.values()
                        if i.id != "root" and i.listed_from < self._lists and match(i, self)),
                       key=lambda i: (i.name, i.id))
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or 100), self.page_size)
        page = found[start:start + size]
        out: dict[str, Any] = {"kind": "drive#fileList", "files": [i.resource() for i in page]}
        if start + size < len(found):
            out["nextPageToken"] = str(start + size)
        return out

    def delete(self, fid: str) -> None:
        self._get(fid)
        doomed = {fid}
        changed = True
        while changed:  # a folder takes its contents with it
            new = {i.id for i in self.items.values() if set(i.parents) & doomed} - doomed
            changed = bool(new)
            doomed |= new
        for d in doomed:
            del self.items[d]

    def copy(self, fid: str, meta: dict[str, Any]) -> Item:
        src = self._get(fid)
        if src.mimeType == FOLDER:
            raise ApiError(403, "fileNotCopyable", "Folders cannot be copied.")
        return self._store({"name": meta.get("name", f"Copy of {src.name}"), "mimeType": src.mimeType,
                            "parents": meta.get("parents") or src.parents,
                            **({"id": meta["id"]} if "id" in meta else {})}, src.data)


def _default_reason(status: int) -> str:
    return {429: "rateLimitExceeded", 403: "rateLimitExceeded", 500: "backendError", 503: "backendError",
            401: "authError", 404: "notFound"}.get(status, "error")


_CLAUSE = re.compile(
    r"\s*(?:'(?P<pid>(?:[^'\\]|\\.)*)'\s+in\s+parents"
    r"|(?P<field>name|mimeType)\s*(?P<op>!=|=)\s*'(?P<value>(?:[^'\\]|\\.)*)'"
    r"|trashed\s*=\s*(?P<trashed>true|false))\s*"
)


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _parse_q(q: str):
    """A predicate for the query forms the backend uses; ApiError 400 otherwise (as Drive does)."""
    tests = []
    for clause in re.split(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", q.strip()) if q.strip() else []:
        m = _CLAUSE.fullmatch(clause)
        if m is None:
            raise ApiError(400, "invalid", "Invalid Value")
        if m.group("pid") is not None:
            pid = _unescape(m.group("pid"))
            tests.append(lambda i, fake, pid=pid: pid in i.parents)
        elif m.group("field"):
            f, op, v = m.group("field"), m.group("op"), _unescape(m.group("value"))
            tests.append(lambda i, fake, f=f, op=op, v=v: (getattr(i, f) == v) == (op == "="))
        else:
            # an item is trashed when it, or a folder it is in, was trashed
            want = m.group("trashed") == "true"
            tests.append(lambda i, fake, want=want: fake.is_trashed(i) == want)
    return lambda item, fake: all(t(item, fake) for t in tests)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """The metadata and media of a multipart/related body (RFC 2046): the line break before each
    delimiter belongs to the delimiter, so a media part is kept byte for byte, even one that ends in a
    line break of its own. The line breaks are those of the first delimiter line (googleapiclient
    writes ``\\n``, other clients ``\\r\\n``)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or m is None:
        raise ApiError(400, "badContent", "multipart/related with a boundary expected")
    dash = b"--" + m.group(1).encode()
    start = body.find(dash)
    if start < 0:
        raise ApiError(400, "badContent", "no multipart delimiter in the body")
    rest = body[start + len(dash):]
    eol = b"\r\n" if rest.startswith(b"\r\n") else b"\n"
    parts = []
    for chunk in rest.split(eol + dash):
        if chunk.startswith(b"--"):  # the close delimiter
            break
        chunk = chunk[len(eol):]  # the end of the delimiter line
        if chunk.startswith(eol):  # no headers
            payload = chunk[len(eol):]
        else:
            _, found, payload = chunk.partition(eol + eol)
            if not found:
                raise ApiError(400, "badContent", "a part without the blank line after its headers")
        parts.append(payload)
    if len(parts) != 2:
        raise ApiError(400, "badContent", "expected metadata and media parts")
    return json.loads(parts[0] or b"{}"), parts[1]


def _handler(fake: FakeDrive) -> type[BaseHTTPRequestHandler]:
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
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, e: ApiError) -> None:
            self._send(e.status, {"error": {"code": e.status, "message": e.message,
                                            "errors": [{"domain": "global", "reason": e.reason, "message": e.message}]}},
                       e.headers)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            entry = {"method": self.command, "path": parts.path, "query": query, "size": len(body),
                     "content_range": self.headers.get("Content-Range"), "auth": self.headers.get("Authorization")}
            with fake._lock:
                fake.log.append(entry)
                failure = None
                for f in fake.failures:
                    if f.times > 0 and (f.method in (None, self.command)) and (f.path is None or f.path in self.path):
                        if f.skip:
                            f.skip -= 1
                            continue
                        f.times -= 1
                        failure = f
                        break
            error = None
            if failure is not None and not failure.drop:
                error = ApiError(failure.status, failure.reason, f"injected {failure.status}", failure.headers)
                if not failure.after:
                    return self._error(error)
            try:
                with fake._lock:
                    status, out, headers = self._route(parts.path, query, body)
            except ApiError as e:
                if failure is not None and failure.drop:
                    return self._hang_up()
                return self._error(e)
            if failure is not None and failure.drop:
                return self._hang_up()
            if error is not None:
                return self._error(error)
            self._send(status, out, headers)

        def _hang_up(self) -> None:
            """The request took effect; its answer is lost: the connection closes with nothing sent."""
            self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def _route(self, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
            if path == "/token" and self.command == "POST":
                return self._token(body)
            if path == "/o/oauth2/auth":
                return 200, b"consent page", {}
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in fake.access_tokens:
                raise ApiError(401, "authError", "Request had invalid authentication credentials.",
                               {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
            if path == "/drive/v3/about":
                return 200, {"storageQuota": {"usage": str(fake.used()),
                                              **({"limit": str(fake.quota)} if fake.quota is not None else {})}}, {}
            if path == "/drive/v3/files/generateIds" and self.command == "GET":
                if query.get("space", "drive") != "drive" or query.get("type", "files") != "files":
                    raise ApiError(400, "invalid", "unsupported space or type")
                ids = fake.generate_ids(int(query.get("count") or 10))
                return 200, {"kind": "drive#generatedIds", "space": "drive", "ids": ids}, {}
            if path == "/drive/v3/files":
                if self.command == "GET":
                    return 200, fake.list(query), {}
                if self.command == "POST":
                    return 200, fake._store(json.loads(body or b"{}"), b"").resource(), {}
            if path == "/upload/drive/v3/files" and self.command == "POST":
                kind = query.get("uploadType")
                if kind == "multipart":
                    meta, data = _multipart(self.headers.get("Content-Type", ""), body)
                    if len(data) > SIMPLE_LIMIT:
                        raise ApiError(413, "uploadTooLarge", "Media larger than 5 MB: use a resumable upload.")
                    return 200, fake._store(meta, data).resource(), {}
                if kind == "resumable":
                    size = self.headers.get("X-Upload-Content-Length")
                    meta = json.loads(body or b"{}")
                    fake._check_parent(meta.get("parents") or [])
                    fake._check_id(meta)
                    sid = secrets.token_urlsafe(12)
                    fake.sessions[sid] = Session(meta, int(size) if size else None)
                    loc = f"{fake.url}upload/drive/v3/files?uploadType=resumable&upload_id={sid}"
                    return 200, b"", {"Location": loc}
                raise ApiError(400, "invalid", f"unsupported uploadType {kind}")
            if path == "/upload/drive/v3/files" and self.command == "PUT":
                return self._chunk(query.get("upload_id", ""), body)
            m = re.fullmatch(r"/drive/v3/files/([^/]+)(/copy)?", path)
            if m:
                fid, copy = m.group(1), m.group(2)
                if copy and self.command == "POST":
                    return 200, fake.copy(fid, json.loads(body or b"{}")).resource(), {}
                if self.command == "DELETE":
                    fake.delete(fid)
                    return 204, None, {}
                if self.command == "PATCH" and not copy:
                    return 200, fake.update(fid, query, json.loads(body or b"{}")).resource(), {}
                if self.command == "GET":
                    item = fake._get(fid)
                    if query.get("alt") != "media":
                        return 200, item.resource(), {}
                    return self._media(item)
            raise ApiError(404, "notFound", f"no route {self.command} {path}")

        def _media(self, item: Item) -> tuple[int, Any, dict[str, str]]:
            rng = self.headers.get("Range")
            total = len(item.data)
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
            if not m or total == 0:
                return 200, item.data, {"Content-Type": "application/octet-stream"}
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else total - 1, total - 1)
            if start >= total and total:
                raise ApiError(416, "requestedRangeNotSatisfiable", "Range not satisfiable")
            return 206, item.data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{total}",
                                                   "Content-Type": "application/octet-stream"}

        def _chunk(self, sid: str, body: bytes) -> tuple[int, Any, dict[str, str]]:
            session = fake.sessions.get(sid)
            if session is None:
                raise ApiError(404, "notFound", "upload session not found")
            cr = self.headers.get("Content-Range") or ""
            if session.item is not None:  # finished: a status query (or a late chunk) gets the file
                return 200, fake._get(session.item).resource(), {}
            status_query = re.fullmatch(r"bytes \*/(\d+|\*)", cr)
            got = len(session.data)
            if not status_query:
                m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", cr)
                if m is None:
                    raise ApiError(400, "badRequest", f"bad Content-Range {cr!r}")
                start, end = int(m.group(1)), int(m.group(2))
                total = None if m.group(3) == "*" else int(m.group(3))
                if end - start + 1 != len(body) or (session.size is not None and total not in (None, session.size)):
                    raise ApiError(400, "badRequest", "Content-Range does not match the body")
                if start > got:
                    raise ApiError(400, "badRequest", f"chunk starts at {start}, expected {got}")
                last = total is not None and end + 1 == total
                if not last and len(body) % CHUNK_MULTIPLE:
                    raise ApiError(400, "badRequest", "chunk size must be a multiple of 256 KiB")
                if session.size is None and total is not None:
                    session.size = total
                # a re-sent chunk overlapping what arrived: keep only the new bytes
                session.data += body[got - start:]
            got = len(session.data)
            if session.size is not None and got >= session.size:
                item = fake._store(session.meta, bytes(session.data))
                session.item, session.data = item.id, bytearray()
                return 200, item.resource(), {}
            return 308, b"", ({"Range": f"bytes=0-{got - 1}"} if got else {})

        def _token(self, body: bytes) -> tuple[int, Any, dict[str, str]]:
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            basic = self.headers.get("Authorization") or ""
            if basic.startswith("Basic "):  # client authentication by HTTP Basic (RFC 6749 2.3.1)
                cid, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", unquote(cid))
                form.setdefault("client_secret", unquote(secret))
            if form.get("client_id") != fake.client_id or form.get("client_secret") != fake.client_secret:
                return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}
            grant = form.get("grant_type")
            if grant == "refresh_token":
                if form.get("refresh_token") not in fake.refresh_tokens:
                    return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, {}
                refresh = None
            elif grant == "authorization_code":
                if fake.codes.pop(form.get("code", ""), None) != form.get("redirect_uri"):
                    return 400, {"error": "invalid_grant", "error_description": "Malformed auth code."}, {}
                refresh = fake.issue_refresh_token()
            else:
                return 400, {"error": "unsupported_grant_type"}, {}
            access = "ya29.fake-" + secrets.token_urlsafe(16)
            fake.access_tokens.add(access)
            out = {"access_token": access, "expires_in": 3599, "token_type": "Bearer",
                   "scope": "https://www.googleapis.com/auth/drive.file"}
            if refresh:
                out["refresh_token"] = refresh
            return 200, out, {}

    return Handler

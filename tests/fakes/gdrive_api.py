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
* ``files.list`` with ``q`` (``'ID' in parents``, ``name = '…'``,
  ``mimeType = / != '…'``, ``trashed = false``, joined by ``and``) and
  ``pageToken`` paging; ``files.get?alt=media`` with ``Range``;
  ``files.copy``, ``files.delete``, ``about.get`` (storage quota);
* errors in Google's JSON shape; ``storageQuotaExceeded`` past the quota;
  injected failures (:meth:`FakeDrive.fail`: 429 with ``Retry-After``, 403
  ``rateLimitExceeded``, 5xx — before or after the request took effect);
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


@dataclass
class Item:
    id: str
    name: str
    mimeType: str
    parents: list[str]
    data: bytes = b""

    def resource(self) -> dict[str, Any]:
        out = {"kind": "drive#file", "id": self.id, "name": self.name, "mimeType": self.mimeType,
               "parents": list(self.parents)}
        if self.mimeType != FOLDER:
            out["size"] = str(len(self.data))
        return out


@dataclass
class Session:
    meta: dict[str, Any]
    size: int | None
    data: bytearray = field(default_factory=bytearray)


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
        self._ids = itertools.count(1)
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

    def files_named(self, name: str) -> list[Item]:
        return [i for i in self.items.values() if i.name == name and i.mimeType != FOLDER]

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

    def _store(self, meta: dict[str, Any], data: bytes) -> Item:
        if self.quota is not None and self.used() + len(data) > self.quota:
            raise ApiError(403, "storageQuotaExceeded", "The user's Drive storage quota has been exceeded.")
        item = Item(self._new_id(), meta.get("name") or "Untitled", meta.get("mimeType") or "application/octet-stream",
                    self._check_parent(meta.get("parents") or []), data)
        self.items[item.id] = item
        return item

    def _get(self, fid: str) -> Item:
        if fid not in self.items:
            raise ApiError(404, "notFound", f"File not found: {fid}.")
        return self.items[fid]

    def list(self, query: dict[str, str]) -> dict[str, Any]:
        match = _parse_q(query.get("q", ""))
        found = sorted((i for i in self.items.values() if i.id != "root" and match(i)), key=lambda i: (i.name, i.id))
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
                            "parents": meta.get("parents") or src.parents}, src.data)


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
            tests.append(lambda i, pid=pid: pid in i.parents)
        elif m.group("field"):
            f, op, v = m.group("field"), m.group("op"), _unescape(m.group("value"))
            tests.append(lambda i, f=f, op=op, v=v: (getattr(i, f) == v) == (op == "="))
        else:
            # nothing is ever trashed here (delete is permanent)
            want = m.group("trashed") == "false"
            tests.append(lambda i, want=want: want)
    return lambda item: all(t(item) for t in tests)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or m is None:
        raise ApiError(400, "badContent", "multipart/related with a boundary expected")
    delim = b"--" + m.group(1).encode()
    parts = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk[1:] if chunk.startswith(b"\n") else chunk
        for sep in (b"\r\n\r\n", b"\n\n"):
            _, found, payload = chunk.partition(sep)
            if found:
                break
        payload = payload[:-2] if payload.endswith(b"\r\n") else payload[:-1] if payload.endswith(b"\n") else payload
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
            if failure is not None:
                error = ApiError(failure.status, failure.reason, f"injected {failure.status}", failure.headers)
                if not failure.after:
                    return self._error(error)
            try:
                with fake._lock:
                    status, out, headers = self._route(parts.path, query, body)
            except ApiError as e:
                return self._error(e)
            if error is not None:
                return self._error(error)
            self._send(status, out, headers)

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
                del fake.sessions[sid]
                item = fake._store(session.meta, bytes(session.data))
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

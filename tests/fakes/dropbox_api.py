"""A stateful fake of the Dropbox HTTP API v2, served to the real `dropbox` SDK at the transport layer.

It keeps an in-memory tree and enforces the documented rules the backend relies on:

* paths: case-insensitive, parents created on upload, conflicts reported as
  ``path/conflict/file|folder``, missing paths as ``path/not_found`` (409 with the
  route's error union, ``{"error_summary": ..., "error": {".tag": ...}}``);
* case: a folder keeps the case of whoever made it first, and ``path_display``
  shows it (a file written as ``/Sales/a`` into an existing ``/sales`` is listed
  as ``/sales/a``);
* names Dropbox refuses: the files its apps ignore (``desktop.ini``,
  ``.ds_store``, ...: ``disallowed_name``), a name over 255 characters or ending
  in a space (``malformed_path``, as rclone reports them);
* ``files/upload`` takes at most 150 MiB per request (``payload_too_large``) and
  checks the ``content_hash`` the SDK sends (``content_hash_mismatch``);
* upload sessions: each ``append_v2``/``finish`` must carry the cursor offset equal
  to the bytes received so far, else ``incorrect_offset`` with ``correct_offset``;
  each request body at most 150 MiB; no append after ``close``; concurrent
  sessions take pieces at 4 MiB-multiple offsets and sizes (the last may be shorter);
* ``list_folder`` pages by ``limit`` with ``cursor``/``has_more``; ``continue``;
* ``files/download`` honours an HTTP ``Range`` (206 with ``Content-Range``, 416
  past the end), as Dropbox's content-download endpoints do; a fault with
  ``drop_after`` breaks the body's stream after that many bytes;
* the namespace write lock: with :attr:`FakeDropbox.write_slots` set, a write
  (upload, commit, copy, delete, folder) arriving while that many are in flight
  (each holding the lock :attr:`FakeDropbox.write_hold` seconds) is refused with
  429 ``too_many_write_operations`` and a Retry-After; :meth:`FakeDropbox.contend`
  refuses the next writes that way (another client's burst of heavy writes);
* ``get_metadata``;
* ``copy_v2`` (``to/conflict`` when the target exists), ``delete_v2``,
  ``create_folder_v2``, ``users/get_space_usage`` and the quota (``insufficient_space``);
* OAuth2: ``/oauth2/token`` refresh grants (``invalid_grant`` when revoked) and the
  PKCE authorization-code grant; expired access tokens give 401 ``expired_access_token``.

Errors are injected with :meth:`FakeDropbox.fail`.
"""
from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from dropbox.content_hash import DropboxContentHasher
from urllib3.exceptions import ProtocolError

from tests.fakes.requests_transport import FakeTransport, Reply, Request, json_reply

MiB = 1024 * 1024
#: documented: "A single request should not upload more than 150 MB"
MAX_REQUEST_BYTES = 150 * MiB
#: the longest file or folder name Dropbox stores (https://help.dropbox.com/sync/files-not-syncing)
MAX_NAME = 255
#: names Dropbox does not store (the files its apps ignore)
IGNORED_NAMES = {"desktop.ini", "thumbs.db", ".ds_store", "icon\r", ".dropbox", ".dropbox.attr"}
#: routes that take the namespace's write lock
WRITE_ROUTES = {"files/upload", "files/upload_session/finish", "files/copy_v2", "files/delete_v2",
                "files/create_folder_v2"}


def content_hash(data: bytes) -> str:
    h = DropboxContentHasher()
    h.update(data)
    return h.hexdigest()


@dataclass
class _File:
    path_display: str
    data: bytes
    id: str
    rev: str


@dataclass
class _Session:
    data: bytearray = field(default_factory=bytearray)
    closed: bool = False
    concurrent: bool = False
    pieces: dict[int, bytes] = field(default_factory=dict)  # concurrent sessions: offset -> data


@dataclass
class Fault:
    route: str  # e.g. "files/upload_session/append_v2"
    status: int
    times: int = 1
    retry_after: int | None = None
    after_apply: bool = False  # the request takes effect, then the reply is lost
    body: Any = None
    connection_error: bool = False
    drop_after: int | None = None  # the request is answered, and its body's stream breaks after this many bytes


class _Conflict(Exception):
    def __init__(self, tag: str) -> None:
        self.tag = tag


class FakeDropbox:
    """The Dropbox API for one account; :meth:`session` gives a requests session reaching it."""

    def __init__(self, app_key: str = "fake-app-key", allocated: int = 2 * 1024**3, page_size: int = 2000) -> None:
        self.app_key = app_key
        self.allocated = allocated
        self.page_size = page_size
        self.files: dict[str, _File] = {}  # path_lower -> file
        self.folders: dict[str, str] = {}  # path_lower -> path_display
        self.sessions: dict[str, _Session] = {}
        self.refresh_tokens: set[str] = set()
        self.access_tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self.access_token_lifetime = 14400
        self.pkce: dict[str, str] = {}  # code -> code_challenge
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, dict]] = []  # (route, argument)
        self.ranges: list[str | None] = []  # the Range header of each files/download
        self._cursors: dict[str, tuple[list[dict], int, int]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        #: the namespace lock: writes in flight at once before too_many_write_operations (None: no limit)
        self.write_slots: int | None = None
        self.write_hold = 0.0  # seconds each write holds the lock
        self.write_retry_after = 1
        self.writing = 0
        self.most_writing = 0  # the most writes seen in flight at once
        self.refused_writes = 0  # writes answered too_many_write_operations
        self._contention = 0
        self._drop = threading.local()

    # -- test controls ---------------------------------------------------------
    def session(self) -> requests.Session:
        session = requests.Session()
        adapter = _Transport(self)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def contend(self, writes: int, retry_after: int = 1) -> None:
        """Refuse the next ``writes`` writes with too_many_write_operations: another client's burst."""
        with self._lock:
            self._contention += writes
            self.write_retry_after = retry_after

    def issue_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def authorize(self, authorize_url: str) -> str:
        """What the user does in the browser: approve the app; returns the code Dropbox shows."""
        q = {k: v[-1] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        assert q["client_id"] == self.app_key and q["response_type"] == "code"
        assert q.get("code_challenge_method") == "S256" and q.get("token_access_type") == "offline"
        code = "code-" + secrets.token_urlsafe(8)
        self.pkce[code] = q["code_challenge"]
        return code

    def expire_access_tokens(self) -> None:
        self.access_tokens = {t: 0.0 for t in self.access_tokens}

    def fail(self, route: str, status: int, **kw: Any) -> Fault:
        fault = Fault(route, status, **kw)
        self.faults.append(fault)
        return fault

    def put_file(self, path: str, data: bytes) -> None:
        with self._lock:
            self._store(path, data)

    def data(self, path: str) -> bytes:
        return self.files[path.lower()].data

    def routes(self) -> list[str]:
        return [r for r, _ in self.calls]

    # -- dispatch --------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        if req.host == "api.dropboxapi.com" and req.path == "/oauth2/token":
            return self._token(req.form())
        m = re.fullmatch(r"/2/(.+)", req.path)
        if m is None or req.method != "POST":
            return Reply(404, {"Content-Type": "text/plain"}, b"not found")
        route = m.group(1)
        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        with self._lock:
            if token not in self.access_tokens:
                return json_reply(401, {"error_summary": "invalid_access_token/", "error": {".tag": "invalid_access_token"}})
            if self.access_tokens[token] < time.time():
                return json_reply(401, {"error_summary": "expired_access_token/", "error": {".tag": "expired_access_token"}})
        if req.headers.get("Content-Type") == "application/json":
            arg, body = json.loads(req.body or b"null"), b""
        else:
            arg, body = json.loads(req.headers.get("Dropbox-API-Arg", "null")), req.body
        fault = self._fault(route)
        if fault is not None and not fault.after_apply and fault.drop_after is None:
            return self._fault_reply(fault)
        if route in WRITE_ROUTES:
            with self._lock:
                if self._contention or (self.write_slots is not None and self.writing >= self.write_slots):
                    self._contention = max(0, self._contention - 1)
                    self.refused_writes += 1
                    return self._too_many_writes()
                self.writing += 1
                self.most_writing = max(self.most_writing, self.writing)
        try:
            if route in WRITE_ROUTES and self.write_hold:
                time.sleep(self.write_hold)
            with self._lock:
                self.calls.append((route, arg or {}))
                handler = getattr(self, "_r_" + route.replace("/", "_"), None)
                if handler is None:
                    return Reply(404, {"Content-Type": "text/plain"}, b"unknown route")
                if route == "files/download":
                    self.ranges.append(req.headers.get("Range"))
                    reply = handler(arg, body, req.headers.get("Range"))
                else:
                    reply = handler(arg, body)
        finally:
            if route in WRITE_ROUTES:
                with self._lock:
                    self.writing -= 1
        if fault is not None and fault.drop_after is not None:
            self._drop.after = fault.drop_after
            return reply
        if fault is not None:  # applied, and then the answer is lost
            return self._fault_reply(fault)
        return reply

    def _too_many_writes(self) -> Reply:
        """Documented (data-ingress guide): 429, JSON reason too_many_write_operations, Retry-After."""
        wait = self.write_retry_after
        body = {"error_summary": "too_many_write_operations/..",
                "error": {"reason": {".tag": "too_many_write_operations"}, "retry_after": wait}}
        return json_reply(429, body, {"Retry-After": str(wait)})

    def _fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.route == route and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.connection_error:
            raise requests.ConnectionError("connection reset by peer (injected)")
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        if fault.status == 429:
            body = {"error_summary": "too_many_requests/", "error": {"reason": {".tag": "too_many_requests"},
                                                                      "retry_after": fault.retry_after or 1}}
            return json_reply(429, body, headers)
        if fault.body is not None:
            return json_reply(fault.status, fault.body, headers)
        return Reply(fault.status, {"Content-Type": "text/plain", **headers}, b"injected error")

    # -- oauth -----------------------------------------------------------------
    def _token(self, form: dict[str, str]) -> Reply:
        with self._lock:
            if form.get("client_id") != self.app_key:
                return json_reply(400, {"error": "invalid_client", "error_description": "Invalid client_id"})
            if form.get("grant_type") == "refresh_token":
                if form.get("refresh_token") not in self.refresh_tokens:
                    return json_reply(400, {"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"})
                return json_reply(200, self._new_access(None))
            if form.get("grant_type") == "authorization_code":
                challenge = self.pkce.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if challenge is None or challenge != expected:
                    return json_reply(400, {"error": "invalid_grant", "error_description": "code doesn't exist or has expired"})
                return json_reply(200, self._new_access(self.issue_refresh_token()))
            return json_reply(400, {"error": "unsupported_grant_type"})

    def _new_access(self, refresh: str | None) -> dict:
        token = "sl." + secrets.token_urlsafe(24)
        self.access_tokens[token] = time.time() + self.access_token_lifetime
        out = {"access_token": token, "expires_in": self.access_token_lifetime, "token_type": "bearer",
               "scope": "files.content.read files.content.write files.metadata.read account_info.read",
               "uid": "12345", "account_id": "dbid:fake"}
        if refresh:
            out["refresh_token"] = refresh
        return out

    # -- tree ------------------------------------------------------------------
    @staticmethod
    def _error(tag_path: dict, summary: str) -> Reply:
        return json_reply(409, {"error_summary": summary + "/..", "error": tag_path})

    def _check_path(self, path: str) -> str | None:
        if not path.startswith("/") or path.endswith("/") or "//" in path:
            return "malformed_path"
        for name in path.split("/")[1:]:
            if name.lower() in IGNORED_NAMES:
                return "disallowed_name"
            if name.endswith(" ") or len(name.encode("utf-16-le", "surrogatepass")) // 2 > MAX_NAME:
                return "malformed_path"
        return None

    def _display(self, path: str) -> str:
        """``path`` as Dropbox shows it: each existing folder in its first writer's case."""
        parent, name = path.rsplit("/", 1)
        return (self.folders.get(parent.lower(), parent) if parent else "") + "/" + name

    def _meta(self, lower: str) -> dict:
        f = self.files[lower]
        return {".tag": "file", "name": f.path_display.rsplit("/", 1)[1], "id": f.id,
                "client_modified": "2026-01-01T00:00:00Z", "server_modified": "2026-01-01T00:00:00Z",
                "rev": f.rev, "size": len(f.data), "path_lower": lower, "path_display": f.path_display,
                "is_downloadable": True, "content_hash": content_hash(f.data)}

    def _folder_meta(self, lower: str) -> dict:
        display = self.folders[lower]
        return {".tag": "folder", "name": display.rsplit("/", 1)[1], "id": f"id:folder{abs(hash(lower))}",
                "path_lower": lower, "path_display": display}

    def _used(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    def _make_parents(self, path: str) -> None:
        parts = path.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            lower = ("/" + "/".join(parts[:i])).lower()
            if lower in self.files:
                raise _Conflict("file")
            if lower not in self.folders:  # a folder keeps its first writer's case
                self.folders[lower] = self._display("/" + "/".join(parts[:i]))

    def _store(self, path: str, data: bytes) -> dict:
        lower = path.lower()
        if lower in self.folders:
            raise _Conflict("folder")
        self._make_parents(path)
        old = self.files.get(lower)
        if self._used() - (len(old.data) if old else 0) + len(data) > self.allocated:
            raise _Conflict("insufficient_space")
        display = (old.path_display.rsplit("/", 1)[0] + "/" + path.rsplit("/", 1)[1]) if old else self._display(path)
        self.files[lower] = _File(display, bytes(data), old.id if old else f"id:f{next(self._ids)}",
                                  f"{next(self._ids):09x}a")
        return self._meta(lower)

    def _write(self, path: str, data: bytes, mode: Any, wrap: str) -> Reply:
        """Store a file; WriteError replies wrapped as the route documents them."""
        mode_tag = mode.get(".tag") if isinstance(mode, dict) else (mode or "add")
        bad = self._check_path(path)
        if bad is None and mode_tag == "add" and path.lower() in self.files:
            bad = "conflict"
        if bad is None:
            try:
                meta = self._store(path, data)
                meta.pop(".tag")
                return json_reply(200, meta)
            except _Conflict as c:
                bad = c.tag if c.tag == "insufficient_space" else "conflict"
                kind = c.tag
        else:
            kind = "file"
        reason = {".tag": bad} if bad != "conflict" else {".tag": "conflict", "conflict": {".tag": kind}}
        if wrap == "upload":  # UploadError.path is the struct UploadWriteFailed
            return self._error({".tag": "path", "reason": reason, "upload_session_id": ""}, f"path/{bad}")
        return self._error({".tag": "path", "path": reason}, f"path/{bad}")

    # -- routes ----------------------------------------------------------------
    def _r_files_upload(self, arg: dict, body: bytes) -> Reply:
        if len(body) > MAX_REQUEST_BYTES:
            return self._error({".tag": "payload_too_large"}, "payload_too_large")
        if arg.get("content_hash") and arg["content_hash"] != content_hash(body):
            return self._error({".tag": "content_hash_mismatch"}, "content_hash_mismatch")
        return self._write(arg["path"], body, arg.get("mode"), "upload")

    def _r_files_upload_session_start(self, arg: dict, body: bytes) -> Reply:
        if len(body) > MAX_REQUEST_BYTES:
            return self._error({".tag": "payload_too_large"}, "payload_too_large")
        if arg.get("content_hash") and arg["content_hash"] != content_hash(body):
            return self._error({".tag": "content_hash_mismatch"}, "content_hash_mismatch")
        sid = "sess-" + secrets.token_hex(8)
        concurrent = (arg.get("session_type") or {}).get(".tag") == "concurrent"
        if concurrent and body:
            return self._error({".tag": "concurrent_session_data_not_allowed"}, "concurrent_session_data_not_allowed")
        self.sessions[sid] = _Session(bytearray(body), bool(arg.get("close")), concurrent)
        return json_reply(200, {"session_id": sid})

    def _lookup(self, cursor: dict) -> tuple[_Session | None, dict | None]:
        sess = self.sessions.get(cursor["session_id"])
        if sess is None:
            return None, {".tag": "not_found"}
        if cursor["offset"] != len(sess.data):
            return sess, {".tag": "incorrect_offset", "correct_offset": len(sess.data)}
        return sess, None

    def _concurrent_append(self, sess: _Session, arg: dict, body: bytes) -> Reply:
        """Documented: pieces in any order, at multiples of 4 MiB and, but for the closing one, 4 MiB multiples long."""
        offset, piece = arg["cursor"]["offset"], 4 * MiB
        if offset % piece:
            return self._error({".tag": "concurrent_session_invalid_offset"}, "concurrent_session_invalid_offset")
        if len(body) % piece and not arg.get("close"):
            return self._error({".tag": "concurrent_session_invalid_data_size"}, "concurrent_session_invalid_data_size")
        sess.pieces[offset] = body
        sess.closed = sess.closed or bool(arg.get("close"))
        return json_reply(200, None)

    def _r_files_upload_session_append_v2(self, arg: dict, body: bytes) -> Reply:
        concurrent = self.sessions.get(arg["cursor"]["session_id"])
        if concurrent is not None and concurrent.concurrent:
            return self._concurrent_append(concurrent, arg, body)
        sess, err = self._lookup(arg["cursor"])
        if err is None and sess.closed:
            err = {".tag": "closed"}
        if err is None and len(body) > MAX_REQUEST_BYTES:
            err = {".tag": "payload_too_large"}
        if err is None and arg.get("content_hash") and arg["content_hash"] != content_hash(body):
            err = {".tag": "content_hash_mismatch"}
        if err is not None:
            return self._error(err, err[".tag"])
        sess.data += body
        sess.closed = bool(arg.get("close"))
        return json_reply(200, None)

    def _r_files_upload_session_finish(self, arg: dict, body: bytes) -> Reply:
        sess = self.sessions.get(arg["cursor"]["session_id"])
        if sess is not None and sess.concurrent:
            if body:
                return self._error({".tag": "concurrent_session_data_not_allowed"}, "concurrent_session_data_not_allowed")
            if not sess.closed:
                return self._error({".tag": "concurrent_session_not_closed"}, "concurrent_session_not_closed")
            data, pos = bytearray(), 0
            for offset in sorted(sess.pieces):
                if offset != pos:
                    break
                data += sess.pieces[offset]
                pos += len(sess.pieces[offset])
            if pos != sum(len(p) for p in sess.pieces.values()):
                return self._error({".tag": "concurrent_session_missing_data"}, "concurrent_session_missing_data")
            sess.data, sess.closed = data, False
        sess, err = self._lookup(arg["cursor"])
        if err is None and len(body) > MAX_REQUEST_BYTES:
            return self._error({".tag": "payload_too_large"}, "payload_too_large")
        if err is not None:
            return self._error({".tag": "lookup_failed", "lookup_failed": err}, "lookup_failed/" + err[".tag"])
        # documented: content_hash covers "the file content uploaded in this call"
        if arg.get("content_hash") and arg["content_hash"] != content_hash(body):
            return self._error({".tag": "content_hash_mismatch"}, "content_hash_mismatch")
        data = bytes(sess.data + body)
        commit = arg["commit"]
        reply = self._write(commit["path"], data, commit.get("mode"), "finish")
        if reply.status == 200:
            del self.sessions[arg["cursor"]["session_id"]]
        return reply

    def _r_files_download(self, arg: dict, body: bytes, range_header: str | None = None) -> Reply:
        lower = arg["path"].lower()
        if lower not in self.files:
            return self._error({".tag": "path", "path": {".tag": "not_found"}}, "path/not_found")
        meta = self._meta(lower)
        meta.pop(".tag")
        data = self.files[lower].data
        headers = {"Content-Type": "application/octet-stream", "Dropbox-API-Result": json.dumps(meta)}
        span = _byte_range(range_header, len(data))
        if span is None:  # none, or not one we understand: the whole file (RFC 9110 lets a server ignore it)
            return Reply(200, headers, data)
        if span == ():
            return Reply(416, {"Content-Type": "text/plain", "Content-Range": f"bytes */{len(data)}"}, b"")
        start, end = span
        return Reply(206, {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start:end + 1])

    def _r_files_get_metadata(self, arg: dict, body: bytes) -> Reply:
        lower = arg["path"].lower()
        if lower in self.files:
            return json_reply(200, self._meta(lower))
        if lower in self.folders:
            return json_reply(200, self._folder_meta(lower))
        return self._error({".tag": "path", "path": {".tag": "not_found"}}, "path/not_found")

    def _r_files_list_folder(self, arg: dict, body: bytes) -> Reply:
        path = arg.get("path", "")
        lower = path.lower()
        if path and lower not in self.folders:
            tag = "not_folder" if lower in self.files else "not_found"
            return self._error({".tag": "path", "path": {".tag": tag}}, f"path/{tag}")
        prefix = lower + "/"
        entries = []
        for name in sorted(self.folders):
            if name.startswith(prefix) and (arg.get("recursive") or "/" not in name[len(prefix):]):
                entries.append(self._folder_meta(name))
        for name in sorted(self.files):
            if name.startswith(prefix) and (arg.get("recursive") or "/" not in name[len(prefix):]):
                entries.append(self._meta(name))
        limit = min(arg.get("limit") or self.page_size, self.page_size)
        return self._page(entries, 0, limit)

    def _page(self, entries: list[dict], start: int, limit: int) -> Reply:
        cursor = "cur-" + secrets.token_hex(8)
        end = start + limit
        self._cursors[cursor] = (entries, end, limit)
        return json_reply(200, {"entries": entries[start:end], "cursor": cursor, "has_more": end < len(entries)})

    def _r_files_list_folder_continue(self, arg: dict, body: bytes) -> Reply:
        state = self._cursors.pop(arg["cursor"], None)
        if state is None:
            return self._error({".tag": "reset"}, "reset")
        entries, start, limit = state
        return self._page(entries, start, limit)

    def _r_files_copy_v2(self, arg: dict, body: bytes) -> Reply:
        src, dst = arg["from_path"].lower(), arg["to_path"]
        if src not in self.files:
            return self._error({".tag": "from_lookup", "from_lookup": {".tag": "not_found"}}, "from_lookup/not_found")
        bad = self._check_path(dst)
        if bad is not None:
            return self._error({".tag": "to", "to": {".tag": bad}}, f"to/{bad}")
        if dst.lower() in self.files or dst.lower() in self.folders:
            kind = "file" if dst.lower() in self.files else "folder"
            return self._error({".tag": "to", "to": {".tag": "conflict", "conflict": {".tag": kind}}}, "to/conflict")
        try:
            meta = self._store(dst, self.files[src].data)
        except _Conflict as c:
            if c.tag == "insufficient_space":
                return self._error({".tag": "insufficient_quota"}, "insufficient_quota")
            return self._error({".tag": "to", "to": {".tag": "conflict", "conflict": {".tag": c.tag}}}, "to/conflict")
        return json_reply(200, {"metadata": meta})

    def _r_files_delete_v2(self, arg: dict, body: bytes) -> Reply:
        lower = arg["path"].lower()
        if lower in self.files:
            meta = self._meta(lower)
            del self.files[lower]
            return json_reply(200, {"metadata": meta})
        if lower in self.folders:
            meta = self._folder_meta(lower)
            for name in [n for n in self.files if n.startswith(lower + "/")]:
                del self.files[name]
            for name in [n for n in self.folders if n == lower or n.startswith(lower + "/")]:
                del self.folders[name]
            return json_reply(200, {"metadata": meta})
        return self._error({".tag": "path_lookup", "path_lookup": {".tag": "not_found"}}, "path_lookup/not_found")

    def _r_files_create_folder_v2(self, arg: dict, body: bytes) -> Reply:
        path = arg["path"]
        lower = path.lower()
        bad = self._check_path(path)
        if bad is not None:
            return self._error({".tag": "path", "path": {".tag": bad}}, f"path/{bad}")
        if lower in self.folders or lower in self.files:
            kind = "folder" if lower in self.folders else "file"
            return self._error({".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": kind}}}, "path/conflict")
        try:
            self._make_parents(path + "/x")
        except _Conflict:
            return self._error({".tag": "path", "path": {".tag": "conflict", "conflict": {".tag": "file"}}}, "path/conflict")
        meta = self._folder_meta(lower)
        meta.pop(".tag")
        return json_reply(200, {"metadata": meta})

    def _r_users_get_space_usage(self, arg: Any, body: bytes) -> Reply:
        return json_reply(200, {"used": self._used(), "allocation": {".tag": "individual", "allocated": self.allocated}})


def _byte_range(header: str | None, size: int) -> tuple[int, int] | tuple[()] | None:
    """``Range: bytes=a-b | a- | -n`` as (first, last) byte; () when unsatisfiable; None when absent or not understood."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if m is None or m.groups() == ("", ""):
        return None
    first, last = m.groups()
    if first == "":  # the last n bytes
        n = int(last)
        return () if n == 0 or size == 0 else (max(0, size - n), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        return ()
    return start, end


class _BrokenStream(io.BytesIO):
    """A response body whose connection drops after the bytes it holds, as urllib3 reports a short read."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data[:after])
        self.expected = len(data)

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Any:
        while chunk := self.read(amt):
            yield chunk
        got = self.tell()
        if got < self.expected:
            raise ProtocolError(f"Connection broken: IncompleteRead({got} bytes read, {self.expected - got} more expected)")

    def read(self, amt: int | None = None, decode_content: bool | None = None, **_: Any) -> bytes:
        return super().read(-1 if amt is None else amt)

    def release_conn(self) -> None:
        pass


class _Transport(FakeTransport):
    """The fake's transport; a reply the fake marked (a fault's ``drop_after``) loses its stream part-way."""

    def __init__(self, fake: FakeDropbox) -> None:
        super().__init__(fake.handle)
        self.fake = fake

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        self.fake._drop.after = None
        resp = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        after = self.fake._drop.after
        if after is not None:
            resp.raw = _BrokenStream(resp.raw.read(), after)
        return resp

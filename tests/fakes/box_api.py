"""A stateful fake of the Box API 2.0, served to the real ``box_sdk_gen`` SDK at the transport layer.

In-memory folders and files with ids, and the documented rules the backend relies on:

* names unique per folder, case-insensitively: 409 ``item_name_in_use`` with
  ``context_info.conflicts`` (a list for folders, the file for uploads);
* folder items paged by ``limit``/``offset`` or ``usemarker``/``marker``
  (``page_size`` caps a page, to exercise paging);
* uploads: ``POST /files/content`` (multipart: ``attributes`` then ``file``) and
  ``/files/{id}/content`` for a new version; a file above the user's
  ``max_upload_size`` (250 MB on free accounts) is refused with 413
  ``file_size_limit_exceeded``; a full account with 403 ``storage_limit_exceeded``;
* chunked upload sessions (``min_chunked`` = 20 MB): ``part_size`` chosen by the
  server; each ``PUT`` part must carry ``Content-Range: bytes a-b/size`` with ``a`` a
  multiple of the part size and exactly ``part_size`` bytes (the last part may be
  shorter), and ``Digest: sha=<base64 sha1>`` of its body; the commit lists every
  part (``part_id``, ``offset``, ``size``, ``sha1``) and carries the whole file's digest;
  the commit answers 202 + ``Retry-After`` while parts are "processing" (``commit_pending``);
* downloads answer 302 to a ``dl.boxcloud.com`` address, as Box does; that address
  honours ``Range: bytes=a-`` / ``bytes=a-b`` (206 + ``Content-Range``, 416 past the
  end), and a stream can be made to break off mid-way (:attr:`FakeBox.drop_downloads`);
* ``/files/{id}/copy`` (409 when the name is taken), ``DELETE /files/{id}``;
* names (Box's file limitations and folder rename rules): over 255 characters is 400
  ``item_name_too_long``; ``.``, ``..``, a leading or trailing space, and (for folders)
  ``/``, ``\\`` or non-printable characters are 400 ``item_name_invalid``; a *file*
  name's ``/``, ``\\`` and non-printable characters are removed without a word, as Box
  documents;
* OAuth2 ``/oauth2/token``: authorization codes and refresh tokens that are
  single-use (each refresh returns a new refresh token; the old one then gets 400
  ``invalid_grant`` "Refresh token has expired", one never issued "Invalid refresh
  token"); expired access tokens get 401;
* the client-credentials grant (``grant_type=client_credentials`` with
  ``box_subject_type`` ``enterprise``/``user`` and ``box_subject_id``): a 60-minute
  access token and no refresh token; an app that is not a Server Authentication app
  (``ccg=False``) gets 400 ``unauthorized_client``, a subject it may not act as 400
  ``invalid_grant`` "Grant credentials are invalid". (One folder tree serves every
  subject: the service account's own, separate tree is not modelled.)

Errors are injected with :meth:`FakeBox.fail`. :meth:`FakeBox.serve` runs the fake
as a real HTTP server on 127.0.0.1, and :func:`relay_session` reaches it from
another process (the requests keep their ``https://api.box.com/...`` addresses).
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from tests.fakes.requests_transport import FakeTransport, Reply, Request, json_reply

MB = 1000 * 1000
API = "api.box.com"
UPLOAD = "upload.box.com"
DL = "dl.boxcloud.com"


@dataclass
class _Item:
    id: str
    type: str  # "file" | "folder"
    name: str
    parent: str | None
    data: bytes = b""


@dataclass
class _Session:
    id: str
    folder_id: str | None
    file_id: str | None
    name: str
    size: int
    part_size: int
    parts: dict[int, dict] = field(default_factory=dict)  # offset -> part
    data: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Fault:
    pattern: str  # "METHOD path-regex", e.g. "PUT /api/2.0/files/upload_sessions/.*"
    status: int
    times: int = 1
    retry_after: int | None = None
    code: str = "internal_server_error"
    after_apply: bool = False
    connection_error: bool = False


@dataclass
class Dropped(Reply):
    """A reply whose body stream breaks off after ``drop_after`` bytes (the connection is lost)."""

    drop_after: int = 0


MAX_NAME = 255


class FakeBox:
    def __init__(self, client_id: str = "fake-client-id", client_secret: str = "fake-client-secret",
                 max_upload_size: int = 250 * 1024 * 1024, space_amount: int = 10 * 1024**3,
                 min_chunked: int = 20 * MB, part_size: int = 8 * 1024 * 1024, page_size: int = 1000,
                 ccg: bool = True, enterprise_id: str = "987654", user_id: str = "11446498",
                 user_tokens: bool = False, token_delay: float = 0.0) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.ccg = ccg  # a Server Authentication (client credentials grant) app, authorized by the admin
        self.enterprise_id, self.user_id = enterprise_id, user_id
        self.user_tokens = user_tokens  # "App + Enterprise Access" and "Generate user access tokens"
        self.token_delay = token_delay  # seconds each token request takes (widens races between processes)
        self.spent_refresh_tokens: set[str] = set()
        self.ccg_tokens = 0
        self.drop_downloads: list[int] = []  # each next download stream breaks off after that many bytes
        self.download_ranges: list[str | None] = []  # the Range header of every download stream
        self.max_upload_size = max_upload_size
        self.space_amount = space_amount
        self.min_chunked = min_chunked
        self.part_size = part_size
        self.page_size = page_size
        self.items: dict[str, _Item] = {"0": _Item("0", "folder", "All Files", None)}
        self.sessions: dict[str, _Session] = {}
        self.refresh_tokens: set[str] = set()
        self.access_tokens: dict[str, float] = {}
        self.codes: set[str] = set()
        self.downloads: dict[str, str] = {}  # download token -> file id
        self.commit_pending = 0  # commits answered 202 + Retry-After before succeeding
        self.faults: list[Fault] = []
        self.calls: list[str] = []  # "METHOD /path"
        self.refreshes = 0
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()

    # -- test controls ---------------------------------------------------------
    def session(self) -> requests.Session:
        """A requests session answered in-process by this fake (a dropped stream breaks off mid-body)."""
        session = requests.Session()
        adapter = _Transport(self.handle)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def serve(self) -> _Server:
        """This fake as a real HTTP server on 127.0.0.1 (stop it with ``.close()``); see relay_session."""
        return _Server(self)

    def issue_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens.add(token)
        return token

    def issue_access_token(self, lifetime: float = 3600) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = time.time() + lifetime
        return token

    def authorize(self) -> str:
        """What the user's browser gets after granting access: a code."""
        code = "code-" + secrets.token_urlsafe(8)
        self.codes.add(code)
        return code

    def expire_access_tokens(self) -> None:
        self.access_tokens = {t: 0.0 for t in self.access_tokens}

    def fail(self, pattern: str, status: int, **kw: Any) -> Fault:
        fault = Fault(pattern, status, **kw)
        self.faults.append(fault)
        return fault

    def path_of(self, item_id: str) -> str:
        names = []
        item = self.items[item_id]
        while item.parent is not None:
            names.append(item.name)
            item = self.items[item.parent]
        return "/".join(reversed(names))

    def find(self, path: str) -> _Item | None:
        for item in self.items.values():
            if item.id != "0" and self.path_of(item.id) == path:
                return item
        return None

    def call_count(self, pattern: str) -> int:
        return sum(1 for c in self.calls if re.fullmatch(pattern, c))

    # -- dispatch --------------------------------------------------------------
    def handle(self, req: Request) -> Reply:
        if req.host == API and req.path == "/oauth2/token":
            if self.token_delay:
                time.sleep(self.token_delay)
            return self._token(req.form())
        if req.host == DL:
            return self._dl(req)
        if req.host not in (API, UPLOAD):
            return Reply(404, {}, b"")
        path = req.path.removeprefix("/api") if req.host == UPLOAD else req.path
        call = f"{req.method} {req.path}"
        with self._lock:
            token = req.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.access_tokens.get(token, 0) < time.time():
                return Reply(401, {"WWW-Authenticate": 'Bearer realm="Service", error="invalid_token"'}, b"")
        fault = self._fault(call)
        if fault is not None and not fault.after_apply:
            return self._fault_reply(fault)
        with self._lock:
            self.calls.append(call)
            reply = self._route(req, path)
        if fault is not None:
            return self._fault_reply(fault)
        return reply

    def _fault(self, call: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and re.fullmatch(fault.pattern, call):
                    fault.times -= 1
                    return fault
        return None

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault.connection_error:
            raise requests.ConnectionError("connection reset by peer (injected)")
        headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
        return self._err(fault.status, fault.code, "injected", headers=headers)

    @staticmethod
    def _err(status: int, code: str, message: str, context: Any = None, headers: dict | None = None) -> Reply:
        body = {"type": "error", "status": status, "code": code, "message": message,
                "request_id": secrets.token_hex(6), "help_url": "https://developer.box.com/guides/api-calls/permissions-and-errors/common-errors/"}
        if context is not None:
            body["context_info"] = context
        return json_reply(status, body, headers)

    def _route(self, req: Request, path: str) -> Reply:
        m, p = req.method, path
        routes = [
            ("GET", r"/2\.0/users/me", self._me),
            ("GET", r"/2\.0/folders/(\w+)/items", self._folder_items),
            ("POST", r"/2\.0/folders", self._create_folder),
            ("POST", r"/2\.0/files/content", self._upload),
            ("POST", r"/2\.0/files/(\w+)/content", self._upload),
            ("GET", r"/2\.0/files/(\w+)/content", self._download),
            ("POST", r"/2\.0/files/(\w+)/copy", self._copy),
            ("DELETE", r"/2\.0/files/(\w+)", self._delete),
            ("DELETE", r"/2\.0/folders/(\w+)", self._delete_folder),
            ("POST", r"/2\.0/files/upload_sessions", self._create_session),
            ("POST", r"/2\.0/files/(\w+)/upload_sessions", self._create_session),
            ("PUT", r"/2\.0/files/upload_sessions/(\w+)", self._put_part),
            ("GET", r"/2\.0/files/upload_sessions/(\w+)/parts", self._list_parts),
            ("POST", r"/2\.0/files/upload_sessions/(\w+)/commit", self._commit),
            ("DELETE", r"/2\.0/files/upload_sessions/(\w+)", self._abort),
        ]
        for method, pattern, fn in routes:
            match = re.fullmatch(pattern, p)
            if method == m and match:
                return fn(req, *match.groups())
        return self._err(404, "not_found", f"no route {m} {p}")

    # -- oauth -----------------------------------------------------------------
    def _token(self, form: dict[str, str]) -> Reply:
        with self._lock:
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return json_reply(400, {"error": "invalid_client", "error_description": "The client credentials are invalid"})
            grant = form.get("grant_type")
            if grant == "client_credentials":
                return self._ccg(form)
            if grant == "refresh_token":
                token = form.get("refresh_token")
                if token in self.spent_refresh_tokens:  # what Box answers for a refresh token used before
                    return json_reply(400, {"error": "invalid_grant", "error_description": "Refresh token has expired"})
                if token not in self.refresh_tokens:
                    return json_reply(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})
                self.refresh_tokens.discard(token)  # single-use
                self.spent_refresh_tokens.add(token)
                self.refreshes += 1
            elif grant == "authorization_code":
                if form.get("code") not in self.codes:
                    return json_reply(400, {"error": "invalid_grant", "error_description": "Auth code doesn't exist or is invalid for the client"})
                self.codes.discard(form["code"])
            else:
                return json_reply(400, {"error": "unsupported_grant_type"})
            return json_reply(200, {"access_token": self.issue_access_token(), "expires_in": 3600,
                                    "restricted_to": [], "token_type": "bearer",
                                    "refresh_token": self.issue_refresh_token()})

    def _ccg(self, form: dict[str, str]) -> Reply:
        subject_type, subject_id = form.get("box_subject_type"), form.get("box_subject_id")
        if not self.ccg:
            return json_reply(400, {"error": "unauthorized_client",
                                    "error_description": 'The "box_subject_type" value is unauthorized for this client_id'})
        allowed = ((subject_type == "enterprise" and subject_id == self.enterprise_id)
                   or (subject_type == "user" and subject_id == self.user_id and self.user_tokens))
        if not allowed:
            return json_reply(400, {"error": "invalid_grant", "error_description": "Grant credentials are invalid"})
        self.ccg_tokens += 1
        return json_reply(200, {"access_token": self.issue_access_token(), "expires_in": 3600,
                                "restricted_to": [], "token_type": "bearer"})  # no refresh token

    # -- names ------------------------------------------------------------------
    def _name(self, name: str, folder: bool) -> tuple[str, Reply | None]:
        """``(the name Box keeps, None)`` or ``("", the 400 Box answers)``."""
        if len(name) > MAX_NAME:
            return "", self._err(400, "item_name_too_long", "Item name too long")
        bad_chars = any(ch in "/\\" or not ch.isprintable() for ch in name)
        if bad_chars and not folder:  # files: sanitized by removing the characters, without a word
            name = "".join(ch for ch in name if ch not in "/\\" and ch.isprintable())
            bad_chars = False
        if bad_chars or name in ("", ".", "..") or name != name.strip(" "):
            return "", self._err(400, "item_name_invalid", "Item name invalid")
        return name, None

    # -- items -----------------------------------------------------------------
    def _mini(self, item: _Item) -> dict:
        out = {"type": item.type, "id": item.id, "name": item.name, "etag": "0", "sequence_id": "0"}
        if item.type == "file":
            out["size"] = len(item.data)
            out["sha1"] = hashlib.sha1(item.data).hexdigest()
            out["file_version"] = {"type": "file_version", "id": item.id + "1", "sha1": out["sha1"]}
        return out

    def _full(self, item: _Item) -> dict:
        out = self._mini(item)
        if item.parent is not None:
            out["parent"] = self._mini(self.items[item.parent])
        return out

    def _children(self, folder_id: str) -> list[_Item]:
        return sorted((i for i in self.items.values() if i.parent == folder_id), key=lambda i: (i.type != "folder", i.name.lower()))

    def _named(self, folder_id: str, name: str) -> _Item | None:
        for item in self._children(folder_id):
            if item.name.casefold() == name.casefold():
                return item
        return None

    def _used(self) -> int:
        return sum(len(i.data) for i in self.items.values())

    def _me(self, req: Request) -> Reply:
        return json_reply(200, {"type": "user", "id": "11446498", "name": "Fake User", "login": "fake@example.com",
                                "max_upload_size": self.max_upload_size, "space_amount": self.space_amount,
                                "space_used": self._used()})

    def _folder_items(self, req: Request, folder_id: str) -> Reply:
        folder = self.items.get(folder_id)
        if folder is None or folder.type != "folder":
            return self._err(404, "not_found", "Not Found")
        q = req.query
        limit = min(int(q.get("limit", 100)), 1000, self.page_size)
        children = [self._mini(i) for i in self._children(folder_id)]
        if q.get("usemarker", "").lower() == "true":  # the SDK sends str(True)
            start = int(base64.b64decode(q["marker"]).decode()) if q.get("marker") else 0
            end = start + limit
            body = {"entries": children[start:end], "limit": limit,
                    "next_marker": base64.b64encode(str(end).encode()).decode() if end < len(children) else None}
            return json_reply(200, body)
        offset = int(q.get("offset", 0))
        return json_reply(200, {"entries": children[offset:offset + limit], "total_count": len(children),
                                "offset": offset, "limit": limit, "order": []})

    def _create_folder(self, req: Request) -> Reply:
        body = req.json()
        parent = self.items.get(body["parent"]["id"])
        if parent is None or parent.type != "folder":
            return self._err(404, "not_found", "Not Found")
        name, error = self._name(body["name"], folder=True)
        if error:
            return error
        existing = self._named(parent.id, name)
        if existing is not None:
            return self._err(409, "item_name_in_use", "Item with the same name already exists",
                             {"conflicts": [self._mini(existing)]})
        item = _Item(str(next(self._ids)), "folder", name, parent.id)
        self.items[item.id] = item
        return json_reply(201, self._full(item))

    def _space_error(self, size: int, replacing: int = 0) -> Reply | None:
        if size > self.max_upload_size:
            return self._err(413, "file_size_limit_exceeded", "File size exceeds the folder owner's file size limit")
        if self._used() - replacing + size > self.space_amount:
            return self._err(403, "storage_limit_exceeded", "Account storage limit reached")
        return None

    def _upload(self, req: Request, file_id: str | None = None) -> Reply:
        parts = _multipart(req)
        if "attributes" not in parts or "file" not in parts or next(iter(parts)) != "attributes":
            return self._err(400, "bad_request", "attributes must come before file")
        attrs, data = json.loads(parts["attributes"]), parts["file"]
        if attrs.get("name"):
            attrs["name"], error = self._name(attrs["name"], folder=False)
            if error:
                return error
        if file_id is not None:
            item = self.items.get(file_id)
            if item is None or item.type != "file":
                return self._err(404, "not_found", "Not Found")
            error = self._space_error(len(data), len(item.data))
            if error:
                return error
            item.data = data
            if attrs.get("name"):
                item.name = attrs["name"]
            return json_reply(201, {"total_count": 1, "entries": [self._full(item)]})
        parent = self.items.get(attrs["parent"]["id"])
        if parent is None or parent.type != "folder":
            return self._err(404, "not_found", "Not Found")
        existing = self._named(parent.id, attrs["name"])
        if existing is not None:  # uploads report the one conflicting item, not a list
            return self._err(409, "item_name_in_use", "Item with the same name already exists",
                             {"conflicts": self._mini(existing)})
        error = self._space_error(len(data))
        if error:
            return error
        item = _Item(str(next(self._ids)), "file", attrs["name"], parent.id, data)
        self.items[item.id] = item
        return json_reply(201, {"total_count": 1, "entries": [self._full(item)]})

    def _download(self, req: Request, file_id: str) -> Reply:
        item = self.items.get(file_id)
        if item is None or item.type != "file":
            return self._err(404, "not_found", "Not Found")
        token = secrets.token_hex(8)
        self.downloads[token] = file_id
        return Reply(302, {"Location": f"https://{DL}/d/1/{token}/download"}, b"")

    def _copy(self, req: Request, file_id: str) -> Reply:
        item = self.items.get(file_id)
        body = req.json()
        if item is None or item.type != "file":
            return self._err(404, "not_found", "Not Found")
        parent = self.items.get(body["parent"]["id"])
        if parent is None:
            return self._err(404, "not_found", "Not Found")
        name, error = self._name(body.get("name") or item.name, folder=False)
        if error:
            return error
        existing = self._named(parent.id, name)
        if existing is not None:
            return self._err(409, "item_name_in_use", "Item with the same name already exists",
                             {"conflicts": self._mini(existing)})
        error = self._space_error(len(item.data))
        if error:
            return error
        new = _Item(str(next(self._ids)), "file", name, parent.id, item.data)
        self.items[new.id] = new
        return json_reply(201, self._full(new))

    def _delete(self, req: Request, file_id: str) -> Reply:
        item = self.items.get(file_id)
        if item is None or item.type != "file":
            return self._err(404, "not_found", "Not Found")
        del self.items[file_id]
        return Reply(204, {}, b"")

    def _delete_folder(self, req: Request, folder_id: str) -> Reply:
        """DELETE /folders/:id: the root cannot go; a folder with items only with ?recursive=true."""
        item = self.items.get(folder_id)
        if item is None or item.type != "folder":
            return self._err(404, "not_found", "Not Found")
        if folder_id == "0":
            return self._err(403, "access_denied_insufficient_permissions", "The root folder cannot be deleted")
        # the official SDK sends "True" (str of a bool); the API reads booleans without regard to case
        if self._children(folder_id) and req.query.get("recursive", "").lower() != "true":
            return self._err(400, "folder_not_empty", "Cannot delete - folder not empty")
        doomed, todo = [], [folder_id]
        while todo:
            current = todo.pop()
            doomed.append(current)
            todo.extend(child.id for child in self._children(current))
        for gone in doomed:
            del self.items[gone]
        return Reply(204, {}, b"")

    def _dl(self, req: Request) -> Reply:
        """The download address: the file's bytes, or the range asked for; a stream may break off."""
        with self._lock:
            file_id = self.downloads.pop(req.path.split("/")[3], None)
            if file_id is None or file_id not in self.items:
                return Reply(404, {}, b"")
            whole = self.items[file_id].data
            rng = req.headers.get("Range")
            self.download_ranges.append(rng)
            status, data = 200, whole
            headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
            if rng:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                first = int(m.group(1)) if m else len(whole)
                last = min(int(m.group(2)), len(whole) - 1) if m and m.group(2) else len(whole) - 1
                if first >= len(whole) or last < first:
                    return Reply(416, {"Content-Range": f"bytes */{len(whole)}"}, b"")
                status, data = 206, whole[first:last + 1]
                headers["Content-Range"] = f"bytes {first}-{last}/{len(whole)}"
            headers["Content-Length"] = str(len(data))
            # a stream shorter than the next drop is not broken, and leaves that drop to a later one
            if self.drop_downloads and self.drop_downloads[0] < len(data):
                return Dropped(status, headers, data, drop_after=self.drop_downloads.pop(0))
        return Reply(status, headers, data)

    # -- chunked uploads ---------------------------------------------------------
    def _create_session(self, req: Request, file_id: str | None = None) -> Reply:
        body = req.json()
        size = int(body["file_size"])
        if body.get("file_name"):
            body["file_name"], error = self._name(body["file_name"], folder=False)
            if error:
                return error
        if size < self.min_chunked:
            return self._err(400, "file_size_too_small", f"chunked uploads need at least {self.min_chunked} bytes")
        if file_id is not None:
            item = self.items.get(file_id)
            if item is None or item.type != "file":
                return self._err(404, "not_found", "Not Found")
            error = self._space_error(size, len(item.data))
            name, folder_id = body.get("file_name") or item.name, None
        else:
            parent = self.items.get(body["folder_id"])
            if parent is None or parent.type != "folder":
                return self._err(404, "not_found", "Not Found")
            existing = self._named(parent.id, body["file_name"])
            if existing is not None:
                return self._err(409, "item_name_in_use", "Item with the same name already exists",
                                 {"conflicts": self._mini(existing)})
            error = self._space_error(size)
            name, folder_id = body["file_name"], parent.id
        if error:
            return error
        sid = secrets.token_hex(16).upper()
        sess = _Session(sid, folder_id, file_id, name, size, self.part_size)
        self.sessions[sid] = sess
        return json_reply(201, self._session_json(sess))

    def _session_json(self, sess: _Session) -> dict:
        base = f"https://{UPLOAD}/api/2.0/files/upload_sessions/{sess.id}"
        return {"id": sess.id, "type": "upload_session", "session_expires_at": "2030-01-01T00:00:00Z",
                "part_size": sess.part_size, "total_parts": -(-sess.size // sess.part_size),
                "num_parts_processed": len(sess.parts),
                "session_endpoints": {"upload_part": base, "commit": base + "/commit", "abort": base,
                                      "list_parts": base + "/parts", "status": base, "log_event": base + "/log"}}

    def _put_part(self, req: Request, sid: str) -> Reply:
        sess = self.sessions.get(sid)
        if sess is None:
            return self._err(404, "not_found", "The upload session was not found")
        m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", req.headers.get("Content-Range", ""))
        if m is None:
            return self._err(400, "bad_request", "missing or malformed Content-Range")
        first, last, total = map(int, m.groups())
        body = req.body
        expected = min(sess.part_size, sess.size - first)
        if (total != sess.size or first % sess.part_size or last - first + 1 != len(body)
                or len(body) != expected or last >= sess.size):
            return self._err(416, "range_not_satisfiable",
                             "parts must be exactly part_size bytes at multiples of part_size (the last may be shorter)")
        digest = req.headers.get("Digest", "")
        sha1 = hashlib.sha1(body).digest()
        if digest != "sha=" + base64.b64encode(sha1).decode():
            return self._err(412, "sha1_mismatch", "The digest of the part does not match its content")
        if first in sess.parts and sess.parts[first]["sha1"] != sha1.hex():
            return self._err(416, "range_not_satisfiable", "the range overlaps a part already uploaded")
        part = {"part_id": secrets.token_hex(4).upper(), "offset": first, "size": len(body), "sha1": sha1.hex()}
        sess.parts[first], sess.data[first] = part, body
        return json_reply(200, {"part": part})

    def _list_parts(self, req: Request, sid: str) -> Reply:
        sess = self.sessions.get(sid)
        if sess is None:
            return self._err(404, "not_found", "The upload session was not found")
        entries = [sess.parts[o] for o in sorted(sess.parts)]
        return json_reply(200, {"entries": entries, "total_count": len(entries), "limit": 1000, "offset": 0})

    def _commit(self, req: Request, sid: str) -> Reply:
        sess = self.sessions.get(sid)
        if sess is None:
            return self._err(404, "not_found", "The upload session was not found")
        if self.commit_pending > 0:
            self.commit_pending -= 1
            return Reply(202, {"Retry-After": "0"}, b"")
        listed = req.json().get("parts") or []
        want = [sess.parts[o] for o in sorted(sess.parts)]
        if [{k: p.get(k) for k in ("part_id", "offset", "size", "sha1")} for p in listed] != want:
            return self._err(400, "bad_request", "the parts list does not match the uploaded parts")
        data = b"".join(sess.data[o] for o in sorted(sess.data))
        if len(data) != sess.size:
            return self._err(400, "bad_request", "the parts do not cover the file")
        sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()
        if req.headers.get("Digest") != "sha=" + sha1:
            return self._err(412, "sha1_mismatch", "The digest of the file does not match its content")
        if sess.file_id is not None:
            item = self.items.get(sess.file_id)
            if item is None:
                return self._err(404, "not_found", "Not Found")
            item.data, item.name = data, sess.name
        else:
            existing = self._named(sess.folder_id, sess.name)
            if existing is not None:
                return self._err(409, "item_name_in_use", "Item with the same name already exists",
                                 {"conflicts": self._mini(existing)})
            item = _Item(str(next(self._ids)), "file", sess.name, sess.folder_id, data)
            self.items[item.id] = item
        del self.sessions[sid]
        return json_reply(201, {"total_count": 1, "entries": [self._full(item)]})

    def _abort(self, req: Request, sid: str) -> Reply:
        self.sessions.pop(sid, None)
        return Reply(204, {}, b"")


def _multipart(req: Request) -> dict[str, bytes]:
    """The named parts of a multipart/form-data body, in order."""
    head = f"Content-Type: {req.headers.get('Content-Type', '')}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + req.body)
    out: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = part.get_payload(decode=True) or b""
    return out


# -- transports ------------------------------------------------------------------------
class _BrokenRaw:
    """A response body that breaks off after ``drop_after`` bytes, as urllib3 reports a lost connection."""

    def __init__(self, data: bytes, drop_after: int) -> None:
        self.data, self.drop_after, self.pos = data, drop_after, 0

    def _error(self) -> urllib3.exceptions.ProtocolError:
        return urllib3.exceptions.ProtocolError(
            "Connection broken: IncompleteRead", urllib3.exceptions.IncompleteRead(self.pos, len(self.data) - self.pos))

    def read(self, amt: int | None = None, decode_content: bool | None = None, **_: Any) -> bytes:
        if self.pos >= self.drop_after:
            raise self._error()
        end = self.drop_after if amt is None else min(self.drop_after, self.pos + amt)
        out, self.pos = self.data[self.pos:end], end
        return out

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        while True:
            yield self.read(amt)

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Transport(FakeTransport):
    """The in-process transport, plus replies whose body breaks off (:class:`Dropped`)."""

    def __init__(self, handler: Any) -> None:
        self._dropped = threading.local()

        def remember(req: Request) -> Reply:
            reply = handler(req)
            self._dropped.reply = reply if isinstance(reply, Dropped) else None
            return reply

        super().__init__(remember)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        resp = super().send(request, **kwargs)
        reply = getattr(self._dropped, "reply", None)
        if reply is not None:
            resp.raw = _BrokenRaw(reply.body, reply.drop_after)
        return resp


class _Server:
    """A FakeBox behind a real HTTP server on 127.0.0.1: ``/<host><path>`` is ``https://<host><path>``."""

    def __init__(self, fake: FakeBox) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()  # the blank line after the last chunk
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                host, _, rest = self.path.lstrip("/").partition("/")
                req = Request(self.command, f"https://{host}/{rest}", CaseInsensitiveDict(dict(self.headers)), body)
                try:
                    reply = fake.handle(req)
                except requests.ConnectionError:  # an injected dropped connection
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if isinstance(reply, Dropped):
                    self.wfile.write(reply.body[:reply.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Relay(HTTPAdapter):
    """Sends every request over real HTTP to a :class:`_Server`, keeping its https address for the fake."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        parts = urlsplit(request.url or "")
        relayed = request.copy()
        relayed.url = f"{self.base}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        resp = super().send(relayed, **kwargs)
        resp.request, resp.url = request, request.url or ""
        return resp


def relay_session(base: str) -> requests.Session:
    """A requests session whose https requests reach the fake served at ``base`` (``FakeBox.serve().url``)."""
    session = requests.Session()
    session.trust_env = False  # 127.0.0.1 directly, whatever proxy the environment names
    session.mount("https://", _Relay(base))
    return session

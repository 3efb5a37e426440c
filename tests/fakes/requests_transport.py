"""A requests transport adapter that answers from an in-process fake instead of the network.

The SDKs under test keep building and parsing every HTTP request and response;
only the socket is replaced (ENVIRONMENT.md: a fake "at the transport layer").
A handler raising ``requests.ConnectionError`` stands in for a dropped connection.
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import responses
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


@dataclass
class Request:
    method: str
    url: str
    headers: CaseInsensitiveDict
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query).items()}

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def json_reply(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode())


class _Raw(io.BytesIO):
    """The response body, readable the way requests and urllib3 callers read it."""

    def read(self, amt: int | None = None, decode_content: bool | None = None, **_: Any) -> bytes:
        return super().read(-1 if amt is None else amt)

    def release_conn(self) -> None:
        pass


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data.encode() if isinstance(data, str) else data
    return b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in body)


class FakeTransport(BaseAdapter):
    def __init__(self, handler: Callable[[Request], Reply]) -> None:
        super().__init__()
        self.handler = handler

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        req = Request(request.method or "GET", request.url or "", CaseInsensitiveDict(request.headers),
                      _body_bytes(request.body))
        reply = self.handler(req)
        resp = requests.Response()
        resp.status_code = reply.status
        resp.reason = responses.get(reply.status, "")
        resp.headers = CaseInsensitiveDict(reply.headers)
        resp.raw = _Raw(reply.body)
        resp.url = req.url
        resp.request = request
        resp.connection = self
        resp.encoding = "utf-8"
        return resp

    def close(self) -> None:
        pass


def session_for(handler: Callable[[Request], Reply]) -> requests.Session:
    """A requests session whose every https/http request is answered by ``handler``."""
    session = requests.Session()
    adapter = FakeTransport(handler)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session

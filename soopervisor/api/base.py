"""The neutral base classes of the REST handlers and the log websocket.

A handler here knows nothing of how a client logs in: a home (Jupyter, the
polling server) mixes an auth base class in that supplies ``authorize(scope)``
(see :func:`soopervisor.api.routes.mount`). Without one every request is
refused: the default is to deny.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote

from tornado import httputil, web, websocket

from soopervisor import errors
from soopervisor.credentials import CredentialsError
from soopervisor.remotes.base import RemoteUnavailable

if TYPE_CHECKING:
    from soopervisor.service import RunService

CHUNK = 256 * 1024
T = TypeVar("T")


class ApiError(web.HTTPError):
    """An HTTP error whose JSON body is ``{"error", "hint", **extra}``."""

    def __init__(self, status: int, error: str, hint: str | None = None, **extra: Any) -> None:
        # log_message is %-formatted by tornado: keep user text out of the format string
        super().__init__(status, "%s", error)
        self.error, self.hint, self.extra = error, hint, extra


def status_for(e: errors.SoopervisorError) -> int:
    """The HTTP status of a soopervisor error (jupyter_ext/CONTRACT.md)."""
    if isinstance(e, errors.InvalidProject):
        return 422
    if isinstance(e, (errors.ArtifactsNotFound, errors.RunNotFound)):
        return 404
    if isinstance(e, (errors.EngineUnavailable, errors.StorageUnavailable, CredentialsError, RemoteUnavailable)):
        return 503
    if isinstance(e, (errors.UnsafePath, errors.UsageError)):
        return 400
    return 500  # IntegrityError (a damaged stored set) and anything unforeseen


def api_error(e: errors.SoopervisorError) -> ApiError:
    """A soopervisor error as the ApiError its HTTP answer is made of."""
    extra = {"report": e.report.to_dict()} if isinstance(e, errors.InvalidProject) else {}
    return ApiError(status_for(e), e.message, e.hint, docs=e.docs, **extra)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a worker thread (it may touch Docker, storage or a database); errors as ApiError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except errors.SoopervisorError as e:
        raise api_error(e) from None


#: the hint of a bare 403 when the home's auth base names none (``auth_hint``)
AUTH_HINT = "authenticate first: send the token this server expects"
INTERNAL = {
    "error": "internal error in the soopervisor server",
    "hint": "the server log has the details",
}


def error_body(status: int, exc: BaseException | None, auth_hint: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response: never a traceback."""
    if isinstance(exc, ApiError):
        return {"error": exc.error, "hint": exc.hint, **exc.extra}
    if isinstance(exc, web.HTTPError):  # tornado's and the home's own: auth, missing argument, bad JSON
        try:
            text = exc.log_message % exc.args if exc.log_message else ""
        except (TypeError, ValueError):
            text = exc.log_message or ""
        text = text or exc.reason or httputil.responses.get(status, "error")
        hint = (auth_hint or AUTH_HINT) if status == 403 and not exc.log_message else None
        return {"error": text, "hint": hint}
    return dict(INTERNAL)


def content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _no_auth() -> ApiError:
    return ApiError(
        403,
        "this route has no authentication configured",
        "the server must mount soopervisor.api with an auth base (soopervisor.api.routes.mount)",
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _authorize(handler: web.RequestHandler, scope: str) -> None:
    """The home's ``authorize(scope)``; none mixed in: deny.

    The neutral classes only *annotate* ``authorize``: a method defined on them would
    come before the home's auth base in the MRO and hide it.
    """
    authorize = getattr(handler, "authorize", None)
    if authorize is None:
        raise _no_auth()
    await _maybe_await(authorize(scope))


class ApiHandler(web.RequestHandler):
    """Neutral base of every REST handler. The home mixes an auth base class in (see mount).

    The concrete class is ``(Handler, AuthBase)``: the handler's methods come first,
    the auth base's ``prepare`` (Jupyter's sets ``current_user`` and checks XSRF)
    runs through ``super().prepare()``, then ``authorize`` with the method's scope.
    """

    scopes: ClassVar[dict[str, str]] = {
        "GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "DELETE": "write",
    }
    #: ``authorize(scope)``: raise ApiError(401|403) (or tornado's HTTPError) unless the request
    #: may act in ``scope`` (read, write, admin...); may be a coroutine function. Supplied by the
    #: home's auth base, annotated only here (see _authorize); without one every request gets 403.
    authorize: ClassVar[Callable[..., Any]]

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json")

    async def prepare(self) -> None:
        await _maybe_await(super().prepare())
        if self._finished:  # the home answered already (e.g. a redirect to its login page)
            return
        scope = self.scopes.get(self.request.method or "")
        if scope is None:
            if self.request.method == "OPTIONS":
                return  # a CORS preflight carries no credentials; it answers headers only
            raise ApiError(405, f"{self.request.method} is not allowed here")
        await _authorize(self, scope)

    @property
    def service(self) -> RunService:
        """The run service every route translates to (settings["soopervisor_service"])."""
        service = self.settings.get("soopervisor_service")
        if service is None:  # a home set up by hand: a default service, as before
            from soopervisor.service import RunService

            service = RunService()
        return service

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(status_code, exc, getattr(self, "auth_hint", None))))

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def json_body(self) -> dict[str, Any]:
        """The request's JSON object; ``{}`` when the body is empty."""
        raw = self.request.body.strip()
        if not raw:
            return {}
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "the request body is not valid JSON", "send a JSON object") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    async def send_file(self, path: Path, filename: str, content_type: str | None = None) -> None:
        """Stream ``path`` in chunks, as an attachment."""
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        self.set_header("Content-Type", ctype)  # before the first flush sends the headers
        self.set_header("Content-Disposition", content_disposition(filename))
        self.set_header("Content-Length", str(path.stat().st_size))
        f = await asyncio.to_thread(open, path, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                self.write(chunk)
                await self.flush()
        finally:
            f.close()
        await self.finish()


class LogSocketBase(websocket.WebSocketHandler):
    """Neutral base of the log websocket; the home's socket auth base supplies ``authorize``.

    ``get`` authorizes (scope "read") before the upgrade, so a client that may not
    read never gets a socket; refusals are the same JSON errors as the REST routes.
    """

    #: supplied by the home's socket auth base, as ApiHandler.authorize
    authorize: ClassVar[Callable[..., Any]]

    async def get(self, *args: Any, **kwargs: Any) -> None:
        await _authorize(self, "read")
        await self.before_upgrade(*args, **kwargs)
        await super().get(*args, **kwargs)

    async def before_upgrade(self, *args: Any, **kwargs: Any) -> None:
        """Checks after authorization, before the upgrade (e.g. 404 for an unknown run)."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(status_code, exc, getattr(self, "auth_hint", None))))

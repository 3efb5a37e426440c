"""REST handlers of the soopervisor jupyter_server extension.

Each handler parses its input, calls one ``soopervisor`` function off the IO
loop and answers JSON (CONTRACT.md). Errors are ``{"error", "hint"}`` with a
status chosen from the error's type; a traceback never reaches the client.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import httputil, web

import soopervisor
from soopervisor import errors
from soopervisor.credentials import CredentialsError
from soopervisor.project import enclosing_project
from soopervisor.troubleshooting import run_topic, topic_url

AUTH_RESOURCE = "soopervisor"
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000
CHUNK = 256 * 1024
T = TypeVar("T")


class ApiError(web.HTTPError):
    """An HTTP error whose JSON body is ``{"error", "hint", **extra}``."""

    def __init__(self, status: int, error: str, hint: str | None = None, **extra: Any) -> None:
        # log_message is %-formatted by tornado: keep user text out of the format string
        super().__init__(status, "%s", error)
        self.error, self.hint, self.extra = error, hint, extra


def status_for(e: errors.SoopervisorError) -> int:
    """The HTTP status of a soopervisor error (CONTRACT.md)."""
    if isinstance(e, errors.InvalidProject):
        return 422
    if isinstance(e, (errors.ArtifactsNotFound, errors.RunNotFound)):
        return 404
    if isinstance(e, (errors.EngineUnavailable, errors.StorageUnavailable, CredentialsError)):
        return 503
    if isinstance(e, (errors.UnsafePath, errors.UsageError)):
        return 400
    return 500  # IntegrityError (a damaged stored set) and anything unforeseen


def api_error(e: errors.SoopervisorError) -> ApiError:
    extra = {"report": e.report.to_dict()} if isinstance(e, errors.InvalidProject) else {}
    return ApiError(status_for(e), e.message, e.hint, docs=e.docs, **extra)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn`` in a worker thread (it may touch Docker, storage or SQLite); errors as ApiError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except errors.SoopervisorError as e:
        raise api_error(e) from None


def error_body(status: int, exc: BaseException | None) -> dict[str, Any]:
    """The JSON body of an error response: never a traceback."""
    if isinstance(exc, ApiError):
        return {"error": exc.error, "hint": exc.hint, **exc.extra}
    if isinstance(exc, web.HTTPError):  # tornado's and Jupyter's own: auth, missing argument, bad JSON
        try:
            text = exc.log_message % exc.args if exc.log_message else ""
        except (TypeError, ValueError):
            text = exc.log_message or ""
        text = text or exc.reason or httputil.responses.get(status, "error")
        hint = "log in to Jupyter or send its token" if status == 403 and not exc.log_message else None
        return {"error": text, "hint": hint}
    return {
        "error": "internal error in the soopervisor server extension",
        "hint": "the Jupyter server log has the details",
    }


def run_json(run: Any) -> dict[str, Any]:
    """Run JSON: ``Run.to_dict()`` without ``log_path``, plus duration and short_commit."""
    d = run.to_dict()
    d.pop("log_path", None)
    d["duration"] = run.duration
    d["short_commit"] = run.short_commit
    topic = run_topic(run)
    d["docs"] = topic_url(topic) if topic else None
    return d


def resolve_path(root: str, rel: str) -> str:
    """``rel`` (relative to the server root) as a real path inside it, or 403/400."""
    if "\0" in rel:
        raise ApiError(400, "the path contains a NUL character")
    if os.path.isabs(rel) or rel.startswith("~"):
        raise ApiError(
            403,
            f"'{rel}' is not relative to the server root",
            "give a path relative to the Jupyter root folder",
        )
    full = os.path.realpath(os.path.join(root, rel or "."))
    if full != root and not full.startswith(root.rstrip(os.sep) + os.sep):
        raise ApiError(
            403, f"'{rel}' is outside the server root", "give a folder inside the Jupyter root folder"
        )
    return full


def relative_to_root(root: str, folder: Path) -> str:
    rel = os.path.relpath(folder, root)
    return "" if rel == "." else rel.replace(os.sep, "/")


def content_disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


class BaseHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def root(self) -> str:
        return self.settings["soopervisor_root"]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.finish(json.dumps(error_body(status_code, exc)))

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))

    def json_body(self) -> dict[str, Any]:
        body = self.get_json_body()
        if body is None:
            return {}
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
        await self.finish(set_content_type=ctype)


class VersionHandler(BaseHandler):
    @web.authenticated
    @authorized
    def get(self) -> None:
        self.reply({"version": soopervisor.__version__})


class ValidateHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        rel = self.get_query_argument("path", "")
        folder = enclosing_project(resolve_path(self.root, rel), self.root)
        report = await call(soopervisor.validate, folder)
        self.reply({**report.to_dict(), "path": relative_to_root(self.root, folder)})


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return LIMIT_DEFAULT
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be a whole number, not '{raw}'", f"1 to {LIMIT_MAX}") from None
    if limit < 1:
        raise ApiError(400, f"limit must be at least 1, not {limit}", f"1 to {LIMIT_MAX}")
    return min(limit, LIMIT_MAX)


def parse_run_request(body: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """``(path, sample, secrets)`` from a POST /runs body, or 400."""
    path = body.get("path", "")
    if not isinstance(path, str):
        raise ApiError(400, "'path' must be a string", "a folder relative to the Jupyter root")
    mode = body.get("mode", "sample")
    if mode not in ("sample", "full"):
        raise ApiError(400, f"'mode' must be 'sample' or 'full', not {mode!r}")
    secrets = body.get("secrets", [])
    if not (isinstance(secrets, list) and all(isinstance(s, str) for s in secrets)):
        raise ApiError(400, "'secrets' must be a list of environment variable names")
    return path, mode == "sample", secrets


def run_service(settings: dict[str, Any]) -> Any:
    """The run service every route translates to: the server's own, built by ``setup_handlers``
    from ``c.Soopervisor`` (a default one where the extension was set up by hand)."""
    from soopervisor.service import RunService

    return settings.get("soopervisor_service") or RunService()


class RunsHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        project = self.get_query_argument("project", None) or None
        limit = parse_limit(self.get_query_argument("limit", None))
        runs = await call(run_service(self.settings).list, project=project, limit=limit)
        self.reply({"runs": [run_json(r) for r in runs]})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        from soopervisor.service import RunOptions

        rel, sample, secrets = parse_run_request(self.json_body())
        path = enclosing_project(resolve_path(self.root, rel), self.root)
        opts = RunOptions(path=path, sample=sample, secrets=secrets)
        active = await call(run_service(self.settings).start, opts)
        self.reply(run_json(active.run), status=201)


class RunHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, run_id: str) -> None:
        self.reply(run_json(await call(run_service(self.settings).get, run_id)))


class StopHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def post(self, run_id: str) -> None:
        self.reply(run_json(await call(run_service(self.settings).stop, run_id)))


def commit_summary(commit: Any) -> dict[str, Any]:
    """A ``CommitSummary`` as JSON: the set the commit resolves to (else its newest) and all its sets.

    The fields of one set (``commit, short_commit, run_id, status, mode, dirty,
    started_at, finished_at, files, size, damaged``), plus ``sets`` (each set,
    newest first) and ``resolved`` (whether the shown set is what the commit
    resolves to: its newest succeeded set).
    """
    return commit.to_dict()


def set_query(handler: BaseHandler) -> dict[str, str | None]:
    """``?run=ID&mode=sample|full`` of a commit/file/zip request, as get_artifacts takes them."""
    run = handler.get_query_argument("run", None) or None
    mode = handler.get_query_argument("mode", None) or None
    if mode is not None and mode not in ("sample", "full"):
        raise ApiError(400, f"'mode' must be 'sample' or 'full', not {mode!r}")
    return {"run": run, "mode": mode}


def artifact_storage(handler: BaseHandler) -> str | None:
    """The storage the artifacts routes read: the one the server's runs store into."""
    return run_service(handler.settings).storage


async def artifacts_of(handler: BaseHandler, project: str, commit: str) -> Any:
    """The set a commit request names (see artifacts.resolve_set); errors as ApiError."""
    from soopervisor.artifacts import get_artifacts

    return await call(get_artifacts, commit, project=project, storage=artifact_storage(handler),
                      **set_query(handler))


class CommitsHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, project: str) -> None:
        from soopervisor.artifacts import list_commits

        commits = await call(list_commits, project, storage=artifact_storage(self))
        self.reply({"commits": [commit_summary(c) for c in commits]})


class CommitHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, project: str, commit: str) -> None:
        arts = await artifacts_of(self, project, commit)
        files = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in arts.files]
        self.reply({"commit": arts.commit, "run_id": arts.run_id, "set": arts.summary.to_dict(),
                    "manifest": arts.manifest, "files": files})


class FileHandler(BaseHandler):
    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # a product name may hold bytes that are not UTF-8; they come back as the surrogate escapes it is stored by
        return value.decode("utf-8", "surrogateescape")

    @web.authenticated
    @authorized
    async def get(self, project: str, commit: str, name: str) -> None:
        arts = await artifacts_of(self, project, commit)
        path = await call(arts.path, name)  # verified against the manifest's sha256
        from soopervisor.artifacts import printable

        await self.send_file(path, printable(name.rsplit("/", 1)[-1]))


def _zip_set(arts: Any, workdir: Path) -> Path:
    """Download the verified set into ``workdir`` and zip it (products, .soopervisor/manifest.json and log)."""
    from soopervisor.artifacts import printable

    folder = arts.download(to=workdir / "set")
    archive = workdir / "set.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                # zip names are UTF-8: bytes that are not become U+FFFD there
                zf.write(p, printable(p.relative_to(folder).as_posix()))
    return archive


class ZipHandler(BaseHandler):
    @web.authenticated
    @authorized
    async def get(self, project: str, commit: str) -> None:
        arts = await artifacts_of(self, project, commit)
        workdir = Path(tempfile.mkdtemp(prefix="soopervisor-zip-"))
        try:
            archive = await call(_zip_set, arts, workdir)
            run = f"-{arts.run_id}" if arts.run_id else ""
            await self.send_file(archive, f"{arts.project}-{arts.commit[:7]}{run}.zip", "application/zip")
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

"""The REST handlers: each parses its input, calls one ``soopervisor`` function off the
IO loop and answers JSON (jupyter_ext/CONTRACT.md, openapi.yaml).

Errors are ``{"error", "hint"}`` with a status chosen from the error's type; a
traceback never reaches the client. Authorization is the home's (base.ApiHandler).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tornado import web
from tornado.log import app_log

import soopervisor
from soopervisor.project import enclosing_project
from soopervisor.redact import Redactor
from soopervisor.troubleshooting import run_topic, topic_url

from .base import ApiError, ApiHandler, api_error, call

LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


def run_json(run: Any) -> dict[str, Any]:
    """Run JSON: ``Run.to_dict()`` without ``log_path`` and ``remote_ref``, plus duration, short_commit
    and where (the remote's name, else the engine's)."""
    d = run.to_dict()
    d.pop("log_path", None)
    d.pop("remote_ref", None)  # the remote's handle: this machine's business, not a client's
    d["where"] = run.where
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


class RootedHandler(ApiHandler):
    """A route over folders of the home's root (Jupyter's root_dir); the polling server has none."""

    #: what the route does, for the 404 where there is no root
    needs_root_for = "this route"

    def root(self) -> str:
        root = self.settings.get("soopervisor_root")
        if root is None:
            raise ApiError(
                404,
                f"{self.needs_root_for} is not on this server: it has no root folder of projects",
                "validate and start runs from Jupyter or the command line; "
                "this server runs the repositories it polls",
            )
        return root


class VersionHandler(ApiHandler):
    def get(self) -> None:
        self.reply({"version": soopervisor.__version__})


class ValidateHandler(RootedHandler):
    needs_root_for = "validating a folder (GET /validate)"

    async def get(self) -> None:
        root = self.root()
        rel = self.get_query_argument("path", "")
        folder = enclosing_project(resolve_path(root, rel), root)
        report = await call(soopervisor.validate, folder)
        self.reply({**report.to_dict(), "path": relative_to_root(root, folder)})


def query_int(handler: ApiHandler, arg: str, default: int, least: int, most: int | None = None) -> int:
    """``?arg=`` as a whole number of at least ``least`` (above ``most`` counts as ``most``), else 400."""
    raw = handler.get_query_argument(arg, None)
    if raw is None or raw == "":
        return default
    span = f"{least} to {most}" if most is not None else f"{least} or more"
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"'{arg}' must be a whole number, not {raw!r}", span) from None
    if value < least:
        raise ApiError(400, f"'{arg}' must be {least} or more, not {value}", span)
    return value if most is None else min(value, most)


def parse_run_request(body: dict[str, Any]) -> tuple[str, bool, list[str]]:
    """``(path, sample, secrets)`` from a POST /runs body, or 400 (``image``/``storage``: see run_overrides)."""
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


def parse_force(body: dict[str, Any]) -> bool | None:
    """``force`` of a POST /runs body: true rebuilds every task; absent or null: SOOPERVISOR_FORCE, else incremental."""
    force = body.get("force")
    if force is not None and not isinstance(force, bool):
        raise ApiError(400, f"'force' must be true or false, not {force!r}",
                       "true rebuilds every task; leave it out for an incremental run")
    return force


def run_overrides(body: dict[str, Any], allowed: bool) -> dict[str, str]:
    """The ``image`` and ``storage`` of a POST /runs body (the sidebar's settings), or 400.

    Only a server whose users may already run anything (Jupyter: its users have a
    terminal) accepts them; ``soopervisor serve`` refuses them, or a token holder could
    make the server write artifacts to any storage its credentials reach.
    """
    found: dict[str, str] = {}
    for key in ("image", "storage"):
        value = body.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ApiError(400, f"'{key}' must be a string")
        if not allowed:
            raise ApiError(400, f"this server does not take '{key}' from a request",
                           "its runs use the server's own setting; leave it out")
        found[key] = value
    return found


def parse_remote(body: dict[str, Any]) -> str | None:
    """``remote`` of a POST /runs body: the name of a configured remote, or None (this machine); else 400.

    Whether such a remote is configured is the run service's to say (its error maps like any other).
    """
    from soopervisor.errors import UsageError
    from soopervisor.remotes.base import check_name

    remote = body.get("remote")
    if remote is None:
        return None
    if not isinstance(remote, str) or not remote:
        raise ApiError(400, f"'remote' must be the name of a remote, not {remote!r}",
                       "GET /soopervisor/api/remotes lists them; leave 'remote' out to run on this machine")
    try:
        return check_name(remote)
    except UsageError as e:
        raise api_error(e) from None


def remote_conflicts(secrets: list[str], overrides: dict[str, str]) -> None:
    """400 when a run on a remote is asked for what only a run on this machine can have: the remote
    runs with its own image, storage and secrets, never with this server's (dropped silently, a run
    would go without the secrets it was promised)."""
    if overrides:
        keys = " and ".join(f"'{k}'" for k in overrides)
        raise ApiError(400, f"a run on a remote uses the remote's own image and storage, not {keys} of the request",
                       "leave them out (the sidebar does for a remote run); the remote's operator sets them")
    if secrets:
        raise ApiError(400, "a run on a remote cannot get this server's environment variables as secrets",
                       "leave 'secrets' out: a team server keeps a repository's secrets itself, "
                       "GitHub Actions reads the repository's secrets")


class RemotesHandler(RootedHandler):
    """The remotes runs may be sent to (``soopervisor remote list``): names, kinds and URLs, never a token."""

    needs_root_for = "listing the remotes to run on (GET /remotes)"

    async def get(self) -> None:
        from soopervisor.remotes import config as remotes

        self.root()  # soopervisor serve has no user's remotes to offer
        self.reply({"remotes": await call(remotes.listed)})


class RunsHandler(RootedHandler):
    needs_root_for = "starting a run of a folder (POST /runs)"

    async def get(self) -> None:
        project = self.get_query_argument("project", None) or None
        limit = query_int(self, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
        runs = await call(self.service.list, project=project, limit=limit)
        self.reply({"runs": [run_json(r) for r in runs]})

    async def post(self) -> None:
        from soopervisor.service import RunOptions, RunService

        root = self.root()
        body = self.json_body()
        rel, sample, secrets = parse_run_request(body)
        overrides = run_overrides(body, bool(self.settings.get("soopervisor_run_overrides")))
        remote = parse_remote(body)
        if remote is not None:
            remote_conflicts(secrets, overrides)
        path = enclosing_project(resolve_path(root, rel), root)
        opts = RunOptions(path=path, sample=sample, secrets=secrets, force=parse_force(body))
        service = self.service
        if remote is not None:
            # the remote runs the pushed commit with its own image, storage and engine: the home's
            # (c.Soopervisor) are for runs here; this process keeps the record and follows it
            active = await call(RunService(store=service.store).start_remote, opts, remote=remote)
            self.reply(run_json(active.run), status=201)
            return
        if overrides:
            # the same store and engine; this run's own image or storage
            service = RunService(storage=overrides.get("storage", service.storage),
                                 image=overrides.get("image", service.image),
                                 executor=service.executor_factory, store=service.store, engine=service.engine)
        active = await call(service.start, opts)
        self.reply(run_json(active.run), status=201)


class RunHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        self.reply(run_json(await call(self.service.get, run_id)))


class StopHandler(ApiHandler):
    async def post(self, run_id: str) -> None:
        self.reply(run_json(await call(self.service.stop, run_id)))


def set_query(handler: ApiHandler, run_arg: str = "run", mode_arg: str = "mode") -> dict[str, str | None]:
    """``?run=ID&mode=sample|full`` of a commit/file/zip request, as get_artifacts takes them."""
    run = handler.get_query_argument(run_arg, None) or None
    mode = handler.get_query_argument(mode_arg, None) or None
    if mode is not None and mode not in ("sample", "full"):
        raise ApiError(400, f"'{mode_arg}' must be 'sample' or 'full', not {mode!r}")
    return {"run": run, "mode": mode}


def url_secrets(url: str) -> list[str]:
    """The parts of a storage URL that may be credentials: ``user:password@`` and query values."""
    parts = urlsplit(url)
    found = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [userinfo, *userinfo.split(":", 1)[1:]]
    found += [v for _k, v in parse_qsl(parts.query, keep_blank_values=False)]
    return [s for s in found if len(s) >= 3]  # a one-letter value would mask every such letter


class ArtifactsHandler(ApiHandler):
    """A route over stored sets: in the home's storage, or in ``?storage=`` where the home allows it.

    Jupyter allows it (the sidebar's "Storage" setting; ``soopervisor_run_overrides``, as for
    POST /runs), ``soopervisor serve`` answers 400. A storage URL may carry credentials:
    they are masked in the request line the home logs and in every error.
    """

    _storage_url: str | None = None
    _hide: Redactor | None = None
    _opened: Any = None

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # a product name may hold bytes that are not UTF-8; they come back as the surrogate escapes it is stored by
        return value.decode("utf-8", "surrogateescape")

    async def prepare(self) -> None:
        url = self.get_query_argument("storage", None) or None
        if url is not None:
            self._storage_url = url
            self._hide = Redactor(url_secrets(url))
            self._scrub_request_line()
        await super().prepare()
        if url is not None and not self._finished and not self.settings.get("soopervisor_run_overrides"):
            raise ApiError(400, "this server does not take 'storage' from a request",
                           "it lists the artifacts of its own storage; leave 'storage' out")

    def _scrub_request_line(self) -> None:
        """The home logs ``request.uri``: the credentials of ``?storage=`` must not reach it."""
        hide = self._hide or Redactor()
        path, _, query = self.request.uri.partition("?")
        pairs = [(k, hide.redact(v) if k == "storage" else v)
                 for k, v in parse_qsl(query, keep_blank_values=True)]
        self.request.uri = f"{path}?{urlencode(pairs)}"

    def _masked(self, exc: BaseException | None) -> None:
        if self._hide is not None and isinstance(exc, ApiError):
            exc.error = self._hide.redact(exc.error)
            exc.hint = exc.hint and self._hide.redact(exc.hint)
            exc.args = (exc.error,)  # what tornado's log line formats

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if self._hide is not None and not isinstance(value, web.HTTPError):
            # a traceback may quote the URL: one masked line instead
            app_log.error("Uncaught exception %s: %s", self._request_summary(), self._hide.redact(repr(value)))
            return
        self._masked(value)
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self._masked(kwargs.get("exc_info", (None, None, None))[1])
        super().write_error(status_code, **kwargs)

    async def storage(self) -> Any:
        """The storage this request reads: ``?storage=`` (allowed in prepare) or the home's; opened once."""
        from soopervisor.storage import open_storage

        if self._opened is None:
            self._opened = await call(open_storage, self._storage_url or self.service.storage)
        return self._opened

    async def artifacts(self, project: str, commit: str, run_arg: str = "run", mode_arg: str = "mode") -> Any:
        """The set a commit request names (see artifacts.resolve_set); errors as ApiError."""
        from soopervisor.artifacts import get_artifacts

        return await call(get_artifacts, commit, project=project, storage=await self.storage(),
                          **set_query(self, run_arg, mode_arg))


class CommitsHandler(ArtifactsHandler):
    async def get(self, project: str) -> None:
        from soopervisor.artifacts import list_commits

        # CommitSummary.to_dict(): the set the commit resolves to (else its newest),
        # ``sets`` (newest first) and ``resolved``
        commits = await call(list_commits, project, storage=await self.storage())
        self.reply({"commits": [c.to_dict() for c in commits]})


class CommitHandler(ArtifactsHandler):
    async def get(self, project: str, commit: str) -> None:
        arts = await self.artifacts(project, commit)
        files = [{"name": f.name, "size": f.size, "sha256": f.sha256, "task": f.task} for f in arts.files]
        self.reply({"commit": arts.commit, "run_id": arts.run_id, "set": arts.summary.to_dict(),
                    "manifest": arts.manifest, "files": files})


class FileHandler(ArtifactsHandler):
    async def get(self, project: str, commit: str, name: str) -> None:
        from soopervisor.artifacts import printable

        arts = await self.artifacts(project, commit)
        path = await call(arts.path, name)  # verified against the manifest's sha256
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


class ZipHandler(ArtifactsHandler):
    async def get(self, project: str, commit: str) -> None:
        arts = await self.artifacts(project, commit)
        workdir = Path(tempfile.mkdtemp(prefix="soopervisor-zip-"))
        try:
            archive = await call(_zip_set, arts, workdir)
            run = f"-{arts.run_id}" if arts.run_id else ""
            await self.send_file(archive, f"{arts.project}-{arts.commit[:7]}{run}.zip", "application/zip")
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)


class CompareHandler(ArtifactsHandler):
    """Set A (``commit``, ``run``, ``mode``) against set B (``other``, ``other_run``, ``other_mode``)."""

    async def comparison(self, project: str, commit: str, other: str) -> Any:
        from soopervisor.artifacts.compare import Comparison

        a = await self.artifacts(project, commit)
        b = await self.artifacts(project, other, "other_run", "other_mode")
        return Comparison(a, b)

    async def get(self, project: str, commit: str, other: str) -> None:
        self.reply((await self.comparison(project, commit, other)).to_dict())


class CompareFileHandler(CompareHandler):
    async def get(self, project: str, commit: str, other: str, name: str) -> None:  # type: ignore[override]
        comparison = await self.comparison(project, commit, other)
        self.reply(await call(comparison.file_diff, name))


class TableHandler(ArtifactsHandler):
    async def get(self, project: str, commit: str, name: str) -> None:
        from soopervisor.artifacts.table import LIMIT_MAX, preview_file

        offset = query_int(self, "offset", 0, 0)
        limit = query_int(self, "limit", 200, 1, LIMIT_MAX)
        arts = await self.artifacts(project, commit)
        self.reply(await call(preview_file, arts, name, offset, limit))

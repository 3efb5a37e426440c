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

import soopervisor
from soopervisor.project import enclosing_project
from soopervisor.troubleshooting import run_topic, topic_url

from .base import ApiError, ApiHandler, call

LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


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


class RunsHandler(RootedHandler):
    needs_root_for = "starting a run of a folder (POST /runs)"

    async def get(self) -> None:
        project = self.get_query_argument("project", None) or None
        limit = parse_limit(self.get_query_argument("limit", None))
        runs = await call(self.service.list, project=project, limit=limit)
        self.reply({"runs": [run_json(r) for r in runs]})

    async def post(self) -> None:
        from soopervisor.service import RunOptions, RunService

        root = self.root()
        body = self.json_body()
        rel, sample, secrets = parse_run_request(body)
        overrides = run_overrides(body, bool(self.settings.get("soopervisor_run_overrides")))
        path = enclosing_project(resolve_path(root, rel), root)
        opts = RunOptions(path=path, sample=sample, secrets=secrets)
        service = self.service
        if overrides:
            # the same store and engine; this run's own image or storage
            service = RunService(storage=overrides.get("storage", service.storage),
                                 image=overrides.get("image", service.image),
                                 executor=service.make_executor, store=service.store)
        active = await call(service.start, opts)
        self.reply(run_json(active.run), status=201)


class RunHandler(ApiHandler):
    async def get(self, run_id: str) -> None:
        self.reply(run_json(await call(self.service.get, run_id)))


class StopHandler(ApiHandler):
    async def post(self, run_id: str) -> None:
        self.reply(run_json(await call(self.service.stop, run_id)))


def set_query(handler: ApiHandler) -> dict[str, str | None]:
    """``?run=ID&mode=sample|full`` of a commit/file/zip request, as get_artifacts takes them."""
    run = handler.get_query_argument("run", None) or None
    mode = handler.get_query_argument("mode", None) or None
    if mode is not None and mode not in ("sample", "full"):
        raise ApiError(400, f"'mode' must be 'sample' or 'full', not {mode!r}")
    return {"run": run, "mode": mode}


async def artifacts_of(handler: ApiHandler, project: str, commit: str) -> Any:
    """The set a commit request names (see artifacts.resolve_set), read from the storage the
    home's runs store into; errors as ApiError."""
    from soopervisor.artifacts import get_artifacts

    return await call(get_artifacts, commit, project=project, storage=handler.service.storage,
                      **set_query(handler))


class CommitsHandler(ApiHandler):
    async def get(self, project: str) -> None:
        from soopervisor.artifacts import list_commits

        # CommitSummary.to_dict(): the set the commit resolves to (else its newest),
        # ``sets`` (newest first) and ``resolved``
        commits = await call(list_commits, project, storage=self.service.storage)
        self.reply({"commits": [c.to_dict() for c in commits]})


class CommitHandler(ApiHandler):
    async def get(self, project: str, commit: str) -> None:
        arts = await artifacts_of(self, project, commit)
        files = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in arts.files]
        self.reply({"commit": arts.commit, "run_id": arts.run_id, "set": arts.summary.to_dict(),
                    "manifest": arts.manifest, "files": files})


class FileHandler(ApiHandler):
    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        # a product name may hold bytes that are not UTF-8; they come back as the surrogate escapes it is stored by
        return value.decode("utf-8", "surrogateescape")

    async def get(self, project: str, commit: str, name: str) -> None:
        from soopervisor.artifacts import printable

        arts = await artifacts_of(self, project, commit)
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


class ZipHandler(ApiHandler):
    async def get(self, project: str, commit: str) -> None:
        arts = await artifacts_of(self, project, commit)
        workdir = Path(tempfile.mkdtemp(prefix="soopervisor-zip-"))
        try:
            archive = await call(_zip_set, arts, workdir)
            run = f"-{arts.run_id}" if arts.run_id else ""
            await self.send_file(archive, f"{arts.project}-{arts.commit[:7]}{run}.zip", "application/zip")
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

"""The HTTP side of ``soopervisor serve``: the API, the webhook, health, metrics and the dashboard.

The REST routes and the log websocket are soopervisor.api's, the same the
Jupyter extension serves, mounted with this server's auth: a bearer token
(``Authorization: Bearer TOKEN``) checked against the tokens' hashes in the
database; "read" tokens may GET, "run" tokens may also queue, stop and cancel
runs (``POST /repositories/{r}/runs``, ``/runs/{id}/stop``, ``/queue/{job}/cancel``),
every other POST needs an "admin" one. Browsers
cannot set headers on a websocket: they offer the token as a subprotocol
(``soopervisor, soopervisor.bearer.TOKEN``) and the server selects
``soopervisor``. Added here: repositories and the queue (``/repositories``,
``/queue``), runs asked for by a client (``POST /repositories/{r}/runs``), the webhook, and outside the API ``/healthz``, ``/readyz``,
``/metrics`` and ``/dashboard/``.
"""
from __future__ import annotations

import asyncio
import errno
import posixpath
import re
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

from tornado import httpserver, netutil, web

from ..api.base import ApiError, ApiHandler, LogSocketBase, api_error, call
from ..api.handlers import LIMIT_DEFAULT, LIMIT_MAX, StopHandler, query_int
from ..errors import RunNotFound, SoopervisorError, UsageError
from .config import ServerConfig
from .loop import IDLE, ServerState
from .poller import GIT_TIMEOUT
from .queue import JOB_STATES, MODES, JobNotFound
from .tokens import TokenStore, allows
from .webhook import WebhookHandler

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8008
#: the dashboard's built files (scripts/build-dashboard puts them here; the wheel ships them)
DASHBOARD = Path(__file__).with_name("dashboard")
#: the OpenAPI description of the server-only routes (the neutral ones: soopervisor/api/openapi.yaml)
OPENAPI = Path(__file__).with_name("openapi.yaml")
SUBPROTOCOL = "soopervisor"
_BEARER_PROTOCOL = "soopervisor.bearer."
TOKEN_HINT = ("send an API token as `Authorization: Bearer TOKEN`; "
              "`soopervisor serve --config server.yaml token create` makes one")
ADMIN_HINT = "this needs an admin token: `soopervisor serve --config server.yaml token create --admin`"
RUN_HINT = ("this needs a run token (or an admin one): ask the server's admin for one "
            "(`soopervisor serve --config server.yaml token create NAME --scope run`)")
#: what each handler scope needs of a token: reading any token, queueing and stopping runs a run token,
#: everything else an admin one
_NEEDS = {"read": "read", "run": "run"}
#: what a scope may do, for a 403's message
_MAY = {"read": "may only read", "run": "may read and queue or stop runs, not this"}
#: jobs shown per repository in GET /repositories
LAST_JOBS = 5


# -- auth ----------------------------------------------------------------------------------------


def _authorize(handler: web.RequestHandler, secret: str | None, scope: str) -> None:
    """ApiError(401) without a known token, (403) when its scope does not allow ``scope``."""
    if scope == "write" and isinstance(handler, StopHandler):
        scope = "run"  # the shared API's stop: what a run token is for (its own runs, started remotely)
    tokens: TokenStore = handler.settings["soopervisor_tokens"]
    try:
        info = tokens.verify(secret)
    except SoopervisorError as e:  # the database is gone or locked: not the client's fault
        raise ApiError(503, e.message, e.hint) from None
    if info is None:
        raise ApiError(401, "a valid API token is needed" if secret else "no API token was sent", TOKEN_HINT)
    need = _NEEDS.get(scope, "admin")
    if not allows(info, need):
        raise ApiError(403, f"the token {info.id} ({info.name}) {_MAY.get(info.scope, 'may not do this')}",
                       RUN_HINT if need == "run" else ADMIN_HINT)
    handler.current_user = info  # type: ignore[misc] - who did it, for the log


def _bearer(header: str | None) -> str | None:
    scheme, _, secret = (header or "").strip().partition(" ")
    return secret.strip() or None if scheme.lower() == "bearer" else None


class BearerAuth(ApiHandler):
    """The server's auth base for REST handlers: ``Authorization: Bearer TOKEN``.

    An ApiHandler itself, so that in ``(Handler, BearerAuth)`` this authorize comes
    before ApiHandler's default (which refuses everything)."""

    auth_hint = TOKEN_HINT

    def authorize(self, scope: str) -> None:
        _authorize(self, _bearer(self.request.headers.get("Authorization")), scope)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:  # after send_error's clear(): a header set before raising is gone
            self.set_header("WWW-Authenticate", 'Bearer realm="soopervisor"')
        super().write_error(status_code, **kwargs)


class BearerSocketAuth(LogSocketBase):
    """The auth base of the log websocket: the Authorization header, or the token offered as a
    subprotocol (``soopervisor.bearer.TOKEN``) by clients that cannot set headers (browsers)."""

    auth_hint = TOKEN_HINT

    def _offered(self) -> list[str]:
        raw = self.request.headers.get("Sec-WebSocket-Protocol", "")
        return [p.strip() for p in raw.split(",") if p.strip()]

    def authorize(self, scope: str) -> None:
        secret = _bearer(self.request.headers.get("Authorization"))
        if secret is None:
            secret = next((p[len(_BEARER_PROTOCOL):] for p in self._offered() if p.startswith(_BEARER_PROTOCOL)),
                          None)
        _authorize(self, secret, scope)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="soopervisor"')
        super().write_error(status_code, **kwargs)

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        # never echo the token back: the plain name is selected, which the browser requires when it offered any
        return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None


# -- server-only routes ---------------------------------------------------------------------------


class ServerHandler(ApiHandler):
    """A route of this server only: it reads the loop's state."""

    @property
    def state(self) -> ServerState:
        return self.settings["soopervisor_state"]

    def repository(self, name: str) -> str:
        if not any(r.name == name for r in self.state.config.repositories):
            raise ApiError(404, f"no repository named {name!r} is served",
                           "GET /soopervisor/api/repositories lists them (the names in server.yaml)")
        return name


def repositories_json(state: ServerState) -> list[dict[str, Any]]:
    """Each served repository's polling state and its last jobs (blocking: call it off the IO loop)."""
    config = {r.name: r for r in state.config.repositories}
    out = []
    for status in state.poller.status():
        repo = config[status.name]
        jobs = state.queue.list(repository=status.name, limit=LAST_JOBS)
        out.append({
            "name": status.name, "url": status.url, "branches": list(repo.branches), "projects": list(repo.projects),
            "heads": status.heads, "paused": status.paused, "poll_now": status.poll_now,
            "last_poll": status.last_poll, "last_success": status.last_success, "last_error": status.last_error,
            "failures": status.failures, "backoff": status.failures > 0, "next_poll": status.next_poll,
            "last_seconds": status.last_seconds, "webhook": repo.webhook_secret is not None,
            "jobs": [j.to_dict() for j in jobs],
        })
    return out


class RepositoriesHandler(ServerHandler):
    async def get(self) -> None:
        self.reply({"repositories": await call(repositories_json, self.state)})


class RepositoryActionHandler(ServerHandler):
    action = ""

    async def post(self, repository: str) -> None:
        name = self.repository(repository)
        state = self.state
        if self.action == "pause":
            await call(state.poller.pause, name)
        elif self.action == "resume":
            await call(state.poller.resume, name)
            state.wake.set()  # due now when its time has passed while paused
        else:
            await call(state.poll_now, name)
        found = [r for r in await call(repositories_json, state) if r["name"] == name]
        self.reply(found[0])


class PauseHandler(RepositoryActionHandler):
    action = "pause"


class ResumeHandler(RepositoryActionHandler):
    action = "resume"


class PollHandler(RepositoryActionHandler):
    action = "poll"


class TokenHandler(ServerHandler):
    """The token the request carries: its name and scope (a client shows admin actions only to admins)."""

    async def get(self) -> None:
        info = self.current_user
        self.reply({"id": info.id, "name": info.name, "scope": info.scope})


class QueueHandler(ServerHandler):
    async def get(self) -> None:
        state = self.get_query_argument("state", None) or None
        if state is not None and state not in JOB_STATES:
            raise ApiError(400, f"state must be one of {', '.join(JOB_STATES)}, not {state!r}")
        repository = self.get_query_argument("repository", None) or None
        if repository is not None and not any(r.name == repository for r in self.state.config.repositories):
            raise ApiError(400, f"no repository named {repository!r} is served",
                           "GET /soopervisor/api/repositories lists them")
        limit = query_int(self, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
        jobs = await call(self.state.queue.list, repository=repository, state=state, limit=limit)
        self.reply({"jobs": [j.to_dict() for j in jobs]})


class JobActionHandler(ServerHandler):
    action = ""

    async def job_call(self, fn: Any, job_id: str) -> Any:
        """``fn(job_id)`` off the IO loop; an unknown id is 404 (the queue's JobNotFound is a usage error)."""
        try:
            return await asyncio.to_thread(fn, job_id)
        except JobNotFound:
            raise ApiError(404, f"no job {job_id!r} in the queue",
                           "GET /soopervisor/api/queue lists the jobs (ids are 12 hex digits)") from None
        except SoopervisorError as e:
            raise api_error(e) from None


class JobHandler(JobActionHandler):
    """One job: a client that queued a run waits here for its run id."""

    async def get(self, job_id: str) -> None:
        self.reply({"job": (await self.job_call(self.state.queue.get, job_id)).to_dict()})


class JobChangeHandler(JobActionHandler):
    async def post(self, job_id: str) -> None:
        queue = self.state.queue
        if self.action == "cancel":
            if not await self.job_call(queue.cancel, job_id):
                job = await self.job_call(queue.get, job_id)
                raise ApiError(409, f"job {job_id} has ended ({job.state}): there is nothing to cancel",
                               "POST /soopervisor/api/queue/ID/retry queues it again", job=job.to_dict())
            job = await self.job_call(queue.get, job_id)
            if job.run_id is not None:
                # its worker would learn only at its next lease renewal (a third of the lease, 10 s by
                # default): the run is stopped now, through the run service, as POST /runs/{id}/stop does.
                # A run not attached yet is cancelled by its worker, whose attach then fails; a run this
                # server's run store does not have (another server on a shared PostgreSQL queue runs it) is
                # left to that worker's renewal.
                try:
                    await asyncio.to_thread(self.state.runs.stop, job.run_id)
                except RunNotFound:
                    pass
                except SoopervisorError as e:  # the job is cancelled all the same: say why its run may go on
                    self.state.say(f"job {job_id}: cancelled; its run {job.run_id} could not be stopped now "
                                   f"({e.message}): its worker stops it at its next lease renewal")
        elif await self.job_call(queue.retry, job_id) is None:
            job = await self.job_call(queue.get, job_id)
            raise ApiError(409, f"job {job_id} is {job.state}: it has not ended",
                           "a job is retried once it has ended", job=job.to_dict())
        else:
            self.state.work.set()  # claimed now, not at the worker's next round
        self.reply({"job": (await self.job_call(queue.get, job_id)).to_dict()})


#: a commit as the API takes it: a full SHA-1
_SHA = re.compile(r"[0-9a-fA-F]{40}")


def _project_key(path: str) -> str:
    """A project folder relative to the repository's top, as compared: ``./a/b/`` and ``a/b`` alike, "." the top."""
    return posixpath.normpath(path.strip().replace("\\", "/") or ".").lstrip("/") or "."


class SubmitHandler(ServerHandler):
    """``POST /repositories/{repository}/runs``: a client (``soopervisor run --remote``) asks for a run
    of a pushed commit. The remote is fetched first, so a push made a moment ago is seen."""

    scopes: ClassVar[dict[str, str]] = {**ServerHandler.scopes, "POST": "run"}

    async def post(self, repository: str) -> None:
        name = self.repository(repository)
        body = self.json_body()
        commit, project, mode = body.get("commit"), body.get("project", "."), body.get("mode", "sample")
        if not isinstance(commit, str) or not _SHA.fullmatch(commit):
            shown = repr(commit)[:60] if isinstance(commit, str) else type(commit).__name__
            raise ApiError(400, f"'commit' must be a full commit SHA (40 hex digits), not {shown}",
                           "send the whole SHA: `git rev-parse HEAD`")
        commit = commit.lower()
        if not isinstance(project, str):
            raise ApiError(400, "'project' must be a string", "the project's folder in the repository, \".\" for its top")
        if mode not in MODES:
            raise ApiError(400, f"'mode' must be one of {', '.join(MODES)}, not {mode!r}"[:200])
        repo = next(r for r in self.state.config.repositories if r.name == name)
        served = {_project_key(p): p for p in repo.projects}
        if _project_key(project) not in served:
            raise ApiError(422, f"project {project!r} is not served in repository {name}"[:300],
                           f"this server runs {', '.join(repr(p) for p in repo.projects)} of {name}; "
                           "its admin adds projects in server.yaml (`projects:`)")
        project = served[_project_key(project)]  # as server.yaml spells it: the poller's jobs use the same key
        poller = self.state.poller
        if not await call(poller.fetch_commit, repo, commit):
            raise ApiError(409, f"commit {commit[:12]} is not in {repo.shown_url}",
                           "push it first (`git push origin <branch>`), then ask again; the server fetches "
                           "the remote's branches when a run is asked for")
        if not await call(poller.has_path, repo, commit, project):
            raise ApiError(422, f"commit {commit[:12]} of {name} has no folder {project!r}",
                           "the project was moved or removed in that commit: run a commit that has it")
        # branch "": asked for through the API, not a polled head (and never superseded by one)
        job, queued_now = await call(self.state.queue.submit, name, commit, project, mode, "")
        if queued_now:
            self.state.work.set()  # claimed now, not at the worker's next round
            self.state.say(f"api: run of {name}@{commit[:12]} {project} {mode} asked by token "
                           f"{self.current_user.id} ({self.current_user.name}): job {job.id}")
        self.reply({"job": job.to_dict()}, status=201 if queued_now else 200)


class EnginesHandler(ServerHandler):
    """The server's engines: slots, busy slots, and whether each is held (it did not answer) and why."""

    async def get(self) -> None:
        self.reply({"engines": self.state.pool.status()})


class CancelHandler(JobChangeHandler):
    action = "cancel"
    scopes: ClassVar[dict[str, str]] = {**JobChangeHandler.scopes, "POST": "run"}  # a run token cancels its runs


class RetryHandler(JobChangeHandler):
    action = "retry"


#: the server-only routes under /soopervisor/api (OpenAPI templates; described in openapi.yaml here)
SERVER_ROUTES: list[tuple[str, type]] = [
    ("/token", TokenHandler),
    ("/repositories", RepositoriesHandler),
    ("/repositories/{repository}/pause", PauseHandler),
    ("/repositories/{repository}/resume", ResumeHandler),
    ("/repositories/{repository}/poll", PollHandler),
    ("/repositories/{repository}/runs", SubmitHandler),
    ("/queue", QueueHandler),
    ("/engines", EnginesHandler),
    ("/queue/{job_id}", JobHandler),
    ("/queue/{job_id}/cancel", CancelHandler),
    ("/queue/{job_id}/retry", RetryHandler),
    ("/webhook/{repository}", WebhookHandler),
]


# -- outside the API: health, readiness, metrics, the dashboard --------------------------------------


class HealthHandler(web.RequestHandler):
    """200 while the process answers: for a liveness probe (restart when it does not)."""

    def get(self) -> None:
        self.finish({"ok": True})


def stale_after(config: ServerConfig) -> float:
    """Seconds without a tick of the poll thread after which the server is not ready: a round polls
    the due repositories one after the other, each ls-remote taking up to git's timeout."""
    return max(10 * IDLE, 3 * config.poll_interval, 2 * GIT_TIMEOUT)


def engines_check(state: ServerState) -> dict[str, Any]:
    """Each of the server's engines asked at once (its slots, busy ones, whether it answers and why
    not); ok when at least one answers: the server can run jobs (blocking: call it off the IO loop)."""
    from concurrent.futures import ThreadPoolExecutor

    from .pool import HELD_HINT, probe

    status = state.pool.status()
    with ThreadPoolExecutor(max_workers=min(8, len(status))) as threads:
        reasons = list(threads.map(probe, state.pool.engines))
    engines = [{**s, "answers": why is None, "reason": why or s["reason"]} for s, why in zip(status, reasons,
                                                                                           strict=True)]
    check: dict[str, Any] = {"ok": any(e["answers"] for e in engines), "engines": engines}
    down = [e for e in engines if not e["answers"]]
    if down:
        said = "; ".join(f"{e['name']}: {e['reason']}" for e in down)
        check["error"] = (f"no engine of the server answers ({said})" if not check["ok"]
                          else f"engines that do not answer (their slots take no job): {said}")
        check["hint"] = HELD_HINT
    return check


class ReadyHandler(web.RequestHandler):
    """200 only when the database answers, the poll thread went round recently, one of the server's
    engines answers and the worker is not holding off after an infrastructure failure; else 503
    naming the checks that failed (for a readiness probe or a load balancer)."""

    async def get(self) -> None:
        state: ServerState = self.settings["soopervisor_state"]
        checks: dict[str, dict[str, Any]] = {}
        try:
            await call(state.queue.counts)
            checks["database"] = {"ok": True}
        except ApiError as e:
            checks["database"] = {"ok": False, "error": e.error, "hint": e.hint}
        if state.last_tick is None:
            checks["loop"] = {"ok": False, "error": "the poll loop has not gone round yet"}
        else:
            ago = time.monotonic() - state.last_tick
            limit = stale_after(state.config)
            checks["loop"] = {"ok": ago <= limit, "seconds_since_tick": round(ago, 3)}
            if ago > limit:
                checks["loop"]["error"] = f"the poll loop has not gone round for {ago:.0f} s (limit {limit:.0f} s)"
        checks["engines"] = await call(engines_check, state)
        # the worker holds off after an infrastructure failure (its storage down, say) although
        # the checks above pass: not ready, so a balancer sends pushes' webhooks elsewhere meanwhile
        waiting = state.worker.waiting
        checks["worker"] = {"ok": waiting is None}
        if waiting is not None:
            checks["worker"].update(error=f"the worker claims no job: {waiting}",
                                    hint="it claims again once what failed answers; see the server's log")
        ready = all(c["ok"] for c in checks.values())
        failed = [name for name, c in checks.items() if not c["ok"]]
        self.set_status(200 if ready else 503)
        self.finish({"ready": ready, "failed": failed, "checks": checks})


class MetricsHandler(BearerAuth):
    """Prometheus' text format; needs a read token (Prometheus sends it: ``authorization``)."""

    async def get(self) -> None:
        metrics = self.settings["soopervisor_metrics"]
        from .metrics import CONTENT_TYPE

        text = await call(metrics.text)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(text)


class DashboardHandler(web.StaticFileHandler):
    """The dashboard's files; a JSON 404 saying how to build it when they are not there."""

    async def get(self, path: str, include_body: bool = True) -> None:
        if not (Path(self.root) / "index.html").is_file():
            self.set_status(404)
            self.set_header("Content-Type", "application/json")
            self.finish({"error": "the dashboard is not built in this installation",
                         "hint": "run scripts/build-dashboard (it needs Node.js), or install a wheel that ships it; "
                                 "the API under /soopervisor/api works without it"})
            return
        await super().get(path, include_body)


class NotFoundHandler(web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.finish({"error": f"nothing at {self.request.path}",
                     "hint": "the API is under /soopervisor/api (see its OpenAPI description); "
                             "the dashboard at /dashboard/"})


# -- the application --------------------------------------------------------------------------------


def make_app(config: ServerConfig, state: ServerState, *, metrics: Any = None,
             tokens: TokenStore | None = None, dashboard: Path | None = None) -> web.Application:
    """The tornado Application of ``soopervisor serve`` over a loop's ``state``."""
    from ..api.routes import ROUTES, mount

    if metrics is None:
        from .metrics import Metrics

        metrics = Metrics()
        metrics.attach(state)
        state.metrics = state.metrics or metrics
    app = web.Application(
        [
            (r"/", web.RedirectHandler, {"url": "/dashboard/", "permanent": False}),
            (r"/dashboard", web.RedirectHandler, {"url": "/dashboard/", "permanent": False}),
            (r"/dashboard/(.*)", DashboardHandler,
             {"path": str(dashboard or DASHBOARD), "default_filename": "index.html"}),
            (r"/healthz", HealthHandler),
            (r"/readyz", ReadyHandler),
            (r"/metrics", MetricsHandler),
        ],
        default_handler_class=NotFoundHandler,
        log_function=_access_log(state.say),
        websocket_ping_interval=30,  # a proxy closes an idle log socket otherwise
    )
    mount(app, "/", auth_base=BearerAuth, socket_auth_base=BearerSocketAuth, routes=ROUTES + SERVER_ROUTES,
          settings={"soopervisor_service": state.runs, "soopervisor_root": None, "soopervisor_state": state,
                    "soopervisor_tokens": tokens or TokenStore(config.database),
                    "soopervisor_metrics": metrics})
    return app


def _access_log(say: Any) -> Any:
    """Requests that failed, one line each through the server's output (a probe's 200s every few
    seconds would drown it); tornado's own warning for the same request is silenced."""
    import logging

    logging.getLogger("tornado.general").setLevel(logging.ERROR)

    def log(handler: web.RequestHandler) -> None:
        status = handler.get_status()
        if status >= 400:
            r = handler.request
            say(f"http {status} {r.method} {r.path} ({r.remote_ip}) {1000 * r.request_time():.0f} ms")

    return log


def bind(host: str, port: int) -> list[socket.socket]:
    """The listening sockets; UsageError (exit 2) when the address is taken or cannot be used."""
    try:
        return netutil.bind_sockets(port, address=host)
    except OSError as e:
        where = f"{host}:{port}"
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"{where} is in use: another program (another soopervisor serve?) listens there",
                             "stop it, or pick another port: --port 8009 (--port 0 picks a free one)") from None
        if e.errno == errno.EACCES:
            raise UsageError(f"{where} may not be used by this user ({e.strerror})",
                             "ports below 1024 need privileges: use --port 8008 behind a reverse proxy") from None
        raise UsageError(f"cannot listen on {where}: {e.strerror or e}",
                         "--host takes an address of this machine (127.0.0.1, 0.0.0.0, ::1)") from None
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host}: {e.strerror or e}",
                         "--host takes an address or a name of this machine (127.0.0.1, 0.0.0.0)") from None


def listen(app: web.Application, sockets: list[socket.socket]) -> tuple[httpserver.HTTPServer, str]:
    """An HTTP server on ``sockets`` (call it on the IO loop's thread); the URL it answers on."""
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    host, port = sockets[0].getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{port}"


def serve_http(config: ServerConfig, host: str, port: int, *, stop: Any, say: Any = print) -> None:
    """``soopervisor serve``: the HTTP server on this (the main) thread's IO loop, the loop's poll and
    worker threads beside it, until ``stop`` is set; then the worker ends the job at hand and the
    HTTP server stops after it (a client may still follow that run's log)."""
    import asyncio

    from .metrics import Metrics

    sockets = bind(host, port)  # before anything starts: a taken port is the whole answer
    try:
        metrics = Metrics()
        state = ServerState(config, stop=stop, say=say, metrics=metrics)
        metrics.attach(state)
        app = make_app(config, state, metrics=metrics)
    except BaseException:
        for s in sockets:
            s.close()
        raise

    async def main() -> None:
        server, url = listen(app, sockets)
        say(f"soopervisor serve: listening on {url}")
        state.start()
        try:
            while not stop.is_set() or any(t.is_alive() for t in state.threads):
                if stop.is_set():
                    state.shutdown()  # wakes both threads: the poll thread ends at once
                await asyncio.sleep(0.2)
        finally:
            server.stop()

    asyncio.run(main())

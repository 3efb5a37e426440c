"""The HTTP side of `soopervisor serve`: the API with bearer tokens, the server's own routes,
health, readiness, metrics and the dashboard, against real git remotes (file://) and real HTTP
on 127.0.0.1 — the real `soopervisor serve` in a subprocess where the whole server matters, or
make_app on a tornado server in a thread of the test (the loop's poll thread running, its
worker not: jobs then stay queued for the queue's routes). Docker only where a job runs.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from soopervisor.server import config as server_config
from soopervisor.server.app import make_app
from soopervisor.server.loop import ServerState
from soopervisor.server.queue import Queue
from soopervisor.server.tokens import TokenStore
from tests.conftest import cli
from tests.projects import VALID, commit_all, git, init_repo, write
from tests.server.helpers import server_yaml

WAIT = 120.0  # the longest a test waits for the server to do something it was asked to


# -- helpers shared with test_webhook.py ------------------------------------------------------------


class Remote:
    """A bare remote (sales.git) and a work clone pushing to it."""

    def __init__(self, root: Path, files: dict[str, str] | None = None, name: str = "sales") -> None:
        self.work = init_repo(root / f"work-{name}")
        write(self.work, files or {"README.md": "hello\n"})
        commit_all(self.work, "first")
        self.bare = root / "git" / f"{name}.git"
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        git(root, "clone", "-q", "--bare", str(self.work), str(self.bare))
        git(self.work, "remote", "add", "origin", str(self.bare))
        git(self.work, "push", "-q", "origin", "HEAD:main")
        self.url = f"file://{self.bare}"

    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD").strip()

    def push(self, text: str = "more\n") -> str:
        write(self.work, {"notes.md": f"{text} {time.time_ns()}\n"})
        sha = commit_all(self.work, "another")
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return sha


def tokens(config: Path) -> dict[str, str]:
    """A read and an admin token of the server's database, made by the real command."""
    made = {}
    for scope in ("read", "admin"):
        flags = ["--admin"] if scope == "admin" else []
        made[scope] = cli("serve", "--config", str(config), "token", "create", "--name", scope, *flags,
                          check=0).stdout.strip()
    return made


class Http:
    """JSON over real HTTP; ``token`` as `Authorization: Bearer`."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, token: str | None = None, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """(status, body as JSON when it is, headers)."""
        req = urllib.request.Request(self.url + path, method=method, data=body, headers=dict(headers or {}))
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if method == "POST" and body is None:
            req.data = b""
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, raw, got = resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            status, raw, got = e.code, e.read(), e.headers
        try:
            return status, json.loads(raw), got
        except ValueError:
            return status, raw.decode("utf-8", "replace"), got

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return self.request("GET", path, token)[:2]

    def post(self, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        return self.request("POST", path, token, **kw)[:2]


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """``check()``'s first truthy value; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Served:
    """The real `soopervisor serve --port 0` in a subprocess; its output collected by a thread."""

    def __init__(self, config: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "soopervisor", "serve", "--config", str(config), "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = wait_for("the server to listen", lambda: next(
            (x for x in self.lines if "listening on" in x), None) or (self.proc.poll() is not None and "exited"), 60)
        assert line != "exited", "".join(self.lines)
        self.url = line.split("listening on ", 1)[1].strip()
        self.http = Http(self.url)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(30)
        finally:
            self._reader.join(10)


class InProcess:
    """make_app over a real ServerState on a tornado server of a thread of this test."""

    def __init__(self, config_path: Path, *, poll: bool = True, work: bool = False, **app_kw: Any) -> None:
        self.config = server_config.load(config_path)
        self.said: list[str] = []
        self.state = ServerState(self.config, say=self.said.append)
        self.app = make_app(self.config, self.state, **app_kw)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(30)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = Http(self.url)
        self.state.start(poll=poll, work=work)

    def _serve(self) -> None:
        from tornado import httpserver, netutil

        async def main() -> None:
            (sock,) = netutil.bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
            self.port = sock.getsockname()[1]
            server = httpserver.HTTPServer(self.app)
            server.add_sockets([sock])
            self._stop = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()
            server.stop()

        asyncio.run(main())

    def close(self) -> None:
        self.state.shutdown()
        self.state.join(60)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def ticks(self, n: int = 2) -> None:
        """Wait until the poll thread has gone round ``n`` more times."""
        for _ in range(n):
            seen = self.state.last_tick
            wait_for("a round of the poll thread", lambda seen=seen: self.state.last_tick != seen)


def websocket_lines(url: str, run_id: str, *, subprotocols: list[str] | None = None,
                    headers: dict[str, str] | None = None) -> tuple[list[dict], str | None]:
    """Every message of the log websocket until it closes, and the subprotocol the server selected."""
    from tornado import httpclient, websocket

    async def follow() -> tuple[list[dict], str | None]:
        ws_url = url.replace("http://", "ws://") + f"/soopervisor/api/runs/{run_id}/log?from=0"
        req = httpclient.HTTPRequest(ws_url, headers=headers or {})
        conn = await websocket.websocket_connect(req, subprotocols=subprotocols)
        messages = []
        while (msg := await asyncio.wait_for(conn.read_message(), WAIT)) is not None:
            messages.append(json.loads(msg))
        return messages, conn.selected_subprotocol

    return asyncio.run(follow())


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def quiet_config(tmp_path: Path, remote: Remote) -> Path:
    """A repository whose first head is only recorded: nothing runs, no Docker needed."""
    return server_yaml(tmp_path, [{"url": remote.url, "name": "sales", "first_sight": "none"}])


@pytest.fixture
def served(quiet_config: Path) -> Iterator[Served]:
    server = Served(quiet_config)
    yield server
    server.stop()


@pytest.fixture
def inproc(quiet_config: Path) -> Iterator[InProcess]:
    server = InProcess(quiet_config)
    yield server
    server.close()


# -- auth ------------------------------------------------------------------------------------------


def test_every_api_route_wants_a_token_read_tokens_read_and_admin_tokens_act(served, quiet_config):
    made = tokens(quiet_config)
    http = served.http

    status, body = http.get("/soopervisor/api/runs")
    assert status == 401 and "token create" in body["hint"]
    _, _, headers = http.request("GET", "/soopervisor/api/repositories")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, body = http.get("/soopervisor/api/runs", "sv_" + "A" * 43)  # well formed, unknown
    assert status == 401 and body["error"] == "a valid API token is needed"
    assert http.get("/soopervisor/api/runs", "not-a-token")[0] == 401
    assert http.request("GET", "/soopervisor/api/runs", headers={"Authorization": f"Basic {made['read']}"})[0] == 401

    assert http.get("/soopervisor/api/runs", made["read"]) == (200, {"runs": []})
    assert http.get("/soopervisor/api/version", made["read"])[0] == 200
    assert http.get("/soopervisor/api/repositories", made["read"])[0] == 200
    status, body = http.post("/soopervisor/api/repositories/sales/poll", made["read"])
    assert status == 403 and "--admin" in body["hint"]
    assert http.post("/soopervisor/api/queue/0123456789ab/cancel", made["read"])[0] == 403

    status, body = http.post("/soopervisor/api/repositories/sales/poll", made["admin"])
    assert status == 200 and body["name"] == "sales"
    # which token is this: its name and scope, never its secret
    for scope in ("read", "admin"):
        status, body = http.get("/soopervisor/api/token", made[scope])
        assert status == 200 and body["name"] == scope and body["scope"] == scope, body
        assert made[scope] not in json.dumps(body)
    assert http.get("/soopervisor/api/token")[0] == 401
    # a revoked token is refused from the next request on
    (info,) = [t for t in TokenStore(server_config.load(quiet_config).database).list() if t.scope == "read"]
    cli("serve", "--config", str(quiet_config), "token", "revoke", info.id, check=0)
    assert http.get("/soopervisor/api/runs", made["read"])[0] == 401
    # routes that need a Jupyter root say so on this server
    status, body = http.get("/soopervisor/api/validate?path=.", made["admin"])
    assert status == 404 and "not on this server" in body["error"]


# -- repositories and the queue --------------------------------------------------------------------


def test_pause_stops_polling_poll_now_polls_and_resume_resumes(inproc, remote, quiet_config):
    http, state = inproc.http, inproc.state
    admin = tokens(quiet_config)["admin"]
    first = remote.head()
    wait_for("the first poll", lambda: http.get("/soopervisor/api/repositories", admin)[1]["repositories"][0]
             ["heads"].get("main") == first)

    status, repo = http.post("/soopervisor/api/repositories/sales/pause", admin)
    assert status == 200 and repo["paused"] is True
    inproc.ticks()  # a round that may have started before the pause
    polled = http.get("/soopervisor/api/repositories", admin)[1]["repositories"][0]["last_poll"]
    second = remote.push()
    inproc.ticks(3)  # the interval (1 s) passes: a paused repository is not polled
    (repo,) = http.get("/soopervisor/api/repositories", admin)[1]["repositories"]
    assert repo["last_poll"] == polled and repo["heads"]["main"] == first and repo["paused"]

    # "poll now" polls even a paused repository: the new head is queued
    status, _ = http.post("/soopervisor/api/repositories/sales/poll", admin)
    assert status == 200
    wait_for("the poll asked for", lambda: http.get("/soopervisor/api/repositories", admin)[1]
             ["repositories"][0]["heads"]["main"] == second)
    (repo,) = http.get("/soopervisor/api/repositories", admin)[1]["repositories"]
    assert repo["paused"] and [j["commit"] for j in repo["jobs"]] == [second]
    assert repo["url"] == remote.url and repo["branches"] == ["main"] and repo["last_error"] is None

    status, repo = http.post("/soopervisor/api/repositories/sales/resume", admin)
    assert status == 200 and repo["paused"] is False
    assert [r.name for r in state.poller.due()] in ([], ["sales"])

    assert http.post("/soopervisor/api/repositories/nope/pause", admin)[0] == 404
    assert http.post("/soopervisor/api/repositories/nope/poll", admin)[1]["error"].startswith("no repository")


def test_the_queue_lists_cancels_and_retries_jobs(inproc, quiet_config):
    http = inproc.http
    admin = tokens(quiet_config)["admin"]
    queue = Queue(inproc.config.database)
    failed = queue.enqueue("sales", "a" * 40, ".", "sample", "main")
    queued = queue.enqueue("sales", "b" * 40, ".", "sample", "main")
    claimed = queue.claim("a-worker")  # the oldest: a worker runs it and its pipeline fails
    assert claimed.id == failed.id
    queue.finish(claimed, "a-worker", "failed", error="task clean failed")

    status, body = http.get("/soopervisor/api/queue", admin)
    assert status == 200 and {j["id"] for j in body["jobs"]} == {queued.id, failed.id}
    assert [j["id"] for j in http.get("/soopervisor/api/queue?state=queued", admin)[1]["jobs"]] == [queued.id]
    assert [j["id"] for j in http.get("/soopervisor/api/queue?state=failed&repository=sales&limit=5", admin)[1]
            ["jobs"]] == [failed.id]
    assert len(http.get("/soopervisor/api/queue?limit=1", admin)[1]["jobs"]) == 1
    for bad in ("state=done", "limit=0", "limit=many", "repository=nope"):
        status, body = http.get(f"/soopervisor/api/queue?{bad}", admin)
        assert status == 400 and body["error"], bad

    status, body = http.post(f"/soopervisor/api/queue/{queued.id}/cancel", admin)
    assert status == 200 and body["job"]["state"] == "cancelled"
    assert queue.get(queued.id).state == "cancelled"
    status, body = http.post(f"/soopervisor/api/queue/{queued.id}/cancel", admin)
    assert status == 409 and body["job"]["state"] == "cancelled"

    status, body = http.post(f"/soopervisor/api/queue/{failed.id}/retry", admin)
    assert status == 200 and body["job"]["state"] == "queued" and body["job"]["error"] is None
    status, body = http.post(f"/soopervisor/api/queue/{failed.id}/retry", admin)
    assert status == 409  # queued already

    for action in ("cancel", "retry"):
        status, body = http.post(f"/soopervisor/api/queue/0123456789ab/{action}", admin)
        assert status == 404 and "no job" in body["error"]


# -- health, readiness, metrics, dashboard ---------------------------------------------------------


@pytest.mark.docker
def test_healthz_and_readyz_say_what_failed(served, quiet_config, docker_client):
    http = served.http
    assert http.get("/healthz") == (200, {"ok": True})
    status, body = wait_for("readiness", lambda: (r := http.get("/readyz"))[0] == 200 and r)
    assert body["ready"] and body["failed"] == []

    db = Path(server_config.load(quiet_config).database)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    db.write_bytes(b"this is no database " * 100)  # damaged, as a disk error leaves it
    status, body = http.get("/readyz")
    assert status == 503 and "database" in body["failed"] and not body["checks"]["database"]["ok"]
    assert body["checks"]["database"]["error"] and body["checks"]["engines"]["ok"]
    assert http.get("/healthz")[0] == 200  # alive: a restart would not bring the database back


def test_readyz_is_503_until_the_poll_loop_goes_round_and_while_the_database_is_gone(quiet_config):
    # no thread of the loop runs here: nothing but the requests touches the database
    server = InProcess(quiet_config, poll=False)
    try:
        status, body = server.http.get("/readyz")
        assert status == 503 and "loop" in body["failed"] and "not gone round" in body["checks"]["loop"]["error"]
        assert body["checks"]["database"]["ok"]
        db = Path(server.config.database)
        db.rename(db.with_name("moved-aside.sqlite"))  # a lost mount, a file moved away
        status, body = server.http.get("/readyz")
        assert status == 503 and "database" in body["failed"] and "gone" in body["checks"]["database"]["error"]
        assert server.http.get("/healthz")[0] == 200
        db.with_name("moved-aside.sqlite").rename(db)
        assert server.http.get("/readyz")[1]["checks"]["database"]["ok"]
    finally:
        server.close()


def test_metrics_need_a_token_and_change_after_a_poll(served, quiet_config):
    made = tokens(quiet_config)
    http = served.http
    status, body = http.get("/metrics")
    assert status == 401 and "token create" in body["hint"]

    def polls() -> float:
        status, text = http.get("/metrics", made["read"])
        assert status == 200
        line = next((x for x in text.splitlines()
                     if x.startswith('soopervisor_poll_duration_seconds_count{repository="sales"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before = wait_for("a first poll in the metrics", polls)
    _, text, headers = http.request("GET", "/metrics", made["read"])
    assert headers["Content-Type"].startswith("text/plain")
    for name in ("soopervisor_poll_errors_total", "soopervisor_leases_expired_total", "soopervisor_database_up 1.0",
                 'soopervisor_queue_jobs{state="queued"} 0.0', "soopervisor_poll_duration_seconds_bucket"):
        assert name in text, name
    assert http.post("/soopervisor/api/repositories/sales/poll", made["admin"])[0] == 200
    wait_for("the poll in the metrics", lambda: polls() > before)


def test_the_dashboard_is_served_or_its_absence_explained(quiet_config, tmp_path):
    built = tmp_path / "dashboard"
    built.mkdir()
    (built / "index.html").write_text("<!doctype html><title>soopervisor</title>")
    server = InProcess(quiet_config, poll=False, dashboard=built)
    missing = InProcess(quiet_config, poll=False, dashboard=tmp_path / "not-built")
    try:
        status, _, headers = server.http.request("GET", "/dashboard/")
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        req = urllib.request.Request(server.url + "/")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(req, timeout=30)
        assert redirect.value.code == 302 and redirect.value.headers["Location"] == "/dashboard/"
        status, body = missing.http.get("/dashboard/")
        assert status == 404 and "scripts/build-dashboard" in body["hint"]
        status, body = server.http.get("/nothing-here")
        assert status == 404 and "/soopervisor/api" in body["hint"]
    finally:
        server.close()
        missing.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- the command ------------------------------------------------------------------------------------


def test_an_address_in_use_is_a_usage_error_and_once_does_not_listen(quiet_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = cli("serve", "--config", str(quiet_config), "--port", port, check=2, timeout=120)
        assert f"127.0.0.1:{port} is in use" in proc.stderr and "--port 0" in proc.stderr
        assert "Traceback" not in proc.stderr
        cli("serve", "--config", str(quiet_config), "--once", "--port", port, check=0, timeout=120)


def test_sigterm_stops_the_server_and_its_threads(quiet_config):
    server = Served(quiet_config)
    assert server.http.get("/healthz")[0] == 200
    assert server.stop() == 0
    assert "stopping after the job at hand" in server.output and "Traceback" not in server.output


# -- a served run ----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.xdist_group("serve")
def test_a_served_run_is_listed_and_its_log_followed_over_the_websocket(tmp_path, engine):
    remote = Remote(tmp_path, VALID)
    config = server_yaml(tmp_path, [{"url": remote.url, "name": "sales", "mode": "sample"}])
    made = tokens(config)
    commit = remote.head()
    server = Served(config)
    try:
        http = server.http

        def finished() -> dict | None:
            runs = http.get("/soopervisor/api/runs", made["read"])[1]["runs"]
            return next((r for r in runs if r["commit"] == commit and r["status"] in ("succeeded", "failed")), None)

        run = wait_for("the served run", finished, 600)
        assert run["status"] == "succeeded", server.output
        assert run["project"] == "sales" and run["mode"] == "sample"

        # the job is a record of its own (the queue's database), finished by the worker once the run
        # has ended: it follows the run's outcome a moment later
        def job_ended() -> dict | None:
            (repo,) = http.get("/soopervisor/api/repositories", made["read"])[1]["repositories"]
            job = repo["jobs"][0]
            return job if job["state"] != "running" else None

        job = wait_for("the served run's job to end", job_ended, 30)
        assert job["run_id"] == run["id"] and job["state"] == "succeeded"
        jobs = http.get("/soopervisor/api/queue?state=succeeded", made["read"])[1]["jobs"]
        assert [j["commit"] for j in jobs] == [commit]
        metrics = http.get("/metrics", made["read"])[1]
        assert 'soopervisor_runs{status="succeeded"} 1.0' in metrics
        assert 'soopervisor_queue_jobs{state="succeeded"} 1.0' in metrics

        # a browser's way: the token as a subprotocol, "soopervisor" selected
        messages, selected = websocket_lines(server.url, run["id"],
                                             subprotocols=["soopervisor", f"soopervisor.bearer.{made['read']}"])
        assert selected == "soopervisor"
        lines = [line for m in messages if m["type"] == "lines" for line in m["lines"]]
        assert lines and messages[-1]["type"] == "end" and messages[-1]["run"]["status"] == "succeeded"
        # a program's way: the header
        again, _ = websocket_lines(server.url, run["id"], headers={"Authorization": f"Bearer {made['read']}"})
        assert [line for m in again if m["type"] == "lines" for line in m["lines"]] == lines
        from tornado import httpclient

        for protocols in (["soopervisor"], ["soopervisor", "soopervisor.bearer.sv_nope"]):
            with pytest.raises(httpclient.HTTPClientError) as refused:
                websocket_lines(server.url, run["id"], subprotocols=protocols)
            assert refused.value.code == 401
    finally:
        server.stop()


def test_openapi_describes_every_server_route_and_no_other():
    import yaml
    from openapi_spec_validator import validate
    from tornado.web import RequestHandler

    from soopervisor.server.app import OPENAPI, SERVER_ROUTES

    spec = yaml.safe_load(OPENAPI.read_text())
    validate(spec)
    outside = {p for p, item in spec["paths"].items() if "servers" in item}
    assert outside == {"/healthz", "/readyz", "/metrics"}
    assert all(spec["paths"][p]["servers"][0]["url"] == "/" for p in outside)  # at the root, not under the API
    assert set(spec["paths"]) - outside == {template for template, _ in SERVER_ROUTES}
    for template, handler in SERVER_ROUTES:
        described = {m for m in spec["paths"][template] if m in ("get", "post", "put", "delete")}
        served = {m for m in ("get", "post", "put", "delete") if getattr(handler, m) is not getattr(RequestHandler, m)}
        assert described == served, template


@pytest.mark.docker
@pytest.mark.xdist_group("serve")
def test_a_stop_waits_for_the_job_at_hand_and_a_second_one_cancels_its_run(tmp_path, engine):
    from tests.projects import function_task

    remote = Remote(tmp_path, {**VALID, **function_task("import time\nprint('working', flush=True)\ntime.sleep(4)")})
    config = server_yaml(tmp_path, [{"url": remote.url, "name": "sales"}])
    made = tokens(config)

    def running(server: Served) -> Callable[[], dict | None]:
        def check() -> dict | None:
            runs = server.http.get("/soopervisor/api/runs", made["read"])[1]["runs"]
            return next((r for r in runs if r["status"] == "running"), None)
        return check

    server = Served(config)
    try:
        run = wait_for("the run to start", running(server), 600)
        server.proc.send_signal(signal.SIGTERM)  # once: the job at hand runs to its end, the API answers
        # the run sleeps 4 s after it starts: the API still answers meanwhile
        assert server.http.get(f"/soopervisor/api/runs/{run['id']}", made["read"])[1]["status"] == "running"
        code = server.proc.wait(120)  # then it exits by itself
    finally:
        server.stop()
    assert code == 0, server.output
    (ended,) = [r for r in json.loads(cli("runs", "--json", check=0).stdout) if r["id"] == run["id"]]
    assert ended["status"] == "succeeded"
    assert "stopping after the job at hand" in server.output and "Traceback" not in server.output

    second = remote.push()
    server = Served(config)
    try:
        run = wait_for("the second run to start", running(server), 600)
        assert run["commit"] == second
        server.proc.send_signal(signal.SIGTERM)
        # the second once the first was taken: two signals sent at once may reach the process as one
        wait_for("the first stop to be taken", lambda: "stopping after the job at hand" in server.output, 60)
        server.proc.send_signal(signal.SIGTERM)  # twice: its run is cancelled, recorded and stored
        code = server.proc.wait(300)
    finally:
        server.stop()
    assert code == 130, server.output
    (after,) = [r for r in json.loads(cli("runs", "--json", check=0).stdout) if r["id"] == run["id"]]
    assert after["status"] == "cancelled"

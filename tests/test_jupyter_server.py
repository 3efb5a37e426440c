"""The jupyter_server extension over real HTTP and websockets (CONTRACT.md).

Most tests use run records, logs and artifact sets written straight into the
store; the ``docker`` ones start real runs through ``POST /runs``.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket
import yaml
from jupyter_core.utils import ensure_event_loop

# pytest-jupyter's fixtures, for this module only: loaded as a plugin
# (pytest_plugins) its autouse fixtures would create and clean up a ServerApp
# around every test of the whole suite (~0.1 s each)
from pytest_jupyter.jupyter_server import *

from soopervisor.runs import Run, RunStore, now_iso
from soopervisor.storage import open_storage
from tests import sets

from .projects import function_task, make_project

API = ("soopervisor", "api")
SPEC = Path(__file__).resolve().parents[1] / "soopervisor" / "api" / "openapi.yaml"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def jp_server_config(request, tmp_path):
    config = {"ServerApp": {"jpserver_extensions": {"soopervisor_jupyter": True}}}
    if request.node.get_closest_marker("team_storage"):  # c.Soopervisor.storage, as an operator sets it
        config["Soopervisor"] = {"storage": str(tmp_path / "team-storage")}
    return config


# -- helpers --------------------------------------------------------------------------


def on_loop(test):
    """Run an async test on pytest-jupyter's event loop, the one serving the test server."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        ensure_event_loop(prefer_selector_loop=True).run_until_complete(test(*args, **kwargs))

    return run


def check_error(status: int, body: bytes) -> dict[str, Any]:
    """An error answer: JSON {"error", "hint"}, no traceback."""
    assert b"Traceback" not in body and b'File "' not in body, body
    data = json.loads(body)
    assert set(data) >= {"error", "hint"}, data
    assert isinstance(data["error"], str) and data["error"]
    return data


async def api(jp_fetch, *parts: str, method: str = "GET", body: Any = None, **kw) -> tuple[int, Any]:
    """(status, JSON body) of one authenticated request; error bodies are checked."""
    if body is not None and not isinstance(body, (str, bytes)):
        body = json.dumps(body)
    r = await jp_fetch(*API, *parts, method=method, body=body, raise_error=False, **kw)
    if r.code >= 400:
        return r.code, check_error(r.code, r.body)
    ctype = r.headers.get("Content-Type", "")
    return r.code, json.loads(r.body) if ctype.startswith("application/json") else r


def raw_url(jp_http_port: int, jp_base_url: str, tail: str, scheme: str = "http") -> str:
    """A URL written by hand (percent-escapes kept as given)."""
    return f"{scheme}://localhost:{jp_http_port}{jp_base_url}soopervisor/api/{tail}"


async def raw_fetch(url: str, headers: dict | None = None, method: str = "GET", body: str | None = None):
    """A request from a fresh client: no token, no cookie unless given."""
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        if method == "POST" and body is None:
            body = "{}"
        return await client.fetch(url, method=method, body=body, headers=headers or {}, raise_error=False)
    finally:
        client.close()


async def read_log(ws, start: int = 0, stop_after: int | None = None) -> tuple[list[str], dict | None]:
    """Lines from ``start`` until "end" (returned) or until ``stop_after`` lines arrived."""
    lines: list[str] = []
    while True:
        msg = await asyncio.wait_for(ws.read_message(), timeout=300)
        if msg is None:
            return lines, None
        m = json.loads(msg)
        if m["type"] == "lines":
            assert m["from"] == start + len(lines), "lines out of order or missing"
            lines += m["lines"]
            if stop_after is not None and len(lines) >= stop_after:
                return lines, None
        else:
            assert m["type"] == "end", m
            assert await asyncio.wait_for(ws.read_message(), timeout=10) is None, (
                "the server closes after end"
            )
            return lines, m["run"]


def fake_run(status: str, log: Path, project: str = "proj", **kw) -> Run:
    run = Run(
        project=project,
        project_path="/nowhere",
        commit=COMMIT,
        dirty=False,
        mode="sample",
        status=status,
        started_at=now_iso(),
        log_path=str(log),
        **kw,
    )
    return RunStore().add(run)


def store_set(tmp_path: Path, project: str, commit: str, files: dict[str, bytes], run_id: str = "r1",
              status: str = "succeeded", mode: str = "sample") -> dict:
    """Store a run's set: ``files`` are its products, plus a log."""
    return sets.store_set(project, commit, files, run_id=run_id, status=status, mode=mode,
                          log=f"log of {run_id}\n")


def stored_bytes(tmp_path: Path, project: str, commit: str, name: str, run_id: str = "r1") -> bytes:
    """A product's bytes, read straight from the storage."""
    dest = tmp_path / "stored-copy"
    open_storage().get_file(project, commit, run_id, f"files/{name}", dest)
    return dest.read_bytes()


def zip_names(data: bytes) -> list[str]:
    return sorted(zipfile.ZipFile(io.BytesIO(data)).namelist())


def containers_of(client, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"soopervisor.run={run_id}"})


# -- the spec and the routes ----------------------------------------------------------------


def test_openapi_is_valid_and_lists_exactly_the_registered_routes():
    from openapi_spec_validator import validate
    from soopervisor_jupyter.server import setup_handlers

    spec = yaml.safe_load(SPEC.read_text())
    validate(spec)

    class App:  # records what setup_handlers registers
        def __init__(self):
            self.settings, self.rules = {"base_url": "/base/"}, []

        def add_handlers(self, host, rules):
            self.rules += rules

    class ServerApp:
        root_dir = "/tmp"
        web_app = App()

    setup_handlers(ServerApp)
    prefix = "/base/soopervisor/api"
    registered = set()
    for pattern, _handler in ServerApp.web_app.rules:
        assert pattern.startswith(prefix)
        registered.add(re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern[len(prefix) :]))
    assert registered == set(spec["paths"])


# -- authentication -----------------------------------------------------------------------------

ROUTES = [
    ("GET", "version"),
    ("GET", "validate?path="),
    ("GET", "runs"),
    ("POST", "runs"),
    ("GET", "runs/abc"),
    ("POST", "runs/abc/stop"),
    ("GET", "remotes"),
    ("GET", "projects/proj/commits"),
    ("GET", "projects/proj/commits/latest"),
    ("GET", "projects/proj/commits/latest/files/a.txt"),
    ("GET", "projects/proj/commits/latest/zip"),
    ("GET", "projects/proj/commits/latest/table/a.csv"),
    ("GET", "projects/proj/commits/latest/compare/other"),
    ("GET", "projects/proj/commits/latest/compare/other/files/a.txt"),
]


def test_the_auth_test_covers_every_route():
    from soopervisor.api.routes import ROUTES as SERVED

    covered = {re.sub(r"\?.*", "", tail) for _, tail in ROUTES} | {"runs/abc/log"}  # the websocket: below
    for template, _ in SERVED:
        pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template.lstrip("/")))
        assert any(re.fullmatch(pattern, tail) for tail in covered), f"{template} is not in ROUTES above"


@on_loop
async def test_every_route_refuses_requests_without_the_token(
    http_server_client, jp_serverapp, jp_http_port, jp_base_url, jp_auth_header
):
    token = jp_serverapp.identity_provider.token
    assert token, "the test server must require a token"
    for method, tail in ROUTES:
        url = raw_url(jp_http_port, jp_base_url, tail)
        for headers in ({}, {"Authorization": ""}, {"Authorization": "token wrong"}):
            r = await raw_fetch(url, headers=headers, method=method)
            assert r.code == 403, (method, tail, headers, r.code)
            assert "Set-Cookie" not in r.headers or token not in r.headers["Set-Cookie"]
            check_error(r.code, r.body)
        # the same request with the token gets past authentication
        r = await raw_fetch(url, headers=jp_auth_header, method=method)
        assert r.code != 403, (method, tail, r.body)

    ws_url = raw_url(jp_http_port, jp_base_url, "runs/abc/log", scheme="ws")
    for headers in ({}, {"Authorization": "token wrong"}):
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(ws_url, headers=headers))
        assert e.value.code == 403
    # with the token (a header, or ?token= as browsers send it): past auth, then an unknown run
    for request in (
        tornado.httpclient.HTTPRequest(ws_url, headers=jp_auth_header),
        tornado.httpclient.HTTPRequest(f"{ws_url}?token={token}"),
    ):
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await tornado.websocket.websocket_connect(request)
        assert e.value.code == 404


@on_loop
async def test_version(jp_fetch):
    import soopervisor

    assert await api(jp_fetch, "version") == (200, {"version": soopervisor.__version__})


# -- paths ----------------------------------------------------------------------------------------


@on_loop
async def test_paths_outside_the_root_are_refused(jp_fetch, jp_root_dir, tmp_path):
    outside = tmp_path / "outside"
    make_project(tmp_path, name="outside")
    (jp_root_dir / "link").symlink_to(outside)
    (jp_root_dir / "sub").mkdir()
    for bad in ("..", "../../etc", "/etc", str(outside), "link", "link/tasks", "sub/../..", "~"):
        status, body = await api(jp_fetch, "validate", params={"path": bad})
        assert status == 403, (bad, body)
        assert body["hint"]
        status, body = await api(jp_fetch, "runs", method="POST", body={"path": bad})
        assert status == 403, (bad, body)
    assert await api(jp_fetch, "runs") == (200, {"runs": []})  # nothing was started


@on_loop
async def test_validate_an_invalid_folder_lists_readable_problems(jp_fetch, jp_root_dir):
    (jp_root_dir / "notes").mkdir()
    (jp_root_dir / "notes" / "pipeline.yaml").write_text("tasks: [")
    status, body = await api(jp_fetch, "validate", params={"path": "notes"})
    assert status == 200 and body["ok"] is False and body["path"] == "notes"
    assert body["problems"]
    for p in body["problems"]:
        assert p["what"] and p["hint"] and p["severity"] in ("error", "warning")
    codes = {p["code"] for p in body["problems"]}
    assert "not-a-repo" in codes

    status, body = await api(jp_fetch, "validate", params={"path": "missing"})
    assert status == 200 and body["ok"] is False and body["problems"][0]["code"] == "path-missing"


@on_loop
async def test_validate_a_valid_project(jp_fetch, jp_root_dir):
    make_project(jp_root_dir, name="proj")
    status, body = await api(jp_fetch, "validate", params={"path": "proj"})
    assert status == 200 and body["ok"] is True, body
    assert body["project"]["name"] == "proj" and len(body["project"]["commit"]) == 40
    make_project(jp_root_dir / "proj", name="nested")  # the root itself ("" and ".") also works
    for root in ("", "."):
        status, body = await api(jp_fetch, "validate", params={"path": root})
        assert status == 200 and body["path"] == ""
    # a file browser inside the project (proj/tasks) means the project
    status, body = await api(jp_fetch, "validate", params={"path": "proj/tasks"})
    assert status == 200 and body["ok"] is True and body["path"] == "proj", body
    # ...but never a project above the server's root
    (jp_root_dir / "plain").mkdir()
    (jp_root_dir.parent / "pipeline.yaml").write_text("tasks: []\n")
    status, body = await api(jp_fetch, "validate", params={"path": "plain"})
    assert body["path"] == "plain" and body["ok"] is False, body


# -- bad input ------------------------------------------------------------------------------------------


@on_loop
async def test_bad_input_is_a_400_with_a_hint(jp_fetch, jp_root_dir, jp_ws_fetch):
    make_project(jp_root_dir, name="proj")
    cases = [
        ("runs", "POST", "not json"),
        ("runs", "POST", "[1, 2]"),
        ("runs", "POST", {"path": 3}),
        ("runs", "POST", {"path": "proj", "mode": "fast"}),
        ("runs", "POST", {"path": "proj", "secrets": "TOKEN"}),
        ("runs", "POST", {"path": "proj", "secrets": ["SOOPERVISOR_TEST_UNSET_SECRET"]}),
    ]
    for route, method, body in cases:
        status, err = await api(jp_fetch, route, method=method, body=body)
        assert status == 400, (body, err)
    for limit in ("abc", "0", "-3", "1.5"):
        status, _ = await api(jp_fetch, "runs", params={"limit": limit})
        assert status == 400
    assert await api(jp_fetch, "runs", params={"limit": "5000"}) == (200, {"runs": []})  # capped at 1000
    log = Path(os.environ["SOOPERVISOR_HOME"]) / "x.log"
    run = fake_run("succeeded", log)
    for bad in ("-1", "x"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_ws_fetch(*API, "runs", run.id, "log", params={"from": bad})
        assert e.value.code == 400


# -- remotes ------------------------------------------------------------------------------------------

SERVER_TOKEN = "sv-remote-token-0a1b2c3d4e5f"


@on_loop
async def test_remotes_lists_the_users_remotes_and_never_a_token(jp_fetch):
    from soopervisor.remotes import config as remotes

    github = {"name": "github", "kind": "github", "url": "https://api.github.com"}
    assert await api(jp_fetch, "remotes") == (200, {"remotes": [github]})  # github always exists

    remotes.add("ci", "https://ci.example.com:8008/", token=SERVER_TOKEN)
    remotes.add("ghe", "https://ghe.example.com/api/v3", kind="github")
    r = await jp_fetch(*API, "remotes")
    assert SERVER_TOKEN.encode() not in r.body
    assert json.loads(r.body) == {"remotes": [
        {"name": "ci", "kind": "server", "url": "https://ci.example.com:8008"},
        {"name": "ghe", "kind": "github", "url": "https://ghe.example.com/api/v3"},
        github,
    ]}

    # a remotes file that does not parse: said, with what to do, never a traceback
    remotes.remotes_file().write_text("remotes: [unclosed\n")
    status, body = await api(jp_fetch, "remotes")
    assert status == 400 and "remotes file" in body["error"] and "remote add" in body["hint"], body


@on_loop
async def test_a_run_on_a_remote_it_cannot_have_is_a_400_and_records_nothing(jp_fetch, jp_root_dir):
    from soopervisor.remotes import config as remotes

    make_project(jp_root_dir, name="proj")
    remotes.add("ci", "https://ci.example.com:8008", token=SERVER_TOKEN)
    for bad in (3, "", ["ci"], True, {"name": "ci"}, "../ci", "-ci", "x" * 41):
        status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": bad})
        assert status == 400, (bad, body)
        assert body["hint"], body

    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": "nope"})
    assert status == 400, body
    assert "no remote named 'nope'" in body["error"] and "ci" in body["error"], body
    assert "soopervisor remote add nope" in body["hint"], body

    # what only a run here can have: a remote uses its own image, storage and secrets
    for extra, said in (({"image": "python:3.12"}, "'image'"), ({"storage": "/elsewhere"}, "'storage'"),
                        ({"secrets": ["HOME"]}, "secrets")):
        status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": "ci", **extra})
        assert status == 400 and said in body["error"] and body["hint"], (extra, body)
    assert SERVER_TOKEN not in json.dumps(body)

    # a repository with no remote at all: said so, with how to add one
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": "ci"})
    assert status == 400 and "has no remote" in body["error"] and "git remote add" in body["hint"], body

    from tests.conftest import free_port
    from tests.projects import commit_all, git, write

    proj = jp_root_dir / "proj"
    bare = jp_root_dir.parent / "origin.git"
    git(jp_root_dir.parent, "clone", "-q", "--bare", str(proj), str(bare))
    git(proj, "remote", "add", "origin", str(bare))
    git(proj, "fetch", "-q", "origin")

    # a commit not pushed: said with the push command (never pushed for you)
    write(proj, {"notes.md": "not pushed yet\n"})
    commit_all(proj, "local only")
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": "ci"})
    assert status == 400 and "not pushed" in body["error"] and "git push origin" in body["hint"], body

    # pushed, to a server that does not answer (nothing listens on its port): 503, with what to check
    git(proj, "push", "-q", "origin", "HEAD")
    remotes.add("down", f"http://127.0.0.1:{free_port()}", token=SERVER_TOKEN)
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "remote": "down"})
    assert status == 503 and body["hint"], body
    assert SERVER_TOKEN not in json.dumps(body)
    assert await api(jp_fetch, "runs") == (200, {"runs": []})  # refused before anything was recorded


@on_loop
async def test_run_json_says_where_a_run_ran_and_keeps_the_remote_handle_out(jp_fetch):
    log = Path(os.environ["SOOPERVISOR_HOME"]) / "remote.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("one\n")
    handle = {"job": 7, "run": "abc123", "url": "https://ci.example.com:8008/soopervisor/api/runs/abc123"}
    # ended: a running remote record nobody follows would be followed by the server (from this process)
    remote = fake_run("succeeded", log, remote="ci", remote_ref=json.dumps(handle),
                      executor="server ci (https://ci.example.com:8008)")
    here = fake_run("succeeded", log, engine="local", executor="docker")
    status, body = await api(jp_fetch, "runs", remote.id)
    assert status == 200 and body["remote"] == "ci" and body["where"] == "ci", body
    assert body["executor"] == "server ci (https://ci.example.com:8008)"
    assert "remote_ref" not in body and handle["url"] not in json.dumps(body), body
    assert body["set_id"] == "abc123"  # the set is stored under the remote's run id
    status, body = await api(jp_fetch, "runs")
    where = {r["id"]: (r["remote"], r["where"]) for r in body["runs"]}
    assert where == {remote.id: ("ci", "ci"), here.id: (None, "local")}
    assert {r["id"]: r["set_id"] for r in body["runs"]} == {remote.id: "abc123", here.id: here.id}
    assert all("remote_ref" not in r for r in body["runs"])


@on_loop
async def test_an_invalid_project_does_not_start_a_run(jp_fetch, jp_root_dir):
    make_project(jp_root_dir, {"pipeline.yaml": "tasks: []\n"}, name="empty")
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "empty"})
    assert status == 422
    assert body["report"]["ok"] is False and body["report"]["problems"]
    status, body = await api(jp_fetch, "runs")
    assert body == {"runs": []}


@on_loop
async def test_docker_engine_down_is_a_503_with_a_hint(jp_fetch, jp_root_dir, tmp_path, monkeypatch):
    import socket

    closed = tmp_path / "closed.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(closed))
    s.close()  # a socket file nobody listens on
    monkeypatch.setenv("DOCKER_HOST", f"unix://{closed}")
    make_project(jp_root_dir, name="proj")
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj"})
    assert status == 503, body
    assert "Docker" in body["error"] and body["hint"]


@on_loop
async def test_cloud_storage_not_signed_in_is_a_503_naming_the_login(jp_fetch, jp_root_dir, monkeypatch):
    monkeypatch.setenv("SOOPERVISOR_STORAGE", "dropbox://team")
    make_project(jp_root_dir, name="proj")
    status, body = await api(jp_fetch, "runs", method="POST", body={"path": "proj"})
    assert status == 503, body
    assert "not signed in to Dropbox" in body["error"] and "soopervisor login dropbox" in body["hint"]
    status, body = await api(jp_fetch, "runs")
    assert body["runs"] == []  # refused before anything was recorded


@on_loop
async def test_an_unexpected_error_says_little_and_shows_no_traceback(jp_fetch, monkeypatch):
    from soopervisor.service import RunService

    def broken(self, **_kw):
        raise RuntimeError("password=hunter2 in the middle of a bug")

    monkeypatch.setattr(RunService, "list", broken)  # the runs route translates to the run service
    status, body = await api(jp_fetch, "runs")
    assert status == 500 and "hunter2" not in json.dumps(body) and body["hint"]


# -- runs and logs without Docker -----------------------------------------------------------------------


@on_loop
async def test_runs_list_get_and_unknown(jp_fetch, jp_ws_fetch, tmp_path):
    a = fake_run("succeeded", tmp_path / "a.log", project="p1", finished_at=now_iso(), exit_code=0)
    await asyncio.sleep(0.01)
    b = fake_run("failed", tmp_path / "b.log", project="p2")
    status, body = await api(jp_fetch, "runs")
    assert status == 200 and [r["id"] for r in body["runs"]] == [b.id, a.id]
    first = body["runs"][1]
    assert "log_path" not in first and first["short_commit"] == COMMIT[:7]
    assert isinstance(first["duration"], float) and body["runs"][0]["duration"] is None
    status, body = await api(jp_fetch, "runs", params={"project": "p1", "limit": "5"})
    assert [r["id"] for r in body["runs"]] == [a.id]
    status, body = await api(jp_fetch, "runs", a.id)
    assert status == 200 and body["id"] == a.id and body["status"] == "succeeded"

    for route in (("runs", "nope"), ("runs", "nope", "stop")):
        stop = route[-1] == "stop"
        status, body = await api(
            jp_fetch, *route, method="POST" if stop else "GET", body="" if stop else None
        )
        assert status == 404 and "nope" in body["error"] and body["hint"]
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_ws_fetch(*API, "runs", "nope", "log")
    assert e.value.code == 404


@on_loop
async def test_log_of_a_finished_run_resumes_without_loss_or_duplicates(jp_ws_fetch, tmp_path):
    log = tmp_path / "run.log"
    expected = [f"line {i} {'x' * (i % 50)}\n" for i in range(5000)]
    log.write_text("".join(expected))
    run = fake_run("succeeded", log, finished_at=now_iso(), exit_code=0)

    ws = await jp_ws_fetch(*API, "runs", run.id, "log")
    whole, end = await read_log(ws)
    assert whole == expected and end["status"] == "succeeded" and end["id"] == run.id

    ws = await jp_ws_fetch(*API, "runs", run.id, "log")
    part, _ = await read_log(ws, stop_after=1)
    ws.close()
    assert 0 < len(part) <= len(expected)
    n = max(1, len(part) // 2)  # inside the first message: any index resumes exactly
    ws = await jp_ws_fetch(*API, "runs", run.id, "log", params={"from": str(n)})
    rest, end = await read_log(ws, start=n)
    assert part[:n] + rest == expected and end is not None

    ws = await jp_ws_fetch(*API, "runs", run.id, "log", params={"from": "999999"})
    assert await read_log(ws, start=999999) == ([], end)


@on_loop
async def test_log_of_a_growing_run_resumes_mid_run(jp_ws_fetch, tmp_path):
    log = tmp_path / "run.log"
    log.write_text("")
    run = fake_run("running", log)
    expected = [f"tick {i}\n" for i in range(300)]

    def writer():
        with open(log, "a") as f:
            for i, line in enumerate(expected):
                # half lines on purpose: only complete lines are sent
                f.write(line[:3])
                f.flush()
                f.write(line[3:])
                f.flush()
                if i % 10 == 0:
                    time.sleep(0.02)
        RunStore().update(run, status="succeeded", exit_code=0, finished_at=now_iso())

    ws = await jp_ws_fetch(*API, "runs", run.id, "log")
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        got, end = await read_log(ws, stop_after=1)
        assert end is None
        ws.close()
        ws = await jp_ws_fetch(*API, "runs", run.id, "log", params={"from": str(len(got))})
        rest, end = await read_log(ws, start=len(got))
    finally:
        thread.join()
    assert got + rest == expected
    assert end["status"] == "succeeded"


# -- artifacts without Docker ---------------------------------------------------------------------------


@on_loop
async def test_a_commits_files_and_a_comparison_name_each_files_task(jp_fetch, tmp_path):
    tasks = {"output/a.csv": "clean", "output/.a.csv.metadata": "clean"}
    sets.store_set("proj", COMMIT, {"output/a.csv": "1\n", "output/.a.csv.metadata": '{"timestamp": 1}',
                                    "output/x.txt": "x"}, run_id="r1", tasks=tasks)
    other = "fedcba9876543210fedcba9876543210fedcba98"
    await asyncio.sleep(0.01)
    sets.store_set("proj", other, {"output/a.csv": "2\n", "output/.a.csv.metadata": '{"timestamp": 2}',
                                   "output/x.txt": "x"}, run_id="r2", tasks=tasks)
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT)
    assert status == 200 and {f["name"]: f["task"] for f in body["files"]} == {
        "output/a.csv": "clean", "output/.a.csv.metadata": "clean", "output/x.txt": None}
    assert {f["path"]: f["task"] for f in body["manifest"]["files"]}["output/a.csv"] == "clean"
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "compare", other)
    assert status == 200
    by = {f["name"]: (f["status"], f["kind"], f["task"], f["metadata"]) for f in body["files"]}
    assert by == {"output/a.csv": ("changed", "table", "clean", False),
                  "output/.a.csv.metadata": ("changed", "json", "clean", True),
                  "output/x.txt": ("unchanged", "text", None, False)}
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "compare", other,
                             "files", "output/.a.csv.metadata")
    assert status == 200 and body["diff"]["keys"]["changed"] == [{"key": "timestamp", "a": "1", "b": "2"}]


@on_loop
async def test_commits_files_zip_and_unsafe_names(
    jp_fetch, jp_http_port, jp_base_url, jp_auth_header, tmp_path
):
    files = {
        "output/data.csv": b"x\n1\n2\n",
        "output/deep/b.bin": bytes(range(256)) * 1000,
        "soopervisor.log": b"a product named like our log\n",
    }
    store_set(tmp_path, "proj", COMMIT, files)
    other = "fedcba9876543210fedcba9876543210fedcba98"
    await asyncio.sleep(0.01)
    store_set(tmp_path, "proj", other, {"output/data.csv": b"newer\n"}, run_id="r2")

    status, body = await api(jp_fetch, "projects", "proj", "commits")
    assert status == 200 and [c["commit"] for c in body["commits"]] == [other, COMMIT]
    older = body["commits"][1]
    assert older["short_commit"] == COMMIT[:7] and older["files"] == 3 and older["run_id"] == "r1"
    assert older["size"] == sum(len(v) for v in files.values()) and older["status"] == "succeeded"
    assert [s["run_id"] for s in older["sets"]] == ["r1"] and older["resolved"] is True
    assert (await api(jp_fetch, "projects", "unknown", "commits")) == (200, {"commits": []})

    for ref in (COMMIT, COMMIT[:7], COMMIT.upper()[:10]):
        status, body = await api(jp_fetch, "projects", "proj", "commits", ref)
        assert status == 200 and body["commit"] == COMMIT, ref
        assert sorted(f["name"] for f in body["files"]) == sorted(files)
        assert body["manifest"]["commit"] == COMMIT and body["run_id"] == "r1"
    status, body = await api(jp_fetch, "projects", "proj", "commits", "latest")
    assert body["commit"] == other

    status, r = await api(jp_fetch, "projects", "proj", "commits", COMMIT[:8], "files", "output/deep/b.bin")
    assert status == 200 and r.body == files["output/deep/b.bin"]
    assert r.body == stored_bytes(tmp_path, "proj", COMMIT, "output/deep/b.bin")
    assert r.headers["Content-Disposition"].startswith('attachment; filename="b.bin"')
    assert r.headers["Content-Type"] == "application/octet-stream"

    status, r = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "zip")
    assert status == 200 and r.headers["Content-Type"] == "application/zip"
    assert zip_names(r.body) == sorted([*files, ".soopervisor/manifest.json", ".soopervisor/soopervisor.log"])
    assert zipfile.ZipFile(io.BytesIO(r.body)).read("output/deep/b.bin") == files["output/deep/b.bin"]
    assert zipfile.ZipFile(io.BytesIO(r.body)).read("soopervisor.log") == files["soopervisor.log"]
    assert zipfile.ZipFile(io.BytesIO(r.body)).read(".soopervisor/soopervisor.log") == b"log of r1\n"

    # unknown commit, file, project
    for parts in (
        ("commits", "deadbeef"),
        ("commits", "latest", "files", "nope.txt"),
        ("commits", "deadbeef", "zip"),
    ):
        status, body = await api(jp_fetch, "projects", "proj", *parts)
        assert status == 404 and body["hint"], parts
    status, body = await api(jp_fetch, "projects", "ghost", "commits", "latest")
    assert status == 404

    # names that would escape the set: as written, and percent-encoded by hand
    base = f"projects/proj/commits/{COMMIT}/files/"
    for tail in (
        "../../../etc/passwd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "output/%2e%2e/%2e%2e/x",
        "output%2f..%2f..%2fmanifest.json",
        "%2fetc%2fpasswd",
    ):
        r = await raw_fetch(raw_url(jp_http_port, jp_base_url, base + tail), headers=jp_auth_header)
        assert r.code in (400, 403), (tail, r.code, r.body)
        check_error(r.code, r.body)
    # backslashes are legal in a POSIX name: only a file the set lists by that very name is served
    r = await raw_fetch(raw_url(jp_http_port, jp_base_url, base + "output/..%5c..%5cx"), headers=jp_auth_header)
    assert r.code == 404
    check_error(r.code, r.body)
    for tail in (
        "projects/%2e%2e/commits",
        "projects/..%2f..%2fetc/commits/latest",
        "projects/.hidden/commits",
    ):
        r = await raw_fetch(raw_url(jp_http_port, jp_base_url, tail), headers=jp_auth_header)
        assert r.code in (400, 403, 404), (tail, r.code)
        check_error(r.code, r.body)


@on_loop
async def test_every_run_keeps_its_set_and_a_damaged_one_is_one_line(jp_fetch, tmp_path):
    """Issue 11, cases 1 and 5, over REST: one summary per commit (the set it resolves to), every set
    reachable by ?run=, a damaged manifest a line of its own and never a 500 for the list."""
    nine = {f"output/part-{i}.csv": b"%d\n" % i for i in range(8)} | {"output/sales.csv": b"region,total\n"}
    store_set(tmp_path, "proj", COMMIT, nine, run_id="good", mode="full")
    await asyncio.sleep(0.01)
    store_set(tmp_path, "proj", COMMIT, {"output/partial.csv": b"p"}, run_id="stopped", status="cancelled")
    await asyncio.sleep(0.01)
    store_set(tmp_path, "proj", COMMIT, {"output/sales.csv": b"sample\n"}, run_id="sample", mode="sample")
    other = "fedcba9876543210fedcba9876543210fedcba98"
    await asyncio.sleep(0.01)
    store_set(tmp_path, "proj", other, {"x": b"x"}, run_id="bad")
    manifest = Path(open_storage().url) / "proj" / other / "bad" / "manifest.json"
    manifest.write_text('{"files": 5}')

    status, body = await api(jp_fetch, "projects", "proj", "commits")
    assert status == 200
    by_commit = {c["commit"]: c for c in body["commits"]}
    mine = by_commit[COMMIT]
    assert (mine["run_id"], mine["status"], mine["files"], mine["resolved"]) == ("good", "succeeded", 9, True)
    assert [s["run_id"] for s in mine["sets"]] == ["sample", "stopped", "good"]
    bad = by_commit[other]
    assert (bad["status"], bad["resolved"]) == ("damaged", False) and "manifest" in bad["damaged"]

    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT)
    assert (body["run_id"], len(body["files"])) == ("good", 9) and body["set"]["status"] == "succeeded"
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT, params={"mode": "sample"})
    assert body["run_id"] == "sample"
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT, params={"run": "stopped"})
    assert body["run_id"] == "stopped" and [f["name"] for f in body["files"]] == ["output/partial.csv"]
    status, r = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "files", "output/sales.csv",
                          params={"run": "sample"})
    assert status == 200 and r.body == b"sample\n"
    status, r = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "zip", params={"run": "stopped"})
    assert status == 200 and "output/partial.csv" in zip_names(r.body)
    assert 'filename="proj-' + COMMIT[:7] + '-stopped.zip"' in r.headers["Content-Disposition"]
    status, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT, params={"mode": "quick"})
    assert status == 400 and body["error"]
    status, body = await api(jp_fetch, "projects", "proj", "commits", other)
    assert status == 404 and "no succeeded set" in body["error"] and "run=" in body["hint"]
    status, body = await api(jp_fetch, "projects", "proj", "commits", other, params={"run": "bad"})
    assert status == 500 and "damaged" in body["error"] and body["hint"]


@pytest.mark.team_storage
@on_loop
async def test_the_storage_comes_from_the_server_configuration(jp_fetch, jp_serverapp, tmp_path, monkeypatch):
    """c.Soopervisor.storage, not a module global: the routes read the configured storage only."""
    team = tmp_path / "team-storage"
    monkeypatch.setenv("SOOPERVISOR_STORAGE", str(team))  # store_set writes to the default storage
    store_set(tmp_path, "proj", COMMIT, {"output/a.csv": b"a\n"}, run_id="team")
    monkeypatch.delenv("SOOPERVISOR_STORAGE")
    store_set(tmp_path, "proj", "fedcba9876543210fedcba9876543210fedcba98", {"b": b"b"}, run_id="home")

    assert jp_serverapp.web_app.settings["soopervisor_service"].storage == str(team)
    status, body = await api(jp_fetch, "projects", "proj", "commits")
    assert status == 200 and [c["run_id"] for c in body["commits"]] == ["team"]
    status, r = await api(jp_fetch, "projects", "proj", "commits", COMMIT, "files", "output/a.csv")
    assert status == 200 and r.body == b"a\n"


@on_loop
async def test_a_name_that_is_not_utf8_is_served(jp_fetch, jp_http_port, jp_base_url, jp_auth_header, tmp_path):
    store_set(tmp_path, "proj", COMMIT, {"output/x\udcff.bin": b"raw name"})
    _, body = await api(jp_fetch, "projects", "proj", "commits", COMMIT)
    (name,) = [f["name"] for f in body["files"]]
    assert name == "output/x\udcff.bin"  # JSON escapes the byte as the surrogate it is stored by
    url = raw_url(jp_http_port, jp_base_url, f"projects/proj/commits/{COMMIT}/files/output/x%FF.bin")
    r = await raw_fetch(url, headers=jp_auth_header)
    assert r.code == 200 and r.body == b"raw name"
    assert "x%EF%BF%BD.bin" in r.headers["Content-Disposition"]  # shown as U+FFFD


# -- real runs ----------------------------------------------------------------------------------------------


async def wait_for(predicate, timeout: float = 300, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.docker
@on_loop
async def test_a_real_run_followed_resumed_and_its_artifacts_downloaded(
    engine, jp_fetch, jp_ws_fetch, jp_root_dir, tmp_path
):
    project = make_project(jp_root_dir, name="proj")
    status, run = await api(jp_fetch, "runs", method="POST", body={"path": "proj", "mode": "sample"})
    assert status == 201, run
    assert run["status"] == "running" and run["project"] == "proj" and "log_path" not in run

    # follow from line 0, drop the connection, resume from where it stopped
    ws = await jp_ws_fetch(*API, "runs", run["id"], "log")
    first, end = await read_log(ws, stop_after=1)
    ws.close()
    ws = await jp_ws_fetch(*API, "runs", run["id"], "log", params={"from": str(len(first))})
    rest, end = await read_log(ws, start=len(first))
    assert end is not None and end["status"] == "succeeded", (end, "".join(first + rest)[-3000:])
    log_path = RunStore().get(run["id"]).log_path
    assert "".join(first + rest) == Path(log_path).read_bytes().decode()  # "\r" kept as written
    assert any("soopervisor: run" in line for line in first + rest)

    # and once more from 0, on the finished run
    ws = await jp_ws_fetch(*API, "runs", run["id"], "log")
    again, end = await read_log(ws)
    assert again == first + rest and end["status"] == "succeeded"

    status, body = await api(jp_fetch, "runs", run["id"])
    assert body["status"] == "succeeded" and body["duration"] > 0
    status, body = await api(jp_fetch, "projects", "proj", "commits")
    assert [c["commit"] for c in body["commits"]] == [run["commit"]]
    status, body = await api(jp_fetch, "projects", "proj", "commits", run["short_commit"])
    names = [f["name"] for f in body["files"]]
    assert "output/data.csv" in names and body["run_id"] == run["id"]

    status, r = await api(jp_fetch, "projects", "proj", "commits", "latest", "files", "output/data.csv")
    assert status == 200 and r.body == stored_bytes(tmp_path, "proj", run["commit"], "output/data.csv", run["id"])
    assert r.body.startswith(b"x\n")
    status, r = await api(jp_fetch, "projects", "proj", "commits", run["commit"], "zip")
    assert zip_names(r.body) == sorted([*names, ".soopervisor/manifest.json", ".soopervisor/soopervisor.log"])

    status, body = await api(jp_fetch, "projects", "proj", "commits", "ffffffff")
    assert status == 404
    assert project.exists()


TICKER = function_task(
    "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.1)"
)


@pytest.mark.docker
@on_loop
async def test_concurrent_runs_are_listed_and_stop_cancels_and_removes_the_container(
    engine, jp_fetch, jp_ws_fetch, jp_root_dir
):
    make_project(jp_root_dir, TICKER, name="ticker")
    ids = []
    for _ in range(2):
        status, run = await api(jp_fetch, "runs", method="POST", body={"path": "ticker"})
        assert status == 201, run
        ids.append(run["id"])
    status, body = await api(jp_fetch, "runs", params={"project": "ticker"})
    assert {r["id"] for r in body["runs"]} == set(ids)
    assert all(r["status"] == "running" for r in body["runs"])

    for run_id in ids:
        # stop once the pipeline's container is ticking
        ws = await jp_ws_fetch(*API, "runs", run_id, "log")
        seen: list[str] = []
        while not any(line.startswith("tick ") for line in seen):
            more, end = await read_log(ws, start=len(seen), stop_after=1)
            assert end is None, "".join(seen + more)[-3000:]
            seen += more
        status, body = await api(jp_fetch, "runs", run_id, "stop", method="POST", body="")
        assert status == 200 and body["status"] == "cancelled", body
        assert not containers_of(engine, run_id)
        # the socket still ends cleanly, with the cancelled run
        _, end = await read_log(ws, start=len(seen))
        assert end["status"] == "cancelled"

        status, body = await api(jp_fetch, "runs", run_id, "stop", method="POST", body="")
        assert status == 200 and body["status"] == "cancelled"  # stopping again changes nothing

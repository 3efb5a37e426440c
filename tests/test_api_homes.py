"""One REST API and log websocket (soopervisor.api), two homes.

The Jupyter extension and ``soopervisor serve`` mount the same handlers, each
with its own auth base. Here: the package stays neutral (no Jupyter import),
Jupyter serves exactly the neutral routes, and a plain tornado home served over
real HTTP on 127.0.0.1 gets the whole API with nothing but an auth base.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket
import yaml

from soopervisor.api.base import ApiError, ApiHandler, LogSocketBase
from soopervisor.api.routes import OPENAPI, ROUTES, api_url, mount, to_regex
from soopervisor.artifacts import write_manifest
from soopervisor.runs import Run, RunStore, now_iso
from soopervisor.service import RunService
from soopervisor.storage import open_storage

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- a tiny home: read for everyone, write for no one ----------------------------------------


def refuse_write(scope: str) -> None:
    if scope != "read":
        raise ApiError(403, f"this home allows read only, not {scope}", "ask for a read")


class ReadOnly(tornado.web.RequestHandler):
    def authorize(self, scope: str) -> None:
        refuse_write(scope)


class ReadOnlySocket(tornado.websocket.WebSocketHandler):
    async def authorize(self, scope: str) -> None:  # a coroutine works as well
        refuse_write(scope)


class AllowAll(tornado.web.RequestHandler):
    def authorize(self, scope: str) -> None:
        pass


@contextlib.asynccontextmanager
async def home(auth_base: type | None, socket_auth_base: type | None, base_url: str = "/") -> AsyncIterator[str]:
    """A plain tornado Application with the API mounted, served by a real HTTPServer; yields its URL."""
    app = tornado.web.Application()
    mount(app, base_url, auth_base=auth_base, socket_auth_base=socket_auth_base,
          settings={"soopervisor_service": RunService(), "soopervisor_root": None})
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    try:
        yield f"127.0.0.1:{sockets[0].getsockname()[1]}{api_url(base_url)}"
    finally:
        server.stop()
        await server.close_all_connections()


async def fetch(url: str, method: str = "GET", body: str | None = None) -> tornado.httpclient.HTTPResponse:
    client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
    try:
        if method == "POST" and body is None:
            body = "{}"
        return await client.fetch(f"http://{url}", method=method, body=body, raise_error=False)
    finally:
        client.close()


def error(r: tornado.httpclient.HTTPResponse, status: int) -> dict[str, Any]:
    """A JSON error answer of ``status``: {"error", "hint"}, never a traceback."""
    assert r.code == status, (r.code, r.body)
    assert r.headers["Content-Type"].startswith("application/json")
    assert b"Traceback" not in r.body
    data = json.loads(r.body)
    assert set(data) >= {"error", "hint"} and data["error"], data
    return data


def finished_run(tmp_path: Path, lines: list[str]) -> Run:
    log = tmp_path / "run.log"
    log.write_text("".join(lines))
    run = Run(project="proj", project_path="/nowhere", commit=COMMIT, dirty=False, mode="sample",
              status="succeeded", started_at=now_iso(), finished_at=now_iso(), exit_code=0,
              log_path=str(log))
    return RunStore().add(run)


async def read_log(ws: tornado.websocket.WebSocketClientConnection) -> tuple[list[str], dict]:
    lines: list[str] = []
    while True:
        msg = await asyncio.wait_for(ws.read_message(), timeout=60)
        assert msg is not None, "closed before the end message"
        m = json.loads(msg)
        if m["type"] == "end":
            assert await asyncio.wait_for(ws.read_message(), timeout=10) is None, "closes after end"
            return lines, m["run"]
        assert m["type"] == "lines" and m["from"] == len(lines), m
        lines += m["lines"]


# -- the package is neutral -----------------------------------------------------------------


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_api_imports_neither_home_and_jupyter_does_not_import_the_server():
    api = loaded_after("import soopervisor.api, soopervisor.api.routes, soopervisor.api.handlers, "
                       "soopervisor.api.websocket")
    assert "soopervisor.api.routes" in api
    for home_module in ("jupyter_server", "soopervisor_jupyter", "soopervisor.server", "jupyter_core"):
        assert home_module not in api, f"soopervisor.api imports {home_module}"
    jupyter = loaded_after("import soopervisor_jupyter, soopervisor_jupyter.server, soopervisor_jupyter.handlers")
    assert "soopervisor.api.routes" in jupyter and "soopervisor_jupyter.server" in jupyter
    assert "soopervisor.server" not in jupyter, "the Jupyter home imports the polling server"


# -- Jupyter serves exactly the neutral routes ------------------------------------------------


def test_jupyter_serves_the_neutral_routes_and_the_openapi_paths():
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.base.websocket import WebSocketMixin
    from soopervisor_jupyter.handlers import JupyterAuth, JupyterSocketAuth
    from soopervisor_jupyter.server import setup_handlers

    class App:
        def __init__(self) -> None:
            self.settings: dict = {"base_url": "/base/"}
            self.rules: list = []

        def add_handlers(self, host: str, rules: list) -> None:
            self.rules += rules

    class ServerApp:
        root_dir = "/tmp"
        web_app = App()

    setup_handlers(ServerApp)
    served = ServerApp.web_app.rules
    assert [p for p, _ in served] == [api_url("/base/", to_regex(t)) for t, _ in ROUTES]
    assert {t for t, _ in ROUTES} == set(yaml.safe_load(OPENAPI.read_text())["paths"])
    for (_, cls), (_, neutral) in zip(served, ROUTES):
        mro = cls.__mro__
        assert mro[1] is neutral, "the neutral handler's methods come first"
        if issubclass(neutral, LogSocketBase):
            # Jupyter's pings and origin check sit between the neutral socket and tornado's
            order = [LogSocketBase, JupyterSocketAuth, WebSocketMixin, tornado.websocket.WebSocketHandler]
        else:
            order = [ApiHandler, JupyterAuth, APIHandler, tornado.web.RequestHandler]
        assert [mro.index(c) for c in order] == sorted(mro.index(c) for c in order), mro
    assert ServerApp.web_app.settings["soopervisor_root"] == str(Path("/tmp").resolve())


# -- a plain tornado home over real HTTP --------------------------------------------------------


def test_a_plain_tornado_home_reads_and_is_refused_writes(tmp_path):
    run = finished_run(tmp_path, ["one\n"])

    async def main() -> None:
        async with home(ReadOnly, ReadOnlySocket) as url:
            r = await fetch(f"{url}/runs")
            assert r.code == 200 and r.headers["Content-Type"].startswith("application/json")
            assert [x["id"] for x in json.loads(r.body)["runs"]] == [run.id]
            r = await fetch(f"{url}/runs/{run.id}")
            assert r.code == 200 and json.loads(r.body)["status"] == "succeeded"
            assert error(await fetch(f"{url}/runs/nope"), 404)["error"]
            refused = error(await fetch(f"{url}/runs/{run.id}/stop", method="POST"), 403)
            assert refused == {"error": "this home allows read only, not write", "hint": "ask for a read"}
            assert RunStore().get(run.id).status == "succeeded", "a refused stop does nothing"

    asyncio.run(main())


def test_without_an_auth_base_every_route_is_refused(tmp_path):
    run = finished_run(tmp_path, ["one\n"])

    async def main() -> None:
        async with home(None, None) as url:
            for method, tail in (("GET", "version"), ("GET", "runs"), ("POST", f"runs/{run.id}/stop")):
                body = error(await fetch(f"{url}/{tail}", method=method), 403)
                assert "no authentication" in body["error"] and body["hint"], body
            with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
                await tornado.websocket.websocket_connect(f"ws://{url}/runs/{run.id}/log")
            assert refused.value.code == 403
            r = await fetch(f"{url}/runs/{run.id}/log")
            assert error(r, 403)["hint"]

    asyncio.run(main())


def test_routes_that_need_a_root_folder_answer_404_with_a_hint_where_there_is_none():
    async def main() -> None:
        async with home(AllowAll, ReadOnlySocket, base_url="/prefix/") as url:
            assert url.endswith("/prefix/soopervisor/api")
            for method, tail in (("GET", "validate?path="), ("POST", "runs")):
                body = error(await fetch(f"{url}/{tail}", method=method), 404)
                assert "not on this server" in body["error"] and body["hint"], body
            r = await fetch(f"{url}/runs")  # listing runs needs no root
            assert r.code == 200 and json.loads(r.body) == {"runs": []}

    asyncio.run(main())


def test_the_log_websocket_through_a_plain_tornado_home(tmp_path):
    expected = [f"line {i}\n" for i in range(2500)]
    run = finished_run(tmp_path, expected)

    async def main() -> None:
        async with home(ReadOnly, ReadOnlySocket) as url:
            ws = await tornado.websocket.websocket_connect(f"ws://{url}/runs/{run.id}/log")
            lines, end = await read_log(ws)
            assert lines == expected and end["id"] == run.id and end["status"] == "succeeded"
            assert "log_path" not in end
            # refused before the upgrade, as JSON: an unknown run, a bad ?from=
            for tail, status in (("runs/nope/log", 404), (f"runs/{run.id}/log?from=x", 400)):
                r = await fetch(f"{url}/{tail}")
                assert error(r, status)["error"]

    asyncio.run(main())


def test_a_product_downloads_through_a_plain_tornado_home(tmp_path):
    src = tmp_path / "set"
    (src / "files").mkdir(parents=True)
    (src / "files" / "out.csv").write_bytes(b"a,b\n1,2\n")
    (src / "soopervisor.log").write_bytes(b"log\n")
    write_manifest(src, project="proj", commit=COMMIT, run_id="r1", mode="sample", status="succeeded",
                   started_at=now_iso(), finished_at=now_iso())
    open_storage().put_set("proj", COMMIT, "r1", src)

    async def main() -> None:
        async with home(ReadOnly, ReadOnlySocket) as url:
            r = await fetch(f"{url}/projects/proj/commits/latest/files/out.csv")
            assert r.code == 200 and r.body == b"a,b\n1,2\n"
            assert r.headers["Content-Type"] == "text/csv"
            assert re.search(r'attachment; filename="out.csv"', r.headers["Content-Disposition"])
            commits = json.loads((await fetch(f"{url}/projects/proj/commits")).body)["commits"]
            assert [c["commit"] for c in commits] == [COMMIT]

    asyncio.run(main())

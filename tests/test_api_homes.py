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


def test_a_home_without_a_root_offers_no_remotes():
    """soopervisor serve has no user's remotes to offer: GET /remotes is a 404 that says so."""
    async def main() -> None:
        async with home(AllowAll, ReadOnlySocket) as url:
            body = error(await fetch(f"{url}/remotes"), 404)
            assert "not on this server" in body["error"] and body["hint"]

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


# -- comparing sets, table pages and ?storage= in both homes ------------------------------------------

OTHER = "fedcba9876543210fedcba9876543210fedcba98"
#: a storage URL carrying a password: it must reach no answer and no log line
SECRET_STORAGE = "file://reader:hunter2secret@elsewhere.example/store"


def two_sets(tmp_path: Path, storage: str | None = None) -> None:
    """Set A (COMMIT) and set B (OTHER) of project proj: changed, added, removed, unchanged files."""
    from tests.test_compare import executed, store_set

    nb_a = executed([("code", "print(1)")])
    nb_b = executed([("code", "print(2)"), ("markdown", "new")])
    store_set(tmp_path, COMMIT, {"out/t.txt": b"one\ntwo\n", "out/s.csv": b"k,v\n1,a\n2,b\n", "gone.txt": b"g\n",
                                 "same.bin": b"\0", "n.ipynb": nb_a, "x\udcff.txt": b"raw\n",
                                 "bad.parquet": b"PAR1 not parquet", "big.txt": b"small\n", "t\udcff.csv": b"c\n7\n",
                                 "z.json": b'{"m": {"auc": 0.8}, "old": 1}'},
              storage=storage)
    store_set(tmp_path, OTHER, {"out/t.txt": b"one\n2\n", "out/s.csv": b"k,v\n1,a\n2,c\n", "new.txt": b"n\n",
                                "same.bin": b"\0", "n.ipynb": nb_b, "x\udcff.txt": b"raw!\n",
                                "bad.parquet": b"PAR1 not parquet", "big.txt": b"y" * 5_000_001, "t\udcff.csv": b"c\n7\n",
                                "z.json": b'{"m": {"auc": 0.9}, "new": [1]}'},
              run_id="r2", storage=storage)


#: every route over stored sets, each of which takes ?storage= (Jupyter) or refuses it (serve)
ARTIFACT_ROUTES = [
    "projects/proj/commits",
    f"projects/proj/commits/{COMMIT}",
    f"projects/proj/commits/{COMMIT}/files/out/t.txt",
    f"projects/proj/commits/{COMMIT}/zip",
    f"projects/proj/commits/{COMMIT}/table/out/s.csv",
    f"projects/proj/commits/{COMMIT}/compare/{OTHER}",
    f"projects/proj/commits/{COMMIT}/compare/{OTHER}/files/out/t.txt",
]


async def check_compare_and_table_routes(get) -> None:
    """The shapes and the bad input of the compare and table routes; ``get(tail)`` -> (status, JSON)."""
    base = f"projects/proj/commits/{COMMIT[:7]}"
    status, body = await get(f"{base}/compare/{OTHER}")
    assert status == 200, body
    assert body["counts"] == {"added": 1, "removed": 1, "changed": 6, "unchanged": 3}
    assert (body["a"]["commit"], body["b"]["commit"], body["b"]["run_id"]) == (COMMIT, OTHER, "r2")
    assert [(f["name"], f["status"]) for f in body["files"]][:3] == [
        ("big.txt", "changed"), ("n.ipynb", "changed"), ("out/s.csv", "changed")]
    kinds = {f["name"]: f["kind"] for f in body["files"]}
    assert (kinds["n.ipynb"], kinds["z.json"]) == ("notebook", "json")

    status, d = await get(f"{base}/compare/{OTHER}/files/out/t.txt")
    assert status == 200 and (d["name"], d["status"], d["kind"]) == ("out/t.txt", "changed", "text")
    assert [(r["op"], r["a"], r["b"]) for r in d["diff"]["rows"]] == [("equal", "one", "one"), ("replace", "two", "2")]
    status, d = await get(f"{base}/compare/{OTHER}/files/n.ipynb")
    assert [c["status"] for c in d["diff"]["cells"]] == ["modified", "added"]
    assert d["diff"]["cells"][0]["outputs_b"] == ["2\n"]
    status, d = await get(f"{base}/compare/{OTHER}/files/out/s.csv")
    assert d["diff"]["columns_changed"] == ["v"] and d["diff"]["examples"] == [{"row": 1, "column": "v", "a": "b", "b": "c"}]
    status, d = await get(f"{base}/compare/{OTHER}/files/z.json")
    assert status == 200 and d["diff"]["keys"] == {"changed": [{"key": "m.auc", "a": "0.8", "b": "0.9"}],
                                                   "added": [{"key": "new", "b": "[1]"}],
                                                   "removed": [{"key": "old", "a": "1"}]}
    assert d["diff"]["rows"][0]["op"] == "replace"  # and its lines, as for a text
    status, d = await get(f"{base}/compare/{OTHER}/files/big.txt")
    assert status == 200 and d["diff"] == {"too_large": True}
    status, d = await get(f"{base}/compare/{OTHER}/files/x%FF.txt")  # a name that is not UTF-8
    assert status == 200 and d["name"] == "x\udcff.txt" and d["diff"]["rows"][0]["b"] == "raw!"
    status, d = await get(f"{base}/compare/{OTHER}/files/new.txt?run=r1&other_run=r2")
    assert status == 200 and d["status"] == "added" and d["diff"]["rows"][0]["op"] == "insert"

    status, page = await get(f"{base}/table/out/s.csv?offset=1&limit=1")
    assert status == 200 and page == {"name": "out/s.csv", "format": "csv", "total_rows": 2, "offset": 1, "limit": 1,
                                      "columns": [{"name": "k", "type": "int64"}, {"name": "v", "type": "string"}],
                                      "rows": [[2, "b"]]}

    status, page = await get(f"{base}/table/t%FF.csv")  # a name that is not UTF-8
    assert status == 200 and page["name"] == "t\udcff.csv" and page["rows"] == [[7]]

    for tail, code in ((f"{base}/compare/deadbeef", 404), ("projects/ghost/commits/latest/compare/latest", 404),
                       (f"{base}/compare/{OTHER}/files/nowhere.txt", 404),
                       (f"{base}/compare/{OTHER}/files/..%2f..%2fetc%2fpasswd", 400),
                       (f"{base}/compare/{OTHER}?other_mode=quick", 400),
                       (f"{base}/compare/{OTHER}/files/bad.parquet", 400),
                       (f"{base}/table/bad.parquet", 400), (f"{base}/table/out/t.txt", 400),
                       (f"{base}/table/nope.csv", 404), (f"{base}/table/out/s.csv?limit=0", 400),
                       (f"{base}/table/out/s.csv?offset=x", 400)):
        status, err = await get(tail)
        assert status == code, (tail, status, err)
        assert err["error"] and (err["hint"] or code != 404), (tail, err)
        assert "Traceback" not in json.dumps(err)
    status, err = await get(f"{base}/table/bad.parquet")
    assert "bad.parquet is not a readable Parquet file" in err["error"]
    status, err = await get(f"{base}/compare/deadbeef")
    assert "deadbeef" in err["error"] and err["hint"]


def test_compare_and_table_routes_in_a_home_that_takes_no_storage(tmp_path):
    """``soopervisor serve``'s rule (no soopervisor_run_overrides): every artifact route refuses ?storage=."""
    two_sets(tmp_path)

    async def main() -> None:
        async with home(AllowAll, ReadOnlySocket) as url:
            async def get(tail: str) -> tuple[int, Any]:
                r = await fetch(f"{url}/{tail}")
                return r.code, json.loads(r.body)

            await check_compare_and_table_routes(get)
            for tail in ARTIFACT_ROUTES:
                sep = "&" if "?" in tail else "?"
                body = error(await fetch(f"{url}/{tail}{sep}storage=/tmp"), 400)
                assert "does not take 'storage'" in body["error"] and body["hint"], tail

    asyncio.run(main())


def test_the_real_soopervisor_serve_compares_and_refuses_storage_without_logging_it(tmp_path):
    import urllib.parse

    from tests.server.helpers import server_yaml
    from tests.server.test_app import InProcess, Remote, tokens

    remote = Remote(tmp_path)
    config = server_yaml(tmp_path, [{"url": remote.url, "name": "sales", "first_sight": "none"}])
    two_sets(tmp_path, storage=str(tmp_path / "artifacts"))
    token = tokens(config)["read"]
    server = InProcess(config)
    try:
        async def get(tail: str, token: str | None = token) -> tuple[int, Any]:
            status, body, _ = await asyncio.to_thread(server.http.request, "GET", f"/soopervisor/api/{tail}", token)
            return status, body

        asyncio.run(check_compare_and_table_routes(get))
        for tail in ARTIFACT_ROUTES:
            assert asyncio.run(get(tail, token=None))[0] == 401, tail
        quoted = urllib.parse.quote(SECRET_STORAGE, safe="")
        for tail in ARTIFACT_ROUTES:
            status, body = asyncio.run(get(f"{tail}?storage={quoted}"))
            assert status == 400 and "does not take 'storage'" in body["error"], (tail, body)
        logged = "\n".join(server.said)
        assert logged.count("http 400 GET") >= len(ARTIFACT_ROUTES), "the refused requests are logged"
        assert "hunter2secret" not in logged
    finally:
        server.close()


def test_jupyter_lists_compares_and_pages_another_storage_and_masks_its_credentials(tmp_path):
    """The sidebar's "Storage" setting: the commit routes read ``?storage=`` in Jupyter (a real server)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from tests.lab_browser import JupyterLab
    from tests.test_compare import store_set

    other_storage = tmp_path / "team-storage"
    two_sets(tmp_path)                                                      # the server's own storage
    store_set(tmp_path, COMMIT, {"team.csv": b"a\n1\n"}, run_id="t1", storage=str(other_storage))
    store_set(tmp_path, OTHER, {"team.csv": b"a\n2\n"}, run_id="t2", storage=str(other_storage))
    (tmp_path / "root").mkdir()
    lab = JupyterLab(tmp_path / "root").start()
    try:
        async def get(tail: str, token: str | None = lab.token) -> tuple[int, Any]:
            def go() -> tuple[int, Any]:
                req = urllib.request.Request(f"{lab.url}/soopervisor/api/{tail}",
                                             headers={"Authorization": f"token {token}"} if token else {})
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        return r.status, json.loads(r.read())
                except urllib.error.HTTPError as e:
                    return e.code, json.loads(e.read())
            return await asyncio.to_thread(go)

        asyncio.run(check_compare_and_table_routes(get))
        for tail in ARTIFACT_ROUTES:
            status, body = asyncio.run(get(tail, token=None))
            assert status == 403 and body["error"], (tail, body)
        storage = "storage=" + urllib.parse.quote(str(other_storage), safe="")
        status, body = asyncio.run(get(f"projects/proj/commits?{storage}"))
        assert status == 200 and [c["run_id"] for c in body["commits"]] == ["t2", "t1"]
        status, body = asyncio.run(get(f"projects/proj/commits/{COMMIT}/compare/{OTHER}?{storage}"))
        assert [(f["name"], f["status"]) for f in body["files"]] == [("team.csv", "changed")]
        status, page = asyncio.run(get(f"projects/proj/commits/{OTHER}/table/team.csv?{storage}"))
        assert status == 200 and page["rows"] == [[2]]

        secret = "storage=" + urllib.parse.quote(SECRET_STORAGE, safe="")
        for tail in ARTIFACT_ROUTES:
            status, body = asyncio.run(get(f"{tail}{'&' if '?' in tail else '?'}{secret}"))
            assert status == 400 and "another host" in body["error"], (tail, body)
            assert "hunter2secret" not in json.dumps(body) and "***" in body["error"], body
        lab.stop()
        log = lab.log_path.read_text(errors="replace")
        assert "commits" in log and "storage=" in log, "the refused requests are in the server's log"
        assert "hunter2secret" not in log
    finally:
        lab.stop()

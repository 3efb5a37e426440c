"""`soopervisor serve` spreading its queue over two real engines: the main dockerd and the second
dockerd on loopback TCP with TLS (tests/engines.py, the session's ``tls_engine``).

The TLS engine is reached through a TCP relay of the test's own, so that the test can make it
stop answering (connection refused, every open connection cut) and answer again, while the
daemon and its containers go on as a real engine that lost its network would. The engines
have one slot each: two commits queued run at the same time, one on each; with the TLS engine
down its slot takes no job (no attempt spent) and the main engine keeps running the queue; lost
in the middle of a run, the job goes back to the queue and runs on the main engine, and what the
cut-off run left on the TLS engine is removed once it answers again; a server killed mid-run and
started again reaps (adopts) the runs on both engines, and only there.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from soopervisor.runs import Run, RunStore, now_iso, this_host
from tests.projects import function_task
from tests.server.helpers import server_yaml
from tests.server.test_serve_faults import Remote, Server, jobs, read_db, repo_entry

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("tls-engine")]

SLEEPER = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")
SHORT = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(8)\nprint('WOKE', flush=True)")


class Relay:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target; ``cut()`` refuses and drops every connection,
    ``restore()`` listens again on the same port."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return server.getsockname()[1]

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._server is not None:
            # shut down first: a close alone leaves the socket listening while the accept thread waits in it
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def restore(self) -> None:
        self._listen(self.port)


@pytest.fixture
def relay(tls_engine):
    r = Relay(tls_engine.port)
    yield r
    r.cut()


def write_config(tmp_path: Path, tls_engine, relay: Relay, executors: list[str], repos: list[Remote],
                 **top) -> Path:
    """server.yaml serving ``repos`` on ``executors`` of executors.yaml beside it (``main``: the main
    engine; ``tls``: the TLS engine through the relay; one slot each)."""
    pki = tls_engine.pki
    (tmp_path / "executors.yaml").write_text(yaml.safe_dump({"executors": {
        "main": {"type": "docker", "slots": 1},
        "tls": {"type": "docker", "host": f"tcp://127.0.0.1:{relay.port}", "slots": 1,
                "tls": {"ca": str(pki.ca), "cert": str(pki.cert), "key": str(pki.key)}},
    }}))
    return server_yaml(tmp_path, [repo_entry(r) for r in repos], executors=executors,
                       executors_file="executors.yaml", **top)


def runs(home: Path) -> dict[str, dict]:
    rows = read_db(home / "runs.sqlite", "SELECT * FROM runs")
    return {r["id"]: r for r in rows}


def labelled(client, run_id: str) -> list:
    # ignore_removed: a container the server removes between the list and its inspection is gone, not an error
    return client.containers.list(all=True, filters={"label": f"soopervisor.run={run_id}"}, ignore_removed=True)


def api(server: Server, path: str, token: str):
    req = urllib.request.Request(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read().decode()
    return json.loads(body) if path != "/metrics" else body


def read_token(config: Path) -> str:
    from soopervisor.server import config as server_config
    from soopervisor.server.tokens import TokenStore

    _, secret = TokenStore(server_config.load(config).database).create("test")
    return secret


def test_two_engines_run_two_commits_at_once_and_a_restart_adopts_on_both(tmp_path, engine, home, tls_engine,
                                                                         remote_env, relay, servers):
    a, b = Remote(tmp_path, "alpha", SLEEPER), Remote(tmp_path, "beta", SLEEPER)
    config = write_config(tmp_path, tls_engine, relay, ["main", "tls"], [a, b], max_attempts=1)
    db = tmp_path / "server.sqlite"
    env = {"SOOPERVISOR_LEASE_SECONDS": "3"}  # the killed server's job leases run out soon
    token = read_token(config)
    # a run of the same store on an engine the server does not use, its owner dead: not the server's to reap
    dead = subprocess.Popen(["true"])
    dead.wait()
    foreign = RunStore().add(Run(project="elsewhere", project_path=str(tmp_path), commit="c" * 40, dirty=False,
                                 mode="sample", status="running", started_at=now_iso(), owner_host=this_host(),
                                 owner_pid=dead.pid, lease_until="2999-01-01T00:00:00+00:00", engine="gone-box"))

    server = Server(config, env=env)
    servers.append(server)
    remote = tls_engine.client()

    def both_sleeping() -> bool:
        js = jobs(db)
        if len(js) != 2 or not all(j["run_id"] for j in js):
            return False
        return all(Path(r["log_path"] or "/nonexistent").is_file() and "SLEEPING" in Path(r["log_path"]).read_text()
                   for r in (runs(home).get(j["run_id"], {"log_path": None}) for j in js))

    server.wait_for("both commits running", both_sleeping, timeout=300)
    by_engine = {runs(home)[j["run_id"]]["engine"]: j["run_id"] for j in jobs(db)}
    assert set(by_engine) == {"main", "tls"}, by_engine  # one on each engine, at the same time
    assert [c.status for c in labelled(engine, by_engine["main"])] == ["running"]
    assert [c.status for c in labelled(remote, by_engine["tls"])] == ["running"]
    assert not labelled(engine, by_engine["tls"]) and not labelled(remote, by_engine["main"])
    assert runs(home)[by_engine["tls"]]["executor"] == f"docker at tcp://127.0.0.1:{relay.port}"
    assert sum(line.startswith("engine main: runs job ") for line in server.lines) == 1
    assert sum(line.startswith("engine tls: runs job ") for line in server.lines) == 1

    # the API, the metrics and readiness say each engine's busy slots
    found = {e["name"]: e for e in api(server, "/soopervisor/api/engines", token)["engines"]}
    assert [found[n]["busy"] for n in ("main", "tls")] == [1, 1] and found["tls"]["slots"] == 1
    assert found["tls"]["held"] is False and found["tls"]["where"].startswith("docker at tcp://127.0.0.1:")
    metrics = api(server, "/metrics", token)
    assert 'soopervisor_engine_busy{engine="main"} 1.0' in metrics
    assert 'soopervisor_engine_busy{engine="tls"} 1.0' in metrics
    assert 'soopervisor_engine_held{engine="tls"} 0.0' in metrics
    with urllib.request.urlopen(f"{server.url}/readyz", timeout=30) as r:
        ready = json.loads(r.read())
    assert ready["ready"] and [e["answers"] for e in ready["checks"]["engines"]["engines"]] == [True, True], ready

    # killed mid-run; started again, the server adopts: both runs interrupted, their containers removed
    server.kill()
    assert labelled(engine, by_engine["main"]) and labelled(remote, by_engine["tls"])
    again = Server(config, env=env)
    servers.append(again)
    again.wait_for("both runs reaped", lambda: all(runs(home)[i]["status"] == "interrupted"
                                                   for i in by_engine.values()), timeout=120)
    again.wait_for("the jobs' leases reaped",
                   lambda: [j["state"] for j in jobs(db)] == ["interrupted", "interrupted"], timeout=60)
    assert not labelled(engine, by_engine["main"]), "the run's container was left on the main engine"
    assert not labelled(remote, by_engine["tls"]), "the run's container was left on the TLS engine"
    for name, run_id in by_engine.items():
        run = runs(home)[run_id]
        assert run["engine"] == name and "is gone" in run["error"], run
    assert runs(home)[foreign.id]["status"] == "running"  # not on the server's engines: left alone
    assert again.stop() == 0
    assert "Traceback" not in server.output + again.output
    assert runs(home)[foreign.id]["status"] == "running"
    # a reader without a scope (the CLI) does reap it: the server left it by choice
    from tests.conftest import cli

    (left,) = [r for r in json.loads(cli("runs", "--json", check=0).stdout) if r["id"] == foreign.id]
    assert left["status"] == "interrupted", left


def test_an_engine_down_or_lost_takes_no_job_while_the_other_runs_the_queue(tmp_path, engine, home, tls_engine, remote_env,
                                                                    relay, servers):
    a, b = Remote(tmp_path, "alpha", SHORT), Remote(tmp_path, "beta", SHORT)
    # tls first: on a tie it would get the first job, had it answered
    config = write_config(tmp_path, tls_engine, relay, ["tls", "main"], [a, b])
    db = tmp_path / "server.sqlite"
    token = read_token(config)
    relay.cut()
    server = Server(config)
    servers.append(server)

    server.wait_for("one job running", lambda: len(jobs(db)) == 2 and any(j["run_id"] for j in jobs(db)))
    first = next(j for j in jobs(db) if j["run_id"])
    second = next(j for j in jobs(db) if not j["run_id"])
    assert runs(home)[first["run_id"]]["engine"] == "main"
    held = [line for line in server.lines if "engine tls" in line and "held" in line]
    assert held and "connection refused" in held[0], server.output
    # read while the first job still sleeps: the other waits queued, no attempt spent on the engine that is down
    assert second["state"] == "queued" and second["attempts"] == 0, second
    found = {e["name"]: e for e in api(server, "/soopervisor/api/engines", token)["engines"]}
    assert found["tls"]["held"] is True and found["tls"]["reason"] == "connection refused", found
    assert found["tls"]["busy"] == 0 and found["main"]["busy"] == 1 and found["main"]["held"] is False
    assert 'soopervisor_engine_held{engine="tls"} 1.0' in api(server, "/metrics", token)
    with urllib.request.urlopen(f"{server.url}/readyz", timeout=30) as r:  # one engine answers: ready
        ready = json.loads(r.read())
    assert ready["ready"] and "tls: connection refused" in ready["checks"]["engines"]["error"], ready

    # the engine answers again: its slot takes the waiting job while the main engine is still busy
    relay.restore()

    def job(j: dict) -> dict:
        return next(x for x in jobs(db) if x["id"] == j["id"])

    def sleeping(run_id: str | None) -> bool:
        log = (runs(home).get(run_id) or {}).get("log_path") if run_id else None
        return bool(log) and Path(log).is_file() and "SLEEPING" in Path(log).read_text()

    server.wait_for("the waiting job running on the engine that came back", lambda: sleeping(job(second)["run_id"]),
                    timeout=180)
    cut_off = runs(home)[job(second)["run_id"]]
    assert cut_off["engine"] == "tls" and job(second)["attempts"] == 1, cut_off
    assert any(re.search(r"^engine tls: answers again", line) for line in server.lines), server.output
    assert labelled(tls_engine.client(), cut_off["id"])

    # lost in the middle of that run: the engine is held again, the job queued again and run on the other one
    relay.cut()
    server.wait_for("both jobs' ends", lambda: [job(first)["state"], job(second)["state"]] == ["succeeded"] * 2,
                    timeout=180)
    first_run, cut_off = runs(home)[job(first)["run_id"]], runs(home)[cut_off["id"]]
    assert cut_off["started_at"] < first_run["finished_at"]  # it ran beside the first, not after it
    assert cut_off["status"] == "failed" and "engine" in cut_off["error"], cut_off
    again = runs(home)[job(second)["run_id"]]
    assert again["id"] != cut_off["id"] and again["engine"] == "main" and job(second)["attempts"] == 2, again
    assert sum(bool(re.search(r"^engine tls \(.*\): held", line)) for line in server.lines) == 2, server.output
    # back once more: what the cut-off run left there (it could not remove its container) is removed
    relay.restore()
    server.wait_for("the cut-off run's container removed", lambda: not labelled(tls_engine.client(), cut_off["id"]),
                    timeout=60)
    assert server.stop() == 0
    assert "Traceback" not in server.output


@pytest.fixture
def servers():
    """Servers a test started, killed at its end even when it fails."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.kill()


def test_cache_and_image_commands_look_into_the_engine_named(tmp_path, engine, home, tls_engine, remote_env):
    import uuid

    from tests.conftest import cli

    folder = Path(os.environ["SOOPERVISOR_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    pki = tls_engine.pki
    (folder / "executors.yaml").write_text(yaml.safe_dump({"executors": {"tls-box": {
        "host": tls_engine.host, "tls": {"ca": str(pki.ca), "cert": str(pki.cert), "key": str(pki.key)}}}}))
    tag = f"tls-only-{uuid.uuid4().hex[:8]}"
    only_there = f"soopervisor-env:{tag}"  # an image the TLS engine has, not the main one
    remote = tls_engine.client()
    assert remote.images.get(remote_env).tag("soopervisor-env", tag)
    try:
        def listed(*args: str, env: dict | None = None) -> set[str]:
            return {e["image"] for e in json.loads(cli("cache", "list", "--json", *args, env=env, check=0).stdout)}

        assert only_there in listed("--executor", "tls-box")
        assert only_there not in listed()  # the default engine: the main one
        assert only_there in listed(env={"SOOPERVISOR_EXECUTOR": "tls-box"})  # the configured default
        shown = json.loads(cli("image", "show", "--image", only_there, "--executor", "tls-box", "--json",
                               check=0).stdout)
        assert shown["in_engine"] is True
        assert json.loads(cli("image", "show", "--image", only_there, "--json", check=0).stdout)["in_engine"] is False
        dry = cli("cache", "prune", "--executor", "tls-box", "--dry-run", check=0).stdout
        assert f"would remove {only_there}" in dry
        bad = cli("cache", "list", "--executor", "nope", check=2)
        assert "no executor named 'nope' (--executor)" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        remote.images.remove(only_there)

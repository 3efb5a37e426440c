"""A team server as a remote: soopervisor.remotes.server.ServerRemote against the real
`soopervisor serve` on 127.0.0.1, a real bare git remote the local clone pushes to, and real
Docker where a run runs.

The client queues a pushed commit (POST /repositories/{r}/runs), follows its job to its run,
the run's log over the websocket and its fields; it refuses what is not pushed (locally, and
the server's 409), a wrong or read-only token, a project the server does not serve, and says
when the server is down. The sink here records what a run record would get.
"""
from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from soopervisor.remotes.base import FIELDS, RemoteRefused, RemoteUnavailable
from soopervisor.remotes.server import ServerRemote, normalize_url
from tests.conftest import cli, free_port
from tests.projects import VALID, commit_all, function_task, git, write
from tests.server.helpers import server_yaml
from tests.server.test_app import InProcess, Remote, Served, tokens, wait_for, websocket_lines

#: the secret the served repository's runs get (server.yaml `secrets: [DB_PASSWORD]`)
SECRET = "hunter2-s3cr3t-value"


def task(pause: float = 0) -> dict[str, str]:
    """A one-task pipeline: numbered lines, the repository's secret printed, then a pause."""
    return function_task("import time\nfor i in range(5):\n    print(f'line {i}', flush=True)\n"
                         "print('the password is', os.environ['DB_PASSWORD'], flush=True)\n"
                         f"time.sleep({pause})\nprint('done', flush=True)")


class Recorder:
    """A sink that keeps what a run record would: the lines, the fields as they changed, the ref."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self.fields: dict[str, Any] = {}
        self.refs: dict[str, Any] = {}
        self.lock = threading.Lock()

    def lines(self, lines: list[str]) -> None:
        assert all(line.endswith("\n") for line in lines)
        with self.lock:
            self.log.extend(lines)

    def update(self, **fields: Any) -> None:
        assert set(fields) <= set(FIELDS), fields
        with self.lock:
            self.updates.append(fields)
            self.fields.update(fields)

    def ref(self, **changes: Any) -> None:
        with self.lock:
            self.refs.update(changes)


def run_token(config: Path, name: str = "alice") -> str:
    return cli("serve", "--config", str(config), "token", "create", name, "--scope", "run", check=0).stdout.strip()


def served_config(tmp_path: Path, remote: Remote, **extra: Any) -> Path:
    """server.yaml serving the remote's project, polling a branch nobody pushes to: every run here
    comes from the client, none from a poll."""
    return server_yaml(tmp_path, [{"url": remote.url, "name": "sales", "branches": ["release"],
                                   "secrets": ["DB_PASSWORD"], **extra}])


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path, {**VALID, **task()})


@pytest.fixture
def config(tmp_path: Path, remote: Remote) -> Path:
    return served_config(tmp_path, remote)


@pytest.fixture
def server(config: Path) -> Any:
    served = Served(config, env={"DB_PASSWORD": SECRET})
    yield served
    served.stop()


def follow_in_thread(client: ServerRemote, ref: dict, start: int, sink: Recorder,
                     stop: threading.Event) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(client.follow(ref, start, sink, stop)), daemon=True)
    thread.start()
    return thread, result


# -- the whole way, with Docker ---------------------------------------------------------------------


@pytest.mark.docker
def test_a_pushed_commit_runs_on_the_server_and_is_followed_to_its_end(tmp_path, engine, remote, config, server):
    client = ServerRemote("team", server.url, run_token(config))
    commit = remote.head()
    submitted = client.submit(repo_root=str(remote.work), project=".", commit=commit, mode="sample")
    assert submitted.ref == {"job": submitted.ref["job"], "repository": "sales", "run": None}
    assert submitted.describe == f"server team ({server.url})" and submitted.storage_url is None

    sink, stop = Recorder(), threading.Event()
    assert client.follow(submitted.ref, 0, sink, stop) is True
    assert sink.fields["status"] == "succeeded", (sink.fields, "".join(sink.log), server.output)
    assert sink.updates[-1]["status"] == "succeeded"  # the terminal status comes last, after every line
    assert sink.fields["exit_code"] == 0 and sink.fields["tasks_done"] == sink.fields["tasks_total"] == 1
    assert sink.fields["storage_url"] and sink.fields["started_at"] and sink.fields["finished_at"]
    run_id = sink.refs["run"]
    # the same lines as the server's own log, in order, each once
    status, body = server.http.get(f"/soopervisor/api/runs/{run_id}", run_token(config, "reader"))
    assert status == 200 and body["status"] == "succeeded" and body["commit"] == commit
    messages, _ = websocket_lines(server.url, run_id, headers={"Authorization": f"Bearer {run_token(config, 'b')}"})
    assert sink.log == [line for m in messages if m["type"] == "lines" for line in m["lines"]]
    printed = [line.strip() for line in sink.log if line.strip().startswith("line ")]
    assert printed == [f"line {i}" for i in range(5)]
    # the repository's secret reached the task, and only *** reached the log
    said = next(line for line in sink.log if "the password is" in line)
    assert "***" in said and SECRET not in "".join(sink.log)
    assert SECRET not in repr(sink.updates)

    # following again from a line in the middle (a kernel restarted) gives exactly the rest
    middle = len(sink.log) // 2
    again = Recorder()
    assert client.follow({**submitted.ref, "run": run_id}, middle, again, threading.Event()) is True
    assert again.log == sink.log[middle:] and again.fields["status"] == "succeeded"
    # and from the job alone (the run learnt again), from the start
    whole = Recorder()
    assert client.follow(submitted.ref, 0, whole, threading.Event()) is True
    assert whole.log == sink.log and whole.refs["run"] == run_id


@pytest.mark.docker
@pytest.mark.parametrize("known", ["run", "job"])
def test_a_running_run_is_cancelled_at_once_and_a_second_ask_follows_the_same_job(
        tmp_path, engine, remote, config, known):
    # a lease of 10 minutes: a cancel that waited for the worker's next renewal would leave the run running
    served = Served(config, env={"DB_PASSWORD": SECRET, "SOOPERVISOR_LEASE_SECONDS": "600"})
    try:
        client = ServerRemote("team", served.url, run_token(config))
        reader = run_token(config, "reader")
        write(remote.work, task(pause=600))
        commit = commit_all(remote.work, "a long task")
        git(remote.work, "push", "-q", "origin", "HEAD:main")

        submitted = client.submit(repo_root=str(remote.work), project=".", commit=commit, mode="sample")
        sink, stop = Recorder(), threading.Event()
        thread, result = follow_in_thread(client, submitted.ref, 0, sink, stop)
        wait_for("the task's first lines", lambda: any("the password is" in line for line in sink.log), 600)
        assert sink.fields["status"] == "running"
        run_id = sink.refs["run"]

        # asked again while it runs: the same job (200), its run known already
        again = client.submit(repo_root=str(remote.work), project=".", commit=commit, mode="sample")
        assert again.ref["job"] == submitted.ref["job"] and again.ref["run"] == run_id

        # by the run (POST /runs/{id}/stop) or, before the run was known, by the job (POST /queue/{id}/cancel):
        # either way the run has ended when the answer comes
        client.cancel({**submitted.ref, "run": run_id} if known == "run" else submitted.ref)
        status, body = served.http.get(f"/soopervisor/api/runs/{run_id}", reader)
        assert status == 200 and body["status"] == "cancelled", body
        thread.join(120)
        assert not thread.is_alive() and result == [True]
        assert sink.fields["status"] == "cancelled", sink.fields
        assert not any(line.strip() == "done" for line in sink.log)
        status, body = served.http.get(f"/soopervisor/api/queue/{submitted.ref['job']}", reader)
        assert status == 200 and body["job"]["state"] == "cancelled" and body["job"]["run_id"] == run_id
    finally:
        served.stop()


def test_a_job_cancelled_before_its_run_started_ends_the_record(config, remote):
    # the server's API and poll thread without its worker: a queued job stays queued
    server = InProcess(config, work=False)
    try:
        client = ServerRemote("team", server.url, run_token(config))
        submitted = client.submit(repo_root=str(remote.work), project=".", commit=remote.head(), mode="full")
        sink, stop = Recorder(), threading.Event()
        thread, result = follow_in_thread(client, submitted.ref, 0, sink, stop)
        wait_for("the follower to see the job queued", lambda: sink.fields.get("status") == "queued")

        client.cancel(submitted.ref)
        thread.join(60)
        assert not thread.is_alive() and result == [True]
        assert sink.fields["status"] == "cancelled" and sink.fields["error"] == "cancelled by request"
        assert sink.fields["finished_at"] and sink.log == [] and "run" not in sink.refs
        # a cancel of what has ended is no error; a stop flag ends a follower at once, with False
        client.cancel(submitted.ref)
        stopped = threading.Event()
        stopped.set()
        other = client.submit(repo_root=str(remote.work), project=".", commit=remote.head(), mode="sample")
        assert other.ref["job"] != submitted.ref["job"]
        assert client.follow(other.ref, 0, Recorder(), stopped) is False
    finally:
        server.close()


class Forwarder:
    """A TCP forwarder on 127.0.0.1 in front of the server whose connections the test cuts (a proxy restarting,
    a laptop changing networks), so the follower must connect again and resume."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.requests: list[str] = []  # the first line of what each connection sent first
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, a is client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, asking: bool) -> None:
        try:
            while data := src.recv(65536):
                if asking:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                    asking = False
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Cut every connection open now (new ones still go through)."""
        with self.lock:
            cut, self.open = self.open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.mark.docker
def test_connections_cut_mid_run_are_resumed_without_a_line_lost_or_twice(tmp_path, engine, remote, config, server):
    write(remote.work, function_task("import time\nfor i in range(40):\n    print(f'line {i}', flush=True)\n"
                                     "    time.sleep(0.1)"))
    commit = commit_all(remote.work, "a steady task")
    git(remote.work, "push", "-q", "origin", "HEAD:main")
    forwarder = Forwarder(server.url)
    try:
        client = ServerRemote("team", forwarder.url, run_token(config))
        submitted = client.submit(repo_root=str(remote.work), project=".", commit=commit, mode="sample")
        sink = Recorder()
        thread, result = follow_in_thread(client, submitted.ref, 0, sink, threading.Event())
        for n in (3, 20):  # cut twice while the task prints
            wait_for(f"line {n}", lambda n=n: any(line.strip() == f"line {n}" for line in sink.log), 600)
            forwarder.cut()
        thread.join(300)
        assert not thread.is_alive() and result == [True]
    finally:
        forwarder.close()
    assert sink.fields["status"] == "succeeded", sink.fields
    resumed = [r for r in forwarder.requests if "/log?from=" in r and "/log?from=0 " not in r]
    assert len(resumed) >= 2, forwarder.requests  # the log's connection was opened again after each cut
    messages, _ = websocket_lines(server.url, sink.refs["run"],
                                  headers={"Authorization": f"Bearer {run_token(config, 'reader')}"})
    assert sink.log == [line for m in messages if m["type"] == "lines" for line in m["lines"]]
    assert [line.strip() for line in sink.log if line.strip().startswith("line ")] == [f"line {i}" for i in range(40)]


# -- refusals: no Docker needed (nothing is queued) ------------------------------------------------------


def test_a_commit_not_pushed_is_refused_before_asking_and_the_servers_409_says_the_same(tmp_path, remote, config,
                                                                                          server):
    token = run_token(config)
    write(remote.work, {"notes.md": "not pushed\n"})
    local = commit_all(remote.work, "local only")

    # not on any remote branch: refused here, even with the server down (it is never asked)
    down = ServerRemote("team", f"http://127.0.0.1:{free_port()}", token)
    with pytest.raises(RemoteRefused) as refused:
        down.submit(repo_root=str(remote.work), project=".", commit=local, mode="sample")
    assert "not pushed" in refused.value.message and "git push origin main" in refused.value.hint
    assert token not in str(refused.value)

    # a repository with no remote at all: said so, not "push it" (there is nowhere to push)
    alone = tmp_path / "alone"
    git(tmp_path, "init", "-q", "-b", "main", str(alone))
    write(alone, {"notes.md": "alone\n"})
    with pytest.raises(RemoteRefused) as refused:
        down.submit(repo_root=str(alone), project=".", commit=commit_all(alone, "first"), mode="sample")
    assert "has no remote" in refused.value.message and "git remote add origin" in refused.value.hint

    # pushed to another remote only (a fork): this machine thinks it is pushed, the server does not have it
    fork = tmp_path / "git" / "fork.git"
    git(tmp_path, "init", "-q", "--bare", str(fork))
    git(remote.work, "remote", "add", "fork", str(fork))
    git(remote.work, "push", "-q", "fork", "HEAD:main")
    client = ServerRemote("team", server.url, token)
    with pytest.raises(RemoteRefused) as refused:
        client.submit(repo_root=str(remote.work), project=".", commit=local, mode="sample")
    assert "does not have commit" in refused.value.message and "git push origin main" in refused.value.hint

    # pushed now: the server fetches it when asked (its poll interval has nothing to do with it)
    git(remote.work, "push", "-q", "origin", "HEAD:main")
    status, body = server.http.post("/soopervisor/api/repositories/sales/runs", token,
                                    body=b'{"commit": "%s", "project": "nope"}' % local.encode())
    assert status == 422 and "'.'" in body["hint"]  # the project is checked, the commit was found


def test_tokens_a_wrong_one_a_read_one_and_none_are_refused_with_what_to_do(config, remote, server):
    made = tokens(config)
    commit = remote.head()
    kw = {"repo_root": str(remote.work), "project": ".", "commit": commit, "mode": "sample"}

    with pytest.raises(RemoteRefused) as refused:  # made for another server, or revoked
        ServerRemote("team", server.url, "sv_" + "x" * 43).submit(**kw)
    assert "does not accept the token" in refused.value.message
    assert "soopervisor remote add team " + server.url in refused.value.hint

    reader = ServerRemote("team", server.url, made["read"])
    with pytest.raises(RemoteRefused) as refused:
        reader.submit(**kw)
    assert "refuses the token" in refused.value.message and "--scope run" in refused.value.hint
    assert made["read"] not in str(refused.value) and made["read"] not in repr(reader)

    with pytest.raises(RemoteRefused) as refused:
        ServerRemote("team", server.url, None).submit(**kw)
    assert "no token" in refused.value.message and "soopervisor remote add team" in refused.value.hint

    # a run token: queues and cancels, and may not pause the repository (admin)
    token = run_token(config)
    assert server.http.get("/soopervisor/api/token", token)[1]["scope"] == "run"
    status, body = server.http.post("/soopervisor/api/repositories/sales/pause", token)
    assert status == 403 and "may read and queue or stop runs" in body["error"] and "--admin" in body["hint"]
    status, body = server.http.post("/soopervisor/api/repositories/sales/runs", made["read"],
                                    body=b'{"commit": "%s"}' % commit.encode())
    assert status == 403 and "--scope run" in body["hint"]


def test_a_server_that_does_not_answer_is_unavailable_naming_its_url(remote, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    client = ServerRemote("team", url, "sv_" + "y" * 43)
    with pytest.raises(RemoteUnavailable) as down:
        client.submit(repo_root=str(remote.work), project=".", commit=remote.head(), mode="sample")
    assert url in down.value.message and down.value.exit_code == 3
    assert "sv_" not in str(down.value)
    with pytest.raises(RemoteUnavailable):
        client.cancel({"job": "0123456789ab", "run": None})
    # a follower keeps trying for a while, then says so (the record stays running)
    client.give_up = 1.0
    sink = Recorder()
    with pytest.raises(RemoteUnavailable):
        client.follow({"job": "0123456789ab", "repository": "sales", "run": None}, 0, sink, threading.Event())
    assert sink.log == [] and "status" not in sink.fields


def test_a_project_not_served_and_bad_requests_are_refused(config, remote, server):
    token = run_token(config)
    client = ServerRemote("team", server.url, token)
    with pytest.raises(RemoteRefused) as refused:
        client.submit(repo_root=str(remote.work), project="forecast", commit=remote.head(), mode="sample")
    assert "'forecast' is not served" in refused.value.message and "'.'" in refused.value.hint

    http = server.http
    for body, status in ((b'{"commit": "abc"}', 400), (b'{"commit": 12}', 400), (b"not json", 400),
                         (b'{"commit": "%s", "mode": "fast"}' % remote.head().encode(), 400),
                         (b'{"commit": "%s"}' % ("0" * 40).encode(), 409)):
        got, answer = http.post("/soopervisor/api/repositories/sales/runs", token, body=body)
        assert got == status and answer["error"], (body, got, answer)
    got, answer = http.post("/soopervisor/api/repositories/nope/runs", token, body=b'{"commit": "%s"}' % (
        remote.head().encode()))
    assert got == 404
    assert http.get("/soopervisor/api/queue/0123456789ab", token)[0] == 404

    # the repository named for the remote, rather than matched by origin's URL
    named = ServerRemote("team", server.url, token, repository="nope")
    with pytest.raises(RemoteRefused) as refused:
        named.submit(repo_root=str(remote.work), project=".", commit=remote.head(), mode="sample")
    assert "no repository named 'nope'" in refused.value.message and "sales" in refused.value.message


def test_urls_compare_without_scheme_user_or_git_suffix(tmp_path):
    same = ["https://github.com/Acme/sales.git", "ssh://git@github.com/Acme/sales", "git@github.com:Acme/sales.git",
            "https://***@GitHub.com/Acme/sales/"]
    assert len({normalize_url(u) for u in same}) == 1
    bare = tmp_path / "sales.git"
    bare.mkdir()
    (tmp_path / "link.git").symlink_to(bare)
    assert normalize_url(f"file://{bare}") == normalize_url(str(tmp_path / "link.git")) == normalize_url(
        "../sales.git", str(tmp_path / "work"))
    assert normalize_url("https://github.com/acme/other") != normalize_url(same[0])


def test_token_create_takes_a_name_and_a_scope_and_refuses_contradictions(config):
    def listed() -> list[dict]:
        return json.loads(cli("serve", "--config", str(config), "token", "list", "--json", check=0).stdout)

    run_token(config, "alice")
    cli("serve", "--config", str(config), "token", "create", "--name", "ops", "--admin", check=0)
    assert {(t["name"], t["scope"]) for t in listed()} == {("alice", "run"), ("ops", "admin")}
    for args, said in ((["alice", "--name", "bob"], "two names"), (["--admin", "--scope", "read"], "disagree")):
        proc = cli("serve", "--config", str(config), "token", "create", *args, check=2)
        assert said in proc.stderr and "Traceback" not in proc.stderr and "sv_" not in proc.stdout
    assert len(listed()) == 2

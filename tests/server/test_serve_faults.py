"""`soopervisor serve` when things break, with real parts: the Docker engine out of reach, a full
disk (a real tmpfs), the database gone for a while, a repository that is no ploomber project, a
remote that does not answer, and the server killed (SIGKILL) at random points while it runs.

Each test starts the real console command in a subprocess, reads the server's database as it is
(read-only, never creating it), and checks what a user would: jobs run once, failures said in one
line with a hint, never a traceback, and the server goes on when the fault is gone.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.projects import VALID, commit_all, function_task, git, init_repo, write
from tests.server.helpers import server_yaml

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("serve")]


# -- helpers --------------------------------------------------------------------------------------


@functools.cache
def _serves_http() -> bool:
    """Whether `soopervisor serve` serves HTTP (then a test's server takes a free port: --port 0)."""
    return "--port" in cli("serve", "--help", check=0).stdout


def serve_argv(config: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "soopervisor", "serve", "--config", str(config), *extra]
    if "--once" not in extra and _serves_http():
        argv += ["--port", "0"]
    return argv


class Remote:
    """A bare repository and a work clone that pushes branches to it."""

    def __init__(self, root: Path, name: str, files: dict[str, str]) -> None:
        self.name = name
        self.work = init_repo(root / f"work-{name}")
        write(self.work, files)
        commit_all(self.work, "first")
        self.bare = root / "git" / f"{name}.git"
        self.bare.parent.mkdir(exist_ok=True)
        git(root, "clone", "-q", "--bare", str(self.work), str(self.bare))
        git(self.work, "remote", "add", "origin", str(self.bare))
        git(self.work, "push", "-q", "origin", "HEAD:main")
        self.url = f"file://{self.bare}"

    @property
    def head(self) -> str:
        return git(self.work, "rev-parse", "HEAD").strip()

    def push(self, files: dict[str, str], branch: str = "main", message: str = "change") -> str:
        git(self.work, "checkout", "-q", "-B", branch)
        write(self.work, files)
        sha = commit_all(self.work, message)
        git(self.work, "push", "-q", "origin", f"{branch}:{branch}")
        return sha


def repo_entry(remote: Remote | str, **extra) -> dict:
    url = remote.url if isinstance(remote, Remote) else remote
    return {"url": url, "branches": ["main"], "projects": ["."], "mode": "sample", **extra}


def read_db(path: Path, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of the server's database, read-only: a test must not create it where it is gone."""
    if not path.exists():  # not made yet (the server starting), or gone
        return []
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        db.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in db.execute(sql, args)]
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise


def jobs(db: Path) -> list[dict]:
    return read_db(db, 'SELECT * FROM jobs ORDER BY created_at')


def stored_sets(storage: Path, commit: str) -> list[dict]:
    return [json.loads(m.read_text()) for m in storage.glob(f"*/{commit}/*/manifest.json")]


def statuses(storage: Path, commit: str) -> list[str]:
    return sorted(m["status"] for m in stored_sets(storage, commit))


class Server:
    """A long-running `soopervisor serve`, its output collected line by line."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.log = config.with_name("serve.log")  # the whole output, for a failure's reader
        self.proc = subprocess.Popen(serve_argv(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log, "a") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()

    @property
    def url(self) -> str | None:
        """The API's base URL, once it listens (`soopervisor serve: listening on http://...`)."""
        said = [line.rsplit(" ", 1)[1] for line in self.lines if "listening on http" in line]
        return said[0].rstrip("/") if said else None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, what: str, done: Callable[[], object], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None:
                pytest.fail(f"the server stopped (exit {self.proc.returncode}) before {what}:\n{self.output[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not within {timeout:g}s: {what} (all of it in {self.log})\n{self.output[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> int:
        """SIGTERM (the job at hand ends first); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(10)
        return code

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(60)
        self._reader.join(10)


@pytest.fixture
def servers():
    """Servers a test started, stopped at its end even when it fails."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.proc.poll() is None:
            server.kill()


# -- the Docker engine out of reach ----------------------------------------------------------------


def test_docker_down_keeps_the_job_queued_and_the_commit_runs_once_when_it_is_back(tmp_path, engine, servers):
    remote = Remote(tmp_path, "sales", VALID)
    config = server_yaml(tmp_path, [repo_entry(remote)], max_attempts=5)
    db, storage = tmp_path / "server.sqlite", tmp_path / "artifacts"
    down = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine/docker.sock"}

    once = cli("serve", "--config", str(config), "--once", env=down, check=0, timeout=300)
    assert "Traceback" not in once.stdout + once.stderr
    (job,) = jobs(db)
    # the engine is asked before a job is claimed: the job waits, no attempt is spent on an engine that is down
    assert job["state"] == "queued" and job["attempts"] == 0 and job["error"] is None, job
    where = f"docker at unix://{tmp_path}/no-engine/docker.sock"
    assert f"engine local ({where}): held, it does not answer: no socket there" in once.stdout, once.stdout
    assert "work: claiming nothing until this is over: engine local does not answer" in once.stdout
    assert f"job {job['id']}" not in once.stdout
    assert stored_sets(storage, remote.head) == []

    # served for good while the engine is away: it waits for the engine, still without an attempt
    server = Server(config, env=down)
    servers.append(server)
    server.wait_for("the engine held", lambda: any("held, it does not answer" in line for line in server.lines))
    polls: set[float] = set()

    def polled_three_more_times() -> bool:  # each round polls (interval 1 s) and could claim
        polls.update(r["last_poll"] for r in read_db(db, "SELECT last_poll FROM poll_repos"))
        return len(polls) > 3

    server.wait_for("three more rounds", polled_three_more_times)
    (job,) = jobs(db)
    assert job["state"] == "queued" and job["attempts"] == 0, job
    status, ready = readyz(server)  # a balancer must see it: the engine is down and the worker waits for it
    assert status == 503 and {"engines", "worker"} <= set(ready["failed"]), ready
    assert ready["checks"]["worker"]["error"].startswith("the worker claims no job: "), ready
    (local,) = ready["checks"]["engines"]["engines"]
    assert local["name"] == "local" and local["answers"] is False and local["held"] is True, local
    assert server.stop() == 0
    assert "Traceback" not in server.output

    # the engine back (the server restarted with the real DOCKER_HOST): the commit runs, once
    again = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    (job,) = jobs(db)
    assert job["state"] == "succeeded" and job["attempts"] == 1 and job["error"] is None, (job, again.stdout)
    assert statuses(storage, remote.head) == ["succeeded"]
    assert cli("serve", "--config", str(config), "--once", check=0).stdout.count("job ") == 0


# -- a full disk ----------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MiB tmpfs for the server's data folder (we are root: mounted for real, unmounted after)."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs: run it as root (CI does)", pytrace=False)
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write until the file system is full: the file that fills it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: nothing left to write at close
        for size in (1 << 20, 4096, 1):  # then the last pages, then the last bytes
            with contextlib.suppress(OSError):
                while f.write(b"\0" * size):
                    pass
    return filler


def test_a_full_disk_is_said_and_the_server_resumes_when_space_is_freed(tmp_path, engine, small_disk, monkeypatch,
                                                                       servers):
    monkeypatch.setenv("SOOPERVISOR_HOME", str(small_disk / "home"))  # runs, logs: on the small disk too
    remote = Remote(tmp_path, "sales", function_task("import time\ntime.sleep(4)\nprint('done', flush=True)"))
    config = server_yaml(tmp_path, [repo_entry(remote)], data=small_disk)
    db, storage = small_disk / "server.sqlite", small_disk / "artifacts"
    first = remote.head

    def states() -> list[str]:
        return [j["state"] for j in jobs(db)]

    server = Server(config)
    servers.append(server)
    server.wait_for("the first commit's job", lambda: states() == ["succeeded"])

    # the poll: git cannot write the mirror, the database cannot record: said at each poll, nothing half-done
    filler = fill(small_disk)
    second = remote.push({"notes.md": "a second commit\n" * 2000}, message="second")
    said = len(server.lines)

    def full_said(times: int) -> Callable[[], bool]:
        return lambda: sum("No space left" in line or "is full" in line for line in server.lines[said:]) >= times

    server.wait_for("the full disk said at two polls", full_said(2))
    assert [j["commit"] for j in jobs(db)] == [first]  # no job, no head for the commit it could not fetch
    assert [h["sha"] for h in read_db(db, "SELECT sha FROM poll_heads")] == [first]
    filler.unlink()
    server.wait_for("the second commit's job, once there is room", lambda: states() == ["succeeded"] * 2)
    assert statuses(storage, second) == ["succeeded"]

    # the run: the disk fills while it runs; the job is released (the machine's fault), then runs again
    third = remote.push({"notes.md": "a third commit\n"}, message="third")
    server.wait_for("the third commit's run under way",
                    lambda: [j["run_id"] is not None for j in jobs(db) if j["commit"] == third] == [True])
    said = len(server.lines)
    filler = fill(small_disk)
    server.wait_for("the run's end said", lambda: any(line.startswith(("job ", "work:")) for line in server.lines[said:]),
                    timeout=120)
    (job,) = [j for j in jobs(db) if j["commit"] == third]
    assert job["state"] != "failed", job  # the commit did nothing wrong
    filler.unlink()
    server.wait_for("the third commit's job, once there is room", lambda: states() == ["succeeded"] * 3)
    assert server.stop() == 0
    assert "Traceback" not in server.output
    for commit in (first, second, third):
        assert [s for s in statuses(storage, commit) if s != "interrupted"] == ["succeeded"], commit
    assert_no_container_left(engine)


def readyz(server: Server) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{server.url}/readyz", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_no_container_left(client) -> None:
    """No container of this test's runs (the run store of SOOPERVISOR_HOME) is left, running or not."""
    from soopervisor.runs import RunStore

    ours = {r.id for r in RunStore().list()}
    left = client.containers.list(all=True, filters={"label": "soopervisor.run"})
    assert [c.name for c in left if c.labels.get("soopervisor.run") in ours] == []


# -- the database gone for a while ------------------------------------------------------------------------


def test_the_database_gone_for_a_while_is_waited_for_and_never_made_anew(tmp_path, engine, servers):
    remote = Remote(tmp_path, "sales", VALID)
    data = tmp_path / "db"
    data.mkdir()
    config = server_yaml(tmp_path, [repo_entry(remote)])
    config.write_text(config.read_text().replace(str(tmp_path / "server.sqlite"), str(data / "server.sqlite")))
    db = data / "server.sqlite"
    server = Server(config)
    servers.append(server)
    server.wait_for("the first commit's job", lambda: [j["state"] for j in jobs(db)] == ["succeeded"])

    away = tmp_path / "db-away"
    data.rename(away)  # a lost mount: the folder is gone
    second = remote.push({"notes.md": "pushed while the database was away\n"}, message="second")
    said = len(server.lines)
    server.wait_for("the server saying the database is gone, twice",
                    lambda: sum("server.sqlite" in line for line in server.lines[said:]) >= 2)
    assert not data.exists()  # never a new, empty database in its place

    away.rename(data)
    server.wait_for("the second commit's job", lambda: [j["state"] for j in jobs(db)] == ["succeeded"] * 2)
    assert server.stop() == 0
    assert "Traceback" not in server.output
    assert statuses(tmp_path / "artifacts", second) == ["succeeded"]


def test_a_database_file_removed_is_not_made_anew_by_the_poller(tmp_path):
    """The poller's own connection: a file gone under it is an error, not a new empty file."""
    from soopervisor.errors import StorageUnavailable
    from soopervisor.server.config import Repository, ServerConfig
    from soopervisor.server.poller import Poller
    from soopervisor.server.queue import Queue

    remote = Remote(tmp_path, "sales", VALID)
    config = ServerConfig(storage=str(tmp_path / "artifacts"), database=str(tmp_path / "server.sqlite"),
                          mirrors=str(tmp_path / "mirrors"),
                          repositories=(Repository(url=remote.url, name="sales"),))
    poller = Poller(config, Queue(config.database))
    assert poller.poll(config.repositories[0]).error is None
    moved = tmp_path / "moved.sqlite"
    Path(config.database).rename(moved)
    with pytest.raises(StorageUnavailable):
        poller.due()
    result = poller.poll(config.repositories[0])
    assert result.error and "server.sqlite" in result.error
    assert not Path(config.database).exists()


# -- repositories that are not projects, remotes that do not answer ---------------------------------------------------


def test_a_repository_that_is_not_a_ploomber_project_fails_its_runs_and_the_others_go_on(tmp_path, engine):
    docs = Remote(tmp_path, "docs", {"README.md": "# only documents here\n"})
    sales = Remote(tmp_path, "sales", VALID)
    config = server_yaml(tmp_path, [repo_entry(docs), repo_entry(sales)])
    db, storage = tmp_path / "server.sqlite", tmp_path / "artifacts"

    proc = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    by_repo = {j["repository"]: j for j in jobs(db)}
    assert by_repo["docs"]["state"] == "failed" and by_repo["docs"]["attempts"] == 1
    assert by_repo["docs"]["error"].startswith("the project is not valid: "), by_repo["docs"]
    assert "pipeline" in by_repo["docs"]["error"].lower()  # the reason: no pipeline.yaml
    assert by_repo["sales"]["state"] == "succeeded"
    assert statuses(storage, sales.head) == ["succeeded"]

    # both repositories are still polled: new commits of each get their job
    docs.push({"README.md": "# still only documents\n"})
    sales.push({"notes.md": "second\n"})
    again = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    states = sorted((j["repository"], j["state"]) for j in jobs(db))
    assert states == [("docs", "failed"), ("docs", "failed"), ("sales", "succeeded"), ("sales", "succeeded")]
    assert "Traceback" not in proc.stdout + proc.stderr + again.stdout + again.stderr


def test_an_unreachable_remote_backs_off_and_the_others_are_unaffected(tmp_path, engine, servers):
    sales = Remote(tmp_path, "sales", VALID)
    gone = f"file://{tmp_path}/git/gone.git"
    config = server_yaml(tmp_path, [repo_entry(gone, name="gone"), repo_entry(sales)])
    db = tmp_path / "server.sqlite"

    def status(name: str) -> dict:
        rows = read_db(db, "SELECT * FROM poll_repos WHERE name = ?", (name,))
        return rows[0] if rows else {}

    server = Server(config)
    servers.append(server)
    if _serves_http():  # the status as its users see it: GET /soopervisor/api/repositories, a read token
        token = cli("serve", "--config", str(config), "token", "create", "--name", "test", check=0).stdout.strip()
        server.wait_for("the API's address", lambda: server.url)

        def status(name: str) -> dict:  # the API's view replaces the database's
            request = urllib.request.Request(f"{server.url}/soopervisor/api/repositories",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=30) as answer:
                found = json.load(answer)["repositories"]
            return next(r for r in found if r["name"] == name)

    server.wait_for("three failed polls of the unreachable remote", lambda: (status("gone").get("failures") or 0) >= 3)
    server.wait_for("the other repository's job", lambda: [j["state"] for j in jobs(db)] == ["succeeded"])
    gone_status = status("gone")
    assert gone_status.get("backoff", True) is True  # the API says so in a word too
    waits = gone_status["next_poll"] - gone_status["last_poll"]
    assert waits >= 2 ** 3 * 0.9, gone_status  # the 1 s interval, doubled per failure
    assert "cannot list the branches of file://" in gone_status["last_error"] and "hint:" in gone_status["last_error"]
    ok = status("sales")
    assert ok["failures"] == 0 and ok["last_error"] is None
    second = sales.push({"notes.md": "second\n"})
    server.wait_for("the other repository's next commit", lambda: [j["commit"] for j in jobs(db)][-1:] == [second]
                    and jobs(db)[-1]["state"] == "succeeded")
    assert server.stop() == 0
    assert "Traceback" not in server.output
    assert [line for line in server.lines if line.startswith("poll gone:")]  # said in the log


def test_a_job_whose_run_ended_before_the_server_died_is_not_run_again(tmp_path, engine):
    """Killed after the run stored its set and before the job was finished: the job, reaped and claimed
    again, takes the ended run's outcome; a second run of the commit would be a second build."""
    remote = Remote(tmp_path, "sales", VALID)
    config = server_yaml(tmp_path, [repo_entry(remote)])
    db, storage = tmp_path / "server.sqlite", tmp_path / "artifacts"
    cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    (job,) = jobs(db)
    assert job["state"] == "succeeded" and job["run_id"]
    # the crash's window, written as the killed server would have left it: running, its lease run out
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("UPDATE jobs SET state = 'running', lease_until = 1, lease_owner = 'gone:1:x' WHERE id = ?",
                     (job["id"],))

    again = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    assert "its worker stopped; now queued" in again.stdout
    assert f"job {job['id']} sales@{remote.head[:12]} . sample (run {job['run_id']}): succeeded" in again.stdout
    (after,) = jobs(db)
    assert after["state"] == "succeeded" and after["run_id"] == job["run_id"] and after["attempts"] == 2
    assert statuses(storage, remote.head) == ["succeeded"]  # one set: it did not run again

    from soopervisor.runs import RunStore

    assert [r.id for r in RunStore().list() if r.commit == remote.head] == [job["run_id"]]


# -- killed at random points ----------------------------------------------------------------------------


def test_sigkill_at_20_random_points_loses_no_job_and_runs_each_commit_once(tmp_path, engine, docker_client):
    seed = int(os.environ.get("SOOPERVISOR_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    quick = function_task("import time\ntime.sleep(1)\nprint('done', flush=True)")
    sales = Remote(tmp_path, "sales", quick)
    expected: dict[str, str] = {sales.head: "succeeded"}
    for branch in ("b1", "b2"):
        expected[sales.push({"notes.md": f"{branch}\n"}, branch=branch)] = "succeeded"
    ops = Remote(tmp_path, "ops", {**quick, "OWNERS": "ops\n"})  # not the same commit as sales's first
    expected[ops.head] = "succeeded"
    failing = ops.push(function_task("import time\ntime.sleep(1)\nraise RuntimeError('boom')"), branch="bad")
    expected[failing] = "failed"
    assert len(expected) == 5  # five commits, five jobs
    entries = [repo_entry(sales, branches=["*"]), repo_entry(ops, branches=["*"])]
    config = server_yaml(tmp_path, entries, max_attempts=100)  # kills must not spend a job's attempts
    db, storage = tmp_path / "server.sqlite", tmp_path / "artifacts"
    env = {**os.environ, "SOOPERVISOR_LEASE_SECONDS": "2"}

    kills = []
    for _ in range(20):
        proc = subprocess.Popen(serve_argv(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        at = rng.uniform(0.5, 6.0)  # the kill point: from start-up to mid-run
        try:
            proc.wait(at)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        kills.append(round(at, 2))
        if db.exists() and jobs(db) and all(j["state"] in ("succeeded", "failed") for j in jobs(db)):
            break  # all done before the 20 kills: nothing more to interrupt

    # the last server runs what is left: until every job has ended (reaped leases queued again)
    server = Server(config, env={"SOOPERVISOR_LEASE_SECONDS": "2"})
    try:
        server.wait_for(f"every job ended (seed {seed}, kills at {kills})",
                        lambda: len(jobs(db)) == len(expected)
                        and all(j["state"] in ("succeeded", "failed", "cancelled", "interrupted") for j in jobs(db)),
                        timeout=400)
    finally:
        assert server.stop() == 0
    found = {j["commit"]: j for j in jobs(db)}
    assert set(found) == set(expected), f"seed {seed}"  # no job lost, none made up
    for commit, state in expected.items():
        job = found[commit]
        assert job["state"] == state, (seed, kills, job)
        sets = statuses(storage, commit)
        # exactly one ended run per commit: interrupted attempts may have left an "interrupted" set
        assert [s for s in sets if s != "interrupted"] == [state], (seed, kills, commit, sets)

    from soopervisor.runs import RunStore

    runs = RunStore().list()
    assert any(r.status == "interrupted" for r in runs), (seed, kills)  # the kills did cut runs short
    for commit, state in expected.items():
        ended = [r.status for r in runs if r.commit == commit and r.status != "interrupted"]
        assert ended == [state], (seed, kills, commit, [(r.id, r.status) for r in runs if r.commit == commit])
        assert next(r for r in runs if r.id == found[commit]["run_id"]).status == state
    assert_no_container_left(docker_client)
    shutil.rmtree(storage, ignore_errors=True)

"""Several servers on one queue in a real PostgreSQL: claims raced by processes, the database stopped and
started again, migrations at once, the configuration of a PostgreSQL URL. The queue's and tokens' own
tests run on PostgreSQL too (test_queue.py, test_tokens.py, through conftest.py's ``database``)."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from soopervisor.errors import StorageUnavailable
from soopervisor.server import config as server_config
from soopervisor.server import db
from soopervisor.server.config import ServerConfig
from soopervisor.server.poller import Poller, PollerStoreUnavailable
from soopervisor.server.queue import Queue, QueueUnavailable
from soopervisor.server.tokens import TokenStore, TokenStoreUnavailable
from tests.conftest import cli
from tests.server.conftest import SCRIPT, new_database, start_postgres
from tests.server.test_poller import Remote

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(REPO)}
SECRET = "hunter2-never-shown"


# -- several servers on one queue -------------------------------------------------------------------


def _server(url: str, name: str, start, results) -> None:
    """A server in small: two worker threads claiming with the server-wide limits until the queue is empty.

    Right after each claim a worker counts the running jobs of its repository and overall: a claim that
    broke a limit shows there, since a job stays running until its worker finishes it."""
    q = Queue(url)
    start.wait()
    mine: list[str] = []
    broken: list[str] = []
    guard = threading.Lock()

    def work(worker: str) -> None:
        while True:
            job = q.claim(worker, concurrency=3, per_repository=1)
            if job is None:
                if q.counts()["queued"] == 0:
                    return
                continue
            with q._tx(write=False) as conn:
                same = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running' AND repository = ?",
                                    (job.repository,)).fetchone()[0]
                running = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            with guard:
                mine.append(job.id)
                if same > 1 or running > 3:
                    broken.append(f"{job.repository}: {same} running, {running} overall")
            assert q.finish(job, worker, "succeeded")

    threads = [threading.Thread(target=work, args=(f"{name}-t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put((name, mine, broken))


def test_two_servers_claim_200_jobs_each_exactly_once_within_the_limits(postgres: str) -> None:
    q = Queue(postgres)
    ids = {q.enqueue(f"r{i % 5}", f"{i:040x}", ".", "sample", "main").id for i in range(200)}
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_server, args=(postgres, f"server{n}", start, results)) for n in range(2)]
    for p in procs:
        p.start()
    claimed, broken = {}, []
    for _ in procs:
        name, mine, wrong = results.get(timeout=300)
        claimed[name] = mine
        broken += wrong
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    every = [i for mine in claimed.values() for i in mine]
    assert len(every) == 200 and set(every) == ids  # each once, none lost
    assert broken == []  # never two running jobs of a repository, never more than 3 at once
    assert all(claimed.values())  # both servers took jobs
    assert q.counts()["succeeded"] == 200 and all(j.attempts == 1 for j in q.list(limit=1000))


def _open_all(url: str, mirrors: str, start, results) -> None:
    start.wait()
    try:
        queue = Queue(url)
        TokenStore(url)
        Poller(ServerConfig(storage=mirrors, database=url, mirrors=mirrors), queue).status()
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - whatever it is, the test shows it
        results.put(repr(e))


def test_servers_starting_at_once_migrate_once(postgres: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_all, args=(postgres, str(tmp_path / "m"), start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    assert [results.get(timeout=120) for _ in procs] == ["ok"] * 4
    for p in procs:
        p.join(30)
    with Queue(postgres)._tx(write=False) as conn:
        versions = sorted(tuple(r) for r in conn.execute("SELECT component, version FROM schema_versions"))
    assert versions == [("poller", 1), ("queue", 1), ("tokens", 1)]


def test_the_poller_keeps_heads_and_status_in_postgres(postgres: str, tmp_path: Path) -> None:
    from soopervisor.server.config import Repository

    remote = Remote(tmp_path)
    first = remote.commit()
    repo = Repository(url=remote.url, name="sales")
    config = ServerConfig(storage=str(tmp_path / "art"), database=postgres, mirrors=str(tmp_path / "mirrors"),
                          repositories=(repo,))
    queue = Queue(postgres)
    poller = Poller(config, queue)
    assert poller.due() == [repo]
    result = poller.poll(repo)
    assert result.error is None and result.new == [("main", first)]
    assert poller.poll(repo).new == []  # nothing moved: nothing queued
    second = remote.commit()
    assert poller.poll(repo).new == [("main", second)]
    assert [j.commit for j in queue.list()] == [second, first]
    status = poller.status()[0]
    assert status.heads == {"main": second} and status.failures == 0 and status.last_success is not None
    poller.pause("sales")
    assert poller.status()[0].paused and poller.due() == []
    poller.poll_now("sales")
    assert poller.due() == [repo]  # asked for: due even when paused
    poller.resume("sales")
    # a second server's poller on the same database sees the same heads
    other = Poller(config, Queue(postgres))
    assert other.status()[0].heads == {"main": second}


# -- the database gone for a while --------------------------------------------------------------------


@pytest.fixture
def own_cluster(postgres_server: str) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL cluster of this test's own, to stop and start (the session's serves other tests)."""
    folder = Path(tempfile.mkdtemp(prefix="soopervisor-pg-outage-"))  # under /tmp: the postgres user reaches it
    try:
        url = _script(folder, "start")
        yield url, folder
    finally:
        subprocess.run([str(SCRIPT), "--dir", str(folder), "stop"], capture_output=True, timeout=120, check=False)
        subprocess.run(["rm", "-rf", str(folder), f"{folder}.lock"], check=False)


def _script(folder: Path, action: str) -> str:
    proc = subprocess.run([str(SCRIPT), "--dir", str(folder), action], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _calls(queue: Queue, tokens: TokenStore, poller: Poller, job_id: str) -> list:
    return [lambda: queue.claim("w"), lambda: queue.get(job_id), queue.counts, lambda: queue.cancel(job_id),
            lambda: queue.enqueue("r", "f" * 40, ".", "sample", "main"), tokens.list, lambda: tokens.create("x"),
            poller.status, poller.due, lambda: poller.pause("sales")]


def test_a_database_stopped_and_started_again_is_an_error_then_used_again(
        own_cluster: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from soopervisor.server.config import Repository

    server, folder = own_cluster
    with new_database(server) as plain:
        # the password by reference, as server.yaml gives it: never in any message
        monkeypatch.setenv("SOOPERVISOR_TEST_DB_PASSWORD", SECRET)
        url = f"{plain}?{db.PASSWORD_ENV}=SOOPERVISOR_TEST_DB_PASSWORD"
        queue, tokens = Queue(url), TokenStore(url)
        config = ServerConfig(storage=str(tmp_path / "art"), database=url, mirrors=str(tmp_path / "mirrors"),
                              repositories=(Repository(url="file:///nowhere.git", name="sales"),))
        poller = Poller(config, queue)
        job = queue.enqueue("sales", "a" * 40, ".", "sample", "main")
        info, secret = tokens.create("ci", "admin")
        _script(folder, "stop")
        for call in _calls(queue, tokens, poller, job.id):
            with pytest.raises(StorageUnavailable) as e:
                call()
            assert isinstance(e.value, (QueueUnavailable, TokenStoreUnavailable, PollerStoreUnavailable))
            said = f"{e.value.message} {e.value.hint}"
            assert e.value.exit_code == 3 and "\n" not in e.value.message and SECRET not in said
            assert db.shown(plain) in e.value.message and "start it" in e.value.hint, said
        with pytest.raises(TokenStoreUnavailable):
            tokens.verify(secret)  # fails closed: an error, never a token let in unchecked
        # the command line says the same in one line, exit 3, no traceback
        yaml = tmp_path / "server.yaml"
        yaml.write_text(json.dumps({"database": plain, "database_password": {"env": "SOOPERVISOR_TEST_DB_PASSWORD"},
                                    "storage": str(tmp_path / "art"), "repositories": []}))
        env = {**ENV, "SOOPERVISOR_TEST_DB_PASSWORD": SECRET}
        listed = cli("serve", "--config", str(yaml), "token", "list", env=env, check=3)
        assert "Traceback" not in listed.stderr and SECRET not in listed.stderr and db.shown(plain) in listed.stderr
        checked = cli("serve", "--config", str(yaml), "--check", env=env)
        assert checked.returncode != 0 and "database" in checked.stderr and "Traceback" not in checked.stderr
        assert SECRET not in checked.stdout + checked.stderr

        assert _script(folder, "start") == server  # back, on the same port: the next call works, no stale connection
        assert queue.get(job.id).state == "queued"
        claimed = queue.claim("w")
        assert claimed is not None and claimed.id == job.id
        assert tokens.verify(secret).id == info.id
        assert [s.name for s in poller.status()] == ["sales"]
        poller.pause("sales")
        assert poller.due() == []
        assert cli("serve", "--config", str(yaml), "token", "list", env=env, check=0).stdout.count(info.id) == 1


def test_an_unreachable_database_is_a_problem_of_serve_check(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yaml = tmp_path / "server.yaml"
    yaml.write_text(json.dumps({"database": f"postgresql://soopervisor@127.0.0.1:{port}/queue",
                                "storage": str(tmp_path / "art"), "repositories": []}))
    problems = server_config.check(server_config.load(yaml))
    assert [p.where for p in problems] == ["database"]
    assert f"127.0.0.1:{port}" in problems[0].what and "start it" in problems[0].hint
    checked = cli("serve", "--config", str(yaml), "--check", env=ENV)
    assert checked.returncode == 2 and "database" in checked.stderr and "Traceback" not in checked.stderr
    with pytest.raises(QueueUnavailable) as e:
        Queue(f"postgresql://soopervisor@127.0.0.1:{port}/queue")
    assert e.value.exit_code == 3 and "\n" not in e.value.message


def test_a_reachable_database_passes_serve_check(postgres: str, tmp_path: Path) -> None:
    yaml = tmp_path / "server.yaml"
    yaml.write_text(json.dumps({"database": postgres, "storage": str(tmp_path / "art"), "repositories": []}))
    config = server_config.load(yaml)
    assert config.database == postgres  # a URL is not made a path
    assert server_config.check(config) == []


# -- the configuration -----------------------------------------------------------------------------------


def test_a_password_in_the_url_is_refused_and_never_repeated(tmp_path: Path) -> None:
    yaml = tmp_path / "server.yaml"
    for url in (f"postgresql://sv:{SECRET}@db.example:5432/queue", f"postgresql://sv@db/queue?password={SECRET}"):
        yaml.write_text(json.dumps({"database": url, "storage": str(tmp_path / "art")}))
        with pytest.raises(server_config.InvalidConfig) as e:
            server_config.load(yaml)
        said = str(e.value) + " ".join(f"{p.what} {p.hint}" for p in e.value.problems)
        assert SECRET not in said and "PGPASSWORD" in said and "database_password" in said
        proc = cli("serve", "--config", str(yaml), "--check", env=ENV)
        assert proc.returncode == 2 and SECRET not in proc.stdout + proc.stderr


def test_the_password_by_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = tmp_path / "server.yaml"
    yaml.write_text(json.dumps({"database": "postgresql://sv@db.example:5432/queue",
                                "database_password": {"env": "QUEUE_PW"}, "storage": str(tmp_path / "art")}))
    config = server_config.load(yaml)
    assert db.shown(config.database) == "postgresql://sv@db.example:5432/queue"
    monkeypatch.setenv("QUEUE_PW", SECRET)
    assert db._password(config.database) == SECRET and SECRET not in config.database
    assert db.PASSWORD_ENV not in db._libpq_url(config.database)  # libpq never sees our parameter
    (tmp_path / "pw").write_text(SECRET + "\n")
    yaml.write_text(json.dumps({"database": "postgresql://sv@db.example/queue",
                                "database_password": {"file": "pw"}, "storage": str(tmp_path / "art")}))
    assert db._password(server_config.load(yaml).database) == SECRET
    for bad, where in (({"database_password": SECRET, "database": "postgresql://sv@db/q"}, "database_password"),
                       ({"database_password": {"env": "X"}, "database": "server.sqlite"}, "database_password"),
                       ({"database": "postgresql://sv@db:port/q"}, "database"),
                       ({"database": "postgresql://sv@db"}, "database")):
        yaml.write_text(json.dumps({**bad, "storage": str(tmp_path / "art")}))
        with pytest.raises(server_config.InvalidConfig) as e:
            server_config.load(yaml)
        assert [p.where for p in e.value.problems] == [where]
        assert SECRET not in str(e.value) + " ".join(f"{p.what} {p.hint}" for p in e.value.problems)
    yaml.write_text(json.dumps({"database": "relative.sqlite", "storage": str(tmp_path / "art")}))
    assert server_config.load(yaml).database == str(tmp_path / "relative.sqlite")  # a path stays a path


def test_without_psycopg_a_postgres_url_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from soopervisor.server.queue import Queue\n"
            "Queue('postgresql://sv@127.0.0.1:1/q')\n")
    proc = subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **ENV}, check=False)
    assert proc.returncode != 0 and "UsageError" in proc.stderr and "soopervisor[postgres]" in proc.stderr


def test_without_postgresql_the_tests_fail_saying_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The session fixture turns this into a failure (pytest.fail), never a skip."""
    monkeypatch.setenv("SOOPERVISOR_TEST_POSTGRES", "postgresql://soopervisor@127.0.0.1:1/postgres")
    with pytest.raises(RuntimeError, match="run scripts/postgres"):
        start_postgres()

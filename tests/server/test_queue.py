"""The server's job queue on real SQLite files and a real PostgreSQL, raced by real processes and killed
with SIGKILL. The ``database`` fixture (conftest.py) runs a test once on each; what only SQLite has (a file
gone, damaged or locked) is tested here on SQLite, PostgreSQL's counterparts in test_postgres.py."""
from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from soopervisor.server import queue as queue_module
from soopervisor.server.queue import REAPED, JobNotFound, Queue, QueueUnavailable
from tests.server.helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def q(database: str, clock: Clock) -> Queue:
    return Queue(database, lease_seconds=30, clock=clock)


@pytest.fixture
def sq(tmp_path: Path, clock: Clock) -> Queue:
    """A queue in a SQLite file: for what only a file can do (be moved aside, locked)."""
    return Queue(tmp_path / "server.sqlite", lease_seconds=30, clock=clock)


def add(q: Queue, commit: str, repository: str = "sales", **kw):
    kw.setdefault("project", ".")
    kw.setdefault("mode", "sample")
    kw.setdefault("branch", "main")
    supersede = kw.pop("supersede", False)
    return q.enqueue(repository, commit, kw["project"], kw["mode"], kw["branch"], supersede=supersede)


def test_one_record_per_repository_commit_project_mode(q: Queue) -> None:
    first = add(q, "a" * 40)
    assert first is not None and first.state == "queued" and first.attempts == 0
    assert add(q, "a" * 40) is None
    assert add(q, "a" * 40, branch="feature") is None  # the same commit seen on another branch
    assert add(q, "a" * 40, mode="full") is not None
    assert add(q, "a" * 40, project="reports") is not None
    assert add(q, "a" * 40, repository="billing") is not None
    assert q.counts()["queued"] == 4
    # a finished record still counts: the commit is not run twice by accident
    job = q.claim("w1", concurrency=9, per_repository=9)
    assert q.finish(job, "w1", "succeeded")
    assert q.enqueue(job.repository, job.commit, job.project, job.mode, job.branch) is None
    with pytest.raises(ValueError):
        add(q, "b" * 40, mode="fast")


def test_claims_the_oldest_queued_job_first(q: Queue, clock: Clock) -> None:
    ids = []
    for i in range(5):
        ids.append(add(q, f"{i:040x}", repository=f"r{i}").id)
        clock.advance(0.001 * (i % 2))  # equal timestamps too: insertion order decides
    claimed = [q.claim("w", concurrency=10, per_repository=10) for _ in range(5)]
    assert [j.id for j in claimed] == ids
    assert all(j.state == "running" and j.attempts == 1 and j.lease_owner == "w" for j in claimed)
    assert claimed[0].lease_until == pytest.approx(clock.now + 30)
    assert q.claim("w", concurrency=10, per_repository=10) is None
    stored = q.get(ids[0])
    assert (stored.state, stored.lease_owner, stored.attempts) == ("running", "w", 1)


def test_concurrency_limit_counts_every_running_job(q: Queue) -> None:
    for i in range(4):
        add(q, f"{i:040x}", repository=f"r{i}")
    a = q.claim("w1", concurrency=2, per_repository=5)
    b = q.claim("w2", concurrency=2, per_repository=5)
    assert a and b
    assert q.claim("w3", concurrency=2, per_repository=5) is None
    assert q.finish(a, "w1", "succeeded")
    c = q.claim("w3", concurrency=2, per_repository=5)
    assert c is not None and c.repository == "r2"


def test_per_repository_limit_skips_to_another_repository(q: Queue) -> None:
    add(q, "1" * 40, repository="sales")
    add(q, "2" * 40, repository="sales")
    add(q, "3" * 40, repository="billing")
    first = q.claim("w1", concurrency=5, per_repository=1)
    assert first.repository == "sales"
    second = q.claim("w2", concurrency=5, per_repository=1)
    assert second.repository == "billing"  # the older sales job waits for its repository's slot
    assert q.claim("w3", concurrency=5, per_repository=1) is None
    assert q.finish(first, "w1", "failed", error="a task failed")
    third = q.claim("w3", concurrency=5, per_repository=1)
    assert third.commit == "2" * 40


def test_renew_extends_the_lease_and_keeps_the_job_from_the_reaper(q: Queue, clock: Clock) -> None:
    add(q, "a" * 40)
    job = q.claim("w1")
    for _ in range(5):
        clock.advance(20)
        assert q.renew(job, "w1")
        assert q.reap(max_attempts=3) == []
    assert job.lease_until == pytest.approx(clock.now + 30)
    assert q.get(job.id).lease_until == pytest.approx(clock.now + 30)
    assert not q.renew(job, "someone-else")
    clock.advance(31)
    assert [j.id for j in q.reap(max_attempts=3)] == [job.id]
    assert not q.renew(job, "w1")


def test_writes_of_a_worker_whose_lease_was_taken_over_change_nothing(q: Queue, clock: Clock) -> None:
    add(q, "a" * 40)
    old = q.claim("w1")
    clock.advance(31)  # w1 stalls past its lease
    q.reap(max_attempts=3)
    new = q.claim("w2")
    assert new.id == old.id and new.attempts == 2
    assert q.attach_run(new, "w2", "run-new")
    # w1 wakes up: nothing it writes reaches the newer record
    assert not q.renew(old, "w1")
    assert not q.attach_run(old, "w1", "run-old")
    assert not q.finish(old, "w1", "succeeded")
    assert q.release(old, "w1", "docker went away", max_attempts=3) == "running"
    stored = q.get(old.id)
    assert (stored.state, stored.lease_owner, stored.run_id, stored.attempts) == ("running", "w2", "run-new", 2)
    assert old.state == "running"  # the stale handle is not rewritten either
    assert q.finish(new, "w2", "succeeded")
    assert q.get(old.id).state == "succeeded"


def test_a_lease_is_one_claim_not_one_worker_name(q: Queue, clock: Clock) -> None:
    """A worker name reused (a restarted server named by host) still cannot write with an old claim."""
    add(q, "a" * 40)
    old = q.claim("server-1")
    clock.advance(31)
    q.reap(max_attempts=3)
    new = q.claim("server-1")
    assert not q.finish(old, "server-1", "failed", error="stale")
    assert q.finish(new, "server-1", "succeeded")
    assert q.get(new.id).error is None


def test_reap_requeues_until_the_attempts_are_spent_then_interrupts(q: Queue, clock: Clock) -> None:
    add(q, "a" * 40)
    for attempt in (1, 2):
        job = q.claim("w")
        assert job.attempts == attempt
        clock.advance(29)
        assert q.reap(max_attempts=3) == []  # not yet expired
        clock.advance(2)
        (reaped,) = q.reap(max_attempts=3)
        assert (reaped.id, reaped.state, reaped.error, reaped.lease_owner) == (job.id, "queued", REAPED, "w")
        assert q.get(job.id).state == "queued"
    job = q.claim("w")
    assert job.attempts == 3
    clock.advance(31)
    (reaped,) = q.reap(max_attempts=3)
    assert reaped.state == "interrupted"
    stored = q.get(job.id)
    assert stored.state == "interrupted" and stored.error.startswith(REAPED) and "3 of 3" in stored.error
    assert stored.lease_until is None
    assert q.reap(max_attempts=3) == [] and q.claim("w") is None


def test_release_retries_infrastructure_failures_but_a_failed_pipeline_is_final(q: Queue) -> None:
    add(q, "a" * 40, repository="infra")
    add(q, "b" * 40, repository="pipeline")
    job = q.claim("w", concurrency=1)
    assert job.repository == "infra"
    assert q.release(job, "w", "Docker is not running", max_attempts=2) == "queued"
    assert (job.state, job.error) == ("queued", "Docker is not running")
    job = q.claim("w", concurrency=1)  # it kept its place ahead of the newer job
    assert (job.repository, job.attempts) == ("infra", 2)
    assert q.release(job, "w", "Docker is not running", max_attempts=2) == "failed"
    stored = q.get(job.id)
    assert stored.state == "failed" and stored.error == "gave up after 2 attempts: Docker is not running"
    assert stored.lease_until is None

    job = q.claim("w", concurrency=1)
    assert job.repository == "pipeline"
    assert q.finish(job, "w", "failed", error="task load failed")
    assert q.claim("w", concurrency=1) is None  # never retried by itself
    assert q.reap(max_attempts=5) == []
    assert q.get(job.id).attempts == 1
    with pytest.raises(ValueError):
        q.finish(job, "w", "running")


def test_cancel_a_queued_or_running_job_not_a_finished_one(q: Queue) -> None:
    queued = add(q, "a" * 40, repository="r1")
    add(q, "b" * 40, repository="r2")
    assert q.cancel(queued.id)
    assert q.get(queued.id).state == "cancelled"
    running = q.claim("w", concurrency=5)
    assert running.repository == "r2"  # the cancelled one is not claimed
    assert q.cancel(running.id)
    # its worker learns on its next renew, and writes nothing after
    assert not q.renew(running, "w")
    assert not q.finish(running, "w", "succeeded")
    assert q.get(running.id).state == "cancelled"
    assert not q.cancel(running.id)  # already ended
    with pytest.raises(JobNotFound) as e:
        q.cancel("f" * 12)
    assert e.value.exit_code == 2


def test_retry_queues_a_finished_job_again_on_the_same_record(q: Queue, clock: Clock) -> None:
    job = add(q, "a" * 40, repository="r1")
    claimed = q.claim("w", concurrency=5)
    assert q.retry(job.id) is None  # running: refused
    assert q.attach_run(claimed, "w", "run-1")
    assert q.finish(claimed, "w", "failed", error="task failed")
    clock.advance(1)
    later = add(q, "b" * 40, repository="r2")
    assert q.retry(later.id) is None  # queued: refused
    clock.advance(1)
    again = q.retry(job.id)
    assert again is not None and again.id == job.id
    assert (again.state, again.attempts, again.run_id, again.error) == ("queued", 1, None, None)
    assert q.counts()["queued"] == 2 and len(q.list()) == 2  # no second record
    # a retry is a new request: it queues behind what was waiting already
    assert q.claim("w", concurrency=5).id == later.id
    redo = q.claim("w", concurrency=5)
    assert (redo.id, redo.attempts) == (job.id, 2)
    with pytest.raises(JobNotFound):
        q.retry("nope")


def test_supersede_cancels_queued_older_jobs_of_the_branch_only(q: Queue, clock: Clock) -> None:
    running = add(q, "1" * 40)
    assert q.claim("w").id == running.id
    old = add(q, "2" * 40)
    other_branch = add(q, "3" * 40, branch="dev")
    other_mode = add(q, "4" * 40, mode="full")
    other_project = add(q, "5" * 40, project="reports")
    clock.advance(1)
    new = add(q, "6" * 40, supersede=True)
    assert new is not None
    assert q.get(old.id).state == "cancelled" and q.get(old.id).error == f"superseded by {'6' * 40}"
    assert q.get(running.id).state == "running"
    for kept in (other_branch, other_mode, other_project, new):
        assert q.get(kept.id).state == "queued"
    # a duplicate supersedes nothing
    assert add(q, "7" * 40) is not None
    assert add(q, "6" * 40, supersede=True) is None
    assert q.counts()["queued"] == 5
    # without supersede, older queued jobs stay
    add(q, "8" * 40)
    assert q.counts()["queued"] == 6


def test_get_list_and_counts(q: Queue, clock: Clock) -> None:
    with pytest.raises(JobNotFound) as e:
        q.get("0123456789ab")
    assert "0123456789ab" in e.value.message and e.value.hint and e.value.exit_code == 2
    for i in range(3):
        add(q, f"{i:040x}", repository="sales" if i < 2 else "billing")
        clock.advance(1)
    job = q.claim("w", concurrency=5, per_repository=5)
    q.finish(job, "w", "succeeded")
    assert [j.commit for j in q.list()] == [f"{i:040x}" for i in (2, 1, 0)]
    assert [j.commit for j in q.list(limit=1)] == [f"{2:040x}"]
    assert [j.commit for j in q.list(repository="sales", state="queued")] == [f"{1:040x}"]
    assert q.counts() == {"queued": 2, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 0, "interrupted": 0}
    with pytest.raises(ValueError):
        q.list(state="done")


def test_the_schema_is_versioned_and_a_reopened_file_keeps_its_jobs(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "server.sqlite"
    job = Queue(path).enqueue("sales", "a" * 40, ".", "sample", "main")
    monkeypatch.setattr(queue_module, "_READY", set())  # as a new process would
    assert Queue(path).get(job.id).commit == "a" * 40
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = db.execute("SELECT version FROM schema_versions WHERE component = 'queue'").fetchone()[0]
        assert version == queue_module.SCHEMA_VERSION
        # another component's tables in the same file are left alone
        db.execute("CREATE TABLE heads (repository TEXT, branch TEXT, head TEXT)")
    monkeypatch.setattr(queue_module, "_READY", set())
    assert Queue(path).counts()["queued"] == 1


def test_the_lease_is_the_runs_lease_unless_given(tmp_path: Path, monkeypatch) -> None:
    assert Queue(tmp_path / "a.sqlite").lease_seconds == 30
    monkeypatch.setenv("SOOPERVISOR_LEASE_SECONDS", "3")
    assert Queue(tmp_path / "a.sqlite").lease_seconds == 3
    assert Queue(tmp_path / "a.sqlite", lease_seconds=1.5).lease_seconds == 1.5


def test_a_damaged_database_is_a_plain_error(tmp_path: Path) -> None:
    path = tmp_path / "server.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(QueueUnavailable) as e:
        Queue(path)
    assert e.value.exit_code == 3 and "damaged" in e.value.message and ".broken" in e.value.hint


def test_a_database_gone_for_a_while_is_taken_up_again(sq: Queue) -> None:
    q = sq
    job = add(q, "a" * 40)
    aside = q.path.with_name("aside.sqlite")
    q.path.rename(aside)
    with pytest.raises(QueueUnavailable) as e:
        q.claim("w")
    assert "is gone" in e.value.message and e.value.exit_code == 3
    assert not q.path.exists()  # never silently a new, empty queue
    aside.rename(q.path)
    assert q.claim("w").id == job.id


def test_a_lock_held_too_long_is_a_plain_error(sq: Queue, monkeypatch) -> None:
    q = sq
    add(q, "a" * 40)
    monkeypatch.setattr(queue_module, "BUSY_TIMEOUT", 0.2)
    other = sqlite3.connect(q.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(QueueUnavailable) as e:
            q.claim("w")
        assert "locked" in e.value.message and "try again" in e.value.hint
        assert q.counts()["queued"] == 1  # readers are not blocked (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert q.claim("w") is not None


# -- real processes -------------------------------------------------------------------------------


def _drain(path: str, worker: str, start, results) -> None:
    """Claim until the queue is empty; report every claimed job id."""
    q = Queue(path)
    start.wait()
    mine = []
    while True:
        job = q.claim(worker, concurrency=100, per_repository=100)
        if job is None:
            if q.counts()["queued"] == 0:
                break
            continue
        mine.append(job.id)
        assert q.finish(job, worker, "succeeded")
    results.put((worker, mine))


def test_four_processes_claim_every_job_exactly_once(tmp_path: Path, database: str) -> None:
    path = database
    q = Queue(path)
    ids = {q.enqueue(f"r{i % 7}", f"{i:040x}", ".", "sample", "main").id for i in range(200)}
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(4), ctx.Queue()  # all four imported and ready before the first claim
    procs = [ctx.Process(target=_drain, args=(path, f"w{n}", start, results)) for n in range(4)]
    for p in procs:
        p.start()
    claimed = {}
    for _ in procs:
        worker, mine = results.get(timeout=120)
        claimed[worker] = mine
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    every = [i for mine in claimed.values() for i in mine]
    assert len(every) == 200 and set(every) == ids  # each once, none lost
    assert q.counts()["succeeded"] == 200
    assert all(j.attempts == 1 for j in q.list(limit=1000))
    assert sum(1 for mine in claimed.values() if mine) >= 2  # they did race


def _claim_and_hang(path: str, claimed) -> None:
    q = Queue(path, lease_seconds=1.0)
    job = q.claim("doomed")
    claimed.put(job.id)
    while True:  # "running" and renewing, until SIGKILL
        q.renew(job, "doomed")
        time.sleep(0.1)


def _claim_then_write_when_woken(path: str, claimed) -> None:
    q = Queue(path, lease_seconds=1.0)
    job = q.claim("stalled")
    claimed.send(job.id)  # a pipe: sent before the stop (a multiprocessing.Queue sends from a thread)
    os.kill(os.getpid(), signal.SIGSTOP)  # stalls here until the test continues it
    claimed.send((q.renew(job, "stalled"), q.finish(job, "stalled", "failed", error="stale")))


def test_a_killed_worker_s_job_is_reaped_and_finished_once_by_another(tmp_path: Path, database: str) -> None:
    path = database
    q = Queue(path, lease_seconds=1.0)
    job = q.enqueue("sales", "a" * 40, ".", "sample", "main")
    ctx = multiprocessing.get_context("spawn")
    claimed = ctx.Queue()
    child = ctx.Process(target=_claim_and_hang, args=(path, claimed))
    child.start()
    assert claimed.get(timeout=60) == job.id
    time.sleep(0.3)
    assert q.reap(max_attempts=3) == []  # it renews while alive
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert q.get(job.id).state == "running"
    deadline = time.monotonic() + 10
    reaped = []
    while not reaped and time.monotonic() < deadline:
        time.sleep(0.2)
        reaped = q.reap(max_attempts=3)
    assert [(j.id, j.state, j.lease_owner) for j in reaped] == [(job.id, "queued", "doomed")]
    again = q.claim("survivor")
    assert (again.id, again.attempts) == (job.id, 2)
    assert q.finish(again, "survivor", "succeeded")
    jobs = q.list()
    assert len(jobs) == 1 and (jobs[0].state, jobs[0].lease_owner) == ("succeeded", "survivor")
    assert q.counts()["succeeded"] == 1


def test_a_stalled_worker_resumed_after_a_takeover_writes_nothing(tmp_path: Path, database: str) -> None:
    path = database
    q = Queue(path, lease_seconds=1.0)
    job = q.enqueue("sales", "a" * 40, ".", "sample", "main")
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_claim_then_write_when_woken, args=(path, theirs))
    child.start()
    try:
        assert ours.poll(60) and ours.recv() == job.id
        time.sleep(1.2)
        assert [j.id for j in q.reap(max_attempts=3)] == [job.id]
        taker = q.claim("taker")
        assert q.finish(taker, "taker", "succeeded")
        os.kill(child.pid, signal.SIGCONT)
        assert ours.poll(30) and ours.recv() == (False, False)
        child.join(30)
    finally:
        if child.is_alive():
            child.kill()
    stored = q.get(job.id)
    assert (stored.state, stored.lease_owner, stored.error) == ("succeeded", "taker", None)


def _work_until_killed(path: str, worker: str, log: str) -> None:
    """A server's worker loop in small: reap, claim, work a little while renewing, finish; forever."""
    q = Queue(path, lease_seconds=0.5)
    rng = random.Random()
    with open(log, "a") as out:
        while True:
            q.reap(max_attempts=1000)
            job = q.claim(worker, concurrency=3, per_repository=2)
            if job is None:
                time.sleep(0.01)
                continue
            time.sleep(rng.uniform(0.02, 0.12))
            if not q.renew(job, worker) or not q.attach_run(job, worker, f"run-{worker}-{job.attempts}"):
                continue
            time.sleep(rng.uniform(0.02, 0.12))
            if q.finish(job, worker, "succeeded"):
                out.write(f"{job.id}\n")  # after the commit: a kill in between loses a line, never adds one
                out.flush()


def test_workers_killed_at_random_points_lose_no_job_and_finish_none_twice(tmp_path: Path, database: str) -> None:
    path = database
    q = Queue(path, lease_seconds=0.5)
    ids = {q.enqueue(f"r{i % 3}", f"{i:040x}", ".", "sample", "main").id for i in range(100)}
    ctx = multiprocessing.get_context("spawn")
    rng = random.Random(14)
    serial = iter(range(1000))

    def start() -> multiprocessing.Process:
        n = next(serial)
        p = ctx.Process(target=_work_until_killed, args=(path, f"w{n}", str(tmp_path / f"w{n}.log")))
        p.start()
        return p

    procs = [start(), start(), start()]
    kills = 0
    try:
        deadline = time.monotonic() + 120
        while q.counts()["succeeded"] < len(ids) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.05, 0.5))
            if kills < 20:
                victim = procs.pop(rng.randrange(len(procs)))
                os.kill(victim.pid, signal.SIGKILL)  # mid-claim, mid-transaction, mid-work: anywhere
                victim.join(10)
                kills += 1
                procs.append(start())
    finally:
        for p in procs:
            p.kill()
            p.join(10)
    jobs = q.list(limit=1000)
    assert {j.id for j in jobs} == ids and all(j.state == "succeeded" for j in jobs), q.counts()
    assert kills == 20
    finished = [line for log in tmp_path.glob("w*.log") for line in log.read_text().split()]
    assert len(finished) == len(set(finished))  # no job's finish was accepted twice
    assert sum(j.attempts for j in jobs) > len(ids), "no kill hit a claimed job"  # reaped, re-claimed


def test_a_database_folder_that_cannot_be_made_is_each_components_own_error(tmp_path: Path):
    from soopervisor.server.tokens import TokenStore, TokenStoreUnavailable

    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where the database's folder should be
    for component, error in ((Queue, QueueUnavailable), (TokenStore, TokenStoreUnavailable)):
        with pytest.raises(error) as e:
            component(blocker / "data" / "soopervisor.sqlite")
        assert f"cannot create the folder of the server's database {blocker / 'data'}" in str(e.value)
        assert "must name a place you can write" in e.value.hint

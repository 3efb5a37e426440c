"""Claim latency of the server's queue with 4 worker processes: on SQLite, then on PostgreSQL.

Each worker claims a job and finishes it, until the queue is empty (JOBS jobs
over 100 repositories, limits high enough not to matter). The baseline, in the
same run and on the same kind of file: 4 processes each running the same number
of bare write transactions through the queue's own connection code (connect,
BEGIN IMMEDIATE, SELECT 1, COMMIT) — what any claim costs before it does work —
paired like claim and finish. On PostgreSQL the same: BEGIN; SELECT 1; COMMIT
through the queue's kept connection, a fresh database for each measurement. The
issue's target there: a claim's p95 at most 20 ms.

The PostgreSQL is SOOPERVISOR_TEST_POSTGRES's URL, else the one scripts/postgres
starts (or finds running).

Usage: python benchmarks/queue_claims.py [JOBS]   (default 1000)
"""
from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soopervisor.server.queue import Queue
from tests.server.conftest import new_database, start_postgres  # the tests' helpers

JOBS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WORKERS = 4


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def claim_worker(path: str, name: str, ready, results) -> None:
    q = Queue(path)
    ready.wait()
    latencies = []
    while True:
        start = time.perf_counter()
        job = q.claim(name, concurrency=1000, per_repository=1000)
        latencies.append(time.perf_counter() - start)
        if job is None:
            break
        q.finish(job, name, "succeeded")
    results.put(latencies[:-1])  # the last one found the queue empty


def bare_worker(path: str, count: int, ready, results) -> None:
    q = Queue(path)
    ready.wait()
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        with q._tx() as db:  # the queue's connection and transaction, doing nothing
            db.execute("SELECT 1").fetchone()
        latencies.append(time.perf_counter() - start)
        with q._tx() as db:  # the stand-in for finish
            db.execute("SELECT 1").fetchone()
    results.put(latencies)


def measure(target, args_for) -> tuple[list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Barrier(WORKERS + 1), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_for(n), ready, results)) for n in range(WORKERS)]
    for p in procs:
        p.start()
    ready.wait()
    start = time.perf_counter()
    latencies = [x for _ in procs for x in results.get(timeout=600)]
    wall = time.perf_counter() - start
    for p in procs:
        p.join()
    return latencies, wall


def run(label: str, jobs_db: str, bare_db: str, baseline: str) -> float:
    """Measure and print; the claims' p95 in ms."""
    q = Queue(jobs_db)
    for i in range(JOBS):
        q.enqueue(f"repo{i % 100}", f"{i:040x}", ".", "sample", "main")
    Queue(bare_db)

    claims, claim_wall = measure(claim_worker, lambda n: (jobs_db, f"w{n}"))
    assert len(claims) == JOBS and q.counts()["succeeded"] == JOBS, q.counts()
    bare, bare_wall = measure(bare_worker, lambda n: (bare_db, JOBS // WORKERS))

    c50, c95 = percentile(claims, 50) * 1000, percentile(claims, 95) * 1000
    b50, b95 = percentile(bare, 50) * 1000, percentile(bare, 95) * 1000
    print(f"{label}: claim latency, {WORKERS} processes, {JOBS} jobs: p50 {c50:.2f} ms, p95 {c95:.2f} ms "
          f"({JOBS / claim_wall:.0f} claims+finishes/s)")
    print(f"{label}: baseline {baseline}: p50 {b50:.2f} ms, p95 {b95:.2f} ms ({len(bare) / bare_wall:.0f} pairs/s)")
    print(f"{label}: ratio: p50 {c50 / b50:.2f}, p95 {c95 / b95:.2f}")
    return c95


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="soopervisor-bench-queue-"))
    run("sqlite", str(folder / "jobs.sqlite"), str(folder / "bare.sqlite"), "bare BEGIN IMMEDIATE; SELECT 1; COMMIT")

    try:
        server = start_postgres()
    except RuntimeError as e:
        sys.exit(str(e))
    with contextlib.ExitStack() as stack:
        jobs_db, bare_db = stack.enter_context(new_database(server)), stack.enter_context(new_database(server))
        p95 = run("postgresql", jobs_db, bare_db, "bare BEGIN; SELECT 1; COMMIT (three round trips)")
    verdict = "ok" if p95 <= 20 else "over"
    print(f"postgresql: claim p95 {p95:.2f} ms, target at most 20 ms: {verdict}")
    if p95 > 20:
        sys.exit(1)


if __name__ == "__main__":
    main()

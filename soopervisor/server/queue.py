"""The server's job queue in SQLite or PostgreSQL: one record per (repository, commit, project, mode), claimed with leases.

States: queued → running → succeeded / failed / cancelled / interrupted. A
worker claims the oldest queued job it may run (a concurrency limit overall and
one per repository) and gets a lease it renews. Every write a worker makes
carries its lease (``WHERE id = ? AND lease_owner = ? AND state = 'running' AND
attempts = ?``): once the lease is reaped, taken over or the job cancelled, the
old worker's writes change nothing and say so (False).

Like :class:`soopervisor.runs.RunStore`: a connection per call (safe across
threads and processes), WAL so readers never wait for a writer, a busy timeout,
one short transaction per operation. Writes start with ``BEGIN IMMEDIATE``: the
write lock is taken before the read that decides (which job to claim), so two
processes never act on the same snapshot.

On PostgreSQL (``postgresql://`` as the database, several servers on one queue;
see db.py) the same statements run in READ COMMITTED transactions. A claim
must read how many jobs run (overall and for the candidate's repository) and
then start one, and row locks cannot protect a count: two servers could each
see 0 running jobs of a repository with ``per_repository: 1`` and each lock a
different queued job of it. So a claim first takes one transaction-scoped
advisory lock (``pg_advisory_xact_lock``): claims run one at a time across all
servers, while renewals, finishes and the API's reads do not wait for them.
Chosen over locked counter rows because counters must be kept right by every
transition (finish, release, reap, cancel) and drift when one is missed; the
lock goes away by itself at COMMIT, ROLLBACK or when a killed server's session
ends. The candidate is read ``FOR UPDATE SKIP LOCKED``: a row a cancel or
supersede is changing is passed over, not waited for. A claim holds the lock
for a few milliseconds (about 1000 claims and finishes a second from 4 processes,
benchmarks/queue_claims.py) —
far more than jobs that take minutes need.

``attempts`` counts claims: a job's first run is attempt 1. An infrastructure
failure (``release``) or a worker that stopped renewing (``reap``) queues the
job again while attempts < max_attempts; a failing pipeline (``finish(state=
"failed")``) is never retried. ``retry`` queues a finished job again on the
same record (a user's decision, so it ignores spent attempts).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import StorageUnavailable, UsageError
from . import db as dbm
from .db import BUSY_TIMEOUT

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")
MODES = ("sample", "full")
REAPED = "interrupted: its worker stopped renewing its lease"


class JobNotFound(UsageError):
    """No job with that id in the queue."""


class QueueUnavailable(StorageUnavailable):
    """The queue's database cannot be read or written (locked, damaged, unwritable): exit 3."""

    topic = "run-store-unavailable"


@dataclass
class Job:
    id: str
    repository: str
    commit: str
    project: str
    mode: str
    branch: str
    state: str
    attempts: int
    run_id: str | None
    error: str | None
    lease_owner: str | None  # the worker holding it while running; afterwards, the last one that did
    lease_until: float | None  # epoch seconds; set only while running
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


_COLUMNS = [f.name for f in fields(Job)]

# Each component of the server keeps its tables in the same file (the poller has its own), so the version
# of this part of the schema lives in a row of its own rather than in the file-wide PRAGMA user_version.
_COMPONENT = "queue"
_MIGRATIONS: list[str] = [
    # 1: the jobs table. queued_at orders the queue: a retried job goes to the back, a re-queued one
    # (its worker died, an infrastructure failure) keeps its place.
    """
    CREATE TABLE IF NOT EXISTS jobs (
        {SEQ}
        id TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        "commit" TEXT NOT NULL,
        project TEXT NOT NULL,
        mode TEXT NOT NULL,
        branch TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        run_id TEXT,
        error TEXT,
        lease_owner TEXT,
        lease_until REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        queued_at REAL NOT NULL,
        UNIQUE (repository, "commit", project, mode)
    );
    CREATE INDEX IF NOT EXISTS jobs_state_queued ON jobs (state, queued_at);
    CREATE INDEX IF NOT EXISTS jobs_state_repository ON jobs (state, repository);
    CREATE INDEX IF NOT EXISTS jobs_branch ON jobs (repository, branch, project, mode, state);
    CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

_READY: set[str] = set()
# the lease a write must carry: the claim's worker and attempt (a re-claim by the same worker name is a new lease)
_LEASE = "id = ? AND lease_owner = ? AND state = 'running' AND attempts = ?"


class Queue:
    """Jobs in one SQLite file or PostgreSQL database, shared by every worker thread and process of
    the server (and, on PostgreSQL, by every server using it)."""

    def __init__(self, path: str | os.PathLike, lease_seconds: float | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:
        """``path``: a SQLite file, or a ``postgresql://`` URL. ``lease_seconds``: None for the runs'
        lease (SOOPERVISOR_LEASE_SECONDS, else 30 s)."""
        self._db = dbm.open_database(path, QueueUnavailable)
        self.database = self._db.name  # how it is named in messages: a URL never shows a password
        self.path: Path | None = self._db.path  # the SQLite file; None on PostgreSQL
        self.lease_seconds = float(lease_seconds) if lease_seconds else runs.lease_seconds()
        self._clock = clock
        self._key = str(path)
        self._prepare(create=True)

    # -- the connection ---------------------------------------------------------------------

    def _prepare(self, create: bool = False) -> None:
        """WAL and the schema, properties of the file: set once per process, and again after an error.

        Only the constructor creates the file: a database gone while the server runs (a lost mount,
        the file moved aside) is an error until it is back, never silently a new empty queue.
        """
        if self._key in _READY:
            return
        with self._tx(write=False, prepare=False, create=create) as db:
            if self._db.dialect == "sqlite":
                db.execute("PRAGMA journal_mode=WAL")
            current = dbm.version(self._db, db, _COMPONENT) >= SCHEMA_VERSION  # a newer schema only adds
        if not current:  # the write lock only when there is something to migrate
            with self._tx(prepare=False) as db:
                dbm.migrate(self._db, db, _COMPONENT, _MIGRATIONS)
        _READY.add(self._key)

    @contextlib.contextmanager
    def _tx(self, write: bool = True, *, prepare: bool = True, create: bool = False) -> Iterator[Any]:
        """A connection; with ``write``, inside a write transaction (``BEGIN IMMEDIATE`` on SQLite) …
        ``COMMIT``, rolled back on error. The database's errors become a one-line QueueUnavailable.
        """
        if prepare:
            self._prepare()
        with self._db.transaction(self._unavailable, write=write, create=create) as conn:
            yield conn

    def _unavailable(self, e: Exception) -> QueueUnavailable:
        if self.path is None:
            _READY.discard(self._key)  # it may have been recreated meanwhile: check its schema again
            return QueueUnavailable(f"cannot use the server's database {self.database}: {dbm.reason(e)}",
                                    dbm.postgres_hint(e))
        reason = str(e)
        busy = "locked" in reason or "busy" in reason
        if not busy:
            _READY.discard(self.path)  # the file may have changed: check its schema on the next call
        if any(w in reason for w in ("not a database", "malformed", "corrupt")):
            return QueueUnavailable(
                f"the server's database {self.path} is damaged ({reason})",
                f"stop the server and move it aside (mv '{self.path}' '{self.path}.broken'); a new one starts "
                "empty: repositories are polled again and their current heads queued",
            )
        if not self.path.exists():
            return QueueUnavailable(f"the server's database {self.path} is gone",
                                    "put it back (a lost mount, a file moved aside); starting the server again "
                                    "begins a new, empty one")
        if not busy and _disk_free(self.path.parent) < 1 << 20:  # SQLite says only "disk I/O error"
            return QueueUnavailable(f"the disk of the server's database {self.path} is full ({reason})",
                                    "free space on it (df -h); the server goes on by itself once there is room")
        if busy:
            hint = f"another process held it longer than {BUSY_TIMEOUT:g}s; try again in a moment"
        else:
            hint = "check that `database` in server.yaml (or the data folder) names a file you can write"
        return QueueUnavailable(f"cannot use the server's database {self.path}: {reason}", hint)

    # -- adding and claiming -------------------------------------------------------------------

    def enqueue(self, repository: str, commit: str, project: str, mode: str, branch: str,
                *, supersede: bool = False) -> Job | None:
        """Queue a job; None when (repository, commit, project, mode) has a record already.

        ``supersede``: the queued (not running) jobs of the same repository, branch, project and mode
        are cancelled, "superseded by <commit>" — only when this job is new.
        """
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
        now = self._clock()
        job = Job(id=uuid.uuid4().hex[:12], repository=repository, commit=commit, project=project, mode=mode,
                  branch=branch, state="queued", attempts=0, run_id=None, error=None, lease_owner=None,
                  lease_until=None, created_at=now, updated_at=now)
        row = job.to_dict()
        with self._tx() as db:
            inserted = db.execute(
                f"INSERT INTO jobs ({_QUOTED}, queued_at) VALUES ({', '.join('?' * len(_COLUMNS))}, ?) "
                "ON CONFLICT DO NOTHING",
                [*(row[c] for c in _COLUMNS), now],
            ).rowcount
            if not inserted:
                return None
            if supersede:
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', error = ?, updated_at = ? WHERE repository = ? "
                    "AND branch = ? AND project = ? AND mode = ? AND state = 'queued' AND id != ?",
                    (f"superseded by {commit}", now, repository, branch, project, mode, job.id),
                )
        return job

    def claim(self, worker: str, *, concurrency: int = 1, per_repository: int = 1) -> Job | None:
        """The oldest queued job this worker may run, now running under its lease; None when there is none.

        ``concurrency`` bounds running jobs overall (every worker sharing this file), ``per_repository``
        those of one repository. Running jobs with an expired lease still count until ``reap``.
        """
        now = self._clock()
        postgres = self._db.dialect == "postgresql"
        with self._tx() as db:
            if postgres:  # claims one at a time across servers: the counts below stay true until COMMIT
                db.execute("SELECT pg_advisory_xact_lock(?)", (_CLAIM_LOCK,))
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            if running >= concurrency:
                return None
            row = db.execute(
                "SELECT * FROM jobs WHERE state = 'queued' AND repository NOT IN ("
                "  SELECT repository FROM jobs WHERE state = 'running' GROUP BY repository HAVING COUNT(*) >= ?"
                f") ORDER BY queued_at, {self._db.order} LIMIT 1" + (" FOR UPDATE SKIP LOCKED" if postgres else ""),
                (per_repository,),
            ).fetchone()
            if row is None:
                return None
            until = now + self.lease_seconds
            if db.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1, "
                "updated_at = ? WHERE id = ? AND state = 'queued'",
                (worker, until, now, row["id"]),
            ).rowcount != 1:
                return None  # cannot happen under either lock; never hand out a job that was not claimed
        job = _from_row(row)
        job.state, job.lease_owner, job.lease_until, job.updated_at = "running", worker, until, now
        job.attempts += 1
        return job

    # -- a worker's writes: each carries its lease -------------------------------------------------

    def _leased(self, job: Job, worker: str, sets: str, args: tuple) -> bool:
        with self._tx() as db:
            done = db.execute(f"UPDATE jobs SET {sets} WHERE {_LEASE}", (*args, job.id, worker, job.attempts))
            return done.rowcount == 1

    def renew(self, job: Job, worker: str) -> bool:
        """Extend the lease; False when it was lost (reaped, taken over, the job cancelled): stop the run."""
        now = self._clock()
        until = now + self.lease_seconds
        if not self._leased(job, worker, "lease_until = ?, updated_at = ?", (until, now)):
            return False
        job.lease_until, job.updated_at = until, now
        return True

    def attach_run(self, job: Job, worker: str, run_id: str) -> bool:
        """Record the run executing the job (the run store's id); False when the lease was lost."""
        now = self._clock()
        if not self._leased(job, worker, "run_id = ?, updated_at = ?", (run_id, now)):
            return False
        job.run_id, job.updated_at = run_id, now
        return True

    def finish(self, job: Job, worker: str, state: str, error: str | None = None) -> bool:
        """End the job as its run ended (a failed pipeline stays failed); False when the lease was lost."""
        if state not in FINAL_STATES:
            raise ValueError(f"a job finishes as one of {FINAL_STATES}, not {state!r}")
        now = self._clock()
        if not self._leased(job, worker, "state = ?, error = ?, lease_until = NULL, updated_at = ?",
                            (state, error, now)):
            return False
        job.state, job.error, job.lease_until, job.updated_at = state, error, None, now
        return True

    def release(self, job: Job, worker: str, error: str, *, max_attempts: int) -> str:
        """An infrastructure failure (no checkout, Docker or storage down): the job's state afterwards.

        "queued" again while attempts < max_attempts, else "failed" ("gave up after N attempts: …").
        When the lease was lost nothing is written, and the record's current state is returned.
        """
        now = self._clock()
        with self._tx() as db:
            done = db.execute(
                "UPDATE jobs SET state = CASE WHEN attempts < ? THEN 'queued' ELSE 'failed' END, "
                "error = CASE WHEN attempts < ? THEN CAST(? AS TEXT) "
                "ELSE 'gave up after ' || attempts || ' attempts: ' || CAST(? AS TEXT) END, "
                f"lease_until = NULL, updated_at = ? WHERE {_LEASE}",
                (max_attempts, max_attempts, error, error, now, job.id, worker, job.attempts),
            ).rowcount
            row = db.execute("SELECT state, error FROM jobs WHERE id = ?", (job.id,)).fetchone()
        if row is None:
            raise self._not_found(job.id)
        if done:
            job.state, job.error, job.lease_until, job.updated_at = row["state"], row["error"], None, now
        return row["state"]

    def reap(self, *, max_attempts: int) -> list[Job]:
        """Running jobs whose lease expired: queued again while attempts < max_attempts, else interrupted.

        Returns them as they are now (``lease_owner`` names the worker that stopped): whoever reaps
        removes what that worker left behind (its containers, by label).
        """
        now = self._clock()
        touched = []
        # on PostgreSQL the rows are locked (another server reaping at once skips them) and a renew that
        # commits first is seen; each UPDATE still checks state and attempts, and only a changed row counts
        lock = " FOR UPDATE SKIP LOCKED" if self._db.dialect == "postgresql" else ""
        with self._tx() as db:
            for row in db.execute(f"SELECT * FROM jobs WHERE state = 'running' AND lease_until < ?{lock}",
                                  (now,)).fetchall():
                job = _from_row(row)
                if job.attempts < max_attempts:
                    job.state, job.error = "queued", REAPED
                else:
                    job.state, job.error = "interrupted", f"{REAPED} ({job.attempts} of {max_attempts} attempts)"
                job.lease_until, job.updated_at = None, now
                if db.execute(
                    "UPDATE jobs SET state = ?, error = ?, lease_until = NULL, updated_at = ? "
                    "WHERE id = ? AND state = 'running' AND attempts = ?",
                    (job.state, job.error, now, job.id, job.attempts),
                ).rowcount == 1:
                    touched.append(job)
        return touched

    # -- what people do -------------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job (its worker learns on its next renew); False when it had ended."""
        now = self._clock()
        with self._tx() as db:
            done = db.execute(
                "UPDATE jobs SET state = 'cancelled', error = 'cancelled by request', lease_until = NULL, updated_at = ? "
                "WHERE id = ? AND state IN ('queued', 'running')",
                (now, job_id),
            ).rowcount
            if not done and db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise self._not_found(job_id)
        return bool(done)

    def retry(self, job_id: str) -> Job | None:
        """Queue a finished job again, a new attempt on the same record (to the back of the queue).

        None when it is queued or running already.
        """
        now = self._clock()
        with self._tx() as db:
            done = db.execute(
                "UPDATE jobs SET state = 'queued', run_id = NULL, error = NULL, lease_until = NULL, "
                f"updated_at = ?, queued_at = ? WHERE id = ? AND state IN ({', '.join('?' * len(FINAL_STATES))})",
                (now, now, job_id, *FINAL_STATES),
            ).rowcount
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise self._not_found(job_id)
        return _from_row(row) if done else None

    def submit(self, repository: str, commit: str, project: str, mode: str, branch: str = "") -> tuple[Job, bool]:
        """A run asked for through the API: ``(job, queued_now)``.

        A new job, or the ended job of the same (repository, commit, project, mode) queued again (a
        person asked for it again, as a retry): queued_now True. The job already queued or running
        for that key: queued_now False (the caller follows it). Never supersedes anything.
        """
        job = self.enqueue(repository, commit, project, mode, branch)
        if job is not None:
            return job, True
        existing = self.find(repository, commit, project, mode)
        if existing is None:  # removed in between (a database moved aside): queue it anew
            job = self.enqueue(repository, commit, project, mode, branch)
            if job is not None:
                return job, True
            existing = self.find(repository, commit, project, mode)
            if existing is None:
                raise QueueUnavailable(f"the job of {repository}@{commit[:12]} {project} {mode} keeps vanishing",
                                       "try again; check that nothing else rewrites the server's database")
        if existing.finished:
            again = self.retry(existing.id)
            if again is not None:
                return again, True
            existing = self.get(existing.id)  # another request queued it again first
        return existing, False

    def find(self, repository: str, commit: str, project: str, mode: str) -> Job | None:
        """The job of (repository, commit, project, mode), if any (there is at most one)."""
        with self._tx(write=False) as db:
            row = db.execute('SELECT * FROM jobs WHERE repository = ? AND "commit" = ? AND project = ? AND mode = ?',
                             (repository, commit, project, mode)).fetchone()
        return _from_row(row) if row is not None else None

    def get(self, job_id: str) -> Job:
        with self._tx(write=False) as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise self._not_found(job_id)
        return _from_row(row)

    def list(self, *, repository: str | None = None, state: str | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""
        if state is not None and state not in JOB_STATES:
            raise ValueError(f"unknown job state {state!r}; one of {JOB_STATES}")
        where, args = [], []
        if repository is not None:
            where.append("repository = ?")
            args.append(repository)
        if state is not None:
            where.append("state = ?")
            args.append(state)
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += f" ORDER BY created_at DESC, {self._db.order} DESC LIMIT ?"
        with self._tx(write=False) as db:
            return [_from_row(r) for r in db.execute(sql, [*args, limit])]

    def counts(self) -> dict[str, int]:
        """Jobs by state, every state present (0 when none)."""
        with self._tx(write=False) as db:
            found = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()}
        return {state: found.get(state, 0) for state in JOB_STATES}

    def _not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no job {job_id!r} in the queue",
                           "list the queue's jobs (newest first) to find the id; ids are 12 hex digits")


_QUOTED = ", ".join(f'"{c}"' for c in _COLUMNS)  # "commit" is an SQL keyword
#: the advisory lock a claim holds on PostgreSQL (the same key in every server)
_CLAIM_LOCK = dbm.advisory_key("queue.claim")


def _from_row(row: Any) -> Job:
    return Job(**{k: row[k] for k in _COLUMNS})


def _disk_free(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62  # cannot tell: not the reason given

"""The run model and its SQLite store.

One record per run, the same everywhere (CLI, Python API, Jupyter, servers).
Each state change is written as it happens, so another process (the notebook,
the sidebar) sees a run go from running to succeeded without asking us.

A running run has an owner — the process executing it (host, pid, process
start time) — and a lease that the owner renews. ``owner_gone`` says, from the
record alone, whether that owner is gone; the run service then reaps the run
(marks it interrupted with a conditional update, so two readers never both act).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import config
from .errors import StorageUnavailable

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
#: how long a lease lasts unless SOOPERVISOR_LEASE_SECONDS says otherwise; renewed every third of it
DEFAULT_LEASE_SECONDS = 30.0


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def lease_seconds() -> float:
    """The lease period: ``SOOPERVISOR_LEASE_SECONDS`` (a positive number), else 30 s."""
    raw = os.environ.get("SOOPERVISOR_LEASE_SECONDS", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_LEASE_SECONDS
    return value if 0.3 <= value < 86400 * 7 else DEFAULT_LEASE_SECONDS  # nan and inf fail both tests


def lease_until(seconds: float | None = None) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=seconds or lease_seconds()))


class RunStoreUnavailable(StorageUnavailable):
    """The run history cannot be read or written (corrupt, unreadable, locked): exit 3, never a traceback."""

    topic = "run-store-unavailable"


@dataclass
class Run:
    project: str
    project_path: str
    commit: str
    dirty: bool
    mode: str  # "sample" | "full"
    status: str = "queued"
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    log_path: str | None = None
    storage_url: str | None = None
    image: str | None = None
    failed_task: str | None = None
    error: str | None = None  # redacted one-line reason when the run did not finish normally
    # why it failed, said plainly (redacted): what to do about it (a missing module, a host the
    # container could not reach), and for a notebook or script task the failing cell read from
    # its partially executed notebook, with its error and where that notebook was stored
    hint: str | None = None
    failed_cell: str | None = None
    cell_error: str | None = None
    partial_notebook: str | None = None
    # the stage announced last (redacted), found on the raw log: a secret that happens to match
    # our markers (`so`) cannot hide it from the widget or the REST API
    stage: str | None = None
    # task-level progress, from the build stage's task events (redacted): the task started last
    # (or that failed), how many tasks ended and how many the build has; a failed task's exception line
    task: str | None = None
    tasks_done: int | None = None
    tasks_total: int | None = None
    task_error: str | None = None
    tasks_up_to_date: int | None = None  # tasks ploomber skipped as up to date (incremental runs); not in total
    # the owner: the process that executes the run, and until when it promised to be alive
    owner_host: str | None = None
    owner_pid: int | None = None
    owner_started: str | None = None  # the owner process's start time (pid reuse is detected)
    lease_until: str | None = None
    executor: str | None = None  # where it ran, e.g. "docker" or "docker at tcp://build:2376"
    # the configured engine it ran on, by name (executors.yaml, or "local"): stop, reap and adopt
    # find its containers on that engine
    engine: str | None = None
    # a run on a remote (a team server, GitHub Actions), by the remote's name; this record is fed by
    # the remote's follower (soopervisor/remotes), and ``remote_ref`` (JSON) is its handle there
    remote: str | None = None
    remote_ref: str | None = None

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    @property
    def ref(self) -> dict[str, Any]:
        """The remote's handle of this run ({} for a run of this machine's engines)."""
        import json

        try:
            value = json.loads(self.remote_ref) if self.remote_ref else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def where(self) -> str:
        """Where it ran, in a word or two: the remote's name, else the engine's (``local``)."""
        if self.remote:
            return self.remote
        return self.engine or "local"

    @property
    def set_id(self) -> str:
        """The run id its artifact set is stored under: the remote's own run id for a remote run."""
        run = self.ref.get("run")
        return run if isinstance(run, str) and run else self.id

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def finished(self) -> bool:
        """Whether the run has ended, in whatever way."""
        return self.status not in ("queued", "running")

    @property
    def duration(self) -> float | None:
        if not (self.started_at and self.finished_at):
            return None
        return (parse_iso(self.finished_at) - parse_iso(self.started_at)).total_seconds()

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Run:
        """Block until the run has finished, whichever process runs it; returns this Run, refreshed.

        Reads go through the run service, so a run whose owner died ends here
        as ``interrupted`` instead of being waited for forever.
        """
        from .service import RunService  # the service builds on this module; imported when used

        service = RunService()
        deadline = time.monotonic() + timeout if timeout is not None else None
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {self.status} after {timeout:g}s")
            time.sleep(poll)
            fresh = service.find(self.id)
            if fresh is not None:
                self.refresh_from(fresh)
        return self

    def refresh_from(self, other: Run) -> None:
        for name in _COLUMNS:
            setattr(self, name, getattr(other, name))

    def to_dict(self) -> dict[str, Any]:
        # every field is a plain value: a shallow copy (asdict deep-copies, and
        # the runs list of the sidebar serialises thousands of these)
        return {name: getattr(self, name) for name in _COLUMNS}

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.project}@{self.short_commit} {self.mode} {self.status}>"


# -- owners ------------------------------------------------------------------------------


#: the inode of the first pid namespace, the same on every Linux kernel (PROC_PID_INIT_INO)
_INIT_PID_NS = 0xEFFFFFFC


def this_host() -> str:
    """Where owner pids mean something: the host name, plus the pid namespace inside a container.

    A container started with the host's network (and so its host name) has pids
    of its own; a reader outside it must not judge its owners by pid.
    """
    name = socket.gethostname()
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return name
    return name if namespace == _INIT_PID_NS else f"{name}/pidns-{namespace}"


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (ISO, UTC), from /proc; None when unknown, gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # the command name (field 2) may hold spaces and parentheses: fields start after the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie or a dead task is gone
        return None
    seconds = int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return iso(datetime.fromtimestamp(seconds, UTC))


def pid_alive(pid: int) -> bool | None:
    """Whether ``pid`` is a live process on this machine; None when this system cannot tell."""
    if pid <= 0:
        return False  # os.kill(0 or -1, 0) would ask about whole process groups
    if sys.platform == "win32":
        return None  # os.kill(pid, 0) would send CTRL_C_EVENT there: rely on the lease
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    except OSError:
        return None
    if Path("/proc").is_dir() and Path(f"/proc/{os.getpid()}/stat").exists():
        return process_started(pid) is not None  # a zombie is a dead owner
    return True


def same_process(recorded: str | None, current: str | None) -> bool:
    """Whether two start times name the same process.

    Start times are computed from the boot time, which moves when the clock is
    stepped; a pid reused within a second of its first owner's start is not
    something a system does, so one second of tolerance is safe.
    """
    if recorded is None or current is None:
        return True  # nothing to compare: the pid check decides
    try:
        return abs((parse_iso(recorded) - parse_iso(current)).total_seconds()) < 1.0
    except ValueError:
        return recorded == current


def owner_gone(run: Run, host: str, now: datetime | None = None) -> str | None:
    """Why the owner of a running ``run`` is gone (one line), or None while it may be alive.

    On this host a dead pid, or a pid now held by another process, is known at
    once; any owner that let its lease expire is gone whatever its host. A
    running record without an owner (written by an older soopervisor) has the
    lease of a run that started when it says.
    """
    if run.status != "running":
        return None
    now = now or datetime.now(UTC)
    if run.owner_host == host and run.owner_pid:
        alive = pid_alive(run.owner_pid)
        if alive is False:
            return f"the process that ran it (pid {run.owner_pid}) is gone"
        if alive and not same_process(run.owner_started, process_started(run.owner_pid)):
            return f"the process that ran it (pid {run.owner_pid}) is gone; the pid belongs to another process now"
    expiry = run.lease_until or _legacy_lease(run)
    if expiry and parse_iso(expiry) < now:
        who = f"pid {run.owner_pid} on {run.owner_host}" if run.owner_pid else "an older soopervisor"
        return f"its owner ({who}) stopped renewing its lease (expired {expiry})"
    return None


def _legacy_lease(run: Run) -> str | None:
    if run.owner_pid or not run.started_at:
        return None
    try:
        return iso(parse_iso(run.started_at) + timedelta(seconds=lease_seconds()))
    except ValueError:
        return None


# -- the store ------------------------------------------------------------------------------

_COLUMNS = [f.name for f in dataclasses.fields(Run)]
_INTEGER = ("dirty", "exit_code", "owner_pid", "tasks_done", "tasks_total", "tasks_up_to_date")
_QUOTED = ", ".join(f'"{c}"' for c in _COLUMNS)  # "commit" is an SQL keyword
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    {", ".join(f'"{c}" {"INTEGER" if c in _INTEGER else "TEXT"}' for c in _COLUMNS)},
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS runs_project_started ON runs (project, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
"""


_READY: set[Path] = set()


class RunStore:
    """Runs in one SQLite file (``config.runs_db()`` by default).

    A connection per call keeps it safe across threads and processes; WAL
    lets readers (the sidebar) read while a run writes. Reads here are plain
    reads: the run service reaps runs whose owner is gone before it answers.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else config.runs_db()
        if self.path in _READY and self.path.exists():
            return  # WAL and schema are properties of the file: set once per process
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunStoreUnavailable(
                f"cannot create the folder of the run history {self.path.parent}: {e.strerror or e}",
                "SOOPERVISOR_HOME (or the data folder) must name a folder you can write",
            ) from None
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            _migrate(db)
        _READY.add(self.path)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction; SQLite's errors become a plain RunStoreUnavailable."""
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as e:
            raise self._unavailable(e) from None
        try:
            db.row_factory = sqlite3.Row
            with db:
                yield db
        except sqlite3.Error as e:
            raise self._unavailable(e) from None
        finally:
            db.close()

    def _unavailable(self, e: sqlite3.Error) -> RunStoreUnavailable:
        _READY.discard(self.path)
        reason = str(e)
        if isinstance(e, sqlite3.DatabaseError) and any(
            word in reason for word in ("not a database", "malformed", "corrupt")
        ):
            return RunStoreUnavailable(
                f"the run history {self.path} is damaged ({reason})",
                f"move it aside (mv '{self.path}' '{self.path}.broken'); soopervisor starts a new one, "
                "stored artifacts are not affected",
            )
        if "locked" in reason or "busy" in reason:
            hint = "another soopervisor process holds it; try again in a moment"
        else:
            hint = "check that SOOPERVISOR_HOME (or the data folder) is a folder you can write"
        return RunStoreUnavailable(f"cannot use the run history {self.path}: {reason}", hint)

    def add(self, run: Run) -> Run:
        row = run.to_dict()
        with self._db() as db:
            db.execute(
                f"INSERT INTO runs ({_QUOTED}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [row[c] for c in _COLUMNS],
            )
        return run

    def update(self, run: Run, **changes: Any) -> Run:
        """Set ``changes`` on ``run`` and write them to the store at once."""
        _check(changes)
        for k, v in changes.items():
            setattr(run, k, v)
        with self._db() as db:
            db.execute(
                "UPDATE runs SET " + ", ".join(f'"{k}" = ?' for k in changes) + " WHERE id = ?",
                [*changes.values(), run.id],
            )
        return run

    def update_if(self, run_id: str, expect: dict[str, Any], **changes: Any) -> bool:
        """Write ``changes`` only where the record still holds ``expect``; whether it did.

        One statement, so of two processes acting on what they both read, one wins.
        """
        _check(changes)
        unknown = set(expect) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        where = " AND ".join(f'"{k}" IS ?' for k in expect)  # IS: NULL matches NULL
        with self._db() as db:
            cursor = db.execute(
                "UPDATE runs SET " + ", ".join(f'"{k}" = ?' for k in changes) + f" WHERE id = ? AND {where}",
                [*changes.values(), run_id, *expect.values()],
            )
            return cursor.rowcount == 1

    def get(self, run_id: str) -> Run | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _from_row(row) if row else None

    def following(self) -> list[Run]:
        """Every remote run not yet ended (queued or running), of any owner."""
        with self._db() as db:
            return [_from_row(r) for r in db.execute(
                "SELECT * FROM runs WHERE remote IS NOT NULL AND status IN ('queued', 'running')")]

    def running(self) -> list[Run]:
        """Every run recorded as running, of any owner."""
        with self._db() as db:
            return [_from_row(r) for r in db.execute("SELECT * FROM runs WHERE status = 'running'")]

    def list(self, project: str | None = None, limit: int | None = None) -> list[Run]:
        """Newest first."""
        sql, args = "SELECT * FROM runs", []
        if project:
            sql += " WHERE project = ?"
            args.append(project)
        sql += " ORDER BY started_at DESC, rowid DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        with self._db() as db:
            return [_from_row(r) for r in db.execute(sql, args)]


def _check(changes: dict[str, Any]) -> None:
    unknown = set(changes) - set(_COLUMNS)
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")
    if changes.get("status", "running") not in STATUSES:
        raise ValueError(f"unknown run status {changes['status']!r}; one of {STATUSES}")


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns a runs.sqlite of an older soopervisor lacks (owner, lease, executor, task progress)."""
    have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for column in _COLUMNS:
        if column in have:
            continue
        kind = "INTEGER" if column in _INTEGER else "TEXT"
        try:
            db.execute(f'ALTER TABLE runs ADD COLUMN "{column}" {kind}')
        except sqlite3.OperationalError as e:
            if "duplicate column" not in str(e):  # another process migrated it meanwhile
                raise


def _from_row(row: sqlite3.Row) -> Run:
    d = {k: v for k, v in dict(row).items() if k in _COLUMNS}  # a newer soopervisor's extra columns are left out
    d["dirty"] = bool(d["dirty"])
    return Run(**d)

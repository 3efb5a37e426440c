"""The run model and its SQLite store.

One record per run, the same everywhere (CLI, Python API, Jupyter, servers).
Each state change is written as it happens, so another process (the notebook,
the sidebar) sees a run go from running to succeeded without asking us.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import config

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

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
        start = datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))
        end = datetime.fromisoformat(self.finished_at.replace("Z", "+00:00"))
        return (end - start).total_seconds()

    def wait(self, timeout: float | None = None, poll: float = 0.2) -> Run:
        """Block until the run has finished, whichever process runs it; returns this Run, refreshed."""
        store = RunStore()
        deadline = time.monotonic() + timeout if timeout is not None else None
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.id} is still {self.status} after {timeout:g}s")
            time.sleep(poll)
            fresh = store.get(self.id)
            if fresh is not None:
                for name in _COLUMNS:
                    setattr(self, name, getattr(fresh, name))
        return self

    def to_dict(self) -> dict[str, Any]:
        # every field is a plain value: a shallow copy (asdict deep-copies, and
        # the runs list of the sidebar serialises thousands of these)
        return {name: getattr(self, name) for name in _COLUMNS}

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.project}@{self.short_commit} {self.mode} {self.status}>"


_COLUMNS = [f.name for f in dataclasses.fields(Run)]
_QUOTED = ", ".join(f'"{c}"' for c in _COLUMNS)  # "commit" is an SQL keyword
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    {", ".join(f'"{c}" {"INTEGER" if c in ("dirty", "exit_code") else "TEXT"}' for c in _COLUMNS)},
    PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS runs_project_started ON runs (project, started_at);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
"""


_READY: set[Path] = set()


class RunStore:
    """Runs in one SQLite file (``config.runs_db()`` by default).

    A connection per call keeps it safe across threads and processes; WAL
    lets readers (the sidebar) read while a run writes.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else config.runs_db()
        if self.path in _READY and self.path.exists():
            return  # WAL and schema are properties of the file: set once per process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
        _READY.add(self.path)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def add(self, run: Run) -> Run:
        row = run.to_dict()
        with self._connect() as db:
            db.execute(
                f"INSERT INTO runs ({_QUOTED}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [row[c] for c in _COLUMNS],
            )
        return run

    def update(self, run: Run, **changes: Any) -> Run:
        """Set ``changes`` on ``run`` and write them to the store at once."""
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        if changes.get("status", "running") not in STATUSES:
            raise ValueError(f"unknown run status {changes['status']!r}; one of {STATUSES}")
        for k, v in changes.items():
            setattr(run, k, v)
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET " + ", ".join(f'"{k}" = ?' for k in changes) + " WHERE id = ?",
                [*changes.values(), run.id],
            )
        return run

    def get(self, run_id: str) -> Run | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _from_row(row) if row else None

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
        with self._connect() as db:
            return [_from_row(r) for r in db.execute(sql, args)]


def _from_row(row: sqlite3.Row) -> Run:
    d = dict(row)
    d["dirty"] = bool(d["dirty"])
    return Run(**d)

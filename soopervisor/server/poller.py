"""Polling the served repositories: one `git ls-remote` each, a fetch only when a wanted head moved.

The heads the server has seen (per repository and branch), when each repository was
polled, its last error and its consecutive failures live in two tables of the server's
database (``poll_repos``, ``poll_heads``), next to the queue's, SQLite or PostgreSQL
(db.py): a restarted server resumes where it stopped. New heads are enqueued before they are recorded, so a crash in
between enqueues them again at worst, which the queue ignores (one job per commit).

Commits are fetched into a bare mirror per repository (``<mirrors>/<name>.git``) and
checked out from there for the worker, so a run never asks the remote again.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import SoopervisorError, StorageUnavailable, UsageError
from . import db as dbm
from .config import git_env, key_problem, reach_hint, redact_url
from .db import BUSY_TIMEOUT, immediate

if TYPE_CHECKING:
    from .config import Repository, ServerConfig
    from .queue import Queue

#: seconds a git call may take before it is killed (an unreachable host must not stall the round)
GIT_TIMEOUT = 60.0
#: the longest wait between polls of a failing remote (or the poll interval, when longer)
BACKOFF_CAP = 1800.0
#: the interval is stretched or shrunk by up to this fraction, so polls of many repositories spread out
JITTER = 0.1
#: a remote URL must not make git run a command (ext::), as config's check makes sure too
_NO_EXT = ["-c", "protocol.ext.allow=never"]

#: the poller's tables, versioned in the file's ``schema_versions`` table (shared with the queue) as
#: component "poller"; _MIGRATIONS[n] takes the schema from version n to n + 1
_COMPONENT = "poller"
_MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS poll_repos (
        name TEXT PRIMARY KEY,
        url TEXT,
        paused INTEGER NOT NULL DEFAULT 0,
        poll_now REAL NOT NULL DEFAULT 0,
        last_poll REAL,
        last_success REAL,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        next_poll REAL,
        last_seconds REAL
    );
    CREATE TABLE IF NOT EXISTS poll_heads (
        repository TEXT NOT NULL,
        branch TEXT NOT NULL,
        sha TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (repository, branch)
    )
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


class PollerStoreUnavailable(StorageUnavailable):
    """The poller's tables cannot be read or written: exit 3."""

    topic = "run-store-unavailable"


class UnknownRepository(UsageError):
    """pause/resume/poll_now of a name the configuration does not serve."""


class CheckoutError(SoopervisorError):
    """A commit could not be checked out from the mirror (the machine's problem, not the commit's)."""

    exit_code = 3
    topic = "server-checkout"


@dataclass
class PollResult:
    repository: str
    heads: dict[str, str]  # the wanted branches' heads after this poll
    new: list[tuple[str, str]]  # (branch, commit) enqueued by this poll
    fetched: bool
    error: str | None
    seconds: float


@dataclass
class RepoStatus:
    name: str
    url: str  # credentials removed
    paused: bool
    poll_now: bool
    last_poll: float | None  # clock time of the last attempt
    last_success: float | None
    last_error: str | None  # of the last attempt; None when it succeeded
    failures: int  # consecutive failed polls
    next_poll: float | None  # None: never polled, due now
    last_seconds: float | None  # how long the last poll took
    heads: dict[str, str] = field(default_factory=dict)


# -- git ---------------------------------------------------------------------------------------


def _env(repo: Repository) -> dict[str, str]:
    """config's git environment (no prompt, the deploy key), with git's messages in English."""
    return {**git_env(repo), "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


def _redact(text: str, url: str) -> str:
    from ..redact import CREDENTIALS

    return CREDENTIALS.redact(redact_url(text, url))


def _origin_url(url: str) -> str:
    """The URL without its credentials, for a checkout's ``origin`` (only its last part names the project)."""
    m = re.match(r"(?i)([a-z][a-z0-9+.-]*://)[^/@\s]+@", url)
    return m.group(1) + url[m.end():] if m else url


def _run_git(git: str, args: list[str], *, env: dict[str, str], cwd: str | Path | None = None,
             timeout: float = GIT_TIMEOUT, stdin: str | None = None) -> tuple[int, str, str]:
    """(exit code, stdout, stderr). A timeout kills git's whole process group (ssh and helpers
    would otherwise keep the pipes open); exit code -1 then, or when git cannot be started."""
    posix = sys.platform != "win32"
    try:
        proc = subprocess.Popen([git, *args], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=posix)
    except OSError as e:
        return -1, "", f"cannot run {git}: {e.strerror or e}"
    # a timer kills it, rather than communicate(timeout=...), whose wait for the exit polls with sleeps
    # (a quarter of a millisecond per call on average: a tenth of an ls-remote on loopback)
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            if posix:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        out, err = proc.communicate(None if stdin is None else stdin.encode())
    finally:
        timer.cancel()
    if expired.is_set():
        return -1, "", f"git {_subcommand(args)} timed out after {timeout:g}s"
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _subcommand(args: list[str]) -> str:
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in ("-c", "-C", "--git-dir") else 1
    return args[i] if i < len(args) else ""


def _git_error(what: str, err: str, url: str) -> str:
    """One redacted line: git's last lines of reason, without the boilerplate it adds after them."""
    lines = [line.strip().removeprefix("fatal: ").removeprefix("error: ") for line in err.splitlines()]
    said = "; ".join([line for line in lines if line and not line.startswith(_BOILERPLATE)][-3:])
    return _redact(f"{what}: {said}" if said else f"{what} failed", url)


_BOILERPLATE = ("Could not read from remote repository", "Please make sure you have the correct access",
                "and the repository exists")


def _parse_ls_remote(out: str) -> dict[str, str]:
    heads = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            heads[ref[len("refs/heads/"):]] = sha
    return heads


def mirror_name(name: str) -> str:
    """A file-name-safe form of the repository's name; a hash tells apart names made equal by it."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip(".") or "repository"
    return safe if safe == name else f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


# -- the poller --------------------------------------------------------------------------------


class Poller:
    """Polls ``config.repositories`` and enqueues their new heads into ``queue``.

    Safe to use from several threads (each call opens its own connection); two pollers on one
    file enqueue a head at most once between them, the queue keeping one job per commit.
    """

    def __init__(self, config: ServerConfig, queue: Queue, *, git: str = "git",
                 clock: Callable[[], float] = time.time, timeout: float = GIT_TIMEOUT) -> None:
        self.config, self.queue, self.git, self.clock, self.timeout = config, queue, git, clock, timeout
        self._database = dbm.open_database(config.database)
        self.path: Path | None = self._database.path  # the SQLite file; None on PostgreSQL
        self._migrated = False  # on PostgreSQL: the schema checked by this object (again after an error)
        self.mirrors = Path(config.mirrors).expanduser().resolve()
        self._random = random.Random()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PollerStoreUnavailable(f"cannot create the folder of {self.path}: {e.strerror or e}",
                                         "the server's database must be in a folder it can write") from None
        self._local = threading.local()
        self._create = True  # only now: a file gone later is an error until it is back, never a new one
        with self._db():
            pass  # the schema, now: a configuration naming an unusable file fails at start
        self._create = False

    # -- storage ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, kept open: opening one per call and closing it made SQLite
        checkpoint the WAL at every close, doubling the cost of a poll where nothing changed.
        A new one after a fork, or when the file was replaced or removed (the schema then made again)."""
        local = self._local
        try:
            ino = os.stat(self.path).st_ino
        except OSError:
            ino = None
        db = getattr(local, "db", None)
        if db is not None and (local.pid != os.getpid() or local.ino != ino):
            with contextlib.suppress(sqlite3.Error):
                db.close()
            db = local.db = None
        if db is None:
            mode = "rwc" if self._create else "rw"
            db = sqlite3.connect(f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode={mode}", uri=True,
                                 timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            # a head lost to a power cut is enqueued again, which the queue ignores: no fsync per poll
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_mode=WAL")  # once per connection: a file made anew gets its schema
            with immediate(db):
                dbm.migrate(self._database, db, _COMPONENT, _MIGRATIONS)
            local.db, local.pid, local.ino = db, os.getpid(), os.stat(self.path).st_ino
        return db

    @contextlib.contextmanager
    def _db(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection; with ``write``, inside ``BEGIN IMMEDIATE`` (the write lock before
        the read that decides, as the queue does) … ``COMMIT``. SQLite's errors become
        PollerStoreUnavailable (and the connection is dropped, so the next call starts afresh).
        On PostgreSQL db.py keeps the connection and turns its errors the same way."""
        if self.path is None:
            if not self._migrated:
                with self._database.transaction(self._unavailable) as db:
                    dbm.migrate(self._database, db, _COMPONENT, _MIGRATIONS)
                self._migrated = True
            with self._database.transaction(self._unavailable, write=write) as db:
                yield db
            return
        try:
            db = self._connection()
            if not write:
                yield db
                return
            with immediate(db):
                yield db
        except (sqlite3.Error, OSError) as e:
            self._drop()
            raise self._unavailable(e) from None

    def _drop(self) -> None:
        db = getattr(self._local, "db", None)
        self._local.db = None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    def _unavailable(self, e: Exception) -> PollerStoreUnavailable:
        if self.path is None:
            self._migrated = False  # the database may have been recreated meanwhile
            return PollerStoreUnavailable(f"cannot use the poller's state in {self._database.name}: "
                                          f"{dbm.reason(e)}", dbm.postgres_hint(e))
        hint = ("another process holds it; try again in a moment" if "locked" in str(e) or "busy" in str(e)
                else "check that the database's folder is writable and the file is a SQLite database")
        return PollerStoreUnavailable(f"cannot use the poller's state in {self.path}: {e}", hint)

    def _stored_heads(self, db: sqlite3.Connection, name: str) -> dict[str, str]:
        return dict(db.execute("SELECT branch, sha FROM poll_heads WHERE repository = ?", (name,)))

    def _record(self, repo: Repository, *, now: float, started: float, seconds: float, error: str | None,
                heads: dict[str, str] | None = None, forget: tuple[str, ...] = ()) -> None:
        """The outcome of one poll: on success the heads to set and forget, on failure the error.

        A "poll now" asked for while this poll ran (after ``started``) stays set: the push that
        prompted it may have come after our ls-remote."""
        with self._db() as db:
            # FOR UPDATE on PostgreSQL: two servers recording one repository count its failures in turn
            row = db.execute(f"SELECT failures FROM poll_repos WHERE name = ?{self._database.for_update}",
                             (repo.name,)).fetchone()
            failures = 0 if error is None else (row[0] if row else 0) + 1
            next_poll = now + self._delay(failures)
            db.execute(
                "INSERT INTO poll_repos (name, url, last_poll, last_success, last_error, failures, next_poll,"
                " last_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " url = excluded.url, last_poll = excluded.last_poll,"
                " last_success = COALESCE(excluded.last_success, poll_repos.last_success), last_error = excluded.last_error,"
                " failures = excluded.failures, next_poll = excluded.next_poll,"
                " last_seconds = excluded.last_seconds,"
                " poll_now = CASE WHEN poll_repos.poll_now < ? THEN 0 ELSE poll_repos.poll_now END",  # qualified: PostgreSQL
                (repo.name, repo.shown_url, now, None if error else now, error, failures,
                 next_poll, seconds, started))
            if heads:
                db.executemany(
                    "INSERT INTO poll_heads (repository, branch, sha, seen_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(repository, branch) DO UPDATE SET sha = excluded.sha, seen_at = excluded.seen_at",
                    [(repo.name, b, sha, now) for b, sha in heads.items()])
            if forget:
                db.executemany("DELETE FROM poll_heads WHERE repository = ? AND branch = ?",
                               [(repo.name, b) for b in forget])

    def _delay(self, failures: int) -> float:
        """Seconds until the next poll: the interval, doubled per consecutive failure up to the cap,
        stretched or shrunk at random by up to JITTER."""
        interval = float(self.config.poll_interval)
        base = interval if failures == 0 else min(interval * 2.0 ** min(failures, 30), max(BACKOFF_CAP, interval))
        return base * self._random.uniform(1 - JITTER, 1 + JITTER)

    # -- polling ---------------------------------------------------------------------------

    def poll(self, repo: Repository) -> PollResult:
        """One ``git ls-remote``; when a wanted head moved or appeared, one fetch of those branches
        into the mirror and one job per (new head, project). Errors are recorded and returned, and
        the heads are then left as they were, so the next poll tries again."""
        start, now, started = time.perf_counter(), self.clock(), time.time()
        env = _env(repo)

        def failed(error: str) -> PollResult:
            seconds = time.perf_counter() - start
            with contextlib.suppress(StorageUnavailable):  # the database may be the problem
                self._record(repo, now=now, started=started, seconds=seconds, error=error)
            return PollResult(repo.name, {}, [], False, error, seconds)

        unusable = key_problem(repo)  # ssh would only say "Permission denied": say which file and why
        if unusable:
            return failed(f"{unusable[0]} (hint: {unusable[1]})")
        rc, out, err = _run_git(self.git, [*_NO_EXT, "ls-remote", "--heads", repo.url], env=env, timeout=self.timeout)
        if rc != 0:
            said = _git_error(f"cannot list the branches of {repo.shown_url}", err, repo.url)
            return failed(f"{said} (hint: {reach_hint(repo, said)})" if rc > 0 else said)
        heads = {b: sha for b, sha in _parse_ls_remote(out).items() if repo.wants(b)}
        try:
            with self._db(write=False) as db:
                stored = self._stored_heads(db, repo.name)
        except StorageUnavailable as e:
            return failed(e.message)
        moved = {b: sha for b, sha in heads.items() if stored.get(b) != sha}
        # a branch never seen (or deleted and recreated) builds its head only when first_sight says so
        build = {b: sha for b, sha in moved.items() if b in stored or repo.first_sight == "head"}
        forget = tuple(b for b in stored if b not in heads)
        new: list[tuple[str, str]] = []
        if forget:
            self._forget(repo, forget, env)
        if build:
            fetched = self._fetch(repo, sorted(build), env)
            if isinstance(fetched, str):
                return failed(fetched)
            # the fetched heads, not ls-remote's: a branch that moved again meanwhile builds its newest head
            build = fetched
            heads.update(fetched)
            try:
                for branch, sha in sorted(build.items()):
                    mode = repo.mode_for(branch)
                    for project in repo.projects:
                        self.queue.enqueue(repo.name, sha, project, mode, branch, supersede=self.config.supersede)
                    new.append((branch, sha))
            except SoopervisorError as e:  # the queue's store: nothing recorded, all of it again next time
                return failed(_redact(e.message, repo.url))
        seconds = time.perf_counter() - start
        try:
            self._record(repo, now=now, started=started, seconds=seconds, error=None,
                         heads={b: heads[b] for b in moved}, forget=forget)
        except StorageUnavailable as e:
            return PollResult(repo.name, heads, new, bool(build), e.message, seconds)
        return PollResult(repo.name, heads, new, bool(build), None, seconds)

    def poll_all(self) -> list[PollResult]:
        """One poll of every repository that is not paused, one after the other."""
        paused = {s.name for s in self.status() if s.paused}
        return [self.poll(r) for r in self.config.repositories if r.name not in paused]

    def due(self) -> list[Repository]:
        """The repositories whose next poll time has come: never polled, or asked to poll now (even
        when paused: it was asked for), or past their next poll time and not paused."""
        now = self.clock()
        with self._db(write=False) as db:
            rows = {r[0]: tuple(r)[1:] for r in db.execute("SELECT name, paused, poll_now, next_poll FROM poll_repos")}
        due = []
        for repo in self.config.repositories:
            paused, poll_now, next_poll = rows.get(repo.name, (0, 0, None))
            if poll_now or (not paused and (next_poll is None or next_poll <= now)):
                due.append(repo)
        return due

    def status(self) -> list[RepoStatus]:
        """Every served repository's polling state, in the configuration's order."""
        with self._db(write=False) as db:
            rows = {r["name"]: r for r in db.execute("SELECT * FROM poll_repos")}
            heads: dict[str, dict[str, str]] = {}
            for repo, branch, sha in db.execute("SELECT repository, branch, sha FROM poll_heads ORDER BY branch"):
                heads.setdefault(repo, {})[branch] = sha
        out = []
        for repo in self.config.repositories:
            r = rows.get(repo.name)
            get = (lambda k, r=r: r[k]) if r is not None else (lambda k: None)
            out.append(RepoStatus(
                name=repo.name, url=repo.shown_url, paused=bool(get("paused")),
                poll_now=bool(get("poll_now")), last_poll=get("last_poll"), last_success=get("last_success"),
                last_error=get("last_error"), failures=get("failures") or 0, next_poll=get("next_poll"),
                last_seconds=get("last_seconds"), heads=heads.get(repo.name, {})))
        return out

    def pause(self, name: str) -> None:
        self._set(name, "paused", 1)

    def resume(self, name: str) -> None:
        self._set(name, "paused", 0)

    def poll_now(self, name: str) -> None:
        """Poll ``name`` at the next round (a webhook, the dashboard's button); the request's time is
        kept, so a poll already under way does not swallow it."""
        self._set(name, "poll_now", time.time())

    def _set(self, name: str, column: str, value: float) -> None:
        if not any(r.name == name for r in self.config.repositories):
            raise UnknownRepository(f"no repository named {name!r} is served",
                                    "the names are in the server's configuration (`repositories:`)")
        with self._db() as db:
            db.execute(f"INSERT INTO poll_repos (name, {column}) VALUES (?, ?)"
                       f" ON CONFLICT(name) DO UPDATE SET {column} = excluded.{column}", (name, value))

    # -- the mirror ------------------------------------------------------------------------

    def mirror(self, repo: Repository) -> Path:
        return self.mirrors / f"{mirror_name(repo.name)}.git"

    @contextlib.contextmanager
    def _mirror_lock(self, repo: Repository) -> Iterator[None]:
        """One fetch per mirror at a time: in this process (a lock), and across processes (flock)."""
        with self._locks_guard:
            lock = self._locks.setdefault(repo.name, threading.Lock())
        with lock:
            self.mirrors.mkdir(parents=True, exist_ok=True)
            try:
                import fcntl
            except ImportError:  # Windows: git's own ref locks make a concurrent fetch fail, then retry
                yield
                return
            with open(self.mirrors / f".{mirror_name(repo.name)}.lock", "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)

    def _ensure_mirror(self, repo: Repository, env: dict[str, str]) -> str | None:
        """The bare mirror, created on first use (in a temporary folder renamed into place, so a
        crash leaves no half-made mirror); an error message when it cannot be made."""
        path = self.mirror(repo)
        if (path / "HEAD").exists():
            return None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        for args in (["init", "--bare", "-q", str(tmp)],
                     # queued commits a force-push left behind stay checkable out: never prune them
                     ["config", "--file", str(tmp / "config"), "gc.pruneExpire", "never"]):
            rc, _, err = _run_git(self.git, args, env=env, timeout=self.timeout)
            if rc != 0:
                return _git_error(f"cannot create the mirror {path}", err, repo.url)
        try:
            os.replace(tmp, path)
        except OSError as e:
            return f"cannot create the mirror {path}: {e.strerror or e}"
        return None

    def _forget(self, repo: Repository, branches: tuple[str, ...], env: dict[str, str]) -> None:
        """Remove deleted branches from the mirror, or a later branch named below one (``a`` deleted,
        ``a/b`` pushed) could not be fetched. Their commits stay (gc.pruneExpire=never): a queued job
        of one still checks out. Best effort: a failure here costs nothing now."""
        with self._mirror_lock(repo):
            if (self.mirror(repo) / "HEAD").exists():
                _run_git(self.git, ["--git-dir", str(self.mirror(repo)), "update-ref", "--stdin"], env=env,
                         timeout=self.timeout, stdin="".join(f"delete refs/heads/{b}\n" for b in branches))

    def _fetch(self, repo: Repository, branches: list[str], env: dict[str, str]) -> dict[str, str] | str:
        """Fetch ``branches`` (forced: a force-push replaces the head) into the mirror; their fetched
        heads, or an error message."""
        refs = [f"refs/heads/{b}" for b in branches]
        with self._mirror_lock(repo):
            error = self._ensure_mirror(repo, env)
            if error:
                return error
            git_dir = str(self.mirror(repo))
            rc, _, err = _run_git(
                self.git, [*_NO_EXT, "--git-dir", git_dir, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                           repo.url, *(f"+{r}:{r}" for r in refs)], env=env, timeout=self.timeout)
            if rc != 0:
                return _git_error(f"cannot fetch from {repo.shown_url}", err, repo.url)
            rc, out, err = _run_git(self.git, ["--git-dir", git_dir, "rev-parse", *refs], env=env,
                                    timeout=self.timeout)
            if rc != 0:
                return _git_error(f"cannot read the mirror {git_dir}", err, repo.url)
        return dict(zip(branches, out.split(), strict=True))

    def fetch_commit(self, repo: Repository, commit: str) -> bool:
        """Whether the mirror has ``commit`` (a full SHA), fetching every branch of the remote first
        when it does not (a run asked for through the API, of a commit just pushed to any branch).

        The branches go to a namespace of their own (``refs/api/heads/*``, pruned): the poller's
        ``refs/heads`` stay its own, and a branch deleted on the remote cannot block the fetch of
        one named below it. CheckoutError (exit 3) when the remote cannot be fetched from."""
        env = _env(repo)
        if self._has_commit(repo, commit, env):
            return True  # fetched already (polled, or asked for before): nothing to ask the remote
        unusable = key_problem(repo)
        if unusable:
            raise CheckoutError(unusable[0], unusable[1])
        with self._mirror_lock(repo):
            error = self._ensure_mirror(repo, env)
            if not error:
                rc, _, err = _run_git(
                    self.git, [*_NO_EXT, "--git-dir", str(self.mirror(repo)), "fetch", "--quiet", "--no-tags",
                               "--no-write-fetch-head", "--prune", repo.url, "+refs/heads/*:refs/api/heads/*"],
                    env=env, timeout=self.timeout)
                if rc != 0:
                    said = _git_error(f"cannot fetch from {repo.shown_url}", err, repo.url)
                    raise CheckoutError(said, reach_hint(repo, said) if rc > 0 else
                                        "the remote did not answer in time; try again")
        if error:
            raise CheckoutError(error, "check the free disk space and that the mirrors folder is writable")
        return self._has_commit(repo, commit, env)

    def has_path(self, repo: Repository, commit: str, path: str) -> bool:
        """Whether ``path`` (a folder relative to the repository's top, "." for it) is a folder at ``commit``."""
        spec = f"{commit}:" if path in (".", "") else f"{commit}:{path}"
        rc, out, _ = _run_git(self.git, ["--git-dir", str(self.mirror(repo)), "cat-file", "-t", spec],
                              env=_env(repo), timeout=self.timeout)
        return rc == 0 and out.strip() == "tree"

    def checkout(self, repo: Repository, commit: str, dest: Path) -> Path:
        """A working tree of ``commit`` at ``dest`` (which must not exist or be empty), sharing the
        mirror's objects; its ``origin`` is the repository's URL, so the project gets the
        repository's name. A commit the mirror lacks (the mirrors folder was wiped) is fetched first."""
        dest, env = Path(dest), _env(repo)
        if not self._has_commit(repo, commit, env):
            with self._mirror_lock(repo):
                error = self._ensure_mirror(repo, env)
                if not error:
                    rc, _, err = _run_git(
                        self.git, [*_NO_EXT, "--git-dir", str(self.mirror(repo)), "fetch", "--quiet", "--no-tags",
                                   "--no-write-fetch-head", repo.url, "+refs/heads/*:refs/heads/*"],
                        env=env, timeout=self.timeout)
                    error = None if rc == 0 else _git_error(f"cannot fetch from {repo.shown_url}", err, repo.url)
            if error:
                raise CheckoutError(error, "the server fetches it again when the remote is reachable")
            if not self._has_commit(repo, commit, env):
                raise CheckoutError(f"commit {commit[:12]} is not in {repo.shown_url} any more",
                                    "it was force-pushed away before it ran; push it again to run it")
        steps = [
            ["clone", "--quiet", "--shared", "--no-checkout", str(self.mirror(repo)), str(dest)],
            ["-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit],
            ["-C", str(dest), "remote", "set-url", "origin", _origin_url(repo.url)],
        ]
        for args in steps:
            rc, _, err = _run_git(self.git, args, env=env, timeout=self.timeout)
            if rc != 0:
                raise CheckoutError(_git_error(f"cannot check out {commit[:12]} into {dest}", err, repo.url),
                                    "check the free disk space and that the folder is writable")
        return dest

    def _has_commit(self, repo: Repository, commit: str, env: dict[str, str]) -> bool:
        if not (self.mirror(repo) / "HEAD").exists():
            return False
        rc, _, _ = _run_git(self.git, ["--git-dir", str(self.mirror(repo)), "cat-file", "-e", f"{commit}^{{commit}}"],
                            env=env, timeout=self.timeout)
        return rc == 0

"""The server's database: a SQLite file (the embedded default) or PostgreSQL (several servers, one queue).

The queue, the poller and the tokens write the same SQL to both through this
module: ``?`` placeholders, ``INSERT … ON CONFLICT`` (SQLite ≥ 3.24 has it
too), rows readable by name and by index. What differs lives here: how a
connection is opened, how a write transaction takes its lock, how migrations
are serialised, how types are spelled in DDL.

Why psycopg 3 and our own claim query, not procrastinate nor SQLAlchemy: the
queue has semantics of its own (a lease carrying the attempt, limits overall
and per repository, supersede, reap) that a task-queue library would either
not have or impose differently, and the SQL is a dozen statements that both
engines already understand; an ORM would add a large dependency to translate
almost nothing. psycopg 3 is the maintained PostgreSQL driver, its binary wheel
needs no libpq on the machine, and it is only imported when a ``postgresql://``
database is configured (extra ``postgres``).

SQLite: a write is ``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken
before the read that decides (a claim, a lease check), so two processes never
decide on the same row. Only a constructor may create the file: a database
gone while the server runs is an error until it is back, never a new empty one.

PostgreSQL: READ COMMITTED transactions; every statement sees what was
committed before it started, single-statement writes (a lease's renew, finish)
are atomic by row lock. What needs more says so where it happens: the claim
takes a transaction-scoped advisory lock (see queue.py), migrations another.
One connection per thread and process is kept; any error drops it, and a
transaction whose BEGIN fails on a kept connection (the server restarted
meanwhile) is tried once on a new one, so a database that comes back is used
at the next call, never through a stale connection.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

#: seconds a connection waits for another process's write lock (SQLite's busy timeout, PostgreSQL's lock_timeout)
BUSY_TIMEOUT = 30.0
#: seconds to reach a PostgreSQL server before it counts as unavailable
CONNECT_TIMEOUT = 5
SCHEMES = ("postgresql://", "postgres://")
#: query parameters of a database URL that are ours (a password by reference), removed before libpq sees it
PASSWORD_ENV, PASSWORD_FILE = "soopervisor_password_env", "soopervisor_password_file"


def is_url(database: str | os.PathLike) -> bool:
    """Whether ``database`` names a PostgreSQL database (else it is a SQLite file's path)."""
    return isinstance(database, str) and database.lower().startswith(SCHEMES)


def inline_password(url: str) -> bool:
    """Whether a PostgreSQL URL carries a password (``user:pw@`` or ``password=``): refused in server.yaml."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    return parts.password is not None or "password" in query


def shown(database: str | os.PathLike) -> str:
    """How a database is named in messages: a path as is; a URL without any password or parameters."""
    if not is_url(database):
        return str(database)
    parts = urllib.parse.urlsplit(str(database))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{parts.username}@" if parts.username else "") + host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- SQLite ---------------------------------------------------------------------------------------


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rows by name."""
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={'rwc' if create else 'rw'}"
    db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    db.row_factory = sqlite3.Row
    return db


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back when the block raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def transaction(path: Path, unavailable: Callable[[Exception], Exception], *, write: bool = True,
                create: bool = False) -> Iterator[sqlite3.Connection]:
    """A fresh connection to ``path`` (inside a write transaction with ``write``), closed after;
    SQLite's errors become ``unavailable(error)``."""
    try:
        db = connect(path, create=create)
    except sqlite3.Error as e:
        raise unavailable(e) from None
    try:
        if write:
            with immediate(db):
                yield db
        else:
            yield db
    except sqlite3.Error as e:
        raise unavailable(e) from None
    finally:
        db.close()


# -- both ---------------------------------------------------------------------------------------


class Database:
    """One configured database; ``dialect`` is "sqlite" or "postgresql"."""

    dialect = "sqlite"
    #: the column giving insertion order (SQLite's implicit rowid; a BIGSERIAL ``seq`` on PostgreSQL)
    order = "rowid"
    #: appended to a SELECT that decides a write, so a concurrent writer waits (SQLite's lock is the whole file)
    for_update = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def transaction(self, unavailable: Callable[[Exception], Exception], *, write: bool = True,
                    create: bool = False) -> contextlib.AbstractContextManager[Any]:
        return transaction(self.path, unavailable, write=write, create=create)

    def ddl(self, sql: str) -> str:
        """A migration's statement in this dialect (written in SQLite's)."""
        return sql.replace("{SEQ}", "")

    def table_exists(self, db: Any, table: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None

    def lock_migrations(self, db: Any) -> None:
        """Nothing: the caller's BEGIN IMMEDIATE makes one process migrate at a time."""


def version(database: Database, db: Any, component: str) -> int:
    """The version of ``component``'s tables; 0 before its first migration."""
    if not database.table_exists(db, "schema_versions"):
        return 0
    row = db.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
    return row[0] if row else 0


def migrate(database: Database, db: Any, component: str, migrations: list[str]) -> None:
    """Bring ``component``'s tables to ``len(migrations)``, inside the caller's write transaction.

    Each component of the server keeps its tables in the same database, so each has its own row in
    ``schema_versions``. Two processes starting at once: SQLite's BEGIN IMMEDIATE or PostgreSQL's
    advisory lock makes the second wait and then find the work done. A newer soopervisor's schema only
    adds: an older one reads the columns it knows.
    """
    database.lock_migrations(db)
    db.execute("CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    have = version(database, db, component)
    for number in range(have, len(migrations)):
        for statement in migrations[number].split(";"):
            if statement.strip():
                db.execute(database.ddl(statement))  # executescript would COMMIT the caller's transaction
    if have < len(migrations):
        db.execute("INSERT INTO schema_versions (component, version) VALUES (?, ?) "
                   "ON CONFLICT (component) DO UPDATE SET version = excluded.version", (component, len(migrations)))


# -- PostgreSQL ---------------------------------------------------------------------------------


class _Row(tuple):
    """A row by index and by column name, as sqlite3.Row."""

    _names: ClassVar[dict[str, int]] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Any], Any]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    cls = type("Row", (_Row,), {"_names": names})
    return lambda values: cls(values)


def _sql(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (our statements hold no ``?`` or ``%`` literals)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection speaking the sqlite3 subset the components use."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Any = ()) -> Any:
        if not params:  # without parameters psycopg does no %-formatting: the SQL goes as written
            return self.conn.execute(sql)
        return self.conn.execute(_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Any) -> Any:
        cursor = self.conn.cursor()
        cursor.executemany(_sql(sql), [tuple(r) for r in rows])
        return cursor


class Postgres(Database):
    """A PostgreSQL database named by a URL; a connection kept per thread (and per process)."""

    dialect = "postgresql"
    order = "seq"
    for_update = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = shown(url)
        self.path = None  # type: ignore[assignment]
        self._local = threading.local()

    def _driver(self) -> Any:
        """psycopg, imported only when a PostgreSQL database is used; a usage error when it is missing."""
        try:
            import psycopg
        except ImportError:
            from ..errors import UsageError

            raise UsageError(f"the server's database {self.name} is PostgreSQL, and psycopg is not installed",
                             'pip install "soopervisor[postgres]" (psycopg 3)') from None
        return psycopg

    def ddl(self, sql: str) -> str:
        # REAL is 4 bytes in PostgreSQL: epoch seconds need 8
        return sql.replace("{SEQ}", "seq BIGSERIAL,").replace(" REAL", " DOUBLE PRECISION")

    def table_exists(self, db: Any, table: str) -> bool:
        return db.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).fetchone()[0]

    def lock_migrations(self, db: Any) -> None:
        # CREATE TABLE IF NOT EXISTS is not safe from two sessions at once in PostgreSQL (a duplicate key
        # in pg_type): one migrating session at a time, the lock released at COMMIT or when a session dies
        db.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key("migrations"),))

    def _connect(self) -> Any:
        psycopg = self._driver()
        kwargs: dict[str, Any] = {}
        password = _password(self.url)
        if password is not None:
            kwargs["password"] = password
        # a dead server is noticed by TCP keepalives; a lock held too long fails like SQLite's busy timeout
        return psycopg.connect(
            _libpq_url(self.url), autocommit=True, row_factory=_row_factory, connect_timeout=CONNECT_TIMEOUT,
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            options=f"-c lock_timeout={int(BUSY_TIMEOUT * 1000)} -c idle_in_transaction_session_timeout=300000",
            application_name="soopervisor", **kwargs)

    def _connection(self) -> tuple[Any, bool]:
        """This thread's connection and whether it was kept from before (it may have gone stale)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and (local.pid != os.getpid() or conn.closed or conn.broken):
            self._drop(close=local.pid == os.getpid())  # a forked child must not close its parent's socket
            conn = None
        if conn is not None:
            return conn, True
        conn = self._connect()
        local.conn, local.pid = conn, os.getpid()
        return conn, False

    def _drop(self, close: bool = True) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and close:
            with contextlib.suppress(Exception):
                conn.close()

    @contextlib.contextmanager
    def transaction(self, unavailable: Callable[[Exception], Exception], *, write: bool = True,
                    create: bool = False) -> Iterator[Any]:
        """``BEGIN`` … ``COMMIT`` on this thread's connection (reads too: READ ONLY); psycopg's errors
        become ``unavailable(error)`` and drop the connection."""
        psycopg = self._driver()
        for _ in range(2):
            try:
                conn, kept = self._connection()
            except psycopg.Error as e:
                raise unavailable(e) from None
            try:
                conn.execute("BEGIN" if write else "BEGIN READ ONLY")
                break
            except psycopg.Error as e:
                self._drop()
                if not kept:
                    raise unavailable(e) from None
                # a kept connection the server closed meanwhile (it restarted): once more on a new one
        try:
            yield _Connection(conn)
            conn.execute("COMMIT")
        except psycopg.Error as e:
            self._rollback(conn)
            raise unavailable(e) from None
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: Any) -> None:
        import psycopg

        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            self._drop()  # a broken connection: the next call opens a new one


_OPEN: dict[str, Database] = {}
_OPEN_GUARD = threading.Lock()


def open_database(database: str | os.PathLike,
                  unavailable: Callable[[str, str], Exception] = lambda m, h: OSError(m)) -> Database:
    """The database ``database`` names; the PostgreSQL ones shared by the components of a process
    (their connections are per thread). A SQLite file's folder is created here; when it cannot be,
    ``unavailable(message, hint)`` is raised (each component gives its own error type)."""
    if not is_url(database):
        path = Path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise unavailable(
                f"cannot create the folder of the server's database {path.parent}: {e.strerror or e}",
                "`database` in server.yaml (or the data folder) must name a place you can write",
            ) from None
        return Database(path)
    key = str(database)
    with _OPEN_GUARD:
        if key not in _OPEN:
            _OPEN[key] = Postgres(key)
        return _OPEN[key]


def advisory_key(name: str) -> int:
    """A stable 32-bit key for ``pg_advisory_xact_lock`` (the same in every process and machine)."""
    return zlib.crc32(f"soopervisor:{name}".encode())


def _libpq_url(url: str) -> str:
    """The URL without our own query parameters, which libpq would refuse."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if k not in (PASSWORD_ENV, PASSWORD_FILE)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _password(url: str) -> str | None:
    """The password the URL refers to (``database_password: {env|file: …}`` in server.yaml); None: libpq's
    own ways (PGPASSWORD, PGPASSFILE, ~/.pgpass) or none."""
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    if PASSWORD_ENV in query:
        return os.environ.get(query[PASSWORD_ENV])
    if PASSWORD_FILE in query:
        try:
            with open(query[PASSWORD_FILE], encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError:
            return None  # the connection then fails for want of a password, which says so
    return None


def reason(e: BaseException) -> str:
    """A driver error in one line, without libpq's "connection to server at …" preamble repeated."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = "; ".join(dict.fromkeys(lines)) or type(e).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def postgres_hint(e: BaseException) -> str:
    """What to do about a PostgreSQL error, from its kind."""
    text = str(e).lower()
    if "password" in text or "authentication" in text:
        return ("check the role and its password: PGPASSWORD or PGPASSFILE in the server's environment, or "
                "database_password: {env: NAME} in server.yaml")
    if "does not exist" in text and "database" in text:
        return "create it (createdb), or fix the database name in `database:` of server.yaml"
    if "lock" in text and "timeout" in text:
        return f"another server held a lock longer than {BUSY_TIMEOUT:g}s; try again in a moment"
    return ("the database server is down or unreachable: start it, check host and port in `database:` of "
            "server.yaml; the server carries on when it is back")

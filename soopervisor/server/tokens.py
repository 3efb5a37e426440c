"""API tokens of `soopervisor serve`: bearer secrets kept only as their sha256, each with a scope.

A token is ``sv_`` and 32 random bytes (URL-safe base64): shown once when it is
made, never stored. The database keeps its sha256 — enough to recognise it,
useless to anyone who copies the file — with an id (random, independent of the
secret) to list and revoke it by, a name saying whom it is for, and a scope:
"read" reads (runs, logs, artifacts, status), "run" also queues runs of a
served repository's commits and stops or cancels them (what a data scientist's
`soopervisor run --remote` needs, nothing that changes the server's polling),
"admin" does everything (pause, poll now, retry, tokens).

The tokens live in the server's database (``config.database``), in a table of
their own versioned as component "tokens" of the file's ``schema_versions``, as
the queue and the poller keep theirs. Like the queue: a connection per call, WAL,
writes in ``BEGIN IMMEDIATE``, SQLite's errors as one line (exit 3). On PostgreSQL
(a ``postgresql://`` database, db.py) the same statements and errors; every
write here is a single statement or reads nothing it depends on, so READ
COMMITTED needs no extra lock.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import StorageUnavailable, UsageError
from . import db as dbm
from .db import BUSY_TIMEOUT

Scope = Literal["read", "run", "admin"]
#: what each scope may do: run everything read may and more, admin everything
SCOPES: dict[str, tuple[str, ...]] = {"read": ("read",), "run": ("read", "run"), "admin": ("read", "run", "admin")}
PREFIX = "sv_"
#: a token is PREFIX + token_urlsafe(32): 43 characters of URL-safe base64
_SHAPE = re.compile(r"sv_[A-Za-z0-9_-]{43}")
#: last_used is written at most this often per token: an API answering many requests a second must not
#: take the database's write lock (which the queue's claims need) for every one
TOUCH_EVERY = 60.0
MAX_NAME = 100

_COMPONENT = "tokens"
# _MIGRATIONS[n] takes the tokens' tables from version n to n + 1.
# lookup: the digest's first 16 hex digits, for the index; the whole digest is compared in constant time.
_MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS api_tokens (
        {SEQ}
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        lookup TEXT NOT NULL,
        digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_used REAL
    );
    CREATE INDEX IF NOT EXISTS api_tokens_lookup ON api_tokens (lookup)
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)


class TokenNotFound(UsageError):
    """No token with that id: exit 2."""


class TokenStoreUnavailable(StorageUnavailable):
    """The tokens' table cannot be read or written (locked, damaged, unwritable): exit 3."""

    topic = "run-store-unavailable"


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never its secret nor its digest."""

    id: str
    name: str
    scope: str
    created_at: float
    last_used: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def allows(info: TokenInfo | None, need: str) -> bool:
    """Whether a token of ``info``'s scope may do what needs ``need`` (a scope's name); None: no token."""
    if need not in SCOPES:
        raise ValueError(f"unknown scope {need!r}; one of {tuple(SCOPES)}")
    return info is not None and need in SCOPES.get(info.scope, ())


def digest(secret: str) -> str:
    """The sha256 kept in place of a secret (hex). A token is 32 random bytes: no salt or slow hash needed."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """The API tokens in the server's database: a SQLite file or a ``postgresql://`` URL."""

    def __init__(self, path: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 touch_every: float = TOUCH_EVERY) -> None:
        self._db = dbm.open_database(path, TokenStoreUnavailable)
        self.database = self._db.name  # for messages: a URL never shows a password
        self.path: Path | None = self._db.path  # the SQLite file; None on PostgreSQL
        self._clock = clock
        self.touch_every = touch_every
        with self._tx(write=False, create=True) as db:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")  # readers (every API request) never wait for a writer
            current = dbm.version(self._db, db, _COMPONENT) >= SCHEMA_VERSION
        if not current:  # the write lock only when there is something to migrate
            with self._tx() as db:
                dbm.migrate(self._db, db, _COMPONENT, _MIGRATIONS)

    @contextlib.contextmanager
    def _tx(self, write: bool = True, *, create: bool = False) -> Iterator[Any]:
        """A connection; with ``write``, inside ``BEGIN IMMEDIATE`` … ``COMMIT``. Errors: TokenStoreUnavailable.

        Only the constructor creates the file: a database gone while the server runs is an error
        until it is back, never a new empty one (in which every token would be unknown).
        """
        with self._db.transaction(self._unavailable, write=write, create=create) as conn:
            yield conn

    def _unavailable(self, e: Exception) -> TokenStoreUnavailable:
        if self.path is None:
            return TokenStoreUnavailable(f"cannot use the server's database {self.database}: {dbm.reason(e)}",
                                         dbm.postgres_hint(e))
        reason = str(e)
        if not self.path.exists():
            return TokenStoreUnavailable(f"the server's database {self.path} is gone",
                                         "put it back (a lost mount, a file moved aside), or pass the "
                                         "server's --config so the command finds its database")
        if "locked" in reason or "busy" in reason:
            hint = f"another process held it longer than {BUSY_TIMEOUT:g}s; try again in a moment"
        else:
            hint = "check that `database` in server.yaml (or the data folder) names a file you can write"
        return TokenStoreUnavailable(f"cannot use the server's database {self.path}: {reason}", hint)

    # -- making and checking ---------------------------------------------------------------------

    def create(self, name: str, scope: Scope = "read") -> tuple[TokenInfo, str]:
        """A new token: its info and its secret, which exists only in what this returns."""
        if scope not in SCOPES:
            raise UsageError(f"unknown token scope {scope!r}", f"one of {', '.join(SCOPES)}")
        name = _check_name(name)
        secret = PREFIX + secrets.token_urlsafe(32)
        hashed = digest(secret)
        now = self._clock()
        with self._tx() as db:
            while True:  # 48 random bits: a clash is rare, but must not fail the command
                info = TokenInfo(id=secrets.token_hex(6), name=name, scope=scope, created_at=now, last_used=None)
                # ON CONFLICT, not catching the error: on PostgreSQL an error ends the transaction
                if db.execute("INSERT INTO api_tokens (id, name, scope, lookup, digest, created_at) "
                              "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                              (info.id, name, scope, hashed[:16], hashed, now)).rowcount == 1:
                    break
        return info, secret

    def verify(self, secret: str | None) -> TokenInfo | None:
        """The token whose secret this is, or None (unknown, revoked, malformed); records its use.

        The index finds rows by the digest's first digits (timing there tells only bits of a
        sha256, nothing of a secret); the whole digest is compared in constant time.
        """
        if not isinstance(secret, str) or not _SHAPE.fullmatch(secret):
            return None  # not a token at all: no need to ask the database
        hashed = digest(secret)
        with self._tx(write=False) as db:
            rows = db.execute("SELECT * FROM api_tokens WHERE lookup = ?", (hashed[:16],)).fetchall()
        found = None
        for row in rows:
            if hmac.compare_digest(row["digest"], hashed):
                found = row
        if found is None:
            return None
        info = _info(found)
        now = self._clock()
        if info.last_used is None or now - info.last_used >= self.touch_every:
            with self._tx() as db:
                db.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", (now, info.id))
            info = TokenInfo(info.id, info.name, info.scope, info.created_at, now)
        return info

    # -- what people do --------------------------------------------------------------------------

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first; never a secret or a digest."""
        with self._tx(write=False) as db:
            rows = db.execute("SELECT id, name, scope, created_at, last_used FROM api_tokens "
                              f"ORDER BY created_at, {self._db.order}").fetchall()
        return [_info(r) for r in rows]

    def get(self, token_id: str) -> TokenInfo:
        with self._tx(write=False) as db:
            row = db.execute("SELECT id, name, scope, created_at, last_used FROM api_tokens WHERE id = ?",
                             (token_id,)).fetchone()
        if row is None:
            raise self._not_found(token_id)
        return _info(row)

    def revoke(self, token_id: str) -> TokenInfo:
        """Delete the token: it stops working at once. Returns what it was; TokenNotFound for an unknown id."""
        with self._tx() as db:
            row = db.execute("SELECT id, name, scope, created_at, last_used FROM api_tokens WHERE id = ?",
                             (token_id,)).fetchone()
            if row is None:
                raise self._not_found(token_id)
            db.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
        return _info(row)

    def _not_found(self, token_id: str) -> TokenNotFound:
        hint = "`soopervisor serve --config server.yaml token list` shows the ids (12 hex digits)"
        if token_id.startswith(PREFIX):  # a secret pasted as an id: never repeat it
            return TokenNotFound(f"that is an API token itself, not its id (in {self.database})",
                                 f"revoke it by its id: {hint}")
        shown = token_id if len(token_id) <= 40 else token_id[:40] + "…"
        return TokenNotFound(f"no API token with id {shown!r} in {self.database}", hint)


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise UsageError("a token needs a name", "say whom or what it is for: --name ci-dashboard")
    if len(name) > MAX_NAME or any(not ch.isprintable() for ch in name):
        raise UsageError(f"a token's name is at most {MAX_NAME} printable characters",
                         "say whom or what it is for: --name ci-dashboard")
    return name


def _info(row: Any) -> TokenInfo:
    return TokenInfo(id=row["id"], name=row["name"], scope=row["scope"], created_at=row["created_at"],
                     last_used=row["last_used"])

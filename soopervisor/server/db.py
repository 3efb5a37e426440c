"""The server's SQLite file: one way to open it and to write to it, for the queue, the poller and tokens.

A write is ``BEGIN IMMEDIATE`` … ``COMMIT``: the write lock is taken before the
read that decides (a claim, a lease check), so two processes never decide on
the same row. Only a constructor may create the file: a database gone while
the server runs is an error until it is back, never a new empty one.
"""
from __future__ import annotations

import contextlib
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

#: seconds a connection waits for another process's write lock
BUSY_TIMEOUT = 30.0


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
def transaction(path: Path, unavailable: Callable[[sqlite3.Error], Exception], *, write: bool = True,
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

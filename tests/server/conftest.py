"""The server's databases for the tests: a SQLite file, and a real PostgreSQL.

One PostgreSQL cluster serves the whole test session (and every xdist worker):
scripts/postgres starts it once (idempotent, behind a file lock) and prints its
URL, unless SOOPERVISOR_TEST_POSTGRES names one already. Each test gets a
database of its own (CREATE DATABASE … TEMPLATE template0), dropped after.
Without PostgreSQL the postgres tests fail, saying how to get it: never skipped.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "postgres"
_FIX = "run scripts/postgres (it installs PostgreSQL when missing and starts a throwaway cluster)"


def start_postgres() -> str:
    """SOOPERVISOR_TEST_POSTGRES, else the URL of the cluster scripts/postgres starts (or finds running);
    RuntimeError saying what to do when there is none. Used by the benchmarks too."""
    url = os.environ.get("SOOPERVISOR_TEST_POSTGRES")
    if not url:
        try:
            proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"PostgreSQL could not be started ({e}): {_FIX}") from None
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"PostgreSQL could not be started: {proc.stderr.strip()[-800:]}\n{_FIX}")
        url = proc.stdout.strip().splitlines()[-1]
        os.environ["SOOPERVISOR_TEST_POSTGRES"] = url  # the processes the tests start find it too
    try:
        import psycopg
    except ImportError:
        raise RuntimeError('psycopg is not installed: pip install -e ".[test]" (or ".[postgres]")') from None
    try:
        psycopg.connect(url, connect_timeout=10).close()
    except psycopg.Error as e:
        raise RuntimeError(f"PostgreSQL at {url} does not answer ({str(e).strip()}): {_FIX}") from None
    return url


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the session's PostgreSQL cluster (its `postgres` database); the role may create databases."""
    try:
        return start_postgres()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def new_database(server: str) -> Iterator[str]:
    """A fresh, empty database on ``server`` (its URL), dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield with_database(server, name)
    finally:
        from soopervisor.server import db

        for key in [k for k in db._OPEN if f"/{name}" in k]:  # this process's kept connections to it
            db._OPEN.pop(key)
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres(postgres_server: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of this test's own."""
    with new_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The server's database, once as a SQLite file and once as a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "server.sqlite")
    return request.getfixturevalue("postgres")

"""API tokens of `soopervisor serve`: real SQLite files, and the real command line in a subprocess."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from soopervisor.errors import StorageUnavailable, UsageError
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Queue
from soopervisor.server.tokens import (
    PREFIX,
    TokenInfo,
    TokenNotFound,
    TokenStore,
    TokenStoreUnavailable,
    allows,
)
from tests.conftest import cli
from tests.server.helpers import Clock

REPO = Path(__file__).resolve().parents[2]
# the subprocess imports this checkout's soopervisor whatever is installed
ENV = {"PYTHONPATH": str(REPO)}
SECRET = re.compile(r"sv_[A-Za-z0-9_-]{43}")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(database: str, clock: Clock) -> TokenStore:
    """Once on a SQLite file, once on PostgreSQL (conftest.py's ``database``)."""
    return TokenStore(database, clock=clock)


def at_rest(folder: Path) -> bytes:
    """Every byte SQLite keeps in the folder: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("server.sqlite*")))


def stored(store: TokenStore, folder: Path) -> bytes:
    """What the store keeps: SQLite's files, or every column of PostgreSQL's table as text."""
    if store.path is not None:
        return at_rest(folder)
    with store._tx(write=False) as db:
        rows = db.execute("SELECT * FROM api_tokens").fetchall()
    return "\n".join(" ".join(str(v) for v in row) for row in rows).encode()


# -- the store ---------------------------------------------------------------------------------------------


def test_create_verify_list_revoke(store: TokenStore, clock: Clock):
    info, secret = store.create("dashboard", "read")
    assert SECRET.fullmatch(secret) and secret.startswith(PREFIX)
    assert re.fullmatch(r"[0-9a-f]{12}", info.id)
    assert info == TokenInfo(info.id, "dashboard", "read", clock.now, None)

    clock.now += 5
    assert store.verify(secret) == TokenInfo(info.id, "dashboard", "read", info.created_at, clock.now)
    admin, admin_secret = store.create("ops", "admin")
    assert store.verify(admin_secret).id == admin.id

    listed = store.list()
    assert [t.id for t in listed] == [info.id, admin.id]  # oldest first
    assert listed[0].last_used == clock.now and listed[1].last_used == clock.now
    assert secret not in repr(listed) and secret not in json.dumps([t.to_dict() for t in listed])
    assert set(listed[0].to_dict()) == {"id", "name", "scope", "created_at", "last_used"}

    assert store.revoke(info.id).name == "dashboard"
    assert store.verify(secret) is None  # revoked: refused at once
    assert store.verify(admin_secret).id == admin.id  # the other one still works
    assert [t.id for t in store.list()] == [admin.id]
    with pytest.raises(TokenNotFound) as e:
        store.revoke(info.id)  # twice: unknown now
    assert e.value.exit_code == 2 and "token list" in e.value.hint


def test_only_a_digest_is_at_rest(tmp_path: Path, store: TokenStore):
    secrets_made = [store.create(f"t{i}", "admin" if i % 2 else "read")[1] for i in range(5)]
    for secret in secrets_made:
        assert store.verify(secret) is not None
    data = stored(store, tmp_path)
    for secret in secrets_made:
        assert secret.encode() not in data
        body = secret[len(PREFIX):].encode()
        assert body[:20] not in data  # not even a part of it
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in data  # what is kept instead
    # and the id is no part of the secret or of its digest
    for info, secret in zip(store.list(), secrets_made, strict=True):
        assert info.id not in secret and info.id not in hashlib.sha256(secret.encode()).hexdigest()


def test_unknown_revoked_and_malformed_tokens_fail(store: TokenStore, tmp_path: Path):
    info, secret = store.create("ci", "read")
    other = TokenStore(tmp_path / "other.sqlite")
    _, foreign = other.create("elsewhere", "admin")
    for wrong in (None, "", "sv_", secret[:-1], secret + "x", secret.upper(), " " + secret, secret.replace("sv_", "sk_"),
                  "sv_" + "A" * 43, foreign, "x" * 100_000, "sv_" + "\udcff" * 43, b"sv_" + secret[3:].encode()):
        assert store.verify(wrong) is None, wrong
    store.revoke(info.id)
    assert store.verify(secret) is None
    assert other.verify(foreign) is not None


def test_scopes(store: TokenStore):
    read, _ = store.create("reader", "read")
    admin, _ = store.create("admin", "admin")
    assert allows(read, "read") and not allows(read, "admin")
    assert allows(admin, "read") and allows(admin, "admin")
    assert not allows(None, "read") and not allows(None, "admin")
    assert not allows(TokenInfo("x", "y", "owner", 0.0, None), "read")  # a scope this version does not know
    with pytest.raises(ValueError):
        allows(admin, "write")
    with pytest.raises(UsageError):
        store.create("x", "write")  # type: ignore[arg-type]
    for bad in ("", "   ", "a\nb", "x" * 101):
        with pytest.raises(UsageError):
            store.create(bad, "read")


def test_last_used_is_written_at_most_once_a_minute(store: TokenStore, clock: Clock):
    info, secret = store.create("busy", "read")
    assert store.verify(secret).last_used == clock.now
    first = clock.now
    clock.now += 30
    assert store.verify(secret).last_used == first  # no write for every request
    assert store.get(info.id).last_used == first
    clock.now += 31
    assert store.verify(secret).last_used == clock.now
    assert store.get(info.id).last_used == clock.now


def test_tokens_share_the_servers_database_with_the_queue_and_the_poller(tmp_path: Path, database: str):
    from soopervisor.server.config import load

    path = database
    queue = Queue(path)
    queue.enqueue("sales", "a" * 40, ".", "sample", "main")
    tokens = TokenStore(path)
    _, secret = tokens.create("dash", "read")
    config = tmp_path / "server.yaml"
    config.write_text(json.dumps({"database": str(path), "mirrors": str(tmp_path / "mirrors")}))
    Poller(load(config), queue).status()  # the poller's tables in the same file
    again = TokenStore(path)  # a second process's store: the schema is there already
    assert again.verify(secret) is not None and len(queue.list()) == 1
    with again._tx(write=False) as db:
        versions = {r[0]: r[1] for r in db.execute("SELECT component, version FROM schema_versions")}
    assert versions["tokens"] == 1 and versions["queue"] >= 1 and versions["poller"] >= 1


def test_a_database_gone_is_an_error_not_a_new_empty_one(tmp_path: Path):
    path = tmp_path / "server.sqlite"
    store = TokenStore(path)
    _, secret = store.create("x", "read")
    for p in tmp_path.glob("server.sqlite*"):
        p.unlink()
    with pytest.raises(TokenStoreUnavailable) as e:
        store.verify(secret)
    assert isinstance(e.value, StorageUnavailable) and e.value.exit_code == 3 and "gone" in e.value.message
    assert not path.exists()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TokenStoreUnavailable):
        TokenStore(tmp_path / "a-file" / "server.sqlite")  # a folder that cannot be made


def test_a_secret_passed_as_an_id_is_not_repeated(store: TokenStore):
    _, secret = store.create("x", "read")
    with pytest.raises(TokenNotFound) as e:
        store.revoke(secret)
    assert secret not in str(e.value) and "not its id" in e.value.message


# -- the command line -----------------------------------------------------------------------------------


def server_yaml(tmp_path: Path) -> Path:
    config = tmp_path / "server.yaml"
    config.write_text(json.dumps({"database": str(tmp_path / "db" / "server.sqlite"),
                                  "storage": str(tmp_path / "artifacts"), "repositories": []}))
    return config


def test_cli_create_prints_the_token_once_list_never_shows_it_and_revoke(tmp_path: Path):
    config = server_yaml(tmp_path)
    made = cli("serve", "--config", str(config), "token", "create", "--name", "dashboard", env=ENV, check=0)
    secret = made.stdout.strip()
    assert SECRET.fullmatch(secret), made.stdout  # stdout: the token alone, for TOKEN=$(...)
    assert "only time" in made.stderr and secret not in made.stderr
    admin = cli("serve", "token", "create", "--admin", "--config", str(config), env=ENV, check=0)  # --config after
    admin_secret = admin.stdout.strip()
    assert SECRET.fullmatch(admin_secret) and admin_secret != secret

    store = TokenStore(tmp_path / "db" / "server.sqlite")  # the file server.yaml names
    read_info, admin_info = store.verify(secret), store.verify(admin_secret)
    assert (read_info.scope, read_info.name) == ("read", "dashboard")  # read unless --admin
    assert admin_info.scope == "admin" and admin_info.name  # a default name: who made it

    listed = cli("serve", "--config", str(config), "token", "list", env=ENV, check=0)
    as_json = cli("serve", "--config", str(config), "token", "list", "--json", env=ENV, check=0)
    for out in (listed.stdout + listed.stderr, as_json.stdout + as_json.stderr):
        assert secret not in out and admin_secret not in out and "sv_" not in out
        assert read_info.id in out and admin_info.id in out
    assert "dashboard" in listed.stdout and "never" not in listed.stdout.splitlines()[1]  # verified: used
    rows = json.loads(as_json.stdout)
    assert [(r["id"], r["scope"]) for r in rows] == [(read_info.id, "read"), (admin_info.id, "admin")]
    assert SECRET.search(at_rest(tmp_path / "db").decode("latin-1")) is None

    gone = cli("serve", "--config", str(config), "token", "revoke", read_info.id, env=ENV, check=0)
    assert read_info.id in gone.stdout and secret not in gone.stdout
    assert store.verify(secret) is None and store.verify(admin_secret) is not None

    unknown = cli("serve", "--config", str(config), "token", "revoke", read_info.id, env=ENV, check=2)
    assert "no API token" in unknown.stderr and "hint:" in unknown.stderr and "token list" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    pasted = cli("serve", "--config", str(config), "token", "revoke", admin_secret, env=ENV, check=2)
    assert admin_secret not in pasted.stdout + pasted.stderr
    assert store.verify(admin_secret) is not None


def test_cli_without_config_uses_the_default_database_and_refuses_mixed_use(tmp_path: Path, home: Path):
    made = cli("serve", "token", "create", "--name", "local", env=ENV, check=0)
    databases = list(home.rglob("server.sqlite"))
    assert len(databases) == 1 and str(databases[0]) in made.stderr  # the embedded default's, in the data folder
    assert TokenStore(databases[0]).verify(made.stdout.strip()).name == "local"
    assert "local" in cli("serve", "token", "list", env=ENV, check=0).stdout

    config = server_yaml(tmp_path)
    both = cli("serve", "--config", str(config), "token", "list", "--config", str(tmp_path / "other.yaml"),
               env=ENV, check=2)
    assert "two configurations" in both.stderr
    once = cli("serve", "--config", str(config), "--once", "token", "list", env=ENV, check=2)
    assert "do not go with" in once.stderr
    missing = cli("serve", "--config", str(tmp_path / "nope.yaml"), "token", "list", env=ENV, check=2)
    assert "cannot be read" in missing.stderr
    assert "token" in cli("serve", "--help", env=ENV, check=0).stdout
    assert "--admin" in cli("serve", "token", "create", "--help", env=ENV, check=0).stdout


def test_serve_check_and_once_still_run_the_server(tmp_path: Path):
    bare = tmp_path / "sales.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    config = tmp_path / "server.yaml"
    config.write_text(json.dumps({"database": str(tmp_path / "server.sqlite"), "storage": str(tmp_path / "art"),
                                  "mirrors": str(tmp_path / "mirrors"), "repositories": [{"url": f"file://{bare}"}]}))
    ok = cli("serve", "--config", str(config), "--check", env=ENV, check=0)
    assert "✓" in ok.stdout and "1 repository" in ok.stdout
    # an empty remote: one round polls it, finds no branch, runs nothing, and exits
    once = cli("serve", "--config", str(config), "--once", env=ENV, check=0, timeout=120)
    assert "Traceback" not in once.stderr and "job " not in once.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"poll_interval": -1}))
    assert "poll_interval" in cli("serve", "--config", str(bad), "--check", env=ENV, check=2).stderr


def test_the_printed_token_is_masked_in_anything_said_later(tmp_path: Path, capsys: pytest.CaptureFixture):
    from soopervisor.cli import main
    from soopervisor.errors import SoopervisorError
    from soopervisor.redact import CREDENTIALS

    config = server_yaml(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--config", str(config), "token", "create", "--name", "x"])
    assert e.value.code == 0
    secret = capsys.readouterr().out.strip()
    assert SECRET.fullmatch(secret)
    assert CREDENTIALS.redact(f"Authorization: Bearer {secret}") == "Authorization: Bearer ***"
    assert secret not in str(SoopervisorError(f"refused {secret}", f"hint {secret}"))


def test_tokens_are_random_and_never_repeat(store: TokenStore):
    made = [store.create(f"t{i}", "read") for i in range(50)]
    assert len({s for _, s in made}) == 50 and len({i.id for i, _ in made}) == 50
    assert store.path is None or os.path.getsize(store.path) > 0

"""Box backend specifics: the real ``box_sdk_gen`` SDK against the stateful fake of the Box API.

The storage contract (tests/test_storage_contract.py) runs on Box through
tests/backends/box.py; this module covers what only Box has: chunked upload
sessions and their part rules, the per-file upload limit (250 MB on free
accounts), single-use refresh tokens saved after every refresh, throttling,
the URL forms, the sign-in and ``describe``; and what a real user meets first:
a sign-in made for CI, the client-credentials grant, a refresh token another
machine already used, two processes racing a refresh (real processes against
the fake served over HTTP), downloads that break off, names Box refuses. Live
tests run when the CI credentials are in the environment.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from box_sdk_gen.networking import box_network_client

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath, UsageError
from soopervisor.storage import box as backend
from soopervisor.storage import open_storage
from tests.backends.box import storage
from tests.fakes.box_api import MB, FakeBox, relay_session
from tests.test_storage_dropbox import make_set

MiB = 1024 * 1024
SHA_A = "a" * 40
SHA_B = "b" * 40
LIVE_VARS = ("SOOPERVISOR_BOX_CLIENT_ID", "SOOPERVISOR_BOX_CLIENT_SECRET", "SOOPERVISOR_BOX_REFRESH_TOKEN")
_REAL_ENV = {k: v for k, v in os.environ.items() if k.startswith("SOOPERVISOR_BOX_")}
PART = r"PUT /api/2\.0/files/upload_sessions/\w+"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """No real credentials, no keyring, no real waiting (the SDK's waits are recorded)."""
    for var in (*LIVE_VARS, backend.DEVELOPER_TOKEN_ENV, backend.SUBJECT_TYPE_ENV, backend.SUBJECT_ID_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SOOPERVISOR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SOOPERVISOR_NO_KEYRING", "1")
    waits: list[float] = []
    monkeypatch.setattr(box_network_client, "time", SimpleNamespace(sleep=waits.append))
    monkeypatch.setattr(backend, "_sleep", waits.append)
    return waits


def small_parts(monkeypatch: pytest.MonkeyPatch) -> FakeBox:
    """Chunked uploads from 1 MiB in 1 MiB parts, so a 3 MiB file exercises them; the fake enforces the rules."""
    monkeypatch.setattr(backend, "CHUNKED_MIN", 1 * MiB)
    monkeypatch.setattr(backend, "CHUNKED_FROM", 1 * MiB)
    return FakeBox(min_chunked=1 * MiB, part_size=1 * MiB)


def part_ranges(fake: FakeBox) -> int:
    return fake.call_count(PART)


# -- uploads -------------------------------------------------------------------------
def test_small_files_take_one_request(tmp_path: Path):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"x" * 1000}))
        assert s.fake.call_count(r"POST /api/2\.0/files/content") == 2  # the file, then the manifest
        assert s.fake.call_count(r"POST /api/2\.0/files/upload_sessions") == 0


def test_large_file_goes_through_a_chunked_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = os.urandom(3 * MiB + 77)
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        assert s.fake.call_count(r"POST /api/2\.0/files/upload_sessions") == 1
        assert part_ranges(s.fake) == 4
        assert s.fake.call_count(r"POST /api/2\.0/files/upload_sessions/\w+/commit") == 1
        assert s.fake.find(f"soopervisor-tests/p/{SHA_A}/r1/files/big.bin").data == data
        s.get_file("p", SHA_A, "r1", "files/big.bin", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data


def test_real_thresholds_50_mb_in_parts_of_the_size_box_returns(tmp_path: Path):
    """Chunked from 50,000,000 bytes, where other clients switch; Box's minimum (20 MB) stays valid."""
    assert backend.CHUNKED_FROM == 50 * MB and backend.CHUNKED_MIN == 20 * MB
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(50 * MB))
    with storage(tmp_path) as s:
        s.store.upload("p/c/big.bin", src, lambda n: None)
        assert part_ranges(s.fake) == 6  # five parts of 8 MiB and the rest
        assert s.fake.find("soopervisor-tests/p/c/big.bin").data == src.read_bytes()
        small = tmp_path / "small.bin"
        small.write_bytes(b"x" * (20 * MB + 1))  # chunked before; now one plain upload
        s.store.upload("p/c/small.bin", small, lambda n: None)
        assert part_ranges(s.fake) == 6 and s.fake.call_count(r"POST /api/2\.0/files/upload_sessions") == 1
        assert s.fake.find("soopervisor-tests/p/c/small.bin").data == small.read_bytes()


def test_replacing_a_large_file_uploads_a_new_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        src = tmp_path / "f"
        src.write_bytes(os.urandom(2 * MiB))
        s.store.upload("p/c/f", src, lambda n: None)
        file_id = s.fake.find("soopervisor-tests/p/c/f").id
        src.write_bytes(os.urandom(2 * MiB + 1))
        s.store.upload("p/c/f", src, lambda n: None)
        assert s.fake.call_count(rf"POST /api/2\.0/files/{file_id}/upload_sessions") == 1
        assert s.fake.items[file_id].data == src.read_bytes()


def test_failed_part_is_sent_again_and_the_others_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A part keeps failing past the SDK's retries: Box is asked which parts it has; only the rest is resent."""
    data = os.urandom(4 * MiB)
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.fake.fail(PART, 500, times=backend.MAX_ATTEMPTS)
        s.store.upload("p/c/big.bin", _write(tmp_path, data), lambda n: None)
        assert s.fake.call_count(r"GET /api/2\.0/files/upload_sessions/\w+/parts") == 1
        assert part_ranges(s.fake) == 4  # every part stored once: no part was sent twice successfully
        assert s.fake.find("soopervisor-tests/p/c/big.bin").data == data


def test_part_stored_but_answer_lost_is_sent_again_harmlessly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = os.urandom(3 * MiB)
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.fake.fail(PART, 502, after_apply=True)
        s.fake.fail(PART, 0, connection_error=True)
        s.store.upload("p/c/big.bin", _write(tmp_path, data), lambda n: None)
        assert s.fake.find("soopervisor-tests/p/c/big.bin").data == data


def test_failed_upload_aborts_its_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.fake.fail(PART, 500, times=100)
        with pytest.raises(StorageUnavailable, match="kept refusing parts"):
            s.store.upload("p/c/big.bin", _write(tmp_path, os.urandom(2 * MiB)), lambda n: None)
        assert s.fake.sessions == {} and s.fake.find("soopervisor-tests/p/c/big.bin") is None


def test_lost_session_restarts_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = os.urandom(3 * MiB)
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.fake.fail(PART, 404, code="not_found")
        s.store.upload("p/c/big.bin", _write(tmp_path, data), lambda n: None)
        assert s.fake.call_count(r"POST /api/2\.0/files/upload_sessions") == 2
        assert s.fake.find("soopervisor-tests/p/c/big.bin").data == data


def test_commit_still_processing_is_polled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = os.urandom(2 * MiB)
    with storage(tmp_path, small_parts(monkeypatch)) as s:
        s.fake.commit_pending = 2
        s.store.upload("p/c/big.bin", _write(tmp_path, data), lambda n: None)
        assert s.fake.find("soopervisor-tests/p/c/big.bin").data == data


def test_the_fake_enforces_the_part_rules(tmp_path: Path):
    """Wrong part sizes, ranges and digests are refused by the fake through the SDK, as Box documents."""
    from box_sdk_gen import BoxAPIError

    fake = FakeBox(min_chunked=10, part_size=4)
    with storage(tmp_path, fake) as s:
        up = s.store.client.chunked_uploads
        folder = s.store._folder_id("", create=True)
        with pytest.raises(BoxAPIError) as e:
            up.create_file_upload_session(folder, 9, "small")
        assert e.value.response_info.code == "file_size_too_small"
        sess = up.create_file_upload_session(folder, 10, "f")
        assert sess.part_size == 4 and sess.total_parts == 3
        import base64
        import hashlib
        import io

        def digest(b: bytes) -> str:
            return "sha=" + base64.b64encode(hashlib.sha1(b).digest()).decode()

        url = sess.session_endpoints.upload_part
        for body, rng, dg, code in [
            (b"abc", "bytes 0-2/10", digest(b"abc"), "range_not_satisfiable"),  # shorter than part_size
            (b"abcd", "bytes 2-5/10", digest(b"abcd"), "range_not_satisfiable"),  # not at a multiple
            (b"abcd", "bytes 0-3/10", digest(b"abce"), "sha1_mismatch"),
        ]:
            with pytest.raises(BoxAPIError) as e:
                up.upload_file_part_by_url(url, io.BytesIO(body), dg, rng)
            assert e.value.response_info.code == code


# -- limits, quota, throttling, credentials -----------------------------------------
def test_file_above_the_account_limit_is_refused_before_sending(tmp_path: Path):
    fake = FakeBox(max_upload_size=2 * MiB)
    with storage(tmp_path, fake) as s:
        with pytest.raises(StorageUnavailable) as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": b"x" * (3 * MiB)}))
        assert "250 MB" in str(e.value) and "larger than this Box account accepts" in str(e.value)
        assert "upgrade" in e.value.hint
        assert fake.call_count(r"POST /api/2\.0/files/.*") == 0
        assert s.list_projects() == []


def test_servers_413_is_reported_the_same_way(tmp_path: Path):
    fake = FakeBox(max_upload_size=2 * MiB)
    with storage(tmp_path, fake) as s:
        s.store._max_upload = 10**12  # the limit changed after it was read
        src = _write(tmp_path, b"x" * (3 * MiB))
        with pytest.raises(StorageUnavailable, match="250 MB"):
            s.store.upload("p/c/big", src, lambda n: None)


def test_full_account_is_reported(tmp_path: Path):
    with storage(tmp_path, FakeBox(space_amount=1000)) as s:
        with pytest.raises(StorageUnavailable, match="Box account is full") as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.bin": b"x" * 2000}))
        assert "free some space" in e.value.hint


def test_429_waits_as_long_as_retry_after_says(tmp_path: Path, isolated: list[float]):
    with storage(tmp_path) as s:
        s.fake.fail(r"GET /2\.0/folders/.*", 429, retry_after=9, code="rate_limit_exceeded", times=2)
        assert s.list_projects() == []
        assert isolated[:2] == [9.0, 9.0]


def test_throttling_that_does_not_stop_is_reported(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.fail(r"GET /2\.0/folders/.*", 503, times=100)
        with pytest.raises(StorageUnavailable, match="gave up"):
            s.list_projects()


def test_every_refresh_saves_the_new_refresh_token(tmp_path: Path):
    with storage(tmp_path) as s:
        env_token = os.environ["SOOPERVISOR_BOX_REFRESH_TOKEN"]
        s.list_projects()  # the first call refreshes: there is no access token yet
        first = credentials.load("box")
        assert first["refresh_token"] != env_token and first["refresh_token"] in s.fake.refresh_tokens
        assert env_token not in s.fake.refresh_tokens  # spent: Box refresh tokens are single-use
        s.fake.expire_access_tokens()
        s.store.client.auth._refreshed_at = 0  # as if long ago
        s.list_projects()
        second = credentials.load("box")
        assert second["refresh_token"] != first["refresh_token"] and s.fake.refreshes == 2
        # the next run with the same (now spent) environment token continues with the saved successor
        again = backend.open_url("box://soopervisor-tests", session=s.fake.session())
        assert again.list_projects() == []


def test_threads_share_one_refresh(tmp_path: Path):
    with storage(tmp_path) as s:
        s.list_projects()
        s.fake.expire_access_tokens()
        s.store.client.auth._refreshed_at = 0
        errors = []

        def work():
            try:
                s.list_projects()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and s.fake.refreshes == 2


def test_revoked_refresh_token_asks_to_log_in_without_showing_it(tmp_path: Path):
    with storage(tmp_path) as s:
        token = os.environ["SOOPERVISOR_BOX_REFRESH_TOKEN"]
        s.fake.refresh_tokens.clear()
        with pytest.raises(CredentialsError) as e:
            s.list_projects()
        assert "soopervisor login box" in e.value.hint
        assert token not in str(e.value) and s.fake.client_secret not in str(e.value)


def test_expired_developer_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeBox()
    token = fake.issue_access_token(lifetime=-1)
    monkeypatch.setenv(backend.DEVELOPER_TOKEN_ENV, token)
    s = backend.open_url("box://0", session=fake.session())
    with pytest.raises(CredentialsError) as e:
        s.list_projects()
    assert "soopervisor login box" in e.value.hint and token not in str(e.value)


def test_developer_token_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeBox()
    monkeypatch.setenv(backend.DEVELOPER_TOKEN_ENV, fake.issue_access_token())
    s = backend.open_url("box://0", session=fake.session())
    s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"1"}))
    assert s.list_projects() == ["p"]
    assert "developer token" in backend.describe()


def test_missing_credentials_name_both_ways():
    with pytest.raises(CredentialsError) as e:
        open_storage("box://0")
    assert "soopervisor login box" in e.value.hint and "SOOPERVISOR_BOX_REFRESH_TOKEN" in e.value.hint


# -- folders, listing, copying --------------------------------------------------------
def test_listing_pages_through_folder_items(tmp_path: Path):
    with storage(tmp_path, FakeBox(page_size=2)) as s:
        for commit in (SHA_A, SHA_B):
            s.put_set("p", commit, "r1", make_set(tmp_path, commit, {f"f{i}": bytes([i]) for i in range(5)}))
        assert sorted(m.commit for m in s.list_sets("p")) == [SHA_A, SHA_B]
        assert sorted(o.key for o in s.store.list(f"p/{SHA_A}/")) == sorted(
            [f"p/{SHA_A}/r1/files/f{i}" for i in range(5)] + [f"p/{SHA_A}/r1/manifest.json"])


def test_unchanged_files_are_copied_on_the_server(tmp_path: Path):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"same", "b": b"one"}))
        s.put_set("p", SHA_B, "r1", make_set(tmp_path, SHA_B, {"a": b"same", "b": b"two"}))
        assert s.last_put["copied"] == 1 and s.last_put["uploaded"] == 1
        assert s.fake.call_count(r"POST /2\.0/files/\w+/copy") == 1
        s.store.copy(f"p/{SHA_A}/r1/files/b", f"p/{SHA_B}/r1/files/b")  # replaces
        assert s.fake.find(f"soopervisor-tests/p/{SHA_B}/r1/files/b").data == b"one"


def test_stale_ids_are_looked_up_again(tmp_path: Path):
    with storage(tmp_path) as s:
        s.store.write("p/c/x", b"1")
        item = s.fake.find("soopervisor-tests/p/c/x")
        del s.fake.items[item.id]  # removed by someone else ...
        s.fake.items["999"] = type(item)("999", "file", "x", item.parent, b"2")  # ... and stored again
        assert s.store.read("p/c/x") == b"2"
        s.store.delete(["p/c/x", "p/c/never"])
        with pytest.raises(ArtifactsNotFound):
            s.store.read("p/c/x")


def test_folder_id_urls(tmp_path: Path):
    fake = FakeBox()
    with storage(tmp_path, fake, url="box://0/team/runs") as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"1"}))
        team = fake.find("team")
    assert fake.find(f"team/runs/p/{SHA_A}/r1/files/a") is not None
    with storage(tmp_path, fake, url=f"box://{team.id}/runs") as s:
        assert s.list_projects() == ["p"]


def test_unknown_folder_id_is_reported(tmp_path: Path):
    with storage(tmp_path, url="box://424242") as s:
        with pytest.raises(StorageUnavailable, match="no folder 424242"):
            s.check_writable()
        with pytest.raises(StorageUnavailable, match="Box refused to list"):
            s.list_projects()

@pytest.mark.parametrize(("url", "parsed"), [
    ("box://", ("0", [])),
    ("box://0", ("0", [])),
    ("box://123456789", ("123456789", [])),
    ("box://123/runs/ml/", ("123", ["runs", "ml"])),
    ("box://artifacts/ml", ("0", ["artifacts", "ml"])),
    ("box://0/2024", ("0", ["2024"])),
    ("box://my%20runs", ("0", ["my runs"])),
])
def test_url_forms(url: str, parsed: tuple):
    assert backend.parse_url(url) == parsed


@pytest.mark.parametrize("url", ["box://a/../b", "box://..", "box://a\\b", "dropbox://x"])
def test_bad_urls_are_refused(url: str):
    with pytest.raises(UsageError) as e:
        backend.parse_url(url)
    assert e.value.hint


# -- sign-in and status --------------------------------------------------------------
def _login(fake: FakeBox, answer, shown: list[str]) -> str:
    return backend.login(shown.append, answer, client_id=fake.client_id, client_secret=fake.client_secret,
                         session=fake.session())


def test_login_exchanges_the_code_from_the_redirect_address(tmp_path: Path):
    fake = FakeBox()
    shown: list[str] = []

    def answer(text: str) -> str:
        url = next(line.strip() for line in shown if "oauth2/authorize" in line)
        state = re.search(r"state=([^&]+)", url).group(1)
        assert "redirect_uri=http%3A%2F%2Flocalhost%3A8765%2Fcallback" in url
        return f"{backend.REDIRECT_URI}?state={state}&code={fake.authorize()}"

    where = _login(fake, answer, shown)
    assert where == str(tmp_path / "config" / "credentials" / "box.json")
    saved = credentials.load("box")
    assert saved["refresh_token"] in fake.refresh_tokens and saved["client_id"] == fake.client_id
    assert backend.open_url("box://x", session=fake.session()).list_projects() == []


def test_login_accepts_the_bare_code(tmp_path: Path):
    fake = FakeBox()
    _login(fake, lambda text: fake.authorize(), [])
    assert credentials.load("box")["refresh_token"] in fake.refresh_tokens


def test_login_refuses_a_wrong_code_or_another_sign_in(tmp_path: Path):
    fake = FakeBox()
    with pytest.raises(CredentialsError, match="did not accept"):
        _login(fake, lambda text: "bogus", [])
    with pytest.raises(CredentialsError, match="another sign-in"):
        _login(fake, lambda text: f"{backend.REDIRECT_URI}?state=other&code={fake.authorize()}", [])
    with pytest.raises(CredentialsError, match="refused"):
        _login(fake, lambda text: f"{backend.REDIRECT_URI}?error=access_denied", [])
    assert credentials.load("box") is None


def test_describe_never_shows_a_token(monkeypatch: pytest.MonkeyPatch):
    assert "not signed in" in backend.describe()
    for field, var in backend.ENV.items():
        monkeypatch.setenv(var, f"secret-{field}-value")
    text = backend.describe()
    assert "environment" in text and "secret-" not in text
    for var in backend.ENV.values():
        monkeypatch.delenv(var)
    credentials.save("box", {"client_id": "cid-123456", "client_secret": "sec-123456", "refresh_token": "rt-123456"})
    text = backend.describe()
    assert text.startswith("signed in") and "123456" not in text



def test_access_tokens_are_masked_as_soon_as_they_are_issued(tmp_path: Path):
    from soopervisor.redact import CREDENTIALS

    with storage(tmp_path) as s:
        s.list_projects()
        assert all(t in CREDENTIALS.secrets for t in s.fake.access_tokens)
        assert all(t in CREDENTIALS.secrets for t in s.fake.refresh_tokens)


# -- CI sign-in, the client-credentials grant, a refresh token already used ---------------
def test_login_for_ci_makes_a_chain_of_its_own_and_stores_nothing(tmp_path: Path):
    """The laptop's login and CI's token are different chains: neither spends the other's."""
    from soopervisor.redact import CREDENTIALS

    fake = FakeBox()
    _login(fake, lambda text: fake.authorize(), [])
    laptop = credentials.load("box")
    shown: list[str] = []
    values = backend.login_for_ci(shown.append, lambda text: fake.authorize(), client_id=fake.client_id,
                                  client_secret=fake.client_secret, session=fake.session())
    assert set(values) == {"SOOPERVISOR_BOX_CLIENT_ID", "SOOPERVISOR_BOX_CLIENT_SECRET",
                           "SOOPERVISOR_BOX_REFRESH_TOKEN"}
    ci_token = values["SOOPERVISOR_BOX_REFRESH_TOKEN"]
    assert ci_token in fake.refresh_tokens and ci_token != laptop["refresh_token"]
    assert credentials.load("box") == laptop  # nothing stored here
    assert all(v in CREDENTIALS.secrets for v in values.values())
    assert not any(ci_token in line for line in shown) and any("GitHub-hosted" in line for line in shown)
    # CI (another machine: its own config folder) refreshes its chain; the laptop still works with its own
    with storage(tmp_path / "ci", fake):
        os.environ["SOOPERVISOR_BOX_REFRESH_TOKEN"] = ci_token  # restored by storage()
        ci_store = backend.open_url("box://x", session=fake.session())
        assert ci_store.list_projects() == []
    fake.expire_access_tokens()  # the laptop refreshes too: its own chain, untouched by CI's
    assert backend.open_url("box://x", session=fake.session()).list_projects() == []
    assert fake.refreshes == 2 and {ci_token, laptop["refresh_token"]} <= fake.spent_refresh_tokens


def test_login_for_ci_refuses_a_wrong_code_with_the_ci_hint():
    fake = FakeBox()
    with pytest.raises(CredentialsError) as e:
        backend.login_for_ci(lambda text: None, lambda text: "bogus", client_id=fake.client_id,
                             client_secret=fake.client_secret, session=fake.session())
    assert "login box --ci" in e.value.hint and credentials.load("box") is None


def _ccg_env(monkeypatch: pytest.MonkeyPatch, fake: FakeBox, subject_type: str, subject_id: str) -> None:
    monkeypatch.setenv("SOOPERVISOR_BOX_CLIENT_ID", fake.client_id)
    monkeypatch.setenv("SOOPERVISOR_BOX_CLIENT_SECRET", fake.client_secret)
    monkeypatch.setenv("SOOPERVISOR_BOX_SUBJECT_TYPE", subject_type)
    monkeypatch.setenv("SOOPERVISOR_BOX_SUBJECT_ID", subject_id)


def test_client_credentials_grant_needs_no_refresh_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeBox()
    _ccg_env(monkeypatch, fake, "enterprise", fake.enterprise_id)
    monkeypatch.setenv("SOOPERVISOR_BOX_REFRESH_TOKEN", "rt-not-used-at-all")  # the grant wins over it
    s = backend.open_url("box://ci", session=fake.session())
    s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"1"}))
    assert s.list_projects() == ["p"]
    assert fake.ccg_tokens == 1 and fake.refreshes == 0 and credentials.load("box") is None
    fake.expire_access_tokens()  # an hour later: a new token, asked for with the same grant
    assert s.list_projects() == ["p"] and fake.ccg_tokens == 2
    assert "client-credentials" in backend.describe() and fake.client_secret not in backend.describe()


def test_client_credentials_grant_as_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = FakeBox(user_tokens=True)
    _ccg_env(monkeypatch, fake, "user", fake.user_id)
    assert backend.open_url("box://ci", session=fake.session()).list_projects() == []


@pytest.mark.parametrize(("fake_kw", "subject", "says"), [
    ({"ccg": False}, "enterprise", "unauthorized_client"),  # an OAuth app, not a Server Authentication one
    ({}, "user", "may not act as SOOPERVISOR_BOX_SUBJECT_TYPE=user"),  # no "Generate user access tokens"
    ({}, "wrong-enterprise", "may not act as"),
    ({"client_secret": "another-secret"}, "enterprise", "client id and secret"),
])
def test_client_credentials_errors_name_their_cause(monkeypatch: pytest.MonkeyPatch, fake_kw: dict, subject: str,
                                                    says: str):
    fake = FakeBox(**fake_kw)
    subject_id = {"enterprise": fake.enterprise_id, "user": fake.user_id, "wrong-enterprise": "424242"}[subject]
    _ccg_env(monkeypatch, fake, subject.removeprefix("wrong-"), subject_id)
    monkeypatch.setenv("SOOPERVISOR_BOX_CLIENT_SECRET", "fake-client-secret")
    with pytest.raises(CredentialsError) as e:
        backend.open_url("box://ci", session=fake.session()).list_projects()
    assert says in str(e.value) and e.value.hint and "Traceback" not in str(e.value)
    assert "fake-client-secret" not in str(e.value) + e.value.hint


def test_client_credentials_settings_are_checked(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOOPERVISOR_BOX_SUBJECT_TYPE", "team")
    monkeypatch.setenv("SOOPERVISOR_BOX_SUBJECT_ID", "1")
    with pytest.raises(CredentialsError, match="'enterprise' or 'user'"):
        open_storage("box://0")
    monkeypatch.setenv("SOOPERVISOR_BOX_SUBJECT_TYPE", "enterprise")
    with pytest.raises(CredentialsError, match="needs SOOPERVISOR_BOX_CLIENT_ID"):
        open_storage("box://0")


def test_a_refresh_token_another_machine_used_says_so(tmp_path: Path):
    """Laptop and CI hold the same token: whichever refreshes second is told why, and how to fix it."""
    fake = FakeBox()
    shared = fake.issue_refresh_token()
    machines = []
    for name in ("laptop", "ci"):
        with storage(tmp_path / name, fake):
            os.environ["SOOPERVISOR_BOX_REFRESH_TOKEN"] = shared  # restored by storage()
            machines.append(backend.open_url("box://x", session=fake.session()))
    with storage(tmp_path / "laptop", fake):
        assert machines[0].list_projects() == []
    with storage(tmp_path / "ci", fake), pytest.raises(CredentialsError) as e:
        os.environ["SOOPERVISOR_BOX_REFRESH_TOKEN"] = shared
        machines[1].list_projects()
    text = f"{e.value.message} {e.value.hint}"
    assert "already used" in text and "another machine" in text and "SOOPERVISOR_BOX_REFRESH_TOKEN" in text
    assert "soopervisor login box --ci" in e.value.hint and "SOOPERVISOR_BOX_SUBJECT_TYPE" in e.value.hint
    assert "how-to/box" in e.value.hint
    assert shared not in text and fake.client_secret not in text


def test_a_stored_token_used_elsewhere_asks_to_sign_in_again(tmp_path: Path):
    fake = FakeBox()
    _login(fake, lambda text: fake.authorize(), [])
    stored = credentials.load("box")["refresh_token"]
    fake.refresh_tokens.discard(stored)  # CI, given this laptop's token, refreshed it first
    fake.spent_refresh_tokens.add(stored)
    fake.expire_access_tokens()
    with pytest.raises(CredentialsError) as e:
        backend.open_url("box://x", session=fake.session()).list_projects()
    assert "stored on this machine was already used" in e.value.message
    assert "`soopervisor login box`" in e.value.hint and "--ci" in e.value.hint


def _race(base: str, config: str, barrier, results) -> None:
    """One process of the race: sign in with the stored token and list, through the fake's HTTP server."""
    os.environ.update(SOOPERVISOR_CONFIG_DIR=config, SOOPERVISOR_NO_KEYRING="1")
    for var in (*LIVE_VARS, backend.DEVELOPER_TOKEN_ENV, backend.SUBJECT_TYPE_ENV, backend.SUBJECT_ID_ENV):
        os.environ.pop(var, None)
    try:
        store = backend.open_url("box://race", session=relay_session(base))
        barrier.wait(60)
        results.put(("ok", store.list_projects()))
    except Exception as e:  # noqa: BLE001 - reported to the test
        results.put(("error", f"{type(e).__name__}: {e}"))


def test_two_processes_refreshing_at_once_share_one_refresh(tmp_path: Path):
    """Real processes against the fake over HTTP: the one that waited uses the token the other saved."""
    fake = FakeBox(token_delay=0.5)  # a slow token endpoint: both processes are inside the refresh at once
    credentials.save("box", {"client_id": fake.client_id, "client_secret": fake.client_secret,
                             "refresh_token": fake.issue_refresh_token()})
    server = fake.serve()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(server.url, os.environ["SOOPERVISOR_CONFIG_DIR"], barrier, results))
             for _ in range(2)]
    try:
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        server.close()
    assert outcomes == [("ok", []), ("ok", [])]
    assert fake.refreshes == 1
    assert credentials.load("box")["refresh_token"] in fake.refresh_tokens


# -- downloads that break off ----------------------------------------------------------
def test_a_dropped_download_resumes_from_the_byte_it_reached(tmp_path: Path):
    data = os.urandom(300_000)
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        s.fake.drop_downloads = [100_000, 50_000]  # the first stream breaks at 100,000, the next 50,000 later
        s.get_file("p", SHA_A, "r1", "files/big.bin", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data
        assert s.fake.download_ranges[-3:] == [None, "bytes=100000-", "bytes=150000-"]


def test_a_dropped_small_read_resumes_too(tmp_path: Path):
    with storage(tmp_path) as s:
        s.store.write("p/c/x", b"0123456789" * 1000)
        s.fake.drop_downloads = [10]
        assert s.store.read("p/c/x") == b"0123456789" * 1000
        assert s.fake.download_ranges == [None, "bytes=10-"]


def test_a_download_that_keeps_breaking_off_is_a_clear_error(tmp_path: Path):
    with storage(tmp_path) as s:
        s.store.write("p/c/x", b"x" * 5000)
        s.fake.drop_downloads = [100] * (backend.DOWNLOAD_RESUMES + 1)
        with pytest.raises(StorageUnavailable, match="broke off") as e:
            s.store.download("p/c/x", tmp_path / "out", lambda n: None)
        assert "network" in e.value.hint


def test_the_fake_drops_and_honours_range_over_real_http(tmp_path: Path):
    """The served fake breaks a stream off for real (the connection closes short of Content-Length)."""
    fake = FakeBox()
    server = fake.serve()
    try:
        with storage(tmp_path, fake) as s:
            data = os.urandom(600_000)
            s.store.write("p/c/x", data)
            relayed = backend.open_url("box://soopervisor-tests", session=relay_session(server.url))
            fake.drop_downloads = [200_000]
            assert relayed.store.read("p/c/x") == data
            first, resumed = fake.download_ranges
            # what urllib3 had not handed over when the connection broke is asked for again
            assert first is None and 0 < int(re.fullmatch(r"bytes=(\d+)-", resumed).group(1)) <= 200_000
    finally:
        server.close()


# -- names Box refuses ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "why"), [
    ("a" * 256, "255"),
    ("..", "dots only"),
    (" a", "space"),
    ("a ", "space"),
    ("a\\b", "'/'"),
    ("a\x01b", "non-printable"),
])
def test_name_rules(name: str, why: str):
    assert why in backend.name_problem(name)


def test_names_that_pass():
    from soopervisor.storage.remote import encode_name

    for name in ("a" * 255, "manifest.json", "%2E", encode_name(" odd\\name\x01 "), encode_name("..")):
        assert backend.name_problem(name) is None, name


def test_a_set_with_a_name_box_refuses_fails_before_anything_is_sent(tmp_path: Path):
    long_name = "é" * 50  # 100 bytes of UTF-8, 300 characters once percent-encoded
    with storage(tmp_path) as s:
        with pytest.raises(UnsafePath) as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"ok.txt": b"1", long_name: b"2",
                                                                     "b" * 90 + "é" * 40: b"3"}))
        assert "Box refuses 2 file names" in e.value.message and "255" in e.value.message
        assert "nothing was sent" in e.value.hint
        assert s.fake.call_count(r"POST /api/2\.0/files/.*") == 0 and s.fake.call_count(r"POST /2\.0/folders") == 0


def test_the_fake_enforces_box_name_rules(tmp_path: Path):
    """What Box does with such names when they are sent anyway: 400s, and file names silently changed."""
    import io

    from box_sdk_gen import (
        BoxAPIError,
        CreateFolderParent,
        UploadFileAttributes,
        UploadFileAttributesParentField,
    )

    with storage(tmp_path) as s:
        client = s.store.client
        for name, code in [("a" * 256, "item_name_too_long"), ("trailing ", "item_name_invalid"),
                           ("..", "item_name_invalid"), ("a\\b", "item_name_invalid")]:
            with pytest.raises(BoxAPIError) as e:
                client.folders.create_folder(name, CreateFolderParent(id="0"))
            assert e.value.response_info.code == code
        with pytest.raises(BoxAPIError) as e:
            client.uploads.upload_file(UploadFileAttributes(name="x" * 256, parent=UploadFileAttributesParentField(id="0")),
                                       io.BytesIO(b"1"))
        assert e.value.response_info.code == "item_name_too_long"
        files = client.uploads.upload_file(
            UploadFileAttributes(name="a\x01b", parent=UploadFileAttributesParentField(id="0")), io.BytesIO(b"1"))
        assert files.entries[0].name == "ab"  # Box removes the character without a word
        with pytest.raises(UnsafePath, match="item_name_too_long"):
            s.store.write("p/" + "y" * 256, b"1")  # sent anyway: Box's 400 is an UnsafePath


# -- the real service ----------------------------------------------------------------
@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autouse fixture hid the real variables; the live test takes them from the original environment."""
    for var, value in _REAL_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(box_network_client, "time", __import__("time"))
    monkeypatch.setattr(backend, "_sleep", __import__("time").sleep)


@pytest.mark.live
@pytest.mark.skipif(
    not (all(_REAL_ENV.get(v) for v in LIVE_VARS) or _REAL_ENV.get(backend.DEVELOPER_TOKEN_ENV)),
    reason=f"live Box test: set {', '.join(LIVE_VARS)} (or {backend.DEVELOPER_TOKEN_ENV}) to run it",
)
def test_live_round_trip(tmp_path: Path, live_env: None):
    run = uuid.uuid4().hex[:12]
    s = open_storage(f"box://soopervisor-live-tests/{run}")
    s.check_writable()
    s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"hello", "b.bin": os.urandom(1000)}))
    s.put_set("p", SHA_B, "r1", make_set(tmp_path, SHA_B, {"a.txt": b"hello"}))
    assert s.last_put["copied"] == 1
    s.get_file("p", SHA_A, "r1", "files/a.txt", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"hello"
    folder = s.store._folder_id("", create=False)
    s.store.client.folders.delete_folder_by_id(folder, recursive=True)


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"f-{uuid.uuid4().hex[:6]}"
    path.write_bytes(data)
    return path

"""OneDrive specifics: upload sessions and their resume, copies, throttling, tokens, quota, login.

msal and requests talk to a fake of Microsoft Graph and of the identity
platform on 127.0.0.1 (tests/fakes/graph_api.py); live tests run when real
credentials are in the environment.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import onedrive, open_storage
from soopervisor.storage.remote import RemoteStorage
from tests.backends.onedrive import fake_env, storage
from tests.fakes.graph_api import FakeGraph

KiB = 1024
FRAG = 320 * KiB


@pytest.fixture
def fake():
    fake = FakeGraph(page_size=4)
    yield fake
    fake.close()


@pytest.fixture
def st(fake, tmp_path):
    with storage(tmp_path, fake) as st:
        yield st


@pytest.fixture
def small_fragments(monkeypatch):
    monkeypatch.setattr(onedrive, "SIMPLE_LIMIT", FRAG)
    monkeypatch.setattr(onedrive, "CHUNK_SIZE", FRAG)


def _file(tmp_path: Path, size: int, name: str = "big.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _fragments(fake: FakeGraph) -> list[dict]:
    return [e for e in fake.log if e["path"].startswith("/upload/") and e["method"] == "PUT"]


def test_large_files_go_through_an_upload_session_in_320_kib_fragments(st, fake, tmp_path, small_fragments):
    size = 3 * FRAG + 500
    src = _file(tmp_path, size)
    moved = []
    st.store.upload("proj/c1/big.bin", src, moved.append)
    assert any(e["path"].endswith(":/createUploadSession") for e in fake.log)
    frags = _fragments(fake)
    assert [e["content_range"] for e in frags] == [
        f"bytes 0-{FRAG - 1}/{size}", f"bytes {FRAG}-{2 * FRAG - 1}/{size}",
        f"bytes {2 * FRAG}-{3 * FRAG - 1}/{size}", f"bytes {3 * FRAG}-{size - 1}/{size}"]
    assert all(e["auth"] is None for e in frags)  # the uploadUrl is pre-authenticated
    assert sum(moved) == size
    assert fake.file("soopervisor/tests/proj/c1/big.bin").data == src.read_bytes()


def test_small_files_are_one_put(st, fake, tmp_path, small_fragments):
    st.store.upload("proj/c1/small.txt", _file(tmp_path, FRAG, "small.txt"), lambda n: None)
    assert not _fragments(fake)
    assert [e["method"] for e in fake.log if e["path"].endswith(":/content")] == ["PUT"]


def test_the_fake_refuses_a_single_put_above_4_mb(st, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(onedrive, "SIMPLE_LIMIT", 10 * 1024 * KiB)  # a backend that ignored the rule
    with pytest.raises(StorageUnavailable, match="requestTooLarge"):
        st.store.upload("proj/c1/big.bin", _file(tmp_path, 4 * 1024 * KiB + 1), lambda n: None)


def test_an_upload_resumes_from_next_expected_ranges_after_a_dropped_connection(st, fake, tmp_path, small_fragments):
    size = 4 * FRAG
    src = _file(tmp_path, size)
    # the second fragment arrives, then the connection drops before the answer
    fake.fail(method="PUT", path="/upload/", skip=1, after=True, drop=True)
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    upload = [(e["method"], e["content_range"]) for e in fake.log if e["path"].startswith("/upload/")]
    assert upload == [("PUT", f"bytes 0-{FRAG - 1}/{size}"), ("PUT", f"bytes {FRAG}-{2 * FRAG - 1}/{size}"),
                      ("GET", None),  # which bytes does the session still need? from 2 fragments on
                      ("PUT", f"bytes {2 * FRAG}-{3 * FRAG - 1}/{size}"), ("PUT", f"bytes {3 * FRAG}-{size - 1}/{size}")]
    assert fake.file("soopervisor/tests/proj/c1/big.bin").data == src.read_bytes()


def test_a_throttled_fragment_waits_retry_after_and_is_sent_again(st, fake, tmp_path, small_fragments):
    waits = []
    st.store.sleep = waits.append
    size = 2 * FRAG + 1
    src = _file(tmp_path, size)
    fake.fail(429, method="PUT", path="/upload/", skip=1, headers={"Retry-After": "3"})
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    assert waits == [3.0]
    assert [e["content_range"] for e in _fragments(fake)].count(f"bytes {FRAG}-{2 * FRAG - 1}/{size}") == 2
    assert fake.file("soopervisor/tests/proj/c1/big.bin").data == src.read_bytes()


def test_an_expired_upload_session_starts_over(st, fake, tmp_path, small_fragments):
    size = 2 * FRAG + 1
    src = _file(tmp_path, size)
    fake.fail(404, method="PUT", path="/upload/", skip=1, code="itemNotFound")
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    assert sum(e["path"].endswith(":/createUploadSession") for e in fake.log) == 2
    assert fake.file("soopervisor/tests/proj/c1/big.bin").data == src.read_bytes()


def test_throttled_requests_honour_retry_after(st, fake):
    waits = []
    st.store.sleep = waits.append
    fake.fail(429, method="GET", path="/v1.0/", headers={"Retry-After": "5"})
    fake.fail(503, method="GET", path="/v1.0/", headers={"Retry-After": "2"})
    assert list(st.store.list("")) == []
    assert waits == [5.0, 2.0]


def test_dropped_connections_are_retried(st, fake):
    st.store.write("proj/c1/x.txt", b"x")
    fake.fail(method="GET", path="/download/", drop=True)
    assert st.store.read("proj/c1/x.txt") == b"x"


def test_copies_run_on_the_server_and_are_polled_until_done(fake, tmp_path):
    fake.copy_polls = 2
    with storage(tmp_path, fake) as st:
        st.store.write("proj/c1/a.txt", b"content")
        st.store.write("proj/c2/a.txt", b"old")  # replaced by the copy
        st.store.copy("proj/c1/a.txt", "proj/c2/a.txt")
    assert fake.file("soopervisor/tests/proj/c2/a.txt").data == b"content"
    polls = [e for e in fake.log if e["path"].startswith("/monitor/")]
    assert len(polls) == 3 and all(e["auth"] is None for e in polls)


def test_an_expired_access_token_is_renewed_once(st, fake):
    st.store.write("proj/c1/x.txt", b"x")
    fake.expire_access_tokens()
    assert st.store.read("proj/c1/x.txt") == b"x"


def test_a_rotated_refresh_token_is_saved_at_once(fake, tmp_path):
    first = fake.issue_refresh_token()
    with fake_env(fake, tmp_path, ci=False):
        credentials.save("onedrive", {"client_id": fake.client_id, "refresh_token": first})
        st = open_storage("onedrive://soopervisor/tests")
        st.check_writable()
        saved = credentials.load("onedrive")["refresh_token"]
    assert saved != first and saved in fake.refresh_tokens and first not in fake.refresh_tokens


def test_a_revoked_sign_in_says_how_to_sign_in_again_and_shows_no_token(fake, tmp_path):
    token = fake.issue_refresh_token()
    fake.revoke()
    with fake_env(fake, tmp_path, ci=False):
        credentials.save("onedrive", {"client_id": fake.client_id, "refresh_token": token})
        with pytest.raises(CredentialsError) as e:
            open_storage("onedrive://soopervisor/tests").list_projects()
    assert e.value.hint == "soopervisor login onedrive"
    assert "expired or was revoked" in e.value.message and token not in str(e.value)


def test_a_revoked_ci_token_names_the_variable_to_update(fake, tmp_path):
    with fake_env(fake, tmp_path):
        st = onedrive.open_url("onedrive://x")
        fake.revoke()
        with pytest.raises(CredentialsError) as e:
            st.list_projects()
    assert e.value.hint.startswith("soopervisor login onedrive") and "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN" in e.value.hint


def test_no_credentials_names_both_ways_to_sign_in(monkeypatch):
    for var in onedrive.ENV.values():
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialsError) as e:
        onedrive.open_url("onedrive://x")
    assert "soopervisor login onedrive" in e.value.hint
    assert all(var in e.value.hint for var in onedrive.ENV.values())


def test_a_full_onedrive_is_reported_with_what_to_do(st, fake, tmp_path):
    fake.quota = 10
    with pytest.raises(StorageUnavailable) as e:
        st.store.write("proj/c1/x.txt", b"more than ten bytes")
    assert "storage is full" in e.value.message and "free space" in e.value.hint
    with pytest.raises(StorageUnavailable, match="full"):
        fake.quota = 0
        st.check_writable()


def test_missing_objects_are_not_found(st):
    with pytest.raises(ArtifactsNotFound):
        st.store.read("proj/c1/nothing.txt")
    st.store.delete(["proj/c1/nothing.txt"])  # gone already: fine


def test_listings_follow_next_links(st, fake):
    for i in range(10):
        st.store.write(f"proj/c1/f{i}.txt", b"x")
    assert sorted(o.key for o in st.store.list("proj/")) == sorted(f"proj/c1/f{i}.txt" for i in range(10))
    assert any("$skiptoken" in e["query"] or "%24skiptoken" in e["path"] for e in fake.log)


@pytest.mark.parametrize("url", ["onedrive://", "onedrive:///", "onedrive://a/../b", "onedrive://a:b", "onedrive://a#x"])
def test_bad_urls_say_what_a_good_one_looks_like(url):
    with pytest.raises(UsageError) as e:
        onedrive.parse_url(url)
    assert "onedrive://folder/path" in e.value.hint


def test_device_code_login_saves_the_refresh_token(fake, tmp_path, monkeypatch):
    monkeypatch.setenv(onedrive.AUTHORITY_ENV, fake.authority)
    shown: list[str] = []
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return fake.client_id

    where = onedrive.login(shown.append, prompt)
    assert where.endswith("onedrive.json") and asked == ["Application (client) ID"]
    assert any("FAKE1234" in line and "devicelogin" in line for line in shown)
    saved = credentials.load("onedrive")
    assert saved["client_id"] == fake.client_id and saved["refresh_token"] in fake.refresh_tokens
    assert not any(saved["refresh_token"] in line for line in shown)
    assert onedrive.describe() == "signed in (from the stored login)"


def test_login_with_an_unknown_client_id_is_a_clear_error(fake, monkeypatch):
    monkeypatch.setenv(onedrive.AUTHORITY_ENV, fake.authority)
    monkeypatch.setenv(onedrive.ENV["client_id"], "not-registered")
    with pytest.raises(CredentialsError) as e:
        onedrive.login(lambda s: None, lambda s: "")
    assert "public client flows" in e.value.hint


def test_describe_never_shows_a_token(fake, tmp_path):
    assert onedrive.describe().startswith("not signed in")
    token = fake.issue_refresh_token()
    with fake_env(fake, tmp_path, refresh_token=token):
        line = onedrive.describe()
    assert line == "signed in (from the environment)" and token not in line


def test_open_storage_dispatches_onedrive_urls(fake, tmp_path):
    with fake_env(fake, tmp_path):
        st = open_storage("onedrive://Apps/soopervisor/")
    assert isinstance(st, RemoteStorage) and st.url == "onedrive://Apps/soopervisor"


# -- the real service ----------------------------------------------------------------
LIVE_VARS = list(onedrive.ENV.values())
live = pytest.mark.skipif(
    not all(os.environ.get(v) for v in LIVE_VARS),
    reason=f"live OneDrive test: set {', '.join(LIVE_VARS)}",
)


@pytest.mark.live
@live
def test_live_round_trip(monkeypatch):
    for var in (onedrive.GRAPH_URL_ENV, onedrive.AUTHORITY_ENV):
        monkeypatch.delenv(var, raising=False)
    st = onedrive.open_url(os.environ.get("SOOPERVISOR_ONEDRIVE_LIVE_URL", "onedrive://soopervisor-live-tests"))
    st.check_writable()
    key = f"live/{os.getpid()}/hello.txt"
    st.store.write(key, b"hello")
    try:
        assert st.store.read(key) == b"hello"
        assert any(o.key == key for o in st.store.list("live/"))
    finally:
        st.store.delete([key])


def test_the_cli_lists_stored_sets_and_shows_no_token(fake, tmp_path):
    from tests.conftest import cli
    from tests.test_storage_contract import COMMIT_A, FILES, make_set

    fake.rotate = False  # the subprocess reuses the variable's refresh token
    token = fake.issue_refresh_token()
    with fake_env(fake, tmp_path, refresh_token=token):
        onedrive.open_url("onedrive://cli-tests").put_set("proj", COMMIT_A, "run1", make_set(tmp_path, COMMIT_A, FILES))
        variables = {k: os.environ[k] for k in (*onedrive.ENV.values(), onedrive.GRAPH_URL_ENV, onedrive.AUTHORITY_ENV)}
    proc = cli("artifacts", "list", "--project", "proj", "--storage", "onedrive://cli-tests", env=variables, check=0)
    assert COMMIT_A[:7] in proc.stdout
    proc = cli("login", "--status", env=variables, check=0)
    assert "onedrive  signed in (from the environment)" in proc.stdout
    assert token not in proc.stdout + proc.stderr
    fake.revoke()
    proc = cli("artifacts", "list", "--project", "proj", "--storage", "onedrive://cli-tests", env=variables, check=3)
    assert "soopervisor login onedrive" in proc.stderr and "Traceback" not in proc.stderr
    assert token not in proc.stdout + proc.stderr


def test_a_large_manifest_goes_through_an_upload_session(st, fake, small_fragments):
    data = os.urandom(2 * FRAG + 10)
    st.store.write("proj/c1/manifest.json", data)
    assert len(_fragments(fake)) == 3
    assert st.store.read("proj/c1/manifest.json") == data


def test_an_upload_that_keeps_failing_stops_with_a_clear_error_and_frees_its_session(st, fake, tmp_path,
                                                                                    small_fragments):
    fake.fail(503, method="PUT", path="/upload/", skip=1, times=100)
    with pytest.raises(StorageUnavailable, match="kept failing"):
        st.store.upload("proj/c1/big.bin", _file(tmp_path, 3 * FRAG), lambda n: None)
    assert fake.sessions == {}  # DELETE uploadUrl: the partial bytes are dropped
    with pytest.raises(ArtifactsNotFound):
        st.store.read("proj/c1/big.bin")

"""Google Drive specifics: resumable uploads and their resume, throttling, tokens, quota, login.

The real google-api-python-client talks to a fake of the Drive API on
127.0.0.1 (tests/fakes/gdrive_api.py); live tests run when real credentials
are in the environment.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import gdrive, open_storage
from soopervisor.storage.remote import RemoteStorage
from tests.backends.gdrive import env, fake_env, storage
from tests.fakes.gdrive_api import FakeDrive

KiB = 1024
CHUNK = 256 * KiB


@pytest.fixture
def fake():
    fake = FakeDrive(page_size=4)
    yield fake
    fake.close()


@pytest.fixture
def st(fake, tmp_path):
    with storage(tmp_path, fake) as st:
        yield st


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(gdrive, "RESUMABLE_THRESHOLD", CHUNK)
    monkeypatch.setattr(gdrive, "CHUNK_SIZE", CHUNK)


def _file(tmp_path: Path, size: int, name: str = "big.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _uploads(fake: FakeDrive) -> list[dict]:
    return [e for e in fake.log if e["path"] == "/upload/drive/v3/files"]


def test_large_files_use_resumable_chunks_of_256_kib_and_small_ones_one_request(st, fake, tmp_path, small_chunks):
    size = 3 * CHUNK + 1000
    src = _file(tmp_path, size)
    moved = []
    st.store.upload("proj/c1/big.bin", src, moved.append)
    st.store.upload("proj/c1/small.txt", _file(tmp_path, 100, "small.txt"), lambda n: None)
    log = _uploads(fake)
    assert log[0]["method"] == "POST" and log[0]["query"]["uploadType"] == "resumable"
    ranges = [e["content_range"] for e in log if e["method"] == "PUT"]
    assert ranges == [f"bytes 0-{CHUNK - 1}/{size}", f"bytes {CHUNK}-{2 * CHUNK - 1}/{size}",
                      f"bytes {2 * CHUNK}-{3 * CHUNK - 1}/{size}", f"bytes {3 * CHUNK}-{size - 1}/{size}"]
    assert log[-1]["method"] == "POST" and log[-1]["query"]["uploadType"] == "multipart"
    assert sum(moved) == size
    assert st.store.read("proj/c1/big.bin") == src.read_bytes()
    [item] = fake.files_named("big.bin")
    assert fake.items[item.parents[0]].name == "c1"


def test_an_upload_resumes_from_the_range_the_server_reports(st, fake, tmp_path, small_chunks):
    size = 4 * CHUNK
    src = _file(tmp_path, size)
    # the second chunk arrives, but its answer is lost (a 503 after the fact)
    fake.fail(503, method="PUT", path="upload_id", skip=1, after=True)
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    puts = [e["content_range"] for e in _uploads(fake) if e["method"] == "PUT"]
    assert puts == [f"bytes 0-{CHUNK - 1}/{size}", f"bytes {CHUNK}-{2 * CHUNK - 1}/{size}",
                    f"bytes */{size}",  # which bytes arrived? 0..2 chunks: go on from there
                    f"bytes {2 * CHUNK}-{3 * CHUNK - 1}/{size}", f"bytes {3 * CHUNK}-{size - 1}/{size}"]
    assert st.store.read("proj/c1/big.bin") == src.read_bytes()


def test_a_failed_chunk_that_did_not_arrive_is_sent_again(st, fake, tmp_path, small_chunks):
    size = 3 * CHUNK
    src = _file(tmp_path, size)
    fake.fail(500, method="PUT", path="upload_id", skip=1)
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    puts = [e["content_range"] for e in _uploads(fake) if e["method"] == "PUT"]
    assert puts.count(f"bytes {CHUNK}-{2 * CHUNK - 1}/{size}") == 2
    assert st.store.read("proj/c1/big.bin") == src.read_bytes()


def test_throttling_waits_as_long_as_retry_after_says(st, fake):
    waits = []
    st.store.sleep = waits.append
    fake.fail(429, method="GET", path="/drive/v3/files", headers={"Retry-After": "7"})
    fake.fail(403, method="GET", path="/drive/v3/files", reason="userRateLimitExceeded")
    assert list(st.store.list("")) == []
    assert waits[0] == 7.0 and len(waits) == 2


def test_persistent_server_errors_end_in_a_clear_error(st, fake):
    fake.fail(503, method="GET", times=100)
    with pytest.raises(StorageUnavailable, match="kept failing"):
        list(st.store.list(""))


def test_an_expired_access_token_is_refreshed_without_the_user_noticing(st, fake):
    st.store.write("proj/c1/x.txt", b"x")
    fake.expire_access_tokens()
    assert st.store.read("proj/c1/x.txt") == b"x"
    assert sum(e["path"] == "/token" for e in fake.log) == 2


def test_a_revoked_sign_in_says_how_to_sign_in_again_and_shows_no_token(fake, tmp_path):
    token = fake.issue_refresh_token()
    credentials.save("gdrive", {"client_id": fake.client_id, "client_secret": fake.client_secret,
                                "refresh_token": token})
    with env(**{gdrive.API_URL_ENV: fake.url, gdrive.TOKEN_URL_ENV: fake.token_url}):
        st = open_storage("gdrive://soopervisor-tests")
        fake.revoke()
        with pytest.raises(CredentialsError) as e:
            st.list_projects()
    assert e.value.hint == "soopervisor login gdrive"
    assert "expired or was revoked" in e.value.message
    assert token not in str(e.value) and fake.client_secret not in str(e.value)


def test_a_revoked_ci_token_names_the_variable_to_update(fake, tmp_path):
    with fake_env(fake, tmp_path):
        st = gdrive.open_url("gdrive://soopervisor-tests")
        fake.revoke()
        with pytest.raises(CredentialsError) as e:
            st.list_projects()
    assert e.value.hint.startswith("soopervisor login gdrive") and "SOOPERVISOR_GDRIVE_REFRESH_TOKEN" in e.value.hint


def test_no_credentials_names_both_ways_to_sign_in(monkeypatch):
    for var in gdrive.ENV.values():
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(CredentialsError) as e:
        gdrive.open_url("gdrive://x")
    assert "soopervisor login gdrive" in e.value.hint
    assert all(var in e.value.hint for var in gdrive.ENV.values())


def test_a_full_drive_is_reported_with_what_to_do(st, fake, tmp_path):
    fake.quota = 10
    with pytest.raises(StorageUnavailable) as e:
        st.store.write("proj/c1/x.txt", b"more than ten bytes")
    assert "storage is full" in e.value.message and "free space" in e.value.hint
    fake.quota = 0
    with pytest.raises(StorageUnavailable, match="full"):
        st.check_writable()


def test_check_writable_creates_the_folder_under_my_drive(st, fake):
    st.check_writable()
    [folder] = [i for i in fake.items.values() if i.name == "soopervisor-tests"]
    assert folder.parents == ["root"] and folder.mimeType == gdrive.FOLDER_MIME


def test_concurrent_writes_make_one_folder_per_name(st, fake, tmp_path):
    src = tmp_path / "set"
    (src / "out").mkdir(parents=True)
    for i in range(8):
        (src / "out" / f"f{i}.txt").write_text(str(i))
    from tests.test_storage_contract import make_set

    st.put_set("proj", "c" * 40, "run1", make_set(tmp_path, "c" * 40, {f"out/f{i}.txt": b"%d" % i for i in range(8)}))
    names = [i.name for i in fake.items.values() if i.mimeType == gdrive.FOLDER_MIME]
    assert sorted(names) == sorted(set(names))


def test_missing_objects_are_not_found(st):
    with pytest.raises(ArtifactsNotFound):
        st.store.read("proj/c1/nothing.txt")
    st.store.delete(["proj/c1/nothing.txt"])  # gone already: fine


@pytest.mark.parametrize("url", ["gdrive://", "gdrive:///", "gdrive://a/../b", "gdrive://a?x=1"])
def test_bad_urls_say_what_a_good_one_looks_like(url):
    with pytest.raises(UsageError) as e:
        gdrive.parse_url(url)
    assert "gdrive://FOLDER" in e.value.hint


def test_urls_name_folders_under_my_drive():
    assert gdrive.parse_url("gdrive://soopervisor") == ["soopervisor"]
    assert gdrive.parse_url("gdrive://team/artifacts/") == ["team", "artifacts"]


def test_console_login_stores_the_refresh_token_and_client(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the fake's token endpoint is plain http
    monkeypatch.setenv(gdrive.TOKEN_URL_ENV, fake.token_url)
    monkeypatch.setenv(gdrive.AUTH_URL_ENV, fake.auth_url)
    shown: list[str] = []
    answers = iter([fake.client_id, fake.client_secret])

    def prompt(text: str) -> str:
        if "client" in text:
            return next(answers)
        url = next(line for line in shown if line.startswith(fake.auth_url))
        query = parse_qs(urlsplit(url).query)
        assert query["scope"] == ["https://www.googleapis.com/auth/drive.file"]
        assert query["access_type"] == ["offline"]
        code = fake.issue_code(query["redirect_uri"][0])
        return f"{query['redirect_uri'][0]}?state={query['state'][0]}&code={code}&scope=drive.file"

    where = gdrive.login(shown.append, prompt, console=True)
    assert where.endswith("gdrive.json")
    saved = credentials.load("gdrive")
    assert saved["refresh_token"] in fake.refresh_tokens and saved["client_id"] == fake.client_id
    assert not any(saved["refresh_token"] in line or fake.client_secret in line for line in shown)
    with env(**{gdrive.API_URL_ENV: fake.url}):
        st = gdrive.open_url("gdrive://after-login")
        st.check_writable()
        assert "signed in (from the stored login)" == gdrive.describe()


def test_a_wrong_code_is_a_credentials_error(fake, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv(gdrive.TOKEN_URL_ENV, fake.token_url)
    monkeypatch.setenv(gdrive.ENV["client_id"], fake.client_id)
    monkeypatch.setenv(gdrive.ENV["client_secret"], fake.client_secret)
    with pytest.raises(CredentialsError) as e:
        gdrive.login(lambda s: None, lambda s: "not-a-code", console=True)
    assert e.value.hint == "soopervisor login gdrive"


def test_describe_says_where_the_sign_in_comes_from_and_never_a_token(fake, tmp_path, monkeypatch):
    assert gdrive.describe().startswith("not signed in")
    token = fake.issue_refresh_token()
    with fake_env(fake, tmp_path, refresh_token=token):
        line = gdrive.describe()
    assert line == "signed in (from the environment)"
    assert token not in line and fake.client_secret not in line


def test_open_storage_dispatches_gdrive_urls(fake, tmp_path):
    with fake_env(fake, tmp_path):
        st = open_storage("gdrive://soopervisor-tests")
    assert isinstance(st, RemoteStorage) and st.url == "gdrive://soopervisor-tests"
    assert re.match(r"RemoteStorage\('gdrive://", repr(st))


# -- the real service ----------------------------------------------------------------
LIVE_VARS = list(gdrive.ENV.values())
live = pytest.mark.skipif(
    not all(os.environ.get(v) for v in LIVE_VARS),
    reason=f"live Google Drive test: set {', '.join(LIVE_VARS)}",
)


@pytest.mark.live
@live
def test_live_round_trip(tmp_path, monkeypatch):
    for var in (gdrive.API_URL_ENV, gdrive.TOKEN_URL_ENV):
        monkeypatch.delenv(var, raising=False)
    st = gdrive.open_url(os.environ.get("SOOPERVISOR_GDRIVE_LIVE_URL", "gdrive://soopervisor-live-tests"))
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

    token = fake.issue_refresh_token()
    with fake_env(fake, tmp_path, refresh_token=token):
        gdrive.open_url("gdrive://cli-tests").put_set("proj", COMMIT_A, "run1", make_set(tmp_path, COMMIT_A, FILES))
        variables = {k: os.environ[k] for k in (*gdrive.ENV.values(), gdrive.API_URL_ENV, gdrive.TOKEN_URL_ENV)}
    proc = cli("artifacts", "list", "--project", "proj", "--storage", "gdrive://cli-tests", env=variables, check=0)
    assert COMMIT_A[:7] in proc.stdout
    proc = cli("login", "--status", env=variables, check=0)
    assert "gdrive    signed in (from the environment)" in proc.stdout
    assert token not in proc.stdout + proc.stderr and fake.client_secret not in proc.stdout + proc.stderr
    fake.revoke()
    proc = cli("artifacts", "list", "--project", "proj", "--storage", "gdrive://cli-tests", env=variables, check=3)
    assert "soopervisor login gdrive" in proc.stderr and "Traceback" not in proc.stderr
    assert token not in proc.stdout + proc.stderr


def test_a_large_manifest_is_written_resumably(st, fake, small_chunks):
    data = os.urandom(2 * CHUNK + 10)
    st.store.write("proj/c1/manifest.json", data)
    assert any(e["method"] == "PUT" for e in _uploads(fake))
    assert st.store.read("proj/c1/manifest.json") == data


def test_an_expired_upload_session_starts_over(st, fake, tmp_path, small_chunks):
    size = 3 * CHUNK
    src = _file(tmp_path, size)
    fake.fail(404, method="PUT", path="upload_id", skip=1, reason="notFound")
    st.store.upload("proj/c1/big.bin", src, lambda n: None)
    assert sum(e["method"] == "POST" and e["query"].get("uploadType") == "resumable" for e in _uploads(fake)) == 2
    assert st.store.read("proj/c1/big.bin") == src.read_bytes()
    assert len(fake.files_named("big.bin")) == 1

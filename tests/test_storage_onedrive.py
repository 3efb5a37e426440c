"""OneDrive specifics: upload sessions and their resume, copies, throttling, tokens, quota, login.

msal and requests talk to a fake of Microsoft Graph and of the identity
platform on 127.0.0.1 (tests/fakes/graph_api.py); live tests run when real
credentials are in the environment.
"""
from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from pathlib import Path

import pytest

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath, UsageError
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


# -- the authority: who signs in --------------------------------------------------------------
@pytest.mark.parametrize("value, url", [
    (None, "https://login.microsoftonline.com/consumers"),
    ("consumers", "https://login.microsoftonline.com/consumers"),
    ("organizations", "https://login.microsoftonline.com/organizations"),
    ("common", "https://login.microsoftonline.com/common"),
    ("0b7cbb4c-2b0f-4a4e-9a49-0d1c1a3f6c2e", "https://login.microsoftonline.com/0b7cbb4c-2b0f-4a4e-9a49-0d1c1a3f6c2e"),
    ("contoso.onmicrosoft.com", "https://login.microsoftonline.com/contoso.onmicrosoft.com"),
    ("https://login.microsoftonline.us/organizations/", "https://login.microsoftonline.us/organizations"),
])
def test_the_authority_is_chosen_by_account_type(value, url, monkeypatch):
    monkeypatch.delenv(onedrive.AUTHORITY_ENV, raising=False)
    assert onedrive.authority_url(value) == url
    if value:
        monkeypatch.setenv(onedrive.AUTHORITY_ENV, value)
        assert onedrive.authority_url() == url


def test_who_an_authority_signs_in_is_said_in_words():
    assert onedrive.who_signs_in(onedrive.AUTHORITY) == "personal Microsoft accounts"
    assert onedrive.who_signs_in(onedrive.authority_url("organizations")) == "work or school accounts"
    assert onedrive.who_signs_in(onedrive.authority_url("common")) == "personal, work or school accounts"
    assert "directory contoso.onmicrosoft.com" in onedrive.who_signs_in(onedrive.authority_url("contoso.onmicrosoft.com"))


def test_a_bad_authority_value_says_what_is_accepted(monkeypatch):
    monkeypatch.setenv(onedrive.AUTHORITY_ENV, "my tenant")
    with pytest.raises(UsageError) as e:
        onedrive.authority_url()
    assert all(word in e.value.hint for word in ("consumers", "organizations", "common", "tenant ID"))


def _login(fake: FakeGraph, tmp_path: Path, tenant: str | None = "consumers") -> tuple[str, list[str]]:
    shown: list[str] = []
    with fake_env(fake, tmp_path, ci=False, tenant=tenant):
        where = onedrive.login(shown.append, lambda text: fake.client_id)
    return where, shown


def test_login_says_which_authority_it_uses(fake, tmp_path):
    _, shown = _login(fake, tmp_path)
    assert shown[1] == (f"Signing in at {fake.authority_for('consumers')} (personal Microsoft accounts; "
                        f"from {onedrive.AUTHORITY_ENV})")


def test_a_work_account_signs_in_at_organizations_and_refreshes_there(fake, tmp_path):
    from soopervisor.redact import CREDENTIALS

    fake.account = "work"
    _, shown = _login(fake, tmp_path, tenant="organizations")
    assert "(work or school accounts;" in shown[1]
    url = fake.authority_for("organizations")
    fake.log.clear()
    with fake_env(fake, tmp_path, ci=False, tenant=None):  # no variable: the stored login's authority
        assert credentials.load("onedrive")["authority"].endswith(":" + url)
        open_storage("onedrive://soopervisor/tests").check_writable()
    assert any(e["path"] == "/organizations/oauth2/v2.0/token" for e in fake.log)
    assert not any(e["path"].startswith("/consumers/") for e in fake.log)
    assert CREDENTIALS.redact(f"at {url} or organizations") == f"at {url} or organizations"  # not a secret


# -- each known sign-in failure: its cause and its fix -----------------------------------------
def _unknown_app(fake):
    fake.client_id = "11111111-2222-3333-4444-555555555555"  # registered: another app; ours is unknown


LOGIN_FAILURES = {
    # name: (set-up, tenant, words in the message, words in the hint)
    "app not found (AADSTS700016)": (_unknown_app, "consumers", ["unauthorized_client, AADSTS700016",
                                     "does not know the application (client) ID"],
                                     ["Overview", "personal Microsoft accounts", "public client flows"]),
    "single-directory app at common (AADSTS50194)": (lambda f: setattr(f, "audience", "AzureADMyOrg"), "common",
                                                     ["AADSTS50194", "registered for its own directory only"],
                                                     ["Supported account types", "tenant ID"]),
    "work-only app at consumers (AADSTS9002332)": (lambda f: setattr(f, "audience", "AzureADMultipleOrgs"), "consumers",
                                                   ["AADSTS9002332", "work or school accounts only"],
                                                   ["personal Microsoft accounts", "organizations"]),
    "personal-only app at organizations (AADSTS9002331)": (lambda f: setattr(f, "audience", "PersonalMicrosoftAccount"),
                                                           "organizations",
                                                           ["AADSTS9002331", "personal Microsoft accounts only"],
                                                           ["consumers"]),
    "personal account at organizations (AADSTS50020)": (lambda f: None, "organizations",
                                                        ["AADSTS50020", "not one", "work or school accounts"],
                                                        ["consumers", "Supported account types"]),
    "work account at consumers (AADSTS500208)": (lambda f: setattr(f, "account", "work"), "consumers",
                                                 ["AADSTS500208", "personal Microsoft accounts"],
                                                 ["organizations"]),
    "public client flows off (AADSTS7000218)": (lambda f: setattr(f, "public_client", False), "consumers",
                                                ["invalid_client, AADSTS7000218", "public client flows"],
                                                ["Allow public client flows: Yes"]),
    "declined at devicelogin": (lambda f: setattr(f, "device_outcome", "decline"), "consumers",
                                ["authorization_declined", "declined"], ["accept the permissions"]),
    "device code expired": (lambda f: setattr(f, "device_outcome", "expire"), "consumers",
                            ["expired_token, AADSTS70019", "not entered in time"], ["new code"]),
    "a tenant that does not exist (AADSTS90002)": (lambda f: None, "nosuchtenant.onmicrosoft.com",
                                                   ["is unknown"], [onedrive.AUTHORITY_ENV, "tenant ID"]),
}


@pytest.mark.parametrize("case", LOGIN_FAILURES)
def test_each_login_failure_names_its_cause_and_fix(fake, tmp_path, case):
    setup, tenant, said, fix = LOGIN_FAILURES[case]
    ours = fake.client_id
    setup(fake)
    with fake_env(fake, tmp_path, ci=False, tenant=tenant), pytest.raises(CredentialsError) as e:
        onedrive.login(lambda s: None, lambda s: ours)
    message, hint = e.value.message, e.value.hint
    print(f"{case}:\n  {message}\n  hint: {hint}")  # -s shows every message
    assert all(w in message for w in said), message
    assert all(w in hint for w in fix), hint
    assert "Trace ID" not in str(e.value) and "Traceback" not in str(e.value)
    assert credentials.load("onedrive") is None  # nothing half-saved


def test_the_fake_answers_token_errors_as_the_identity_platform_does(fake):
    fake.public_client = False
    import requests

    resp = requests.post(f"{fake.authority}/oauth2/v2.0/token", timeout=10, data={
        "client_id": fake.client_id, "grant_type": "refresh_token", "refresh_token": fake.issue_refresh_token()})
    body = resp.json()
    assert resp.status_code == 401 and body["error"] == "invalid_client" and body["error_codes"] == [7000218]
    assert body["error_description"].startswith("AADSTS7000218: ") and "Trace ID" in body["error_description"]
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)


def test_removed_consent_says_to_sign_in_again_and_accept(fake, tmp_path):
    with fake_env(fake, tmp_path, ci=False):
        credentials.save("onedrive", {"client_id": fake.client_id, "refresh_token": fake.issue_refresh_token()})
        fake.consented = False  # the user removed the app at account.live.com/consent/Manage
        with pytest.raises(CredentialsError) as e:
            open_storage("onedrive://soopervisor/tests").list_projects()
    assert "AADSTS65001" in e.value.message and "consented" in e.value.message
    assert e.value.hint.startswith("soopervisor login onedrive, and accept the permissions")


def test_a_personal_account_at_its_own_directory_is_told_to_use_consumers(fake, tmp_path):
    _login(fake, tmp_path, tenant=fake.tenant_id)  # the sign-in works: the user owns that directory
    with fake_env(fake, tmp_path, ci=False, tenant=None), pytest.raises(CredentialsError) as e:
        open_storage("onedrive://soopervisor/tests").check_writable()
    assert "SPO license" in e.value.message and "without OneDrive" in e.value.message
    assert "consumers" in e.value.hint and "soopervisor login onedrive" in e.value.hint


def test_a_stored_refresh_token_unused_for_90_days_has_expired(fake, tmp_path):
    with fake_env(fake, tmp_path, ci=False):
        credentials.save("onedrive", {"client_id": fake.client_id, "refresh_token": fake.issue_refresh_token()})
        fake.advance(days=91)
        with pytest.raises(CredentialsError) as e:
            open_storage("onedrive://soopervisor/tests").list_projects()
    assert "has expired" in e.value.message and "invalid_grant, AADSTS700082" in e.value.message
    assert e.value.hint == "soopervisor login onedrive"


# -- CI: a sign-in of its own, and its 90 days ---------------------------------------------------
def test_login_for_ci_returns_the_variables_and_stores_nothing(fake, tmp_path):
    from soopervisor.redact import CREDENTIALS

    shown: list[str] = []
    with fake_env(fake, tmp_path, ci=False, tenant="organizations"):
        fake.account = "work"
        values = onedrive.login_for_ci(shown.append, lambda text: fake.client_id)
    assert set(values) == {"SOOPERVISOR_ONEDRIVE_CLIENT_ID", "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN",
                           "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED", "SOOPERVISOR_ONEDRIVE_AUTHORITY"}
    token = values["SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN"]
    assert token in fake.refresh_tokens and values["SOOPERVISOR_ONEDRIVE_CLIENT_ID"] == fake.client_id
    assert values["SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED"] == onedrive._today().isoformat()
    assert values["SOOPERVISOR_ONEDRIVE_AUTHORITY"] == fake.authority_for("organizations")
    assert credentials.load("onedrive") is None  # nothing kept on this machine
    assert CREDENTIALS.redact(f"x {token} y") == "x *** y"  # registered: nothing else prints it
    assert values["SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED"] in CREDENTIALS.redact(
        values["SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED"])  # a date is not a secret: never masked
    assert not any(token in line for line in shown)
    assert any("90 days" in line and "soopervisor login onedrive --ci" in line for line in shown)
    # the values sign CI in
    with fake_env(fake, tmp_path, refresh_token=token, tenant="organizations"):
        open_storage("onedrive://soopervisor/tests").check_writable()


def test_login_for_ci_at_consumers_needs_no_authority_variable(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(onedrive, "DEFAULT_AUTHORITY", fake.authority_for("consumers"))  # the fake stands in
    with fake_env(fake, tmp_path, ci=False, tenant=None):
        values = onedrive.login_for_ci(lambda s: None, lambda text: fake.client_id)
    assert "SOOPERVISOR_ONEDRIVE_AUTHORITY" not in values


@pytest.fixture
def warnings_again(monkeypatch):
    monkeypatch.setattr(onedrive, "_warned", set())


def _ci_env(fake, tmp_path, issued_days_ago: int | None, text: str | None = None):
    from tests.backends import env

    issued = text if text is not None else (onedrive._today() - timedelta(days=issued_days_ago)).isoformat()
    stack = contextlib.ExitStack()
    stack.enter_context(fake_env(fake, tmp_path))
    stack.enter_context(env(**{onedrive.ISSUED_ENV: issued}))
    return stack


def test_a_ci_refresh_token_near_its_90_days_warns_once_with_the_renew_command(fake, tmp_path, capsys,
                                                                              warnings_again):
    fake.rotate = False  # every run starts from the one in the variable
    with _ci_env(fake, tmp_path, 83):
        for _ in range(3):
            onedrive.open_url("onedrive://soopervisor/tests").check_writable()
        line = onedrive.describe()
    err = capsys.readouterr().err
    warnings = [w for w in err.splitlines() if w.startswith("soopervisor: warning:")]
    assert len(warnings) == 1, err
    assert "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN" in warnings[0] and "is 83 days old" in warnings[0]
    assert "soopervisor login onedrive --ci" in warnings[0]
    assert "83 days ago" in line and "renew it with soopervisor login onedrive --ci" in line


def test_a_young_ci_refresh_token_is_not_mentioned(fake, tmp_path, capsys, warnings_again):
    with _ci_env(fake, tmp_path, 10):
        onedrive.open_url("onedrive://soopervisor/tests").check_writable()
        assert "10 days ago" in onedrive.describe() and "renew" not in onedrive.describe()
    assert "warning" not in capsys.readouterr().err


def test_an_issued_value_that_is_not_a_date_is_said(fake, tmp_path, capsys, warnings_again):
    with _ci_env(fake, tmp_path, None, text="last spring"):
        onedrive.open_url("onedrive://soopervisor/tests")
    assert "is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_an_expired_ci_refresh_token_says_how_old_it_is(fake, tmp_path, warnings_again, capsys):
    token = fake.issue_refresh_token(issued=fake.now() - 92 * 86400)
    with _ci_env(fake, tmp_path, 92), pytest.raises(CredentialsError) as e:
        from tests.backends import env

        with env(**{onedrive.ENV["refresh_token"]: token}):
            onedrive.open_url("onedrive://soopervisor/tests").list_projects()
    assert "AADSTS700082" in e.value.message and "issued 92 days ago" in e.value.message
    assert e.value.hint.startswith("soopervisor login onedrive --ci")
    assert token not in str(e.value) + capsys.readouterr().err


# -- names OneDrive refuses ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["CON", "con", "Con.txt", "NUL.tar.gz", "COM0", "com9.log", "LPT1", "PRN", "AUX",
                                  ".lock", "desktop.ini", "Desktop.INI", "a_vti_b", "_VTI_cnf", "x" * 256])
def test_reserved_and_overlong_names_are_refused(name):
    assert onedrive.refused_name(name)


@pytest.mark.parametrize("name", ["CONSOLE", "icon", "com10", "LPT", "my.lock", "desktop.ini.bak", "vti_x",
                                  "%7E%24report.docx", "a%3Ab", "x" * 255, "manifest.json"])
def test_names_onedrive_takes_are_not_refused(name):
    assert onedrive.refused_name(name) is None


def test_encoding_never_lets_tilde_dollar_or_refused_characters_through():
    from soopervisor.storage.remote import encode_name

    for raw in ["~$report.docx", "a:b", "what?", "trailing.", "trailing ", " leading", 'q"uote', "p|pe", "b\\s"]:
        encoded = encode_name(raw)
        assert onedrive.refused_name(encoded) is None, encoded
        assert not any(c in encoded for c in ':*?"<>|\\ '), encoded
        assert not encoded.endswith(".") and not encoded.startswith("~$")


def test_a_set_with_names_onedrive_refuses_is_refused_at_once_before_anything_is_sent(st, fake, tmp_path):
    from tests.test_storage_contract import COMMIT_A, make_set

    long_name = "é" * 50  # 50 characters, 300 once percent-encoded
    src = make_set(tmp_path, COMMIT_A, {"CON": b"a", "out/desktop.ini": b"b", "fine.csv": b"c", long_name: b"d"})
    fake.log.clear()
    with pytest.raises(UnsafePath) as e:
        st.put_set("proj", COMMIT_A, "run1", src)
    message = e.value.message
    assert message.startswith("OneDrive refuses 3 file names of this set: ")
    assert "files/CON'" in message and "files/out/desktop.ini'" in message and long_name in message
    assert "fine.csv" not in message
    assert "percent-encoded" in message and "nothing was sent" in e.value.hint
    assert fake.log == []  # not one request


def test_a_path_longer_than_400_characters_is_refused(st, fake, tmp_path):
    from tests.test_storage_contract import COMMIT_A, make_set

    deep = "/".join(["d" * 60] * 6) + "/x.csv"  # every name short, the whole path too long
    src = make_set(tmp_path, COMMIT_A, {deep: b"a"})
    with pytest.raises(UnsafePath) as e:
        st.put_set("proj", COMMIT_A, "run1", src)
    assert "characters" in e.value.message and "OneDrive allows 400" in e.value.message


@pytest.mark.parametrize("key", ["proj/c1/CON", "proj/c1/desktop.ini", "proj/c1/a_vti_b", "proj/NUL.txt/x",
                                 "proj/c1/" + "x" * 256, "proj/c1/" + "/".join(["y" * 200] * 2)])
def test_the_fake_refuses_those_names_with_onedrives_400(st, fake, key):
    # straight to the store, past the check a put makes: what OneDrive itself answers
    with pytest.raises(UnsafePath) as e:
        st.store.write(key, b"x")
    assert "OneDrive refuses the name or path length" in e.value.message
    answers = [e for e in fake.log if e["method"] in ("PUT", "POST")]
    assert answers  # it was sent, and refused
    with pytest.raises(ArtifactsNotFound):
        st.store.read(key)


def test_the_fake_answers_invalid_names_as_graph_does(st, fake, tmp_path):
    import requests

    token = st.store.tokens.get()
    resp = requests.put(f"{fake.graph_url}/me/drive/root:/desktop.ini:/content", data=b"x", timeout=10,
                        headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalidRequest"
    assert resp.json()["error"]["innererror"]["code"] == "invalidPath"


def test_a_url_naming_a_reserved_folder_is_refused():
    with pytest.raises(UsageError) as e:
        onedrive.parse_url("onedrive://soopervisor/CON")
    assert "reserves" in e.value.message and "onedrive://folder/path" in e.value.hint


def test_a_dropped_download_resumes_from_the_byte_it_reached(tmp_path: Path):
    data = os.urandom(300_000)
    with storage(tmp_path) as st:
        st.store.write("proj/blob.bin", data)
        st.fake.break_downloads = 2  # the first two streams break half-way
        dest = tmp_path / "out.bin"
        moved: list[int] = []
        st.store.download("proj/blob.bin", dest, moved.append)
        assert dest.read_bytes() == data and sum(moved) == len(data)
        gets = [e for e in st.fake.log if e["path"].startswith("/download/")]
        assert len(gets) == 3  # resumed twice, never from the start
        assert gets[0]["range"] is None and all(g["range"] and g["range"] != "bytes=0-" for g in gets[1:])
        # the fake honours Range as the download address does (and so the client asked for it)
        with contextlib.closing(__import__("requests").get(
                f"{st.fake.url}/download/{st.fake.file('soopervisor/tests/proj/blob.bin').id}",
                headers={"Range": "bytes=299990-"}, timeout=10)) as resp:
            assert resp.status_code == 206 and resp.content == data[299990:]


def test_a_download_that_keeps_breaking_is_a_message(tmp_path: Path):
    with storage(tmp_path) as st:
        st.store.write("proj/blob.bin", b"x" * 1000)
        st.fake.break_downloads = 10_000
        with pytest.raises(StorageUnavailable, match="kept failing while downloading proj/blob.bin"):
            st.store.download("proj/blob.bin", tmp_path / "out.bin", lambda n: None)

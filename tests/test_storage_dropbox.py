"""Dropbox backend specifics: the real `dropbox` SDK against the stateful fake of the Dropbox API.

The storage contract (tests/test_storage_contract.py) runs on Dropbox through
tests/backends/dropbox.py; this module covers what only Dropbox has: upload
sessions and their offsets (streamed, one piece in memory), throttling and
write-lock contention, resumed downloads, the case Dropbox gives folders, the
names it refuses, token expiry and revocation, quota, the URL form, the PKCE
sign-in (also the one made for CI) and ``describe``. Live tests run when the CI
credentials are in the environment.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from soopervisor import credentials
from soopervisor.artifacts import write_manifest
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UsageError
from soopervisor.storage import dropbox as backend
from soopervisor.storage import open_storage
from tests.backends.dropbox import storage
from tests.fakes.dropbox_api import FakeDropbox, MiB

SHA_A = "a" * 40
SHA_B = "b" * 40
LIVE_VARS = ("SOOPERVISOR_DROPBOX_APP_KEY", "SOOPERVISOR_DROPBOX_REFRESH_TOKEN")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """No real credentials, no keyring, no real waiting (the waits are recorded)."""
    for var in (*LIVE_VARS, "SOOPERVISOR_DROPBOX_APP_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SOOPERVISOR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SOOPERVISOR_NO_KEYRING", "1")
    waits: list[float] = []
    monkeypatch.setattr(backend, "_sleep", waits.append)
    return waits


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload sessions from 1 MiB in 256 KiB pieces, so a 3 MiB file exercises them."""
    monkeypatch.setattr(backend, "SINGLE_UPLOAD_LIMIT", 1 * MiB)
    monkeypatch.setattr(backend, "CHUNK_SIZE", 256 * 1024)


def make_set(root: Path, commit: str, files: dict[str, bytes], project: str = "p", run_id: str = "r1") -> Path:
    """A run's set folder: the products under files/, then the manifest (no log: only the products travel)."""
    src = root / f"src-{uuid.uuid4().hex[:8]}"
    (src / "files").mkdir(parents=True)
    for name, data in files.items():
        (src / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        (src / "files" / name).write_bytes(data)
    write_manifest(src, project=project, commit=commit, run_id=run_id, status="succeeded")
    return src


def session_calls(fake: FakeDropbox) -> list[tuple[str, dict]]:
    return [(r, a) for r, a in fake.calls if r.startswith("files/upload_session/")]


# -- uploads -------------------------------------------------------------------------
def test_small_files_take_one_request(tmp_path: Path, small_chunks: None):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"x" * 1000}))
        assert "files/upload" in s.fake.routes()
        assert session_calls(s.fake) == []


def test_large_file_goes_through_an_upload_session(tmp_path: Path, small_chunks: None):
    data = os.urandom(3 * MiB + 123)
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        calls = session_calls(s.fake)
        assert calls[0][0] == "files/upload_session/start"
        appends = [a["cursor"]["offset"] for r, a in calls if r == "files/upload_session/append_v2"]
        assert appends == list(range(256 * 1024, len(data), 256 * 1024))
        finish = calls[-1]
        assert finish[0] == "files/upload_session/finish"
        assert finish[1]["cursor"]["offset"] == len(data)
        assert finish[1]["commit"]["path"] == f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin"
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data
        s.get_file("p", SHA_A, "r1", "files/big.bin", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data


def test_lost_reply_resumes_at_the_offset_dropbox_reports(tmp_path: Path, small_chunks: None):
    """A piece arrives but its answer is lost: the retry is told incorrect_offset and moves on from there."""
    data = os.urandom(2 * MiB)
    with storage(tmp_path) as s:
        s.fake.fail("files/upload_session/append_v2", 500, after_apply=True)
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        offsets = [a["cursor"]["offset"] for r, a in session_calls(s.fake) if r == "files/upload_session/append_v2"]
        # the first append landed (answer lost), was sent again at the same offset and refused
        # with correct_offset; the upload went on from there, so no byte was stored twice
        assert offsets[0] == offsets[1] == 256 * 1024
        assert offsets[2] == 512 * 1024
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data


def test_dropped_connection_during_a_piece_is_retried(tmp_path: Path, small_chunks: None):
    data = os.urandom(2 * MiB)
    with storage(tmp_path) as s:
        s.fake.fail("files/upload_session/append_v2", 0, connection_error=True, times=2)
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data


def test_lost_session_restarts_cleanly(tmp_path: Path, small_chunks: None):
    data = os.urandom(2 * MiB)
    with storage(tmp_path) as s:
        real = s.fake._r_files_upload_session_append_v2
        dropped = []

        def expire_once(arg: dict, body: bytes):
            if not dropped:  # the session expires under us
                dropped.append(s.fake.sessions.pop(arg["cursor"]["session_id"]))
            return real(arg, body)

        s.fake._r_files_upload_session_append_v2 = expire_once
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        assert [r for r, _ in session_calls(s.fake)].count("files/upload_session/start") == 2
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data


def test_the_fake_enforces_offsets_and_the_single_upload_limit(tmp_path: Path):
    """The rules the backend relies on are the fake's, not the backend's: checked through the SDK."""
    from dropbox.exceptions import ApiError
    from dropbox.files import UploadSessionCursor

    with storage(tmp_path) as s:
        dbx = s.store.dbx
        sid = dbx.files_upload_session_start(b"12345").session_id
        with pytest.raises(ApiError) as e:
            dbx.files_upload_session_append_v2(b"678", UploadSessionCursor(sid, 3))
        assert e.value.error.is_incorrect_offset()
        assert e.value.error.get_incorrect_offset().correct_offset == 5
        with pytest.raises(ApiError) as e:
            dbx.files_upload(b"\0" * (150 * MiB + 1), "/soopervisor-tests/too-big")
        assert e.value.error.is_payload_too_large()


def test_real_thresholds_sessions_from_16_mib_in_16_mib_pieces(tmp_path: Path):
    """Issue 13: not one 150 MB request read whole, but sessions from 16 MiB, one 16 MiB piece at a time."""
    below, size = tmp_path / "below.bin", tmp_path / "big.bin"
    with open(below, "wb") as f:
        f.truncate(16 * MiB - 1)
    with open(size, "wb") as f:
        f.truncate(2 * 16 * MiB + 5)
    with storage(tmp_path) as s:
        s.store.upload("p/c/below.bin", below, lambda n: None)
        assert session_calls(s.fake) == [] and s.fake.routes().count("files/upload") == 1
        s.store.upload("p/c/big.bin", size, lambda n: None)
        calls = session_calls(s.fake)
        assert [r for r, _ in calls] == ["files/upload_session/start", "files/upload_session/append_v2",
                                         "files/upload_session/append_v2", "files/upload_session/finish"]
        assert [a["cursor"]["offset"] for _, a in calls[1:3]] == [16 * MiB, 32 * MiB]
        assert len(s.fake.data("/soopervisor-tests/p/c/big.bin")) == 2 * 16 * MiB + 5


def test_uploads_read_one_piece_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Memory stays bounded: no read of a source file asks for more than one piece (nor for 'all of it')."""
    piece = 256 * 1024
    monkeypatch.setattr(backend, "SINGLE_UPLOAD_LIMIT", piece)
    monkeypatch.setattr(backend, "CHUNK_SIZE", piece)
    reads: list[int] = []

    class Recording:
        def __init__(self, f):
            self.f = f

        def read(self, n: int = -1) -> bytes:
            assert n is not None and 0 <= n <= piece, f"a read of {n} bytes"
            data = self.f.read(n)
            reads.append(len(data))
            return data

        def __getattr__(self, name: str):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    real_open = open

    def recording_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Recording(f) if "r" in mode else f

    monkeypatch.setattr(backend, "open", recording_open, raising=False)
    big, small = os.urandom(3 * MiB + 5), os.urandom(piece - 1)
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": big, "small.bin": small}))
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == big
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/small.bin") == small
        assert max(reads) <= piece and sum(reads) == len(big) + len(small)
        assert s.fake.routes().count("files/upload_session/start") == 1  # the small file took one request


def test_a_dropped_append_resumes_where_dropbox_says(tmp_path: Path, small_chunks: None):
    """The connection drops after a piece arrived: the retry is told correct_offset; nothing is sent from 0 again."""
    data = os.urandom(2 * MiB)
    with storage(tmp_path) as s:
        s.fake.fail("files/upload_session/append_v2", 0, connection_error=True, after_apply=True)
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        routes = [r for r, _ in session_calls(s.fake)]
        offsets = [a["cursor"]["offset"] for r, a in session_calls(s.fake) if r == "files/upload_session/append_v2"]
        assert routes.count("files/upload_session/start") == 1
        assert offsets[:3] == [256 * 1024, 256 * 1024, 512 * 1024]  # sent, refused with correct_offset, went on
        assert len(offsets) == len(data) // (256 * 1024)  # one append more than the pieces: the refused one
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data


def test_a_lost_commit_answer_is_not_a_new_upload(tmp_path: Path, small_chunks: None):
    """finish landed but its answer was lost: the retry finds the session gone, and the file stored and whole."""
    data = os.urandom(2 * MiB)
    with storage(tmp_path) as s:
        s.fake.fail("files/upload_session/finish", 0, connection_error=True, after_apply=True)
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"big.bin": data}))
        assert [r for r, _ in session_calls(s.fake)].count("files/upload_session/start") == 1
        assert "files/get_metadata" in s.fake.routes()
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_A}/r1/files/big.bin") == data


# -- throttling, credentials, quota --------------------------------------------------
def test_lock_contention_is_outlasted_honouring_retry_after(tmp_path: Path, isolated: list[float]):
    """A burst of too_many_write_operations longer than the old ~30 s of retries: waits grow, never under Retry-After."""
    with storage(tmp_path) as s:
        s.check_writable()  # the root folder exists: the next write is the manifest alone
        s.fake.contend(9, retry_after=3)
        s.store.write("p/c/x", b"1")
        assert s.fake.data("/soopervisor-tests/p/c/x") == b"1"
        assert len(isolated) == 9 and min(isolated) >= 3.0
        assert isolated[-1] > isolated[0] and sum(isolated) > 120
        s.fake.contend(100)
        with pytest.raises(StorageUnavailable, match="too_many_write_operations") as e:
            s.store.write("p/c/y", b"2")
        assert "how-to/dropbox" in e.value.hint


def test_contended_writes_go_one_at_a_time_and_the_set_is_stored(tmp_path: Path):
    """Dropbox's namespace lock admits one write; four workers collide at once, then take turns."""
    files = {f"f{i}.txt": bytes([i]) * 10 for i in range(12)}
    with storage(tmp_path) as s:
        s.fake.write_slots, s.fake.write_hold = 1, 0.02
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, files))
        assert s.fake.refused_writes >= 1  # they did collide
        assert s.store._writers.limit < backend.MAX_WRITERS  # and this store sends fewer writes at once
        for name, data in files.items():
            s.get_file("p", SHA_A, "r1", f"files/{name}", tmp_path / "out")
            assert (tmp_path / "out").read_bytes() == data


def test_too_many_write_operations_in_a_route_error_is_retried(tmp_path: Path, isolated: list[float]):
    with storage(tmp_path) as s:
        s.check_writable()
        s.fake.fail("files/upload", 409, times=2, body={
            "error_summary": "path/too_many_write_operations/..",
            "error": {".tag": "path", "reason": {".tag": "too_many_write_operations"}, "upload_session_id": ""}})
        s.store.write("p/c/x", b"1")
        assert s.fake.data("/soopervisor-tests/p/c/x") == b"1" and len(isolated) == 2


def test_429_waits_as_long_as_retry_after_says(tmp_path: Path, isolated: list[float]):
    with storage(tmp_path) as s:
        s.fake.fail("files/upload", 429, retry_after=7, times=2)
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"1"}))
        assert isolated[:2] == [7.0, 7.0]
        assert s.read_manifest("p", SHA_A, "r1")["commit"] == SHA_A


def test_503_waits_as_long_as_retry_after_says(tmp_path: Path, isolated: list[float]):
    with storage(tmp_path) as s:
        s.fake.fail("files/list_folder", 503, retry_after=4)
        assert s.list_projects() == []
        assert isolated == [4.0]


def test_server_errors_are_retried_then_reported(tmp_path: Path, isolated: list[float]):
    with storage(tmp_path) as s:
        s.fake.fail("files/list_folder", 503, times=2)
        assert s.list_projects() == []
        assert len(isolated) == 2 and isolated[1] > isolated[0] * 0.5
        s.fake.fail("files/list_folder", 503, times=100)
        with pytest.raises(StorageUnavailable, match="gave up after"):
            s.list_projects()


def test_expired_access_token_is_refreshed(tmp_path: Path):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"1"}))
        s.fake.expire_access_tokens()
        assert s.list_projects() == ["p"]


def test_revoked_refresh_token_asks_to_log_in_without_showing_it(tmp_path: Path):
    with storage(tmp_path) as s:
        token = os.environ["SOOPERVISOR_DROPBOX_REFRESH_TOKEN"]
        s.fake.refresh_tokens.clear()
        s.fake.expire_access_tokens()
        with pytest.raises(CredentialsError) as e:
            s.list_projects()
        assert "soopervisor login dropbox" in str(e.value)
        assert token not in str(e.value)
        for access in s.fake.access_tokens:
            assert access not in str(e.value)


def test_missing_permission_is_named(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.fail("files/upload", 401, body={"error_summary": "missing_scope/",
                                               "error": {".tag": "missing_scope", "required_scope": "files.content.write"}})
        with pytest.raises(CredentialsError, match="files.content.write") as e:
            s.store.write("p/c/x", b"1")
        assert "Permissions tab" in e.value.hint


def test_unknown_app_key_is_a_credentials_error(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.app_key = "another-app"
        with pytest.raises(CredentialsError, match="app key"):
            s.list_projects()


def test_full_dropbox_is_reported(tmp_path: Path):
    with storage(tmp_path, FakeDropbox(allocated=100)) as s:
        with pytest.raises(StorageUnavailable, match="Dropbox is full") as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.bin": b"x" * 1000}))
        assert "free some space" in e.value.hint
        assert s.list_projects() == []  # nothing complete-looking was left behind


def test_check_writable_reports_a_full_account(tmp_path: Path):
    fake = FakeDropbox(allocated=10)
    fake.put_file("/other/file", b"x" * 10)
    with storage(tmp_path, fake) as s, pytest.raises(StorageUnavailable, match="full"):
        s.check_writable()


def test_missing_credentials_name_both_ways(tmp_path: Path):
    with pytest.raises(CredentialsError) as e:
        open_storage("dropbox://x")
    assert "soopervisor login dropbox" in e.value.hint
    assert "SOOPERVISOR_DROPBOX_REFRESH_TOKEN" in e.value.hint


def test_stored_credentials_are_used_and_registered(tmp_path: Path):
    from soopervisor.redact import CREDENTIALS

    fake = FakeDropbox()
    token = fake.issue_refresh_token()
    credentials.save("dropbox", {"app_key": fake.app_key, "refresh_token": token})
    s = backend.open_url("dropbox://", session=fake.session())
    assert s.list_projects() == []
    assert token in CREDENTIALS.secrets


# -- listing, copying ----------------------------------------------------------------
def test_the_fake_keeps_a_folders_first_case(tmp_path: Path):
    fake = FakeDropbox()
    fake.put_file("/top/sales/a.txt", b"1")
    fake.put_file("/TOP/Sales/Q1/b.txt", b"2")
    shown = {f.path_display for f in fake.files.values()}
    assert shown == {"/top/sales/a.txt", "/top/sales/Q1/b.txt"}


def test_a_set_is_found_whatever_case_dropbox_gives_its_folders(tmp_path: Path):
    """Written as Sales/..., listed back by Dropbox as sales/... (the folder existed): still found, complete, kept."""
    fake = FakeDropbox()
    fake.put_file("/soopervisor-tests/sales/notes.txt", b"someone else made the folder first")
    with storage(tmp_path, fake) as s:
        s.put_set("Sales", SHA_A, "R1", make_set(tmp_path, SHA_A, {"a.csv": b"1", "Out/b.csv": b"2"},
                                                  project="Sales", run_id="R1"))
        assert fake.files[f"/soopervisor-tests/sales/{SHA_A}/r1/manifest.json"].path_display.startswith(
            "/soopervisor-tests/sales/")
    with storage(tmp_path, fake) as s:  # another process: nothing remembered
        assert [(m.commit, m.run_id) for m in s.list_sets("Sales")] == [(SHA_A, "R1")]
        s.get_file("Sales", SHA_A, "R1", "files/Out/b.csv", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == b"2"
        s.put_set("Sales", SHA_A, "R1", make_set(tmp_path, SHA_A, {"a.csv": b"1", "Out/b.csv": b"2"},
                                                  project="Sales", run_id="R1"))
        assert s.last_put["kept"] == 2 and s.last_put["uploaded"] == 0


def test_a_folder_renamed_only_in_case_between_puts_loses_no_file(tmp_path: Path):
    """Run r1 stored Out/a.csv; stored again as out/a.csv, the listing still says Out/a.csv: not deleted as stale."""
    fake = FakeDropbox()
    with storage(tmp_path, fake) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"Out/a.csv": b"old"}))
    with storage(tmp_path, fake) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"out/a.csv": b"new"}))
        s.get_file("p", SHA_A, "r1", "files/out/a.csv", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == b"new"


# -- downloads -----------------------------------------------------------------------
def test_a_dropped_download_resumes_from_the_byte_it_reached(tmp_path: Path):
    data = os.urandom(3 * MiB + 7)
    with storage(tmp_path) as s:
        s.fake.put_file("/soopervisor-tests/p/c/big.bin", data)
        s.fake.fail("files/download", 200, drop_after=MiB + 3)
        s.store.download("p/c/big.bin", tmp_path / "out", lambda n: None)
        assert (tmp_path / "out").read_bytes() == data
        assert s.fake.ranges == [None, f"bytes={MiB + 3}-"]


def test_a_manifest_read_resumes_too(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.put_file("/soopervisor-tests/p/c/manifest.json", b"{}" * 1000)
        s.fake.fail("files/download", 200, drop_after=10, times=2)
        assert s.store.read("p/c/manifest.json") == b"{}" * 1000
        assert s.fake.ranges == [None, "bytes=10-", "bytes=20-"]


def test_a_file_replaced_between_attempts_is_fetched_anew(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.put_file("/soopervisor-tests/p/c/f", b"a" * 1000)
        s.fake.fail("files/download", 200, drop_after=100)
        real = s.fake._r_files_download

        def replace_after_first(arg, body, range_header=None):
            reply = real(arg, body, range_header)
            if len(s.fake.ranges) == 1:
                s.fake.put_file("/soopervisor-tests/p/c/f", b"b" * 1500)
            return reply

        s.fake._r_files_download = replace_after_first
        s.store.download("p/c/f", tmp_path / "out", lambda n: None)
        assert (tmp_path / "out").read_bytes() == b"b" * 1500


def test_a_download_that_keeps_breaking_is_a_message(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.put_file("/soopervisor-tests/p/c/f", b"x" * 100)
        s.fake.fail("files/download", 200, drop_after=0, times=100)
        with pytest.raises(StorageUnavailable, match="broke off"):
            s.store.download("p/c/f", tmp_path / "out", lambda n: None)


def test_the_fake_honours_range_requests(tmp_path: Path):
    with storage(tmp_path) as s:
        s.fake.put_file("/x/f", b"0123456789")
        meta, resp = s.store.dbx.files_download("/x/f", extra_headers={"Range": "bytes=4-"})
        assert resp.status_code == 206 and resp.content == b"456789" and meta.size == 10
        assert resp.headers["Content-Range"] == "bytes 4-9/10"
        _, resp = s.store.dbx.files_download("/x/f", extra_headers={"Range": "bytes=-3"})
        assert resp.content == b"789"


# -- names Dropbox refuses -----------------------------------------------------------
def test_names_dropbox_refuses_are_said_at_once_before_anything_is_sent(tmp_path: Path):
    from soopervisor.errors import UnsafePath

    files = {"desktop.ini": b"1", "ü" * 50: b"2", "fine.txt": b"3"}  # 50 x "%C3%BC": 300 characters stored
    with storage(tmp_path) as s:
        with pytest.raises(UnsafePath) as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, files))
        assert "Dropbox refuses 2 file names" in e.value.message
        assert "desktop.ini" in e.value.message and "255" in e.value.message
        assert "files/upload" not in s.fake.routes()
        with pytest.raises(UnsafePath, match="ends in a space"):
            s.put_set("p ", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"1"}, project="p "))


def test_names_that_differ_only_in_case_are_refused_before_anything_is_sent(tmp_path: Path):
    """Dropbox keeps one file for `a.csv` and `A.csv`: the later would silently replace the earlier."""
    from soopervisor.errors import UnsafePath

    files = {"output/a.csv": b"1", "output/A.csv": b"2", "output/b.csv": b"3"}
    with storage(tmp_path) as s:
        with pytest.raises(UnsafePath) as e:
            s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, files))
        assert "Dropbox refuses 1 file name" in e.value.message and "ignores case" in e.value.message
        assert "files/upload" not in s.fake.routes()


def test_the_fake_refuses_the_same_names(tmp_path: Path):
    from dropbox.exceptions import ApiError

    with storage(tmp_path) as s:
        dbx = s.store.dbx
        for path, tag in [("/x/Desktop.ini", "disallowed_name"), ("/x/" + "a" * 256, "malformed_path"),
                          ("/x/a /b", "malformed_path")]:
            with pytest.raises(ApiError) as e:
                dbx.files_upload(b"1", path)
            assert e.value.error.get_path().reason._tag == tag
        dbx.files_upload(b"1", "/x/" + "a" * 255)


def test_urls_dropbox_cannot_store_under_are_refused():
    with pytest.raises(UsageError, match="ends in a space"):
        backend.parse_url("dropbox://runs%20/ml")


def test_listing_follows_cursors(tmp_path: Path):
    with storage(tmp_path, FakeDropbox(page_size=3)) as s:
        for commit in (SHA_A, SHA_B):
            s.put_set("p", commit, "r1", make_set(tmp_path, commit, {f"f{i}": bytes([i]) for i in range(4)}))
        assert sorted(m.commit for m in s.list_sets("p")) == [SHA_A, SHA_B]
        assert s.fake.routes().count("files/list_folder/continue") >= 3


def test_unchanged_files_are_copied_on_the_server(tmp_path: Path):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a": b"same", "b": b"one"}))
        s.put_set("p", SHA_B, "r1", make_set(tmp_path, SHA_B, {"a": b"same", "b": b"two"}))
        assert s.last_put["copied"] == 1 and s.last_put["uploaded"] == 1
        assert "files/copy_v2" in s.fake.routes()
        # a copy onto an existing object replaces it (copy_v2 itself never overwrites)
        s.store.copy(f"p/{SHA_A}/r1/files/b", f"p/{SHA_B}/r1/files/b")
        assert s.fake.data(f"/soopervisor-tests/p/{SHA_B}/r1/files/b") == b"one"


def test_missing_object(tmp_path: Path):
    with storage(tmp_path) as s:
        with pytest.raises(ArtifactsNotFound):
            s.store.read("p/c/nothing")
        s.store.delete(["p/c/nothing"])  # already gone is fine


def test_other_refusals_are_messages_not_tracebacks(tmp_path: Path):
    with storage(tmp_path) as s:
        s.store.write("p/c/x", b"1")
        with pytest.raises(StorageUnavailable, match="Dropbox refused a request"):
            s.store.write("p/c", b"a file where a folder is")

# -- URLs ----------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "root"), [
    ("dropbox://", ""),
    ("dropbox://artifacts", "/artifacts"),
    ("dropbox://artifacts/ml/", "/artifacts/ml"),
    ("dropbox:///artifacts//ml", "/artifacts/ml"),
    ("dropbox://my%20runs", "/my runs"),
])
def test_url_names_a_folder(url: str, root: str):
    assert backend.parse_url(url) == root


@pytest.mark.parametrize("url", ["dropbox://a/../b", "dropbox://..", "dropbox://a\\b", "s3://bucket"])
def test_bad_urls_are_refused(url: str):
    with pytest.raises(UsageError) as e:
        backend.parse_url(url)
    assert e.value.hint


# -- sign-in and status --------------------------------------------------------------
def test_login_runs_the_pkce_flow_and_saves_the_refresh_token(tmp_path: Path):
    fake = FakeDropbox()
    shown: list[str] = []

    def prompt(text: str) -> str:
        url = next(line.strip() for line in shown if "oauth2/authorize" in line)
        return fake.authorize(url)  # the user allows the app and pastes the code

    where = backend.login(shown.append, prompt, app_key=fake.app_key, session=fake.session())
    assert where == str(tmp_path / "config" / "credentials" / "dropbox.json")
    assert oct(Path(where).stat().st_mode & 0o777) == "0o600"
    saved = credentials.load("dropbox")
    assert saved["app_key"] == fake.app_key and saved["refresh_token"] in fake.refresh_tokens
    assert not any(saved["refresh_token"] in line for line in shown)
    assert backend.open_url("dropbox://x", session=fake.session()).list_projects() == []


def test_login_asks_for_the_app_key_when_none_is_set(tmp_path: Path):
    fake = FakeDropbox()
    shown: list[str] = []
    answers = iter([fake.app_key])

    def prompt(text: str) -> str:
        if text == "Dropbox app key":
            return next(answers)
        return fake.authorize(next(line.strip() for line in shown if "oauth2/authorize" in line))

    backend.login(shown.append, prompt, session=fake.session())
    assert any("developers/apps" in line for line in shown)


def test_login_with_a_wrong_code(tmp_path: Path):
    fake = FakeDropbox()
    with pytest.raises(CredentialsError, match="did not accept") as e:
        backend.login(lambda s: None, lambda s: "not-a-code", app_key=fake.app_key, session=fake.session())
    assert "soopervisor login dropbox" in e.value.hint
    assert credentials.load("dropbox") is None


def test_login_for_ci_makes_a_token_of_its_own_and_stores_nothing(tmp_path: Path):
    from soopervisor.redact import CREDENTIALS

    fake = FakeDropbox()
    laptop = fake.issue_refresh_token()
    credentials.save("dropbox", {"app_key": fake.app_key, "refresh_token": laptop})
    shown: list[str] = []
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return fake.authorize(next(line.strip() for line in shown if "oauth2/authorize" in line))

    values = backend.login_for_ci(shown.append, prompt, session=fake.session())
    assert set(values) == {"SOOPERVISOR_DROPBOX_APP_KEY", "SOOPERVISOR_DROPBOX_REFRESH_TOKEN"}
    token = values["SOOPERVISOR_DROPBOX_REFRESH_TOKEN"]
    assert values["SOOPERVISOR_DROPBOX_APP_KEY"] == fake.app_key  # the stored login's key: not asked again
    assert asked == ["Authorization code"]
    assert token in fake.refresh_tokens and token != laptop
    assert credentials.load("dropbox")["refresh_token"] == laptop  # the laptop's sign-in is untouched
    assert token in CREDENTIALS.secrets
    assert not any(token in line for line in shown)


def test_login_for_ci_without_a_stored_login_asks_for_the_key(tmp_path: Path):
    fake = FakeDropbox()
    shown: list[str] = []

    def prompt(text: str) -> str:
        if text == "Dropbox app key":
            return fake.app_key
        return fake.authorize(next(line.strip() for line in shown if "oauth2/authorize" in line))

    values = backend.login_for_ci(shown.append, prompt, session=fake.session())
    assert values["SOOPERVISOR_DROPBOX_REFRESH_TOKEN"] in fake.refresh_tokens
    assert credentials.load("dropbox") is None
    with pytest.raises(CredentialsError) as e:
        backend.login_for_ci(lambda line: None, lambda text: "not-a-code", app_key=fake.app_key,
                             session=fake.session())
    assert "soopervisor login dropbox --ci" in e.value.hint


def test_describe_never_shows_a_token(monkeypatch: pytest.MonkeyPatch):
    assert "not signed in" in backend.describe()
    monkeypatch.setenv("SOOPERVISOR_DROPBOX_APP_KEY", "key-123456")
    monkeypatch.setenv("SOOPERVISOR_DROPBOX_REFRESH_TOKEN", "secret-refresh-token")
    text = backend.describe()
    assert "environment" in text and "secret-refresh-token" not in text and "key-123456" not in text
    monkeypatch.delenv("SOOPERVISOR_DROPBOX_REFRESH_TOKEN")
    credentials.save("dropbox", {"app_key": "key-123456", "refresh_token": "stored-refresh-token"})
    text = backend.describe()
    assert text.startswith("signed in") and "stored-refresh-token" not in text



def test_access_tokens_are_masked_as_soon_as_they_are_issued(tmp_path: Path):
    from soopervisor.redact import CREDENTIALS

    with storage(tmp_path) as s:
        s.list_projects()
        (access,) = s.fake.access_tokens
        assert access in CREDENTIALS.secrets


# -- the real service ----------------------------------------------------------------
@pytest.fixture
def live_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The autouse fixture hid the real variables; the live tests read them from the original environment."""
    for var in (*LIVE_VARS, "SOOPERVISOR_DROPBOX_APP_SECRET"):
        if var in _REAL_ENV:
            monkeypatch.setenv(var, _REAL_ENV[var])


_REAL_ENV = {k: v for k, v in os.environ.items() if k.startswith("SOOPERVISOR_DROPBOX_")}
live = pytest.mark.skipif(
    not all(_REAL_ENV.get(v) for v in LIVE_VARS),
    reason=f"live Dropbox test: set {' and '.join(LIVE_VARS)} to run it",
)


@pytest.mark.live
@live
def test_live_round_trip(tmp_path: Path, live_env: None, small_chunks: None, monkeypatch: pytest.MonkeyPatch):
    import time

    monkeypatch.setattr(backend, "_sleep", time.sleep)
    run = uuid.uuid4().hex[:12]
    s = open_storage(f"dropbox://soopervisor-live-tests/{run}")
    s.check_writable()
    data = os.urandom(2 * MiB + 5)
    s.put_set("p", SHA_A, "r1", make_set(tmp_path, SHA_A, {"a.txt": b"hello", "big.bin": data}))
    s.put_set("p", SHA_B, "r1", make_set(tmp_path, SHA_B, {"a.txt": b"hello"}))
    assert s.last_put["copied"] == 1
    s.get_file("p", SHA_A, "r1", "files/big.bin", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    s.store.dbx.files_delete_v2(f"/soopervisor-live-tests/{run}")


def test_the_fake_enforces_the_concurrent_session_piece_rules(tmp_path: Path):
    from dropbox.exceptions import ApiError
    from dropbox.files import CommitInfo, UploadSessionCursor, UploadSessionType

    with storage(tmp_path) as s:
        dbx = s.store.dbx
        sid = dbx.files_upload_session_start(b"", session_type=UploadSessionType.concurrent).session_id
        with pytest.raises(ApiError) as e:
            dbx.files_upload_session_append_v2(b"x" * 100, UploadSessionCursor(sid, 0))
        assert e.value.error.is_concurrent_session_invalid_data_size()
        with pytest.raises(ApiError) as e:
            dbx.files_upload_session_append_v2(b"x" * 4 * MiB, UploadSessionCursor(sid, 100))
        assert e.value.error.is_concurrent_session_invalid_offset()
        # out of order is fine; the last piece closes the session and may be short
        dbx.files_upload_session_append_v2(b"b" * 10, UploadSessionCursor(sid, 4 * MiB), close=True)
        dbx.files_upload_session_append_v2(b"a" * 4 * MiB, UploadSessionCursor(sid, 0))
        dbx.files_upload_session_finish(b"", UploadSessionCursor(sid, 4 * MiB + 10), CommitInfo("/c/f"))
        assert s.fake.data("/c/f") == b"a" * 4 * MiB + b"b" * 10


def test_a_deleted_set_leaves_no_empty_run_folder_and_other_runs_keep_theirs(tmp_path: Path):
    with storage(tmp_path) as s:
        s.put_set("p", SHA_A, "r1", make_set(tmp_path / "one", SHA_A, {"a.csv": b"1"}))
        s.put_set("p", SHA_A, "r2", make_set(tmp_path / "two", SHA_A, {"a.csv": b"2"}, run_id="r2"))
        s.delete_set("p", SHA_A, "r1")
        folders = set(s.fake.folders)
        assert not [f for f in folders if f.endswith("/r1") or "/r1/" in f]
        assert any(f.endswith(f"/{SHA_A}/r2") for f in folders)  # the commit's folder and the other run stay
        assert [x.run_id for x in s.list_sets("p")] == ["r2"]

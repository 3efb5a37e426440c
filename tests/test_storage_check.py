"""``soopervisor.storage.check``: write, list, read back and remove a tiny set, and leave nothing.

Against a local folder, S3 (the real s3fs stack on the session's moto server)
and Dropbox (the real SDK on its stateful fake), passing and failing: a failed
step stops the check with its error, and what the check stored is removed all
the same (or said to be left, and where). The command itself is in test_cli.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from soopervisor.artifacts import write_manifest
from soopervisor.credentials import CredentialsError
from soopervisor.errors import IntegrityError, SoopervisorError, StorageUnavailable
from soopervisor.storage import dropbox as dropbox_backend
from soopervisor.storage import open_storage
from soopervisor.storage.check import CHECK_PROJECT, STEPS, check_storage
from tests.backends import dropbox as dropbox_fake
from tests.backends import s3 as s3_fake
from tests.fakes.dropbox_api import FakeDropbox

COMMIT = "c" * 40


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def make_set(root: Path, project: str = "proj", run_id: str = "r1") -> Path:
    src = root / f"src-{project}-{run_id}"
    (src / "files").mkdir(parents=True)
    (src / "files" / "out.csv").write_bytes(b"a,b\n1,2\n")
    write_manifest(src, project=project, commit=COMMIT, run_id=run_id, status="succeeded", mode="sample")
    return src


def names(result) -> list[str]:
    return [s.name for s in result.steps]


# -- a local folder ---------------------------------------------------------------------------
def test_a_new_folder_passes_every_step_and_is_gone_again(tmp_path: Path):
    root = tmp_path / "new" / "store"
    seen = []
    result = check_storage(str(root), on_step=seen.append)
    assert result.ok and result.exit_code == 0 and result.error is None, result.to_dict()
    assert names(result) == list(STEPS) and seen == result.steps
    assert all(s.seconds >= 0 and s.detail for s in result.steps)
    assert result.where.startswith(f"{CHECK_PROJECT}/") and result.where.count("/") == 3
    assert "sha256 verified" in result.steps[STEPS.index("read")].detail
    assert result.left_behind == []
    assert not (tmp_path / "new").exists()  # the folders the check made go again


def test_a_folder_in_use_keeps_exactly_what_it_held(tmp_path: Path):
    root = tmp_path / "store"
    open_storage(str(root)).put_set("proj", COMMIT, "r1", make_set(tmp_path))
    before = tree(root)
    result = check_storage(f"file://{root}")
    assert result.ok, result.to_dict()
    assert tree(root) == before
    assert open_storage(str(root)).list_projects() == ["proj"]


def test_the_default_storage_is_the_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOOPERVISOR_STORAGE", raising=False)
    result = check_storage()
    assert result.ok and result.url == str(tmp_path / "home" / "artifacts")
    monkeypatch.setenv("SOOPERVISOR_STORAGE", str(tmp_path / "elsewhere"))
    assert check_storage().url == str(tmp_path / "elsewhere")


def test_an_unwritable_folder_fails_at_writable_and_stops(tmp_path: Path):
    (tmp_path / "a-file").write_bytes(b"not a folder")
    result = check_storage(str(tmp_path / "a-file" / "store"))
    assert not result.ok
    assert names(result) == ["sign in", "writable"]  # stopped there; nothing stored, nothing to clean
    failed = result.failed
    assert failed is not None and not failed.ok and failed.name == "writable"
    assert isinstance(result.error, StorageUnavailable) and result.exit_code == 3
    assert "Not a directory" in failed.detail and result.error.hint
    assert result.to_dict()["steps"][1]["error"]["docs"].endswith("#storage-unavailable")
    assert (tmp_path / "a-file").read_bytes() == b"not a folder"


def test_a_failed_write_is_cleaned_up_and_touches_nothing_else(tmp_path: Path):
    root = tmp_path / "store"
    root.mkdir()
    (root / CHECK_PROJECT).write_bytes(b"someone's file")  # stands where the check's folder goes
    result = check_storage(str(root))
    assert names(result) == ["sign in", "writable", "write", "clean up"]
    assert [s.ok for s in result.steps] == [True, True, False, True]
    assert isinstance(result.error, StorageUnavailable) and result.exit_code == 3
    assert tree(root) == {CHECK_PROJECT: b"someone's file"}


def test_an_interrupted_check_removes_what_it_stored(tmp_path: Path):
    root = tmp_path / "store"
    open_storage(str(root)).put_set("proj", COMMIT, "r1", make_set(tmp_path))
    before = tree(root)
    steps = []

    def interrupt(step) -> None:
        steps.append(step)
        if step.name == "write":
            assert any(p.name == "manifest.json" for p in (root / CHECK_PROJECT).rglob("*"))  # it is stored
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check_storage(str(root), on_step=interrupt)
    assert [s.name for s in steps] == ["sign in", "writable", "write", "clean up"] and steps[-1].ok
    assert tree(root) == before


def test_a_link_in_place_of_the_check_folder_is_not_followed(tmp_path: Path):
    root, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_bytes(b"keep")
    (root / CHECK_PROJECT).symlink_to(elsewhere)
    result = check_storage(str(root))
    assert not result.ok and result.failed.name == "write"
    assert isinstance(result.error, SoopervisorError)
    assert tree(elsewhere) == {"keep.txt": b"keep"} and (root / CHECK_PROJECT).is_symlink()


# -- S3, on the moto server -------------------------------------------------------------------------
@pytest.fixture
def aws(tmp_path: Path):
    with s3_fake.env(**s3_fake.aws_env(tmp_path)):
        yield


def keys(bucket: str) -> list[str]:
    return [o["Key"] for o in s3_fake.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_s3_passes_and_leaves_the_bucket_as_it_was(aws, tmp_path: Path):
    bucket = s3_fake.new_bucket()
    s3_fake.client().put_object(Bucket=bucket, Key="team/other.txt", Body=b"not ours")
    result = check_storage(f"s3://{bucket}/team")
    assert result.ok, result.to_dict()
    assert names(result) == list(STEPS) and result.left_behind == []  # S3 has no folders to leave
    assert keys(bucket) == ["team/other.txt"]


def test_s3_a_missing_bucket_fails_at_writable(aws):
    result = check_storage("s3://soopervisor-no-such-bucket-for-check/x")
    assert names(result) == ["sign in", "writable"] and not result.steps[-1].ok
    assert isinstance(result.error, SoopervisorError) and result.exit_code == result.error.exit_code == 3
    assert "soopervisor-no-such-bucket-for-check" in result.steps[-1].detail and result.error.hint


# -- Dropbox, on its fake -----------------------------------------------------------------------------
@pytest.fixture
def no_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dropbox_backend, "_sleep", lambda seconds: None)
    for var in ("SOOPERVISOR_DROPBOX_APP_KEY", "SOOPERVISOR_DROPBOX_REFRESH_TOKEN", "SOOPERVISOR_DROPBOX_APP_SECRET"):
        monkeypatch.delenv(var, raising=False)


def check_files(fake: FakeDropbox) -> list[str]:
    return [p for p in fake.files if f"/{CHECK_PROJECT.lower()}/" in p]


def test_dropbox_passes_and_keeps_no_file(no_waiting, tmp_path: Path):
    fake = FakeDropbox()
    with dropbox_fake.storage(tmp_path, fake) as store:
        store.put_set("proj", COMMIT, "r1", make_set(tmp_path))
        before = dict(fake.files)
        result = check_storage(store)
    assert result.ok, result.to_dict()
    assert any(r == "files/upload" for r in fake.routes())  # it really went to Dropbox
    assert fake.files.keys() == before.keys() and check_files(fake) == []
    # Dropbox keeps empty folders: the check removes its own, and says nothing is left
    assert not [f for f in fake.folders if CHECK_PROJECT.lower() in f] and result.left_behind == []
    assert any(f.startswith("/soopervisor-tests/proj") for f in fake.folders)  # the project's own folders stay


def test_dropbox_a_failed_list_is_cleaned_up_object_by_object(no_waiting, tmp_path: Path):
    fake = FakeDropbox()
    fake.fail("files/download", 500, times=10_000)  # no manifest can be read: not even delete_set works
    with dropbox_fake.storage(tmp_path, fake) as store:
        result = check_storage(store)
    assert names(result) == ["sign in", "writable", "write", "list", "clean up"]
    assert [s.ok for s in result.steps] == [True, True, True, False, True]
    assert isinstance(result.error, SoopervisorError) and result.exit_code == result.error.exit_code == 3
    assert check_files(fake) == []


def test_dropbox_a_file_changed_in_the_storage_fails_the_read_and_is_cleaned_up(no_waiting, tmp_path: Path):
    fake = FakeDropbox()

    def tamper(step) -> None:
        if step.name == "list":  # someone changes a stored file between the listing and the read
            path = next(p for p in check_files(fake) if p.endswith("/files/check.txt"))
            fake.put_file(path, b"changed")

    with dropbox_fake.storage(tmp_path, fake) as store:
        result = check_storage(store, on_step=tamper)
    assert names(result) == ["sign in", "writable", "write", "list", "read", "clean up"]
    assert [s.ok for s in result.steps] == [True, True, True, True, False, True]
    assert isinstance(result.error, IntegrityError) and result.exit_code == 3
    assert "check.txt" in result.failed.detail
    assert check_files(fake) == []


def test_dropbox_not_signed_in_fails_at_sign_in(no_waiting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOOPERVISOR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SOOPERVISOR_NO_KEYRING", "1")
    result = check_storage("dropbox://soopervisor")
    assert names(result) == ["sign in"] and isinstance(result.error, CredentialsError)
    assert result.exit_code == 3 and "soopervisor login dropbox" in result.error.hint


def test_json_of_a_result_names_every_step(tmp_path: Path):
    data = check_storage(str(tmp_path / "store")).to_dict()
    assert data["ok"] is True and [s["name"] for s in data["steps"]] == list(STEPS)
    assert all(set(s) == {"name", "ok", "seconds", "detail"} for s in data["steps"])
    assert os.fspath(tmp_path / "store") == data["storage"] and data["left_behind"] == []


def test_onedrive_passes_and_leaves_no_folder(no_waiting, tmp_path: Path):
    from tests.backends import onedrive as onedrive_fake

    with onedrive_fake.storage(tmp_path) as store:
        store.put_set("proj", COMMIT, "r1", make_set(tmp_path))
        result = check_storage(store)
        assert result.ok, result.to_dict()
        assert result.left_behind == []
        keys = [o.key for o in store.store.list("")]
        assert keys and all(k.startswith("proj/") for k in keys)  # the project's set stays, the check's is gone
        folders = {i.name for i in store.fake.items.values() if i.folder}
        assert CHECK_PROJECT not in folders and "proj" in folders


def test_box_passes_and_leaves_no_folder(no_waiting, tmp_path: Path):
    from tests.backends import box as box_fake

    with box_fake.storage(tmp_path) as store:
        store.put_set("proj", COMMIT, "r1", make_set(tmp_path))
        result = check_storage(store)
        assert result.ok, result.to_dict()
        assert result.left_behind == []
        folders = {i.name for i in store.fake.items.values() if i.type == "folder"}
        assert CHECK_PROJECT not in folders and "proj" in folders


def test_google_drive_passes_and_leaves_no_folder(no_waiting, tmp_path: Path):
    from tests.backends import gdrive as gdrive_fake

    with gdrive_fake.storage(tmp_path) as store:
        store.put_set("proj", COMMIT, "r1", make_set(tmp_path))
        result = check_storage(store)
        assert result.ok, result.to_dict()
        assert result.left_behind == []
        keys = [o.key for o in store.store.list("")]
        assert keys and all(k.startswith("proj/") for k in keys)
        assert CHECK_PROJECT not in {i.name for i in store.fake.items.values()}
        second = check_storage(store)  # nothing cached of the removed folders gets in the way
        assert second.ok, second.to_dict()
        assert CHECK_PROJECT not in {i.name for i in store.fake.items.values()}

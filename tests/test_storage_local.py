"""The storage contract, run against every backend, plus local-folder specifics.

A new backend joins by adding a param to the ``storage`` fixture and an entry to
``BREAK_PUT`` (how to make its put fail right before its last data file).
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from soopervisor.artifacts import write_manifest
from soopervisor.credentials import CredentialsError
from soopervisor.errors import (
    ArtifactsNotFound,
    StorageUnavailable,
    UnsafePath,
    UsageError,
)
from soopervisor.storage import LocalStorage, check_relpath, open_storage
from soopervisor.storage import local as local_mod
from soopervisor.storage.base import Storage

SHA_A = "a" * 40
SHA_B = "b" * 40


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a put."""


def _break_local(monkeypatch: pytest.MonkeyPatch, storage: Storage, name: str) -> None:
    real = local_mod._copy_file

    def copy(src: Path, dst: Path) -> None:
        if src.name == name:
            raise Interrupted(name)
        real(src, dst)

    monkeypatch.setattr(local_mod, "_copy_file", copy)


#: backend class -> how to make put_set fail when it reaches file ``name``
BREAK_PUT = {LocalStorage: _break_local}


@pytest.fixture(params=["local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "store")
    raise AssertionError(request.param)


@pytest.fixture
def make_set(tmp_path: Path):
    """Build a local set folder with ``files`` and its manifest."""

    def make(project: str, commit: str, files: dict[str, bytes], **fields) -> Path:
        src = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
        for name, data in files.items():
            p = src / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        src.mkdir(exist_ok=True)
        fields.setdefault("status", "succeeded")
        fields.setdefault("finished_at", "2024-05-01T10:00:00Z")
        write_manifest(src, project=project, commit=commit, **fields)
        return src

    return make


def read(storage: Storage, project: str, commit: str, name: str, tmp_path: Path) -> bytes:
    dest = tmp_path / f"got-{uuid.uuid4().hex[:8]}"
    storage.get_file(project, commit, name, dest)
    return dest.read_bytes()


# -- the contract --------------------------------------------------------------


def test_check_writable(storage: Storage):
    storage.check_writable()  # creates what it needs
    storage.check_writable()
    assert storage.list_projects() == []


def test_empty_storage(storage: Storage):
    assert storage.list_projects() == []
    assert storage.list_sets("p") == []
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("p", SHA_A)


def test_put_then_list_and_read(storage: Storage, make_set, tmp_path: Path):
    src = make_set("p", SHA_A, {"a.txt": b"hello", "sub/b.bin": b"\x00\x01"}, mode="sample")
    storage.put_set("p", SHA_A, src)

    sets = storage.list_sets("p")
    assert len(sets) == 1
    m = sets[0]
    assert (m["project"], m["commit"], m["mode"]) == ("p", SHA_A, "sample")
    assert [f["path"] for f in m["files"]] == ["a.txt", "sub/b.bin"]
    assert storage.read_manifest("p", SHA_A) == m
    assert storage.list_projects() == ["p"]
    assert read(storage, "p", SHA_A, "a.txt", tmp_path) == b"hello"
    assert read(storage, "p", SHA_A, "sub/b.bin", tmp_path) == b"\x00\x01"
    assert json.loads(read(storage, "p", SHA_A, "manifest.json", tmp_path)) == (
        json.loads((src / "manifest.json").read_text())
    )


def test_get_file_missing(storage: Storage, make_set, tmp_path: Path):
    storage.put_set("p", SHA_A, make_set("p", SHA_A, {"a.txt": b"x"}))
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_A, "nope.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_B, "a.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("q", SHA_A, "a.txt", tmp_path / "d")


def test_overwrite_replaces_the_set(storage: Storage, make_set, tmp_path: Path):
    storage.put_set("p", SHA_A, make_set("p", SHA_A, {"old_only.txt": b"1", "a.txt": b"v1"}))
    storage.put_set("p", SHA_A, make_set("p", SHA_A, {"a.txt": b"v2", "new.txt": b"n"}))

    sets = storage.list_sets("p")
    assert len(sets) == 1
    assert [f["path"] for f in sets[0]["files"]] == ["a.txt", "new.txt"]
    assert read(storage, "p", SHA_A, "a.txt", tmp_path) == b"v2"
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_A, "old_only.txt", tmp_path / "d")


def test_interrupted_put_keeps_the_old_set(
    storage: Storage, make_set, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    storage.put_set("p", SHA_A, make_set("p", SHA_A, {"a.txt": b"old", "b.txt": b"old"}))
    old_manifest = storage.read_manifest("p", SHA_A)
    new = make_set("p", SHA_A, {"a.txt": b"new", "b.txt": b"new"}, status="failed")
    other = make_set("p", SHA_B, {"a.txt": b"x", "b.txt": b"y"})

    BREAK_PUT[type(storage)](monkeypatch, storage, "b.txt")  # the last data file
    with pytest.raises(Interrupted):
        storage.put_set("p", SHA_A, new)
    with pytest.raises(Interrupted):
        storage.put_set("p", SHA_B, other)
    monkeypatch.undo()

    # the half-written sets are not listed; the earlier complete one is intact
    assert [m["commit"] for m in storage.list_sets("p")] == [SHA_A]
    assert storage.read_manifest("p", SHA_A) == old_manifest
    assert read(storage, "p", SHA_A, "a.txt", tmp_path) == b"old"
    assert read(storage, "p", SHA_A, "b.txt", tmp_path) == b"old"
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("p", SHA_B)

    # and the next put succeeds
    storage.put_set("p", SHA_B, other)
    assert sorted(m["commit"] for m in storage.list_sets("p")) == [SHA_A, SHA_B]


def test_list_projects(storage: Storage, make_set):
    storage.put_set("beta", SHA_A, make_set("beta", SHA_A, {"a": b"1"}))
    storage.put_set("alpha", SHA_A, make_set("alpha", SHA_A, {"a": b"1"}))
    storage.put_set("alpha", SHA_B, make_set("alpha", SHA_B, {"a": b"2"}))
    assert storage.list_projects() == ["alpha", "beta"]
    assert sorted(m["commit"] for m in storage.list_sets("alpha")) == [SHA_A, SHA_B]


def test_manifest_must_match_the_address(storage: Storage, make_set):
    src = make_set("p", SHA_A, {"a": b"1"})
    with pytest.raises(ValueError):
        storage.put_set("p", SHA_B, src)
    with pytest.raises(ValueError):
        storage.put_set("other", SHA_A, src)


BAD_NAMES = ["..", "/abs", "a/../../b", "", ".", ".hidden", "a\\b", "a\0b", "x/y"]
BAD_PATHS = ["..", "/abs", "a/../../b", "../x", "a/..", "", ".", "./a", "a//b", "a\\b", "a\0b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_project_or_commit(storage: Storage, make_set, tmp_path: Path, bad: str):
    src = make_set("p", SHA_A, {"a": b"1"})
    for call in (
        lambda: storage.put_set(bad, SHA_A, src),
        lambda: storage.put_set("p", bad, src),
        lambda: storage.list_sets(bad),
        lambda: storage.read_manifest(bad, SHA_A),
        lambda: storage.read_manifest("p", bad),
        lambda: storage.get_file(bad, SHA_A, "a", tmp_path / "d"),
        lambda: storage.get_file("p", bad, "a", tmp_path / "d"),
    ):
        with pytest.raises(UnsafePath):
            call()
    assert not (tmp_path / "abs").exists()


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_unsafe_file_name(storage: Storage, make_set, tmp_path: Path, bad: str):
    storage.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))
    with pytest.raises(UnsafePath):
        storage.get_file("p", SHA_A, bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()


@given(st.text(alphabet="ab./\\\0", max_size=12))
def test_check_relpath_never_escapes(name: str):
    try:
        ok = check_relpath(name)
    except UnsafePath:
        return
    joined = posixpath.normpath(posixpath.join("/base", ok))
    assert joined.startswith("/base/") and joined == f"/base/{ok}"


# -- local folder specifics ----------------------------------------------------------


def test_storage_path_is_a_file(tmp_path: Path, make_set):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    src = make_set("p", SHA_A, {"a": b"1"})
    for root in (blocker, blocker / "sub"):
        s = LocalStorage(root)
        with pytest.raises(StorageUnavailable):
            s.check_writable()
        with pytest.raises(StorageUnavailable) as e:
            s.put_set("p", SHA_A, src)
        assert str(blocker) in e.value.message
        assert "--storage" in e.value.hint and "SOOPERVISOR_STORAGE" in e.value.hint
        assert e.value.exit_code == 3
    with pytest.raises(StorageUnavailable):
        LocalStorage(blocker).list_projects()


def test_project_path_is_a_file(tmp_path: Path, make_set):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "p").write_text("x")
    with pytest.raises(StorageUnavailable):
        LocalStorage(tmp_path / "store").put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))


def test_set_without_manifest_is_not_listed(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    s.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))
    (s.root / "p" / SHA_B).mkdir()
    (s.root / "p" / SHA_B / "a").write_text("half")
    (s.root / "q" / SHA_A).mkdir(parents=True)
    assert [m["commit"] for m in s.list_sets("p")] == [SHA_A]
    assert s.list_projects() == ["p"]
    with pytest.raises(ArtifactsNotFound):
        s.get_file("p", SHA_B, "a", tmp_path / "d")


def test_damaged_manifest_is_skipped(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    s.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))
    s.put_set("p", SHA_B, make_set("p", SHA_B, {"a": b"1"}))
    (s.root / "p" / SHA_B / "manifest.json").write_text("{not json")
    assert [m["commit"] for m in s.list_sets("p")] == [SHA_A]


def test_symlinks_are_not_stored_nor_followed(tmp_path: Path, make_set):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    s = LocalStorage(tmp_path / "store")
    src = make_set("p", SHA_A, {"a": b"1"})
    (src / "link").symlink_to(secret)
    s.put_set("p", SHA_A, src)
    set_dir = s.root / "p" / SHA_A
    assert not (set_dir / "link").exists()

    # links planted inside a stored set are refused, never followed
    (set_dir / "planted").symlink_to(secret)
    (set_dir / "dirlink").symlink_to(tmp_path)
    for name in ("planted", "dirlink/secret.txt"):
        with pytest.raises(UnsafePath):
            s.get_file("p", SHA_A, name, tmp_path / "d")
    assert not (tmp_path / "d").exists()

    # a set folder or project folder that is a link is not listed nor read
    (s.root / "p" / SHA_B).symlink_to(set_dir)
    assert [m["commit"] for m in s.list_sets("p")] == [SHA_A]
    with pytest.raises(UnsafePath):
        s.read_manifest("p", SHA_B)
    (s.root / "q").symlink_to(s.root / "p")
    assert s.list_projects() == ["p"]
    assert s.list_sets("q") == []


def test_leftovers_of_interrupted_puts_are_cleaned(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    s.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))
    project_dir = s.root / "p"
    dead_pid = 2**22 + 12345  # above the default pid_max: never alive
    dead = project_dir / f".staging.{SHA_B}.{local_mod._HOST}.{dead_pid}.0000"
    (dead / "a").parent.mkdir(parents=True)
    (dead / "a").write_text("half")
    live = project_dir / f".staging.{SHA_B}.{local_mod._HOST}.{os.getpid()}.1111"
    live.mkdir()

    s.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"2"}))
    assert not dead.exists()
    assert live.exists()  # a put in progress in this process is left alone
    assert sorted(p.name for p in project_dir.iterdir()) == sorted([SHA_A, live.name])


def test_complete_leftover_is_put_back(tmp_path: Path, make_set):
    """A crash between 'move old set aside' and 'move new set in' loses nothing."""
    s = LocalStorage(tmp_path / "store")
    s.put_set("p", SHA_A, make_set("p", SHA_A, {"a": b"1"}))
    project_dir = s.root / "p"
    os.rename(project_dir / SHA_A, project_dir / f".old.{SHA_A}.{local_mod._HOST}.{2**22 + 7}.0")
    assert s.list_sets("p") == []
    s.put_set("p", SHA_B, make_set("p", SHA_B, {"a": b"2"}))
    assert sorted(m["commit"] for m in s.list_sets("p")) == [SHA_A, SHA_B]
    assert read(s, "p", SHA_A, "a", tmp_path) == b"1"


# -- open_storage ------------------------------------------------------------------------


def test_open_storage_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert isinstance(open_storage(str(tmp_path)), LocalStorage)
    assert open_storage(f"file://{tmp_path}/x").root == tmp_path / "x"
    assert open_storage(f"file://localhost{tmp_path}").root == tmp_path
    monkeypatch.chdir(tmp_path)
    assert open_storage("rel/dir").root == tmp_path / "rel" / "dir"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_storage("~/arts").root == tmp_path / "arts"
    monkeypatch.setenv("SOOPERVISOR_STORAGE", str(tmp_path / "env"))
    assert open_storage().url == str(tmp_path / "env")
    monkeypatch.delenv("SOOPERVISOR_STORAGE")
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    assert open_storage(None).root == tmp_path / "home" / "artifacts"


@pytest.mark.parametrize("scheme", ["s3", "gdrive", "dropbox", "onedrive", "box"])
def test_cloud_backends_without_credentials_say_how_to_sign_in(scheme: str, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(CredentialsError) as e:
        open_storage(f"{scheme}://bucket/prefix").list_sets("proj")
    assert e.value.exit_code == 3
    expected = "AWS_ACCESS_KEY_ID" if scheme == "s3" else f"soopervisor login {scheme}"
    assert expected in e.value.hint


def test_unknown_scheme_lists_supported():
    with pytest.raises(UsageError) as e:
        open_storage("ftp://host/x")
    assert "ftp" in e.value.message and "file://" in e.value.hint
    with pytest.raises(UsageError):
        open_storage("file://otherhost/x")

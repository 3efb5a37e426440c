"""The storage protocol on the local folder backend: layout, atomic puts, links, leftovers, hard links.

The protocol every backend shares is tests/test_storage_contract.py; these are
the local folder's own guarantees. A new local-like backend joins by adding a
param to the ``storage`` fixture and an entry to ``BREAK_PUT`` (how to make its
put fail right before its last data file).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soopervisor.artifacts import get_artifacts, list_sets, write_manifest
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
    """Build a local set folder (``files/...``, the log, its manifest) for run ``run_id``."""

    def make(project: str, commit: str, files: dict[str, bytes], run_id: str = "r1", **fields) -> Path:
        src = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
        (src / "files").mkdir(parents=True)
        for name, data in files.items():
            p = src / "files" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        (src / "soopervisor.log").write_text(f"log of {run_id}\n")
        fields.setdefault("status", "succeeded")
        fields.setdefault("mode", "full")
        fields.setdefault("finished_at", "2024-05-01T10:00:00Z")
        write_manifest(src, project=project, commit=commit, run_id=run_id, **fields)
        return src

    return make


def put(storage: Storage, make_set, project: str, commit: str, files: dict[str, bytes], run_id: str = "r1",
        **fields) -> Path:
    src = make_set(project, commit, files, run_id=run_id, **fields)
    storage.put_set(project, commit, run_id, src)
    return src


def read(storage: Storage, project: str, commit: str, name: str, tmp_path: Path, run_id: str | None = "r1") -> bytes:
    dest = tmp_path / f"got-{uuid.uuid4().hex[:8]}"
    storage.get_file(project, commit, run_id, name, dest)
    return dest.read_bytes()


# -- the protocol ----------------------------------------------------------------


def test_check_writable(storage: Storage):
    storage.check_writable()  # creates what it needs
    storage.check_writable()
    assert storage.list_projects() == []


def test_empty_storage(storage: Storage):
    assert storage.list_projects() == []
    assert storage.list_sets("p") == []
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("p", SHA_A, "r1")
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("p", SHA_A)


def test_put_then_list_and_read(storage: Storage, make_set, tmp_path: Path):
    src = put(storage, make_set, "p", SHA_A, {"a.txt": b"hello", "sub/b.bin": b"\x00\x01"}, mode="sample")

    (found,) = storage.list_sets("p")
    m = found.manifest
    assert (found.commit, found.run_id, found.damaged) == (SHA_A, "r1", None)
    assert (m["project"], m["commit"], m["run_id"], m["mode"], m["schema"]) == ("p", SHA_A, "r1", "sample", 2)
    assert [f["path"] for f in m["files"]] == ["a.txt", "sub/b.bin"]
    assert m["log"] == {"path": "soopervisor.log", "size": 10,
                        "sha256": json.loads((src / "manifest.json").read_text())["log"]["sha256"]}
    assert storage.read_manifest("p", SHA_A, "r1") == m
    assert storage.list_projects() == ["p"]
    assert read(storage, "p", SHA_A, "files/a.txt", tmp_path) == b"hello"
    assert read(storage, "p", SHA_A, "files/sub/b.bin", tmp_path) == b"\x00\x01"
    assert read(storage, "p", SHA_A, "soopervisor.log", tmp_path) == b"log of r1\n"
    assert json.loads(read(storage, "p", SHA_A, "manifest.json", tmp_path)) == (
        json.loads((src / "manifest.json").read_text())
    )
    # the layout of schema 2
    root = storage.root / "p" / SHA_A / "r1"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "files/a.txt", "files/sub/b.bin", "manifest.json", "soopervisor.log"]


def test_get_file_missing(storage: Storage, make_set, tmp_path: Path):
    put(storage, make_set, "p", SHA_A, {"a.txt": b"x"})
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_A, "r1", "files/nope.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_A, "r2", "files/a.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_B, "r1", "files/a.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("q", SHA_A, "r1", "files/a.txt", tmp_path / "d")
    with pytest.raises(ArtifactsNotFound):  # there is no old-layout set of that commit
        storage.get_file("p", SHA_A, None, "r1/files/a.txt", tmp_path / "d")


def test_a_second_run_never_touches_the_first(storage: Storage, make_set, tmp_path: Path):
    put(storage, make_set, "p", SHA_A, {"old_only.txt": b"1", "a.txt": b"v1"}, run_id="r1")
    put(storage, make_set, "p", SHA_A, {"a.txt": b"v2", "new.txt": b"n"}, run_id="r2", status="cancelled")

    sets = {s.run_id: s.manifest for s in storage.list_sets("p")}
    assert [f["path"] for f in sets["r1"]["files"]] == ["a.txt", "old_only.txt"]
    assert [f["path"] for f in sets["r2"]["files"]] == ["a.txt", "new.txt"]
    assert read(storage, "p", SHA_A, "files/a.txt", tmp_path, "r1") == b"v1"
    assert read(storage, "p", SHA_A, "files/a.txt", tmp_path, "r2") == b"v2"
    assert read(storage, "p", SHA_A, "files/old_only.txt", tmp_path, "r1") == b"1"


def test_the_same_run_again_replaces_its_set(storage: Storage, make_set, tmp_path: Path):
    put(storage, make_set, "p", SHA_A, {"old_only.txt": b"1", "a.txt": b"v1"})
    put(storage, make_set, "p", SHA_A, {"a.txt": b"v2", "new.txt": b"n"})
    (found,) = storage.list_sets("p")
    assert [f["path"] for f in found.manifest["files"]] == ["a.txt", "new.txt"]
    assert read(storage, "p", SHA_A, "files/a.txt", tmp_path) == b"v2"
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("p", SHA_A, "r1", "files/old_only.txt", tmp_path / "d")


def test_interrupted_put_keeps_the_other_sets(
    storage: Storage, make_set, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    put(storage, make_set, "p", SHA_A, {"a.txt": b"old", "b.txt": b"old"})
    old_manifest = storage.read_manifest("p", SHA_A, "r1")
    new = make_set("p", SHA_A, {"a.txt": b"new", "b.txt": b"new"}, run_id="r2", status="failed")
    again = make_set("p", SHA_A, {"a.txt": b"again", "b.txt": b"again"}, run_id="r1")
    other = make_set("p", SHA_B, {"a.txt": b"x", "b.txt": b"y"})

    BREAK_PUT[type(storage)](monkeypatch, storage, "b.txt")  # the last data file
    for commit, run_id, src in ((SHA_A, "r2", new), (SHA_A, "r1", again), (SHA_B, "r1", other)):
        with pytest.raises(Interrupted):
            storage.put_set("p", commit, run_id, src)
    monkeypatch.undo()

    # the half-written sets are not listed; the earlier complete one is intact
    assert [(s.commit, s.run_id) for s in storage.list_sets("p")] == [(SHA_A, "r1")]
    assert storage.read_manifest("p", SHA_A, "r1") == old_manifest
    assert read(storage, "p", SHA_A, "files/a.txt", tmp_path) == b"old"
    assert read(storage, "p", SHA_A, "files/b.txt", tmp_path) == b"old"
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("p", SHA_B, "r1")

    # and the next put succeeds
    storage.put_set("p", SHA_B, "r1", other)
    assert sorted(s.commit for s in storage.list_sets("p")) == [SHA_A, SHA_B]


def test_list_projects(storage: Storage, make_set):
    put(storage, make_set, "beta", SHA_A, {"a": b"1"})
    put(storage, make_set, "alpha", SHA_A, {"a": b"1"})
    put(storage, make_set, "alpha", SHA_B, {"a": b"2"})
    assert storage.list_projects() == ["alpha", "beta"]
    assert sorted(s.commit for s in storage.list_sets("alpha")) == [SHA_A, SHA_B]


def test_manifest_must_match_the_address(storage: Storage, make_set):
    src = make_set("p", SHA_A, {"a": b"1"})
    with pytest.raises(ValueError):
        storage.put_set("p", SHA_B, "r1", src)
    with pytest.raises(ValueError):
        storage.put_set("other", SHA_A, "r1", src)
    with pytest.raises(ValueError):
        storage.put_set("p", SHA_A, "r2", src)


BAD_NAMES = ["..", "/abs", "a/../../b", "", ".", ".hidden", "a\\b", "a\0b", "x/y", "a\nb", "a\udcffb"]
BAD_PATHS = ["..", "/abs", "a/../../b", "../x", "a/..", "", ".", "./a", "a//b", "a\0b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_project_commit_or_run(storage: Storage, make_set, tmp_path: Path, bad: str):
    src = make_set("p", SHA_A, {"a": b"1"})
    for call in (
        lambda: storage.put_set(bad, SHA_A, "r1", src),
        lambda: storage.put_set("p", bad, "r1", src),
        lambda: storage.put_set("p", SHA_A, bad, src),
        lambda: storage.list_sets(bad),
        lambda: storage.read_manifest(bad, SHA_A),
        lambda: storage.read_manifest("p", bad),
        lambda: storage.read_manifest("p", SHA_A, bad),
        lambda: storage.get_file(bad, SHA_A, "r1", "files/a", tmp_path / "d"),
        lambda: storage.get_file("p", bad, "r1", "files/a", tmp_path / "d"),
        lambda: storage.get_file("p", SHA_A, bad, "files/a", tmp_path / "d"),
        lambda: storage.delete_set("p", SHA_A, bad),
    ):
        with pytest.raises(UnsafePath):
            call()
    assert not (tmp_path / "abs").exists()


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_unsafe_file_name(storage: Storage, make_set, tmp_path: Path, bad: str):
    put(storage, make_set, "p", SHA_A, {"a": b"1"})
    with pytest.raises(UnsafePath):
        storage.get_file("p", SHA_A, "r1", bad, tmp_path / "d")
    assert not (tmp_path / "d").exists()


@given(st.text(alphabet="ab./\\\0\n", max_size=12))
def test_check_relpath_never_escapes(name: str):
    try:
        ok = check_relpath(name)
    except UnsafePath:
        return
    joined = posixpath.normpath(posixpath.join("/base", ok))
    assert joined.startswith("/base/") and joined == f"/base/{ok}"


#: one path segment as a pipeline may name a file: any character but "/" and NUL, bytes that are not
#: UTF-8 as surrogate escapes (as tarfile and os give them), never "." or ".."
_SEGMENT = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                       st.sampled_from(["\\", "\n", "\udcff", "\udc80", "%", ".", " "])),
    min_size=1, max_size=8,
).filter(lambda s: s not in (".", "..") and len(s.encode("utf-8", "surrogateescape")) <= 200)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join), min_size=1, max_size=4,
                      unique_by=lambda n: n.encode("utf-8", "surrogateescape")))
def test_any_posix_name_round_trips_through_put_get_and_download(names: list[str], tmp_path_factory):
    """Property: what the pipeline names a product is what is stored, listed, read and downloaded."""
    # a name that is a folder of another name cannot be both a file and a folder
    files = {n: f"data of {n!r}".encode("utf-8", "surrogateescape") for n in names
             if not any(o.startswith(n + "/") for o in names)}
    tmp = tmp_path_factory.mktemp("names")
    os.environ["SOOPERVISOR_HOME"] = str(tmp / "home")
    try:
        s = LocalStorage(tmp / "store")
        src = tmp / "src"
        for name, data in files.items():
            path = src.joinpath("files", *name.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (src / "files").mkdir(parents=True, exist_ok=True)
        write_manifest(src, project="p", commit=SHA_A, run_id="r1", status="succeeded", mode="full")
        s.put_set("p", SHA_A, "r1", src)
        (summary,) = list_sets("p", s)
        assert summary.damaged is None and summary.files == len(files)
        arts = get_artifacts(SHA_A, project="p", storage=s)
        assert sorted(f.name for f in arts.files) == sorted(files)
        for name, data in files.items():
            assert read(s, "p", SHA_A, f"files/{name}", tmp) == data
            assert arts.path(name).read_bytes() == data
        out = tmp / "out"
        arts.download(out)
        for name, data in files.items():
            assert out.joinpath(*name.split("/")).read_bytes() == data
        assert json.loads((out / arts.ours_folder / "manifest.json").read_text())["run_id"] == "r1"
    finally:
        del os.environ["SOOPERVISOR_HOME"]


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
            s.put_set("p", SHA_A, "r1", src)
        assert str(blocker) in e.value.message
        assert "--storage" in e.value.hint and "SOOPERVISOR_STORAGE" in e.value.hint
        assert e.value.exit_code == 3
    with pytest.raises(StorageUnavailable):
        LocalStorage(blocker).list_projects()


def test_project_or_commit_path_is_a_file(tmp_path: Path, make_set):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "p").write_text("x")
    with pytest.raises(StorageUnavailable):
        LocalStorage(tmp_path / "store").put_set("p", SHA_A, "r1", make_set("p", SHA_A, {"a": b"1"}))
    (tmp_path / "store" / "q").mkdir()
    (tmp_path / "store" / "q" / SHA_A).write_text("x")
    with pytest.raises(StorageUnavailable):
        LocalStorage(tmp_path / "store").put_set("q", SHA_A, "r1", make_set("q", SHA_A, {"a": b"1"}))


def test_set_without_manifest_is_not_listed(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    put(s, make_set, "p", SHA_A, {"a": b"1"})
    (s.root / "p" / SHA_B / "r1" / "files").mkdir(parents=True)
    (s.root / "p" / SHA_B / "r1" / "files" / "a").write_text("half")
    (s.root / "p" / SHA_A / "r2").mkdir()
    (s.root / "q" / SHA_A).mkdir(parents=True)
    assert [(x.commit, x.run_id) for x in s.list_sets("p")] == [(SHA_A, "r1")]
    assert s.list_projects() == ["p"]
    with pytest.raises(ArtifactsNotFound):
        s.get_file("p", SHA_B, "r1", "files/a", tmp_path / "d")


def test_damaged_manifest_is_listed_as_damaged(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    put(s, make_set, "p", SHA_A, {"a": b"1"})
    put(s, make_set, "p", SHA_B, {"a": b"1"})
    (s.root / "p" / SHA_B / "r1" / "manifest.json").write_text("{not json")
    found = {x.commit: x for x in s.list_sets("p")}
    assert found[SHA_A].damaged is None
    assert found[SHA_B].manifest is None and "not valid JSON" in found[SHA_B].damaged
    assert "{not json" not in found[SHA_B].damaged  # the reason says where, never what


def test_old_set_with_a_damaged_manifest_hides_no_run_and_invents_none(tmp_path: Path, make_set):
    """A product folder of an old set is never taken for a run set, even when the old manifest is unreadable."""
    s = LocalStorage(tmp_path / "store")
    old = s.root / "p" / SHA_A
    (old / "output").mkdir(parents=True)
    (old / "output" / "manifest.json").write_text('{"files": 5}')
    (old / "manifest.json").write_text("{damaged")
    put(s, make_set, "p", SHA_A, {"a": b"1"}, run_id="r1")
    found = sorted(((x.run_id or ""), x.damaged is None) for x in s.list_sets("p"))
    assert found == [("", False), ("r1", True)]


def test_a_run_id_never_replaces_an_old_sets_folder(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    old = s.root / "p" / SHA_A
    (old / "r1").mkdir(parents=True)
    (old / "r1" / "kept.txt").write_bytes(b"old product")
    manifest = {"schema": 1, "files": [{"path": "r1/kept.txt", "size": 11,
                                        "sha256": hashlib.sha256(b"old product").hexdigest()}]}
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StorageUnavailable, match="run id"):
        put(s, make_set, "p", SHA_A, {"a": b"1"}, run_id="r1")
    assert (old / "r1" / "kept.txt").read_bytes() == b"old product"


def test_stored_content_is_hard_linked_not_copied(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    same = {"output/big.bin": os.urandom(100_000), "output/small.txt": b"same"}
    put(s, make_set, "p", SHA_A, same, run_id="r1")
    assert s.last_put == {"copied": 3, "linked": 0}
    put(s, make_set, "p", SHA_B, {**same, "output/new.txt": b"new"}, run_id="r2")
    assert s.last_put == {"copied": 2, "linked": 2}  # the log and new.txt are new
    first = s.root / "p" / SHA_A / "r1" / "files" / "output" / "big.bin"
    second = s.root / "p" / SHA_B / "r2" / "files" / "output" / "big.bin"
    assert os.path.samefile(first, second)
    s.delete_set("p", SHA_A, "r1")  # the other set keeps its file
    assert second.read_bytes() == same["output/big.bin"]


def test_a_link_planted_in_the_storage_is_not_hard_linked_through(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.txt").write_bytes(b"same")
    put(s, make_set, "p", SHA_A, {"sub/x.txt": b"same"}, run_id="r1")
    files = s.root / "p" / SHA_A / "r1" / "files"
    (files / "sub" / "x.txt").unlink()
    (files / "sub").rmdir()
    (files / "sub").symlink_to(outside)
    put(s, make_set, "p", SHA_B, {"y.txt": b"same"}, run_id="r2")
    assert s.last_put["linked"] == 0
    assert not os.path.samefile(outside / "x.txt", s.root / "p" / SHA_B / "r2" / "files" / "y.txt")


def test_when_hard_links_fail_the_content_is_copied(tmp_path: Path, make_set, monkeypatch):
    s = LocalStorage(tmp_path / "store")
    put(s, make_set, "p", SHA_A, {"a.txt": b"same"}, run_id="r1")

    def no_links(*args, **kwargs):
        raise OSError(local_mod.errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(local_mod.os, "link", no_links)
    put(s, make_set, "p", SHA_B, {"a.txt": b"same"}, run_id="r2")
    assert s.last_put == {"copied": 2, "linked": 0}
    assert read(s, "p", SHA_B, "files/a.txt", tmp_path, "r2") == b"same"


def test_symlinks_are_not_stored_nor_followed(tmp_path: Path, make_set):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    s = LocalStorage(tmp_path / "store")
    src = make_set("p", SHA_A, {"a": b"1"})
    (src / "files" / "link").symlink_to(secret)
    s.put_set("p", SHA_A, "r1", src)
    set_dir = s.root / "p" / SHA_A / "r1"
    assert not (set_dir / "files" / "link").exists()

    # links planted inside a stored set are refused, never followed
    (set_dir / "files" / "planted").symlink_to(secret)
    (set_dir / "files" / "dirlink").symlink_to(tmp_path)
    for name in ("files/planted", "files/dirlink/secret.txt"):
        with pytest.raises(UnsafePath):
            s.get_file("p", SHA_A, "r1", name, tmp_path / "d")
    assert not (tmp_path / "d").exists()

    # a set, commit or project folder that is a link is not listed nor read
    (s.root / "p" / SHA_A / "r2").symlink_to(set_dir)
    (s.root / "p" / SHA_B).symlink_to(s.root / "p" / SHA_A)
    assert [(x.commit, x.run_id) for x in s.list_sets("p")] == [(SHA_A, "r1")]
    with pytest.raises(UnsafePath):
        s.read_manifest("p", SHA_B, "r1")
    with pytest.raises(ArtifactsNotFound):
        s.read_manifest("p", SHA_A, "r2")
    (s.root / "q").symlink_to(s.root / "p")
    assert s.list_projects() == ["p"]
    assert s.list_sets("q") == []


def test_leftovers_of_interrupted_puts_are_cleaned(tmp_path: Path, make_set):
    s = LocalStorage(tmp_path / "store")
    put(s, make_set, "p", SHA_A, {"a": b"1"})
    commit_dir = s.root / "p" / SHA_A
    dead_pid = 2**22 + 12345  # above the default pid_max: never alive
    dead = commit_dir / f".staging.r2.{local_mod._HOST}.{dead_pid}.0000"
    (dead / "files").mkdir(parents=True)
    (dead / "files" / "a").write_text("half")
    live = commit_dir / f".staging.r3.{local_mod._HOST}.{os.getpid()}.1111"
    live.mkdir()

    put(s, make_set, "p", SHA_A, {"a": b"2"})
    assert not dead.exists()
    assert live.exists()  # a put in progress in this process is left alone
    assert sorted(p.name for p in commit_dir.iterdir()) == sorted(["r1", live.name])


def test_complete_leftover_is_put_back(tmp_path: Path, make_set):
    """A crash between 'move old set aside' and 'move new set in' loses nothing."""
    s = LocalStorage(tmp_path / "store")
    put(s, make_set, "p", SHA_A, {"a": b"1"})
    commit_dir = s.root / "p" / SHA_A
    os.rename(commit_dir / "r1", commit_dir / f".old.r1.{local_mod._HOST}.{2**22 + 7}.0")
    assert s.list_sets("p") == []
    put(s, make_set, "p", SHA_A, {"a": b"2"}, run_id="r2")
    assert sorted(x.run_id for x in s.list_sets("p")) == ["r1", "r2"]
    assert read(s, "p", SHA_A, "files/a", tmp_path) == b"1"


def test_an_old_layout_leftover_is_put_back(tmp_path: Path, make_set):
    """Leftovers of puts made before runs had their own sets are recovered as old-layout sets."""
    s = LocalStorage(tmp_path / "store")
    project_dir = s.root / "p"
    leftover = project_dir / f".old.{SHA_B}.{local_mod._HOST}.{2**22 + 7}.0"
    leftover.mkdir(parents=True)
    (leftover / "a").write_bytes(b"old")
    (leftover / "manifest.json").write_text(json.dumps({"schema": 1, "status": "succeeded", "files": [
        {"path": "a", "size": 3, "sha256": hashlib.sha256(b"old").hexdigest()}]}))
    put(s, make_set, "p", SHA_A, {"a": b"new"})
    assert sorted((x.commit, x.run_id) for x in s.list_sets("p")) == [(SHA_A, "r1"), (SHA_B, None)]
    assert read(s, "p", SHA_B, "a", tmp_path, None) == b"old"


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

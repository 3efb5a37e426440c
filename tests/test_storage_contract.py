"""One contract, every storage backend: the same tests, unchanged, on each.

local: real folders. s3: a real S3 API (moto server on loopback) through s3fs.
gdrive, dropbox, onedrive, box: stateful fakes of their documented HTTP APIs,
driven by the real SDKs (no emulator exists). Each ``tests/backends/<name>.py``
provides ``storage(tmp_path)``: a context manager yielding a fresh, empty
storage of that backend.
"""
from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from soopervisor.artifacts import download_set, list_sets, resolve_commit, sha256_file, write_manifest
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath
from soopervisor.storage import LocalStorage, Storage
from soopervisor.storage.remote import RemoteStorage

BACKENDS = ["local", "s3", "gdrive", "dropbox", "onedrive", "box"]
CLOUD = [b for b in BACKENDS if b != "local"]

COMMIT_A = "a" * 8 + "1" * 32
COMMIT_B = "b" * 8 + "2" * 32


@contextlib.contextmanager
def _local(tmp_path: Path) -> Iterator[Storage]:
    yield LocalStorage(tmp_path / "storage")


def _open(name: str, tmp_path: Path):
    if name == "local":
        return _local(tmp_path)
    return importlib.import_module(f"tests.backends.{name}").storage(tmp_path)


@pytest.fixture(params=BACKENDS)
def storage(request, tmp_path) -> Iterator[Storage]:
    with _open(request.param, tmp_path) as st:
        yield st


@pytest.fixture(params=CLOUD)
def cloud(request, tmp_path) -> Iterator[RemoteStorage]:
    with _open(request.param, tmp_path) as st:
        assert isinstance(st, RemoteStorage)
        yield st


def make_set(root: Path, commit: str, files: dict[str, bytes], project: str = "proj") -> Path:
    """A run set folder as the runner writes it: files, then manifest.json."""
    folder = root / f"set-{commit[:7]}-{len(list(root.glob('set-*')))}"
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    write_manifest(folder, project=project, commit=commit, dirty=False, mode="sample", status="succeeded",
                   exit_code=0, started_at="2026-11-28T10:00:00Z", finished_at=f"2026-11-28T10:0{len(files) % 10}:00Z")
    return folder


FILES = {
    "output/data.csv": b"x\n1\n2\n",
    "output/nested/deep/report.html": b"<h1>report</h1>",
    "soopervisor.log": b"==> soopervisor: build pipeline\n",
}


def test_put_list_resolve_get_and_download(storage, tmp_path):
    storage.put_set("proj", COMMIT_A, make_set(tmp_path, COMMIT_A, FILES))
    assert storage.list_projects() == ["proj"]
    (manifest,) = list_sets("proj", storage)
    assert manifest["commit"] == COMMIT_A and manifest["status"] == "succeeded"
    assert resolve_commit(storage, "proj", COMMIT_A[:7]) == COMMIT_A
    assert resolve_commit(storage, "proj", "latest") == COMMIT_A
    dest = tmp_path / "one.html"
    storage.get_file("proj", COMMIT_A, "output/nested/deep/report.html", dest)
    assert dest.read_bytes() == FILES["output/nested/deep/report.html"]
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_A, out)
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data
    assert json.loads((out / "manifest.json").read_text())["commit"] == COMMIT_A
    with pytest.raises(ArtifactsNotFound):
        resolve_commit(storage, "proj", "deadbeef")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("proj", COMMIT_A, "output/missing.csv", tmp_path / "x")


def test_overwrite_replaces_the_set_without_leftovers(storage, tmp_path):
    storage.put_set("proj", COMMIT_A, make_set(tmp_path, COMMIT_A, FILES))
    second = {"output/data.csv": b"x\n9\n", "soopervisor.log": b"second run\n"}
    storage.put_set("proj", COMMIT_A, make_set(tmp_path, COMMIT_A, second))
    (manifest,) = list_sets("proj", storage)
    assert sorted(f["path"] for f in manifest["files"]) == sorted(second)
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_A, out)
    assert (out / "output/data.csv").read_bytes() == b"x\n9\n"
    assert not (out / "output/nested").exists()
    with pytest.raises(ArtifactsNotFound):  # the old set's file is gone with it
        storage.get_file("proj", COMMIT_A, "output/nested/deep/report.html", tmp_path / "x")


def test_a_failed_upload_leaves_no_complete_looking_set(storage, tmp_path, monkeypatch):
    storage.put_set("proj", COMMIT_A, make_set(tmp_path, COMMIT_A, FILES))
    # two files of new content (content already stored would be copied, not uploaded)
    src = make_set(tmp_path, COMMIT_B, {**FILES, "output/data.csv": b"new content\n", "output/more.txt": b"more"})
    _fail_second_file(storage, monkeypatch)
    with pytest.raises((OSError, StorageUnavailable), match="connection dropped"):
        storage.put_set("proj", COMMIT_B, src)
    assert [m["commit"] for m in list_sets("proj", storage)] == [COMMIT_A]
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("proj", COMMIT_B)
    monkeypatch.undo()
    storage.put_set("proj", COMMIT_B, src)  # a new attempt completes cleanly
    assert {m["commit"] for m in list_sets("proj", storage)} == {COMMIT_A, COMMIT_B}
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_B, out)
    assert (out / "output/data.csv").read_bytes() == b"new content\n"


def _fail_second_file(storage: Storage, monkeypatch) -> None:
    """The connection drops after one file went through."""
    calls = {"n": 0}
    if isinstance(storage, RemoteStorage):
        target, attr = storage.store, "upload"
    else:
        from soopervisor.storage import local

        target, attr = local, "_copy_file"
    original = getattr(target, attr)

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("connection dropped")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, attr, flaky)


def test_unsafe_names_are_refused(storage, tmp_path):
    src = make_set(tmp_path, COMMIT_A, FILES)
    for project, commit in (("../escape", COMMIT_A), ("proj", "../x"), ("/abs", COMMIT_A), ("proj", ".hidden")):
        with pytest.raises(UnsafePath):
            storage.put_set(project, commit, src)
    storage.put_set("proj", COMMIT_A, src)
    for name in ("../manifest.json", "/etc/passwd", "output/../../x", "a\\b"):
        with pytest.raises(UnsafePath):
            storage.get_file("proj", COMMIT_A, name, tmp_path / "x")
    assert storage.list_projects() == ["proj"]


def test_re_uploading_unchanged_content_sends_nothing(cloud, tmp_path):
    big = {f"output/part-{i}.bin": bytes([i]) * 50_000 for i in range(5)}
    src = make_set(tmp_path, COMMIT_A, big)
    cloud.put_set("proj", COMMIT_A, src)
    assert cloud.last_put["uploaded"] == 5 and cloud.last_put["bytes_sent"] == 250_000
    cloud.put_set("proj", COMMIT_A, src)  # the same commit again, same outputs
    assert cloud.last_put["uploaded"] == 0 and cloud.last_put["bytes_sent"] == 0
    assert cloud.last_put["kept"] == 5
    # another commit with the same outputs: copied on the server, not sent
    cloud.put_set("proj", COMMIT_B, make_set(tmp_path, COMMIT_B, {**big, "output/new.txt": b"only this is new"}))
    assert cloud.last_put["uploaded"] == 1 and cloud.last_put["copied"] == 5
    assert cloud.last_put["bytes_sent"] == len(b"only this is new")
    out = tmp_path / "download"
    files = download_set(cloud, "proj", COMMIT_B, out)
    for path in files:
        if path.name != "manifest.json":
            rel = path.relative_to(out).as_posix()
            assert path.read_bytes() == {**big, "output/new.txt": b"only this is new"}[rel]
    assert sha256_file(out / "output/part-0.bin") == sha256_file(src / "output/part-0.bin")

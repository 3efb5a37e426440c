"""One contract, every storage backend: the same tests, unchanged, on each.

local: real folders. s3: a real S3 API (moto server on loopback) through s3fs.
gdrive, dropbox, onedrive, box: stateful fakes of their documented HTTP APIs,
driven by the real SDKs (no emulator exists). Each ``tests/backends/<name>.py``
provides ``storage(tmp_path)``: a context manager yielding a fresh, empty
storage of that backend.

The protocol (schema 2): every run keeps its own set at
``<project>/<commit>/<run_id>/`` (manifest.json last, soopervisor.log,
files/...); sets of the old layout (``<project>/<commit>/manifest.json`` with
the files beside it) stay readable; product names are data.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from soopervisor.artifacts import (
    download_set,
    get_artifacts,
    list_commits,
    list_sets,
    prune_sets,
    resolve_set,
    sha256_file,
    write_manifest,
)
from soopervisor.errors import ArtifactsNotFound, IntegrityError, StorageUnavailable, UnsafePath
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
def storage(request, tmp_path, monkeypatch) -> Iterator[Storage]:
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))  # Artifacts.path caches there
    with _open(request.param, tmp_path) as st:
        yield st


@pytest.fixture(params=CLOUD)
def cloud(request, tmp_path) -> Iterator[RemoteStorage]:
    with _open(request.param, tmp_path) as st:
        assert isinstance(st, RemoteStorage)
        yield st


_made = {"n": 0}


def make_set(root: Path, commit: str, files: dict[str, bytes], run_id: str = "run1", project: str = "proj",
             status: str = "succeeded", mode: str = "sample", minute: int | None = None,
             log: bytes = b"==> soopervisor: build pipeline\n") -> Path:
    """A run's set folder as the runner builds it: files/..., soopervisor.log, then manifest.json."""
    _made["n"] += 1
    folder = root / f"set-{commit[:7]}-{run_id}-{_made['n']}"
    (folder / "files").mkdir(parents=True)
    for name, data in files.items():
        path = folder / "files" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (folder / "soopervisor.log").write_bytes(log)
    minute = len(files) % 10 if minute is None else minute
    write_manifest(folder, project=project, commit=commit, run_id=run_id, dirty=False, mode=mode, status=status,
                   exit_code=0 if status == "succeeded" else 1, started_at="2026-11-28T10:00:00Z",
                   finished_at=f"2026-11-28T10:{minute:02d}:00Z")
    return folder


def put(storage: Storage, root: Path, commit: str, files: dict[str, bytes], run_id: str = "run1", **kw) -> Path:
    src = make_set(root, commit, files, run_id=run_id, **kw)
    storage.put_set("proj", commit, run_id, src)
    return src


def write_object(storage: Storage, key: str, data: bytes) -> None:
    """Put raw bytes at ``key`` (relative to the storage root) behind the protocol's back."""
    if isinstance(storage, LocalStorage):
        path = storage.root.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        assert isinstance(storage, RemoteStorage)
        storage.store.write(key, data)


def write_old_set(storage: Storage, commit: str, files: dict[str, bytes], status: str = "succeeded",
                  finished_at: str = "2026-11-01T10:00:00Z") -> None:
    """A set of the old layout (schema 1), as soopervisor wrote it before runs had sets of their own."""
    entries = [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for name, data in sorted(files.items())]
    manifest = {"schema": 1, "project": "proj", "commit": commit, "mode": "full", "status": status,
                "dirty": False, "exit_code": 0, "started_at": None, "finished_at": finished_at,
                "log": "soopervisor.log", "run_id": "oldrun", "files": entries}
    for name, data in files.items():
        write_object(storage, f"proj/{commit}/{name}", data)
    write_object(storage, f"proj/{commit}/manifest.json", json.dumps(manifest).encode())


FILES = {
    "output/data.csv": b"x\n1\n2\n",
    "output/nested/deep/report.html": b"<h1>report</h1>",
}


def test_put_list_resolve_get_and_download(storage, tmp_path):
    put(storage, tmp_path, COMMIT_A, FILES)
    assert storage.list_projects() == ["proj"]
    (summary,) = list_sets("proj", storage)
    assert (summary.commit, summary.run_id, summary.status, summary.files) == (COMMIT_A, "run1", "succeeded", 2)
    assert resolve_set(storage, "proj", COMMIT_A[:7]).run_id == "run1"
    assert resolve_set(storage, "proj", "latest").commit == COMMIT_A
    dest = tmp_path / "one.html"
    storage.get_file("proj", COMMIT_A, "run1", "files/output/nested/deep/report.html", dest)
    assert dest.read_bytes() == FILES["output/nested/deep/report.html"]
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_A, out)
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data
    manifest = json.loads((out / ".soopervisor/manifest.json").read_text())
    assert (manifest["commit"], manifest["run_id"], manifest["schema"]) == (COMMIT_A, "run1", 2)
    assert (out / ".soopervisor/soopervisor.log").read_bytes() == b"==> soopervisor: build pipeline\n"
    with pytest.raises(ArtifactsNotFound):
        resolve_set(storage, "proj", "deadbeef")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("proj", COMMIT_A, "run1", "files/output/missing.csv", tmp_path / "x")
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("proj", COMMIT_A, "run2", "files/output/data.csv", tmp_path / "x")


def test_two_runs_of_one_commit_keep_both_sets(storage, tmp_path):
    """Issue 11, case 1: a re-run that is cancelled never replaces the commit's good outputs."""
    nine = {f"output/part-{i}.csv": b"%d\n" % i for i in range(8)} | {"output/sales.csv": b"region,total\nnorth,3\n"}
    put(storage, tmp_path, COMMIT_A, nine, run_id="run1", minute=1)
    put(storage, tmp_path, COMMIT_A, {"output/partial.csv": b"half"}, run_id="run2", status="cancelled", minute=2)
    sets = list_sets("proj", storage)
    assert [(s.run_id, s.status, s.files) for s in sets] == [("run2", "cancelled", 1), ("run1", "succeeded", 9)]
    for ref in (COMMIT_A, COMMIT_A[:7], "latest"):
        arts = get_artifacts(ref, project="proj", storage=storage)
        assert (arts.run_id, len(arts.files)) == ("run1", 9)
    assert get_artifacts(COMMIT_A, project="proj", storage=storage).load("output/sales.csv") is not None
    assert get_artifacts(COMMIT_A, project="proj", storage=storage).path("output/sales.csv").read_bytes() == \
        nine["output/sales.csv"]
    cancelled = get_artifacts(COMMIT_A, project="proj", storage=storage, run="run2")
    assert (cancelled.status, [f.name for f in cancelled.files]) == ("cancelled", ["output/partial.csv"])
    (commit,) = list_commits("proj", storage)
    assert (commit.shown.run_id, len(commit.sets), commit.resolved) == ("run1", 2, True)


def test_the_same_run_put_again_replaces_its_set_without_leftovers(storage, tmp_path):
    put(storage, tmp_path, COMMIT_A, FILES, run_id="run1")
    put(storage, tmp_path, COMMIT_A, {"output/data.csv": b"x\n9\n"}, run_id="run1")
    (summary,) = list_sets("proj", storage)
    assert summary.files == 1
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_A, out)
    assert (out / "output/data.csv").read_bytes() == b"x\n9\n"
    assert not (out / "output/nested").exists()
    with pytest.raises(ArtifactsNotFound):  # the old set's file is gone with it
        storage.get_file("proj", COMMIT_A, "run1", "files/output/nested/deep/report.html", tmp_path / "x")


def test_a_failed_upload_leaves_no_complete_looking_set(storage, tmp_path, monkeypatch):
    put(storage, tmp_path, COMMIT_A, FILES)
    # two files of new content (content already stored would be copied, not uploaded)
    src = make_set(tmp_path, COMMIT_B, {**FILES, "output/data.csv": b"new content\n", "output/more.txt": b"more"})
    _fail_second_file(storage, monkeypatch)
    with pytest.raises((OSError, StorageUnavailable), match="connection dropped"):
        storage.put_set("proj", COMMIT_B, "run1", src)
    assert [s.commit for s in list_sets("proj", storage)] == [COMMIT_A]
    with pytest.raises(ArtifactsNotFound):
        storage.read_manifest("proj", COMMIT_B, "run1")
    monkeypatch.undo()
    storage.put_set("proj", COMMIT_B, "run1", src)  # a new attempt completes cleanly
    assert {s.commit for s in list_sets("proj", storage)} == {COMMIT_A, COMMIT_B}
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
    for project, commit, run in (("../escape", COMMIT_A, "run1"), ("proj", "../x", "run1"), ("/abs", COMMIT_A, "run1"),
                                 ("proj", ".hidden", "run1"), ("proj", COMMIT_A, ".."), ("proj", COMMIT_A, "a/b"),
                                 ("proj", COMMIT_A, "a\nb")):
        with pytest.raises(UnsafePath):
            storage.put_set(project, commit, run, src)
    put(storage, tmp_path, COMMIT_A, FILES)
    for name in ("../manifest.json", "/etc/passwd", "files/output/../../x", "files/../../run2/x", "a\0b"):
        with pytest.raises(UnsafePath):
            storage.get_file("proj", COMMIT_A, "run1", name, tmp_path / "x")
    assert storage.list_projects() == ["proj"]


def test_a_manifest_that_lies_about_its_address_or_files_is_refused(storage, tmp_path):
    src = make_set(tmp_path, COMMIT_A, FILES, run_id="run1")
    for commit, run in ((COMMIT_B, "run1"), (COMMIT_A, "run2")):
        with pytest.raises(ValueError):
            storage.put_set("proj", commit, run, src)
    (src / "files" / "unlisted.txt").write_bytes(b"not in the manifest")
    with pytest.raises(ValueError, match="does not match its files"):
        storage.put_set("proj", COMMIT_A, "run1", src)
    assert list_sets("proj", storage) == []


PIPELINE_NAMES = {
    "manifest.json": b"a product called manifest.json",
    "soopervisor.log": b"a product called soopervisor.log",
    "report/manifest.json/inner.txt": b"inside a folder called manifest.json",
    ".soopervisor/x.txt": b"a product in a folder called .soopervisor",
    "back\\slash.csv": b"backslash",
    "new\nline.txt": b"newline",
    "caf\u00e9 \u00fcber%41.txt": b"utf-8 and percent",
    "not-utf8-\udcff\udcfe.bin": b"bytes that are not UTF-8",
    "trailing.": b"trailing dot",
    " spaced ": b"spaces",
}


def test_names_from_the_pipeline_are_data(storage, tmp_path):
    """Issue 11, case 4: any POSIX name round-trips; none collides with our own files."""
    put(storage, tmp_path, COMMIT_A, PIPELINE_NAMES)
    (summary,) = list_sets("proj", storage)
    assert summary.damaged is None and summary.files == len(PIPELINE_NAMES)
    arts = get_artifacts(COMMIT_A, project="proj", storage=storage)
    assert sorted(f.name for f in arts.files) == sorted(PIPELINE_NAMES)
    for name, data in PIPELINE_NAMES.items():
        assert arts.path(name).read_bytes() == data
    out = tmp_path / "download"
    arts.download(out)
    for name, data in PIPELINE_NAMES.items():
        assert out.joinpath(*name.split("/")).read_bytes() == data
    # ours go to the first free hidden folder: a product took .soopervisor
    assert arts.ours_folder == ".soopervisor-1"
    assert json.loads((out / ".soopervisor-1/manifest.json").read_text())["run_id"] == "run1"
    assert (out / ".soopervisor-1/soopervisor.log").read_bytes() == b"==> soopervisor: build pipeline\n"


def test_folders_named_like_our_files_are_products_too(storage, tmp_path):
    files = {"manifest.json/inner.txt": b"in a folder called manifest.json",
             "soopervisor.log/x": b"in a folder called soopervisor.log", "files/y": b"in a folder called files"}
    put(storage, tmp_path, COMMIT_A, files)
    arts = get_artifacts(COMMIT_A, project="proj", storage=storage)
    assert sorted(f.name for f in arts.files) == sorted(files) and arts.ours_folder == ".soopervisor"
    out = tmp_path / "download"
    arts.download(out)
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert json.loads((out / ".soopervisor/manifest.json").read_text())["schema"] == 2


def test_delete_set_removes_one_run_and_nothing_else(storage, tmp_path):
    put(storage, tmp_path, COMMIT_A, FILES, run_id="run1", minute=1)
    put(storage, tmp_path, COMMIT_A, FILES, run_id="run2", minute=2)
    storage.delete_set("proj", COMMIT_A, "run2")
    assert [s.run_id for s in list_sets("proj", storage)] == ["run1"]
    with pytest.raises(ArtifactsNotFound):
        storage.get_file("proj", COMMIT_A, "run2", "files/output/data.csv", tmp_path / "x")
    with pytest.raises(ArtifactsNotFound):
        storage.delete_set("proj", COMMIT_A, "run2")
    out = tmp_path / "download"
    download_set(storage, "proj", COMMIT_A, out)  # the kept set is whole
    assert (out / "output/data.csv").read_bytes() == FILES["output/data.csv"]


def test_old_layout_sets_stay_readable_beside_new_runs(storage, tmp_path):
    old_files = {"output/old.csv": b"old\n", "soopervisor.log": b"old log\n",
                 # a product folder of the old set that looks like a set folder
                 "run9/manifest.json": json.dumps({"schema": 2, "run_id": "other", "files": []}).encode(),
                 "imposter/manifest.json": b"{\"files\": 5}"}
    write_old_set(storage, COMMIT_A, old_files)
    (old,) = list_sets("proj", storage)
    assert (old.run_id, old.status, old.files, old.damaged) == (None, "succeeded", 3, None)
    arts = get_artifacts(COMMIT_A, project="proj", storage=storage)
    assert arts.run_id is None and arts.load("output/old.csv") is not None
    assert arts.log_path().read_bytes() == b"old log\n"
    # a new run of the same commit stores beside it; the old products are untouched
    put(storage, tmp_path, COMMIT_A, {"output/old.csv": b"old\n", "output/new.csv": b"new\n"}, run_id="run1",
        mode="full", minute=5)
    sets = list_sets("proj", storage)
    assert [(s.run_id, s.damaged) for s in sets] == [("run1", None), (None, None)]
    out = tmp_path / "download-old"
    download_set(storage, "proj", COMMIT_A, out, run="old-layout")
    assert (out / "output/old.csv").read_bytes() == b"old\n"
    assert (out / "imposter/manifest.json").read_bytes() == old_files["imposter/manifest.json"]
    assert (out / ".soopervisor/soopervisor.log").read_bytes() == b"old log\n"
    # deleting the old set leaves the run's set whole
    storage.delete_set("proj", COMMIT_A, None)
    assert [s.run_id for s in list_sets("proj", storage)] == ["run1"]
    out = tmp_path / "download-new"
    download_set(storage, "proj", COMMIT_A, out)
    assert (out / "output/new.csv").read_bytes() == b"new\n"


@pytest.mark.parametrize("damage", [b'{"files": 5}', b"{not json", b'["a list"]',
                                    b'{"schema": 2, "run_id": "run2", "files": [{"path": 1}]}',
                                    b'{"schema": 2, "run_id": "run2", "files": [], "status": "succeeded\\nx"}'])
def test_a_damaged_manifest_is_one_line_and_hides_nothing(storage, tmp_path, damage):
    """Issue 11, case 5: a damaged set is listed as such; the other sets stay usable."""
    put(storage, tmp_path, COMMIT_A, FILES, run_id="run1", minute=1)
    put(storage, tmp_path, COMMIT_A, FILES, run_id="run2", minute=2)
    put(storage, tmp_path, COMMIT_B, FILES, run_id="run3", minute=3)
    write_object(storage, f"proj/{COMMIT_A}/run2/manifest.json", damage)
    sets = list_sets("proj", storage)
    damaged = [s for s in sets if s.status == "damaged"]
    assert [s.run_id for s in damaged] == ["run2"] and "\n" not in damaged[0].damaged
    assert {s.run_id for s in sets} == {"run1", "run2", "run3"}
    assert get_artifacts(COMMIT_A, project="proj", storage=storage).run_id == "run1"
    with pytest.raises(IntegrityError):
        get_artifacts(COMMIT_A, project="proj", storage=storage, run="run2")
    assert json.dumps([c.to_dict() for c in list_commits("proj", storage)])  # what REST and --json print


def test_prune_keeps_the_last_sets_and_the_good_one(storage, tmp_path):
    put(storage, tmp_path, COMMIT_A, FILES, run_id="good", minute=1)
    for i in range(2, 5):
        put(storage, tmp_path, COMMIT_A, {"output/x.txt": b"%d" % i}, run_id=f"bad{i}", status="failed", minute=i)
    removed = prune_sets("proj", storage, keep=1)
    assert sorted(s.run_id for s in removed) == ["bad2", "bad3"]
    assert [s.run_id for s in list_sets("proj", storage)] == ["bad4", "good"]
    assert get_artifacts(COMMIT_A, project="proj", storage=storage).run_id == "good"


def test_re_uploading_unchanged_content_sends_nothing(cloud, tmp_path):
    big = {f"output/part-{i}.bin": bytes([i]) * 50_000 for i in range(5)}
    log = b"the same log\n"
    src = make_set(tmp_path, COMMIT_A, big, log=log)
    cloud.put_set("proj", COMMIT_A, "run1", src)
    assert cloud.last_put["uploaded"] == 6 and cloud.last_put["bytes_sent"] == 250_000 + len(log)
    cloud.put_set("proj", COMMIT_A, "run1", src)  # the same run again, same outputs
    assert cloud.last_put["uploaded"] == 0 and cloud.last_put["bytes_sent"] == 0
    assert cloud.last_put["kept"] == 6
    # another run of the same commit: copied on the server, not sent
    cloud.put_set("proj", COMMIT_A, "run2", make_set(tmp_path, COMMIT_A, big, run_id="run2", log=log))
    assert cloud.last_put["uploaded"] == 0 and cloud.last_put["copied"] == 6
    # another commit with the same outputs: copied on the server, not sent
    cloud.put_set("proj", COMMIT_B, "run3", make_set(tmp_path, COMMIT_B, {**big, "output/new.txt": b"only this is new"},
                                                     run_id="run3", log=log))
    assert cloud.last_put["uploaded"] == 1 and cloud.last_put["copied"] == 6
    assert cloud.last_put["bytes_sent"] == len(b"only this is new")
    out = tmp_path / "download"
    files = download_set(cloud, "proj", COMMIT_B, out)
    for path in files:
        if ".soopervisor" not in path.parts:
            rel = path.relative_to(out).as_posix()
            assert path.read_bytes() == {**big, "output/new.txt": b"only this is new"}[rel]
    assert sha256_file(out / "output/part-0.bin") == sha256_file(src / "files/output/part-0.bin")


def test_retry_after_is_honoured_in_seconds_and_as_a_date_up_to_a_cap():
    from email.utils import formatdate

    from soopervisor.storage.remote import MAX_BACKOFF, MAX_RETRY_AFTER, retry_delay

    assert retry_delay("120", 0) == 120.0  # what the service asked, not our own 60 s cap
    assert retry_delay("86400", 0) == MAX_RETRY_AFTER
    assert retry_delay("-5", 0) == 0.0
    now = 1_800_000_000.0
    assert retry_delay(formatdate(now + 90, usegmt=True), 0, now=now) == 90.0
    assert retry_delay(formatdate(now - 90, usegmt=True), 0, now=now) == 0.0
    assert 0.5 <= retry_delay("soon", 1) <= 1.5  # unreadable: our own backoff
    assert retry_delay(None, 20) == MAX_BACKOFF

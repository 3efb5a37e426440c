from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

import soopervisor.artifacts.download as artifacts_download
import soopervisor.artifacts.extract as artifacts_extract
from soopervisor import config
from soopervisor.artifacts import (
    ArtifactFile,
    SetSummary,
    download_set,
    file_entries,
    format_size,
    get_artifacts,
    list_commits,
    list_sets,
    prune_plan,
    resolve_set,
    safe_extract,
    write_manifest,
)
from soopervisor.errors import ArtifactsNotFound, IntegrityError, UnsafePath, UsageError
from soopervisor.storage import LocalStorage

C1 = "abcd1111" + "0" * 32
C2 = "abcd2222" + "0" * 32
C3 = "ffff0000" + "1" * 32


# -- tars in memory ----------------------------------------------------------------


def make_tar(members: list[tuple]) -> bytes:
    """members: (name, "file", data) | (name, "dir") | (name, "sym"/"hard", target) | (name, "chr"/"fifo")"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, *rest in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = rest[0]
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = rest[0]
            tf.addfile(info)
    return buf.getvalue()


def chunks(data: bytes, size: int = 7):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("name", ["../x", "/abs/x", "a/../../x", "./../x"])
def test_safe_extract_skips_escapes_one_by_one(tmp_path: Path, name: str):
    dest = tmp_path / "d" / "dest"
    tar = make_tar([("ok.txt", "file", b"ok"), (name, "file", b"evil"), ("after.txt", "file", b"after")])
    skipped = []
    got = safe_extract(chunks(tar), dest, on_skip=lambda n, why: skipped.append((n, why)))
    assert got == [dest / "ok.txt", dest / "after.txt"]  # extraction went on
    assert [n for n, _ in skipped] == [name]
    assert not (tmp_path / "d" / "x").exists() and not (tmp_path / "x").exists()
    assert not Path("/abs/x").exists()


def test_safe_extract_skips_links_and_devices(tmp_path: Path):
    tar = make_tar(
        [
            ("a.txt", "file", b"A"),
            ("link", "sym", "/etc/passwd"),
            ("rel", "sym", "a.txt"),
            ("hard", "hard", "a.txt"),
            ("dev", "chr"),
            ("pipe", "fifo"),
        ]
    )
    skipped = []
    got = safe_extract(io.BytesIO(tar), tmp_path, on_skip=lambda n, why: skipped.append(n))
    assert got == [tmp_path / "a.txt"]
    assert sorted(skipped) == ["dev", "hard", "link", "pipe", "rel"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_safe_extract_strip_and_stream(tmp_path: Path):
    big = os.urandom(3 * (1 << 20) + 5)
    tar = make_tar(
        [
            ("artifacts", "dir"),
            ("artifacts/a.txt", "file", b"A"),
            ("artifacts/sub", "dir"),
            ("artifacts/sub/big.bin", "file", big),
            ("artifacts/empty", "dir"),
            ("elsewhere.txt", "file", b"no"),
        ]
    )
    skipped = []
    got = safe_extract(
        chunks(tar, 65536),
        tmp_path / "out",
        strip="artifacts",
        on_skip=lambda n, why: skipped.append(n),
    )
    out = tmp_path / "out"
    assert got == [out / "a.txt", out / "sub" / "big.bin"]
    assert (out / "a.txt").read_bytes() == b"A"
    assert (out / "sub" / "big.bin").read_bytes() == big
    assert (out / "empty").is_dir()
    assert skipped == ["elsewhere.txt"]


def test_safe_extract_never_writes_through_a_symlink_in_dest(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    skipped = []
    got = safe_extract(make_tar([("sub/x", "file", b"evil"), ("ok", "file", b"ok")]), dest,
                       on_skip=lambda n, why: skipped.append(n))
    assert got == [dest / "ok"] and skipped == ["sub/x"]
    assert list(outside.iterdir()) == []


def test_safe_extract_keeps_every_legal_posix_name(tmp_path: Path):
    """Issue 11, case 4: a name with a backslash (or a newline, or bytes that are not UTF-8) is data."""
    names = ["output/back\\slash.csv", "output/new\nline.txt", "output/caf\u00e9.txt", "output/x\udcff.bin",
             "manifest.json", "soopervisor.log", "manifest.json.d/inner"]
    tar = make_tar([(n, "file", n.encode("utf-8", "surrogateescape")) for n in names])
    skipped = []
    got = safe_extract(chunks(tar), tmp_path / "out", on_skip=lambda n, why: skipped.append(n))
    assert skipped == []
    assert [p.relative_to(tmp_path / "out").as_posix() for p in got] == names
    for n in names:
        assert (tmp_path / "out").joinpath(*n.split("/")).read_bytes() == n.encode("utf-8", "surrogateescape")
    # the raw bytes reach the file system
    assert b"x\xff.bin" in os.listdir(os.fsencode(tmp_path / "out" / "output"))


def test_safe_extract_renames_every_member_and_reports_renamed_names(tmp_path: Path):
    """The runner masks secrets in names: files are written, and reported, under the masked name only."""
    mask = lambda name: name.replace("hunter2", "***")
    tar = make_tar([
        ("artifacts/output/hunter2.txt", "file", b"a"),
        ("artifacts/output/hunter2", "dir"),
        ("artifacts/output/hunter2/deep.txt", "file", b"b"),
        ("artifacts/link-hunter2", "sym", "/etc/hunter2"),
        ("artifacts/../hunter2", "file", b"escape"),
        ("artifacts/output/***.txt", "file", b"same masked name"),
    ])
    skipped = []
    got = safe_extract(chunks(tar), tmp_path / "out", strip="artifacts", rename=mask,
                       on_skip=lambda n, why: skipped.append((n, why)))
    out = tmp_path / "out"
    assert [p.relative_to(out).as_posix() for p in got] == ["output/***.txt", "output/***/deep.txt"]
    assert (out / "output/***.txt").read_bytes() == b"a"
    assert all("hunter2" not in n and "hunter2" not in why for n, why in skipped)
    assert [n for n, _ in skipped] == ["link-***", "artifacts/../***", "output/***.txt"]
    assert "hunter2" not in "".join(p.name for p in out.rglob("*"))


def test_safe_extract_raises_when_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts_extract, "_write_member", full)
    with pytest.raises(OSError, match="No space"):
        safe_extract(make_tar([("a", "file", b"a")]), tmp_path)


# -- manifests ------------------------------------------------------------------------


def test_file_entries(tmp_path: Path):
    big = os.urandom((1 << 20) * 2 + 3)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "big.bin").write_bytes(big)
    (tmp_path / "a.txt").write_bytes(b"hello")
    (tmp_path / "zlink").symlink_to(tmp_path / "a.txt")
    entries = file_entries(tmp_path)
    assert entries == [
        {"path": "a.txt", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()},
        {"path": "b/big.bin", "size": len(big), "sha256": hashlib.sha256(big).hexdigest()},
    ]


def test_write_manifest(tmp_path: Path):
    (tmp_path / "files" / "output").mkdir(parents=True)
    (tmp_path / "files" / "output" / "out.csv").write_text("x\n1\n")
    (tmp_path / "files" / "manifest.json").write_text("a product called manifest.json")
    (tmp_path / "soopervisor.log").write_text("log\n")
    (tmp_path / "manifest.json").write_text("stale")
    started = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    m = write_manifest(
        tmp_path,
        project="p",
        commit=C1,
        dirty=False,
        mode="sample",
        status="succeeded",
        exit_code=0,
        started_at=started,
        finished_at="2024-05-01T12:01:00+00:00",
        image="python:3.11-slim",
        image_digest="sha256:abc",
        env_hash="e" * 64,
        soopervisor_version="0.1",
        run_id="r1",
        failed_task=None,
        log="ignored: the log entry is computed",
    )
    text = (tmp_path / "manifest.json").read_text()
    assert json.loads(text) == m
    assert text == json.dumps(m, indent=2, sort_keys=True) + "\n"
    assert m["schema"] == 2
    assert m["log"] == {"path": "soopervisor.log", "size": 4, "sha256": hashlib.sha256(b"log\n").hexdigest()}
    assert m["started_at"] == "2024-05-01T12:00:00.000Z"
    assert m["finished_at"] == "2024-05-01T12:01:00.000Z"
    # the products, relative to files/: ours never mix with them
    assert [f["path"] for f in m["files"]] == ["manifest.json", "output/out.csv"]
    assert m["files"][1]["sha256"] == hashlib.sha256(b"x\n1\n").hexdigest()
    for key in (
        "dirty",
        "mode",
        "status",
        "exit_code",
        "image",
        "image_digest",
        "env_hash",
        "soopervisor_version",
        "run_id",
        "failed_task",
    ):
        assert key in m
    assert m["error"] is None
    assert write_manifest(tmp_path, extra="kept")["extra"] == "kept"
    with pytest.raises(TypeError):
        write_manifest(tmp_path, files=[])


def test_write_manifest_without_products_or_log(tmp_path: Path):
    m = write_manifest(tmp_path, project="p", commit=C1, run_id="r1", status="cancelled")
    assert (m["files"], m["log"]) == ([], None)


def test_write_manifest_names_that_are_not_utf8(tmp_path: Path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "x\udcff\nname").write_bytes(b"1")
    m = write_manifest(tmp_path, run_id="r1")
    text = (tmp_path / "manifest.json").read_bytes()
    text.decode("ascii")  # escaped: any JSON reader can read it
    assert [f["path"] for f in json.loads(text)["files"]] == ["x\udcff\nname"] == [f["path"] for f in m["files"]]


# -- a storage holding a few sets ---------------------------------------------------------


def put(
    storage: LocalStorage,
    tmp_path: Path,
    project: str,
    commit: str,
    files: dict[str, bytes],
    finished_at: str,
    run_id: str = "r1",
    **fields,
) -> Path:
    src = tmp_path / "src" / project / commit / run_id
    (src / "files").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (src / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        (src / "files" / name).write_bytes(data)
    (src / "soopervisor.log").write_text(f"log of {run_id}\n")
    fields.setdefault("status", "succeeded")
    fields.setdefault("mode", "sample")
    write_manifest(src, project=project, commit=commit, finished_at=finished_at, run_id=run_id, **fields)
    storage.put_set(project, commit, run_id, src)
    return src


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    s = LocalStorage(tmp_path / "store")
    put(s, tmp_path, "p", C1, {"a.txt": b"one", "sub/b.bin": b"\x00" * 10}, "2024-05-01T10:00:00Z")
    # the newest set is neither first nor last by SHA
    put(s, tmp_path, "p", C2, {"a.txt": b"two"}, "2024-05-03T10:00:00Z", run_id="r2")
    put(s, tmp_path, "p", C3, {"a.txt": b"three"}, "2024-05-02T10:00:00Z", run_id="r3")
    return s


def test_list_sets_newest_first(store: LocalStorage):
    assert [s.commit for s in list_sets("p", store)] == [C2, C3, C1]
    assert [s.commit for s in list_sets("p", store.url)] == [C2, C3, C1]
    first = list_sets("p", store)[0]
    assert first == SetSummary(project="p", commit=C2, run_id="r2", mode="sample", status="succeeded", dirty=False,
                               started_at=None, finished_at="2024-05-03T10:00:00.000Z", files=1, size=3)
    assert first.to_dict()["short_commit"] == C2[:7] and first.to_dict()["damaged"] is None


def test_resolve_set(store: LocalStorage):
    assert resolve_set(store, "p", C1).commit == C1
    assert resolve_set(store, "p", C1.upper()).commit == C1
    assert resolve_set(store, "p", "ffff").commit == C3
    assert resolve_set(store, "p", "abcd1").commit == C1
    assert resolve_set(store, "p", "latest").commit == C2
    assert resolve_set(store, "p", "latest", run="r1").commit == C1
    with pytest.raises(UsageError):
        resolve_set(store, "p", C1, mode="quick")


def test_resolve_unknown(store: LocalStorage):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_set(store, "p", "1234567")
    assert e.value.message == "no artifacts for commit '1234567' in project 'p'"
    assert "soopervisor artifacts list" in e.value.hint
    with pytest.raises(ArtifactsNotFound):
        resolve_set(store, "p", "abc")  # too short to be a prefix
    with pytest.raises(ArtifactsNotFound, match="no set of run 'r9'"):
        resolve_set(store, "p", C1, run="r9")
    with pytest.raises(ArtifactsNotFound, match="no set of run 'r2' of commit"):
        resolve_set(store, "p", C1, run="r2")  # that run stored another commit


def test_resolve_ambiguous(store: LocalStorage):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_set(store, "p", "abcd")
    assert C1[:12] in e.value.message and C2[:12] in e.value.message
    assert "2024-05-01" in e.value.message and "2024-05-03" in e.value.message


def test_resolve_unknown_project(store: LocalStorage, tmp_path: Path):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_set(store, "nope", "latest")
    assert "'nope'" in e.value.message and "p" in e.value.hint
    with pytest.raises(ArtifactsNotFound):
        resolve_set(LocalStorage(tmp_path / "empty"), "nope", "latest")


def test_the_resolution_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A commit: its newest succeeded set, full before sample unless a mode is asked; latest: the commit of the
    newest succeeded set; run=: that set, whatever its status."""
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    s = LocalStorage(tmp_path / "store")
    put(s, tmp_path, "p", C1, {"a": b"full"}, "2024-05-01T10:00:00Z", run_id="full1", mode="full")
    put(s, tmp_path, "p", C1, {"a": b"sample"}, "2024-05-02T10:00:00Z", run_id="sample1", mode="sample")
    put(s, tmp_path, "p", C1, {"a": b"f"}, "2024-05-03T10:00:00Z", run_id="failed1", mode="full", status="failed")
    put(s, tmp_path, "p", C2, {"a": b"x"}, "2024-05-04T10:00:00Z", run_id="cancel2", status="cancelled")
    assert resolve_set(s, "p", C1).run_id == "full1"
    assert resolve_set(s, "p", C1, mode="sample").run_id == "sample1"
    assert resolve_set(s, "p", "latest").run_id == "full1"  # C2 has no succeeded set
    assert resolve_set(s, "p", "latest", mode="sample").run_id == "sample1"
    assert resolve_set(s, "p", C1, run="failed1").status == "failed"
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_set(s, "p", C2)
    assert "run cancel2 cancelled" in e.value.message and "--run cancel2" in e.value.hint
    assert "run='cancel2'" in e.value.hint
    commits = list_commits("p", s)
    assert [(c.commit, c.shown.run_id, c.resolved, len(c.sets)) for c in commits] == [
        (C2, "cancel2", False, 1), (C1, "full1", True, 3)]
    assert commits[1].to_dict()["sets"][0]["run_id"] == "failed1"


def test_prune_plan_never_takes_a_commits_good_set():
    def summary(commit, run, status, mode="full", day=1):
        return SetSummary("p", commit, run, mode, status, False, None, f"2024-05-{day:02d}T00:00:00Z", 1, 1)

    sets = [summary(C1, "f4", "failed", day=4), summary(C1, "s3", "succeeded", "sample", day=3),
            summary(C1, "f2", "failed", day=2), summary(C1, "ok1", "succeeded", day=1),
            summary(C2, "c1", "cancelled", day=1)]
    assert [s.run_id for s in prune_plan(sets, keep=1)] == ["f2"]
    assert [s.run_id for s in prune_plan(sets, keep=0)] == ["f4", "f2", "c1"]
    assert prune_plan(sets, keep=5) == []
    with pytest.raises(UsageError):
        prune_plan(sets, keep=-1)


# -- downloads ---------------------------------------------------------------------------


def test_download_set(store: LocalStorage, tmp_path: Path):
    to = tmp_path / "to"
    got = download_set(store, "p", C1, to)
    assert [p.relative_to(to).as_posix() for p in got] == [
        "a.txt", "sub/b.bin", ".soopervisor/soopervisor.log", ".soopervisor/manifest.json"]
    assert (to / "a.txt").read_bytes() == b"one"
    assert (to / "sub" / "b.bin").read_bytes() == b"\x00" * 10
    assert json.loads((to / ".soopervisor" / "manifest.json").read_text())["commit"] == C1
    assert (to / ".soopervisor" / "soopervisor.log").read_text() == "log of r1\n"
    assert sorted(p.name for p in to.iterdir()) == [".soopervisor", "a.txt", "sub"]  # no staging left


@pytest.mark.parametrize("corrupt", [b"onE", b"longer"])  # same size, other size
def test_download_set_verifies(store: LocalStorage, tmp_path: Path, corrupt: bytes):
    (store.root / "p" / C1 / "r1" / "files" / "a.txt").write_bytes(corrupt)
    to = tmp_path / "to"
    with pytest.raises(IntegrityError) as e:
        download_set(store, "p", C1, to)
    assert "a.txt" in e.value.message
    assert not to.exists()  # all or nothing: the folder it made is gone too


def test_download_into_a_folder_holding_another_set_is_refused(store: LocalStorage, tmp_path: Path):
    """Issue 11, case 7: a download never mixes two sets in one folder."""
    to = tmp_path / "to"
    download_set(store, "p", C1, to)
    before = sorted(p.relative_to(to).as_posix() for p in to.rglob("*"))
    with pytest.raises(UsageError) as e:
        download_set(store, "p", C2, to)
    assert e.value.exit_code == 2 and "not empty" in e.value.message and "empty folder" in e.value.hint
    assert sorted(p.relative_to(to).as_posix() for p in to.rglob("*")) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("user's own file")
    with pytest.raises(UsageError):
        download_set(store, "p", C1, other)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_download_again_into_the_same_set_refreshes_it(store: LocalStorage, tmp_path: Path):
    to = tmp_path / "to"
    download_set(store, "p", C1, to)
    (to / "a.txt").write_bytes(b"edited")
    (to / "sub" / "b.bin").unlink()
    download_set(store, "p", C1, to)
    assert (to / "a.txt").read_bytes() == b"one" and (to / "sub" / "b.bin").read_bytes() == b"\x00" * 10


def test_download_makes_missing_parent_folders(store: LocalStorage, tmp_path: Path):
    to = tmp_path / "a" / "b" / "c"
    download_set(store, "p", C1, to)
    assert (to / "a.txt").read_bytes() == b"one"


def test_download_into_a_file_or_an_unwritable_place_is_a_plain_error(store: LocalStorage, tmp_path: Path):
    (tmp_path / "file").write_text("x")
    for to in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(UsageError) as e:
            download_set(store, "p", C1, to)
        assert e.value.exit_code == 2


@pytest.mark.parametrize("err", [28, 122, 30, 13])  # ENOSPC, EDQUOT, EROFS, EACCES
def test_a_full_disk_during_a_download_leaves_nothing(store: LocalStorage, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, err: int):
    """Issue 11, case 7: a full disk is a plain reason, and nothing half-written stays."""
    real = store.get_file
    calls = {"n": 0}

    def filling(project, commit, run_id, name, dest):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(err, os.strerror(err))
        real(project, commit, run_id, name, dest)

    monkeypatch.setattr(store, "get_file", filling)
    monkeypatch.setattr(artifacts_download, "DOWNLOAD_WORKERS", 1)
    to = tmp_path / "parent" / "to"
    with pytest.raises(UsageError) as e:
        download_set(store, "p", C1, to)
    assert os.strerror(err) in e.value.message and "nothing was kept" in e.value.message
    assert "internal" not in e.value.message and e.value.hint
    assert not (tmp_path / "parent").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    calls["n"] = 0
    with pytest.raises(UsageError):
        download_set(store, "p", C1, existing)
    assert list(existing.iterdir()) == []  # the folder it did not make stays, empty


def test_a_failure_while_moving_files_into_place_takes_them_back(store: LocalStorage, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    real = artifacts_download._place

    def place(to, rel, tmp, placed):
        if rel.endswith("manifest.json"):  # the products are in place by now
            assert (to / "a.txt").exists()
            raise OSError(28, "No space left on device")
        return real(to, rel, tmp, placed)

    monkeypatch.setattr(artifacts_download, "_place", place)
    to = tmp_path / "existing"
    to.mkdir()
    with pytest.raises(UsageError, match="No space left"):
        download_set(store, "p", C1, to)
    assert list(to.iterdir()) == []


def test_download_set_refuses_escaping_names(store: LocalStorage, tmp_path: Path):
    # a manifest that names a file outside the set is a damaged set: never downloaded
    manifest = store.root / "p" / C1 / "r1" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["files"][0]["path"] = "../evil"
    manifest.write_text(json.dumps(m))
    (summary,) = [s for s in list_sets("p", store) if s.commit == C1]
    assert summary.status == "damaged" and "outside the set" in summary.damaged
    to = tmp_path / "d" / "to"
    with pytest.raises(IntegrityError):
        download_set(store, "p", C1, to, run="r1")
    assert not (tmp_path / "d").exists()


def test_download_set_refuses_symlink_in_to(store: LocalStorage, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"mine")
    to = tmp_path / "to"
    download_set(store, "p", C1, to)
    (to / "a.txt").unlink()
    shutil.rmtree(to / "sub")
    (to / "sub").symlink_to(outside)
    with pytest.raises(UnsafePath):
        download_set(store, "p", C1, to)
    (to / "sub").unlink()
    (to / "a.txt").symlink_to(outside / "a.txt")
    with pytest.raises(UnsafePath):
        download_set(store, "p", C1, to)
    assert sorted(p.name for p in outside.iterdir()) == ["a.txt"]
    assert (outside / "a.txt").read_bytes() == b"mine"


# -- Artifacts ------------------------------------------------------------------------------


def test_get_artifacts(store: LocalStorage):
    arts = get_artifacts(project="p", storage=store.url)
    assert arts.commit == C2
    arts = get_artifacts("ffff", project="p", storage=store.url)
    assert (arts.project, arts.commit, arts.run_id, arts.manifest["status"]) == ("p", C3, "r3", "succeeded")
    assert arts.files == [ArtifactFile("a.txt", 5, hashlib.sha256(b"three").hexdigest())]
    assert repr(arts) == "<Artifacts project='p' commit='ffff000' run='r3' 1 file status='succeeded'>"
    assert arts.log_path().read_text() == "log of r3\n"


def test_artifacts_path_caches_by_run_and_redownloads(store: LocalStorage, monkeypatch: pytest.MonkeyPatch):
    arts = get_artifacts(C1, project="p", storage=store.url)
    calls = []
    real = store.get_file
    monkeypatch.setattr(arts.storage, "get_file", lambda *a: (calls.append(a[3]), real(*a)))

    p = arts.path("sub/b.bin")
    assert p == config.cache_dir() / "p" / C1 / "r1" / "files" / "sub" / "b.bin"
    assert p.read_bytes() == b"\x00" * 10
    assert arts.path("sub/b.bin") == p
    assert calls == ["files/sub/b.bin"]  # reused

    p.write_bytes(b"\x01" * 10)  # tampered, same size
    assert arts.path("sub/b.bin").read_bytes() == b"\x00" * 10
    assert calls == ["files/sub/b.bin", "files/sub/b.bin"]

    with pytest.raises(ArtifactsNotFound):
        arts.path("nope.txt")
    with pytest.raises(UnsafePath):
        arts.path("../x")


def test_artifacts_download(store: LocalStorage, tmp_path: Path):
    arts = get_artifacts(C1, project="p", storage=store.url)
    out = arts.download(tmp_path / "dl")
    assert out == (tmp_path / "dl").resolve()
    assert (out / "a.txt").read_bytes() == b"one"


def test_repr_html_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    s = LocalStorage(tmp_path / "store")
    put(
        s,
        tmp_path,
        "p",
        C1,
        {"<script>alert(1)<": b"x", "ok.txt": b"y" * 1_234_567, "bad\udcffname": b"z"},
        "2024-05-01T10:00:00Z",
        status="failed",
        error="<b>boom</b>",
        failed_task="<i>clean</i>",
    )
    page = get_artifacts(C1, project="p", storage=s.url, run="r1")._repr_html_()
    assert "<script>" not in page and "<b>boom" not in page and "<i>clean" not in page
    assert "&lt;script&gt;alert(1)&lt;" in page and "&lt;b&gt;boom&lt;/b&gt;" in page
    assert "1.2 MB" in page and C1[:7] in page and "failed" in page
    page.encode("utf-8")  # a name that is not UTF-8 is shown, never breaks the notebook
    assert "bad\ufffdname" in page and "%FF" in page


def test_format_size():
    assert format_size(0) == "0 B"
    assert format_size(999) == "999 B"
    assert format_size(1_234_567) == "1.2 MB"
    assert format_size(1000) == "1.0 kB"
    assert format_size(5 * 10**12) == "5.0 TB"

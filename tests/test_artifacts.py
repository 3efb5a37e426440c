from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from soopervisor import artifacts
from soopervisor.artifacts import (
    ArtifactFile,
    download_set,
    file_entries,
    format_size,
    get_artifacts,
    list_sets,
    resolve_commit,
    safe_extract,
    write_manifest,
)
from soopervisor.errors import ArtifactsNotFound, IntegrityError, UnsafePath
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
def test_safe_extract_refuses_escapes(tmp_path: Path, name: str):
    dest = tmp_path / "d" / "dest"
    tar = make_tar([("ok.txt", "file", b"ok"), (name, "file", b"evil")])
    with pytest.raises(UnsafePath):
        safe_extract(chunks(tar), dest)
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
    with pytest.raises(UnsafePath):
        safe_extract(make_tar([("sub/x", "file", b"evil")]), dest)
    assert list(outside.iterdir()) == []


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
    (tmp_path / "out.csv").write_text("x\n1\n")
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
    )
    text = (tmp_path / "manifest.json").read_text()
    assert json.loads(text) == m
    assert text == json.dumps(m, indent=2, sort_keys=True) + "\n"
    assert m["schema"] == 1
    assert m["log"] == "soopervisor.log"
    assert m["started_at"] == "2024-05-01T12:00:00.000Z"
    assert m["finished_at"] == "2024-05-01T12:01:00.000Z"
    assert [f["path"] for f in m["files"]] == ["out.csv", "soopervisor.log"]
    assert m["files"][0]["sha256"] == hashlib.sha256(b"x\n1\n").hexdigest()
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


# -- a storage holding a few sets ---------------------------------------------------------


def put(
    storage: LocalStorage,
    tmp_path: Path,
    project: str,
    commit: str,
    files: dict[str, bytes],
    finished_at: str,
    **fields,
) -> None:
    src = tmp_path / "src" / project / commit
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    src.mkdir(parents=True, exist_ok=True)
    fields.setdefault("status", "succeeded")
    fields.setdefault("mode", "sample")
    write_manifest(src, project=project, commit=commit, finished_at=finished_at, **fields)
    storage.put_set(project, commit, src)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalStorage:
    monkeypatch.setenv("SOOPERVISOR_HOME", str(tmp_path / "home"))
    s = LocalStorage(tmp_path / "store")
    put(s, tmp_path, "p", C1, {"a.txt": b"one", "sub/b.bin": b"\x00" * 10}, "2024-05-01T10:00:00Z")
    # the newest set is neither first nor last by SHA
    put(s, tmp_path, "p", C2, {"a.txt": b"two"}, "2024-05-03T10:00:00Z")
    put(s, tmp_path, "p", C3, {"a.txt": b"three"}, "2024-05-02T10:00:00Z")
    return s


def test_list_sets_newest_first(store: LocalStorage):
    assert [m["commit"] for m in list_sets("p", store)] == [C2, C3, C1]
    assert [m["commit"] for m in list_sets("p", store.url)] == [C2, C3, C1]


def test_resolve_commit(store: LocalStorage):
    assert resolve_commit(store, "p", C1) == C1
    assert resolve_commit(store, "p", C1.upper()) == C1
    assert resolve_commit(store, "p", "ffff") == C3
    assert resolve_commit(store, "p", "abcd1") == C1
    assert resolve_commit(store, "p", "latest") == C2


def test_resolve_commit_unknown(store: LocalStorage):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_commit(store, "p", "1234567")
    assert e.value.message == "no artifacts for commit '1234567' in project 'p'"
    assert "soopervisor artifacts list" in e.value.hint
    with pytest.raises(ArtifactsNotFound):
        resolve_commit(store, "p", "abc")  # too short to be a prefix


def test_resolve_commit_ambiguous(store: LocalStorage):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_commit(store, "p", "abcd")
    assert C1[:12] in e.value.message and C2[:12] in e.value.message
    assert "2024-05-01" in e.value.message and "2024-05-03" in e.value.message


def test_resolve_commit_unknown_project(store: LocalStorage, tmp_path: Path):
    with pytest.raises(ArtifactsNotFound) as e:
        resolve_commit(store, "nope", "latest")
    assert "'nope'" in e.value.message and "p" in e.value.hint
    with pytest.raises(ArtifactsNotFound):
        resolve_commit(LocalStorage(tmp_path / "empty"), "nope", "latest")


# -- downloads ---------------------------------------------------------------------------


def test_download_set(store: LocalStorage, tmp_path: Path):
    to = tmp_path / "to"
    got = download_set(store, "p", C1, to)
    assert [p.relative_to(to).as_posix() for p in got] == ["a.txt", "sub/b.bin", "manifest.json"]
    assert (to / "a.txt").read_bytes() == b"one"
    assert (to / "sub" / "b.bin").read_bytes() == b"\x00" * 10
    assert json.loads((to / "manifest.json").read_text())["commit"] == C1
    assert not [p for p in to.rglob("*") if p.name.endswith(".part")]


@pytest.mark.parametrize("corrupt", [b"onE", b"longer"])  # same size, other size
def test_download_set_verifies(store: LocalStorage, tmp_path: Path, corrupt: bytes):
    (store.root / "p" / C1 / "a.txt").write_bytes(corrupt)
    to = tmp_path / "to"
    with pytest.raises(IntegrityError) as e:
        download_set(store, "p", C1, to)
    assert "a.txt" in e.value.message
    assert not (to / "a.txt").exists()
    assert not (to / "manifest.json").exists()
    assert not [p for p in to.rglob("*") if p.is_file()]


def test_download_set_refuses_escaping_names(store: LocalStorage, tmp_path: Path):
    src = tmp_path / "evilsrc"
    src.mkdir()
    (src / "x").write_bytes(b"evil")
    manifest = {
        "schema": 1,
        "project": "p",
        "commit": C1,
        "files": [{"path": "../evil", "size": 4, "sha256": hashlib.sha256(b"evil").hexdigest()}],
    }
    (src / "manifest.json").write_text(json.dumps(manifest))
    store.put_set("p", C1, src)
    to = tmp_path / "d" / "to"
    with pytest.raises(UnsafePath):
        download_set(store, "p", C1, to)
    assert not (tmp_path / "d" / "evil").exists()


def test_download_set_refuses_symlink_in_to(store: LocalStorage, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(b"mine")
    to = tmp_path / "to"
    to.mkdir()
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
    assert (arts.project, arts.commit, arts.manifest["status"]) == ("p", C3, "succeeded")
    assert arts.files == [ArtifactFile("a.txt", 5, hashlib.sha256(b"three").hexdigest())]
    assert repr(arts) == "<Artifacts project='p' commit='ffff000' 1 file status='succeeded'>"


def test_artifacts_path_caches_and_redownloads(store: LocalStorage, monkeypatch: pytest.MonkeyPatch):
    arts = get_artifacts(C1, project="p", storage=store.url)
    calls = []
    real = store.get_file
    monkeypatch.setattr(arts.storage, "get_file", lambda *a: (calls.append(a[2]), real(*a)))

    p = arts.path("sub/b.bin")
    assert p == artifacts.config.cache_dir() / "p" / C1 / "sub" / "b.bin"
    assert p.read_bytes() == b"\x00" * 10
    assert arts.path("sub/b.bin") == p
    assert calls == ["sub/b.bin"]  # reused

    p.write_bytes(b"\x01" * 10)  # tampered, same size
    assert arts.path("sub/b.bin").read_bytes() == b"\x00" * 10
    assert calls == ["sub/b.bin", "sub/b.bin"]

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
        {"<script>alert(1)<": b"x", "ok.txt": b"y" * 1_234_567},
        "2024-05-01T10:00:00Z",
        mode="<b>full</b>",
    )
    page = get_artifacts(C1, project="p", storage=s.url)._repr_html_()
    assert "<script>" not in page and "<b>full" not in page
    assert "&lt;script&gt;alert(1)&lt;" in page
    assert "1.2 MB" in page and C1[:7] in page and "succeeded" in page


def test_format_size():
    assert format_size(0) == "0 B"
    assert format_size(999) == "999 B"
    assert format_size(1_234_567) == "1.2 MB"
    assert format_size(1000) == "1.0 kB"
    assert format_size(5 * 10**12) == "5.0 TB"

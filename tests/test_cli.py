"""The real console command (``python -m soopervisor``) without Docker.

Stored artifacts are made by hand (files + ``write_manifest`` + ``put_set``)
and runs are written to the run store directly, so nothing here needs an engine.
Every test checks the exit code, what the user reads, and that no traceback
reaches them.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from soopervisor import __version__, artifacts, storage
from soopervisor.runs import Run, RunStore

from .conftest import cli
from .projects import MAKE_DATA, make_project

C1 = "abcd1111" + "0" * 32
C2 = "abcd2222" + "0" * 32
C3 = "ffff0000" + "1" * 32

FILES = {
    "output/data.csv": b"x\n0\n1\n2\n",
    "output/make_data.ipynb": b'{"cells": []}\n',
    "soopervisor.log": b"==> soopervisor: build pipeline\ndone\n",
}


@pytest.fixture(autouse=True)
def _no_outer_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git must not find a repository above tmp_path (e.g. when /tmp is in one)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


# -- helpers -----------------------------------------------------------------------


def no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    assert "internal error" not in proc.stderr, proc.stderr


def run_cli(*args: str, check: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = cli(*args, cwd=cwd, check=check, timeout=120)
    no_traceback(proc)
    return proc


def put(
    home: Path,
    tmp_path: Path,
    commit: str,
    *,
    project: str = "proj",
    files: dict[str, bytes] | None = None,
    started_at: str = "2024-05-01T10:00:00Z",
    finished_at: str = "2024-05-01T10:01:00Z",
    mode: str = "sample",
    status: str = "succeeded",
    dirty: bool = False,
) -> Path:
    """Store a set for ``project@commit`` in the default storage; return the stored folder."""
    src = tmp_path / "sets" / project / commit
    for rel, data in (FILES if files is None else files).items():
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    src.mkdir(parents=True, exist_ok=True)
    artifacts.write_manifest(
        src,
        project=project,
        commit=commit,
        dirty=dirty,
        mode=mode,
        status=status,
        exit_code=0 if status == "succeeded" else 1,
        started_at=started_at,
        finished_at=finished_at,
        image="python:3.11-slim",
        soopervisor_version=__version__,
        run_id="r" + commit[:11],
    )
    storage.open_storage(str(home / "artifacts")).put_set(project, commit, src)
    return home / "artifacts" / project / commit


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


# -- validate ----------------------------------------------------------------------


def test_validate_valid_project(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("validate", str(path), check=0)
    assert "project 'proj' is valid" in proc.stdout


def test_validate_defaults_to_the_current_folder(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("validate", check=0, cwd=path)
    assert "'proj'" in proc.stdout


def test_validate_json_valid(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("validate", str(path), "--json", check=0)
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["project"]["name"] == "proj"
    assert report["problems"] == []


def test_validate_invalid_project_reports_every_problem(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"env.yaml": "sample: false\n", "tasks/make_data.py": MAKE_DATA})
    proc = run_cli("validate", str(path), check=2)
    out = proc.stdout
    assert "there is no pipeline.yaml" in out
    assert "there is no environment spec" in out
    assert "hint:" in out

    proc = run_cli("validate", str(path), "--json", check=2)
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    codes = [p["code"] for p in report["problems"]]
    assert "no-pipeline" in codes and "no-env-spec" in codes
    for p in report["problems"]:
        assert p["what"] and p["where"] and p["hint"]


def test_validate_not_a_git_repository(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text("tasks:\n  - source: tasks/make_data.py\n    product: output/x.ipynb\n")
    (folder / "requirements.txt").write_text("\n")
    proc = run_cli("validate", str(folder), check=2)
    assert "not inside a git repository" in proc.stdout
    assert "git init" in proc.stdout


def test_validate_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = run_cli("validate", str(missing), check=2)
    assert "does not exist" in proc.stdout
    assert str(missing) in proc.stdout


# -- script ------------------------------------------------------------------------


def test_script_sample_by_default(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("script", str(path), check=0)
    assert proc.stdout.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in proc.stdout
    assert "--env--sample true" in proc.stdout
    assert "--env--sample false" not in proc.stdout
    assert run_cli("script", str(path), "--sample", check=0).stdout == proc.stdout


def test_script_full(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("script", str(path), "--full", check=0)
    assert proc.stdout.startswith("#!/usr/bin/env bash")
    assert "--env--sample false" in proc.stdout
    assert "--env--sample true" not in proc.stdout


def test_script_invalid_project(tmp_path: Path) -> None:
    path = make_project(tmp_path, {"env.yaml": "sample: false\n"})
    proc = run_cli("script", str(path), check=2)
    assert proc.stdout == ""
    assert "there is no pipeline.yaml" in proc.stderr
    assert "there is no environment spec" in proc.stderr


# -- artifacts list ----------------------------------------------------------------


def test_artifacts_list_in_the_project_folder(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1, finished_at="2024-05-01T10:01:00Z", mode="sample", status="succeeded")
    put(home, tmp_path, C3, finished_at="2024-05-02T10:01:00Z", mode="full", status="failed", dirty=True,
        files={"soopervisor.log": b"boom\n"})
    proc = run_cli("artifacts", "list", check=0, cwd=path)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["COMMIT", "MODE", "STATUS"]
    assert len(lines) == 3, proc.stdout
    # newest first; a dirty set is marked with "+"
    newest, oldest = lines[1], lines[2]
    assert newest.startswith(C3[:7] + "+")
    assert newest.split()[1:3] == ["full", "failed"]
    assert "2024-05-02 10:01:00" in newest
    assert newest.split()[-3:] == ["1", "5", "B"]  # 1 file, 5 B
    assert oldest.startswith(C1[:7] + " ")
    assert oldest.split()[1:3] == ["sample", "succeeded"]
    size = sum(len(v) for v in FILES.values())
    assert oldest.split()[-3:] == [str(len(FILES)), str(size), "B"]


def test_artifacts_list_json(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1, finished_at="2024-05-01T10:01:00Z")
    put(home, tmp_path, C2, finished_at="2024-05-03T10:01:00Z", mode="full")
    proc = run_cli("artifacts", "list", "--json", check=0, cwd=path)
    sets = json.loads(proc.stdout)
    assert [m["commit"] for m in sets] == [C2, C1]
    assert sets[0]["mode"] == "full" and sets[0]["project"] == "proj"
    assert sorted(f["path"] for f in sets[1]["files"]) == sorted(FILES)
    assert all(len(f["sha256"]) == 64 for f in sets[1]["files"])


def test_artifacts_list_project_option_from_anywhere(tmp_path: Path, home: Path) -> None:
    put(home, tmp_path, C1, project="other")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("artifacts", "list", "--project", "other", check=0, cwd=elsewhere)
    assert len(proc.stdout.splitlines()) == 2
    assert proc.stdout.splitlines()[1].startswith(C1[:7])


def test_artifacts_list_outside_a_repository_needs_project(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    proc = run_cli("artifacts", "list", check=2, cwd=outside)
    assert "not in a git repository" in proc.stderr
    assert "--project" in proc.stderr


def test_artifacts_download_outside_a_repository_needs_project(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    proc = run_cli("artifacts", "download", "latest", check=2, cwd=outside)
    assert "--project" in proc.stderr


def test_artifacts_list_empty_storage(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli("artifacts", "list", check=0, cwd=path)
    assert "no artifacts stored for project 'proj' yet" in proc.stdout
    proc = run_cli("artifacts", "list", "--json", check=0, cwd=path)
    assert json.loads(proc.stdout) == []


def test_artifacts_list_storage_below_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "store"
    proc = run_cli("artifacts", "list", "--project", "proj", "--storage", str(bad), check=3)
    assert proc.stdout == ""
    assert "error: cannot use" in proc.stderr
    assert str(bad) in proc.stderr
    assert "hint:" in proc.stderr and "--storage" in proc.stderr


def test_artifacts_list_storage_is_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_cli("artifacts", "list", "--project", "proj", "--storage", str(blocker), check=3)
    assert "is not a folder" in proc.stderr
    assert "hint:" in proc.stderr


def test_artifacts_list_explicit_storage_and_file_url(tmp_path: Path, home: Path) -> None:
    put(home, tmp_path, C1)
    for url in (str(home / "artifacts"), (home / "artifacts").resolve().as_uri()):
        proc = run_cli("artifacts", "list", "--project", "proj", "--storage", url, check=0, cwd=tmp_path)
        assert proc.stdout.splitlines()[1].startswith(C1[:7]), url


# -- artifacts download ------------------------------------------------------------


@pytest.mark.parametrize("ref", [C1, C1[:10], C1[:4].upper() + C1[4:8]])
def test_artifacts_download_by_sha_or_prefix(tmp_path: Path, home: Path, ref: str) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    put(home, tmp_path, C3, files={"soopervisor.log": b"other\n"})
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", ref, "--to", str(to), check=0, cwd=path)
    assert f"downloaded {len(FILES)} files of proj @ {C1[:7]}" in proc.stdout
    assert "sha256 verified" in proc.stdout
    got = files_under(to)
    manifest = json.loads(got.pop("manifest.json"))
    assert got == FILES
    assert manifest["commit"] == C1


def test_artifacts_download_latest_is_newest_finished(tmp_path: Path, home: Path) -> None:
    # C1 started last but C3 finished last: latest goes by finished_at
    put(home, tmp_path, C1, started_at="2024-05-01T12:00:00Z", finished_at="2024-05-01T12:01:00Z",
        files={"output/a.txt": b"from C1\n"})
    put(home, tmp_path, C3, started_at="2024-05-01T09:00:00Z", finished_at="2024-05-01T13:00:00Z",
        files={"output/a.txt": b"from C3\n", "output/sub/b.bin": bytes(range(256))})
    to = tmp_path / "latest"
    proc = run_cli("artifacts", "download", "latest", "--project", "proj", "--to", str(to), check=0,
                   cwd=tmp_path)
    assert C3[:7] in proc.stdout
    assert (to / "output" / "a.txt").read_bytes() == b"from C3\n"
    assert (to / "output" / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert json.loads((to / "manifest.json").read_text())["commit"] == C3


def test_artifacts_download_default_target(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    run_cli("artifacts", "download", "latest", check=0, cwd=path)
    target = path / f"artifacts-{C1[:7]}"
    assert (target / "output" / "data.csv").read_bytes() == FILES["output/data.csv"]


def test_artifacts_download_unknown_commit(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", "deadbeef", "--to", str(to), check=2, cwd=path)
    assert "no artifacts for commit 'deadbeef' in project 'proj'" in proc.stderr
    assert "hint:" in proc.stderr
    assert not to.exists() or not any(to.iterdir())


def test_artifacts_download_unknown_project(tmp_path: Path, home: Path) -> None:
    put(home, tmp_path, C1)
    proc = run_cli("artifacts", "download", "latest", "--project", "ghost", "--to", str(tmp_path / "o"),
                   check=2, cwd=tmp_path)
    assert "no artifacts for project 'ghost'" in proc.stderr
    assert "proj" in proc.stderr  # the hint names the projects that have artifacts


def test_artifacts_download_ambiguous_prefix(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    put(home, tmp_path, C2)
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", "abcd", "--to", str(to), check=2, cwd=path)
    assert "ambiguous" in proc.stderr
    assert C1[:12] in proc.stderr and C2[:12] in proc.stderr
    assert not to.exists() or not any(to.iterdir())
    # one more character makes it unique
    run_cli("artifacts", "download", "abcd2", "--to", str(to), check=0, cwd=path)
    assert json.loads((to / "manifest.json").read_text())["commit"] == C2


@pytest.mark.parametrize("same_size", [True, False])
def test_artifacts_download_corrupted_file(tmp_path: Path, home: Path, same_size: bool) -> None:
    path = make_project(tmp_path)
    stored = put(home, tmp_path, C1)
    victim = stored / "output" / "data.csv"
    data = victim.read_bytes()
    victim.write_bytes(data[:-2] + b"9\n" if same_size else data + b"extra\n")
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", C1, "--to", str(to), check=3, cwd=path)
    assert "output/data.csv" in proc.stderr
    assert ("sha256 does not match" if same_size else "does not match the manifest") in proc.stderr
    assert "hint:" in proc.stderr
    assert not (to / "output" / "data.csv").exists()
    assert not (to / "manifest.json").exists()  # an incomplete download is never marked complete
    leftovers = [p.name for p in to.rglob("*") if p.name.endswith(".part")]
    assert leftovers == []


def test_artifacts_download_refuses_escaping_names(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    stored = put(home, tmp_path, C1)
    evil = b"owned\n"
    # a file the name really points at, so only the check stands between it and the disk
    (stored.parent / "evil").write_bytes(evil)
    manifest = json.loads((stored / "manifest.json").read_text())
    manifest["files"].append(
        {"path": "../evil", "size": len(evil), "sha256": hashlib.sha256(evil).hexdigest()}
    )
    (stored / "manifest.json").write_text(json.dumps(manifest))
    work = tmp_path / "work"
    to = work / "out"
    proc = run_cli("artifacts", "download", C1, "--to", str(to), check=2, cwd=path)
    assert "unsafe file name '../evil'" in proc.stderr
    assert not (work / "evil").exists()
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in work.rglob("*") if p.is_file()) == []


# -- runs --------------------------------------------------------------------------


def _run(project: str, commit: str, started: str, finished: str | None, status: str, mode: str = "sample") -> Run:
    return Run(
        project=project, project_path=f"/src/{project}", commit=commit, dirty=False, mode=mode,
        status=status, started_at=started, finished_at=finished,
        exit_code={"succeeded": 0, "failed": 1}.get(status),
    )


def test_runs_newest_first(home: Path) -> None:
    store = RunStore()
    old = store.add(_run("proj", C1, "2024-05-01T10:00:00.000Z", "2024-05-01T10:01:30.000Z", "succeeded"))
    new = store.add(_run("other", C3, "2024-05-02T08:00:00.000Z", "2024-05-02T08:00:05.000Z", "failed", "full"))
    mid = store.add(_run("proj", C2, "2024-05-01T12:00:00.000Z", None, "running"))

    proc = run_cli("runs", check=0)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["RUN", "PROJECT", "COMMIT", "MODE"]
    assert [line.split()[0] for line in lines[1:]] == [new.id, mid.id, old.id]
    assert lines[1].split()[1:5] == ["other", C3[:7], "full", "failed"]
    assert "2024-05-02 08:00:00" in lines[1] and lines[1].rstrip().endswith("5s")
    assert lines[2].rstrip().endswith("-")  # still running: no duration
    assert lines[3].rstrip().endswith("90s")

    proc = run_cli("runs", "--json", check=0)
    runs = json.loads(proc.stdout)
    assert [r["id"] for r in runs] == [new.id, mid.id, old.id]
    assert runs[0]["commit"] == C3 and runs[0]["status"] == "failed" and runs[0]["exit_code"] == 1
    assert runs[2]["dirty"] is False

    proc = run_cli("runs", "--project", "proj", "--limit", "1", check=0)
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == [mid.id]


def test_runs_empty(home: Path) -> None:
    proc = run_cli("runs", check=0)
    assert "no runs yet" in proc.stdout
    proc = run_cli("runs", "--json", check=0)
    assert json.loads(proc.stdout) == []


# -- the original form, version, help --------------------------------------------------


@pytest.mark.parametrize(("flag", "name"), [("--gdrive", "Google Drive"), ("--dropbox", "Dropbox"),
                                           ("--onedrive", "OneDrive"), ("--box", "Box")])
def test_legacy_cloud_flags_choose_the_backend_and_check_sign_in_first(tmp_path: Path, flag: str, name: str) -> None:
    path = make_project(tmp_path)
    proc = run_cli(str(path), flag, check=3)  # the default folder: "soopervisor"
    assert f"not signed in to {name}" in proc.stderr
    assert f"soopervisor login {flag[2:]}" in proc.stderr
    assert "Traceback" not in proc.stderr and not RunStore().list()  # nothing ran


def test_legacy_two_cloud_flags_are_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli(str(make_project(tmp_path)), "--gdrive", "--box", check=2)
    assert "choose one storage" in proc.stderr


def test_legacy_storage_twice_is_a_usage_error(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    proc = run_cli(str(path), str(tmp_path / "a"), "--storage", str(tmp_path / "b"), check=2)
    assert "not both" in proc.stderr


def test_version() -> None:
    proc = run_cli("--version", check=0)
    assert __version__ in proc.stdout
    assert "soopervisor" in proc.stdout


def test_help_lists_commands() -> None:
    proc = run_cli("--help", check=0)
    for name in ("validate", "script", "run", "artifacts", "runs"):
        assert f"  {name} " in proc.stdout or f"  {name}\n" in proc.stdout, name
    assert "legacy" not in proc.stdout
    assert run_cli("-h", check=0).stdout == proc.stdout


def test_run_help_shows_examples() -> None:
    proc = run_cli("run", "--help", check=0)
    assert "Examples:" in proc.stdout
    assert "soopervisor run --secret DB_PASSWORD" in proc.stdout
    for opt in ("--sample / --full", "--storage", "--secret", "--timeout"):
        assert opt in proc.stdout


def test_artifacts_help() -> None:
    proc = run_cli("artifacts", "--help", check=0)
    assert "list" in proc.stdout and "download" in proc.stdout


def test_unknown_option_is_a_usage_error() -> None:
    proc = run_cli("validate", "--nope", check=2)
    assert "--nope" in proc.stderr


# -- the Python API stays light --------------------------------------------------------


def test_validate_does_not_import_docker(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    code = (
        "import soopervisor, sys\n"
        f"r = soopervisor.validate({str(path)!r})\n"
        "assert r.ok, r.format()\n"
        "assert 'docker' not in sys.modules, 'docker imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)

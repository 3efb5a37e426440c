"""The real console command (``python -m soopervisor``) without Docker.

Stored artifacts are made by hand (files + ``write_manifest`` + ``put_set``)
and runs are written to the run store directly, so nothing here needs an engine.
Every test checks the exit code, what the user reads, and that no traceback
reaches them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from soopervisor import __version__, artifacts, storage
from soopervisor.runs import Run, RunStore, lease_until, process_started, this_host

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
PRODUCTS = {k: v for k, v in FILES.items() if k != "soopervisor.log"}


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
    run_id: str | None = None,
) -> Path:
    """Store a run's set for ``project@commit`` in the default storage; return the stored set's folder.

    ``files`` are the products, except ``soopervisor.log``, which is the run's log.
    """
    run_id = run_id or "r" + commit[:11]
    src = tmp_path / "sets" / project / commit / run_id
    (src / "files").mkdir(parents=True, exist_ok=True)
    for rel, data in (FILES if files is None else files).items():
        p = src / rel if rel == "soopervisor.log" else src / "files" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
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
        run_id=run_id,
    )
    storage.open_storage(str(home / "artifacts")).put_set(project, commit, run_id, src)
    return home / "artifacts" / project / commit / run_id


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
        files={"soopervisor.log": b"boom\n", "output/half.csv": b"x\n"})
    proc = run_cli("artifacts", "list", check=0, cwd=path)
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["COMMIT", "RUN", "MODE", "STATUS"] and lines[0].split()[-1] == "SETS"
    assert len(lines) == 3, proc.stdout
    # newest first; a dirty set is marked with "+"; a commit without a succeeded set says so
    newest, oldest = lines[1], lines[2]
    assert newest.startswith(C3[:7] + "+")
    assert newest.split()[1:4] == ["r" + C3[:11], "full", "failed"]
    assert "2024-05-02 10:01:00" in newest
    assert newest.split()[6:10] == ["1", "2", "B", "1"]  # 1 file, 2 B, 1 set
    assert "no succeeded set" in newest and "--run" in newest
    assert oldest.startswith(C1[:7] + " ")
    assert oldest.split()[2:4] == ["sample", "succeeded"]
    size = sum(len(v) for v in PRODUCTS.values())
    assert oldest.split()[-4:] == [str(len(PRODUCTS)), str(size), "B", "1"]


def test_artifacts_list_one_line_per_commit_or_per_set(tmp_path: Path, home: Path) -> None:
    """Issue 11, case 1: a commit keeps every run's set; the list shows the one it resolves to."""
    path = make_project(tmp_path)
    put(home, tmp_path, C1, run_id="good", finished_at="2024-05-01T10:01:00Z")
    put(home, tmp_path, C1, run_id="stopped", finished_at="2024-05-01T11:00:00Z", status="cancelled",
        files={"output/partial.csv": b"p"})
    lines = run_cli("artifacts", "list", check=0, cwd=path).stdout.splitlines()
    assert len(lines) == 2 and lines[1].split()[1:4] == ["good", "sample", "succeeded"]
    assert lines[1].split()[-1] == "2"  # two sets
    lines = run_cli("artifacts", "list", "--all", check=0, cwd=path).stdout.splitlines()
    assert [line.split()[1:4] for line in lines[1:]] == [["stopped", "sample", "cancelled"],
                                                         ["good", "sample", "succeeded"]]


def test_artifacts_list_shows_a_damaged_set_as_one_line(tmp_path: Path, home: Path) -> None:
    """Issue 11, case 5: a manifest of the wrong shape is one line; the other sets are listed."""
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    damaged = put(home, tmp_path, C3, finished_at="2024-05-03T10:01:00Z")
    (damaged / "manifest.json").write_text('{"files": 5}')
    for args in ((), ("--all",)):
        proc = run_cli("artifacts", "list", *args, check=0, cwd=path)
        lines = proc.stdout.splitlines()
        assert len(lines) == 3, proc.stdout
        bad = next(line for line in lines if line.startswith(C3[:7]))
        assert "damaged:" in bad
        assert any(line.startswith(C1[:7]) and "succeeded" in line for line in lines)
    rows = json.loads(run_cli("artifacts", "list", "--json", check=0, cwd=path).stdout)
    bad = next(r for r in rows if r["commit"] == C3)
    assert bad["status"] == "damaged" and bad["damaged"] and bad["files"] == 0


def test_artifacts_list_json(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1, finished_at="2024-05-01T10:01:00Z")
    put(home, tmp_path, C2, finished_at="2024-05-03T10:01:00Z", mode="full")
    proc = run_cli("artifacts", "list", "--json", check=0, cwd=path)
    commits = json.loads(proc.stdout)
    assert [c["commit"] for c in commits] == [C2, C1]
    assert commits[0]["mode"] == "full" and commits[0]["project"] == "proj"
    assert commits[0]["run_id"] == "r" + C2[:11] and commits[0]["resolved"] is True
    assert commits[1]["files"] == len(PRODUCTS) and commits[1]["size"] == sum(map(len, PRODUCTS.values()))
    assert [s["run_id"] for s in commits[1]["sets"]] == ["r" + C1[:11]]
    sets = json.loads(run_cli("artifacts", "list", "--json", "--all", check=0, cwd=path).stdout)
    assert [s["commit"] for s in sets] == [C2, C1]
    assert set(sets[0]) == {"project", "commit", "short_commit", "run_id", "mode", "status", "dirty",
                            "started_at", "finished_at", "files", "size", "damaged"}


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
    assert f"downloaded {len(PRODUCTS)} files of proj @ {C1[:7]} run r{C1[:11]}" in proc.stdout
    assert "sha256 verified" in proc.stdout
    got = files_under(to)
    manifest = json.loads(got.pop(".soopervisor/manifest.json"))
    assert got.pop(".soopervisor/soopervisor.log") == FILES["soopervisor.log"]
    assert got == PRODUCTS
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
    assert json.loads((to / ".soopervisor" / "manifest.json").read_text())["commit"] == C3


def test_artifacts_download_picks_the_good_set_or_the_run_asked_for(tmp_path: Path, home: Path) -> None:
    """Issue 11, case 1: a cancelled re-run never hides the commit's good set; --run reaches the other."""
    path = make_project(tmp_path)
    put(home, tmp_path, C1, run_id="full1", mode="full", finished_at="2024-05-01T10:00:00Z",
        files={"output/sales.csv": b"full\n"})
    put(home, tmp_path, C1, run_id="sample1", mode="sample", finished_at="2024-05-01T11:00:00Z",
        files={"output/sales.csv": b"sample\n"})
    put(home, tmp_path, C1, run_id="stopped", mode="full", status="cancelled", finished_at="2024-05-01T12:00:00Z",
        files={"output/partial.csv": b"half\n"})
    for args, expected in ((("latest",), b"full\n"), ((C1[:7],), b"full\n"), ((C1, "--mode", "sample"), b"sample\n")):
        to = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
        run_cli("artifacts", "download", *args, "--to", str(to), check=0, cwd=path)
        assert (to / "output" / "sales.csv").read_bytes() == expected, args
    to = tmp_path / "stopped"
    proc = run_cli("artifacts", "download", C1, "--run", "stopped", "--to", str(to), check=0, cwd=path)
    assert "(cancelled)" in proc.stdout
    assert (to / "output" / "partial.csv").read_bytes() == b"half\n"
    proc = run_cli("artifacts", "download", C1, "--run", "nope", "--to", str(tmp_path / "x"), check=2, cwd=path)
    assert "no set of run 'nope'" in proc.stderr


def test_artifacts_download_of_a_commit_without_a_succeeded_set_names_its_runs(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1, run_id="broke", status="failed")
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", C1, "--to", str(to), check=2, cwd=path)
    assert "no succeeded set" in proc.stderr and "run broke failed" in proc.stderr
    assert "--run broke" in proc.stderr
    assert not to.exists()


def test_artifacts_download_default_target(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    run_cli("artifacts", "download", "latest", check=0, cwd=path)
    target = path / f"artifacts-{C1[:7]}-r{C1[:11]}"
    assert (target / "output" / "data.csv").read_bytes() == FILES["output/data.csv"]


def test_artifacts_download_never_mixes_two_sets(tmp_path: Path, home: Path) -> None:
    """Issue 11, case 7: a folder holding another set (or anything else) is refused, and nothing is written."""
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    put(home, tmp_path, C3, files={"output/other.csv": b"c3\n"})
    to = tmp_path / "out"
    run_cli("artifacts", "download", C1, "--to", str(to), check=0, cwd=path)
    before = files_under(to)
    proc = run_cli("artifacts", "download", C3, "--to", str(to), check=2, cwd=path)
    assert "not empty" in proc.stderr and "hint:" in proc.stderr
    assert files_under(to) == before
    run_cli("artifacts", "download", C1, "--to", str(to), check=0, cwd=path)  # the same set: refreshed


def test_artifacts_download_into_a_missing_parent_or_a_file(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1)
    deep = tmp_path / "new" / "deeper" / "out"
    run_cli("artifacts", "download", C1, "--to", str(deep), check=0, cwd=path)
    assert (deep / "output" / "data.csv").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli("artifacts", "download", C1, "--to", str(blocker / "out"), check=2, cwd=path)
    assert "error:" in proc.stderr and "hint:" in proc.stderr


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
    assert json.loads((to / ".soopervisor" / "manifest.json").read_text())["commit"] == C2


@pytest.mark.parametrize("same_size", [True, False])
def test_artifacts_download_corrupted_file(tmp_path: Path, home: Path, same_size: bool) -> None:
    path = make_project(tmp_path)
    stored = put(home, tmp_path, C1)
    victim = stored / "files" / "output" / "data.csv"
    data = victim.read_bytes()
    victim.write_bytes(data[:-2] + b"9\n" if same_size else data + b"extra\n")
    to = tmp_path / "out"
    proc = run_cli("artifacts", "download", C1, "--to", str(to), check=3, cwd=path)
    assert "output/data.csv" in proc.stderr
    assert ("sha256 does not match" if same_size else "does not match the manifest") in proc.stderr
    assert "hint:" in proc.stderr
    assert not to.exists()  # all or nothing: the folder the download made is gone too


def test_artifacts_download_refuses_escaping_names(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    stored = put(home, tmp_path, C1)
    evil = b"owned\n"
    # a file the name really points at, so only the check stands between it and the disk
    (stored / "evil").write_bytes(evil)
    manifest = json.loads((stored / "manifest.json").read_text())
    manifest["files"].append(
        {"path": "../evil", "size": len(evil), "sha256": hashlib.sha256(evil).hexdigest()}
    )
    (stored / "manifest.json").write_text(json.dumps(manifest))
    work = tmp_path / "work"
    to = work / "out"
    # such a manifest is a damaged set: listed as one, never downloaded
    proc = run_cli("artifacts", "download", C1, "--run", "r" + C1[:11], "--to", str(to), check=3, cwd=path)
    assert "outside the set" in proc.stderr and "hint:" in proc.stderr
    assert not work.exists() and not (tmp_path / "evil").exists()
    proc = run_cli("artifacts", "download", C1, "--to", str(to), check=2, cwd=path)
    assert "damaged" in proc.stderr
    assert not work.exists()


# -- artifacts prune -----------------------------------------------------------------


def test_artifacts_prune_keeps_the_last_sets_and_the_good_one(tmp_path: Path, home: Path) -> None:
    path = make_project(tmp_path)
    put(home, tmp_path, C1, run_id="good", finished_at="2024-05-01T10:00:00Z")
    for i in range(1, 4):
        put(home, tmp_path, C1, run_id=f"bad{i}", status="failed", finished_at=f"2024-05-0{i + 1}T10:00:00Z")
    proc = run_cli("artifacts", "prune", "--keep", "1", "--dry-run", check=0, cwd=path)
    assert sorted(line.split()[6] for line in proc.stdout.splitlines()[:-1]) == ["bad1", "bad2"]
    assert "would remove 2 sets" in proc.stdout
    assert len(json.loads(run_cli("artifacts", "list", "--json", "--all", check=0, cwd=path).stdout)) == 4
    proc = run_cli("artifacts", "prune", "--keep", "1", check=0, cwd=path)
    assert "removed 2 sets" in proc.stdout and f"removed proj @ {C1[:7]} run bad1 (sample failed)" in proc.stdout
    sets = json.loads(run_cli("artifacts", "list", "--json", "--all", check=0, cwd=path).stdout)
    assert [s["run_id"] for s in sets] == ["bad3", "good"]
    proc = run_cli("artifacts", "prune", "--keep", "0", check=0, cwd=path)
    assert [s["run_id"] for s in json.loads(run_cli("artifacts", "list", "--json", "--all", check=0,
                                                    cwd=path).stdout)] == ["good"]
    run_cli("artifacts", "prune", "--keep", "-1", check=2, cwd=path)


# -- runs --------------------------------------------------------------------------


def _run(project: str, commit: str, started: str, finished: str | None, status: str, mode: str = "sample") -> Run:
    run = Run(
        project=project, project_path=f"/src/{project}", commit=commit, dirty=False, mode=mode,
        status=status, started_at=started, finished_at=finished,
        exit_code={"succeeded": 0, "failed": 1}.get(status),
    )
    if status == "running":  # owned by this (live) test process, with a lease: it stays running
        run.owner_host, run.owner_pid = this_host(), os.getpid()
        run.owner_started, run.lease_until = process_started(os.getpid()), lease_until(600)
    return run


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


def test_runs_on_a_damaged_run_history_is_a_plain_error_with_a_hint(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "runs.sqlite").write_bytes(b"this is not an SQLite database, it was overwritten\n" * 100)
    for args in (("runs",), ("stop", "abc123")):
        proc = run_cli(*args, check=3)
        assert str(home / "runs.sqlite") in proc.stderr and "is damaged" in proc.stderr
        assert "hint: move it aside" in proc.stderr


def test_runs_of_an_older_run_history_are_migrated_and_a_stuck_run_reaped(home: Path) -> None:
    """A runs.sqlite of the previous release (no owner, lease or executor columns)."""
    old_columns = ["project", "project_path", "commit", "dirty", "mode", "status", "id", "exit_code",
                   "started_at", "finished_at", "log_path", "storage_url", "image", "failed_task", "error"]
    home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(home / "runs.sqlite") as db:
        db.execute("CREATE TABLE runs (" + ", ".join(f'"{c}" TEXT' for c in old_columns) + ", PRIMARY KEY (id))")
        rows = [("proj", "/src", C1, 0, "sample", "succeeded", "done0000aaaa", 0, "2024-05-01T10:00:00.000Z",
                 "2024-05-01T10:00:09.000Z", None, None, None, None, None),
                # left "running" for ever by a process of the old release that died
                ("proj", "/src", C2, 0, "full", "running", "stuck000bbbb", None, "2024-05-02T10:00:00.000Z",
                 None, None, str(home / "artifacts"), None, None, None)]
        db.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(old_columns))})", rows)

    runs = json.loads(run_cli("runs", "--json", check=0).stdout)
    by_id = {r["id"]: r for r in runs}
    assert by_id["done0000aaaa"]["status"] == "succeeded" and by_id["done0000aaaa"]["owner_pid"] is None
    stuck = by_id["stuck000bbbb"]
    assert stuck["status"] == "interrupted" and "an older soopervisor" in stuck["error"]
    with sqlite3.connect(home / "runs.sqlite") as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    assert {"owner_host", "owner_pid", "owner_started", "lease_until", "executor"} <= columns


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
    assert "list" in proc.stdout and "download" in proc.stdout and "prune" in proc.stdout


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


# -- storage check -------------------------------------------------------------------------


def test_storage_check_of_a_folder_shows_each_step_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "new-store"
    proc = run_cli("storage", "check", str(root), check=0)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"checking {root}"
    for step, line in zip(("sign in", "writable", "write", "list", "read", "remove"), lines[1:], strict=False):
        assert line.startswith(f"✓ {step} ") and line.split()[2 + step.count(" ")].endswith("s"), line
    assert "sha256 verified" in proc.stdout and "_soopervisor-check/" in proc.stdout
    assert lines[-1].startswith(f"✓ {root} works")
    assert not root.exists() and proc.stderr == ""


def test_storage_check_defaults_to_the_data_folder(home: Path) -> None:
    proc = run_cli("storage", "check", check=0)
    assert "checking the default storage" in proc.stdout
    assert f"✓ {home / 'artifacts'} works" in proc.stdout


def test_storage_check_stops_at_the_first_failure_with_hint_and_link(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    proc = run_cli("storage", "check", str(tmp_path / "a-file" / "store"), check=3)
    assert "✓ sign in" in proc.stdout and "✗ writable" in proc.stdout
    assert "write " not in proc.stdout and "works" not in proc.stdout
    assert "error: cannot use" in proc.stderr and "hint: " in proc.stderr
    assert "more: " in proc.stderr and "#storage-unavailable" in proc.stderr


def test_storage_check_a_failed_write_is_cleaned_up(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "_soopervisor-check").write_text("someone's")
    proc = run_cli("storage", "check", str(root), check=3)
    assert "✗ write" in proc.stdout and "✓ clean up" in proc.stdout
    assert files_under(root) == {"_soopervisor-check": b"someone's"}


def test_storage_check_json(tmp_path: Path) -> None:
    data = json.loads(run_cli("storage", "check", "--json", str(tmp_path / "s"), check=0).stdout)
    assert data["ok"] is True and [s["name"] for s in data["steps"]][-1] == "remove"
    (tmp_path / "f").write_text("x")
    proc = run_cli("storage", "check", "--json", str(tmp_path / "f" / "s"), check=3)
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["steps"][-1]["error"]["exit_code"] == 3
    assert data["steps"][-1]["error"]["hint"] and data["steps"][-1]["error"]["docs"].endswith("#storage-unavailable")


def test_storage_check_on_s3(tmp_path: Path) -> None:
    from tests.backends import s3 as fake

    bucket = fake.new_bucket()
    with fake.env(**fake.aws_env(tmp_path)):
        proc = run_cli("storage", "check", f"s3://{bucket}/runs", check=0)
    assert f"✓ s3://{bucket}/runs works" in proc.stdout and "✓ remove" in proc.stdout
    assert fake.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert fake.SECRET_KEY not in proc.stdout + proc.stderr


def test_storage_check_on_google_drive(tmp_path: Path) -> None:
    from tests.backends.gdrive import fake_env
    from tests.fakes.gdrive_api import FOLDER, FakeDrive

    fake = FakeDrive()
    token = fake.issue_refresh_token()
    try:
        with fake_env(fake, tmp_path, refresh_token=token):
            proc = run_cli("storage", "check", "gdrive://soopervisor-tests", check=0)
        assert "✓ gdrive://soopervisor-tests works" in proc.stdout
        assert not [i for i in fake.items.values() if i.mimeType != FOLDER]  # every file of the check is gone
        assert token not in proc.stdout + proc.stderr and fake.client_secret not in proc.stdout + proc.stderr
    finally:
        fake.close()


def test_storage_check_not_signed_in(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SOOPERVISOR_ONEDRIVE_CLIENT_ID", "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    proc = run_cli("storage", "check", "onedrive://soopervisor", check=3)
    assert "✗ sign in" in proc.stdout and "soopervisor login onedrive" in proc.stderr


def test_storage_check_help_has_examples() -> None:
    proc = run_cli("storage", "check", "--help", check=0)
    assert "Examples:" in proc.stdout and "soopervisor storage check s3://" in proc.stdout
    assert "storage" in run_cli("--help", check=0).stdout


# -- login --ci ----------------------------------------------------------------------------


def _main(*argv: str) -> int:
    from soopervisor.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code


def test_main_called_from_python_returns_its_exit_code_even_after_pyarrow_was_loaded(tmp_path, capsys):
    # the console command ends past pyarrow's shutdown abort with os._exit; main() called from Python
    # (a test runner, a wrapper script) must get SystemExit instead, or its whole process would end here
    import pyarrow  # noqa: F401 - loaded, as after a table preview or a diff

    assert _main("validate", str(tmp_path / "missing")) == 2  # an invalid project
    assert _main("--version") == 0
    assert "does not exist" in capsys.readouterr().out


def _login_ci(service: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
              fake, answer) -> tuple[str, dict[str, str], list[tuple[str, bool]]]:
    """``soopervisor login SERVICE --ci`` in this process: the backend's real sign-in, its requests reaching
    ``fake``; ``answer(question, what was printed so far)`` is the user at the keyboard. Returns
    (everything printed, the NAME=value lines, the questions asked with whether the answer was hidden)."""
    import functools

    import click

    from soopervisor.storage import cloud_module

    backend = cloud_module(service)
    for var in backend.ENV.values():
        monkeypatch.delenv(var.rstrip("?"), raising=False)
    monkeypatch.setattr(backend, "login_for_ci", functools.partial(backend.login_for_ci, session=fake.session()))
    printed: list[str] = []
    asked: list[tuple[str, bool]] = []

    def prompt(text: str, hide_input: bool = False, **kw) -> str:
        printed.append(capsys.readouterr().out)
        asked.append((text, hide_input))
        return answer(text, "".join(printed))

    monkeypatch.setattr(click, "prompt", prompt)
    assert _main("login", service, "--ci") == 0
    out = "".join(printed) + capsys.readouterr().out
    prefix = f"SOOPERVISOR_{service.upper()}_"
    values = dict(line.split("=", 1) for line in out.splitlines() if line.startswith(prefix))
    return out, values, asked


def _printed_once_with_the_gh_commands(out: str, values: dict[str, str]) -> None:
    from soopervisor.redact import CREDENTIALS

    lines = out.splitlines()
    warning = next(i for i, line in enumerate(lines) if line.startswith("warning: these are secrets"))
    for name, value in values.items():
        assert lines.index(f"{name}={value}") > warning
        if "SECRET" in name or "TOKEN" in name:  # an id or app key is in the sign-in link too
            assert out.count(value) == 1, name  # printed once, on purpose, and nowhere else
        assert f"  gh secret set {name}" in lines
        assert CREDENTIALS.redact(f"x {value} x") != f"x {value} x"  # masked in any log or error from now on


def test_login_ci_with_dropbox_prints_the_secrets_once_and_keeps_this_machine_s_login(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import re

    from soopervisor import credentials
    from tests.fakes.dropbox_api import FakeDropbox

    fake = FakeDropbox()
    laptop = {"app_key": fake.app_key, "refresh_token": fake.issue_refresh_token()}
    credentials.save("dropbox", laptop)

    def answer(question: str, printed: str) -> str:
        return fake.authorize(re.search(r"https://\S+oauth2/authorize\S+", printed).group(0))

    out, values, asked = _login_ci("dropbox", monkeypatch, capsys, fake, answer)
    assert asked == [("Authorization code", False)]  # the app key is the stored login's
    assert list(values) == ["SOOPERVISOR_DROPBOX_APP_KEY", "SOOPERVISOR_DROPBOX_REFRESH_TOKEN"]
    assert values["SOOPERVISOR_DROPBOX_APP_KEY"] == fake.app_key
    assert values["SOOPERVISOR_DROPBOX_REFRESH_TOKEN"] in fake.refresh_tokens
    assert values["SOOPERVISOR_DROPBOX_REFRESH_TOKEN"] != laptop["refresh_token"]  # CI's own
    _printed_once_with_the_gh_commands(out, values)
    assert credentials.load("dropbox") == laptop  # this machine's login is untouched


def test_login_ci_with_box_asks_the_secret_hidden_and_stores_nothing(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from soopervisor import credentials
    from tests.fakes.box_api import FakeBox

    fake = FakeBox()

    def answer(question: str, printed: str) -> str:
        return {"Box client id": fake.client_id, "Box client secret": fake.client_secret}.get(question) \
            or fake.authorize()

    out, values, asked = _login_ci("box", monkeypatch, capsys, fake, answer)
    assert ("Box client secret", True) in asked and ("Box client id", False) in asked
    assert list(values) == ["SOOPERVISOR_BOX_CLIENT_ID", "SOOPERVISOR_BOX_CLIENT_SECRET",
                            "SOOPERVISOR_BOX_REFRESH_TOKEN"]
    assert values["SOOPERVISOR_BOX_CLIENT_SECRET"] == fake.client_secret
    _printed_once_with_the_gh_commands(out, values)
    assert credentials.load("box") is None  # nothing stored on this machine


def test_login_ci_of_a_service_without_it_yet_is_a_usage_error(home: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    from soopervisor.storage import box

    monkeypatch.delattr(box, "login_for_ci")
    assert _main("login", "box", "--ci") == 2
    err = capsys.readouterr().err
    assert "not available for this service yet" in err and "soopervisor login box" in err


def test_login_ci_usage() -> None:
    assert "--status and --ci" in run_cli("login", "--status", "--ci", check=2).stderr
    assert "--ci" in run_cli("login", "--ci", check=2).stderr
    proc = run_cli("login", "--help", check=0)
    assert "--ci" in proc.stdout and "soopervisor login box --ci" in proc.stdout

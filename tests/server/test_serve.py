"""`soopervisor serve` end to end: a real bare remote, real git, real Docker, real storage.

The server polls the remote, queues one job per new head, runs it through the
run service and stores the set under the commit; nothing changed means nothing
runs; a pipeline that fails is not retried; an invalid project fails its job
and the server goes on; a killed server resumes where it stopped.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.projects import VALID, commit_all, function_task, git, init_repo, write
from tests.server.helpers import server_yaml

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("serve")]


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote named like a company's (sales.git) and a work clone that pushes to it."""
    work = init_repo(tmp_path / "work")
    write(work, VALID)
    commit_all(work, "first")
    bare = tmp_path / "git" / "sales.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "HEAD:main")
    return bare, work


def served(tmp_path: Path, bare: Path, **extra) -> Path:
    """server.yaml serving the remote's project on main, sample runs."""
    return server_yaml(tmp_path, [{"url": f"file://{bare}", "branches": ["main"], "projects": ["."], "mode": "sample",
                                   **extra}])


def stored_sets(tmp_path: Path, commit: str) -> list[dict]:
    return [json.loads(m.read_text()) for m in (tmp_path / "artifacts").glob(f"*/{commit}/*/manifest.json")]


def test_a_pushed_commit_runs_once_and_nothing_changed_runs_nothing(tmp_path, engine, remote):
    bare, work = remote
    config = served(tmp_path, bare)
    first = git(work, "rev-parse", "HEAD").strip()

    proc = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    assert f"main is at {first[:12]}" in proc.stdout
    assert "succeeded" in proc.stdout
    (manifest,) = stored_sets(tmp_path, first)
    assert manifest["status"] == "succeeded" and manifest["project"] == "sales" and manifest["mode"] == "sample"

    again = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    assert "is at" not in again.stdout and "job " not in again.stdout  # nothing changed: nothing runs
    assert len(stored_sets(tmp_path, first)) == 1

    write(work, {"notes.md": "a second commit\n"})
    second = commit_all(work, "second")
    git(work, "push", "-q", "origin", "HEAD:main")
    third = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    assert f"main is at {second[:12]}" in third.stdout
    assert [m["commit"] for m in stored_sets(tmp_path, second)] == [second]
    assert len(stored_sets(tmp_path, first)) == 1


def test_a_failing_pipeline_fails_its_job_once_and_an_invalid_project_does_not_stop_the_server(
        tmp_path, engine, remote):
    bare, work = remote
    write(work, function_task("raise RuntimeError('boom')"))
    failing = commit_all(work, "a failing task")
    git(work, "push", "-q", "origin", "HEAD:main")
    config = served(tmp_path, bare, projects=[".", "missing"])

    proc = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("job ")]
    assert len(lines) == 2, proc.stdout  # one job per project, each run (or refused) once
    assert any(" . sample (run " in line and line.rstrip().split(": ")[1].startswith("failed") for line in lines)
    assert any(" missing sample" in line and "the project is not valid" in line for line in lines)
    (manifest,) = stored_sets(tmp_path, failing)
    assert manifest["status"] == "failed"

    again = cli("serve", "--config", str(config), "--once", check=0, timeout=600)
    assert "job " not in again.stdout  # a failed pipeline is not retried


def test_check_lists_every_problem_and_exits_2(tmp_path, remote):
    bare, _ = remote
    config = tmp_path / "server.yaml"
    config.write_text(json.dumps({"poll_interval": -1, "repositories": [
        {"url": f"file://{bare}"}, {"url": f"file://{tmp_path}/nope.git"}, {"branches": ["main"]}]}))
    proc = cli("serve", "--config", str(config), "--check", check=2)
    assert "poll_interval" in proc.stderr and "url" in proc.stderr
    assert "Traceback" not in proc.stderr

    good = served(tmp_path, bare)
    ok = cli("serve", "--config", str(good), "--check", check=0)
    assert "✓" in ok.stdout


def test_a_killed_server_resumes_and_the_commit_still_runs_exactly_once(tmp_path, engine, remote):
    bare, work = remote
    write(work, function_task("import time\nprint('working', flush=True)\ntime.sleep(8)"))
    commit = commit_all(work, "a slow task")
    git(work, "push", "-q", "origin", "HEAD:main")
    config = served(tmp_path, bare)
    env = {**os.environ, "SOOPERVISOR_LEASE_SECONDS": "3"}

    # --port 0: the API on a free port, so that nothing else listening on 8008 matters
    server = subprocess.Popen([sys.executable, "-m", "soopervisor", "serve", "--config", str(config), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until the run is under way
            runs = json.loads(cli("runs", "--json", check=0).stdout or "[]")
            if any(r.get("status") == "running" for r in runs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the server never started the run")
        server.send_signal(signal.SIGKILL)
    finally:
        server.wait(30)
    time.sleep(4)  # the job's lease (3 s) runs out

    proc = cli("serve", "--config", str(config), "--once", check=0, timeout=600, env=env)
    # the killed attempt is reaped (interrupted), the job queued again and run to its end once
    sets = stored_sets(tmp_path, commit)
    assert [m["status"] for m in sets].count("succeeded") == 1, proc.stdout
    assert "succeeded" in proc.stdout

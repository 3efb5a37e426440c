"""Remote runs as a user has them: one local record fed from the team's server, in the terminal,
in a notebook kernel that is killed mid-run and a new one that attaches again.

Everything is real: `soopervisor serve` on 127.0.0.1, a bare git remote the work clone pushes
to, Docker where the server runs the pipeline, the console command in a subprocess and
IPython kernels through jupyter_client.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

import soopervisor
from soopervisor.artifacts import get_artifacts

from .conftest import cli
from .projects import VALID, commit_all, write
from .server.test_app import Remote, Served
from .server.test_remote_server import SECRET, run_token, served_config, task

# no xdist group: each test has its own server, repositories and data folders, and spreads over the workers
pytestmark = pytest.mark.docker


@pytest.fixture
def team(tmp_path: Path, home: Path) -> tuple[Remote, Served, Path]:
    """A served repository with a pausing pipeline, and a remote `team` added by the real command."""
    remote = Remote(tmp_path, {**VALID, **task(pause=6)})
    config = served_config(tmp_path, remote)
    # the server's own run history apart from the user's, as on two machines
    server = Served(config, env={"DB_PASSWORD": SECRET, "SOOPERVISOR_HOME": str(tmp_path / "server-home")})
    cli("remote", "add", "team", server.url, "--token-stdin", check=0, input=run_token(config) + "\n")
    yield remote, server, config
    server.stop()


def test_a_run_on_the_team_server_is_followed_in_the_terminal_and_recorded_here(team):
    remote, _server, _config = team
    done = cli("run", "--remote", "team", cwd=remote.work, check=0)
    out = done.stdout
    assert "on server team (" in out and "line 0" in out and "line 4" in out, out
    assert out.index("line 0") < out.index("line 4") < out.index("✓ run")
    assert SECRET not in out + done.stderr and "the password is ***" in out, out
    (run,) = soopervisor.list_runs()
    assert (run.remote, run.where, run.status, run.commit) == ("team", "team", "succeeded", remote.head())
    assert run.tasks_done == run.tasks_total == 1 and run.storage_url
    # every line of the log once, in order; ours first
    log = Path(run.log_path).read_text().splitlines()
    numbered = [line for line in log if line.startswith("line ")]
    assert numbered == [f"line {i}" for i in range(5)], log
    assert SECRET not in "\n".join(log)
    # the artifacts are in the server's storage, under the server's run id
    arts = get_artifacts(run.commit, project=run.project, storage=run.storage_url, run=run.set_id)
    assert arts.manifest["status"] == "succeeded"
    # the same set by the id recorded here alone
    same = soopervisor.get_artifacts(run.commit, project=run.project, run=run.id)
    assert same.manifest["run_id"] == run.set_id != run.id
    listing = cli("runs", check=0).stdout
    assert "WHERE" in listing and f"{run.id}" in listing and " team " in listing, listing


def test_an_unpushed_commit_is_refused_with_the_push_command_and_nothing_is_recorded(team):
    remote, _server, _config = team
    write(remote.work, {"notes.md": "not pushed\n"})
    commit_all(remote.work, "local only")
    refused = cli("run", "--remote", "team", cwd=remote.work, check=2)
    assert "git push" in refused.stderr and "not" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert soopervisor.list_runs() == []


def test_stop_cancels_the_run_at_the_server(team):
    remote, _server, _config = team
    run = soopervisor.run(remote.work, remote="team", wait=False)
    run_log = Path(run.log_path)
    _wait(lambda: "line 1" in run_log.read_text(), "the run's first lines", 240)
    stopped = soopervisor.stop_run(run.id, wait=60)
    assert stopped.status == "cancelled", stopped
    assert "done" not in run_log.read_text().splitlines()


def execute(client, code: str) -> dict:
    outputs: list[dict] = []
    reply = client.execute_interactive(code, timeout=600, output_hook=outputs.append)
    said = [m["content"].get("text") or m["content"].get("data", {}).get("text/plain") or m["content"].get("traceback")
            for m in outputs]
    assert reply["content"]["status"] == "ok", (reply["content"].get("evalue"), said)
    return {"stdout": "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")}


def test_a_kernel_killed_mid_run_leaves_the_run_going_and_a_new_kernel_attaches_to_it(team):
    remote, _server, _config = team
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ), cwd=str(remote.work))
    try:
        execute(client, "%load_ext soopervisor\nrun = %soopervisor run --remote team\nprint(run.id)")
        (run_id,) = [line for line in execute(client, "print(run.id)")["stdout"].split() if line]
        execute(client, "import time\nwhile 'line 2' not in open(run.log_path).read(): time.sleep(0.1)")
        manager.provisioner.process.kill()  # SIGKILL: the follower dies with the kernel
        manager.provisioner.process.wait()
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)

    # the run goes on at the server: the record is not interrupted by a read here
    (left,) = soopervisor.list_runs()
    assert left.id == run_id and left.status in ("queued", "running"), left

    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ), cwd=str(remote.work))
    try:
        execute(client, f"%load_ext soopervisor\nrun = %soopervisor attach {run_id}\nw = "
                        "get_ipython().find_magic('soopervisor').__self__.widgets[run.id]")
        execute(client, "assert w.wait(300), 'the widget did not see the end'")
        got = json.loads(execute(client, "import json\nprint(json.dumps({'status': run.status, 'text': w.text}))")
                         ["stdout"])
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    assert got["status"] == "succeeded", got
    shown = got["text"].splitlines()
    assert [line for line in shown if line.startswith("line ")] == [f"line {i}" for i in range(5)], shown
    assert SECRET not in got["text"] and "the password is ***" in got["text"]
    (after,) = soopervisor.list_runs()
    assert after.status == "succeeded"
    log = Path(after.log_path).read_text().splitlines()
    assert [line for line in log if line.startswith("line ")] == [f"line {i}" for i in range(5)], log
    assert any("again" in line for line in log), log  # the new follower said where it took over


def _wait(check, what: str, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)

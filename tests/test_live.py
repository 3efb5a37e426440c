"""Runs in progress: following a growing log, stopping a run from this or another process."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

import soopervisor
from soopervisor.errors import RunNotFound
from soopervisor.logtail import LogTail

from .conftest import cli
from .projects import function_task, make_project

SLEEPER = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")


def test_log_tail_returns_each_complete_line_once(tmp_path):
    log = tmp_path / "run.log"
    tail = LogTail(log)
    assert tail.read() == []  # no file yet: nothing, no error
    log.write_bytes(b"one\ntw")
    assert tail.read() == ["one\n"]
    assert tail.read() == []  # "tw" waits for its newline
    with open(log, "ab") as f:
        f.write("o\nthree \xe2\x82\xac\n".encode("latin-1"))
    assert tail.read() == ["two\n", "three \u20ac\n"]
    assert tail.next == 3


@pytest.mark.parametrize("start", [0, 1, 2, 3, 5])
def test_log_tail_resumes_at_a_line_index_without_loss_or_duplicates(tmp_path, start):
    log = tmp_path / "run.log"
    lines = [f"line {i}\n" for i in range(4)]
    log.write_text("".join(lines[:2]))
    tail = LogTail(log, start=start)
    got = tail.read()
    log.write_text("".join(lines))
    got += tail.read()
    assert got == lines[start:]
    assert tail.next == max(start, 4)


def test_unknown_run_id_is_a_clear_error():
    with pytest.raises(RunNotFound) as e:
        soopervisor.get_run("nope")
    assert "nope" in e.value.message and e.value.exit_code == 2
    with pytest.raises(RunNotFound):
        soopervisor.stop_run("nope")


def _wait_for(predicate, timeout: float = 400, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.docker
def test_stop_a_background_run_of_this_process(tmp_path, engine):
    project = make_project(tmp_path, SLEEPER)
    lines: list[str] = []
    run = soopervisor.run(project, wait=False, on_line=lines.append)
    assert run.status == "running"
    _wait_for(lambda: any("SLEEPING" in x for x in lines), what="the task to start")
    stopped = soopervisor.stop_run(run.id)
    assert stopped.status == "cancelled" and run.status == "cancelled"
    assert soopervisor.get_run(run.id).status == "cancelled"
    assert not engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})
    assert soopervisor.stop_run(run.id).status == "cancelled"  # stopping again changes nothing


@pytest.mark.docker
def test_stop_a_run_started_by_another_process(tmp_path, engine):
    project = make_project(tmp_path, SLEEPER)
    proc = subprocess.Popen(
        [sys.executable, "-m", "soopervisor", "run", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stdout:
            if "SLEEPING" in line:
                break
        run = soopervisor.list_runs()[0]
        stopped = soopervisor.stop_run(run.id, wait=60)
        assert stopped.status == "cancelled", (stopped, stopped.error)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "cancelled" in err and "Traceback" not in err
    assert proc.returncode != 0
    assert soopervisor.get_run(run.id).status == "cancelled"
    assert not engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})


def test_cli_stop_unknown_run_exit_2_with_hint():
    proc = cli("stop", "nope", check=2)
    assert "no run with id 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_run_wait_follows_the_record_of_another_process(tmp_path):
    from soopervisor.runs import Run, RunStore, now_iso

    store = RunStore()
    run = store.add(Run(project="p", project_path=str(tmp_path), commit="a" * 40, dirty=False, mode="sample",
                        status="running", started_at=now_iso()))
    seen = Run(**run.to_dict())  # another process's view of the same record
    with pytest.raises(TimeoutError, match="still running"):
        seen.wait(timeout=0.3, poll=0.05)
    store.update(run, status="failed", exit_code=1, finished_at=now_iso(), failed_task="clean")
    assert seen.wait(timeout=5, poll=0.05) is seen
    assert (seen.status, seen.exit_code, seen.failed_task) == ("failed", 1, "clean")

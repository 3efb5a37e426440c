"""The run service: runs have an owner and a lease; a run whose owner is gone is reaped by
whoever reads runs next; a stopped or killed re-run never hides a commit's good set; a closed
pipe or terminal never corrupts a run.

Real parts throughout: real processes (their pids and start times), the real run store,
real Docker containers found by label, real git repositories and the real CLI.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import soopervisor
from soopervisor import service
from soopervisor.artifacts import get_artifacts, write_manifest
from soopervisor.runs import Run, RunStore, lease_until, now_iso, process_started, this_host
from soopervisor.service import RunService
from soopervisor.storage import open_storage

from .conftest import cli
from .projects import function_task, git, make_project

COMMIT = "c0ffee" + "0" * 34


def dead_process() -> tuple[int, str]:
    """The pid and start time of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = process_started(proc.pid)
    proc.kill()
    proc.wait()
    assert started is not None
    return proc.pid, started


def running_record(home: Path, **owner) -> Run:
    """A run recorded as running, with a log and a staging folder, as an owner leaves them."""
    run = Run(project="proj", project_path="/src/proj", commit=COMMIT, dirty=False, mode="sample",
              status="running", started_at=now_iso(), storage_url=str(home / "artifacts"), **owner)
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    run.log_path = str(logs / f"{run.id}.log")
    Path(run.log_path).write_text("==> soopervisor: build pipeline\nhalf way through\n")
    (service.staging_dir(run.id) / "files" / "output").mkdir(parents=True)
    (service.staging_dir(run.id) / "files" / "output" / "part.csv").write_text("x\n")
    return RunStore().add(run)


def labelled_container(client, image: str, run_id: str):
    return client.containers.run(image, ["sleep", "300"], detach=True, labels={"soopervisor.run": run_id})


def containers_of(client, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"soopervisor.run={run_id}"})


# -- reaping -----------------------------------------------------------------------------------


@pytest.mark.docker
def test_a_dead_owner_on_this_host_is_reaped_at_the_next_read(home, docker_client, base_image):
    pid, started = dead_process()
    run = running_record(home, owner_host=this_host(), owner_pid=pid, owner_started=started,
                         lease_until=lease_until(3600))  # the lease is still good: the dead pid decides
    labelled_container(docker_client, base_image, run.id)

    (seen,) = soopervisor.list_runs()

    assert seen.status == "interrupted" and f"pid {pid}) is gone" in seen.error and seen.finished_at
    assert not containers_of(docker_client, run.id)
    assert not service.staging_dir(run.id).exists()
    # what could be kept is kept: the redacted log, as this run's own set, marked interrupted
    arts = get_artifacts(COMMIT, project="proj", run=run.id)
    assert arts.manifest["status"] == "interrupted" and arts.run_id == run.id
    log = (home / "artifacts" / "proj" / COMMIT / run.id / "soopervisor.log").read_text()
    assert "half way through" in log and f"run {run.id} interrupted" in log
    assert f"run {run.id} interrupted" in Path(run.log_path).read_text()  # followers of the log see it end
    # a second reader finds nothing left to do
    assert RunService().reap() == []
    assert "interrupted" in cli("runs", check=0).stdout


def test_a_pid_held_by_another_process_is_not_the_owner(home):
    # our own pid, but a start time that is not ours: the owner died and the pid was reused
    run = running_record(home, owner_host=this_host(), owner_pid=os.getpid(),
                         owner_started="2001-01-01T00:00:00.000Z", lease_until=lease_until(3600))
    seen = soopervisor.get_run(run.id)
    assert seen.status == "interrupted" and "belongs to another process" in seen.error


def test_a_live_owner_on_this_host_keeps_its_run(home):
    run = running_record(home, owner_host=this_host(), owner_pid=os.getpid(),
                         owner_started=process_started(os.getpid()), lease_until=lease_until(3600))
    assert soopervisor.get_run(run.id).status == "running"
    assert service.staging_dir(run.id).exists()


def test_an_owner_in_another_pid_namespace_is_judged_by_its_lease_only(home):
    # a container with the host's network has the host's name but pids of its own
    pid, started = dead_process()
    run = running_record(home, owner_host=f"{this_host()}/pidns-4026532181", owner_pid=pid, owner_started=started,
                         lease_until=lease_until(3600))
    assert soopervisor.get_run(run.id).status == "running"


@pytest.mark.docker
def test_an_owner_on_another_host_is_reaped_when_its_lease_expires(home, docker_client, base_image):
    live = running_record(home, owner_host="build-box-2", owner_pid=4242, owner_started=now_iso(),
                          lease_until=lease_until(3600))
    expired = running_record(home, owner_host="build-box-2", owner_pid=4243, owner_started=now_iso(),
                             lease_until="2020-01-01T00:00:00.000Z")
    for run in (live, expired):
        labelled_container(docker_client, base_image, run.id)
    try:
        runs = {r.id: r for r in RunService().list()}
        # a pid on another host says nothing here: only the lease counts
        assert runs[live.id].status == "running" and len(containers_of(docker_client, live.id)) == 1
        assert runs[expired.id].status == "interrupted"
        assert "pid 4243 on build-box-2" in runs[expired.id].error and "lease" in runs[expired.id].error
        assert not containers_of(docker_client, expired.id)
        assert get_artifacts(COMMIT, project="proj", run=expired.id).manifest["status"] == "interrupted"
    finally:
        for c in containers_of(docker_client, live.id):
            c.remove(force=True)


def test_of_many_reapers_exactly_one_acts(home):
    pid, started = dead_process()
    run = running_record(home, owner_host=this_host(), owner_pid=pid, owner_started=started,
                         lease_until=lease_until(3600))
    barrier = threading.Barrier(6)
    reaped: list[list[Run]] = []

    def reader() -> None:
        svc = RunService(executor=lambda: _NoEngine())  # containers are not the point here
        barrier.wait()
        reaped.append(svc.reap())

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(len(r) for r in reaped) == [0, 0, 0, 0, 0, 1]
    assert RunStore().get(run.id).status == "interrupted"


class _NoEngine:
    """An engine that is not there: reaping goes on and says so."""

    where = "docker"

    def remove_by_label(self, run_id: str) -> int:
        from soopervisor.errors import EngineUnavailable

        raise EngineUnavailable("cannot reach the Docker engine", "start it")

    def labelled(self) -> dict[str, int]:
        return {}

    def remove_stale_helpers(self) -> int:
        from soopervisor.errors import EngineUnavailable

        raise EngineUnavailable("cannot reach the Docker engine", "start it")


def test_without_an_engine_the_run_is_still_reaped_and_says_what_was_left(home):
    pid, started = dead_process()
    run = running_record(home, owner_host=this_host(), owner_pid=pid, owner_started=started,
                         lease_until=lease_until(3600))
    (seen,) = RunService(executor=_NoEngine).reap()
    assert seen.status == "interrupted" and "containers could not be removed" in seen.error
    assert RunStore().get(run.id).error == seen.error


def test_an_owner_that_died_after_storing_its_set_gets_the_sets_outcome(home, tmp_path):
    pid, started = dead_process()
    run = running_record(home, owner_host=this_host(), owner_pid=pid, owner_started=started,
                         lease_until=lease_until(3600))
    src = tmp_path / "set"
    (src / "files" / "output").mkdir(parents=True)
    (src / "files" / "output" / "data.csv").write_text("x\n1\n")
    (src / "soopervisor.log").write_text("all done\n")
    write_manifest(src, project="proj", commit=COMMIT, dirty=False, mode="sample", status="succeeded", exit_code=0,
                   started_at=run.started_at, finished_at=now_iso(), run_id=run.id)
    open_storage(None).put_set("proj", COMMIT, run.id, src)

    seen = RunService(executor=_NoEngine).get(run.id)

    assert seen.status == "succeeded" and "died after storing" in seen.error
    arts = get_artifacts(COMMIT, project="proj")
    assert arts.run_id == run.id and arts.path("output/data.csv").read_text() == "x\n1\n"


# -- the run store --------------------------------------------------------------------------------


def test_a_damaged_run_history_is_a_plain_error_naming_the_file(home):
    from soopervisor.runs import RunStoreUnavailable

    home.mkdir(parents=True, exist_ok=True)
    (home / "runs.sqlite").write_bytes(os.urandom(4096))
    with pytest.raises(RunStoreUnavailable) as e:
        soopervisor.list_runs()
    assert str(home / "runs.sqlite") in e.value.message and e.value.exit_code == 3
    assert "move it aside" in e.value.hint


# -- owners and leases of real runs ---------------------------------------------------------------

SLEEPER = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")
#: sleeps only when the SLOW secret is passed: one commit that succeeds, then a re-run that is stopped
SLOW_WHEN_ASKED = function_task(
    "Path('output').mkdir(exist_ok=True)\n"
    "Path('output/table.csv').write_text('a,b\\n1,2\\n')\n"
    "if os.environ.get('SLOW'):\n"
    "    print('SLEEPING', flush=True)\n"
    "    import time\n"
    "    time.sleep(600)\n"
)


def start_cli(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_line(proc: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; the run printed:\n{''.join(seen)[-3000:]}\n{proc.stderr.read()}")


@pytest.mark.docker
def test_a_live_owner_renews_its_lease_and_a_dead_one_is_reaped_from_another_host(tmp_path, engine, home,
                                                                                   monkeypatch):
    project = make_project(tmp_path, SLEEPER)
    proc = start_cli(project, env={"SOOPERVISOR_LEASE_SECONDS": "1"})
    try:
        wait_for_line(proc, "SLEEPING")
        # this reader plays a machine of its own: the owner's pid means nothing to it, only the lease
        monkeypatch.setattr(service, "this_host", lambda: "another-machine")
        leases = set()
        deadline = time.monotonic() + 120
        while len(leases) < 4 and time.monotonic() < deadline:  # three renewals seen: > one lease period
            (run,) = soopervisor.list_runs()
            assert run.status == "running", run.error
            leases.add(run.lease_until)
            time.sleep(0.1)
        assert len(leases) >= 4
        proc.kill()
        proc.wait()
        killed_at = time.monotonic()
        while soopervisor.list_runs()[0].status == "running":
            assert time.monotonic() - killed_at < 60, "never reaped"
            time.sleep(0.1)
        (run,) = soopervisor.list_runs()
        assert run.status == "interrupted" and "lease" in run.error
        assert not containers_of(engine, run.id)
        assert not service.staging_dir(run.id).exists()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.docker
def test_kill_9_of_the_cli_shows_interrupted_at_once_with_no_container_left(tmp_path, engine, home):
    project = make_project(tmp_path, SLEEPER)
    proc = start_cli(project)
    try:
        wait_for_line(proc, "SLEEPING")
        (run,) = RunStore().list()
        assert containers_of(engine, run.id)  # the container runs on without its owner
    finally:
        proc.kill()
        proc.wait()
    out = cli("runs", "--json", check=0).stdout  # the very next read, on this host
    (seen,) = json.loads(out)
    assert seen["status"] == "interrupted" and "is gone" in seen["error"]
    assert not containers_of(engine, run.id)
    assert not service.staging_dir(run.id).exists()
    arts = get_artifacts(run.commit, project="proj", run=run.id)
    assert arts.manifest["status"] == "interrupted"
    assert "SLEEPING" in (home / "artifacts" / "proj" / run.commit / run.id / "soopervisor.log").read_text()


# -- issue 11: a stopped re-run never hides the good set -----------------------------------------------


@pytest.mark.docker
@pytest.mark.parametrize("how", ["stop", "SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stopped_rerun_keeps_the_commits_good_set(tmp_path, engine, home, how):
    project = make_project(tmp_path, SLOW_WHEN_ASKED)
    sha = git(project, "rev-parse", "HEAD").strip()
    cli("run", str(project), check=0)
    (good,) = RunStore().list()

    # --force: an incremental re-run of the commit would find its one task up to date and never sleep
    proc = start_cli(project, "--secret", "SLOW", "--force", env={"SLOW": "1"})
    try:
        wait_for_line(proc, "SLEEPING")
        rerun = RunStore().list()[0]
        if how == "stop":
            assert soopervisor.stop_run(rerun.id, wait=60).status == "cancelled"
        else:
            proc.send_signal(getattr(signal, how))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert f"run {rerun.id} cancelled" in err

    rerun = soopervisor.get_run(rerun.id)
    assert rerun.status == "cancelled"
    assert not containers_of(engine, rerun.id)
    assert not list((home / "staging").iterdir())
    for ref in (sha, sha[:7], "latest"):
        arts = get_artifacts(ref, project="proj")
        assert arts.run_id == good.id and arts.manifest["status"] == "succeeded"
        assert arts.load("output/table.csv")["b"].tolist() == [2]
    cancelled = get_artifacts(sha, project="proj", run=rerun.id)
    assert cancelled.manifest["status"] == "cancelled"
    listing = cli("artifacts", "list", "--all", cwd=project, check=0).stdout
    assert good.id in listing and rerun.id in listing


@pytest.mark.parametrize("option", [("--memory", "lots"), ("--cpus", "nan"), ("--timeout", "inf"),
                                    ("--cpus", "1e9")])
def test_bad_limits_are_refused_before_anything_is_recorded(tmp_path, home, option):
    project = make_project(tmp_path)
    proc = cli("run", str(project), *option, env={"DOCKER_HOST": "unix:///nonexistent.sock"}, check=2)
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr and "Docker" not in proc.stderr
    assert not (home / "runs.sqlite").exists() or RunStore().list() == []


# -- issue 11: a closed pipe or terminal never corrupts a run ----------------------------------------------


@pytest.mark.docker
def test_a_closed_pipe_leaves_the_run_going_and_recorded_truthfully(tmp_path, engine, home):
    """`soopervisor run | head -3`."""
    files = function_task("for i in range(200):\n    print('line', i, flush=True)")
    project = make_project(tmp_path, files)
    proc = subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = [proc.stdout.readline() for _ in range(3)]
    proc.stdout.close()  # head exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 0, err
    assert len(head) == 3 and "Traceback" not in err and "Broken pipe" not in err and "engine" not in err

    (run,) = RunStore().list()
    assert run.status == "succeeded" and run.exit_code == 0
    assert not containers_of(engine, run.id) and not list((home / "staging").iterdir())
    set_log = (home / "artifacts" / "proj" / run.commit / run.id / "soopervisor.log").read_text()
    assert "line 199" in set_log and "the terminal went away" in set_log
    assert get_artifacts(run.commit, project="proj").run_id == run.id


@pytest.mark.docker
def test_an_on_line_callback_that_fails_is_detached_and_the_run_goes_on(tmp_path, engine, home):
    project = make_project(tmp_path, function_task("print('from the pipeline', flush=True)"))
    calls = []

    def broken(line: str) -> None:
        calls.append(line)
        raise ValueError("the reader's own bug")

    run = soopervisor.run(project, on_line=broken)
    assert run.status == "succeeded" and len(calls) == 1
    log = Path(run.log_path).read_text()
    assert "the log reader failed (ValueError: the reader's own bug)" in log and "from the pipeline" in log


@pytest.mark.docker
def test_a_process_that_exits_with_a_background_run_cancels_it_cleanly(tmp_path, engine, home):
    """A kernel shut down (or a server stopped) with a run going: cancelled and stored, not left to a reaper."""
    project = make_project(tmp_path, SLEEPER)
    script = (
        "import sys, threading, soopervisor\n"
        "seen = threading.Event()\n"
        "run = soopervisor.run(sys.argv[1], wait=False, on_line=lambda l: 'SLEEPING' in l and seen.set())\n"
        "assert seen.wait(300)\n"
        "print(run.id, flush=True)\n"  # and the interpreter exits, the run still going
    )
    proc = subprocess.run([sys.executable, "-c", script, str(project)], check=False, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    run = RunStore().get(proc.stdout.strip())
    assert run.status == "cancelled" and "exiting" in run.error
    assert not containers_of(engine, run.id) and not list((home / "staging").iterdir())
    assert get_artifacts(run.commit, project="proj", run=run.id).manifest["status"] == "cancelled"

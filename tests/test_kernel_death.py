"""A notebook kernel that dies mid-run (SIGKILL): its run never stays "running".

A real IPython kernel (jupyter_client) starts a background run the way a
notebook does; the kernel is killed while the container runs. The next read of
the runs, from another process (here: the test), marks the run interrupted,
removes its container and keeps its log as an interrupted set.
"""
from __future__ import annotations

import os

import pytest
from jupyter_client.manager import start_new_kernel

import soopervisor
from soopervisor.artifacts import list_sets

from .projects import function_task, make_project

pytestmark = pytest.mark.docker

SLOW = function_task(
    "import time\n"
    "for i in range(600):\n"
    "    print('tick', i, flush=True)\n"
    "    time.sleep(0.1)\n"
)


def execute(client, code: str) -> None:
    reply = client.execute_interactive(code, timeout=600)
    assert reply["content"]["status"] == "ok", reply["content"]


def test_a_killed_kernel_leaves_its_run_interrupted_and_no_container(tmp_path, engine, home):
    project = make_project(tmp_path, SLOW)
    manager, client = start_new_kernel(kernel_name="python3", env=dict(os.environ))
    try:
        execute(client, f"import soopervisor\nrun = soopervisor.run({str(project)!r}, wait=False)\nprint(run.id)")
        execute(client, "import time\nwhile 'tick 3' not in open(run.log_path).read(): time.sleep(0.2)")
        runs = soopervisor.list_runs()
        assert [r.status for r in runs] == ["running"]
        (run,) = runs
        assert engine.containers.list(filters={"label": f"soopervisor.run={run.id}"})
        kernel = manager.provisioner.process  # the kernel's Popen
        kernel.kill()  # SIGKILL: no clean-up of its own
        kernel.wait()
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)

    (after,) = soopervisor.list_runs()  # this read reaps
    # "gone": the dead pid was seen on this host, long before the lease would have expired
    assert after.status == "interrupted" and "gone" in after.error, after
    assert not engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})
    (kept,) = list_sets(run.project)
    assert (kept.run_id, kept.status) == (run.id, "interrupted")

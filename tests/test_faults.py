"""Fault injection: SIGKILL the CLI at 20 random points of a run.

Real Docker, real git, the real CLI in a subprocess. A tiny pipeline whose
environment is cached after the first run, so each run takes a few seconds;
the kill points are seeded random delays spread over a whole run (from the
start of the process to past its end). After every kill the next read of the
runs must leave each record finished (succeeded, failed, cancelled or
interrupted); at the end no container of any run may be left, no staging
folder, and every set the storage lists must be complete: a manifest whose
files all exist with the right sha256, of the status its run record says.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import soopervisor
from soopervisor.artifacts import list_sets

from .projects import function_task, make_project

pytestmark = pytest.mark.docker

KILLS = 20
SEED = int(os.environ.get("SOOPERVISOR_FAULT_SEED", "11"))
TINY = function_task(
    "for i in range(5):\n"
    "    print('tick', i, flush=True)\n"
    "Path('output/more').mkdir(parents=True, exist_ok=True)\n"
    "Path('output/more/numbers.csv').write_text('n\\n' + ''.join(f'{i}\\n' for i in range(1000)))\n"
)
FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}


def start(project: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_set(folder: Path) -> dict:
    """The manifest of a stored set, after checking every file it lists."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        f = folder / "files" / entry["path"]
        assert f.is_file() and f.stat().st_size == entry["size"] and sha256(f) == entry["sha256"], f
    log = manifest["log"]
    assert sha256(folder / log["path"]) == log["sha256"]
    return manifest


def test_sigkill_at_random_points_leaves_every_run_finished_and_every_set_whole(tmp_path, engine, home):
    project = make_project(tmp_path, TINY)
    started = time.monotonic()
    first = start(project)
    assert first.wait(timeout=900) == 0, first.stderr.read().decode()
    # the environment is cached now; a warm run, start of the process to its exit, sets the spread
    began = time.monotonic()
    warm = start(project)
    assert warm.wait(timeout=300) == 0, warm.stderr.read().decode()
    span = time.monotonic() - began

    rng = random.Random(SEED)
    for _ in range(KILLS):
        proc = start(project)
        time.sleep(rng.uniform(0.0, span * 1.1))
        proc.kill()
        proc.wait()
        proc.stderr.close()
        # the next read, on this host, reaps the run of the dead process at once
        for run in soopervisor.list_runs():
            assert run.status in FINISHED, (run, run.error)

    # one more whole run: the service still works, and sweeps what a kill left half-made
    last = start(project)
    assert last.wait(timeout=300) == 0, last.stderr.read().decode()

    runs = soopervisor.list_runs()
    assert len(runs) >= 3 and all(r.status in FINISHED for r in runs)
    for run in runs:
        left = engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})
        assert not left, f"containers left by run {run.id} ({run.status}): {left}"
    staging = home / "staging"
    assert not staging.exists() or not list(staging.iterdir())

    sets = list_sets("proj")
    assert not [s for s in sets if s.damaged], [s.damaged for s in sets if s.damaged]
    by_run = {s.run_id: s for s in sets}
    commit = runs[0].commit
    for run in runs:
        # every run that was recorded has its own set, complete, saying what its record says
        assert run.id in by_run, f"run {run.id} ({run.status}) has no set"
        manifest = check_set(home / "artifacts" / "proj" / commit / run.id)
        assert manifest["status"] == run.status == by_run[run.id].status, (run.id, run.error)
    outcomes = sorted(r.status for r in runs)
    print(f"\n{KILLS} kills (seed {SEED}) over a {span:.1f}s run, {time.monotonic() - started:.0f}s in all: {outcomes}")

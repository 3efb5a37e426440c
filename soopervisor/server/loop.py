"""The server's loop: poll the repositories that are due, reap lost leases, run what is queued.

One process does all three, so a single `soopervisor serve` is a whole server.
Everything it knows is in the database (heads, jobs, leases): killed at any
point and started again, it resumes — a job whose worker died is reaped when
its lease runs out and queued again (or marked interrupted once its attempts
are spent).
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from .config import ServerConfig
from .poller import Poller
from .queue import Queue
from .worker import Worker

#: seconds between rounds when there is nothing to do
IDLE = 1.0


def serve(config: ServerConfig, *, once: bool = False, stop: threading.Event | None = None,
          say: Callable[[str], None] = print) -> int:
    """Poll, reap and run until ``stop`` is set; ``once``: one poll of every repository, then run the
    queue until it is empty. Returns the number of jobs run."""
    from ..runs import lease_seconds
    from ..service import RunService

    stop = stop or threading.Event()
    queue = Queue(config.database, lease_seconds=lease_seconds())  # one lease period for runs and jobs
    poller = Poller(config, queue)
    worker = Worker(config, queue, poller)
    runs = RunService(storage=config.storage, image=config.image)
    ran = 0
    first = True
    while not stop.is_set():
        repos = config.repositories if (once and first) else poller.due()
        first = False
        for repo in repos:
            result = poller.poll(repo)
            if result.error:
                say(f"poll {result.repository}: {result.error}")
            for branch, commit in result.new:
                say(f"poll {result.repository}: {branch} is at {commit[:12]}")
        # runs whose owner died (a killed server): interrupted, their containers removed and logs kept
        for run in runs.reap():
            say(f"run {run.id}: its owner stopped; interrupted")
        for job in queue.reap(max_attempts=config.max_attempts):
            say(f"job {job.id} ({job.repository}@{job.commit[:12]}): its worker stopped; now {job.state}")
        while not stop.is_set():
            outcome = worker.run_one()
            if outcome is None:
                break
            ran += 1
            job = outcome.job
            what = f"{job.repository}@{job.commit[:12]} {job.project} {job.mode}"
            run = f" (run {outcome.run_id})" if outcome.run_id else ""
            said = f": {outcome.error}" if outcome.error and outcome.state != "succeeded" else ""
            say(f"job {job.id} {what}{run}: {outcome.state}{said}")
        if once:
            break
        stop.wait(IDLE)
    return ran

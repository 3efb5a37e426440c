"""The server's loop: poll the repositories that are due, reap lost leases, run what is queued.

One process does all of it, so a single `soopervisor serve` is a whole server.
Everything it knows is in the database (heads, jobs, leases): killed at any
point and started again, it resumes — a job whose worker died is reaped when
its lease runs out and queued again (or marked interrupted once its attempts
are spent).

Served (``soopervisor serve``), polling and running are two threads: a run of
an hour must not keep a webhook's "poll now" (or the readiness check's tick)
waiting for its end. ``--once`` does them one after the other, as a cron job wants.
The worker thread claims a job while one of the server's engines has a free slot
and runs each claimed job in a thread of its own (see worker.py and pool.py).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..engines import Engine
from .config import Repository, ServerConfig
from .poller import Poller
from .pool import EnginePool
from .queue import Job, Queue
from .worker import Outcome, Worker, server_engines

if TYPE_CHECKING:
    from .metrics import Metrics

#: seconds between rounds when there is nothing to do (a "poll now" or a new job wakes a round at once)
IDLE = 1.0


class ServerState:
    """What the loop's threads and the HTTP app share: the queue, the poller, the run service,
    the events that wake the threads and when the poll thread last went round."""

    def __init__(self, config: ServerConfig, *, stop: threading.Event | None = None,
                 say: Callable[[str], None] = print, metrics: Metrics | None = None) -> None:
        from ..runs import lease_seconds

        self.config, self.say, self.metrics = config, say, metrics
        self.stop = stop or threading.Event()
        self.queue = Queue(config.database, lease_seconds=lease_seconds())  # one lease period for runs and jobs
        self.poller = Poller(config, self.queue)
        self.wake = threading.Event()  # a poll was asked for (webhook, API): poll now
        self.work = threading.Event()  # a job was queued (poll, retry) or a slot freed: claim now
        _, engines = server_engines(config)
        self.pool = EnginePool(engines, say=say, on_back=self._engine_back)
        self.worker = Worker(config, self.queue, self.poller, pool=self.pool)
        # the service the API reads and stops runs through: the worker's storage, image and engines, the
        # same run store; a run the API starts goes to the first engine
        self.runs = self.worker.service(self.pool.names[0])
        #: time.monotonic() of the poll thread's last round (or repository polled); None: not yet
        self.last_tick: float | None = None
        self.threads: list[threading.Thread] = []
        self._waiting_said: str | None = None
        self._jobs: list[threading.Thread] = []  # the threads running claimed jobs, one per busy slot
        self._ran = 0  # jobs run to an outcome
        self._lock = threading.Lock()
        self._adopted = False

    def _engine_back(self, engine: Engine) -> None:
        """A held engine answers again: claim for its slots now, and remove what runs that ended while it
        was away left there (a run cut off from its engine could not remove its container)."""
        self.work.set()
        threading.Thread(target=self._guarded, args=(f"engine {engine.name}", lambda: self.runs.sweep(engine.name)),
                         name=f"soopervisor-sweep-{engine.name}", daemon=True).start()

    # -- what the API asks for ---------------------------------------------------------------

    def poll_now(self, name: str) -> None:
        """Poll ``name`` within a fraction of a second (UnknownRepository for a name not served)."""
        self.poller.poll_now(name)
        self.wake.set()

    def shutdown(self) -> None:
        """Stop both threads: the poll thread at once, the worker after the job at hand."""
        self.stop.set()
        self.wake.set()
        self.work.set()

    # -- one round -----------------------------------------------------------------------------

    def poll(self, repos: list[Repository] | tuple[Repository, ...]) -> int:
        """Poll ``repos``, saying what changed; the number of new heads."""
        new = 0
        for repo in repos:
            if self.stop.is_set():
                break
            result = self.poller.poll(repo)
            self.last_tick = time.monotonic()
            if self.metrics is not None:
                self.metrics.polled(result)
            if result.error:
                self.say(f"poll {result.repository}: {result.error}")
            for branch, commit in result.new:
                self.say(f"poll {result.repository}: {branch} is at {commit[:12]}")
            new += len(result.new)
        if new:
            self.work.set()
        return new

    def reap(self) -> None:
        """Runs whose owner died (a killed server): interrupted, their containers removed and logs
        kept; jobs whose lease ran out: queued again, or interrupted once their attempts are spent.
        The first round adopts: what finished runs left on the server's engines is removed. Only
        runs on the server's engines are looked at; held engines are asked again."""
        self.pool.check_held()
        if not self._adopted:
            reaped = self.runs.adopt()
            self._adopted = True
        else:
            reaped = self.runs.reap()
        for run in reaped:
            self.say(f"run {run.id}: its owner stopped; interrupted")
        reaped = self.queue.reap(max_attempts=self.config.max_attempts)
        if self.metrics is not None and reaped:
            self.metrics.leases_expired.inc(len(reaped))
        for job in reaped:
            self.say(f"job {job.id} ({job.repository}@{job.commit[:12]}): its worker stopped; now {job.state}")
        if any(job.state == "queued" for job in reaped):
            self.work.set()

    def dispatch(self) -> int:
        """Claim jobs while an engine has a free slot, each run in a thread of its own; how many started."""
        started = 0
        while not self.stop.is_set():
            claimed = self.worker.claim()
            if claimed is None:
                waiting = self.worker.waiting  # every engine or the storage down: said once, not every second
                if waiting != self._waiting_said:
                    self._waiting_said = waiting
                    if waiting:
                        self.say(f"work: claiming nothing until this is over: {waiting}")
                break
            job, engine = claimed
            self.say(f"engine {engine.name}: runs job {job.id} {_what(job)} ({engine.where})")
            thread = threading.Thread(target=self._run_job, args=(job, engine), name=f"soopervisor-job-{job.id}",
                                      daemon=True)
            with self._lock:
                self._jobs = [t for t in self._jobs if t.is_alive()] + [thread]
            thread.start()
            started += 1
        return started

    def _run_job(self, job: Job, engine: Engine) -> None:
        try:
            outcome: Outcome | None = None

            def run() -> None:
                nonlocal outcome
                outcome = self.worker.run_claimed(job, engine)

            self._guarded("work", run)
            if outcome is not None:
                with self._lock:
                    self._ran += 1
                ran = f" (run {outcome.run_id})" if outcome.run_id else ""
                said = f": {outcome.error}" if outcome.error and outcome.state != "succeeded" else ""
                self.say(f"job {job.id} {_what(job)}{ran}: {outcome.state}{said}")
        finally:
            self.work.set()  # a slot is free: claim again

    def running_jobs(self) -> list[threading.Thread]:
        """The threads of the jobs running now."""
        with self._lock:
            return [t for t in self._jobs if t.is_alive()]

    def run_queue(self) -> int:
        """Run queued jobs, one per free engine slot at once, until none can be claimed and every job
        started has ended (or stop); how many ran."""
        with self._lock:
            before = self._ran
        while True:
            self.work.clear()
            started = self.dispatch() if not self.stop.is_set() else 0
            running = self.running_jobs()
            if not running and not started:
                break
            self.work.wait(IDLE)  # a job ended (or one was queued): claim again
        with self._lock:
            return self._ran - before

    # -- the threads -------------------------------------------------------------------------

    def _guarded(self, what: str, step: Callable[[], object]) -> None:
        """One step of a thread; an error (the database gone for a while, Docker down) is said and
        the thread goes on at its next round: the server waits for it to come back."""
        from ..errors import SoopervisorError

        try:
            step()
        except SoopervisorError as e:
            self.say(f"{what}: {e.message}")
        except Exception as e:  # noqa: BLE001 - a thread that dies silently would stop the server's work
            self.say(f"{what}: unexpected error: {type(e).__name__}: {e}")

    def poll_forever(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()  # before the round: a request arriving during it wakes the next one
            self.last_tick = time.monotonic()
            self._guarded("poll", lambda: self.poll(self.poller.due()))
            self._guarded("reap", self.reap)
            self.last_tick = time.monotonic()
            self.wake.wait(IDLE)

    def work_forever(self) -> None:
        while not self.stop.is_set():
            self.work.clear()
            self._guarded("work", self.dispatch)
            self.work.wait(IDLE)  # jobs queued by another process are claimed within IDLE
        for thread in self.running_jobs():  # stopping: the jobs at hand end first
            thread.join()

    def start(self, *, poll: bool = True, work: bool = True) -> list[threading.Thread]:
        """The poll thread and the worker thread (daemons: a second Ctrl-C must not wait for them)."""
        targets = [("soopervisor-poll", self.poll_forever)] * poll + [("soopervisor-work", self.work_forever)] * work
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self.threads

    def join(self, timeout: float | None = None) -> None:
        for thread in self.threads:
            thread.join(timeout)


def _what(job: Job) -> str:
    return f"{job.repository}@{job.commit[:12]} {job.project} {job.mode}"


def serve(config: ServerConfig, *, once: bool = False, stop: threading.Event | None = None,
          say: Callable[[str], None] = print, state: ServerState | None = None) -> int:
    """Poll, reap and run until ``stop`` is set; ``once``: one poll of every repository, then run the
    queue until it is empty. Returns the number of jobs run (0 when not ``once``: two threads ran them)."""
    state = state or ServerState(config, stop=stop, say=say)
    if once:
        state.poll(config.repositories)
        state.reap()
        return state.run_queue()
    state.start()
    while not state.stop.wait(IDLE):
        pass
    state.shutdown()
    state.join()
    return 0

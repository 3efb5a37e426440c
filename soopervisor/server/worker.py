"""Running the queue's jobs through the run service: claim, check out, run, record — with the lease.

A worker claims a job (a lease it renews), checks out the commit from the
poller's mirror into a temporary folder, and starts the run through
:class:`soopervisor.service.RunService`, the one lifecycle every run has. What
happened decides the job's end:

* the run succeeded, failed or was cancelled: the job ends the same way (a
  failing pipeline is never retried);
* the project is invalid: the job fails with the validation report's first
  line (the poller goes on with other commits);
* the machine could not run it (no checkout, Docker or storage unavailable, the
  run interrupted): the job is released, queued again until its attempts are
  spent. The worker then holds off: an engine that does not answer takes no job
  until it answers (:mod:`soopervisor.server.pool`; the other engines go on), and
  while the storage does not answer nothing is claimed, so an outage of an hour
  spends one attempt, not all of them in a second; after another such failure
  it waits a while, longer each time.

Each job runs on one of the server's engines (server.yaml ``executors:``): a job is
claimed only when an engine has a free slot, and runs on the one with the most
free slots. The loop runs the claimed jobs in threads of their own, one per slot.

Every write carries the lease: a worker whose lease was taken over (it stalled,
the job was cancelled) cancels its run and writes nothing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..engines import Engine, Engines
from ..errors import EngineUnavailable, InvalidProject, SoopervisorError, StorageUnavailable
from ..runs import this_host
from .config import Repository, ServerConfig, resolve_secrets
from .poller import Poller
from .pool import EnginePool
from .queue import REAPED, Job, Queue

if TYPE_CHECKING:
    from ..service import RunService

#: run states that end a job as they are; "interrupted" is the machine's fault: the job is released
_FINAL = ("succeeded", "failed", "cancelled")
#: seconds the worker waits before claiming again after an infrastructure failure with no probe
#: (a checkout that failed): doubled per failure in a row, up to HOLD_CAP
HOLD_FIRST, HOLD_CAP = 2.0, 120.0


@dataclass
class Outcome:
    job: Job
    state: str  # the job's state after this attempt: a final one, or "queued" again
    run_id: str | None = None
    error: str | None = None


def server_engines(config: ServerConfig) -> tuple[Engines, list[Engine]]:
    """The executors file the server reads, and the engines its queue runs on (server.yaml ``executors:``;
    none: the engine `soopervisor run` would use)."""
    from .. import engines

    found = engines.load(Path(config.executors_file) if config.executors_file else None)
    if config.engines:
        return found, list(config.engines)
    return found, [found.pick(None)]  # a configuration made in code, not read by config.load()


class Worker:
    """Claims jobs while an engine has a free slot and runs each on it; several workers (threads or
    processes) share one queue. ``run_one`` claims and runs one job; the loop uses ``claim`` and
    ``run_claimed`` to run one job per free slot at once."""

    def __init__(self, config: ServerConfig, queue: Queue, poller: Poller, *, name: str | None = None,
                 pool: EnginePool | None = None) -> None:
        self.config, self.queue, self.poller = config, queue, poller
        self.name = name or f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._repos = {r.name: r for r in config.repositories}
        self.engines, engines = server_engines(config)
        self.pool = pool or EnginePool(engines)
        self._lock = threading.Lock()  # the holds below: written by the threads that run jobs
        # after an infrastructure failure: what must answer before the next claim, or until when to wait
        self._probe: Callable[[], None] | None = None
        self._hold_until = 0.0
        self._holds = 0  # infrastructure failures in a row
        #: why the worker claims nothing now (the storage is down, every engine is held, ...); None when it claims
        self.waiting: str | None = None

    def service(self, engine: str | None = None) -> RunService:
        """A run service of this server: its storage and image, on ``engine``, reaping only on its engines."""
        from ..service import RunService

        return RunService(storage=self.config.storage, image=self.config.image, engine=engine,
                          engines=self.engines, scope=self.pool.names)

    def run_one(self) -> Outcome | None:
        """Claim the next job and run it to its end; None when nothing can be claimed now (none is
        queued, no engine has a free slot that answers, or the worker holds off after an
        infrastructure failure: see ``waiting``)."""
        claimed = self.claim()
        return self.run_claimed(*claimed) if claimed is not None else None

    def claim(self) -> tuple[Job, Engine] | None:
        """The next job and the engine it runs on (a slot taken); None when none can be claimed now."""
        if not self._ready():
            return None
        engine = self.pool.acquire()
        if engine is None:
            self.waiting = self.pool.waiting()
            return None
        try:
            job = self.queue.claim(self.name, concurrency=self.config.concurrency,
                                   per_repository=self.config.per_repository)
        except BaseException:
            self.pool.release(engine)
            raise
        if job is None:
            self.pool.release(engine)
            return None
        return job, engine

    def run_claimed(self, job: Job, engine: Engine) -> Outcome:
        """Run a claimed job on ``engine`` to its end, and give the engine's slot back."""
        outcome: Outcome | None = None
        try:
            repo = self._repos.get(job.repository)
            if repo is None:  # the repository left the configuration after the job was queued
                self.queue.finish(job, self.name, "cancelled",
                                  error=f"repository {job.repository} is no longer served")
                outcome = Outcome(job, "cancelled", error="repository no longer served")
                return outcome
            work = Path(tempfile.mkdtemp(prefix="soopervisor-serve-"))
            try:
                outcome = self._run(job, repo, work, engine)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if outcome.state in _FINAL:
                with self._lock:
                    self._holds = 0
            return outcome
        finally:
            self.pool.release(engine, answered=outcome is not None and outcome.run_id is not None
                              and outcome.state in _FINAL)

    def _ready(self) -> bool:
        """Whether to claim now: yes, unless an infrastructure failure is not over (its probe still
        fails, or its wait has not run out)."""
        with self._lock:
            probe, hold_until = self._probe, self._hold_until
        if probe is not None:
            try:
                probe()
            except SoopervisorError as e:
                self.waiting = e.message
                return False
            with self._lock:
                if self._probe is probe:
                    self._probe = None
        elif time.monotonic() < hold_until:
            return False
        self.waiting = None
        return True

    def _hold(self, e: SoopervisorError | None, engine: Engine | None = None) -> None:
        """After a released job: an engine that does not answer takes no job until it does (the others
        go on); nothing is claimed until the storage answers again, or (another cause) for a while,
        doubled per failure in a row."""
        if isinstance(e, EngineUnavailable) and engine is not None:
            self.pool.hold(engine, e.message)
            return
        with self._lock:
            self._holds += 1
            if isinstance(e, EngineUnavailable):
                from ..executors.docker import connect

                self._probe = lambda: connect().close()
            elif isinstance(e, StorageUnavailable):
                from ..storage import open_storage

                self._probe = lambda: open_storage(self.config.storage).check_writable()
            else:
                self._hold_until = time.monotonic() + min(HOLD_FIRST * 2 ** (self._holds - 1), HOLD_CAP)
        self.waiting = e.message if e is not None else "an infrastructure failure"

    def _run(self, job: Job, repo: Repository, work: Path, engine: Engine) -> Outcome:
        from ..service import RunOptions

        ended = self._ended_before(job)
        if ended is not None:
            return ended
        try:
            tree = self.poller.checkout(repo, job.commit, work / "repo")
            secrets = resolve_secrets(repo)
        except SoopervisorError as e:
            return self._release(job, f"cannot check out {job.commit[:12]}: {e.message}", cause=e)
        service = self.service(engine.name)
        # forced for now: a polled commit rebuilds every task (incremental runs: CLI, API, Jupyter)
        opts = RunOptions(path=tree / job.project, sample=job.mode == "sample", secret_values=secrets, force=True)
        try:
            active = service.start(opts)
        except InvalidProject as e:
            first = e.report.errors[0].what if e.report.errors else e.message
            error = f"the project is not valid: {first}"
            if self.queue.finish(job, self.name, "failed", error=error):
                self._notify(repo, job)
            return Outcome(job, "failed", error=error)
        except SoopervisorError as e:  # Docker, storage: not the commit's fault
            return self._release(job, e.message, cause=e, engine=engine)
        run_id = active.run.id
        if self.queue.attach_run(job, self.name, run_id):
            lost = self._keep_lease(job, active)
        else:  # cancelled (or taken over) while it was checked out and started: stop it now, not at a renewal
            lost = threading.Event()
            lost.set()
            active.cancel("its job was cancelled or taken over by another worker")
        try:
            run = active.result()
        except SoopervisorError as e:
            return self._release(job, e.message, run_id, cause=e, engine=engine)
        if lost.is_set():  # taken over or cancelled: the newer record stands
            return Outcome(job, "cancelled", run_id, "the job's lease was lost")
        if run.status in _FINAL:
            error = None if run.status == "succeeded" else run.error
            if self.queue.finish(job, self.name, run.status, error=error):
                self._notify(repo, job, run)
            return Outcome(job, run.status, run_id, error)
        return self._release(job, run.error or f"the run ended {run.status}", run_id)

    def _ended_before(self, job: Job) -> Outcome | None:
        """A job claimed again whose previous attempt's run did end (the server died after the run stored
        its set, before the job was finished): the job ends as that run did, rather than run twice.

        Only after a reaped lease: a job a worker released had a run that ended for the machine's fault
        (its engine lost mid-run, recorded ``failed`` with that reason), which is run again."""
        if not job.run_id or not (job.error or "").startswith(REAPED):
            return None
        try:  # find() reaps first: a dead owner's run takes the outcome of the set it stored, if any
            run = self.service().find(job.run_id)
        except SoopervisorError:
            return None  # the run store cannot say: run it again, as for a run that left nothing
        if run is None or run.status not in ("succeeded", "failed"):  # a cancelled one: its lease was lost
            return None
        error = None if run.status == "succeeded" else run.error
        if self.queue.finish(job, self.name, run.status, error=error):
            self._notify(self._repos[job.repository], job, run)
        return Outcome(job, run.status, run.id, error)

    def _keep_lease(self, job: Job, active) -> threading.Event:
        """Renew the job's lease while the run goes on; when it is lost, cancel the run."""
        lost = threading.Event()
        every = max(0.2, self.queue.lease_seconds / 3)

        def renew() -> None:
            while not active.wait(every):
                try:
                    kept = self.queue.renew(job, self.name)
                except StorageUnavailable:
                    # the database away for a while: the lease holds until lease_until; past it another
                    # server may take the job, so this run stops rather than run twice
                    if time.time() < (job.lease_until or 0):
                        continue
                    kept = False
                if not kept:
                    lost.set()
                    active.cancel("its job was cancelled or taken over by another worker")
                    return

        threading.Thread(target=renew, name=f"lease-{job.id}", daemon=True).start()
        return lost

    def _release(self, job: Job, error: str, run_id: str | None = None, *,
                 cause: SoopervisorError | None = None, engine: Engine | None = None) -> Outcome:
        """Queue the job again (the machine's fault, not the commit's), its error saying what to do."""
        if cause is not None and cause.hint:
            error = f"{error} (hint: {cause.hint})"
        self._hold(cause, engine)
        state = self.queue.release(job, self.name, error, max_attempts=self.config.max_attempts)
        if state == "failed" and job.state == "failed":  # attempts spent (and written by us): the job's end
            self._notify(self._repos[job.repository], job)
        return Outcome(job, state, run_id, error)

    def _notify(self, repo: Repository, job: Job, run=None) -> None:
        """Tell the job's end (GitHub, a webhook) when the repository asks for it; never fails the job."""
        if repo.notify is None:
            return
        from .notify import notify  # imported only by a server that notifies

        notify(repo, job, run, storage=self.config.storage)

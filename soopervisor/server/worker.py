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
  spent.

Every write carries the lease: a worker whose lease was taken over (it stalled,
the job was cancelled) cancels its run and writes nothing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidProject, SoopervisorError
from ..runs import this_host
from .config import Repository, ServerConfig, resolve_secrets
from .poller import Poller
from .queue import Job, Queue

#: run states that end a job as they are; "interrupted" is the machine's fault: the job is released
_FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Outcome:
    job: Job
    state: str  # the job's state after this attempt: a final one, or "queued" again
    run_id: str | None = None
    error: str | None = None


class Worker:
    """Claims and runs jobs one at a time; several workers (threads or processes) share one queue."""

    def __init__(self, config: ServerConfig, queue: Queue, poller: Poller, *, name: str | None = None) -> None:
        self.config, self.queue, self.poller = config, queue, poller
        self.name = name or f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._repos = {r.name: r for r in config.repositories}

    def run_one(self) -> Outcome | None:
        """Claim the next job and run it to its end; None when nothing can be claimed now."""
        job = self.queue.claim(self.name, concurrency=self.config.concurrency,
                               per_repository=self.config.per_repository)
        if job is None:
            return None
        repo = self._repos.get(job.repository)
        if repo is None:  # the repository left the configuration after the job was queued
            self.queue.finish(job, self.name, "cancelled", error=f"repository {job.repository} is no longer served")
            return Outcome(job, "cancelled", error="repository no longer served")
        work = Path(tempfile.mkdtemp(prefix="soopervisor-serve-"))
        try:
            return self._run(job, repo, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(self, job: Job, repo: Repository, work: Path) -> Outcome:
        from ..service import RunOptions, RunService

        try:
            tree = self.poller.checkout(repo, job.commit, work / "repo")
            secrets = resolve_secrets(repo)
        except SoopervisorError as e:
            return self._release(job, f"cannot check out {job.commit[:12]}: {e.message}")
        # the run service reads secret values from the environment by name: file secrets are put there
        os.environ.update({name: value.decode("utf-8", "surrogateescape") for name, value in secrets.items()})
        service = RunService(storage=self.config.storage, image=self.config.image)
        opts = RunOptions(path=tree / job.project, sample=job.mode == "sample", secrets=sorted(secrets))
        try:
            active = service.start(opts)
        except InvalidProject as e:
            first = e.report.errors[0].what if e.report.errors else e.message
            error = f"the project is not valid: {first}"
            if self.queue.finish(job, self.name, "failed", error=error):
                self._notify(repo, job)
            return Outcome(job, "failed", error=error)
        except SoopervisorError as e:  # Docker, storage: not the commit's fault
            return self._release(job, e.message)
        run_id = active.run.id
        self.queue.attach_run(job, self.name, run_id)
        lost = self._keep_lease(job, active)
        try:
            run = active.result()
        except SoopervisorError as e:
            return self._release(job, e.message, run_id)
        if lost.is_set():  # taken over or cancelled: the newer record stands
            return Outcome(job, "cancelled", run_id, "the job's lease was lost")
        if run.status in _FINAL:
            error = None if run.status == "succeeded" else run.error
            if self.queue.finish(job, self.name, run.status, error=error):
                self._notify(repo, job, run)
            return Outcome(job, run.status, run_id, error)
        return self._release(job, run.error or f"the run ended {run.status}", run_id)

    def _keep_lease(self, job: Job, active) -> threading.Event:
        """Renew the job's lease while the run goes on; when it is lost, cancel the run."""
        lost = threading.Event()
        every = max(0.2, self.queue.lease_seconds / 3)

        def renew() -> None:
            while not active.wait(every):
                if not self.queue.renew(job, self.name):
                    lost.set()
                    active.cancel("its job was cancelled or taken over by another worker")
                    return

        threading.Thread(target=renew, name=f"lease-{job.id}", daemon=True).start()
        return lost

    def _release(self, job: Job, error: str, run_id: str | None = None) -> Outcome:
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

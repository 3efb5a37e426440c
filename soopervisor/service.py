"""The run service: one configuration and every operation on runs.

    service = RunService(storage=None, image=None)      # executor, run store: defaults
    active = service.start(RunOptions(path="."))         # checked, recorded, running in a thread
    run = active.result()                                # or service.run(opts): the same, waited for
    service.stop(run_id); service.follow(run_id, start=0); service.list(); service.adopt()

One run's own sequence is in :mod:`soopervisor.lifecycle`. The process that
executes a run owns it: its record names the owner (host, pid, process start
time) and a lease the owner renews. Any reader of runs (``list``, ``get``,
``stop``) first reaps runs whose owner is gone: marked ``interrupted``,
containers removed by label, staging folder removed, what can be kept stored.
The CLI, the magics, the Jupyter handlers and the GitHub Action only translate
to this service.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import posixpath
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import git
from .environment import LOCK_FILE, env_inputs
from .errors import EngineUnavailable, InvalidProject, RunNotFound, SoopervisorError, UsageError
from .executors import Executor
from .lifecycle import (
    FILES,
    LOG_NAME,
    WATCH_EVERY,
    ActiveRun,
    Prepared,
    _append_log,
    _reason,
    _write_manifest,
    active_run,
    active_runs,
    cancel_marker,
    staging_dir,
    staging_root,
)
from .logtail import LogTail
from .runs import Run, RunStore, now_iso, owner_gone, this_host

if TYPE_CHECKING:
    from .engines import Engine, Engines
    from .project import Report
    from .remotes.follower import ActiveRemote


@dataclass
class RunOptions:
    """What one run is asked to do; the service's configuration says where (storage, image, engine)."""

    path: str | os.PathLike = "."
    sample: bool = True
    secrets: Iterable[str] = ()
    #: secret values given by the caller instead of named host variables (the server's secrets of a
    #: repository, from files or its own environment): redacted like ``secrets``; never put in os.environ
    secret_values: Mapping[str, bytes] | None = None
    ca_bundle: str | os.PathLike | None = None
    timeout: float | str | None = None
    cpus: float | str | None = None
    memory: int | str | None = None  # bytes, or a size with a unit ("2g")
    on_line: Callable[[str], None] | None = None
    #: what ``ploomber build --entry-point`` gets (a spec, a pattern, a dotted path); None: found as ploomber does
    entry_point: str | None = None
    #: the pipeline stage's network: None = SOOPERVISOR_NETWORK, else "default"; checked by prepare()
    network: str | None = None
    #: rebuild every task (``ploomber build --force``): None = SOOPERVISOR_FORCE, else False (incremental,
    #: starting from the nearest ancestor's set); checked by prepare()
    force: bool | None = None
    #: run this commit (a full SHA of the repository at ``path``) instead of the checkout's HEAD:
    #: inspected in a temporary clean checkout; the user's own is never touched
    commit: str | None = None
    #: a recorded lock (pinned requirements, with hashes) installed instead of the project's
    #: environment spec, nothing resolved again: ``soopervisor reproduce``
    environment_lock: bytes | None = None
    #: lines the run's log starts with, after its own first line (what a caller such as
    #: ``reproduce`` says about this run); they pass the redactor like every line
    notes: tuple[str, ...] = ()


def _executor_on(engine) -> Executor:
    from .executors import for_engine

    return for_engine(engine)


# -- the exit hook -----------------------------------------------------------------------------

_HOOK_LOCK = threading.Lock()
_AT_EXIT = threading.Event()  # set once the exit hook is registered


def _cancel_at_exit(wait: float = 15.0) -> None:
    """At interpreter exit (a kernel shut down, a server stopped) cancel this process's runs cleanly.

    Their threads would die with the interpreter, leaving containers to the
    next reaper; cancelling records them ``cancelled`` with their sets stored.
    """
    active = active_runs()
    for a in active:
        a.leave("soopervisor's process is exiting")  # a local run is cancelled, a remote one let go
    deadline = time.monotonic() + wait
    for a in active:
        a.done.wait(max(0.0, deadline - time.monotonic()))


def _register_exit_hook() -> None:
    """Run _cancel_at_exit when the interpreter exits, while thread pools still work.

    threading's exit hooks run before non-daemon threads are joined, in reverse
    order of registration: registered after concurrent.futures' own hook, ours
    runs first, so storing the cancelled run's set can still use a thread pool.
    """
    import concurrent.futures.thread  # noqa: F401 - registers its hook first

    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(_cancel_at_exit)
    except RuntimeError:  # already shutting down
        pass


def _ensure_exit_hook() -> None:
    """Register the exit hook once per process, when its first run starts."""
    with _HOOK_LOCK:
        if not _AT_EXIT.is_set():
            _AT_EXIT.set()
            _register_exit_hook()


class RunService:
    """One configuration — storage, image, executor, run store — and every operation on runs.

    ``executor`` makes the executor of one run (each run has its own: it holds
    that run's container); by default it is a Docker executor on the engine named
    ``engine`` (None: SOOPERVISOR_EXECUTOR's, else the executors file's default, else
    DOCKER_HOST's). A run's record keeps its engine's name: stopping, reaping and
    adopting it reach the engine it ran on, whatever this service's engine is.
    """

    def __init__(
        self,
        storage: str | None = None,
        image: str | None = None,
        executor: Callable[[], Executor] | None = None,
        store: RunStore | None = None,
        engine: str | None = None,
        engines: Engines | None = None,
        scope: Iterable[str] | None = None,
    ) -> None:
        self.storage = storage
        self.image = image
        self.engine = engine
        self.executor_factory = executor
        self._store = store
        #: the configured engines names are picked from (None: the executors file, read when needed)
        self.engines = engines
        #: reap and adopt only runs that ran on these engines (a server's); None: runs on any engine
        self.scope = tuple(scope) if scope is not None else None

    def _pick(self, name: str | None) -> Engine:
        from . import engines

        return (self.engines or engines.load()).pick(name)

    def make_executor(self) -> Executor:
        """An executor on this service's engine (EngineUnavailable when it does not answer)."""
        if self.executor_factory is not None:
            return self.executor_factory()
        return _executor_on(self._pick(self.engine))

    def check_engine(self) -> None:
        """UsageError when this service's engine is not configured or its configuration is not usable."""
        if self.executor_factory is None:
            from . import engines

            engines.check_transport(self._pick(self.engine))

    def in_scope(self, run: Run) -> bool:
        """Whether ``run`` ran on an engine this service reaps and adopts on."""
        from . import engines

        return self.scope is None or (run.engine or engines.LOCAL) in self.scope

    def executor_of(self, run: Run) -> Executor:
        """An executor on the engine ``run`` ran on, by the name its record keeps (a record of a
        soopervisor before engines had names ran on ``local``); EngineUnavailable when that engine
        is no longer configured or does not answer."""
        if self.executor_factory is not None:
            return self.make_executor()
        from . import engines

        name = run.engine or engines.LOCAL
        try:
            engine = self._pick(name)
        except SoopervisorError as e:
            raise EngineUnavailable(f"its engine {name!r} is not usable: {e.message}", e.hint) from None
        return _executor_on(engine)

    @property
    def store(self) -> RunStore:
        # opened when first used: building a service is free and never fails
        if self._store is None:
            self._store = RunStore()
        return self._store

    # -- starting ----------------------------------------------------------------------
    def prepare(self, opts: RunOptions) -> Prepared:
        """Every check that can fail before anything is recorded or Docker is touched."""
        from . import downloads
        from .environment import installer_setting
        from .executors.docker import ca_bundle_from_env
        from .options import check_force, check_limits, check_network, secret_bytes
        from .storage import open_storage

        limits = check_limits(opts.timeout, opts.cpus, opts.memory)
        self.check_engine()  # an unknown executor or a bad executors file: said before anything else runs
        opts.network = check_network(opts.network)
        # SOOPERVISOR_INSTALLER and SOOPERVISOR_DOWNLOAD_CACHE: read once, said before anything runs
        installer = installer_setting()
        downloads.mode()
        forced_by = "--force" if opts.force is not None else "SOOPERVISOR_FORCE"
        opts.force = check_force(opts.force)
        report = self._inspect(opts)
        if not report.ok:
            raise InvalidProject(report)
        project = report.project
        secrets = {**secret_bytes(opts.secrets), **(opts.secret_values or {})}
        ca = ca_bundle_from_env(opts.ca_bundle)
        storage = open_storage(self.storage)
        storage.check_writable()

        def read(rel: str) -> bytes | None:
            # rel is relative to the project folder; the environment spec may be above it
            path = posixpath.normpath(posixpath.join(project.subdir, rel))
            return None if path.startswith("../") else git.show_file(project.repo_root, project.commit, path)

        if opts.environment_lock is not None:
            # the lock replaces the spec: the environment is built from it alone
            project.env_file, project.pip_requirements, project.conda_only = LOCK_FILE, [], []
            project.python_pin = None
            inputs: dict[str, bytes] | None = {LOCK_FILE: opts.environment_lock}
        else:
            # validation already refused uncommitted pipeline.yaml and environment
            # files; what it cannot see are the files those include (-r base.txt)
            inputs = env_inputs(project, read)
        return Prepared(report, project, secrets, ca, storage, inputs, limits, forced_by,
                        locked=opts.environment_lock is not None, installer=installer)

    def _inspect(self, opts: RunOptions) -> Report:
        """The project at ``opts.path``; at ``opts.commit`` when asked, inspected in a clean checkout of it."""
        from .project import inspect
        from .project.git_facts import toplevel_and_origin

        if opts.commit is None:
            return inspect(opts.path, entry_point=opts.entry_point, image=self.image)
        found = toplevel_and_origin(Path(os.fspath(opts.path)).expanduser())
        if found is None:
            return inspect(opts.path, entry_point=opts.entry_point, image=self.image)  # says what is wrong
        top, subdir = Path(found[0]), found[1]
        if not git.has_commit(top, opts.commit):
            raise UsageError(f"commit {opts.commit[:7]} is not in the repository at {top}",
                             "fetch it first (git fetch --all), or run this where it was committed")
        # named like the repository's folder: a project named after its folder keeps its name
        with git.checkout_of(top, opts.commit, top.name) as checkout:
            report = inspect(checkout / subdir, entry_point=opts.entry_point, image=self.image)
        if report.project is not None:
            # the run reads the commit from the repository itself (git archive), never the checkout
            report.project.path, report.project.repo_root = (top / subdir).resolve(), top.resolve()
        return report

    def start(self, opts: RunOptions, *, daemon: bool = True) -> ActiveRun:
        """Check everything, record the run as running, execute it in a thread of this process.

        Raises before recording anything when the options, the project,
        secrets, storage or the engine are not usable.
        """
        prepared = self.prepare(opts)
        executor = self.make_executor()  # EngineUnavailable here: nothing recorded, nothing to clean
        self._sweep(executor)
        active = ActiveRun(self, opts, prepared, executor)
        _ensure_exit_hook()
        active.begin(daemon=daemon)
        return active

    def start_remote(self, opts: RunOptions, remote: str) -> ActiveRemote:
        """Queue the project's commit on the remote named ``remote`` and follow it from this process.

        The project is validated here first; the remote then checks what only it can (the commit
        pushed, a workflow, the token). Options that belong to this machine's engines (secrets,
        limits, image, storage, engine) are the remote's to set and are refused here.
        """
        from .remotes import config as remotes
        from .remotes.follower import ActiveRemote, new_log, own

        unsupported = [name for name, value in (
            ("--secret", opts.secrets), ("--timeout", opts.timeout), ("--cpus", opts.cpus),
            ("--memory", opts.memory), ("--network", opts.network), ("--ca-bundle", opts.ca_bundle),
            ("--force", opts.force), ("--image", self.image), ("--storage", self.storage), ("--executor", self.engine),
        ) if value]
        if unsupported:
            raise UsageError(f"{', '.join(unsupported)} cannot be given to a remote run: the remote decides them",
                             f"set them where {remote} is configured (the server's server.yaml, or the workflow "
                             "file `soopervisor github init` wrote), or run here without --remote")
        target = remotes.load(remote)
        report = self._inspect(opts)
        if not report.ok:
            raise InvalidProject(report)
        project = report.project
        mode = "sample" if opts.sample and project.declares_sample else "full"
        submitted = target.submit(repo_root=str(project.repo_root), project=project.subdir or ".",
                                  commit=project.commit, mode=mode)
        run = Run(project=project.name, project_path=str(project.path), commit=project.commit, dirty=project.dirty,
                  mode=mode, status="queued", started_at=now_iso(), storage_url=submitted.storage_url,
                  executor=submitted.describe or remote, remote=remote, remote_ref=json.dumps(submitted.ref))
        own(self.store, run)
        new_log(run)
        self.store.add(run)
        active = ActiveRemote(self.store, run, target, opts.on_line)
        active.note(f"run {run.id} of {run.project} at {run.commit[:7]} ({mode}) on {run.executor}")
        for w in report.warnings:
            active.note(f"warning: {w.what}")
        if project.dirty:
            active.note("warning: uncommitted changes are not part of it: the remote runs the commit as pushed")
        _ensure_exit_hook()
        active.begin()
        return active

    def attach(self, run_id: str, *, on_line: Callable[[str], None] | None = None) -> ActiveRemote | None:
        """Follow a remote run from this process when nobody follows it any more (its kernel
        restarted, its terminal closed); the follower resumes after the lines the log has.
        None when there is nothing to do here: the run ended, is not remote, or another live
        process follows it (its log file and record keep growing all the same)."""
        from .remotes import config as remotes
        from .remotes.follower import ActiveRemote, own, owner_left

        run = self.store.get(run_id)
        if run is None:
            raise RunNotFound(f"no run with id '{run_id}'", "soopervisor.list_runs() or `soopervisor runs` shows the ids")
        if run.remote is None or run.finished:
            return None
        active = active_run(run_id)
        if active is not None:
            return active if getattr(active, "remote_run", False) else None
        why = owner_left(run)
        if why is None:
            return None
        target = remotes.load(run.remote)
        read = replace(run)
        if not own(self.store, run, claim_from=read):
            return None  # another process attached first
        if run.error:  # what stopped the last follower is tried again here
            self.store.update(run, error=None)
        active = ActiveRemote(self.store, run, target, on_line)
        active.note(f"following run {run.id} on {run.executor} again ({why})")
        _ensure_exit_hook()
        active.begin()
        return active

    def attach_all(self) -> list[Run]:
        """Follow every remote run nobody follows (a long-lived process: the Jupyter server)."""
        attached = []
        for run in self.store.following():
            if run.error:  # its last follower failed for good (a token revoked): only a person's attach retries
                continue
            with contextlib.suppress(SoopervisorError):
                if self.attach(run.id) is not None:
                    attached.append(run)
        return attached

    def run(self, opts: RunOptions) -> Run:
        """Start and wait. Ctrl-C (or a Cancelled from a SIGTERM handler) cancels the run,
        waits until it is recorded and stored, then goes on up; errors that stopped the
        run (engine lost, storage failed) are raised after it is recorded."""
        return self.start(opts).result()

    # -- reading (each read reaps first) ---------------------------------------------------
    def find(self, run_id: str) -> Run | None:
        self.reap()
        return self.store.get(run_id)

    def get(self, run_id: str) -> Run:
        run = self.find(run_id)
        if run is None:
            raise RunNotFound(f"no run with id '{run_id}'", "soopervisor.list_runs() or `soopervisor runs` shows the ids")
        return run

    def list(self, project: str | None = None, limit: int | None = None) -> list[Run]:
        """Runs, newest first; runs whose owner is gone are reaped before."""
        self.reap()
        return self.store.list(project=project, limit=limit)

    def follow(self, run_id: str, start: int = 0) -> LogTail:
        """The run's log from line ``start`` on, as it grows (redacted lines only)."""
        run = self.get(run_id)
        return LogTail(run.log_path or os.devnull, start=start)

    # -- stopping --------------------------------------------------------------------------
    def stop(self, run_id: str, wait: float = 30.0) -> Run:
        """Cancel a run and remove its container, whichever process runs it.

        A run of this process is cancelled directly; one of another process
        gets a cancel marker, which its owner honours within a fraction of a
        second, and its containers are killed. A finished run is returned
        unchanged; a run whose owner is gone ends ``interrupted`` (reaped).
        Returns the run as it is after at most ``wait`` seconds.
        """
        run = self.get(run_id)
        if run.finished:
            return run
        if run.remote is not None:
            return self._stop_remote(run, wait)
        active = active_run(run_id)
        if active is not None:
            active.cancel("stopped")
            active.done.wait(wait)
            return active.run
        return self._stop_foreign(run, wait)

    def _stop_remote(self, run: Run, wait: float) -> Run:
        """Ask the remote to stop the run, and wait for its end to be followed (by whoever follows it)."""
        from .remotes import config as remotes

        active = active_run(run.id) or self.attach(run.id)
        if active is not None:
            active.cancel("stopped")
        else:
            remotes.load(run.remote).cancel(run.ref)  # type: ignore[arg-type] - remote is set
        deadline = time.monotonic() + wait
        current: Run | None = run
        while time.monotonic() < deadline:
            current = self.store.get(run.id)
            if current is None or current.finished:
                break
            time.sleep(WATCH_EVERY)
        return current or run

    def _stop_foreign(self, run: Run, wait: float) -> Run:
        marker = cancel_marker(run.id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        executor: Executor | None = None
        deadline = time.monotonic() + wait
        current: Run | None = run
        while time.monotonic() < deadline:
            # killing (not removing) lets the owner see its container exit, record
            # the cancel and remove the container itself, as it always does
            try:
                executor = executor or self.executor_of(run)
                executor.kill_by_label(run.id)
            except EngineUnavailable:
                pass  # the marker alone stops it
            current = self.find(run.id)  # reaps: a dead owner's run ends interrupted
            if current is None or current.finished:
                break
            time.sleep(WATCH_EVERY)
        return current or run

    # -- owners that are gone ----------------------------------------------------------------
    def reap(self) -> list[Run]:
        """Mark interrupted every running run whose owner is gone, and clean up after it.

        Same host: a dead owner pid (or a pid now held by another process) is
        seen at once. Any host: a lease not renewed in time. The record is
        changed with a conditional update on the lease read, so of two
        reapers exactly one acts.
        """
        host, reaped = this_host(), []
        for run in self.store.running():
            if not self.in_scope(run):  # another engine's run: left to whoever uses that engine
                continue
            if run.remote is not None:  # it goes on at the remote whoever follows it: attach() resumes it
                continue
            ours = active_run(run.id) is not None
            why = None if ours else owner_gone(run, host)
            if why is None:
                continue
            claimed = self.store.update_if(
                run.id,
                {"status": "running", "lease_until": run.lease_until, "owner_pid": run.owner_pid},
                status="interrupted", finished_at=now_iso(), error=f"interrupted: {why}",
            )
            if claimed:
                reaped.append(self._clean_up(self.store.get(run.id) or run, why))
        return reaped

    def _clean_up(self, run: Run, why: str) -> Run:
        """After the owner of ``run`` died: containers, staging folder, what can be kept."""
        problems: list[str] = []
        executor = self._remove_containers(run, problems)
        _append_log(run, f"soopervisor: run {run.id} interrupted: {why}\n")
        kept = self._keep_what_can_be_kept(run, why, problems)
        shutil.rmtree(staging_dir(run.id), ignore_errors=True)
        cancel_marker(run.id).unlink(missing_ok=True)
        if executor is not None:
            # a container whose creation was on its way when the owner died appears late
            self._remove_containers(run, problems, executor)
        changes: dict[str, Any] = dict(kept)
        if problems:
            changes["error"] = "; ".join([kept.get("error") or run.error or f"interrupted: {why}", *problems])
        return self.store.update(run, **changes) if changes else run

    def _remove_containers(self, run: Run, problems: list[str], executor: Executor | None = None):
        """Remove ``run``'s containers on the engine it ran on; the executor used, None when it did not answer."""
        try:
            executor = executor or self.executor_of(run)
            executor.remove_by_label(run.id)
            return executor
        except EngineUnavailable as e:
            problems.append(f"its containers could not be removed ({e.message})")
            return None

    def _keep_what_can_be_kept(self, run: Run, why: str, problems: list[str]) -> dict[str, Any]:
        """The set the owner stored before it died, else the redacted log as an ``interrupted`` set.

        Returns the record changes: when the owner had stored its set, the run
        did end, and the record takes the set's outcome.
        """
        from .artifacts import resolve_set
        from .artifacts.manifest import SET_STATUSES
        from .storage import open_storage

        try:
            storage = open_storage(run.storage_url)
        except SoopervisorError as e:
            problems.append(f"its log was not stored ({e.message})")
            return {}
        try:
            found = resolve_set(storage, run.project, run.commit, run=run.id)
        except SoopervisorError:
            found = None
        if found is not None and found.status in SET_STATUSES:  # not "damaged"
            return {
                "status": found.status, "finished_at": found.finished_at or run.finished_at,
                "error": f"{found.status}; its owner died after storing the artifacts ({why})",
            }
        src = staging_dir(run.id)
        try:
            shutil.rmtree(src, ignore_errors=True)
            (src / FILES).mkdir(parents=True)
            if run.log_path and Path(run.log_path).is_file():
                shutil.copyfile(run.log_path, src / LOG_NAME)
            else:
                (src / LOG_NAME).write_text(f"soopervisor: run {run.id} interrupted: {why}\n", encoding="utf-8")
            _write_manifest(src, run, status="interrupted", exit_code=None, finished_at=run.finished_at or now_iso(),
                            image_digest=None, env_hash=None, failed_task=None, error=f"interrupted: {why}")
            storage.put_set(run.project, run.commit, run.id, src)
        except (SoopervisorError, OSError) as e:
            problems.append(f"its log was not stored ({_reason(e)})")
        return {}

    def adopt(self) -> list[Run]:
        """After a restart: reap the runs of owners that are gone, and remove what they left.

        Containers carrying the label of a run this store knows as finished (on this
        service's engine; a dead owner's run is reaped on the engine it ran on), and
        staging folders of finished or unknown runs, are removed; a run still running
        elsewhere is left to its owner. Returns the runs reaped.
        """
        reaped = self.reap()
        if self.scope is None or self.executor_factory is not None:
            with contextlib.suppress(EngineUnavailable):
                self._sweep(self.make_executor())
            return reaped
        for name in self.scope:  # a server: each engine it runs on, and no other
            with contextlib.suppress(SoopervisorError):
                self._sweep(_executor_on(self._pick(name)))
        return reaped

    def sweep(self, engine: str) -> None:
        """Remove what finished runs left on the engine named ``engine`` (containers by label), helper
        containers of killed processes, and the staging folders of finished runs; EngineUnavailable when
        it does not answer."""
        self._sweep(_executor_on(self._pick(engine)))

    def _sweep(self, executor: Executor) -> None:
        try:
            labelled = executor.labelled()
        except EngineUnavailable:
            labelled = {}
        for run_id in labelled:
            run = self.store.get(run_id)  # unknown ids belong to another data folder: left alone
            if run is not None and run.finished:
                with contextlib.suppress(EngineUnavailable):
                    executor.remove_by_label(run_id)
        with contextlib.suppress(EngineUnavailable):  # containers made to read an image, their maker killed
            executor.remove_stale_helpers()
        root = staging_root()
        for folder in root.iterdir() if root.is_dir() else ():
            run = self.store.get(folder.name)
            if run is None or run.finished:
                shutil.rmtree(folder, ignore_errors=True)

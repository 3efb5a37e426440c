"""One run of this process, from recorded to stored: ``ActiveRun`` and what it writes.

The sequence: environment (cached image, else built) -> pipeline container ->
collect into the staging folder -> the run's own artifact set (manifest last)
-> the final record. Every state change goes to the run store as it happens;
the owner renews the run's lease and honours stop requests while it runs.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, config, git
from .environment import ENV_IMAGE_REPO, _build_lock, _tar, env_hash, env_tree
from .environment import describe as describe_environment
from .errors import Cancelled, SoopervisorError, StorageUnavailable, UsageError
from .executors import ContainerSpec, ExecResult, Executor, ImageInfo, KeepAs
from .logstream import LogStream
from .progress import NONCE_VARIABLE, RecordWriter, new_nonce, record_changes
from .redact import CREDENTIALS, Redactor
from .runs import Run, lease_seconds, lease_until, now_iso, process_started, this_host
from .script import env_fingerprint

if TYPE_CHECKING:  # the service builds on this module: it hands itself to each run
    from .incremental import Carried
    from .service import RunOptions, RunService

LOG_NAME = "soopervisor.log"
FILES = "files"
#: how often an owner looks for a stop request (a cancel marker, a signal)
WATCH_EVERY = 0.2

#: what a failed environment build is called in its error (troubleshooting.run_topic reads it)
ENV_SETUP = "the environment set-up"


# -- where a run keeps what outlives its process -------------------------------------------------


def staging_root() -> Path:
    return config.data_dir() / "staging"


def staging_dir(run_id: str) -> Path:
    """Where a run builds its set: under the data folder, so whoever reaps the run finds it."""
    return staging_root() / run_id


def cancel_marker(run_id: str) -> Path:
    """The file another process leaves to stop a run; its owner looks for it every WATCH_EVERY seconds."""
    return config.logs_dir() / f"{run_id}.cancel"


# -- what a run starts from and ends with ---------------------------------------------------------


@dataclass
class Prepared:
    """Everything checked before anything is recorded or Docker is touched."""

    report: Any  # project.Report
    project: Any  # project.Project
    secrets: dict[str, bytes]
    ca: Path | None
    storage: Any  # storage.Storage
    env_inputs: dict[str, bytes] | None  # None: the environment needs the whole tree
    limits: Any  # options.Limits
    forced_by: str = "--force"  # what asked for a full build: --force (force=True) or SOOPERVISOR_FORCE
    locked: bool = False  # the environment spec is a recorded lock (soopervisor reproduce)
    installer: str = "auto"  # SOOPERVISOR_INSTALLER as read when the run was checked


@dataclass
class Outcome:
    """How a run ended, as its record and its manifest say."""

    status: str = "failed"
    exit_code: int | None = None
    error: str | None = None
    hint: str | None = None  # what to do about it (a missing module, a host the container could not reach)
    failed_cell: str | None = None  # the failing cell of a notebook or script task, from its partial notebook
    cell_error: str | None = None
    partial_notebook: str | None = None  # where that notebook was stored



# -- runs of this process -------------------------------------------------------------------------

_ACTIVE: dict[str, ActiveRun] = {}
_LOCK = threading.Lock()


def active_run(run_id: str) -> ActiveRun | None:
    """The run ``run_id`` when this process executes it."""
    with _LOCK:
        return _ACTIVE.get(run_id)


def active_runs() -> list[ActiveRun]:
    with _LOCK:
        return list(_ACTIVE.values())


def register(run_id: str, active: Any) -> None:
    """Count ``active`` (a run this process executes or follows) among this process's runs."""
    with _LOCK:
        _ACTIVE[run_id] = active


def forget(run_id: str) -> None:
    with _LOCK:
        _ACTIVE.pop(run_id, None)


def owner_fields() -> dict[str, Any]:
    """This process as a record's owner, with a fresh lease."""
    return {"owner_host": this_host(), "owner_pid": os.getpid(), "owner_started": process_started(os.getpid()),
            "lease_until": lease_until()}


# -- what a run writes ------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    """An error as the short reason a record or a log line gives."""
    if isinstance(e, SoopervisorError):
        return e.message
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}"


#: how many environments an environment image may be built on (each adds a layer)
MAX_DEPTH = 4
DEPTH_LABEL = "soopervisor.env-depth"


def _append_log(run: Run, line: str) -> None:
    """Add a line to a run's log file, if it can be written (the reaper's note on a run it ends)."""
    if not run.log_path:
        return
    with contextlib.suppress(OSError), open(run.log_path, "a", encoding="utf-8") as f:
        f.write(line)


def _write_manifest(src: Path, run: Run, **fields: Any) -> None:
    """The manifest of the run's set in ``src``: the run's facts, plus ``fields``."""
    from .artifacts import write_manifest

    write_manifest(
        src,
        project=run.project,
        commit=run.commit,
        dirty=run.dirty,
        mode=run.mode,
        started_at=run.started_at,
        image=run.image,
        soopervisor_version=__version__,
        run_id=run.id,
        **fields,
    )


def _shown(name: bytes) -> str:
    """A (masked) file name as text for a log line: bytes that are not UTF-8 as \\x escapes."""
    return name.decode("utf-8", "backslashreplace")


# -- one run ------------------------------------------------------------------------------------


class _Sink:
    """A caller's line sink that can never break the run.

    A closed pipe or a gone terminal (EPIPE, EIO) detaches it quietly; any
    other error detaches it with a note in the log. The run goes on.
    """

    def __init__(self, fn: Callable[[str], None], note: Callable[[str], None]) -> None:
        self.fn, self.note, self.attached = fn, note, True

    def __call__(self, line: str) -> None:
        if not self.attached:
            return
        try:
            self.fn(line)
        except OSError as e:
            self.attached = False
            if e.errno in (errno.EPIPE, errno.EIO) or isinstance(e, BrokenPipeError):
                self.note(f"soopervisor: the terminal went away ({e.strerror or 'closed'}); the run goes on without it\n")
            else:
                self.note(f"soopervisor: warning: the log reader failed ({_reason(e)}); the run goes on without it\n")
        except Exception as e:  # noqa: BLE001 - a caller's callback: its bug must not end the run
            self.attached = False
            self.note(f"soopervisor: warning: the log reader failed ({type(e).__name__}: {e}); "
                      "the run goes on without it\n")


class ActiveRun:
    """One run of this process, from recorded to stored.

    ``cancel()`` works from any thread and from a signal handler: it only sets
    a flag, which the run's watcher acts on within WATCH_EVERY seconds. The
    watcher also renews the run's lease and honours a cancel marker left by
    another process.
    """

    def __init__(self, service: RunService, opts: RunOptions, prepared: Prepared, executor: Executor) -> None:
        self.service, self.opts, self.prepared, self.executor = service, opts, prepared, executor
        self.store = service.store
        project = prepared.project
        self.redactor = Redactor([*prepared.secrets.values(), *CREDENTIALS.secrets])
        self.run = Run(
            project=project.name,
            project_path=str(project.path),
            commit=project.commit,
            dirty=project.dirty,
            # a sample run needs env.yaml's `sample` key: without it the full pipeline is built
            mode="sample" if opts.sample and project.declares_sample else "full",
            status="running",
            started_at=now_iso(),
            storage_url=prepared.storage.url,
            **owner_fields(),
            executor=executor.where,
            engine=getattr(executor, "engine", None),
        )
        log_path = config.ensure_dir(config.logs_dir()) / f"{self.run.id}.log"
        self.run.log_path = str(log_path)
        self._log_problem: str | None = None
        self._sinks: list[_Sink] = []
        # task events carry this nonce (handed to the pipeline container only); the record
        # follows them a few times a second at most
        self.task_nonce = new_nonce()
        # task -> its file products in the container, from the finished events: the manifest's files[].task
        self.task_products: dict[str, list[str]] = {}
        self._progress = RecordWriter(self._record)
        self.log = LogStream(self.redactor, [self._to_file], on_stage=lambda stage: self._record(stage=stage),
                             nonce=self.task_nonce, on_task=self._on_task)
        if opts.on_line:
            # its own notes go to the log file only (the sink is gone), masked like every line
            sink = _Sink(opts.on_line, lambda text: self._to_file(self.redactor.redact(text)))
            self._sinks.append(sink)
            self.log.add_sink(sink)
        self.done = threading.Event()
        self.error: BaseException | None = None  # what stopped the run, raised again by result()
        self.image: ImageInfo | None = None
        self.env_hash: str | None = None
        self.cancel_reason: str | None = None
        self._cancel_sent = False
        self._lost: str | None = None  # set when another process reaped this run: we no longer own it
        self._ending = False  # the final record is being written: the lease needs no renewal
        self._kept_in: Path | None = None  # where an unsaved set is kept
        self.carried: Carried | None = None  # what an incremental run started from
        self.tasks_up_to_date: int | None = None  # from the build's plan event
        self.environment: dict | None = None  # the environment image's id and packages, for the manifest
        limits = prepared.limits
        self._deadline = time.monotonic() + limits.timeout if limits.timeout else None
        self.store.add(self.run)
        try:
            self._log_file = open(log_path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in _finish()
        except OSError as e:
            self.store.update(self.run, status="failed", finished_at=now_iso(), error=f"cannot write its log: {_reason(e)}")
            raise StorageUnavailable(f"cannot write the run's log {log_path}: {_reason(e)}",
                                     "free some space in the data folder, or point SOOPERVISOR_HOME elsewhere") from None

    def _on_task(self, event: Any) -> None:
        if event.event == "plan" and event.up_to_date is not None:
            self.tasks_up_to_date = event.up_to_date
        if event.event == "finished" and event.task is not None and event.products is not None:
            self.task_products[event.task] = event.products
        self._progress.push(**record_changes(event))

    # -- control ----------------------------------------------------------------------------
    def begin(self, daemon: bool = True) -> None:
        """Execute the run in a thread of its own; it counts among this process's runs until it is done."""
        register(self.run.id, self)
        threading.Thread(target=self._main, name=f"soopervisor-run-{self.run.id}", daemon=daemon).start()
        threading.Thread(target=self._watch, name=f"soopervisor-watch-{self.run.id}", daemon=True).start()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the run to stop (signal-safe: sets a flag; the watcher kills the container)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason

    def leave(self, reason: str) -> None:
        """This process is exiting: a run of its own engine cannot outlive it, so it is cancelled."""
        self.cancel(reason)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def result(self) -> Run:
        """Wait for the end; returns the finished Run, or raises what stopped it.

        An interruption of the waiting thread (KeyboardInterrupt, Cancelled)
        cancels the run, waits until it is recorded and stored, then is raised
        again; a second one, once the run is already being cancelled, is
        raised at once (the next reader reaps the run).
        """
        interruption: BaseException | None = None
        while True:
            try:
                while not self.done.wait(0.5):
                    pass
                break
            except BaseException as e:
                if self.cancel_reason is not None:
                    raise
                interruption = e
                self.cancel("Ctrl-C" if isinstance(e, KeyboardInterrupt) else
                            "SIGTERM" if isinstance(e, Cancelled) else type(e).__name__)
        if interruption is not None:
            raise interruption
        if self.error is not None:
            raise self.error
        return self.run

    def _watch(self) -> None:
        """Act on stop requests and keep the lease, until the run is done."""
        period = lease_seconds()
        renew_at = time.monotonic() + period / 3
        marker = cancel_marker(self.run.id)
        while not self.done.wait(WATCH_EVERY):
            if self.cancel_reason is None and marker.exists():
                self.cancel("stopped from another process")
            if self.cancel_reason is not None and not self._cancel_sent:
                self._cancel_sent = True
                with contextlib.suppress(Exception):  # the engine gone: the run fails on its own
                    self.executor.cancel()
            if time.monotonic() >= renew_at and not self._ending:
                renew_at = time.monotonic() + period / 3
                self._renew(period)

    def _renew(self, period: float) -> bool:
        """Extend the lease; a record that is no longer ours means another process reaped the run."""
        try:
            if self.store.update_if(self.run.id, self._ours(), lease_until=lease_until(period)):
                return True
            current = self.store.get(self.run.id)
        except SoopervisorError:
            return True  # the run store is busy or unreadable: try again at the next renewal
        self._lost = (current.error if current else None) or "its record was changed by another process"
        self.cancel("another process marked this run interrupted")
        return False

    def _ours(self) -> dict[str, Any]:
        return {"status": "running", "owner_host": self.run.owner_host, "owner_pid": self.run.owner_pid}

    # -- the sequence ---------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._execute()
        except BaseException as e:  # noqa: BLE001 - the record says what happened; result() raises it again
            self.error = self.error or e
        finally:
            forget(self.run.id)
            self.done.set()

    def _to_file(self, line: str) -> None:
        if self._log_problem is not None:
            return
        try:
            self._log_file.write(line)
            self._log_file.flush()  # readers (the sidebar, `tail -f`) follow it live
        except (OSError, ValueError) as e:  # a full disk; ValueError: closed
            self._log_problem = _reason(e)

    def _execute(self) -> None:
        """Environment, pipeline, storage; the record and the log are right whatever happens."""
        note = self.log.note
        for w in self.prepared.report.warnings:
            note(f"soopervisor: warning: {w.what}")
        run = self.run
        note(f"soopervisor: run {run.id} of {run.project} at {run.commit[:7]} ({run.mode}) on {run.executor}")
        for line in self.opts.notes:
            note(f"soopervisor: {line}")
        staging = staging_dir(run.id)
        outcome = Outcome()
        try:
            config.ensure_dir(staging / FILES)
            self.image = self.executor.resolve_image(self.service.image, note)
            self._record(image=self.image.name)
            env_image = self._ensure_environment(outcome)
            if env_image:
                self.environment = describe_environment(self.executor, env_image, note)
                self._run_pipeline(env_image, staging / FILES, outcome)
        except SoopervisorError as e:
            e.message = self.redactor.redact(e.message)
            e.hint = self.redactor.redact(e.hint) if e.hint else e.hint
            outcome.status, outcome.error, self.error = "failed", e.message, e
        except Exception as e:  # noqa: BLE001 - a bug of ours: keep the record honest, then let it surface
            outcome.status, self.error = "failed", e
            outcome.error = self.redactor.redact(f"internal error: {type(e).__name__}: {e}")
        self._finish(staging, outcome)

    def _record(self, **changes: Any) -> None:
        """Write ``changes`` to the record while it is ours."""
        if self.store.update_if(self.run.id, self._ours(), **changes):
            for k, v in changes.items():
                setattr(self.run, k, v)

    def _spec(self, **kw: Any) -> ContainerSpec:
        limits = self.prepared.limits
        remaining = max(1.0, self._deadline - time.monotonic()) if self._deadline else None
        secrets = {name: value.decode("utf-8", "replace") for name, value in self.prepared.secrets.items()}
        base = {
            "workdir": self._workdir(),
            "environment": {
                **secrets,
                "SOOPERVISOR_COMMIT": self.run.commit,
                "SOOPERVISOR_DIRTY": "true" if self.run.dirty else "false",
                "SOOPERVISOR_MODE": self.run.mode,
                "SOOPERVISOR_RUN_ID": self.run.id,
                "PLOOMBER_STATS_ENABLED": "false",
                NONCE_VARIABLE: self.task_nonce,  # the runner removes it before pipeline code runs
            },
            "ca_bundle": self.prepared.ca,
            "cpus": limits.cpus,
            "memory": limits.memory,
            "labels": {"soopervisor.run": self.run.id},
            "timeout": remaining,
        }
        return ContainerSpec(**{**base, **kw})

    def _script(self, force: bool = True) -> bytes:
        from . import script

        text = script.render(self.prepared.project, sample=self.opts.sample, force=force, locked=self.prepared.locked,
                             installer=self.prepared.installer)
        return _tar({"soopervisor/run.sh": text.encode()})

    def _ensure_environment(self, outcome: Outcome) -> str | None:
        """The environment image's name, built when missing; None when building failed or was stopped."""
        inputs, note = self.prepared.env_inputs, self.log.note
        # an environment filled by pip is another environment than one filled by uv
        fingerprint = self._fingerprint = env_fingerprint() + self.prepared.installer
        if inputs is None:
            note("soopervisor: the requirements install local paths; the environment is cached per commit")
            self.env_hash = env_hash(self.image.id, {"commit": self.run.commit.encode()}, fingerprint)
        else:
            self.env_hash = env_hash(self.image.id, inputs, fingerprint)
        tag = self.env_hash[:20]
        env_image = f"{ENV_IMAGE_REPO}:{tag}"
        from . import cache, script

        # the environment stages are announced once: by the build, else by this note
        names = [s.name for s in script.STAGES if s.env]
        skipped = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        if self.executor.has_image(env_image):
            note(f"soopervisor: environment cache hit ({env_image}): skipping {skipped}")
            cache.mark_used(env_image)
            return env_image
        with _build_lock(tag, note):
            if self.executor.has_image(env_image):  # another run built it while we waited
                note(f"soopervisor: environment cache hit ({env_image}): built by a concurrent run; skipping {skipped}")
                cache.mark_used(env_image)
                return env_image
            built = self._build_environment(env_image, tag, outcome)
        if built is not None:
            cache.mark_used(built)
            cache.apply_cap(built, note)  # SOOPERVISOR_CACHE_MAX_SIZE, when set
        return built

    def _build_environment(self, env_image: str, tag: str, outcome: Outcome) -> str | None:
        project, inputs, note = self.prepared.project, self.prepared.env_inputs, self.log.note
        note(f"soopervisor: environment cache miss: building {env_image} from {self.image.name}")
        if inputs is None:
            tree = git.archive(project.repo_root, self.run.commit, prefix="workspace/")
        else:
            tree = env_tree(project.subdir, inputs)  # inputs may sit above the project (../requirements.txt)
        # Docker merges a committed container's environment into the image
        # config, so this container gets no secrets and no run facts.
        from . import downloads

        # the download cache is the build's only: a pipeline run never sees it
        cache = downloads.volume_for(project.repo_root)
        lineage = {
            "soopervisor.repository": downloads.repository_key(project.repo_root),
            "soopervisor.base-id": self.image.id,
            "soopervisor.stages": hashlib.sha256(self._fingerprint.encode()).hexdigest()[:20],
        }
        parent = self._parent_environment(lineage)
        depth = int(parent.labels.get(DEPTH_LABEL, "0")) + 1 if parent else 0
        spec = self._spec(
            image=parent.id if parent else self.image.id,
            command=["bash", "/soopervisor/run.sh", "env"],
            archives=[tree, self._script()],
            environment={"PLOOMBER_STATS_ENABLED": "false"},
            name_ca=False,
            volumes={cache: downloads.CONTAINER_PATH} if cache else {},
        )
        # only a finished, successful build becomes the cache: a broken
        # environment must never be reused by the next run
        keep = KeepAs(ENV_IMAGE_REPO, tag, self.image.env, {
            "soopervisor.env-hash": self.env_hash, "soopervisor.base-image": self.image.name, "soopervisor.run": "",
            **lineage, DEPTH_LABEL: str(depth),
        })
        try:
            result = self.executor.execute(spec, self.log.write, keep_as=keep)
        except UsageError:
            if parent is None or self.executor.has_image(parent.id):
                raise
            # pruned between choosing it and starting on it (`cache prune` elsewhere)
            note(f"soopervisor: {parent.name} was removed meanwhile; building from the base image")
            keep = replace(keep, labels={**keep.labels, DEPTH_LABEL: "0"})
            result = self.executor.execute(replace(spec, image=self.image.id), self.log.write, keep_as=keep)
        if result.exit_code == 0 and not (result.timed_out or result.cancelled):
            return env_image
        self._failed(outcome, result, ENV_SETUP)
        return None

    def _parent_environment(self, lineage: dict[str, str]) -> ImageInfo | None:
        """An earlier environment of this repository to build on, None for a build from the base image.

        Only uv's environments, which are made exactly their lock (``uv pip sync``):
        built on a parent they hold what a new one would, and only the changed
        packages are installed, compiled and kept. Only this repository's (its own
        environments are all a project could have tampered with), on the same base
        image and stages, and at most MAX_DEPTH layers deep, so images do not grow
        without end. Not for conda (an existing conda environment is reused as it
        is), for environments that install local paths (built per commit) or for
        a recorded lock (a reproduction starts from nothing but the lock).
        """
        project, note = self.prepared.project, self.log.note
        if (self.prepared.env_inputs is None or self.prepared.installer == "pip" or self.prepared.locked
                or posixpath.basename(project.env_file or "").startswith("environment.")):
            return None
        parent = self.executor.latest_image(ENV_IMAGE_REPO, lineage)
        if parent is None:
            return None
        if int(parent.labels.get(DEPTH_LABEL, "0") or 0) >= MAX_DEPTH:
            note(f"soopervisor: building from the base image: the newest environment of this repository "
                 f"({parent.name}) is already {MAX_DEPTH} layers deep")
            return None
        note(f"soopervisor: building on {parent.name}, an earlier environment of this repository: "
             "only what changed is installed")
        return parent

    def _run_pipeline(self, env_image: str, collected: Path, outcome: Outcome) -> None:
        from .artifacts import safe_extract

        def collect(stream: Iterable[bytes]) -> None:
            safe_extract(stream, collected, strip="artifacts", on_skip=self._skipped, rename=self._rename)

        archives = [git.archive(self.prepared.project.repo_root, self.run.commit, prefix="workspace/")]
        self.carried = self._carry()
        if self.carried is not None:
            archives.append(self.carried.tar)  # after the tree: products and metadata of the parent set
        spec = self._spec(
            image=env_image,
            command=["bash", "/soopervisor/run.sh"],
            archives=[*archives, self._script(force=self.carried is None)],
            network=self.opts.network or "default",  # the environment build keeps the engine's default
        )
        if spec.network != "default":
            self.log.note(f"soopervisor: the pipeline stage runs with --network {spec.network}")
        result = self.executor.execute(spec, self.log.write, collect_to=collect)
        if result.exit_code == 0 and not (result.timed_out or result.cancelled):
            outcome.status, outcome.exit_code = "succeeded", 0
        else:
            self._failed(outcome, result, "the pipeline")

    def _carry(self) -> Carried | None:
        """What this run starts from (None: a full build); the log says which, and why."""
        from .incremental import carry

        project = self.prepared.project
        try:
            decision = carry(self.prepared.storage, self.run.project, project.repo_root, self.run.commit,
                             project.subdir, self.run.mode, self.env_hash, force=bool(self.opts.force),
                             forced_by=self.prepared.forced_by)
        except Exception as e:  # noqa: BLE001 - a parent that cannot be used means a full build, never a failed run
            self.log.note(f"soopervisor: full build: the parent set could not be used ({type(e).__name__}: {e})")
            return None
        self.log.note(decision.note)
        return decision.carried

    def _rename(self, rel: str) -> str:
        """A product's name as stored: masked like log text (the name may hold any byte)."""
        raw = os.fsencode(rel)
        masked = self.redactor.redact_bytes(raw)
        if masked != raw:
            self.log.note(f"soopervisor: warning: a file name held a secret; stored as {_shown(masked)}")
        return os.fsdecode(masked)

    def _skipped(self, name: str, reason: str) -> None:
        # the name is already masked; the reason may quote a link target: the note passes the redactor
        self.log.note(f"soopervisor: warning: {_shown(os.fsencode(name))} not stored: {reason}")

    def _failed(self, outcome: Outcome, result: ExecResult, what: str) -> None:
        outcome.exit_code = result.exit_code
        # a container removed from outside by stop was a cancel, not a failure
        cancelled = result.cancelled or self.cancel_reason is not None or cancel_marker(self.run.id).exists()
        outcome.status = "cancelled" if cancelled else "failed"
        if result.timed_out:
            outcome.status = "failed"
            outcome.error = f"{what} timed out after {self.prepared.limits.timeout:g}s and was stopped"
            outcome.hint = ("raise --timeout (seconds) or leave it out; the first run of a new environment "
                            "also installs its packages")
        elif cancelled:
            why = self.cancel_reason or "stopped from another process"
            outcome.error = f"{what} was cancelled ({why}); the container was removed"
        else:
            stage = f" in stage '{self.log.failed_stage}'" if self.log.failed_stage else ""
            outcome.error = f"{what} failed with exit code {result.exit_code}{stage}"
            from .conda import dropped_cause

            project = self.prepared.project
            cause = dropped_cause(list(self.log.tail), project.conda_only, project.env_file or "")
            if cause:  # a module of a conda dependency pip could not install
                outcome.error += f": {cause}"
            self._cause(outcome, what, f"exit code {result.exit_code}{stage}")
            if what == ENV_SETUP:
                self._unavailable(outcome)
            if outcome.hint is None and what == ENV_SETUP:
                outcome.hint = (f"a package of {project.env_file or 'the environment spec'} could not be installed: "
                                "the log's installer lines say which (`soopervisor run -v` streams them)")

    def _unavailable(self, outcome: Outcome) -> None:
        """Name the pinned version the installer could not have, in the error and the hint."""
        from .failure import unavailable_requirement

        found = unavailable_requirement(list(self.log.tail))
        if found is None:
            return
        pin, why = found
        outcome.error += f": {pin} cannot be installed ({why})"
        if self.prepared.locked:
            outcome.hint = (f"the recorded environment pins {pin}, which can no longer be installed (yanked, removed "
                            "or replaced on the index): this run cannot be reproduced exactly; `soopervisor run "
                            "--force` at that commit resolves its requirements again")
        else:
            outcome.hint = f"{self.prepared.project.env_file} asks for {pin}: change that pin to a version the index has"

    def _cause(self, outcome: Outcome, what: str, how: str) -> None:
        """The cause the log showed, said in the error and the hint: a load error, a network error."""
        from .failure import load_hint, network_hint

        log = self.log
        if what != "the pipeline":
            return
        # what an earlier check added to the error (a conda dependency pip could not install) is kept,
        # and is then the advice
        added = (outcome.error or "").removeprefix(f"{what} failed with {how}")
        if log.load_error:
            outcome.error = f"the pipeline failed to load: {log.load_error} ({how}){added}"
            outcome.hint = None if added else load_hint(log.load_error)
        elif log.network_error and log.network_stage == log.failed_stage:
            outcome.hint = network_hint(self.opts.network or "default")

    def _explain(self, staging: Path, outcome: Outcome) -> None:
        """The failing cell of a failed notebook or script task, from its partial notebook in the set.

        Ploomber names the notebook by its path in the container; the record
        names it where it is stored (storage URL + set path). Never raises.
        """
        from .failure import failing_cell, network_hint, relative_product, stored_location
        from .logstream import is_network_error

        path, note = self.log.partial_notebook, self.log.note
        if outcome.status != "failed" or not path:
            return
        try:
            rel = relative_product(path, self._workdir())
            if rel is None or not (staging / FILES / rel).is_file():
                return
            run = self.run
            outcome.partial_notebook = stored_location(run.storage_url, run.project, run.commit, run.id, FILES, rel)
            cell = failing_cell(staging / FILES / rel)
            if cell is not None:
                outcome.failed_cell = self.redactor.redact(cell.source)
                outcome.cell_error = self.redactor.redact(cell.error)
        except Exception as e:  # noqa: BLE001 - an explanation must never cost the run its set
            note(f"soopervisor: warning: could not read the partial notebook ({type(e).__name__}: {e})")
            return
        if outcome.cell_error:
            note(f"soopervisor: the failing cell raised {outcome.cell_error}")
            if outcome.hint is None and is_network_error(outcome.cell_error):
                outcome.hint = network_hint(self.opts.network or "default")
        note(f"soopervisor: partially executed notebook stored at {outcome.partial_notebook}")

    # -- the end ----------------------------------------------------------------------------
    def _finish(self, staging: Path, outcome: Outcome) -> None:
        """Log, set (manifest last), record; then the staging folder goes. Never raises."""
        note, run = self.log.note, self.run
        try:
            self._explain(staging, outcome)
            if outcome.error:
                note(f"soopervisor: {outcome.error}")
            if outcome.hint and outcome.status == "failed":
                note(f"soopervisor: hint: {outcome.hint}")
            if self._log_problem:
                note(f"soopervisor: warning: the log file could not be written to the end ({self._log_problem})")
            if self._lost is None:
                note(f"soopervisor: run {run.id} {outcome.status}")
            self.log.close()
        finally:
            self._log_file.close()
            with contextlib.suppress(SoopervisorError):
                self._progress.flush()  # the last progress is in the record before the end is
        finished = now_iso()
        try:
            if self._lost is not None or not self._claim_end():
                self._lost = self._lost or "its record was changed by another process"
                return  # reaped meanwhile: the reaper kept what it could; two sets of one run must not race
            problem = self._store_set(staging, outcome, finished)
            failed_task = self.log.failed_task if outcome.status != "succeeded" else None
            changes = {"status": outcome.status, "exit_code": outcome.exit_code, "finished_at": finished,
                           "failed_task": failed_task, "error": outcome.error}
            if outcome.status == "failed":
                changes.update(hint=outcome.hint, failed_cell=outcome.failed_cell,
                               cell_error=outcome.cell_error, partial_notebook=outcome.partial_notebook)
            self._ending = True
            if not self.store.update_if(run.id, self._ours(), **changes):
                self._lost = "its record was changed by another process"
            else:
                for k, v in changes.items():
                    setattr(run, k, v)
            if problem is not None:
                self.error = self.error or problem
        except SoopervisorError as e:  # the run store itself failed: the next reader reaps the run
            self.error = self.error or e
        finally:
            if self._lost is not None:
                with contextlib.suppress(SoopervisorError):
                    fresh = self.store.get(run.id)
                    if fresh is not None:
                        run.refresh_from(fresh)
            if self._kept_in != staging:  # a set that could be neither stored nor moved stays there
                shutil.rmtree(staging, ignore_errors=True)
            cancel_marker(run.id).unlink(missing_ok=True)

    def _claim_end(self) -> bool:
        """Renew the lease before storing: storing happens only while the run is still ours.

        A run store that cannot answer is no reason to drop the set: it is stored anyway.
        """
        try:
            return self.store.update_if(self.run.id, self._ours(), lease_until=lease_until())
        except SoopervisorError:
            return True

    def _store_set(self, src: Path, outcome: Outcome, finished: str) -> SoopervisorError | None:
        """The run's own set: files/ (collected), soopervisor.log, manifest last; None when stored.

        When storing fails nothing is lost: the set is kept under
        ``<data dir>/unsaved/<run id>`` with a manifest that says failed, and
        the error returned says where.
        """
        run, image = self.run, self.image
        failed_task = self.log.failed_task if outcome.status != "succeeded" else None
        fields = {
            "exit_code": outcome.exit_code, "finished_at": finished,
            "image_digest": image.digest if image else None, "env_hash": self.env_hash, "failed_task": failed_task,
            "carried_from": self.carried.origin if self.carried else None, "tasks_up_to_date": self.tasks_up_to_date,
            "carried": self.carried.files if self.carried else None,  # each file's origin (write_manifest)
            "environment": self.environment,
            "tasks": self._file_tasks(src),  # each file's task (write_manifest)
        }
        storage = self.prepared.storage
        try:
            (src / FILES).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run.log_path, src / LOG_NAME)
            _write_manifest(src, run, status=outcome.status, error=outcome.error, **fields)
            sinks = [s for s in self._sinks if s.attached]
            if sinks and hasattr(storage, "progress"):
                # cloud uploads take a while: the terminal or widget shows files, bytes and rate
                storage.progress = lambda text: [s(self.redactor.redact(text) + "\n") for s in sinks]
            storage.put_set(run.project, run.commit, run.id, src)
            return None
        except (SoopervisorError, OSError) as e:
            message = self.redactor.redact(_reason(e))
            outcome.error = (f"{outcome.error}; " if outcome.error else "") + f"storing artifacts failed: {message}"
            outcome.status = "failed"
            kept = self._keep_unsaved(src, outcome, fields)
            hint = getattr(e, "hint", None)
            return StorageUnavailable(
                f"storing the artifacts of run {run.id} failed: {message}",
                f"the run's artifacts and log are kept in {kept}" + (f"; {hint}" if hint else ""),
            )

    def _workdir(self) -> str:
        """The project folder in the container: where product paths are relative to."""
        return posixpath.join("/workspace", self.prepared.project.subdir).rstrip("/")

    def _file_tasks(self, src: Path) -> dict[str, str]:
        """Stored path -> the task that made it: what the finished events named, else (a file
        carried over from the parent set) the task the parent's manifest gave it. Never raises."""
        from .artifacts.owners import claims, owners

        found = dict(self.carried.tasks) if self.carried else {}
        try:
            root = src / FILES
            names = []
            for dirpath, _dirs, files in os.walk(root):  # as write_manifest lists them: links are not followed
                names += [(Path(dirpath) / f).relative_to(root).as_posix() for f in files]
            # stored names are masked like log text (_rename): a product path is masked the same way
            mask = lambda rel: os.fsdecode(self.redactor.redact_bytes(os.fsencode(rel)))
            found.update(owners(names, claims(self.task_products, self._workdir(), mask)))
        except Exception:  # noqa: BLE001 - naming tasks must never cost the run its set (the log is closed by now)
            return found
        return found

    def _keep_unsaved(self, src: Path, outcome: Outcome, fields: dict[str, Any]) -> Path:
        """Move the set to ``unsaved/<run id>``; its manifest says what really happened (failed)."""
        kept = config.data_dir() / "unsaved" / self.run.id
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), kept)
        except OSError:
            kept = src  # left where it is; the staging folder is then kept too
        self._kept_in = kept
        try:
            _write_manifest(kept, self.run, status=outcome.status, error=outcome.error, **fields)
        except (SoopervisorError, OSError):
            # a full disk: no manifest rather than one that says succeeded
            (kept / "manifest.json").unlink(missing_ok=True)
        return kept

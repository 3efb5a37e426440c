"""One run's lifecycle, in one place.

validate -> script -> environment (cached image or build it) -> pipeline
container -> collect artifacts -> store set (manifest last) -> run record.
Every state change goes to the run store as it happens. Whatever fails, the
container is gone, the redacted log is kept, and the run record says why.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__, config, git
from .errors import Cancelled, InvalidProject, SoopervisorError, UsageError
from .executors import Executor
from .live import cancel_marker
from .logstream import LogStream
from .redact import CREDENTIALS, Redactor
from .runs import Run, RunStore, now_iso
from .script import env_fingerprint

ENV_IMAGE_REPO = "soopervisor-env"
LOG_NAME = "soopervisor.log"


@dataclass
class RunOptions:
    path: str | os.PathLike = "."
    sample: bool = True
    storage: str | None = None
    image: str | None = None
    secrets: Iterable[str] = ()
    ca_bundle: str | os.PathLike | None = None
    timeout: float | None = None
    cpus: float | None = None
    memory: str | None = None
    on_line: Callable[[str], None] | None = None


def secret_values(names: Iterable[str]) -> dict[str, str]:
    """Host variables named by --secret; a missing one is a usage error."""
    values = {}
    for name in names:
        if not name or not name.replace("_", "a").isalnum():
            raise UsageError(f"invalid secret name {name!r}", "use the name of an environment variable, e.g. --secret API_TOKEN")
        if name not in os.environ:
            raise UsageError(
                f"secret {name} is not set in this environment",
                f"export {name}=... before running, or drop --secret {name}",
            )
        values[name] = os.environ[name]
    return values


def env_hash(base_image_id: str, inputs: dict[str, bytes], fingerprint: str) -> str:
    """The cache key of an environment: base image, the files it is built from, the stages."""
    h = hashlib.sha256()
    parts = [base_image_id.encode(), fingerprint.encode()]
    for name in sorted(inputs):
        parts += [name.encode(), inputs[name]]
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


_LOCAL_PREFIXES = ("-e", "--editable", ".", "/", "file:")
_INCLUDE_PREFIXES = ("-r", "--requirement", "-c", "--constraint")


def env_inputs(project, read: Callable[[str], bytes | None]) -> dict[str, bytes] | None:
    """The committed files the environment stages read, by path in the project.

    Follows ``-r``/``-c`` includes. None when a requirement installs a local
    path (``-e .``): then the environment depends on the whole tree and is
    built from it, cached per commit.
    """
    inputs: dict[str, bytes] = {}
    pending = [project.env_file]
    while pending:
        rel = pending.pop()
        if rel in inputs:
            continue
        data = read(rel)
        if data is None:
            raise UsageError(
                f"{rel} is not in commit {project.commit[:7]}: the run uses the committed tree",
                f"commit it: git add {rel} && git commit -m 'add {rel}'",
            )
        inputs[rel] = data
        # the spec itself is already parsed (comments gone, pip: section of environment.yml)
        lines = project.pip_requirements if rel == project.env_file else data.decode(errors="replace").splitlines()
        for line in (raw.split(" #")[0].strip() for raw in lines):
            if line.startswith(_LOCAL_PREFIXES) or "@ file:" in line:
                return None
            for prefix in _INCLUDE_PREFIXES:
                if line.startswith(prefix):
                    target = line[len(prefix):].lstrip(" =")
                    base = posixpath.dirname(rel)
                    pending.append(posixpath.normpath(posixpath.join(base, target)))
                    break
    return inputs


@contextlib.contextmanager
def _build_lock(tag: str, note: Callable[[str], None]):
    """One build of an environment at a time on this machine; the others then reuse it."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, at worst a duplicate build
        yield
        return
    path = Path(tempfile.gettempdir()) / f"soopervisor-env-{tag}.lock"
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note("soopervisor: waiting for another run that is building the same environment")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Prepared:
    """Everything checked before Docker is touched."""

    report: object  # project.Report
    project: object  # project.Project
    secrets: dict[str, str]
    ca: Path | None
    storage: object  # storage.Storage
    env_inputs: dict[str, bytes] | None  # None: the environment needs the whole tree


@dataclass
class Outcome:
    status: str = "failed"
    exit_code: int | None = None
    error: str | None = None


def prepare(opts: RunOptions) -> Prepared:
    """Validation and every other check that can fail before Docker is touched."""
    from .executors.docker import ca_bundle_from_env
    from .project import inspect
    from .storage import open_storage

    report = inspect(opts.path)
    if not report.ok:
        raise InvalidProject(report)
    project = report.project
    secrets = secret_values(opts.secrets)
    ca = ca_bundle_from_env(opts.ca_bundle)
    storage = open_storage(opts.storage)
    storage.check_writable()

    def read(rel: str) -> bytes | None:
        return git.show_file(project.repo_root, project.commit, posixpath.join(project.subdir, rel))

    # validation already refused uncommitted pipeline.yaml and environment
    # files; what it cannot see are the files those include (-r base.txt)
    return Prepared(report, project, secrets, ca, storage, env_inputs(project, read))


def start(opts: RunOptions, store: RunStore | None = None) -> "Lifecycle":
    """Check everything that can be checked, record the run as running.

    Raises before recording anything when the project, secrets, storage or the
    engine are not usable. ``Lifecycle.execute()`` then does the run.
    """
    from .executors.docker import DockerExecutor

    prepared = prepare(opts)
    executor = DockerExecutor()  # EngineUnavailable here: nothing recorded, nothing to clean
    return Lifecycle(opts, prepared, executor, store or RunStore())


class Lifecycle:
    """One run from recorded to stored. ``cancel()`` works from any thread."""

    def __init__(self, opts: RunOptions, prepared: Prepared, executor: Executor, store: RunStore) -> None:
        self.opts, self.prepared, self.executor, self.store = opts, prepared, executor, store
        project = prepared.project
        self.redactor = Redactor([*prepared.secrets.values(), *CREDENTIALS.secrets])
        self.run = Run(
            project=project.name,
            project_path=str(project.path),
            commit=project.commit,
            dirty=project.dirty,
            mode="sample" if opts.sample else "full",
            status="running",
            started_at=now_iso(),
            storage_url=prepared.storage.url,
        )
        log_path = config.logs_dir() / f"{self.run.id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.run.log_path = str(log_path)
        self._log_file = open(log_path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in execute()
        sinks = [self._to_file] + ([opts.on_line] if opts.on_line else [])
        self.log = LogStream(self.redactor, sinks)
        self.finished = threading.Event()
        self.image = None
        self.env_hash: str | None = None
        self._deadline = time.monotonic() + opts.timeout if opts.timeout else None
        store.add(self.run)

    def _to_file(self, line: str) -> None:
        self._log_file.write(line)
        self._log_file.flush()  # readers (the sidebar, `tail -f`) follow it live

    def cancel(self) -> None:
        self.executor.cancel()

    def _stop_requested(self) -> bool:
        """Whether another process asked to stop this run (soopervisor.stop_run); if so, cancel it."""
        if cancel_marker(self.run.id).exists():
            self.cancel()
            return True
        return False

    # -- the sequence ----------------------------------------------------------
    def execute(self) -> Run:
        """Environment, pipeline, storage; the record and log are right whatever happens."""
        note = self.log.note
        for w in self.prepared.report.warnings:
            note(f"soopervisor: warning: {w.what}")
        run = self.run
        note(f"soopervisor: run {run.id} of {run.project} at {run.commit[:7]} ({run.mode})")
        staging = Path(tempfile.mkdtemp(prefix=f"soopervisor-{run.id}-"))
        outcome = Outcome()
        try:
            self.image = self.executor.resolve_image(self.opts.image, note)
            env_image = self._ensure_environment(outcome)
            if env_image:
                self._run_pipeline(env_image, staging / "files", outcome)
        except (KeyboardInterrupt, Cancelled):
            outcome.status, outcome.error = "interrupted", "interrupted (Ctrl-C or SIGTERM); the container was removed"
            raise
        except SoopervisorError as e:
            outcome.status, outcome.error = "failed", self.redactor.redact(str(e))
            raise
        except Exception as e:  # a bug of ours: keep the record honest, then let it surface
            outcome.status = "failed"
            outcome.error = self.redactor.redact(f"internal error: {type(e).__name__}: {e}")
            raise
        finally:
            if outcome.error:
                note(f"soopervisor: {outcome.error}")
            note(f"soopervisor: run {run.id} {outcome.status}")
            self.log.close()
            self._log_file.close()
            try:
                self._store(staging / "files", outcome)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                self.finished.set()
        return run

    def _spec(self, **kw):
        from .executors import ContainerSpec

        project, opts = self.prepared.project, self.opts
        remaining = max(1.0, self._deadline - time.monotonic()) if self._deadline else None
        base = dict(
            workdir=posixpath.join("/workspace", project.subdir).rstrip("/"),
            environment={
                **self.prepared.secrets,
                "SOOPERVISOR_COMMIT": self.run.commit,
                "SOOPERVISOR_DIRTY": "true" if self.run.dirty else "false",
                "SOOPERVISOR_MODE": self.run.mode,
                "SOOPERVISOR_RUN_ID": self.run.id,
                "PLOOMBER_STATS_ENABLED": "false",
            },
            ca_bundle=self.prepared.ca,
            cpus=opts.cpus,
            memory=opts.memory,
            labels={"soopervisor.run": self.run.id},
            timeout=remaining,
        )
        return ContainerSpec(**{**base, **kw})

    def _script(self) -> bytes:
        from . import script

        return _tar({"soopervisor/run.sh": script.render(self.prepared.project, sample=self.opts.sample).encode()})

    def _ensure_environment(self, outcome: Outcome) -> str | None:
        """The environment image's name, built when missing; None when building failed."""
        inputs, note = self.prepared.env_inputs, self.log.note
        if inputs is None:
            note("soopervisor: the requirements install local paths; the environment is cached per commit")
            self.env_hash = env_hash(self.image.id, {"commit": self.run.commit.encode()}, env_fingerprint())
        else:
            self.env_hash = env_hash(self.image.id, inputs, env_fingerprint())
        tag = self.env_hash[:20]
        env_image = f"{ENV_IMAGE_REPO}:{tag}"
        if self.executor.has_image(env_image):
            note(f"soopervisor: environment cache hit ({env_image}): skipping installation")
            return env_image
        with _build_lock(tag, note):
            if self.executor.has_image(env_image):  # another run built it while we waited
                note(f"soopervisor: environment cache hit ({env_image}): built by a concurrent run")
                return env_image
            return self._build_environment(env_image, tag, outcome)

    def _build_environment(self, env_image: str, tag: str, outcome: Outcome) -> str | None:
        project, inputs, note = self.prepared.project, self.prepared.env_inputs, self.log.note
        note(f"soopervisor: environment cache miss: building {env_image} from {self.image.name}")
        if inputs is None:
            tree = git.archive(project.repo_root, self.run.commit, prefix="workspace/")
        else:
            tree = _tar({posixpath.join("workspace", project.subdir, rel): data for rel, data in inputs.items()})
        # Docker merges a committed container's environment into the image
        # config, so this container gets no secrets and no run facts.
        spec = self._spec(
            image=self.image.id,
            command=["bash", "/soopervisor/run.sh", "env"],
            archives=[tree, self._script()],
            environment={"PLOOMBER_STATS_ENABLED": "false"},
            name_ca=False,
        )
        labels = {"soopervisor.env-hash": self.env_hash, "soopervisor.base-image": self.image.name, "soopervisor.run": ""}

        def keep(container) -> None:
            # only a finished, successful build becomes the cache: a broken
            # environment must never be reused by the next run
            if not self._stop_requested() and container.wait().get("StatusCode") == 0:
                self.executor.commit(container, ENV_IMAGE_REPO, tag, self.image.env, labels)

        self._stop_requested()  # a stop asked before this container starts: it never starts
        result = self.executor.execute(spec, self.log.write, after=keep)
        if result.exit_code == 0 and not (result.timed_out or result.cancelled):
            return env_image
        self._failed(outcome, result, "the environment set-up")
        return None

    def _run_pipeline(self, env_image: str, collected: Path, outcome: Outcome) -> None:
        from .artifacts import safe_extract

        collected.mkdir()

        def collect(container) -> None:
            if self._stop_requested():
                return  # killed by stop_run from another process: nothing to collect
            bits, _ = container.get_archive("/soopervisor/artifacts")
            safe_extract(bits, collected, strip="artifacts")

        spec = self._spec(
            image=env_image,
            command=["bash", "/soopervisor/run.sh"],
            archives=[git.archive(self.prepared.project.repo_root, self.run.commit, prefix="workspace/"), self._script()],
        )
        self._stop_requested()
        result = self.executor.execute(spec, self.log.write, after=collect)
        if result.exit_code == 0 and not (result.timed_out or result.cancelled):
            outcome.status, outcome.exit_code = "succeeded", 0
        else:
            self._failed(outcome, result, "the pipeline")

    def _failed(self, outcome: Outcome, result, what: str) -> None:
        outcome.exit_code = result.exit_code
        # a container removed from outside by stop_run was a cancel, not a failure
        cancelled = result.cancelled or self._stop_requested()
        outcome.status = "cancelled" if cancelled else "failed"
        if result.timed_out:
            outcome.error = f"{what} timed out after {self.opts.timeout:g}s and was stopped"
        elif cancelled:
            outcome.error = f"{what} was cancelled"
        else:
            stage = f" in stage '{self.log.failed_stage}'" if self.log.failed_stage else ""
            outcome.error = f"{what} failed with exit code {result.exit_code}{stage}"

    def _store(self, set_dir: Path, outcome: Outcome) -> None:
        """Log + collected files + manifest (last) into storage; then the run record."""
        from .artifacts import write_manifest

        run, image = self.run, self.image
        failed_task = self.log.failed_task if outcome.status != "succeeded" else None
        finished = now_iso()
        set_dir.mkdir(exist_ok=True)
        try:
            shutil.copyfile(run.log_path, set_dir / LOG_NAME)
            write_manifest(
                set_dir,
                project=run.project,
                commit=run.commit,
                dirty=run.dirty,
                mode=run.mode,
                status=outcome.status,
                exit_code=outcome.exit_code,
                started_at=run.started_at,
                finished_at=finished,
                image=image.name if image else None,
                image_digest=image.digest if image else None,
                env_hash=self.env_hash,
                soopervisor_version=__version__,
                log=LOG_NAME,
                run_id=run.id,
                failed_task=failed_task,
                error=outcome.error,
            )
            storage = self.prepared.storage
            if self.opts.on_line and hasattr(storage, "progress"):
                # cloud uploads take a while: the terminal or widget shows files, bytes and rate
                storage.progress = lambda text: self.opts.on_line(self.redactor.redact(text) + "\n")
            storage.put_set(run.project, run.commit, set_dir)
        except SoopervisorError as e:
            # nothing lost: the set stays on this machine, and the error says where
            kept = config.data_dir() / "unsaved" / run.id
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(set_dir), kept)
            outcome.error = f"{outcome.error}; " if outcome.error else ""
            outcome.error += f"storing artifacts failed: {e.message}"
            outcome.status = "failed"
            e.hint = f"the run's artifacts and log are kept in {kept}; {e.hint or ''}".rstrip("; ")
            raise
        finally:
            self.store.update(
                run,
                status=outcome.status,
                exit_code=outcome.exit_code,
                finished_at=finished,
                failed_task=failed_task,
                error=outcome.error,
            )

"""One run's lifecycle, in one place.

validate -> script -> environment (cached image or build it) -> pipeline
container -> collect artifacts -> store set (manifest last) -> run record.
Every state change goes to the run store as it happens. Whatever fails, the
container is gone, the redacted log is kept, and the run record says why.
"""
from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__, config, git
from .errors import Cancelled, InvalidProject, SoopervisorError, UsageError
from .logstream import LogStream
from .redact import Redactor
from .runs import Run, RunStore, now_iso

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


@dataclass
class RunContext:
    """What one run holds while it goes; ``cancel()`` works from any thread."""

    run: Run
    log: LogStream
    store: RunStore
    executor: object | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    cancel_requested: bool = False

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.executor is not None:
            self.executor.cancel()


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
        lines = data.decode(errors="replace").splitlines()
        if rel == project.env_file and rel.startswith("environment."):
            lines = project.pip_requirements
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


def _env_fingerprint() -> str:
    """Changes when the environment stages change, so old cached images are not reused."""
    from . import script as script_mod

    texts = [script_mod._read("runner.sh")]
    texts += [script_mod._read(stage.snippet) for stage in script_mod.STAGES if stage.env]
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def prepare(opts: RunOptions):
    """Validation and everything else that can fail before Docker is touched."""
    from .project import inspect
    from .storage import open_storage

    report = inspect(opts.path)
    if not report.ok:
        raise InvalidProject(report)
    project = report.project
    secrets = secret_values(opts.secrets)
    from .executors.docker import ca_bundle_from_env

    ca = ca_bundle_from_env(opts.ca_bundle)
    storage = open_storage(opts.storage)
    storage.check_writable()
    def read(rel: str) -> bytes | None:
        return git.show_file(project.repo_root, project.commit, posixpath.join(project.subdir, rel))

    if read("pipeline.yaml") is None:
        raise UsageError(
            f"pipeline.yaml is not in commit {project.commit[:7]}: the run uses the committed tree",
            "commit it: git add pipeline.yaml && git commit -m 'add pipeline.yaml'",
        )
    committed = env_inputs(project, read)
    return report, project, secrets, ca, storage, committed


def start(opts: RunOptions, store: RunStore | None = None) -> tuple[RunContext, Callable[[], Run]]:
    """Check everything that can be checked, record the run, return (context, go).

    Raises before recording anything when the project, secrets, storage or the
    engine are not usable. ``go()`` executes the run and returns it finished.
    """
    from .executors.docker import DockerExecutor

    report, project, secrets, ca, storage, committed = prepare(opts)
    executor = DockerExecutor()  # EngineUnavailable here: nothing recorded, nothing to clean
    store = store or RunStore()
    redactor = Redactor(secrets.values())
    run = Run(
        project=project.name,
        project_path=str(project.path),
        commit=project.commit,
        dirty=project.dirty,
        mode="sample" if opts.sample else "full",
        status="running",
        started_at=now_iso(),
        storage_url=storage.url,
    )
    log_path = config.logs_dir() / f"{run.id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run.log_path = str(log_path)
    log_file = open(log_path, "w", encoding="utf-8", newline="")

    def to_file(line: str) -> None:
        log_file.write(line)
        log_file.flush()  # readers (the sidebar, `tail -f`) follow it live

    sinks = [to_file] + ([opts.on_line] if opts.on_line else [])
    log = LogStream(redactor, sinks)
    store.add(run)
    ctx = RunContext(run=run, log=log, store=store, executor=executor)

    def go() -> Run:
        try:
            _execute(ctx, opts, report, project, secrets, ca, storage, committed, redactor)
        finally:
            log_file.close()
            ctx.finished.set()
        return run

    return ctx, go


def _execute(ctx, opts, report, project, secrets, ca, storage, committed, redactor) -> None:
    from . import script as script_mod
    from .artifacts import safe_extract

    run, log, executor = ctx.run, ctx.log, ctx.executor
    note = log.note
    for w in report.warnings:
        note(f"soopervisor: warning: {w.what}")
    note(f"soopervisor: run {run.id} of {run.project} at {run.commit[:7]} ({run.mode})")
    script = script_mod.render(project, sample=opts.sample).encode()
    workdir = f"/workspace/{project.subdir}" if project.subdir else "/workspace"
    environment = {
        **secrets,
        "SOOPERVISOR_COMMIT": run.commit,
        "SOOPERVISOR_DIRTY": "true" if run.dirty else "false",
        "SOOPERVISOR_MODE": run.mode,
        "SOOPERVISOR_RUN_ID": run.id,
        "PLOOMBER_STATS_ENABLED": "false",
    }
    common = dict(
        workdir=workdir,
        environment=environment,
        ca_bundle=ca,
        cpus=opts.cpus,
        memory=opts.memory,
        labels={"soopervisor.run": run.id},
    )
    staging = Path(tempfile.mkdtemp(prefix=f"soopervisor-{run.id}-"))
    status, exit_code, error, image, hash_ = "failed", None, None, None, None
    deadline_timeout = opts.timeout
    try:
        image = executor.resolve_image(opts.image, note)
        if committed is None:
            note("soopervisor: the requirements install local paths; the environment is cached per commit")
            hash_ = env_hash(image.id, {"commit": run.commit.encode()}, _env_fingerprint())
        else:
            hash_ = env_hash(image.id, committed, _env_fingerprint())
        env_image = f"{ENV_IMAGE_REPO}:{hash_[:20]}"
        if executor.has_image(env_image):
            note(f"soopervisor: environment cache hit ({env_image}): skipping installation")
        else:
            note(f"soopervisor: environment cache miss: building {env_image} from {image.name}")
            if committed is None:
                env_tree = git.archive(project.repo_root, run.commit, prefix="workspace/")
            else:
                env_tree = _tar(
                    {posixpath.join("workspace", project.subdir, rel): data for rel, data in committed.items()}
                )
            from .executors import ContainerSpec

            # Docker merges a committed container's environment into the image
            # config, so this container gets no secrets and no run facts.
            spec = ContainerSpec(
                image=image.id,
                command=["bash", "/soopervisor/run.sh", "env"],
                archives=[env_tree, _tar({"soopervisor/run.sh": script})],
                timeout=deadline_timeout,
                **{**common, "environment": {"PLOOMBER_STATS_ENABLED": "false"}, "name_ca": False},
            )
            labels = {"soopervisor.env-hash": hash_, "soopervisor.base-image": image.name, "soopervisor.run": ""}
            result = executor.execute(
                spec, log.write, after=lambda c: executor.commit(c, ENV_IMAGE_REPO, hash_[:20], image.env, labels)
            )
            if result.exit_code != 0 or result.timed_out or result.cancelled:
                exit_code = result.exit_code
                error = _why(result, opts.timeout, "environment set-up")
                status = "cancelled" if result.cancelled else "failed"
                return
        from .executors import ContainerSpec

        spec = ContainerSpec(
            image=env_image,
            command=["bash", "/soopervisor/run.sh"],
            archives=[
                git.archive(project.repo_root, run.commit, prefix="workspace/"),
                _tar({"soopervisor/run.sh": script}),
            ],
            timeout=deadline_timeout,
            **common,
        )
        collected = staging / "files"
        collected.mkdir()

        def collect(container) -> None:
            bits, _ = container.get_archive("/soopervisor/artifacts")
            safe_extract(bits, collected, strip="artifacts")

        result = executor.execute(spec, log.write, after=collect)
        exit_code = result.exit_code
        if result.exit_code == 0 and not (result.timed_out or result.cancelled):
            status = "succeeded"
        else:
            status = "cancelled" if result.cancelled else "failed"
            error = _why(result, opts.timeout, "the pipeline")
    except (KeyboardInterrupt, Cancelled):
        status, error = "interrupted", "interrupted (Ctrl-C or SIGTERM); the container was removed"
        raise
    except SoopervisorError as e:
        status, error = "failed", redactor.redact(str(e))
        raise
    except Exception as e:  # a bug of ours: keep the record honest, then let it surface
        status, error = "failed", redactor.redact(f"internal error: {type(e).__name__}: {e}")
        raise
    finally:
        if error:
            note(f"soopervisor: {error}")
        note(f"soopervisor: run {run.id} {status}")
        log.close()
        _store_set(ctx, storage, staging, status, exit_code, error, image, hash_)
        shutil.rmtree(staging, ignore_errors=True)


def _why(result, timeout, what: str) -> str:
    if result.timed_out:
        return f"{what} timed out after {timeout:g}s and was stopped"
    if result.cancelled:
        return f"{what} was cancelled"
    return f"{what} failed with exit code {result.exit_code}"


def _store_set(ctx: RunContext, storage, staging: Path, status, exit_code, error, image, hash_) -> None:
    """Log + collected files + manifest (last) into storage; then the run record."""
    from .artifacts import write_manifest

    run, log, store = ctx.run, ctx.log, ctx.store
    failed_task = log.failed_task if status != "succeeded" else None
    if status != "succeeded" and not failed_task and log.failed_stage and log.failed_stage != "build pipeline":
        failed_task = None
    finished = now_iso()
    set_dir = staging / "files"
    set_dir.mkdir(exist_ok=True)
    try:
        shutil.copyfile(run.log_path, set_dir / LOG_NAME)
        write_manifest(
            set_dir,
            project=run.project,
            commit=run.commit,
            dirty=run.dirty,
            mode=run.mode,
            status=status,
            exit_code=exit_code,
            started_at=run.started_at,
            finished_at=finished,
            image=image.name if image else None,
            image_digest=image.digest if image else None,
            env_hash=hash_,
            soopervisor_version=__version__,
            log=LOG_NAME,
            run_id=run.id,
            failed_task=failed_task,
            error=error,
        )
        storage.put_set(run.project, run.commit, set_dir)
    except SoopervisorError as e:
        # nothing lost: the set stays on this machine, and the error says where
        kept = config.data_dir() / "unsaved" / run.id
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(set_dir), kept)
        error = f"{error}; " if error else ""
        error += f"storing artifacts failed: {e.message}"
        status = "failed"
        e.hint = f"the run's artifacts and log are kept in {kept}; {e.hint or ''}".rstrip("; ")
        raise
    finally:
        store.update(
            run,
            status=status,
            exit_code=exit_code,
            finished_at=finished,
            failed_task=failed_task,
            error=error,
        )

"""soopervisor: run a ploomber pipeline the way CI would, keep its outputs by commit.

    import soopervisor
    report = soopervisor.validate(".")
    run = soopervisor.run(".", sample=True)
    arts = soopervisor.get_artifacts("latest")

Imports stay lazy: ``soopervisor validate`` must answer without loading
docker-py.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .artifacts import Artifacts
    from .project import Report
    from .reproduction import Reproduction
    from .runs import Run

__all__ = ["__version__", "attach", "get_artifacts", "get_run", "list_runs", "reproduce", "run", "stop_run", "validate"]


def validate(path: str | os.PathLike = ".", entry_point: str | None = None) -> Report:
    """Inspect the project at ``path``; ``.ok`` and every ``.problems`` (what, where, hint).

    ``entry_point`` is what ``ploomber build --entry-point`` takes (a spec file, a pattern such
    as ``"tasks/*.py"``, a dotted path); by default it is found as ploomber finds it.
    """
    from .project import inspect

    return inspect(path, entry_point=entry_point)


def run(
    path: str | os.PathLike = ".",
    sample: bool = True,
    storage: str | None = None,
    image: str | None = None,
    secrets: Iterable[str] = (),
    on_line: Callable[[str], None] | None = None,
    wait: bool = True,
    *,
    ca_bundle: str | os.PathLike | None = None,
    timeout: float | None = None,
    cpus: float | None = None,
    memory: int | str | None = None,
    network: str | None = None,
    entry_point: str | None = None,
    force: bool | None = None,
    executor: str | None = None,
    remote: str | None = None,
) -> Run:
    """Run the pipeline at ``path`` in a fresh container; store its artifacts as the run's own set.

    ``remote="NAME"`` runs the current commit on a remote instead (a team's ``soopervisor serve``
    or ``"github"``, see ``soopervisor remote list``): the commit must be pushed; the run is
    recorded here like any run and its log follows live. Ctrl-C while waiting only stops
    following it there; ``stop_run`` stops it, ``attach(run_id)`` follows it again.

    ``secrets`` are names of environment variables passed into the container
    and redacted from every output. ``on_line`` gets each redacted log line
    (if it raises, it is detached and the run goes on). ``memory`` is bytes or
    a size with a unit ("2g"). ``network`` is the pipeline stage's network
    (``default``, ``none``, ``host``, ``bridge`` or a Docker network name;
    default: SOOPERVISOR_NETWORK, else the engine's default). ``entry_point`` as in
    :func:`validate`. ``force=True`` rebuilds every task; by default (None:
    SOOPERVISOR_FORCE, else False) the run starts from the products of the
    nearest ancestor commit's set and rebuilds only what changed. ``executor`` names the engine
    to run on (an entry of the executors file, see ``soopervisor executors``; default:
    SOOPERVISOR_EXECUTOR, else the file's default, else DOCKER_HOST's engine). Raises ``InvalidProject`` (with the report),
    ``UsageError``, ``EngineUnavailable`` or ``StorageUnavailable`` before
    anything runs. With ``wait=False`` the run goes on in a thread and the
    returned Run is updated as it goes (its record in ``list_runs`` too).
    Ctrl-C while waiting cancels the run (recorded ``cancelled``, its set
    stored), then raises KeyboardInterrupt.
    """
    from .service import RunOptions, RunService

    opts = RunOptions(
        path=path, sample=sample, secrets=tuple(secrets), ca_bundle=ca_bundle,
        timeout=timeout, cpus=cpus, memory=memory, on_line=on_line, network=network,
        entry_point=entry_point, force=force,
    )
    service = RunService(storage=storage, image=image, engine=executor)
    if remote is not None:
        active = service.start_remote(opts, remote)
        return active.result() if wait else active.run
    return service.run(opts) if wait else service.start(opts).run


def attach(run_id: str, on_line: Callable[[str], None] | None = None) -> Run:
    """A run by id, followed live from here: ``on_line`` gets its log from the first line, then each
    new one; the returned Run is kept up to date until it ends. For a remote run nobody follows
    any more (a kernel restarted), this process follows it at the remote again."""
    from .service import RunService
    from .watch import watch

    service = RunService()
    service.attach(run_id)
    return watch(service.get(run_id), on_line)


def get_run(run_id: str) -> Run:
    """One run from the shared store; ``RunNotFound`` when the id is unknown.

    A running run whose owner is gone is marked ``interrupted`` first (by any reader).
    """
    from .service import RunService

    return RunService().get(run_id)


def stop_run(run_id: str, wait: float = 30.0) -> Run:
    """Cancel a running run and remove its container, whichever process started it."""
    from .service import RunService

    return RunService().stop(run_id, wait)


def list_runs(project: str | None = None, limit: int | None = None) -> list[Run]:
    """Runs from the shared store, newest first (runs whose owner is gone are marked interrupted first)."""
    from .service import RunService

    return RunService().list(project=project, limit=limit)


def get_artifacts(commit: str = "latest", project: str | None = None, storage: str | None = None, *,
                  mode: str | None = None, run: str | None = None) -> Artifacts:
    """The artifacts stored for ``commit`` (full SHA, unique prefix or "latest"): its newest succeeded set,
    full before sample unless ``mode`` is given; ``run="ID"`` gives that run's set whatever its status.
    The id of a remote run recorded here (``soopervisor runs``) reads its set where the remote stored it."""
    from .artifacts import get_artifacts as _get

    if run is not None and storage is None:
        from .runs import RunStore

        record = RunStore().get(run)
        if record is not None and record.remote is not None and record.storage_url:
            storage, run = record.storage_url, record.set_id

    return _get(commit, project=project, storage=storage, mode=mode, run=run)


def reproduce(commit: str = "latest", *, run: str | None = None, path: str | os.PathLike = ".",
              project: str | None = None, storage: str | None = None, mode: str | None = None,
              image: str | None = None, secrets: Iterable[str] = (),
              on_line: Callable[[str], None] | None = None, executor: str | None = None,
              **options) -> Reproduction:
    """Run ``commit`` again in an environment rebuilt from its set's recorded lock; compare the products.

    The set is the commit's newest succeeded one (full before sample unless
    ``mode``), or that of ``run="ID"``. Every task is rebuilt; the new set is
    stored under the commit like any run's. The result says which products
    came out with the recorded sha256 (``.identical``), which did not
    (``.differ``, ``.added``, ``.removed``), the tasks that made them
    (``.tasks``: the non-deterministic ones) and whether the rebuilt
    environment has the recorded packages (``.environment``: the differences).
    ``executor``, ``timeout``, ``cpus``, ``memory``, ``network``, ``ca_bundle``,
    ``entry_point`` as for :func:`run`. Raises ``UsageError`` before anything
    runs when the set recorded no usable lock.
    """
    from .reproduction import reproduce as _reproduce

    return _reproduce(commit, run=run, path=path, project=project, storage=storage, mode=mode, image=image,
                      secrets=secrets, on_line=on_line, executor=executor, **options)


def load_ipython_extension(ipython) -> None:
    """``%load_ext soopervisor``: registers the ``%soopervisor`` magic."""
    from soopervisor_jupyter.magics import load_ipython_extension as load

    load(ipython)

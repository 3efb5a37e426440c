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
    from .runs import Run

__all__ = ["__version__", "get_artifacts", "get_run", "list_runs", "run", "stop_run", "validate"]


def validate(path: str | os.PathLike = ".") -> Report:
    """Inspect the project at ``path``; ``.ok`` and every ``.problems`` (what, where, hint)."""
    from .project import inspect

    return inspect(path)


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
    memory: str | None = None,
) -> Run:
    """Run the pipeline at ``path`` in a fresh container; store its artifacts by commit.

    ``secrets`` are names of environment variables passed into the container
    and redacted from every output. ``on_line`` gets each redacted log line.
    Raises ``InvalidProject`` (with the report), ``UsageError``,
    ``EngineUnavailable`` or ``StorageUnavailable`` before anything runs.
    With ``wait=False`` the run goes on in a thread and the returned Run is
    updated as it goes (its record in ``list_runs`` too).
    """
    from .runner import RunOptions, start

    opts = RunOptions(
        path=path, sample=sample, storage=storage, image=image, secrets=tuple(secrets),
        ca_bundle=ca_bundle, timeout=timeout, cpus=cpus, memory=memory, on_line=on_line,
    )
    if wait:
        return start(opts).execute()
    from .live import start_background

    return start_background(opts)


def get_run(run_id: str) -> Run:
    """One run from the shared store; ``RunNotFound`` when the id is unknown."""
    from .live import get_run as _get

    return _get(run_id)


def stop_run(run_id: str, wait: float = 30.0) -> Run:
    """Cancel a running run and remove its container, whichever process started it."""
    from .live import stop_run as _stop

    return _stop(run_id, wait)


def list_runs(project: str | None = None, limit: int | None = None) -> list[Run]:
    """Runs from the shared store, newest first."""
    from .runs import RunStore

    return RunStore().list(project=project, limit=limit)


def get_artifacts(commit: str = "latest", project: str | None = None, storage: str | None = None) -> Artifacts:
    """The artifacts stored for ``commit`` (full SHA, unique prefix or "latest")."""
    from .artifacts import get_artifacts as _get

    return _get(commit, project=project, storage=storage)


def load_ipython_extension(ipython) -> None:
    """``%load_ext soopervisor``: registers the ``%soopervisor`` magic."""
    from soopervisor_jupyter.magics import load_ipython_extension as load

    load(ipython)

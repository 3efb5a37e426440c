"""Executors run the generated script somewhere clean. Docker is the one we have.

The protocol is engine-neutral: what crosses it are specs, bytes, callbacks and
plain results — never an engine's object (a Docker container or image). A
second executor (Kubernetes Jobs, Swarm jobs) implements the same calls:

- ``execute(spec, on_output, collect_to=..., keep_as=...)`` runs one container
  to its end, streams its output, hands the tar of ``spec.collect_path`` to
  ``collect_to`` and keeps the finished file system as an image when asked;
  the container is always gone afterwards.
- ``cancel()`` stops what ``execute`` runs, from any thread.
- ``remove_by_label(run_id)`` / ``kill_by_label(run_id)`` / ``labelled()`` find a
  run's containers again by their ``soopervisor.run`` label, from any process
  (stop from elsewhere, reaping the runs of a dead owner, adopting after a restart).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..engines import Engine

#: the label every container of a run carries: ``soopervisor.run=<run id>``
RUN_LABEL = "soopervisor.run"
#: where the script leaves what the pipeline produced
ARTIFACTS_PATH = "/soopervisor/artifacts"


@dataclass
class ContainerSpec:
    image: str
    command: list[str]
    archives: list[bytes]  # tars put at "/" before the start: project tree, script
    workdir: str = "/workspace"
    environment: dict[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None
    # name the CA in the container's environment; off for containers that are
    # committed as images (the script names it itself when the file is there)
    name_ca: bool = True
    cpus: float | None = None
    memory: int | None = None  # bytes
    timeout: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: the folder ``collect_to`` receives as a tar
    collect_path: str = ARTIFACTS_PATH
    #: the container's network: "default" (the engine's), "none", "host", "bridge" or a network name
    network: str = "default"
    #: named volumes of the engine, by name -> path in the container (the download cache of
    #: environment builds); never part of a kept image
    volumes: dict[str, str] = field(default_factory=dict)


#: receives the tar of ``spec.collect_path`` as a stream of byte chunks
CollectTo = Callable[[Iterable[bytes]], None]


@dataclass(frozen=True)
class KeepAs:
    """Keep a container that ended with exit code 0 as an image ``repository:tag``.

    Its config gets these ``env`` and ``labels``. An engine may merge the
    container's own environment into it (Docker does): a container that is
    kept gets no secrets and no run facts in its spec's ``environment``.
    """

    repository: str
    tag: str
    env: list[str]
    labels: dict[str, str]


@dataclass
class ExecResult:
    exit_code: int
    timed_out: bool = False
    cancelled: bool = False
    #: whether collect_to got the collected folder (False: the container left none)
    collected: bool = False


@dataclass
class ImageInfo:
    name: str
    id: str
    digest: str  # a registry digest when the image came from one, else its id
    env: list[str]
    labels: dict[str, str] = field(default_factory=dict)


class Executor(Protocol):
    #: where runs execute, for the run record ("docker", "docker at tcp://host:2376")
    where: str
    #: the configured engine's name (soopervisor.engines), kept in the run record so that stop,
    #: reap and adopt find the run's containers on that engine again; None when not configured by name
    engine: str | None

    def resolve_image(self, image: str | None, note: Callable[[str], None]) -> ImageInfo: ...

    def has_image(self, name: str) -> bool: ...

    def latest_image(self, repository: str, labels: dict[str, str]) -> ImageInfo | None: ...

    def read_file(self, image: str, path: str) -> bytes | None: ...

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        collect_to: CollectTo | None = None,
        keep_as: KeepAs | None = None,
    ) -> ExecResult: ...

    def cancel(self) -> None: ...

    def kill_by_label(self, run_id: str) -> int: ...

    def remove_by_label(self, run_id: str) -> int: ...

    def labelled(self) -> dict[str, int]: ...

    def remove_stale_helpers(self) -> int: ...


def for_engine(engine: Engine) -> Executor:
    """The executor of a configured engine, whatever its type (connected: EngineUnavailable when it
    does not answer; UsageError for a type this installation cannot run)."""
    from ..errors import UsageError

    if engine.type == "docker":
        from .docker import DockerExecutor

        return DockerExecutor(engine=engine)
    if engine.type == "swarm":
        from .swarm import SwarmExecutor

        return SwarmExecutor(engine)
    if engine.type == "kubernetes":
        import importlib.util

        if importlib.util.find_spec("kubernetes") is None:
            raise UsageError(f"executor {engine.name!r} is a kubernetes engine, and the kubernetes client is not "
                             "installed", "pip install 'soopervisor[kubernetes]' (or: pip install kubernetes)")
        from .kubernetes import KubernetesExecutor

        return KubernetesExecutor(engine)
    raise UsageError(f"executor {engine.name!r}: type {engine.type!r} cannot run here",
                     f"fix the entry in {engine.source}")

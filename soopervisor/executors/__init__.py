"""Executors run the generated script somewhere clean. Docker is the one we have.

The protocol is what the runner needs; a second executor (e.g. Kubernetes)
implements the same three calls.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


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
    memory: str | None = None
    timeout: float | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ExecResult:
    exit_code: int
    timed_out: bool = False
    cancelled: bool = False


class Executor(Protocol):
    def resolve_image(self, image: str | None, note: Callable[[str], None]) -> "ImageInfo": ...

    def has_image(self, name: str) -> bool: ...

    def commit(self, container: object, repository: str, tag: str, env: list[str], labels: dict[str, str]) -> None: ...

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        after: Callable[[object], None] | None = None,
    ) -> ExecResult: ...

    def cancel(self) -> None: ...


@dataclass
class ImageInfo:
    name: str
    id: str
    digest: str  # a registry digest when the image came from one, else its id
    env: list[str]

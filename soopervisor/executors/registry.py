"""Images to the nodes: push an image of a Docker engine to a registry and name it by digest.

Engines that run a pipeline on other machines (Swarm nodes, Kubernetes pods) build its
environment on a Docker engine that can commit, then let the nodes pull it from the
engine entry's ``registry``. A digest, not a tag, is what the run names: what the nodes
pull is exactly what was built.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import EngineUnavailable, UsageError
from . import CollectTo, ContainerSpec, ExecResult, ImageInfo, KeepAs


def push(client: Any, image: str, registry: str, *, builder: str,
         note: Callable[[str], None] | None = None) -> str:
    """``image`` of ``client``'s engine pushed to ``registry``: ``registry/repo@sha256:…``.

    ``builder`` names that engine in errors. An image pushed there before (by this or
    another run) is not pushed again. Not in the engine → UsageError; the engine or the
    registry failing → EngineUnavailable (a server holds the engine, the queue retries).
    """
    hint = (f"check that the registry {registry} answers from {builder} and takes its pushes "
            "(an HTTP registry must be in the engine's insecure-registries)")
    try:
        img = client.images.get(image)
    except Exception as e:  # noqa: BLE001 - ImageNotFound or the engine failing
        if type(e).__name__ == "ImageNotFound":
            raise UsageError(f"image {image!r} is not in the build engine ({builder})",
                             "build it there first (`soopervisor run` does), or check the entry's `build`") from None
        raise EngineUnavailable(f"{builder} failed: {type(e).__name__}: {str(e)[:300]}") from None
    repo, tag = repository_and_tag(image, img.id)
    remote = f"{registry}/{repo}"
    # runs starting together push the same image: one at a time (a registry answers concurrent
    # uploads of one repository with 500s), and a push done meanwhile is not repeated
    with _pushing(f"{remote}:{img.id}"):
        with contextlib.suppress(Exception):
            img.reload()
        for digest in img.attrs.get("RepoDigests") or []:
            if digest.startswith(remote + "@"):
                return digest
        return _push(client, img, image, remote, tag, registry, hint, note)


@contextlib.contextmanager
def _pushing(key: str) -> Iterator[None]:
    """Held while ``key`` is pushed, by any thread or process of this machine (flock on a file per key)."""
    path = Path(tempfile.gettempdir()) / f"soopervisor-push-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lock"
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _push(client: Any, img: Any, image: str, remote: str, tag: str, registry: str, hint: str,
          note: Callable[[str], None] | None) -> str:
    if note is not None:
        note(f"soopervisor: pushing the image to {remote}:{tag}")
    digest = error = None
    try:
        img.tag(remote, tag)
        for event in client.api.push(remote, tag=tag, stream=True, decode=True):
            error = event.get("error") or error
            digest = (event.get("aux") or {}).get("Digest") or digest
    except Exception as e:  # noqa: BLE001 - the engine or the registry failing
        error = f"{type(e).__name__}: {str(e)[:300]}"
    if error or not digest:
        raise EngineUnavailable(f"pushing {image} to the registry {registry} failed: "
                                f"{str(error)[:300] if error else 'no digest came back'}", hint)
    return f"{remote}@{digest}"


def repository_and_tag(image: str, image_id: str) -> tuple[str, str]:
    """The repository (without the registry it came from) and tag ``image`` is pushed as.

    An image known only by its id gets ``soopervisor-image`` and a tag from the id.
    """
    by_id = "sv-" + image_id.split(":")[-1][:20]
    if image.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{12,64}", image):
        return "soopervisor-image", by_id
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    tag = by_id
    if ":" in last:
        name, tag = name[: len(name) - len(last)] + last.split(":", 1)[0], last.split(":", 1)[1]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        name = rest  # drop the registry it came from
    return re.sub(r"[^a-z0-9._/-]", "-", name.lower()) or "soopervisor-image", tag


class BuildsOnDocker:
    """The image side of an executor whose pipelines run on other machines (Swarm, Kubernetes).

    Images and environment builds (``execute`` with ``keep_as``: a container committed as
    an image) live on a Docker engine that can commit, ``builder``; :meth:`to_registry`
    brings an image from there to the nodes. Subclasses set ``builder``, ``registry``,
    ``engine`` and ``_cancelled``, and run pipelines their own way.
    """

    builder: Any  # a DockerExecutor
    registry: str | None
    engine: str | None
    _cancelled: threading.Event
    _building: bool = False

    def resolve_image(self, image: str | None, note: Callable[[str], None]) -> ImageInfo:
        return self.builder.resolve_image(image, note)

    def has_image(self, name: str) -> bool:
        return self.builder.has_image(name)

    def latest_image(self, repository: str, labels: dict[str, str]) -> ImageInfo | None:
        return self.builder.latest_image(repository, labels)

    def read_file(self, image: str, path: str) -> bytes | None:
        return self.builder.read_file(image, path)

    def remove_stale_helpers(self) -> int:
        return self.builder.remove_stale_helpers()

    def to_registry(self, image: str, builder: str, note: Callable[[str], None] | None = None) -> str:
        """What the nodes pull ``image`` by (``registry/repo@digest``); the image itself without a registry."""
        if not self.registry:
            return image
        return push(self.builder.client, image, self.registry, builder=builder, note=note)

    def _build(self, spec: ContainerSpec, on_output: Callable[[bytes], None], collect_to: CollectTo | None,
               keep_as: KeepAs) -> ExecResult:
        """An environment build on ``builder`` (committing a file system is its job, not the nodes')."""
        self._building = True
        try:
            if self._cancelled.is_set():
                return ExecResult(exit_code=130, cancelled=True)
            return self.builder.execute(spec, on_output, collect_to=collect_to, keep_as=keep_as)
        finally:
            self._building = False

    def _cancel_build(self) -> None:
        self._cancelled.set()
        if self._building:
            self.builder.cancel()

"""The environment images a run caches (``soopervisor-env:<key>``): list them, prune them, cap their size.

Each image keeps one project's installed environment (hundreds of MB); they
pile up. What a run used last is recorded in ``<data dir>/env-images.json``
(tag -> time), so pruning removes the least recently used first. An image that
a container uses (a run in progress) is never removed. With
``SOOPERVISOR_CACHE_MAX_SIZE`` (``20g``) set, the cache is pruned to that size
after each environment build.

The size of an image here is what it adds to its nearest ancestor: its base
image, or the earlier environment it was built on (a changed requirement
installs only the difference). Shared layers are counted once.
docker-py is imported only when the engine is needed.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import config
from .environment import ENV_IMAGE_REPO
from .errors import UsageError

MAX_SIZE_VARIABLE = "SOOPERVISOR_CACHE_MAX_SIZE"
_USED_FILE = "env-images.json"


@dataclass
class EnvImage:
    """One cached environment image, as ``cache list`` shows it."""

    ref: str  # soopervisor-env:<tag>
    id: str
    base: str  # the base image it was built from (its label), "" when unknown
    size: int  # bytes it adds to its base image
    created: str  # ISO time (UTC)
    last_used: str  # ISO time (UTC); the creation time when never recorded
    in_use: bool  # a container (a run in progress) uses it

    @property
    def tag(self) -> str:
        return self.ref.split(":", 1)[1]

    def to_dict(self) -> dict:
        return {"image": self.ref, "id": self.id, "base": self.base, "size": self.size,
                "created": self.created, "last_used": self.last_used, "in_use": self.in_use}


# -- last use ------------------------------------------------------------------------------------


def _used_path() -> Path:
    return config.data_dir() / _USED_FILE


def _read_used() -> dict[str, str]:
    try:
        data = json.loads(_used_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def mark_used(ref: str, when: str | None = None) -> None:
    """Record that a run uses the environment image ``ref`` now (or at ``when``). Never raises."""
    with contextlib.suppress(OSError, UsageError):
        used = _read_used()
        used[ref] = when or _now()
        path = config.ensure_dir(config.data_dir()) / _USED_FILE
        tmp = path.with_name(f".{_USED_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(used, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)


def _forget(refs: Iterable[str]) -> None:
    with contextlib.suppress(OSError, UsageError):
        used = _read_used()
        for ref in refs:
            used.pop(ref, None)
        path = _used_path()
        if path.exists():
            tmp = path.with_name(f".{_USED_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(used, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, path)


# -- what is cached -------------------------------------------------------------------------------


def _iso(created: str) -> str:
    """Docker's creation time (nanoseconds, Z) as seconds in UTC."""
    try:
        when = datetime.fromisoformat(created[:19])
    except (TypeError, ValueError):
        return created or ""
    return when.replace(tzinfo=UTC).isoformat(timespec="seconds")


def _layers(image) -> tuple[str, ...]:
    return tuple(image.attrs.get("RootFS", {}).get("Layers") or ())


def _own_size(image, known: list) -> int:
    """What ``image`` adds to its nearest ancestor in ``known`` (its base image, or the earlier environment
    it was built on): its size less the size of the image whose layers are the longest proper prefix of
    its own. Shared layers are counted once, by the image that added them."""
    size = int(image.attrs.get("Size") or 0)
    mine = _layers(image)
    ancestors = [k for k in known if k.id != image.id and 0 < len(_layers(k)) < len(mine)
                 and mine[: len(_layers(k))] == _layers(k)]
    if not ancestors:
        return size
    nearest = max(ancestors, key=lambda k: len(_layers(k)))
    return max(size - int(nearest.attrs.get("Size") or 0), 0)


def list_images(client=None, base: str | None = None) -> list[EnvImage]:
    """Every ``soopervisor-env:*`` image (built from ``base`` when given), most recently used first."""
    if client is None:
        from .executors.docker import connect

        client = connect()
    used = _read_used()
    in_use = {c.get("ImageID") for c in client.api.containers(all=True)}
    images = client.images.list(name=ENV_IMAGE_REPO)
    if base is not None:
        images = [i for i in images if i.labels.get("soopervisor.base-image") == base]
    bases: dict[str, object] = {}
    for image in images:
        name = image.labels.get("soopervisor.base-image", "")
        if name and name not in bases:
            with contextlib.suppress(Exception):  # docker.errors.ImageNotFound: the base is gone
                bases[name] = client.images.get(name)
    known = [*bases.values(), *images]
    found: list[EnvImage] = []
    for image in images:
        created = _iso(image.attrs.get("Created", ""))
        for ref in image.tags:
            if not ref.startswith(ENV_IMAGE_REPO + ":"):
                continue
            found.append(EnvImage(
                ref=ref, id=image.id, base=image.labels.get("soopervisor.base-image", ""),
                size=_own_size(image, known), created=created, last_used=used.get(ref, created),
                in_use=image.id in in_use,
            ))
    found.sort(key=lambda e: (e.last_used, e.created, e.ref), reverse=True)
    return found


def prune_plan(images: list[EnvImage], keep: int | None = None, max_size: int | None = None,
               protect: Iterable[str] = ()) -> list[EnvImage]:
    """The images to remove, least recently used first; ``images`` most recently used first.

    ``keep``: keep the KEEP most recently used. ``max_size``: then remove until the
    images left add up to at most MAX_SIZE bytes. Neither: every image. An image in
    use, or named in ``protect``, is never removed (it still counts).
    """
    protect = set(protect)

    def removable(e: EnvImage) -> bool:
        return not e.in_use and e.ref not in protect

    doomed: list[EnvImage] = []
    if keep is None and max_size is None:
        doomed = [e for e in images if removable(e)]
    else:
        if keep is not None:
            doomed = [e for e in images[keep:] if removable(e)]
        if max_size is not None:
            left = [e for e in images if e not in doomed]
            total = sum(e.size for e in left)
            for e in reversed(left):  # least recently used first
                if total <= max_size:
                    break
                if removable(e):
                    doomed.append(e)
                    total -= e.size
    doomed.sort(key=lambda e: (e.last_used, e.created, e.ref))
    return doomed


def remove(images: list[EnvImage], client=None, on_removed: Callable[[EnvImage], None] | None = None,
           on_skipped: Callable[[EnvImage, str], None] | None = None) -> list[EnvImage]:
    """Remove these images (by tag), in order; those Docker refuses (in use meanwhile) are skipped."""
    if client is None:
        from .executors.docker import connect

        client = connect()
    from docker.errors import APIError

    removed: list[EnvImage] = []
    for e in images:
        try:
            client.images.remove(e.ref)  # never forced: an image a container took meanwhile stays
        except APIError as err:
            if on_skipped is not None:
                on_skipped(e, str(getattr(err, "explanation", None) or err).strip().splitlines()[-1])
            continue
        removed.append(e)
        if on_removed is not None:
            on_removed(e)
    _forget(e.ref for e in removed)
    return removed


def parse_size(value: str, named: str) -> int:
    """A cache size (``20g``, ``500m``): UsageError naming ``named`` otherwise."""
    from .options import parse_memory

    try:
        return parse_memory(value)
    except UsageError:
        raise UsageError(f"{named}={value!r} is not a size",
                         "give a size such as 20g, 500m or 1.5g (at least 6m)") from None


def max_size_setting() -> int | None:
    """``SOOPERVISOR_CACHE_MAX_SIZE`` in bytes, None when unset; UsageError when it is not a size."""
    value = os.environ.get(MAX_SIZE_VARIABLE, "").strip()
    return parse_size(value, MAX_SIZE_VARIABLE) if value else None


def apply_cap(just_built: str, note: Callable[[str], None]) -> None:
    """After a build: prune to SOOPERVISOR_CACHE_MAX_SIZE (when set), keeping ``just_built``. Never raises."""
    from .errors import SoopervisorError

    try:
        cap = max_size_setting()
        if cap is None:
            return
        from .artifacts.notebook import format_size

        images = list_images()
        doomed = prune_plan(images, max_size=cap, protect=[just_built])
        removed = remove(doomed)
        if removed:
            freed = sum(e.size for e in removed)
            note(f"soopervisor: environment cache over {MAX_SIZE_VARIABLE}={os.environ[MAX_SIZE_VARIABLE]}: "
                 f"removed {len(removed)} least recently used image(s), {format_size(freed)}")
    except SoopervisorError as e:
        note(f"soopervisor: warning: the environment cache was not pruned: {e.message}")
    except Exception as e:  # noqa: BLE001 - pruning is housekeeping: it must never fail a run
        note(f"soopervisor: warning: the environment cache was not pruned: {type(e).__name__}: {e}")

"""The download cache of environment builds: one Docker volume per repository (or one per machine).

uv's and pip's caches live in a named volume mounted at ``/var/cache/soopervisor``
into environment-build containers only, never into a pipeline run. A changed
requirements file then downloads only what changed.

Whoever can write a cache can poison it: a build runs the project's own code
(``setup.py``, build backends) as root in the container, and neither uv nor pip
checks a cached wheel against the index again. So the default is one cache per
repository (``SOOPERVISOR_DOWNLOAD_CACHE=repository``): a project can only poison
its own next build, which runs its own code anyway. ``machine`` shares one cache
among every repository of this machine (a single user's own projects; the tests);
``off`` mounts nothing. The reasoning is in docs/explanation/download-cache.md.

The key of a repository's cache is its folder on this machine, not anything its
files say (a project cannot name itself into another project's cache).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import config
from .errors import UsageError

MODE_VARIABLE = "SOOPERVISOR_DOWNLOAD_CACHE"
MODES = ("repository", "machine", "off")
#: where the volume is mounted in an environment build (the script looks for it there)
CONTAINER_PATH = "/var/cache/soopervisor"
VOLUME_PREFIX = "soopervisor-downloads-"
MACHINE_VOLUME = VOLUME_PREFIX + "machine"
_INDEX_FILE = "download-caches.json"


def mode() -> str:
    """``SOOPERVISOR_DOWNLOAD_CACHE`` (default ``repository``); UsageError for another value."""
    from .options import choice_setting

    return choice_setting(MODE_VARIABLE, MODES, f"set {MODE_VARIABLE}=repository (one cache per repository, "
                          "the default), machine (one for every repository here) or off (no cache)")


def repository_key(repo_root: str | os.PathLike) -> str:
    """Who a cache belongs to: the repository's folder on this machine, hashed (its files cannot choose it)."""
    return hashlib.sha256(str(Path(repo_root).resolve()).encode()).hexdigest()[:16]


def volume_name(repo_root: str | os.PathLike) -> str:
    """The name of the per-repository cache of the repository at ``repo_root``."""
    return VOLUME_PREFIX + repository_key(repo_root)


def volume_for(repo_root: str | os.PathLike) -> str | None:
    """The volume an environment build of the repository at ``repo_root`` mounts; None when off."""
    chosen = mode()
    if chosen == "off":
        return None
    if chosen == "machine":
        name, where = MACHINE_VOLUME, "(every repository)"
    else:
        name, where = volume_name(repo_root), str(Path(repo_root).resolve())
    _remember(name, where)
    return name


# -- which volume belongs to what, and when it was used --------------------------------------


def _index_path() -> Path:
    return config.data_dir() / _INDEX_FILE


def _read_index() -> dict[str, dict[str, str]]:
    try:
        data = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _write_index(index: dict[str, dict[str, str]]) -> None:
    path = config.ensure_dir(config.data_dir()) / _INDEX_FILE
    tmp = path.with_name(f".{_INDEX_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _remember(name: str, repository: str) -> None:
    """Record that a build uses ``name`` now; never raises (the index only feeds ``cache downloads``)."""
    with contextlib.suppress(OSError, UsageError):
        index = _read_index()
        index[name] = {"repository": repository,
                       "last_used": datetime.now(UTC).isoformat(timespec="seconds")}
        _write_index(index)


# -- what ``soopervisor cache downloads`` shows and clears ------------------------------------


@dataclass
class DownloadCache:
    volume: str
    repository: str  # the repository's folder, "(every repository)", or "?" when not recorded here
    size: int  # bytes; -1 when the engine did not say
    last_used: str  # ISO time (UTC), "" when unknown
    in_use: bool  # a container (an environment build in progress) mounts it

    def to_dict(self) -> dict:
        return {"volume": self.volume, "repository": self.repository, "size": self.size,
                "last_used": self.last_used, "in_use": self.in_use}


def list_caches(client=None) -> list[DownloadCache]:
    """Every download-cache volume in the engine, most recently used first."""
    if client is None:
        from .executors.docker import connect

        client = connect()
    index = _read_index()
    df = client.df()  # the one call that says volume sizes (and which containers use them)
    found = []
    for v in df.get("Volumes") or []:
        name = v.get("Name", "")
        if not name.startswith(VOLUME_PREFIX):
            continue
        usage = v.get("UsageData") or {}
        known = index.get(name, {})
        found.append(DownloadCache(volume=name, repository=known.get("repository", "?"),
                                   size=int(usage.get("Size", -1)), last_used=known.get("last_used", ""),
                                   in_use=int(usage.get("RefCount", 0)) > 0))
    found.sort(key=lambda c: (c.last_used, c.volume), reverse=True)
    return found


def clear(caches: list[DownloadCache], client=None) -> tuple[list[DownloadCache], list[tuple[DownloadCache, str]]]:
    """Remove these volumes; those a build mounts right now are kept. (removed, [(kept, why)])."""
    if client is None:
        from .executors.docker import connect

        client = connect()
    from docker.errors import APIError, NotFound

    removed, kept = [], []
    for c in caches:
        if c.in_use:
            kept.append((c, "an environment build is using it"))
            continue
        try:
            client.volumes.get(c.volume).remove()
        except NotFound:
            pass  # gone meanwhile: as good as removed
        except APIError as e:
            kept.append((c, str(getattr(e, "explanation", None) or e).strip().splitlines()[-1]))
            continue
        removed.append(c)
    with contextlib.suppress(OSError, UsageError):
        index = _read_index()
        for c in removed:
            index.pop(c.volume, None)
        _write_index(index)
    return removed, kept

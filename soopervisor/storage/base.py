"""The storage protocol every backend implements, and the name checks they share.

A storage holds *sets*: the files one run produced, addressed by
``<project>/<commit>/<name>``. A set is complete once its ``manifest.json``
exists; backends write it last and never list a set without it. The surface is
kept to what an object store can do (put objects, get objects, list keys), so a
cloud backend does not need directories or renames.

Backends subclass :class:`Storage` and implement the ``_``-prefixed methods;
the public methods validate every project/commit/name first, so no backend can
forget to.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from soopervisor.errors import IntegrityError, UnsafePath

#: the file that completes a set; always stored last
MANIFEST = "manifest.json"


def check_name(kind: str, value: str) -> str:
    """``value`` as a project or commit name, or UnsafePath.

    A simple name: one path segment, not hidden (a leading ``.`` is reserved for
    the backends' staging areas), no separators, no NUL.
    """
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or value.startswith(".")
        or any(c in value for c in ("/", "\\", "\0"))
        or len(value) > 255
    ):
        raise UnsafePath(
            f"unsafe {kind} name {value!r}",
            hint=f"a {kind} name is a single folder name: no '/', '\\', '..' or leading '.'",
        )
    return value


def check_relpath(name: str) -> str:
    """``name`` as a relative posix path inside a set, or UnsafePath.

    Only canonical paths pass (no empty, ``.`` or ``..`` segments), so a name
    maps to exactly one stored object on every backend.
    """
    bad = (
        not isinstance(name, str)
        or not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafePath(
            f"unsafe file name {name!r} in an artifact set",
            hint="names are relative paths inside the set, without '..', a leading '/' or backslashes",
        )
    return name


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """The manifest in ``data``; IntegrityError when it is not a JSON object."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise IntegrityError(
            f"the manifest of {where} is not valid JSON: {e}",
            hint="the stored set is damaged; run the pipeline again to store it anew",
        ) from e
    if not isinstance(manifest, dict):
        raise IntegrityError(
            f"the manifest of {where} is not a JSON object",
            hint="the stored set is damaged; run the pipeline again to store it anew",
        )
    return manifest


class Storage(ABC):
    """Where artifact sets live. ``url`` names it (and reopens it)."""

    url: str

    def put_set(self, project: str, commit: str, src: Path) -> None:
        """Store every regular file under ``src``, ``manifest.json`` last.

        ``src`` is a local folder holding the set's files and its manifest.
        Replaces an existing set for the same commit; readers never see a mix of
        old and new files as one complete set. Symlinks in ``src`` are skipped.
        """
        check_name("project", project)
        check_name("commit", commit)
        src = Path(src)
        manifest_path = src / MANIFEST
        if not manifest_path.is_file() or manifest_path.is_symlink():
            raise ValueError(f"{src} holds no {MANIFEST}; write it before put_set")
        manifest = parse_manifest(manifest_path.read_bytes(), str(src))
        # The folder name is the address; a manifest saying otherwise would make
        # the set unreachable by the commit it claims.
        for key, value in (("project", project), ("commit", commit)):
            if manifest.get(key) not in (None, value):
                raise ValueError(f"manifest {key} {manifest.get(key)!r} does not match {value!r}")
        self._put_set(project, commit, src)

    def check_writable(self) -> None:
        """StorageUnavailable unless a set could be stored now (checked before a run)."""
        self._check_writable()

    def list_projects(self) -> list[str]:
        """Names of the projects holding at least one complete set, sorted."""
        return self._list_projects()

    def list_sets(self, project: str) -> list[dict[str, Any]]:
        """Manifests of the project's complete sets (order unspecified).

        Each has ``project`` and ``commit`` set to the address it is stored at.
        A set whose manifest is missing or damaged is left out.
        """
        check_name("project", project)
        return self._list_sets(project)

    def read_manifest(self, project: str, commit: str) -> dict[str, Any]:
        """The manifest of one complete set; ArtifactsNotFound when there is none."""
        check_name("project", project)
        check_name("commit", commit)
        return self._read_manifest(project, commit)

    def get_file(self, project: str, commit: str, name: str, dest: Path) -> None:
        """Copy one file of a complete set to ``dest`` (created or truncated).

        ``dest`` is written as given; callers choose a temporary name and verify
        the sha256 before moving it into place. ArtifactsNotFound when missing.
        """
        check_name("project", project)
        check_name("commit", commit)
        check_relpath(name)
        self._get_file(project, commit, name, Path(dest))

    @abstractmethod
    def _put_set(self, project: str, commit: str, src: Path) -> None: ...

    @abstractmethod
    def _check_writable(self) -> None: ...

    @abstractmethod
    def _list_projects(self) -> list[str]: ...

    @abstractmethod
    def _list_sets(self, project: str) -> list[dict[str, Any]]: ...

    @abstractmethod
    def _read_manifest(self, project: str, commit: str) -> dict[str, Any]: ...

    @abstractmethod
    def _get_file(self, project: str, commit: str, name: str, dest: Path) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

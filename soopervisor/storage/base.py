"""The storage protocol every backend implements, and the name checks they share.

A storage holds *artifact sets*. Schema 2 (written now): one set per run, at
``<project>/<commit>/<run_id>/`` holding ``manifest.json``, ``soopervisor.log``
and ``files/<product path>``. Schema 1 (read only): one set per commit, its
``manifest.json`` at ``<project>/<commit>/`` with the files beside it.

A set is complete once its ``manifest.json`` exists; backends write it last and
never list a set without it. The surface is kept to what an object store can do
(put objects, get objects, list keys), so a cloud backend does not need
directories or renames.

Backends subclass :class:`Storage` and implement the ``_``-prefixed methods;
the public methods validate every project/commit/run/name first, so no backend
can forget to.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soopervisor.errors import IntegrityError, StorageUnavailable, UnsafePath

#: the file that completes a set; always stored last
MANIFEST = "manifest.json"
#: the run's redacted log, beside the manifest (schema 2)
LOG = "soopervisor.log"
#: the folder of a schema-2 set that holds the products, so no product name can collide with ours
FILES = "files"
#: the layout written now
SCHEMA = 2


def check_name(kind: str, value: str) -> str:
    """``value`` as a project, commit or run name, or UnsafePath.

    A simple name: one path segment, not hidden (a leading ``.`` is reserved for
    the backends' staging areas), no separators, no control characters (these
    names are printed on one line), no bytes that are not UTF-8.
    """
    if (
        not isinstance(value, str)
        or not value
        or value in (".", "..")
        or value.startswith(".")
        or any(c in value for c in ("/", "\\"))
        or any(c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in value)
        or len(value) > 255
    ):
        raise UnsafePath(
            f"unsafe {kind} name {value!r}",
            hint=f"a {kind} name is a single folder name: no '/', '\\', '..' or leading '.'",
        )
    return value


def check_relpath(name: str) -> str:
    """``name`` as a relative posix path inside a set, or UnsafePath.

    Any name a POSIX file may have passes (backslashes, newlines, bytes that are
    not UTF-8 as surrogate escapes); only canonical paths do (no empty, ``.`` or
    ``..`` segments, no leading ``/``, no NUL), so a name maps to exactly one
    stored object on every backend and never leaves the set.
    """
    bad = (
        not isinstance(name, str)
        or not name
        or name.startswith("/")
        or "\0" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if bad:
        raise UnsafePath(
            f"unsafe file name {name!r} in an artifact set",
            hint="names are relative paths inside the set, without '..' or a leading '/'",
        )
    return name


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """The manifest in ``data``; IntegrityError when it is not a JSON object."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise IntegrityError(
            f"the manifest of {where} is not valid JSON ({_json_reason(e)})",
            hint="the stored set is damaged; run the pipeline again to store it anew",
        ) from None
    if not isinstance(manifest, dict):
        raise IntegrityError(
            f"the manifest of {where} is not a JSON object",
            hint="the stored set is damaged; run the pipeline again to store it anew",
        )
    return manifest


def _json_reason(e: BaseException) -> str:
    # the position only: json's message can quote the document, which may hold anything
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at line {e.lineno} column {e.colno}"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8"
    return "too deeply nested" if isinstance(e, RecursionError) else "unreadable"


@dataclass(frozen=True)
class StoredSet:
    """One complete set as a backend found it: its address and its manifest, or why that is unreadable.

    ``run_id`` None is a set of the old layout (schema 1). ``manifest`` is a JSON
    object (its shape is checked by :mod:`soopervisor.artifacts`), with
    ``project``, ``commit`` and ``run_id`` set to the address; None when
    ``damaged`` says why it could not be read.
    """

    commit: str
    run_id: str | None
    manifest: dict[str, Any] | None
    damaged: str | None = None


def set_files(manifest: dict[str, Any]) -> list[tuple[str, str | None, int | None]]:
    """``(name in the set, sha256, size)`` of every data file a manifest lists, our log included.

    Names are relative to the set folder (``files/...`` in schema 2). Entries of
    the wrong shape are left out: this serves incremental copies, which only
    need the entries that can be trusted.
    """
    schema2 = manifest.get("schema") == SCHEMA
    out = []
    entries = manifest.get("files")
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, dict) and isinstance(e.get("path"), str):
            name = f"{FILES}/{e['path']}" if schema2 else e["path"]
            out.append((name, _str(e.get("sha256")), _int(e.get("size"))))
    log = manifest.get("log")
    if schema2 and isinstance(log, dict) and log.get("path") == LOG:
        out.append((LOG, _str(log.get("sha256")), _int(log.get("size"))))
    return out


def _str(v: Any) -> str | None:
    return v.lower() if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def classify_run_folder(name: str, data: bytes | None, old: dict[str, Any] | None,
                        old_unreadable: bool) -> StoredSet | None:
    """Whether ``<commit>/<name>/manifest.json`` (bytes ``data``) is a schema-2 run set.

    A set of the old layout keeps its products beside its manifest, so a product
    folder may hold a ``manifest.json`` of its own: a folder the old manifest
    lists files under is never a run set. When the commit has an old manifest
    that cannot be read, only a manifest that says schema 2 and this run id
    counts. Otherwise every such folder is a run set, damaged when its manifest
    is not a schema-2 manifest of this run.
    """
    try:
        check_name("run", name)
    except UnsafePath:
        return None
    if old is not None and any(
        isinstance(f, dict) and isinstance(f.get("path"), str) and f["path"].split("/", 1)[0] == name
        for f in (old.get("files") if isinstance(old.get("files"), list) else [])
    ):
        return None
    damaged, manifest = None, None
    if data is None:
        damaged = "manifest.json is unreadable"
    else:
        try:
            manifest = parse_manifest(data, f"run {name}")
        except IntegrityError as e:
            damaged = e.message
    if manifest is not None:
        if manifest.get("schema") != SCHEMA:
            damaged = f"the manifest of run {name} does not say schema {SCHEMA}"
        elif manifest.get("run_id") != name:
            damaged = f"the manifest in the folder of run {name} names another run"
    if damaged is not None:
        if old_unreadable:
            return None  # as likely a product folder of the old set as a damaged run set
        return StoredSet("", name, None, damaged)
    return StoredSet("", name, manifest, None)


def old_set(data: bytes | None, where: str) -> tuple[StoredSet, dict[str, Any] | None]:
    """The old-layout set whose manifest is ``data``, and that manifest when it parses."""
    if data is None:
        return StoredSet("", None, None, "manifest.json is unreadable"), None
    try:
        manifest = parse_manifest(data, where)
    except IntegrityError as e:
        return StoredSet("", None, None, e.message), None
    return StoredSet("", None, manifest, None), manifest


def addressed(found: StoredSet, project: str, commit: str) -> StoredSet:
    """``found`` with its address filled in; the folder names win over what a manifest says."""
    manifest = found.manifest
    if manifest is not None:
        manifest = {**manifest, "project": project, "commit": commit}
        if found.run_id is not None:
            manifest["run_id"] = found.run_id
    return StoredSet(commit, found.run_id, manifest, found.damaged)


def src_names(src: Path) -> list[str]:
    """What ``put_set`` stores of a set folder: ``soopervisor.log`` and the regular files under ``files/``."""
    from soopervisor.storage.local import regular_files  # the walk that never follows a link

    names = [LOG] if (src / LOG).is_file() and not (src / LOG).is_symlink() else []
    files = src / FILES
    if files.is_dir() and not files.is_symlink():
        names += [f"{FILES}/{n}" for n in regular_files(files)]
    return names


def _check_src(project: str, commit: str, run_id: str, src: Path) -> list[str]:
    """The names ``put_set`` will store; ValueError when ``src`` does not hold the set it claims."""
    manifest_path = src / MANIFEST
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise ValueError(f"{src} holds no {MANIFEST}; write it (artifacts.write_manifest) before put_set")
    manifest = parse_manifest(manifest_path.read_bytes(), str(src))
    # The folder names are the address; a manifest saying otherwise would make
    # the set unreachable by what it claims
    for key, value in (("project", project), ("commit", commit), ("run_id", run_id)):
        if manifest.get(key) != value:
            raise ValueError(f"manifest {key} {manifest.get(key)!r} does not match {value!r}")
    if manifest.get("schema") != SCHEMA:
        raise ValueError(f"the manifest in {src} is not schema {SCHEMA}; write it with artifacts.write_manifest")
    names = src_names(src)
    # the manifest is all a reader sees: it must list exactly what is stored, so
    # no name reaches a listing that was not stored under that very name
    listed = {n for n, _sha, _size in set_files(manifest)}
    if listed != set(names):
        extra = sorted(listed - set(names))[:3]
        missing = sorted(set(names) - listed)[:3]
        raise ValueError(f"the manifest in {src} does not match its files (listed only: {extra!r}; "
                         f"not listed: {missing!r}); write the manifest after the files")
    for n in names:
        check_relpath(n)
    return names


class Storage(ABC):
    """Where artifact sets live. ``url`` names it (and reopens it)."""

    url: str

    def put_set(self, project: str, commit: str, run_id: str, src: Path) -> None:
        """Store the set of run ``run_id`` from the local folder ``src``, ``manifest.json`` last.

        ``src`` holds ``manifest.json`` (written by ``artifacts.write_manifest``,
        naming this project, commit and run), ``soopervisor.log`` and
        ``files/...``; anything else in it is not stored, nor are links. Never
        touches another run's set; putting the same run again replaces its set,
        and readers never see a mix of the two as one complete set. Content the
        project already stores is not copied or uploaded again.
        """
        check_name("project", project)
        check_name("commit", commit)
        check_name("run", run_id)
        src = Path(src)
        names = _check_src(project, commit, run_id, src)
        self._put_set(project, commit, run_id, src, names)

    def delete_set(self, project: str, commit: str, run_id: str | None) -> None:
        """Remove one set (``run_id`` None: the commit's set of the old layout).

        Its manifest goes first, so an interrupted delete leaves an incomplete
        set, never a complete-looking one with files missing. Other sets of the
        commit are untouched. ArtifactsNotFound when there is no such set.
        """
        check_name("project", project)
        check_name("commit", commit)
        if run_id is not None:
            check_name("run", run_id)
        self._delete_set(project, commit, run_id)

    def check_writable(self) -> None:
        """StorageUnavailable unless a set could be stored now (checked before a run)."""
        self._check_writable()

    def list_projects(self) -> list[str]:
        """Names of the projects holding at least one complete set, sorted."""
        return self._list_projects()

    def list_sets(self, project: str) -> list[StoredSet]:
        """Every complete set of the project, of both layouts (order unspecified).

        A set whose manifest cannot be read is listed with ``damaged`` saying
        why, so one bad set never hides the others.
        """
        check_name("project", project)
        return self._list_sets(project)

    def read_manifest(self, project: str, commit: str, run_id: str | None = None) -> dict[str, Any]:
        """The manifest of one complete set; ArtifactsNotFound when there is none, IntegrityError when damaged."""
        check_name("project", project)
        check_name("commit", commit)
        if run_id is not None:
            check_name("run", run_id)
        return self._read_manifest(project, commit, run_id)

    def get_file(self, project: str, commit: str, run_id: str | None, name: str, dest: Path) -> None:
        """Copy one file of a complete set to ``dest`` (created or truncated).

        ``name`` is relative to the set's folder: ``manifest.json``,
        ``soopervisor.log``, ``files/<product>`` (schema 2) or the name the old
        manifest lists (``run_id`` None). ``dest`` is written as given; callers
        choose a temporary name and verify the sha256 before moving it into
        place. ArtifactsNotFound when missing.
        """
        check_name("project", project)
        check_name("commit", commit)
        if run_id is not None:
            check_name("run", run_id)
        check_relpath(name)
        self._get_file(project, commit, run_id, name, Path(dest))

    @abstractmethod
    def _put_set(self, project: str, commit: str, run_id: str, src: Path, names: list[str]) -> None: ...

    @abstractmethod
    def _delete_set(self, project: str, commit: str, run_id: str | None) -> None: ...

    @abstractmethod
    def _check_writable(self) -> None: ...

    @abstractmethod
    def _list_projects(self) -> list[str]: ...

    @abstractmethod
    def _list_sets(self, project: str) -> list[StoredSet]: ...

    @abstractmethod
    def _read_manifest(self, project: str, commit: str, run_id: str | None) -> dict[str, Any]: ...

    @abstractmethod
    def _get_file(self, project: str, commit: str, run_id: str | None, name: str, dest: Path) -> None: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def sets_of_commit(commit: str, project: str, old: tuple[bytes | None] | None,
                   runs: Iterable[tuple[str, bytes | None]]) -> list[StoredSet]:
    """The complete sets stored under one commit folder, classified the same way on every backend.

    ``old``: ``(bytes of <commit>/manifest.json,)`` when that file exists (None
    bytes: it could not be read), else None. ``runs``: ``(folder name, bytes of
    <commit>/<folder>/manifest.json or None)`` for every sub-folder holding a
    ``manifest.json``.
    """
    found: list[StoredSet] = []
    old_manifest = None
    if old is not None:
        stored, old_manifest = old_set(old[0], f"{project}/{commit}")
        found.append(stored)
    for name, data in runs:
        run = classify_run_folder(name, data, old_manifest, old_unreadable=old is not None and old_manifest is None)
        if run is not None:
            found.append(run)
    return [addressed(f, project, commit) for f in found]


def check_run_is_free(sets: list[StoredSet], commit: str, run_id: str) -> None:
    """StorageUnavailable when the commit's old-layout set keeps products in a folder named ``run_id``.

    Storing the run there would replace (and then delete) that folder.
    """
    for found in sets:
        if found.commit != commit or found.run_id is not None or found.manifest is None:
            continue
        if any(n.split("/", 1)[0] == run_id for n, _sha, _size in set_files(found.manifest)):
            raise StorageUnavailable(
                f"run id {run_id!r} is the name of a folder of the stored set of commit {commit[:7]}",
                hint="run again: a new run gets a new id",
            )

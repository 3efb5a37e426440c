"""Downloading a set: every file fetched, checked against the manifest, then moved into place.

All or nothing: a failure takes back what the download put there. The cache
of ``Artifacts.path`` uses the same fetch-and-place steps.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soopervisor.errors import IntegrityError, SoopervisorError, StorageUnavailable, UnsafePath, UsageError
from soopervisor.storage import MANIFEST, Storage
from soopervisor.storage.base import FILES, StoredSet, parse_manifest

from .manifest import _DAMAGED_HINT, LOG_NAME, ArtifactFile, sha256_file
from .sets import SetSummary, _read_set, _storage, _where, resolve_set

#: the folder of a download that holds our own files (manifest, log), apart from the products
OURS = ".soopervisor"
#: the hidden folder a download fetches into before moving files into place
PARTIAL = ".soopervisor-part."


def _refuse_links_on_the_way(root: Path, rel: str) -> None:
    """UnsafePath when any existing part of ``root/rel`` below root is a symlink."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            raise UnsafePath(
                f"{path} is a symlink; refusing to write through it",
                hint="remove the link or download into an empty folder",
            )


#: errors writing a download that are about the disk it goes to, said in plain words
_DISK_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS, errno.EACCES, errno.EPERM,
                errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EFBIG, errno.EIO}


def _disk_error(e: OSError, to: Path) -> SoopervisorError:
    """A failed write into ``to`` as an error with a plain reason (never an internal error)."""
    reason = e.strerror or str(e)
    if e.errno not in _DISK_ERRORS:
        return StorageUnavailable(f"the download into {to} failed: {reason}",
                                  hint="check the connection to the storage and try again")
    if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        hint = "free some space, or download into a folder on another disk (--to DIR)"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "download into a folder you can write to (--to DIR)"
    else:
        hint = "download into another folder (--to DIR)"
    return UsageError(f"cannot write the download into {to}: {reason}; nothing was kept", hint=hint)


def _fetch(
    storage: Storage,
    address: tuple[str, str, str | None],
    name: str,
    want: ArtifactFile | None,
    tmp: Path,
) -> Path:
    """Get the set's file ``name`` into ``tmp``; verify its size and sha256 against ``want``."""
    storage.get_file(*address, name, tmp)
    if want is not None:
        actual_size = tmp.stat().st_size
        if actual_size != want.size:
            raise IntegrityError(
                f"{name}: size {actual_size} does not match the manifest ({want.size})", hint=_DAMAGED_HINT)
        if sha256_file(tmp) != want.sha256:
            raise IntegrityError(f"{name}: sha256 does not match the manifest", hint=_DAMAGED_HINT)
    return tmp


def _ours_folder(files: list[ArtifactFile]) -> str:
    """Where a download keeps our own files: ``.soopervisor``, else the first free ``.soopervisor-N``."""
    tops = {f.name.split("/", 1)[0] for f in files}
    name, n = OURS, 0
    while name in tops:
        n += 1
        name = f"{OURS}-{n}"
    return name


def _same_set(to: Path, ours: str, manifest: dict[str, Any]) -> bool:
    """Whether ``to`` holds a download of the set ``manifest`` describes."""
    path = to / ours / MANIFEST
    if path.is_symlink() or not path.is_file():
        return False
    try:
        return json.loads(path.read_bytes()) == manifest
    except (OSError, ValueError):
        return False


def _prepare_target(to: Path, ours: str, manifest: dict[str, Any], what: str) -> Path | None:
    """Check (or make) the download folder; the outermost folder this download made, if any.

    A folder that is not empty must hold the same set: mixing two sets in one
    folder would make a set nobody stored.
    """
    try:
        entries = os.listdir(to)
    except FileNotFoundError:
        made = to
        while not made.parent.exists() and made.parent != made:
            made = made.parent
        try:
            to.mkdir(parents=True)
        except FileExistsError:
            return _prepare_target(to, ours, manifest, what)
        except OSError as e:
            raise UsageError(f"cannot create the folder {to}: {e.strerror or e}",
                             hint="download into a folder you can write to (--to DIR)") from None
        return made
    except NotADirectoryError:
        raise UsageError(f"{to} is a file, not a folder", hint="download into an empty folder (--to DIR)") from None
    except OSError as e:
        raise UsageError(f"cannot read the folder {to}: {e.strerror or e}",
                         hint="download into a folder you can write to (--to DIR)") from None
    if entries and not _same_set(to, ours, manifest):
        raise UsageError(
            f"{to} is not empty and does not hold {what}; nothing was written",
            hint="download into a new or empty folder (--to DIR); a folder holding the same set is refreshed",
        )
    return None


@dataclass
class _Placed:
    """What a download put in place, so a failure can take it back."""

    files: list[Path]
    dirs: list[Path]

    def undo(self) -> None:
        for path in reversed(self.files):
            with contextlib.suppress(OSError):
                path.unlink()
        for path in reversed(self.dirs):
            with contextlib.suppress(OSError):
                path.rmdir()


def _place(to: Path, rel: str, tmp: Path, placed: _Placed) -> Path:
    """Move ``tmp`` to ``to/rel``, making folders on the way (never through a link)."""
    if os.name == "nt" and any(c in rel for c in '\\:'):
        raise UnsafePath(f"{rel!r} cannot be written on Windows", hint="download it on Linux or macOS")
    folder = to
    for part in rel.split("/")[:-1]:
        folder = folder / part
        if folder.is_symlink():
            raise UnsafePath(f"{folder} is a symlink; refusing to write through it",
                             hint="remove the link or download into an empty folder")
        if not folder.exists():
            folder.mkdir()
            placed.dirs.append(folder)
    target = to.joinpath(*rel.split("/"))
    if target.is_symlink():
        raise UnsafePath(f"{target} is a symlink; refusing to write through it",
                         hint="remove the link or download into an empty folder")
    existed = os.path.lexists(target)
    os.replace(tmp, target)
    if not existed:
        placed.files.append(target)
    return target


def _download(storage: Storage, summary: SetSummary, to: Path) -> list[Path]:
    """Download one set into ``to``: products at ``to/<path>``, manifest and log under ``to/.soopervisor/``.

    All or nothing: files are fetched and verified into a hidden folder inside
    ``to``, then moved into place; a failure takes back what this download put
    there. Returns the paths written (products, then the log and manifest).
    """
    address = (summary.project, summary.commit, summary.run_id)
    stored = (lambda n: n) if summary.run_id is None else (lambda n: f"{FILES}/{n}")
    # the manifest first, so the files and the manifest we keep come from the same version of the set
    data = _read_stored_manifest(storage, summary)
    found = StoredSet(summary.commit, summary.run_id, _parse_stored(data, summary), None)
    _summary, manifest, files, log_file = _read_set(summary.project, found)
    if manifest is None:
        raise IntegrityError(f"the set {_where(summary)} is damaged: {_summary.damaged}", hint=_DAMAGED_HINT)
    ours = _ours_folder(files)
    created = _prepare_target(to, ours, json.loads(data), f"the set {_where(summary)}")
    stage = to / f"{PARTIAL}{secrets.token_hex(4)}"
    placed = _Placed([], [])
    try:
        stage.mkdir()
        (stage / "manifest").write_bytes(data)
        # (name in the set, where it goes in `to`, what it must be), the manifest last
        items = [(stored(f.name), f.name, f) for f in files if not _holds(to, f)]
        if log_file is not None:
            items.append((log_file.name, f"{ours}/{LOG_NAME}", log_file))
        with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
            futures = [pool.submit(_fetch, storage, address, name, want, stage / str(i))
                       for i, (name, _rel, want) in enumerate(items)]
            fetched = [f.result() for f in futures]
        for (_name, rel, _want), tmp in zip(items, fetched, strict=True):
            _place(to, rel, tmp, placed)
        _place(to, f"{ours}/{MANIFEST}", stage / "manifest", placed)
    except BaseException as e:
        placed.undo()
        shutil.rmtree(stage, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(e, OSError):
            raise _disk_error(e, to) from None
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return [to.joinpath(*f.name.split("/")) for f in files] + (
        [to / ours / LOG_NAME] if log_file is not None else []) + [to / ours / MANIFEST]


def _holds(to: Path, f: ArtifactFile) -> bool:
    """Whether ``to`` already holds this very file (a refreshed download fetches only what differs)."""
    target = to.joinpath(*f.name.split("/"))
    try:
        st = os.lstat(target)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == f.size and sha256_file(target) == f.sha256


def _read_stored_manifest(storage: Storage, summary: SetSummary) -> bytes:
    """The stored bytes of a set's manifest (through a temporary file: get_file writes files)."""
    try:
        fd, name = tempfile.mkstemp(prefix="soopervisor-manifest-")
        os.close(fd)
    except OSError as e:
        raise _disk_error(e, Path(tempfile.gettempdir())) from None
    try:
        storage.get_file(summary.project, summary.commit, summary.run_id, MANIFEST, Path(name))
        return Path(name).read_bytes()
    except OSError as e:
        raise _disk_error(e, Path(name).parent) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _parse_stored(data: bytes, summary: SetSummary) -> dict[str, Any]:
    manifest = parse_manifest(data, _where(summary))
    manifest.update(project=summary.project, commit=summary.commit)
    if summary.run_id is not None:
        manifest["run_id"] = summary.run_id
    return manifest


#: files fetched at once by a download
DOWNLOAD_WORKERS = 8


def download_set(storage: Storage | str | None, project: str, commit: str, to: str | os.PathLike[str], *,
                 mode: str | None = None, run: str | None = None) -> list[Path]:
    """Download the set ``commit`` resolves to (see :func:`resolve_set`) into ``to``, verified.

    ``to`` must be empty (it is created when missing) or hold the same set.
    Products go to ``to/<path>``, ``manifest.json`` and ``soopervisor.log`` to
    ``to/.soopervisor/``. Returns the paths written. IntegrityError on a size
    or sha256 mismatch, UsageError for a folder holding something else or a
    disk that cannot take the files; nothing half-written is left.
    """
    st = _storage(storage)
    summary = resolve_set(st, project, commit, mode=mode, run=run)
    return _download(st, summary, Path(to))

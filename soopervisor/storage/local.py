"""The local folder backend: ``<root>/<project>/<commit>/<run_id>/`` per run (schema 2).

A put is staged in a hidden folder beside the set (``<commit>/.staging.<run_id>.<token>``)
and renamed into place once its manifest is written, so readers see no set or
the complete set — never a part of one. Putting the same run again swaps the
new set in the same way. Leftovers of interrupted puts are cleaned (or, when
they were complete and the set is missing, put back in place) by the next put
to the same commit.

Content the project already stores (same sha256, same size) is hard-linked
instead of copied where the filesystem allows, so a re-run whose outputs did not
change costs no space and little time. Sets never change once stored, so a link
shared by two sets is safe; deleting one set leaves the other's files intact.

Sets of the old layout (schema 1: ``<commit>/manifest.json`` with the files
beside it) are read and deleted, never written.

Symlinks found inside the storage are never followed: listings skip them and
reads refuse them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from soopervisor.errors import ArtifactsNotFound, IntegrityError, StorageUnavailable, UnsafePath
from soopervisor.runs import pid_alive  # the one judge of "is this process alive" on this machine
from soopervisor.storage.base import (
    MANIFEST,
    Storage,
    StoredSet,
    check_name,
    check_relpath,
    check_run_is_free,
    parse_manifest,
    set_files,
    sets_of_commit,
)

log = logging.getLogger(__name__)

_BLOCK = 1 << 20
_STAGING = ".staging."
_OLD = ".old."
#: after this long a leftover is abandoned even if its pid looks alive (pid reuse,
#: or a put on another machine sharing this folder)
_ABANDONED_AFTER = 24 * 3600
# which machine a staging folder belongs to, so a put never removes the staging
# folder of a live put on the same machine
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_HINT = "pass another folder with --storage, or set SOOPERVISOR_STORAGE"


def _token() -> str:
    return f"{_HOST}.{os.getpid()}.{secrets.token_hex(4)}"


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
#: copy_file_range errors that mean "not here" (another filesystem, an old kernel): copy through a buffer
_NO_RANGE_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _libc(name: str, *argtypes: Any) -> Any:
    """A Linux libc function through ctypes; None elsewhere or when libc lacks it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    return fn


def _kernel() -> tuple[int, ...]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release) if hasattr(os, "uname") else None
    return tuple(int(n) for n in found.groups()) if found else (0,)


# syncfs(2) reports write-back errors only since Linux 5.8 (before, it returned 0 regardless)
_syncfs = _libc("syncfs", ctypes.c_int) if _kernel() >= (5, 8) else None
_sync_file_range = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNC_FILE_RANGE_WRITE = 2


def _copy_fd(fin: int, fout: int) -> None:
    """The rest of ``fin`` onto ``fout``: in the kernel (copy_file_range) where it can, else through a buffer."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(fin, fout, 1 << 30):
                pass
        except OSError as e:
            if e.errno not in _NO_RANGE_COPY:
                raise
    # whatever copy_file_range left (all of it where it is unsupported): it moved both offsets
    while block := os.read(fin, _BLOCK):
        view = memoryview(block)
        while view:
            view = view[os.write(fout, view) :]


def _copy_file(src: Path, dst: Path) -> None:
    """Copy one regular file (never through a link at ``src``); :func:`_flush` makes it durable."""
    fin = os.open(src, os.O_RDONLY | _NOFOLLOW | _BINARY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _BINARY, 0o666)
        try:
            _copy_fd(fin, fout)
            if _sync_file_range is not None:
                # start the write-back now, so the disk works while the next files are copied
                # (a hint: _flush still waits for it, and reports its errors)
                _sync_file_range(fout, 0, 0, _SYNC_FILE_RANGE_WRITE)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | _NOFOLLOW | _BINARY)  # Windows flushes only files open for writing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush(folder: Path, files: list[Path]) -> None:
    """Return once the data of ``files``, all under ``folder``, is durably on disk; OSError if it is not.

    Linux: one syncfs(2) of the filesystem holding ``folder`` instead of an fsync per file.
    It writes back every dirty page and inode of that filesystem (ours among them, and the
    folders they are in), waits for all of it, and fails when any of it failed (Linux 5.8+;
    older kernels take the other way). So a manifest written afterwards is written after
    all the files' data is on disk: the same guarantee as fsync file by file, with one
    journal commit instead of one per file. Elsewhere: fsync file by file, a few at once.
    """
    if _syncfs is not None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(folder))
        finally:
            os.close(fd)
        return
    with ThreadPoolExecutor(max_workers=4) as pool:  # overlapping fsyncs share journal commits
        for future in [pool.submit(_fsync_file, path) for path in files]:
            future.result()


def regular_files(src: Path) -> list[str]:
    """Relative posix names of the regular files under ``src``; links are skipped."""
    names = []
    for dirpath, dirnames, filenames in os.walk(src):  # does not follow links
        base = Path(dirpath)
        for d in list(dirnames):
            if (base / d).is_symlink():
                log.warning("skipping symlink %s: links are not stored", base / d)
        for f in filenames:
            p = base / f
            if stat.S_ISREG(p.lstat().st_mode):
                names.append(p.relative_to(src).as_posix())
            else:
                log.warning("skipping %s: only regular files are stored", p)
    return sorted(names)


def _is_complete(set_dir: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(set_dir / MANIFEST).st_mode)
    except OSError:
        return False


def _read_small(path: Path) -> bytes | None:
    """The bytes of a manifest, never through a link; None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            return f.read()
        except OSError:
            return None


def _subdirs(folder: Path) -> list[os.DirEntry]:
    """The visible sub-folders of ``folder`` (not links), by name; [] when it cannot be read."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted((e for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)),
                  key=lambda e: e.name)


#: link() errors that mean "not on this filesystem" or "not this file": copy instead
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOENT, errno.EOPNOTSUPP,
            getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EACCES, errno.ENOSYS}


def _no_links_between(top: Path, path: Path) -> bool:
    """Whether no folder from ``top`` (excluded) down to ``path`` (excluded) is a symlink."""
    try:
        rel = path.relative_to(top)
    except ValueError:
        return False
    current = top
    for part in rel.parts[:-1]:
        current = current / part
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return False
        except OSError:
            return False
    return True


def _place(src: Path, dst: Path, stored: Path | None, size: int | None) -> bool:
    """Put ``src``'s content at ``dst``: a hard link to ``stored`` when it holds it, else a copy.

    True when it linked. ``stored`` counts only as a regular file (never a link)
    of the expected size; the sha256 it is known by comes from a manifest, and
    every download checks it again.
    """
    if stored is not None and size is not None:
        try:
            st = os.lstat(stored)
            if stat.S_ISREG(st.st_mode) and st.st_size == size:
                os.link(stored, dst, follow_symlinks=False)
                return True
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
    _copy_file(src, dst)
    return False


class LocalStorage(Storage):
    """Artifact sets in a folder on this machine (or a mounted share)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(Path(path).expanduser()))
        self.url = str(self.root)
        #: what the last put did: {"copied": n, "linked": n}
        self.last_put: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------

    def _unavailable(self, e: OSError, what: str | os.PathLike[str] | None = None) -> StorageUnavailable:
        reason = e.strerror or str(e)
        where = what or self.root
        return StorageUnavailable(
            f"cannot use {where} as artifact storage ({self.root}): {reason}", hint=_HINT
        )

    def _root_exists(self) -> bool:
        """Whether the root exists; StorageUnavailable when it is not a folder."""
        try:
            st = os.stat(self.root)  # the root itself may be a symlink the user chose
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self._unavailable(e) from e
        if not stat.S_ISDIR(st.st_mode):
            raise StorageUnavailable(f"artifact storage {self.root} is not a folder", hint=_HINT)
        return True

    def _folder(self, path: Path, create: bool) -> Path | None:
        """``path`` as a folder that is not a link; None when absent (and not created)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return None
            try:
                path.mkdir()
            except FileExistsError:
                pass  # a concurrent put made it
            except OSError as e:
                raise self._unavailable(e, path) from e
            st = os.lstat(path)
        except OSError as e:
            raise self._unavailable(e, path) from e
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(
                f"{path} is a symlink; soopervisor does not follow links in its storage",
                hint="replace the link with a folder",
            )
        if not stat.S_ISDIR(st.st_mode):
            if create:
                raise StorageUnavailable(f"{path} is not a folder", hint=_HINT)
            return None
        return path

    def _project_dir(self, project: str, create: bool = False) -> Path | None:
        """The project's folder, or None when absent; never a symlink."""
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise self._unavailable(e) from e
        if not self._root_exists():
            return None
        return self._folder(self.root / project, create)

    def _commit_dir(self, project: str, commit: str, create: bool = False) -> Path | None:
        project_dir = self._project_dir(project, create)
        return None if project_dir is None else self._folder(project_dir / commit, create)

    def _missing(self, project: str, commit: str, run_id: str | None) -> ArtifactsNotFound:
        what = f"run '{run_id}' of commit '{commit}'" if run_id else f"commit '{commit}'"
        return ArtifactsNotFound(
            f"no artifacts for {what} in project '{project}'",
            hint="soopervisor artifacts list --all shows the stored sets",
        )

    def _set_dir(self, project: str, commit: str, run_id: str | None) -> Path:
        """The folder of a complete set, or ArtifactsNotFound."""
        commit_dir = self._commit_dir(project, commit)
        if commit_dir is None:
            raise self._missing(project, commit, run_id)
        set_dir = commit_dir if run_id is None else self._folder(commit_dir / run_id, create=False)
        if set_dir is None or not _is_complete(set_dir):
            raise self._missing(project, commit, run_id)
        return set_dir

    def _commit_sets(self, project: str, commit_dir: Path) -> list[StoredSet]:
        old = (_read_small(commit_dir / MANIFEST),) if _is_complete(commit_dir) else None
        runs = [(e.name, _read_small(Path(e.path) / MANIFEST)) for e in _subdirs(commit_dir)
                if _is_complete(Path(e.path))]
        return sets_of_commit(commit_dir.name, project, old, runs)

    # -- reading -----------------------------------------------------------

    def _list_projects(self) -> list[str]:
        if not self._root_exists():
            return []
        try:
            return sorted(
                p.name for p in _subdirs(self.root)
                if any(_is_complete(Path(c.path)) or any(_is_complete(Path(r.path)) for r in _subdirs(Path(c.path)))
                       for c in _subdirs(Path(p.path)))
            )
        except OSError as e:
            raise self._unavailable(e) from e

    def _list_sets(self, project: str) -> list[StoredSet]:
        try:
            project_dir = self._project_dir(project)
        except UnsafePath:
            return []
        if project_dir is None:
            return []
        try:
            os.scandir(project_dir).close()  # an unreadable project folder is an error, not an empty list
        except OSError as e:
            raise self._unavailable(e, project_dir) from e
        sets = []
        for entry in _subdirs(project_dir):  # staging areas, leftovers and links are skipped
            try:
                check_name("commit", entry.name)
            except UnsafePath:
                continue
            sets += self._commit_sets(project, Path(entry.path))
        return sets

    def _find(self, project: str, commit: str, run_id: str | None) -> StoredSet:
        commit_dir = self._commit_dir(project, commit)
        for found in self._commit_sets(project, commit_dir) if commit_dir is not None else []:
            if found.run_id == run_id:
                return found
        raise self._missing(project, commit, run_id)

    def _read_manifest(self, project: str, commit: str, run_id: str | None) -> dict[str, Any]:
        found = self._find(project, commit, run_id)
        if found.manifest is None:
            raise IntegrityError(found.damaged or "the manifest is damaged",
                                 hint="the stored set is damaged; run the pipeline again to store it anew")
        return found.manifest

    def _get_file(self, project: str, commit: str, run_id: str | None, name: str, dest: Path) -> None:
        set_dir = self._set_dir(project, commit, run_id)
        where = f"{project}/{commit}" + (f"/{run_id}" if run_id else "")
        missing = ArtifactsNotFound(
            f"no file {name!r} in the artifacts of {where}",
            hint="the set's manifest lists its files",
        )
        path = set_dir
        parts = name.split("/")
        # walk down with lstat so no link inside the set is ever followed
        for i, part in enumerate(parts):
            path = path / part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                raise missing from None
            except OSError as e:
                raise self._unavailable(e, path) from e
            if stat.S_ISLNK(mode):
                raise UnsafePath(
                    f"{name!r} in {where} goes through a symlink; "
                    "soopervisor does not follow links in its storage"
                )
            last = i == len(parts) - 1
            if (last and not stat.S_ISREG(mode)) or (not last and not stat.S_ISDIR(mode)):
                raise missing
        try:
            fin = os.open(path, os.O_RDONLY | _NOFOLLOW | _BINARY)
        except OSError as e:
            raise self._unavailable(e, path) from e
        try:
            # errors writing dest are the caller's disk, not the storage: they stay OSError
            fout = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _BINARY, 0o644)
            try:
                _copy_fd(fin, fout)
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    # -- writing -----------------------------------------------------------

    def _check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # really write: permission bits alone say nothing for root or on
            # read-only mounts
            probe = self.root / f".probe.{_token()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise self._unavailable(e) from e

    def _known_content(self, project: str, sets: list[StoredSet]) -> dict[str, Path]:
        """sha256 -> a stored file holding it, from the project's complete sets."""
        known: dict[str, Path] = {}
        project_dir = self.root / project
        for found in sets:
            if found.manifest is None:
                continue
            base = project_dir / found.commit / (found.run_id or "")
            for name, sha, _size in set_files(found.manifest):
                try:
                    check_relpath(name)  # a damaged old manifest: never link from outside its set
                except UnsafePath:
                    continue
                if sha:
                    known.setdefault(sha, base.joinpath(*name.split("/")))
        return known

    def _put_set(self, project: str, commit: str, run_id: str, src: Path, names: list[str]) -> None:
        project_dir = self._project_dir(project, create=True)
        assert project_dir is not None
        self._clean_leftovers(project_dir)  # what puts of the old layout left
        commit_dir = self._folder(project_dir / commit, create=True)
        assert commit_dir is not None
        self._clean_leftovers(commit_dir)
        manifest = parse_manifest((src / MANIFEST).read_bytes(), str(src))
        expected = {n: (sha, size) for n, sha, size in set_files(manifest)}
        sets = self._list_sets(project)
        check_run_is_free(sets, commit, run_id)
        known = self._known_content(project, sets)
        stage = commit_dir / f"{_STAGING}{run_id}.{_token()}"
        try:
            stage.mkdir()
            for n in names:
                (stage / n).parent.mkdir(parents=True, exist_ok=True)

            def place(n: str) -> bool:
                sha, size = expected.get(n, (None, None))
                stored = known.get(sha) if sha else None
                if stored is not None and not _no_links_between(project_dir, stored):
                    stored = None  # a link planted in the storage is never followed
                return _place(src / n, stage / n, stored, size)

            with ThreadPoolExecutor(max_workers=4) as pool:
                linked = [f.result() for f in [pool.submit(place, n) for n in names]]
            # a manifest means its files are there: every file is durable before it is written
            _flush(stage, [stage / n for n, was_linked in zip(names, linked, strict=True) if not was_linked])
            # the manifest goes in under a temp name and is renamed: a put killed
            # halfway through it never leaves a truncated manifest that counts
            part = stage / (MANIFEST + ".part")
            _copy_file(src / MANIFEST, part)
            _fsync_file(part)
            os.rename(part, stage / MANIFEST)
            self._swap_in(commit_dir, run_id, stage)
            self.last_put = {"copied": linked.count(False), "linked": linked.count(True)}
        except OSError as e:
            raise self._unavailable(e, commit_dir / run_id) from e
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    def _swap_in(self, parent: Path, name: str, stage: Path) -> None:
        """Rename ``stage`` to ``parent/name``, moving a set already there aside first."""
        target = parent / name
        olds = []
        try:
            # retry: a concurrent put of the same run may land between renames
            for _ in range(20):
                try:
                    os.rename(stage, target)
                    break
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                old = parent / f"{_OLD}{name}.{_token()}"
                try:
                    os.rename(target, old)
                except FileNotFoundError:
                    continue
                olds.append(old)
            else:
                raise OSError(errno.EBUSY, "the set kept being replaced concurrently")
            _fsync_dir(parent)
        finally:
            for old in olds:
                shutil.rmtree(old, ignore_errors=True)

    def _delete_set(self, project: str, commit: str, run_id: str | None) -> None:
        found = self._find(project, commit, run_id)
        commit_dir = self.root / project / commit
        try:
            if run_id is not None:
                # one rename makes the set disappear whole; then its files go
                aside = commit_dir / f"{_OLD}{run_id}.{_token()}"
                os.rename(commit_dir / run_id, aside)
                _fsync_dir(commit_dir)
                shutil.rmtree(aside, ignore_errors=True)
                return
            self._delete_old_set(commit_dir, found, self._commit_sets(project, commit_dir))
        except OSError as e:
            raise self._unavailable(e, commit_dir) from e

    def _delete_old_set(self, commit_dir: Path, found: StoredSet, sets: list[StoredSet]) -> None:
        """The files of an old-layout set live beside the commit's run sets: remove only its own."""
        runs = {s.run_id for s in sets if s.run_id is not None}
        os.unlink(commit_dir / MANIFEST)  # first: from here on the set is incomplete
        _fsync_dir(commit_dir)
        if found.manifest is not None:
            tops = set()
            for name, _sha, _size in set_files(found.manifest):
                top = name.split("/", 1)[0]
                if top in runs:
                    continue
                tops.add(top)
                with contextlib.suppress(OSError):
                    if not stat.S_ISDIR(os.lstat(commit_dir / name).st_mode):
                        os.unlink(commit_dir / name)
            for top in tops:
                _remove_empty_dirs(commit_dir / top)
            return
        # a damaged manifest lists nothing: everything that is not a run set was the old set's
        for entry in os.scandir(commit_dir):
            if entry.name in runs or entry.name.startswith((_STAGING, _OLD, ".probe.")):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def _clean_leftovers(self, folder: Path) -> None:
        """Remove what interrupted puts left in ``folder``; put a complete one back if its set is gone.

        ``folder`` is a commit folder (staging areas of runs) or a project folder
        (staging areas of the old layout, named by commit).
        """
        dead: dict[str, list[tuple[float, bool, Path]]] = {}
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        # an old-layout set keeps its products in the commit folder, hidden names too: never touch those
        products = _old_tops(folder)
        now = time.time()
        for entry in entries:
            if entry.name in products:
                continue
            if entry.name.startswith(_STAGING):
                staging, rest = True, entry.name[len(_STAGING) :]
            elif entry.name.startswith(_OLD):
                staging, rest = False, entry.name[len(_OLD) :]
            else:
                continue
            try:
                name, host, pid, _ = rest.rsplit(".", 3)
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except (ValueError, OSError):
                continue
            abandoned = now - mtime > _ABANDONED_AFTER
            # a pid this system cannot judge (None) counts as alive: never remove a live put
            if not abandoned and (host != _HOST or pid_alive(int(pid) if pid.isdigit() else -1) is not False):
                continue  # a put in progress, here or on another machine
            dead.setdefault(name, []).append((mtime, staging, Path(entry.path)))
        for name, items in dead.items():
            target = folder / name
            if not os.path.lexists(target):
                # newest complete staging first (it was the newer put), then old sets
                for _, _, path in sorted(items, key=lambda t: (t[1], t[0]), reverse=True):
                    if _is_complete(path):
                        try:
                            check_name("set", name)
                            os.rename(path, target)
                            log.warning("recovered set %s from %s", target, path.name)
                            break
                        except (OSError, UnsafePath):
                            pass
            for _, _, path in items:
                if os.path.lexists(path):
                    shutil.rmtree(path, ignore_errors=True)


def _old_tops(folder: Path) -> set[str]:
    """First segments of the files an old-layout manifest in ``folder`` lists (none when there is none)."""
    data = _read_small(folder / MANIFEST) if _is_complete(folder) else None
    if data is None:
        return set()
    try:
        manifest = parse_manifest(data, str(folder))
    except IntegrityError:
        return set()
    return {name.split("/", 1)[0] for name, _sha, _size in set_files(manifest)}


def _remove_empty_dirs(path: Path) -> None:
    """Remove ``path`` and the folders under it that are (then) empty; files stay."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return
    except OSError:
        return
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported here (Windows); renames are still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

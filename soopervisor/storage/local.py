"""The local folder backend: ``<root>/<project>/<commit>/<files>``.

A put is staged in a hidden folder beside the set (``.staging.<commit>.<token>``)
and swapped in with renames once its manifest is written, so readers see the
old complete set, no set for an instant, or the new complete set — never a mix.
Leftovers of interrupted puts are cleaned (or, when they were complete and the
set is missing, put back in place) by the next put to the same project.

Symlinks found inside the storage are never followed: listings skip them and
reads refuse them.
"""

from __future__ import annotations

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
from soopervisor.storage.base import MANIFEST, Storage, check_name, check_relpath, parse_manifest

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


class LocalStorage(Storage):
    """Artifact sets in a folder on this machine (or a mounted share)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(Path(path).expanduser()))
        self.url = str(self.root)

    # -- helpers -----------------------------------------------------------

    def _unavailable(self, e: OSError, what: str | None = None) -> StorageUnavailable:
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

    def _project_dir(self, project: str, create: bool = False) -> Path | None:
        """The project's folder, or None when absent; never a symlink."""
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise self._unavailable(e) from e
        if not self._root_exists():
            return None
        path = self.root / project
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

    def _set_dir(self, project: str, commit: str) -> Path:
        """The folder of a complete set, or ArtifactsNotFound."""
        missing = ArtifactsNotFound(
            f"no artifacts for commit '{commit}' in project '{project}'",
            hint="soopervisor artifacts list shows the stored commits",
        )
        project_dir = self._project_dir(project)
        if project_dir is None:
            raise missing
        set_dir = project_dir / commit
        try:
            st = os.lstat(set_dir)
        except FileNotFoundError:
            raise missing from None
        except OSError as e:
            raise self._unavailable(e, set_dir) from e
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(f"{set_dir} is a symlink; soopervisor does not follow it")
        if not stat.S_ISDIR(st.st_mode) or not _is_complete(set_dir):
            raise missing
        return set_dir

    # -- reading -----------------------------------------------------------

    def _list_projects(self) -> list[str]:
        if not self._root_exists():
            return []
        projects = []
        try:
            for entry in os.scandir(self.root):
                if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                    continue
                if any(
                    not s.name.startswith(".")
                    and s.is_dir(follow_symlinks=False)
                    and _is_complete(Path(s.path))
                    for s in os.scandir(entry.path)
                ):
                    projects.append(entry.name)
        except OSError as e:
            raise self._unavailable(e) from e
        return sorted(projects)

    def _list_sets(self, project: str) -> list[dict[str, Any]]:
        try:
            project_dir = self._project_dir(project)
        except UnsafePath:
            return []
        if project_dir is None:
            return []
        sets = []
        try:
            entries = sorted(os.scandir(project_dir), key=lambda e: e.name)
        except OSError as e:
            raise self._unavailable(e, project_dir) from e
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue  # staging areas, leftovers, links
            if not _is_complete(Path(entry.path)):
                continue
            try:
                manifest = self._read_manifest(project, entry.name)
            except (IntegrityError, ArtifactsNotFound, UnsafePath) as e:
                log.warning("skipping damaged set %s: %s", entry.path, e)
                continue
            sets.append(manifest)
        return sets

    def _read_manifest(self, project: str, commit: str) -> dict[str, Any]:
        set_dir = self._set_dir(project, commit)
        try:
            fd = os.open(set_dir / MANIFEST, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ArtifactsNotFound(f"no artifacts for commit '{commit}' in project '{project}'") from None
        except OSError as e:
            raise self._unavailable(e, set_dir / MANIFEST) from e
        manifest = parse_manifest(data, f"{project}/{commit}")
        manifest["project"], manifest["commit"] = project, commit
        return manifest

    def _get_file(self, project: str, commit: str, name: str, dest: Path) -> None:
        set_dir = self._set_dir(project, commit)
        missing = ArtifactsNotFound(
            f"no file '{name}' in the artifacts of commit '{commit}' in project '{project}'",
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
                    f"'{name}' in {project}/{commit} goes through a symlink; "
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

    def _put_set(self, project: str, commit: str, src: Path) -> None:
        names = [n for n in regular_files(src) if n != MANIFEST]
        for n in names:
            check_relpath(n)  # refuse before anything is written
        project_dir = self._project_dir(project, create=True)
        assert project_dir is not None
        self._clean_leftovers(project_dir)
        stage = project_dir / f"{_STAGING}{commit}.{_token()}"
        try:
            stage.mkdir()
            for n in names:
                (stage / n).parent.mkdir(parents=True, exist_ok=True)
            with ThreadPoolExecutor(max_workers=4) as pool:
                for future in [pool.submit(_copy_file, src / n, stage / n) for n in names]:
                    future.result()
            # a manifest means its files are there: every file is durable before it is written
            _flush(stage, [stage / n for n in names])
            # the manifest goes in under a temp name and is renamed: a put killed
            # halfway through it never leaves a truncated manifest that counts
            part = stage / (MANIFEST + ".part")
            _copy_file(src / MANIFEST, part)
            _fsync_file(part)
            os.rename(part, stage / MANIFEST)
            self._swap_in(project_dir, commit, stage)
        except OSError as e:
            raise self._unavailable(e, project_dir / commit) from e
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)

    def _swap_in(self, project_dir: Path, commit: str, stage: Path) -> None:
        target = project_dir / commit
        olds = []
        try:
            # retry: a concurrent put for the same commit may land between renames
            for _ in range(20):
                try:
                    os.rename(stage, target)
                    break
                except OSError as e:
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                old = project_dir / f"{_OLD}{commit}.{_token()}"
                try:
                    os.rename(target, old)
                except FileNotFoundError:
                    continue
                olds.append(old)
            else:
                raise OSError(errno.EBUSY, "the set kept being replaced concurrently")
            _fsync_dir(project_dir)
        finally:
            for old in olds:
                shutil.rmtree(old, ignore_errors=True)

    def _clean_leftovers(self, project_dir: Path) -> None:
        """Remove what interrupted puts left; put a complete one back if its set is gone."""
        dead: dict[str, list[tuple[float, bool, Path]]] = {}
        try:
            entries = list(os.scandir(project_dir))
        except OSError:
            return
        now = time.time()
        for entry in entries:
            if entry.name.startswith(_STAGING):
                staging, rest = True, entry.name[len(_STAGING) :]
            elif entry.name.startswith(_OLD):
                staging, rest = False, entry.name[len(_OLD) :]
            else:
                continue
            try:
                commit, host, pid, _ = rest.rsplit(".", 3)
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except (ValueError, OSError):
                continue
            abandoned = now - mtime > _ABANDONED_AFTER
            if not abandoned and (host != _HOST or _pid_alive(int(pid) if pid.isdigit() else -1)):
                continue  # a put in progress, here or on another machine
            dead.setdefault(commit, []).append((mtime, staging, Path(entry.path)))
        for commit, items in dead.items():
            target = project_dir / commit
            if not os.path.lexists(target):
                # newest complete staging first (it was the newer put), then old sets
                for _, _, path in sorted(items, key=lambda t: (t[1], t[0]), reverse=True):
                    if _is_complete(path):
                        try:
                            check_name("commit", commit)
                            os.rename(path, target)
                            log.warning("recovered set %s from %s", target, path.name)
                            break
                        except (OSError, UnsafePath):
                            pass
            for _, _, path in items:
                if os.path.lexists(path):
                    shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


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

"""Extracting the products a container collected: a tar stream into a folder, safely.

Names are data; absolute names, ``..``, links, devices and names the file
system refuses are skipped one by one and reported, never followed.
"""
from __future__ import annotations

import errno
import io
import logging
import os
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from soopervisor.errors import UnsafePath
from soopervisor.storage import check_relpath

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
#: streamed in blocks: an archive of any size is never held whole
_BLOCK = 1 << 20


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (docker's get_archive)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = bytes(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _as_file(tar_stream: Iterable[bytes] | IO[bytes] | bytes) -> IO[bytes]:
    if isinstance(tar_stream, (bytes, bytearray)):
        return io.BytesIO(tar_stream)
    if hasattr(tar_stream, "read"):
        return tar_stream  # type: ignore[return-value]
    return io.BufferedReader(_ChunkReader(tar_stream), buffer_size=_BLOCK)


def _member_name(raw: str, strip: str | None) -> tuple[str | None, str | None]:
    """``(path relative to dest, why it is refused)`` of a tar member.

    The path is None (and no reason) for the stripped folder itself and for
    members outside ``strip``; a reason for absolute names and ``..``.
    """
    if raw.startswith("/"):
        return None, "an absolute name"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "a name with '..' that would leave the artifacts folder"
    if strip:
        top = [p for p in strip.split("/") if p not in ("", ".")]
        if parts[: len(top)] != top:
            return None, f"outside the {strip!r} folder"
        parts = parts[len(top) :]
    if not parts:
        return None, None
    return "/".join(parts), None


#: errors writing one member that concern its name (too long, a file where a folder is needed):
#: that member is skipped, the others are written
_NAME_ERRORS = {errno.ENAMETOOLONG, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EINVAL,
                getattr(errno, "EILSEQ", errno.EINVAL)}


class _Skip(Exception):
    """One member is not written; the reason is reported to on_skip."""


def _make_parents(dest: Path, rel: str) -> Path:
    """``dest/rel``'s folder, made one level at a time; _Skip when a link or a file is in the way."""
    folder = dest
    for part in rel.split("/")[:-1]:
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            folder.mkdir()
            continue
        if stat.S_ISLNK(mode):
            raise _Skip("a symlink is in the way; links are not followed")
        if not stat.S_ISDIR(mode):
            raise _Skip(f"'{part}' is a file, not a folder")
    return dest.joinpath(*rel.split("/"))


def _write_member(fileobj: IO[bytes], target: Path) -> None:
    if os.path.isdir(target) and not os.path.islink(target):
        raise _Skip("a folder of the same name exists")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _BINARY, 0o644)
    with os.fdopen(fd, "wb") as out:
        while block := fileobj.read(_BLOCK):
            out.write(block)


def safe_extract(
    tar_stream: Iterable[bytes] | IO[bytes],
    dest: Path,
    strip: str | None = None,
    *,
    on_skip: Callable[[str, str], None] | None = None,
    rename: Callable[[str], str] | None = None,
) -> list[Path]:
    """Extract a tar stream into ``dest``, streaming; return the files written.

    Names are data: any name a POSIX file may have is written as it is (after
    ``rename``, applied to every member's path relative to ``dest``; the
    runner passes one that masks secrets). Only absolute names, ``..`` and
    links are refused — one by one, each reported to ``on_skip(name, reason)``
    (default: a log warning) with the renamed name — and extraction goes on
    with the other members; so are devices, fifos, members outside ``strip``
    and names the filesystem cannot hold. ``strip`` removes a leading folder
    (``artifacts`` for get_archive of ``.../artifacts``). Errors writing the
    data (a full disk) are raised.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = on_skip or (lambda name, why: log.warning("skipped %s: %s", name, why))
    shown = rename or (lambda name: name)
    written: list[Path] = []
    seen: set[str] = set()
    # "r|*": a forward-only stream, so an archive of any size is never held whole
    with tarfile.open(fileobj=_as_file(tar_stream), mode="r|*") as tf:
        for member in tf:
            rel, refused = _member_name(member.name, strip)
            if refused is not None:
                report(shown(member.name), refused)
                continue
            if rel is None:
                continue
            name = shown(rel)
            try:
                _extract_one(tf, member, dest, name, seen, written)
            except _Skip as e:
                report(name, str(e))
            except OSError as e:
                if e.errno not in _NAME_ERRORS:
                    raise
                report(name, f"the file system refused the name ({e.strerror})")
    return written


def _extract_one(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, name: str,
                 seen: set[str], written: list[Path]) -> None:
    """Write one member at ``dest/name``; _Skip with the reason when it is not written."""
    if member.issym() or member.islnk():
        raise _Skip("a link; links are not stored")
    if not (member.isreg() or member.isdir()):
        raise _Skip("not a regular file (device or fifo)")
    try:
        check_relpath(name)
    except UnsafePath:
        raise _Skip("the name is not a relative path after masking") from None
    if member.isdir():
        _make_parents(dest, name + "/x")
        return
    if name in seen:
        # two names masked to the same one: the first stays, the second is reported
        raise _Skip("another file has this name (after masking secrets)")
    target = _make_parents(dest, name)
    fileobj = tf.extractfile(member)
    assert fileobj is not None  # a regular file
    _write_member(fileobj, target)
    seen.add(name)
    written.append(target)

"""Artifact sets: extract them from the container, describe them, find them, fetch them back.

A set is what one run stored (schema 2): the products under ``files/``, the
redacted ``soopervisor.log`` and ``manifest.json`` (path, size, sha256 of every
product and of the log, and what the run was). A commit can hold many sets;
:func:`resolve_set` is the one rule every reader follows (CLI, Python API,
REST, sidebar, notebook, GitHub report). Everything downloaded is checked
against the manifest before it is moved into place. Names from the pipeline
are data: any POSIX name is kept, a damaged manifest is one "damaged" line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import html
import io
import json
import logging
import os
import secrets
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from soopervisor import config
from soopervisor.errors import (
    ArtifactsNotFound,
    IntegrityError,
    SoopervisorError,
    StorageUnavailable,
    UnsafePath,
    UsageError,
)
from soopervisor.storage import MANIFEST, Storage, check_relpath, open_storage
from soopervisor.storage.base import FILES, LOG, SCHEMA, StoredSet, parse_manifest

log = logging.getLogger(__name__)

LOG_NAME = LOG
#: the folder of a download that holds our own files (manifest, log), apart from the products
OURS = ".soopervisor"
#: the hidden folder a download fetches into before moving files into place
PARTIAL = ".soopervisor-part."
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_BLOCK = 1 << 20
_HEX = set("0123456789abcdef")

#: the fields a run gives write_manifest; "files" and "schema" are computed
MANIFEST_FIELDS = (
    "project",
    "commit",
    "dirty",
    "mode",
    "status",
    "exit_code",
    "started_at",
    "finished_at",
    "image",
    "image_digest",
    "env_hash",
    "soopervisor_version",
    "log",
    "run_id",
    "failed_task",
    "error",
)


# -- extraction ----------------------------------------------------------------


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


# -- describing a set -------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """``{"path", "size", "sha256"}`` of every regular file under ``root``, by path.

    Links are not followed and not listed.
    """
    root = Path(root)
    entries = []
    for dirpath, _dirs, files in os.walk(root):  # os.walk does not follow links
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            entries.append(
                {
                    "path": p.relative_to(root).as_posix(),
                    "size": st.st_size,
                    "sha256": sha256_file(p),
                }
            )
    return sorted(entries, key=lambda e: e["path"])


def _iso_utc(value: Any) -> Any:
    """A datetime (or ISO string) as an ISO 8601 UTC string; naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _log_entry(folder: Path) -> dict[str, Any] | None:
    log_path = folder / LOG_NAME
    try:
        st = os.lstat(log_path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return {"path": LOG_NAME, "size": st.st_size, "sha256": sha256_file(log_path)}


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Write ``folder/manifest.json`` describing the set in ``folder``; return it.

    ``folder`` is a set as ``Storage.put_set`` takes it: the products under
    ``files/`` and the log at ``soopervisor.log``. ``files`` lists the products
    (path relative to ``files/``, size, sha256), ``log`` the log
    (``{"path", "size", "sha256"}``, null when there is none), ``schema`` is 2.
    ``fields`` are the run's facts (see MANIFEST_FIELDS; absent ones are null,
    extra ones are kept; ``log`` is always computed here).
    """
    reserved = {"files", "schema"} & set(fields)
    if reserved:
        raise TypeError(f"manifest fields computed here, not given: {', '.join(sorted(reserved))}")
    folder = Path(folder)
    # known fields are always present (null when absent); extra ones are kept,
    # so a new fact from the run never breaks storing its artifacts
    manifest: dict[str, Any] = {k: fields.get(k) for k in MANIFEST_FIELDS}
    manifest.update({k: v for k, v in fields.items() if k not in manifest})
    for key in ("started_at", "finished_at"):
        manifest[key] = _iso_utc(manifest[key])
    manifest["schema"] = SCHEMA
    manifest["log"] = _log_entry(folder)
    products = folder / FILES
    has_products = products.is_dir() and not products.is_symlink()
    manifest["files"] = file_entries(products) if has_products else []
    # ensure_ascii: a name holding bytes that are not UTF-8 (surrogate escapes) is written as \udcXX
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, folder / MANIFEST)
    return manifest


# -- reading a set's manifest ---------------------------------------------------------

#: manifest fields that are a string or null; ``dirty`` is a bool, ``exit_code`` an int
_STR_FIELDS = ("project", "commit", "mode", "status", "started_at", "finished_at", "image", "image_digest",
               "env_hash", "soopervisor_version", "run_id", "failed_task", "error")
#: what a stored set's status can be (a set is written when its run ends)
SET_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")
MODES = ("sample", "full")
_DAMAGED_HINT = "the stored set is damaged; run the pipeline again to store it anew"
#: the run= value that names a commit's set of the old layout (it has no run id)
OLD_LAYOUT_RUN = "old-layout"


class _Damaged(Exception):
    """A manifest of the wrong shape; the message is the one-line reason."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _file_entry(e: Any, i: int) -> ArtifactFile:
    if not (isinstance(e, dict) and isinstance(e.get("path"), str) and _is_int(e.get("size"))
            and e["size"] >= 0 and isinstance(e.get("sha256"), str) and len(e["sha256"]) == 64
            and set(e["sha256"].lower()) <= _HEX):
        raise _Damaged(f"file entry {i} is not {{path, size, sha256}}")
    try:
        check_relpath(e["path"])
    except UnsafePath:
        raise _Damaged(f"file entry {i} names a path outside the set") from None
    return ArtifactFile(e["path"], e["size"], e["sha256"].lower())


def _checked(manifest: dict[str, Any], old_layout: bool) -> tuple[dict[str, Any], list[ArtifactFile], ArtifactFile | None]:
    """The manifest reduced to its known fields, its products and its log; _Damaged when of the wrong shape."""
    for key in _STR_FIELDS:
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise _Damaged(f"'{key}' is not a string")
    if manifest.get("dirty") is not None and not isinstance(manifest["dirty"], bool):
        raise _Damaged("'dirty' is not true or false")
    if manifest.get("exit_code") is not None and not _is_int(manifest["exit_code"]):
        raise _Damaged("'exit_code' is not a whole number")
    if manifest.get("mode") not in (None, *MODES):
        raise _Damaged("'mode' is neither sample nor full")
    if manifest.get("status") not in (None, *SET_STATUSES):
        raise _Damaged("'status' is not a status a run ends with")
    raw = manifest.get("files")
    if not isinstance(raw, list):
        raise _Damaged("'files' is not a list")
    files = [_file_entry(e, i) for i, e in enumerate(raw)]
    log_entry, log_name = manifest.get("log"), None
    if old_layout:
        # the old layout kept the log among the files (and listed it by name)
        log_name = log_entry if isinstance(log_entry, str) else None
        log_file = next((f for f in files if f.name == log_name), None)
        files = [f for f in files if f.name not in (MANIFEST, log_name)]
    elif log_entry is None:
        log_file = None
    else:
        log_file = _file_entry(log_entry, -1) if isinstance(log_entry, dict) else None
        if log_file is None or log_file.name != LOG_NAME:
            raise _Damaged("'log' is not {path: soopervisor.log, size, sha256}")
    if len({f.name for f in files}) != len(files):
        raise _Damaged("a file is listed twice")
    clean = {k: manifest.get(k) for k in MANIFEST_FIELDS if k != "log"}
    clean["schema"] = 1 if old_layout else SCHEMA
    clean["files"] = [{"path": f.name, "size": f.size, "sha256": f.sha256} for f in files]
    clean["log"] = (log_name if old_layout else
                    log_file and {"path": log_file.name, "size": log_file.size, "sha256": log_file.sha256})
    return clean, files, log_file


@dataclass(frozen=True)
class SetSummary:
    """One stored set, as every listing shows it (CLI, REST, sidebar, notebook)."""

    project: str
    commit: str
    run_id: str | None            # None: a set of the old layout
    mode: str | None
    status: str | None            # succeeded/failed/cancelled/interrupted; "damaged"
    dirty: bool
    started_at: str | None
    finished_at: str | None
    files: int
    size: int
    damaged: str | None = None    # why the set could not be read (one line)

    @property
    def short_commit(self) -> str:
        return self.commit[:7]

    @property
    def run_ref(self) -> str:
        """What ``run=``/``--run`` takes to name this set."""
        return self.run_id or OLD_LAYOUT_RUN

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "short_commit": self.short_commit}


def _read_set(project: str, found: StoredSet) -> tuple[SetSummary, dict[str, Any] | None, list[ArtifactFile],
                                                       ArtifactFile | None]:
    """The summary of a stored set, and (when it is readable) its checked manifest, products and log."""
    reason = found.damaged
    if found.manifest is not None:
        try:
            manifest, files, log_file = _checked(found.manifest, old_layout=found.run_id is None)
        except _Damaged as e:
            reason = f"the manifest is damaged: {e}"
        else:
            return SetSummary(
                project=project, commit=found.commit, run_id=found.run_id, mode=manifest["mode"],
                status=manifest["status"], dirty=bool(manifest["dirty"]), started_at=manifest["started_at"],
                finished_at=manifest["finished_at"], files=len(files), size=sum(f.size for f in files),
            ), manifest, files, log_file
    summary = SetSummary(project=project, commit=found.commit, run_id=found.run_id, mode=None, status="damaged",
                         dirty=False, started_at=None, finished_at=None, files=0, size=0,
                         damaged=_one_line(reason or "the manifest is damaged"))
    return summary, None, [], None


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- finding a set ------------------------------------------------------------------


def _storage(storage: Storage | str | os.PathLike[str] | None) -> Storage:
    return storage if isinstance(storage, Storage) else open_storage(storage)


def _when(summary: SetSummary) -> datetime:
    for value in (summary.finished_at, summary.started_at):
        if isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                continue
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _when_text(summary: SetSummary) -> str:
    dt = _when(summary)
    if dt.year == 1:
        return "unknown time"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _newest_first(sets: Iterable[SetSummary]) -> list[SetSummary]:
    return sorted(sets, key=lambda s: (_when(s), s.commit, s.run_id or ""), reverse=True)


def _read_all(project: str, storage: Storage) -> list[tuple[SetSummary, dict[str, Any] | None,
                                                            list[ArtifactFile], ArtifactFile | None]]:
    read = [_read_set(project, found) for found in storage.list_sets(project)]
    order = {id(s): i for i, s in enumerate(_newest_first(r[0] for r in read))}
    return sorted(read, key=lambda r: order[id(r[0])])


def list_sets(project: str, storage: Storage | str | None = None) -> list[SetSummary]:
    """Every stored set of the project, newest first (by finished_at); damaged ones included."""
    return [r[0] for r in _read_all(project, _storage(storage))]


@dataclass(frozen=True)
class CommitSummary:
    """One commit's line in a listing: the set it resolves to (else its newest) and all its sets."""

    commit: str
    shown: SetSummary
    sets: tuple[SetSummary, ...]  # newest first
    resolved: bool                # whether ``shown`` is what the commit resolves to

    def to_dict(self) -> dict[str, Any]:
        """``shown`` as ``SetSummary.to_dict()``, plus ``sets`` (each set's dict) and ``resolved``."""
        return {**self.shown.to_dict(), "sets": [s.to_dict() for s in self.sets], "resolved": self.resolved}


def summarize_commits(sets: list[SetSummary]) -> list[CommitSummary]:
    """Group sets (newest first) by commit; commits ordered by their newest set."""
    by_commit: dict[str, list[SetSummary]] = {}
    for summary in sets:
        by_commit.setdefault(summary.commit, []).append(summary)
    out = []
    for commit, group in by_commit.items():
        best = _best(group, None)
        out.append(CommitSummary(commit, best or group[0], tuple(group), best is not None))
    return out


def list_commits(project: str, storage: Storage | str | None = None) -> list[CommitSummary]:
    """The project's commits with stored sets, newest first; see :class:`CommitSummary`."""
    return summarize_commits(list_sets(project, storage))


def _best(sets: list[SetSummary], mode: str | None) -> SetSummary | None:
    """The newest succeeded set of ``sets`` (newest first): of ``mode``, else full before sample."""
    ok = [s for s in sets if s.status == "succeeded" and s.damaged is None]
    if mode is not None:
        ok = [s for s in ok if s.mode == mode]
        return ok[0] if ok else None
    for wanted in ("full", "sample"):
        found = [s for s in ok if s.mode == wanted]
        if found:
            return found[0]
    return ok[0] if ok else None


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise UsageError(f"mode must be 'sample' or 'full', not {mode!r}", hint="--mode sample or --mode full")


def _no_artifacts(storage: Storage, project: str) -> ArtifactsNotFound:
    projects = storage.list_projects()
    hint = (
        f"projects with artifacts in {storage.url}: {', '.join(projects)}"
        if projects
        else f"no project has artifacts in {storage.url} yet; run the pipeline first"
    )
    return ArtifactsNotFound(f"no artifacts for project '{project}'", hint=hint)


def _match_commit(sets: list[SetSummary], project: str, ref: str) -> str:
    """The full commit ``ref`` names among the stored sets (a full SHA or a unique prefix of 4+ hex)."""
    commits = {s.commit for s in sets}
    if ref in commits:
        return ref
    low = ref.lower()
    if low in commits:
        return low
    matches = sorted(c for c in commits if len(low) >= 4 and set(low) <= _HEX and c.lower().startswith(low))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        newest = {c: next(s for s in sets if s.commit == c) for c in matches}
        listed = "; ".join(f"{c[:12]} ({_when_text(newest[c])})" for c in matches)
        raise ArtifactsNotFound(
            f"commit prefix '{ref}' is ambiguous in project '{project}': {listed}",
            hint="give more characters of the commit",
        )
    raise ArtifactsNotFound(
        f"no artifacts for commit '{ref}' in project '{project}'",
        hint="soopervisor artifacts list shows the stored commits",
    )


def _no_succeeded(project: str, commit: str, sets: list[SetSummary], mode: str | None) -> ArtifactsNotFound:
    what = f"{mode} " if mode else ""
    others = ", ".join(f"run {s.run_ref} {s.status}" for s in sets[:5]) + (", ..." if len(sets) > 5 else "")
    example = sets[0].run_ref
    hint = (f"pick a set by its run: soopervisor artifacts download {commit[:7]} --run {example}, "
            f"or get_artifacts('{commit[:7]}', run='{example}')")
    if mode and any(s.status == "succeeded" and s.damaged is None for s in sets):
        hint = "leave out the mode to get the succeeded set of the other mode; " + hint
    return ArtifactsNotFound(f"commit {commit[:7]} has no succeeded {what}set in project '{project}' ({others})",
                             hint=hint)


def _pick_run(sets: list[SetSummary], project: str, ref: str | None, run: str) -> SetSummary:
    found = [s for s in sets if s.run_ref == run]
    if ref not in (None, "latest"):
        commit = _match_commit(sets, project, ref)
        found = [s for s in found if s.commit == commit]
    if not found:
        where = f" of commit '{ref}'" if ref not in (None, "latest") else ""
        raise ArtifactsNotFound(f"no set of run '{run}'{where} in project '{project}'",
                                hint="soopervisor artifacts list --all shows every set with its run id")
    return found[0]


def _resolve(sets: list[SetSummary], project: str, ref: str | None, mode: str | None,
             run: str | None) -> SetSummary:
    """The resolution rule, over the project's sets (newest first); see :func:`resolve_set`."""
    if run is not None:
        return _pick_run(sets, project, ref, run)
    if ref in (None, "latest"):
        newest = _best(sets, mode) if mode else next(
            (s for s in sets if s.status == "succeeded" and s.damaged is None), None)
        if newest is None:
            what = f"{mode} " if mode else ""
            raise ArtifactsNotFound(
                f"project '{project}' has no succeeded {what}set yet",
                hint="soopervisor artifacts list --all shows every set; pick one with --run ID (run='ID')")
        ref = newest.commit
    commit = _match_commit(sets, project, ref)
    of_commit = [s for s in sets if s.commit == commit]
    best = _best(of_commit, mode)
    if best is None:
        raise _no_succeeded(project, commit, of_commit, mode)
    return best


def resolve_set(storage: Storage | str | None, project: str, ref: str | None = "latest", *,
                mode: str | None = None, run: str | None = None) -> SetSummary:
    """The set ``ref`` names.

    ``ref`` is a full SHA, a unique prefix of 4+ hex digits or ``latest`` (the
    commit of the newest succeeded set, of ``mode`` when given). A commit
    resolves to its newest *succeeded* set, full before sample unless ``mode``
    is given. ``run`` picks that run's set whatever its status
    (``"old-layout"``: the commit's set of the old layout). ArtifactsNotFound
    when nothing matches, naming the runs that did not succeed.
    """
    _check_mode(mode)
    st = _storage(storage)
    sets = list_sets(project, st)
    if not sets:
        raise _no_artifacts(st, project)
    return _resolve(sets, project, ref, mode, run)


# -- downloading ---------------------------------------------------------------------


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


def _where(summary: SetSummary) -> str:
    run = f" run {summary.run_id}" if summary.run_id else ""
    return f"{summary.project}@{summary.short_commit}{run}"


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


# -- the notebook-facing object ------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    size: int
    sha256: str


def format_size(n: float) -> str:
    """A human-readable size in decimal units: ``"512 B"``, ``"1.2 MB"``."""
    n = float(n)
    if abs(n) < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


class Artifacts:
    """One stored set: its manifest, its products (``files``), on demand.

    ``run_id`` is None for a set of the old layout. ``summary`` is the set's
    line in a listing; ``status`` its run's status.
    """

    def __init__(self, storage: Storage, summary: SetSummary, manifest: dict[str, Any],
                 files: list[ArtifactFile], log_file: ArtifactFile | None = None) -> None:
        self.storage = storage
        self.summary = summary
        self.project = summary.project
        self.commit = summary.commit
        self.run_id = summary.run_id
        self.manifest = manifest
        self.files: list[ArtifactFile] = files
        self._log = log_file

    @property
    def status(self) -> str | None:
        return self.summary.status

    @property
    def mode(self) -> str | None:
        return self.summary.mode

    @property
    def ours_folder(self) -> str:
        """The folder of a download holding manifest.json and soopervisor.log (``.soopervisor``, unless taken)."""
        return _ours_folder(self.files)

    def _file(self, name: str) -> ArtifactFile:
        for f in self.files:
            if f.name == name:
                return f
        check_relpath(name)
        raise ArtifactsNotFound(
            f"no file {name!r} in the artifacts of {_where(self.summary)}",
            hint="Artifacts.files lists the names",
        )

    def _stored(self, name: str) -> str:
        return name if self.run_id is None else f"{FILES}/{name}"

    def _cached(self, stored: str, want: ArtifactFile) -> Path:
        """A verified copy of the set's file ``stored`` in the cache (one folder per set)."""
        cache = config.cache_dir() / self.project / self.commit / (self.run_id or ".old-layout")
        target = cache.joinpath(*stored.split("/"))
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _refuse_links_on_the_way(cache, stored)
            # a cached copy counts only while it still matches the manifest
            if (target.is_file() and not target.is_symlink() and target.stat().st_size == want.size
                    and sha256_file(target) == want.sha256):
                return target
            fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".fetch.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _fetch(self.storage, (self.project, self.commit, self.run_id), stored, want, tmp)
                placed = _Placed([], [])
                return _place(cache, stored, tmp, placed)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            raise _disk_error(e, cache) from None

    def path(self, name: str) -> Path:
        """A local, verified copy of one product, downloaded into the cache on first use."""
        return self._cached(self._stored(name), self._file(name))

    def log_path(self) -> Path:
        """A local, verified copy of the run's log; ArtifactsNotFound when the set has none."""
        if self._log is None:
            raise ArtifactsNotFound(f"the set {_where(self.summary)} has no log")
        return self._cached(self._log.name if self.run_id is None else LOG_NAME, self._log)

    def download(self, to: str | os.PathLike[str] = ".") -> Path:
        """Download the whole set into ``to`` (empty, or holding this set); return it.

        Products at ``to/<path>``, manifest.json and soopervisor.log in ``to/.soopervisor/``.
        """
        to = Path(to)
        _download(self.storage, self.summary, to)
        return to.resolve()

    def __repr__(self) -> str:
        n = len(self.files)
        run = f" run={self.run_id!r}" if self.run_id else ""
        return (
            f"<Artifacts project={self.project!r} commit={self.commit[:7]!r}{run} "
            f"{n} file{'s' if n != 1 else ''} status={self.status!r}>"
        )

    def load(self, name: str) -> Any:
        """One file as a Python object, chosen by its extension.

        ``.csv``/``.parquet`` -> pandas DataFrame (``.csv`` falls back to text
        without pandas), ``.json`` -> parsed object, text formats -> str, images
        -> an IPython Image/SVG (shown inline), ``.html`` -> IPython HTML,
        anything else -> bytes. The file is downloaded and verified first.
        """
        local = self.path(name)
        ext = Path(name).suffix.lower()
        if ext == ".csv":
            try:
                import pandas as pd
            except ImportError:
                return local.read_text(encoding="utf-8", errors="replace")
            return pd.read_csv(local)
        if ext == ".parquet":
            try:
                import pandas as pd

                return pd.read_parquet(local)
            except ImportError as e:
                raise UsageError(
                    f"reading {name} needs pandas and pyarrow ({e})",
                    hint=f"pip install pandas pyarrow, or use arts.path({name!r}) to get the file",
                ) from e
        if ext == ".json":
            return json.loads(local.read_text(encoding="utf-8"))
        if ext in _TEXT:
            return local.read_text(encoding="utf-8", errors="replace")
        if ext in _IMAGES or ext in (".svg", ".html", ".htm"):
            try:
                from IPython import display
            except ImportError:  # outside IPython: the raw content is the useful thing
                return local.read_text(encoding="utf-8") if ext in (".svg", ".html", ".htm") else local.read_bytes()
            if ext == ".svg":
                return display.SVG(filename=str(local))
            if ext in (".html", ".htm"):
                return display.HTML(filename=str(local))
            return display.Image(filename=str(local))
        return local.read_bytes()

    def file_url(self, name: str) -> str:
        """Where the Jupyter server extension serves ``name`` (same storage as the server)."""
        from urllib.parse import quote

        # kernels under JupyterHub know the server's prefix; elsewhere it is "/"
        base = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        run = f"?run={quote(self.run_id, safe='')}" if self.run_id else ""
        return (
            f"{base.rstrip('/')}/soopervisor/api/projects/{quote(self.project, safe='')}"
            f"/commits/{quote(self.commit, safe='')}/files/{quote(_raw(name), safe='/')}{run}"
        )

    def _repr_html_(self) -> str:
        e = lambda v: html.escape(printable(str(v)), quote=True)
        m = self.manifest
        run = f" &middot; run <code>{e(self.run_id)}</code>" if self.run_id else ""
        failed = ""
        if self.status != "succeeded":
            task = f" in task <code>{e(m.get('failed_task'))}</code>" if m.get("failed_task") else ""
            failed = f"<div>{e(m.get('error') or self.status)}{task}</div>"
        header = (
            f"<b>{e(self.project)}</b> @ <code>{e(self.commit[:7])}</code>{run} &middot; "
            f"mode: {e(m.get('mode'))} &middot; status: {e(m.get('status'))} &middot; "
            f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}, "
            f"{e(format_size(sum(f.size for f in self.files)))}"
        )
        rows = "".join(
            f"<tr><td style='text-align:left'><code>{e(f.name)}</code></td>"
            f"<td style='text-align:right'>{e(format_size(f.size))}</td>"
            f"<td style='text-align:left'><a href='{e(self.file_url(f.name))}' download='{e(f.name.rsplit('/', 1)[-1])}' "
            "title='served by the soopervisor Jupyter server extension' target='_blank'>download</a></td>"
            f"<td><code>{e(f.sha256[:12])}</code></td></tr>"
            for f in self.files
        )
        first = e(repr(self.files[0].name)) if self.files else "'name'"
        usage = (
            f"<div style='font-size:smaller'>in Python: <code>arts.load({first})</code> reads a file, "
            f"<code>arts.path({first})</code> gives a local copy, <code>arts.download(\"dir\")</code> the whole set</div>"
        )
        return (
            f"<div class='soopervisor-artifacts'><div>{header}</div>"
            "<table><thead><tr><th style='text-align:left'>name</th><th>size</th><th>link</th><th>sha256</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{failed}{usage}</div>"
        )


_TEXT = {".txt", ".log", ".md", ".py", ".sql", ".yaml", ".yml", ".r", ".sh", ".toml", ".ini", ".cfg"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif"}


def _raw(name: str) -> bytes:
    """A stored name as the bytes it stands for (surrogate escapes are bytes that were not UTF-8)."""
    return name.encode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """A name as text any terminal or notebook can show: bytes that are not UTF-8 become U+FFFD."""
    return _raw(name).decode("utf-8", "replace") if any("\udc80" <= c <= "\udcff" for c in name) else name


def get_artifacts(
    commit: str = "latest",
    project: str | None = None,
    storage: Storage | str | None = None,
    *,
    mode: str | None = None,
    run: str | None = None,
) -> Artifacts:
    """The artifacts ``commit`` resolves to (see :func:`resolve_set`).

    ``commit``: full SHA, unique prefix or ``latest``; its newest succeeded set,
    full before sample unless ``mode`` is given. ``run``: that run's set,
    whatever its status. ``project`` defaults to the project in the current
    directory. IntegrityError for a set whose manifest is damaged.
    """
    if project is None:
        from soopervisor.project import project_name  # lazy: keeps this import light

        project = project_name(".")
    _check_mode(mode)
    st = _storage(storage)
    read = _read_all(project, st)
    if not read:
        raise _no_artifacts(st, project)
    chosen = _resolve([r[0] for r in read], project, commit, mode, run)
    summary, manifest, files, log_file = next(r for r in read if r[0] is chosen)
    if manifest is None:
        raise IntegrityError(f"the set {_where(summary)} is damaged: {summary.damaged}", hint=_DAMAGED_HINT)
    return Artifacts(st, summary, manifest, files, log_file)


# -- pruning ---------------------------------------------------------------------------


def prune_plan(sets: list[SetSummary], keep: int) -> list[SetSummary]:
    """The sets a prune removes: all but the newest ``keep`` of each commit, never a commit's good set.

    ``sets`` newest first. Kept whatever ``keep`` says: each commit's newest
    succeeded set and the set the commit resolves to (full before sample).
    """
    if keep < 0:
        raise UsageError(f"--keep must be 0 or more, not {keep}", hint="--keep 3 keeps the last 3 sets of each commit")
    doomed = []
    for commit in summarize_commits(sets):
        protected = {id(s) for s in (commit.shown if commit.resolved else None, _best(list(commit.sets), "full"),
                                     _best(list(commit.sets), "sample")) if s is not None}
        newest_ok = next((s for s in commit.sets if s.status == "succeeded" and s.damaged is None), None)
        if newest_ok is not None:
            protected.add(id(newest_ok))
        doomed += [s for s in commit.sets[keep:] if id(s) not in protected]
    return doomed


def prune_sets(project: str, storage: Storage | str | None = None, *, keep: int = 3,
               dry_run: bool = False, on_removed: Callable[[SetSummary], None] | None = None) -> list[SetSummary]:
    """Remove the sets :func:`prune_plan` names (none with ``dry_run``); return them."""
    st = _storage(storage)
    doomed = prune_plan(list_sets(project, st), keep)
    if dry_run:
        return doomed
    for summary in doomed:
        st.delete_set(summary.project, summary.commit, summary.run_id)
        if on_removed is not None:
            on_removed(summary)
    return doomed

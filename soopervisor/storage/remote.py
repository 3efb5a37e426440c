"""Sets on a remote object store: one implementation of the set protocol for every cloud.

A cloud backend implements :class:`ObjectStore` — put, get, copy, list and
delete objects addressed by posix keys — and :class:`RemoteStorage` does the
rest the same way for all of them:

* **layout**: a run's set is ``<project>/<commit>/<run_id>/`` with
  ``manifest.json``, ``soopervisor.log`` and ``files/<product>``. Product names
  are data (any POSIX name: backslashes, newlines, bytes that are not UTF-8):
  each path segment is stored percent-encoded (:func:`encode_name`), so every
  service accepts it and it comes back byte for byte. Sets of the old layout
  (``<project>/<commit>/manifest.json``, files beside it, names as they are)
  are read and deleted, never written.
* **manifest last**: a set is complete once its ``manifest.json`` exists; an
  interrupted put leaves files without a manifest, which is never listed.
  Putting the same run again first removes its manifest (the old set stops
  being complete), then stores the new files, removes the ones the new set no
  longer has, and writes the new manifest. Other runs' sets are never touched.
* **incremental** (content-addressed, like DVC's cache): a file whose sha256
  the project already stores is not sent again. When it is already at the same
  name of the same run it is kept; elsewhere in the project it is copied on
  the server. Only new content travels.
* **parallel, with progress**: files move in a small thread pool; a progress
  line counts files, bytes and rate.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from soopervisor.errors import ArtifactsNotFound, IntegrityError, UnsafePath
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

Progress = Callable[[int], None]  # called with the number of bytes just moved

#: files moved at once; cloud APIs throttle beyond a few
DEFAULT_WORKERS = 4
#: seconds a set seen complete is trusted by get_file without reading its manifest again
COMPLETE_FOR = 60.0
#: names listed in an error about refused names; the rest are counted
MAX_LISTED = 10


#: longest wait of our own backoff between attempts of a cloud request
MAX_BACKOFF = 60.0
#: longest wait a service's Retry-After is honoured for (the services ask to be honoured: a
#: shorter wait is throttled again and counts against the quota); beyond it, the request fails
MAX_RETRY_AFTER = 900.0


def retry_delay(retry_after: str | None, attempt: int, now: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After (seconds or an HTTP date, up to
    MAX_RETRY_AFTER), else exponential backoff with jitter up to MAX_BACKOFF."""
    if retry_after:
        try:
            return min(max(0.0, float(retry_after)), MAX_RETRY_AFTER)
        except ValueError:
            when = _http_date(retry_after)
            if when is not None:
                return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER)
    return min(MAX_BACKOFF, (2**attempt) * 0.5 + random.uniform(0, 0.5))


def _http_date(text: str) -> float | None:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class RetryLater(Exception):  # a signal between attempts, never shown to the user
    """A throttled or transient failure worth another attempt after ``delay`` seconds."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay, self.why = delay, why


def encode_name(name: str) -> str:
    """A name inside a set as the key suffix that stores it (schema 2): each segment percent-encoded.

    Everything but ASCII letters, digits and ``-_.~`` becomes ``%XX`` of its
    bytes (surrogate escapes are the bytes that were not UTF-8), and so does a
    trailing dot, which some services drop. ``manifest.json``,
    ``soopervisor.log`` and ``files/output/sales.csv`` stay as they are.
    """
    out = []
    for segment in name.split("/"):
        encoded = quote(segment.encode("utf-8", "surrogateescape"), safe="")
        if encoded.endswith("."):
            encoded = encoded[:-1] + "%2E"
        out.append(encoded)
    return "/".join(out)


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # "<project>/<commit>/<run_id>/<name>", relative to the store's root
    size: int


class ObjectStore(Protocol):
    """What a cloud backend provides. Keys are canonical posix paths under the store's root."""

    url: str

    def check_writable(self) -> None:
        """StorageUnavailable (or a credentials error with the login hint) unless writing works now."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (a folder key ending in "/" or ""), recursively."""

    def read(self, key: str) -> bytes:
        """A small object's bytes; ArtifactsNotFound when missing."""

    def write(self, key: str, data: bytes) -> None:
        """A small object (a manifest), replacing any object at ``key``."""

    def upload(self, key: str, src: Path, progress: Progress) -> None:
        """A file of any size, in the service's resumable/chunked way, replacing ``key``."""

    def download(self, key: str, dest: Path, progress: Progress) -> None:
        """Object ``key`` into ``dest`` (created or truncated); ArtifactsNotFound when missing."""

    def copy(self, src_key: str, dst_key: str) -> None:
        """A server-side copy, replacing ``dst_key``."""

    # Optional: ``service`` (its name in messages), ``refused(key) -> str | None``, why the
    # service would refuse the key's name (a reserved name, too long), checked before a put,
    # ``case_insensitive = True`` where names that differ only in case are one object, and
    # ``remove_folder(key)`` where folders outlive their files (a drive): removes it and all in it.

    def delete(self, keys: list[str]) -> None:
        """Remove these objects; keys already gone are fine."""


class TransferProgress:
    """Files, bytes and rate of one transfer, printed at most a few times a second."""

    def __init__(self, what: str, files: int, total: int, out: Callable[[str], None] | None) -> None:
        self.what, self.files, self.total, self.out = what, files, total, out
        self.done_files = 0
        self.done_bytes = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def bytes(self, n: int) -> None:
        with self._lock:
            self.done_bytes += n
        self._show()

    def file_done(self) -> None:
        with self._lock:
            self.done_files += 1
        self._show(force=self.done_files == self.files)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.done_bytes / elapsed
        from soopervisor.artifacts import format_size

        return (
            f"{self.what}: {self.done_files}/{self.files} files, "
            f"{format_size(self.done_bytes)}/{format_size(self.total)} ({format_size(rate)}/s)"
        )

    def _show(self, force: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if force or now - self._last > 0.5:
            self._last = now
            self.out(self.line())


class RemoteStorage(Storage):
    """The set protocol over an :class:`ObjectStore`; see the module docstring."""

    def __init__(self, store: ObjectStore, workers: int = DEFAULT_WORKERS,
                 progress: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.url = store.url
        self.workers = workers
        self.progress = progress
        #: what the last put did: {"uploaded": n, "copied": n, "kept": n, "bytes_sent": n}
        self.last_put: dict[str, int] = {}
        # (project, commit, run_id) -> when its manifest was last seen: get_file of a set's files right
        # after its manifest (a download) need not fetch the manifest again for every file
        self._seen_complete: dict[tuple[str, str, str | None], float] = {}

    @staticmethod
    def _key(project: str, commit: str, run_id: str | None, name: str) -> str:
        if run_id is None:
            return f"{project}/{commit}/{name}"  # the old layout stored names as they were
        return f"{project}/{commit}/{run_id}/{encode_name(name)}"

    # -- writing ---------------------------------------------------------------
    def _put_set(self, project: str, commit: str, run_id: str, src: Path, names: list[str]) -> None:
        prefix = f"{project}/{commit}/{run_id}/"
        manifest = parse_manifest((src / MANIFEST).read_bytes(), str(src))
        expected = {n: sha for n, sha, _size in set_files(manifest)}
        keys = {n: self._key(project, commit, run_id, n) for n in names}
        self._check_names(keys)

        listing = list(self.store.list(f"{project}/"))  # once: what is in place and what is known
        sets = self._list_sets(project, listing)
        check_run_is_free(sets, commit, run_id)
        old = next((s.manifest for s in sets if s.commit == commit and s.run_id == run_id), None)
        present = {o.key: o.size for o in listing if o.key.startswith(prefix)}
        # a put of the same run again: its old set stops being complete before anything changes
        self._seen_complete.pop((project, commit, run_id), None)
        if prefix + MANIFEST in present:
            self.store.delete([prefix + MANIFEST])
        kept_same = {n: sha for n, sha, _size in set_files(old or {})}
        known = self._known_content(project, sets, exclude=(commit, run_id))

        uploads, copies, kept = [], [], 0
        for name in names:
            path, sha, key = src / name, expected.get(name), keys[name]
            if sha and kept_same.get(name) == sha and present.get(key) == path.stat().st_size:
                kept += 1
            elif sha and sha in known:
                copies.append((known[sha], key))
            else:
                uploads.append((key, path))

        total = sum(p.stat().st_size for _, p in uploads)
        meter = TransferProgress(f"storing {project}@{commit[:7]}", len(uploads) + len(copies), total, self.progress)

        def upload(item: tuple[str, Path]) -> None:
            self.store.upload(item[0], item[1], meter.bytes)
            meter.file_done()

        def copy(item: tuple[str, str]) -> None:
            self.store.copy(*item)
            meter.file_done()

        self._parallel(copy, copies)
        self._parallel(upload, uploads)
        wanted = set(keys.values())
        if getattr(self.store, "case_insensitive", False):  # a listing may spell a wanted key in another case
            folded = {w.lower() for w in wanted}
            wanted |= {k for k in present if k.lower() in folded}
        stale = [k for k in present if k not in wanted and k != prefix + MANIFEST]
        if stale:
            self.store.delete(stale)
        self.store.write(prefix + MANIFEST, (src / MANIFEST).read_bytes())
        self.last_put = {"uploaded": len(uploads), "copied": len(copies), "kept": kept, "bytes_sent": total}

    def _check_names(self, keys: dict[str, str]) -> None:
        """Every name the service would refuse, said at once before anything is sent (a set is all or nothing)."""
        refuse = getattr(self.store, "refused", None)
        refused = [(name, why) for name, key in keys.items() if refuse and (why := refuse(key))]
        if getattr(self.store, "case_insensitive", False):
            # names that differ only in case would be one object: the later would replace the earlier
            first: dict[str, str] = {}
            for name, key in keys.items():
                other = first.setdefault(key.lower(), name)
                if other != name:
                    refused.append((name, f"the same name as {other!r} to a service that ignores case"))
        if refused:
            shown = "; ".join(f"{name!r}: {why}" for name, why in refused[:MAX_LISTED])
            more = f" and {len(refused) - MAX_LISTED} more" if len(refused) > MAX_LISTED else ""
            raise UnsafePath(
                f"{self.store.service} refuses {len(refused)} file name{'s' if len(refused) != 1 else ''} of this "
                f"set: {shown}{more}",
                "rename these products in the pipeline (or store the set elsewhere); nothing was sent",
            )

    def _parallel(self, fn: Callable[[Any], None], items: list) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()  # the first error surfaces; the set stays incomplete

    def _known_content(self, project: str, sets: list[StoredSet], exclude: tuple[str, str]) -> dict[str, str]:
        """sha256 -> key of a stored copy, from the project's complete sets but the one being replaced."""
        known: dict[str, str] = {}
        for found in sets:
            if found.manifest is None or (found.commit, found.run_id) == exclude:
                continue
            for name, sha, _size in set_files(found.manifest):
                try:
                    check_relpath(name)
                except UnsafePath:
                    continue  # a damaged old manifest: never copy from outside its set
                if sha:
                    known.setdefault(sha, self._key(project, found.commit, found.run_id, name))
        return known

    def _delete_set(self, project: str, commit: str, run_id: str | None) -> None:
        listing = list(self.store.list(f"{project}/{commit}/"))
        sets = self._commit_sets(project, commit, listing)
        found = next((s for s in sets if s.run_id == run_id), None)
        if found is None:
            raise _missing(project, commit, run_id)
        self._seen_complete.pop((project, commit, run_id), None)
        if run_id is not None:
            prefix = f"{project}/{commit}/{run_id}/"
            self.store.delete([prefix + MANIFEST])  # first: from here on the set is incomplete
            self.store.delete([o.key for o in listing if o.key.startswith(prefix) and o.key != prefix + MANIFEST])
            remove_folder = getattr(self.store, "remove_folder", None)
            if remove_folder is not None:
                # a drive keeps empty folders: the run's own goes too (never the commit's, which
                # another run of the commit may be filling right now)
                remove_folder(prefix.rstrip("/"))
            return
        self.store.delete([f"{project}/{commit}/{MANIFEST}"])
        if found.manifest is not None:
            doomed = {self._key(project, commit, None, name) for name, _sha, _size in set_files(found.manifest)}
        else:
            # a damaged manifest lists nothing: only the objects right in the commit folder were surely its own
            # (deeper ones may be a run's put in progress)
            doomed = {o.key for o in listing if o.key.count("/") == 2}
        runs = {f"{project}/{commit}/{s.run_id}/" for s in sets if s.run_id is not None}
        present = {o.key for o in listing}
        self.store.delete(sorted(k for k in doomed & present if not k.startswith(tuple(runs))))

    def _check_writable(self) -> None:
        self.store.check_writable()

    # -- reading ---------------------------------------------------------------
    def _read_or_none(self, key: str) -> bytes | None:
        try:
            return self.store.read(key)
        except ArtifactsNotFound:
            return None

    def _commit_sets(self, project: str, commit: str, listing: list[ObjectInfo]) -> list[StoredSet]:
        """The complete sets of one commit, from a listing of (at least) its folder."""
        base = f"{project}/{commit}/"
        old_key = base + MANIFEST
        runs = []
        has_old = False
        for o in listing:
            if not o.key.startswith(base):
                continue
            rest = o.key[len(base):].split("/")
            if rest == [MANIFEST]:
                has_old = True
            elif len(rest) == 2 and rest[1] == MANIFEST:
                runs.append(rest[0])
        old = (self._read_or_none(old_key),) if has_old else None
        found = [(name, self._read_or_none(f"{base}{name}/{MANIFEST}")) for name in sorted(runs)]
        return sets_of_commit(commit, project, old, found)

    def _list_projects(self) -> list[str]:
        projects = set()
        for o in self.store.list(""):
            parts = o.key.split("/")
            if (len(parts) in (3, 4) and parts[-1] == MANIFEST and not parts[0].startswith(".")):
                projects.add(parts[0])
        return sorted(projects)

    def _list_sets(self, project: str, listing: list[ObjectInfo] | None = None) -> list[StoredSet]:
        if listing is None:
            listing = list(self.store.list(f"{project}/"))
        commits = set()
        for o in listing:
            parts = o.key.split("/")
            if parts[-1] == MANIFEST and len(parts) in (3, 4) and parts[0] == project:
                commits.add(parts[1])
        sets = []
        for commit in sorted(commits):
            try:
                check_name("commit", commit)
            except UnsafePath:
                continue
            sets += self._commit_sets(project, commit, listing)
        return sets

    def _read_manifest(self, project: str, commit: str, run_id: str | None) -> dict[str, Any]:
        listing = list(self.store.list(f"{project}/{commit}/"))
        for found in self._commit_sets(project, commit, listing):
            if found.run_id == run_id:
                if found.manifest is None:
                    raise IntegrityError(found.damaged or "the manifest is damaged",
                                         hint="the stored set is damaged; run the pipeline again to store it anew")
                return found.manifest
        raise _missing(project, commit, run_id)

    def _get_file(self, project: str, commit: str, run_id: str | None, name: str, dest: Path) -> None:
        # only files of complete sets are served; a set seen complete a moment ago still is (a
        # replacement racing a download is caught by the sha256 check)
        where = (project, commit, run_id)
        seen = self._seen_complete.get(where)
        if name == MANIFEST or seen is None or time.monotonic() - seen > COMPLETE_FOR:
            if self._read_or_none(self._key(project, commit, run_id, MANIFEST)) is None:
                raise _missing(project, commit, run_id)
            self._seen_complete[where] = time.monotonic()
        self.store.download(self._key(project, commit, run_id, name), dest, lambda n: None)


def _missing(project: str, commit: str, run_id: str | None) -> ArtifactsNotFound:
    what = f"run '{run_id}' of commit '{commit}'" if run_id else f"commit '{commit}'"
    return ArtifactsNotFound(f"no artifacts for {what} in project '{project}'",
                             hint="soopervisor artifacts list --all shows the stored sets")

"""Sets on a remote object store: one implementation of the set protocol for every cloud.

A cloud backend implements :class:`ObjectStore` — put, get, copy, list and
delete objects addressed by posix keys (``<project>/<commit>/<name>``) — and
:class:`RemoteStorage` does the rest the same way for all of them:

* **manifest last**: a set is complete once ``manifest.json`` exists; an
  interrupted put leaves files without a manifest, which is never listed.
* **replace**: storing a commit again first removes its manifest (the old set
  stops being complete), then stores the new files, removes files the new set
  no longer has, and writes the new manifest: readers see the old complete
  set, no set, or the new complete set — never a mix.
* **incremental** (content-addressed, like DVC's cache): a file whose sha256
  the project already stores is not sent again. When it is already at the same
  name of the same commit it is kept; elsewhere in the project it is copied on
  the server. Only new content travels.
* **parallel, with progress**: files move in a small thread pool; a progress
  line counts files, bytes and rate.
"""
from __future__ import annotations

import posixpath
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from soopervisor.errors import ArtifactsNotFound, IntegrityError, SoopervisorError
from soopervisor.storage.base import MANIFEST, Storage, check_name, check_relpath, parse_manifest
from soopervisor.storage.local import regular_files

Progress = Callable[[int], None]  # called with the number of bytes just moved

#: files moved at once; cloud APIs throttle beyond a few
DEFAULT_WORKERS = 4
#: seconds a set seen complete is trusted by get_file without reading its manifest again
COMPLETE_FOR = 60.0


#: longest wait between attempts of a cloud request, even when Retry-After asks for more
MAX_BACKOFF = 60.0


def retry_delay(retry_after: str | None, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After, else exponential backoff with jitter."""
    if retry_after:
        try:
            return min(float(retry_after), MAX_BACKOFF)
        except ValueError:
            pass  # an HTTP date: back off as if the server had said nothing
    return min(MAX_BACKOFF, (2**attempt) * 0.5 + random.uniform(0, 0.5))


class RetryLater(Exception):  # a signal between attempts, never shown to the user
    """A throttled or transient failure worth another attempt after ``delay`` seconds."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay, self.why = delay, why


@dataclass(frozen=True)
class ObjectInfo:
    key: str  # "<project>/<commit>/<name>", relative to the store's root
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
        # (project, commit) -> when its manifest was last seen: get_file of a set's files right
        # after its manifest (download_set) need not fetch the manifest again for every file
        self._seen_complete: dict[tuple[str, str], float] = {}

    # -- writing ---------------------------------------------------------------
    def _put_set(self, project: str, commit: str, src: Path) -> None:
        prefix = f"{project}/{commit}/"
        manifest = parse_manifest((src / MANIFEST).read_bytes(), str(src))
        files = {name: src / name for name in regular_files(src) if name != MANIFEST}
        for name in files:
            check_relpath(name)
        sha_of = {f["path"]: f.get("sha256") for f in manifest.get("files", []) if isinstance(f, dict)}

        # the old set of this commit stops being complete before anything changes
        old = self._manifest_or_none(project, commit)
        self._seen_complete.pop((project, commit), None)
        self.store.delete([prefix + MANIFEST])
        listing = list(self.store.list(f"{project}/"))  # once: what is in place and what is known
        present = {o.key[len(prefix):]: o.size for o in listing if o.key.startswith(prefix)}
        kept_same = {
            f["path"]: f.get("sha256") for f in (old or {}).get("files", []) if isinstance(f, dict)
        }
        known = self._known_content(project, exclude=commit, listing=listing)

        uploads, copies, kept = [], [], 0
        for name, path in files.items():
            sha = sha_of.get(name)
            if sha and kept_same.get(name) == sha and present.get(name) == path.stat().st_size:
                kept += 1
            elif sha and sha in known:
                copies.append((known[sha], prefix + name))
            else:
                uploads.append((name, path))

        total = sum(p.stat().st_size for _, p in uploads)
        meter = TransferProgress(f"storing {project}@{commit[:7]}", len(uploads) + len(copies), total, self.progress)

        def upload(item: tuple[str, Path]) -> None:
            self.store.upload(prefix + item[0], item[1], meter.bytes)
            meter.file_done()

        def copy(item: tuple[str, str]) -> None:
            self.store.copy(*item)
            meter.file_done()

        self._parallel(copy, copies)
        self._parallel(upload, uploads)
        stale = [prefix + name for name in present if name not in files and name != MANIFEST]
        if stale:
            self.store.delete(stale)
        self.store.write(prefix + MANIFEST, (src / MANIFEST).read_bytes())
        self.last_put = {"uploaded": len(uploads), "copied": len(copies), "kept": kept, "bytes_sent": total}

    def _parallel(self, fn: Callable[[Any], None], items: list) -> None:
        if not items:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()  # the first error surfaces; the set stays incomplete

    def _known_content(self, project: str, exclude: str, listing: list[ObjectInfo]) -> dict[str, str]:
        """sha256 -> key of a stored copy, from the project's complete sets."""
        known: dict[str, str] = {}
        for manifest in self._list_sets(project, listing):
            commit = manifest.get("commit")
            if commit == exclude:
                continue
            for f in manifest.get("files", []):
                if isinstance(f, dict) and f.get("sha256") and isinstance(f.get("path"), str):
                    known.setdefault(f["sha256"], f"{project}/{commit}/{f['path']}")
        return known

    def _check_writable(self) -> None:
        self.store.check_writable()

    # -- reading ---------------------------------------------------------------
    def _manifest_or_none(self, project: str, commit: str) -> dict[str, Any] | None:
        try:
            return parse_manifest(self.store.read(f"{project}/{commit}/{MANIFEST}"), f"{project}/{commit}")
        except ArtifactsNotFound:
            return None
        except IntegrityError:  # damaged: not a complete set; a new put replaces it
            return None

    def _list_projects(self) -> list[str]:
        projects = set()
        for o in self.store.list(""):
            parts = o.key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST and not parts[0].startswith("."):
                projects.add(parts[0])
        return sorted(projects)

    def _list_sets(self, project: str, listing: list[ObjectInfo] | None = None) -> list[dict[str, Any]]:
        sets = []
        for o in self.store.list(f"{project}/") if listing is None else listing:
            parts = o.key.split("/")
            if len(parts) != 3 or parts[2] != MANIFEST:
                continue
            commit = parts[1]
            try:
                check_name("commit", commit)
            except SoopervisorError:
                continue
            manifest = self._manifest_or_none(project, commit)
            if manifest is not None:
                sets.append({**manifest, "project": project, "commit": commit})
        return sets

    def _read_manifest(self, project: str, commit: str) -> dict[str, Any]:
        manifest = self._manifest_or_none(project, commit)
        if manifest is None:
            raise ArtifactsNotFound(
                f"no artifacts for commit '{commit}' in project '{project}'",
                hint="soopervisor artifacts list shows the stored commits",
            )
        return {**manifest, "project": project, "commit": commit}

    def _get_file(self, project: str, commit: str, name: str, dest: Path) -> None:
        # only files of complete sets are served; a set seen complete a moment ago still is (a
        # replacement racing a download is caught by the sha256 check, as it was before)
        seen = self._seen_complete.get((project, commit))
        if name == MANIFEST or seen is None or time.monotonic() - seen > COMPLETE_FOR:
            self._read_manifest(project, commit)
            self._seen_complete[(project, commit)] = time.monotonic()
        self.store.download(posixpath.join(project, commit, name), dest, lambda n: None)


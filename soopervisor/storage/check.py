"""``soopervisor storage check``: sign in to a storage, write, list, read and remove a tiny set.

The first thing to run against a new storage, and what the live tests run. It
goes through the same code a run does (``Storage.put_set``, manifest last;
``list_sets``; ``get_file`` with the sha256 checked; ``delete_set``), under a
reserved project name, ``_soopervisor-check/<random commit>/<run id>/``, so it
never touches a real project's sets.

Each step is a :class:`Step` (name, ok, seconds, detail, error); the check stops
at the first failure. Whatever it wrote is removed in any case: when a step
fails, a last ``clean up`` step removes what the failed step may have left,
and says what is left (and where) when that fails too.

Object stores with folders (Google Drive, Dropbox, OneDrive, Box) keep a folder
when its files are removed; a store that defines ``remove_folder(key)`` (remove
the folder ``key`` and everything under it; gone already is fine) has the
check's folders removed too. Without it, the folders the check made are listed
in :attr:`CheckResult.left_behind`.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soopervisor.artifacts.manifest import sha256_file
from soopervisor.errors import ArtifactsNotFound, IntegrityError, SoopervisorError, StorageUnavailable
from soopervisor.storage.base import FILES, LOG, MANIFEST, Storage, set_files

#: the project the check's set is stored under; never a real project's name (see ``check_name``: not
#: hidden, so every backend stores it like any project)
CHECK_PROJECT = "_soopervisor-check"

#: the files of the check's set, under ``files/``: a text file and a binary one in a sub-folder
_TEXT = "check.txt"
_BINARY = "folder/data.bin"
#: schemes whose services keep folders apart from the files in them
_FOLDER_SCHEMES = ("gdrive", "dropbox", "onedrive", "box")

STEPS = ("sign in", "writable", "write", "list", "read", "remove")


@dataclass
class Step:
    """One step of a check: ``error`` is the exception that failed it (None when it passed)."""

    name: str
    ok: bool
    seconds: float
    detail: str = ""
    error: BaseException | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3),
                               "detail": self.detail}
        if self.error is not None:
            out["error"] = error_dict(self.error)
        return out


@dataclass
class CheckResult:
    """The steps of one check, in order; ``where`` is the set's folder, relative to the storage."""

    url: str
    where: str
    steps: list[Step] = field(default_factory=list)
    #: what could not be removed: ``"<what> in <storage URL>"``, one per item
    left_behind: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and [s.name for s in self.steps] == list(STEPS)

    @property
    def failed(self) -> Step | None:
        """The first step that failed."""
        return next((s for s in self.steps if not s.ok), None)

    @property
    def error(self) -> BaseException | None:
        failed = self.failed
        return failed.error if failed is not None else None

    @property
    def exit_code(self) -> int:
        error = self.error
        if error is None:
            return 0
        return error.exit_code if isinstance(error, SoopervisorError) else 1

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"storage": self.url, "ok": self.ok, "where": self.where, "seconds": round(self.seconds, 3),
                "steps": [s.to_dict() for s in self.steps], "left_behind": list(self.left_behind)}


def error_dict(error: BaseException) -> dict[str, Any]:
    """What an error says, for JSON: message, hint, the troubleshooting link and the exit code."""
    if isinstance(error, SoopervisorError):
        return {"type": type(error).__name__, "message": error.message, "hint": error.hint,
                "docs": error.docs, "exit_code": error.exit_code}
    from soopervisor.redact import CREDENTIALS

    return {"type": type(error).__name__, "message": CREDENTIALS.redact(f"internal error: {error}"),
            "hint": "this is a bug in soopervisor", "docs": None, "exit_code": 1}


def error_line(error: BaseException) -> str:
    """The one line a failed step shows."""
    if isinstance(error, SoopervisorError):
        return error.message
    return error_dict(error)["message"]


def check_storage(storage: str | os.PathLike[str] | Storage | None = None, *,
                  on_step: Callable[[Step], None] | None = None) -> CheckResult:
    """Sign in to ``storage``, check it is writable, write, list, read back and remove a tiny set.

    ``storage`` is a URL or path (None: ``SOOPERVISOR_STORAGE`` or the default
    folder), or a :class:`Storage` already opened. ``on_step`` is called with
    each step as it ends. Never raises for a failed step (the result holds the
    error), except KeyboardInterrupt and the like, after cleaning up.
    """
    from soopervisor import config

    if storage is None:
        storage = config.default_storage_url()
    url = storage.url if isinstance(storage, Storage) else os.fspath(storage)
    commit = secrets.token_hex(20)  # looks like a commit: 40 hex digits
    run_id = uuid.uuid4().hex[:12]  # as a run's id
    result = CheckResult(url=url, where=f"{CHECK_PROJECT}/{commit}/{run_id}/")
    checker = _Checker(result, commit, run_id, on_step)
    try:
        checker.run(storage)
    finally:
        checker.clean_up()
    return result


class _Checker:
    def __init__(self, result: CheckResult, commit: str, run_id: str,
                 on_step: Callable[[Step], None] | None) -> None:
        self.result = result
        self.commit = commit
        self.run_id = run_id
        self.on_step = on_step
        self.storage: Storage | None = None
        self.wrote = False  # a put was tried: something may be stored
        self.removed = False  # the remove step passed: nothing is left
        self.made: list[Path] = []  # a local folder: the folders of its path that did not exist before
        self.manifest: dict[str, Any] = {}  # of the set written
        self.manifest_bytes = b""

    # -- steps ---------------------------------------------------------------------------
    def _step(self, name: str, fn: Callable[[], str]) -> bool:
        start = time.monotonic()
        try:
            detail = fn()
        except Exception as e:  # noqa: BLE001 - reported as the step's failure (raised again by the CLI)
            self._add(Step(name, False, time.monotonic() - start, error_line(e), e))
            return False
        self._add(Step(name, True, time.monotonic() - start, detail))
        return True

    def _add(self, step: Step) -> None:
        self.result.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def run(self, storage: str | os.PathLike[str] | Storage) -> None:
        for name, fn in (("sign in", lambda: self._sign_in(storage)), ("writable", self._writable),
                         ("write", self._write), ("list", self._list), ("read", self._read),
                         ("remove", self._remove)):
            if not self._step(name, fn):
                return

    def _sign_in(self, storage: str | os.PathLike[str] | Storage) -> str:
        from soopervisor.storage import LocalStorage, open_storage

        self.storage = storage if isinstance(storage, Storage) else open_storage(storage)
        self.result.url = self.storage.url
        if isinstance(self.storage, LocalStorage):
            path = self.storage.root
            while not os.path.lexists(path) and path != path.parent:
                self.made.append(path)  # deepest first
                path = path.parent
            return f"a folder on this machine: {self.storage.root}"
        return f"opened {self.storage.url}"

    def _writable(self) -> str:
        assert self.storage is not None
        self.storage.check_writable()
        return "a set can be stored now"

    def _write(self) -> str:
        from soopervisor import __version__
        from soopervisor.artifacts import format_size, write_manifest

        assert self.storage is not None
        with tempfile.TemporaryDirectory(prefix="soopervisor-check-") as tmp:
            src = Path(tmp) / "set"
            (src / FILES / "folder").mkdir(parents=True)
            now = datetime.now(UTC)
            (src / FILES / _TEXT).write_text(
                f"written by soopervisor storage check at {now.isoformat(timespec='seconds')}; "
                "removed when the check ends\n", encoding="utf-8")
            (src / FILES / _BINARY).write_bytes(os.urandom(1024))
            (src / LOG).write_text("==> soopervisor: storage check\n", encoding="utf-8")
            manifest = write_manifest(src, project=CHECK_PROJECT, commit=self.commit, run_id=self.run_id,
                                      status="succeeded", mode="sample", dirty=False, exit_code=0,
                                      started_at=now, finished_at=now, soopervisor_version=__version__)
            self.manifest, self.manifest_bytes = manifest, (src / MANIFEST).read_bytes()
            self.wrote = True
            self.storage.put_set(CHECK_PROJECT, self.commit, self.run_id, src)
        files = set_files(manifest)
        size = sum(n or 0 for _name, _sha, n in files)
        return f"{len(files)} files ({format_size(size)}) and the manifest, last, to {self.result.where}"

    def _list(self) -> str:
        assert self.storage is not None
        found = [s for s in self.storage.list_sets(CHECK_PROJECT)
                 if s.commit == self.commit and s.run_id == self.run_id]
        if not found:
            raise StorageUnavailable(f"the set just stored at {self.result.where} is not listed",
                                     hint="the storage did not keep its manifest, or lists late; try again, "
                                          "and report it if it keeps happening")
        if found[0].manifest is None:
            raise IntegrityError(f"the set just stored is listed as damaged: {found[0].damaged}",
                                 hint="the storage changed the manifest; report it with the storage's kind")
        listed = sorted(n for n, _sha, _size in set_files(found[0].manifest))
        wanted = sorted(n for n, _sha, _size in set_files(self.manifest))
        if listed != wanted:
            raise IntegrityError("the listed set does not name the files just stored",
                                 hint="the storage changed the manifest; report it with the storage's kind")
        return "the set is listed, its manifest complete"

    def _read(self) -> str:
        from soopervisor.artifacts import format_size

        assert self.storage is not None
        manifest = self.storage.read_manifest(CHECK_PROJECT, self.commit, self.run_id)
        files = set_files(manifest)
        total = 0
        with tempfile.TemporaryDirectory(prefix="soopervisor-check-") as tmp:
            for i, (name, sha, size) in enumerate(files):
                dest = Path(tmp) / f"file-{i}"
                self.storage.get_file(CHECK_PROJECT, self.commit, self.run_id, name, dest)
                got = dest.stat().st_size
                if got != size or sha256_file(dest) != sha:
                    raise IntegrityError(
                        f"{name} read back from {self.result.where} is not what was written "
                        f"({got} bytes, expected {size}; or its sha256 differs)",
                        hint="the storage or something between changed the file; report it with the storage's kind")
                total += got
            dest = Path(tmp) / MANIFEST
            self.storage.get_file(CHECK_PROJECT, self.commit, self.run_id, MANIFEST, dest)
            if dest.read_bytes() != self.manifest_bytes:
                raise IntegrityError(f"{MANIFEST} read back from {self.result.where} is not what was written",
                                     hint="the storage changed the file; report it with the storage's kind")
        return f"{len(files)} files ({format_size(total)}) and the manifest read back, sha256 verified"

    def _remove(self) -> str:
        assert self.storage is not None
        self.storage.delete_set(CHECK_PROJECT, self.commit, self.run_id)
        if any(s.commit == self.commit and s.run_id == self.run_id for s in self.storage.list_sets(CHECK_PROJECT)):
            raise StorageUnavailable(f"the set at {self.result.where} is still listed after it was removed",
                                     hint="the storage did not delete its manifest; report it with the storage's kind")
        self._tidy(strict=True)
        self.removed = True
        left = f"; left: {'; '.join(self.result.left_behind)}" if self.result.left_behind else "; nothing left behind"
        return f"the set is removed{left}"

    # -- cleaning up -------------------------------------------------------------------------
    def clean_up(self) -> None:
        """After a failed (or interrupted) step: remove whatever the check stored, say what is left."""
        if not self.wrote or self.removed or self.storage is None:
            self._drop_local_root()
            return
        start = time.monotonic()
        try:
            try:
                self.storage.delete_set(CHECK_PROJECT, self.commit, self.run_id)
            except ArtifactsNotFound:
                pass  # no complete set: the put stopped before its manifest
            except SoopervisorError:
                pass  # the set could not be read (the failed step's cause, often): its objects go one by one below
            self._tidy(strict=False)
        except Exception as e:  # noqa: BLE001 - said as the clean up step's failure
            self.result.left_behind.insert(0, f"{self.result.where} in {self.result.url} ({error_line(e)})")
            self._add(Step("clean up", False, time.monotonic() - start,
                           f"could not remove what the check stored: {'; '.join(self.result.left_behind)}", e))
            return
        left = self.result.left_behind
        self._add(Step("clean up", True, time.monotonic() - start,
                       f"its files are removed; left: {'; '.join(left)}" if left else "nothing the check stored is left"))

    def _tidy(self, strict: bool) -> None:
        """Remove the check's folder ``_soopervisor-check/<commit>/``, and the reserved folder when empty.

        ``strict``: after a remove that passed, whatever is still under the
        check's folder is an error (the storage kept files of a removed set).
        """
        from soopervisor.storage import LocalStorage
        from soopervisor.storage.remote import RemoteStorage

        if isinstance(self.storage, LocalStorage):
            self._tidy_local(self.storage.root)
        elif isinstance(self.storage, RemoteStorage):
            self._tidy_remote(self.storage.store, strict)

    def _tidy_local(self, root: Path) -> None:
        reserved = root / CHECK_PROJECT
        ours = reserved / self.commit
        try:
            if _is_dir(ours):
                shutil.rmtree(ours)  # all ours: a random name (staging areas of the put are inside it)
            if _is_dir(reserved):
                try:
                    reserved.rmdir()
                except OSError as e:
                    # not empty: another check's, at the same time
                    if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                        raise
        except OSError as e:
            raise StorageUnavailable(f"could not remove {ours}: {e.strerror or e}", hint="remove it by hand") from None
        if os.path.lexists(ours):
            raise StorageUnavailable(f"{ours} could not be removed", hint="remove it by hand")
        self._drop_local_root()

    def _drop_local_root(self) -> None:
        """The folders the check made for a local storage (they did not exist before) go again, when empty."""
        for path in self.made:
            try:
                path.rmdir()
            except OSError:
                return  # not empty (something else is there now), or never made

    def _tidy_remote(self, store: Any, strict: bool) -> None:
        prefix = f"{CHECK_PROJECT}/{self.commit}/"
        rest = [o.key for o in store.list(prefix)]
        if rest and strict:
            raise StorageUnavailable(
                f"{len(rest)} file{'s' if len(rest) != 1 else ''} of the removed set {'are' if len(rest) != 1 else 'is'} "
                f"still in {self.result.url} under {prefix}",
                hint="the storage did not delete them; remove them by hand and report it with the storage's kind")
        if rest:
            # all ours (a random folder): what an interrupted put or a failed removal left; the
            # manifests first, so no complete-looking set is ever left with files missing
            store.delete(sorted(rest, key=lambda key: not key.endswith("/" + MANIFEST)))
            rest = [o.key for o in store.list(prefix)]
            if rest:
                raise StorageUnavailable(f"{len(rest)} files under {prefix} could not be removed",
                                         hint="remove them by hand")
        remove_folder = getattr(store, "remove_folder", None)
        scheme = store.url.split("://", 1)[0].lower()
        if remove_folder is None:
            if scheme in _FOLDER_SCHEMES:
                self.result.left_behind.append(f"the empty folders {CHECK_PROJECT}/{self.commit}/ in {store.url} "
                                               "(remove them in the service's web page)")
            return
        remove_folder(prefix.rstrip("/"))
        if next(iter(store.list(f"{CHECK_PROJECT}/")), None) is None:
            remove_folder(CHECK_PROJECT)  # no other check at work: the reserved folder goes too


def _is_dir(path: Path) -> bool:
    """A folder, not a link to one (a link planted in the storage is never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:  # absent, or below a file
        return False

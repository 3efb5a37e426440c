"""Incremental runs: what a run at a commit carries over from the nearest ancestor's set.

A run that is not forced starts from the products and ploomber ``.metadata``
files of the newest *succeeded* set of the nearest first-parent ancestor
(the commit itself first: a re-run carries everything over) that has one of
the same project, mode and environment (``env_hash``). Ploomber then rebuilds
only the tasks whose source, parameters or upstream changed.

The project's sets are listed once (one listing, whatever the number of
ancestors). Every carried file is fetched and checked against its sha256 in
the parent's manifest before it goes into the container; anything wrong with
the parent (a missing or changed file, a storage error) means a full build,
never a failed run: :func:`carry` returns a :class:`Decision` saying why.
"""
from __future__ import annotations

import io
import os
import posixpath
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts.manifest import sha256_file

#: how far back the first-parent history is searched for a parent set
MAX_ANCESTORS = 200


@dataclass(frozen=True)
class Parent:
    """A set a run can start from: its address and the files its manifest lists (path -> sha256)."""

    commit: str
    run_id: str
    files: dict[str, str]
    tasks: dict[str, str] = field(default_factory=dict)  # path -> the task the manifest says made it


@dataclass(frozen=True)
class Carried:
    """What a run starts from: the tar the container gets, and what the manifest says of it."""

    commit: str
    run_id: str
    files: dict[str, str]  # path relative to the project folder -> sha256
    tar: bytes
    tasks: dict[str, str] = field(default_factory=dict)  # carried path -> its task in the parent's manifest

    @property
    def origin(self) -> dict[str, str]:
        """The ``carried_from`` of the manifest and the ``origin`` of each carried file."""
        return {"commit": self.commit, "run_id": self.run_id}


@dataclass(frozen=True)
class Decision:
    """Incremental (``carried`` set) or a full build, and the log line that says which."""

    carried: Carried | None
    note: str


def ancestors(repo_root: Path | str, commit: str, limit: int = MAX_ANCESTORS) -> list[str]:
    """``commit`` and its first-parent ancestors, nearest first (at most ``limit``).

    RuntimeError when git cannot tell (a shallow clone simply gives fewer).
    """
    proc = subprocess.run(
        ["git", "rev-list", "--first-parent", f"--max-count={limit}", commit, "--"],
        cwd=repo_root, capture_output=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip() or f"git rev-list exited {proc.returncode}")
    return proc.stdout.decode().split()


def committed_paths(repo_root: Path | str, commit: str, subdir: str) -> set[str]:
    """The paths of the files ``commit`` has under the project folder, relative to it (never overwritten)."""
    where = subdir.strip("/")
    args = ["git", "ls-tree", "-r", "-z", "--name-only", "--full-tree", commit]
    if where:
        args += ["--", where]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.decode(errors="replace").strip() or f"git ls-tree exited {proc.returncode}")
    out = set()
    for raw in proc.stdout.split(b"\0"):
        if not raw:
            continue
        name = os.fsdecode(raw)
        out.add(posixpath.relpath(name, where) if where else name)
    return out


def choose_parent(read: Iterable[tuple[Any, dict[str, Any] | None, list[Any], Any]], history: list[str],
                  mode: str, env_hash: str | None) -> Parent | None:
    """The set a run starts from, among the project's sets as ``artifacts.sets._read_all`` reads them.

    ``read`` is newest first; ``history`` the commit and its ancestors, nearest
    first. The newest succeeded, undamaged set of the same mode and
    ``env_hash`` of the nearest commit that has one; None when no commit has.
    """
    if not env_hash:
        return None
    best: dict[str, Parent] = {}
    for summary, manifest, files, _log in read:
        if (manifest is None or summary.damaged is not None or summary.status != "succeeded"
                or summary.run_id is None or summary.mode != mode or manifest.get("env_hash") != env_hash
                or summary.commit in best):
            continue
        best[summary.commit] = Parent(summary.commit, summary.run_id, {f.name: f.sha256 for f in files},
                                      {f.name: f.task for f in files if f.task is not None})
    return next((best[c] for c in history if c in best), None)


class Damaged(Exception):
    """The parent set cannot be used; the message says why (one line)."""


def fetch(storage: Any, project: str, parent: Parent, subdir: str, skip: set[str] | None = None) -> Carried:
    """The parent's files, each checked against its sha256, as a tar at ``workspace/<subdir>/<path>``.

    ``skip``: paths the commit itself has (a committed file always wins). Damaged
    when a file is missing, differs or storage fails.
    """
    from .errors import SoopervisorError

    project_dir = posixpath.normpath(posixpath.join("workspace", subdir.strip("/") or "."))
    carried: dict[str, str] = {}
    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="soopervisor-carry-") as tmp, \
            tarfile.open(fileobj=buf, mode="w") as tar:
        dest = Path(tmp) / "file"
        for path, sha in sorted(parent.files.items()):
            if skip and path in skip:
                continue
            try:
                storage.get_file(project, parent.commit, parent.run_id, f"files/{path}", dest)
            except (SoopervisorError, OSError) as e:
                reason = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
                raise Damaged(f"{path} could not be read ({reason})") from None
            if sha256_file(dest) != sha:
                raise Damaged(f"{path} does not match its sha256 in the manifest")
            info = tar.gettarinfo(str(dest), arcname=posixpath.join(project_dir, path))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(dest, "rb") as f:
                tar.addfile(info, f)
            carried[path] = sha
    tasks = {path: parent.tasks[path] for path in carried if path in parent.tasks}
    return Carried(parent.commit, parent.run_id, carried, buf.getvalue(), tasks)


def carry(storage: Any, project: str, repo_root: Path | str, commit: str, subdir: str, mode: str,
          env_hash: str | None, *, force: bool, forced_by: str = "--force") -> Decision:
    """Incremental or full build, with the note that says which and why; never raises for a bad parent."""
    from .artifacts.sets import _read_all
    from .errors import SoopervisorError

    if force:
        return Decision(None, f"soopervisor: full build: {forced_by} rebuilds every task")
    try:
        history = ancestors(repo_root, commit)
    except (RuntimeError, OSError) as e:
        return Decision(None, f"soopervisor: full build: the commit history could not be read ({e})")
    try:
        parent = choose_parent(_read_all(project, storage), history, mode, env_hash)
    except (SoopervisorError, OSError) as e:
        reason = getattr(e, "message", None) or str(e)
        return Decision(None, f"soopervisor: full build: the stored sets could not be listed ({reason})")
    if parent is None:
        return Decision(None, f"soopervisor: full build: no earlier {mode} set of this environment "
                              f"in the last {MAX_ANCESTORS} commits")
    where = f"{parent.commit[:7]} (run {parent.run_id})"
    try:
        skip = committed_paths(repo_root, commit, subdir)
        carried = fetch(storage, project, parent, subdir, skip)
    except Damaged as e:
        return Decision(None, f"soopervisor: full build: parent set {where} is damaged: {e}")
    except (RuntimeError, OSError) as e:
        return Decision(None, f"soopervisor: full build: parent set {where} could not be used ({e})")
    n = len(carried.files)
    return Decision(carried, f"soopervisor: incremental run: starting from {n} file{'s' if n != 1 else ''} "
                             f"of {where}")


# -- what the manifest says of each file -------------------------------------------------


def _metadata_of(path: str) -> str:
    """Ploomber's metadata file of a File product: ``dir/.name.metadata``."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.metadata")


def is_metadata(path: str) -> bool:
    name = posixpath.basename(path)
    return name.startswith(".") and name.endswith(".metadata")


def origins(current: Mapping[str, str], carried: Mapping[str, str],
            parent: Mapping[str, str] | None) -> dict[str, str | dict[str, str]]:
    """Each file's ``origin``: ``"built"``, or ``parent`` (``{commit, run_id}``) when carried over.

    A file is carried when its sha256 equals the carried one and the metadata
    of the product it belongs to (itself, or the nearest folder product above
    it) is unchanged too: a rebuilt task rewrites its metadata timestamp even
    when its product's bytes come out the same. A metadata file is carried
    when unchanged. A file with no product metadata in sight counts by its
    sha256 alone.
    """
    out: dict[str, str | dict[str, str]] = {}
    for path, sha in current.items():
        if parent is None or carried.get(path) != sha:
            out[path] = "built"
            continue
        same = True
        if not is_metadata(path):
            candidate = path
            while candidate:
                meta = _metadata_of(candidate)
                if meta in current or meta in carried:
                    same = current.get(meta) is not None and current.get(meta) == carried.get(meta)
                    break
                candidate = posixpath.dirname(candidate)
        out[path] = dict(parent) if same else "built"
    return out


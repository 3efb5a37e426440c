"""The few git facts soopervisor needs, read with the git command line.

Kept to plain subprocess calls: importing a git library would cost more than
validation is allowed to take.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class GitError(Exception):
    pass


def archive(root: Path, commit: str, prefix: str = "") -> bytes:
    """The tree of ``commit`` as an uncompressed tar, as committed."""
    proc = subprocess.run(
        ["git", "archive", "--format=tar", f"--prefix={prefix}", commit],
        cwd=root,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(proc.stderr.decode(errors="replace").strip())
    return proc.stdout


def show_file(root: Path, commit: str, relpath: str) -> bytes | None:
    """A file's content at ``commit``, or None when it is not in that commit."""
    proc = subprocess.run(
        ["git", "show", f"{commit}:{relpath}"], cwd=root, capture_output=True, check=False
    )
    return proc.stdout if proc.returncode == 0 else None


def has_commit(root: Path, commit: str) -> bool:
    """Whether ``commit`` (a full SHA) is an object of the repository at ``root``."""
    proc = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root,
                          capture_output=True, check=False)
    return proc.returncode == 0


@contextlib.contextmanager
def checkout_of(root: Path, commit: str, name: str) -> Iterator[Path]:
    """A temporary clean checkout of ``commit`` (a detached ``git worktree``) at ``<tmp>/<name>``.

    The user's own checkout is never touched; the worktree shares the
    repository's objects and config (its remotes name the project the same way)
    and is removed afterwards. A worktree left by a killed process is pruned by
    the next call.
    """
    subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, check=False)
    parent = Path(tempfile.mkdtemp(prefix="soopervisor-checkout-"))
    where = parent / name
    try:
        proc = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet",
                               str(where), commit],
                              cwd=root, capture_output=True, check=False)
        if proc.returncode != 0:
            raise GitError(proc.stderr.decode(errors="replace").strip())
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=root,
                       capture_output=True, check=False)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, check=False)

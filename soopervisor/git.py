"""The few git facts soopervisor needs, read with the git command line.

Kept to plain subprocess calls: importing a git library would cost more than
validation is allowed to take.
"""
from __future__ import annotations

import subprocess
from pathlib import Path


class GitError(Exception):
    pass


def _git(cwd: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as e:  # git itself missing
        raise GitError("git is not installed") from e
    if proc.returncode != 0:
        raise GitError(proc.stderr.strip() or f"git {' '.join(args)} failed")
    return proc.stdout


def repo_root(path: Path) -> Path | None:
    """The top of the repository holding ``path``, or None when there is none."""
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    except GitError:
        return None


def head_commit(root: Path) -> str | None:
    """The full SHA of HEAD, or None when the repository has no commit yet."""
    try:
        return _git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}").strip() or None
    except GitError:
        return None


def changed_files(root: Path, subdir: str = "") -> list[str]:
    """Uncommitted changes (staged, unstaged, untracked) under ``subdir``."""
    out = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", subdir or ".")
    return [line[3:] for line in out.splitlines() if line.strip()]


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

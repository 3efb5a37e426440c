"""The few git facts soopervisor needs, read with the git command line.

Kept to plain subprocess calls: importing a git library would cost more than
validation is allowed to take.
"""
from __future__ import annotations

import subprocess
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

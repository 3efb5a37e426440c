"""What git says about the project folder: its repository, HEAD, uncommitted changes, origin.

Plain subprocess calls started together, no git library: validation must stay fast.
The archive of a commit is soopervisor/git.py's.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .paths import _posix_rel


class _GitFacts:  # a plain class: each dataclass costs import time
    def __init__(self, error: str | None = None) -> None:
        self.root: Path | None = None
        self.subdir = ""
        self.commit: str | None = None
        #: (status XY, path relative to the repository root) for changes under the folder
        self.changes: list[tuple[str, str]] = []
        self.error = error  # git failed for another reason than "not a repository"
        self.not_a_repo = False
        self.origin: str | None = None  # the URL of the ``origin`` remote


def _git_facts(folder: Path) -> _GitFacts:
    """Three git calls, started together: rev-parse (top, prefix, HEAD), status, origin's URL."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    cmds = [
        ["git", "rev-parse", "--show-toplevel", "--show-prefix", "--verify", "-q", "HEAD^{commit}"],
        ["git", "status", "--porcelain", "-z", "--untracked-files=normal", "--", "."],
        ["git", "config", "--get", "remote.origin.url"],
    ]
    try:
        procs = [
            subprocess.Popen(
                c, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            for c in cmds
        ]
    except FileNotFoundError:
        return _GitFacts(error="git is not installed")
    (rp_out, rp_err), (st_out, st_err), (or_out, _) = (p.communicate() for p in procs)
    rp_rc, st_rc = procs[0].returncode, procs[1].returncode
    facts = _GitFacts()
    lines = rp_out.decode(errors="surrogateescape").split("\n")
    if rp_rc not in (0, 1) or len(lines) < 2 or not lines[0]:
        err = rp_err.decode(errors="replace").strip()
        if "not a git repository" in err:
            facts.not_a_repo = True
        else:
            facts.error = err.splitlines()[0] if err else "git rev-parse failed"
        return facts
    facts.root = Path(lines[0])
    facts.subdir = lines[1].rstrip("/")
    if procs[2].returncode == 0:
        facts.origin = or_out.decode(errors="replace").strip() or None
    if rp_rc == 0 and len(lines) > 2 and lines[2]:
        facts.commit = lines[2].strip()
    if st_rc == 0:
        facts.changes = _parse_status(st_out.decode(errors="surrogateescape"))
    else:
        err = st_err.decode(errors="replace").strip()
        facts.error = err.splitlines()[0] if err else "git status failed"
    return facts


def _parse_status(out: str) -> list[tuple[str, str]]:
    """``git status --porcelain -z``: "XY path" entries; renames carry the old path next."""
    changes = []
    tokens = out.split("\0")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if len(tok) < 4:
            continue
        xy, path = tok[:2], tok[3:]
        changes.append((xy, path))
        if xy[0] in "RC" or xy[1] in "RC":
            i += 1  # the original path of a rename or copy
    return changes


def _outside_changes(folder: Path, root: Path, rels: list[str]) -> list[tuple[str, str]]:
    """``git status`` of files above the project folder (an environment spec in a parent
    folder): (XY, path relative to the project folder)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "-z", "--untracked-files=normal", "--", *rels],
            cwd=folder, env=env, capture_output=True, stdin=subprocess.DEVNULL, check=False,
        )
    except OSError:
        return []
    if proc.returncode != 0:
        return []
    return [(xy, _posix_rel(folder, root / p)) for xy, p in
            _parse_status(proc.stdout.decode(errors="surrogateescape"))]


def _not_in_head(xy: str) -> bool:
    """The path does not exist in HEAD: untracked, or only staged as new."""
    return xy == "??" or "A" in xy or xy[0] in "RC"


def toplevel_and_origin(folder: Path) -> tuple[str, str, str | None] | None:
    """(top-level, prefix, origin's URL) from two git calls started together; None outside a
    repository (or when git cannot run). No status: naming a project needs no more."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    cmds = [["git", "rev-parse", "--show-toplevel", "--show-prefix"],
            ["git", "config", "--get", "remote.origin.url"]]
    try:
        procs = [subprocess.Popen(c, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) for c in cmds]
    except (OSError, ValueError):
        return None
    outs = [p.communicate()[0].decode(errors="surrogateescape") for p in procs]
    lines = outs[0].split("\n")
    if procs[0].returncode != 0 or len(lines) < 2 or not lines[0]:
        return None
    origin = outs[1].strip() if procs[1].returncode == 0 else None
    return lines[0], lines[1].rstrip("/"), origin or None

"""Run a stored set's commit again from its recorded lock, and say what came out the same.

    repro = soopervisor.reproduce("a1b2c3d")    # the commit's newest succeeded set, run again
    repro.same                                  # every product has the recorded sha256
    repro.tasks                                 # the tasks whose products differ: {task: [files]}

The new run is an ordinary run of that commit (stored as a new set of it,
listed with the others), with three differences: the commit is checked out
in a temporary worktree (the user's checkout is never touched), every task
is rebuilt (nothing is carried over from an earlier set), and the
environment is built from the original set's lock alone: every package at
its recorded version, with the recorded sha256 of its files when uv resolved
it, nothing resolved again.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .artifacts import Artifacts
    from .artifacts.compare import Comparison
    from .lifecycle import ActiveRun
    from .runs import Run

#: the installers whose packages the lock pins; the others came with the base image (Debian's)
LOCK_INSTALLERS = ("uv", "pip")
# what a lock line may hold: a stored manifest is data, never options for the installer
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class Lock:
    """A recorded environment as the requirements file a build installs as it is."""

    text: bytes
    packages: int
    hashed: bool  # every package pinned to the sha256 of its files


def lock_from(environment: Any, where: str) -> Lock:
    """The lock of a set's recorded ``environment``; UsageError when it cannot rebuild it."""
    rerun = "`soopervisor run --force` at that commit builds its environment from its requirements again"
    packages = environment.get("packages") if isinstance(environment, dict) else None
    if not isinstance(packages, list):
        raise UsageError(f"{where} did not record its environment's packages (stored by an older soopervisor, "
                         "or the record could not be read): there is no lock to rebuild it from", rerun)
    pinned, elsewhere = [], []
    for p in packages:
        if not isinstance(p, dict) or p.get("installer") not in LOCK_INSTALLERS:
            continue  # the base image's own packages come with the image
        name, version, hashes = p.get("name"), p.get("version"), p.get("hashes") or []
        if not (isinstance(name, str) and _NAME.match(name) and isinstance(version, str) and _VERSION.match(version)
                and isinstance(hashes, list) and all(isinstance(h, str) and _HASH.match(h) for h in hashes)):
            raise UsageError(f"{where} records a package that is not a name, a version and sha256 hashes "
                             f"({str(p)[:120]}): its manifest is damaged", rerun)
        if p.get("source") in ("local", "url"):
            elsewhere.append(name)
            continue
        pinned.append((name, version, hashes))
    if elsewhere:
        raise UsageError(f"{where} installed {', '.join(elsewhere)} from a local path or a URL, not from a package "
                         "index: reproduce rebuilds only environments whose every package comes from an index", rerun)
    if not pinned:
        raise UsageError(f"{where} records no package installed by pip or uv: there is no lock to rebuild", rerun)
    hashed = all(hashes for _n, _v, hashes in pinned)
    lines = [f"{n}=={v}" + ("".join(f" --hash={h}" for h in sorted(hashes)) if hashed else "")
             for n, v, hashes in sorted(pinned)]
    return Lock(("\n".join(lines) + "\n").encode(), len(pinned), hashed)


def _packages(environment: Any) -> dict[str, str]:
    packages = environment.get("packages") if isinstance(environment, dict) else None
    return {p["name"]: p.get("version") for p in packages or [] if isinstance(p, dict) and isinstance(p.get("name"), str)}


def environment_changes(before: Any, after: Any) -> list[str]:
    """How the rebuilt environment differs from the recorded one: ``numpy 1.26.4 -> 2.0.0``, ``+ x 1``, ``- y 2``."""
    a, b = _packages(before), _packages(after)
    out = [f"{n} {a[n]} -> {b[n]}" for n in sorted(a.keys() & b.keys()) if a[n] != b[n]]
    out += [f"+ {n} {b[n]}" for n in sorted(b.keys() - a.keys())]
    out += [f"- {n} {a[n]}" for n in sorted(a.keys() - b.keys())]
    return out


@dataclass
class Reproduction:
    """A set (``original``) against the run of its commit again (``run``, its set ``reproduced``)."""

    original: Artifacts
    run: Run
    lock: Lock
    reproduced: Artifacts | None = None  # None when the run stored no set (it failed before)
    comparison: Comparison | None = None
    #: how the rebuilt environment differs from the recorded one, one package a line; empty when it does not
    environment: list[str] = field(default_factory=list)

    def _changes(self, *statuses: str) -> list[Any]:
        if self.comparison is None:
            return []
        return [c for c in self.comparison.files if c.status in statuses and not c.metadata]

    @property
    def identical(self) -> list[str]:
        """The products that have the recorded sha256, ploomber's metadata files left out (they hold timestamps)."""
        return [c.name for c in self._changes("unchanged")]

    @property
    def differ(self) -> list[str]:
        """Products of both runs whose sha256 differs."""
        return [c.name for c in self._changes("changed")]

    @property
    def added(self) -> list[str]:
        return [c.name for c in self._changes("added")]

    @property
    def removed(self) -> list[str]:
        return [c.name for c in self._changes("removed")]

    @property
    def tasks(self) -> dict[str | None, list[str]]:
        """The non-deterministic tasks, each with its products that differ, appeared or went.

        A file no task of the manifest claims is under None.
        """
        out: dict[str | None, list[str]] = {}
        for c in self._changes("changed", "added", "removed"):
            out.setdefault(c.task, []).append(c.name)
        return out

    @property
    def same(self) -> bool:
        """The run succeeded and every product came out with the recorded sha256."""
        return self.run.ok and self.comparison is not None and not self._changes("changed", "added", "removed")

    def to_dict(self) -> dict[str, Any]:
        changed = {c.name: c for c in self._changes("changed", "added", "removed")}
        return {
            "commit": self.original.commit,
            "mode": self.original.mode,
            "original_run": self.original.run_id,
            "run": self.run.id,
            "status": self.run.status,
            "same": self.same,
            "lock": {"packages": self.lock.packages, "hashed": self.lock.hashed},
            "environment_changes": self.environment,
            "identical": self.identical,
            "differ": [{"path": n, "status": c.status, "task": c.task} for n, c in changed.items()],
            "tasks": [{"task": t, "files": files} for t, files in self.tasks.items()],
            "metadata_files": len([c for c in (self.comparison.files if self.comparison else []) if c.metadata]),
        }

    def lines(self) -> list[str]:
        """The report, as the terminal shows it."""
        o = self.original
        out = [f"reproduced {o.commit[:7]} ({o.mode}): run {self.run.id} against run {o.run_id}"]
        lock = f"{self.lock.packages} packages" + (", every file's sha256 checked" if self.lock.hashed else
                                                   ", no hashes recorded")
        if self.environment:
            out.append(f"  environment: rebuilt from the lock ({lock}), but it differs:")
            out += [f"    {line}" for line in self.environment[:20]]
            if len(self.environment) > 20:
                out.append(f"    … and {len(self.environment) - 20} more")
        else:
            out.append(f"  environment: the recorded packages, rebuilt from the lock ({lock})")
        if self.comparison is None:
            out.append(f"  the run {self.run.status}: nothing to compare")
            return out
        out.append(f"  = {len(self.identical)} identical (sha256)")
        for c in self._changes("changed", "added", "removed"):
            mark, what = {"changed": ("~", "differs"), "added": ("+", "only in the reproduction"),
                          "removed": ("-", "only in the original")}[c.status]
            out.append(f"  {mark} {c.name} {what}" + (f" (task {c.task})" if c.task else ""))
        metadata = [c for c in self.comparison.files if c.metadata]
        if metadata:
            out.append(f"  ploomber's metadata files ({len(metadata)}) are not compared: they hold each build's time")
        if self.same:
            out.append(f"✓ all {len(self.identical)} products reproduced identically")
        else:
            named = [t for t in self.tasks if t]
            unnamed = len(self.tasks.get(None, []))
            what = f"non-deterministic tasks: {', '.join(named)}" if named else ""
            if unnamed:
                what += ("; " if what else "") + f"{unnamed} file(s) no task of the pipeline claims"
            n = sum(len(v) for v in self.tasks.values())
            out.append(f"✗ {n} of {n + len(self.identical)} products differ: {what}")
        return out

    def __repr__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        body = "".join(f"<div>{escape(line)}</div>" for line in self.lines())
        return f'<div class="soopervisor-reproduction" style="font-family: monospace">{body}</div>'


# -- running it -------------------------------------------------------------------------------


@dataclass
class Started:
    """A reproduction under way: the original set, its lock and the run."""

    original: Artifacts
    lock: Lock
    active: ActiveRun


def start(commit: str = "latest", *, run: str | None = None, path: str | os.PathLike = ".",
          project: str | None = None, storage: str | None = None, mode: str | None = None,
          image: str | None = None, secrets: Iterable[str] = (), on_line: Callable[[str], None] | None = None,
          executor: str | None = None, **options: Any) -> Started:
    """Check everything, then start the run of the set's commit from its lock (see :func:`reproduce`)."""
    from .artifacts import get_artifacts
    from .project import project_name
    from .service import RunOptions, RunService

    name = project or project_name(path)
    original = get_artifacts(commit, project=name, storage=storage, mode=mode, run=run)
    where = f"run {original.run_id} of {original.commit[:7]}"
    lock = lock_from(original.manifest.get("environment"), where)
    if original.mode not in ("sample", "full"):
        raise UsageError(f"{where} does not say whether it was a sample or a full run: its manifest is damaged",
                         "pass another run with --run ID")
    service = RunService(storage=storage, image=image or original.manifest.get("image"), engine=executor)
    hashes = ", each file's sha256 checked" if lock.hashed else " (no hashes recorded: pip resolved it)"
    said = (f"reproducing {where} ({original.mode}): its environment from the recorded lock, "
            f"{lock.packages} packages{hashes}; every task rebuilt")
    opts = RunOptions(path=path, sample=original.mode == "sample", secrets=tuple(secrets), on_line=on_line,
                      force=True, commit=original.commit, environment_lock=lock.text, notes=(said,), **options)
    return Started(original, lock, service.start(opts))


def finish(started: Started, result: Run, storage: str | None = None) -> Reproduction:
    """The finished run's set against the original's."""
    from .artifacts import get_artifacts
    from .errors import SoopervisorError

    repro = Reproduction(started.original, result, started.lock)
    try:
        repro.reproduced = get_artifacts(result.commit, project=result.project, storage=storage, run=result.id)
    except SoopervisorError:
        return repro  # no set stored (the storage failed): the run's error says why
    repro.environment = environment_changes(started.original.manifest.get("environment"),
                                            repro.reproduced.manifest.get("environment"))
    if result.ok:
        repro.comparison = started.original.compare(repro.reproduced)
    return repro


def reproduce(commit: str = "latest", *, run: str | None = None, path: str | os.PathLike = ".",
              project: str | None = None, storage: str | None = None, mode: str | None = None,
              image: str | None = None, secrets: Iterable[str] = (),
              on_line: Callable[[str], None] | None = None, executor: str | None = None,
              **options: Any) -> Reproduction:
    """Run ``commit``'s set again from its recorded lock and compare the products by sha256.

    The set is the commit's newest succeeded one (full before sample unless
    ``mode``), or ``run="ID"``. The new run checks the commit out in a
    temporary worktree of the repository at ``path``, rebuilds every task, and
    is stored as a new set of that commit, run on the engine named ``executor``
    (default as for :func:`soopervisor.run`). ``options`` are :func:`soopervisor.run`'s
    (``timeout``, ``cpus``, ``memory``, ``network``, ``ca_bundle``, ``entry_point``).
    Raises ``UsageError`` before anything runs when the set has no usable lock.
    """
    started = start(commit, run=run, path=path, project=project, storage=storage, mode=mode, image=image,
                    secrets=secrets, on_line=on_line, executor=executor, **options)
    return finish(started, started.active.result(), storage)

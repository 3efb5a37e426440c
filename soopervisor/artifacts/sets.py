"""Stored sets: list them, group them by commit, resolve what a reference names, prune them.

A commit can hold many sets; :func:`resolve_set` is the one rule every reader
follows (CLI, Python API, REST, sidebar, notebook, GitHub report).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from soopervisor.errors import ArtifactsNotFound, UsageError
from soopervisor.storage import Storage, open_storage
from soopervisor.storage.base import StoredSet

from .manifest import _HEX, MODES, ArtifactFile, _checked, _Damaged

#: the run= value that names a commit's set of the old layout (it has no run id)
OLD_LAYOUT_RUN = "old-layout"


# -- one set's line in a listing --------------------------------------------------------


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


def _where(summary: SetSummary) -> str:
    """A set as messages name it: ``project@commit run id``."""
    run = f" run {summary.run_id}" if summary.run_id else ""
    return f"{summary.project}@{summary.short_commit}{run}"


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

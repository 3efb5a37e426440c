"""Rich displays of soopervisor objects: an HTML table plus a text/plain fallback.

Each view wraps one API object and only formats it; nothing here decides.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from soopervisor.artifacts import CommitSummary
    from soopervisor.errors import SoopervisorError
    from soopervisor.project import Report
    from soopervisor.runs import Run

_e = lambda v: html.escape("" if v is None else str(v), quote=True)
_TABLE = "<table class='soopervisor-table'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
_OK, _BAD, _WARN = "#2e7d32", "#c62828", "#ef6c00"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """``rows`` cells are HTML already (escaped by the caller)."""
    return _TABLE.format(
        head="".join(f"<th style='text-align:left'>{_e(h)}</th>" for h in head),
        rows="".join("<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in r) + "</tr>" for r in rows),
    )


class ReportView:
    """A validation Report shown as a table of problems (problem, where, hint, severity).

    Attribute access falls through to the report: ``view.ok``, ``view.problems``.
    """

    def __init__(self, report: Report) -> None:
        self.report = report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.report, name)

    def __repr__(self) -> str:
        return self.report.format()

    def _repr_html_(self) -> str:
        r = self.report
        head = _e(r.format().splitlines()[0])
        color = _OK if r.ok else _BAD
        out = f"<div class='soopervisor-report'><div style='color:{color};font-weight:bold'>{head}</div>"
        if r.problems:
            rows = [
                [
                    f"<span style='color:{_BAD if p.severity == 'error' else _WARN}'>{_e(p.severity)}</span>",
                    _e(p.what),
                    f"<code>{_e(p.where)}</code>",
                    f"{_e(p.hint)} <a href='{_e(p.docs)}' target='_blank' rel='noopener'>more</a>",
                ]
                for p in r.errors + r.warnings
            ]
            out += _table(["severity", "problem", "where", "hint"], rows)
        return out + "</div>"


class ErrorView:
    """A SoopervisorError as the CLI prints it: the message, then what to do."""

    def __init__(self, error: SoopervisorError, action: str = "") -> None:
        self.error = error
        self.action = action

    def __repr__(self) -> str:
        what = f"{self.action}: " if self.action else ""
        text = f"error: {what}{self.error.message}"
        return text + (f"\nhint: {self.error.hint}" if self.error.hint else "") + f"\nmore: {self.error.docs}"

    def _repr_html_(self) -> str:
        what = f"{_e(self.action)}: " if self.action else ""
        hint = f"<div><b>hint:</b> {_e(self.error.hint)}</div>" if self.error.hint else ""
        more = f"<div><a href='{_e(self.error.docs)}' target='_blank' rel='noopener'>more about this error</a></div>"
        return (f"<div class='soopervisor-error'><div style='color:{_BAD}'><b>error:</b> {what}"
                f"{_e(self.error.message)}</div>{hint}{more}</div>")


class CommitsView:
    """A project's stored commits (one line each: the set it resolves to, and how many sets) and its recent runs."""

    def __init__(self, project: str, commits: list[CommitSummary], runs: list[Run],
                 storage_url: str | None = None) -> None:
        self.project, self.commits, self.runs, self.storage_url = project, commits, runs, storage_url

    def _commit_rows(self) -> list[tuple[str, ...]]:
        from soopervisor.artifacts import format_size

        rows = []
        for c in self.commits:
            s = c.shown
            status = f"damaged: {s.damaged}" if s.damaged else (s.status or "?")
            if not c.resolved and not s.damaged:
                status += " (no succeeded set)"
            rows.append((
                s.short_commit + ("+" if s.dirty else ""),
                s.run_id or "(old layout)",
                s.mode or "?",
                status,
                (s.finished_at or "")[:19].replace("T", " "),
                str(s.files),
                format_size(s.size),
                str(len(c.sets)),
            ))
        return rows

    def _run_rows(self) -> list[tuple[str, ...]]:
        return [
            (r.id, r.short_commit, r.mode, r.status, (r.started_at or "")[:19].replace("T", " "),
             f"{r.duration:.0f}s" if r.duration is not None else "-")
            for r in self.runs
        ]

    def __repr__(self) -> str:
        lines = [f"project '{self.project}': {len(self.commits)} stored commit(s)"]
        if not self.commits:
            lines.append("  no artifacts stored yet; %soopervisor run makes some")
        for row in self._commit_rows():
            lines.append("  " + "  ".join(row))
        if self.runs:
            lines.append(f"recent runs ({len(self.runs)}):")
            lines += ["  " + "  ".join(row) for row in self._run_rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        out = f"<div class='soopervisor-commits'><div><b>{_e(self.project)}</b>: stored commits</div>"
        if self.commits:
            rows = [[f"<code>{_e(r[0])}</code>", f"<code>{_e(r[1])}</code>", *map(_e, r[2:])]
                    for r in self._commit_rows()]
            out += _table(["commit", "run", "mode", "status", "finished (UTC)", "files", "size", "sets"], rows)
            out += ("<div style='font-size:smaller'><code>soopervisor.get_artifacts(\"&lt;commit&gt;\")</code> "
                    "or <code>%soopervisor artifacts &lt;commit&gt;</code> shows one commit's files "
                    "(its newest succeeded set); <code>run=\"ID\"</code> / <code>--run ID</code> another set</div>")
        else:
            out += "<div>no artifacts stored yet; <code>%soopervisor run</code> makes some</div>"
        if self.runs:
            out += "<div style='margin-top:8px'><b>recent runs</b></div>"
            rows = [[f"<code>{_e(r[0])}</code>", f"<code>{_e(r[1])}</code>", *map(_e, r[2:])] for r in self._run_rows()]
            out += _table(["run", "commit", "mode", "status", "started (UTC)", "took"], rows)
        return out + "</div>"

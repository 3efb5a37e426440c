"""The Markdown a run reports to GitHub: the job summary and the pull-request comment.

One renderer for both, so the summary and the comment never disagree. Every
text passes through the credentials redactor last: the log tail is already
redacted by the run, but an error message could quote anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..artifacts import format_size, printable
from ..redact import CREDENTIALS

MARKER = "<!-- soopervisor-report -->"
MAX_FILES = 50
TAIL_LINES = 30

_ICON = {"succeeded": "✅", "failed": "❌", "cancelled": "⏹️", "interrupted": "⏹️",
         "running": "⏳", "invalid": "⚠️", "error": "❌"}


@dataclass
class Report:
    """What one run of the Action has to say. Fields not known yet stay None."""

    status: str                                  # running|succeeded|failed|cancelled|invalid|error
    mode: str
    commit: str | None = None
    project: str | None = None
    duration: float | None = None
    location: str | None = None                  # <storage>/<project>/<commit>/<run_id>: this run's set
    run_id: str | None = None                    # the run whose set this reports (its download names it)
    storage: str | None = None                   # the storage URL, for the download command
    local_storage: bool = False                  # on the runner's disk: gone with the runner
    files: list[tuple[str, int]] = field(default_factory=list)
    failed_task: str | None = None
    error: str | None = None
    hint: str | None = None
    docs: str | None = None                      # the troubleshooting entry of the error
    log_tail: list[str] = field(default_factory=list)
    validation: str | None = None                # the formatted validation report
    trigger: str | None = None                   # "@alice in a comment" / "push to refs/heads/main"
    workflow_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def title(self) -> str:
        what = {"running": "is running", "invalid": "did not start: the project is invalid",
                "error": "could not run"}.get(self.status, self.status)
        return f"{_ICON.get(self.status, '•')} soopervisor {self.mode} run {what}"

    def markdown(self, marker: bool = False) -> str:
        out = [MARKER, ""] if marker else []
        out += [f"### {self.title()}", ""]
        rows = [("commit", f"`{self.commit[:12]}`" if self.commit else None),
                ("project", f"`{self.project}`" if self.project else None),
                ("mode", self.mode),
                ("duration", _duration(self.duration) if self.duration is not None else None),
                ("triggered by", self.trigger),
                ("workflow run", f"[logs]({self.workflow_url})" if self.workflow_url else None)]
        out += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows if v]
        out.append("")
        out += [f"> {note}" for note in self.notes] + ([""] if self.notes else [])
        if self.validation:
            out += ["**Validation report**", "", _fence(self.validation), ""]
        if self.error:
            from ..logstream import LOAD_FAILED

            # a pipeline that failed to load has no task: its error says so
            named = self.failed_task and not self.failed_task.startswith(LOAD_FAILED)
            task = f" in task `{self.failed_task}`" if named else ""
            out += [f"**Error{task}:** {_one_line(self.error)}", ""]
            if self.hint:
                out += [f"**Hint:** {_one_line(self.hint)}", ""]
            if self.docs:
                out += [f"[More about this error]({self.docs})", ""]
        if self.log_tail:
            tail = self.log_tail[-TAIL_LINES:]
            opened = " open" if self.status != "succeeded" else ""
            out += [f"<details{opened}><summary>last {len(tail)} lines of the log</summary>", "",
                    _fence("\n".join(tail)), "", "</details>", ""]
        if self.files:
            out += self._artifacts()
        return CREDENTIALS.redact("\n".join(out).rstrip() + "\n")

    def _artifacts(self) -> list[str]:
        total = sum(size for _, size in self.files)
        out = [f"**Artifacts** — {len(self.files)} files, {format_size(total)}, in `{self.location}`", "",
               "| file | size |", "|---|---:|"]
        out += [f"| {_name_cell(name)} | {format_size(size)} |" for name, size in self.files[:MAX_FILES]]
        if len(self.files) > MAX_FILES:
            out.append(f"| … and {len(self.files) - MAX_FILES} more | |")
        out.append("")
        if self.local_storage:
            out += [("The artifacts were stored on the runner's disk and are gone with it: "
                     "set the Action's `storage:` input to keep them."), ""]
        elif self.commit and self.project:
            # --run: this run's set, even when a newer (or a full) set of the commit exists or this one failed
            run = f" --run {self.run_id}" if self.run_id else ""
            storage = f" --storage {self.storage}" if self.storage else ""
            out += ["Download them:", "",
                    _fence(f"soopervisor artifacts download {self.commit[:12]}{run} --project {self.project}{storage}",
                           "sh"), ""]
        return out


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _fence(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any run of backticks inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _name_cell(name: str) -> str:
    """A product name as a code span in a table cell: a name is data, it never ends the cell or the span."""
    text = printable(name).replace("\r", "␍").replace("\n", "␤").replace("|", "\\|")
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _one_line(text: str) -> str:
    return " ".join(text.split())

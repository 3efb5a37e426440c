"""What inspection reports: the project's facts and the problems found, each with its fix."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..troubleshooting import PROBLEM_CODES, topic_url
from .paths import _shown_dir

ERROR = "error"
WARNING = "warning"

DOCS_SPEC = "https://docs.ploomber.io/en/latest/api/spec.html"
DOCS_ENV = "https://docs.ploomber.io/en/latest/user-guide/parametrized.html"

#: most uncommitted paths named in the warning; the rest are counted
_MAX_LISTED = 5


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the project, and how to fix it."""

    what: str
    where: str
    hint: str
    severity: str  # "error" | "warning"
    code: str  # stable id, e.g. "no-pipeline": one of PROBLEM_CODES

    def __post_init__(self) -> None:
        if self.code not in PROBLEM_CODES:  # a new code needs its troubleshooting entry
            raise ValueError(f"unknown problem code {self.code!r}: add it to PROBLEM_CODES and the docs")

    @property
    def docs(self) -> str:
        """The troubleshooting entry for this problem."""
        return topic_url(self.code)

    def to_dict(self) -> dict:
        return {**asdict(self), "docs": self.docs}


@dataclass
class Project:
    """What inspection found; the script generator renders from this only."""

    path: Path
    repo_root: Path
    subdir: str
    name: str
    commit: str | None = None
    dirty: bool = False
    #: uncommitted paths under the project folder, relative to it (posix)
    changed: list[str] = field(default_factory=list)
    #: the environment spec, relative to the project folder (``../requirements.txt`` when it is above)
    env_file: str | None = None
    #: what ``ploomber build --entry-point`` is given (relative to the project folder), and its kind:
    #: "spec" (a YAML spec), "pattern" (scripts/notebooks matching a glob), "directory",
    #: "dotted-path" (a function that returns the DAG) or "module-path" (``package::pipeline.yaml``)
    entry_point: str = "pipeline.yaml"
    entry_kind: str = "spec"
    #: the name earlier versions derived from the clone's folder, when it differs from ``name``
    legacy_name: str | None = None
    installable: bool = False
    declares_sample: bool = False
    pip_requirements: list[str] = field(default_factory=list)
    conda_only: list[str] = field(default_factory=list)
    #: environment.yml's python entry when it pins a version ("python=3.8"), for the image check
    python_pin: str | None = None
    collect_paths: list[str] = field(default_factory=lambda: ["output"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["repo_root"] = str(self.repo_root)
        return d


@dataclass
class Report:
    project: Project | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "project": self.project.to_dict() if self.project else None,
            "problems": [p.to_dict() for p in self.errors + self.warnings],
        }

    def format(self) -> str:
        p = self.project
        if self.ok and p is not None:
            at = p.commit[:7] if p.commit else "(no commit)"
            head = f"✓ project '{p.name}' is valid at {at}"
            if self.warnings:
                n = len(self.warnings)
                head += f" ({n} warning{'s' if n != 1 else ''})"
        else:
            n_err, n_warn = len(self.errors), len(self.warnings)
            where = _shown_dir(p.path) if p is not None else (self.problems[0].where if self.problems else "?")
            total = n_err + n_warn
            head = f"✗ {total} problem{'s' if total != 1 else ''} in {where}"
            if n_warn:
                head += f" ({n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''})"
        lines = [head]
        if p is not None:  # paths below are relative to the project folder
            if p.entry_point:
                kind = "" if p.entry_kind == "spec" else f" ({p.entry_kind.replace('-', ' ')})"
                lines.append(f"  entry point: {p.entry_point}{kind}")
            if p.env_file:
                lines.append(f"  environment: {p.env_file}")
        for prob in self.errors + self.warnings:
            lines.append(f"{prob.severity}: {prob.what}")
            lines.append(f"  where: {prob.where}")
            lines.append(f"  hint: {prob.hint}")
            lines.append(f"  more: {prob.docs}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

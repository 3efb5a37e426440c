"""Inspect and validate a ploomber project before anything runs.

``inspect(path)`` reads the repository holding ``path`` (two git calls, run at
the same time) and the project's files, and returns a :class:`Report` with the
:class:`Project` facts the script generator needs and *every* problem found, each
with where it is and how to fix it. Nothing here imports docker, ploomber, click
or jinja2: validation must stay fast enough to run on every keystroke-sized
action in a notebook.
"""
from __future__ import annotations

import os
import posixpath
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

try:  # the C loader is several times faster; fall back when libyaml is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

__all__ = ["Problem", "Project", "Report", "inspect"]

ERROR = "error"
WARNING = "warning"

DOCS_SPEC = "https://docs.ploomber.io/en/latest/api/spec.html"
DOCS_ENV = "https://docs.ploomber.io/en/latest/user-guide/parametrized.html"

#: most uncommitted paths named in the warning; the rest are counted
_MAX_LISTED = 5
#: the largest YAML file validation reads (pipeline.yaml, env.yaml, environment.yml).
#: Real ones are a few KB (a pipeline of 300 tasks is ~40 KB). Parsing costs
#: ~0.7 s and ~70 MB a MiB with libyaml, so 1 MiB keeps validation under a
#: second; at 10 MiB it would take ~12 s and ~600 MB (a 50 MB file took 104 s, 2.4 GB).
MAX_SPEC_BYTES = 1024**2
#: requirements.txt is read line by line (no parse cost): room for a hashed lock file
MAX_REQUIREMENTS_BYTES = 4 * 1024**2
#: real specs nest ~5 levels; building a document thousands of levels deep crashes PyYAML's C loader
MAX_YAML_DEPTH = 100
#: what ploomber allows as the source of a task when it is a file
_SOURCE_SUFFIXES = {".py", ".ipynb", ".sql", ".r", ".rmd", ".sh", ".md", ".jl"}
_HERE = re.compile(r"\{\{\s*(here|root|cwd)\s*\}\}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the project, and how to fix it."""

    what: str
    where: str
    hint: str
    severity: str  # "error" | "warning"
    code: str  # stable id, e.g. "no-pipeline"


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
    env_file: str | None = None
    installable: bool = False
    declares_sample: bool = False
    pip_requirements: list[str] = field(default_factory=list)
    conda_only: list[str] = field(default_factory=list)
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
            "problems": [asdict(p) for p in self.errors + self.warnings],
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
            where = p.path if p is not None else (self.problems[0].where if self.problems else "?")
            total = n_err + n_warn
            head = f"✗ {total} problem{'s' if total != 1 else ''} in {where}"
            if n_warn:
                head += f" ({n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''})"
        lines = [head]
        for prob in self.errors + self.warnings:
            lines.append(f"{prob.severity}: {prob.what}")
            lines.append(f"  where: {prob.where}")
            lines.append(f"  hint: {prob.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


# --------------------------------------------------------------------------- git


class _GitFacts:  # a plain class: each dataclass costs import time
    def __init__(self, error: str | None = None) -> None:
        self.root: Path | None = None
        self.subdir = ""
        self.commit: str | None = None
        #: (status XY, path relative to the repository root) for changes under the folder
        self.changes: list[tuple[str, str]] = []
        self.error = error  # git failed for another reason than "not a repository"
        self.not_a_repo = False


def _git_facts(folder: Path) -> _GitFacts:
    """Two git calls, started together: rev-parse (top, prefix, HEAD) and status."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    cmds = [
        ["git", "rev-parse", "--show-toplevel", "--show-prefix", "--verify", "-q", "HEAD^{commit}"],
        ["git", "status", "--porcelain", "-z", "--untracked-files=normal", "--", "."],
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
    (rp_out, rp_err), (st_out, st_err) = (p.communicate() for p in procs)
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


def _not_in_head(xy: str) -> bool:
    """The path does not exist in HEAD: untracked, or only staged as new."""
    return xy == "??" or "A" in xy or xy[0] in "RC"


# ------------------------------------------------------------------------ files


def _rel(folder: Path, p: Path) -> str:
    try:
        return p.relative_to(folder).as_posix()
    except ValueError:
        return str(p)


def _read_limited(file: Path, name: str, limit: int, code: str, hint: str, problems: list[Problem]) -> bytes | None:
    """``file``'s bytes, or None with a problem when it cannot be read or is larger than ``limit``.

    The size is checked before reading and the read stops at ``limit + 1``
    bytes, so a huge (or growing) file costs neither time nor memory.
    """
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    except OSError as e:
        problems.append(Problem(f"{name} cannot be read: {e.strerror or e}", name, hint, ERROR, code))
        return None
    if size > limit or len(data) > limit:
        shown = f"{size / 1024**2:.1f} MiB" if size > limit else f"more than {_mib(limit)}"  # it grew
        problems.append(Problem(
            f"{name} is too large to validate ({shown}; at most {_mib(limit)})", name,
            f"a {name} is a few KB: keep data out of it (tasks read data from files or databases)",
            ERROR, "file-too-large",
        ))
        return None
    return data


def _mib(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


def _yaml_depth_problem(data: bytes, name: str, code: str) -> Problem | None:
    """A problem when the YAML nests deeper than MAX_YAML_DEPTH, found from parser events.

    libyaml's parser is iterative and cheap (~0.1 s a MiB); building the
    document is recursive, and a few KB of ``[[[[…`` crash the process (a
    segmentation fault, not an exception) before any Python check could run.
    """
    loader = _Loader(data)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, _OPENING):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    return Problem(
                        f"{name} nests deeper than {MAX_YAML_DEPTH} levels", name,
                        f"a {name} nests a few levels (tasks, a task's keys, its product); flatten it",
                        ERROR, code,
                    )
            elif isinstance(event, _CLOSING):
                depth -= 1
    except yaml.YAMLError:
        return None  # the load reports the syntax error, with its line
    finally:
        loader.dispose()
    return None


_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _read_yaml(file: Path, name: str, code: str, hint: str, problems: list[Problem]):
    """Parse ``file``; on failure add a problem naming the line and return ``_BAD``."""
    data = _read_limited(file, name, MAX_SPEC_BYTES, code, hint, problems)
    if data is None:
        return _BAD
    deep = _yaml_depth_problem(data, name, code)
    if deep is not None:
        problems.append(deep)
        return _BAD
    try:
        return yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
            what = f"{name} does not parse: {reason} (line {line}, column {col})"
            where = f"{name}:{line}"
        else:
            what, where = f"{name} does not parse: {reason}", name
        problems.append(Problem(what, where, hint, ERROR, code))
        return _BAD


_BAD = object()


def _dep_name(dep: str) -> str:
    """``conda-forge::python>=3.10`` -> ``python``."""
    dep = dep.split("::", 1)[-1].strip()
    return re.split(r"[\s=<>!~\[]", dep, maxsplit=1)[0].lower()


def _lookup(env: dict, dotted: str) -> str | None:
    cur: Any = env
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, (str, int, float)) and not isinstance(cur, bool):
        s = str(cur)
        return None if "{{" in s else s
    return None


def _collect_path(product: str, folder: str, env: dict) -> str | None:
    """The top-level entry (folder or file) of the project that holds ``product``."""
    s = _HERE.sub(lambda m: folder, product.strip())
    s = _PLACEHOLDER.sub(lambda m: _lookup(env, m.group(1)) or m.group(0), s)
    cut = s.find("{{")
    if cut >= 0:  # only the folder part before an unknown placeholder is known
        s = s[:cut]
        slash = s.rfind("/")
        if slash <= 0:
            return None
        s = s[:slash]
    if s.startswith("~"):
        return None
    if posixpath.isabs(s):
        if not s.startswith(folder.rstrip("/") + "/"):
            return None
        s = s[len(folder.rstrip("/")) + 1 :]
    parts = [p for p in s.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts[0]


def _products(product: Any) -> list[str]:
    if isinstance(product, str):
        return [product]
    if isinstance(product, dict):
        return [v for v in product.values() if isinstance(v, str)]
    return []  # SQL products ([schema, name, kind]) are not files


def _looks_like_file(source: str) -> bool:
    if "{{" in source or any(c in source for c in "*?[") or "://" in source:
        return False
    return posixpath.splitext(source)[1].lower() in _SOURCE_SUFFIXES


# ---------------------------------------------------------------------- inspect


def inspect(path: str | os.PathLike = ".") -> Report:
    """Inspect the project at ``path``; every problem found comes in one report."""
    given = os.fspath(path)
    folder = Path(given).expanduser()
    if not folder.exists():
        return Report(None, [Problem(
            f"{given} does not exist", given,
            "pass the folder that holds pipeline.yaml", ERROR, "path-missing",
        )])
    if not folder.is_dir():
        return Report(None, [Problem(
            f"{given} is not a folder", given,
            "pass the folder that holds pipeline.yaml, not a file in it", ERROR, "not-a-folder",
        )])
    folder = folder.resolve()
    problems: list[Problem] = []
    where_folder = str(folder)

    # -- git --------------------------------------------------------------
    git = _git_facts(folder)
    if git.not_a_repo:
        problems.append(Problem(
            f"{folder} is not inside a git repository", where_folder,
            "soopervisor runs a commit: git init && git add -A && git commit -m 'first commit'",
            ERROR, "not-a-repo",
        ))
    elif git.error:
        hint = "fix the git error above"
        if "dubious ownership" in git.error or "safe.directory" in git.error:
            hint = f"git config --global --add safe.directory {git.root or folder}"
        elif git.error == "git is not installed":
            hint = "install git (e.g. apt-get install git) and make sure it is on PATH"
        problems.append(Problem(f"git failed: {git.error}", where_folder, hint, ERROR, "git-error"))
    elif git.commit is None:
        problems.append(Problem(
            "the repository has no commit yet", str(git.root),
            "commit the project first: git add -A && git commit -m 'first commit'",
            ERROR, "no-commit",
        ))

    repo_root = git.root.resolve() if git.root else folder
    subdir = git.subdir if git.root else ""
    name = repo_root.name + (f"-{subdir.replace('/', '-')}" if subdir else "")
    name = _NAME_UNSAFE.sub("-", name) or "project"
    prefix = f"{subdir}/" if subdir else ""
    changed = []
    new_paths: list[str] = []  # project-relative paths that are not in HEAD
    for xy, p in git.changes:
        if p.startswith(prefix):
            rel = p[len(prefix):] or "./"
        elif p.endswith("/") and prefix.startswith(p):
            rel = "./"  # the whole project folder is untracked
        else:
            continue
        changed.append(rel)
        if _not_in_head(xy):
            new_paths.append(rel)

    project = Project(
        path=folder, repo_root=repo_root, subdir=subdir, name=name,
        commit=git.commit, dirty=bool(changed), changed=changed,
    )

    def not_committed(rel: str) -> bool:
        for n in new_paths:
            if n == rel or n == "./" or (n.endswith("/") and rel.startswith(n)):
                return True
        return False

    key_files: list[str] = []  # files the run needs, checked against HEAD below

    # env.yaml first: its values fill placeholders in products
    env = _inspect_env_yaml(folder, project, problems, key_files)

    # -- pipeline.yaml ----------------------------------------------------
    pipeline = folder / "pipeline.yaml"
    collect = {"output"}
    if not pipeline.is_file():
        hint = f"create pipeline.yaml with a 'tasks:' list; see {DOCS_SPEC}"
        if (folder / "pipeline.yml").is_file():
            hint = "rename pipeline.yml to pipeline.yaml (the name ploomber builds by default)"
        else:  # run from a folder inside the project?
            for parent in folder.parents:
                if git.root is None or not parent.is_relative_to(repo_root):
                    break
                if (parent / "pipeline.yaml").is_file():
                    hint = f"the project seems to be {parent}: run soopervisor there"
                    break
        problems.append(Problem(
            "there is no pipeline.yaml in the project folder", "pipeline.yaml", hint,
            ERROR, "no-pipeline",
        ))
    else:
        key_files.append("pipeline.yaml")
        data = _read_yaml(
            pipeline, "pipeline.yaml", "pipeline-unparsable",
            f"fix the YAML syntax at that line of pipeline.yaml (indentation, a missing space after ':'); see {DOCS_SPEC}",
            problems,
        )
        if data is not _BAD:
            _check_pipeline(data, folder, env, problems, collect, key_files)
    project.collect_paths = sorted(collect)

    _inspect_env_spec(folder, project, problems, key_files)

    for n in ("setup.py", "pyproject.toml"):
        if (folder / n).is_file():
            project.installable = True
            key_files.append(n)

    # -- committed? ----------------------------------------------------------
    if git.commit is not None:
        for rel in key_files:
            if not_committed(rel):
                problems.append(Problem(
                    f"{rel} is not committed: the run uses the commit, where it does not exist",
                    rel, f"git add {_shell_word(rel)} && git commit -m 'add {rel}'",
                    ERROR, "not-committed",
                ))
        if changed:
            listed = ", ".join(
                "./ (the whole folder is untracked)" if c == "./" else c
                for c in changed[:_MAX_LISTED]
            )
            more = len(changed) - _MAX_LISTED
            if more > 0:
                listed += f" and {more} more"
            n = len(changed)
            problems.append(Problem(
                f"{n} uncommitted change{'s' if n != 1 else ''} will not be part of the run: {listed}",
                where_folder,
                "commit them (git add -A && git commit) to run them, and list generated folders "
                f"such as output/ in .gitignore; the run uses commit {git.commit[:7]}",
                WARNING, "uncommitted-changes",
            ))
    return Report(project, problems)


def _inspect_env_yaml(folder: Path, project: Project, problems: list[Problem], key_files: list[str]) -> dict:
    """env.yaml's values (for product placeholders); sets ``project.declares_sample``."""
    env: dict = {}
    env_yaml = folder / "env.yaml"
    if env_yaml.is_file():
        key_files.append("env.yaml")
        data = _read_yaml(
            env_yaml, "env.yaml", "env-yaml-unparsable",
            f"fix the YAML syntax of env.yaml; it must be a mapping such as 'sample: false' ({DOCS_ENV})",
            problems,
        )
        if data is _BAD:
            return env
        data = {} if data is None else data
        if not isinstance(data, dict):
            problems.append(Problem(
                f"env.yaml must be a mapping of names to values, not a {type(data).__name__}",
                "env.yaml", "write env.yaml as 'key: value' lines, e.g. 'sample: false'",
                ERROR, "env-yaml-invalid",
            ))
            return env
        env = data
        project.declares_sample = "sample" in data
    if not project.declares_sample:
        what = (
            "env.yaml has no 'sample' key: sample runs cannot be told apart from full runs"
            if env_yaml.is_file()
            else "there is no env.yaml: the sample flag cannot be passed to the pipeline"
        )
        problems.append(Problem(
            what, "env.yaml",
            "add 'sample: false' to env.yaml and use {{sample}} in the pipeline "
            f"(e.g. to read fewer rows); see {DOCS_ENV}",
            WARNING, "no-sample-key",
        ))
    return env


def _inspect_env_spec(folder: Path, project: Project, problems: list[Problem], key_files: list[str]) -> None:
    """environment.yml, else requirements.txt: sets env_file, pip_requirements, conda_only."""
    env_spec = next(
        (n for n in ("environment.yml", "environment.yaml") if (folder / n).is_file()), None
    )
    if env_spec is not None:
        project.env_file = env_spec
        key_files.append(env_spec)
        data = _read_yaml(
            folder / env_spec, env_spec, "env-spec-unparsable",
            f"fix the YAML syntax of {env_spec} (conda environment file: 'dependencies:' list)",
            problems,
        )
        if data is _BAD:
            return
        deps = data.get("dependencies") if isinstance(data, dict) else None
        if not isinstance(deps, list):
            problems.append(Problem(
                f"{env_spec} has no 'dependencies' list", env_spec,
                f"add a 'dependencies:' list to {env_spec}, e.g. '- python=3.11', '- pip', "
                "'- pip: [pandas]'",
                ERROR, "env-spec-no-dependencies",
            ))
            return
        for dep in deps:
            if isinstance(dep, dict) and "pip" in dep:
                pip = dep["pip"] or []
                if isinstance(pip, list):
                    # scalars only: str() of a list built from YAML aliases can be exponentially long
                    project.pip_requirements += [str(r) for r in pip if isinstance(r, (str, int, float))]
            elif isinstance(dep, (str, int, float)):
                dep = str(dep)
                if _dep_name(dep) not in ("python", "pip"):
                    project.conda_only.append(dep)
    elif (folder / "requirements.txt").is_file():
        project.env_file = "requirements.txt"
        key_files.append("requirements.txt")
        hint = "save requirements.txt as UTF-8 text, one requirement a line"
        data = _read_limited(folder / "requirements.txt", "requirements.txt", MAX_REQUIREMENTS_BYTES,
                             "env-spec-unparsable", hint, problems)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(
                f"requirements.txt cannot be read: {e}", "requirements.txt", hint, ERROR,
                "env-spec-unparsable",
            ))
            return
        for line in text.splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                project.pip_requirements.append(s)
    else:
        problems.append(Problem(
            "there is no environment spec (environment.yml or requirements.txt)", str(folder),
            "add requirements.txt listing the packages the pipeline imports (one a line), "
            "or a conda environment.yml",
            ERROR, "no-env-spec",
        ))


def _shell_word(s: str) -> str:
    return s if re.fullmatch(r"[\w./-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def _check_pipeline(data: Any, folder: Path, env: dict, problems: list[Problem],
                    collect: set[str], key_files: list[str]) -> None:
    meta: dict = {}
    if isinstance(data, list):  # ploomber accepts a bare list of tasks
        tasks: Any = data
    elif isinstance(data, dict):
        tasks = data.get("tasks")
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    elif data is None:
        tasks = None
    else:
        problems.append(Problem(
            f"pipeline.yaml must be a mapping with a 'tasks:' list, not a {type(data).__name__}",
            "pipeline.yaml", f"start pipeline.yaml with 'tasks:' and list the tasks under it; see {DOCS_SPEC}",
            ERROR, "pipeline-invalid",
        ))
        return
    if tasks is not None and not isinstance(tasks, list):
        problems.append(Problem(
            f"'tasks' in pipeline.yaml must be a list, not a {type(tasks).__name__}",
            "pipeline.yaml", "write each task as a list item: '- source: tasks/load.py' with its 'product:'",
            ERROR, "pipeline-invalid",
        ))
        return
    if not tasks:
        if meta.get("import_tasks_from"):
            return
        what = "pipeline.yaml is empty" if data is None else "pipeline.yaml declares no tasks"
        problems.append(Problem(
            what, "pipeline.yaml",
            "add a 'tasks:' list to pipeline.yaml, e.g. '- source: tasks/load.py' with "
            f"'product: output/load.ipynb'; see {DOCS_SPEC}",
            ERROR, "no-tasks",
        ))
        return
    relative_to_source = bool(meta.get("product_relative_to_source"))
    fstr = str(folder)
    for i, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            problems.append(Problem(
                f"task {i} in pipeline.yaml is a {type(task).__name__}, not a mapping",
                "pipeline.yaml", "write the task as '- source: ...' with 'product: ...' under it",
                ERROR, "pipeline-invalid",
            ))
            continue
        source = task.get("source")
        if not source:
            problems.append(Problem(
                f"task {i} in pipeline.yaml has no 'source'", "pipeline.yaml",
                "add 'source: path/to/script.py' (or a dotted function name) to the task",
                ERROR, "task-no-source",
            ))
        elif isinstance(source, str) and _looks_like_file(source) and not meta.get("source_loader"):
            src = posixpath.normpath(source)
            if not src.startswith("../") and not posixpath.isabs(src):
                if not (folder / src).exists():
                    problems.append(Problem(
                        f"the source of task {i} does not exist: {source}", "pipeline.yaml",
                        f"create {source} or fix the path (it is relative to the project folder)",
                        ERROR, "source-missing",
                    ))
                else:
                    key_files.append(src)
        base = ""
        if relative_to_source and isinstance(source, str) and _looks_like_file(source):
            base = posixpath.dirname(posixpath.normpath(source))
        for product in _products(task.get("product")):
            if base and not posixpath.isabs(product) and "{{" not in product[:2]:
                product = posixpath.join(base, product)
            top = _collect_path(product, fstr, env)
            if top is not None:
                collect.add(top)


def project_name(path: str | os.PathLike = ".") -> str:
    """The storage name of the project at ``path``, for commands given no ``--project``."""
    from .errors import UsageError

    report = inspect(path)
    if report.project is None or {"not-a-repo", "git-error", "path-missing"} & set(report.codes()):
        raise UsageError(
            f"no project at {os.path.abspath(path)}: the folder is not in a git repository",
            "run it from a project folder, or pass --project NAME",
        )
    return report.project.name


def enclosing_project(path: str | os.PathLike, within: str | os.PathLike) -> Path:
    """The nearest folder from ``path`` up to ``within`` that holds a pipeline.yaml; else ``path``.

    A file browser sitting in ``proj/tasks`` means the project ``proj``.
    """
    path, within = Path(path).resolve(), Path(within).resolve()
    for folder in (path, *path.parents):
        if (folder / "pipeline.yaml").is_file():
            return folder
        if folder == within or within not in folder.parents:
            break
    return path

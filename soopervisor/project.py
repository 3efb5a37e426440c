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


# ------------------------------------------------------------------- the name


def _repo_name_from_url(url: str) -> str:
    """``git@github.com:acme/sales.git``, ``https://host/acme/sales``, ``/srv/sales.git`` -> ``sales``."""
    s = url.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if s.endswith(".git"):
        s = s[:-4].rstrip("/")
    last = re.split(r"[/:\\]", s)[-1]
    return "" if last in ("", ".", "..") else last


def _name_override(repo_root: Path) -> tuple[str | None, str]:
    """The repository's name when set: SOOPERVISOR_PROJECT, else ``[tool.soopervisor] project``
    in the repository's pyproject.toml; and where it came from."""
    env = os.environ.get("SOOPERVISOR_PROJECT", "").strip()
    if env:
        return env, "SOOPERVISOR_PROJECT"
    pyproject = repo_root / "pyproject.toml"
    try:
        with open(pyproject, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
    except OSError:
        return None, ""
    if b"soopervisor" not in data or len(data) > MAX_SPEC_BYTES:
        return None, ""  # most pyproject.toml files: no parse at all
    import tomllib

    try:
        name = tomllib.loads(data.decode("utf-8")).get("tool", {}).get("soopervisor", {}).get("project")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError):
        return None, ""
    return (name.strip() or None, "pyproject.toml") if isinstance(name, str) else (None, "")


def _project_names(repo_root: Path, subdir: str, origin: str | None) -> tuple[str, str]:
    """``(name, legacy)``: the name the project is stored under, and the one earlier versions used.

    The repository part is ``SOOPERVISOR_PROJECT`` or ``[tool.soopervisor] project`` in the
    repository's pyproject.toml when set, else the ``origin`` remote's repository name, else
    the repository folder's name: the same wherever the repository is cloned. A sub-folder
    project adds its path (``sales-pipelines-churn``).
    """
    tail = f"-{subdir.replace('/', '-')}" if subdir else ""
    override, _ = _name_override(repo_root)
    base = override or (_repo_name_from_url(origin) if origin else "") or repo_root.name
    name = _NAME_UNSAFE.sub("-", base + tail) or "project"
    legacy = _NAME_UNSAFE.sub("-", repo_root.name + tail) or "project"
    return name, legacy


# -------------------------------------------------------------- entry points

#: file suffixes ploomber makes a task of, in a file-pattern or directory entry point
_TASK_SUFFIXES = {".py", ".R", ".Rmd", ".r", ".ipynb", ".sql", ".sh"}
_SPEC_SUFFIXES = {".yaml", ".yml"}
#: folders never searched for pipelines below a folder
_SKIP_DIRS = {"node_modules", "venv", "env", "site-packages", "__pycache__", "build", "dist"}
_BELOW_DEPTH = 3
_MAX_PATTERN_FILES = 200


class _Entry:  # a plain class: each dataclass costs import time
    def __init__(self, value: str, kind: str, spec: Path | None = None) -> None:
        self.value = value  # passed to ploomber build --entry-point
        self.kind = kind
        self.spec = spec  # the YAML spec file, for spec and module-path entry points


def _entry_kind(value: str, folder: Path) -> str | None:
    """ploomber's order (ploomber.entrypoint.try_to_find_entry_point_type), relative to the project."""
    if "*" in value:
        return "pattern"
    if "::" in value:
        return "module-path"
    p = folder / value
    if p.exists():
        return "directory" if p.is_dir() else "file"
    if "." in value and posixpath.splitext(value)[1] not in _SPEC_SUFFIXES:
        return "dotted-path"
    return None


def _spec_named(folder: Path, filename: str) -> Path | None:
    """``filename`` in the project folder, or ``src/*/filename`` in a package (ploomber's
    ``entry_point_with_name``: with a setup.py the package's spec comes first)."""
    if (folder / "setup.py").is_file():
        src = folder / "src"
        if src.is_dir():
            found = sorted(
                d / filename for d in src.iterdir()
                if not d.name.endswith(".egg-info") and (d / filename).is_file()
            )
            if found:
                return found[0]
    p = folder / filename
    return p if p.is_file() else None


def _setup_cfg_entry(folder: Path, top: Path) -> tuple[Path | None, str | None]:
    """``[ploomber] entry-point`` of the nearest setup.cfg from ``folder`` up to ``top``: (file, value)."""
    for d in (folder, *folder.parents):
        cfg = d / "setup.cfg"
        if cfg.is_file():
            import configparser

            parser = configparser.ConfigParser()
            try:
                parser.read(cfg, encoding="utf-8")
                value = parser.get("ploomber", "entry-point", fallback=None)
            except (configparser.Error, UnicodeDecodeError, OSError):
                return cfg, None
            return cfg, (value.strip() or None) if value else None
        if d == top or top not in d.parents:
            break
    return None, None


def _posix_rel(folder: Path, p: Path) -> str:
    """``p`` relative to ``folder``, with ``..`` when it is above (posix)."""
    return Path(os.path.relpath(p, folder)).as_posix()


def _module_file(folder: Path, module: str) -> Path | None:
    """Where ``package.module`` is among the project's files: the project folder (ploomber
    puts it on sys.path), then ``src/`` (a package the install stage installs)."""
    parts = module.split(".")
    if not all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts):
        return None
    for base in (folder, folder / "src"):
        target = base.joinpath(*parts)
        for candidate in (target.with_suffix(".py"), target / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


def _package_dir(folder: Path, package: str) -> Path | None:
    parts = package.split(".")
    for base in (folder, folder / "src"):
        d = base.joinpath(*parts)
        if (d / "__init__.py").is_file() or d.is_dir():
            return d
    return None


def _resolve_entry(folder: Path, top: Path, given: str | None, problems: list[Problem]) -> _Entry | None:
    """The entry point, found as ploomber finds it: ``given`` (``--entry-point``), else the
    ``ENTRY_POINT`` variable, else ``[ploomber] entry-point`` in setup.cfg, else pipeline.yaml
    (``src/*/pipeline.yaml`` in a package). None, with a problem, when there is none."""
    source = "--entry-point"
    if not given and os.environ.get("ENTRY_POINT"):
        given, source = os.environ["ENTRY_POINT"].strip(), "ENTRY_POINT"
        if _entry_kind(given, folder) is None and len(Path(given).parts) == 1:
            spec = _spec_named(folder, given)
            if spec is not None:
                return _Entry(_posix_rel(folder, spec), "spec", spec)
    if not given:
        cfg, value = _setup_cfg_entry(folder, top)
        if value:
            target = cfg.parent / value
            if not target.is_file():
                problems.append(Problem(
                    f"setup.cfg names entry-point {value}, which does not exist", _posix_rel(folder, cfg),
                    f"fix [ploomber] entry-point in setup.cfg (relative to it), or create {value}",
                    ERROR, "entry-point-missing",
                ))
                return None
            return _Entry(_posix_rel(folder, target), "spec", target)
        spec = _spec_named(folder, "pipeline.yaml")
        if spec is not None:
            return _Entry(_posix_rel(folder, spec), "spec", spec)
        problems.append(_no_pipeline(folder, top))
        return None

    value = given
    if os.path.isabs(value):
        try:
            value = Path(value).resolve().relative_to(folder).as_posix()
        except ValueError:
            problems.append(Problem(
                f"the entry point {given} is outside the project folder", ".",
                "pass it relative to the project folder (the run builds from there)", ERROR, "entry-point-invalid",
            ))
            return None
    kind = _entry_kind(value, folder)
    where = "." if source == "--entry-point" else source
    if kind is None:
        stem, suffix = posixpath.splitext(value)
        if suffix in _SPEC_SUFFIXES:
            hint = f"create {value} or fix the name (relative to the project folder)"
            if "/" not in value and stem.count(".") >= 1 and not stem.startswith("pipeline."):
                package, _, name = stem.rpartition(".")
                hint = f"a spec inside a package is written {package}::{name}{suffix} (ploomber's form)"
            problems.append(Problem(f"the entry point {value} does not exist", where, hint, ERROR,
                                    "entry-point-missing"))
        else:
            problems.append(Problem(
                f"the entry point {value} is not a file, a folder, a pattern or a dotted path", where,
                "pass a spec file (pipeline.train.yaml), a pattern ('*.py'), or a dotted path "
                "(package.module.make_dag)",
                ERROR, "entry-point-invalid",
            ))
        return None
    if kind == "file":
        if posixpath.splitext(value)[1] not in _SPEC_SUFFIXES:
            problems.append(Problem(
                f"the entry point {value} is a file but not a YAML spec", where,
                "pass a spec (.yaml), or a pattern such as '*.py' to build a pipeline from scripts",
                ERROR, "entry-point-invalid",
            ))
            return None
        return _Entry(posixpath.normpath(value), "spec", folder / value)
    if kind == "module-path":
        package, _, name = value.partition("::")
        pkg = _package_dir(folder, package)
        spec = pkg / name if pkg is not None else None
        if spec is None or not spec.is_file():
            problems.append(Problem(
                f"the entry point {value}: {name} is not in package {package} among the project's files",
                where, f"put {name} in the package folder {package.replace('.', '/')}/ (or src/...)",
                ERROR, "entry-point-missing",
            ))
            return None
        return _Entry(value, "module-path", spec)
    return _Entry(value.rstrip("/") if kind == "directory" else value, kind)


def _no_pipeline(folder: Path, top: Path) -> Problem:
    """No entry point here: say where the pipelines are (above, below) or how to make one."""
    hint = f"create pipeline.yaml with a 'tasks:' list (or pass --entry-point); see {DOCS_SPEC}"
    what = "there is no pipeline.yaml in the project folder"
    if (folder / "pipeline.yml").is_file():
        hint = "rename pipeline.yml to pipeline.yaml (the name ploomber builds by default)"
        return Problem(what, "pipeline.yaml", hint, ERROR, "no-pipeline")
    for parent in folder.parents:
        if top not in (parent, *parent.parents):
            break
        if (parent / "pipeline.yaml").is_file():
            hint = f"the project seems to be {_shown_dir(parent)}: soopervisor run {_shell_word(_shown_dir(parent))}"
            return Problem(what, "pipeline.yaml", hint, ERROR, "no-pipeline")
    below = pipelines_below(folder)
    if below:
        n = len(below)
        what = (f"there is no pipeline.yaml here, but {n} pipeline{'s' if n != 1 else ''} below: "
                + ", ".join(below))
        hint = ("run it:" if n == 1 else "run each:") + "".join(
            f"\n    soopervisor run {_shell_word(_shown_dir(folder / b))}" for b in below
        )
        return Problem(what, ".", hint, ERROR, "pipelines-below")
    return Problem(what, "pipeline.yaml", hint, ERROR, "no-pipeline")


def _shown_dir(p: Path) -> str:
    """A folder as a command line names it: relative to the current folder when under it."""
    try:
        rel = p.relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(p)
    return rel.as_posix() or "."


def pipelines_below(folder: str | os.PathLike, depth: int = _BELOW_DEPTH) -> list[str]:
    """Folders under ``folder`` (at most ``depth`` levels) that hold a pipeline.yaml, relative to it.

    Hidden folders, node_modules, virtual environments and build output are skipped.
    """
    root = Path(folder)
    found: list[str] = []

    def walk(d: Path, level: int) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.name.startswith(".") or e.name in _SKIP_DIRS:
                continue
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            sub = Path(e.path)
            if (sub / "pyvenv.cfg").exists() or (sub / "conda-meta").is_dir():
                continue
            if (sub / "pipeline.yaml").is_file():
                found.append(sub.relative_to(root).as_posix())
            elif level < depth:
                walk(sub, level + 1)

    walk(root, 1)
    return found


def _pattern_files(folder: Path, pattern: str) -> list[str]:
    """The files a pattern entry point matches, relative to the project (as ploomber globs them)."""
    import glob

    return sorted(
        p for p in glob.glob(pattern, root_dir=folder) if (folder / p).is_file()
    )[: _MAX_PATTERN_FILES + 1]


def _script_products(file: Path) -> list[str]:
    """The ``product`` a script or notebook declares in its parameters cell (literal strings only)."""
    import ast

    try:
        if file.stat().st_size > MAX_SPEC_BYTES:
            return []
        text = file.read_text(encoding="utf-8", errors="replace")
        if file.suffix == ".ipynb":
            import json

            cells = json.loads(text).get("cells", [])
            text = next(("".join(c.get("source", "")) for c in cells
                         if "parameters" in (c.get("metadata", {}).get("tags") or [])), "")
        for node in ast.parse(text).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "product" for t in node.targets):
                value = ast.literal_eval(node.value)
                return _products(value)
    except (OSError, ValueError, SyntaxError, AttributeError, TypeError, RecursionError, MemoryError):
        return []
    return []


def _check_files_entry(entry: _Entry, folder: Path, problems: list[Problem], collect: set[str],
                       key_files: list[str]) -> None:
    """A pattern or folder entry point matches task files (ploomber's DAGSpec.from_files/from_directory)."""
    if entry.kind == "directory":
        files = [f for f in _pattern_files(folder, posixpath.join(glob_escape(entry.value), "*"))
                 if posixpath.splitext(f)[1] in _TASK_SUFFIXES]
        if not files:
            problems.append(Problem(
                f"the entry point {entry.value}/ holds no script or notebook", entry.value,
                f"put the tasks in it ({', '.join(sorted(_TASK_SUFFIXES))})", ERROR, "entry-point-no-match",
            ))
            return
    else:
        files = _pattern_files(folder, entry.value)
        if not files:
            problems.append(Problem(
                f"the entry point pattern {entry.value} matches no file", ".",
                "fix the pattern (it is relative to the project folder), e.g. '*.py' or 'tasks/*.ipynb'",
                ERROR, "entry-point-no-match",
            ))
            return
        bad = [f for f in files if posixpath.splitext(f)[1] not in _TASK_SUFFIXES]
        if bad:
            problems.append(Problem(
                f"the entry point pattern {entry.value} matches files ploomber cannot run as tasks: "
                + ", ".join(bad[:_MAX_LISTED]), ".",
                f"narrow the pattern to scripts and notebooks ({', '.join(sorted(_TASK_SUFFIXES))})",
                ERROR, "entry-point-invalid",
            ))
    fstr = str(folder)
    for f in files[:_MAX_PATTERN_FILES]:
        key_files.append(posixpath.normpath(f))
        for product in _script_products(folder / f):
            top = _collect_path(product, fstr, {})
            if top is not None:
                collect.add(top)


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", s)


def _check_dotted(entry: _Entry, folder: Path, problems: list[Problem], key_files: list[str]) -> bool:
    """A dotted-path entry point names a function in the project's files; True when it is
    decorated with ploomber's ``with_env`` (then env.yaml's keys are parameters)."""
    import ast

    module, _, attr = entry.value.rpartition(".")
    file = _module_file(folder, module) if module else None
    if file is None:
        problems.append(Problem(
            f"the entry point {entry.value}: module {module or entry.value} is not among the project's files",
            ".", f"create {module.replace('.', '/')}.py with a function {attr}() that returns the DAG, "
            "or fix the dotted path (modules are found from the project folder, or src/ in a package)",
            ERROR, "entry-point-missing",
        ))
        return False
    rel = _posix_rel(folder, file)
    key_files.append(rel)
    try:
        if file.stat().st_size > MAX_REQUIREMENTS_BYTES:
            return False
        tree = ast.parse(file.read_bytes())
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as e:
        problems.append(Problem(
            f"{rel} cannot be read as Python: {e}", rel, "fix the module the entry point names",
            ERROR, "entry-point-invalid",
        ))
        return False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr:
            return any("with_env" in ast.dump(d) for d in node.decorator_list)
        names = []
        if isinstance(node, ast.Assign):
            names = [getattr(t, "id", None) for t in node.targets]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.asname or a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ClassDef):
            names = [node.name]
        if attr in names:
            return False
    problems.append(Problem(
        f"the entry point {entry.value}: {rel} defines no {attr}", rel,
        f"define {attr}() in {rel}, returning the DAG (ploomber calls it)", ERROR, "entry-point-missing",
    ))
    return False


def _spec_base(folder: Path, spec: Path) -> Path:
    """The folder ploomber resolves a spec's sources and products from: the spec's own, or
    the package's root for ``src/<package>/pipeline.yaml`` beside a setup.py."""
    parent = spec.parent
    if parent.parent.name == "src" and (parent.parent.parent / "setup.py").is_file():
        return parent.parent.parent
    return parent


def _env_candidates(folder: Path, spec: Path) -> list[Path]:
    """env.{name}.yaml for pipeline.{name}.yaml, else env.yaml: in the project folder, then
    beside the spec (ploomber's path_to_env_from_spec)."""
    parts = spec.name.split(".")
    names = ([f"env.{parts[1]}.yaml"] if len(parts) >= 3 else []) + ["env.yaml"]
    out: list[Path] = []
    for n in names:
        for d in (folder, spec.parent):
            if d / n not in out:
                out.append(d / n)
    return out


_ENV_SPECS = ("environment.yml", "environment.yaml", "requirements.txt")


def _find_env_spec(folder: Path, top: Path) -> Path | None:
    """The environment spec nearest the project, from its folder up to the repository root;
    environment.yml before requirements.txt in one folder."""
    for d in (folder, *folder.parents):
        for n in _ENV_SPECS:
            if (d / n).is_file():
                return d / n
        if d == top or top not in d.parents:
            break
    return None


# ---------------------------------------------------------------------- inspect


def inspect(path: str | os.PathLike = ".", entry_point: str | None = None) -> Report:
    """Inspect the project at ``path``; every problem found comes in one report.

    ``entry_point`` is what ``ploomber build --entry-point`` takes (a spec file, a pattern
    such as ``'*.py'``, a dotted path), relative to the project folder; by default it is
    found as ploomber finds it. Paths in the report are relative to the project folder.
    """
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
    where_folder = "."  # every path in the report is relative to the project folder

    # -- git --------------------------------------------------------------
    git = _git_facts(folder)
    if git.not_a_repo:
        problems.append(Problem(
            "the project folder is not inside a git repository", where_folder,
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
            "the repository has no commit yet", _posix_rel(folder, git.root),
            "commit the project first: git add -A && git commit -m 'first commit'",
            ERROR, "no-commit",
        ))

    repo_root = git.root.resolve() if git.root else folder
    subdir = git.subdir if git.root else ""
    name, legacy = _project_names(repo_root, subdir, git.origin)
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
        legacy_name=legacy if legacy != name else None,
    )

    def not_committed(rel: str) -> bool:
        for n in new_paths:
            if n == rel or n == "./" or (n.endswith("/") and rel.startswith(n)):
                return True
        return False

    key_files: list[str] = []  # files the run needs, checked against HEAD below

    # -- the entry point, as ploomber finds it ----------------------------
    collect = {"output"}
    entry = _resolve_entry(folder, repo_root, entry_point, problems)
    if entry is None:
        project.entry_point = ""  # none found: the report says why
        if not any(p.code == "pipelines-below" for p in problems):
            _inspect_env_yaml(folder, project, problems, key_files)  # every problem in one pass
    else:
        project.entry_point, project.entry_kind = entry.value, entry.kind
        if entry.spec is not None:
            spec_rel = _posix_rel(folder, entry.spec)
            # env.yaml first: its values fill placeholders in products
            env = _inspect_env_yaml(folder, project, problems, key_files, _env_candidates(folder, entry.spec))
            if not spec_rel.startswith("../"):
                key_files.append(spec_rel)
            data = _read_yaml(
                entry.spec, spec_rel, "pipeline-unparsable",
                f"fix the YAML syntax at that line of {spec_rel} (indentation, a missing space after ':'); "
                f"see {DOCS_SPEC}",
                problems,
            )
            if data is not _BAD:
                _check_pipeline(data, _spec_base(folder, entry.spec), env, problems, collect, key_files,
                                spec=spec_rel, project_folder=folder)
        elif entry.kind == "dotted-path":
            with_env = _check_dotted(entry, folder, problems, key_files)
            _inspect_env_yaml(folder, project, problems, key_files,
                              [folder / "env.yaml"] if with_env else None, entry)
        else:
            _check_files_entry(entry, folder, problems, collect, key_files)
            _inspect_env_yaml(folder, project, problems, key_files, None, entry)
    project.collect_paths = sorted(collect)

    if not any(p.code == "pipelines-below" for p in problems):  # a folder of projects is no project
        _inspect_env_spec(folder, project, problems, key_files)

    for n in ("setup.py", "pyproject.toml"):
        if (folder / n).is_file():
            project.installable = True
            key_files.append(n)

    # -- committed? ----------------------------------------------------------
    if git.commit is not None:
        outside = [k for k in key_files if k.startswith("../")]
        if outside:  # git status above covers the project folder only
            for xy, rel in _outside_changes(folder, repo_root, outside):
                if _not_in_head(xy):
                    new_paths.append(rel)
                else:
                    changed.append(rel)
            project.dirty = bool(changed)
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


def _inspect_env_yaml(folder: Path, project: Project, problems: list[Problem], key_files: list[str],
                      candidates: list[Path] | None = None, no_env: _Entry | None = None) -> dict:
    """env.yaml's values (for product placeholders); sets ``project.declares_sample``.

    ``candidates``: where the entry point's env file may be, first found wins (default:
    env.yaml in the project folder). ``no_env``: an entry point that takes no env file.
    """
    env: dict = {}
    if no_env is not None and candidates is None:
        problems.append(Problem(
            f"a {no_env.kind.replace('-', ' ')} entry point takes no env.yaml: a sample run builds the "
            "full pipeline and is recorded as full", ".",
            "to have sample runs, use a spec (pipeline.yaml) with env.yaml declaring 'sample: false'"
            + (", or decorate the function with ploomber's @with_env" if no_env.kind == "dotted-path" else "")
            + f"; see {DOCS_ENV}",
            WARNING, "no-sample-key",
        ))
        return env
    candidates = candidates or [folder / "env.yaml"]
    env_yaml = next((c for c in candidates if c.is_file()), candidates[-1])
    env_rel = _posix_rel(folder, env_yaml)
    if env_yaml.is_file():
        key_files.append(env_rel)
        data = _read_yaml(
            env_yaml, env_rel, "env-yaml-unparsable",
            f"fix the YAML syntax of {env_rel}; it must be a mapping such as 'sample: false' ({DOCS_ENV})",
            problems,
        )
        if data is _BAD:
            return env
        data = {} if data is None else data
        if not isinstance(data, dict):
            problems.append(Problem(
                f"{env_rel} must be a mapping of names to values, not a {type(data).__name__}",
                env_rel, f"write {env_rel} as 'key: value' lines, e.g. 'sample: false'",
                ERROR, "env-yaml-invalid",
            ))
            return env
        env = data
        project.declares_sample = "sample" in data
    if not project.declares_sample:
        what = (
            f"{env_rel} has no 'sample' key: a sample run builds the full pipeline and is recorded as full"
            if env_yaml.is_file()
            else "there is no env.yaml: a sample run builds the full pipeline and is recorded as full"
        )
        problems.append(Problem(
            what, env_rel,
            "add 'sample: false' to env.yaml and use {{sample}} in the pipeline "
            f"(e.g. to read fewer rows); see {DOCS_ENV}",
            WARNING, "no-sample-key",
        ))
    return env


def _inspect_env_spec(folder: Path, project: Project, problems: list[Problem], key_files: list[str]) -> None:
    """The environment spec nearest the project, up to the repository root (environment.yml,
    else requirements.txt, in one folder): sets env_file (relative to the project folder),
    pip_requirements, conda_only."""
    found = _find_env_spec(folder, project.repo_root)
    env_spec = _posix_rel(folder, found) if found is not None else None
    if found is not None and found.name != "requirements.txt":
        project.env_file = env_spec
        key_files.append(env_spec)
        data = _read_yaml(
            found, env_spec, "env-spec-unparsable",
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
        from .conda import translate

        plain: list[str] = []
        for dep in deps:
            if isinstance(dep, dict) and "pip" in dep:
                pip = dep["pip"] or []
                if isinstance(pip, list):
                    # scalars only: str() of a list built from YAML aliases can be exponentially long
                    project.pip_requirements += [str(r) for r in pip if isinstance(r, (str, int, float))]
            elif isinstance(dep, (str, int, float)):
                plain.append(str(dep))
        # without conda in the image, pip installs the plain dependencies PyPI has
        # (before the pip: section, as conda does); conda_only is what it cannot install
        conda = translate(plain)
        project.pip_requirements[:0] = conda.pip
        project.conda_only = conda.dropped
        project.python_pin = conda.python_pin
        _conda_problems(env_spec, project, problems)
    elif found is not None:
        project.env_file = env_spec
        key_files.append(env_spec)
        hint = "save requirements.txt as UTF-8 text, one requirement a line"
        data = _read_limited(found, env_spec, MAX_REQUIREMENTS_BYTES,
                             "env-spec-unparsable", hint, problems)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(
                f"{env_spec} cannot be read: {e}", env_spec, hint, ERROR,
                "env-spec-unparsable",
            ))
            return
        for line in text.splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                project.pip_requirements.append(s)
    else:
        problems.append(Problem(
            "there is no environment spec (environment.yml or requirements.txt) in the project folder "
            "or above it in the repository", ".",
            "add requirements.txt listing the packages the pipeline imports (one a line), "
            "or a conda environment.yml",
            ERROR, "no-env-spec",
        ))


def _conda_problems(env_spec: str, project: Project, problems: list[Problem]) -> None:
    """Warnings for what an image without conda cannot give: packages pip lacks, the pinned Python."""
    from .conda import image_for, image_python, pin_met
    from .config import default_image

    if project.conda_only:
        listed = ", ".join(project.conda_only)
        problems.append(Problem(
            f"{env_spec} lists conda packages pip cannot install: {listed} "
            "(on an image without conda the run installs the other dependencies with pip)",
            env_spec,
            "use an image with micromamba or conda (--image or SOOPERVISOR_IMAGE), move them to the "
            "pip: section under their PyPI names, or remove them if the pipeline does not need them",
            WARNING, "conda-only-deps",
        ))
    if project.python_pin:
        image = default_image()
        have = image_python(image)
        if have is not None and pin_met(project.python_pin, have) is False:
            fit = image_for(project.python_pin)
            fix = (f"run on an image with that Python: --image {fit} (or SOOPERVISOR_IMAGE={fit})"
                   if fit else "no Python 3 image meets this pin: fix it")
            problems.append(Problem(
                f"{env_spec} pins {project.python_pin} but the image {image} has Python {have}: "
                "without conda the run uses the image's Python",
                env_spec, f"{fix}, or change the pin to python={have}" if fit else fix,
                WARNING, "python-pin",
            ))


def _shell_word(s: str) -> str:
    return s if re.fullmatch(r"[\w./-]+", s) else "'" + s.replace("'", "'\\''") + "'"


def _check_pipeline(data: Any, folder: Path, env: dict, problems: list[Problem],
                    collect: set[str], key_files: list[str], spec: str = "pipeline.yaml",
                    project_folder: Path | None = None) -> None:
    """The tasks of the spec ``spec`` (named relative to the project folder); sources and
    products are relative to ``folder``, where ploomber resolves them."""
    prefix = _posix_rel(project_folder, folder) if project_folder and project_folder != folder else ""

    def in_project(rel: str) -> str | None:
        out = posixpath.normpath(posixpath.join(prefix, rel)) if prefix else rel
        return None if out.startswith("../") or out == ".." else out

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
            f"{spec} must be a mapping with a 'tasks:' list, not a {type(data).__name__}",
            spec, f"start {spec} with 'tasks:' and list the tasks under it; see {DOCS_SPEC}",
            ERROR, "pipeline-invalid",
        ))
        return
    if tasks is not None and not isinstance(tasks, list):
        problems.append(Problem(
            f"'tasks' in {spec} must be a list, not a {type(tasks).__name__}",
            spec, "write each task as a list item: '- source: tasks/load.py' with its 'product:'",
            ERROR, "pipeline-invalid",
        ))
        return
    if not tasks:
        if meta.get("import_tasks_from"):
            return
        what = f"{spec} is empty" if data is None else f"{spec} declares no tasks"
        problems.append(Problem(
            what, spec,
            f"add a 'tasks:' list to {spec}, e.g. '- source: tasks/load.py' with "
            f"'product: output/load.ipynb'; see {DOCS_SPEC}",
            ERROR, "no-tasks",
        ))
        return
    relative_to_source = bool(meta.get("product_relative_to_source"))
    fstr = str(folder)
    for i, task in enumerate(tasks, 1):
        if not isinstance(task, dict):
            problems.append(Problem(
                f"task {i} in {spec} is a {type(task).__name__}, not a mapping",
                spec, "write the task as '- source: ...' with 'product: ...' under it",
                ERROR, "pipeline-invalid",
            ))
            continue
        source = task.get("source")
        if not source:
            problems.append(Problem(
                f"task {i} in {spec} has no 'source'", spec,
                "add 'source: path/to/script.py' (or a dotted function name) to the task",
                ERROR, "task-no-source",
            ))
        elif isinstance(source, str) and _looks_like_file(source) and not meta.get("source_loader"):
            src = posixpath.normpath(source)
            if not src.startswith("../") and not posixpath.isabs(src):
                if not (folder / src).exists():
                    problems.append(Problem(
                        f"the source of task {i} does not exist: {source}", spec,
                        f"create {source} or fix the path (it is relative to "
                        + (f"{prefix}/, the spec's project root)" if prefix else "the project folder)"),
                        ERROR, "source-missing",
                    ))
                elif in_project(src):
                    key_files.append(in_project(src))
        base = ""
        if relative_to_source and isinstance(source, str) and _looks_like_file(source):
            base = posixpath.dirname(posixpath.normpath(source))
        for product in _products(task.get("product")):
            if base and not posixpath.isabs(product) and "{{" not in product[:2]:
                product = posixpath.join(base, product)
            top = _collect_path(product, fstr, env)
            if top is not None and in_project(top):
                collect.add(in_project(top))


def project_names(path: str | os.PathLike = ".") -> tuple[str, str | None]:
    """``(name, legacy)`` of the project at ``path``: the name it is stored under, and the
    folder-derived name earlier versions stored it under (None when they are the same).

    Two git calls started together (top-level and prefix, origin's URL); no project files read.
    """
    from .errors import UsageError

    folder = Path(os.fspath(path)).expanduser()
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
    cmds = [["git", "rev-parse", "--show-toplevel", "--show-prefix"],
            ["git", "config", "--get", "remote.origin.url"]]
    try:
        procs = [subprocess.Popen(c, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) for c in cmds]
    except (OSError, ValueError):
        procs = []
    outs = [p.communicate()[0].decode(errors="surrogateescape") for p in procs]
    lines = outs[0].split("\n") if outs else []
    if not procs or procs[0].returncode != 0 or len(lines) < 2 or not lines[0]:
        raise UsageError(
            f"no project at {os.path.abspath(path)}: the folder is not in a git repository",
            "run it from a project folder, or pass --project NAME",
        )
    origin = outs[1].strip() if procs[1].returncode == 0 else None
    name, legacy = _project_names(Path(lines[0]).resolve(), lines[1].rstrip("/"), origin or None)
    return name, (legacy if legacy != name else None)


def project_name(path: str | os.PathLike = ".") -> str:
    """The storage name of the project at ``path``, for commands given no ``--project``."""
    return project_names(path)[0]


def enclosing_project(path: str | os.PathLike, within: str | os.PathLike) -> Path:
    """The nearest folder from ``path`` up to ``within`` that holds a pipeline (pipeline.yaml,
    a package's src/*/pipeline.yaml, setup.cfg's ``[ploomber] entry-point``); else ``path``.

    A file browser sitting in ``proj/tasks`` means the project ``proj``.
    """
    path, within = Path(path).resolve(), Path(within).resolve()
    for folder in (path, *path.parents):
        if _spec_named(folder, "pipeline.yaml") is not None or _setup_cfg_entry(folder, folder)[1]:
            return folder
        if folder == within or within not in folder.parents:
            break
    return path

"""The entry point, found and classified as ploomber does (``--entry-point``, ENTRY_POINT,
setup.cfg, pipeline.yaml; a spec, a pattern, a folder, a dotted path, ``package::file``),
and checked by reading the project's files: nothing of the project is imported."""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from .locate import _no_pipeline, _setup_cfg_entry, _spec_named
from .model import _MAX_LISTED, ERROR, Problem
from .paths import _posix_rel
from .pipeline_spec import _collect_path, _products
from .yaml_files import MAX_REQUIREMENTS_BYTES, MAX_SPEC_BYTES

#: file suffixes ploomber makes a task of, in a file-pattern or directory entry point
_TASK_SUFFIXES = {".py", ".R", ".Rmd", ".r", ".ipynb", ".sql", ".sh"}
_SPEC_SUFFIXES = {".yaml", ".yml"}
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

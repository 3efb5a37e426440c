"""A YAML spec's tasks, checked as ploomber reads them: sources exist, and the top-level
folders of the products are what a run collects."""
from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from .model import DOCS_SPEC, ERROR, Problem
from .paths import _posix_rel

#: what ploomber allows as the source of a task when it is a file
_SOURCE_SUFFIXES = {".py", ".ipynb", ".sql", ".r", ".rmd", ".sh", ".md", ".jl"}
_HERE = re.compile(r"\{\{\s*(here|root|cwd)\s*\}\}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


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


def _spec_base(folder: Path, spec: Path) -> Path:
    """The folder ploomber resolves a spec's sources and products from: the spec's own, or
    the package's root for ``src/<package>/pipeline.yaml`` beside a setup.py."""
    parent = spec.parent
    if parent.parent.name == "src" and (parent.parent.parent / "setup.py").is_file():
        return parent.parent.parent
    return parent


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
                f"task {i} in {spec} is {_a(type(task).__name__)}, not a mapping",
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


def _a(noun: str) -> str:
    """``noun`` with its article: "a list", "an int"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"

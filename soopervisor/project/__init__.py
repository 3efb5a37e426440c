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
from pathlib import Path

from .entry_points import _check_dotted, _check_files_entry, _resolve_entry
from .env_yaml import _env_candidates, _inspect_env_yaml
from .environment_spec import _inspect_env_spec
from .git_facts import _git_facts, _not_in_head, _outside_changes
from .locate import enclosing_project, pipelines_below
from .model import _MAX_LISTED, DOCS_SPEC, ERROR, WARNING, Problem, Project, Report
from .naming import _project_names, project_name, project_names
from .naming import _repo_name_from_url as _repo_name_from_url  # for the tests
from .paths import _posix_rel, _shell_word
from .pipeline_spec import _check_pipeline, _spec_base
from .yaml_files import _BAD, MAX_SPEC_BYTES, _read_yaml

__all__ = [
    "MAX_SPEC_BYTES", "Problem", "Project", "Report", "enclosing_project", "inspect", "pipelines_below",
    "project_name", "project_names",
]


def inspect(path: str | os.PathLike = ".", entry_point: str | None = None, image: str | None = None) -> Report:
    """Inspect the project at ``path``; every problem found comes in one report.

    ``entry_point`` is what ``ploomber build --entry-point`` takes (a spec file, a pattern
    such as ``'*.py'``, a dotted path), relative to the project folder; by default it is
    found as ploomber finds it. Paths in the report are relative to the project folder. ``image``
    is the base image the run will use (default: SOOPERVISOR_IMAGE, else the default image).
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
            # "./": the whole project folder is untracked, which says nothing of a file above it
            if n == rel or (n == "./" and not rel.startswith("../")) or (n.endswith("/") and rel.startswith(n)):
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
        _inspect_env_spec(folder, project, problems, key_files, image)

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
        # a path can be both staged and untracked (`git rm --cached`): one change to the user
        changed = list(dict.fromkeys(changed))
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

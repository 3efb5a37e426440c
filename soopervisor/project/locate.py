"""Where pipelines are: in a folder (its pipeline.yaml or setup.cfg entry point), the
project enclosing a folder, the pipelines below one."""
from __future__ import annotations

import os
from pathlib import Path

from .model import DOCS_SPEC, ERROR, Problem
from .paths import _shell_word, _shown_dir

#: folders never searched for pipelines below a folder
_SKIP_DIRS = {"node_modules", "venv", "env", "site-packages", "__pycache__", "build", "dist"}
_BELOW_DEPTH = 3


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

"""The name a project is stored under: the same wherever the repository is cloned, and the
folder-derived name earlier versions used, so their sets are still read."""
from __future__ import annotations

import os
import re
from pathlib import Path

from .git_facts import toplevel_and_origin
from .yaml_files import MAX_SPEC_BYTES

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


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


def project_names(path: str | os.PathLike = ".") -> tuple[str, str | None]:
    """``(name, legacy)`` of the project at ``path``: the name it is stored under, and the
    folder-derived name earlier versions stored it under (None when they are the same).

    Two git calls started together (top-level and prefix, origin's URL); no project files read.
    """
    from ..errors import UsageError

    found = toplevel_and_origin(Path(os.fspath(path)).expanduser())
    if found is None:
        raise UsageError(
            f"no project at {os.path.abspath(path)}: the folder is not in a git repository",
            "run it from a project folder, or pass --project NAME",
        )
    top, subdir, origin = found
    name, legacy = _project_names(Path(top).resolve(), subdir, origin)
    return name, (legacy if legacy != name else None)


def project_name(path: str | os.PathLike = ".") -> str:
    """The storage name of the project at ``path``, for commands given no ``--project``."""
    return project_names(path)[0]

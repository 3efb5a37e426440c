"""Where soopervisor keeps its things on the user's machine.

Everything lives under one data directory so the CLI, the notebook and the
sidebar share one run history. ``SOOPERVISOR_HOME`` moves all of it (tests use
this to stay isolated); otherwise it is the platform's user data directory.
"""
from __future__ import annotations

import os
from pathlib import Path

#: the image users get when they pass no --image; pulled when missing
DEFAULT_IMAGE = "python:3.11-slim"
#: the image `soopervisor image build` builds from Debian packages where no registry answers
OFFLINE_IMAGE = "soopervisor/base:bookworm"


def data_dir() -> Path:
    """``SOOPERVISOR_HOME`` or the platform's user data folder; UsageError when it names a file.

    The folder itself is created by whoever writes there first (see :func:`ensure_dir`).
    """
    home = os.environ.get("SOOPERVISOR_HOME")
    if home:
        path = Path(home).expanduser().resolve()
        _refuse_non_folder(path, f"SOOPERVISOR_HOME={home}")
        return path
    from platformdirs import user_data_dir

    path = Path(user_data_dir("soopervisor", appauthor=False))
    _refuse_non_folder(path, "the data folder")
    return path


def _refuse_non_folder(path: Path, named: str) -> None:
    """A file where the data folder (or one of its parents) should be is a usage error, not a crash later."""
    from .errors import UsageError

    for p in (path, *path.parents):
        if p.is_dir():
            return
        if p.exists() or p.is_symlink():
            what = "is a file" if p == path else f"is below the file {p}"
            raise UsageError(
                f"{named} {what}: soopervisor keeps its runs, logs and artifacts in a folder there",
                "point SOOPERVISOR_HOME at a folder (it is created when missing), or unset it "
                "to use the default data folder",
            )


def ensure_dir(path: Path) -> Path:
    """Create ``path`` (a folder under the data folder) when missing; StorageUnavailable when it cannot be.

    For every writer under :func:`data_dir` (logs, cache, unsaved sets), so an
    unwritable SOOPERVISOR_HOME is a plain reason with a hint, never an internal error.
    """
    from .errors import StorageUnavailable

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageUnavailable(
            f"cannot create {path}: {e.strerror or e}",
            "SOOPERVISOR_HOME (or the data folder) must name a folder you can write; "
            "point SOOPERVISOR_HOME at one, e.g. export SOOPERVISOR_HOME=~/.soopervisor",
        ) from None
    return path


def config_dir() -> Path:
    """``SOOPERVISOR_CONFIG_DIR`` or the platform's user config folder (credentials, executors.yaml)."""
    base = os.environ.get("SOOPERVISOR_CONFIG_DIR")
    if base:
        return Path(base).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("soopervisor", appauthor=False))


def executors_file() -> Path:
    """``SOOPERVISOR_EXECUTORS`` or ``<config dir>/executors.yaml``: the named engines runs can go to."""
    named = os.environ.get("SOOPERVISOR_EXECUTORS")
    return Path(named).expanduser() if named else config_dir() / "executors.yaml"


def default_storage_url() -> str:
    """``SOOPERVISOR_STORAGE`` or ``<data dir>/artifacts``."""
    return os.environ.get("SOOPERVISOR_STORAGE") or str(data_dir() / "artifacts")


def runs_db() -> Path:
    return data_dir() / "runs.sqlite"


def logs_dir() -> Path:
    return data_dir() / "logs"


def cache_dir() -> Path:
    """Downloaded artifact files, reused by ``Artifacts.path``."""
    return data_dir() / "cache"


def default_image() -> str:
    """``SOOPERVISOR_IMAGE`` or the public default image."""
    return os.environ.get("SOOPERVISOR_IMAGE") or DEFAULT_IMAGE

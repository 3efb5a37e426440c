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
#: the image .ci/run and scripts/build-base-image build from Debian packages
OFFLINE_IMAGE = "soopervisor/base:bookworm"


def data_dir() -> Path:
    home = os.environ.get("SOOPERVISOR_HOME")
    if home:
        return Path(home).expanduser().resolve()
    from platformdirs import user_data_dir

    return Path(user_data_dir("soopervisor", appauthor=False))


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

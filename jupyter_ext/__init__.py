"""soopervisor in Jupyter: magics, the live log widget, the server extension.

Installed as ``soopervisor_jupyter`` (the source folder is ``jupyter_ext/``).
Everything here translates between Jupyter and the ``soopervisor`` API; the
API does the work. CONTRACT.md names the routes and messages.
"""
from __future__ import annotations

from soopervisor import __version__


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "soopervisor_jupyter"}]


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextension", "dest": "soopervisor"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .server import setup_handlers

    setup_handlers(serverapp)


def _unload_jupyter_server_extension(serverapp) -> None:
    from .server import teardown

    teardown(serverapp)


__all__ = ["__version__"]

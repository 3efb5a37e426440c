"""Registers the soopervisor REST and websocket routes on a Jupyter server.

ROUTES is written with OpenAPI path templates, so the routes served and the
paths in openapi.yaml can be compared one to one (tests do).
"""

from __future__ import annotations

import os
import re
from typing import Any

from jupyter_server.utils import url_path_join

from . import handlers as h
from .websocket import LogSocketHandler

API_PREFIX = "soopervisor/api"

#: (OpenAPI path template, handler); ``{name}`` of a file may hold "/"
ROUTES: list[tuple[str, type]] = [
    ("/version", h.VersionHandler),
    ("/validate", h.ValidateHandler),
    ("/runs", h.RunsHandler),
    ("/runs/{run_id}", h.RunHandler),
    ("/runs/{run_id}/stop", h.StopHandler),
    ("/runs/{run_id}/log", LogSocketHandler),
    ("/projects/{project}/commits", h.CommitsHandler),
    ("/projects/{project}/commits/{commit}", h.CommitHandler),
    ("/projects/{project}/commits/{commit}/files/{name}", h.FileHandler),
    ("/projects/{project}/commits/{commit}/zip", h.ZipHandler),
]

_PARAM = re.compile(r"\{(\w+)\}")


def to_regex(template: str) -> str:
    """``/runs/{run_id}`` -> ``/runs/(?P<run_id>[^/]+)``; a file ``{name}`` spans folders."""
    return _PARAM.sub(lambda m: f"(?P<{m[1]}>{'.+' if m[1] == 'name' else '[^/]+'})", template)


def setup_handlers(serverapp: Any) -> None:
    """Add the routes under ``<base_url>soopervisor/api``; paths resolve inside root_dir."""
    web_app = serverapp.web_app
    root = getattr(serverapp, "root_dir", None) or serverapp.contents_manager.root_dir
    # realpath once: every path parameter is compared against the real root
    web_app.settings["soopervisor_root"] = os.path.realpath(os.path.expanduser(root))
    base_url = web_app.settings.get("base_url", "/")
    rules = [(url_path_join(base_url, API_PREFIX, to_regex(t)), cls) for t, cls in ROUTES]
    web_app.add_handlers(".*$", rules)

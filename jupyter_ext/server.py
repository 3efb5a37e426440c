"""Registers the soopervisor REST and websocket routes on a Jupyter server.

ROUTES is written with OpenAPI path templates, so the routes served and the
paths in openapi.yaml can be compared one to one (tests do).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from jupyter_server.utils import url_path_join
from traitlets import Enum, Unicode
from traitlets.config import Configurable

from soopervisor.errors import SoopervisorError
from soopervisor.service import RunService

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


class Soopervisor(Configurable):
    """The server extension's settings, e.g. in ``jupyter_server_config.py``::

        c.Soopervisor.storage = "s3://team-bucket/artifacts"
        c.Soopervisor.image = "registry.example.com/python:3.11"
    """

    storage = Unicode(
        None, allow_none=True, config=True,
        help="Where the server's runs store artifacts and where the sidebar reads them: a storage URL "
             "(default: SOOPERVISOR_STORAGE, else the data folder).",
    )
    image = Unicode(
        None, allow_none=True, config=True,
        help="Base image of the server's runs (default: SOOPERVISOR_IMAGE, else python:3.11-slim).",
    )
    executor = Enum(
        ["docker"], default_value="docker", config=True,
        help="Where runs execute: 'docker' is the engine DOCKER_HOST names (the local one by default).",
    )

    def service(self) -> RunService:
        """The one run service every route of this server translates to."""
        return RunService(storage=self.storage, image=self.image)


def _adopt(service: RunService, log: Any) -> None:
    """After a restart: runs whose owner died are marked interrupted and their containers removed."""
    try:
        reaped = service.adopt()
    except SoopervisorError as e:  # no Docker engine yet: the next read reaps
        log.warning("soopervisor: could not check for runs left by a previous server: %s", e.message)
        return
    if reaped:
        log.info("soopervisor: %d run(s) of a previous process marked interrupted", len(reaped))


def setup_handlers(serverapp: Any) -> None:
    """Add the routes under ``<base_url>soopervisor/api``; paths resolve inside root_dir."""
    web_app = serverapp.web_app
    settings = Soopervisor(config=getattr(serverapp, "config", None))
    service = settings.service()
    web_app.settings["soopervisor_service"] = service
    log = getattr(serverapp, "log", logging.getLogger("soopervisor"))
    threading.Thread(target=_adopt, args=(service, log), name="soopervisor-adopt", daemon=True).start()
    root = getattr(serverapp, "root_dir", None) or serverapp.contents_manager.root_dir
    # realpath once: every path parameter is compared against the real root
    web_app.settings["soopervisor_root"] = os.path.realpath(os.path.expanduser(root))
    base_url = web_app.settings.get("base_url", "/")
    rules = [(url_path_join(base_url, API_PREFIX, to_regex(t)), cls) for t, cls in ROUTES]
    web_app.add_handlers(".*$", rules)

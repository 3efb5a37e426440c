"""The routes of the API and how a home mounts them.

ROUTES is written with OpenAPI path templates, so the routes served and the
paths in openapi.yaml can be compared one to one (tests do). A home adds them
with :func:`mount`, giving the auth base classes that make its clients known.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import handlers as h
from .base import LogSocketBase
from .websocket import LogSocketHandler

API_PREFIX = "soopervisor/api"
#: the OpenAPI description of ROUTES (shipped in the wheel; the docs render it)
OPENAPI = Path(__file__).with_name("openapi.yaml")

#: (OpenAPI path template, neutral handler); ``{name}`` of a file may hold "/"
ROUTES: list[tuple[str, type]] = [
    ("/version", h.VersionHandler),
    ("/validate", h.ValidateHandler),
    ("/runs", h.RunsHandler),
    ("/runs/{run_id}", h.RunHandler),
    ("/runs/{run_id}/stop", h.StopHandler),
    ("/runs/{run_id}/log", LogSocketHandler),
    ("/remotes", h.RemotesHandler),
    ("/projects/{project}/commits", h.CommitsHandler),
    ("/projects/{project}/commits/{commit}", h.CommitHandler),
    ("/projects/{project}/commits/{commit}/files/{name}", h.FileHandler),
    ("/projects/{project}/commits/{commit}/zip", h.ZipHandler),
    ("/projects/{project}/commits/{commit}/table/{name}", h.TableHandler),
    ("/projects/{project}/commits/{commit}/compare/{other}", h.CompareHandler),
    ("/projects/{project}/commits/{commit}/compare/{other}/files/{name}", h.CompareFileHandler),
]

_PARAM = re.compile(r"\{(\w+)\}")


def to_regex(template: str) -> str:
    """``/runs/{run_id}`` -> ``/runs/(?P<run_id>[^/]+)``; a file ``{name}`` spans folders."""
    return _PARAM.sub(lambda m: f"(?P<{m[1]}>{'.+' if m[1] == 'name' else '[^/]+'})", template)


def api_url(base_url: str, template: str = "") -> str:
    """``<base_url>soopervisor/api<template>``, one slash between the parts."""
    return "/" + "/".join(p.strip("/") for p in (base_url, API_PREFIX) if p.strip("/")) + template


def concrete(cls: type, auth_base: type | None) -> type:
    """``cls`` with the home's auth base after it: the handler's methods first, then the home's
    (its ``prepare``, ``authorize``, ``current_user``), then tornado's. No auth base: ``cls``
    itself, which refuses every request (ApiHandler.authorize)."""
    if auth_base is None:
        return cls
    # type() checks the MRO: a base that cannot follow the handler fails here, at mount time
    return type(cls.__name__, (cls, auth_base), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def mount(
    web_app: Any,
    base_url: str,
    *,
    auth_base: type | None,
    socket_auth_base: type | None,
    routes: list[tuple[str, type]] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[tuple[str, type]]:
    """Add ``routes`` (default ROUTES) under ``<base_url>soopervisor/api`` of a tornado Application.

    A websocket route gets ``socket_auth_base``, every other ``auth_base``. ``settings``
    (``soopervisor_service``, ``soopervisor_root`` — None where the home has no root
    folder) are merged into ``web_app.settings``. Returns the rules added.
    """
    if settings:
        web_app.settings.update(settings)
    web_app.settings.setdefault("soopervisor_root", None)
    rules = []
    for template, cls in ROUTES if routes is None else routes:
        base = socket_auth_base if issubclass(cls, LogSocketBase) else auth_base
        rules.append((api_url(base_url, to_regex(template)), concrete(cls, base)))
    web_app.add_handlers(".*$", rules)
    return rules

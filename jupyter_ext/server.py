"""Registers the soopervisor REST and websocket routes (soopervisor.api) on a Jupyter server.

The routes and handlers are soopervisor.api's, shared with ``soopervisor serve``;
this module adds Jupyter's settings (c.Soopervisor) and auth (handlers.py).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from traitlets import Unicode
from traitlets.config import Configurable

from soopervisor.api.routes import ROUTES, mount
from soopervisor.errors import SoopervisorError
from soopervisor.service import RunService

from .handlers import JupyterAuth, JupyterSocketAuth

__all__ = ["ROUTES", "Soopervisor", "setup_handlers"]


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
        help="Base image of the server's runs (default: SOOPERVISOR_IMAGE, else python:3.11-slim; "
             "`soopervisor image build` makes one where no registry answers).",
    )
    executor = Unicode(
        None, allow_none=True, config=True,
        help="Where runs execute: the name of an engine in the executors file (`soopervisor executors` lists "
             "them), e.g. 'build-box'; 'local' (or 'docker', as before engines had names) is the engine "
             "DOCKER_HOST names. Default: SOOPERVISOR_EXECUTOR, else the file's default, else 'local'.",
    )

    def service(self) -> RunService:
        """The one run service every route of this server translates to."""
        return RunService(storage=self.storage, image=self.image, engine=self.executor or None)


def _adopt(service: RunService, log: Any) -> None:
    """After a restart: runs whose owner died are marked interrupted and their containers removed."""
    try:
        reaped = service.adopt()
    except SoopervisorError as e:  # no Docker engine yet: the next read reaps
        log.warning("soopervisor: could not check for runs left by a previous server: %s", e.message)
        return
    if reaped:
        log.info("soopervisor: %d run(s) of a previous process marked interrupted", len(reaped))


#: how often the server looks for remote runs nobody follows (their kernel restarted or exited)
FOLLOW_EVERY = 2.0


def _follow_remotes(service: RunService, log: Any, stop: threading.Event) -> None:
    """Follow, from this long-lived process, every remote run whose follower left: the sidebar
    and a restarted kernel's widget see it move on without anyone attaching by hand. Ends when
    the server stops (``stop``)."""
    while not stop.wait(FOLLOW_EVERY):
        try:
            for run in service.attach_all():
                log.info("soopervisor: following remote run %s on %s again", run.id, run.remote)
        except SoopervisorError as e:
            log.warning("soopervisor: could not look for remote runs to follow: %s", e.message)


def teardown(serverapp: Any) -> None:
    """The server stops: no more following, and the remote runs it follows are let go at once
    (the next Jupyter server or kernel follows them from where this one stopped)."""
    from soopervisor.lifecycle import active_runs

    stop = serverapp.web_app.settings.get("soopervisor_stop")
    if stop is not None:
        stop.set()
    for active in active_runs():
        if getattr(active, "remote_run", False):
            active.detach()


def setup_handlers(serverapp: Any) -> None:
    """Add the routes under ``<base_url>soopervisor/api``; paths resolve inside root_dir."""
    web_app = serverapp.web_app
    service = Soopervisor(config=getattr(serverapp, "config", None)).service()
    log = getattr(serverapp, "log", logging.getLogger("soopervisor"))
    threading.Thread(target=_adopt, args=(service, log), name="soopervisor-adopt", daemon=True).start()
    stop = threading.Event()
    web_app.settings["soopervisor_stop"] = stop
    threading.Thread(target=_follow_remotes, args=(service, log, stop), name="soopervisor-remotes",
                     daemon=True).start()
    root = getattr(serverapp, "root_dir", None) or serverapp.contents_manager.root_dir
    # realpath once: every path parameter is compared against the real root
    settings = {"soopervisor_service": service, "soopervisor_root": os.path.realpath(os.path.expanduser(root)),
                # Jupyter's users may run anything already: a run may name its own image and storage
                "soopervisor_run_overrides": True}
    mount(web_app, web_app.settings.get("base_url", "/"), auth_base=JupyterAuth,
          socket_auth_base=JupyterSocketAuth, settings=settings)

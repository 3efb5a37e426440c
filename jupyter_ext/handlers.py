"""Jupyter's auth bases for the soopervisor API (soopervisor.api), mounted by server.py.

The handlers themselves are soopervisor.api's; these classes follow them in the
MRO and make a request's user known the Jupyter way: ``prepare`` (Jupyter's)
sets ``current_user`` and checks XSRF, ``authorize`` does what
``@web.authenticated`` + ``@authorized`` did on every route.
"""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketHandler

AUTH_RESOURCE = "soopervisor"
AUTH_HINT = "log in to Jupyter or send its token"


async def jupyter_authorize(handler: JupyterHandler, scope: str) -> None:
    """403 without a user (an API handler never redirects to the login page), then
    403 unless Jupyter's authorizer allows ``scope`` (read/write) on "soopervisor"."""
    user = handler.current_user
    if not user:
        raise web.HTTPError(403)
    if not await ensure_async(handler.authorizer.is_authorized(handler, user, scope, AUTH_RESOURCE)):
        raise web.HTTPError(403, f"User is not authorized to {scope} on resource: {AUTH_RESOURCE}.")


class JupyterAuth(APIHandler):
    """The auth base of the REST routes in Jupyter."""

    auth_resource = AUTH_RESOURCE
    auth_hint = AUTH_HINT

    async def authorize(self, scope: str) -> None:
        await jupyter_authorize(self, scope)

    def finish(self, *args: Any, **kwargs: Any) -> Any:
        # APIHandler.finish sets application/json unless told: keep the type the handler chose (file downloads)
        kwargs.setdefault("set_content_type", self._headers.get("Content-Type", "application/json"))
        return super().finish(*args, **kwargs)


class JupyterSocketAuth(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """The auth base of the log websocket in Jupyter: Jupyter's pings, origin check and user."""

    auth_resource = AUTH_RESOURCE
    auth_hint = AUTH_HINT

    async def authorize(self, scope: str) -> None:
        await jupyter_authorize(self, scope)

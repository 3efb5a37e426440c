"""The one REST API and log websocket of soopervisor, served by two homes.

The Jupyter server extension (``soopervisor_jupyter``) and ``soopervisor serve``
(``soopervisor.server``) both mount these handlers with :func:`routes.mount`,
each mixing in its own auth base class. This package depends on tornado only:
it imports neither home nor jupyter_server.
"""

from __future__ import annotations

from .base import ApiError, ApiHandler, LogSocketBase, call

__all__ = ["ApiError", "ApiHandler", "LogSocketBase", "call"]

"""The log websocket: a run's log file, line by line, until the run is over.

Lines come from the log file (the run service writes it redacted), not from the
run's thread, so runs of any process can be followed and a client that lost
the connection resumes with ``?from=N`` exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from .handlers import AUTH_RESOURCE, ApiError, call, error_body, run_json, run_service

#: how often the log file is read; bounds the latency of a new line
POLL = 0.02
#: how often the run record is re-read while no new line arrives
STATUS_EVERY = 0.25
#: at most this many lines (or about this many characters) per message
MAX_LINES, MAX_CHARS = 1000, 1 << 20


def parse_from(raw: str) -> int:
    try:
        start = int(raw)
    except ValueError:
        raise ApiError(
            400, f"'from' must be a line number, not '{raw}'", "lines are numbered from 0"
        ) from None
    if start < 0:
        raise ApiError(400, f"'from' must be 0 or more, not {start}", "lines are numbered from 0")
    return start


def batches(lines: list[str], first: int) -> list[dict[str, Any]]:
    """``lines`` (the first being line ``first``) as "lines" messages of bounded size."""
    out, i = [], 0
    while i < len(lines):
        j, size = i, 0
        while j < len(lines) and j - i < MAX_LINES and (size == 0 or size + len(lines[j]) <= MAX_CHARS):
            size += len(lines[j])
            j += 1
        out.append({"type": "lines", "from": first + i, "lines": lines[i:j]})
        i = j
    return out


def close_reason(text: str) -> str:
    """A websocket close reason: at most 123 bytes of UTF-8."""
    return text.encode()[:120].decode(errors="ignore")


class LogSocketHandler(WebSocketMixin, WebSocketHandler, JupyterHandler):
    """``/runs/{id}/log?from=N``: "lines" messages, then one "end", then close."""

    auth_resource = AUTH_RESOURCE
    _task: asyncio.Task | None = None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # refused before the upgrade: the same JSON errors as the REST routes
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(status_code, exc)))

    async def get(self, run_id: str) -> None:
        # refuse before upgrading: an unauthenticated client never gets a socket
        if self.current_user is None:
            raise web.HTTPError(403)
        allowed = self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        if not await ensure_async(allowed):
            raise web.HTTPError(403)
        self._start = parse_from(self.get_query_argument("from", "0"))
        self._service = run_service(self.settings)
        self._run = await call(self._service.get, run_id)  # 404 for an unknown run
        await super().get(run_id)

    def open(self, run_id: str) -> None:  # type: ignore[override]
        super().open(run_id)
        self._task = asyncio.ensure_future(self._follow())

    def on_message(self, message: str | bytes) -> None:
        pass  # the client only listens

    def on_close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _send(self, msg: dict[str, Any]) -> None:
        await self.write_message(json.dumps(msg))

    async def _send_lines(self, lines: list[str], first: int) -> None:
        for msg in batches(lines, first):
            await self._send(msg)

    async def _follow(self) -> None:
        run = self._run
        # a record without a log (written by some other tool) still ends properly
        tail = await call(self._service.follow, run.id, self._start)
        checked = 0.0
        try:
            while True:
                first = tail.next
                lines = await asyncio.to_thread(tail.read)
                if lines:
                    await self._send_lines(lines, first)
                elif time.monotonic() - checked >= STATUS_EVERY:
                    checked = time.monotonic()
                    run = await call(self._service.get, run.id)  # reaps: a dead owner's run ends too
                    if run.finished:
                        # the run service closes the log before it records the end:
                        # one more read gets every last line
                        first = tail.next
                        rest = await asyncio.to_thread(tail.read)
                        await self._send_lines(rest, first)
                        await self._send({"type": "end", "run": run_json(run)})
                        self.close(1000, "run finished")
                        return
                await asyncio.sleep(POLL)
        except (WebSocketClosedError, asyncio.CancelledError):
            return
        except ApiError as e:
            self.close(1011, close_reason(e.error))
        except Exception:
            self.log.exception("soopervisor: following the log of run %s failed", run.id)
            self.close(1011, close_reason("internal error; the Jupyter server log has the details"))

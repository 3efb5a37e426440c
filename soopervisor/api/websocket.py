"""The log websocket: a run's log file, line by line, until the run is over.

Lines come from the log file (the run service writes it redacted), not from the
run's thread, so runs of any process can be followed and a client that lost
the connection resumes with ``?from=N`` exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from tornado.websocket import WebSocketClosedError

from .base import ApiError, LogSocketBase, call
from .handlers import run_json

#: how often the log file is read; bounds the latency of a new line
POLL = 0.02
#: how often the run record is re-read while no new line arrives
STATUS_EVERY = 0.25
#: at most this many lines (or about this many characters) per message
MAX_LINES, MAX_CHARS = 1000, 1 << 20
LOG = logging.getLogger("soopervisor.api")


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


class LogSocketHandler(LogSocketBase):
    """``/runs/{id}/log?from=N``: "lines" messages, then one "end", then close."""

    _task: asyncio.Task | None = None

    async def before_upgrade(self, run_id: str) -> None:  # type: ignore[override]
        # after authorize("read"), before the upgrade: a bad request or unknown run gets JSON, not a socket
        self._start = parse_from(self.get_query_argument("from", "0"))
        service = self.settings.get("soopervisor_service")
        if service is None:  # a home set up by hand: a default service
            from soopervisor.service import RunService

            service = RunService()
        self._service = service
        self._run = await call(self._service.get, run_id)  # 404 for an unknown run

    def open(self, run_id: str) -> None:  # type: ignore[override]
        super().open(run_id)  # Jupyter's WebSocketMixin starts its pings here
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
        except Exception:  # noqa: BLE001 - logged with its traceback; the client gets a close reason
            getattr(self, "log", LOG).exception("soopervisor: following the log of run %s failed", run.id)
            self.close(1011, close_reason("internal error; the server log has the details"))

"""Raw container output in, redacted lines out to every sink.

Chunks arrive cut anywhere: inside a UTF-8 sequence, inside a secret, inside a
line. Order matters: decode (invalid bytes become U+FFFD), redact (so no sink
ever sees a secret), then split into lines for the sinks.
"""
from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Callable, Iterable

from .redact import Redactor

LineSink = Callable[[str], None]

#: lines longer than this are passed on in pieces, so one huge line cannot
#: exhaust memory or stall a live view
MAX_LINE = 64 * 1024

STAGE_START = "==> soopervisor: "
STAGE_FAILED = re.compile(r"^!!! soopervisor: (?P<stage>.+) failed with exit code (?P<code>\d+)")
# how ploomber 0.23 names the task that broke the build:
#   TaskBuildError: Error when executing task 'clean'. ...
#   TaskBuildError: Error building task "clean"
_FAILED_TASK = re.compile(r"""Error (?:when executing|building) task ['"](?P<task>[^'"]+)['"]""")


class LogStream:
    """Feed it bytes with ``write``; every sink gets whole, redacted lines."""

    def __init__(self, redactor: Redactor, sinks: Iterable[LineSink] = (), tail: int = 200) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._redacting = redactor.stream()
        self._sinks = list(sinks)
        self._pending = ""
        self.tail: deque[str] = deque(maxlen=tail)
        self.stage: str | None = None
        self.failed_stage: str | None = None
        self.failed_task: str | None = None

    def add_sink(self, sink: LineSink) -> None:
        self._sinks.append(sink)

    def write(self, data: bytes) -> None:
        self._push(self._redacting.feed(self._decoder.decode(data)))

    def note(self, text: str) -> None:
        """A line of soopervisor's own, in order with the container's output."""
        self._push(self._redacting.feed(text if text.endswith("\n") else text + "\n"))

    def close(self) -> None:
        self._push(self._redacting.feed(self._decoder.decode(b"", final=True)))
        self._push(self._redacting.flush())
        if self._pending:
            self._emit(self._pending + "\n")
            self._pending = ""

    def _push(self, text: str) -> None:
        if not text:
            return
        buf = self._pending + text
        start = 0
        while True:
            nl = buf.find("\n", start)
            if nl == -1:
                break
            self._emit(buf[start : nl + 1])
            start = nl + 1
        rest = buf[start:]
        while len(rest) > MAX_LINE:
            self._emit(rest[:MAX_LINE] + "\n")
            rest = rest[MAX_LINE:]
        self._pending = rest

    def _emit(self, line: str) -> None:
        self._observe(line)
        self.tail.append(line)
        for sink in self._sinks:
            sink(line)

    def _observe(self, line: str) -> None:
        if line.startswith(STAGE_START):
            self.stage = line[len(STAGE_START) :].strip()
            return
        m = STAGE_FAILED.match(line)
        if m:
            self.failed_stage = m.group("stage")
            return
        if self.failed_task is None:
            m = _FAILED_TASK.search(line)
            if m:
                self.failed_task = m.group("task")

"""Raw container output in, redacted lines out to every sink.

Chunks arrive cut anywhere: inside a UTF-8 sequence, inside a secret, inside a
line. Order matters: redact the bytes (so no sink ever sees a secret, whatever
bytes it holds), decode (invalid bytes become U+FFFD), then split into lines
for the sinks.

Our own markers (``==> soopervisor: <stage>``, ``!!! soopervisor: <stage>
failed``, ploomber's "Error when executing task") are looked for in the raw
lines, before redaction: a secret as short as ``=`` or ``so`` would otherwise
mask part of a marker and hide the stage or the failed task. Only the names
found are kept, and they are redacted as they are in the log.
"""
from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Callable, Iterable

from .redact import Redactor, to_bytes

LineSink = Callable[[str], None]

#: lines longer than this are passed on in pieces, so one huge line cannot
#: exhaust memory or stall a live view
MAX_LINE = 64 * 1024

STAGE_START = "==> soopervisor: "
STAGE_FAILED = re.compile(r"^!!! soopervisor: (?P<stage>.+) failed with exit code (?P<code>\d+)")
# the same, on the raw bytes the container wrote
_STAGE_START = STAGE_START.encode()
_STAGE_FAILED = re.compile(STAGE_FAILED.pattern.encode())
# how ploomber 0.23 names the task that broke the build:
#   TaskBuildError: Error when executing task 'clean'. ...
#   TaskBuildError: Error building task "clean"
_FAILED_TASK = re.compile(rb"""Error (?:when executing|building) task ['"](?P<task>[^'"\n]+)['"]""")


class LogStream:
    """Feed it bytes with ``write``; every sink gets whole, redacted lines.

    ``stage`` is the stage running (the last one announced), ``failed_stage``
    the first stage that failed, ``failed_task`` the first task ploomber
    reported as failed; each redacted, None until seen.
    """

    def __init__(
        self,
        redactor: Redactor,
        sinks: Iterable[LineSink] = (),
        tail: int = 200,
        on_stage: Callable[[str], None] | None = None,
    ) -> None:
        self._redactor = redactor
        self._on_stage = on_stage  # told each stage announced, redacted
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._redacting = redactor.stream()
        self._sinks = list(sinks)
        self._pending = ""
        # the raw line being written, for our markers only; never shown
        self._raw = b""
        self._raw_overlong = False  # the rest of an over-long raw line is not looked at
        self.tail: deque[str] = deque(maxlen=tail)
        self.stage: str | None = None
        self.failed_stage: str | None = None
        self.failed_task: str | None = None

    def add_sink(self, sink: LineSink) -> None:
        self._sinks.append(sink)

    def write(self, data: bytes) -> None:
        self._watch(data)
        self._push(self._decoder.decode(self._redacting.feed(data)))

    def note(self, text: str) -> None:
        """A line of soopervisor's own, in order with the container's output."""
        self.write(to_bytes(text if text.endswith("\n") else text + "\n"))

    def close(self) -> None:
        self._push(self._decoder.decode(self._redacting.flush(), final=True))
        if self._raw and not self._raw_overlong:
            self._observe(self._raw)
        self._raw, self._raw_overlong = b"", False
        if self._pending:
            self._emit(self._pending + "\n")
            self._pending = ""

    # -- the lines sinks see ------------------------------------------------------
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
        self.tail.append(line)
        for sink in self._sinks:
            sink(line)

    # -- the raw lines, for our markers -----------------------------------------------
    def _watch(self, data: bytes) -> None:
        buf = self._raw + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl == -1:
                break
            if not self._raw_overlong:
                self._observe(buf[start:nl])
            self._raw_overlong = False
            start = nl + 1
        rest = buf[start:]
        if self._raw_overlong:
            rest = b""
        elif len(rest) > MAX_LINE:
            # markers and task names sit at the start of a line: look at the
            # first MAX_LINE bytes once, keep nothing of the rest
            self._observe(rest[:MAX_LINE])
            self._raw_overlong = True
            rest = b""
        self._raw = rest

    def _observe(self, line: bytes) -> None:
        if line.startswith(_STAGE_START):
            self.stage = self._name(line, len(_STAGE_START), len(line))
            if self._on_stage is not None:
                self._on_stage(self.stage)
            return
        m = _STAGE_FAILED.match(line)
        if m:
            # the first failure is what broke the run; later stages (collect)
            # may fail as a consequence
            if self.failed_stage is None:
                self.failed_stage = self._name(line, *m.span("stage"))
            return
        if self.failed_task is None:
            m = _FAILED_TASK.search(line)
            if m:
                self.failed_task = self._name(line, *m.span("task"))

    def _name(self, line: bytes, start: int, end: int) -> str:
        """line[start:end] redacted as in the log, stripped, as text."""
        return self._redactor.redact_part(line, start, end).decode("utf-8", "replace").strip()

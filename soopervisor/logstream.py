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

Task events (soopervisor.progress) are recognised on the raw lines too, by the
run's nonce, wherever the line holds one (a progress bar may precede it). An
accepted event is written as its canonical line, its values redacted and the
nonce left out; a pipeline line that imitates either form is written with a
``\\`` in front. Then every line, ours included, passes the redactor.
"""
from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Callable, Iterable

from .progress import RAW_PREFIX, TASK_LINE, TaskEvent, from_json
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

#: what ``failed_task`` starts with when the DAG could not even be built
LOAD_FAILED = "the pipeline failed to load"
# ploomber 0.23 loading a pipeline: "Loading pipeline...", then either a task
# starts building (a progress bar, "Building task 'x'") or the load fails with
# its message, one or more lines, up to our stage-failure marker:
#   Error: Failed to determine task class for source 'functions.emit': An error occured
#   when trying to import dotted path 'functions.emit': No module named 'xgboost' (...)
#   Error: Failed to initialize NotebookRunner task with source 'nb.ipynb'.
#   No such kernel named nokernel
_LOADING = b"Loading pipeline..."
_TASKS_STARTED = re.compile(rb"Building task |Executing task |DAG build failed|DAG build succeeded|it/s\]")
_LOAD_ERROR = b"Error: "
# an exception line of a Python traceback (when the load fails outside ploomber's own report)
_EXCEPTION_LINE = re.compile(rb"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)(?:: .*)?$")
_NO_MODULE = re.compile(r"No module named '(?P<module>[^']+)'")
_SYNTAX = re.compile(r"(?:^|: )(?P<message>(?:invalid syntax|unexpected indent|unindent does not match|"
                     r"'.' was never closed|unterminated string literal|expected ':')[^:]*)$")
# where ploomber left a failed notebook task's partially executed notebook
_PARTIAL = re.compile(rb"Partially executed notebook available at (?P<path>\S+)")
#: errors of a container that could not reach a host (DNS, refused, unreachable),
#: as Python, urllib3, requests and curl print them
_NETWORK = re.compile(
    rb"socket\.gaierror|Temporary failure in name resolution|Name or service not known"
    rb"|No address associated with hostname|nodename nor servname provided"
    rb"|ConnectionRefusedError|Connection refused|NewConnectionError|MaxRetryError"
    rb"|requests\.exceptions\.ConnectionError|urllib\.error\.URLError|Network is unreachable"
    rb"|No route to host|Could not resolve host|Failed to establish a new connection"
)
#: how much of a load error or a network error line is kept
_KEEP = 500
_RAW_EVENT = RAW_PREFIX.encode()
_TASK_LINE = TASK_LINE.encode()


def is_network_error(text: str) -> bool:
    """Whether ``text`` (an error line) says a host could not be reached."""
    return _NETWORK.search(text.encode("utf-8", "replace")) is not None


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
        nonce: str | None = None,
        on_task: Callable[[TaskEvent], None] | None = None,
    ) -> None:
        self._redactor = redactor
        self._on_stage = on_stage  # told each stage announced, redacted
        # the run's task-event nonce: lines without it are never events
        self._event_mark = _RAW_EVENT + nonce.encode() + b"::" if nonce else None
        self._on_task = on_task  # told each accepted task event, redacted
        #: the last task event accepted (redacted), and the first failed one
        self.progress: TaskEvent | None = None
        self.task_failure: TaskEvent | None = None
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
        #: the cause line of a pipeline that failed to load (redacted), e.g.
        #: "ModuleNotFoundError: No module named 'xgboost'"
        self.load_error: str | None = None
        #: the first line that says a host could not be reached, and the stage it came in
        self.network_error: str | None = None
        self.network_stage: str | None = None
        #: where ploomber said it left a failed task's partial notebook (a path in the container)
        self.partial_notebook: str | None = None
        self._loading = False  # between "Loading pipeline..." and the first task
        self._load_lines: list[str] | None = None  # the load error's message, while it is printed
        self._load_more = False  # whether the lines that follow belong to it

    def add_sink(self, sink: LineSink) -> None:
        self._sinks.append(sink)

    def write(self, data: bytes) -> None:
        self._push(self._decoder.decode(self._redacting.feed(self._watch(data))))

    def note(self, text: str) -> None:
        """A line of soopervisor's own, in order with the container's output."""
        self.write(to_bytes(text if text.endswith("\n") else text + "\n"))

    def close(self) -> None:
        last = b""
        if self._raw and not self._raw_overlong:
            last = self._line_out(self._raw)
        self._raw, self._raw_overlong = b"", False
        self._push(self._decoder.decode(self._redacting.feed(last) + self._redacting.flush(), final=True))
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
    def _watch(self, data: bytes) -> bytes:
        """Look at each whole raw line; return the bytes to redact (task events rewritten).

        A line is held until its newline (sinks get whole lines anyway), except
        an over-long one, which passes on as it comes.
        """
        buf = self._raw + data
        out = bytearray()
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl == -1:
                break
            if self._raw_overlong:
                out += buf[start : nl + 1]
            else:
                out += self._line_out(buf[start:nl]) + b"\n"
            self._raw_overlong = False
            start = nl + 1
        rest = buf[start:]
        if self._raw_overlong:
            out += rest
            rest = b""
        elif len(rest) > MAX_LINE:
            # markers and task names sit at the start of a line: look at the
            # first MAX_LINE bytes once, keep nothing of the rest
            self._observe(rest[:MAX_LINE])
            self._raw_overlong = True
            out += rest
            rest = b""
        self._raw = rest
        return bytes(out)

    def _line_out(self, line: bytes) -> bytes:
        """One whole raw line (no newline) as it goes on to the redactor."""
        mark = self._event_mark
        at = line.find(mark) if mark else -1
        if at != -1:
            event = from_json(line[at + len(mark) :].decode("utf-8", "replace"))
            if event is not None:
                before = line[:at]
                self._observe(before)
                event = self._accept(event)
                text = to_bytes(event.line())
                # a progress bar drawn before the event on the same line keeps its own line
                return before + b"\n" + text if before.replace(b"\r", b"").strip() else text
            line = line.replace(mark, _RAW_EVENT + b"(nonce)::")  # malformed: never print the nonce
        self._observe(line)
        if line.startswith((_TASK_LINE, _RAW_EVENT)):
            return b"\\" + line  # the pipeline's own line that looks like ours
        return line

    def _accept(self, event: TaskEvent) -> TaskEvent:
        """Redact an event's values (the task name is data), keep it, tell the listener."""
        red = self._redactor.redact
        event = TaskEvent(event.event, event.done, event.total,
                          red(event.task) if event.task is not None else None,
                          red(event.error) if event.error is not None else None, event.at, event.up_to_date,
                          [red(p) for p in event.products] if event.products is not None else None)
        self.progress = event
        if event.event == "failed" and self.task_failure is None:
            self.task_failure = event
            if self.failed_task is None and event.task:
                self.failed_task = event.task
        if self._on_task is not None:
            self._on_task(event)
        return event

    def _observe(self, line: bytes) -> None:
        self._observe_failure(line)
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
            self._end_load_error()
            return
        if self.failed_task is None:
            m = _FAILED_TASK.search(line)
            if m:
                self.failed_task = self._name(line, *m.span("task"))

    def _observe_failure(self, line: bytes) -> None:
        """The causes a failure summary names: load errors, network errors, the partial notebook."""
        if self.network_error is None and _NETWORK.search(line):
            self.network_error = self._name(line, 0, min(len(line), _KEEP))
            self.network_stage = self.stage
        if self.partial_notebook is None:
            m = _PARTIAL.search(line)
            if m:
                self.partial_notebook = self._name(line, *m.span("path")).rstrip(".")
        if line.startswith(_STAGE_START) or _STAGE_FAILED.match(line):
            return
        if line.strip() == _LOADING:
            self._loading = True
            return
        if not self._loading:
            return
        if _TASKS_STARTED.search(line):
            self._loading = False
            self._load_lines = None
            return
        if self._load_lines is not None:
            if self._load_more and len(self._load_lines) < 8 and line.strip():
                self._load_lines.append(self._name(line, 0, min(len(line), _KEEP)))
        elif line.startswith(_LOAD_ERROR):
            self._load_lines = [self._name(line, len(_LOAD_ERROR), min(len(line), _KEEP))]
            self._load_more = True  # ploomber's message goes on to our marker
        elif _EXCEPTION_LINE.match(line):
            # a traceback: the first exception line is the root cause of a chain
            self._load_lines = [self._name(line, 0, min(len(line), _KEEP))]
            self._load_more = False

    def _end_load_error(self) -> None:
        lines, self._load_lines, self._loading = self._load_lines, None, False
        if not lines or self.failed_task is not None or self.load_error is not None:
            return
        self.load_error = load_cause(lines)
        self.failed_task = f"{LOAD_FAILED}: {self.load_error}"

    def _name(self, line: bytes, start: int, end: int) -> str:
        """line[start:end] redacted as in the log, stripped, as text."""
        return self._redactor.redact_part(line, start, end).decode("utf-8", "replace").strip()


def load_cause(lines: list[str]) -> str:
    """The one line that says why a pipeline failed to load, from ploomber's (redacted) message.

    A missing module is named as Python names it (``ModuleNotFoundError: No
    module named 'x'``), wherever ploomber's message quotes it; otherwise the
    last line of a message of several (ploomber puts the cause last), else
    its one line.
    """
    text = " ".join(lines)
    m = _NO_MODULE.search(text)
    if m:
        return f"ModuleNotFoundError: {m.group(0)}"
    m = _SYNTAX.search(text)
    if m:  # "...source 'functions.emit': invalid syntax (functions.py, line 1)."
        return f"SyntaxError: {m.group('message').rstrip('.')}"
    cause = lines[-1] if len(lines) > 1 else lines[0]
    return cause.strip()[:_KEEP] or "no message"

"""Task-level progress: the events the build stage's runner reports, as every view reads them.

The container prints ``::soopervisor-task::<nonce>::<json>`` (see
soopervisor/script/task_events.py). The log stream accepts only lines carrying
the run's nonce, and writes each accepted event to the log as one canonical
line, ``--> soopervisor: task <json>``, with the nonce left out and its values
redacted; a line of the pipeline's own that starts like either form is written
with a ``\\`` in front, so no reader of the log (the sidebar, the widget, the CLI)
can be fooled by what a task printed. The log file and REST keep every line as
it was written (carriage-return redraws included); the views show a line's last
redraw (:func:`collapse`).
"""
from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .errors import SoopervisorError

#: what the container's runner prints before the nonce
RAW_PREFIX = "::soopervisor-task::"
#: the environment variable that hands the runner its nonce
NONCE_VARIABLE = "SOOPERVISOR_TASK_EVENTS"
#: how an accepted event is written to the log
TASK_LINE = "--> soopervisor: task "
#: the events, in the order a task goes through them
EVENTS = ("plan", "started", "finished", "failed", "skipped")
#: at most this many record writes per second while events pour in
WRITES_PER_SECOND = 4
#: how much of a task name or exception line is kept
MAX_TEXT = 500
#: the most product paths a finished event may name (the runner's MAX_PRODUCTS; each at most MAX_TEXT)
MAX_PRODUCTS = 100


def new_nonce() -> str:
    """A per-run secret the runner puts in every event line."""
    return secrets.token_hex(16)


@dataclass
class TaskEvent:
    event: str
    done: int
    total: int
    task: str | None = None
    error: str | None = None  # a failed task's exception line, e.g. "ValueError: boom"
    at: float | None = None  # when the runner reported it (Unix seconds, the container's clock)
    up_to_date: int | None = None  # plan: how many tasks ploomber skips as up to date (not in total)
    # finished: the task's file products, absolute paths in the container (None: not reported)
    products: list[str] | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None},
                          ensure_ascii=False, separators=(",", ":"))

    def line(self) -> str:
        """The canonical log line (no newline)."""
        return TASK_LINE + self.to_json()

    def describe(self) -> str:
        """``task 3/7 clean_data`` (the task being built is number done+1)."""
        return describe(self)


def from_json(text: str) -> TaskEvent | None:
    """An event from its JSON; None unless it is a well-formed event."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("event") not in EVENTS:
        return None
    done, total = data.get("done"), data.get("total")
    if not (isinstance(done, int) and isinstance(total, int)) or isinstance(done, bool) or not 0 <= done <= max(total, 0):
        return None
    task, error, at = data.get("task"), data.get("error"), data.get("at")
    if (task is not None and not isinstance(task, str)) or (error is not None and not isinstance(error, str)):
        return None
    if not isinstance(at, (int, float)) or isinstance(at, bool) or not math.isfinite(at):
        at = None
    up_to_date = data.get("up_to_date")
    if not isinstance(up_to_date, int) or isinstance(up_to_date, bool) or up_to_date < 0 or data["event"] != "plan":
        up_to_date = None
    products = data.get("products")
    if products is not None and not _products_ok(products):
        return None  # the runner never writes such a list: the whole line is refused, not half believed
    if data["event"] != "finished":
        products = None
    return TaskEvent(data["event"], done, total, task[:MAX_TEXT] if task else task,
                     error[:MAX_TEXT] if error else error, float(at) if at is not None else None, up_to_date,
                     list(products) if products is not None else None)


def _products_ok(products: Any) -> bool:
    """A list of at most MAX_PRODUCTS paths, each a non-empty string of at most MAX_TEXT, no NUL."""
    return (isinstance(products, list) and len(products) <= MAX_PRODUCTS
            and all(isinstance(p, str) and 0 < len(p) <= MAX_TEXT and "\0" not in p for p in products))


def parse_line(line: str) -> TaskEvent | None:
    """The event of a canonical log line (as the log stream wrote it); None for any other line."""
    if not line.startswith(TASK_LINE):
        return None
    return from_json(line[len(TASK_LINE):].strip())


def describe(event: TaskEvent) -> str:
    """What a view shows for the state after ``event``: ``task 3/7 clean_data``, ``7/7 tasks done``."""
    if event.event == "plan":
        return f"{event.total} task{'s' if event.total != 1 else ''} to build"
    if event.event == "started":
        return f"task {min(event.done + 1, event.total)}/{event.total} {event.task}"
    if event.event == "failed":
        return f"task {event.task} failed ({event.done}/{event.total}): {event.error or 'no message'}"
    if event.event == "skipped":
        return f"task {event.task} skipped: an upstream task failed"
    if event.done >= event.total:
        return f"{event.done}/{event.total} tasks done"
    return f"task {event.task} done ({event.done}/{event.total})"


def view_line(event: TaskEvent) -> str | None:
    """What a log view shows in place of an event's line: a task starting, failing or skipped, and
    the end; None for the others (the plan, each task's end), which only move the progress."""
    if event.event == "plan" or (event.event == "finished" and event.done < event.total):
        return None
    return "--> soopervisor: " + describe(event)


def collapse(line: str) -> str:
    """A line as a terminal shows it: the last carriage-return redraw that is not blank.

    ``"\\rExecuting:  33%|███\\rExecuting: 100%|██████\\n"`` shows its last state; a
    line ending in ``\\r\\n`` keeps its text. The newline, if any, is kept.
    """
    if "\r" not in line:
        return line
    end = "\n" if line.endswith("\n") else ""
    body = line[: len(line) - len(end)]
    for part in reversed(body.split("\r")):
        if part.strip():
            return part + end
    return end


class RecordWriter:
    """Writes the progress to the run record: the newest state, at most WRITES_PER_SECOND times a second.

    ``push`` never blocks on the store for an event that can wait: a burst of
    events becomes one write of the last state, a short while later; ``flush``
    writes what is pending (at the run's end). A write the store refuses is
    dropped: the next one carries the newer state.
    """

    def __init__(self, write: Callable[..., Any], per_second: float = WRITES_PER_SECOND) -> None:
        self._write = write
        self._interval = 1.0 / per_second
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last = float("-inf")  # the first write goes at once
        self._timer: threading.Timer | None = None

    def push(self, **changes: Any) -> None:
        with self._lock:
            self._pending = {**(self._pending or {}), **changes}
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, None
            if not pending:
                return
            self._last = time.monotonic()
            # written under the lock: two writes of one run never race each other's order
            try:
                self._write(**pending)
            except SoopervisorError:
                pass  # the run store busy or gone: progress must never stop a run; the next write is newer


def record_changes(event: TaskEvent) -> dict[str, Any]:
    """The run record's progress columns after ``event``."""
    changes: dict[str, Any] = {"tasks_done": event.done, "tasks_total": event.total}
    if event.event == "plan" and event.up_to_date is not None:
        changes["tasks_up_to_date"] = event.up_to_date
    if event.event in ("started", "failed"):
        changes["task"] = event.task
    if event.event == "failed":
        changes["task_error"] = event.error
    return changes

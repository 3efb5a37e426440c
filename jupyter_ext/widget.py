"""The live log of a run under a notebook cell.

``append(line)`` is called from the run's thread for every (already redacted)
line. Lines are buffered and sent to the front end in batches: a model update
costs a comm message, and a pipeline can print thousands of lines a second.
The log is split into chunks of ``CHUNK`` lines, each its own HTML model, so a
flush re-sends only the chunk being filled, never the whole log.

The log follows its tail without any front-end code: the chunks sit in a scroll
box laid out ``column-reverse``, which browsers keep scrolled to its end as it
grows. Past MAX_LINES the oldest chunk goes, and a note says how many lines are
not shown. When the run ends, Stop is hidden, the stage leaves the status line
and the time freezes at the run's duration.
"""
from __future__ import annotations

import html
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import ipywidgets as w

from soopervisor.logstream import STAGE_FAILED, STAGE_START
from soopervisor.progress import TaskEvent, collapse, parse_line, view_line

if TYPE_CHECKING:  # pragma: no cover
    from soopervisor.runs import Run

#: at most one model update per this many seconds while lines pour in
FLUSH_INTERVAL = 0.05
#: the log keeps the last MAX_LINES lines, in chunks of CHUNK lines
MAX_LINES = 2000
CHUNK = 200
#: lines highlighted at the end of a failed run's log
FAILED_TAIL = 20
#: how often the status line (elapsed time) is refreshed while the run goes, in seconds
TICK = 1.0

_COLORS = {"running": "#1565c0", "queued": "#1565c0", "succeeded": "#2e7d32", "failed": "#c62828",
           "cancelled": "#8d6e63", "interrupted": "#8d6e63", "starting": "#1565c0"}
_PRE = "margin:0;padding:0 4px;font-size:12px;line-height:1.35;white-space:pre-wrap;word-break:break-all;background:none"


def _parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).timestamp()


def duration_text(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: as long as it needs, no longer."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LogWidget(w.VBox):
    """Status line, Stop button and the log of one run; follows it until it ends."""

    def __init__(self, run: Run | None = None) -> None:
        self.status = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger",
                                    tooltip="cancel the run and remove its container",
                                    layout=w.Layout(width="90px"))
        self.stop_button.on_click(self._on_stop)
        self.outcome = w.HTML()  # the failure: task and error, in red
        # shown once the oldest lines were dropped: how many, and where the whole log is
        self.hidden_note = w.HTML(layout=w.Layout(display="none"))
        self.log_box = w.VBox(layout=w.Layout(display="block", flex="0 0 auto"))  # the chunks, in order
        # column-reverse with a single child: the browser anchors the scroll position at the
        # end, so the newest line stays in view as chunks grow (no JavaScript of our own)
        self.log_view = w.Box([self.log_box], layout=w.Layout(
            display="flex", flex_flow="column-reverse", max_height="360px", overflow="auto",
            border="1px solid #ddd"))
        super().__init__([w.HBox([self.stop_button, self.status]), self.outcome, self.hidden_note,
                          self.log_view])
        self.run: Run | None = None
        self.stage: str | None = None
        self.failed_stage: str | None = None
        #: the last task event (soopervisor.progress): the task being built, n/total
        self.progress: TaskEvent | None = None
        self._lock = threading.RLock()  # the buffer and every model update
        self._pending: list[str] = []
        self._lines: deque[str] = deque(maxlen=MAX_LINES)  # what the log shows
        self._chunks: list[w.HTML] = []
        self._live: list[str] = []  # lines of the chunk being filled
        self._reordered = False  # chunks added or rotated since the children were sent
        self._last_flush = 0.0
        #: the wall clock (a test replaces it to see the time move without sleeping)
        self.clock = time.time
        self._started = self.clock()
        self._ended: float | None = None  # when the run ended: the time shown stops there
        #: every line received, tqdm redraws included (one line each, however many redraws)
        self.lines_received = 0
        self._lines_logged = 0  # lines that went into the log view (event lines may not)
        self._follower: threading.Thread | None = None
        self._stopping = False
        self._done = threading.Event()
        self._wake = threading.Event()  # lines are waiting for the follower
        self.stop_button.disabled = True  # until there is a run to stop
        self._set_status("starting")
        if run is not None:
            self.attach(run)

    # -- the run --------------------------------------------------------------
    def attach(self, run: Run) -> None:
        """Follow ``run`` (updated in place by its thread): tick, flush, notice the end."""
        self.run = run
        self._started = _parse_iso(run.started_at) or self._started
        self.stop_button.disabled = False
        self._set_status(run.status)
        # a daemon thread: it never keeps the kernel alive, and it returns when the run ends
        self._follower = threading.Thread(target=self._follow, name=f"soopervisor-widget-{run.id}",
                                          daemon=True)
        self._follower.start()

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended and the widget showed it; False on timeout."""
        return self._done.wait(timeout)

    def _follow(self) -> None:
        last_tick = 0.0
        while True:
            self._wake.clear()  # before looking: an append from now on wakes the wait below
            if self.run.finished:
                self.flush()  # every line was appended before the status changed
                self._finish()
                return
            if self._pending:
                # flush when the interval since the last flush is over, not a tick later
                time.sleep(max(0.0, self._last_flush + FLUSH_INTERVAL - time.monotonic()))
                self.flush()
            now = time.monotonic()
            if now - last_tick >= TICK:  # the elapsed time moves even when no line comes
                last_tick = now
                self._set_status(self.run.status)
            self._wake.wait(FLUSH_INTERVAL)

    def _finish(self) -> None:
        run = self.run
        with self._lock:
            self._ended = _parse_iso(run.finished_at) or self.clock()
            self.stop_button.disabled = True
            self.stop_button.layout.display = "none"  # nothing left to stop
            self._set_status(run.status)
            if run.status != "succeeded":
                self.outcome.value = failure_html(run)
                if run.status == "failed":
                    self._highlight_tail()
        self._done.set()

    def _on_stop(self, _button: w.Button | None = None) -> None:
        if self.run is None or self._stopping:
            return
        self._stopping = True
        self.stop_button.disabled = True
        self._set_status("stopping")
        # stop_run waits for the container to go: never block the kernel's main thread on it
        threading.Thread(target=self._stop, daemon=True).start()

    def _stop(self) -> None:
        import soopervisor
        from soopervisor.errors import SoopervisorError

        try:
            soopervisor.stop_run(self.run.id)
        except SoopervisorError as e:
            with self._lock:
                hint = f" <i>hint: {html.escape(e.hint)}</i>" if e.hint else ""
                self.outcome.value = f"<div style='color:#c62828'>could not stop the run: {html.escape(e.message)}{hint}</div>"
                self._stopping = False
                self.stop_button.disabled = self.finished

    # -- lines -------------------------------------------------------------------
    def append(self, line: str) -> None:
        """Take one redacted log line (any thread); it shows within ~FLUSH_INTERVAL."""
        with self._lock:
            self._pending.append(line)
            # a quiet stream shows each line at once; a busy one is batched by the follower
            if time.monotonic() - self._last_flush > FLUSH_INTERVAL:
                self.flush()
            else:
                self._wake.set()

    def flush(self) -> None:
        """Send the buffered lines to the front end (one update per touched chunk)."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            self.lines_received += len(lines)
            for raw in lines:
                line = self._shown(raw)
                if line is None:
                    continue
                self._observe(line)
                self._lines.append(line)
                self._lines_logged += 1
                if len(self._live) >= CHUNK:  # the last chunk is full: show it whole, start another
                    self._render()
                    self._live = []
                    self._new_chunk()
                self._live.append(line)
            self._render()
            if self._reordered:  # one children update per flush, after the contents are right
                self.log_box.children = tuple(self._chunks)
                self._reordered = False
                self._note_hidden()
            self._set_status(self.run.status if self.run else "starting")

    @property
    def lines_hidden(self) -> int:
        """Lines of the log no longer shown: the oldest chunks, dropped past MAX_LINES."""
        with self._lock:
            shown = max(0, len(self._chunks) - 1) * CHUNK + len(self._live)
            return max(0, self._lines_logged - shown)

    def _note_hidden(self) -> None:
        hidden = self.lines_hidden
        if not hidden:
            return
        where = ""
        if self.run is not None and self.run.log_path:
            where = f"; the whole log: <code>{html.escape(self.run.log_path)}</code>"
        self.hidden_note.value = (f"<div class='soopervisor-hidden-lines' style='color:var(--jp-ui-font-color2, #555);font-size:12px'>"
                                  f"{hidden:,} earlier line{'s' if hidden != 1 else ''} not shown{where}</div>")
        self.hidden_note.layout.display = None

    def _new_chunk(self) -> None:
        """Start a chunk; past MAX_LINES the oldest chunk's model is reused (creating models is slow)."""
        if len(self._chunks) < MAX_LINES // CHUNK:
            self._chunks.append(w.HTML())
        else:
            self._chunks.append(self._chunks.pop(0))
        self._reordered = True

    def _render(self, chunk: w.HTML | None = None, lines: list[str] | None = None, tail: int = 0) -> None:
        """Show a chunk (default: the one being filled); its last ``tail`` lines marked as the failure."""
        if not self._chunks:
            self._new_chunk()
        chunk = chunk or self._chunks[-1]
        lines = self._live if lines is None else lines
        split = len(lines) - min(tail, len(lines))
        value = f"<pre style='{_PRE}'>{html.escape(''.join(lines[:split]))}</pre>"
        if tail:
            value += (f"<pre class='soopervisor-failed-tail' style='{_PRE};background:#fdecea;"
                      f"border-left:3px solid #c62828'>{html.escape(''.join(lines[split:]))}</pre>")
        chunk.value = value

    def _highlight_tail(self) -> None:
        """Mark the last FAILED_TAIL lines, in the last chunk and the one before when it spills over."""
        if not self._live:
            return
        n = len(self._live)
        self._render(tail=FAILED_TAIL)
        if n < FAILED_TAIL and len(self._chunks) > 1:
            before = list(self._lines)[-n - CHUNK : -n]
            self._render(self._chunks[-2], before, tail=FAILED_TAIL - n)

    def _shown(self, line: str) -> str | None:
        """The line as the log shows it: a task event as its progress line (or nothing), a
        progress bar's redraws as their last state. Event lines come from the run's log stream,
        which never passes on the pipeline's imitations."""
        event = parse_line(line)
        if event is not None:
            self.progress = event
            shown = view_line(event)
            return shown + "\n" if shown else None
        if "\r" in line:
            line = collapse(line)
            if not line.strip():
                return None  # a bar cleared before a line of its own
        return line

    @property
    def progress_text(self) -> str | None:
        """``task 2/3 clean``: the task being built and how many of how many, from the events seen,
        else from the run's record (a widget attached late)."""
        event = self.progress
        if event is None and self.run is not None and getattr(self.run, "tasks_total", None):
            event = TaskEvent("started" if not self.run.finished else "finished", self.run.tasks_done or 0,
                              self.run.tasks_total, self.run.task)
        if event is None or event.event == "plan":
            return None
        if event.event == "started":
            return f"task {min(event.done + 1, event.total)}/{event.total} {event.task}"
        if event.event == "failed":
            return f"task {event.task} failed ({event.done}/{event.total})"
        return f"{event.done}/{event.total} tasks done"

    def _final_progress(self) -> str | None:
        """At the end no task is "being built": the count of tasks done, the record's if it saw more."""
        event = self.progress
        if event is None or event.event == "failed" or event.event == "finished":
            return self.progress_text
        done = max(event.done, getattr(self.run, "tasks_done", None) or 0)
        return f"{done}/{event.total} tasks done"

    def _observe(self, line: str) -> None:
        if line.startswith(STAGE_START):
            self.stage = line[len(STAGE_START):].strip()
        elif STAGE_FAILED.match(line):
            self.failed_stage = STAGE_FAILED.match(line).group("stage")
        # the run's record knows the stage from the raw log: a short secret (`so`) masks our
        # markers in the lines shown here, never in the record
        if self.run is not None and self.run.stage:
            self.stage = self.run.stage

    # -- status ------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds since the run started; once it ended, its duration (it no longer moves)."""
        end = self._ended
        if end is None and self.run is not None and self.run.finished_at:
            end = _parse_iso(self.run.finished_at)
        return max(0.0, (end or self.clock()) - self._started)

    def _set_status(self, status: str) -> None:
        if self._stopping and status in ("running", "queued"):
            status = "stopping"
        ended = self.finished or self._ended is not None
        color = _COLORS.get(status, "#555")
        took = duration_text(self.elapsed)
        parts = [f"<b style='color:{color}'>{html.escape(status)}</b>",
                 f"<span class='soopervisor-elapsed'>{'took' if ended else 'elapsed'} {took}</span>"]
        if self.stage and not ended:  # the final status replaces the stage
            parts.append(f"stage: {html.escape(self.stage)}")
        progress = self._final_progress() if ended else self.progress_text
        if progress:
            parts.append(f"<span class='soopervisor-progress'>{html.escape(progress)}</span>")
        n = self.lines_received
        parts.append(f"<span class='soopervisor-lines'>{n:,} line{'s' if n != 1 else ''}</span>")
        if self.run is not None:
            parts.append(f"run <code>{html.escape(self.run.id)}</code> &middot; {html.escape(self.run.project)}"
                         f" @ <code>{html.escape(self.run.short_commit)}</code> ({html.escape(self.run.mode)})")
        value = " &middot; ".join(parts)
        with self._lock:
            if self.status.value != value:
                self.status.value = value

    @property
    def text(self) -> str:
        """The log as shown (the last MAX_LINES lines), for tests and quick checks."""
        with self._lock:
            return "".join(self._lines)


def failure_html(run) -> str:
    """How a run failed, in red: task and error; the failing cell and its error; where the
    partial notebook was stored; the hint. Every value escaped (it is the pipeline's text)."""
    from soopervisor.logstream import LOAD_FAILED

    failed_task = getattr(run, "failed_task", None)
    task = ""
    if failed_task and not failed_task.startswith(LOAD_FAILED):  # a load failure: the error says it
        task = f" at task <b>{html.escape(failed_task)}</b>"
    error = html.escape(run.error or f"the run {run.status}")
    task_error = getattr(run, "task_error", None)
    if task and task_error and task_error not in (run.error or ""):
        # the failed task's exception line first; the run's error says the exit code once
        error = f"<code>{html.escape(task_error)}</code> ({error})"
    parts = [f"<div style='color:#c62828'>✗ run {html.escape(run.id)} {run.status}{task}: {error}</div>"]
    cell, cell_error = getattr(run, "failed_cell", None), getattr(run, "cell_error", None)
    if cell:
        parts.append("<div>the failing cell:</div><pre style='margin:2px 0;padding:4px;background:#fbe9e7'>"
                     f"{html.escape(cell)}</pre>")
    if cell_error:
        parts.append(f"<div style='color:#c62828'><code>{html.escape(cell_error)}</code></div>")
    notebook = getattr(run, "partial_notebook", None)
    if notebook:
        parts.append(f"<div>partially executed notebook: <code>{html.escape(notebook)}</code></div>")
    hint = getattr(run, "hint", None)
    if hint:
        parts.append(f"<div style='color:#8d6e00'>hint: {html.escape(hint)}</div>")
    return "".join(parts)

"""Watching a run from its log file and record: whoever executes or follows it, in any process.

A widget of a restarted kernel, or a terminal that attaches later, sees the same run
as the process that started it: every line of the log file once, in order, and the
record's fields as they change.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

from .errors import SoopervisorError
from .logtail import LogTail
from .runs import Run

#: how often the log file and the record are read
EVERY = 0.1


def watch(run: Run, on_line: Callable[[str], None] | None = None, *, every: float = EVERY) -> Run:
    """``run``, refreshed in place from the store until it ends; ``on_line`` gets each log line
    (from the first) before the end shows. Returns at once; a daemon thread does the watching."""
    from .service import RunService

    service = RunService()
    tail = LogTail(run.log_path or os.devnull)

    def loop() -> None:
        while True:
            fresh = None
            with contextlib.suppress(SoopervisorError):
                fresh = service.store.get(run.id)
            # the log after the record: a record that says "ended" was written after the last line
            lines = tail.read()
            if on_line is not None:
                for line in lines:
                    try:
                        on_line(line)
                    except Exception:  # noqa: BLE001 - a caller's callback: its failure ends the watch, not the run
                        return
            if fresh is not None:
                run.refresh_from(fresh)  # the end shows only once every line was given
            if run.finished:
                return
            time.sleep(every)

    threading.Thread(target=loop, name=f"soopervisor-watch-{run.id}", daemon=True).start()
    return run

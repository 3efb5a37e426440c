"""Runs in progress: started in the background, stopped from anywhere, followed by their log.

A run belongs to the process that started it (the notebook's kernel, the
Jupyter server, a terminal). Stopping a run of this process cancels its
lifecycle; stopping one of another process leaves a cancel marker that its
lifecycle honours, and removes its containers, so the Stop button works
whichever process started the run. Following a log reads the run's log file,
which holds redacted lines only and is flushed line by line.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from .errors import RunNotFound
from .runs import Run, RunStore

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Lifecycle, RunOptions

_ACTIVE: dict[str, Lifecycle] = {}
_LOCK = threading.Lock()


def is_finished(run: Run) -> bool:
    return run.finished


def cancel_marker(run_id: str) -> Path:
    return config.logs_dir() / f"{run_id}.cancel"


def start_background(opts: RunOptions) -> Run:
    """Check and record the run, then execute it in a daemon thread of this process."""
    from .runner import start

    lifecycle = start(opts)
    run = lifecycle.run
    with _LOCK:
        _ACTIVE[run.id] = lifecycle

    def background() -> None:
        try:
            lifecycle.execute()
        except BaseException:  # noqa: S110,BLE001 - the run record and the log say what happened
            pass
        finally:
            with _LOCK:
                _ACTIVE.pop(run.id, None)

    threading.Thread(target=background, name=f"soopervisor-run-{run.id}", daemon=True).start()
    return run


def get_run(run_id: str, store: RunStore | None = None) -> Run:
    run = (store or RunStore()).get(run_id)
    if run is None:
        raise RunNotFound(f"no run with id '{run_id}'", "soopervisor.list_runs() or the runs list shows the ids")
    return run


def stop_run(run_id: str, wait: float = 30.0) -> Run:
    """Cancel a run and remove its container; a finished run is returned unchanged."""
    store = RunStore()
    run = get_run(run_id, store)
    if is_finished(run):
        return run
    with _LOCK:
        lifecycle = _ACTIVE.get(run_id)
    if lifecycle is not None:
        lifecycle.cancel()
        lifecycle.finished.wait(wait)
        return lifecycle.run
    return _stop_foreign(run, store, wait)


def _stop_foreign(run: Run, store: RunStore, wait: float) -> Run:
    """A run of another process: mark it and kill its containers until its record says it ended.

    Killing (not removing) lets the owning process see its container exit,
    record the cancel and remove the container itself, as it always does.
    """
    marker = cancel_marker(run.id)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        _containers(run.id, lambda c: c.kill())
        current = get_run(run.id, store)
        if is_finished(current):
            return current
        time.sleep(0.2)
    # nobody finished it: the process that owned it is gone (killed, rebooted)
    from .runs import now_iso

    _containers(run.id, lambda c: c.remove(force=True))
    return store.update(
        get_run(run.id, store), status="cancelled", finished_at=now_iso(),
        error="cancelled; the process that started the run did not answer",
    )


def _containers(run_id: str, action) -> None:
    from .executors.docker import connect

    for c in connect().containers.list(all=True, filters={"label": f"soopervisor.run={run_id}"}):
        try:
            action(c)
        except Exception:  # noqa: BLE001,S110 - exited or gone meanwhile
            pass


class LogTail:
    """New complete lines of a log file that may still be growing.

    ``start`` skips that many lines, so a client that reconnects with the
    index of the next line it needs gets each line exactly once.
    """

    def __init__(self, path: str | Path, start: int = 0) -> None:
        self.path = Path(path)
        self.next = max(0, start)  # index of the next line read() returns
        self._offset = 0
        self._partial = b""
        self._skip = self.next

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if not data:
            return []
        self._offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()  # an unfinished line waits for its newline
        lines = [c.decode("utf-8", errors="replace") + "\n" for c in chunks]
        if self._skip:
            dropped = min(self._skip, len(lines))
            self._skip -= dropped
            lines = lines[dropped:]
        self.next += len(lines)
        return lines

"""A remote run seen from this process: its local record and log file, fed by ``Remote.follow``.

The process that follows a remote run owns its record (owner, lease), as the process
executing a local run does; it is also where Stop goes. Unlike a local run, nothing
is lost when that process dies: the run goes on at the remote, the record stays
``queued``/``running``, and any process can :func:`attach` to it again (the lines it has
are kept; the follower asks the remote for the rest). Leaving (the process exits, a
Ctrl-C) therefore detaches instead of cancelling.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import SoopervisorError
from ..lifecycle import WATCH_EVERY, _reason, _Sink, forget, owner_fields, register
from ..redact import CREDENTIALS
from ..runs import STATUSES, Run, lease_seconds, lease_until, now_iso, owner_gone, this_host
from .base import FIELDS, RemoteUnavailable

if TYPE_CHECKING:
    from ..runs import RunStore
    from .base import Remote

#: how long a follower waits between attempts while the remote does not answer (doubling up to)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
_ENDED = tuple(s for s in STATUSES if s not in ("queued", "running"))


def owner_left(run: Run, host: str | None = None) -> str | None:
    """Why nobody follows the remote run ``run`` any more (its follower's process died or let its
    lease lapse), or None while its follower may be alive."""
    if run.finished:
        return None
    if not run.owner_pid and not run.lease_until:
        return "nobody follows it"
    # owner_gone judges running records only; a queued remote run has an owner too
    probe = Run(**{**run.to_dict(), "status": "running"})
    return owner_gone(probe, host or this_host())


def lines_in(path: str) -> int:
    """How many whole lines the log file has; a line cut short (its writer died mid-line) is
    removed, so that the follower's next line starts a line of its own."""
    count, end = 0, 0
    with contextlib.suppress(OSError), open(path, "rb+") as f:
        offset = 0
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block.rfind(b"\n")
            if last >= 0:
                end = offset + last + 1
            offset += len(block)
        if end < offset:
            f.truncate(end)
    return count


class ActiveRemote:
    """One remote run followed by this process: ``begin()``, ``cancel()``, ``detach()``, ``result()``."""

    remote_run = True

    def __init__(self, store: RunStore, run: Run, remote: Remote,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.store, self.run, self.remote = store, run, remote
        self.done = threading.Event()  # the follower stopped: the run ended, or this process let go
        self._leave = threading.Event()  # set: stop following (the remote run goes on)
        self.error: BaseException | None = None
        self.cancel_reason: str | None = None
        self._cancel_sent = False
        self._ref_lock = threading.Lock()
        # the remote's lines this log has: its lines, less the notes of ours among them (counted in the handle)
        self._notes = int(run.ref.get("notes", 0) or 0)
        self._start = max(0, (lines_in(run.log_path) if run.log_path else 0) - self._notes)
        self._sinks: list[_Sink] = []
        if on_line is not None:
            self._sinks.append(_Sink(on_line, self._to_file))

    # -- the record and the log, as the remote tells them (Sink) -------------------------------
    def lines(self, lines: list[str]) -> None:
        for line in lines:
            line = CREDENTIALS.redact(line if line.endswith("\n") else line + "\n")
            self._to_file(line)
            for sink in self._sinks:
                sink(line)
        self._start += len(lines)

    def update(self, **fields: Any) -> None:
        changes = {k: v for k, v in fields.items() if k in FIELDS}
        status = changes.get("status")
        if status is not None and status not in STATUSES:
            changes["status"] = status = "failed"
            changes.setdefault("error", f"the remote said {fields.get('status')!r}")
        for key, value in list(changes.items()):
            if isinstance(value, str):
                changes[key] = CREDENTIALS.redact(value)
        if status in _ENDED:
            changes.setdefault("finished_at", now_iso())
            changes["lease_until"] = None
        if changes:
            self._record(**changes)

    def ref(self, **changes: Any) -> None:
        with self._ref_lock:  # the follower and the watcher (a note) both merge into it
            merged = {**self.run.ref, **changes}
            self._record(remote_ref=json.dumps(merged, sort_keys=True))

    def _record(self, **changes: Any) -> None:
        """Write ``changes`` while the record is ours; a record another process took means let go."""
        if self.store.update_if(self.run.id, self._ours(), **changes):
            for k, v in changes.items():
                setattr(self.run, k, v)
        else:
            self._leave.set()

    def _ours(self) -> dict[str, Any]:
        return {"owner_host": self.run.owner_host, "owner_pid": self.run.owner_pid}

    def _to_file(self, line: str) -> None:
        if not self.run.log_path:
            return
        with contextlib.suppress(OSError), open(self.run.log_path, "a", encoding="utf-8", newline="") as f:
            f.write(line)

    def note(self, text: str) -> None:
        """A line of ours in the log (and the terminal), not the remote's: counted in the handle
        first, so that a follower started later knows which lines were the remote's."""
        self._notes += 1
        self.ref(notes=self._notes)
        line = CREDENTIALS.redact(f"soopervisor: {text}\n")
        self._to_file(line)
        for sink in self._sinks:
            sink(line)

    # -- control -------------------------------------------------------------------------------
    def begin(self, daemon: bool = True) -> None:
        register(self.run.id, self)
        threading.Thread(target=self._main, name=f"soopervisor-remote-{self.run.id}", daemon=daemon).start()
        threading.Thread(target=self._watch, name=f"soopervisor-lease-{self.run.id}", daemon=True).start()

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the remote to stop the run (from any thread); the end comes through the follower."""
        if self.cancel_reason is None:
            self.cancel_reason = reason

    def detach(self) -> None:
        """Stop following; the run goes on at the remote and anyone may attach to it again."""
        self._leave.set()

    def leave(self, reason: str) -> None:
        """This process is exiting: the run goes on at the remote; the next process attaches to it."""
        self.detach()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def result(self) -> Run:
        """Wait until the run ends; a Ctrl-C detaches (the run goes on) and is raised again."""
        try:
            while not self.done.wait(0.5):
                pass
        except BaseException:
            self.detach()
            raise
        if self.error is not None:
            raise self.error
        return self.run

    # -- the threads ---------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._follow()
        except BaseException as e:  # noqa: BLE001 - said in the log and the record; result() raises it
            self.error = e
            with contextlib.suppress(SoopervisorError):
                self._record(error=CREDENTIALS.redact(f"not followed any more: {_reason(e)}"))
        finally:
            forget(self.run.id)
            if not self.run.finished:  # let go of the record at once: the next reader may attach
                with contextlib.suppress(SoopervisorError):
                    self.store.update_if(self.run.id, self._ours(), lease_until=now_iso())
            self.done.set()

    def _follow(self) -> None:
        wait = RETRY_FIRST
        said = False
        while not self._leave.is_set():
            try:
                if self.remote.follow(self.run.ref, self._start, self, self._leave):
                    return
                if self._leave.is_set():
                    return
            except RemoteUnavailable as e:
                if not said:
                    self.note(f"{self.remote.name} does not answer ({e.message}); trying again")
                    said = True
                self._leave.wait(wait)
                wait = min(RETRY_MAX, wait * 2)
                continue
            said, wait = False, RETRY_FIRST

    def _watch(self) -> None:
        """Send a Stop to the remote, keep the lease, until the follower is done."""
        period = lease_seconds()
        renew_at = time.monotonic() + period / 3
        while not self.done.wait(WATCH_EVERY):
            if self.cancel_reason is not None and not self._cancel_sent:
                self._cancel_sent = True
                try:
                    self.remote.cancel(self.run.ref)
                    self.note(f"asked {self.remote.name} to stop the run ({self.cancel_reason})")
                except SoopervisorError as e:
                    self.note(f"could not ask {self.remote.name} to stop the run: {e.message}")
                    self._cancel_sent = False
                    self.cancel_reason = None
            if time.monotonic() >= renew_at and not self.run.finished:
                renew_at = time.monotonic() + period / 3
                with contextlib.suppress(SoopervisorError):
                    if not self.store.update_if(self.run.id, self._ours(), lease_until=lease_until(period)):
                        self._leave.set()  # another process follows it now


def own(store: RunStore, run: Run, *, claim_from: Run | None = None) -> bool:
    """Make this process the follower of ``run`` (its record is changed here); with ``claim_from``,
    only when the record still is as read then (of two processes attaching, one wins)."""
    mine = owner_fields()
    if claim_from is None:
        for k, v in mine.items():
            setattr(run, k, v)
        return True
    expect = {"owner_host": claim_from.owner_host, "owner_pid": claim_from.owner_pid,
              "lease_until": claim_from.lease_until, "status": claim_from.status}
    if not store.update_if(run.id, expect, **mine):
        return False
    for k, v in mine.items():
        setattr(run, k, v)
    return True


def new_log(run: Run) -> None:
    run.log_path = str(config.ensure_dir(config.logs_dir()) / f"{run.id}.log")
    with open(run.log_path, "w", encoding="utf-8"):
        pass

"""The engines a server runs its queue on, and their slots: which engine takes the next job.

server.yaml's ``executors: [name, ...]`` names engines of the executors file; each
contributes its ``slots``. A job is claimed only when some engine has a free slot,
and it runs on the engine with the most free slots (ties: the configured order), so
that two engines of one slot each run two jobs at once.

An engine is asked whether it answers before it gets a job, unless it answered
within the last :data:`FRESH` seconds (a run that went well, or a probe). One that
does not answer is *held*: its slots take no job, the reason is shown (status API,
/readyz, metrics, the server's log), and it is asked again every :data:`RETRY`
seconds in a thread of its own, so that an engine that hangs never keeps the others
waiting. Jobs then go to the engines that answer; when none does, they wait queued
(no attempt is spent on an engine known to be down).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..engines import Engine

#: seconds an engine's last answer (a probe, a run that went well) stands before it is asked again
FRESH = 15.0
#: seconds between two probes of a held engine
RETRY = 2.0
#: seconds a probe waits for an answer
PROBE_TIMEOUT = 5.0
HELD_HINT = ("the server gives it no job until it answers (it asks every few seconds); "
             "`soopervisor executors` shows which engines answer and why")


def probe(engine: Engine, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when ``engine`` answers within ``timeout``, else why not ("connection refused")."""
    from ..engines import _probe

    found = _probe(engine, timeout)
    return None if found.get("answers") else str(found.get("reason") or "it does not answer")


@dataclass
class _Slots:
    engine: Engine
    order: int
    busy: int = 0
    #: why the engine takes no job (it did not answer); None: it takes jobs
    held: str | None = None
    held_since: float | None = None  # epoch seconds, for the status
    answered: float | None = None  # monotonic time of its last answer
    next_probe: float = 0.0
    probing: bool = False

    @property
    def free(self) -> int:
        return self.engine.slots - self.busy


class EnginePool:
    """The server's engines and their busy slots; safe to use from any thread."""

    def __init__(self, engines: Sequence[Engine], *, probe: Callable[[Engine], str | None] = probe,
                 say: Callable[[str], None] | None = None, on_back: Callable[[Engine], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not engines:
            raise ValueError("a pool needs at least one engine")
        self._slots = [_Slots(e, i) for i, e in enumerate(engines)]
        self._by_name = {s.engine.name: s for s in self._slots}
        self._probe, self._say, self._on_back, self._clock = probe, say, on_back, clock
        self._lock = threading.Lock()

    @property
    def engines(self) -> list[Engine]:
        return [s.engine for s in self._slots]

    @property
    def names(self) -> list[str]:
        return [s.engine.name for s in self._slots]

    def acquire(self) -> Engine | None:
        """Take a free slot of the engine with the most free slots that answers; None when none can take a job.

        Held engines are skipped (and asked again in the background when their time has come);
        an engine not heard from lately is asked first, here (held when it does not answer).
        """
        with self._lock:
            candidates = sorted((s for s in self._slots if s.free > 0), key=lambda s: (-s.free, s.order))
        for s in candidates:
            with self._lock:
                if s.held is not None:
                    self._retry_later(s)
                    continue
                fresh = s.answered is not None and self._clock() - s.answered < FRESH
                if fresh and s.free > 0:
                    s.busy += 1
                    return s.engine
            why = self._probe(s.engine)  # outside the lock: a remote engine may take seconds
            with self._lock:
                if why is not None:
                    self._hold(s, why)
                    continue
                s.answered = self._clock()
                if s.held is None and s.free > 0:
                    s.busy += 1
                    return s.engine
        return None

    def release(self, engine: Engine, *, answered: bool = False) -> None:
        """Give back a slot taken by ``acquire``; ``answered``: the engine was heard from meanwhile."""
        with self._lock:
            s = self._by_name[engine.name]
            s.busy = max(0, s.busy - 1)
            if answered and s.held is None:
                s.answered = self._clock()

    def hold(self, engine: Engine, why: str) -> None:
        """``engine`` failed a run (it does not answer): no job for it until it answers again."""
        with self._lock:
            self._hold(self._by_name[engine.name], why)

    def _hold(self, s: _Slots, why: str) -> None:
        first = s.held is None
        s.held, s.answered = why, None
        if first:
            s.held_since = time.time()
            s.next_probe = self._clock() + RETRY
            if self._say is not None:
                self._say(f"engine {s.engine.name} ({s.engine.where}): held, it does not answer: {why}")

    def _retry_later(self, s: _Slots) -> None:
        """Ask a held engine again in a thread of its own once RETRY has passed (called under the lock)."""
        if s.probing or self._clock() < s.next_probe:
            return
        s.probing = True

        def ask() -> None:
            why = self._probe(s.engine)
            with self._lock:
                s.probing = False
                s.next_probe = self._clock() + RETRY
                if why is not None:
                    s.held = why
                    return
                s.held, s.held_since, s.answered = None, None, self._clock()
            if self._say is not None:
                self._say(f"engine {s.engine.name}: answers again; it takes jobs")
            if self._on_back is not None:
                self._on_back(s.engine)

        threading.Thread(target=ask, name=f"probe-{s.engine.name}", daemon=True).start()

    def check_held(self) -> None:
        """Ask the held engines again when their time has come (the loop calls it on every round)."""
        with self._lock:
            for s in self._slots:
                if s.held is not None:
                    self._retry_later(s)

    def waiting(self) -> str | None:
        """Why the server can take no job at all: every engine is held (None while one answers, busy or not)."""
        with self._lock:
            if any(s.held is None for s in self._slots):
                return None
            return "; ".join(f"engine {s.engine.name} does not answer: {s.held}" for s in self._slots)

    def status(self) -> list[dict[str, Any]]:
        """Each engine: name, where, type, slots, busy, free, and whether it is held (and why)."""
        with self._lock:
            return [{"name": s.engine.name, "type": s.engine.type, "where": s.engine.where,
                     "slots": s.engine.slots, "busy": s.busy, "free": max(0, s.free),
                     "held": s.held is not None, "reason": s.held,
                     "hint": HELD_HINT if s.held is not None else None, "held_since": s.held_since}
                    for s in self._slots]

"""The server's Prometheus metrics, in a registry of its own (never the process-wide default one).

Events are counted as they happen (a poll's duration and errors, leases that
expired); what is a state (jobs by state, runs by status) is read from the
database when Prometheus scrapes, so several servers sharing one database
report the same numbers and a restart loses nothing.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..errors import SoopervisorError

if TYPE_CHECKING:
    from .loop import ServerState
    from .poller import PollResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: a poll is one ls-remote (tens of ms on a LAN), and a fetch when a head moved (seconds); git's timeout is 60 s
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The counters the loop feeds, and the gauges read from the database at each scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.poll_seconds = Histogram("soopervisor_poll_duration_seconds", "How long one poll of a repository took",
                                      ["repository"], buckets=POLL_BUCKETS, registry=self.registry)
        self.poll_errors = Counter("soopervisor_poll_errors", "Polls of a repository that failed",
                                   ["repository"], registry=self.registry)
        self.new_heads = Counter("soopervisor_new_heads", "New branch heads a poll found (and queued)",
                                 ["repository"], registry=self.registry)
        self.leases_expired = Counter("soopervisor_leases_expired", "Running jobs whose lease expired (reaped)",
                                      registry=self.registry)
        self.state: ServerState | None = None

    def attach(self, state: ServerState) -> None:
        """Read jobs and runs from this server's database at each scrape."""
        self.state = state
        self.registry.register(_StateCollector(state))

    def polled(self, result: PollResult) -> None:
        repo = result.repository
        self.poll_seconds.labels(repo).observe(result.seconds)
        self.poll_errors.labels(repo)  # present (0) from the first poll on, so rate() has a start
        if result.error:
            self.poll_errors.labels(repo).inc()
        self.new_heads.labels(repo).inc(len(result.new))

    def text(self) -> bytes:
        """The exposition text (it reads the database: call it off the IO loop)."""
        return generate_latest(self.registry)


class _StateCollector:
    """Jobs by state and runs by status, read when scraped; an unreadable database says so
    (``soopervisor_database_up 0``) instead of failing the scrape."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def describe(self) -> list:
        return []  # read at collect time only: registering must not touch the database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("soopervisor_database_up", "1 when the server's database answered this scrape")
        try:
            counts = self.state.queue.counts()
        except SoopervisorError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("soopervisor_queue_jobs", "Jobs in the queue by state", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        yield from _engines(self.state)
        runs = _runs_by_status(self.state)
        if runs is not None:
            family = GaugeMetricFamily("soopervisor_runs", "Runs in the server's run store by status",
                                       labels=["status"])
            for status, n in sorted(runs.items()):
                family.add_metric([status], n)
            yield family


def _engines(state: ServerState) -> Iterator[GaugeMetricFamily]:
    """Each engine's slots, busy slots and whether it is held (it did not answer): from this process."""
    status = state.pool.status()
    families = {
        "slots": GaugeMetricFamily("soopervisor_engine_slots", "Runs an engine of the server takes at once",
                                   labels=["engine"]),
        "busy": GaugeMetricFamily("soopervisor_engine_busy", "Slots of an engine running a job now",
                                  labels=["engine"]),
        "held": GaugeMetricFamily("soopervisor_engine_held", "1 while an engine takes no job: it did not answer",
                                  labels=["engine"]),
    }
    for s in status:
        for key, family in families.items():
            family.add_metric([s["name"]], int(s[key]))
    yield from families.values()


def _runs_by_status(state: ServerState) -> dict[str, int] | None:
    """Runs by status in the run store (one query, not a list of every run); None when unreadable."""
    try:
        path = state.runs.store.path
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)) as db:
            found = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    except (sqlite3.Error, SoopervisorError, OSError):
        return None
    return {str(k): int(v) for k, v in found.items()}

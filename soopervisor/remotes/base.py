"""What a remote is: a place other than this machine's engines that runs a commit (a team's
``soopervisor serve``, the repository's GitHub workflow), seen through one small protocol.

The run service keeps a local record of every remote run, like any run: its log file is
fed by :meth:`Remote.follow`, its fields (status, stage, task progress, storage) by the
same call, so the CLI, the widget, the sidebar and ``soopervisor runs`` show a remote run
exactly as a local one. The handle a remote returns (``ref``) is kept in the record: a
process that restarted (a kernel) follows the run again from it (:meth:`Remote.follow`
with the lines it already has).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import SoopervisorError, UsageError

#: the kinds of remote ``soopervisor remote add`` knows
KINDS = ("server", "github")

#: the record fields a remote may set through :meth:`Sink.update` (the same as a local run's)
FIELDS = ("status", "exit_code", "started_at", "finished_at", "storage_url", "image", "failed_task", "error",
          "hint", "stage", "task", "tasks_done", "tasks_total", "task_error", "tasks_up_to_date")


class RemoteUnavailable(SoopervisorError):
    """The remote does not answer (unreachable, timing out, answering 5xx): exit 3; try again later."""

    exit_code = 3
    topic = "remote-unavailable"


class RemoteRefused(UsageError):
    """The remote answered but refuses: no token, a wrong token, a token without the permission
    needed, a commit it does not have, a project it will not run (exit 2; the hint says what to do)."""

    topic = "remote-refused"


@dataclass(frozen=True)
class Submitted:
    """What :meth:`Remote.submit` returns."""

    ref: dict[str, Any]  # JSON-serializable handle kept in the run record (job id, run id, URLs, cursor)
    storage_url: str | None = None  # where the remote stores the artifacts, when known now
    describe: str = ""  # where it runs, one line for people (Run.executor), e.g. "server ci (https://ci:8008)"


class Sink(Protocol):
    """Where :meth:`Remote.follow` sends what it learns. Every call is written to the run's
    record or log at once (another process may be reading them)."""

    def lines(self, lines: list[str]) -> None:
        """Log lines, each ending in "\\n", in order, after those already sent; redacted by the
        remote already (the sink redacts again with this machine's credentials)."""

    def update(self, **fields: Any) -> None:
        """Record fields (names in FIELDS). A terminal ``status`` ends the run's record."""

    def ref(self, **changes: Any) -> None:
        """Merge ``changes`` into the handle kept in the record (a run id learnt late, a cursor):
        a follower started after a restart gets the merged handle."""


class Remote(Protocol):
    name: str
    kind: str  # one of KINDS
    url: str  # the server's URL, or the GitHub API URL

    def submit(self, *, repo_root: str, project: str, commit: str, mode: str) -> Submitted:
        """Queue ``commit`` of the git repository at ``repo_root`` (``project``: the project's folder
        relative to the repository's root, "." at the root) in ``mode`` ("sample"/"full").

        Checks first and raises, with a hint: RemoteRefused when the commit is not on the remote
        (naming the push command; never pushes), when there is no workflow or no token, or the
        remote refuses the token or the project; RemoteUnavailable when it does not answer."""

    def follow(self, ref: dict[str, Any], start: int, sink: Sink, stop: threading.Event) -> bool:
        """Send the run's log from line ``start`` on (the lines this machine has already) and its
        fields to ``sink`` until the run has ended (True, after a terminal ``status`` update) or
        ``stop`` is set (False; nothing is cancelled). Connections that drop are resumed with
        the lines already sent: no line lost, none twice. RemoteUnavailable when the remote
        stays unreachable for longer than a follower should wait (the record stays running)."""

    def cancel(self, ref: dict[str, Any]) -> None:
        """Ask the remote to stop the run (queued or running); returns once asked. The end
        arrives through :meth:`follow`."""


def check_name(name: str) -> str:
    """A remote's name: letters, digits, '-', '_', '.', 1 to 40 characters, not starting with '.'/'-'."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,39}", name or ""):
        raise UsageError(f"{name!r} cannot name a remote",
                         "use letters, digits, '-', '_' or '.' (1 to 40 characters), e.g. `ci` or `team-server`")
    return name

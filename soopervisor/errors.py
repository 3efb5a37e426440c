"""Errors that reach the user: one line of what went wrong, a hint, an exit code.

The CLI prints ``message`` and ``hint`` and exits with ``exit_code``; it never
prints a traceback for these. Exit codes: 1 pipeline failed, 2 invalid project
or usage, 3 Docker or storage unavailable. ``topic`` names the entry of the
troubleshooting page that explains the error (``docs`` is its address).
"""
from __future__ import annotations


class SoopervisorError(Exception):
    exit_code = 1
    topic = "exit-1"

    def __init__(self, message: str, hint: str | None = None, topic: str | None = None) -> None:
        from .redact import CREDENTIALS

        # a cloud token must not reach the terminal, a run record or an API answer, even in an error
        message = CREDENTIALS.redact(message)
        hint = CREDENTIALS.redact(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint
        if topic is not None:
            self.topic = topic

    @property
    def docs(self) -> str:
        """The troubleshooting entry that explains this error."""
        from .troubleshooting import topic_url

        return topic_url(self.topic)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class UsageError(SoopervisorError):
    exit_code = 2
    topic = "usage-error"


class InvalidProject(SoopervisorError):
    """Validation found errors; ``report`` holds every one of them."""

    exit_code = 2
    topic = "invalid-project"

    def __init__(self, report) -> None:  # report: soopervisor.project.Report
        n = len(report.errors)
        super().__init__(
            f"the project is not valid ({n} problem{'s' if n != 1 else ''})",
            "fix the problems in the report (`soopervisor validate` lists them), then run again",
        )
        self.report = report


class ArtifactsNotFound(SoopervisorError):
    """Unknown project, unknown commit or ambiguous commit prefix."""

    exit_code = 2
    topic = "artifacts-not-found"


class UnsafePath(SoopervisorError):
    """A file name that would escape its folder (``../``, absolute, link)."""

    exit_code = 2
    topic = "unsafe-path"


class IntegrityError(SoopervisorError):
    """A downloaded file does not match the sha256 in its manifest."""

    exit_code = 3
    topic = "integrity-error"


class EngineUnavailable(SoopervisorError):
    exit_code = 3
    topic = "docker-unavailable"


class StorageUnavailable(SoopervisorError):
    exit_code = 3
    topic = "storage-unavailable"


class Cancelled(BaseException):
    """SIGTERM, raised in the main thread; like Ctrl-C it must not be swallowed."""


class RunNotFound(SoopervisorError):
    """No run with that id in the run store."""

    exit_code = 2
    topic = "run-not-found"

"""Telling a job's end: a GitHub commit status (and the pull request's report comment), and a webhook.

:func:`notify` is called by the worker once a job has reached a final state
(succeeded, failed, cancelled; not when it is queued again for a retry). It is
best effort: each call is retried a few times with backoff and timeouts, within
an overall deadline, and a failure is logged, never raised — the job has ended
already and stays as it ended.

Nothing secret leaves: every text (the status description, the comment, the
webhook's JSON) passes through the run's secrets (the values of the
repository's secrets and the notification credentials) and the process-wide
:data:`soopervisor.redact.CREDENTIALS`.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import UsageError
from ..github.api import GitHubAPI
from ..github.report import MARKER, Report, _duration
from ..redact import CREDENTIALS, Redactor
from .config import GitHubNotify, Repository, WebhookNotify, _url_origin, read_secret
from .queue import Job

log = logging.getLogger(__name__)
T = TypeVar("T")

#: GitHub's limit for a status description
MAX_DESCRIPTION = 140
#: tries of one call when the other side fails for a while (5xx, 429, no connection)
ATTEMPTS = 3
#: seconds before the second try; doubled each time
BACKOFF = 1.0
#: seconds one webhook request may take
TIMEOUT = 10.0
#: seconds a whole notification may take, retries included: the worker waits for it before its next job
DEADLINE = 60.0
#: GitHub commit states for the job's final states; "error": the run did not get to a verdict
STATES = {"succeeded": "success", "failed": "failure", "cancelled": "error"}
_ICON = {"succeeded": "✅", "failed": "❌", "cancelled": "⏹️"}
#: lines of the log's end put in the pull-request comment (the log was redacted when written)
TAIL_LINES = 30


def notify(repo: Repository, job: Job, run: Any = None, *, storage: str | None = None,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Tell the end of ``job`` (its ``run``, a :class:`soopervisor.runs.Run`, when one was started).

    Never raises: a notification failing is logged and the job stays as it ended.
    """
    settings = repo.notify
    if settings is None or job.state not in STATES:
        return
    try:
        end = _End(repo, job, run, storage)
    except Exception:  # a notification never breaks the worker
        log.exception("notify %s: cannot describe job %s", repo.name, job.id)
        return
    deadline = time.monotonic() + DEADLINE
    if settings.github is not None:
        try:
            _github(settings.github, end, sleep, deadline)
        except Exception as e:  # noqa: BLE001 - best effort: logged
            log.warning("notify %s: GitHub was not told of %s: %s", repo.name, job.commit[:12],
                        end.clean(_said(e)))
    if settings.webhook is not None:
        try:
            _webhook(settings.webhook, end, sleep, deadline)
        except Exception as e:  # noqa: BLE001 - best effort: logged
            log.warning("notify %s: the webhook was not called: %s", repo.name, end.clean(_said(e)))


def _said(e: BaseException) -> str:
    return getattr(e, "message", None) or f"{type(e).__name__}: {e}"


class _End:
    """What is told of a job's end, every text already redacted."""

    def __init__(self, repo: Repository, job: Job, run: Any, storage: str | None) -> None:
        self.redactor = Redactor(_secret_values(repo))
        self.repo, self.job, self.run = repo, job, run
        self.project = repo.name if job.project == "." else job.project
        self.context = f"soopervisor/{self.project}/{job.mode}"
        self.duration: float | None = getattr(run, "duration", None) if run is not None else None
        self.run_id: str | None = getattr(run, "id", None) or job.run_id
        error = job.error if job.state != "succeeded" else None
        if error is None and run is not None and job.state != "succeeded":
            error = getattr(run, "error", None)
        self.error = self.clean(error) if error else None
        base = (getattr(run, "storage_url", None) if run is not None else None) or storage
        self.location = (f"{base.rstrip('/')}/{getattr(run, 'project', self.project)}/{job.commit}/{self.run_id}"
                         if base and self.run_id else None)

    def clean(self, text: str) -> str:
        return CREDENTIALS.redact(self.redactor.redact(text))

    def summary(self) -> str:
        took = f" in {_duration(self.duration)}" if self.duration is not None else ""
        return f"{self.job.mode} run {self.job.state}{took}"

    def description(self) -> str:
        text = self.summary() + (f": {' '.join(self.error.split())}" if self.error else "")
        text = self.clean(text)
        return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"

    def target_url(self) -> str | None:
        loc = self.location
        return loc if loc and loc.lower().startswith(("https://", "http://")) else None

    def text(self) -> str:
        job = self.job
        line = (f"{_ICON.get(job.state, '•')} soopervisor: {self.repo.name}@{job.commit[:12]} "
                f"({job.branch}) {self.project} {self.summary()}")
        if self.error:
            line += f"\n> {' '.join(self.error.split())}"
        return self.clean(line)

    def payload(self) -> dict[str, Any]:
        job = self.job
        data = {"text": self.text(), "status": job.state, "repository": self.repo.name, "commit": job.commit,
                "branch": job.branch, "project": self.project, "mode": job.mode, "duration": self.duration,
                "run_id": self.run_id, "job_id": job.id, "error": self.error,
                "failed_task": getattr(self.run, "failed_task", None) if self.run is not None else None}
        return {k: self.clean(v) if isinstance(v, str) else v for k, v in data.items()}

    def markdown(self, marker: str) -> str:
        run, job = self.run, self.job
        report = Report(status=job.state, mode=job.mode, commit=job.commit, project=self.project,
                        duration=self.duration, location=self.location, run_id=self.run_id,
                        failed_task=getattr(run, "failed_task", None) if run is not None else None,
                        error=self.error, hint=getattr(run, "hint", None) if run is not None else None,
                        trigger=f"push to `{job.branch}` (soopervisor serve)",
                        log_tail=_tail(getattr(run, "log_path", None)) if job.state != "succeeded" else [])
        if self.location:
            report.notes.append(f"artifacts: `{self.location}`")
        return self.clean(f"{marker}\n{report.markdown()}")


def _secret_values(repo: Repository) -> list[bytes]:
    """The values a notification must never show: the repository's secrets and the notification credentials."""
    refs = list(repo.secrets)
    if repo.notify and repo.notify.github:
        refs.append(repo.notify.github.token)
    if repo.notify and repo.notify.webhook and repo.notify.webhook.url_ref:
        refs.append(repo.notify.webhook.url_ref)
    values = []
    for ref in refs:
        try:
            values.append(read_secret(ref))
        except UsageError:  # unreadable now: then it cannot be shown either
            continue
    return values


def _tail(path: str | None) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-TAIL_LINES:]


# -- GitHub ----------------------------------------------------------------------------
def _github(settings: GitHubNotify, end: _End, sleep: Callable[[float], None], deadline: float) -> None:
    token = read_secret(settings.token).decode("utf-8", "surrogateescape").strip()
    api = _StatusAPI(settings.repository, token, settings.api_url, sleep=sleep, deadline=deadline)
    sha = end.job.commit
    api.status(sha, STATES[end.job.state], end.context, end.description(), end.target_url())
    # one comment per pull request and status context, kept up to date: the report's MARKER, and the context
    marker = f"{MARKER}\n<!-- {end.context} -->"
    for number in api.open_pulls_headed_by(sha):
        api.upsert_comment(number, marker, end.markdown(marker))


def _transient(e: BaseException) -> bool:
    import requests
    from github import GithubException

    if isinstance(e, GithubException):
        return e.status >= 500
    return isinstance(e, requests.exceptions.RequestException)


class _StatusAPI(GitHubAPI):
    """The GitHub client and the two calls a notification adds; 5xx and dropped connections tried again."""

    def __init__(self, repository: str, token: str, api_url: str, *, sleep: Callable[[float], None],
                 deadline: float) -> None:
        super().__init__(repository, token, api_url, max_rate_wait=min(30.0, DEADLINE), sleep=sleep,
                         log=lambda message: log.info("notify: %s", message))
        self.deadline = deadline

    def _retrying(self, fn: Callable[[], T]) -> T:
        """``fn()``, again after a 5xx or a dropped connection, with backoff, while the deadline allows."""
        wait = BACKOFF
        attempt = 1
        while True:
            try:
                return fn()
            except Exception as e:
                if not _transient(e) or attempt >= ATTEMPTS or time.monotonic() + wait > self.deadline:
                    raise
            self.sleep(wait)
            wait *= 2
            attempt += 1

    def status(self, sha: str, state: str, context: str, description: str, target_url: str | None) -> None:
        """``POST /repos/{o}/{r}/statuses/{sha}``."""
        body = {"state": state, "context": context, "description": description}
        if target_url:
            body["target_url"] = target_url
        self._call(f"setting the status of {sha[:12]}", lambda: self._retrying(
            lambda: self._gh.requester.requestJsonAndCheck("POST", f"{self._repo.url}/statuses/{sha}", input=body)))

    def open_pulls_headed_by(self, sha: str) -> list[int]:
        """The open pull requests whose head is ``sha`` (``GET /repos/{o}/{r}/commits/{sha}/pulls``)."""

        def read() -> list[int]:
            _, data = self._gh.requester.requestJsonAndCheck(
                "GET", f"{self._repo.url}/commits/{sha}/pulls", parameters={"per_page": 100})
            return [int(p["number"]) for p in data or []
                    if p.get("state") == "open" and (p.get("head") or {}).get("sha") == sha]

        return self._call(f"listing the pull requests of {sha[:12]}", lambda: self._retrying(read))

    def upsert_comment(self, issue_number: int, marker: str, body: str) -> tuple[int, bool]:
        return self._retrying(lambda: super(_StatusAPI, self).upsert_comment(issue_number, marker, body))


# -- webhook ---------------------------------------------------------------------------
class WebhookError(Exception):
    pass


def _webhook(settings: WebhookNotify, end: _End, sleep: Callable[[float], None], deadline: float) -> None:
    if settings.url_ref is not None:
        url = read_secret(settings.url_ref).decode("utf-8", "surrogateescape").strip()
        end.redactor.add(url)
    else:
        url = settings.url or ""
    shown = _url_origin(url)
    data = json.dumps(end.payload()).encode()
    wait = BACKOFF
    for attempt in range(1, ATTEMPTS + 1):
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "soopervisor"})
        try:
            with urllib.request.urlopen(request, timeout=min(TIMEOUT, max(1.0, deadline - time.monotonic()))):
                return
        except urllib.error.HTTPError as e:
            why, again = f"{shown} answered {e.code}", e.code >= 500 or e.code == 429
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            why, again = f"cannot reach {shown} ({type(reason).__name__})", True
        if not again or attempt == ATTEMPTS or time.monotonic() + wait > deadline:
            raise WebhookError(f"{why} (attempt {attempt} of {ATTEMPTS})")
        sleep(wait)
        wait *= 2

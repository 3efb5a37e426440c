"""The few GitHub REST calls the Action makes, through PyGithub, with errors a user can act on.

Every call goes to ``GITHUB_API_URL`` (``https://api.github.com``, or
``https://HOST/api/v3`` on GitHub Enterprise Server). PyGithub's own retries are
off: this module waits out rate limits itself, so it can say in the log what
it waits for and stop with a clear :class:`GitHubError` when the wait would be
too long. Any other failure becomes a :class:`GitHubError` with a hint, never
a traceback, and never with the token in it.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

from ..errors import SoopervisorError
from ..redact import CREDENTIALS

DEFAULT_API_URL = "https://api.github.com"
#: documented reaction contents
REACTIONS = frozenset({"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"})
#: roles that may push, hence may make the Action spend the repository's secrets
WRITE_ROLES = ("admin", "maintain", "write")
ROLES = (*WRITE_ROLES, "triage", "read", "none")
#: associations that say nothing about write access unless the role is looked up
CHECKED_ASSOCIATIONS = ("MEMBER", "COLLABORATOR")
#: after this many waits for the same call the limit is reported, not waited for again
MAX_RATE_WAITS = 3
#: documented for a secondary limit without retry-after or x-ratelimit-*: "wait for at least one minute"
SECONDARY_DEFAULT_WAIT = 60.0
PERMISSIONS_HINT = ("the workflow's token needs `permissions:` with `pull-requests: write` and `issues: write` "
                    "(and `contents: read`); add them to the workflow or the job")

T = TypeVar("T")


class GitHubError(SoopervisorError):
    """The GitHub API refused or could not be reached."""

    exit_code = 3
    topic = "github-error"


@dataclass(frozen=True)
class PullRequest:
    number: int
    head_sha: str
    head_ref: str
    head_repo: str | None  # full name; None when the fork was deleted
    base_repo: str
    is_fork: bool
    state: str  # "open" or "closed"
    html_url: str


class GitHubAPI:
    """One repository, one token.

    ``sleep`` and ``log`` are how rate-limit waits happen and are told (tests
    pass a recording sleep); ``max_rate_wait`` is the longest single wait, in
    seconds, worth spending before giving up.
    """

    def __init__(self, repository: str, token: str, api_url: str | None = None, *,
                 max_rate_wait: float = 900.0, sleep: Callable[[float], None] = time.sleep,
                 log: Callable[[str], Any] = print) -> None:
        import github  # PyGithub; imported here so `import soopervisor.github.api` stays cheap

        if not token:
            raise GitHubError("no GitHub token", hint="pass `github-token: ${{ github.token }}` (the default) "
                                                      "or set GITHUB_TOKEN")
        if repository.count("/") != 1 or not all(repository.split("/")):
            raise GitHubError(f"{repository!r} is not a repository name",
                              hint="GITHUB_REPOSITORY must be OWNER/NAME, as GitHub Actions sets it")
        # the token must never be printed, whatever error text quotes it
        CREDENTIALS.add(token)
        self.repository = repository
        self.api_url = (api_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
        self.max_rate_wait = max_rate_wait
        self.sleep = sleep
        self.log = log
        self._identity: str | None | bool = False  # False: not looked up yet
        self._gh = github.Github(
            auth=github.Auth.Token(token), base_url=self.api_url, retry=None, per_page=100, timeout=30,
            user_agent="soopervisor",
            # a run makes a handful of writes minutes apart; PyGithub's pacing (1 s per write) buys nothing here
            seconds_between_requests=None, seconds_between_writes=None,
            # no GET /repos/{o}/{r} before each call: objects load only when a field is read
            lazy=True,
        )
        self._repo = self._gh.get_repo(repository)

    # -- calls -----------------------------------------------------------------
    def pull_request(self, number: int) -> PullRequest:
        """The pull request as it is now (its head may have moved since the event)."""

        def read() -> PullRequest:
            pr = self._repo.get_pull(number)
            head_repo = pr.head.repo.full_name if pr.head.repo is not None else None
            base_repo = pr.base.repo.full_name
            return PullRequest(number=pr.number, head_sha=pr.head.sha, head_ref=pr.head.ref, head_repo=head_repo,
                               base_repo=base_repo,
                               # a deleted head repository can only have been a fork: a repository's own
                               # branches go away with it, and so would the pull request
                               is_fork=head_repo is None or head_repo.lower() != base_repo.lower(),
                               state=pr.state, html_url=pr.html_url)

        return self._call(f"reading pull request #{number}", read,
                          not_found=(f"no pull request #{number} in {self.repository}",
                                     ("the comment may be on an issue, or the pull request was deleted; "
                                      "a token for another repository cannot see it either")))

    def permission(self, login: str) -> str:
        """``login``'s role here: admin, maintain, write, triage, read or none (404: none)."""
        from github import GithubException

        def read() -> str:
            # one request for both fields: `permission` folds maintain into write and triage into read,
            # `role_name` is the role itself, or the name of an organisation's custom role
            _, data = self._gh.requester.requestJsonAndCheck(
                "GET", f"{self._repo.url}/collaborators/{quote(login, safe='')}/permission")
            role = data.get("role_name")
            return role if role in ROLES else data.get("permission") or "none"

        try:
            return self._call(f"reading {login}'s permission", read, raise_404=True)
        except GithubException:  # only a 404 gets here: not a collaborator, or no such user
            return "none"

    def can_write(self, login: str, association: str) -> tuple[bool, str]:
        """May ``login`` start a run? (allowed, why), ``why`` being one line for the log and the reply.

        OWNER is enough; MEMBER and COLLABORATOR are looked up, since an
        organisation member or an invited collaborator may have read or triage
        only; any other association is refused without a call.
        """
        association = (association or "NONE").upper()
        if association == "OWNER":
            return True, f"{login} is the repository OWNER"
        if association in CHECKED_ASSOCIATIONS:
            role = self.permission(login)
            allowed = role in WRITE_ROLES
            why = f"{login} is a {association} with {role} permission"
            return allowed, why if allowed else f"{why}: a run needs write, maintain or admin"
        return False, (f"{login}'s association is {association}: only OWNER, MEMBER or COLLABORATOR "
                       "with write access can start a run")

    def react(self, comment_id: int, content: str) -> None:
        """Add a reaction to an issue or pull-request comment (GitHub keeps one per user and content)."""
        if content not in REACTIONS:
            raise ValueError(f"unknown reaction {content!r}; one of {sorted(REACTIONS)}")
        from github.IssueComment import IssueComment

        def post() -> None:
            # a lazy object: no GET of the comment before the POST
            comment = IssueComment(self._gh.requester, url=f"{self._repo.url}/issues/comments/{comment_id}")
            comment.create_reaction(content)

        self._call(f"reacting to comment {comment_id}", post,
                   not_found=(f"no comment {comment_id} in {self.repository}", "it may have been deleted"))

    def comment(self, issue_number: int, body: str) -> int:
        """A new comment on an issue or pull request; returns its id."""
        return self._call(f"commenting on #{issue_number}",
                          lambda: self._repo.get_issue(issue_number).create_comment(body).id,
                          not_found=self._no_issue(issue_number))

    def upsert_comment(self, issue_number: int, marker: str, body: str) -> tuple[int, bool]:
        """Update this tool's comment that carries ``marker``, or create it: (comment id, created).

        ``marker`` is hidden text (``<!-- soopervisor-report -->``); it is put
        at the top of ``body`` when missing, so the next call finds the comment.
        Only a comment written by the token's own identity is edited: a person
        quoting the marker keeps their comment, and a new one is made instead.
        """
        if not marker:
            raise ValueError("the marker must not be empty")
        if marker not in body:
            body = f"{marker}\n{body}"
        issue = self._repo.get_issue(issue_number)

        def find() -> Any:
            # every page: the report may be far down a long conversation
            candidates = [c for c in issue.get_comments() if marker in (c.body or "")]
            ours = self._ours(candidates)
            return ours[0] if ours else None  # the oldest: the one earlier runs kept up to date

        found = self._call(f"listing the comments of #{issue_number}", find, not_found=self._no_issue(issue_number))
        if found is None:
            return self.comment(issue_number, body), True
        self._call(f"updating comment {found.id} on #{issue_number}", lambda: found.edit(body),
                   not_found=(f"comment {found.id} on #{issue_number} was deleted meanwhile",
                              "run the workflow again"))
        return found.id, False

    # -- helpers ---------------------------------------------------------------
    def _ours(self, comments: list[Any]) -> list[Any]:
        """The comments written by the token's identity, oldest first."""
        if all(c.user.type == "Bot" for c in comments):
            # the usual case, GITHUB_TOKEN or an app: no look-up needed
            return comments
        me = self._whoami()
        if me is None:  # an installation token: its comments are a bot's
            return [c for c in comments if c.user.type == "Bot"]
        return [c for c in comments if c.user.login == me]

    def _whoami(self) -> str | None:
        """The login of a personal token; None for an installation token (GET /user answers 403)."""
        from github import GithubException

        if self._identity is False:
            try:
                self._identity = self._call("reading the token's user", lambda: self._gh.get_user().login,
                                            raise_404=True, raise_403=True)
            except GithubException:
                self._identity = None
        return self._identity  # type: ignore[return-value]

    def _no_issue(self, number: int) -> tuple[str, str]:
        return (f"no issue or pull request #{number} in {self.repository}",
                "check the number, and that GITHUB_REPOSITORY names the repository of the event")

    def _call(self, what: str, fn: Callable[[], T], *, not_found: tuple[str, str] | None = None,
              raise_404: bool = False, raise_403: bool = False) -> T:
        """``fn()``, waiting out rate limits; other failures become :class:`GitHubError`.

        ``raise_404``/``raise_403``: let that GithubException through, for a
        caller to whom it is an answer, not an error.
        """
        import requests
        from github import GithubException

        waits = 0
        while True:
            try:
                return fn()
            except GithubException as e:
                now = time.time()
                wait = rate_limit_wait(e.status, e.headers or {}, _message(e), now)
                if wait is None:
                    if (raise_404 and e.status == 404) or (raise_403 and e.status == 403):
                        raise
                    raise self._error(e, what, not_found) from None
                until = _utc(now + wait)
                if wait > self.max_rate_wait or waits >= MAX_RATE_WAITS:
                    raise GitHubError(
                        f"GitHub API rate limit exhausted (resets at {until:%H:%M} UTC)",
                        hint=("the token's requests are used up (GITHUB_TOKEN: 1,000 an hour per repository); "
                              f"run the workflow again after {until:%H:%M} UTC, or have fewer jobs call the "
                              "API at once")) from None
                waits += 1
                self.log(f"GitHub API rate limit reached; waiting {math.ceil(wait)} s until {until:%H:%M:%S} UTC")
                self.sleep(wait)
            except requests.exceptions.RequestException as e:
                raise GitHubError(f"cannot reach GITHUB_API_URL={self.api_url} while {what} ({type(e).__name__})",
                                  hint="check the runner's network and proxy; on GitHub Enterprise Server "
                                       "GITHUB_API_URL is https://HOST/api/v3") from None

    def _error(self, e: Any, what: str, not_found: tuple[str, str] | None) -> GitHubError:
        status, message = e.status, _message(e) or "no message"
        if status == 401:
            return GitHubError(f"GitHub rejected the token while {what} (401 {message})",
                               hint="the token is invalid or expired; GITHUB_TOKEN lives only as long as its job, "
                                    "a personal access token until its expiry date: pass a current one")
        if status == 403 and "resource not accessible by integration" in message.lower():
            accepted = (e.headers or {}).get("x-accepted-github-permissions")
            return GitHubError(f"GitHub refused {what}: Resource not accessible by integration (403)",
                               hint=PERMISSIONS_HINT + (f" (GitHub accepts: {accepted})" if accepted else ""))
        if status == 403:
            return GitHubError(f"GitHub refused {what} (403 {message})",
                               hint=f"the token may not have access to {self.repository}; " + PERMISSIONS_HINT)
        if status == 404 and not_found:
            return GitHubError(not_found[0], hint=not_found[1])
        if status == 404:
            return GitHubError(f"GitHub found nothing while {what} (404)",
                               hint=f"check that {self.repository} exists and the token can read it")
        if status >= 500:
            return GitHubError(f"GitHub failed while {what} ({status} {message})",
                               hint="GitHub may be having trouble (https://www.githubstatus.com); run it again")
        details = "; ".join(str(x.get("message") or x.get("code")) for x in (e.data or {}).get("errors", [])
                            if isinstance(x, dict)) if isinstance(e.data, dict) else ""
        return GitHubError(f"GitHub did not accept {what} ({status} {message}{': ' + details if details else ''})")


def rate_limit_wait(status: int, headers: dict[str, Any], message: str, now: float) -> float | None:
    """Seconds to wait before retrying, or None when the answer is not a rate limit.

    As documented: ``retry-after`` first; else ``x-ratelimit-remaining: 0``
    until ``x-ratelimit-reset`` (+1 s, the reset is whole seconds); else a
    secondary limit's message means at least a minute. GitHub answers 403 or 429.
    """
    if status not in (403, 429):
        return None
    headers = {k.lower(): str(v) for k, v in headers.items()}
    retry_after = headers.get("retry-after", "")
    if retry_after.strip().isdigit():
        return float(retry_after)
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset", "").isdigit():
        return max(int(headers["x-ratelimit-reset"]) - now, 0.0) + 1.0
    lowered = message.lower()
    if status == 429 or "rate limit" in lowered or lowered.endswith("please wait a few minutes before you try again."):
        return SECONDARY_DEFAULT_WAIT
    return None


def _message(e: Any) -> str:
    data = e.data
    return str(data.get("message") or "") if isinstance(data, dict) else str(data or "")


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)

"""A stateful fake of the GitHub REST API, on 127.0.0.1, for PyGithub (and anything else speaking HTTP).

It keeps repositories, pull requests, issues, collaborators' roles, issue
comments and their reactions in memory, and answers in the documented shapes
(docs.github.com/en/rest: pulls, collaborators, issues/comments, reactions,
rate-limit) closely enough for PyGithub to parse:

* ``GET /repos/{o}/{r}``, ``GET …/pulls/{n}`` (``head.repo`` is ``null`` once the
  fork is deleted), ``GET …/issues/{n}`` (a pull request is an issue with a
  ``pull_request`` link; both share one number sequence);
* ``GET …/collaborators/{login}/permission``: ``permission`` is the legacy base
  role (maintain reads as ``write``, triage as ``read``), ``role_name`` the real
  one; a known user without a role gets ``read`` on a public repository and
  ``none`` on a private one; an unknown login is a 404;
* ``GET``/``POST …/issues/{n}/comments``: ``GET`` pages by ``per_page`` (default
  30, at most 100) and ``page``, with a ``Link`` header (``next``, ``last``,
  ``first``, ``prev``); ``GET``/``PATCH …/issues/comments/{id}``;
  ``GET``/``POST …/issues/comments/{id}/reactions`` (201 when new, 200 when the
  same user already reacted so, 422 for an unknown content);
* ``POST …/statuses/{sha}`` (201; ``state`` one of error, failure, pending,
  success, else 422; ``description`` at most 140 characters; needs ``statuses:
  write``), ``GET …/commits/{sha}/statuses`` (newest first);
* ``GET …/commits/{sha}/pulls``: the pull requests whose head is that commit,
  open or closed, as GitHub lists the pull requests associated with a commit;
* ``GET /rate_limit`` (free, as on GitHub), ``GET /user`` (403 for an
  installation token, as GitHub answers the Actions token);
* auth: ``Authorization: token X`` or ``Bearer X`` must be the configured token,
  else 401 ``Bad credentials``; writes need ``issues: write`` (or
  ``pull_requests: write`` on a pull request) in :attr:`FakeGitHub.token_permissions`,
  else 403 ``Resource not accessible by integration``;
* every answer has ``x-ratelimit-limit/remaining/reset/used/resource``; a GET's
  answer has an ``etag``, and ``If-None-Match`` with it is answered 304 (not
  counted against the rate limit, as documented for conditional requests).

GitHub Actions (docs.github.com/en/rest/actions: workflows, workflow-runs,
workflow-jobs), driven by the test through Python methods:

* ``GET …/branches/{b}`` and ``GET …/commits/{sha}/branches-where-head`` from
  the heads the test sets (:meth:`FakeGitHub.set_head`); need ``contents: read``;
* ``GET …/actions/workflows/{id or file name}`` (404 when absent);
* ``POST …/actions/workflows/{id}/dispatches`` ``{ref, inputs}``: 204 and a new
  queued run at the ref's head; 422 when the workflow has no
  ``workflow_dispatch`` trigger, the ref is not a branch or tag ("No ref found
  for: X") or an input is not declared; needs ``actions: write``. With
  ``return_run_details: true`` (github.com since 2026-02-19): 200
  ``{workflow_run_id, run_url, html_url}``; a server without it (GitHub
  Enterprise Server 3.19, :attr:`FakeGitHub.run_details` False, the default
  under a prefix) answers 422 ``"return_run_details" is not a permitted key.``;
* ``GET …/actions/runs`` (filters ``event``, ``head_sha``, ``branch``,
  ``status``, ``created`` as ``>=``/``<=``/``>``/``<``/``A..B``; newest first),
  ``GET …/actions/runs/{id}``, ``GET …/actions/runs/{id}/jobs``: need
  ``actions: read``;
* ``GET …/actions/jobs/{id}/logs``: 302 to a signed URL on this same server
  (``/_blobs/…``, no prefix, no token) that answers 404 ``BlobNotFound`` (XML)
  until the job's log is written, as GitHub's blob store does for a queued or
  in-progress job, then ``text/plain`` lines with GitHub's timestamp prefix; a
  blob request that carries an ``Authorization`` header is refused (403
  ``AuthenticationFailed``), as Azure refuses a SAS URL with one;
* ``POST …/actions/runs/{id}/cancel``: 202; 409 once the run has completed.

The test drives a run: :meth:`FakeGitHub.start_run` (the job with its steps),
:meth:`FakeGitHub.start_step`, :meth:`FakeGitHub.finish_step` (with the step's
log text), :meth:`FakeGitHub.conclude`; the log is written when the job
completes (``log_ready=False`` delays it until :meth:`FakeGitHub.write_log`).

Test hooks: :meth:`FakeGitHub.limit_next` (primary limit: 403, remaining 0,
reset epoch), :meth:`FakeGitHub.secondary_limit_next` (``retry-after``),
:meth:`FakeGitHub.fail_next` (any status), :meth:`FakeGitHub.move_head`,
:meth:`FakeGitHub.delete_head_repo`, and :attr:`FakeGitHub.log` of every request.
GitHub Enterprise Server serves the API under ``/api/v3``: pass ``prefix="/api/v3"``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

#: the documented reaction contents
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
#: documented roles; the legacy ``permission`` field folds maintain into write, triage into read
ROLES = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read"}
DOCS = "https://docs.github.com/rest"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class User:
    login: str
    id: int
    type: str = "User"  # or "Bot", "Organization"


@dataclass
class Repo:
    full_name: str
    id: int
    private: bool = False
    default_branch: str = "main"
    fork: bool = False
    roles: dict[str, str] = field(default_factory=dict)  # login -> admin|maintain|write|triage|read

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]


@dataclass
class Issue:
    number: int
    id: int
    title: str
    user: str
    state: str = "open"
    created_at: str = field(default_factory=_now)
    # pull requests only
    pull: bool = False
    head_sha: str = ""
    head_ref: str = ""
    head_repo: str | None = None  # full name; None once the fork is deleted
    base_ref: str = "main"
    base_sha: str = "0" * 40


@dataclass
class Comment:
    id: int
    repo: str
    issue: int
    user: str
    body: str
    author_association: str
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    reactions: list[tuple[int, str, str, str]] = field(default_factory=list)  # (id, content, login, created_at)

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at


@dataclass
class Failure:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    times: int
    method: str | None = None
    path: str | None = None  # a substring of the path (after the prefix)

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in (None, method) and (self.path is None or self.path in path)


@dataclass
class Call:
    method: str
    path: str  # without the prefix and the query
    query: dict[str, str]
    body: Any  # parsed JSON, or None
    status: int = 0
    raw_path: str = ""  # as requested, with the prefix


@dataclass
class Workflow:
    id: int
    repo: str
    path: str  # .github/workflows/NAME.yml
    name: str
    dispatch: bool = True  # has a workflow_dispatch trigger
    inputs: tuple[str, ...] = ("mode",)  # the workflow_dispatch inputs it declares
    state: str = "active"
    created_at: str = field(default_factory=_now)


@dataclass
class Step:
    number: int
    name: str
    status: str = "queued"  # queued, in_progress, completed
    conclusion: str | None = None  # success, failure, cancelled, skipped
    started_at: str | None = None
    completed_at: str | None = None
    log: list[str] = field(default_factory=list)  # lines, each with its timestamp prefix


@dataclass
class Job:
    id: int
    run_id: int
    name: str
    status: str = "queued"
    conclusion: str | None = None
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    completed_at: str | None = None
    steps: list[Step] = field(default_factory=list)
    log_written: bool = False
    blob_sig: str = ""


@dataclass
class WorkflowRun:
    id: int
    repo: str
    workflow_id: int
    path: str
    name: str
    run_number: int
    event: str
    head_branch: str
    head_sha: str
    inputs: dict[str, Any]
    status: str = "queued"  # queued, in_progress, completed
    conclusion: str | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    run_started_at: str | None = None
    jobs: list[Job] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at


def _log_time() -> str:
    """GitHub's log timestamp: seven fractional digits, UTC."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


class GitHubAPIError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers or {}
        self.body = {"message": message, "documentation_url": DOCS}
        self.body.update(extra)


class FakeGitHub:
    """The REST API for one token. ``api_url`` stands for ``GITHUB_API_URL``.

    Use as a context manager, or :meth:`start` / :meth:`stop`.
    """

    def __init__(self, token: str = "ghs_fake_installation_token_0123456789", *, prefix: str = "",
                 identity: str = "github-actions[bot]", identity_type: str = "Bot",
                 html_url: str = "https://github.com", rate_limit: int = 5000,
                 run_details: bool | None = None) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        #: whether a dispatch may ask for the run's details (github.com does; GHES 3.19 refuses the key)
        self.run_details = not self.prefix if run_details is None else run_details
        self.html_url = html_url.rstrip("/")
        self.rate_limit = rate_limit
        self.rate_used = 0
        self.rate_reset = int(time.time()) + 3600
        # what the workflow's `permissions:` granted the token
        self.token_permissions = {"metadata": "read", "contents": "read", "issues": "write",
                                  "pull_requests": "write", "statuses": "write"}
        self.repos: dict[str, Repo] = {}
        self.issues: dict[tuple[str, int], Issue] = {}
        self.comments: dict[int, Comment] = {}
        #: commit statuses by (repository, sha), oldest first, as GitHub answers them
        self.statuses: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.users: dict[str, User] = {}
        #: branch and tag heads by (repository, name)
        self.branches: dict[tuple[str, str], str] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.workflows: dict[int, Workflow] = {}
        self.runs: dict[int, WorkflowRun] = {}
        self.failures: list[Failure] = []
        #: how many conditional GETs were answered 304 Not Modified
        self.not_modified = 0
        self.log: list[Call] = []
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self.identity = self.add_user(identity, identity_type).login
        self._server: ThreadingHTTPServer | None = None

    # -- server ----------------------------------------------------------------
    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        # a short poll: stop() waits for it, and every test stops a fake
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        """What ``GITHUB_API_URL`` would be."""
        return self.origin + self.prefix

    # -- state -----------------------------------------------------------------
    def add_user(self, login: str, type: str = "User") -> User:
        with self._lock:
            if login not in self.users:
                self.users[login] = User(login, next(self._ids), type)
            return self.users[login]

    def add_repo(self, full_name: str, *, private: bool = False, default_branch: str = "main",
                 fork: bool = False) -> Repo:
        with self._lock:
            self.add_user(full_name.split("/")[0])
            repo = self.repos[full_name] = Repo(full_name, next(self._ids), private, default_branch, fork)
            return repo

    @property
    def default_repo(self) -> str:
        """The first repository added; helpers use it when none is named."""
        assert self.repos, "add a repository first"
        return next(iter(self.repos))

    def _next_number(self, repo: str) -> int:
        return 1 + max((n for r, n in self.issues if r == repo), default=0)

    def add_pull(self, *, head_sha: str, head_ref: str = "feature", head_repo: str | None = None,
                 repo: str | None = None, number: int | None = None, user: str = "octocat",
                 state: str = "open", title: str = "A change", base_ref: str = "main") -> int:
        """A pull request from ``head_repo`` (default: the same repository); returns its number."""
        repo = repo or self.default_repo
        with self._lock:
            if head_repo and head_repo not in self.repos:
                self.add_repo(head_repo, fork=head_repo != repo)
            self.add_user(user)
            number = number or self._next_number(repo)
            self.issues[(repo, number)] = Issue(number, next(self._ids), title, user, state, pull=True,
                                                head_sha=head_sha, head_ref=head_ref,
                                                head_repo=head_repo or repo, base_ref=base_ref)
            return number

    def add_issue(self, *, repo: str | None = None, number: int | None = None, user: str = "octocat",
                  title: str = "An issue", state: str = "open") -> int:
        repo = repo or self.default_repo
        with self._lock:
            self.add_user(user)
            number = number or self._next_number(repo)
            self.issues[(repo, number)] = Issue(number, next(self._ids), title, user, state)
            return number

    def set_role(self, login: str, role: str | None, *, repo: str | None = None) -> None:
        """Give ``login`` a repository role (admin, maintain, write, triage, read), or none."""
        assert role is None or role in ROLES, role
        with self._lock:
            self.add_user(login)
            roles = self.repos[repo or self.default_repo].roles
            if role is None:
                roles.pop(login, None)
            else:
                roles[login] = role

    def add_comment(self, issue: int, body: str, *, user: str = "octocat", user_type: str = "User",
                    association: str = "NONE", repo: str | None = None) -> int:
        """A comment written by someone else, e.g. before the Action ran; returns its id."""
        repo = repo or self.default_repo
        with self._lock:
            assert (repo, issue) in self.issues, f"no issue or pull request #{issue} in {repo}"
            self.add_user(user, user_type)
            comment = Comment(next(self._ids), repo, issue, user, body, association)
            self.comments[comment.id] = comment
            return comment.id

    def move_head(self, number: int, sha: str, *, repo: str | None = None) -> None:
        """Someone pushed to the pull request's branch."""
        with self._lock:
            self.issues[(repo or self.default_repo, number)].head_sha = sha

    def delete_head_repo(self, number: int, *, repo: str | None = None) -> None:
        """The fork was deleted: GitHub then answers ``head.repo: null``."""
        with self._lock:
            self.issues[(repo or self.default_repo, number)].head_repo = None

    def comments_on(self, issue: int, *, repo: str | None = None) -> list[Comment]:
        repo = repo or self.default_repo
        with self._lock:
            return [c for c in self.comments.values() if c.repo == repo and c.issue == issue]

    def statuses_of(self, sha: str, *, repo: str | None = None) -> list[dict[str, Any]]:
        """The statuses created for a commit, oldest first."""
        with self._lock:
            return list(self.statuses.get((repo or self.default_repo, sha), []))

    def reactions(self, comment_id: int) -> list[tuple[str, str]]:
        """(content, login) of each reaction on a comment."""
        with self._lock:
            return [(content, login) for _, content, login, _ in self.comments[comment_id].reactions]


    # -- GitHub Actions: state the test sets and drives ---------------------------------------
    def set_head(self, branch: str, sha: str, *, repo: str | None = None) -> None:
        """A push: ``branch`` (created if new) now points at ``sha``."""
        with self._lock:
            self.branches[(repo or self.default_repo, branch)] = sha

    add_branch = set_head

    def add_tag(self, tag: str, sha: str, *, repo: str | None = None) -> None:
        with self._lock:
            self.tags[(repo or self.default_repo, tag)] = sha

    def add_workflow(self, path: str = ".github/workflows/soopervisor.yml", *, name: str = "soopervisor",
                     dispatch: bool = True, inputs: tuple[str, ...] = ("mode",), repo: str | None = None) -> int:
        """A workflow file GitHub knows on the default branch; returns its id."""
        with self._lock:
            wf = Workflow(next(self._ids), repo or self.default_repo, path, name, dispatch, tuple(inputs))
            self.workflows[wf.id] = wf
            return wf.id

    def last_run(self) -> WorkflowRun:
        with self._lock:
            assert self.runs, "no workflow run yet"
            return self.runs[max(self.runs)]

    def start_run(self, run_id: int, steps: list[str], *, job: str = "run") -> Job:
        """A runner took the run: its one job starts, with these steps (all queued)."""
        with self._lock:
            run = self.runs[run_id]
            now = _now()
            run.status, run.run_started_at, run.updated_at = "in_progress", now, now
            j = Job(next(self._ids), run.id, job, status="in_progress", started_at=now,
                    steps=[Step(i + 1, name) for i, name in enumerate(steps)], blob_sig=f"sig{next(self._ids)}")
            run.jobs.append(j)
            return j

    def _job(self, run_id: int) -> Job:
        run = self.runs[run_id]
        assert run.jobs, "start the run first"
        return run.jobs[-1]

    def start_step(self, run_id: int, number: int) -> None:
        with self._lock:
            step = self._job(run_id).steps[number - 1]
            step.status, step.started_at = "in_progress", _now()

    def finish_step(self, run_id: int, number: int, log: str = "", *, conclusion: str = "success",
                    took: int | None = None) -> None:
        """The step ends (started first if it was not); ``log`` is what it printed; ``took``: its
        ``completed_at`` that many seconds after its ``started_at`` (else now)."""
        with self._lock:
            step = self._job(run_id).steps[number - 1]
            if step.status == "queued":
                step.started_at = _now()
            end = _now()
            if took is not None:
                start = datetime.fromisoformat(step.started_at or end)
                end = datetime.fromtimestamp(start.timestamp() + took, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            step.status, step.conclusion, step.completed_at = "completed", conclusion, end
            step.log += [f"{_log_time()} {line}" for line in log.splitlines()]

    def conclude(self, run_id: int, conclusion: str = "success", *, log_ready: bool = True) -> None:
        """The job and the run complete; steps not run are skipped. The log is written unless ``log_ready``
        is False (then :meth:`write_log` does it): GitHub writes it a moment after the job completes."""
        with self._lock:
            run = self.runs[run_id]
            now = _now()
            for j in run.jobs:
                for step in j.steps:
                    if step.status == "in_progress":
                        step.status, step.conclusion, step.completed_at = "completed", conclusion, now
                    elif step.status == "queued":
                        step.status, step.conclusion = "completed", "skipped"
                if j.status != "completed":
                    j.status, j.conclusion, j.completed_at = "completed", conclusion, now
                j.log_written = j.log_written or (log_ready and j.started_at is not None)
            run.status, run.conclusion, run.updated_at = "completed", conclusion, now

    def write_log(self, run_id: int) -> None:
        with self._lock:
            for j in self.runs[run_id].jobs:
                j.log_written = j.started_at is not None

    # -- faults ----------------------------------------------------------------
    def limit_next(self, n: int = 1, *, reset_in: float = 60, status: int = 403) -> None:
        """The next ``n`` requests hit the primary rate limit, which resets ``reset_in`` s from now."""
        reset = str(int(time.time() + reset_in))
        self.failures.append(Failure(status, {"message": "API rate limit exceeded for installation ID 4242.",
                                              "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api"},
                                     {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset,
                                      "x-ratelimit-used": str(self.rate_limit)}, n))

    def secondary_limit_next(self, n: int = 1, *, retry_after: int | None = 60, status: int = 403) -> None:
        """The next ``n`` requests hit a secondary (abuse) limit; ``retry_after=None`` sends no header."""
        headers = {} if retry_after is None else {"retry-after": str(retry_after)}
        self.failures.append(Failure(status, {
            "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                       "If you reach out to GitHub Support for help, please include the request ID 0000:FAKE.",
            "documentation_url": DOCS + "/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"},
            headers, n))

    def fail_next(self, status: int, message: str, *, times: int = 1, method: str | None = None,
                  path: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.failures.append(Failure(status, {"message": message, "documentation_url": DOCS}, headers or {},
                                     times, method, path))

    def calls(self, method: str | None = None) -> list[str]:
        """``"METHOD /path"`` of each request so far (path without prefix and query)."""
        return [f"{c.method} {c.path}" for c in self.log if method in (None, c.method)]

    # -- resources -------------------------------------------------------------
    def _user(self, login: str) -> dict[str, Any]:
        u = self.users.get(login) or User(login, 0)
        return {"login": u.login, "id": u.id, "node_id": f"U_fake{u.id}", "type": u.type, "site_admin": False,
                "url": f"{self.api_url}/users/{quote(u.login)}", "html_url": f"{self.html_url}/{quote(u.login)}",
                "avatar_url": f"https://avatars.githubusercontent.com/u/{u.id}?v=4"}

    def _repo(self, repo: Repo) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {"id": repo.id, "node_id": f"R_fake{repo.id}", "name": repo.full_name.split("/")[1],
                "full_name": repo.full_name, "private": repo.private, "fork": repo.fork,
                "visibility": "private" if repo.private else "public", "owner": self._user(repo.owner),
                "html_url": f"{self.html_url}/{repo.full_name}", "url": api,
                "pulls_url": api + "/pulls{/number}", "issues_url": api + "/issues{/number}",
                "default_branch": repo.default_branch}

    def _association(self, repo: Repo, login: str) -> str:
        if login == repo.owner:
            return "OWNER"
        return "COLLABORATOR" if login in repo.roles else "NONE"

    def _pull(self, repo: Repo, i: Issue) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        head_repo = self.repos.get(i.head_repo) if i.head_repo else None
        head_owner = i.head_repo.split("/")[0] if i.head_repo else i.user
        return {
            "url": f"{api}/pulls/{i.number}", "id": i.id, "node_id": f"PR_fake{i.id}",
            "html_url": f"{self.html_url}/{repo.full_name}/pull/{i.number}",
            "diff_url": f"{self.html_url}/{repo.full_name}/pull/{i.number}.diff",
            "patch_url": f"{self.html_url}/{repo.full_name}/pull/{i.number}.patch",
            "issue_url": f"{api}/issues/{i.number}", "comments_url": f"{api}/issues/{i.number}/comments",
            "number": i.number, "state": i.state, "locked": False, "title": i.title, "body": None,
            "user": self._user(i.user), "created_at": i.created_at, "updated_at": i.created_at,
            "closed_at": None, "merged_at": None, "merge_commit_sha": None, "draft": False, "merged": False,
            "author_association": self._association(repo, i.user),
            "head": {"label": f"{head_owner}:{i.head_ref}", "ref": i.head_ref, "sha": i.head_sha,
                     "user": self._user(head_owner), "repo": self._repo(head_repo) if head_repo else None},
            "base": {"label": f"{repo.owner}:{i.base_ref}", "ref": i.base_ref, "sha": i.base_sha,
                     "user": self._user(repo.owner), "repo": self._repo(repo)},
        }

    def _issue(self, repo: Repo, i: Issue) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        out = {"url": f"{api}/issues/{i.number}", "id": i.id, "node_id": f"I_fake{i.id}", "number": i.number,
               "repository_url": api, "comments_url": f"{api}/issues/{i.number}/comments",
               "html_url": f"{self.html_url}/{repo.full_name}/{'pull' if i.pull else 'issues'}/{i.number}",
               "title": i.title, "state": i.state, "locked": False, "user": self._user(i.user), "body": None,
               "labels": [], "assignees": [], "comments": len(self.comments_on(i.number, repo=repo.full_name)),
               "created_at": i.created_at, "updated_at": i.created_at, "closed_at": None,
               "author_association": self._association(repo, i.user)}
        if i.pull:
            pr = self._pull(repo, i)
            out["pull_request"] = {k: pr[k] for k in ("url", "html_url", "diff_url", "patch_url", "merged_at")}
        return out

    def _comment(self, c: Comment) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{c.repo}"
        kind = "pull" if self.issues[(c.repo, c.issue)].pull else "issues"
        counts = {r: sum(1 for _, content, _, _ in c.reactions if content == r) for r in REACTIONS}
        return {"url": f"{api}/issues/comments/{c.id}", "id": c.id, "node_id": f"IC_fake{c.id}",
                "html_url": f"{self.html_url}/{c.repo}/{kind}/{c.issue}#issuecomment-{c.id}",
                "issue_url": f"{api}/issues/{c.issue}", "body": c.body, "user": self._user(c.user),
                "created_at": c.created_at, "updated_at": c.updated_at,
                "author_association": c.author_association, "performed_via_github_app": None,
                "reactions": {"url": f"{api}/issues/comments/{c.id}/reactions", "total_count": len(c.reactions),
                              **counts}}

    def _reaction(self, r: tuple[int, str, str, str]) -> dict[str, Any]:
        rid, content, login, created = r
        return {"id": rid, "node_id": f"REA_fake{rid}", "user": self._user(login), "content": content,
                "created_at": created}


    def _run(self, run: WorkflowRun) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{run.repo}/actions/runs/{run.id}"
        return {"id": run.id, "node_id": f"WFR_fake{run.id}", "name": run.name, "display_title": run.name,
                "path": run.path, "run_number": run.run_number, "run_attempt": 1, "event": run.event,
                "status": run.status, "conclusion": run.conclusion, "workflow_id": run.workflow_id,
                "head_branch": run.head_branch, "head_sha": run.head_sha, "url": api,
                "html_url": f"{self.html_url}/{run.repo}/actions/runs/{run.id}", "jobs_url": api + "/jobs",
                "logs_url": api + "/logs", "cancel_url": api + "/cancel", "rerun_url": api + "/rerun",
                "workflow_url": f"{self.api_url}/repos/{run.repo}/actions/workflows/{run.workflow_id}",
                "created_at": run.created_at, "updated_at": run.updated_at, "run_started_at": run.run_started_at,
                "actor": self._user(self.identity), "triggering_actor": self._user(self.identity),
                "pull_requests": [], "repository": self._repo(self.repos[run.repo])}

    def _job_json(self, run: WorkflowRun, j: Job) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{run.repo}/actions"
        return {"id": j.id, "run_id": run.id, "run_url": f"{api}/runs/{run.id}", "node_id": f"CR_fake{j.id}",
                "head_sha": run.head_sha, "head_branch": run.head_branch, "url": f"{api}/jobs/{j.id}",
                "html_url": f"{self.html_url}/{run.repo}/actions/runs/{run.id}/job/{j.id}",
                "status": j.status, "conclusion": j.conclusion, "created_at": j.created_at,
                "started_at": j.started_at, "completed_at": j.completed_at, "name": j.name,
                "workflow_name": run.name, "run_attempt": 1, "labels": ["ubuntu-latest"],
                "runner_name": "GitHub Actions 2" if j.started_at else None,
                "steps": [{"name": st.name, "status": st.status, "conclusion": st.conclusion, "number": st.number,
                           "started_at": st.started_at, "completed_at": st.completed_at} for st in j.steps]}

    def _workflow(self, wf: Workflow) -> dict[str, Any]:
        return {"id": wf.id, "node_id": f"W_fake{wf.id}", "name": wf.name, "path": wf.path, "state": wf.state,
                "created_at": wf.created_at, "updated_at": wf.created_at,
                "url": f"{self.api_url}/repos/{wf.repo}/actions/workflows/{wf.id}",
                "html_url": f"{self.html_url}/{wf.repo}/blob/main/{wf.path}",
                "badge_url": f"{self.html_url}/{wf.repo}/workflows/{quote(wf.name)}/badge.svg"}

    def _branch(self, repo: Repo, name: str, sha: str) -> dict[str, Any]:
        return {"name": name, "protected": False,
                "commit": {"sha": sha, "url": f"{self.api_url}/repos/{repo.full_name}/commits/{sha}"}}

    # -- routing ---------------------------------------------------------------
    def _rate_headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.rate_limit),
                "x-ratelimit-remaining": str(max(self.rate_limit - self.rate_used, 0)),
                "x-ratelimit-reset": str(self.rate_reset), "x-ratelimit-used": str(self.rate_used),
                "x-ratelimit-resource": "core"}

    def _find_repo(self, owner: str, name: str) -> Repo:
        repo = self.repos.get(f"{owner}/{name}")
        if repo is None:
            raise GitHubAPIError(404, "Not Found")
        return repo

    def _find_issue(self, repo: Repo, number: str) -> Issue:
        issue = self.issues.get((repo.full_name, int(number)))
        if issue is None:
            raise GitHubAPIError(404, "Not Found")
        return issue

    def _find_comment(self, repo: Repo, cid: str) -> Comment:
        c = self.comments.get(int(cid))
        if c is None or c.repo != repo.full_name:
            raise GitHubAPIError(404, "Not Found")
        return c

    def _may_write(self, issue: Issue, doc: str) -> None:
        # documented: issue comments need "Issues" write, or "Pull requests" write on a pull request
        ok = self.token_permissions.get("issues") == "write" or (
            issue.pull and self.token_permissions.get("pull_requests") == "write")
        if not ok:
            raise GitHubAPIError(403, "Resource not accessible by integration",
                                 {"x-accepted-github-permissions": "issues=write; pull_requests=write"},
                                 documentation_url=f"https://docs.github.com/rest/{doc}")

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        """One request, already authenticated: (status, JSON body, extra headers)."""
        if path == "/rate_limit" and method == "GET":
            core = {"limit": self.rate_limit, "used": self.rate_used, "remaining": self.rate_limit - self.rate_used,
                    "reset": self.rate_reset}
            return 200, {"resources": {"core": core}, "rate": core}, {}
        if path == "/user" and method == "GET":
            if self.users[self.identity].type == "Bot":
                raise GitHubAPIError(403, "Resource not accessible by integration")
            return 200, self._user(self.identity), {}
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if not m:
            raise GitHubAPIError(404, "Not Found")
        repo = self._find_repo(unquote(m.group(1)), unquote(m.group(2)))
        rest = m.group(3) or ""
        if rest == "" and method == "GET":
            return 200, self._repo(repo), {}
        if (m := re.fullmatch(r"/pulls/(\d+)", rest)) and method == "GET":
            issue = self._find_issue(repo, m.group(1))
            if not issue.pull:
                raise GitHubAPIError(404, "Not Found")
            return 200, self._pull(repo, issue), {}
        if (m := re.fullmatch(r"/statuses/([0-9a-fA-F]{4,40})", rest)) and method == "POST":
            return self._create_status(repo, m.group(1), body or {})
        if (m := re.fullmatch(r"/commits/([^/]+)/statuses", rest)) and method == "GET":
            return self._page(list(reversed(self.statuses.get((repo.full_name, m.group(1)), []))), path, query)
        if (m := re.fullmatch(r"/commits/([^/]+)/pulls", rest)) and method == "GET":
            pulls = [self._pull(repo, i) for (r, _), i in sorted(self.issues.items())
                     if r == repo.full_name and i.pull and i.head_sha == m.group(1)]
            return self._page(pulls, path, query)
        if (m := re.fullmatch(r"/collaborators/([^/]+)/permission", rest)) and method == "GET":
            login = unquote(m.group(1))
            if login not in self.users:
                raise GitHubAPIError(404, "Not Found")
            role = repo.roles.get(login) or ("admin" if login == repo.owner else None)
            role = role or ("none" if repo.private else "read")
            return 200, {"permission": ROLES.get(role, "none"), "role_name": role, "user": self._user(login)}, {}
        if (m := re.fullmatch(r"/issues/(\d+)", rest)) and method == "GET":
            return 200, self._issue(repo, self._find_issue(repo, m.group(1))), {}
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            issue = self._find_issue(repo, m.group(1))
            if method == "GET":
                return self._page([self._comment(c) for c in self.comments_on(issue.number, repo=repo.full_name)],
                                  path, query)
            if method == "POST":
                self._may_write(issue, "issues/comments#create-an-issue-comment")
                text = (body or {}).get("body")
                if not isinstance(text, str) or not text:
                    raise GitHubAPIError(422, "Validation Failed",
                                         errors=[{"resource": "IssueComment", "code": "missing_field",
                                                  "field": "body"}])
                c = Comment(next(self._ids), repo.full_name, issue.number, self.identity, text,
                            self._association(repo, self.identity))
                self.comments[c.id] = c
                return 201, self._comment(c), {"location": f"{self.api_url}/repos/{repo.full_name}/issues/comments/{c.id}"}
        if m := re.fullmatch(r"/issues/comments/(\d+)", rest):
            c = self._find_comment(repo, m.group(1))
            if method == "GET":
                return 200, self._comment(c), {}
            if method == "PATCH":
                self._may_write(self.issues[(c.repo, c.issue)], "issues/comments#update-an-issue-comment")
                text = (body or {}).get("body")
                if not isinstance(text, str) or not text:
                    raise GitHubAPIError(422, "Validation Failed")
                c.body, c.updated_at = text, _now()
                return 200, self._comment(c), {}
        if m := re.fullmatch(r"/issues/comments/(\d+)/reactions", rest):
            c = self._find_comment(repo, m.group(1))
            if method == "GET":
                return self._page([self._reaction(r) for r in c.reactions], path, query)
            if method == "POST":
                self._may_write(self.issues[(c.repo, c.issue)], "reactions#create-reaction-for-an-issue-comment")
                content = (body or {}).get("content")
                if content not in REACTIONS:
                    raise GitHubAPIError(422, "Validation Failed",
                                         errors=[{"resource": "Reaction", "code": "custom", "field": "content",
                                                  "message": f"content {content!r} is not a valid value"}])
                for r in c.reactions:
                    if r[1] == content and r[2] == self.identity:
                        return 200, self._reaction(r), {}  # documented: 200 when already there
                r = (next(self._ids), content, self.identity, _now())
                c.reactions.append(r)
                return 201, self._reaction(r), {}
        answer = self._actions(repo, method, rest, query, body)
        if answer is not None:
            return answer
        raise GitHubAPIError(404, "Not Found")

    # -- GitHub Actions: routes ----------------------------------------------------------------
    def _need(self, permission: str, level: str, doc: str) -> None:
        """403 unless the token has ``permission`` at ``level`` (read is implied by write)."""
        have = self.token_permissions.get(permission)
        if have == "write" or (level == "read" and have == "read"):
            return
        raise GitHubAPIError(403, "Resource not accessible by integration",
                             {"x-accepted-github-permissions": f"{permission}={level}"},
                             documentation_url=f"{DOCS}/{doc}")

    def _find_workflow(self, repo: Repo, ident: str) -> Workflow:
        for wf in self.workflows.values():
            if wf.repo == repo.full_name and (str(wf.id) == ident or wf.path.rsplit("/", 1)[-1] == ident):
                return wf
        raise GitHubAPIError(404, "Not Found")

    def _find_run(self, repo: Repo, rid: str) -> WorkflowRun:
        run = self.runs.get(int(rid))
        if run is None or run.repo != repo.full_name:
            raise GitHubAPIError(404, "Not Found")
        return run

    def _actions(self, repo: Repo, method: str, rest: str, query: dict[str, str],
                 body: Any) -> tuple[int, Any, dict[str, str]] | None:
        if (m := re.fullmatch(r"/branches/(.+)", rest)) and method == "GET":
            self._need("contents", "read", "branches/branches#get-a-branch")
            name = unquote(m.group(1))
            sha = self.branches.get((repo.full_name, name))
            if sha is None:
                raise GitHubAPIError(404, "Branch not found")
            return 200, self._branch(repo, name, sha), {}
        if (m := re.fullmatch(r"/commits/([0-9a-fA-F]{40})/branches-where-head", rest)) and method == "GET":
            self._need("contents", "read", "commits/commits#list-branches-for-head-commit")
            return 200, [self._branch(repo, name, sha) for (r, name), sha in sorted(self.branches.items())
                         if r == repo.full_name and sha == m.group(1).lower()], {}
        if (m := re.fullmatch(r"/actions/workflows/([^/]+)", rest)) and method == "GET":
            self._need("actions", "read", "actions/workflows#get-a-workflow")
            return 200, self._workflow(self._find_workflow(repo, unquote(m.group(1)))), {}
        if (m := re.fullmatch(r"/actions/workflows/([^/]+)/dispatches", rest)) and method == "POST":
            return self._dispatch(repo, self._find_workflow(repo, unquote(m.group(1))), body or {})
        if rest == "/actions/runs" and method == "GET":
            self._need("actions", "read", "actions/workflow-runs#list-workflow-runs-for-a-repository")
            runs = [r for r in sorted(self.runs.values(), key=lambda r: -r.id) if r.repo == repo.full_name
                    and all(not query.get(k) or getattr(r, a) == query[k]
                            for k, a in (("event", "event"), ("head_sha", "head_sha"), ("branch", "head_branch")))
                    and (not query.get("status") or query["status"] in (r.status, r.conclusion))
                    and _created_matches(r.created_at, query.get("created"))]
            code, page, headers = self._page([self._run(r) for r in runs], f"/repos/{repo.full_name}{rest}", query)
            return code, {"total_count": len(runs), "workflow_runs": page}, headers
        if (m := re.fullmatch(r"/actions/runs/(\d+)", rest)) and method == "GET":
            self._need("actions", "read", "actions/workflow-runs#get-a-workflow-run")
            return 200, self._run(self._find_run(repo, m.group(1))), {}
        if (m := re.fullmatch(r"/actions/runs/(\d+)/jobs", rest)) and method == "GET":
            self._need("actions", "read", "actions/workflow-jobs#list-jobs-for-a-workflow-run")
            run = self._find_run(repo, m.group(1))
            code, page, headers = self._page([self._job_json(run, j) for j in run.jobs],
                                             f"/repos/{repo.full_name}{rest}", query)
            return code, {"total_count": len(run.jobs), "jobs": page}, headers
        if (m := re.fullmatch(r"/actions/runs/(\d+)/cancel", rest)) and method == "POST":
            self._need("actions", "write", "actions/workflow-runs#cancel-a-workflow-run")
            run = self._find_run(repo, m.group(1))
            if run.status == "completed":
                raise GitHubAPIError(409, "Cannot cancel a workflow run that is completed.")
            self.conclude(run.id, "cancelled")
            return 202, {}, {}
        if (m := re.fullmatch(r"/actions/jobs/(\d+)/logs", rest)) and method == "GET":
            self._need("actions", "read", "actions/workflow-jobs#download-job-logs-for-a-workflow-run")
            for run in self.runs.values():
                for j in run.jobs:
                    if j.id == int(m.group(1)) and run.repo == repo.full_name:
                        # a signed URL on the blob store, valid a minute; no token needed (nor accepted) there
                        return 302, None, {"location": f"{self.origin}/_blobs/job-logs/{j.id}?sig={j.blob_sig}"}
            raise GitHubAPIError(404, "Not Found")
        return None

    def _dispatch(self, repo: Repo, wf: Workflow, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        self._need("actions", "write", "actions/workflows#create-a-workflow-dispatch-event")
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise GitHubAPIError(422, "Invalid request.\n\n\"ref\" wasn't supplied.")
        if not wf.dispatch:
            raise GitHubAPIError(422, "Workflow does not have 'workflow_dispatch' trigger")
        name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = None
        if not ref.startswith("refs/tags/"):
            sha = self.branches.get((repo.full_name, name))
        if sha is None and not ref.startswith("refs/heads/"):
            sha = self.tags.get((repo.full_name, name))
        if sha is None:
            raise GitHubAPIError(422, f"No ref found for: {ref}")
        extra = sorted(set(body) - {"ref", "inputs"} - ({"return_run_details"} if self.run_details else set()))
        if extra:
            raise GitHubAPIError(422, f"Invalid request.\n\n{json.dumps(extra[0])} is not a permitted key.")
        inputs = body.get("inputs") or {}
        unexpected = [k for k in inputs if k not in wf.inputs]
        if unexpected:
            raise GitHubAPIError(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        number = 1 + sum(1 for r in self.runs.values() if r.workflow_id == wf.id)
        run = WorkflowRun(next(self._ids), repo.full_name, wf.id, wf.path, wf.name, number, "workflow_dispatch",
                          name, sha, dict(inputs))
        self.runs[run.id] = run
        if body.get("return_run_details") is True:
            api = f"{self.api_url}/repos/{run.repo}/actions/runs/{run.id}"
            return 200, {"workflow_run_id": run.id, "run_url": api,
                         "html_url": f"{self.html_url}/{run.repo}/actions/runs/{run.id}"}, {}
        return 204, None, {}

    def blob(self, path: str, query: dict[str, str], authorized: bool) -> tuple[int, str, str]:
        """The blob store behind a log's signed URL: (status, content type, text)."""
        m = re.fullmatch(r"/_blobs/job-logs/(\d+)", path)
        job = next((j for r in self.runs.values() for j in r.jobs if m and j.id == int(m.group(1))), None)
        if authorized:
            return 403, "application/xml", ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed"
                                            "</Code><Message>Server failed to authenticate the request.</Message></Error>")
        if job is None or query.get("sig") != job.blob_sig:
            return 403, "application/xml", "<Error><Code>AuthenticationFailed</Code></Error>"
        if not job.log_written:
            return 404, "application/xml", ("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code>"
                                            "<Message>The specified blob does not exist.</Message></Error>")
        lines = [line for step in job.steps for line in step.log]
        return 200, "text/plain; charset=utf-8", "\ufeff" + "".join(line + "\n" for line in lines)

    def _create_status(self, repo: Repo, sha: str, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if self.token_permissions.get("statuses") != "write":
            raise GitHubAPIError(403, "Resource not accessible by integration",
                                 {"x-accepted-github-permissions": "statuses=write"},
                                 documentation_url=f"{DOCS}/commits/statuses#create-a-commit-status")
        state, description = body.get("state"), body.get("description")
        if state not in ("error", "failure", "pending", "success"):
            raise GitHubAPIError(422, "Validation Failed",
                                 errors=[{"resource": "Status", "code": "custom", "field": "state",
                                          "message": "state is not included in the list"}])
        if description is not None and (not isinstance(description, str) or len(description) > 140):
            raise GitHubAPIError(422, "Validation Failed",
                                 errors=[{"resource": "Status", "code": "custom", "field": "description",
                                          "message": "description is too long (maximum is 140 characters)"}])
        sid = next(self._ids)
        now = _now()
        status = {"url": f"{self.api_url}/repos/{repo.full_name}/statuses/{sha}", "id": sid,
                  "node_id": f"SC_fake{sid}", "state": state, "description": description,
                  "target_url": body.get("target_url"), "context": body.get("context") or "default",
                  "avatar_url": None, "created_at": now, "updated_at": now,
                  "creator": self._user(self.identity)}
        self.statuses.setdefault((repo.full_name, sha), []).append(status)
        return 201, status, {}

    def _page(self, items: list[dict[str, Any]], path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(int(query.get("per_page") or 30), 100))
        page = max(1, int(query.get("page") or 1))
        last = max(1, -(-len(items) // per_page))
        links = []

        def link(n: int, rel: str) -> str:
            return f'<{self.api_url}{path}?per_page={per_page}&page={n}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"link": ", ".join(links)} if links else {}
        return 200, items[(page - 1) * per_page: page * per_page], headers


def _created_matches(created: str, spec: str | None) -> bool:
    """GitHub's date search syntax for ``created``: ``>=T``, ``<=T``, ``>T``, ``<T``, ``A..B`` or a date."""
    if not spec:
        return True
    def at(text: str) -> datetime:
        text = text.strip()
        if len(text) == 10:
            text += "T00:00:00Z"
        return datetime.fromisoformat(text)
    when = at(created)
    for op, test in ((">=", lambda a, b: a >= b), ("<=", lambda a, b: a <= b), (">", lambda a, b: a > b),
                     ("<", lambda a, b: a < b)):
        if spec.startswith(op):
            return test(when, at(spec[len(op):]))
    if ".." in spec:
        lo, hi = spec.split("..", 1)
        return (lo == "*" or when >= at(lo)) and (hi == "*" or when <= at(hi))
    return created.startswith(spec)


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            path = parts.path
            if path.startswith("/_blobs/"):  # the blob store: no prefix, no token, not rate limited
                with fake._lock:
                    fake.log.append(Call(self.command, path, query, None, raw_path=path))
                    status, ctype, text = fake.blob(path, query, bool(self.headers.get("Authorization")))
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            with fake._lock:
                call = Call(self.command, path, query, body, raw_path=path)
                fake.log.append(call)
                status, out, headers = self._answer(call, query, body, raw)
                if self.command == "GET" and status == 200:
                    # conditional requests, as documented: an ETag on every answer; If-None-Match with it
                    # is a 304 without a body that does not count against the rate limit
                    etag = '"' + hashlib.sha1(json.dumps(out, sort_keys=True).encode()).hexdigest() + '"'
                    headers = {**headers, "etag": etag}
                    if self.headers.get("If-None-Match") == etag:
                        status, out = 304, None
                        fake.rate_used = max(0, fake.rate_used - 1)
                        fake.not_modified += 1
                call.status = status
                headers = {**fake._rate_headers(), **headers}
            self._send(status, out, headers)

        def _answer(self, call: Call, query: dict[str, str], body: Any, raw: bytes) -> tuple[int, Any, dict[str, str]]:
            path = call.raw_path
            if fake.prefix:
                if not path.startswith(fake.prefix + "/"):
                    return 404, {"message": "Not Found", "documentation_url": DOCS}, {}
                path = path[len(fake.prefix):]
            call.path = path
            auth = self.headers.get("Authorization") or ""
            scheme, _, token = auth.partition(" ")
            if scheme.lower() not in ("token", "bearer") or token != fake.token:
                return 401, {"message": "Bad credentials", "documentation_url": DOCS}, {}
            for f in fake.failures:
                if f.matches(self.command, path):
                    f.times -= 1
                    return f.status, f.body, f.headers
            if time.time() >= fake.rate_reset:  # a new window
                fake.rate_used, fake.rate_reset = 0, int(time.time()) + 3600
            if fake.rate_used >= fake.rate_limit and path != "/rate_limit":
                return 403, {"message": "API rate limit exceeded for installation ID 4242.",
                             "documentation_url": DOCS}, {}
            if raw and body is None:
                return 400, {"message": "Problems parsing JSON", "documentation_url": DOCS}, {}
            if path != "/rate_limit":  # documented: checking the limit does not count against it
                fake.rate_used += 1
            try:
                return fake.route(self.command, path, query, body)
            except GitHubAPIError as e:
                return e.status, e.body, e.headers
            except (ValueError, KeyError) as e:
                return 400, {"message": f"bad request: {e}", "documentation_url": DOCS}, {}

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    return Handler

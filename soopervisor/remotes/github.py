"""GitHub Actions as a remote: ``workflow_dispatch`` of the workflow ``soopervisor github init``
wrote, for a commit that is the head of a branch on GitHub, then the run followed through the
REST API (status, jobs and their steps while it runs; each job's log once it has completed,
since GitHub writes a job's log only then).

Plain HTTP (requests) rather than PyGithub: the handful of calls made here need control that
PyGithub hides — a log's download URL must be fetched *without* the token (it is a signed URL
on another host, which refuses an Authorization header), a 404 from it means "not written
yet", polling uses conditional requests (a 304 does not count against the rate limit), a
dispatch asks for its run's id (``return_run_details``) and falls back to listing runs where
GitHub Enterprise Server refuses that key, and a follower must wait out rate limits while it
can still be stopped. The rate-limit rules are those of :mod:`soopervisor.github.api`.

The lines a follower sends are a sequence that only grows — the run's address, each step as it
starts and ends, then each completed job's log (timestamps cut) — so a follower started again
with the number of lines the local log has sends each line once.

GitHub Enterprise Server: pass its API URL (``https://HOST/api/v3``).
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from ..redact import CREDENTIALS
from .base import RemoteRefused, RemoteUnavailable, Sink, Submitted

WORKFLOW = ".github/workflows/soopervisor.yml"
#: seconds between two looks at a run that goes on
POLL = 2.0
#: how long ``submit`` looks for the run its dispatch created before leaving it to ``follow``
FIND_TIMEOUT = 20.0
#: how long a completed job's log may stay unwritten before the follower gives up on it
LOG_WAIT = 60.0
#: how long GitHub may not answer before a follower says so (RemoteUnavailable)
UNREACHABLE_AFTER = 60.0
#: the longest rate-limit wait worth spending in ``submit`` (a follower waits as long as it takes)
SUBMIT_RATE_WAIT = 60.0
#: the slack allowed between this machine's clock and GitHub's when looking for a new run
CLOCK_SLACK = timedelta(minutes=5)

NEEDED = "Actions: read and write, Contents: read on the repository"
PERMISSION_HINT = ("a fine-grained token needs the repository permissions Actions: read and write and Contents: "
                   "read; a classic token the `repo` scope (`public_repo` for a public repository)")
#: GitHub's log lines start with a timestamp: 2026-12-03T01:05:38.1234567Z
_STAMP = re.compile(r"^\ufeff?\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z ?")
NO_STORAGE = ("github: the workflow has no `storage:`, so the artifacts stayed on GitHub's runner and are gone; "
              "`soopervisor github init --storage URL` writes one that keeps them\n")
#: the workflow commands GitHub writes into a log as ##[name]
_COMMAND = re.compile(r"^##\[(group|endgroup|section|command|error|warning|notice|debug)\]")
_CONCLUSIONS = {"success": "succeeded", "failure": "failed", "cancelled": "cancelled"}


class _Stopped(Exception):
    """``stop`` was set while a call waited (a rate limit, GitHub not answering)."""


class _Older(Exception):
    """A GitHub (Enterprise Server) that does not know ``return_run_details`` refused the dispatch."""


class GitHubRemote:
    """The repository's own soopervisor workflow on GitHub (or GitHub Enterprise Server)."""

    kind = "github"

    def __init__(self, name: str, api_url: str, token: str | None, repository: str | None = None, *,
                 poll: float | None = None, find_timeout: float | None = None, log_wait: float | None = None,
                 unreachable_after: float | None = None) -> None:
        self.name = name
        self.url = (api_url or "https://api.github.com").rstrip("/")
        self.repository = repository
        # None: the module's value when the remote is made (tests set it shorter)
        self.poll = POLL if poll is None else poll
        self.find_timeout = FIND_TIMEOUT if find_timeout is None else find_timeout
        self.log_wait = LOG_WAIT if log_wait is None else log_wait
        self.unreachable_after = UNREACHABLE_AFTER if unreachable_after is None else unreachable_after
        self._token = token or None
        if self._token:
            CREDENTIALS.add(self._token)  # never printed, whatever error text quotes it
        self._session: Any = None
        self._etags: dict[tuple[str, tuple], tuple[str, Any]] = {}  # GET -> (ETag, the answer it names)
        self._etags_lock = threading.Lock()  # the follower and a cancel (another thread) share them

    def __repr__(self) -> str:  # no token
        return f"GitHubRemote({self.name!r}, {self.url!r}, repository={self.repository!r})"

    # -- Remote --------------------------------------------------------------------------------
    def submit(self, *, repo_root: str, project: str, commit: str, mode: str) -> Submitted:
        if mode not in ("sample", "full"):
            raise RemoteRefused(f"mode {mode!r} is neither sample nor full", hint="run with --sample or --full")
        self._need_token()
        root = Path(repo_root)
        repository = self.repository or repository_of(root)
        owner_repo = quote_repo(repository)
        storage_url, stores = self._check_local_workflow(root, commit, project)
        elsewhere = ""
        origin_host = _host(_git(root, "remote", "get-url", "origin") or "")
        if self.url == "https://api.github.com" and origin_host and "." in origin_host and \
                origin_host != "github.com":
            elsewhere = (f"; origin is on {origin_host}: for GitHub Enterprise, add a remote with "
                         f"`soopervisor remote add NAME https://{origin_host}/api/v3 --github`")

        wf = self._json("GET", f"/repos/{owner_repo}/actions/workflows/{quote(Path(WORKFLOW).name)}",
                        what=f"looking for {WORKFLOW} in {repository}", permission="actions: read",
                        not_found=(f"{repository} on GitHub has no {WORKFLOW}",
                                   ("run `soopervisor github init`, commit the workflow and push it "
                                    f"(a 404 also means the token cannot see {repository}){elsewhere}")))
        if wf.get("state") not in (None, "active"):
            raise RemoteRefused(f"the soopervisor workflow of {repository} is {wf.get('state')}",
                                hint="enable it in the repository's Actions tab (or `gh workflow enable soopervisor.yml`)")
        branch = self._branch_of(root, repository, commit)

        base = {"event": "workflow_dispatch", "head_sha": commit, "branch": branch, "per_page": 100}
        known = [r["id"] for r in self._runs(owner_repo, base, what="listing the workflow's runs")]
        dispatched = datetime.now(UTC)
        details = self._dispatch(owner_repo, repository, branch, mode)
        ref: dict[str, Any] = {"repository": repository, "run_id": None, "html_url": None, "commit": commit,
                               "branch": branch, "steps_sent": 0, "log_sent": 0,
                               "dispatched_at": _iso(dispatched), "known_runs": known, "stores": stores}
        run = ({"id": details["workflow_run_id"], "html_url": details.get("html_url")} if details
               else self._find_run(ref, deadline=time.monotonic() + self.find_timeout))
        if run is not None:
            ref.update(run_id=run["id"], html_url=run.get("html_url"))
            del ref["known_runs"]
        return Submitted(ref=ref, storage_url=storage_url, describe=f"GitHub Actions {repository}")

    def _dispatch(self, owner_repo: str, repository: str, branch: str, mode: str) -> dict[str, Any] | None:
        """Start the workflow on ``branch``; the run's details when GitHub gives them (github.com
        since 2026-02: ``return_run_details``), None when the run is to be found by listing runs (a
        GitHub Enterprise Server that refuses the key is asked again without it: it started nothing)."""
        path = f"/repos/{owner_repo}/actions/workflows/{quote(Path(WORKFLOW).name)}/dispatches"
        body: dict[str, Any] = {"ref": branch, "inputs": {"mode": mode}, "return_run_details": True}

        def refused(message: str) -> Exception:
            if "return_run_details" in message:
                return _Older()
            return _dispatch_refused(message, repository, branch)

        for _ in range(2):
            try:
                answer = self._request("POST", path, json=body, expect=(200, 204), retry=False,
                                       what=f"starting the workflow on {branch}", permission="actions: write",
                                       unprocessable=refused)
            except _Older:
                body.pop("return_run_details")
                continue
            if answer.status_code == 200:
                try:
                    details = answer.json()
                except ValueError:
                    details = None
                if isinstance(details, dict) and isinstance(details.get("workflow_run_id"), int):
                    return details
            return None
        return None  # not reached: the second request has no return_run_details

    def follow(self, ref: dict[str, Any], start: int, sink: Sink, stop: threading.Event) -> bool:
        self._need_token()
        try:
            return self._follow(dict(ref), start, sink, stop)
        except _Stopped:
            return False

    def _follow(self, ref: dict[str, Any], start: int, sink: Sink, stop: threading.Event) -> bool:
        owner_repo = quote_repo(ref["repository"])
        if ref.get("run_id") is None:
            sink.update(status="queued")
            while (run := self._find_run(ref, stop=stop)) is None:
                if stop.wait(self.poll):
                    return False
            ref.update(run_id=run["id"], html_url=run.get("html_url"))
            sink.ref(run_id=run["id"], html_url=run.get("html_url"))
        # the lines of ours the local log has (the run service counts them, its own notes left out);
        # steps_sent/log_sent in the ref say the same, per kind, for whoever reads the record
        sent = max(0, start)
        logs: dict[int, list[str]] = {}  # job id -> its log lines, once read
        waited_since: dict[int, float] = {}  # job id -> when its log was first missing after it completed
        shown: dict[str, Any] = {}
        while True:
            run = self._json("GET", f"/repos/{owner_repo}/actions/runs/{ref['run_id']}", stop=stop,
                             what="reading the workflow run", permission="actions: read",
                             not_found=(f"workflow run {ref['run_id']} of {ref['repository']} is gone",
                                        "it may have been deleted on GitHub"))
            jobs = []
            if run.get("status") != "queued":
                jobs = self._json("GET", f"/repos/{owner_repo}/actions/runs/{ref['run_id']}/jobs",
                                  params={"per_page": 100}, stop=stop, what="reading the run's jobs",
                                  permission="actions: read").get("jobs") or []
                jobs.sort(key=lambda j: j["id"])
            for job in jobs:
                if job.get("status") == "completed" and job["id"] not in logs:
                    lines = self._job_log(owner_repo, job, stop, waited_since)
                    if lines is not None:
                        logs[job["id"]] = lines
                        action_run = _action_run(lines, ref["commit"])
                        if action_run and ref.get("run") != action_run:
                            # the Action's own run id: its artifact set's name in the storage (Run.set_id)
                            ref["run"] = action_run
                            sink.ref(run=action_run)
            stream, complete = _stream(run, jobs, logs)
            if complete and ref.get("stores") is False:
                stream.append(("step", NO_STORAGE))
            if len(stream) > sent:
                new = stream[sent:]
                sink.lines([CREDENTIALS.redact(text) for _, text in new])
                sent = len(stream)
                sink.ref(steps_sent=sum(1 for kind, _ in stream if kind == "step"),
                         log_sent=sum(1 for kind, _ in stream if kind == "log"))
            self._show(run, jobs, sink, shown)
            if run.get("status") == "completed" and complete:
                sink.update(**_ending(run, jobs))
                return True
            if stop.wait(self.poll):
                return False

    def cancel(self, ref: dict[str, Any]) -> None:
        self._need_token()
        run_id = ref.get("run_id")
        if run_id is None:  # dispatched, not listed yet: give GitHub the time submit gives it
            run = self._find_run(ref, deadline=time.monotonic() + self.find_timeout)
            if run is None:
                raise RemoteUnavailable(f"GitHub does not list the run dispatched for {ref['commit'][:7]} yet, "
                                        "so it cannot be cancelled",
                                        hint=f"cancel it in the Actions tab of {ref['repository']} on GitHub")
            run_id = run["id"]
        self._request("POST", f"/repos/{quote_repo(ref['repository'])}/actions/runs/{run_id}/cancel",
                      expect=(202, 409), what="cancelling the workflow run", permission="actions: write",
                      not_found=(f"workflow run {run_id} of {ref['repository']} is gone", "nothing to cancel"))

    # -- submit's checks -----------------------------------------------------------------------
    def _need_token(self) -> None:
        if not self._token:
            raise RemoteRefused(f"no GitHub token for the remote {self.name!r}", hint=self._token_hint())

    def _token_hint(self) -> str:
        """Where this remote's token comes from (remotes/config.py): its variable, GITHUB_TOKEN or
        GH_TOKEN, or the credentials ``soopervisor remote add`` keeps."""
        variable = "SOOPERVISOR_REMOTE_" + re.sub(r"[^A-Za-z0-9]", "_", self.name).upper() + "_TOKEN"
        return (f"set GITHUB_TOKEN (or GH_TOKEN, or {variable}), or keep one with "
                f"`soopervisor remote add {self.name} {self.url} --github`; it needs {NEEDED}")

    def _check_local_workflow(self, root: Path, commit: str, project: str) -> tuple[str | None, bool | None]:
        """The workflow as committed, when this repository has the commit: it must take a dispatch with a
        ``mode``, run this project. (its ``storage:``, whether it has one): (None, None) when not known."""
        from ..git import show_file

        text = show_file(root, commit, WORKFLOW)
        if text is None:
            proc = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root,
                                  capture_output=True, check=False)
            if proc.returncode == 0:  # the commit is here and has no workflow: GitHub will not run it either
                raise RemoteRefused(f"commit {commit[:7]} has no {WORKFLOW}",
                                    hint="run `soopervisor github init`, commit the workflow, push, and run again")
            return None, None
        import yaml

        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        if not isinstance(doc, dict):
            return None, None
        on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as True
        triggers = [on] if isinstance(on, str) else list(on or ()) if isinstance(on, (list, dict)) else []
        if "workflow_dispatch" not in triggers:
            raise RemoteRefused(f"{WORKFLOW} at {commit[:7]} cannot be started from here (no workflow_dispatch)",
                                hint="run `soopervisor github init` again (it writes one that can), commit, push")
        found = _soopervisor_step(doc)
        if found is None:
            return None, None
        wanted = str(Path(project or ".").as_posix())
        theirs = str(found.get("project") or ".").strip("/") or "."
        if theirs != wanted:
            raise RemoteRefused(f"the soopervisor workflow runs the project {theirs!r}, not {wanted!r}",
                                hint=f"run from {theirs!r}, or run `soopervisor github init --project {wanted}`, "
                                     "commit and push")
        storage = found.get("storage")
        return (str(storage) if storage else None), bool(storage)

    def _branch_of(self, root: Path, repository: str, commit: str) -> str:
        """The branch on GitHub whose head is ``commit`` (a dispatch runs a branch's head): this
        checkout's upstream or branch when it is one of them; RemoteRefused naming the push when none is."""
        heads = self._request("GET", f"/repos/{quote_repo(repository)}/commits/{commit}/branches-where-head",
                              expect=(200, 404, 422), what="looking for the branches whose head is the commit",
                              permission="contents: read")
        try:
            listed = heads.json() if heads.status_code == 200 else []  # 404/422: GitHub has no such commit
        except ValueError:
            listed = []
        names = [b.get("name") for b in listed if isinstance(b, dict)] if isinstance(listed, list) else []
        local, upstream = _local_branch(root)
        for candidate in (upstream, local):
            if candidate and candidate in names:
                return candidate
        if names:
            return names[0]
        target = upstream or local or "<branch>"
        # the push that makes the commit a branch's head: HEAD when it is the checkout's, else the commit
        push = f"HEAD:{target}" if _git(root, "rev-parse", "HEAD") == commit else f"{commit}:refs/heads/{target}"
        raise RemoteRefused(
            f"commit {commit[:7]} is not the head of a branch of {repository} on GitHub",
            hint=f"GitHub Actions runs a branch's newest commit: push it with `git push origin {push}`, "
                 "then run again (soopervisor never pushes for you)")

    def _runs(self, owner_repo: str, params: dict[str, Any], what: str,
              stop: threading.Event | None = None) -> list[dict[str, Any]]:
        return self._json("GET", f"/repos/{owner_repo}/actions/runs", params=params, what=what, stop=stop,
                          permission="actions: read").get("workflow_runs") or []

    def _find_run(self, ref: dict[str, Any], deadline: float | None = None,
                  stop: threading.Event | None = None) -> dict[str, Any] | None:
        """The newest run of the dispatch in ``ref``: its event, commit and branch, created since the
        dispatch (with slack for clocks), not one of the runs that were there before it."""
        owner_repo = quote_repo(ref["repository"])
        since = datetime.fromisoformat(ref["dispatched_at"]) - CLOCK_SLACK
        params = {"event": "workflow_dispatch", "head_sha": ref["commit"], "branch": ref["branch"],
                  "created": f">={since:%Y-%m-%dT%H:%M:%SZ}", "per_page": 100}
        known = set(ref.get("known_runs") or ())
        while True:
            runs = [r for r in self._runs(owner_repo, params, "looking for the dispatched run", stop)
                    if r.get("id") not in known]
            if runs:
                return max(runs, key=lambda r: (r.get("created_at") or "", r["id"]))
            if deadline is None or time.monotonic() >= deadline:
                return None
            time.sleep(min(self.poll, 1.0))

    # -- follow's parts ------------------------------------------------------------------------
    def _job_log(self, owner_repo: str, job: dict[str, Any], stop: threading.Event,
                 waited_since: dict[int, float]) -> list[str] | None:
        """A completed job's log lines without GitHub's timestamps, or None while it is not written yet;
        after ``log_wait`` (at once for a job that never started), one line saying it is missing."""
        answer = self._request("GET", f"/repos/{owner_repo}/actions/jobs/{job['id']}/logs", expect=(302, 200, 404),
                               what="reading a job's log", permission="actions: read", redirect=False, stop=stop)
        text = None
        if answer.status_code == 200:
            text = answer.text
        elif answer.status_code == 302 and answer.headers.get("location"):
            # a signed URL, valid a minute, on GitHub's blob store: fetched without our token
            blob = self._plain(urljoin(answer.url, answer.headers["location"]), stop)
            if blob is not None and blob.status_code == 200:
                text = blob.content.decode("utf-8", errors="replace")
        if text is not None:
            return _readable(text)
        first = waited_since.setdefault(job["id"], time.monotonic())
        never_ran = not job.get("started_at") or job.get("conclusion") == "skipped"
        if never_ran or time.monotonic() - first >= self.log_wait:
            return [f"github: the log of job \"{job.get('name')}\" is not available; see {job.get('html_url')}"]
        return None

    def _show(self, run: dict[str, Any], jobs: list[dict[str, Any]], sink: Sink, shown: dict[str, Any]) -> None:
        """Status queued/running and the current step as the stage, each sent when it changes."""
        if run.get("status") == "completed":
            return
        fields: dict[str, Any] = {}
        if run.get("status") == "queued" or not jobs:
            fields["status"] = "queued"
        else:
            fields["status"] = "running"
            if run.get("run_started_at"):
                fields["started_at"] = _local_iso(run["run_started_at"])
            current = [s for j in jobs for s in j.get("steps") or ()
                       if s.get("status") == "in_progress" or (s.get("status") == "completed" and s.get("started_at"))]
            running = [s for s in current if s.get("status") == "in_progress"]
            step = (running or current or [None])[-1]
            if step is not None:
                fields["stage"] = step.get("name")
        changed = {k: v for k, v in fields.items() if shown.get(k) != v}
        if changed:
            sink.update(**changed)
            shown.update(changed)

    # -- HTTP ----------------------------------------------------------------------------------
    def _http(self) -> Any:
        if self._session is None:
            import requests

            s = requests.Session()
            s.headers.update({"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
                              "User-Agent": "soopervisor", "Authorization": f"Bearer {self._token}"})
            self._session = s
        return self._session

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        answer = self._request(method, path, **kw)
        try:
            return answer.json()
        except ValueError:  # a proxy's or a captive portal's page, not GitHub
            raise RemoteUnavailable(f"{self.url} did not answer as the GitHub API does while {kw['what']}",
                                    hint="check the remote's API URL (GitHub Enterprise: https://HOST/api/v3) "
                                         "and the proxy") from None

    def _request(self, method: str, path: str, *, what: str, permission: str, params: dict[str, Any] | None = None,
                 json: Any = None, expect: tuple[int, ...] = (200,), not_found: tuple[str, str] | None = None,
                 unprocessable: Any = None, redirect: bool = True, stop: threading.Event | None = None,
                 retry: bool = True) -> Any:
        """One API call; rate limits waited out (a follower as long as it takes, ``submit`` a minute),
        network failures and 5xx retried for ``unreachable_after`` s (unless ``retry`` is False: a
        dispatch GitHub may have done is not sent twice); any other failure is an error."""
        import requests

        from ..github.api import rate_limit_wait

        url = self.url + path
        # conditional GETs: GitHub answers 304 for what has not changed, and does not count it
        # against the rate limit, so polling a run that waits costs nothing
        key = (url, tuple(sorted((params or {}).items())))
        with self._etags_lock:
            cached = self._etags.get(key) if method == "GET" and redirect else None
        trouble_since: float | None = None
        while True:
            try:
                r = self._http().request(method, url, params=params, json=json, timeout=30,
                                         allow_redirects=redirect,
                                         headers={"If-None-Match": cached[0]} if cached else None)
            except requests.RequestException as e:
                reason, r = f"{type(e).__name__}", None
            else:
                reason = f"{r.status_code}"
            if r is not None and r.status_code == 304 and cached:
                return cached[1]
            if r is not None and r.status_code in expect:
                if method == "GET" and redirect and r.status_code == 200 and r.headers.get("etag"):
                    with self._etags_lock:
                        if len(self._etags) >= 64:  # a few runs followed at a time: keep the newest answers
                            self._etags.pop(next(iter(self._etags)))
                        self._etags[key] = (r.headers["etag"], r)
                return r
            if r is not None and r.status_code < 500:
                message = _message(r)
                wait = rate_limit_wait(r.status_code, dict(r.headers), message, time.time())
                if wait is None:
                    raise self._refused(r, message, what, permission, not_found, unprocessable)
                if stop is None and wait > SUBMIT_RATE_WAIT:
                    until = datetime.now(UTC) + timedelta(seconds=wait)
                    raise RemoteUnavailable(f"GitHub API rate limit reached while {what} (until {until:%H:%M} UTC)",
                                            hint=f"run again after {until:%H:%M} UTC")
                if _pause(stop, wait):
                    raise _Stopped()
                continue
            now = time.monotonic()
            trouble_since = trouble_since or now
            if not retry or now - trouble_since >= self.unreachable_after:
                raise RemoteUnavailable(f"GitHub at {self.url} does not answer while {what} ({reason})",
                                        hint="check the network and proxy (https://www.githubstatus.com for "
                                             "github.com); GitHub Enterprise's API URL is https://HOST/api/v3")
            if _pause(stop, min(self.poll, 5.0)):
                raise _Stopped()

    def _plain(self, url: str, stop: threading.Event) -> Any:
        """GET a signed URL with no Authorization (the blob store refuses one, and it is not GitHub)."""
        import requests

        try:
            return requests.get(url, timeout=60, headers={"User-Agent": "soopervisor"})
        except requests.RequestException:
            return None

    def _refused(self, r: Any, message: str, what: str, permission: str, not_found: tuple[str, str] | None,
                 unprocessable: Any) -> Exception:
        status = r.status_code
        if status == 401:
            return RemoteRefused(f"GitHub refused the token of the remote {self.name!r} while {what} "
                                 f"(401 {message or 'Bad credentials'})",
                                 hint="the token is invalid or expired: " + self._token_hint())
        if status == 403:
            accepted = r.headers.get("x-accepted-github-permissions")
            return RemoteRefused(f"GitHub refused {what} (403 {message}): the token needs {permission}",
                                 hint=PERMISSION_HINT + (f" (GitHub accepts: {accepted})" if accepted else ""))
        if status == 404 and not_found:
            return RemoteRefused(not_found[0], hint=not_found[1])
        if status == 422 and unprocessable is not None:
            return unprocessable(message)
        return RemoteRefused(f"GitHub did not accept {what} ({status} {message})".rstrip(),
                             hint=f"check the repository and the token's access to it; {PERMISSION_HINT}")


# -- helpers ---------------------------------------------------------------------------------------
def _stream(run: dict[str, Any], jobs: list[dict[str, Any]],
            logs: dict[int, list[str]]) -> tuple[list[tuple[str, str]], bool]:
    """Every line the run has given so far, in an order that only ever grows (a follower that restarts
    skips the ones it sent): the run's address, then per job its steps as they start and end, and once
    the job has completed, its log. (kind, text) with kind "step" or "log"; and whether it is all there."""
    out: list[tuple[str, str]] = [("step", f"github: workflow run {run.get('html_url')}\n")]
    many = len(jobs) > 1
    for job in jobs:
        steps = job.get("steps") or []
        who = f"job \"{job.get('name')}\" " if many else ""
        for step in steps:
            label = f"github: {who}step {step.get('number')}/{len(steps)} \"{step.get('name')}\""
            status, conclusion = step.get("status"), step.get("conclusion")
            if status == "completed" and (conclusion == "skipped" or not step.get("started_at")):
                out.append(("step", f"{label} {_said(conclusion)}\n"))
                continue
            if status not in ("in_progress", "completed"):
                break
            out.append(("step", f"{label} started\n"))
            if status != "completed":
                break
            seconds = _seconds(step.get("started_at"), step.get("completed_at"))
            took = "" if seconds is None else (f" in {seconds} s" if conclusion == "success" else f" after {seconds} s")
            out.append(("step", f"{label} {_said(conclusion)}{took}\n"))
        if job.get("status") != "completed" or job["id"] not in logs:
            return out, False
        out += [("log" if not line.startswith("github: the log of job") else "step", line + "\n")
                for line in logs[job["id"]]]
    return out, True


def _readable(text: str) -> list[str]:
    """A job log's lines as a terminal shows them: GitHub's timestamps cut, its workflow commands
    (``##[group]``, ``##[endgroup]``, ``##[error]``…) turned into plain text or dropped."""
    out = []
    for line in text.splitlines():
        line = _STAMP.sub("", line)
        m = _COMMAND.match(line)
        if m:
            command, rest = m.group(1), line[m.end():]
            if command == "endgroup":
                continue
            line = rest if command in ("group", "section", "command") else f"{command}: {rest}"
        out.append(line)
    return out


def _action_run(lines: list[str], commit: str) -> str | None:
    """The id of the run the soopervisor Action made, from its first note in the job log
    (``soopervisor: run ID of PROJECT at COMMIT7 (MODE) on …``)."""
    pattern = re.compile(rf"^soopervisor: run ([0-9a-f]{{6,64}}) of .+ at {re.escape(commit[:7])} \((?:sample|full)\) on ")
    for line in lines:
        m = pattern.match(line)
        if m:
            return m.group(1)
    return None


def _said(conclusion: str | None) -> str:
    return {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled",
            "skipped": "skipped"}.get(conclusion or "", f"ended ({conclusion})")


def _ending(run: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    conclusion = run.get("conclusion")
    status = _CONCLUSIONS.get(conclusion or "", "failed")
    fields: dict[str, Any] = {"status": status, "exit_code": 0 if status == "succeeded" else 1}
    if run.get("updated_at"):
        fields["finished_at"] = _local_iso(run["updated_at"])
    if status == "failed":
        failed = [s.get("name") for j in jobs for s in j.get("steps") or () if s.get("conclusion") == "failure"]
        if conclusion == "failure":
            fields["error"] = (f"the workflow run failed at step \"{failed[0]}\"" if failed
                               else "the workflow run failed")
        else:
            fields["error"] = f"GitHub Actions ended the run with the conclusion {conclusion!r}"
        fields["hint"] = f"see {run.get('html_url')}"
    if status == "cancelled":
        fields["exit_code"] = None
    return fields


def _soopervisor_step(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The ``with:`` of the workflow's soopervisor action step (the step whose ``with`` has a ``mode``)."""
    for job in (doc.get("jobs") or {}).values():
        for step in (job or {}).get("steps") or () if isinstance(job, dict) else ():
            if isinstance(step, dict) and isinstance(step.get("with"), dict) and (
                    "soopervisor" in str(step.get("uses", "")) or "mode" in step["with"]):
                return step["with"]
    return None


def repository_of(root: Path) -> str:
    """``owner/name`` from the ``origin`` remote (https or ssh, github.com or an Enterprise host)."""
    url = _git(root, "remote", "get-url", "origin")
    if not url:
        raise RemoteRefused("this repository has no `origin` remote to name the GitHub repository",
                            hint="add it: `git remote add origin https://github.com/OWNER/NAME.git`, and push")
    found = repository_from_url(url)
    if found is None:
        raise RemoteRefused("the `origin` remote does not look like a GitHub repository (OWNER/NAME)",
                            hint="point origin at the repository on GitHub, e.g. "
                                 "`git remote set-url origin https://github.com/OWNER/NAME.git`")
    return found


def repository_from_url(url: str) -> str | None:
    """``owner/name`` of a GitHub clone URL: https://HOST/O/N(.git), ssh://git@HOST(:port)/O/N(.git),
    git@HOST:O/N(.git); None for anything else (a local path, a file:// URL)."""
    url = url.strip()
    m = re.fullmatch(r"(?:https?|ssh|git)://(?:[^@/]+@)?[^/]+/(.+)", url) or \
        re.fullmatch(r"[^@/:]+@[^/:]+:(.+)", url)
    if not m:
        return None
    path = m.group(1).rstrip("/").removesuffix(".git")
    parts = path.split("/")
    if len(parts) != 2 or not all(re.fullmatch(r"[A-Za-z0-9_.-]+", p) for p in parts):
        return None
    return "/".join(parts)


def _host(url: str) -> str | None:
    """The host of a clone URL (https, ssh or scp-like), lowercased; None when there is none."""
    m = re.fullmatch(r"(?:https?|ssh|git)://(?:[^@/]+@)?([^/:]+)(?::\d+)?/.*", url.strip()) or \
        re.fullmatch(r"[^@/:]+@([^/:]+):.*", url.strip())
    return m.group(1).lower() if m else None


def quote_repo(repository: str) -> str:
    owner, _, name = repository.partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


def _local_branch(root: Path) -> tuple[str | None, str | None]:
    """(the checked-out branch, the name of its upstream branch on origin), each None when there is none."""
    local = _git(root, "symbolic-ref", "--short", "-q", "HEAD")
    upstream = _git(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}") if local else None
    if upstream and upstream.startswith("origin/"):
        upstream = upstream.removeprefix("origin/")
    else:
        upstream = None
    return local, upstream


def _git(root: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _dispatch_refused(message: str, repository: str, branch: str) -> RemoteRefused:
    lowered = message.lower()
    if "workflow_dispatch" in lowered:
        return RemoteRefused(f"the soopervisor workflow on {branch} cannot be started from here "
                             "(no workflow_dispatch trigger)",
                             hint="run `soopervisor github init` again (it writes one that can), commit, push")
    if "no ref found" in lowered:
        return RemoteRefused(f"branch {branch} is not on GitHub ({repository})",
                             hint=f"push it: `git push origin HEAD:{branch}`, then run again")
    if "input" in lowered:
        return RemoteRefused(f"the soopervisor workflow on {branch} has no `mode` input ({message})",
                             hint="run `soopervisor github init` again, commit and push")
    return RemoteRefused(f"GitHub did not start the workflow on {branch} (422 {message})",
                         hint="check the workflow file in the repository's Actions tab")


def _message(r: Any) -> str:
    try:
        data = r.json()
    except ValueError:
        return ""
    return str(data.get("message") or "") if isinstance(data, dict) else ""


def _seconds(start: str | None, end: str | None) -> int | None:
    try:
        return max(0, round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()))
    except (TypeError, ValueError):
        return None


def _local_iso(text: str) -> str:
    """GitHub's time as the run records write theirs."""
    from ..runs import iso

    try:
        return iso(datetime.fromisoformat(text))
    except ValueError:
        return text


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _pause(stop: threading.Event | None, seconds: float) -> bool:
    """Sleep; True when ``stop`` was set meanwhile."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)

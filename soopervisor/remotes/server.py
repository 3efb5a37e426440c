"""A team's ``soopervisor serve`` as a remote: queue a pushed commit through its API, follow the run.

``submit`` finds the served repository (named, or the one whose URL is the local
``origin``'s), checks locally that the commit is on a remote branch (never
pushes), and asks ``POST /repositories/{r}/runs``; the server fetches the remote
and queues a job. ``follow`` waits for the job's run (``GET /queue/{job}``), then
reads its log over the websocket (``/runs/{id}/log?from=N``, resumed from the
lines already sent when the connection drops) and its fields (``GET /runs/{id}``,
about every half second). The token goes only into ``Authorization`` headers: it
is registered with the redactor and never in a message, a repr or a ref.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..redact import CREDENTIALS
from .base import FIELDS, RemoteRefused, RemoteUnavailable, Submitted

#: seconds to connect; a request's whole time (a submit waits for the server's fetch of the remote)
CONNECT_TIMEOUT, REQUEST_TIMEOUT, SUBMIT_TIMEOUT = 10.0, 60.0, 150.0
#: how often the job is read while its run has not started, and the run's fields while it runs
JOB_EVERY, FIELDS_EVERY = 0.25, 0.5
#: a follower that cannot reach the server for this long gives up (RemoteUnavailable; the record stays running)
GIVE_UP = 300.0
#: the states a job or run ends in
_ENDED = ("succeeded", "failed", "cancelled", "interrupted")
_API = "/soopervisor/api"


def normalize_url(url: str, base: str | None = None) -> str:
    """A git remote's URL as compared: scheme, user and password, ``.git`` and trailing slashes dropped, the
    host lower-cased (``https://u:p@Host/o/r.git``, ``ssh://git@host/o/r`` and ``git@host:o/r`` are alike);
    a local path or ``file://`` URL becomes its real path (relative ones from ``base``)."""
    url = url.strip()
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    elif "://" in url:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").lower() + (f":{parts.port}" if parts.port else "")
        return f"{host}/{parts.path.strip('/').removesuffix('.git').strip('/')}"
    elif re.match(r"^[^/]*:", url) and not re.match(r"^[A-Za-z]:[\\/]", url):  # scp-like user@host:path
        host, _, path = url.partition(":")
        return f"{host.rpartition('@')[2].lower()}/{path.strip('/').removesuffix('.git').strip('/')}"
    else:
        path = url if os.path.isabs(url) or base is None else os.path.join(base, url)
    return "path:" + os.path.realpath(path).rstrip("/").removesuffix(".git")


def _git(repo_root: str, *args: str) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(["git", "-C", repo_root, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, "", str(e)
    return proc.returncode, proc.stdout, proc.stderr


def push_command(repo_root: str) -> str:
    """What pushes the current branch to ``origin`` (named, never run)."""
    rc, out, _ = _git(repo_root, "symbolic-ref", "--short", "-q", "HEAD")
    branch = out.strip() if rc == 0 and out.strip() else None
    return f"git push origin {branch}" if branch else "git push origin HEAD:<branch>"


def _iso(epoch: float | None) -> str | None:
    """Epoch seconds as a run record's time."""
    import datetime

    from ..runs import iso

    return None if epoch is None else iso(datetime.datetime.fromtimestamp(epoch, datetime.UTC))


class ServerRemote:
    """A ``soopervisor serve`` at ``url``, reached with ``token`` (a run token to queue and stop runs)."""

    kind = "server"

    def __init__(self, name: str, url: str, token: str | None, repository: str | None = None) -> None:
        self.name = name
        self.url = url.strip().rstrip("/")
        self.repository = repository
        self._token = token or None
        if self._token:
            CREDENTIALS.add(self._token)  # no error, log or record of this process shows it
        #: seconds a follower keeps trying a server that does not answer
        self.give_up = GIVE_UP

    def __repr__(self) -> str:  # never the token
        return f"ServerRemote(name={self.name!r}, url={self.url!r}, repository={self.repository!r})"

    # -- HTTP ---------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if not self._token:
            raise RemoteRefused(f"no token for the server {self.name} ({self.url})",
                                f"store one: `soopervisor remote add {self.name} {self.url}` (ask the server's "
                                "admin for a run token), or set "
                                f"SOOPERVISOR_REMOTE_{re.sub(r'[^A-Za-z0-9]', '_', self.name).upper()}_TOKEN")
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                "User-Agent": "soopervisor-remote"}

    def _unavailable(self, why: str) -> RemoteUnavailable:
        return RemoteUnavailable(f"the server {self.name} ({self.url}) does not answer: {why}",
                                 "check that it runs and that this machine reaches it (VPN, proxy); try again later")

    def _refused(self, status: int, body: dict[str, Any]) -> RemoteRefused:
        said = body.get("error") or f"HTTP {status}"
        if status == 401:
            return RemoteRefused(f"the server {self.name} ({self.url}) does not accept the token: {said}",
                                 "the token was revoked or is for another server: get a new one from its admin "
                                 f"and store it with `soopervisor remote add {self.name} {self.url}`")
        return RemoteRefused(f"the server {self.name} ({self.url}) refuses the token: {said}",
                             "queueing and stopping runs needs a run token: ask the server's admin for one "
                             "(`soopervisor serve token create NAME --scope run`), then store it with "
                             f"`soopervisor remote add {self.name} {self.url}`")

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of an API call; 401/403 RemoteRefused, no answer or 5xx RemoteUnavailable."""
        if not self.url.startswith(("http://", "https://")):
            raise RemoteRefused(f"the server {self.name}'s URL {self.url!r} is not http(s)",
                                f"`soopervisor remote add {self.name} https://HOST:8008` names it again")
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.url + _API + path, data=data, method=method, headers=self._headers())
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        except urllib.error.URLError as e:
            reason = e.reason
            raise self._unavailable(getattr(reason, "strerror", None) or str(reason)) from None
        except (TimeoutError, OSError) as e:
            raise self._unavailable(getattr(e, "strerror", None) or str(e) or "timed out") from None
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if status in (401, 403):
            raise self._refused(status, answer)
        if status >= 500:
            said = answer.get("error") or f"HTTP {status}"
            raise self._unavailable(f"{said} ({answer['hint']})" if answer.get("hint") else said)
        return status, answer

    # -- submit -------------------------------------------------------------------------------

    def _served(self, repo_root: str) -> dict[str, Any]:
        """The served repository this run goes to: ``self.repository``, or the one whose URL is ``origin``'s."""
        _, body = self._request("GET", "/repositories")
        repos = body.get("repositories") or []
        names = ", ".join(r.get("name", "?") for r in repos) or "none"
        if self.repository is not None:
            found = next((r for r in repos if r.get("name") == self.repository), None)
            if found is None:
                raise RemoteRefused(f"the server {self.name} ({self.url}) serves no repository named "
                                    f"{self.repository!r} (it serves: {names})",
                                    "name one it serves, or ask its admin to add yours to server.yaml")
            return found
        rc, out, _ = _git(repo_root, "remote", "get-url", "origin")
        if rc != 0 or not out.strip():
            raise RemoteRefused(f"the repository at {repo_root} has no remote `origin` to match with the server "
                                f"{self.name}'s repositories ({names})",
                                "add the remote the server polls (`git remote add origin URL`), or name the "
                                "server's repository for this remote")
        origin = normalize_url(out.strip(), repo_root)
        found = next((r for r in repos if normalize_url(r.get("url") or "") == origin), None)
        if found is None:
            shown = CREDENTIALS.redact(_hide_userinfo(out.strip()))
            raise RemoteRefused(f"the server {self.name} ({self.url}) does not serve this repository (origin "
                                f"{shown}); it serves: {names}",
                                "ask its admin to add the repository to server.yaml, or name the server's "
                                "repository for this remote")
        return found

    def submit(self, *, repo_root: str, project: str, commit: str, mode: str) -> Submitted:
        repo_root = os.fspath(repo_root)
        rc, out, _ = _git(repo_root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
        if rc != 0 or not out.strip():
            raise RemoteRefused(f"{commit!r} is not a commit of the repository at {repo_root}",
                                "commit first (`git commit`), then run again")
        sha = out.strip()
        # pushed? only what this machine knows of its remotes: never a fetch, never a push
        rc, out, _ = _git(repo_root, "branch", "-r", "--contains", sha)
        if rc != 0 or not [b for b in out.splitlines() if b.strip() and "->" not in b]:
            if not _git(repo_root, "remote")[1].strip():
                raise RemoteRefused(f"the repository at {repo_root} has no remote, so the server {self.name} "
                                    f"cannot fetch commit {sha[:12]}",
                                    "add the remote the server polls (`git remote add origin URL`), push, "
                                    "then run again")
            raise RemoteRefused(f"commit {sha[:12]} is not pushed: no remote branch contains it, so the server "
                                f"{self.name} cannot fetch it",
                                f"push it first: `{push_command(repo_root)}` (soopervisor never pushes for you)")
        repo = self._served(repo_root)
        name = repo["name"]
        status, body = self._request("POST", f"/repositories/{urllib.parse.quote(name, safe='')}/runs",
                                     {"commit": sha, "project": project or ".", "mode": mode}, timeout=SUBMIT_TIMEOUT)
        said, hint = body.get("error") or f"HTTP {status}", body.get("hint")
        if status == 409:
            raise RemoteRefused(f"the server {self.name} does not have commit {sha[:12]}: {said}",
                                f"push it first: `{push_command(repo_root)}` (soopervisor never pushes for you)")
        if status not in (200, 201) or not isinstance(body.get("job"), dict):
            raise RemoteRefused(f"the server {self.name} ({self.url}) refuses the run: {said}",
                                hint or "see the server's answer above")
        job = body["job"]
        run = job.get("run_id") if job.get("state") == "running" else None  # a queued job's is an earlier attempt's
        return Submitted(ref={"job": job["id"], "repository": name, "run": run}, storage_url=None,
                         describe=f"server {self.name} ({self.url})")

    # -- cancel -------------------------------------------------------------------------------

    def cancel(self, ref: dict[str, Any]) -> None:
        run, job = ref.get("run"), ref.get("job")
        if run:
            status, _ = self._request("POST", f"/runs/{urllib.parse.quote(run, safe='')}/stop")
            if status < 400:
                return
        if job:  # no run yet (or the server lost it): the job; 409 means it has ended already
            self._request("POST", f"/queue/{urllib.parse.quote(job, safe='')}/cancel")

    # -- follow -------------------------------------------------------------------------------

    def follow(self, ref: dict[str, Any], start: int, sink: Any, stop: threading.Event) -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _run_loop(self._follow(dict(ref), start, sink, stop))
        # called on a thread that runs a loop already (not the protocol's use): a thread of its own
        result: list[Any] = []

        def own() -> None:
            try:
                result.append(_run_loop(self._follow(dict(ref), start, sink, stop)))
            except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
                result.append(e)

        thread = threading.Thread(target=own, name=f"soopervisor-follow-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if isinstance(result[0], BaseException):
            raise result[0]
        return result[0]

    async def _follow(self, ref: dict[str, Any], start: int, sink: Any, stop: threading.Event) -> bool:
        follower = _Follower(self, sink, stop)
        try:
            return await follower.run(ref, start)
        finally:
            follower.close()


def _hide_userinfo(url: str) -> str:
    return re.sub(r"(?i)^([a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1***@", url)


def _run_loop(coro: Any) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class _Stopped(Exception):
    """``stop`` was set: the follower returns False."""


class _Follower:
    """One follow() call: its HTTP client, the lines sent, the fields last sent."""

    def __init__(self, remote: ServerRemote, sink: Any, stop: threading.Event) -> None:
        from tornado.httpclient import AsyncHTTPClient

        self.remote, self.sink, self.stop = remote, sink, stop
        self.http = AsyncHTTPClient(force_instance=True)
        self.fields: dict[str, Any] = {}  # what the sink has been told
        self.down_since: float | None = None  # when the server stopped answering (monotonic)

    def close(self) -> None:
        self.http.close()

    # -- the server's answers, with retries --------------------------------------------------

    def _down(self, why: str) -> None:
        """The server did not answer: wait and try again, until it has not answered for give_up seconds."""
        now = time.monotonic()
        self.down_since = self.down_since or now
        if now - self.down_since > self.remote.give_up:
            raise self.remote._unavailable(f"{why} (for {now - self.down_since:.0f} s)")

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking within 0.1 s when stop is set."""
        end = time.monotonic() + seconds
        while True:
            if self.stop.is_set():
                raise _Stopped
            left = end - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(0.1, left))

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """GET an API path; retried while the server does not answer; (status, body) of any 2xx/4xx answer."""
        from tornado.httpclient import HTTPClientError, HTTPRequest

        delay = 0.5
        while True:
            if self.stop.is_set():
                raise _Stopped
            req = HTTPRequest(self.remote.url + _API + path, headers=self.remote._headers(),
                              connect_timeout=CONNECT_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
            try:
                resp = await self.http.fetch(req, raise_error=False)
            except HTTPClientError as e:  # a timeout (599)
                resp, why = None, str(e) or "no answer"
            except OSError as e:  # refused, reset, unreachable
                resp, why = None, e.strerror or str(e) or "no answer"
            else:
                why = f"HTTP {resp.code}" if resp.code >= 500 else ""
            if resp is not None and not why:
                try:
                    body = json.loads(resp.body) if resp.body else {}
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                if resp.code in (401, 403):
                    raise self.remote._refused(resp.code, body)
                self.down_since = None
                return resp.code, body
            self._down(why)
            await self._sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- the parts of a follow ---------------------------------------------------------------

    def update(self, fields: dict[str, Any], *, final: bool = False) -> None:
        """Tell the sink the fields that changed; a terminal status only when ``final`` (after every line)."""
        changed = {k: v for k, v in fields.items() if k in FIELDS and self.fields.get(k, object()) != v}
        if not final and changed.get("status") in _ENDED:
            changed = {k: v for k, v in changed.items() if k not in ("status", "exit_code", "finished_at")}
        if changed:
            self.fields.update(changed)
            self.sink.update(**changed)

    async def wait_for_run(self, job_id: str, before: str | None = None) -> tuple[str | None, dict[str, Any]]:
        """(run id, job) once the job has a run (other than ``before``), or (None, job) when it ended without one."""
        said = None
        while True:
            status, body = await self.get(f"/queue/{urllib.parse.quote(job_id, safe='')}")
            if status == 404:
                return None, {"state": "interrupted", "error": f"the server no longer knows job {job_id}",
                              "hint": "its queue was reset; run again"}
            job = body.get("job") or {}
            run_id, state = job.get("run_id"), job.get("state")
            # a queued job's run_id is its previous attempt's (released after an infrastructure failure)
            if run_id and run_id != before and state != "queued":
                return run_id, job
            if state in _ENDED:
                return None, job
            if state != said and state in ("queued", "running"):
                said = state
                self.update({"status": state})
            await self._sleep(JOB_EVERY)

    async def poll_fields(self, run_id: str) -> None:
        """The run's fields every FIELDS_EVERY seconds (stage, task progress), its end left to the log's end."""
        while True:
            status, body = await self.get(f"/runs/{urllib.parse.quote(run_id, safe='')}")
            if status == 200:
                self.update(body)
            await self._sleep(FIELDS_EVERY)

    async def follow_log(self, run_id: str, first: int) -> dict[str, Any]:
        """Send the run's log lines from line ``first`` of the run's own log on; the run's JSON at its end.

        A dropped connection is opened again from the lines sent: none lost, none twice."""
        from tornado import httpclient, websocket

        sent = first
        delay = 0.5
        base = self.remote.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        while True:
            if self.stop.is_set():
                raise _Stopped
            req = httpclient.HTTPRequest(f"{base}{_API}/runs/{urllib.parse.quote(run_id, safe='')}/log?from={sent}",
                                         headers=self.remote._headers(), connect_timeout=CONNECT_TIMEOUT,
                                         request_timeout=CONNECT_TIMEOUT)
            try:
                conn = await websocket.websocket_connect(req)
            except httpclient.HTTPClientError as e:
                if e.code in (401, 403):
                    raise self.remote._refused(e.code, _json(e.response)) from None
                if e.code == 404:
                    return {"status": "interrupted", "error": f"the server no longer knows run {run_id}",
                            "hint": "its run store was reset; run again"}
                self._down(f"HTTP {e.code}")
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except OSError as e:  # refused, reset (TimeoutError is one)
                self._down(getattr(e, "strerror", None) or str(e) or "no answer")
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.down_since, delay = None, 0.5
            watch = asyncio.ensure_future(self._close_on_stop(conn))
            try:
                while True:
                    raw = await conn.read_message()
                    if raw is None:
                        break  # closed: by the server after "end", or dropped
                    msg = json.loads(raw)
                    if msg.get("type") == "lines":
                        lines = msg.get("lines") or []
                        skip = sent - int(msg.get("from", sent))  # a message reaching back: what was sent already
                        new = lines[max(0, skip):]
                        if new:
                            self.sink.lines([x if x.endswith("\n") else x + "\n" for x in new])
                            sent += len(new)
                    elif msg.get("type") == "end":
                        return msg.get("run") or {}
            finally:
                watch.cancel()
                conn.close()
            if self.stop.is_set():
                raise _Stopped
            self._down("the log's connection dropped")
            await self._sleep(0.2)

    async def _close_on_stop(self, conn: Any) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        conn.close()

    # -- the whole follow ---------------------------------------------------------------------

    async def run(self, ref: dict[str, Any], start: int) -> bool:
        try:
            return await self._run(ref, start)
        except _Stopped:
            return False

    async def _run(self, ref: dict[str, Any], start: int) -> bool:
        job_id, run_id = ref.get("job"), ref.get("run")
        skip = int(ref.get("skip") or 0)  # lines of the local log before this run's line 0 (earlier attempts)
        sent = start
        while True:
            if run_id is None:
                run_id, job = await self.wait_for_run(job_id)
                if run_id is None:  # ended before a run started: cancelled, an invalid project
                    self.update({"status": job.get("state") or "failed", "error": job.get("error"),
                                 "hint": job.get("hint"), "finished_at": _iso(job.get("updated_at"))}, final=True)
                    return True
                self.sink.ref(run=run_id, skip=skip)
            fields = asyncio.ensure_future(self.poll_fields(run_id))
            counting = _Counting(self.sink)
            real_sink, self.sink = self.sink, counting
            try:
                end = await self.follow_log(run_id, max(0, sent - skip))
            finally:
                self.sink = real_sink
                fields.cancel()
                try:
                    await fields
                except (asyncio.CancelledError, _Stopped):
                    pass
            sent += counting.count
            if end.get("status") not in ("succeeded", "cancelled") and job_id:
                again = await self._attempted_again(job_id, run_id)
                if again is not None:  # the machine's fault: the server runs the job again, followed on
                    skip, run_id = sent, again
                    self.sink.ref(run=run_id, skip=skip)
                    continue
            self.update(end, final=True)
            if end.get("status") not in _ENDED:  # a server that ended the log without a final status
                self.update({"status": "interrupted", "error": "the server ended the log without the run's end"},
                            final=True)
            return True

    async def _attempted_again(self, job_id: str, run_id: str) -> str | None:
        """The id of the job's next run when the server released it (queued again after an infrastructure
        failure); None when the job ended with ``run_id``."""
        for _ in range(40):  # the worker records the job's end right after its run's: a moment at most
            status, body = await self.get(f"/queue/{urllib.parse.quote(job_id, safe='')}")
            job = body.get("job") or {}
            if status != 200 or job.get("state") in _ENDED:
                return None
            if job.get("state") == "queued" or job.get("run_id") not in (None, run_id):
                new, _ = await self.wait_for_run(job_id, before=run_id)
                return new
            await self._sleep(0.25)
        return None


class _Counting:
    """A sink that counts the lines passed on."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.count = sink, 0

    def lines(self, lines: list[str]) -> None:
        self.sink.lines(lines)
        self.count += len(lines)

    def update(self, **fields: Any) -> None:
        self.sink.update(**fields)

    def ref(self, **changes: Any) -> None:
        self.sink.ref(**changes)


def _json(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.body) if response is not None and response.body else {}
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}

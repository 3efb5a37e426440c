"""The GitHub Actions remote against the stateful GitHub API fake on loopback, with a real git
repository: dispatch, the run found and followed step by step, the job's log once GitHub has
written it, the run's end; resume after a restart; every refusal with its hint; the token
nowhere it should not be."""
from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from requests.adapters import HTTPAdapter

from soopervisor.github import workflow
from soopervisor.remotes.base import RemoteRefused, RemoteUnavailable
from soopervisor.remotes.github import NO_STORAGE, GitHubRemote, repository_from_url
from tests.fakes.github_api import FakeGitHub

REPO = "octo/proj"
TOKEN = "ghp_remoteTestToken0123456789abcdefXYZ"
STEPS = ["Set up job", "Run actions/checkout@v5", "Run the pipeline", "Complete job"]
WAIT = 30  # seconds a test waits for something that happens in well under one


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    git(root, "init", "-q", "-b", "feature")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "T")
    git(root, "remote", "add", "origin", f"https://github.com/{REPO}.git")
    (root / "pipeline.yaml").write_text("tasks: []\n")
    workflow.write(root, storage="s3://bucket/artifacts")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline and workflow")
    return root


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def fake(repo: Path):
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO)
        fake.token_permissions["actions"] = "write"
        fake.add_workflow()
        fake.set_head("feature", head(repo))
        yield fake


def remote(fake: FakeGitHub, **kw: Any) -> GitHubRemote:
    kw.setdefault("token", TOKEN)
    return GitHubRemote("github", fake.api_url, poll=0.02, find_timeout=5, **kw)


class Sink:
    """Keeps what a follower sends, as the run's record and log would."""

    def __init__(self, ref: dict[str, Any] | None = None) -> None:
        self.lines_: list[str] = []
        self.updates: list[dict[str, Any]] = []
        self.refs: dict[str, Any] = dict(ref or {})
        self.cond = threading.Condition()

    def lines(self, lines: list[str]) -> None:
        with self.cond:
            self.lines_ += lines
            self.cond.notify_all()

    def update(self, **fields: Any) -> None:
        with self.cond:
            self.updates.append(fields)
            self.cond.notify_all()

    def ref(self, **changes: Any) -> None:
        self.refs.update(changes)

    def fields(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for u in self.updates:
            merged.update(u)
        return merged

    def wait_for(self, test) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: test(self), timeout=WAIT), (self.lines_, self.updates)


def until(test) -> None:
    """Wait for something the fake sees (the follower's requests)."""
    deadline = time.monotonic() + WAIT
    while not test():
        assert time.monotonic() < deadline, "it did not happen"
        time.sleep(0.01)


class Follower:
    """``follow`` in a thread, as the run service runs it."""

    def __init__(self, gh: GitHubRemote, ref: dict[str, Any], start: int = 0, sink: Sink | None = None) -> None:
        self.sink = sink or Sink(ref)
        self.stop = threading.Event()
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(gh, ref, start), daemon=True)
        self.thread.start()

    def _run(self, gh: GitHubRemote, ref: dict[str, Any], start: int) -> None:
        try:
            self.result = gh.follow(ref, start, self.sink, self.stop)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            self.result = e

    def join(self) -> Any:
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the follower did not end"
        return self.result


def submit(gh: GitHubRemote, repo: Path, mode: str = "sample", project: str = "."):
    return gh.submit(repo_root=str(repo), project=project, commit=head(repo), mode=mode)


def drive(fake: FakeGitHub, run_id: int, sink: Sink, *, fail_at: int | None = None) -> None:
    """The runner takes the run and goes through its steps; each step seen by the follower before the next."""
    fake.start_run(run_id, STEPS)
    sink.wait_for(lambda s: s.fields().get("status") == "running")
    for n, name in enumerate(STEPS, 1):
        fake.start_step(run_id, n)
        sink.wait_for(lambda s, n=n: any(f"step {n}/4" in line and "started" in line for line in s.lines_))
        failed = n == fail_at
        fake.finish_step(run_id, n, f"output of {name}\nsecond line of {name}",
                         conclusion="failure" if failed else "success", took=10 * n)
        if failed:
            break
        sink.wait_for(lambda s, n=n: any(f"step {n}/4" in line and "succeeded" in line for line in s.lines_))
    fake.conclude(run_id, "failure" if fail_at else "success")


# -- a run from dispatch to its end ---------------------------------------------------------------
def test_dispatch_then_follow_to_success(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo, mode="full")
    run = fake.last_run()
    dispatches = [c for c in fake.log if c.path.endswith("/dispatches")]
    # github.com gives the run's id in the dispatch's answer: no guessing which run is ours
    assert [(c.body, c.status) for c in dispatches] == [
        ({"ref": "feature", "inputs": {"mode": "full"}, "return_run_details": True}, 200)]
    assert fake.calls("GET").count(f"GET /repos/{REPO}/actions/runs") == 1  # the runs there before, only
    assert (run.event, run.head_branch, run.head_sha) == ("workflow_dispatch", "feature", head(repo))
    assert sub.ref["run_id"] == run.id and sub.ref["repository"] == REPO and sub.ref["commit"] == head(repo)
    assert sub.ref["html_url"] == f"https://github.com/{REPO}/actions/runs/{run.id}"
    assert sub.ref["steps_sent"] == 0
    assert sub.describe == f"GitHub Actions {REPO}"
    assert sub.storage_url == "s3://bucket/artifacts"  # the workflow's `storage:` at that commit

    f = Follower(gh, sub.ref)
    f.sink.wait_for(lambda s: s.fields().get("status") == "queued")
    drive(fake, run.id, f.sink)
    assert f.join() is True
    lines = f.sink.lines_
    steps = [line for line in lines if line.startswith("github: step")]
    assert steps == [
        'github: step 1/4 "Set up job" started\n', 'github: step 1/4 "Set up job" succeeded in 10 s\n',
        'github: step 2/4 "Run actions/checkout@v5" started\n',
        'github: step 2/4 "Run actions/checkout@v5" succeeded in 20 s\n',
        'github: step 3/4 "Run the pipeline" started\n', 'github: step 3/4 "Run the pipeline" succeeded in 30 s\n',
        'github: step 4/4 "Complete job" started\n', 'github: step 4/4 "Complete job" succeeded in 40 s\n']
    assert lines[0] == f"github: workflow run {sub.ref['html_url']}\n"
    # the job's log after the steps, without GitHub's timestamps, each line once
    log = lines[1 + len(steps):]
    assert log == [f"{what} of {name}\n" for name in STEPS for what in ("output", "second line")]
    stages = [u["stage"] for u in f.sink.updates if "stage" in u]
    assert stages == STEPS
    end = f.sink.updates[-1]
    assert end["status"] == "succeeded" and end["exit_code"] == 0
    assert f.sink.refs["steps_sent"] == 9 and f.sink.refs["log_sent"] == 8
    # the log was read from its signed URL with no token (the fake's blob store refuses one)
    assert any(c.path.startswith("/_blobs/job-logs/") for c in fake.log)


def test_a_failing_run_is_failed_naming_its_step(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    f = Follower(gh, sub.ref)
    drive(fake, sub.ref["run_id"], f.sink, fail_at=3)
    assert f.join() is True
    lines = f.sink.lines_
    assert 'github: step 3/4 "Run the pipeline" failed after 30 s\n' in lines
    assert 'github: step 4/4 "Complete job" skipped\n' in lines
    assert "output of Run the pipeline\n" in lines
    end = f.sink.updates[-1]
    assert end["status"] == "failed" and end["exit_code"] == 1
    assert end["error"] == 'the workflow run failed at step "Run the pipeline"'
    assert sub.ref["html_url"] in end["hint"]


def test_cancel_stops_the_run_on_github(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    f = Follower(gh, sub.ref)
    fake.start_run(sub.ref["run_id"], STEPS)
    fake.start_step(sub.ref["run_id"], 1)
    f.sink.wait_for(lambda s: any("started" in line for line in s.lines_))
    gh.cancel(sub.ref)
    assert f"POST /repos/{REPO}/actions/runs/{sub.ref['run_id']}/cancel" in fake.calls("POST")
    assert f.join() is True
    assert f.sink.updates[-1]["status"] == "cancelled"
    assert any(line.startswith('github: step 1/4 "Set up job" was cancelled after ') for line in f.sink.lines_)
    gh.cancel(sub.ref)  # a run that has ended: GitHub answers 409, nothing to do


def test_the_log_github_has_not_written_yet_is_waited_for(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    f = Follower(gh, sub.ref)
    fake.start_run(sub.ref["run_id"], STEPS[:1])
    fake.finish_step(sub.ref["run_id"], 1, "hello")
    fake.conclude(sub.ref["run_id"], log_ready=False)  # the blob store answers 404 BlobNotFound meanwhile
    until(lambda: sum(1 for c in fake.log if c.path.startswith("/_blobs/")) >= 3)
    assert "hello\n" not in f.sink.lines_ and all("status" not in u or u["status"] != "succeeded"
                                                   for u in f.sink.updates)
    fake.write_log(sub.ref["run_id"])
    assert f.join() is True
    assert f.sink.lines_[-1] == "hello\n" and f.sink.updates[-1]["status"] == "succeeded"


def test_a_rate_limit_while_following_is_waited_out(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    fake.secondary_limit_next(2, retry_after=0)
    f = Follower(gh, sub.ref)
    fake.start_run(sub.ref["run_id"], STEPS[:1])
    fake.finish_step(sub.ref["run_id"], 1, "done")
    fake.conclude(sub.ref["run_id"])
    assert f.join() is True
    assert f.sink.lines_[-1] == "done\n"


# -- resume -----------------------------------------------------------------------------------------
def test_a_follower_started_again_sends_nothing_twice(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    run_id = sub.ref["run_id"]
    first = Follower(gh, sub.ref)
    fake.start_run(run_id, STEPS)
    fake.start_step(run_id, 1)
    fake.finish_step(run_id, 1, "one", took=0)
    fake.start_step(run_id, 2)
    first.sink.wait_for(lambda s: any("step 2/4" in line for line in s.lines_))
    first.stop.set()  # the kernel restarts
    assert first.join() is False
    kept = list(first.sink.lines_)
    ref = {**sub.ref, **first.sink.refs}
    assert ref["steps_sent"] == len(kept)

    for n in (2, 3, 4):
        fake.finish_step(run_id, n, f"step {n} said this", took=0)
    fake.conclude(run_id)
    second = Follower(gh, ref, start=len(kept))
    assert second.join() is True
    whole = kept + second.sink.lines_
    assert len(whole) == len(set(whole))
    assert [line for line in whole if line.startswith("github: step")] == [
        f'github: step {n}/4 "{name}" {what}\n' for n, name in enumerate(STEPS, 1)
        for what in ("started", "succeeded in 0 s")]
    assert whole[-4:] == ["one\n", "step 2 said this\n", "step 3 said this\n", "step 4 said this\n"]

    # a third follower of the ended run, with everything sent: nothing more, the end again
    third = Follower(gh, {**ref, **second.sink.refs}, start=len(whole))
    assert third.join() is True
    assert third.sink.lines_ == [] and third.sink.updates[-1]["status"] == "succeeded"


def test_a_lost_local_log_is_sent_again_from_what_it_has(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    fake.start_run(sub.ref["run_id"], STEPS[:1])
    fake.finish_step(sub.ref["run_id"], 1, "a\nb\nc")
    fake.conclude(sub.ref["run_id"])
    done = Follower(gh, sub.ref)
    assert done.join() is True
    ref = {**sub.ref, **done.sink.refs}
    again = Follower(gh, ref, start=len(done.sink.lines_) - 2)  # the log file lost its last two lines
    assert again.join() is True
    assert again.sink.lines_ == ["b\n", "c\n"]


# -- refusals ------------------------------------------------------------------------------------------
def test_a_commit_not_pushed_is_refused_with_the_push_command(fake, repo):
    (repo / "more.txt").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "not pushed")
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "is not the head of a branch" in e.value.message
    assert "`git push origin HEAD:feature`" in e.value.hint and "never pushes" in e.value.hint
    assert not any(c.path.endswith("/dispatches") for c in fake.log)
    assert e.value.exit_code == 2


def test_a_commit_that_is_another_branchs_head_runs_that_branch(fake, repo):
    fake.set_head("feature", "f" * 40)  # feature moved on GitHub; main is at our commit
    fake.set_head("main", head(repo))
    sub = submit(remote(fake), repo)
    assert sub.ref["branch"] == "main" and fake.last_run().head_branch == "main"


def test_a_detached_head_not_on_github_names_a_branch_to_push(fake, repo):
    fake.branches.clear()
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "`git push origin HEAD:<branch>`" in e.value.hint


def test_no_workflow_on_github(fake, repo):
    fake.workflows.clear()
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert ".github/workflows/soopervisor.yml" in e.value.message
    assert "soopervisor github init" in e.value.hint


def test_no_workflow_in_the_commit(fake, repo):
    git(repo, "rm", "-q", "-r", ".github")
    git(repo, "commit", "-qm", "no workflow")
    fake.set_head("feature", head(repo))
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "has no .github/workflows/soopervisor.yml" in e.value.message
    assert not any(c.path.endswith("/dispatches") for c in fake.log)


def test_a_workflow_for_another_project_is_refused(fake, repo):
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo, project="pipelines/other")
    assert "'.'" in e.value.message and "--project pipelines/other" in e.value.hint


def test_no_token(fake, repo):
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake, token=None), repo)
    assert "GITHUB_TOKEN" in e.value.hint and f"soopervisor remote add github {fake.api_url} --github" in e.value.hint
    assert fake.log == []


def test_a_wrong_token_is_refused(fake, repo):
    wrong = "ghp_wrongTokenValue0123456789abcdefgh"
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake, token=wrong), repo)
    assert "401" in e.value.message and "expired" in e.value.hint
    assert wrong not in str(e.value)


def test_a_token_without_actions_write_names_the_permission(fake, repo):
    fake.token_permissions["actions"] = "read"
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "403" in e.value.message and "actions: write" in e.value.message
    assert "Actions: read and write" in e.value.hint and "actions=write" in e.value.hint
    fake.token_permissions.pop("contents")
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "contents: read" in e.value.message


def test_the_token_never_reaches_lines_errors_or_the_ref(fake, repo):
    gh = remote(fake)
    assert TOKEN not in repr(gh)
    sub = submit(gh, repo)
    assert TOKEN not in repr(sub)
    f = Follower(gh, sub.ref)
    fake.start_run(sub.ref["run_id"], STEPS[:1])
    fake.finish_step(sub.ref["run_id"], 1, f"echo {TOKEN}")  # a workflow that printed it (GitHub masks; we too)
    fake.conclude(sub.ref["run_id"])
    assert f.join() is True
    assert "echo ***\n" in f.sink.lines_
    assert TOKEN not in repr((f.sink.lines_, f.sink.updates, f.sink.refs))
    fake.fail_next(500, f"internal error near {TOKEN}", times=100)
    slow = GitHubRemote("github", fake.api_url, TOKEN, poll=0.01, unreachable_after=0.05)
    with pytest.raises(Exception) as e:
        slow.cancel(sub.ref)
    assert TOKEN not in str(e.value) and "does not answer" in str(e.value)


# -- GitHub Enterprise -------------------------------------------------------------------------------
def test_github_enterprise_through_its_api_url(repo):
    git(repo, "remote", "set-url", "origin", f"git@ghe.example.com:{REPO}.git")
    with FakeGitHub(token=TOKEN, prefix="/api/v3", html_url="https://ghe.example.com") as fake:
        fake.add_repo(REPO)
        fake.token_permissions["actions"] = "write"
        fake.add_workflow()
        fake.set_head("feature", head(repo))
        assert fake.api_url.endswith("/api/v3")
        gh = remote(fake)
        sub = submit(gh, repo)
        assert sub.ref["html_url"].startswith("https://ghe.example.com/") and sub.ref["run_id"] == fake.last_run().id
        # GHES 3.19 refuses return_run_details (nothing started): asked again without it, the run is found by listing
        dispatches = [(c.body, c.status) for c in fake.log if c.path.endswith("/dispatches")]
        assert [status for _, status in dispatches] == [422, 204]
        assert "return_run_details" not in dispatches[1][0] and len(fake.runs) == 1
        f = Follower(gh, sub.ref)
        fake.start_run(sub.ref["run_id"], STEPS[:1])
        fake.finish_step(sub.ref["run_id"], 1, "on the enterprise server")
        fake.conclude(sub.ref["run_id"])
        assert f.join() is True
        assert f.sink.lines_[-1] == "on the enterprise server\n"
        api_calls = [c for c in fake.log if not c.raw_path.startswith("/_blobs/")]
        assert api_calls and all(c.raw_path.startswith("/api/v3/") for c in api_calls)


# -- the repository from origin ----------------------------------------------------------------------
@pytest.mark.parametrize(("url", "expected"), [
    ("https://github.com/octo/proj.git", "octo/proj"),
    ("https://github.com/octo/proj", "octo/proj"),
    ("https://user@github.com/octo/proj.git/", "octo/proj"),
    ("git@github.com:octo/proj.git", "octo/proj"),
    ("ssh://git@github.com/octo/proj.git", "octo/proj"),
    ("ssh://git@ghe.corp:2222/team/pipe.line.git", "team/pipe.line"),
    ("https://ghe.corp/team/pipe", "team/pipe"),
    ("/srv/git/proj.git", None),
    ("file:///srv/git/proj.git", None),
    ("https://github.com/octo", None),
])
def test_repository_from_origin(url, expected):
    assert repository_from_url(url) == expected


def test_no_origin(fake, repo):
    git(repo, "remote", "remove", "origin")
    with pytest.raises(RemoteRefused) as e:
        submit(remote(fake), repo)
    assert "origin" in e.value.message and "git remote add origin" in e.value.hint


def test_the_run_is_found_late_by_the_follower(fake, repo):
    """GitHub may list the dispatched run only seconds later: the ref has no run id then, and the
    follower finds it (and keeps it in the ref)."""
    gh = GitHubRemote("github", fake.api_url, TOKEN, poll=0.02, find_timeout=0)
    fake.run_details = False  # a GitHub that does not say which run a dispatch made
    fake.fail_next(200, "", path="/actions/runs", method="GET", times=2)  # two empty-looking answers
    sub = submit(gh, repo)
    assert sub.ref["run_id"] is None and sub.ref["known_runs"] == []
    f = Follower(gh, sub.ref)
    f.sink.wait_for(lambda s: "run_id" in s.refs and s.refs["run_id"] is not None)
    assert f.sink.refs["run_id"] == fake.last_run().id
    fake.start_run(f.sink.refs["run_id"], STEPS[:1])
    fake.finish_step(f.sink.refs["run_id"], 1, "found")
    fake.conclude(f.sink.refs["run_id"])
    assert f.join() is True
    assert f.sink.lines_[-1] == "found\n"


def test_a_dispatch_github_failed_is_not_sent_twice(fake, repo):
    fake.fail_next(502, "Server Error", method="POST", path="/dispatches")
    with pytest.raises(RemoteUnavailable) as e:
        submit(remote(fake), repo)
    assert e.value.exit_code == 3 and "502" in e.value.message
    assert sum(1 for c in fake.log if c.path.endswith("/dispatches")) == 1


def test_an_answer_that_is_not_the_api_is_said_so(repo):
    class Portal(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>Sign in to the proxy</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Portal)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        gh = GitHubRemote("github", f"http://127.0.0.1:{server.server_address[1]}", TOKEN)
        with pytest.raises(RemoteUnavailable) as e:
            submit(gh, repo)
        assert "did not answer as the GitHub API does" in e.value.message and "api/v3" in e.value.hint
    finally:
        server.shutdown()
        server.server_close()


def test_an_enterprise_origin_with_the_github_com_remote_is_pointed_to_its_api_url(fake, repo):
    git(repo, "remote", "set-url", "origin", f"https://ghe.corp.example/{REPO}.git")
    fake.workflows.clear()
    gh = remote(fake)
    gh.url = "https://api.github.com"  # as configured; the fake stands in for it below
    gh._http().mount("https://api.github.com", _Rewrite(fake.api_url))
    with pytest.raises(RemoteRefused) as e:
        submit(gh, repo)
    assert "soopervisor remote add NAME https://ghe.corp.example/api/v3 --github" in e.value.hint


class _Rewrite(HTTPAdapter):
    """Sends https://api.github.com/... to the fake on loopback."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    def send(self, request, **kw):  # type: ignore[no-untyped-def]
        request.url = request.url.replace("https://api.github.com", self.to, 1)
        return super().send(request, **kw)


# -- through the run service: one local record, a restart, attach, stop ----------------------------------
@pytest.fixture
def pushed(tmp_path, monkeypatch):
    """A valid project whose commit, with the workflow, is main's head on the fake; the remote ``gh``."""
    from soopervisor.remotes import config as remotes
    from soopervisor.remotes import github
    from tests.projects import make_project

    monkeypatch.setattr(github, "POLL", 0.02)
    project = make_project(tmp_path)
    workflow.write(project, storage="s3://bucket/team")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "workflow")
    git(project, "remote", "add", "origin", f"git@github.com:{REPO}.git")
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo(REPO)
        fake.token_permissions["actions"] = "write"
        fake.add_workflow()
        fake.set_head("main", head(project))
        remotes.add("gh", fake.api_url, kind="github", token=TOKEN)
        yield project, fake


def test_stop_run_cancels_a_github_run(pushed):
    import soopervisor

    project, fake = pushed
    run = soopervisor.run(project, remote="gh", wait=False)
    fake.start_run(fake.last_run().id, STEPS)
    fake.start_step(fake.last_run().id, 1)
    until(lambda: soopervisor.get_run(run.id).status == "running")
    soopervisor.stop_run(run.id)
    until(lambda: soopervisor.get_run(run.id).finished)
    assert soopervisor.get_run(run.id).status == "cancelled"
    assert fake.last_run().conclusion == "cancelled"
    assert f"POST /repos/{REPO}/actions/runs/{fake.last_run().id}/cancel" in fake.calls("POST")


def test_cancel_of_a_run_github_does_not_list_yet_says_so(fake, repo):
    gh = GitHubRemote("github", fake.api_url, TOKEN, poll=0.01, find_timeout=0)
    ref = {"repository": REPO, "run_id": None, "commit": head(repo), "branch": "feature",
           "dispatched_at": "2026-01-01T00:00:00+00:00", "known_runs": []}
    with pytest.raises(RemoteUnavailable) as e:
        gh.cancel(ref)
    assert "Actions tab" in e.value.hint


def test_a_github_run_through_the_run_service_survives_a_restart(pushed):
    import soopervisor
    from soopervisor.service import RunOptions, RunService

    project, fake = pushed
    seen: list[str] = []
    active = RunService().start_remote(RunOptions(path=project, sample=True, on_line=seen.append), "gh")
    run_id = active.run.id
    assert fake.last_run().inputs == {"mode": "sample"}
    gh_run = fake.last_run().id
    fake.start_run(gh_run, STEPS)
    fake.start_step(gh_run, 1)
    until(lambda: any("step 1/4" in line and "started" in line for line in seen))
    active.detach()  # the kernel restarts: the run goes on at GitHub
    assert active.wait(WAIT)
    assert soopervisor.get_run(run_id).status == "running"

    fake.finish_step(gh_run, 1, f"{STEPS[0]} printed {TOKEN}", took=1)
    fake.finish_step(gh_run, 2, f"{STEPS[1]} printed {TOKEN}", took=2)
    # the Action's run, as soopervisor run prints it first: its id names the artifact set in the storage
    fake.finish_step(gh_run, 3, f"soopervisor: run 3f2a9c1b7d0e of proj at {head(project)[:7]} (sample) on docker\n"
                                f"{STEPS[2]} printed {TOKEN}", took=3)
    fake.finish_step(gh_run, 4, f"{STEPS[3]} printed {TOKEN}", took=4)
    fake.conclude(gh_run)
    soopervisor.attach(run_id)  # the kernel is back: the widget re-attaches by run id
    until(lambda: soopervisor.get_run(run_id).finished)

    run = soopervisor.get_run(run_id)
    assert run.status == "succeeded" and run.remote == "gh" and run.executor == f"GitHub Actions {REPO}"
    assert run.storage_url == "s3://bucket/team" and run.set_id == "3f2a9c1b7d0e"
    log = Path(run.log_path).read_text().splitlines()
    mine = [line for line in log if not line.startswith("soopervisor: ")]
    assert len(mine) == len(set(mine)), log  # nothing twice across the restart
    assert [line for line in mine if line.startswith("github: step")] == [
        f'github: step {n}/4 "{name}" {what}' for n, name in enumerate(STEPS, 1)
        for what in ("started", f"succeeded in {n} s")]
    assert mine[-4:] == [f"{name} printed ***" for name in STEPS]
    assert TOKEN not in Path(run.log_path).read_text() and TOKEN not in repr(run)


def test_the_cli_says_what_to_do_without_a_traceback(pushed, monkeypatch):
    from soopervisor.remotes import config as remotes
    from tests.conftest import cli

    project, fake = pushed
    (project / "later.txt").write_text("not pushed\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "later")
    proc = cli("run", str(project), "--remote", "gh", check=2)
    assert "is not the head of a branch" in proc.stderr and "git push origin HEAD:main" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and TOKEN not in proc.stderr + proc.stdout

    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    remotes.add("bare", fake.api_url, kind="github")
    proc = cli("run", str(project), "--remote", "bare", check=2)
    assert "no GitHub token" in proc.stderr and "GITHUB_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not any(c.path.endswith("/dispatches") for c in fake.log)


def test_githubs_workflow_commands_become_plain_text():
    from soopervisor.remotes.github import _readable

    text = ("\ufeff2026-12-03T01:05:38.1234567Z ##[group]Run actions/checkout@v5\n"
            "2026-12-03T01:05:38.1234568Z with:\n"
            "2026-12-03T01:05:38.1234569Z ##[endgroup]\n"
            "2026-12-03T01:05:39.0000000Z ##[error]Process completed with exit code 1.\n"
            "2026-12-03T01:05:39.0000001Z   indented ##[group] stays\n")
    assert _readable(text) == ["Run actions/checkout@v5", "with:", "error: Process completed with exit code 1.",
                               "  indented ##[group] stays"]


def test_a_workflow_without_storage_says_where_the_artifacts_went(fake, repo):
    workflow.write(repo, storage=None, force=True)
    git(repo, "commit", "-qam", "no storage")
    fake.set_head("feature", head(repo))
    gh = remote(fake)
    sub = submit(gh, repo)
    assert sub.storage_url is None and sub.ref["stores"] is False
    fake.start_run(sub.ref["run_id"], STEPS[:1])
    fake.finish_step(sub.ref["run_id"], 1, "ran")
    fake.conclude(sub.ref["run_id"])
    f = Follower(gh, sub.ref)
    assert f.join() is True
    assert f.sink.lines_[-2:] == ["ran\n", NO_STORAGE]
    again = Follower(gh, {**sub.ref, **f.sink.refs}, start=len(f.sink.lines_))
    assert again.join() is True and again.sink.lines_ == []


def test_following_a_run_that_waits_costs_no_rate_limit(fake, repo):
    gh = remote(fake)
    sub = submit(gh, repo)
    fake.start_run(sub.ref["run_id"], STEPS)
    f = Follower(gh, sub.ref)
    until(lambda: fake.not_modified >= 2)  # both the run and its jobs answered 304 once
    used = fake.rate_used
    until(lambda: fake.not_modified >= 12)
    assert fake.rate_used == used  # conditional requests for what did not change: free, as on GitHub
    fake.start_step(sub.ref["run_id"], 1)  # a change is seen at once all the same
    f.sink.wait_for(lambda s: any("step 1/4" in line for line in s.lines_))
    fake.conclude(sub.ref["run_id"])
    assert f.join() is True

"""Notifications of a job's end, over real HTTP on 127.0.0.1: the fake GitHub API and a webhook receiver.

One commit status per job end (state and context), one report comment per pull
request whose head the commit is (updated by the next run), Slack-compatible
JSON to a webhook; no secret in any of them; GitHub or the webhook down: the job
ends as it did and the failure is logged.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from soopervisor.github.report import MARKER
from soopervisor.runs import Run
from soopervisor.server import config as sc
from soopervisor.server import notify as notify_module
from soopervisor.server.notify import notify
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Job, Queue
from soopervisor.server.worker import Worker
from tests.fakes.github_api import FakeGitHub

TOKEN = "ghp_notifytesttoken0123456789abcdef"
SECRET = "s3cr3t-db-password-4711"
FILE_SECRET = "file-secret-value-0815"
SHA = "3398101e03bb5c1f0a9e2b7d7d29c010e3d3aaaa"


class Receiver:
    """A webhook receiver: http.server in a thread, recording every POST; ``fail`` answers 500 that often."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.fail = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.bodies.append(data)
                status = 500 if receiver.fail > 0 else 200
                receiver.fail -= 1
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/hookpath"

    @property
    def payloads(self) -> list[dict]:
        return [json.loads(b) for b in self.bodies]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo("acme/sales")
        yield fake


@pytest.fixture
def hook():
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify_module, "BACKOFF", 0.01)
    monkeypatch.setenv("NOTIFY_GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("DB_PASSWORD", SECRET)


def load(tmp_path: Path, github: FakeGitHub | None, hook: Receiver | None, url: str = "file:///srv/git/sales.git",
         **repo: Any) -> sc.ServerConfig:
    (tmp_path / "file-secret").write_text(FILE_SECRET + "\n")
    notify_settings: dict[str, Any] = {}
    if github is not None:
        notify_settings["github"] = {"repository": "acme/sales", "token": {"env": "NOTIFY_GITHUB_TOKEN"},
                                     "api_url": github.api_url}
    if hook is not None:
        notify_settings["webhook"] = {"url": hook.url}
    doc = {"storage": str(tmp_path / "artifacts"), "database": str(tmp_path / "server.sqlite"),
           "mirrors": str(tmp_path / "mirrors"),
           "repositories": [{"url": url, "secrets": ["DB_PASSWORD", {"name": "KEY", "file": "file-secret"}],
                             "notify": notify_settings, **repo}]}
    path = tmp_path / "server.yaml"
    path.write_text(json.dumps(doc))
    return sc.load(path)


def ended(state: str, *, error: str | None = None, project: str = ".", commit: str = SHA) -> Job:
    return Job(id="job1234", repository="sales", commit=commit, project=project, mode="sample", branch="feature",
               state=state, attempts=1, run_id="run5678", error=error, lease_owner=None, lease_until=None,
               created_at=0.0, updated_at=0.0)


def a_run(status: str, *, error: str | None = None, storage: str = "/srv/artifacts", log: Path | None = None) -> Run:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    return Run(project="sales", project_path="/tmp/x", commit=SHA, dirty=False, mode="sample", status=status,
               id="run5678", started_at=start.isoformat(), finished_at=(start + timedelta(seconds=65)).isoformat(),
               storage_url=storage, error=error, log_path=str(log) if log else None)


# -- GitHub ----------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "expected"), [("succeeded", "success"), ("failed", "failure"),
                                                 ("cancelled", "error")])
def test_each_job_end_sets_exactly_one_commit_status_with_its_state_and_context(
        tmp_path, github, state, expected):
    repo = load(tmp_path, github, None).repositories[0]
    error = None if state == "succeeded" else "task load failed: " + "x" * 300
    notify(repo, ended(state, error=error), a_run(state, error=error))
    (status,) = github.statuses_of(SHA)
    assert status["state"] == expected
    assert status["context"] == "soopervisor/sales/sample"
    assert len(status["description"]) <= 140 and status["description"].startswith(f"sample run {state} in 1m 05s")
    assert status["target_url"] is None  # local storage: no link
    assert github.calls("POST") == [f"POST /repos/acme/sales/statuses/{SHA}"]


def test_the_status_links_to_storage_that_is_a_url_and_a_project_folder_names_the_context(tmp_path, github):
    repo = load(tmp_path, github, None).repositories[0]
    notify(repo, ended("succeeded", project="ml/churn"), a_run("succeeded", storage="https://files.example.com/sets"))
    (status,) = github.statuses_of(SHA)
    assert status["context"] == "soopervisor/ml/churn/sample"
    assert status["target_url"] == f"https://files.example.com/sets/sales/{SHA}/run5678"


def test_an_invalid_project_without_a_run_is_a_failure(tmp_path, github):
    repo = load(tmp_path, github, None).repositories[0]
    notify(repo, ended("failed", error="the project is not valid: no pipeline.yaml"), None)
    (status,) = github.statuses_of(SHA)
    assert status["state"] == "failure" and "the project is not valid" in status["description"]


def test_a_pull_request_head_gets_one_report_comment_updated_by_the_next_run(tmp_path, github):
    repo = load(tmp_path, github, None).repositories[0]
    number = github.add_pull(head_sha=SHA, head_ref="feature")
    closed = github.add_pull(head_sha=SHA, head_ref="old", state="closed")
    moved = github.add_pull(head_sha="f" * 40, head_ref="other")

    log = tmp_path / "run.log"
    log.write_text("loading the pipeline\nKeyError: 'region'\n")
    notify(repo, ended("failed", error="task clean failed"), a_run("failed", error="task clean failed", log=log))
    (comment,) = github.comments_on(number)
    assert MARKER in comment.body and "<!-- soopervisor/sales/sample -->" in comment.body
    assert "failed" in comment.body and "task clean failed" in comment.body and "KeyError: 'region'" in comment.body

    notify(repo, ended("succeeded"), a_run("succeeded"))  # retried and green now
    (again,) = github.comments_on(number)
    assert again.id == comment.id and "succeeded" in again.body and "task clean failed" not in again.body
    assert github.comments_on(closed) == [] and github.comments_on(moved) == []
    assert [s["state"] for s in github.statuses_of(SHA)] == ["failure", "success"]


def test_github_enterprise_server_under_api_v3(tmp_path):
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as ghe:
        ghe.add_repo("acme/sales")
        repo = load(tmp_path, ghe, None).repositories[0]
        assert repo.notify.github.api_url.endswith("/api/v3")
        notify(repo, ended("succeeded"), a_run("succeeded"))
        assert [s["state"] for s in ghe.statuses_of(SHA)] == ["success"]


def test_github_answering_500_is_retried_and_a_blip_is_survived(tmp_path, github):
    repo = load(tmp_path, github, None).repositories[0]
    github.fail_next(502, "Bad Gateway", times=2, method="POST", path="/statuses/")
    notify(repo, ended("succeeded"), a_run("succeeded"))
    assert len(github.statuses_of(SHA)) == 1
    assert github.calls("POST").count(f"POST /repos/acme/sales/statuses/{SHA}") == 3


# -- webhook ---------------------------------------------------------------------------
def test_the_webhook_gets_slack_compatible_json(tmp_path, hook):
    repo = load(tmp_path, None, hook).repositories[0]
    notify(repo, ended("failed", error="task clean failed"), a_run("failed", error="task clean failed"))
    (payload,) = hook.payloads
    assert payload["text"].startswith("❌ soopervisor: sales@3398101e03bb (feature) sales sample run failed in 1m 05s")
    assert "task clean failed" in payload["text"]
    assert {k: payload[k] for k in ("status", "repository", "commit", "project", "mode", "duration", "run_id",
                                    "error", "branch")} == {
        "status": "failed", "repository": "sales", "commit": SHA, "project": "sales", "mode": "sample",
        "duration": 65.0, "run_id": "run5678", "error": "task clean failed", "branch": "feature"}


def test_a_webhook_answering_500_is_tried_again_then_the_failure_is_logged(tmp_path, hook, caplog):
    repo = load(tmp_path, None, hook).repositories[0]
    hook.fail = 1
    notify(repo, ended("succeeded"), a_run("succeeded"))
    assert len(hook.bodies) == 2  # the 500, then the delivery

    hook.bodies.clear()
    hook.fail = 100
    with caplog.at_level(logging.WARNING, logger="soopervisor.server.notify"):
        notify(repo, ended("succeeded"), a_run("succeeded"))
    assert len(hook.bodies) == notify_module.ATTEMPTS
    (record,) = caplog.records
    assert "the webhook was not called" in record.getMessage() and "answered 500" in record.getMessage()
    assert "hookpath" not in caplog.text  # a Slack URL's path is its secret


def test_the_webhook_url_by_reference(tmp_path, hook, monkeypatch):
    monkeypatch.setenv("SLACK_URL", hook.url)
    config = load(tmp_path, None, None)
    path = tmp_path / "by-ref.yaml"
    doc = json.loads((tmp_path / "server.yaml").read_text())
    doc["repositories"][0]["notify"] = {"webhook": {"url": {"env": "SLACK_URL"}}}
    path.write_text(json.dumps(doc))
    repo = sc.load(path).repositories[0]
    assert config.repositories[0].notify is None and repo.notify.webhook.url_ref.env == "SLACK_URL"
    notify(repo, ended("cancelled"), None)
    assert [p["status"] for p in hook.payloads] == ["cancelled"]


# -- secrets ---------------------------------------------------------------------------
def test_no_secret_value_reaches_github_or_the_webhook(tmp_path, github, hook):
    repo = load(tmp_path, github, hook).repositories[0]
    number = github.add_pull(head_sha=SHA)
    log = tmp_path / "run.log"
    log.write_text(f"connecting with {FILE_SECRET}\n")
    error = f"psql: password {SECRET} refused; key {FILE_SECRET}; token {TOKEN}"
    notify(repo, ended("failed", error=error), a_run("failed", error=error, log=log))

    sent = [json.dumps(c.body) for c in github.log] + [b.decode() for b in hook.bodies]
    assert len(github.statuses_of(SHA)) == 1 and len(github.comments_on(number)) == 1 and len(hook.bodies) == 1
    for text in sent:
        for secret in (SECRET, FILE_SECRET, TOKEN):
            assert secret not in text
    assert "***" in github.statuses_of(SHA)[0]["description"]
    assert "***" in github.comments_on(number)[0].body and "***" in hook.payloads[0]["error"]


# -- the worker ------------------------------------------------------------------------
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]


def not_a_project(root: Path) -> tuple[Path, str]:
    """A real bare repository whose commit is not a ploomber project: its job fails without Docker."""
    bare, work = root / "sales.git", root / "sales-work"
    subprocess.run([*GIT, "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    (work / "README.md").write_text("no pipeline here\n")
    subprocess.run([*GIT, "-C", str(work), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "first"], check=True)
    subprocess.run([*GIT, "-C", str(work), "push", "-q", str(bare), "HEAD:refs/heads/main"], check=True)
    sha = subprocess.run([*GIT, "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return bare, sha


def serve_one(config: sc.ServerConfig):
    queue = Queue(config.database)
    poller = Poller(config, queue)
    poller.poll(config.repositories[0])
    return queue, Worker(config, queue, poller).run_one()


def test_the_worker_notifies_a_job_end_once(tmp_path, github, hook):
    bare, sha = not_a_project(tmp_path)
    config = load(tmp_path, github, hook, url=f"file://{bare}")
    _, outcome = serve_one(config)
    assert outcome.state == "failed" and "the project is not valid" in outcome.error
    (status,) = github.statuses_of(sha)
    assert status["state"] == "failure" and status["context"] == "soopervisor/sales/sample"
    assert [p["status"] for p in hook.payloads] == ["failed"]


def test_github_down_the_job_still_ends_as_it_did_and_the_failure_is_logged(tmp_path, github, hook, caplog):
    bare, sha = not_a_project(tmp_path)
    config = load(tmp_path, github, hook, url=f"file://{bare}")
    github.fail_next(500, "Server Error", times=100)
    with caplog.at_level(logging.WARNING, logger="soopervisor.server.notify"):
        queue, outcome = serve_one(config)
    assert outcome.state == "failed" and queue.get(outcome.job.id).state == "failed"
    assert github.statuses_of(sha) == []
    assert len(github.calls("POST")) == notify_module.ATTEMPTS  # tried again, then given up
    assert "GitHub was not told of" in caplog.text and "500" in caplog.text and TOKEN not in caplog.text
    assert [p["status"] for p in hook.payloads] == ["failed"]  # the other channel still told


def test_a_job_released_for_a_retry_is_not_notified_and_one_that_gave_up_is(tmp_path, github, hook):
    bare, sha = not_a_project(tmp_path)
    config = load(tmp_path, github, hook, url=f"file://{bare}")
    queue = Queue(config.database)
    poller = Poller(config, queue)
    poller.poll(config.repositories[0])
    worker = Worker(config, queue, poller)
    job = queue.claim(worker.name)
    worker._release(job, "cannot check out: the remote is gone")  # attempts left: queued again
    assert queue.get(job.id).state == "queued" and github.statuses_of(sha) == [] and hook.bodies == []

    for _ in range(config.max_attempts - 1):
        job = queue.claim(worker.name)
        outcome = worker._release(job, "cannot check out: the remote is gone")
    assert outcome.state == "failed"
    assert [s["state"] for s in github.statuses_of(sha)] == ["failure"]
    assert [p["status"] for p in hook.payloads] == ["failed"]


def test_a_repository_without_notify_settings_is_not_told(tmp_path, github, hook):
    bare, _ = not_a_project(tmp_path)
    doc = {"database": str(tmp_path / "server.sqlite"), "mirrors": str(tmp_path / "mirrors"),
           "repositories": [{"url": f"file://{bare}"}]}
    (tmp_path / "plain.yaml").write_text(json.dumps(doc))
    config = sc.load(tmp_path / "plain.yaml")
    assert config.repositories[0].notify is None
    _, outcome = serve_one(config)
    assert outcome.state == "failed" and github.log == [] and hook.bodies == []


@pytest.mark.docker
@pytest.mark.xdist_group("serve")
def test_real_runs_tell_github_and_the_webhook_with_no_secret(tmp_path, engine, github, hook):
    from tests.projects import VALID, commit_all, function_task, git, init_repo, write

    work = init_repo(tmp_path / "work")
    write(work, VALID)
    first = commit_all(work, "first")
    bare = tmp_path / "git" / "sales.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    config = load(tmp_path, github, hook, url=f"file://{bare}")
    number = github.add_pull(head_sha=first, head_ref="main")

    queue = Queue(config.database)
    poller = Poller(config, queue)
    worker = Worker(config, queue, poller)
    poller.poll(config.repositories[0])
    outcome = worker.run_one()
    assert outcome.state == "succeeded"
    (status,) = github.statuses_of(first)
    assert status["state"] == "success" and status["context"] == "soopervisor/sales/sample"
    (comment,) = github.comments_on(number)
    assert "succeeded" in comment.body and first[:12] in comment.body
    (payload,) = hook.payloads
    assert payload["status"] == "succeeded" and payload["run_id"] == outcome.run_id and payload["duration"] > 0

    write(work, function_task("print('using', os.environ['DB_PASSWORD'], flush=True)\n"
                              "raise RuntimeError('refused: ' + os.environ['DB_PASSWORD'])"))
    failing = commit_all(work, "a failing task")
    git(work, "push", "-q", str(bare), "HEAD:main")
    github.move_head(number, failing)
    poller.poll(config.repositories[0])
    outcome = worker.run_one()
    assert outcome.state == "failed"
    (status,) = github.statuses_of(failing)
    assert status["state"] == "failure"
    (again,) = github.comments_on(number)
    assert again.id == comment.id and "failed" in again.body
    sent = [json.dumps(c.body) for c in github.log] + [b.decode() for b in hook.bodies]
    assert all(SECRET not in text for text in sent)
    assert hook.payloads[-1]["failed_task"] == "emit"
    # a file secret goes to its run only: never into the server's own environment (jobs run at once)
    assert "KEY" not in os.environ

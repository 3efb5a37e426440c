"""The webhook endpoint against real payloads (GitHub's own, from @octokit/webhooks-examples) over
real HTTP: a call signed right polls that repository at once — nothing else, whatever the payload
says — and anything else is refused without a poll.

The poll interval is an hour: after the server's first poll, only the webhook can make it poll.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from soopervisor.server.webhook import MAX_BODY
from tests import github_payloads
from tests.server.test_app import InProcess, Remote, server_yaml, tokens, wait_for

SECRET = "whsec-0a1b2c3d4e5f-ten-chars-and-more"
GITLAB_SECRET = "gitlab-token-98765-and-more"


def github_headers(body: bytes, secret: str = SECRET, event: str = "push") -> dict[str, str]:
    """What GitHub sends with a delivery: the HMAC-SHA256 of the raw body, hex, after "sha256="."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/5a1b2c3",
            "X-GitHub-Event": event, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            "X-Hub-Signature-256": f"sha256={digest}"}


def gitlab_push(remote: Remote) -> bytes:
    """A push event as GitLab sends it (the documented fields that matter)."""
    return json.dumps({
        "object_kind": "push", "event_name": "push", "ref": "refs/heads/main",
        "before": "0" * 40, "after": "f" * 40, "user_username": "jsmith",
        "project": {"name": "sales", "path_with_namespace": "acme/sales", "default_branch": "main"},
        "commits": [], "total_commits_count": 1,
    }).encode()


@pytest.fixture
def hooked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InProcess, dict[str, Remote], str]]:
    """Three repositories: sales (GitHub, secret in an env var), forecast (GitLab, secret in a file),
    plain (no webhook); served in this process with the poll thread only (jobs stay queued)."""
    monkeypatch.setenv("SALES_WEBHOOK_SECRET", SECRET)
    secret_file = tmp_path / "forecast-webhook"
    secret_file.write_text(GITLAB_SECRET + "\n")
    remotes = {name: Remote(tmp_path, name=name) for name in ("sales", "forecast", "plain")}
    # first_sight none: the first heads are only recorded; the tests push what is new
    config = server_yaml(tmp_path, [
        {"url": remotes["sales"].url, "name": "sales", "webhook_secret": {"env": "SALES_WEBHOOK_SECRET"},
         "first_sight": "none"},
        {"url": remotes["forecast"].url, "name": "forecast", "webhook_secret": {"file": str(secret_file)},
         "first_sight": "none"},
        {"url": remotes["plain"].url, "name": "plain", "first_sight": "none"},
    ], poll_interval=3600)
    admin = tokens(config)["admin"]
    server = InProcess(config)
    try:
        wait_for("the first poll of every repository", lambda: all(
            r["heads"].get("main") == remotes[r["name"]].head() for r in repos(server, admin)))
        yield server, remotes, admin
    finally:
        server.close()


def repos(server: InProcess, admin: str) -> list[dict]:
    status, body = server.http.get("/soopervisor/api/repositories", admin)
    assert status == 200, body
    return body["repositories"]


def repo(server: InProcess, admin: str, name: str) -> dict:
    return next(r for r in repos(server, admin) if r["name"] == name)


def hook(server: InProcess, name: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    status, answer, _ = server.http.request("POST", f"/soopervisor/api/webhook/{name}", body=body, headers=headers)
    return status, answer


def test_a_signed_github_push_polls_that_repository_at_once_and_only_that(hooked):
    server, remotes, admin = hooked
    pushed = remotes["sales"].push()
    payload = github_payloads.push()  # GitHub's own: another repository, other commits
    assert payload["after"] != pushed
    body = json.dumps(payload).encode()

    status, answer = hook(server, "sales", body, github_headers(body))
    assert status == 200, answer
    assert answer["repository"] == "sales" and answer["polling"] and answer["host"] == "github"
    wait_for("the poll the webhook asked for", lambda: repo(server, admin, "sales")["heads"]["main"] == pushed)
    # what runs is what the remote has, never what the payload names
    jobs = repo(server, admin, "sales")["jobs"]
    assert [j["commit"] for j in jobs] == [pushed] and payload["after"] not in json.dumps(jobs)

    # GitHub's ping (sent when the webhook is made) is signed too, and answered
    ping = json.dumps(github_payloads.example("ping")).encode()
    assert hook(server, "sales", ping, github_headers(ping, event="ping"))[0] == 200


def test_a_wrong_or_missing_signature_is_refused_and_polls_nothing(hooked):
    server, remotes, admin = hooked
    before = repo(server, admin, "sales")
    remotes["sales"].push()
    body = json.dumps(github_payloads.push()).encode()
    tampered = body.replace(b'"refs/heads/', b'"refs/heads/x', 1)
    no_signature = {k: v for k, v in github_headers(body).items() if k != "X-Hub-Signature-256"}
    refused = [
        (body, github_headers(body, secret="not-the-secret")),
        (tampered, github_headers(body)),  # the signature of another body
        (body, {**github_headers(body), "X-Hub-Signature-256": "sha1=" + "0" * 40}),
        (body, {**github_headers(body), "X-Hub-Signature-256": ""}),
        (body, no_signature),
        (body, {**no_signature, "Authorization": f"Bearer {admin}"}),  # an API token is not a signature
    ]
    for sent, headers in refused:
        status, answer = hook(server, "sales", sent, headers)
        assert status == 401, (headers, answer)
        assert SECRET not in json.dumps(answer) and answer["hint"]
    server.ticks(2)
    after = repo(server, admin, "sales")
    assert after["poll_now"] is False and after["heads"] == before["heads"] and after["last_poll"] == before["last_poll"]


def test_gitlab_sends_the_secret_itself(hooked):
    server, remotes, admin = hooked
    pushed = remotes["forecast"].push()
    body = gitlab_push(remotes["forecast"])
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook"}

    status, answer = hook(server, "forecast", body, {**headers, "X-Gitlab-Token": "wrong-token"})
    assert status == 401 and GITLAB_SECRET not in json.dumps(answer)
    status, answer = hook(server, "forecast", body, {**headers, "X-Gitlab-Token": GITLAB_SECRET})
    assert status == 200 and answer["host"] == "gitlab" and answer["event"] == "Push Hook"
    wait_for("the poll GitLab asked for", lambda: repo(server, admin, "forecast")["heads"]["main"] == pushed)
    # a secret is one repository's: sales' GitHub secret does not open forecast, nor the other way round
    body = json.dumps(github_payloads.push()).encode()
    assert hook(server, "forecast", body, github_headers(body))[0] == 401
    assert hook(server, "sales", body, {**headers, "X-Gitlab-Token": GITLAB_SECRET})[0] == 401


def test_an_unknown_repository_or_one_without_a_secret_is_404(hooked):
    server, _, _ = hooked
    body = json.dumps(github_payloads.push()).encode()
    for name in ("nope", "plain"):
        status, answer = hook(server, name, body, github_headers(body))
        assert status == 404 and "webhook_secret" in answer["hint"], answer
    # the same answer for both: a caller learns nothing of which repositories are served
    assert hook(server, "nope", body, {})[1]["error"].replace("nope", "X") == \
        hook(server, "plain", body, {})[1]["error"].replace("plain", "X")


def test_an_oversized_body_is_refused_unread(hooked):
    server, _, _ = hooked
    body = b"{" + b" " * MAX_BODY + b"}"
    status, answer = hook(server, "sales", body, github_headers(body))
    assert status == 413 and "MiB" in answer["error"]
    # far larger: refused before the body is sent (a client that waits for "100 Continue" reads the 413)
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=60)
    try:
        conn.putrequest("POST", "/soopervisor/api/webhook/sales")
        for name, value in {**github_headers(b"{}"), "Content-Length": str(100 * MAX_BODY),
                            "Expect": "100-continue"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        refused = conn.getresponse()
        assert refused.status == 413 and "MiB" in json.loads(refused.read())["error"]
    finally:
        conn.close()
    small = json.dumps(github_payloads.push()).encode()
    assert hook(server, "sales", small, github_headers(small))[0] == 200  # the server goes on


def test_a_secret_that_cannot_be_read_is_the_servers_problem(hooked, monkeypatch):
    server, _, _ = hooked
    monkeypatch.delenv("SALES_WEBHOOK_SECRET")
    body = json.dumps(github_payloads.push()).encode()
    status, answer = hook(server, "sales", body, github_headers(body))
    assert status == 503 and "SALES_WEBHOOK_SECRET" in answer["hint"] and SECRET not in json.dumps(answer)


def test_a_webhook_secret_written_in_the_file_is_refused_unquoted(tmp_path):
    from tests.conftest import cli

    config = server_yaml(tmp_path, [{"url": "file:///srv/git/sales.git", "name": "sales",
                                     "webhook_secret": SECRET}])
    proc = cli("serve", "--config", str(config), "--check", check=2)
    assert "repositories[0].webhook_secret" in proc.stderr and "holds a value" in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    config = server_yaml(tmp_path, [{"url": "file:///srv/git/sales.git", "name": "sales",
                                     "webhook_secret": {"env": "NO_SUCH_WEBHOOK_SECRET_VAR"}}])
    proc = cli("serve", "--config", str(config), "--check", check=2)  # --check reads the secret too
    assert "webhook_secret" in proc.stderr and "NO_SUCH_WEBHOOK_SECRET_VAR is not set" in proc.stderr

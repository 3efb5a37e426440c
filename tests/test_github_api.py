"""The GitHub REST client: real PyGithub against a stateful fake of the API on loopback.

The fake (tests/fakes/github_api.py) answers in the documented shapes and logs
every request, so each test can say which calls were made, not only what came
back. Webhook payloads come from GitHub's own examples (tests/github_payloads.py).
"""
from __future__ import annotations

import re
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from soopervisor.github.api import WRITE_ROLES, GitHubAPI, GitHubError
from tests import github_payloads
from tests.fakes.github_api import ROLES, FakeGitHub

REPO = "octo/proj"
MARKER = "<!-- soopervisor-report -->"


@pytest.fixture
def fake():
    with FakeGitHub() as fake:
        fake.add_repo(REPO)
        yield fake


class Recorder:
    """Stands in for time.sleep and the log: keeps what was asked."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self.lines: list[str] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def client(fake: FakeGitHub, rec: Recorder | None = None, **kw) -> GitHubAPI:
    rec = rec or Recorder()
    kw.setdefault("token", fake.token)
    return GitHubAPI(REPO, api_url=fake.api_url, sleep=rec.sleep, log=rec.log, **kw)


# -- pull requests ---------------------------------------------------------------
def test_a_pull_request_from_a_branch_of_the_same_repository(fake):
    number = fake.add_pull(head_sha="a" * 40, head_ref="feature/x")
    pr = client(fake).pull_request(number)
    assert (pr.number, pr.head_sha, pr.head_ref, pr.head_repo, pr.base_repo) == (
        number, "a" * 40, "feature/x", REPO, REPO)
    assert not pr.is_fork and pr.state == "open"
    assert pr.html_url == f"https://github.com/{REPO}/pull/{number}"
    # lazy objects: the pull request only, no GET /repos/{o}/{r} first
    assert fake.calls() == [f"GET /repos/{REPO}/pulls/{number}"]


def test_a_pull_request_from_a_fork_and_from_a_deleted_fork(fake):
    number = fake.add_pull(head_sha="b" * 40, head_repo="mallory/proj")
    api = client(fake)
    pr = api.pull_request(number)
    assert pr.is_fork and pr.head_repo == "mallory/proj" and pr.base_repo == REPO
    fake.delete_head_repo(number)
    gone = api.pull_request(number)
    assert gone.head_repo is None and gone.is_fork and gone.head_sha == "b" * 40


def test_the_head_is_read_as_it_is_now(fake):
    number = fake.add_pull(head_sha="a" * 40)
    api = client(fake)
    assert api.pull_request(number).head_sha == "a" * 40
    fake.move_head(number, "c" * 40)
    assert api.pull_request(number).head_sha == "c" * 40


def test_no_such_pull_request_names_it_and_the_repository(fake):
    issue = fake.add_issue()  # an issue is not a pull request
    for number in (issue, 99):
        with pytest.raises(GitHubError) as e:
            client(fake).pull_request(number)
        assert e.value.message == f"no pull request #{number} in {REPO}"
        assert e.value.exit_code == 3 and e.value.hint


# -- permission and who may start a run -------------------------------------------
@pytest.mark.parametrize("role", sorted(ROLES))
def test_permission_is_the_role_itself(fake, role):
    fake.set_role("dana", role)
    assert client(fake).permission("dana") == role


def test_permission_of_the_owner_a_stranger_and_an_unknown_login(fake):
    fake.add_user("stranger")
    api = client(fake)
    assert api.permission("octo") == "admin"
    assert api.permission("stranger") == "read"  # anyone may read a public repository
    assert api.permission("no-such-user") == "none"  # GitHub answers 404
    fake.repos[REPO].private = True
    assert api.permission("stranger") == "none"


@pytest.mark.parametrize("association", github_payloads.author_associations())
@pytest.mark.parametrize("role", [*sorted(ROLES), None])
def test_can_write_for_every_association_and_role(fake, association, role):
    fake.set_role("erin", role)
    allowed, why = client(fake).can_write("erin", association)
    looked_up = fake.calls() == [f"GET /repos/{REPO}/collaborators/erin/permission"]
    if association == "OWNER":
        assert allowed and not fake.log and "OWNER" in why
    elif association in ("MEMBER", "COLLABORATOR"):
        # ambiguous: an org member or a collaborator may have read or triage only
        assert looked_up
        assert allowed == (role in WRITE_ROLES)
        assert why.startswith(f"erin is a {association} with {role or 'read'} permission")
    else:
        assert not allowed and not fake.log
        assert why == (f"erin's association is {association}: only OWNER, MEMBER or COLLABORATOR "
                       "with write access can start a run")
    assert "\n" not in why


# -- reactions and comments --------------------------------------------------------
def test_react_adds_each_reaction_once(fake):
    number = fake.add_pull(head_sha="a" * 40)
    cid = fake.add_comment(number, "/soopervisor run", user="octo", association="OWNER")
    api = client(fake)
    api.react(cid, "eyes")
    api.react(cid, "eyes")  # GitHub answers 200 with the existing one
    api.react(cid, "rocket")
    assert fake.reactions(cid) == [("eyes", "github-actions[bot]"), ("rocket", "github-actions[bot]")]
    assert fake.calls() == [f"POST /repos/{REPO}/issues/comments/{cid}/reactions"] * 3
    with pytest.raises(ValueError):
        api.react(cid, "thumbsup")
    with pytest.raises(GitHubError, match=f"no comment 424242 in {REPO}"):
        api.react(424242, "eyes")


def test_comment_posts_a_reply(fake):
    number = fake.add_pull(head_sha="a" * 40)
    cid = client(fake).comment(number, "usage: `/soopervisor run`")
    [c] = fake.comments_on(number)
    assert (c.id, c.body, c.user) == (cid, "usage: `/soopervisor run`", "github-actions[bot]")


def test_upsert_creates_once_then_updates_across_pages(fake):
    number = fake.add_pull(head_sha="a" * 40)
    for i in range(131):  # two pages of 100
        fake.add_comment(number, f"comment {i}", user=f"user{i % 7}", association="CONTRIBUTOR")
    api = client(fake)
    cid, created = api.upsert_comment(number, MARKER, "report 1")
    assert created and fake.comments[cid].body == f"{MARKER}\nreport 1"  # the marker put on top
    gets = [c for c in fake.log if c.method == "GET"]
    assert [c.query.get("page", "1") for c in gets] == ["1", "2"]
    assert all(c.query.get("per_page") == "100" for c in gets)

    fake.log.clear()
    again, created = api.upsert_comment(number, MARKER, f"report 2\n{MARKER}")
    assert (again, created) == (cid, False)
    assert fake.comments[cid].body == f"report 2\n{MARKER}"  # already marked: left as given
    assert len(fake.comments_on(number)) == 132
    assert fake.calls("PATCH") == [f"PATCH /repos/{REPO}/issues/comments/{cid}"] and not fake.calls("POST")


def test_upsert_edits_the_bots_comment_not_a_persons_quoting_the_marker(fake):
    number = fake.add_pull(head_sha="a" * 40)
    person = fake.add_comment(number, f"look at this {MARKER}", user="alice", association="COLLABORATOR")
    bot = fake.add_comment(number, f"{MARKER}\nold report", user="github-actions[bot]", user_type="Bot")
    cid, created = client(fake).upsert_comment(number, MARKER, "new report")
    assert (cid, created) == (bot, False)
    assert fake.comments[person].body == f"look at this {MARKER}"
    assert "new report" in fake.comments[bot].body


def test_upsert_with_only_a_persons_comment_leaves_it_and_creates_the_report(fake):
    number = fake.add_pull(head_sha="a" * 40)
    person = fake.add_comment(number, f"{MARKER} copied", user="alice")
    cid, created = client(fake).upsert_comment(number, MARKER, "report")
    assert created and cid != person and fake.comments[person].body == f"{MARKER} copied"
    # an installation token cannot read /user: its comments are a bot's
    assert "GET /user" in fake.calls()


def test_upsert_with_a_personal_token_edits_that_persons_comment():
    with FakeGitHub(identity="alice", identity_type="User") as fake:
        fake.add_repo(REPO)
        number = fake.add_pull(head_sha="a" * 40)
        fake.add_comment(number, f"{MARKER} bob's copy", user="bob")
        mine = fake.add_comment(number, f"{MARKER} report", user="alice")
        cid, created = client(fake).upsert_comment(number, MARKER, "updated")
        assert (cid, created) == (mine, False)
        assert fake.comments[mine].body == f"{MARKER}\nupdated"


# -- rate limits -----------------------------------------------------------------
WAIT_LINE = re.compile(r"GitHub API rate limit reached; waiting (\d+) s until \d\d:\d\d:\d\d UTC")


def test_a_primary_rate_limit_is_waited_out_then_the_call_succeeds(fake, rec):
    number = fake.add_pull(head_sha="a" * 40)
    fake.limit_next(2, reset_in=2)
    assert client(fake, rec).pull_request(number).head_sha == "a" * 40
    assert len(rec.slept) == 2 and all(0 < s <= 3 for s in rec.slept)  # until the reset, +1 s
    assert len(rec.lines) == 2 and all(WAIT_LINE.fullmatch(line) for line in rec.lines)
    assert [c.status for c in fake.log] == [403, 403, 200]


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_limit_waits_retry_after(fake, rec, status):
    number = fake.add_pull(head_sha="a" * 40)
    fake.secondary_limit_next(1, retry_after=7, status=status)
    client(fake, rec).comment(number, "hello")
    assert rec.slept == [7.0] and WAIT_LINE.fullmatch(rec.lines[0]).group(1) == "7"
    assert len(fake.comments_on(number)) == 1


def test_a_secondary_limit_without_retry_after_waits_a_minute(fake, rec):
    number = fake.add_pull(head_sha="a" * 40)
    fake.secondary_limit_next(1, retry_after=None)
    client(fake, rec).pull_request(number)
    assert rec.slept == [60.0]


def test_still_limited_after_three_waits_is_a_clear_error(fake, rec):
    number = fake.add_pull(head_sha="a" * 40)
    fake.limit_next(10, reset_in=2)
    with pytest.raises(GitHubError) as e:
        client(fake, rec).pull_request(number)
    assert len(rec.slept) == 3 and len(fake.log) == 4
    assert re.fullmatch(r"GitHub API rate limit exhausted \(resets at \d\d:\d\d UTC\)", e.value.message)
    assert e.value.exit_code == 3 and "run the workflow again after" in e.value.hint


def test_a_wait_beyond_the_cap_is_not_attempted(fake, rec):
    number = fake.add_pull(head_sha="a" * 40)
    fake.limit_next(1, reset_in=3600)
    with pytest.raises(GitHubError) as e:
        client(fake, rec, max_rate_wait=900).pull_request(number)
    assert rec.slept == [] and len(fake.log) == 1
    reset = datetime.now(UTC) + timedelta(seconds=3601)
    near = {(reset + timedelta(minutes=d)).strftime("%H:%M") for d in (-1, 0, 1)}
    assert re.search(r"resets at (\d\d:\d\d) UTC", e.value.message).group(1) in near


# -- other failures ----------------------------------------------------------------
def test_a_bad_token_says_so_without_showing_it(fake):
    token = "ghp_" + "Zq7" * 12
    with pytest.raises(GitHubError) as e:
        client(fake, token=token).pull_request(1)
    assert "401" in e.value.message and "invalid or expired" in e.value.hint
    assert token not in str(e.value) and token not in repr(e.value.args)


def test_a_token_without_write_permission_points_at_the_workflow_permissions(fake):
    number = fake.add_pull(head_sha="a" * 40)
    fake.token_permissions.update(issues="read", pull_requests="read")
    with pytest.raises(GitHubError) as e:
        client(fake).upsert_comment(number, MARKER, "report")
    assert "Resource not accessible by integration" in e.value.message
    assert "`pull-requests: write`" in e.value.hint and "`issues: write`" in e.value.hint


def test_a_server_error_suggests_running_again(fake):
    number = fake.add_pull(head_sha="a" * 40)
    fake.fail_next(502, "Server Error")
    with pytest.raises(GitHubError, match="502") as e:
        client(fake).pull_request(number)
    assert "githubstatus.com" in e.value.hint


def test_an_unreachable_api_names_github_api_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    url = f"http://127.0.0.1:{port}/api/v3"
    with pytest.raises(GitHubError) as e:
        GitHubAPI(REPO, "ghs_unused_token_abcdef", url, log=lambda _: None).pull_request(1)
    assert f"cannot reach GITHUB_API_URL={url}" in e.value.message and e.value.exit_code == 3


def test_github_enterprise_server_serves_the_api_under_api_v3(monkeypatch):
    with FakeGitHub(prefix="/api/v3") as fake:
        fake.add_repo(REPO)
        number = fake.add_pull(head_sha="d" * 40)
        fake.set_role("bob", "write")
        for i in range(120):
            fake.add_comment(number, f"c{i}")
        monkeypatch.setenv("GITHUB_API_URL", fake.api_url)  # every call goes there
        api = GitHubAPI(REPO, fake.token)
        assert api.api_url.endswith("/api/v3")
        assert api.pull_request(number).head_sha == "d" * 40
        assert api.can_write("bob", "COLLABORATOR")[0]
        cid, created = api.upsert_comment(number, MARKER, "report")
        assert created and api.upsert_comment(number, MARKER, "report 2") == (cid, False)
        api.react(cid, "hooray")
        assert fake.log and all(c.raw_path.startswith("/api/v3/") and c.status in (200, 201) for c in fake.log)


# -- the fake itself, where PyGithub does not look -----------------------------------
def test_the_fake_pages_with_a_link_header_and_reports_the_rate(fake):
    number = fake.add_issue()
    for i in range(5):
        fake.add_comment(number, f"c{i}")
    url = f"{fake.api_url}/repos/{REPO}/issues/{number}/comments"
    auth = {"Authorization": f"Bearer {fake.token}"}
    first = requests.get(url, params={"per_page": 2}, headers=auth, timeout=5)
    assert [c["body"] for c in first.json()] == ["c0", "c1"]
    assert first.links["next"]["url"].endswith("per_page=2&page=2")
    assert first.links["last"]["url"].endswith("per_page=2&page=3")
    last = requests.get(first.links["last"]["url"], headers=auth, timeout=5)
    assert [c["body"] for c in last.json()] == ["c4"] and "next" not in last.links
    assert int(last.headers["x-ratelimit-remaining"]) == 5000 - 2
    assert int(last.headers["x-ratelimit-reset"]) > time.time()
    bad = requests.get(url, headers={"Authorization": "token nope"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"


# -- real webhook payloads ---------------------------------------------------------
def test_the_webhook_finders_return_payloads_of_the_right_shape():
    on_pr = github_payloads.issue_comment_on_pull_request()
    assert on_pr["action"] == "created" and "pull_request" in on_pr["issue"]
    assert on_pr["issue"]["pull_request"]["url"].endswith(f"/pulls/{on_pr['issue']['number']}")
    assert on_pr["comment"]["issue_url"] == on_pr["issue"]["url"]
    assert isinstance(on_pr["comment"]["id"], int) and on_pr["comment"]["author_association"]

    on_issue = github_payloads.issue_comment_on_issue()
    assert on_issue["action"] == "created" and "pull_request" not in on_issue["issue"]

    edited = github_payloads.issue_comment_edited()
    assert edited["action"] == "edited" and "from" in edited["changes"]["body"]
    assert "pull_request" in edited["issue"]

    push = github_payloads.push()
    assert push["ref"].startswith("refs/heads/") and not push["deleted"] and len(push["after"]) == 40

    # copies: changing one does not change the next
    on_pr["issue"]["number"] = -1
    assert github_payloads.issue_comment_on_pull_request()["issue"]["number"] != -1
    assert {"OWNER", "MEMBER", "COLLABORATOR", "NONE"} <= set(github_payloads.author_associations())
    with pytest.raises(LookupError, match="actions present"):
        github_payloads.example("issue_comment", action="pinned")

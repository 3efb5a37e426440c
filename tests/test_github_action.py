"""The Action end to end, as a GitHub runner runs it: real install, real git, real Docker.

A runner gives the steps files and variables; ``tests/action_runner.py`` does
the same with action.yml's steps. The install step runs for real once (a venv
with soopervisor installed from this checkout); the pull-request cases talk to
a stateful GitHub REST API on loopback (``GITHUB_API_URL``).
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from soopervisor.github.events import USAGE
from soopervisor.github.report import MARKER
from tests.action_runner import run_action
from tests.fakes.github_api import FakeGitHub
from tests.github_payloads import examples, issue_comment_on_pull_request
from tests.projects import MAKE_DATA, VALID, commit_all, git, make_project, write

ROOT = Path(__file__).resolve().parent.parent
REPO = "octo/proj"
INSTALL = "Install soopervisor from the action's checkout"
RUN = "Run the pipeline"
TOKEN = "ghs_fake_token_for_tests_0123456789"

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("github-action")]


@pytest.fixture(scope="module")
def runner_temp(tmp_path_factory) -> Path:
    """RUNNER_TEMP with the Action's venv, made by the Action's own install step."""
    temp = tmp_path_factory.mktemp("runner-temp")
    env = {**os.environ, "RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(temp),
           "GITHUB_STEP_SUMMARY": str(temp / "summary.md")}
    result = run_action(ROOT, {}, env, TOKEN, steps_to_run=(INSTALL,))
    assert result.returncode == 0, result.stdout[-3000:]
    assert (temp / "soopervisor-venv" / "bin" / "soopervisor").exists()
    return temp


def checkout(tmp_path: Path, files: dict | None = None) -> tuple[Path, Path, str]:
    """An origin (bare) and a runner's checkout of it, as actions/checkout leaves it."""
    src = make_project(tmp_path / "src", files)
    sha = git(src, "rev-parse", "HEAD").strip()
    origin = tmp_path / "proj.git"  # named like GitHub's: the project is named after origin's repository
    git(tmp_path, "clone", "-q", "--bare", str(src), str(origin))
    # GitHub serves any reachable commit by SHA; a bare repository does so when told
    git(origin, "config", "uploadpack.allowReachableSHA1InWant", "true")
    workspace = tmp_path / "work" / "proj"  # like /home/runner/work/REPO/REPO
    workspace.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", str(origin), str(workspace))
    return origin, workspace, sha


def runner_env(tmp_path: Path, runner_temp: Path, workspace: Path, event: str, payload: dict,
               sha: str, api_url: str = "http://127.0.0.1:9/api") -> dict[str, str]:
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(payload))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "AWS_"))}
    env.update(GITHUB_ACTIONS="true", CI="true", GITHUB_EVENT_NAME=event, GITHUB_EVENT_PATH=str(event_path),
               GITHUB_WORKSPACE=str(workspace), GITHUB_REPOSITORY="octo/proj", GITHUB_SHA=sha,
               GITHUB_REF="refs/heads/main", GITHUB_SERVER_URL="https://github.example",
               GITHUB_RUN_ID="4242", GITHUB_API_URL=api_url, RUNNER_TEMP=str(runner_temp),
               RUNNER_ENVIRONMENT="self-hosted", GITHUB_STEP_SUMMARY=str(tmp_path / "step_summary.md"))
    return env


def the_set(storage: Path, commit: str) -> Path:
    """The one artifact set stored for ``commit`` (schema 2: <project>/<commit>/<run_id>/)."""
    (manifest,) = (storage / "proj" / commit).glob("*/manifest.json")
    return manifest.parent


def push_payload(sha: str) -> dict:
    push = dict(next(p for p in examples("push") if p["ref"].startswith("refs/heads/") and not p["deleted"]))
    push.update(after=sha, ref="refs/heads/main")
    return push


def test_push_runs_the_sample_and_reports_in_summary_and_outputs(tmp_path, engine, runner_temp):
    _, workspace, sha = checkout(tmp_path)
    storage = tmp_path / "storage"
    env = runner_env(tmp_path, runner_temp, workspace, "push", push_payload(sha), sha)
    result = run_action(ROOT, {"storage": str(storage)}, env, TOKEN, steps_to_run=(RUN,))
    assert result.returncode == 0, result.stdout[-4000:]
    stored = the_set(storage, sha)
    assert result.outputs == {"status": "succeeded", "commit": sha, "location": str(stored)}
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["commit"] == sha and manifest["mode"] == "sample" and manifest["status"] == "succeeded"
    # env.yaml says sample: false; the sample run set it to true: 3 rows, not 10
    assert (stored / "files" / "output" / "data.csv").read_text().splitlines()[1:] == ["0", "1", "2"]
    summary = result.summary
    assert "### ✅ soopervisor sample run succeeded" in summary
    assert f"`{sha[:12]}`" in summary and "push to `refs/heads/main`" in summary
    assert "| `output/data.csv` |" in summary
    # --run: this run's set, whatever else the commit holds
    assert f"soopervisor artifacts download {sha[:12]} --run {stored.name} --project proj --storage {storage}" in summary
    assert "[logs](https://github.example/octo/proj/actions/runs/4242)" in summary
    assert "::group::sample run of" in result.stdout  # the live log, folded


def test_an_invalid_project_reports_validation_in_the_summary_and_fails(tmp_path, engine, runner_temp):
    files = dict(VALID, **{"pipeline.yaml": "tasks: [\n"})
    _, workspace, sha = checkout(tmp_path, files)
    env = runner_env(tmp_path, runner_temp, workspace, "push", push_payload(sha), sha)
    result = run_action(ROOT, {"storage": str(tmp_path / "storage")}, env, TOKEN, steps_to_run=(RUN,))
    assert result.returncode == 2
    assert result.outputs["status"] == "invalid"
    assert "did not start: the project is invalid" in result.summary
    assert "**Validation report**" in result.summary and "pipeline.yaml" in result.summary
    assert "Traceback" not in result.stdout
    assert not (tmp_path / "storage").exists()


def test_missing_storage_secrets_fail_before_any_work_naming_them(tmp_path, runner_temp):
    _, workspace, sha = checkout(tmp_path)
    env = runner_env(tmp_path, runner_temp, workspace, "push", push_payload(sha), sha)
    env["AWS_ACCESS_KEY_ID"] = ""  # what GitHub passes for a secret that is not set
    result = run_action(ROOT, {"storage": "s3://bucket/prefix"}, env, TOKEN, steps_to_run=(RUN,))
    assert result.returncode == 2
    assert "::error title=missing storage secret::" in result.stdout
    assert "AWS_ACCESS_KEY_ID" in result.stdout and "AWS_SECRET_ACCESS_KEY" in result.stdout
    assert "gh secret set AWS_ACCESS_KEY_ID" in result.summary
    assert "::group::" not in result.stdout  # no pipeline work started
    assert result.outputs["status"] == "error"


def test_secrets_are_masked_for_the_runner_and_redacted_from_the_log(tmp_path, engine, runner_temp):
    from tests.projects import function_task

    _, workspace, sha = checkout(tmp_path, function_task("print('token is', os.environ['API_KEY'])"))
    env = runner_env(tmp_path, runner_temp, workspace, "push", push_payload(sha), sha)
    env["API_KEY"] = "s3cr3t-value-for-the-test"
    result = run_action(ROOT, {"storage": str(tmp_path / "storage"), "secrets": "API_KEY"}, env, TOKEN,
                        steps_to_run=(RUN,))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "::add-mask::s3cr3t-value-for-the-test" in result.stdout
    printed = result.stdout.replace("::add-mask::s3cr3t-value-for-the-test", "")
    assert "s3cr3t-value-for-the-test" not in printed and "token is ***" in printed
    assert "s3cr3t" not in result.summary


def test_outside_a_runner_it_says_what_it_is_for(tmp_path):
    from tests.conftest import cli

    env = {k: "" for k in os.environ if k.startswith("GITHUB_")}
    proc = cli("github", "run", env={**env, "GITHUB_ACTIONS": ""}, check=2)
    assert "runs as a step of a GitHub Actions job" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", b"\xff\xfe"], ids=["empty", "broken", "list", "binary"])
def test_a_damaged_event_file_is_a_usage_error_not_a_crash(tmp_path, content):
    from tests.conftest import cli

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_"))}
    event = tmp_path / "event.json"
    event.write_bytes(content if isinstance(content, bytes) else content.encode())
    env.update(GITHUB_ACTIONS="true", GITHUB_EVENT_NAME="push", GITHUB_EVENT_PATH=str(event),
               GITHUB_WORKSPACE=str(tmp_path), SOOPERVISOR_HOME=str(tmp_path / "home"))
    proc = cli("github", "run", env=env, check=2)
    said = proc.stdout + proc.stderr  # the Action reports on the runner's channel (stdout)
    assert f"the event file GITHUB_EVENT_PATH={event}" in said
    assert "internal error" not in said and "Traceback" not in said


# -- pull-request comments -------------------------------------------------------
@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN, prefix="/api/v3") as fake:  # served as GitHub Enterprise Server serves it
        fake.add_repo(REPO)
        yield fake


def pull_request(tmp_path: Path, origin: Path, github: FakeGitHub, number: int = 7, **pull) -> str:
    """A branch with a change, pushed as GitHub keeps a pull request's head (refs/pull/N/head)."""
    src = tmp_path / "src" / "proj"
    git(src, "checkout", "-q", "-B", f"feature-{number}")
    write(src, {"tasks/make_data.py": MAKE_DATA + f"\n# change for #{number}\n"})
    head = commit_all(src, f"change {number}")
    git(src, "push", "-q", str(origin), f"HEAD:refs/pull/{number}/head")
    github.add_pull(head_sha=head, number=number, **pull)
    return head


def comment_payload(github: FakeGitHub, number: int, body: str, user: str = "alice",
                    association: str = "COLLABORATOR") -> dict:
    """A real issue_comment payload for a comment that the fake GitHub holds too."""
    comment_id = github.add_comment(number, body, user=user, association=association)
    payload = issue_comment_on_pull_request()
    payload["issue"]["number"] = number
    payload["comment"].update(id=comment_id, body=body, author_association=association)
    payload["comment"]["user"]["login"] = user
    payload["repository"]["full_name"] = REPO
    return payload


def comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha, name="1", **inputs):
    case = tmp_path / f"case-{name}"
    case.mkdir()
    env = runner_env(case, runner_temp, workspace, "issue_comment", payload, main_sha, api_url=github.api_url)
    with_ = {"storage": str(tmp_path / "storage"), **inputs}
    return run_action(ROOT, with_, env, TOKEN, steps_to_run=(RUN,))


def reports(github: FakeGitHub, number: int):
    return [c for c in github.comments_on(number) if MARKER in c.body]


def test_a_comment_runs_the_prs_head_and_keeps_one_report_comment(tmp_path, engine, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    head = pull_request(tmp_path, origin, github)

    payload = comment_payload(github, 7, "/soopervisor run")
    first = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert first.returncode == 0, first.stdout[-4000:]
    assert first.outputs["status"] == "succeeded" and first.outputs["commit"] == head != main_sha
    manifest = json.loads((the_set(tmp_path / "storage", head) / "manifest.json").read_text())
    assert manifest["mode"] == "full" and manifest["commit"] == head
    assert [c for c, _ in github.reactions(payload["comment"]["id"])] == ["rocket", "hooray"]
    (report,) = reports(github, 7)
    assert "### ✅ soopervisor full run succeeded" in report.body and f"`{head[:12]}`" in report.body
    assert "| `output/data.csv` |" in report.body and "@alice" in report.body
    assert report.user == "github-actions[bot]"
    assert "### ✅ soopervisor full run succeeded" in first.summary

    # a second command: the same report comment is updated, never a second one
    again = comment_payload(github, 7, "/soopervisor run --sample", user="bob", association="OWNER")
    second = comment_run(tmp_path, runner_temp, workspace, github, again, main_sha, name="2")
    assert second.returncode == 0, second.stdout[-4000:]
    (updated,) = reports(github, 7)
    assert updated.id == report.id and "sample run succeeded" in updated.body and "@bob" in updated.body
    assert all(call.startswith("GET /repos/") or "/issues/" in call for call in github.calls())


def test_the_head_is_pinned_when_the_run_starts_and_a_move_is_reported(tmp_path, engine, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "admin")
    head = pull_request(tmp_path, origin, github)
    payload = comment_payload(github, 7, "/soopervisor run --sample")
    comment_id = payload["comment"]["id"]

    def push_while_running():  # someone pushes once the run has started (the rocket reaction)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not github.reactions(comment_id):
            time.sleep(0.05)
        github.move_head(7, "e" * 40)

    pusher = threading.Thread(target=push_while_running)
    pusher.start()
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    pusher.join()
    assert result.returncode == 0, result.stdout[-4000:]
    assert result.outputs["commit"] == head
    assert (the_set(tmp_path / "storage", head) / "manifest.json").exists()
    (report,) = reports(github, 7)
    assert f"head moved to `{'e' * 12}` during the run" in report.body and f"`{head[:12]}`" in report.body


def test_an_invalid_project_is_reported_in_the_comment(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    src = tmp_path / "src" / "proj"
    git(src, "checkout", "-q", "-b", "broken")
    write(src, {"pipeline.yaml": "tasks: [\n"})
    head = commit_all(src, "break it")
    git(src, "push", "-q", str(origin), "HEAD:refs/pull/9/head")
    github.add_pull(head_sha=head, number=9)
    github.set_role("alice", "write")
    payload = comment_payload(github, 9, "/soopervisor run")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 2 and "Traceback" not in result.stdout
    (report,) = reports(github, 9)
    assert "the project is invalid" in report.body and "**Validation report**" in report.body
    assert [c for c, _ in github.reactions(payload["comment"]["id"])] == ["rocket", "confused"]


def test_a_fork_is_not_run_and_the_comment_says_why(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    github.add_repo("mallory/proj", fork=True)
    pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj", user="mallory")
    payload = comment_payload(github, 8, "/soopervisor run")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 0 and result.outputs["status"] == "skipped"
    (report,) = reports(github, 8)
    assert "fork mallory/proj" in report.body and "allow-forks" in report.body
    assert "::group::" not in result.stdout and not (tmp_path / "storage").exists()
    assert git(workspace, "rev-parse", "HEAD").strip() == main_sha  # the fork's code was not even checked out


@pytest.mark.parametrize("association, role", [("COLLABORATOR", "read"), ("MEMBER", "triage"), ("CONTRIBUTOR", None)])
def test_someone_without_write_access_starts_nothing(tmp_path, runner_temp, github, association, role):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("carol", role)
    pull_request(tmp_path, origin, github)
    payload = comment_payload(github, 7, "/soopervisor run", user="carol", association=association)
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 0 and result.outputs["status"] == "skipped"
    assert "carol" in result.stdout and (role or association) in result.stdout  # the log says why
    assert not github.reactions(payload["comment"]["id"]) and not reports(github, 7)
    assert not any(call.startswith("POST") for call in github.calls())


def test_an_unknown_sub_command_gets_the_usage_as_reply(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    pull_request(tmp_path, origin, github)
    payload = comment_payload(github, 7, "/soopervisor deploy --now", association="OWNER")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 0 and result.outputs["status"] == "skipped"
    replies = [c for c in github.comments_on(7) if c.user == "github-actions[bot]"]
    assert len(replies) == 1 and "Unknown command" in replies[0].body and USAGE.splitlines()[0] in replies[0].body


def test_the_rate_limit_is_waited_out(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    github.add_repo("mallory/proj", fork=True)
    pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj")
    payload = comment_payload(github, 8, "/soopervisor run")
    github.limit_next(1, reset_in=1)
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "GitHub API rate limit reached; waiting" in result.stdout
    assert len(reports(github, 8)) == 1  # then it went on (to the fork refusal)


def test_an_exhausted_rate_limit_is_a_clear_failure(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    pull_request(tmp_path, origin, github)
    payload = comment_payload(github, 7, "/soopervisor run", association="MEMBER")
    github.limit_next(10, reset_in=3600)
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 3
    assert "::error" in result.stdout and "rate limit exhausted (resets at" in result.stdout
    assert "Traceback" not in result.stdout, result.stdout
    # the token reaches the runner only to be masked
    assert TOKEN not in result.stdout.replace(f"::add-mask::{TOKEN}", "")


# -- the commit a commenter approved is the commit that runs ---------------------------------------
def bot_replies(github: FakeGitHub, number: int):
    return [c for c in github.comments_on(number) if c.user == "github-actions[bot]" and MARKER not in c.body]


def test_a_fork_without_a_named_commit_is_refused_with_a_reply(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    head = pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj", user="mallory")
    payload = comment_payload(github, 8, "/soopervisor run")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha, **{"allow-forks": "true"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.outputs["status"] == "skipped" and result.outputs["commit"] == head
    (reply,) = bot_replies(github, 8)
    assert reply.body.startswith("@alice ") and "must name the head commit" in reply.body
    assert f"/soopervisor run {head[:12]}" in reply.body
    assert [c for c, _ in github.reactions(payload["comment"]["id"])] == ["confused"]
    assert "::group::" not in result.stdout and not (tmp_path / "storage").exists()
    assert git(workspace, "rev-parse", "HEAD").strip() == main_sha  # the fork's code was not checked out
    assert not reports(github, 8)


def test_a_head_pushed_after_the_comment_is_refused_with_a_reply(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    approved = pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj", user="mallory")
    payload = comment_payload(github, 8, f"/soopervisor run {approved[:12]}")
    # mallory pushes between the comment and the job's start
    src = tmp_path / "src" / "proj"
    write(src, {"tasks/make_data.py": MAKE_DATA + "\nimport os; os.environ.get('AWS_SECRET_ACCESS_KEY')\n"})
    pushed = commit_all(src, "not what alice reviewed")
    git(src, "push", "-q", "-f", str(origin), "HEAD:refs/pull/8/head")
    github.move_head(8, pushed)
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha, **{"allow-forks": "true"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.outputs["status"] == "skipped" and result.outputs["commit"] == pushed
    (reply,) = bot_replies(github, 8)
    assert f"`{pushed[:12]}`, not `{approved[:12]}`" in reply.body and "Nothing was run" in reply.body
    assert [c for c, _ in github.reactions(payload["comment"]["id"])] == ["confused"]
    assert "::group::" not in result.stdout and not (tmp_path / "storage").exists()
    assert git(workspace, "rev-parse", "HEAD").strip() == main_sha
    assert "Nothing was run" in result.summary


def test_a_fork_named_by_a_short_prefix_is_refused(tmp_path, runner_temp, github):
    # 7 hex digits of a commit of one's own can be matched in minutes: forks need 12
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    head = pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj", user="mallory")
    payload = comment_payload(github, 8, f"/soopervisor run {head[:7]}")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha, **{"allow-forks": "true"})
    assert result.returncode == 0 and result.outputs["status"] == "skipped"
    (reply,) = bot_replies(github, 8)
    assert "at least 12 hex digits" in reply.body and f"/soopervisor run {head[:12]}" in reply.body
    assert not (tmp_path / "storage").exists()
    assert git(workspace, "rev-parse", "HEAD").strip() == main_sha


def test_a_named_commit_is_checked_on_the_repository_s_own_branches_too(tmp_path, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    head = pull_request(tmp_path, origin, github)
    payload = comment_payload(github, 7, "/soopervisor run --sample 0123456")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha)
    assert result.returncode == 0 and result.outputs["status"] == "skipped"
    (reply,) = bot_replies(github, 7)
    assert f"`{head[:12]}`, not `0123456`" in reply.body
    assert not (tmp_path / "storage").exists()


def test_a_fork_whose_head_is_the_named_commit_runs_it(tmp_path, engine, runner_temp, github):
    origin, workspace, main_sha = checkout(tmp_path)
    github.set_role("alice", "write")
    head = pull_request(tmp_path, origin, github, number=8, head_repo="mallory/proj", user="mallory")
    payload = comment_payload(github, 8, f"/soopervisor run --sample {head[:12].upper()}")
    result = comment_run(tmp_path, runner_temp, workspace, github, payload, main_sha, **{"allow-forks": "true"})
    assert result.returncode == 0, result.stdout[-4000:]
    assert result.outputs["status"] == "succeeded" and result.outputs["commit"] == head
    assert f"#8's head is {head[:12]}, the commit @alice named; pinned for this run" in result.stdout
    assert [c for c, _ in github.reactions(payload["comment"]["id"])] == ["rocket", "hooray"]
    assert not bot_replies(github, 8)

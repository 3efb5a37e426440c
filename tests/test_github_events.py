"""Trigger decisions against webhook payloads GitHub wrote (npm @octokit/webhooks-examples).

The package has issue_comment examples on issues only; a comment on a pull
request is the same payload whose ``issue`` carries a ``pull_request`` object
(as GitHub documents), so those cases add that one key to a real payload.
"""
from __future__ import annotations

import copy

import pytest

from soopervisor.github.events import USAGE, decide
from tests.github_payloads import examples

PR_LINK = {"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
           "html_url": "https://github.com/Codertocat/Hello-World/pull/2",
           "diff_url": "https://github.com/Codertocat/Hello-World/pull/2.diff",
           "patch_url": "https://github.com/Codertocat/Hello-World/pull/2.patch", "merged_at": None}


def comment(action: str = "created", body: str = "/soopervisor run", association: str | None = None,
            on_pr: bool = True) -> dict:
    payload = copy.deepcopy(next(p for p in examples("issue_comment") if p["action"] == action))
    payload["comment"]["body"] = body
    if association:
        payload["comment"]["author_association"] = association
    if on_pr:
        payload["issue"]["pull_request"] = PR_LINK
    else:
        payload["issue"].pop("pull_request", None)
    return payload


def test_push_to_a_branch_is_a_sample_run_of_the_pushed_commit():
    push = next(p for p in examples("push") if p["ref"].startswith("refs/heads/") and not p["deleted"])
    t = decide("push", push, "auto", sha="f" * 40)
    assert t.run and t.mode == "sample" and t.commit == push["after"] and not t.from_comment


def test_a_deleted_ref_runs_nothing():
    deleted = next(p for p in examples("push") if p["deleted"])
    t = decide("push", deleted, "auto", sha="0" * 40)
    assert not t.run and "deleted" in t.why


def test_mode_input_forces_push_runs():
    push = next(p for p in examples("push") if not p["deleted"])
    assert decide("push", push, "full").mode == "full"


@pytest.mark.parametrize("asked, expected", [("full", "full"), ("sample", "sample"), (None, "sample")])
def test_workflow_dispatch_follows_its_choice(asked, expected):
    payload = copy.deepcopy(examples("workflow_dispatch")[0])
    payload["inputs"] = {"mode": asked} if asked else None
    t = decide("workflow_dispatch", payload, "auto", sha="a" * 40)
    assert t.run and t.mode == expected and t.commit == "a" * 40


def test_a_run_comment_on_a_pull_request_by_the_owner_is_a_full_run_of_that_pr():
    payload = comment()
    t = decide("issue_comment", payload)
    assert t.run and t.mode == "full" and t.commit is None  # the head comes from the API
    assert t.pr_number == payload["issue"]["number"] and t.comment_id == payload["comment"]["id"]
    assert t.commenter == payload["comment"]["user"]["login"] and t.association == "OWNER"


def test_run_sample_is_a_sample_run_whatever_the_mode_input():
    assert decide("issue_comment", comment(body="/soopervisor run --sample"), "full").mode == "sample"


@pytest.mark.parametrize("association", ["OWNER", "MEMBER", "COLLABORATOR"])
def test_associations_that_may_write_pass_to_the_permission_check(association):
    t = decide("issue_comment", comment(association=association))
    assert t.run and t.association == association


@pytest.mark.parametrize("association", ["CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER", "MANNEQUIN", "NONE"])
def test_other_associations_run_nothing_and_say_why(association):
    t = decide("issue_comment", comment(association=association))
    assert not t.run and association in t.why and t.reply is None


def test_a_comment_on_a_plain_issue_runs_nothing():
    t = decide("issue_comment", comment(on_pr=False))
    assert not t.run and "not a pull request" in t.why


@pytest.mark.parametrize("action", ["edited", "deleted"])
def test_edited_or_deleted_comments_run_nothing(action):
    t = decide("issue_comment", comment(action=action))
    assert not t.run and action in t.why


@pytest.mark.parametrize("body", ["/soopervisor deploy", "/soopervisor run --fast", "/soopervisor run now"])
def test_an_unknown_sub_command_gets_the_usage_as_reply(body):
    t = decide("issue_comment", comment(body=body))
    assert not t.run and t.reply and USAGE in t.reply and "Unknown command" in t.reply


def test_help_replies_with_usage():
    t = decide("issue_comment", comment(body="/soopervisor help"))
    assert not t.run and t.reply == USAGE


@pytest.mark.parametrize("body", ["You are totally right!", "please /soopervisor run", "/soopervisorrun", ""])
def test_ordinary_comments_are_not_commands(body):
    t = decide("issue_comment", comment(body=body))
    assert not t.run and t.reply is None and "does not start with" in t.why


def test_the_command_is_the_first_non_empty_line():
    t = decide("issue_comment", comment(body="\n  /soopervisor run --sample\nthanks!"))
    assert t.run and t.mode == "sample"


def test_a_bot_comment_never_runs():
    payload = comment()
    payload["comment"]["user"].update(login="github-actions[bot]", type="Bot")
    assert not decide("issue_comment", payload).run


def test_an_unknown_mode_input_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        decide("push", examples("push")[0], "everything")


# -- the commit a commenter approved ---------------------------------------------------
@pytest.mark.parametrize("body, mode, approved", [
    ("/soopervisor run a1b2c3d", "full", "a1b2c3d"),
    ("/soopervisor run A1B2C3D4E5", "full", "a1b2c3d4e5"),
    ("/soopervisor run --sample a1b2c3d", "sample", "a1b2c3d"),
    ("/soopervisor run a1b2c3d --sample", "sample", "a1b2c3d"),
    ("/soopervisor run " + "f" * 40, "full", "f" * 40),
    ("/soopervisor run --full", "full", None),
    ("/soopervisor run", "full", None),
])
def test_a_run_comment_may_name_the_head_commit(body, mode, approved):
    t = decide("issue_comment", comment(body=body))
    assert t.run and t.mode == mode and t.approved == approved
    assert t.commit is None  # still read from the API when the job starts, then compared


@pytest.mark.parametrize("body", [
    "/soopervisor run a1b2c3",          # 6 hex digits: too short to name a commit
    "/soopervisor run a1b2c3g",         # not hex
    "/soopervisor run " + "f" * 41,     # longer than a SHA-1
    "/soopervisor run a1b2c3d b2c3d4e",  # two commits
    "/soopervisor run --sample --full",
    "/soopervisor run a1b2c3d now",
])
def test_a_malformed_commit_gets_the_usage(body):
    t = decide("issue_comment", comment(body=body))
    assert not t.run and t.reply and USAGE in t.reply and "Unknown command" in t.reply


def test_the_usage_explains_the_commit():
    assert "/soopervisor run [SHA]" in USAGE and "7 or more hex digits" in USAGE and "forks" in USAGE.lower()

"""What a GitHub event asks for: run or not, which mode, at which commit, and why.

Pure functions of the event payload and the Action's inputs, so every
decision is tested against payloads GitHub wrote. What needs the API (the
commenter's permission, the pull request's head) is decided in ``action.py``.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

MODES = ("sample", "full", "auto")
WRITE_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")
COMMAND = "/soopervisor"

#: a commit named in a comment: 7 to 40 hex digits, as GitHub shows and abbreviates them
_SHA = re.compile(r"[0-9a-fA-F]{7,40}")

USAGE = """\
Usage, in a comment on a pull request (by someone with write access):

    /soopervisor run [SHA]            full run of the pull request's head
    /soopervisor run --sample [SHA]   sample run (env.yaml's `sample` set to true)
    /soopervisor help                 this text

SHA is the head commit you reviewed (7 or more hex digits, e.g. `a1b2c3d`): the
run starts only if it is still the pull request's head, so a push made after
your comment never runs unreviewed. Pull requests from forks need it, with
at least 12 digits (a shorter prefix can be forged). The
commit stays pinned for the whole run; a new command for the same pull
request supersedes a running one.
"""


@dataclass(frozen=True)
class Trigger:
    """The decision for one event. ``run`` False means: log ``why``, reply ``reply`` if set, exit 0."""

    run: bool
    why: str
    mode: str = "sample"
    commit: str | None = None        # None for a comment: the pull request's head is fetched
    pr_number: int | None = None
    comment_id: int | None = None
    commenter: str | None = None
    association: str | None = None
    reply: str | None = None         # a comment to post (usage for an unknown sub-command)
    approved: str | None = None      # the head commit the comment named (lowercase hex prefix), if any

    @property
    def from_comment(self) -> bool:
        return self.comment_id is not None


def decide(event_name: str, payload: dict, mode: str = "auto", sha: str | None = None) -> Trigger:
    """The decision for ``event_name`` with its ``payload`` (the file at GITHUB_EVENT_PATH).

    ``mode`` is the Action's input: ``auto`` picks sample for a push, the
    workflow_dispatch choice, and full for a comment (``--sample`` makes it a
    sample); ``sample``/``full`` force it for every event but a comment, whose
    own words are the explicit request. ``sha`` is GITHUB_SHA.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if event_name == "issue_comment":
        return _comment(payload)
    if event_name == "push":
        if payload.get("deleted"):
            return Trigger(False, f"push deleted {payload.get('ref')}: nothing to run")
        commit = payload.get("after") or sha
        chosen = "sample" if mode == "auto" else mode
        return Trigger(True, f"push to {payload.get('ref')}: {chosen} run of {_short(commit)}", chosen, commit)
    if event_name == "workflow_dispatch":
        asked = (payload.get("inputs") or {}).get("mode") or "auto"
        if asked not in MODES:
            return Trigger(False, f"workflow_dispatch input mode={asked!r} is not one of sample, full")
        chosen = asked if asked != "auto" else ("sample" if mode == "auto" else mode)
        return Trigger(True, f"manual run: {chosen} run of {_short(sha)}", chosen, sha)
    chosen = "sample" if mode == "auto" else mode
    return Trigger(True, f"{event_name}: {chosen} run of {_short(sha)}", chosen, sha)


def _comment(payload: dict) -> Trigger:
    comment = payload.get("comment") or {}
    issue = payload.get("issue") or {}
    body = comment.get("body") or ""
    words = _command_words(body)
    if words is None:
        return Trigger(False, f"comment does not start with {COMMAND}: nothing to do")
    action = payload.get("action")
    if action != "created":
        return Trigger(False, f"comment was {action}, not created: only a new comment starts a run")
    if not issue.get("pull_request"):
        return Trigger(False, f"#{issue.get('number')} is an issue, not a pull request: nothing to run")
    user = (comment.get("user") or {}).get("login", "?")
    association = comment.get("author_association") or "NONE"
    common = {"pr_number": issue.get("number"), "comment_id": comment.get("id"),
              "commenter": user, "association": association}
    if user.endswith("[bot]") or (comment.get("user") or {}).get("type") == "Bot":
        return Trigger(False, f"comment by the bot {user}: ignored", **common)
    if association not in WRITE_ASSOCIATIONS:
        return Trigger(False, f"{user}'s association is {association}: only OWNER, MEMBER or "
                              "COLLABORATOR with write access can start a run", **common)
    run = _run_words(words)
    if run is not None:
        mode, approved = run
        at = f" at {approved}" if approved else ""
        return Trigger(True, f"{user} asked for a {mode} run of #{issue.get('number')}{at}", mode,
                       approved=approved, **common)
    if words in ([], ["help"], ["--help"]):
        return Trigger(False, f"{user} asked for help", reply=USAGE, **common)
    return Trigger(False, f"unknown command {COMMAND} {' '.join(words)!r}: replied with usage",
                   reply=f"Unknown command `{_code(COMMAND + ' ' + ' '.join(words))}`.\n\n{USAGE}", **common)


def _run_words(words: list[str]) -> tuple[str, str | None] | None:
    """(mode, approved SHA or None) for ``run [--sample|--full] [SHA]`` in any order; None for anything else."""
    if not words or words[0] != "run":
        return None
    modes = [w[2:] for w in words[1:] if w in ("--sample", "--full")]
    shas = [w.lower() for w in words[1:] if _SHA.fullmatch(w)]
    if len(modes) > 1 or len(shas) > 1 or len(modes) + len(shas) != len(words) - 1:
        return None
    return (modes[0] if modes else "full"), (shas[0] if shas else None)


def _command_words(body: str) -> list[str] | None:
    """The words after ``/soopervisor`` on the comment's first non-empty line; None when not a command."""
    for line in body.splitlines():
        if line.strip():
            first = line.strip()
            break
    else:
        return None
    if first != COMMAND and not first.startswith(COMMAND + " "):
        return None
    try:
        return shlex.split(first[len(COMMAND):])
    except ValueError:  # an unbalanced quote: still a command, just an unknown one
        return first[len(COMMAND):].split()


def _short(sha: str | None) -> str:
    return (sha or "HEAD")[:7]


def _code(text: str) -> str:
    return text.replace("`", "'")

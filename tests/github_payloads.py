"""Webhook payloads GitHub wrote, from the npm package @octokit/webhooks-examples.

scripts/setup installs it under tests/npm (``npm ci --prefix tests/npm``). Its
``api.github.com/index.json`` is a list of events, each with ``name``,
``actions`` and ``examples`` (payloads as delivered). Every function returns
deep copies: a test may change what it gets.

The package's ``issue_comment`` examples are all on a plain issue (#1 of
Codertocat/Hello-World) and all by the OWNER; :func:`issue_comment_on_pull_request`
puts a real comment payload on a real pull-request issue object (#2 of the same
repository, from the ``issues`` examples), the only combination GitHub's own
examples lack.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

NPM = Path(__file__).resolve().parent / "npm" / "node_modules" / "@octokit"
EXAMPLES = NPM / "webhooks-examples"
TYPES = NPM / "webhooks-types" / "schema.d.ts"

Payload = dict[str, Any]


def _missing(path: Path) -> None:
    pytest.fail(f"the GitHub webhook examples are not installed ({path} is missing); run scripts/setup, "
                "which runs `npm ci --prefix tests/npm`", pytrace=False)


@functools.cache
def _index(platform: str) -> dict[str, dict[str, Any]]:
    path = EXAMPLES / platform / "index.json"
    if not path.is_file():
        _missing(path)
    return {event["name"]: event for event in json.loads(path.read_text())}


def events(platform: str = "api.github.com") -> list[str]:
    """The event names with examples; ``platform`` may be ``ghes-3x`` for GitHub Enterprise Server."""
    return sorted(_index(platform))


def examples(event: str, platform: str = "api.github.com") -> list[Payload]:
    """Every example payload of ``event`` (e.g. ``"issue_comment"``, ``"push"``)."""
    index = _index(platform)
    if event not in index:
        raise KeyError(f"no {event!r} examples; the package has {sorted(index)}")
    return copy.deepcopy(index[event]["examples"])


def example(event: str, *, action: str | None = None, where: Callable[[Payload], bool] = lambda p: True,
            platform: str = "api.github.com") -> Payload:
    """The first example of ``event`` with that ``action`` for which ``where(payload)`` holds."""
    found = examples(event, platform)
    for payload in found:
        if (action is None or payload.get("action") == action) and where(payload):
            return payload
    actions = sorted({p.get("action") for p in found if p.get("action")})
    raise LookupError(f"no {event} example matches (action={action!r}); actions present: {actions}")


def push() -> Payload:
    """A push of commits to a branch (not a tag, not a deletion)."""
    return example("push", where=lambda p: p["ref"].startswith("refs/heads/") and not p["deleted"])


def issue_comment_on_issue(action: str = "created") -> Payload:
    """A comment on a plain issue: ``payload["issue"]`` has no ``pull_request``."""
    return example("issue_comment", action=action, where=lambda p: "pull_request" not in p["issue"])


def issue_comment_on_pull_request(action: str = "created") -> Payload:
    """A comment on a pull request: ``payload["issue"]`` carries the ``pull_request`` link.

    The issue object is a real one for a pull request (from the ``issues``
    examples, same repository); the comment's links are pointed at it as
    GitHub does (``…/issues/N`` API URL, ``…/pull/N#issuecomment-ID`` page).
    """
    payload = issue_comment_on_issue(action)
    issue = example("issues", where=lambda p: "pull_request" in p["issue"]
                    and p["repository"]["full_name"] == payload["repository"]["full_name"])["issue"]
    payload["issue"] = issue
    comment = payload["comment"]
    comment["issue_url"] = issue["url"]
    comment["html_url"] = f"{issue['html_url']}#issuecomment-{comment['id']}"
    return payload


def issue_comment_edited(on_pull_request: bool = True) -> Payload:
    """An edited comment; ``payload["changes"]["body"]["from"]`` holds the previous text."""
    find = issue_comment_on_pull_request if on_pull_request else issue_comment_on_issue
    return find("edited")


@functools.cache
def author_associations() -> tuple[str, ...]:
    """Every ``author_association`` value, as @octokit/webhooks-types declares the type."""
    if not TYPES.is_file():
        _missing(TYPES)
    m = re.search(r"export type AuthorAssociation =((?:\s*\|\s*\"[A-Z_]+\")+);", TYPES.read_text())
    assert m, f"no AuthorAssociation type in {TYPES}"
    return tuple(re.findall(r'"([A-Z_]+)"', m.group(1)))


def summary(platform: str = "api.github.com") -> dict[str, Any]:
    """What the package holds, for a person deciding what to test: actions and associations per event."""
    return {name: {"examples": len(event["examples"]),
                   "actions": sorted({p.get("action") for p in event["examples"] if p.get("action")}),
                   "author_associations": sorted(_associations(event["examples"]))}
            for name, event in _index(platform).items()}


def _associations(node: Any) -> set[str]:
    """Every author_association value anywhere in ``node`` (comments, issues, reviews…)."""
    if isinstance(node, list):
        return set().union(*map(_associations, node))
    if not isinstance(node, dict):
        return set()
    own = {node["author_association"]} if isinstance(node.get("author_association"), str) else set()
    return own.union(*map(_associations, node.values()))

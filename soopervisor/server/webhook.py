"""The webhook endpoint: a Git host says "something was pushed", the server polls that repository now.

``POST /soopervisor/api/webhook/{repository}`` takes GitHub's calls (the body
signed with HMAC-SHA256 in ``X-Hub-Signature-256``; Gitea and Forgejo send it
too) and GitLab's (the secret itself in ``X-Gitlab-Token``), checked against the
repository's ``webhook_secret`` in server.yaml, in constant time. It carries no
bearer token: the secret is the credential. A valid call only asks for a poll
of that repository: what runs is what the poller finds at the remote, never
what the payload says (a forged or replayed payload can at most cause a poll).
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Any

from tornado import web

from ..api.base import ApiError, ApiHandler, call
from ..errors import UsageError
from .config import Repository, read_secret

#: the largest body read; GitHub caps its payloads at 25 MB, but the body is only signed, never used,
#: and a push of even thousands of commits is a few MB
MAX_BODY = 5 * 1024**2
_SIGNATURE = "X-Hub-Signature-256"
_GITLAB = "X-Gitlab-Token"
#: bodies up to this size are read (and dropped beyond MAX_BODY) before the 413, larger ones refused unread
_DRAIN = 4 * MAX_BODY


def check_signature(repo: Repository, headers: Any, body: bytes) -> str:
    """Which host signed the call ("github" or "gitlab"); ApiError(401) when nothing valid is there,
    ApiError(503) when the repository's secret cannot be read (the server's problem, said without it)."""
    assert repo.webhook_secret is not None
    try:
        secret = read_secret(repo.webhook_secret)
    except UsageError as e:
        raise ApiError(503, f"the webhook secret of {repo.name} cannot be read", e.hint) from None
    if not secret:
        raise ApiError(503, f"the webhook secret of {repo.name} is empty", "set it to a long random value")
    signature = headers.get(_SIGNATURE)
    if signature is not None:
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace")):
            return "github"
        raise ApiError(401, "the webhook's signature does not match",
                       "the Secret of the webhook on the Git host must be the value of this repository's "
                       "webhook_secret in server.yaml")
    token = headers.get(_GITLAB)
    if token is not None:
        if hmac.compare_digest(secret, token.strip().encode("utf-8", "replace")):
            return "gitlab"
        raise ApiError(401, "the webhook's token does not match",
                       "the Secret token of the webhook in GitLab must be the value of this repository's "
                       "webhook_secret in server.yaml")
    raise ApiError(401, "the webhook call is not signed",
                   f"GitHub signs with {_SIGNATURE} when the webhook has a Secret; GitLab sends {_GITLAB}")


@web.stream_request_body
class WebhookHandler(ApiHandler):
    """``POST /webhook/{repository}``: a signed call polls that repository within a fraction of a second."""

    def authorize(self, scope: str) -> None:
        """No bearer token here: the signature checked in post() is the credential."""

    async def prepare(self) -> None:
        self._body = bytearray()
        self._too_large = False
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > _DRAIN:
            # far too large: answered at once and the connection closed (a client sending "Expect:
            # 100-continue", as curl does, reads the answer; others see the connection reset)
            raise ApiError(413, f"the webhook's body is larger than {MAX_BODY // 1024**2} MiB",
                           "the server reads the payload only to check its signature; send pushes, not archives")
        # a little too large, or chunked: read and dropped (data_received keeps nothing beyond MAX_BODY),
        # so the client reads a clean 413; tornado closes the connection beyond _DRAIN
        self.request.connection.set_max_body_size(_DRAIN)
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > MAX_BODY:
            self._too_large = True
            return
        self._body.extend(chunk)

    async def post(self, repository: str) -> None:
        state = self.settings["soopervisor_state"]
        repo = next((r for r in state.config.repositories if r.name == repository), None)
        # one answer for "not served" and "no secret": a caller learns nothing of what is served
        if repo is None or repo.webhook_secret is None:
            raise ApiError(404, f"no webhook for a repository named {repository!r} on this server",
                           "set webhook_secret for the repository in server.yaml and use its name in the URL: "
                           "/soopervisor/api/webhook/NAME")
        if self._too_large:
            raise ApiError(413, f"the webhook's body is larger than {MAX_BODY // 1024**2} MiB",
                           "the server reads the payload only to check its signature")
        host = check_signature(repo, self.request.headers, bytes(self._body))
        await call(state.poll_now, repo.name)
        event = self.request.headers.get("X-GitHub-Event") or self.request.headers.get("X-Gitlab-Event")
        self.reply({"repository": repo.name, "polling": True, "host": host, "event": event})

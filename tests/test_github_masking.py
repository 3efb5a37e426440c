"""Credentials known while the Action runs reach the runner as ::add-mask:: before anything prints them."""
from __future__ import annotations

import io

from soopervisor import credentials
from soopervisor.github.action import Runner
from soopervisor.redact import CREDENTIALS


def test_a_credential_registered_later_is_masked_at_once_line_by_line():
    out = io.StringIO()
    runner = Runner({}, out)
    CREDENTIALS.subscribe(runner.mask)
    try:
        # what a backend does when it refreshes an access token mid-run
        credentials.register({"access_token": "ya29.refreshed-token-value", "pem": "-----KEY-----\nline-two-of-key\n"})
        runner.log("uploading with ya29.refreshed-token-value")
    finally:
        CREDENTIALS.unsubscribe(runner.mask)
    lines = out.getvalue().splitlines()
    assert "::add-mask::ya29.refreshed-token-value" in lines
    assert "::add-mask::-----KEY-----" in lines and "::add-mask::line-two-of-key" in lines
    # the mask came before the first line that could have shown it, and that line is redacted too
    assert lines.index("::add-mask::ya29.refreshed-token-value") < lines.index("uploading with ***")


def test_values_known_before_the_runner_subscribed_are_masked_too():
    CREDENTIALS.add("already-known-secret-1")
    out = io.StringIO()
    runner = Runner({}, out)
    CREDENTIALS.subscribe(runner.mask)
    CREDENTIALS.unsubscribe(runner.mask)
    credentials.register("registered-after-unsubscribe")
    text = out.getvalue()
    assert "::add-mask::already-known-secret-1" in text
    assert "registered-after-unsubscribe" not in text


def test_error_commands_escape_newlines_and_mask():
    out = io.StringIO()
    CREDENTIALS.add("pw-in-an-error-123")
    Runner({}, out).error("failed: pw-in-an-error-123\nsecond line 100%")
    assert out.getvalue() == "::error title=soopervisor::failed: ***%0Asecond line 100%25\n"

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


def obeyed(text: str) -> list[str]:
    """The workflow commands a GitHub runner obeys in this output: none between ::stop-commands::T and ::T::."""
    commands, resume = [], None
    for line in text.splitlines():
        if resume is not None:
            if line == f"::{resume}::":
                resume = None
            continue
        if line.startswith("::stop-commands::"):
            resume = line.removeprefix("::stop-commands::")
        elif line.startswith("::"):
            commands.append(line)
    assert resume is None, "commands were never resumed"
    return commands


def test_the_pipelines_output_cannot_issue_workflow_commands():
    out = io.StringIO()
    runner = Runner({}, out)
    CREDENTIALS.subscribe(runner.mask)
    try:
        runner.command("::group::sample run")
        with runner.commands_stopped():
            runner.stream("building\n")
            runner.stream("::error title=pwned::from the pipeline\n")
            runner.stream("::endgroup::\n")
            runner.stream("half a line")  # a command must not be glued to it
            # a token refreshed mid-run is still masked: commands resume for it, then stop again
            credentials.register({"access_token": "ya29.mid-run-token-value"})
            runner.stream("::add-mask::everything\n")
        runner.command("::endgroup::")
    finally:
        CREDENTIALS.unsubscribe(runner.mask)
    text = out.getvalue()
    assert "::error title=pwned::from the pipeline" in text.splitlines()  # shown in the log, not obeyed
    commands = obeyed(text)  # (subscribing first masked the values other tests made known)
    assert commands[commands.index("::group::sample run"):] == [
        "::group::sample run", "::add-mask::ya29.mid-run-token-value", "::endgroup::"]
    tokens = [line.removeprefix("::stop-commands::") for line in text.splitlines() if line.startswith("::stop-")]
    assert len(tokens) == 2 and len(set(tokens)) == 2 and all(len(t) == 32 for t in tokens)
    assert "half a line\n::" in text

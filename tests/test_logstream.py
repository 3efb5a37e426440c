from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soopervisor.logstream import MAX_LINE, LogStream
from soopervisor.redact import Redactor


def collect(secrets=(), chunks=()):
    lines: list[str] = []
    log = LogStream(Redactor(secrets), [lines.append])
    for c in chunks:
        log.write(c)
    log.close()
    return lines, log


def test_utf8_split_across_chunks_and_invalid_bytes():
    data = "héllo wörld\n".encode()
    lines, _ = collect(chunks=[data[:2], data[2:3], data[3:], b"bad \xff\xfe\n"])
    assert lines == ["héllo wörld\n", "bad \ufffd\ufffd\n"]


def test_secret_split_across_chunks_and_lines_emitted_whole():
    lines, _ = collect(["hunter2"], [b"pass=hun", b"ter2 ok\nnext", b" line"])
    assert lines == ["pass=*** ok\n", "next line\n"]


def test_long_line_comes_in_bounded_pieces():
    lines, _ = collect(chunks=[b"x" * (MAX_LINE * 2 + 10), b"\n"])
    assert [len(line) for line in lines] == [MAX_LINE + 1, MAX_LINE + 1, 11]
    assert "".join(line.rstrip("\n") for line in lines) == "x" * (MAX_LINE * 2 + 10)


def test_stage_and_failed_task_are_noticed():
    text = (
        "==> soopervisor: build pipeline\n"
        "ploomber.exceptions.TaskBuildError: Error when executing task 'clean'. Partially executed\n"
        "!!! soopervisor: build pipeline failed with exit code 1\n"
    )
    _, log = collect(chunks=[text.encode()])
    assert log.stage == "build pipeline"
    assert log.failed_task == "clean"
    assert log.failed_stage == "build pipeline"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab\nç€", max_size=60), st.lists(st.integers(0, 80), max_size=6))
def test_lines_do_not_depend_on_chunking(text, cuts):
    data = text.encode()
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[i:j] for i, j in zip([0, *points], [*points, len(data)])]
    whole, _ = collect(["ab"], [data])
    split, _ = collect(["ab"], chunks)
    assert split == whole
    assert "ab" not in "".join(split)


def test_a_secret_that_is_not_utf8_is_masked_before_decoding():
    # the bytes decide: a\xfeb is not the secret, though both decode to a\ufffdb
    lines, _ = collect([b"a\xffb"], [b"x=a\xff", b"b y=a\xfeb\n"])
    assert lines == ["x=*** y=a\ufffdb\n"]


def test_a_multi_line_key_is_masked_across_lines_and_chunks():
    key = b"-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----"
    data = b"key:\n" + key + b"\ndone\n"
    for i in range(len(data) + 1):
        lines, _ = collect([key], [data[:i], data[i:]])
        assert lines == ["key:\n", "***\n", "done\n"]


FAILING_BUILD = (
    b"==> soopervisor: build pipeline\n"
    b"ploomber.exceptions.TaskBuildError: Error when executing task 'clean'. Partially executed\n"
    b"!!! soopervisor: build pipeline failed with exit code 1\n"
    b"==> soopervisor: collect artifacts\n"
    b"!!! soopervisor: collect artifacts failed with exit code 4\n"
)


def test_the_first_failed_stage_is_kept_not_the_last():
    _, log = collect(chunks=[FAILING_BUILD])
    assert log.failed_stage == "build pipeline"
    assert log.stage == "collect artifacts"
    assert log.failed_task == "clean"


@pytest.mark.parametrize("secret", ["=", "so", "ask", "!", ">", " ", "!!!", "soopervisor", "e", "'", "\xff"])
def test_short_secrets_do_not_break_stage_and_task_detection(secret):
    value = secret.encode("latin-1") if secret == "\xff" else secret
    r = Redactor([value])
    lines, log = collect([value], [FAILING_BUILD[i : i + 7] for i in range(0, len(FAILING_BUILD), 7)])
    assert log.failed_stage == r.redact("build pipeline")
    assert log.stage == r.redact("collect artifacts")
    assert log.failed_task == r.redact("clean")
    # and the log itself still masks it
    assert r.redact_bytes(FAILING_BUILD).decode("utf-8", "replace") == "".join(lines)


def test_a_secret_in_a_stage_or_task_name_is_masked_there_too():
    _, log = collect(["pipeline", "clean"], [FAILING_BUILD])
    assert log.failed_stage == "build ***" and log.stage == "collect artifacts" and log.failed_task == "***"
    # a secret that begins in the name and ends after it masks the part inside
    _, log = collect(["pipeline failed"], [FAILING_BUILD])
    assert log.failed_stage == "build ***"


def test_markers_in_an_over_long_line_are_only_looked_for_at_its_start():
    data = b"x" * (MAX_LINE + 10) + b"==> soopervisor: fake\n==> soopervisor: real\n"
    _, log = collect(chunks=[data[i : i + 1000] for i in range(0, len(data), 1000)])
    assert log.stage == "real"


def test_notes_with_surrogate_escapes_are_written():
    lines: list[str] = []
    log = LogStream(Redactor([b"\xff"]), [lines.append])
    log.note("soopervisor: skipped output/\udcffx")
    log.close()
    assert lines == ["soopervisor: skipped output/***x\n"]


BYTE_ALPHABET = [b"a", b"b", b"\n", b"\xff", b"\xc3", b"\xa9", b"=", b"s", b"o"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(BYTE_ALPHABET[:-3] + [b"="]), min_size=1, max_size=3).map(b"".join),
             min_size=1, max_size=3),
    st.lists(st.sampled_from(BYTE_ALPHABET), max_size=60).map(b"".join),
    st.lists(st.integers(0, 80), max_size=8),
)
def test_bytes_lines_do_not_depend_on_chunking_and_hold_no_secret(secrets, data, cuts):
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[i:j] for i, j in zip([0, *points], [*points, len(data)])]
    whole, _ = collect(secrets, [data])
    split, _ = collect(secrets, chunks)
    assert split == whole
    expected = Redactor(secrets).redact_bytes(data).decode("utf-8", "replace")
    assert "".join(whole) == (expected if expected.endswith("\n") or not expected else expected + "\n")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="=so!ak' e>", min_size=1, max_size=3), min_size=1, max_size=3),
    st.lists(st.integers(0, len(FAILING_BUILD)), max_size=8),
)
def test_detection_does_not_depend_on_secrets_or_chunking(secrets, cuts):
    points = sorted(set(cuts))
    chunks = [FAILING_BUILD[i:j] for i, j in zip([0, *points], [*points, len(FAILING_BUILD)])]
    _, whole = collect(secrets, [FAILING_BUILD])
    _, log = collect(secrets, chunks)
    names = (log.failed_stage, log.stage, log.failed_task)
    assert names == (whole.failed_stage, whole.stage, whole.failed_task)
    assert None not in names
    # redacted, and the same names as without secrets once the masks are taken out
    assert not any(secret in name for secret in secrets for name in names)
    for name, plain in zip(names, ("build pipeline", "collect artifacts", "clean")):
        for kept in name.split("***"):
            assert kept in plain


def test_each_stage_is_told_as_announced_even_when_a_secret_masks_the_marker():
    told = []
    log = LogStream(Redactor(["so"]), on_stage=told.append)
    for i in range(0, len(FAILING_BUILD), 5):
        log.write(FAILING_BUILD[i : i + 5])
    log.close()
    assert told == ["build pipeline", "collect artifacts"]

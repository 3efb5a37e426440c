from __future__ import annotations

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

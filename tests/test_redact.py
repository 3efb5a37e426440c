import os
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soopervisor.redact import MASK, RedactingStream, Redactor


def reference(text, secrets):
    """Brute force: mark covered characters, one mask per maximal marked run."""
    covered = [False] * len(text)
    for secret in secrets:
        if not secret:
            continue
        for i in range(len(text) - len(secret) + 1):
            if text.startswith(secret, i):
                covered[i : i + len(secret)] = [True] * len(secret)
    out = []
    for i, ch in enumerate(text):
        if not covered[i]:
            out.append(ch)
        elif i == 0 or not covered[i - 1]:
            out.append(MASK)
    return "".join(out)


def streamed(redactor, chunks):
    """str chunks fed to the bytes stream as UTF-8; the output decoded again."""
    s = redactor.stream()
    out = b"".join(s.feed(c.encode()) for c in chunks) + s.flush()
    return out.decode()


def split(text, cuts):
    bounds = [0, *sorted(set(cuts)), len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


# examples


@pytest.mark.parametrize(
    "secrets, text, expected",
    [
        (["password"], "x password y password", "x *** y ***"),
        (["password"], "passwordpassword", "***"),
        (["password"], "ppassword", "p***"),
        (["aa"], "aaaa", "***"),
        (["aa"], "baaab", "b***b"),
        (["abc", "bcd"], "xabcdx", "x***x"),
        (["abc", "def"], "abcdef", "***"),  # touching runs merge
        (["abc", "def"], "abc-def", "***-***"),
        (["secret"], "secret at start", "*** at start"),
        (["secret"], "at the end: secret", "at the end: ***"),
        (["secret"], "secret", "***"),
        (
            ["pässwörd", "秘密", "🔑key"],
            "a pässwörd, 秘密 and 🔑key!",
            "a ***, *** and ***!",
        ),
        (
            ["-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----"],
            "key:\n-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----\ndone\n",
            "key:\n***\ndone\n",
        ),
        (["s3cr3t"], "nothing to see here", "nothing to see here"),
        ([], "password", "password"),
    ],
)
def test_redact_examples(secrets, text, expected):
    r = Redactor(secrets)
    assert r.redact(text) == expected
    assert reference(text, secrets) == expected
    # every split into two chunks, and one character at a time
    for i in range(len(text) + 1):
        assert streamed(r, [text[:i], text[i:]]) == expected
    assert streamed(r, list(text)) == expected
    # and every split inside a character's bytes, one byte at a time
    data, s = text.encode(), r.stream()
    assert (b"".join(s.feed(data[i : i + 1]) for i in range(len(data))) + s.flush()).decode() == expected
    assert r.redact_bytes(data).decode() == expected


def test_secret_split_across_chunks():
    s = Redactor(["password"]).stream()
    assert s.feed(b"login pass") == b"login "
    assert s.feed(b"word ok\n") == b"*** ok\n"
    assert s.flush() == b""


def test_held_prefix_that_is_no_secret_is_released():
    s = Redactor(["password"]).stream()
    assert s.feed(b"a pass") == b"a "
    assert s.feed(b"port\n") == b"passport\n"


def test_no_hold_back_for_text_that_cannot_start_a_secret():
    s = Redactor(["topsecret"]).stream()
    assert s.feed(b"hello world\n") == b"hello world\n"
    assert s.feed(b"value=top") == b"value="
    assert s.feed(b"secret and more") == b"*** and more"
    assert s.flush() == b""


def test_mask_is_emitted_as_soon_as_a_secret_is_complete():
    s = Redactor(["topsecret"]).stream()
    assert s.feed(b"token=topsecret") == b"token=***"
    # a repetition right after it joins the same run
    assert s.feed(b"topsecret") == b""
    assert s.feed(b"\n") == b"\n"
    assert s.flush() == b""


def test_flush_releases_a_held_prefix_and_resets():
    s = Redactor(["topsecret"]).stream()
    assert s.feed(b"value=top") == b"value="
    assert s.flush() == b"top"
    assert s.feed(b"secret\n") == b"secret\n"


def test_several_secrets_on_one_line_fed_char_by_char():
    r = Redactor(["alpha", "beta"])
    text = "alpha=1 beta=2 alpha beta alphabeta\n"
    assert streamed(r, list(text)) == "***=1 ***=2 *** *** ***\n"


def test_empty_secret_is_ignored():
    r = Redactor(["", "x"])
    r.add("")
    assert r.secrets == ("x",)
    assert r.redact("a x b") == "a *** b"


def test_duplicates_are_stored_once():
    r = Redactor(["x", "x"])
    r.add("x")
    assert r.secrets == ("x",)


def test_a_secret_that_is_neither_str_nor_bytes_is_rejected_without_showing_it():
    with pytest.raises(TypeError) as e:
        Redactor().add(["hunter2"])
    assert "hunter2" not in str(e.value)
    with pytest.raises(TypeError):
        Redactor().add(12345)


def test_repr_hides_secrets():
    r = Redactor(["hunter2", "topsecret", "pem\nkey"])
    assert repr(r) == "<Redactor 3 secrets>"
    assert "hunter2" not in repr(r) and "topsecret" not in repr(r)
    assert repr(Redactor(["a"])) == "<Redactor 1 secret>"
    s = r.stream()
    assert isinstance(s, RedactingStream)
    assert s.feed(b"x topsec") == b"x "
    assert "topsec" not in repr(s)


def test_secret_added_later_applies_to_existing_stream():
    r = Redactor(["one"])
    s = r.stream()
    assert s.feed(b"one two\n") == b"*** two\n"
    r.add("two")
    assert s.feed(b"one two\n") == b"*** ***\n"
    assert s.flush() == b""


def test_streams_are_independent():
    r = Redactor(["secret"])
    a, b = r.stream(), r.stream()
    assert a.feed(b"sec") == b""
    assert b.feed(b"ret") == b"ret"
    assert a.feed(b"ret") == b"***"


def test_long_line_keeps_buffer_small():
    secret = "topsecret"
    r = Redactor([secret])
    line = ("x" * 999 + secret) * 1000  # ~1 MB, no newline
    data = line.encode()
    s = r.stream()
    out = [s.feed(data[i : i + 4096]) for i in range(0, len(data), 4096)]
    assert len(s._buf) < len(secret)
    out.append(s.flush())
    assert b"".join(out).decode() == r.redact(line) == ("x" * 999 + MASK) * 1000


def test_long_run_of_one_secret_keeps_buffer_small():
    r = Redactor(["ab"])
    s = r.stream()
    out = [s.feed(b"ab" * 5000) for _ in range(100)]
    assert len(s._buf) < 2
    assert (b"".join(out) + s.flush()).decode() == MASK


# properties

SMALL = "ab*\n"
SMALL_NO_STAR = "ab\n"


@st.composite
def case(draw, alphabet=SMALL, secret_alphabet=SMALL):
    """Secrets, a text mixing them with filler, and cut points for chunks."""
    secrets = draw(
        st.lists(
            st.text(alphabet=secret_alphabet, min_size=1, max_size=5),
            min_size=1,
            max_size=3,
        )
    )
    parts = draw(
        st.lists(
            st.one_of(st.sampled_from(secrets), st.text(alphabet=alphabet, max_size=4)),
            max_size=8,
        )
    )
    text = "".join(parts)
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=6))
    return secrets, text, split(text, cuts)


@settings(max_examples=200, deadline=None)
@given(case())
def test_streaming_does_not_depend_on_chunking(c):
    secrets, text, chunks = c
    r = Redactor(secrets)
    assert r.redact(text) == reference(text, secrets)
    assert streamed(r, chunks) == r.redact(text)


@settings(max_examples=200, deadline=None)
@given(case(secret_alphabet=SMALL_NO_STAR))
def test_no_secret_survives(c):
    secrets, text, _ = c
    out = Redactor(secrets).redact(text)
    for secret in secrets:
        assert secret not in out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet="xyz\n*", min_size=1, max_size=6).filter(lambda x: set(x) & set("xyz")),
        max_size=3,
    ),
    st.text(alphabet="ab \n*é", max_size=40),
    st.lists(st.integers(0, 40), max_size=5),
)
def test_text_without_secrets_is_unchanged(secrets, text, cuts):
    r = Redactor(secrets)
    assert r.redact(text) == text
    assert streamed(r, split(text, cuts)) == text


@settings(max_examples=200, deadline=None)
@given(case(secret_alphabet=SMALL_NO_STAR))
def test_what_a_stream_has_emitted_never_shows_a_secret(c):
    secrets, text, chunks = c
    r = Redactor(secrets)
    s = r.stream()
    emitted = ""
    for chunk in chunks:
        emitted += s.feed(chunk.encode()).decode()
        # a live view never shows a secret, not even at a chunk boundary
        for secret in secrets:
            assert secret not in emitted
        # and what is out already is a prefix of the final answer
        assert r.redact(text).startswith(emitted)
    emitted += s.flush().decode()
    assert emitted == r.redact(text)
    for secret in secrets:
        assert secret not in emitted


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(alphabet="abc", min_size=2, max_size=4), min_size=1, max_size=3),
    st.text(alphabet="abc", max_size=30),
)
def test_stream_holds_back_only_a_possible_secret_prefix(secrets, text):
    r = Redactor(secrets)
    s = r.stream()
    s.feed(text.encode())
    held = s._buf.decode()
    # what is held back is empty or a proper prefix of some secret
    assert held == "" or any(x.startswith(held) and x != held for x in secrets)


# bytes: secrets are matched on what the container wrote, whatever its bytes

NOT_UTF8 = b"abc\xffdef"  # $'abc\xffdef' in bash


def reference_bytes(data: bytes, secrets) -> bytes:
    covered = [False] * len(data)
    for secret in secrets:
        for i in range(len(data) - len(secret) + 1):
            if data.startswith(secret, i):
                covered[i : i + len(secret)] = [True] * len(secret)
    out = bytearray()
    for i, byte in enumerate(data):
        if not covered[i]:
            out.append(byte)
        elif i == 0 or not covered[i - 1]:
            out += MASK.encode()
    return bytes(out)


def streamed_bytes(redactor, chunks) -> bytes:
    s = redactor.stream()
    return b"".join(s.feed(c) for c in chunks) + s.flush()


def test_a_secret_that_is_not_utf8_is_masked_in_bytes_and_in_a_stream():
    r = Redactor([NOT_UTF8])
    data = b"token=" + NOT_UTF8 + b" end\n"
    assert r.redact_bytes(data) == b"token=*** end\n"
    for i in range(len(data) + 1):
        assert streamed_bytes(r, [data[:i], data[i:]]) == b"token=*** end\n"


def test_a_str_secret_from_os_environ_is_matched_as_the_bytes_it_stands_for():
    # os.environ decodes a value that is not UTF-8 with surrogate escapes
    value = os.fsdecode(NOT_UTF8)
    assert value == "abc\udcffdef"
    r = Redactor([value])
    assert r.redact_bytes(b"x" + NOT_UTF8 + b"y") == b"x***y"
    assert r.secrets == (value,)
    # the same value given as bytes is the same secret
    r.add(NOT_UTF8)
    assert r.secrets == (value,)


def test_redact_masks_a_bytes_secret_in_a_name_holding_surrogate_escapes():
    r = Redactor([NOT_UTF8])
    name = os.fsdecode(b"output/" + NOT_UTF8 + b".txt")  # as tarfile gives a member's name
    out = r.redact(name)
    assert out == "output/***.txt"
    assert os.fsencode(out) == b"output/***.txt"


def test_redact_masks_how_a_replacing_decoder_shows_a_bytes_secret():
    r = Redactor([NOT_UTF8])
    quoted = (b"error: " + NOT_UTF8).decode("utf-8", "replace")
    assert r.redact(quoted) == "error: ***"


def test_a_character_partly_covered_by_a_secret_is_masked_whole():
    # b"\xc3" is the first byte of "é": printing "é" would show it
    r = Redactor([b"\xc3"])
    assert r.redact("café!") == "caf***!"
    assert r.redact_bytes("café!".encode()) == b"caf***\xa9!"


def test_lone_surrogates_never_break_redaction():
    r = Redactor(["abc"])
    assert r.redact("\ud800abc\udfff") == "\ud800***\udfff"
    assert r.redact("\udcffabc") == "\udcff***"
    r.add("\ud800")  # a str secret that UTF-8 cannot encode
    assert r.redact("x\ud800y") == "x***y"


def test_subscribers_get_text_also_for_bytes_secrets():
    seen = []
    r = Redactor([NOT_UTF8])
    r.subscribe(seen.append)
    r.add("plain")
    assert seen == ["abc\ufffddef", "plain"]


def test_redact_part_masks_what_the_whole_line_masks():
    r = Redactor(["no such words"])
    line = b"!!! soopervisor: build pipeline failed with exit code 1"
    start = line.index(b"build")
    end = line.index(b" failed")
    assert r.redact_part(line, start, end) == b"build pipeline"
    r.add("pipeline failed")  # begins inside the name, ends after it
    assert r.redact_part(line, start, end) == b"build ***"
    r.add("!!! soopervisor: bu")  # begins before the name
    assert r.redact_part(line, start, end) == b"***ild ***"


def test_a_multi_line_key_in_bytes_is_masked_across_lines_and_chunks():
    key = b"-----BEGIN KEY-----\nabc\xff\ndef\n-----END KEY-----"
    r = Redactor([key])
    data = b"key:\n" + key + b"\ndone\n"
    for i in range(len(data) + 1):
        assert streamed_bytes(r, [data[:i], data[i:]]) == b"key:\n***\ndone\n"


# properties over bytes: short secrets, bytes that are not UTF-8, any chunking.
# No 0xEF in the alphabet, so how a replacing decoder shows a secret never
# occurs, and the reference needs only the secrets themselves.
BYTES = [b"a", b"b", b"\n", b"\xff", b"\xc3", b"\xa9", b"=", b"*"]
BYTES_NO_STAR = BYTES[:-1]


@st.composite
def bytes_case(draw, alphabet=BYTES, secret_alphabet=BYTES):
    piece = st.lists(st.sampled_from(secret_alphabet), min_size=1, max_size=4).map(b"".join)
    secrets = draw(st.lists(piece, min_size=1, max_size=3))
    filler = st.lists(st.sampled_from(alphabet), max_size=4).map(b"".join)
    data = b"".join(draw(st.lists(st.one_of(st.sampled_from(secrets), filler), max_size=10)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    chunks = [data[a:b] for a, b in pairwise([0, *cuts, len(data)])]
    return secrets, data, chunks


@settings(max_examples=300, deadline=None)
@given(bytes_case())
def test_bytes_output_does_not_depend_on_chunking(c):
    secrets, data, chunks = c
    r = Redactor(secrets)
    assert r.redact_bytes(data) == reference_bytes(data, secrets)
    assert streamed_bytes(r, chunks) == r.redact_bytes(data)


@settings(max_examples=300, deadline=None)
@given(bytes_case(secret_alphabet=BYTES_NO_STAR))
def test_no_secret_byte_sequence_survives_in_a_stream_or_a_name(c):
    secrets, data, chunks = c
    r = Redactor(secrets)
    s = r.stream()
    emitted = b""
    for chunk in chunks:
        emitted += s.feed(chunk)
        assert not any(secret in emitted for secret in secrets)
        assert s._buf == b"" or any(x.startswith(s._buf) and x != s._buf for x in secrets)
    emitted += s.flush()
    assert not any(secret in emitted for secret in secrets)
    # the same bytes as a name (str with surrogate escapes), as tar members come
    name = r.redact(os.fsdecode(data))
    assert not any(secret in os.fsencode(name) for secret in secrets)
    # a name redacted is still a name: it encodes back to bytes
    assert os.fsdecode(os.fsencode(name)) == name

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
    s = redactor.stream()
    return "".join(s.feed(c) for c in chunks) + s.flush()


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


def test_secret_split_across_chunks():
    s = Redactor(["password"]).stream()
    assert s.feed("login pass") == "login "
    assert s.feed("word ok\n") == "*** ok\n"
    assert s.flush() == ""


def test_held_prefix_that_is_no_secret_is_released():
    s = Redactor(["password"]).stream()
    assert s.feed("a pass") == "a "
    assert s.feed("port\n") == "passport\n"


def test_no_hold_back_for_text_that_cannot_start_a_secret():
    s = Redactor(["topsecret"]).stream()
    assert s.feed("hello world\n") == "hello world\n"
    assert s.feed("value=top") == "value="
    assert s.feed("secret and more") == "*** and more"
    assert s.flush() == ""


def test_mask_is_emitted_as_soon_as_a_secret_is_complete():
    s = Redactor(["topsecret"]).stream()
    assert s.feed("token=topsecret") == "token=***"
    # a repetition right after it joins the same run
    assert s.feed("topsecret") == ""
    assert s.feed("\n") == "\n"
    assert s.flush() == ""


def test_flush_releases_a_held_prefix_and_resets():
    s = Redactor(["topsecret"]).stream()
    assert s.feed("value=top") == "value="
    assert s.flush() == "top"
    assert s.feed("secret\n") == "secret\n"


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


def test_non_str_secret_is_rejected_without_showing_it():
    with pytest.raises(TypeError) as e:
        Redactor().add(b"hunter2")
    assert "hunter2" not in str(e.value)


def test_repr_hides_secrets():
    r = Redactor(["hunter2", "topsecret", "pem\nkey"])
    assert repr(r) == "<Redactor 3 secrets>"
    assert "hunter2" not in repr(r) and "topsecret" not in repr(r)
    assert repr(Redactor(["a"])) == "<Redactor 1 secret>"
    s = r.stream()
    assert isinstance(s, RedactingStream)
    assert s.feed("x topsec") == "x "
    assert "topsec" not in repr(s)


def test_secret_added_later_applies_to_existing_stream():
    r = Redactor(["one"])
    s = r.stream()
    assert s.feed("one two\n") == "*** two\n"
    r.add("two")
    assert s.feed("one two\n") == "*** ***\n"
    assert s.flush() == ""


def test_streams_are_independent():
    r = Redactor(["secret"])
    a, b = r.stream(), r.stream()
    assert a.feed("sec") == ""
    assert b.feed("ret") == "ret"
    assert a.feed("ret") == "***"


def test_long_line_keeps_buffer_small():
    secret = "topsecret"
    r = Redactor([secret])
    line = ("x" * 999 + secret) * 1000  # ~1 MB, no newline
    s = r.stream()
    out = [s.feed(line[i : i + 4096]) for i in range(0, len(line), 4096)]
    assert len(s._buf) < len(secret)
    out.append(s.flush())
    assert "".join(out) == r.redact(line) == ("x" * 999 + MASK) * 1000


def test_long_run_of_one_secret_keeps_buffer_small():
    r = Redactor(["ab"])
    s = r.stream()
    out = [s.feed("ab" * 5000) for _ in range(100)]
    assert len(s._buf) < 2
    assert "".join(out) + s.flush() == MASK


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
        emitted += s.feed(chunk)
        # a live view never shows a secret, not even at a chunk boundary
        for secret in secrets:
            assert secret not in emitted
        # and what is out already is a prefix of the final answer
        assert r.redact(text).startswith(emitted)
    emitted += s.flush()
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
    s.feed(text)
    held = s._buf
    # what is held back is empty or a proper prefix of some secret
    assert held == "" or any(x.startswith(held) and x != held for x in secrets)

"""Run options checked before anything happens: limits, and secret values read as bytes."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soopervisor.errors import UsageError
from soopervisor.options import MIN_MEMORY, Limits, check_limits, env_bytes, parse_memory, secret_bytes

MiB, GiB = 1024**2, 1024**3


@pytest.mark.parametrize("text, size", [
    ("2g", 2 * GiB), ("2G", 2 * GiB), ("2gb", 2 * GiB), ("2GiB", 2 * GiB), ("1.5g", 3 * GiB // 2),
    ("512m", 512 * MiB), ("512 MB", 512 * MiB), ("6m", 6 * MiB), ("6144k", 6 * MiB), ("6144KiB", 6 * MiB),
    ("1t", 1024 * GiB), (str(6 * MiB), 6 * MiB), (f"{6 * MiB}b", 6 * MiB), (".5g", GiB // 2),
    ("  1g ", GiB), (6 * MiB, 6 * MiB), (8 * GiB, 8 * GiB),
])
def test_memory_sizes_with_units(text, size):
    assert parse_memory(text) == size
    assert check_limits(memory=text) == Limits(memory=size)


@pytest.mark.parametrize("text, why", [
    ("lots", "is not a size"), ("", "is not a size"), ("2x", "is not a size"), ("-1g", "is not a size"),
    ("1e9", "is not a size"), ("nan", "is not a size"), ("inf", "is not a size"), ("1..5g", "is not a size"),
    ("2 g b", "is not a size"), ("5m", "less than Docker's minimum"), ("0", "less than Docker's minimum"),
    ("1024", "less than Docker's minimum"), ("99999999999t", "more than any machine has"),
    (float("nan"), "is not a size"), (True, "is not a size"), (["2g"], "is not a size"),
])
def test_memory_that_is_not_a_size_is_a_usage_error_with_a_hint(text, why):
    with pytest.raises(UsageError) as e:
        check_limits(memory=text)
    assert e.value.exit_code == 2
    assert why in e.value.message and e.value.message.startswith("--memory ")
    assert "512m" in e.value.hint


def test_memory_minimum_is_docker_s():
    assert parse_memory(MIN_MEMORY) == MIN_MEMORY
    with pytest.raises(UsageError):
        parse_memory(MIN_MEMORY - 1)


@pytest.mark.parametrize("value", ["1e9", 1e9, "nan", float("nan"), "inf", float("-inf"), "0", 0, "-1", 0.001,
                                   "two", "", True])
def test_cpus_finite_positive_and_within_the_machine(value):
    with pytest.raises(UsageError) as e:
        check_limits(cpus=value)
    assert e.value.exit_code == 2 and e.value.message.startswith("--cpus ")
    assert f"to {os.cpu_count()}" in e.value.hint


def test_cpus_within_the_machine_are_numbers():
    n = os.cpu_count()
    assert check_limits(cpus=str(n)) == Limits(cpus=float(n))
    assert check_limits(cpus="0.5").cpus == 0.5
    assert check_limits(cpus=0.01).cpus == 0.01
    with pytest.raises(UsageError, match="more than the"):
        check_limits(cpus=n + 0.5)


@pytest.mark.parametrize("value", ["inf", float("inf"), "nan", float("nan"), "0", 0, "-1", -1, "soon", "1e400",
                                   1e300, False])
def test_timeout_finite_and_positive(value):
    with pytest.raises(UsageError) as e:
        check_limits(timeout=value)
    assert e.value.exit_code == 2 and e.value.message.startswith("--timeout ")
    assert "--timeout 3600" in e.value.hint


def test_valid_limits_come_back_as_numbers():
    assert check_limits() == Limits(None, None, None)
    assert check_limits(timeout="3600", cpus="1", memory="1.5g") == Limits(3600.0, 1.0, 3 * GiB // 2)
    assert check_limits(timeout=0.5).timeout == 0.5


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(UsageError) as e:
        check_limits(memory="x" * 10_000)
    assert len(e.value.message) < 100


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_any_text_is_a_size_or_a_usage_error(text):
    try:
        size = parse_memory(text)
    except UsageError as e:
        assert e.exit_code == 2 and e.hint
    else:
        assert MIN_MEMORY <= size < 2**63


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True)))
def test_any_cpus_or_timeout_is_a_finite_number_or_a_usage_error(value):
    for name in ("cpus", "timeout"):
        try:
            got = getattr(check_limits(**{name: value}), name)
        except UsageError as e:
            assert e.exit_code == 2
        else:
            assert 0 < got < float("inf")


# -- secrets as bytes ---------------------------------------------------------------------
def test_secret_values_are_the_bytes_of_the_environment(monkeypatch):
    monkeypatch.setenv("SV_TEST_BYTES", os.fsdecode(b"abc\xffdef"))  # how a process gets it
    monkeypatch.setenv("SV_TEST_TEXT", "pässwörd")
    assert secret_bytes(["SV_TEST_BYTES", "SV_TEST_TEXT"]) == {
        "SV_TEST_BYTES": b"abc\xffdef", "SV_TEST_TEXT": "pässwörd".encode()}
    assert env_bytes("SV_TEST_BYTES") == b"abc\xffdef"
    assert env_bytes("SV_TEST_NOT_SET") is None


def test_a_missing_or_bad_secret_name_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("SV_TEST_MISSING", raising=False)
    with pytest.raises(UsageError, match="SV_TEST_MISSING is not set") as e:
        secret_bytes(["SV_TEST_MISSING"])
    assert "export SV_TEST_MISSING=" in e.value.hint
    for bad in ["", "A-B", "1ABC", "A B", "A=B"]:
        with pytest.raises(UsageError, match="invalid secret name"):
            secret_bytes([bad])

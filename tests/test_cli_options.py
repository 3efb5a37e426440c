"""The CLI checks options first and never prints a secret, whatever the error.

Real console command in a subprocess (``tests.conftest.cli``). The engine is
pointed at a socket that does not exist: none of these cases may get that far.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import cli

from .projects import make_project

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "src")


def nothing_happened(home: Path, storage: Path) -> None:
    assert not (home / "runs.sqlite").exists(), "a run was recorded"
    assert not storage.exists(), "the storage was written"
    assert not (home / "logs").exists()


@pytest.mark.parametrize("args, message", [
    (["--memory", "lots"], "--memory 'lots' is not a size"),
    (["--memory", "5m"], "--memory '5m' is less than Docker's minimum of 6 MiB"),
    (["--cpus", "1e9"], "--cpus '1e9' is more than the"),
    (["--cpus", "nan"], "--cpus 'nan' is not a finite number"),
    (["--cpus", "0"], "--cpus '0' is less than 0.01"),
    (["--timeout", "inf"], "--timeout 'inf' is not a finite number"),
    (["--timeout", "nan"], "--timeout 'nan' is not a finite number"),
    (["--timeout", "0"], "--timeout '0' must be more than 0 seconds"),
    (["--timeout", "-1"], "--timeout '-1' must be more than 0 seconds"),
    (["--timeout=-1"], "--timeout '-1' must be more than 0 seconds"),
])
def test_bad_limits_exit_2_with_a_hint_before_anything(project, home, tmp_path, args, message):
    storage = tmp_path / "storage"
    proc = cli("run", str(project), "--storage", str(storage), *args, env=NO_ENGINE, check=2)
    assert f"error: {message}" in proc.stderr
    assert "hint: give" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    nothing_happened(home, storage)


def test_the_original_form_checks_limits_too(project, home, tmp_path):
    storage = tmp_path / "storage"
    proc = cli(str(project), str(storage), "--memory", "lots", env=NO_ENGINE, check=2)
    assert "error: --memory 'lots' is not a size" in proc.stderr
    nothing_happened(home, storage)


@pytest.mark.parametrize("limits", [{"memory": "lots"}, {"cpus": float("nan")}, {"cpus": 1e9},
                                    {"timeout": float("inf")}, {"timeout": 0}])
def test_the_python_api_refuses_the_same_limits(project, home, tmp_path, monkeypatch, limits):
    import soopervisor
    from soopervisor.errors import UsageError

    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE["DOCKER_HOST"])
    storage = tmp_path / "storage"
    with pytest.raises(UsageError) as e:
        soopervisor.run(project, storage=str(storage), **limits)
    assert e.value.exit_code == 2 and e.value.hint
    nothing_happened(home, storage)


# -- no secret in the final lines -----------------------------------------------------------------
def storage_error(tmp_path: Path, name: str) -> Path:
    """A storage path whose error message quotes ``name`` (it lies below a regular file)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return Path(os.fsdecode(os.fsencode(blocker) + b"/" + os.fsencode(name)))


@pytest.mark.parametrize("form", ["--secret NAME", "--secret=NAME"])
def test_the_error_line_masks_the_secret_values_of_this_command(project, tmp_path, form):
    value = "hunter2-value"
    storage = storage_error(tmp_path, value)
    secret = form.replace("NAME", "SV_TEST_TOKEN").split(" ")
    proc = cli("run", str(project), "--storage", str(storage), *secret,
               env={**NO_ENGINE, "SV_TEST_TOKEN": value})
    assert proc.returncode in (2, 3), proc.stderr
    assert "error:" in proc.stderr and "***" in proc.stderr
    assert value not in proc.stderr and value not in proc.stdout


def test_a_secret_that_is_not_utf8_is_masked_in_the_error_line(project, tmp_path):
    value = b"abc\xffdef"
    storage = storage_error(tmp_path, os.fsdecode(value))
    proc = subprocess_bytes(["run", str(project), "--storage", os.fsencode(storage), "--secret", "SV_TEST_TOKEN"],
                            {**NO_ENGINE, "SV_TEST_TOKEN": os.fsdecode(value)})
    assert proc.returncode in (2, 3), proc.stderr
    assert b"error:" in proc.stderr and b"***" in proc.stderr
    for shown in (value, b"abc\\xffdef", b"abc\\udcffdef", "abc\ufffddef".encode()):
        assert shown not in proc.stderr and shown not in proc.stdout


def subprocess_bytes(args: list, env: dict):
    import subprocess

    return subprocess.run([sys.executable, "-m", "soopervisor", *args], env={**os.environ, **env},
                          capture_output=True, timeout=120, check=False)


def test_the_internal_error_line_and_crash_report_mask_secrets(monkeypatch, capsys, home):
    from soopervisor import cli as cli_module

    monkeypatch.setenv("SV_TEST_TOKEN", os.fsdecode(b"tok\xffen-value"))

    def boom(path, **opts):
        raise RuntimeError(f"failed with {os.environ['SV_TEST_TOKEN']} in it")  # the source line shows no value

    monkeypatch.setattr(cli_module, "_run", boom)
    with pytest.raises(SystemExit) as e:
        cli_module.main(["run", ".", "--secret", "SV_TEST_TOKEN"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "error: internal error: RuntimeError: failed with *** in it" in err
    crash = (home / "crash.log").read_text()
    assert "RuntimeError: failed with *** in it" in crash and "en-value" not in crash


def test_a_click_error_line_masks_secrets(monkeypatch, capsys):
    import click

    from soopervisor import cli as cli_module

    monkeypatch.setenv("SV_TEST_TOKEN", "hunter2-value")

    def bad(path, **opts):
        raise click.BadParameter("hunter2-value is not a storage")

    monkeypatch.setattr(cli_module, "_run", bad)
    with pytest.raises(SystemExit) as e:
        cli_module.main(["run", ".", "--secret=SV_TEST_TOKEN"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "*** is not a storage" in err and "hunter2" not in err


# -- SOOPERVISOR_HOME that cannot be used ---------------------------------------------------------
@pytest.mark.parametrize("command", [["runs"], ["run", "PROJECT"], ["artifacts", "list", "--project", "proj"]])
def test_soopervisor_home_naming_a_file_is_a_usage_error(project, tmp_path, command):
    blocker = tmp_path / "home-file"
    blocker.write_text("not a folder")
    args = [str(project) if a == "PROJECT" else a for a in command]
    for home in (blocker, blocker / "below"):
        proc = cli(*args, env={**NO_ENGINE, "SOOPERVISOR_HOME": str(home)}, check=2)
        assert f"error: SOOPERVISOR_HOME={home}" in proc.stderr
        assert "hint: point SOOPERVISOR_HOME at a folder" in proc.stderr
        assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_soopervisor_home_that_cannot_be_created_is_a_plain_error(project):
    # /sys refuses new folders even to root
    proc = cli("run", str(project), env={**NO_ENGINE, "SOOPERVISOR_HOME": "/sys/soopervisor-home"})
    assert proc.returncode in (2, 3), proc.stderr
    assert "error:" in proc.stderr and "hint:" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr

"""Shared fixtures: an isolated soopervisor home per test, and the real Docker engine.

Docker tests never skip: when no engine answers they fail and say how to start
one (scripts/setup does it), so a green run always means they ran.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from soopervisor import config


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs, logs, artifacts and caches of this test only."""
    home = tmp_path / "soopervisor-home"
    monkeypatch.setenv("SOOPERVISOR_HOME", str(home))
    monkeypatch.delenv("SOOPERVISOR_STORAGE", raising=False)
    # never the user's keyring or stored cloud tokens
    monkeypatch.setenv("SOOPERVISOR_CONFIG_DIR", str(tmp_path / "soopervisor-config"))
    monkeypatch.setenv("SOOPERVISOR_NO_KEYRING", "1")
    # every test is its own repository: one download cache for the session's environment builds
    # (tests/test_uv_env.py checks the per-repository default)
    monkeypatch.setenv("SOOPERVISOR_DOWNLOAD_CACHE", "machine")
    return home



@pytest.fixture
def server_root(tmp_path: Path) -> Path:
    """An empty root folder for a Jupyter server (the browser tests' JupyterLab)."""
    root = tmp_path / "root"
    root.mkdir()
    return root

def _pick_image(client) -> str:
    """The image tests run on: SOOPERVISOR_TEST_IMAGE, the public default, or the offline one."""
    import docker

    wanted = [os.environ.get("SOOPERVISOR_TEST_IMAGE"), config.DEFAULT_IMAGE, config.OFFLINE_IMAGE]
    for name in filter(None, wanted):
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    pytest.fail(
        f"no base image in the engine (tried {wanted}); run scripts/setup, "
        "which pulls one or builds one from Debian packages",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure means: no engine
        pytest.fail(f"no Docker engine answers ({e}); run scripts/engine or scripts/setup", pytrace=False)
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    return _pick_image(docker_client)


@pytest.fixture
def engine(docker_client, base_image, monkeypatch: pytest.MonkeyPatch, home: Path):
    """Docker-backed runs in this test; afterwards, no container of theirs may be left."""
    monkeypatch.setenv("SOOPERVISOR_IMAGE", base_image)
    yield docker_client
    from soopervisor.runs import RunStore

    if not (home / "runs.sqlite").exists():
        return
    for run in RunStore().list():
        left = docker_client.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})
        assert not left, f"containers left behind by run {run.id}: {[c.name for c in left]}"


@pytest.fixture(scope="session")
def tls_engine(docker_client, base_image):
    """A second dockerd on 127.0.0.1 TCP with TLS client certificates (tests/engines.py), holding the
    base image; started when a test first asks for it, stopped and removed after the session.

    Tests that use it are marked ``xdist_group("tls-engine")``: one worker starts it, once.
    """
    import tempfile

    from .engines import copy_images, start_tls_engine

    # short: the engine's unix socket path must fit in 108 bytes
    root = Path(tempfile.mkdtemp(prefix="sv-engine-", dir="/tmp"))
    engine = start_tls_engine(root)
    try:
        copy_images([base_image], engine)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def remote_env(tls_engine, base_image):
    """The environment image of the test projects (requirements.txt without packages), built on the
    main engine and copied into the TLS engine; the name of the image. Shared by every test file
    of the xdist group "tls-engine" (tests/test_remote_engines.py, tests/server/test_serve_engines.py)."""
    import re
    import tempfile

    from .engines import copy_images
    from .projects import function_task, make_project

    with tempfile.TemporaryDirectory(prefix="sv-remote-env-") as tmp:
        # the environment depends on requirements.txt (the same in every test project), not on the tasks
        project = make_project(Path(tmp), function_task("print('hello', flush=True)"))
        env = {**os.environ, "SOOPERVISOR_HOME": f"{tmp}/home", "SOOPERVISOR_CONFIG_DIR": f"{tmp}/config",
               "SOOPERVISOR_IMAGE": base_image, "SOOPERVISOR_DOWNLOAD_CACHE": "machine",
               "SOOPERVISOR_NO_KEYRING": "1"}
        env.pop("SOOPERVISOR_EXECUTOR", None)
        env.pop("SOOPERVISOR_STORAGE", None)
        proc = subprocess.run([sys.executable, "-m", "soopervisor", "run", str(project)], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        found = re.search(r"(soopervisor-env:[0-9a-f]{20})", proc.stdout + proc.stderr)
        assert found, proc.stdout[-3000:]
    copy_images([found.group(1)], tls_engine)
    return found.group(1)


@pytest.fixture(scope="session")
def ssh_engine(tls_engine):
    """sshd on 127.0.0.1 whose sessions' docker is the TLS engine's own socket (``ssh://`` engines);
    put ``ssh_engine.bin`` first on PATH: its ``ssh`` knows the test's key and host key."""
    import tempfile

    from .engines import start_ssh_engine

    engine = start_ssh_engine(Path(tempfile.mkdtemp(prefix="sv-ssh-", dir="/tmp")), tls_engine.socket)
    try:
        yield engine
    finally:
        engine.stop()


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600, check: int | None = None,
        input: str | None = None):
    """The real console command, in a subprocess, as a user runs it (``input``: its standard input)."""
    proc = subprocess.run(
        [sys.executable, "-m", "soopervisor", *args],
        input=input,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # the exit code is asserted below, with the output
    )
    if check is not None:
        assert proc.returncode == check, (
            f"exit {proc.returncode} != {check}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

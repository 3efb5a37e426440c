"""The Docker executor on its own: hardening, the CA bundle, limits, collect, keep, clean-up.

What crosses the executor protocol is specs, bytes and callbacks: these tests
look at the containers themselves with their own docker client, by label.
"""
from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import uuid

import pytest

from soopervisor.errors import EngineUnavailable
from soopervisor.executors import ContainerSpec, KeepAs
from soopervisor.executors.docker import CA_PATH, DockerExecutor

pytestmark = pytest.mark.docker


def tar_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def execute(image, label: str, script: str, **kw):
    """Run ``script``; the container's attributes are read (by label) while collect_to runs, before removal."""
    import docker

    out = bytearray()
    seen = {}

    def collect(stream):
        seen["tar"] = b"".join(stream)
        (container,) = docker.from_env().containers.list(all=True, filters={"label": f"soopervisor.run={label}"})
        seen["attrs"] = container.attrs

    spec = ContainerSpec(
        image=image,
        command=["bash", "/t/run.sh"],
        archives=[tar_of({"t/run.sh": script})],
        workdir="/",
        labels={"soopervisor.run": label},
        collect_path="/t",
        **kw,
    )
    result = DockerExecutor().execute(spec, out.extend, collect_to=collect)
    assert result.collected
    return result, out.decode(), seen["attrs"]


def no_containers_left(client, label):
    return not client.containers.list(all=True, filters={"label": f"soopervisor.run={label}"})


@pytest.fixture
def label(docker_client):
    """A run label of this test's own (tests run in parallel); none may be left after it."""
    value = f"executor-test-{uuid.uuid4().hex[:8]}"
    yield value
    assert no_containers_left(docker_client, value)


def test_container_is_hardened(docker_client, base_image, label):
    result, out, attrs = execute(base_image, label, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ls /var/run/docker.sock || true")
    assert result.exit_code == 0
    assert "CapEff:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "No such file" in out  # no engine socket inside
    host = attrs["HostConfig"]
    assert host["Privileged"] is False and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not attrs["Mounts"]  # nothing of the host mounted without a CA bundle
    assert no_containers_left(docker_client, label)


def test_ca_bundle_is_mounted_read_only_and_named(docker_client, base_image, label, tmp_path):
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nCORPORATE\n-----END CERTIFICATE-----\n")
    script = f'head -2 "$PIP_CERT"; echo "$SSL_CERT_FILE $REQUESTS_CA_BUNDLE"; echo x >> {CA_PATH} || echo READ-ONLY'
    _result, out, attrs = execute(base_image, label, script, ca_bundle=ca)
    assert "CORPORATE" in out
    assert f"{CA_PATH} {CA_PATH}" in out
    assert "READ-ONLY" in out
    assert [m["RW"] for m in attrs["Mounts"]] == [False]


def test_limits_when_asked(docker_client, base_image, label):
    _result, _out, attrs = execute(base_image, label, "true", cpus=0.5, memory=256 * 1024 * 1024)
    assert attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024


def test_exit_code_is_returned(docker_client, base_image, label):
    result, out, _ = execute(base_image, label, "echo bye; exit 7")
    assert result.exit_code == 7 and "bye" in out
    assert no_containers_left(docker_client, label)


def test_engine_error_mid_run_removes_the_container(docker_client, base_image, label, monkeypatch):
    import docker

    executor = DockerExecutor()

    def broken_logs(self, *a, **k):
        raise docker.errors.APIError("engine went away")

    monkeypatch.setattr(docker.models.containers.Container, "logs", broken_logs)
    spec = ContainerSpec(
        image=base_image, command=["sleep", "300"], archives=[],
        labels={"soopervisor.run": label},
    )
    with pytest.raises(EngineUnavailable, match="engine went away"):
        executor.execute(spec, lambda b: None)
    assert no_containers_left(docker_client, label)


def test_cancel_from_another_thread(docker_client, base_image, label):
    import threading

    executor = DockerExecutor()
    spec = ContainerSpec(
        image=base_image, command=["bash", "-c", "echo started; sleep 300"], archives=[],
        labels={"soopervisor.run": label},
    )
    out = bytearray()

    def on_output(b):
        out.extend(b)
        if b"started" in out:
            threading.Timer(0.5, executor.cancel).start()

    result = executor.execute(spec, on_output)
    assert result.cancelled and result.exit_code != 0
    assert no_containers_left(docker_client, label)


def test_default_image_falls_back_to_the_offline_image(docker_client, base_image, monkeypatch):
    from soopervisor import config

    monkeypatch.delenv("SOOPERVISOR_IMAGE", raising=False)
    monkeypatch.setattr(config, "DEFAULT_IMAGE", "soopervisor-test/unpullable:none")
    monkeypatch.setattr(config, "OFFLINE_IMAGE", base_image)
    notes: list[str] = []
    info = DockerExecutor().resolve_image(None, notes.append)
    assert info.name == base_image
    assert any("cannot pull soopervisor-test/unpullable:none" in n and base_image in n for n in notes)


def test_an_explicit_image_never_falls_back(docker_client, base_image, monkeypatch):
    from soopervisor import config
    from soopervisor.errors import UsageError

    monkeypatch.setattr(config, "OFFLINE_IMAGE", base_image)
    with pytest.raises(UsageError, match="soopervisor-test/unpullable:none"):
        DockerExecutor().resolve_image("soopervisor-test/unpullable:none", lambda n: None)


def test_an_image_named_by_the_environment_never_falls_back_either(docker_client, base_image, monkeypatch):
    from soopervisor import config
    from soopervisor.errors import UsageError

    monkeypatch.setenv("SOOPERVISOR_IMAGE", "soopervisor-test/unpullable:none")
    monkeypatch.setattr(config, "OFFLINE_IMAGE", base_image)
    with pytest.raises(UsageError, match="soopervisor-test/unpullable:none"):
        DockerExecutor().resolve_image(None, lambda n: None)


def test_collect_to_gets_the_folder_as_a_tar_stream(docker_client, base_image, label):
    import docker

    got = {}

    def collect(stream):
        chunks = list(stream)
        got["chunks"] = chunks
        # the container is still there while collect_to runs; it is gone right after
        got["there"] = bool(docker.from_env().containers.list(all=True, filters={"label": f"soopervisor.run={label}"}))

    spec = ContainerSpec(
        image=base_image, command=["bash", "-c", "mkdir -p /out/sub && echo hi > /out/sub/a.txt; exit 3"],
        archives=[], workdir="/", labels={"soopervisor.run": label}, collect_path="/out",
    )
    result = DockerExecutor().execute(spec, lambda b: None, collect_to=collect)
    assert result.exit_code == 3 and result.collected  # a failed run's partial outputs are collected too
    assert all(isinstance(c, bytes) for c in got["chunks"]) and got["there"]
    with tarfile.open(fileobj=io.BytesIO(b"".join(got["chunks"]))) as tar:
        member = tar.getmember("out/sub/a.txt")
        assert tar.extractfile(member).read() == b"hi\n"
    assert no_containers_left(docker_client, label)


def test_no_folder_to_collect_is_not_an_error(docker_client, base_image, label):
    spec = ContainerSpec(image=base_image, command=["true"], archives=[], labels={"soopervisor.run": label})
    called = []
    result = DockerExecutor().execute(spec, lambda b: None, collect_to=called.append)
    assert result.exit_code == 0 and not result.collected and not called


@pytest.mark.parametrize("code", [0, 1])
def test_keep_as_commits_a_clean_image_only_on_success(docker_client, base_image, label, code):
    tag = f"keep-{uuid.uuid4().hex[:8]}"
    keep = KeepAs("soopervisor-test-keep", tag, ["PATH=/usr/bin:/bin", "KEPT=yes"], {"soopervisor.test": "1"})
    spec = ContainerSpec(
        image=base_image, command=["bash", "-c", f"echo made > /made.txt; exit {code}"], archives=[],
        labels={"soopervisor.run": label}, ca_bundle=None, name_ca=False,
    )
    result = DockerExecutor().execute(spec, lambda b: None, keep_as=keep)
    assert result.exit_code == code
    images = docker_client.images.list(name=f"soopervisor-test-keep:{tag}")
    try:
        if code:
            assert not images  # a failed container never becomes an image
            return
        (image,) = images
        config = image.attrs["Config"]
        assert config["Env"] == keep.env  # nothing of the run's environment
        assert keep.labels.items() <= config["Labels"].items() and config["Labels"]["soopervisor.run"] == ""
        out = docker_client.containers.run(image.id, ["cat", "/made.txt"], remove=True)
        assert out == b"made\n"
    finally:
        for image in images:
            docker_client.images.remove(image.id, force=True)


def test_a_callback_error_is_the_callers_not_the_engines(docker_client, base_image, label):
    def closed_pipe(chunk: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    spec = ContainerSpec(image=base_image, command=["bash", "-c", "echo out; sleep 300"], archives=[],
                         labels={"soopervisor.run": label})
    with pytest.raises(BrokenPipeError):
        DockerExecutor().execute(spec, closed_pipe)
    assert no_containers_left(docker_client, label)


def test_containers_are_found_killed_and_removed_by_label_from_another_executor(docker_client, base_image, label):
    owner, other = DockerExecutor(), DockerExecutor()
    started = threading.Event()
    results = []

    def on_output(chunk: bytes) -> None:
        started.set()

    spec = ContainerSpec(image=base_image, command=["bash", "-c", "echo up; sleep 300"], archives=[],
                         labels={"soopervisor.run": label})
    thread = threading.Thread(target=lambda: results.append(owner.execute(spec, on_output)))
    thread.start()
    assert started.wait(120)
    assert other.labelled().get(label) == 1
    assert other.kill_by_label(label) == 1
    thread.join(60)
    assert results and results[0].exit_code != 0 and not results[0].cancelled
    assert no_containers_left(docker_client, label)  # the owner removed it after it exited
    assert other.remove_by_label(label) == 0 and other.remove_by_label("") == 0


def test_remove_by_label_removes_a_container_nobody_owns(docker_client, base_image, label):
    docker_client.containers.create(base_image, ["sleep", "300"], labels={"soopervisor.run": label})
    assert DockerExecutor().remove_by_label(label) == 1
    assert no_containers_left(docker_client, label)


def test_a_helper_container_left_by_a_killed_process_is_removed_and_one_at_work_is_not(docker_client, base_image,
                                                                                       home):
    # read_file creates a container (never started) to read an image's file, then removes it; a process
    # killed in between leaves it. Simulated by its label: created an hour ago, or just now (at work).
    import time

    import docker

    from soopervisor.executors.docker import HELPER_LABEL
    from soopervisor.service import RunService

    def helper(age: float):
        return docker_client.containers.create(base_image, ["true"], labels={
            "soopervisor": "1", HELPER_LABEL: str(int(time.time() - age))})

    def there(container) -> bool:
        return any(c.id == container.id for c in docker_client.containers.list(all=True, filters={"label": HELPER_LABEL}))

    stale, at_work = helper(3600), helper(0)
    try:
        assert DockerExecutor().read_file(base_image, "/etc/debian_version")  # a helper of its own, removed
        assert not there(stale) and there(at_work)
        # a server's sweep (on start, and every while) removes them too
        stale = helper(3600)
        RunService().adopt()
        assert not there(stale) and there(at_work)
    finally:
        for c in (stale, at_work):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)

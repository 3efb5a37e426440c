"""The Docker executor on its own: hardening, the CA bundle, limits, clean-up."""
from __future__ import annotations

import io
import tarfile
import uuid

import pytest

from soopervisor.errors import EngineUnavailable
from soopervisor.executors import ContainerSpec
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
    out = bytearray()
    seen = {}

    def after(container):
        container.reload()
        seen["attrs"] = container.attrs

    spec = ContainerSpec(
        image=image,
        command=["bash", "/t/run.sh"],
        archives=[tar_of({"t/run.sh": script})],
        workdir="/",
        labels={"soopervisor.run": label},
        **kw,
    )
    result = DockerExecutor().execute(spec, out.extend, after=after)
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
    result, out, attrs = execute(base_image, label, script, ca_bundle=ca)
    assert "CORPORATE" in out
    assert f"{CA_PATH} {CA_PATH}" in out
    assert "READ-ONLY" in out
    assert [m["RW"] for m in attrs["Mounts"]] == [False]


def test_limits_when_asked(docker_client, base_image, label):
    result, out, attrs = execute(base_image, label, "true", cpus=0.5, memory="256m")
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

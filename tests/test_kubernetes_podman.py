"""The Kubernetes executor's real parts without a cluster: the image pushed by digest to a real
registry (Debian's docker-registry on 127.0.0.1), and the Job's pod template run for real with
``podman kube play`` against a real Exchange: the bootstrap fetches the inputs, drops to uid 1000
with only the capabilities the manifest keeps, and uploads the artifacts.

Two substitutions, both podman 4.3's (Debian 12) and not the manifest's: a ``secret`` volume makes
``kube play`` panic (VolumeFromSecret with no secrets manager) and ``secretKeyRef`` wants podman's
own JSON secrets, so the exchange file arrives through a hostPath folder holding the same file
(root, mode 0400) and the environment as values. Everything else is the manifest as generated.
Podman's default rlimits exceed what this machine allows: a containers.conf of the test's lowers them.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from soopervisor.engines import Engine, KubernetesSettings
from soopervisor.executors import RUN_LABEL, ContainerSpec, offnode
from soopervisor.executors import kubernetes as k8s
from soopervisor.executors.docker import DockerExecutor

from .conftest import free_port

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("kubernetes")]

STATE = Path("/tmp/soopervisor-test-engines/k8s-registry")
SECRET = "podman-run-secret-value"


def _sweep() -> None:
    """A registry a crashed session left behind: stopped, its folder removed."""
    pidfile = STATE / "pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
    shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture(scope="session")
def registry():
    """Debian's docker-registry on 127.0.0.1 (its own storage), stopped at the session's end."""
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is missing: scripts/setup installs it (apt-get install docker-registry)"
    _sweep()
    STATE.mkdir(parents=True)
    port = free_port()
    (STATE / "config.yml").write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(STATE / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    with open(STATE / "log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(STATE / "config.yml")], stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True)
    (STATE / "pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).read()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (STATE / "log").read_text()
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)
    _sweep()


def kube_engine(registry: str | None) -> Engine:
    return Engine("k8s", type="kubernetes", registry=registry, exchange_address="127.0.0.1", source="the test",
                  kubernetes=KubernetesSettings(namespace="default"))


def test_publish_pushes_the_image_to_the_registry_and_names_it_by_digest(docker_client, registry):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"tiny image of the kubernetes tests\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    docker_client.api.import_image_from_data(buf.getvalue(), repository="soopervisor-test/k8s-tiny", tag="v1")
    executor = k8s.KubernetesExecutor(kube_engine(registry), api_client=object(),
                                      build=DockerExecutor(client=docker_client))
    notes: list[str] = []
    ref = executor.publish("soopervisor-test/k8s-tiny:v1", notes.append)
    repo, _, digest = ref.partition("@")
    assert repo == f"{registry}/soopervisor-test/k8s-tiny" and digest.startswith("sha256:"), ref
    assert notes == [f"soopervisor: pushing the image to {registry}/soopervisor-test/k8s-tiny:v1"]
    request = urllib.request.Request(
        f"http://{registry}/v2/soopervisor-test/k8s-tiny/manifests/{digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request) as r:  # the registry serves that very digest
        assert r.status == 200 and r.headers["Docker-Content-Digest"] == digest
    with pytest.raises(Exception) as e:
        executor.publish("soopervisor-test/k8s-absent:v1")
    assert "is not in the build engine" in str(e.value)
    docker_client.images.remove("soopervisor-test/k8s-tiny:v1", force=True)
    docker_client.images.remove(f"{registry}/soopervisor-test/k8s-tiny:v1", force=True)


@pytest.fixture(scope="session")
def podman_image(docker_client, base_image) -> str:
    """The base image in podman's store (docker save | podman load, once: skipped when it is there already)."""
    assert shutil.which("podman"), "podman is missing: scripts/setup installs it (apt-get install podman catatonit)"
    wanted = docker_client.images.get(base_image).id.split(":")[-1]
    # pods of a crashed session (they carry the manifest's labels)
    left = subprocess.run(["podman", "pod", "ps", "-q", "--filter", "label=soopervisor=1"],
                          check=False, capture_output=True, text=True).stdout.split()
    if left:
        subprocess.run(["podman", "pod", "rm", "-f", *left], check=False, capture_output=True)
    found = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", base_image],
                           check=False, capture_output=True, text=True)
    if found.returncode != 0 or found.stdout.strip() != wanted:
        save = subprocess.Popen(["docker", "save", base_image], stdout=subprocess.PIPE)
        subprocess.run(["podman", "load", "-q"], stdin=save.stdout, check=True, capture_output=True)
        assert save.wait() == 0
    return base_image


PIPELINE = r"""
set -eu
echo "pipeline uid=$(id -u) home=$HOME cwd=$(pwd)"
if cat /run/secrets/soopervisor-exchange >/dev/null 2>&1; then echo "TOKEN READABLE"; else echo "token unreadable"; fi
echo "secret is ${API_KEY:+set}"
grep CapEff /proc/self/status
mkdir -p /soopervisor/artifacts
cp input.txt /soopervisor/artifacts/copied.txt
echo done
"""


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_the_jobs_pod_template_runs_under_podman_against_a_real_exchange(tmp_path, podman_image):
    spec = ContainerSpec(
        image=podman_image, command=["bash", "/soopervisor/run.sh"],
        archives=[_tar({"workspace/input.txt": b"from the host\n"}), _tar({"soopervisor/run.sh": PIPELINE.encode()})],
        environment={"API_KEY": SECRET}, labels={RUN_LABEL: "podman-1"}, network="host", memory=512 << 20)
    received: dict[str, bytes] = {}

    def collect(chunks) -> None:
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            for m in tar.getmembers():
                if m.isfile():
                    received[m.name] = tar.extractfile(m).read()

    name = k8s.job_name("podman-1")
    with offnode.Exchange(spec.archives, collect, bind="127.0.0.1") as exchange:
        job = k8s.job_manifest(name, spec, image=f"localhost/{podman_image}", command=k8s.pod_command(spec),
                               secret=f"{name}-s")
        pod_spec = json.loads(json.dumps(job["spec"]["template"]["spec"]))
        # podman 4.3's substitutions (see the module's docstring): the same file, the same values
        secrets = tmp_path / "secrets"
        secrets.mkdir()
        (secrets / k8s.EXCHANGE_FILE).write_bytes(exchange.secret_file())
        (secrets / k8s.EXCHANGE_FILE).chmod(0o400)
        pod_spec["volumes"] = [{"name": "exchange", "hostPath": {"path": str(secrets), "type": "Directory"}}]
        (c,) = pod_spec["containers"]
        assert c["command"][:2] == ["python3", "-c"]
        # podman's YAML round trip (yaml.v3 out, yaml.v2 in) breaks on the multi-line script: the same script,
        # carried in base64 (python3 -c sees the same argv)
        c["command"][2] = f"import base64; exec(base64.b64decode({base64.b64encode(c['command'][2].encode())!r}))"
        c["env"] = [{"name": e["name"], "value": spec.environment[e["name"]]} for e in c["env"]]
        for key in ("automountServiceAccountToken", "enableServiceLinks", "securityContext"):
            pod_spec.pop(key)  # pod-level fields podman ignores or lacks (seccomp RuntimeDefault is its default)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": job["metadata"]["labels"]},
               "spec": pod_spec}
        play = tmp_path / "pod.yaml"
        play.write_text(json.dumps(pod))  # JSON is YAML; go-yaml misreads PyYAML's dump of the bootstrap
        conf = tmp_path / "containers.conf"
        # runc, not podman's default crun: crun refuses hosts whose cgroups are mixed v1 and v2 ("hybrid mode
        # not supported", a kernel that puts hugetlb on cgroup2), which runc, Docker's own, runs on
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n'
                        '[engine]\nruntime = "runc"\n')
        env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        try:
            played = subprocess.run(["podman", "kube", "play", str(play)], check=False, capture_output=True,
                                    text=True, env=env, timeout=120)
            assert played.returncode == 0, played.stderr
            code = subprocess.run(["podman", "wait", f"{name}-{k8s.CONTAINER}"], capture_output=True, text=True,
                                  check=True, timeout=120).stdout.strip()
            log = subprocess.run(["podman", "logs", f"{name}-{k8s.CONTAINER}"], check=False, capture_output=True,
                                 text=True, timeout=60)
            output = log.stdout + log.stderr
        finally:
            subprocess.run(["podman", "pod", "rm", "-f", name], check=False, capture_output=True, env=env, timeout=60)
        assert exchange.wait_upload(30)
        assert code == "0", output
    assert "pipeline uid=1000 home=/tmp/soopervisor-home cwd=/workspace" in output
    assert "token unreadable" in output and "TOKEN READABLE" not in output, output
    assert "secret is set" in output and SECRET not in output
    assert "CapEff:\t0000000000000000" in output, "the pipeline user kept capabilities"
    assert exchange.collected and exchange.served == 1 and exchange.error is None
    assert received == {"artifacts/copied.txt": b"from the host\n"}

"""The Kubernetes executor, through the official client, against a stateful fake API on loopback.

No cluster runs here: tests/fakes/kubernetes_api.py plays the API server (schema-validating
every object posted), the Job controller (podFailurePolicy, backoffLimit) and a kubelet whose
"container" is a Python program that does what the bootstrap does over real HTTP: reads the
mounted exchange file, fetches the inputs from the run's real Exchange, uploads artifacts.
The pod template itself runs for real under podman in tests/test_kubernetes_podman.py;
test_kind_cluster runs against a real cluster when KUBECONFIG names one.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from soopervisor.engines import Engine, KubernetesSettings
from soopervisor.errors import UsageError
from soopervisor.executors import RUN_LABEL, ContainerSpec, offnode
from soopervisor.executors import kubernetes as k8s

from .fakes.kubernetes_api import FakeKubernetes, validate

pytestmark = pytest.mark.xdist_group("kubernetes")

TOKEN = "fake-cluster-token-8c1f"
SECRET = "s3cr3t-value-never-in-a-manifest"
EXCHANGE_FILE = f"{k8s.SECRETS_DIR}/{k8s.EXCHANGE_FILE}"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One fake API for the session (reset per test) and a kubeconfig naming it."""
    fake = FakeKubernetes(TOKEN, namespaces=("default", "runs"))
    server = fake.start()
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "tester"}}],
    }))
    yield fake, kubeconfig
    fake.stop()


@pytest.fixture
def fake(cluster):
    fake, _ = cluster
    fake.reset()
    yield fake
    fake.reset()


def engine(kubeconfig: Path, namespace: str = "runs") -> Engine:
    return Engine("k8s", type="kubernetes", exchange_address="127.0.0.1", source="the test",
                  kubernetes=KubernetesSettings(kubeconfig=kubeconfig, context="fake", namespace=namespace,
                                                service_account="soopervisor-runner"))


@pytest.fixture
def executor(cluster, fake):
    return k8s.KubernetesExecutor(engine(cluster[1]), poll=0.05)


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def spec(run_id: str = "r-1", **kw) -> ContainerSpec:
    base = {
        "image": "registry.test/env@sha256:" + "a" * 64,
        "command": ["bash", "/soopervisor/run.sh"],
        "archives": [tar_of({"workspace/pipeline.yaml": b"tasks: []\n"}), tar_of({"soopervisor/run.sh": b"echo\n"})],
        "environment": {"API_KEY": SECRET, "SOOPERVISOR_RUN_ID": run_id},
        "labels": {RUN_LABEL: run_id},
        "cpus": 1.5,
        "memory": 512 << 20,
        "timeout": 120,
    }
    return ContainerSpec(**{**base, **kw})


def bootstrap_like(lines: list[str], code: int = 0, artifacts: dict[str, bytes] | None = None,
                   before_upload=None):
    """A container program doing what the bootstrap does, over HTTP to the run's Exchange."""
    def program(c) -> int:
        url, token = c.files[EXCHANGE_FILE].decode().split("\n")[:2]
        auth = {"Authorization": f"Bearer {token}"}
        with urllib.request.urlopen(urllib.request.Request(url + "/inputs", headers=auth)) as r:
            data = r.read()
        names = []
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|", ignore_zeros=True) as tar:
            names = [m.name for m in tar]
        c.write(f"inputs: {' '.join(sorted(names))}")
        c.write(f"API_KEY is {'set' if c.env.get('API_KEY') == SECRET else 'missing'}")
        for line in lines:
            c.check()
            c.write(line)
        if before_upload is not None:
            before_upload(c)
        if artifacts is not None:
            body = tar_of({f"artifacts/{k}": v for k, v in artifacts.items()})
            req = urllib.request.Request(url + "/artifacts", data=body, method="PUT",
                                         headers={**auth, "Content-Type": "application/x-tar"})
            urllib.request.urlopen(req).read()
        return code
    return program


class Collected:
    def __init__(self) -> None:
        self.data = b""

    def __call__(self, chunks) -> None:
        self.data = b"".join(chunks)

    def names(self) -> list[str]:
        with tarfile.open(fileobj=io.BytesIO(self.data)) as tar:
            return sorted(tar.getnames())


def run(executor, s: ContainerSpec, collect=None, seen: tuple[bytes, threading.Event] | None = None):
    out: list[bytes] = []

    def on_output(chunk: bytes) -> None:
        out.append(chunk)
        if seen is not None and seen[0] in b"".join(out):
            seen[1].set()

    result = executor.execute(s, on_output, collect_to=collect)
    return result, b"".join(out).decode()


def nothing_left(fake: FakeKubernetes) -> None:
    assert fake.jobs == {} and fake.secrets == {}, (fake.jobs.keys(), fake.secrets.keys())
    assert fake.pods == {}, "the Job was not deleted with propagationPolicy Foreground: its pods were orphaned"


# -- manifests --------------------------------------------------------------------------------------

def test_manifests_follow_the_openapi_schema_and_keep_secrets_out_of_the_pod_spec(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    s = spec(ca_bundle=ca, network="host")
    command = k8s.pod_command(s)
    job = k8s.job_manifest("sv-r-1-abc123", s, image=s.image, command=command, secret="sv-r-1-abc123-secret",
                           service_account="soopervisor-runner")
    secret = k8s.secret_manifest("sv-r-1-abc123-secret", s, "http://10.0.0.4:4567", "tok",
                                 owner={"name": "sv-r-1-abc123", "uid": "0b9c6f3e-1d2a-4c55-9f00-2a6f1d9e7b11"})
    import kubernetes_validate

    for version in ("1.31.0", kubernetes_validate.latest_version()):
        for manifest in (job, secret):
            kubernetes_validate.validate(manifest, version, strict=True)  # raises on any schema error
    # the validator does catch a wrong manifest (a string where an integer goes, an unknown field)
    assert validate({**job, "spec": {**job["spec"], "backoffLimit": "none"}})
    assert validate({**job, "spec": {**job["spec"], "backofLimit": 0}})

    assert offnode.EXCHANGE_PATH == EXCHANGE_FILE  # where the bootstrap reads it
    text = json.dumps(job)
    assert SECRET not in text and "tok" not in text.replace("token", "")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    for name in s.environment:
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"] == "sv-r-1-abc123-secret"
    assert env["SSL_CERT_FILE"] == {"name": "SSL_CERT_FILE", "value": "/etc/soopervisor/ca.crt"}
    exchange = next(v for v in pod["volumes"] if v["name"] == "exchange")["secret"]
    assert exchange["defaultMode"] == 0o400 and exchange["items"][0]["mode"] == 0o400
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] == 120
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    assert rules[1]["action"] == "FailJob" and rules[1]["onExitCodes"]["operator"] == "NotIn"
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "soopervisor-runner" and pod["hostNetwork"] is True
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
    assert c["resources"] == {"requests": {"cpu": "1500m", "memory": str(512 << 20)},
                              "limits": {"cpu": "1500m", "memory": str(512 << 20)}}
    assert job["metadata"]["labels"][RUN_LABEL] == "r-1"
    assert job["spec"]["template"]["metadata"]["labels"][RUN_LABEL] == "r-1"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert c["command"][:2] == ["python3", "-c"] and c["command"][-4:] == ["env", "--chdir=/workspace", *s.command]
    assert "workingDir" not in c  # it arrives with the inputs: a runtime may refuse a missing one


def test_log_timestamps_are_parsed_to_the_nanosecond():
    assert k8s.parse_timestamp("2026-12-02T16:00:00Z") + 120_000_000 == k8s.parse_timestamp("2026-12-02T16:00:00.12Z")
    assert k8s.parse_timestamp("2026-12-02T16:00:00.000000001Z") % 1_000_000_000 == 1
    with pytest.raises(ValueError):
        k8s.parse_timestamp("2026-12-02T16:00:00+01:00")


# -- runs against the fake API ------------------------------------------------------------------------

def test_a_run_streams_its_log_collects_artifacts_and_leaves_nothing(fake, executor):
    fake.program = bootstrap_like([f"line {i}" for i in range(5)], artifacts={"out.csv": b"a,b\n1,2\n"})
    collected = Collected()
    result, log = run(executor, spec(), collected)
    assert result.exit_code == 0 and result.collected and not result.cancelled, log
    assert "inputs: soopervisor/run.sh workspace/pipeline.yaml" in log
    assert "API_KEY is set" in log  # secretKeyRef resolved from the run's Secret
    assert [ln for ln in log.splitlines() if ln.startswith("line ")] == [f"line {i}" for i in range(5)]
    assert collected.names() == ["artifacts/out.csv"]
    (job,) = [o for o in fake.posted if o["kind"] == "Job"]
    (secret,) = [o for o in fake.posted if o["kind"] == "Secret"]
    assert SECRET not in json.dumps(job)
    assert job["metadata"]["labels"][RUN_LABEL] == "r-1"
    assert secret["metadata"]["labels"][RUN_LABEL] == "r-1"
    nothing_left(fake)


def test_a_follow_cut_by_the_api_server_resumes_after_the_last_line(fake, executor):
    fake.drop_follow_after = 4  # the API server ends the stream mid-line, as a watch timeout does
    fake.program = bootstrap_like([f"step {i}" for i in range(12)], artifacts={})
    result, log = run(executor, spec(), Collected())
    assert result.exit_code == 0, log
    steps = [ln for ln in log.splitlines() if ln.startswith("step")]
    assert steps == [f"step {i}" for i in range(12)], "lines lost or repeated across the reconnect"
    assert fake.follows >= 2, "the stream was never reconnected"
    nothing_left(fake)


def test_an_evicted_pod_is_replaced_and_the_run_goes_on(fake, executor):
    attempts = []

    def program(c):
        attempts.append(c.pod.name)
        if len(attempts) == 1:
            c.write("first pod working")
            c.evict()
        return bootstrap_like(["second pod done"], artifacts={"out.txt": b"ok"})(c)

    fake.program = program
    collected = Collected()
    result, log = run(executor, spec(), collected)
    assert len(attempts) == 2 and result.exit_code == 0 and result.collected, log
    assert "first pod working" in log and "second pod done" in log
    assert "was disrupted (EvictionByEvictionAPI)" in log and f"replaced its pod with {attempts[1]}" in log
    assert collected.names() == ["artifacts/out.txt"]
    nothing_left(fake)


def test_a_failed_pipeline_is_its_exit_code_and_never_a_second_pod(fake, executor):
    pods = []

    def program(c):
        pods.append(c.pod.name)
        return bootstrap_like(["Traceback: boom"], code=3)(c)

    fake.program = program
    result, log = run(executor, spec(), Collected())
    assert result.exit_code == 3 and not result.collected and "Traceback: boom" in log
    assert len(pods) == 1, "backoffLimit 0 / FailJob: a failed pipeline must not run again"
    nothing_left(fake)


def test_a_pod_that_cannot_reach_the_exchange_says_which_setting_to_fix(fake, executor):
    fake.program = lambda c: (c.write("soopervisor: could not fetch the run's inputs from the exchange"),
                              offnode.INPUTS_FAILED)[-1]
    result, log = run(executor, spec(), Collected())
    assert result.exit_code == offnode.INPUTS_FAILED and not result.collected
    assert "the pod never reached this machine's exchange at http://127.0.0.1:" in log
    assert "check `exchange_address` of executor 'k8s'" in log
    nothing_left(fake)


def start_working(fake, executor, run_spec) -> tuple[threading.Thread, dict]:
    """A run whose pod prints "working" and waits to be deleted, started in a thread until it prints;
    the thread puts (result, log) into the dict under "r"."""
    started = threading.Event()

    def program(c):
        c.write("working")
        c.wait_gone(60)
        return 0

    fake.program = program
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(r=run(executor, run_spec, Collected(), (b"working", started))))
    t.start()
    assert started.wait(30)
    return t, box


def test_cancel_deletes_the_job_and_its_pod(fake, executor):
    t, box = start_working(fake, executor, spec())
    executor.cancel()
    t.join(30)
    result, log = box["r"]
    assert result.cancelled and result.exit_code == k8s.KILLED and not result.collected
    assert "working" in log
    nothing_left(fake)


def test_another_process_finds_the_run_by_label_and_stops_it(fake, cluster, executor):
    t, box = start_working(fake, executor, spec("r-77"))
    other = k8s.KubernetesExecutor(engine(cluster[1]), poll=0.05)  # as after a restart: a new client
    assert other.labelled().get("r-77") == 1  # (the build engine's labelled containers count too)
    assert other.kill_by_label("r-77") == 1
    t.join(30)
    result, log = box["r"]
    assert result.exit_code == k8s.KILLED and "was deleted while the run was going on" in log
    assert "r-77" not in other.labelled()
    nothing_left(fake)


def test_secrets_are_never_in_what_the_api_returns_to_a_listing(fake, executor):
    """A Secret's data is only in the Secret: Job and pod listings (what ``kubectl get -o yaml`` shows) hold none."""
    seen = {}

    def program(c):
        api = executor.api_client
        seen["jobs"] = json.dumps(api.sanitize_for_serialization(executor.batch.list_namespaced_job("runs")))
        seen["pods"] = json.dumps(api.sanitize_for_serialization(executor.core.list_namespaced_pod("runs")))
        return 0

    fake.program = program
    result, _ = run(executor, spec(), Collected())
    assert result.exit_code == 0
    assert SECRET not in seen["jobs"] and SECRET not in seen["pods"] and "secretKeyRef" in seen["pods"]


def test_a_timeout_deletes_the_job_and_says_so(fake, executor):
    fake.program = lambda c: (c.write("slow"), c.wait_gone(60), 0)[-1]
    result, log = run(executor, spec(timeout=1.5), Collected())
    assert result.timed_out and not result.cancelled and result.exit_code == k8s.KILLED and "slow" in log
    nothing_left(fake)


def test_an_image_the_nodes_cannot_pull_is_a_usage_error_naming_the_registry(fake, cluster):
    e = Engine("k8s", type="kubernetes", exchange_address="127.0.0.1", registry="registry.test", source="the test",
               kubernetes=KubernetesSettings(kubeconfig=cluster[1], namespace="runs"))
    s = spec()
    fake.unpullable.add(s.image)
    executor = k8s.KubernetesExecutor(e, poll=0.05, grace=0.5)  # (60 s by default: the kubelet retries)
    executor.publish = lambda image, note=None: image  # the push itself: test_kubernetes_podman.py
    with pytest.raises(UsageError) as err:
        executor.execute(s, lambda b: None, collect_to=Collected())
    assert "cannot pull the pipeline's image: ErrImagePull" in err.value.message
    assert "connection refused" in err.value.message
    assert "registry.test" in err.value.hint
    nothing_left(fake)


def test_the_secret_is_owned_by_the_job(fake, executor):
    """If we die before deleting it, the cluster's garbage collector removes it with the Job (its ttl)."""
    owners = {}

    def program(c):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not owners:
            with fake.lock:
                (secret,) = fake.secrets.values()
                job = next(iter(fake.jobs.values()))
                refs = secret["metadata"].get("ownerReferences") or []
                if refs:
                    owners.update(ref=refs[0], uid=job["metadata"]["uid"])
            c.pod.changed.acquire()
            c.pod.changed.wait(0.05)  # the patch follows the Job's creation: wait for it, briefly
            c.pod.changed.release()
        return 0

    fake.program = program
    result, _ = run(executor, spec(), Collected())
    assert result.exit_code == 0
    assert owners["ref"]["kind"] == "Job" and owners["ref"]["uid"] == owners["uid"]


# -- a whole run, through the run service --------------------------------------------------------------

def kill_when_gone(c, container) -> None:
    """The pod deleted (cancel, timeout) or evicted: its container is killed, as the kubelet does."""
    if c.wait_gone(3600):
        with contextlib.suppress(Exception):  # it ended and was removed meanwhile
            container.kill()


def docker_kubelet(client):
    """A "kubelet" whose runtime is the main Docker engine: the pod's container for real, from the
    manifest's image, command, env, mounted files and capabilities (host network: the node's)."""
    def program(c) -> int:
        spec = c.spec["containers"][0]
        caps = spec["securityContext"]["capabilities"]
        container = client.containers.create(
            spec["image"], spec["command"], environment=c.env, network_mode="host", user="0",
            cap_drop=caps["drop"], cap_add=caps["add"], security_opt=["no-new-privileges"],
            labels={"soopervisor.test-kubelet": c.pod.name})
        try:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for path, data in c.files.items():
                    info = tarfile.TarInfo(path.lstrip("/"))
                    info.size, info.mode = len(data), 0o400 if path == EXCHANGE_FILE else 0o444
                    tar.addfile(info, io.BytesIO(data))
            container.put_archive("/", buf.getvalue())
            container.start()
            threading.Thread(target=kill_when_gone, args=(c, container), daemon=True).start()
            rest = b""
            for chunk in container.logs(stream=True, follow=True):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in lines:
                    c.write(line.decode("utf-8", "replace"))
            if rest:
                c.write(rest.decode("utf-8", "replace"))
            return container.wait()["StatusCode"]
        finally:
            container.remove(force=True)
    return program


@pytest.mark.docker
def test_a_run_through_the_run_service_on_kubernetes(tmp_path, engine, home, cluster, fake, monkeypatch):
    """soopervisor.run with a kubernetes engine: environment built on the build engine, the pipeline as a Job
    (the fake API's pod run for real on the main engine): log streamed and redacted, artifacts stored."""
    import soopervisor

    from .projects import function_task, make_project

    folder = Path(os.environ["SOOPERVISOR_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    write_executors(folder, f"""executors:
  k8s: {{type: kubernetes, kubeconfig: "{cluster[1]}", namespace: runs, exchange_address: 127.0.0.1, build: local}}
""")
    for left in engine.containers.list(all=True, filters={"label": "soopervisor.test-kubelet"}):
        left.remove(force=True)  # a crashed session's pod container
    token = "k8s-run-token-5f2e9a"
    monkeypatch.setenv("K8S_TEST_TOKEN", token)
    fake.program = docker_kubelet(engine)
    project = make_project(tmp_path, function_task(
        "print('HELLO FROM KUBERNETES uid', os.getuid(), flush=True)\n"
        "print('the token is', os.environ['K8S_TEST_TOKEN'], flush=True)"))
    lines: list[str] = []
    run = soopervisor.run(project, executor="k8s", secrets=["K8S_TEST_TOKEN"], on_line=lines.append)
    log = Path(run.log_path).read_text()
    assert run.status == "succeeded", log[-3000:]
    assert run.engine == "k8s" and run.executor == "kubernetes (current context, namespace runs)"
    assert "HELLO FROM KUBERNETES uid 1000" in log and "the token is ***" in log
    assert token not in log and token not in "\n".join(lines)
    manifest = json.loads((Path(run.storage_url) / run.project / run.commit / run.id / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and "output/emitted.txt" in {f["path"] for f in manifest["files"]}
    (job,) = [o for o in fake.posted if o["kind"] == "Job"]
    assert token not in json.dumps(job) and job["metadata"]["labels"][RUN_LABEL] == run.id
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["K8S_TEST_TOKEN"]["valueFrom"]["secretKeyRef"]["name"].startswith("sv-")
    nothing_left(fake)
    assert not engine.containers.list(all=True, filters={"label": "soopervisor.test-kubelet"})


# -- configuration and errors ------------------------------------------------------------------------

def test_a_namespace_the_cluster_lacks_is_a_usage_error_naming_the_fix(fake, cluster):
    with pytest.raises(UsageError) as e:  # when the executor is made: before any environment is built
        k8s.KubernetesExecutor(engine(cluster[1], namespace="nope"))
    assert "no namespace 'nope'" in e.value.message and "kubectl create namespace nope" in e.value.hint
    assert SECRET not in e.value.message + e.value.hint
    assert fake.jobs == {} and fake.secrets == {}


def test_a_wrong_token_is_a_usage_error(fake, cluster, tmp_path):
    bad = tmp_path / "config"
    bad.write_text(cluster[1].read_text().replace(TOKEN, "wrong"))
    with pytest.raises(UsageError) as e:
        k8s.KubernetesExecutor(engine(bad)).labelled()
    assert "refused to list job" in e.value.message and "Role" in e.value.hint


def test_a_missing_kubeconfig_is_exit_2(tmp_path):
    with pytest.raises(UsageError) as e:
        k8s.KubernetesExecutor(engine(tmp_path / "absent"))
    assert e.value.exit_code == 2 and "cannot load the kubeconfig" in e.value.message


def test_a_kubeconfig_that_is_not_yaml_is_exit_2_without_its_content(tmp_path):
    broken = tmp_path / "kubeconfig"
    broken.write_text('token: "s3cr3t-kube-token\n  : [x\n')
    with pytest.raises(UsageError) as e:
        k8s.KubernetesExecutor(engine(broken))
    assert e.value.exit_code == 2 and "cannot load the kubeconfig" in e.value.message
    assert "s3cr3t" not in e.value.message + (e.value.hint or "")


def write_executors(folder: Path, text: str) -> Path:
    path = folder / "executors.yaml"
    path.write_text(text)
    return path


def test_a_kubernetes_entry_is_read_and_checked(tmp_path, cluster):
    from soopervisor import engines

    kubeconfig = cluster[1]
    path = write_executors(tmp_path, f"""
executors:
  laptop: {{type: docker}}
  k8s: {{type: kubernetes, kubeconfig: "{kubeconfig}", context: fake, namespace: runs, build: laptop,
         registry: "127.0.0.1:5000", exchange_address: 127.0.0.1, slots: 10, service_account: soopervisor-runner}}
default: k8s
""")
    e = engines.load(path).pick(None)
    assert e.type == "kubernetes" and e.slots == 10 and e.registry == "127.0.0.1:5000"
    assert e.kubernetes == KubernetesSettings(kubeconfig=kubeconfig, context="fake", namespace="runs",
                                              build="laptop", service_account="soopervisor-runner")
    assert e.where == "kubernetes (fake, namespace runs)"

    bad = {
        "exchange_address: 127.0.0.1,": ("`exchange_address` is missing", "add `exchange_address:"),
        "build: laptop,": ("`build: lap` names no executor", "fix the entry"),
        "namespace: runs,": ("`namespace: Runs_1` is not a Kubernetes name", "fix the entry"),
        "slots: 10,": ("unknown key 'slot'", "fix the entry"),
    }
    replacement = {"exchange_address: 127.0.0.1,": "", "build: laptop,": "build: lap,",
                   "namespace: runs,": "namespace: Runs_1,", "slots: 10,": "slot: 10,"}
    text = path.read_text()
    for old, (message, hint) in bad.items():
        write_executors(tmp_path, text.replace(old, replacement[old]))
        with pytest.raises(UsageError) as err:
            engines.load(path).pick("k8s")
        assert message in err.value.message and "'k8s'" in err.value.message and hint in err.value.hint
        assert err.value.exit_code == 2


# -- a real cluster ----------------------------------------------------------------------------------

@pytest.mark.kind
@pytest.mark.skipif(not os.environ.get("SOOPERVISOR_KIND_KUBECONFIG"),
                    reason="no Kubernetes cluster here: set SOOPERVISOR_KIND_KUBECONFIG to a kind cluster's "
                           "kubeconfig (kind create cluster; kind get kubeconfig > FILE) to run it")
def test_kind_cluster(tmp_path):
    """A run on a real cluster: the Job runs the bootstrap, which reaches this host's exchange."""
    kubeconfig = Path(os.environ["SOOPERVISOR_KIND_KUBECONFIG"])
    image = os.environ.get("SOOPERVISOR_KIND_IMAGE", "python:3.11-slim")  # loaded with `kind load docker-image`
    address = os.environ.get("SOOPERVISOR_KIND_EXCHANGE", "172.18.0.1")  # the host on kind's docker network
    e = Engine("kind", type="kubernetes", exchange_address=address, source="the test",
               kubernetes=KubernetesSettings(kubeconfig=kubeconfig, namespace="default"))
    executor = k8s.KubernetesExecutor(e)
    script = "mkdir -p /soopervisor/artifacts && id -u > /soopervisor/artifacts/uid && cat /workspace/pipeline.yaml"
    collected = Collected()
    started = time.monotonic()
    result, log = run(executor, spec(image=image, command=["bash", "-c", script], cpus=None, memory=None,
                                     archives=[tar_of({"workspace/pipeline.yaml": b"tasks: []\n"})]), collected)
    assert result.exit_code == 0 and result.collected, log
    assert "tasks: []" in log and collected.names() == ["artifacts", "artifacts/uid"]
    assert executor.labelled() == {}, f"left behind after {time.monotonic() - started:.0f} s"


def test_executors_reports_whether_the_cluster_answers(fake, cluster, tmp_path, home):
    from soopervisor import engines

    folder = Path(os.environ["SOOPERVISOR_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    entry = (f'{{type: kubernetes, kubeconfig: "{cluster[1]}", namespace: runs, registry: "127.0.0.1:5000", '
             'exchange_address: 127.0.0.1, slots: 4}')
    write_executors(folder, f"executors:\n  k8s: {entry}\n  gone: {entry.replace('runs', 'nope')}\n")
    bad = tmp_path / "bad-config"
    bad.write_text(cluster[1].read_text().replace(TOKEN, "wrong"))
    write_executors(folder, (folder / "executors.yaml").read_text() +
                    f"  denied: {entry.replace(str(cluster[1]), str(bad))}\n")
    # what `soopervisor executors --json` prints (the command itself: tests/test_remote_engines.py)
    report = {e["name"]: e for e in json.loads(json.dumps(engines.report()))["executors"]}
    assert report["k8s"]["answers"] is True and report["k8s"]["server_version"] == "v1.31.0-fake"
    assert report["k8s"]["where"] == "kubernetes (current context, namespace runs)" and report["k8s"]["slots"] == 4
    assert report["k8s"]["running"] == 0
    assert report["gone"]["answers"] is False and "404" in report["gone"]["reason"]
    assert report["denied"]["answers"] is False and "401" in report["denied"]["reason"]
    assert TOKEN not in json.dumps(report) and "wrong" not in json.dumps(report)

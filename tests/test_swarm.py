"""Runs on a real Docker Swarm: a manager and two workers (three dockerd, tests/swarm.py) and a local
docker-registry, started once per session by the first test that asks (xdist_group "swarm").

The swarm's nodes reach no outside network: the environment image of the test projects is
built on the main engine and reaches the swarm through the local registry (image ids survive
a push and a pull, so a run on the swarm is an environment cache hit). Run containers use
host networking: they reach the registry and the run's exchange on 127.0.0.1.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from soopervisor.engines import Engine
from soopervisor.executors import ContainerSpec, ExecResult, for_engine

from .conftest import cli
from .projects import function_task, make_project
from .test_offnode import tar
from .test_remote_engines import runs_json, write_executors

pytestmark = pytest.mark.xdist_group("swarm")

PROBE = function_task(
    "print('HELLO FROM THE SWARM uid', os.getuid(), flush=True)\n"
    "try:\n"
    "    open('/run/secrets/soopervisor-exchange').read()\n"
    "    print('EXCHANGE TOKEN READABLE', flush=True)\n"
    "except OSError as e:\n"
    "    print('EXCHANGE TOKEN UNREADABLE', type(e).__name__, flush=True)\n"
    "print('THE SECRET IS', os.environ.get('MY_TOKEN'), flush=True)\n"
    "ca = os.environ.get('SSL_CERT_FILE') or ''\n"
    "print('CA BYTES', os.path.getsize(ca) if os.path.isfile(ca) else 0, flush=True)\n"
)
SLEEPER = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")


@pytest.fixture(scope="session")
def swarm(docker_client, base_image):
    """The three-node swarm and its registry, holding the base image (tests/swarm.py); stopped and
    swept at the session's end (and swept at the next start, should this session crash)."""
    from .swarm import start_swarm

    cluster = start_swarm()
    try:
        cluster.push(base_image)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def swarm_env(swarm, base_image):
    """The test projects' environment image, built on the main engine, in the registry and the manager."""
    with tempfile.TemporaryDirectory(prefix="sv-swarm-env-") as tmp:
        project = make_project(Path(tmp), PROBE)
        env = {**os.environ, "SOOPERVISOR_HOME": f"{tmp}/home", "SOOPERVISOR_CONFIG_DIR": f"{tmp}/config",
               "SOOPERVISOR_IMAGE": base_image, "SOOPERVISOR_DOWNLOAD_CACHE": "machine",
               "SOOPERVISOR_NO_KEYRING": "1"}
        for name in ("SOOPERVISOR_EXECUTOR", "SOOPERVISOR_STORAGE", "DOCKER_HOST"):
            env.pop(name, None)
        proc = subprocess.run([sys.executable, "-m", "soopervisor", "run", str(project)], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        found = re.search(r"(soopervisor-env:[0-9a-f]{20})", proc.stdout + proc.stderr)
        assert found, proc.stdout[-3000:]
    swarm.push(found.group(1))
    return found.group(1)


def engine_of(swarm, **extra) -> Engine:
    entry = swarm.entry(**extra)
    return Engine(name="swarm-a", type="swarm", host=entry["host"], registry=entry["registry"],
                  exchange_address=entry["exchange_address"], network=entry["network"],
                  constraints=tuple(entry.get("constraints", ())), slots=entry["slots"], source="the test")


def leftovers(swarm) -> tuple[list, list]:
    """Services, and secrets and configs, of soopervisor runs still in the swarm."""
    api = swarm.manager.client().api
    label = {"label": "soopervisor.run"}
    return api.services(filters=label), api.secrets(filters=label) + api.configs(filters=label)


def script_spec(image: str, run_id: str, script: str, **kw) -> ContainerSpec:
    return ContainerSpec(image=image, command=["bash", "/soopervisor/run.sh"],
                         archives=[tar({"soopervisor/run.sh": (script.encode(), 0o755)})],
                         labels={"soopervisor.run": run_id}, **kw)


class Running:
    """``execute`` of one spec in a thread; its output as it comes."""

    def __init__(self, executor, spec: ContainerSpec, collect_to=None) -> None:
        self.executor, self.output = executor, b""
        self.result: ExecResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._go, args=(spec, collect_to), daemon=True)
        self.thread.start()

    def _go(self, spec, collect_to) -> None:
        try:
            self.result = self.executor.execute(spec, self._out, collect_to=collect_to)
        except BaseException as e:  # noqa: BLE001 - the test asserts it
            self.error = e

    def _out(self, chunk: bytes) -> None:
        self.output += chunk

    def wait_for(self, text: bytes, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.thread.is_alive() and time.monotonic() < deadline, (self.output, self.error, self.result)
            time.sleep(0.05)

    def join(self, timeout: float = 120) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), self.output


# -- a real pipeline run through the CLI (RunService) ------------------------------------------------
@pytest.mark.docker
def test_a_run_on_the_swarm_streams_redacts_stores_and_leaves_nothing(tmp_path, engine, home, swarm, swarm_env):
    write_executors(home, {"executors": {"swarm-a": swarm.entry(constraints=["node.role==worker"])}})
    project = make_project(tmp_path, PROBE)
    secret = "sw4rm-S3cret-Zq"
    since = int(time.time()) - 1
    bundle = tmp_path / "proxy-ca.pem"  # any PEM file: the CA bundle a proxy would need
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    proc = cli("run", str(project), "--executor", "swarm-a", "--secret", "MY_TOKEN", "--ca-bundle", str(bundle),
               env={"MY_TOKEN": secret}, check=0)
    out = proc.stdout + proc.stderr
    assert "HELLO FROM THE SWARM uid 1000" in proc.stdout  # streamed from the node; the pipeline is not root
    assert "EXCHANGE TOKEN UNREADABLE PermissionError" in proc.stdout
    assert "THE SECRET IS" in proc.stdout and secret not in out  # it reached the pipeline, masked in the log
    assert f"environment cache hit ({swarm_env})" in out
    assert f"CA BYTES {bundle.stat().st_size}" in proc.stdout  # a Swarm config at the CA path
    placed = re.findall(r"running on swarm node ([0-9a-z]{12})", out)
    workers = {v[:12] for k, v in swarm.node_ids().items() if k != "m"}
    assert len(placed) == 1 and placed[0] in workers, out[-3000:]

    (run,) = runs_json()
    assert run["status"] == "succeeded", run
    assert run["engine"] == "swarm-a" and run["executor"] == f"swarm at {swarm.manager.host}"
    stored = Path(run["storage_url"]) / run["project"] / run["commit"] / run["id"]
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert "output/emitted.txt" in {f["path"] for f in manifest["files"]}
    assert secret not in Path(run["log_path"]).read_text() and secret not in json.dumps(manifest)
    # the run's container ran in the swarm, never on the main engine; nothing of it is left
    assert not list(engine.events(since=since, until=int(time.time()) + 1, decode=True,
                                  filters={"type": "container", "label": f"soopervisor.run={run['id']}"}))
    assert leftovers(swarm) == ([], [])
    report = json.loads(cli("executors", "--json", check=0).stdout)
    (entry,) = [e for e in report["executors"] if e["name"] == "swarm-a"]
    assert entry["answers"] and entry["nodes_ready"] == 3 and entry["running"] == 0, entry
    assert entry["registry"] == swarm.registry.address and entry["constraints"] == ["node.role==worker"]


# -- several runs at once: spread over the nodes; stop by label, cancel, adoption -------------------------
@pytest.mark.docker
def test_runs_spread_over_the_nodes_and_are_found_and_stopped_by_label(swarm, base_image):
    executors = [for_engine(engine_of(swarm)) for _ in range(3)]
    script = "echo STARTED; sleep 120\n"
    secret = "never-in-the-spec-7Q"
    runs = [Running(ex, script_spec(base_image, f"spread-{i}", script, cpus=0.1, memory=64 << 20,
                                    environment={"API_TOKEN": secret}))
            for i, ex in enumerate(executors)]
    for r in runs:
        r.wait_for(b"STARTED")
    # what the manager holds of a run: limits and reservations; secrets as root-only Swarm secrets only
    (service,) = swarm.manager.client().api.services(filters={"label": "soopervisor.run=spread-0"})
    template = service["Spec"]["TaskTemplate"]
    assert template["Resources"]["Limits"] == {"NanoCPUs": 100_000_000, "MemoryBytes": 64 << 20}
    assert template["Resources"]["Reservations"] == {"NanoCPUs": 100_000_000, "MemoryBytes": 64 << 20}
    assert template["RestartPolicy"]["Condition"] == "none"
    assert service["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    refs = template["ContainerSpec"]["Secrets"]
    assert {r["File"]["Name"] for r in refs} == {"soopervisor-exchange", "soopervisor-env"}
    assert all((r["File"]["UID"], r["File"]["Mode"]) == ("0", 0o400) for r in refs)
    assert secret not in json.dumps(service) and "API_TOKEN" not in json.dumps(service)
    # the scheduler put each on its own node
    assert len({ex.node for ex in executors}) == 3, [ex.node for ex in executors]
    assert set(swarm.node_ids().values()) == {ex.node for ex in executors}

    # another process (a restarted server) finds them by label; stop one that way, kill another, cancel one
    other = for_engine(engine_of(swarm))
    assert other.labelled() == {"spread-0": 1, "spread-1": 1, "spread-2": 1}
    assert other.remove_by_label("spread-0") == 1
    assert other.kill_by_label("spread-1") == 1
    executors[2].cancel()
    for r in runs:
        r.join(60)
        assert r.error is None, r.error
        assert not r.result.collected
    assert runs[2].result.cancelled and runs[2].result.exit_code != 0
    assert not runs[0].result.cancelled and runs[0].result.exit_code != 0  # removed from outside: not a success
    assert other.labelled() == {} and leftovers(swarm) == ([], [])


# -- a second task for one run (moby#42741): the service is removed, the run fails saying so ------------------
@pytest.mark.docker
def test_a_second_task_removes_the_service_and_fails_the_run(swarm, base_image):
    from soopervisor.errors import EngineUnavailable

    ex = for_engine(engine_of(swarm))
    run = Running(ex, script_spec(base_image, "twice-1", "echo STARTED; sleep 120\n"))
    run.wait_for(b"STARTED")
    api = swarm.manager.client().api
    (service,) = api.services(filters={"label": "soopervisor.run=twice-1"})
    # a forced update of a job starts it again: the swarm makes a second task for the same run
    swarm.manager.docker("service", "update", "--force", "--detach", service["ID"])
    run.join(60)
    assert isinstance(run.error, EngineUnavailable), (run.error, run.result, run.output)
    assert "second task" in run.error.message and "moby#42741" in run.error.message
    assert leftovers(swarm) == ([], [])


# -- the manager restarts mid-run: the run goes on, every line arrives once -----------------------------------
@pytest.mark.docker
def test_a_manager_restart_mid_run_loses_and_repeats_no_line(swarm, base_image):
    ex = for_engine(engine_of(swarm, constraints=["node.role==worker"]))
    got: list[bytes] = []
    script = ("mkdir -p /soopervisor/artifacts; for i in $(seq 1 40); do echo \"line $i\"; sleep 0.25; done; "
              "echo kept > /soopervisor/artifacts/out.txt\n")
    run = Running(ex, script_spec(base_image, "restart-1", script), collect_to=lambda s: got.append(b"".join(s)))
    run.wait_for(b"line 3\n")
    swarm.restart_manager()
    run.join(180)
    assert run.error is None, (run.error, run.output)
    assert run.result.exit_code == 0 and run.result.collected, run.output
    lines = [x for x in run.output.decode().splitlines() if x.startswith("line ")]
    assert lines == [f"line {i}" for i in range(1, 41)], run.output
    with tarfile.open(fileobj=io.BytesIO(got[0])) as t:
        assert t.extractfile("artifacts/out.txt").read() == b"kept\n"
    assert sum("running on swarm node" in n for n in ex.notes) == 1
    assert leftovers(swarm) == ([], [])


# -- a worker dies mid-run: the run fails saying so, never runs twice, leaves nothing -------------------------
@pytest.mark.docker
def test_a_worker_dying_mid_run_fails_the_run_with_the_reason(tmp_path, engine, home, swarm, swarm_env):
    victim = swarm.workers[-1]
    node_id = swarm.node_ids()[victim.name]
    write_executors(home, {"executors": {"swarm-a": swarm.entry(constraints=[f"node.id=={node_id}"])}})
    project = make_project(tmp_path, SLEEPER)
    log = tmp_path / "out.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project), "--executor", "swarm-a"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while b"SLEEPING" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        victim.kill()
        assert proc.wait(120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    (run,) = runs_json()
    assert run["status"] == "failed", run
    assert "went down mid-run" in run["error"] and node_id[:12] in run["error"], run["error"]
    assert "Traceback" not in text
    assert text.count("running on swarm node") == 1  # one task, never a second
    assert leftovers(swarm) == ([], [])
    # the node comes back: nothing of the run starts again anywhere
    since = int(time.time()) - 1
    swarm.restart_node(victim)
    for node in swarm.nodes:
        started = [e for e in node.client().events(since=since, until=int(time.time()) + 1, decode=True,
                                                   filters={"type": "container", "event": "start"})]
        assert not started, (node.name, started)


# -- the configuration: checked before anything runs ------------------------------------------------
def test_a_swarm_entry_is_read_and_a_bad_one_is_exit_2(tmp_path, home):
    from soopervisor import engines

    write_executors(home, {"executors": {"sw": {
        "type": "swarm", "host": "unix:///tmp/manager.sock", "registry": "127.0.0.1:5000", "network": "host",
        "exchange_address": "10.0.0.4", "slots": 6, "constraints": ["node.role==worker"]}}})
    sw = engines.load().pick("sw")
    assert (sw.type, sw.registry, sw.network, sw.exchange_address, sw.constraints, sw.slots) == (
        "swarm", "127.0.0.1:5000", "host", "10.0.0.4", ("node.role==worker",), 6)
    assert sw.where == "swarm at unix:///tmp/manager.sock"
    project = make_project(tmp_path)
    for entry, what in (
        ({"type": "swarm", "registry": "http://r:5000"}, "no scheme"),
        ({"type": "swarm", "constraints": ["node.role"]}, "placement constraints"),
        ({"type": "swarm", "exchange_address": "10.0.0.4:8080"}, "no port"),
        ({"type": "docker", "registry": "r:5000"}, "unknown key 'registry'"),
    ):
        path = write_executors(home, {"executors": {"sw": entry}})
        proc = cli("run", str(project), "--executor", "sw", check=2)
        assert "'sw'" in proc.stderr and what in proc.stderr and str(path) in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr

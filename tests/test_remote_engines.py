"""Runs on a remote Docker engine: a second, real dockerd on loopback TCP with TLS client certificates.

The engine (tests/conftest.py ``tls_engine``, tests/engines.py) has no route out: its
containers cannot reach PyPI, so the environment image a run needs is built on the main
engine and copied over with ``docker save | docker load``. Image ids survive the copy, so
the run's environment hash (base image id, requirements, installer) is the same and the
remote run is a cache hit, as on a build server whose environment was built once.

The configuration tests at the end need no engine at all.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import soopervisor
from soopervisor.errors import UsageError

from .conftest import cli, free_port
from .projects import function_task, make_project

HELLO = function_task(
    "print('HELLO FROM THE REMOTE ENGINE', flush=True)\n"
    "ca = os.environ.get('SSL_CERT_FILE') or ''\n"
    "print('CA BYTES', os.path.getsize(ca) if os.path.isfile(ca) else 0, flush=True)"
)
SLEEPER = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")


def start_sleeper(tmp_path: Path, executor: str) -> tuple[subprocess.Popen, str]:
    """``soopervisor run`` of a task that sleeps, on ``executor``, until the task has started: (process, run id)."""
    project = make_project(tmp_path, SLEEPER)
    proc = subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project), "--executor", executor],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "SLEEPING" in line:
            return proc, soopervisor.list_runs()[0].id
    proc.wait(60)
    pytest.fail("the run ended before its task started:\n" + "".join(seen[-40:]))


def write_executors(home: Path, data: dict | str) -> Path:
    """The user's executors file (SOOPERVISOR_CONFIG_DIR is the test's own, see conftest's ``home``)."""
    folder = Path(os.environ["SOOPERVISOR_CONFIG_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "executors.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def tls_entry(engine, cert: Path | None = None, key: Path | None = None, port: int | None = None) -> dict:
    pki = engine.pki
    return {"type": "docker", "host": f"tcp://127.0.0.1:{port or engine.port}",
            "tls": {"ca": str(pki.ca), "cert": str(cert or pki.cert), "key": str(key or pki.key)}}


def runs_json() -> list[dict]:
    return json.loads(cli("runs", "--json", check=0).stdout)


def labelled(client, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"soopervisor.run={run_id}"})


def container_events(client, run_id: str, since: int) -> list[dict]:
    """The engine's container events of ``run_id`` since ``since`` (what ran there, even once removed)."""
    return list(client.events(since=since, until=int(time.time()) + 1, decode=True,
                              filters={"type": "container", "label": f"soopervisor.run={run_id}"}))


# -- a full run on the TLS engine ------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_a_run_on_the_tls_engine_streams_stores_and_says_where(tmp_path, engine, home, tls_engine, remote_env):
    write_executors(home, {"executors": {"tls-box": tls_entry(tls_engine)}})
    project = make_project(tmp_path, HELLO)
    since = int(time.time()) - 1
    bundle = tls_engine.pki.ca  # any PEM file: the CA bundle a proxy would need
    proc = cli("run", str(project), "--executor", "tls-box", "--ca-bundle", str(bundle), check=0)
    out = proc.stdout + proc.stderr
    assert "HELLO FROM THE REMOTE ENGINE" in proc.stdout  # the log streamed from the remote engine
    # the CA bundle reached the container through a volume of the engine, not a bind mount of our path
    assert f"CA BYTES {bundle.stat().st_size}" in proc.stdout
    # the volume named by the bundle's content (other tests of the session's engine bring theirs)
    volume = tls_engine.client().volumes.get(f"soopervisor-ca-{hashlib.sha256(bundle.read_bytes()).hexdigest()[:16]}")
    copied = tls_engine.client().containers.run(
        remote_env, ["cat", "/ca/ca.crt"], remove=True, volumes={volume.name: {"bind": "/ca", "mode": "ro"}})
    assert copied == bundle.read_bytes()
    assert f"environment cache hit ({remote_env})" in out  # the copied environment, same hash there
    assert f"on docker at {tls_engine.host}" in out

    (run,) = runs_json()
    assert run["status"] == "succeeded", run
    assert run["executor"] == f"docker at {tls_engine.host}" and run["engine"] == "tls-box"
    manifest = json.loads((Path(run["storage_url"]) / run["project"] / run["commit"] / run["id"]
                           / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert "output/emitted.txt" in {f["path"] for f in manifest["files"]}

    remote, main = tls_engine.client(), engine
    assert container_events(remote, run["id"], since), "the run's containers did not run on the TLS engine"
    assert not container_events(main, run["id"], since), "a container of the run ran on the main engine"
    assert not labelled(remote, run["id"]) and not labelled(main, run["id"])

    # the client key is a secret: its path may be shown, its contents never
    key = tls_engine.pki.key.read_text().strip().splitlines()[1]
    log = Path(run["log_path"]).read_text()
    report = cli("executors", "--json", check=0).stdout
    for text in (out, log, json.dumps(run), report):
        assert key not in text


def _this_checkouts_jupyter_server():
    """jupyter_ext/server.py of this checkout (the installed soopervisor_jupyter may be another worktree's)."""
    import importlib.util

    here = Path(__file__).resolve().parents[1] / "jupyter_ext"
    spec = importlib.util.spec_from_file_location("soopervisor_jupyter_here", here / "__init__.py",
                                                  submodule_search_locations=[str(here)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{spec.name}.server")


def test_python_api_and_jupyter_setting_pick_the_engine(tmp_path, home, monkeypatch):
    from traitlets.config import Config

    Soopervisor = _this_checkouts_jupyter_server().Soopervisor

    write_executors(home, {"executors": {"lab": {"type": "docker", "host": "ssh://user@lab-1"}}})
    project = make_project(tmp_path)
    with pytest.raises(UsageError) as e:
        soopervisor.run(project, executor="nope")
    assert "no executor named 'nope'" in e.value.message and "lab, local" in e.value.message
    service = Soopervisor(config=Config({"Soopervisor": {"executor": "lab"}})).service()
    assert service.engine == "lab"
    from soopervisor import engines

    assert engines.choose("lab").where == "docker (ssh://user@lab-1)"
    assert engines.choose("docker").name == "local"  # c.Soopervisor.executor = "docker", as before
    monkeypatch.setenv("SOOPERVISOR_EXECUTOR", "lab")
    assert engines.choose().name == "lab"
    assert engines.choose("local").name == "local"  # --executor wins over SOOPERVISOR_EXECUTOR


# -- a certificate the engine does not trust ---------------------------------------------------
@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_a_client_certificate_of_another_ca_is_a_clear_error(tmp_path, home, tls_engine):
    pki = tls_engine.pki
    write_executors(home, {"executors": {"rogue-box": tls_entry(tls_engine, pki.rogue_cert, pki.rogue_key)}})
    project = make_project(tmp_path, HELLO)
    proc = cli("run", str(project), "--executor", "rogue-box")
    assert proc.returncode == 3, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err + proc.stdout
    assert "'rogue-box'" in err and "certificate" in err, err
    assert "hint:" in err
    assert pki.rogue_key.read_text().strip().splitlines()[1] not in err
    assert runs_json() == []  # refused before anything was recorded


# -- soopervisor executors ----------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_executors_reports_which_engines_answer(tmp_path, home, tls_engine):
    dead = free_port()
    write_executors(home, {"executors": {"tls-box": tls_entry(tls_engine),
                                         "dead-box": tls_entry(tls_engine, port=dead)},
                           "default": "tls-box"})
    proc = cli("executors", "--json", check=0)
    found = json.loads(proc.stdout)
    by_name = {e["name"]: e for e in found["executors"]}
    assert set(by_name) == {"local", "tls-box", "dead-box"} and found["default"] == "tls-box"
    box = by_name["tls-box"]
    assert box["answers"] is True and box["server_version"] and box["running"] == 0 and box["default"] is True
    assert box["where"] == f"docker at {tls_engine.host}" and box["tls"]["key"] == str(tls_engine.pki.key)
    gone = by_name["dead-box"]
    assert gone["answers"] is False and gone["reason"] == "connection refused" and gone["default"] is False
    assert by_name["local"]["answers"] is True

    text = cli("executors", check=0).stdout
    assert re.search(r"^\* tls-box +docker at tcp://127\.0\.0\.1:\d+ +answers: Docker ", text, re.MULTILINE), text
    assert re.search(r"^  dead-box .* does not answer: connection refused$", text, re.MULTILINE), text

    # a client certificate of another CA, and a CA that did not sign the engine's certificate: the reasons say so
    pki = tls_engine.pki
    wrong_ca = {**tls_entry(tls_engine), "tls": {**tls_entry(tls_engine)["tls"], "ca": str(pki.rogue_cert)}}
    write_executors(home, {"executors": {"rogue-box": tls_entry(tls_engine, pki.rogue_cert, pki.rogue_key),
                                         "wrong-ca": wrong_ca}})
    by_name = {e["name"]: e for e in json.loads(cli("executors", "--json", check=0).stdout)["executors"]}
    rogue, other = by_name["rogue-box"], by_name["wrong-ca"]
    assert rogue["answers"] is False and rogue["reason"].startswith("TLS: the engine refused our client certificate")
    assert other["answers"] is False and other["reason"].startswith("TLS: certificate verify failed"), other


@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_docker_host_tls_verify_and_cert_path_are_read_as_docker_reads_them(tmp_path, home, tls_engine):
    import shutil

    certs = tmp_path / "docker-certs"
    certs.mkdir()
    pki = tls_engine.pki
    for source, name in ((pki.ca, "ca.pem"), (pki.cert, "cert.pem"), (pki.key, "key.pem")):
        shutil.copyfile(source, certs / name)
    env = {"DOCKER_HOST": tls_engine.host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(certs)}
    (local,) = json.loads(cli("executors", "--json", env=env, check=0).stdout)["executors"]
    assert local["name"] == "local" and local["answers"] is True, local
    assert local["where"] == f"docker at {tls_engine.host}" and local["tls"]["key"] == str(certs / "key.pem")
    # without DOCKER_TLS_VERIFY the engine is spoken to in plain HTTP, and says it wants TLS
    env.pop("DOCKER_TLS_VERIFY")
    (plain,) = json.loads(cli("executors", "--json", env=env, check=0).stdout)["executors"]
    assert plain["answers"] is False and plain["reason"].startswith("the engine speaks TLS"), plain


# -- the owner killed mid-run -------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_a_killed_owner_is_reaped_on_the_remote_engine(tmp_path, engine, home, tls_engine, remote_env):
    write_executors(home, {"executors": {"tls-box": tls_entry(tls_engine)}})
    remote = tls_engine.client()
    proc, run_id = start_sleeper(tmp_path, "tls-box")
    try:
        assert [c.status for c in labelled(remote, run_id)] == ["running"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        proc.kill()
        proc.stdout.close()

    (run,) = runs_json()  # the reader reaps: the owner's pid is dead
    assert run["id"] == run_id and run["status"] == "interrupted", run
    assert run["engine"] == "tls-box"
    assert not labelled(remote, run_id), "the run's container was left on the remote engine"
    assert not labelled(engine, run_id)


@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_stop_from_another_process_kills_the_container_on_the_remote_engine(tmp_path, engine, home, tls_engine,
                                                                             remote_env):
    write_executors(home, {"executors": {"tls-box": tls_entry(tls_engine)}})
    remote = tls_engine.client()
    proc, run_id = start_sleeper(tmp_path, "tls-box")
    try:
        # the owner frozen: it cannot honour the cancel marker, so only the stopper's kill on the
        # run's engine can end the container
        proc.send_signal(signal.SIGSTOP)
        stopping = cli("stop", run_id, "--wait", "1", check=0).stdout
        assert "is stopping" in stopping, stopping
        (container,) = labelled(remote, run_id)
        assert container.status == "exited", container.status
        proc.send_signal(signal.SIGCONT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 130 and "Traceback" not in rest, rest
    (run,) = runs_json()
    assert run["status"] == "cancelled" and run["engine"] == "tls-box", run
    assert not labelled(remote, run_id) and not labelled(engine, run_id)


# -- over ssh ----------------------------------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.xdist_group("tls-engine")
def test_a_run_over_ssh(tmp_path, engine, home, tls_engine, ssh_engine, remote_env, monkeypatch):
    monkeypatch.setenv("PATH", f"{ssh_engine.bin}{os.pathsep}{os.environ['PATH']}")  # the user's ssh config
    write_executors(home, {"executors": {"lab": {"type": "docker", "host": ssh_engine.host}}, "default": "lab"})
    report = json.loads(cli("executors", "--json", check=0).stdout)
    (lab,) = [e for e in report["executors"] if e["name"] == "lab"]
    assert lab["answers"] is True and lab["default"] is True and lab["where"] == f"docker ({ssh_engine.host})"

    project = make_project(tmp_path, HELLO)
    since = int(time.time()) - 1
    proc = cli("run", str(project), check=0)  # the file's default
    assert "HELLO FROM THE REMOTE ENGINE" in proc.stdout
    (run,) = runs_json()
    assert run["status"] == "succeeded" and run["engine"] == "lab", run
    assert run["executor"] == f"docker ({ssh_engine.host})"
    remote = tls_engine.client()
    assert container_events(remote, run["id"], since), "the run did not go through ssh to the engine behind it"
    assert not container_events(engine, run["id"], since)
    assert not labelled(remote, run["id"])


# -- configurations that are not usable: exit 2, the entry named, before anything runs -----------------
BAD = {
    "unknown key": ({"executors": {"box": {"type": "docker", "hots": "tcp://h:2376"}}}, "'box'", "unknown key 'hots'"),
    "unknown type": ({"executors": {"box": {"type": "nomad"}}}, "'box'", "unknown type 'nomad'"),
    "kubernetes without an exchange address": ({"executors": {"box": {"type": "kubernetes"}}}, "'box'",
                                               "`exchange_address` is missing"),
    "bad scheme": ({"executors": {"box": {"host": "ftp://h:21"}}}, "'box'", "the scheme must be one of"),
    "no port": ({"executors": {"box": {"host": "tcp://10.0.0.5"}}}, "'box'", "has no port"),
    "bad port": ({"executors": {"box": {"host": "tcp://10.0.0.5:99999"}}}, "'box'", "not a valid URL"),
    "no host name": ({"executors": {"box": {"host": "ssh://"}}}, "'box'", "names no host"),
    "tls with a unix socket": ({"executors": {"box": {"host": "unix:///var/run/docker.sock",
                                                      "tls": {"ca": "ca.pem"}}}}, "'box'", "tcp:// engines only"),
    "tls with ssh": ({"executors": {"box": {"host": "ssh://u@h", "tls": {"ca": "ca.pem"}}}}, "'box'",
                     "tcp:// engines only"),
    "missing cert file": ({"executors": {"box": {"host": "tcp://h:2376", "tls": {
        "ca": "ca.pem", "cert": "nowhere/cert.pem", "key": "key.pem"}}}}, "'box'", "tls.cert: no file at"),
    "cert without key": ({"executors": {"box": {"host": "tcp://h:2376", "tls": {"ca": "ca.pem", "cert": "c.pem"}}}},
                         "'box'", "tls.key is missing"),
    "no ca": ({"executors": {"box": {"host": "tcp://h:2376", "tls": {"cert": "c.pem", "key": "key.pem"}}}},
              "'box'", "tls.ca is missing"),
    "bad slots": ({"executors": {"box": {"host": "tcp://h:2376", "slots": 0}}}, "'box'", "slots must be"),
    "bad name": ({"executors": {"a box": {}}}, "'a box'", "a name is letters"),
    "default names nothing": ({"executors": {"box": {}}, "default": "bx"}, "default: bx", "names no executor"),
    "not yaml": ("executors: [unclosed\n", "not valid YAML", "line"),
    "top-level typo": ({"executor": {"box": {}}}, "unknown key 'executor'", "executors:"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_executors_file_is_exit_2_naming_the_entry(tmp_path, home, case):
    data, entry, what = BAD[case]
    path = write_executors(home, data)
    for name in ("ca.pem", "c.pem", "key.pem"):
        (path.parent / name).write_text("x")
    project = make_project(tmp_path)
    for args in (["run", str(project)], ["executors"]):
        proc = cli(*args, check=2)
        assert entry in proc.stderr and what in proc.stderr, proc.stderr
        assert str(path) in proc.stderr and "Traceback" not in proc.stderr
    assert runs_json() == []


def test_an_unknown_executor_name_is_exit_2_with_the_known_ones(tmp_path, home):
    write_executors(home, {"executors": {"build-box": {"host": "tcp://10.0.0.5:2376"}}})
    project = make_project(tmp_path)
    proc = cli("run", str(project), "--executor", "buidl-box", check=2)
    assert "no executor named 'buidl-box' (--executor)" in proc.stderr
    assert "build-box, local" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", str(project), env={"SOOPERVISOR_EXECUTOR": "nope"}, check=2)
    assert "no executor named 'nope' (SOOPERVISOR_EXECUTOR)" in proc.stderr
    assert runs_json() == []


def test_a_key_pasted_into_the_file_is_refused_without_repeating_it(tmp_path, home):
    secret = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key\n-----END PRIVATE KEY-----\n"
    path = write_executors(home, {"executors": {"box": {"host": "tcp://h:2376", "tls": {"ca": "ca.pem", "key": secret}}}})
    (path.parent / "ca.pem").write_text("x")
    proc = cli("executors", check=2)
    assert "tls.key must be the path of a PEM file, not the file's contents" in proc.stderr
    assert "MIIEvQ" not in proc.stderr + proc.stdout


def test_docker_tls_verify_without_certificates_is_exit_2(tmp_path, home):
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(tmp_path / "no")}
    proc = cli("run", str(make_project(tmp_path)), env=env, check=2)
    assert "the environment's engine (local)" in proc.stderr and "ca.pem is missing" in proc.stderr
    # a configured remote engine is still usable while DOCKER_* are wrong
    write_executors(home, {"executors": {"box": {"host": "tcp://127.0.0.1:1"}}})
    proc = cli("run", str(make_project(tmp_path, name="p2")), "--executor", "box", env=env)
    assert proc.returncode == 3 and "cannot reach the Docker engine 'box'" in proc.stderr, proc.stderr


def test_where_a_run_ran_reads_as_the_brief_says():
    from soopervisor.engines import Engine

    assert Engine("l").where == "docker"
    assert Engine("b", host="tcp://127.0.0.1:2376").where == "docker at tcp://127.0.0.1:2376"
    assert Engine("s", host="ssh://user@host").where == "docker (ssh://user@host)"


def test_an_ssh_engine_without_paramiko_is_a_usage_error_before_anything_runs(home, monkeypatch):
    import importlib.util

    from soopervisor.service import RunService

    write_executors(home, {"executors": {"lab": {"host": "ssh://deploy@lab-1"}}})
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "paramiko" else real(name, *a))
    with pytest.raises(UsageError) as e:
        RunService(engine="lab").check_engine()
    assert "executor 'lab' (ssh://deploy@lab-1) needs the ssh transport" in e.value.message
    assert "pip install paramiko" in e.value.hint

"""deploy/server/Dockerfile: the image builds from the checkout on the local base image, without a
registry, and the server in it checks a real server.yaml against a real file:// remote, as a non-root user.

The build runs through BuildKit (the Dockerfile's secret, cache and bind mounts), which keeps its
layer and pip caches between runs; the images are removed at the end.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("deploy")]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "server" / "Dockerfile"
CONFIG = "/etc/soopervisor/server.yaml"


def _buildkit() -> tuple[str, dict[str, str]]:
    """A docker client that builds with BuildKit: one with buildx, or an older one with DOCKER_BUILDKIT=1."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.access(c, os.X_OK)]
    for client in dict.fromkeys(candidates):
        if subprocess.run([client, "buildx", "version"], capture_output=True, check=False).returncode == 0:
            return client, env
        version = subprocess.run([client, "version", "--format", "{{.Client.Version}}"],
                                 capture_output=True, text=True, check=False).stdout
        major = re.match(r"(\d+)\.", version)
        if major and int(major.group(1)) < 23:  # BuildKit built in; 23+ needs the buildx plugin
            return client, env
    pytest.fail(f"no docker client here builds with BuildKit (tried {candidates}): install buildx "
                "(docker-buildx-plugin) or Debian's docker.io client", pytrace=False)


def _ca_bundle() -> str | None:
    """The CA bundle pip trusts on this machine (a TLS-inspecting proxy's CA), as soopervisor run finds it."""
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return value
    return None


def _build(context: Path, tag: str, base: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    client, env = _buildkit()
    # a pip.conf given as a build secret: read by pip in the build, in no layer of the image
    pip_conf = tmp / "pip.conf"
    pip_conf.write_text("[global]\n# secret-marker-7f3a: a credential would be here\ntimeout = 180\n")
    cmd = [client, "build", "--progress=plain", "-f", str(DOCKERFILE), "-t", tag, "--build-arg", f"BASE={base}",
           "--secret", f"id=pip.conf,src={pip_conf}", *extra]
    ca = _ca_bundle()
    if ca:
        cmd += ["--secret", f"id=ca.crt,src={ca}"]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"):
        # only an index the build can reach (this machine's may be file:// paths of its own disk)
        if os.environ.get(name, "").startswith(("http://", "https://")):
            cmd += ["--build-arg", f"{name}={os.environ[name]}"]
    proc = subprocess.run([*cmd, str(context)], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"docker build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def images(docker_client):
    """Tags of this test's images, removed at the end (BuildKit's cache stays for the next run)."""
    tags: list[str] = []
    yield tags
    for tag in tags:
        _docker("image", "rm", "-f", tag)


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with a main branch, owned by this test's user (not the container's)."""
    bare = tmp_path / "sales.git"
    _git("init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    _git("clone", "-q", str(bare), str(work))
    (work / "pipeline.yaml").write_text("tasks: []\n")
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    _git("push", "-q", "origin", "HEAD:main", cwd=work)
    return bare


def _serve(tag: str, config: Path, *args: str, mounts: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = ["run", "--rm", "-v", f"{config}:{CONFIG}:ro"]
    for m in mounts:
        cmd += ["-v", m]
    return _docker(*cmd, tag, *args)


def test_server_image_checks_its_configuration_as_a_non_root_user(base_image, images, remote, tmp_path):
    tag = f"soopervisor-server-test:{uuid.uuid4().hex[:12]}"
    images.append(tag)
    _build(ROOT, tag, base_image, tmp_path)

    # the build secret and the CA are in no layer, no history entry, no setting of the image
    history = _docker("history", "--no-trunc", tag).stdout + _docker("image", "inspect", tag).stdout
    assert "secret-marker-7f3a" not in history
    assert "PIP_CERT" not in history and "PIP_CONFIG_FILE" not in history

    good = tmp_path / "server.yaml"
    good.write_text("storage: /data/artifacts\nrepositories:\n  - url: file:///srv/git/sales.git\n"
                    "    branches: [main]\n")
    repo = f"{remote}:/srv/git/sales.git:ro"
    proc = _serve(tag, good, "--check", mounts=(repo,))  # the image names its configuration itself
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "✓ the configuration is valid and its 1 repository answer" in proc.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: /data/artifacts\npoll_interval: -5\npol_interval: 3\nrepositories:\n"
                   "  - url: file:///srv/git/missing.git\n")
    proc = _serve(tag, bad, "--check", mounts=(repo,))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    said = proc.stderr
    assert "pol_interval" in said and "poll_interval" in said  # the unknown key and the value out of range
    assert "missing.git" in said  # and the remote that does not answer, in the same report
    assert "Traceback" not in said

    # the image's own command: ENTRYPOINT soopervisor serve; the configuration from SOOPERVISOR_SERVER_CONFIG
    inspect = _docker("image", "inspect", "--format",
                      "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.User}} {{json .Config.Env}}", tag)
    assert '["soopervisor","serve"] null' in inspect.stdout
    assert f"SOOPERVISOR_SERVER_CONFIG={CONFIG}" in inspect.stdout
    assert "SOOPERVISOR_HOME=/data" in inspect.stdout

    # the process is not root, and it can write its data folder (the volume) but not the venv
    who = _docker("run", "--rm", "--entrypoint", "sh", tag, "-c",
                  "id -u; touch /data/ok && echo data-ok; touch /opt/soopervisor/x 2>/dev/null || echo venv-ro; "
                  "git --version; ssh -V 2>&1 | head -c 7")
    lines = who.stdout.split()
    assert who.returncode == 0, who.stdout + who.stderr
    assert lines[0] != "0" and "data-ok" in lines and "venv-ro" in lines
    assert "git" in who.stdout and "OpenSSH" in who.stdout


def test_server_image_installs_a_wheel_built_on_the_host(base_image, images, tmp_path):
    """Where the build cannot read the checkout's source or an index has no soopervisor: wheels/ in the context."""
    src = tmp_path / "src"
    keep = ("soopervisor", "jupyter_ext", "jupyter-config", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in")
    src.mkdir()
    for name in keep:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        else:
            shutil.copy2(path, src / name)
    context = tmp_path / "context"
    wheels = context / "wheels"
    wheels.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(src)], check=True, capture_output=True, timeout=300)
    assert [p.name for p in wheels.glob("soopervisor-*.whl")]

    tag = f"soopervisor-server-test:{uuid.uuid4().hex[:12]}"
    images.append(tag)
    proc = _build(context, tag, base_image, tmp_path)
    assert "installing soopervisor from /src/wheels/soopervisor-" in proc.stderr + proc.stdout

    ran = _docker("run", "--rm", "--entrypoint", "soopervisor", tag, "--version")
    assert ran.returncode == 0 and "soopervisor" in ran.stdout, ran.stdout + ran.stderr


# -- compose.yaml and soopervisor.service ----------------------------------------------------------------

COMPOSE = ROOT / "deploy" / "server" / "compose.yaml"
UNIT = ROOT / "deploy" / "server" / "soopervisor.service"
SERVER_YAML = ROOT / "deploy" / "server" / "server.yaml"
SECRETS_EXAMPLE = ROOT / "deploy" / "server" / "secrets.env.example"


def _compose_client() -> list[str] | None:
    """A compose that validates a file (`config`): the docker plugin, else docker-compose; None without one."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_file_runs_the_server_on_postgresql_with_its_password_by_reference(tmp_path):
    import yaml

    from soopervisor.server import config as server_config

    text = COMPOSE.read_text()
    doc = yaml.safe_load(text)
    db, server = doc["services"]["db"], doc["services"]["soopervisor"]
    # PostgreSQL 15, its role and database those of the server's URL, its password from the env file only
    assert db["image"].endswith("postgres:15}") or db["image"] == "postgres:15"
    assert db["environment"]["POSTGRES_USER"] == "soopervisor" and db["environment"]["POSTGRES_DB"] == "soopervisor"
    assert db["env_file"] == "secrets.env" and server["env_file"] == "secrets.env"
    assert 'POSTGRES_PASSWORD="$$PGPASSWORD"' in " ".join(db["entrypoint"])
    for service in (db, server):  # no password in the file, not even an empty one
        assert not [k for k in service.get("environment", {}) if "PASSWORD" in k], service["environment"]
    assert "PGPASSWORD=" not in text
    assert "healthcheck" in db and server["depends_on"]["db"]["condition"] == "service_healthy"
    assert "ports" not in db  # only the server reaches the database
    # the server: built from the Dockerfile with the PostgreSQL driver, the socket, data and mirrors
    assert (COMPOSE.parent / server["build"]["context"] / server["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert "postgres" in server["build"]["args"]["EXTRAS"]
    # SOURCE:TARGET[:ro], by target (a source may be ${VAR:-default})
    volumes = {v.split(":")[-2] if v.endswith((":ro", ":rw")) else v.split(":")[-1]: v for v in server["volumes"]}
    assert volumes["/var/run/docker.sock"].startswith("/var/run/docker.sock:")
    assert volumes["/data"].startswith("data:") and volumes["/data/mirrors"].startswith("mirrors:")
    assert volumes["/etc/soopervisor"].endswith(":ro")
    assert set(doc["volumes"]) >= {"db", "data", "mirrors"}
    assert server["environment"]["SOOPERVISOR_SERVER_CONFIG"] == CONFIG
    assert server["group_add"] and server["stop_grace_period"] == "10m"
    assert all(p.startswith("127.0.0.1:") for p in server["ports"])

    # the server.yaml it mounts loads, and names the compose file's database, mirrors and data volume
    loaded = server_config.load(str(SERVER_YAML))
    assert loaded.database == "postgresql://soopervisor@db:5432/soopervisor"
    assert loaded.mirrors == "/data/mirrors" and loaded.storage.startswith("/data/")
    assert "PGPASSWORD=" in SECRETS_EXAMPLE.read_text()

    # and compose itself accepts it, when one is installed here (the structural checks above always run)
    compose = _compose_client()
    if compose is not None:
        copy = tmp_path / "deploy" / "server"
        copy.mkdir(parents=True)
        shutil.copy(COMPOSE, copy / "compose.yaml")
        (copy / "secrets.env").write_text("PGPASSWORD=not-a-real-one\n")
        proc = subprocess.run([*compose, "-f", str(copy / "compose.yaml"), "config"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "PGPASSWORD: not-a-real-one" in proc.stdout  # the env file is what gives it, to both services
        assert proc.stdout.count("not-a-real-one") == 2


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd's unit syntax: sections of keys, each key possibly repeated (a list of its values)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a unit line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_systemd_unit_runs_a_dedicated_user_restarts_and_stops_gracefully_hardened(tmp_path):
    unit = _unit(UNIT.read_text())
    service = {k: v[-1] for k, v in unit["Service"].items()}
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "docker.service" in unit["Unit"]["After"][0]
    assert service["User"] == "soopervisor" and service["Group"] == "soopervisor"
    assert service["SupplementaryGroups"] == "docker"  # the socket's group, the only extra right
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "/etc/soopervisor/secrets.env"
    assert "PGPASSWORD" not in " ".join(unit["Service"].get("Environment", []))
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/soopervisor") and exec_start[1:4] == ["serve", "--config", "/etc/soopervisor/server.yaml"]
    # long enough for the job at hand to end after SIGTERM, which goes to the server only
    assert service["TimeoutStopSec"] == "15min" and service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed"
    assert service["StateDirectory"] == "soopervisor"
    assert "SOOPERVISOR_HOME=/var/lib/soopervisor" in service["Environment"]
    # hardened, yet the Docker socket stays usable: AF_UNIX allowed, the docker group not unmapped
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert service["CapabilityBoundingSet"] == "" and service["PrivateTmp"] == "yes"
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
    assert "PrivateUsers" not in service and "InaccessiblePaths" not in service

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the structural checks above are the test on a machine without systemd
    # verify checks that ExecStart's program exists: a copy naming a stand-in, otherwise the same unit
    stand_in = tmp_path / "soopervisor"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    copy = tmp_path / "soopervisor.service"
    copy.write_text(UNIT.read_text().replace("/opt/soopervisor/venv/bin/soopervisor", str(stand_in)))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False)
    # verify exits 0 on an unknown key or a value it cannot parse: it says so, and that must be nothing
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(copy)], capture_output=True, text=True,
                              timeout=120, check=False)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) <= 2.0, security.stdout  # systemd's scale: 0 (locked down) to 10 (exposed)

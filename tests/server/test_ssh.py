"""ssh:// remotes with a deploy key, against a real OpenSSH server on loopback.

Each test starts Debian's sshd (`sshd -D`, not daemonized) with its own configuration, host key
and authorized_keys (the deploy key's public half), on 127.0.0.1 and a free port, serving a bare
repository on disk to the current user. The host key is pinned with a `known_hosts:` file, so
nothing is written to the user's own ~/.ssh/known_hosts.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from soopervisor.server.config import Repository, ServerConfig
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Queue
from tests.conftest import cli, free_port
from tests.projects import VALID, commit_all, git, init_repo, write
from tests.server.helpers import Clock, server_yaml

pytestmark = pytest.mark.xdist_group("ssh")


def _sshd_binary() -> str:
    """Debian's sshd, installed (non-interactively) when missing: the tests need the real one."""
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
            subprocess.run(install, env=env, capture_output=True, timeout=600, check=False)
        if os.path.exists("/usr/sbin/sshd"):
            return "/usr/sbin/sshd"
    pytest.fail("no sshd here: apt-get install openssh-server (these tests start their own, on loopback)",
                pytrace=False)


def _keygen(path: Path, comment: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class Sshd:
    port: int
    user: str
    key: Path  # the deploy key (its public half is authorized)
    other_key: Path  # a key the server does not know
    known_hosts: Path  # the server's host key, pinned
    bare: Path
    work: Path
    log: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.bare}"

    def push(self, files: dict[str, str], message: str) -> str:
        write(self.work, files)
        sha = commit_all(self.work, message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return sha


@pytest.fixture
def sshd(tmp_path: Path):
    binary = _sshd_binary()
    root = tmp_path / "sshd"
    root.mkdir()
    host_key = _keygen(root / "host_ed25519", "host")
    key = _keygen(tmp_path / "deploy_key", "deploy")
    other = _keygen(tmp_path / "other_key", "other")
    (root / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port, user = free_port(), getpass.getuser()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {root}/sshd.pid\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nAllowUsers {user}\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n"
        "AllowTcpForwarding no\nX11Forwarding no\nPermitTTY no\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
    checked = subprocess.run([binary, "-t", "-f", str(config)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text().rsplit(' ', 1)[0]}\n")

    work = init_repo(tmp_path / "work")
    write(work, VALID)
    commit_all(work, "first")
    bare = tmp_path / "git" / "sales.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "HEAD:main")

    log = root / "sshd.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        # until it says it listens: a probe connection would be logged by sshd's child a moment
        # later, into the log that tests compare to show that no connection was made
        while f"Server listening on 127.0.0.1 port {port}" not in log.read_text():
            assert proc.poll() is None, f"sshd stopped: {log.read_text()}"
            assert time.monotonic() < deadline, f"sshd never listened: {log.read_text()}"
            time.sleep(0.05)
        yield Sshd(port, user, key, other, known_hosts, bare, work, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def served(tmp_path: Path, server: Sshd, **repo) -> Path:
    """server.yaml serving the sshd's repository with its deploy key and pinned host key."""
    return server_yaml(tmp_path, [{"url": server.url, "deploy_key": str(server.key),
                                   "known_hosts": str(server.known_hosts), "branches": ["main"], **repo}])


def make_poller(tmp_path: Path, repo: Repository, clock: Clock | None = None) -> tuple[Poller, Queue]:
    config = ServerConfig(storage=str(tmp_path / "artifacts"), poll_interval=10,
                          database=str(tmp_path / "server.sqlite"), mirrors=str(tmp_path / "mirrors"),
                          repositories=(repo,))
    queue = Queue(config.database)
    return Poller(config, queue, clock=clock or time.time), queue


def ssh_repo(server: Sshd, key: Path) -> Repository:
    return Repository(url=server.url, name="sales", deploy_key=str(key), known_hosts=str(server.known_hosts))


# -- --check -----------------------------------------------------------------------------------


def test_check_passes_with_the_deploy_key(tmp_path, sshd):
    proc = cli("serve", "--config", str(served(tmp_path, sshd)), "--check", check=0, timeout=120)
    assert "✓ the configuration is valid and its 1 repository answer" in proc.stdout
    assert f"Accepted publickey for {sshd.user}" in sshd.log.read_text()  # it really went through sshd


def test_check_with_a_wrong_deploy_key_says_so_with_a_hint(tmp_path, sshd):
    config = served(tmp_path, sshd, deploy_key=str(sshd.other_key))
    proc = cli("serve", "--config", str(config), "--check", check=2, timeout=120)
    said = proc.stderr
    assert "✗ repositories[0].url" in said and "Permission denied (publickey)" in said, said
    assert "hint: the server's key is not accepted: add the deploy key's public half" in said
    assert "Traceback" not in said and "BEGIN OPENSSH PRIVATE KEY" not in said


def test_check_with_a_key_others_can_read(tmp_path, sshd):
    sshd.key.chmod(0o644)
    proc = cli("serve", "--config", str(served(tmp_path, sshd)), "--check", check=2, timeout=120)
    said = proc.stderr
    assert f"✗ repositories[0].deploy_key: the deploy key {sshd.key} is readable by others (mode 0644)" in said
    assert f"hint: chmod 600 {sshd.key}" in said and "Traceback" not in said
    assert "repositories[0].url" not in said  # the key's problem is said once, not again as ssh's refusal


def test_check_with_a_host_key_that_is_not_the_pinned_one(tmp_path, sshd):
    impostor = _keygen(tmp_path / "impostor", "impostor")
    sshd.known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {Path(f'{impostor}.pub').read_text().rsplit(' ', 1)[0]}\n")
    proc = cli("serve", "--config", str(served(tmp_path, sshd)), "--check", check=2, timeout=120)
    said = proc.stderr
    assert "Host key verification failed" in said and "known_hosts" in said, said
    assert "Traceback" not in said


def test_check_with_a_known_hosts_file_that_is_missing(tmp_path, sshd):
    config = served(tmp_path, sshd, known_hosts=str(tmp_path / "nope"))
    proc = cli("serve", "--config", str(config), "--check", check=2, timeout=120)
    assert "✗ repositories[0].known_hosts: the known_hosts file" in proc.stderr and "ssh-keyscan" in proc.stderr


# -- the poller --------------------------------------------------------------------------------


def test_a_push_is_polled_fetched_and_checked_out_over_ssh(tmp_path, sshd):
    repo = ssh_repo(sshd, sshd.key)
    poller, queue = make_poller(tmp_path, repo)
    first = git(sshd.work, "rev-parse", "HEAD").strip()
    result = poller.poll(repo)
    assert result.error is None and result.new == [("main", first)]

    second = sshd.push({"notes.md": "over ssh\n"}, "second")
    result = poller.poll(repo)
    assert result.error is None and result.new == [("main", second)] and result.fetched
    assert sorted(j.commit for j in queue.list()) == sorted([first, second])
    tree = poller.checkout(repo, second, tmp_path / "checkout")
    assert (tree / "notes.md").read_text() == "over ssh\n" and (tree / "pipeline.yaml").exists()
    origin = git(tree, "remote", "get-url", "origin").strip()
    assert origin == f"ssh://127.0.0.1:{sshd.port}{sshd.bare}"  # the login dropped; the project is named sales
    assert poller.poll(repo).new == []  # nothing changed


def test_a_wrong_deploy_key_backs_off_and_recovers_when_the_key_is_fixed(tmp_path, sshd):
    key = tmp_path / "served_key"
    shutil.copy(sshd.other_key, key)
    key.chmod(0o600)
    clock = Clock()
    repo = ssh_repo(sshd, key)
    poller, queue = make_poller(tmp_path, repo, clock)
    delays = []
    for _ in range(3):
        result = poller.poll(repo)
        assert result.error and "Permission denied (publickey)" in result.error, result.error
        status = poller.status()[0]
        assert status.last_error == result.error and "hint: the server's key is not accepted" in status.last_error
        delays.append(status.next_poll - clock.now)
        assert poller.due() == []  # backing off
        clock.now = status.next_poll
    assert status.failures == 3 and delays[0] < delays[1] < delays[2], delays
    assert queue.list() == []

    shutil.copy(sshd.key, key)  # the key is fixed in place; the server is not restarted
    assert poller.due() == [repo]
    result = poller.poll(repo)
    head = git(sshd.work, "rev-parse", "HEAD").strip()
    assert result.error is None and result.new == [("main", head)]
    status = poller.status()[0]
    assert status.failures == 0 and status.last_error is None
    assert [j.commit for j in queue.list()] == [head]


def test_a_key_others_can_read_is_named_by_the_poller_without_asking_ssh(tmp_path, sshd):
    sshd.key.chmod(0o640)
    repo = ssh_repo(sshd, sshd.key)
    poller, queue = make_poller(tmp_path, repo)
    before = sshd.log.read_text()
    result = poller.poll(repo)
    assert result.error == (f"the deploy key {sshd.key} is readable by others (mode 0640)"
                            f" (hint: chmod 600 {sshd.key})")
    assert poller.status()[0].failures == 1 and queue.list() == []
    assert sshd.log.read_text() == before  # no connection was made
    sshd.key.chmod(0o600)
    assert poller.poll(repo).error is None and len(queue.list()) == 1


def test_known_hosts_is_for_ssh_remotes_only(tmp_path):
    from soopervisor.server.config import InvalidConfig, load

    path = tmp_path / "server.yaml"
    path.write_text(json.dumps({"repositories": [
        {"url": f"file://{tmp_path}/sales.git", "known_hosts": "hosts"},
        {"url": "git@git.example.com:acme/ml.git", "known_hosts": "keys/known_hosts"}]}))
    with pytest.raises(InvalidConfig) as e:
        load(str(path))
    assert "repositories[0].known_hosts" in e.value.message and "not an ssh URL" in e.value.message
    assert "repositories[1]" not in e.value.message

    path.write_text(json.dumps({"repositories": [{"url": "git@git.example.com:acme/ml.git",
                                                  "known_hosts": "keys/known_hosts"}]}))
    (repo,) = load(str(path)).repositories
    assert repo.known_hosts == str(tmp_path / "keys" / "known_hosts")  # relative to the file, as deploy_key

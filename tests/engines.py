"""A second, real Docker engine for tests: dockerd on loopback TCP with TLS client certificates.

Certificates are made here with ``cryptography``: a CA, a server certificate for
127.0.0.1 (IP SAN) and a client certificate signed by that CA, plus a client
certificate signed by another CA (which the engine must refuse). The daemon has
its own data root, exec root, pidfile and unix socket beside the main engine's,
and a bridge of its own made here (``--bridge=svbPORT --iptables=false
--ip6tables=false``): no NAT, so its containers reach nothing outside, and the
machine's firewall is untouched.

Not ``--bridge=none``: a dockerd started with it deletes the ``docker0`` link
(moby's removeDefaultBridgeInterface), which is the *main* engine's bridge: every
container the main engine starts afterwards fails with "could not find bridge
docker0" until that engine restarts.
"""
from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port


@dataclass
class Pki:
    folder: Path
    ca: Path
    cert: Path
    key: Path
    server_cert: Path
    server_key: Path
    #: a client certificate and key signed by another CA: the engine refuses them
    rogue_cert: Path
    rogue_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False,
          client: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    usages = [u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server),
                              (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a rogue client certificate."""
    from cryptography.hazmat.primitives import serialization

    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM

    def save(cert, key, stem: str) -> tuple[Path, Path]:
        c, k = folder / f"{stem}.pem", folder / f"{stem}-key.pem"
        c.write_bytes(cert.public_bytes(pem))
        _write_key(key, k)
        return c, k

    ca_key = _key()
    ca_cert = _cert("soopervisor test CA", ca_key, None, None, ca=True)
    ca, _ = save(ca_cert, ca_key, "ca")
    server_key = _key()
    server_cert, server_key_path = save(
        _cert("127.0.0.1", server_key, ca_cert.subject, ca_key, server=True), server_key, "server")
    client_key = _key()
    cert, key = save(_cert("soopervisor client", client_key, ca_cert.subject, ca_key, client=True), client_key, "cert")
    rogue_ca_key = _key()
    rogue_ca = _cert("another CA", rogue_ca_key, None, None, ca=True)
    rogue_key = _key()
    rogue_cert, rogue_key_path = save(
        _cert("soopervisor client", rogue_key, rogue_ca.subject, rogue_ca_key, client=True), rogue_key, "rogue")
    return Pki(folder, ca, cert, key, server_cert, server_key_path, rogue_cert, rogue_key_path)


@dataclass
class TlsEngine:
    """A running dockerd: its TCP address (TLS), its local unix socket, and the certificates."""

    root: Path
    port: int
    socket: Path
    pki: Pki
    process: subprocess.Popen
    bridge: str

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix://{self.socket}"

    def client(self):
        """A docker-py client on the engine's own unix socket (the test's side door, no TLS)."""
        import docker

        return docker.DockerClient(base_url=self.unix, timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        # the data root holds overlay mounts only while the daemon runs; busy leftovers are unmounted first
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)


def start_tls_engine(root: Path, wait: float = 90.0) -> TlsEngine:
    """dockerd with its own folders under ``root``, on the unix socket there and on 127.0.0.1:PORT with TLS."""
    root.mkdir(parents=True, exist_ok=True)
    pki = make_pki(root / "pki")
    port = free_port()
    sock = root / "docker.sock"
    # the exec root's path is in every container's runtime socket path: it must stay short
    exec_root = Path("/run") / f"sv-{root.name[-20:]}-{port}"
    bridge = f"svb{port}"  # at most 15 characters, as Linux wants
    subnet = f"10.{200 + port % 50}.{port % 251}.1/24"
    for args in (["link", "add", bridge, "type", "bridge"], ["addr", "add", subnet, "dev", bridge],
                 ["link", "set", bridge, "up"]):
        subprocess.run(["ip", *args], check=True, capture_output=True)
    cmd = [
        "dockerd",
        "--data-root", str(root / "data"),
        "--exec-root", str(exec_root),
        "--pidfile", str(root / "docker.pid"),
        "-H", f"unix://{sock}",
        "-H", f"tcp://127.0.0.1:{port}",
        "--tlsverify", "--tlscacert", str(pki.ca), "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key),
        f"--bridge={bridge}", "--iptables=false", "--ip6tables=false",
    ]
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon writes it until it stops
    # a session of its own: a test runner's signal to its process group must not reach the daemon first
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    engine = TlsEngine(root=root, port=port, socket=sock, pki=pki, process=proc, bridge=bridge)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if sock.exists():
            with contextlib.suppress(Exception):
                engine.client().ping()
                return engine
        time.sleep(0.3)
    tail = (root / "dockerd.log").read_text(errors="replace")[-3000:]
    engine.stop()
    raise RuntimeError(f"the second dockerd did not answer (exit {proc.poll()}):\n{tail}")


def copy_images(names: list[str], engine: TlsEngine) -> None:
    """``docker save NAMES | docker -H <engine> load``: images travel without any registry."""
    save = subprocess.Popen(["docker", "save", *names], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "-H", engine.unix, "load", "-q"], stdin=save.stdout,
                          capture_output=True, check=False)
    save.stdout.close()
    save.wait()
    if save.returncode or load.returncode:
        raise RuntimeError(f"copying {names} failed: {load.stderr.decode(errors='replace')[-2000:]}")


def environment_without(names: tuple[str, ...] = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


@dataclass
class SshEngine:
    """sshd on 127.0.0.1 whose sessions reach ``docker_socket`` (SetEnv DOCKER_HOST), and an ``ssh`` for it.

    ``bin`` holds an ``ssh`` that adds this test's client config (key, known_hosts, batch mode):
    what a user's ~/.ssh/config does. Put it first on PATH.
    """

    root: Path
    port: int
    user: str
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)


def start_ssh_engine(root: Path, docker_socket: Path, wait: float = 30.0) -> SshEngine:
    """Debian's sshd on loopback with host and client keys made here; its sessions' docker is ``docker_socket``."""
    import getpass

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)

    def keypair(stem: str) -> str:
        key = ed25519.Ed25519PrivateKey.generate()
        path = root / stem
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        (root / f"{stem}.pub").write_text(public + "\n")
        return public

    host_public = keypair("host_key")
    client_public = keypair("client_key")
    (root / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    user = getpass.getuser()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root}/host_key\nPidFile {root}/sshd.pid\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"SetEnv DOCKER_HOST=unix://{docker_socket}\n")
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    (root / "ssh_config").write_text(
        f"Host 127.0.0.1\n  IdentityFile {root}/client_key\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {root}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
    (root / "bin").mkdir()
    shim = root / "bin" / "ssh"
    shim.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {root}/ssh_config \"$@\"\n")
    shim.chmod(0o755)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - sshd writes it until it stops
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    engine = SshEngine(root=root, port=port, user=user, process=proc)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return engine
        time.sleep(0.2)
    tail = (root / "sshd.log").read_text(errors="replace")[-2000:]
    engine.stop()
    raise RuntimeError(f"sshd did not listen (exit {proc.poll()}):\n{tail}")

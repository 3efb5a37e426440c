"""A real three-node Docker Swarm on this machine, and a local image registry, for tests and benchmarks.

Three dockerd (a manager and two workers), each with its own data root, exec root,
pidfile, unix socket and Linux bridge (``--bridge=svbsw… --iptables=false
--ip6tables=false``: never ``--bridge=none``, which deletes the main engine's docker0),
joined into one swarm on 127.0.0.1 (own listen ports, ``--data-path-port`` off the
default). Debian's ``docker-registry`` serves images on 127.0.0.1: images travel
main engine → registry → nodes, never from an outside registry. Run containers use
host networking, so they reach the registry and the host's exchange on 127.0.0.1.

Everything lives under ROOT with pidfiles: :func:`sweep` (called before a harness
starts, and by its ``stop``) ends whatever a crashed session left there, so nothing
outlives the session that made it. The main engine never joins the swarm.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

#: a fixed folder: the next session finds (and sweeps) what a crashed one left
ROOT = Path("/tmp/soopervisor-test-engines/swarm")
NODES = ("m", "w1", "w2")
REGISTRY_BIN = "/usr/bin/docker-registry"
#: the swarm's VXLAN port: not the default 4789, which another swarm on the machine may hold
DATA_PATH_PORT = 4889


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _end(pid: int, wait: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``wait`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _container_pids(socket: Path) -> list[int]:
    """The main processes of the running containers of the dockerd at ``socket`` (none when it is gone)."""
    import docker

    try:
        client = docker.DockerClient(base_url=f"unix://{socket}", timeout=10)
        return [c.attrs["State"]["Pid"] for c in client.containers.list() if c.attrs["State"].get("Pid")]
    except Exception:  # noqa: BLE001 - no daemon there
        return []


def _remove_containers(socket: Path) -> None:
    """Remove every container of the dockerd at ``socket`` (SIGKILL: nothing in them is worth a grace period)."""
    import docker

    with contextlib.suppress(Exception):
        client = docker.DockerClient(base_url=f"unix://{socket}", timeout=30)
        with contextlib.suppress(Exception):
            for service in client.api.services():
                client.api.remove_service(service["ID"])
        for c in client.containers.list(all=True):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def sweep(root: Path = ROOT) -> None:
    """End the daemons a previous session left under ``root`` (by their pidfiles), unmount, remove."""
    if not root.exists():
        return
    for pidfile in sorted(root.glob("*/*.pid")):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text().strip())
            # only a process of ours: its command line names this folder
            if pid > 1 and _alive(pid) and str(root) in _cmdline(pid):
                if "dockerd" in _cmdline(pid):
                    _remove_containers(pidfile.parent / "docker.sock")
                _end(pid)
    # a node killed with SIGKILL leaves its containerd and shims: they name the node's exec root
    exec_roots = [p.read_text().strip() for p in root.glob("*/exec-root") if p.is_file()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            line = _cmdline(int(proc.name))
            if any(f"{r}/" in line for r in exec_roots):
                _end(int(proc.name), 0)  # leftovers: no grace
    for bridge_file in root.glob("*/bridge"):
        with contextlib.suppress(OSError):
            subprocess.run(["ip", "link", "delete", bridge_file.read_text().strip()], capture_output=True,
                           check=False)
    for exec_root in root.glob("*/exec-root"):
        with contextlib.suppress(OSError):
            target = exec_root.read_text().strip()
            subprocess.run(["umount", "-R", target], capture_output=True, check=False)
            shutil.rmtree(target, ignore_errors=True)
    for data in root.glob("*/data"):
        subprocess.run(["umount", "-R", str(data)], capture_output=True, check=False)
    # each node's data root holds its own copy of the images: deleted side by side
    parts = [p for p in root.iterdir() if p.is_dir()]
    threads = [threading.Thread(target=shutil.rmtree, args=(p,), kwargs={"ignore_errors": True}) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Node:
    name: str
    root: Path
    index: int
    process: subprocess.Popen | None = None
    swarm_port: int = 0
    #: tells apart the bridges and exec roots of two harnesses on one machine (tests, a benchmark)
    tag: str = "sw"

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def bridge(self) -> str:
        return f"svb{self.tag}{self.name}"  # at most 15 characters

    @property
    def exec_root(self) -> str:
        return f"/run/sv{self.tag}-{self.name}"  # short: it is part of every container's runtime socket path

    def client(self, timeout: int = 120):
        import docker

        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        proc = subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode:
            raise RuntimeError(f"docker {' '.join(args)} on {self.name}: {proc.stderr.strip()[-2000:]}")
        return proc.stdout.strip()

    def start(self, wait: float = 90.0) -> None:
        """Start (or restart) this node's dockerd; returns once it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "bridge").write_text(self.bridge)
        (self.root / "exec-root").write_text(self.exec_root)
        if subprocess.run(["ip", "link", "show", self.bridge], capture_output=True, check=False).returncode:
            subnet = f"10.199.{10 + self.index + 10 * (sum(map(ord, self.tag)) % 20)}.1/24"
            for args in (["link", "add", self.bridge, "type", "bridge"], ["addr", "add", subnet, "dev", self.bridge],
                         ["link", "set", self.bridge, "up"]):
                subprocess.run(["ip", *args], check=True, capture_output=True)
        cmd = ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", self.exec_root,
               "--pidfile", str(self.root / "dockerd.pid"), "-H", self.host,
               f"--bridge={self.bridge}", "--iptables=false", "--ip6tables=false"]
        log = open(self.root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes it until it stops
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.socket.exists():
                with contextlib.suppress(Exception):
                    self.client(timeout=5).ping()
                    return
            time.sleep(0.2)
        tail = (self.root / "dockerd.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"dockerd of swarm node {self.name} did not answer (exit {self.process.poll()}):\n{tail}")

    def kill(self) -> None:
        """A node dying: SIGKILL to its dockerd, its containerd, its shims and its containers at once."""
        doomed = _container_pids(self.socket)
        doomed += [int(p.name) for p in Path("/proc").iterdir()
                   if p.name.isdigit() and f"{self.exec_root}/" in _cmdline(int(p.name))]
        if self.process is not None and self.process.poll() is None:
            doomed.append(self.process.pid)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)
        # a killed containerd may linger as a zombie nobody reaps: its pidfile would make the next
        # dockerd wait for it instead of starting its own
        for pidfile in Path(self.exec_root).glob("containerd/*.pid"):
            pidfile.unlink(missing_ok=True)

    def stop(self, clear: bool = False) -> None:
        """Stop the daemon (SIGTERM); ``clear``: remove its services and containers first (the end of a
        session: a dockerd with no container left stops at once)."""
        if self.process is not None and self.process.poll() is None:
            if clear:
                _remove_containers(self.socket)
            _end(self.process.pid, 60)


@dataclass
class Registry:
    root: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: float = 30.0) -> None:
        import urllib.request

        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }))
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - the registry writes it until it stops
        self.process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        (self.root / "registry.pid").write_text(str(self.process.pid))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2).read()
                return
            time.sleep(0.1)
        tail = (self.root / "registry.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"docker-registry did not answer (exit {self.process.poll()}):\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            _end(self.process.pid, 20)


@dataclass
class Swarm:
    root: Path
    manager: Node
    workers: list[Node]
    registry: Registry
    #: image names as the main engine knows them -> the same image in the registry
    pushed: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> list[Node]:
        return [self.manager, *self.workers]

    def node_ids(self) -> dict[str, str]:
        """The swarm's node id of each harness node."""
        ids = {}
        for node in self.nodes:
            info = node.client(timeout=10).info()
            ids[node.name] = (info.get("Swarm") or {}).get("NodeID")
        return ids

    def entry(self, **extra) -> dict:
        """The executors.yaml entry of this swarm."""
        return {"type": "swarm", "host": self.manager.host, "registry": self.registry.address,
                "network": "host", "exchange_address": "127.0.0.1", "slots": 6, **extra}

    def push(self, name: str, *, into_manager: bool = True) -> str:
        """Push the main engine's image ``name`` to the registry and pull it onto every node (into the
        manager also under the same name: environment builds run and images are looked up there);
        its registry name."""
        if name in self.pushed:
            return self.pushed[name]
        remote = f"{self.registry.address}/{name.split('/', 1)[-1] if '/' in name else name}"
        for args in (["tag", name, remote], ["push", "-q", remote]):
            proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=600)
            if proc.returncode:
                raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr[-2000:]}")
        subprocess.run(["docker", "rmi", remote], capture_output=True, check=False)
        # onto every node at once, so that no run pays for a pull
        errors: list[BaseException] = []

        def pull(node: Node) -> None:
            try:
                node.docker("pull", "-q", remote, timeout=600)
            except BaseException as e:  # noqa: BLE001 - raised below, in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=pull, args=(n,)) for n in (self.nodes if into_manager else self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if into_manager:
            self.manager.docker("tag", remote, name)
        self.pushed[name] = remote
        return remote

    def wait_ready(self, wait: float = 90.0) -> None:
        """Until every node is ready (and active) in the manager's view."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                nodes = self.manager.client(timeout=10).nodes.list()
                if len(nodes) == len(self.nodes) and all(n.attrs["Status"]["State"] == "ready" for n in nodes):
                    return
            time.sleep(0.2)
        raise RuntimeError("the swarm's nodes did not all become ready")

    def restart_manager(self) -> None:
        self.manager.stop()
        self.manager.start()
        self.wait_ready()

    def restart_node(self, node: Node) -> None:
        node.kill()
        node.start()
        self.wait_ready()

    def nodes_by_id(self) -> dict[str, Node]:
        return {node_id: node for node, node_id in zip(self.nodes, self.node_ids().values(), strict=True)}

    def stop(self) -> None:
        # in parallel: each dockerd takes seconds to stop its containers
        threads = [threading.Thread(target=node.stop, kwargs={"clear": True}) for node in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.registry.stop()
        sweep(self.root)


def start_swarm(root: Path = ROOT, heartbeat: str = "1s", tag: str = "sw",
                data_path_port: int = DATA_PATH_PORT) -> Swarm:
    """Sweep ``root``, start the registry and three dockerd, make them one swarm (the workers joined).

    Another harness on the same machine (a benchmark beside the tests) needs its own ``root``,
    ``tag`` (two letters) and ``data_path_port``.
    """
    if not Path(REGISTRY_BIN).is_file():
        raise RuntimeError(f"{REGISTRY_BIN} is missing: run scripts/setup (it installs Debian's docker-registry)")
    sweep(root)
    root.mkdir(parents=True)
    manager = Node("m", root / "m", 0, tag=tag)
    workers = [Node(name, root / name, i, tag=tag) for i, name in enumerate(NODES[1:], start=1)]
    swarm = Swarm(root, manager, workers, Registry(root / "registry", free_port()))
    try:
        swarm.registry.start()
        for node in swarm.nodes:
            node.start()
        manager.swarm_port = free_port()
        addr = f"127.0.0.1:{manager.swarm_port}"
        # a short heartbeat: a node that dies is seen down within seconds (the default is 5 s)
        manager.docker("swarm", "init", "--listen-addr", addr, "--advertise-addr", addr,
                       "--data-path-port", str(data_path_port), "--dispatcher-heartbeat", heartbeat)
        token = manager.docker("swarm", "join-token", "-q", "worker")
        for node in workers:
            node.swarm_port = free_port()
            own = f"127.0.0.1:{node.swarm_port}"
            node.docker("swarm", "join", "--token", token, "--listen-addr", own, "--advertise-addr", own, addr)
        swarm.wait_ready()
        return swarm
    except BaseException:
        swarm.stop()
        raise

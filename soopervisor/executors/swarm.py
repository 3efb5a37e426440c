"""Runs on a Docker Swarm: each pipeline run is a one-task ``replicated-job`` service.

What runs where:

- Images (``resolve_image``, ``has_image``, ``latest_image``, ``read_file``) and environment
  builds (``execute`` with ``keep_as``: a container committed as an image) happen on the
  manager's own engine, as on any Docker engine (executors/docker.py).
- A pipeline run (``execute`` without ``keep_as``) is a service: its image is pushed to the
  engine entry's ``registry`` and run as ``registry/repo@digest`` on whichever node the
  scheduler picks. Its inputs and artifacts travel through an :class:`~.offnode.Exchange` on
  this machine; the container's command is the offnode bootstrap, which reads the exchange's
  URL and token from a Swarm secret (mode 0400, uid 0) and runs the pipeline as uid 1000.
  The run's environment (secrets among it) is a second Swarm secret read by the bootstrap:
  nothing secret is ever a plain value of the service spec.

A run has exactly one task: one replica, at most one at a time, restart condition none. Swarm
can still start a second one (moby#42741); the task list is watched and a second task
removes the service, failing the run with that reason. A node that goes down mid-run ends the
run with a clear error (never a silent retry: the queue owns retries). The service and its
secrets are removed whatever happens; a run's services and secrets are found again by the
``soopervisor.run`` label (stop from elsewhere, reap, adopt).
"""
from __future__ import annotations

import contextlib
import json
import re
import secrets as _secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engines import Engine
from ..errors import EngineUnavailable, UsageError
from . import RUN_LABEL, CollectTo, ContainerSpec, ExecResult, KeepAs, registry
from .docker import CA_PATH, CA_VARIABLES, LABEL, DockerExecutor, _client, _reason, connect, engine_reason
from .offnode import Exchange, bootstrap_command

#: the capabilities the bootstrap needs as root (extract and chown the tree, drop to the user, read
#: the pipeline's files for the upload); the pipeline itself runs without any
CAPABILITIES = ["CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER"]
#: how often the task list is looked at
POLL = 0.25
#: how long the manager may not answer (a restart) before the run fails
MANAGER_GRACE = 120.0
#: how long the node of a running task must be seen down, without a break, before the run is lost
NODE_GRACE = 10.0
#: how long logs may lag behind a finished task (they travel node -> manager) before we stop waiting
LOG_GRACE = 15.0
_TERMINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


def _docker():
    import docker

    return docker


class _Gone(Exception):
    """What was asked about is no longer in the swarm (a removed service)."""


class _Manager(Exception):
    """The manager did not answer (a restart, a network hiccup); the caller decides how long to wait."""


class SwarmExecutor(registry.BuildsOnDocker):
    """The Executor protocol on a Docker Swarm (the engine entry's ``host`` is a manager)."""

    def __init__(self, engine: Engine, client: Any = None) -> None:
        self.config = engine
        self.engine = engine.name
        self.where = engine.where
        self.client = client if client is not None else connect(engine)
        # images and environment builds: the manager's own engine
        self.builder = DockerExecutor(client=self.client, engine=engine)
        self.registry = engine.registry
        self._cancelled = threading.Event()
        self._service: str | None = None
        self._lock = threading.Lock()
        #: what the run said to the log about itself (its node, a second task, a node down)
        self.notes: list[str] = []
        #: the swarm node id the last run's task was placed on
        self.node: str | None = None

    def distribute(self, image: str) -> str:
        """The name nodes pull ``image`` by: pushed to the registry, ``registry/repo@digest``
        (the image itself when the entry names no registry: then it must be on every node)."""
        return self.to_registry(image, builder=f"the swarm manager of {self.engine!r}")

    # -- running ------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop what ``execute`` runs (from any thread): the build's container, or the run's service."""
        self._cancel_build()
        self._remove_service()

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        collect_to: CollectTo | None = None,
        keep_as: KeepAs | None = None,
    ) -> ExecResult:
        """An environment build (``keep_as``) on the manager's engine; a pipeline run as a service."""
        if keep_as is not None:
            return self._build(spec, on_output, collect_to, keep_as)
        return _Run(self, spec, on_output, collect_to).run()

    def _remove_service(self) -> None:
        with self._lock:
            sid = self._service
        if sid is not None:
            with contextlib.suppress(Exception):
                self.client.api.remove_service(sid)

    # -- a run's services and secrets, found by label from any process --------------------------------
    def _services(self, run_id: str | None) -> list[dict]:
        value = f"{RUN_LABEL}={run_id}" if run_id is not None else RUN_LABEL
        try:
            return self.client.api.services(filters={"label": value})
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise EngineUnavailable(f"the swarm manager did not answer: {_reason(e)}") from None

    def kill_by_label(self, run_id: str) -> int:
        """Remove the services of ``run_id`` (a service cannot be killed and kept); how many."""
        return self.remove_by_label(run_id)

    def remove_by_label(self, run_id: str) -> int:
        """Remove the services of ``run_id`` and their secrets; how many services."""
        if not run_id:
            return 0  # "" is the label of kept environment images: never a run
        done = 0
        for service in self._services(run_id):
            with contextlib.suppress(Exception):
                self.client.api.remove_service(service["ID"])
                done += 1
        _remove_objects(self.client, run_id)
        return done

    def labelled(self) -> dict[str, int]:
        """Run id -> number of services, for every service with a run label in the swarm."""
        counts: dict[str, int] = {}
        for service in self._services(None):
            run_id = ((service.get("Spec") or {}).get("Labels") or {}).get(RUN_LABEL)
            if run_id:
                counts[run_id] = counts.get(run_id, 0) + 1
        return counts


def _remove_objects(client: Any, run_id: str, tries: int = 1) -> None:
    """The secrets and configs of ``run_id`` (gone with its service: no longer in use); ``tries`` times,
    a second apart, while the manager does not answer (a reap by label removes them later)."""
    value = f"{RUN_LABEL}={run_id}"
    for attempt in range(tries):
        left = False
        for listing, remove in ((client.api.secrets, client.api.remove_secret),
                                (client.api.configs, client.api.remove_config)):
            try:
                items = listing(filters={"label": value})
            except Exception:  # noqa: BLE001 - the manager does not answer
                left = True
                continue
            for item in items:
                try:
                    remove(item["ID"])
                except Exception:  # noqa: BLE001 - still in use for a moment, or the manager went away
                    left = True
        if not left:
            return
        if attempt + 1 < tries:
            time.sleep(1)


def _stamp(text: bytes) -> tuple[int, int] | None:
    """RFC 3339 (nanoseconds) timestamp -> (seconds since the epoch, nanoseconds), comparable."""
    import calendar

    m = re.match(rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$", text)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    nanos = int((m.group(7) or b"0").ljust(9, b"0"))
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)), nanos


class _Run:
    """One pipeline run as a service: exchange, secrets, service, logs, watch; always cleaned up."""

    def __init__(self, ex: SwarmExecutor, spec: ContainerSpec, on_output: Callable[[bytes], None],
                 collect_to: CollectTo | None) -> None:
        self.ex, self.spec, self.on_output, self.collect_to = ex, spec, on_output, collect_to
        self.client = ex.client
        self.api = ex.client.api
        self.run_id = spec.labels.get(RUN_LABEL) or _secrets.token_hex(6)
        slug = re.sub(r"[^a-zA-Z0-9-]", "-", self.run_id)[:32].strip("-") or "run"
        self.name = f"soopervisor-{slug}-{_secrets.token_hex(3)}"
        self.marker = f"soopervisor-end-{_secrets.token_hex(12)}"
        self.ended = threading.Event()  # the bootstrap's last line arrived
        self.stop_logs = threading.Event()
        self.timed_out = threading.Event()
        self._stream = None
        self._last_frame = time.monotonic()

    def note(self, text: str) -> None:
        self.ex.notes.append(text)
        self.on_output(f"soopervisor: {text}\n".encode())

    # -- the sequence -----------------------------------------------------------------------------
    def run(self) -> ExecResult:
        ex, spec = self.ex, self.spec
        if ex._cancelled.is_set():
            return ExecResult(exit_code=130, cancelled=True)
        image = ex.distribute(spec.image)
        exchange = self._exchange()
        timer = None
        follower = None
        try:
            with exchange:  # opened by _exchange(); closed on the way out
                refs = self._secrets(exchange)
                self._create(image, refs)
                if ex._cancelled.is_set():
                    ex._remove_service()
                if spec.timeout:
                    timer = threading.Timer(spec.timeout, lambda: (self.timed_out.set(), ex._remove_service()))
                    timer.daemon = True
                    timer.start()
                follower = threading.Thread(target=self._follow, name=f"{self.name}-logs", daemon=True)
                follower.start()
                code, reason = self._watch()
                stopped = self.timed_out.is_set() or ex._cancelled.is_set()
                # every line, then the end: the bootstrap's marker (after its upload), else a short quiet spell
                self._drain(wait_marker=code is not None and not stopped)
                if not stopped:
                    exchange.wait_upload(30)
                if exchange.error:
                    self.note(f"the artifacts did not arrive: {exchange.error}")
                if reason is not None:
                    raise EngineUnavailable(reason, "the service was removed; run again (the run queue retries "
                                            "runs whose node was lost)")
                return ExecResult(exit_code=code if code is not None else 137,
                                  timed_out=self.timed_out.is_set(), cancelled=ex._cancelled.is_set(),
                                  collected=exchange.collected and not stopped)
        finally:
            if timer is not None:
                timer.cancel()
            self.stop_logs.set()
            self._close_stream()
            self._cleanup()
            if follower is not None:
                follower.join(10)

    def _exchange(self) -> Exchange:
        """The run's exchange, on ``exchange_address`` when it is this machine's; else on every interface
        (an address the nodes see through NAT is not one this machine has): the token guards it."""
        address = self.ex.config.exchange_address or "127.0.0.1"
        exchange = Exchange(self.spec.archives, self.collect_to, bind=address, advertise=address)
        try:
            exchange.open()
        except OSError:
            exchange = Exchange(self.spec.archives, self.collect_to, bind="0.0.0.0", advertise=address)
            exchange.open()
        return exchange

    def _secrets(self, exchange: Exchange) -> list:
        """The run's Swarm secrets (exchange file, environment) and CA config, as references for the spec."""
        types = _docker().types
        labels = {RUN_LABEL: self.run_id, LABEL: "1"}
        refs: dict[str, list] = {"secrets": [], "configs": []}
        try:
            made = self.api.create_secret(f"{self.name}-exchange", exchange.secret_file(), labels=labels)
            refs["secrets"].append(types.SecretReference(made["ID"], f"{self.name}-exchange",
                                                         filename="soopervisor-exchange", uid="0", gid="0",
                                                         mode=0o400))
            env = json.dumps(dict(self.spec.environment)).encode()
            made = self.api.create_secret(f"{self.name}-env", env, labels=labels)
            refs["secrets"].append(types.SecretReference(made["ID"], f"{self.name}-env", filename="soopervisor-env",
                                                         uid="0", gid="0", mode=0o400))
            if self.spec.ca_bundle:
                data = self.spec.ca_bundle.read_bytes()
                made = self.api.create_config(f"{self.name}-ca", data, labels=labels)
                refs["configs"].append(types.ConfigReference(made["ID"], f"{self.name}-ca", filename=CA_PATH,
                                                             uid="0", gid="0", mode=0o444))
        except OSError as e:
            raise UsageError(f"cannot read the CA bundle: {e}", "check --ca-bundle") from None
        except Exception as e:  # noqa: BLE001 - any failure of the manager
            raise EngineUnavailable(f"the swarm manager refused the run's secrets: {_reason(e)}") from None
        return refs

    def _create(self, image: str, refs: dict[str, list]) -> None:
        types = _docker().types
        spec, config = self.spec, self.ex.config
        env = {name: CA_PATH for name in CA_VARIABLES} if spec.ca_bundle and spec.name_ca else {}
        labels = {LABEL: "1", **spec.labels}
        command = bootstrap_command(spec.command, collect_path=spec.collect_path, end_marker=self.marker)
        container = types.ContainerSpec(
            image, command=command, env=env, workdir=spec.workdir, labels=labels,
            secrets=refs["secrets"], configs=refs["configs"] or None, init=True, tty=False,
            cap_drop=["ALL"], cap_add=CAPABILITIES, stop_grace_period=10_000_000_000)
        nano = int(spec.cpus * 1e9) if spec.cpus else None
        resources = types.Resources(cpu_limit=nano, mem_limit=spec.memory, cpu_reservation=nano,
                                    mem_reservation=spec.memory) if (nano or spec.memory) else None
        network = spec.network if spec.network != "default" else config.network
        networks = [self._network(network)] if network else None
        template = types.TaskTemplate(
            container, resources=resources, restart_policy=types.RestartPolicy(condition="none", max_attempts=0),
            placement=types.Placement(constraints=list(config.constraints)) if config.constraints else None,
            networks=networks)
        try:
            made = self.api.create_service(template, name=self.name, labels=labels,
                                           mode=types.ServiceMode("replicated-job", replicas=1, concurrency=1))
        except Exception as e:  # noqa: BLE001 - any failure of the manager
            raise EngineUnavailable(f"the swarm manager refused the run's service: {_reason(e)}") from None
        with self.ex._lock:
            self.ex._service = made["ID"]

    def _network(self, name: str) -> str:
        """The id of the swarm network ``name``; UsageError when the manager has none of that name."""
        try:
            found = [n for n in self.api.networks(names=[name]) if n.get("Name") == name]
        except Exception as e:  # noqa: BLE001 - any failure of the manager
            raise EngineUnavailable(f"the swarm manager did not answer: {_reason(e)}") from None
        if not found:
            raise UsageError(f"the swarm has no network {name!r}",
                             f"use `network: host` or an attachable overlay network in {self.ex.config.source}")
        return found[0]["Id"]

    # -- watching -----------------------------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _docker().errors.NotFound:
            raise _Gone from None
        except Exception as e:  # noqa: BLE001 - requests' errors, APIError: the caller tolerates a while
            raise _Manager(_reason(e)) from None

    def _watch(self) -> tuple[int | None, str | None]:
        """Until the service's task ends: (its exit code or None, a reason to fail the run or None)."""
        sid = self.ex._service
        lost_since: float | None = None
        waiting_said = False
        node_checked = 0.0
        down_since: float | None = None
        placed = False
        while True:
            try:
                tasks = self._call(self.api.tasks, filters={"service": sid})
                lost_since = None
            except _Gone:
                return None, None  # removed: cancel, timeout or a stop from another process
            except _Manager as e:
                if self.ex._cancelled.is_set() or self.timed_out.is_set():
                    return None, None
                if lost_since is None:
                    lost_since = time.monotonic()
                    self.note(f"the swarm manager does not answer ({e}); waiting for it")
                elif time.monotonic() - lost_since > MANAGER_GRACE:
                    return None, f"the swarm manager did not answer for {MANAGER_GRACE:g}s: {e}"
                time.sleep(1)
                continue
            if len(tasks) > 1:
                self.ex._remove_service()
                return None, (f"Swarm started a second task for this run (moby#42741): "
                              f"the service was removed after {len(tasks)} tasks")
            if not tasks:
                if self._gone(sid):
                    return None, None  # removed: cancel, timeout or a stop from another process
                time.sleep(POLL)
                continue
            task = tasks[0]
            status = task.get("Status") or {}
            state = status.get("State")
            if state in ("pending",) and status.get("Err") and not waiting_said:
                waiting_said = True
                self.note(f"waiting for a swarm node: {status['Err']}")
            if state in _TERMINAL:
                return self._ended(task, state, status)
            node = task.get("NodeID")
            if node and not placed and state in ("starting", "running"):
                placed = True
                self.ex.node = node
                with contextlib.suppress(_Manager, _Gone):
                    info = self._call(self.api.inspect_node, node)
                    name = (info.get("Description") or {}).get("Hostname") or "?"
                    self.note(f"running on swarm node {node[:12]} ({name})")
            if node and state == "running" and time.monotonic() - node_checked > 1:
                node_checked = time.monotonic()
                with contextlib.suppress(_Manager, _Gone):
                    info = self._call(self.api.inspect_node, node)
                    down = (info.get("Status") or {}).get("State") == "down"
                    down_since = (down_since or time.monotonic()) if down else None
                    # a manager that just restarted sees every node down until its heartbeats come
                    # in again: only a node down for NODE_GRACE seconds in a row is lost
                    if down_since is not None and time.monotonic() - down_since >= NODE_GRACE:
                        self.ex._remove_service()
                        name = (info.get("Description") or {}).get("Hostname") or ""
                        return None, (f"the swarm node {node[:12]} ({name}) running this run went down "
                                      "mid-run; the service was removed so that it never runs twice")
            time.sleep(POLL)

    def _gone(self, sid: str | None) -> bool:
        docker = _docker()
        try:
            self.api.inspect_service(sid)
            return False
        except docker.errors.NotFound:
            return True
        except Exception:  # noqa: BLE001 - the manager busy: look again
            return False

    def _ended(self, task: dict, state: str, status: dict) -> tuple[int | None, str | None]:
        if self.ex._cancelled.is_set() or self.timed_out.is_set():
            return None, None
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        err = status.get("Err") or ""
        if state in ("complete", "failed") and code is not None and (code != 0 or state == "complete"):
            return int(code), None
        if state == "orphaned":
            return None, f"the swarm node running this run was lost (task {task.get('ID', '')[:12]} orphaned)"
        if state in ("shutdown", "remove"):
            return None, None  # removed from elsewhere
        if "No such image" in err or "pull" in err.lower():
            raise UsageError(f"no swarm node could get the run's image: {err}",
                             f"check that the nodes reach the registry {self.ex.config.registry}")
        return None, f"the swarm task {state}: {err or 'no reason given'}"

    # -- logs ---------------------------------------------------------------------------------------
    def _follow(self) -> None:
        """Follow the service's logs to ``on_output``; reconnect after a drop without repeating a line."""
        docker = _docker()
        last: tuple[int, int] | None = None
        at_last = 0  # frames seen with the stamp ``last``
        while not self.stop_logs.is_set():
            sid = self.ex._service
            skip = at_last
            try:
                params = {"follow": 1, "stdout": 1, "stderr": 1, "timestamps": 1, "since": last[0] if last else 0}
                res = self.api._get(self.api._url("/services/{0}/logs", sid), params=params, stream=True)
                self.api._raise_for_status(res)
                self._stream = docker.types.daemon.CancellableStream(
                    self.api._multiplexed_response_stream_helper(res), res)
                for frame in self._stream:
                    self._last_frame = time.monotonic()
                    stamp_text, _, message = frame.partition(b" ")
                    stamp = _stamp(stamp_text)
                    if stamp is None:
                        if frame.startswith(b"Error grabbing logs"):
                            continue  # the daemon's own words when the manager went away: we reconnect
                        stamp, message = last or (0, 0), frame
                    if last is not None and stamp < last:
                        continue  # before where we were: sent before the reconnect
                    if stamp == last:
                        if skip > 0:
                            skip -= 1
                            continue
                        at_last += 1
                    else:
                        last, at_last, skip = stamp, 1, 0
                    if message.rstrip(b"\r\n") == self.marker.encode():
                        self.ended.set()
                        continue
                    self.on_output(message)
            except Exception:  # noqa: BLE001,S110 - a drop (manager restart, closed by us): reconnect or stop
                pass
            if self.stop_logs.wait(0.5):
                return

    def _drain(self, wait_marker: bool) -> None:
        """Until the bootstrap's last line arrived (or LOG_GRACE); without one, until 1 s of quiet."""
        deadline = time.monotonic() + LOG_GRACE
        if wait_marker:
            self.ended.wait(LOG_GRACE)
            return
        while time.monotonic() < deadline and time.monotonic() - self._last_frame < 1.0:
            if self.ended.wait(0.1):
                return

    def _close_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    def _cleanup(self) -> None:
        """The service and its secrets, always (left to a reap by label only when the manager is gone)."""
        self.ex._remove_service()
        with self.ex._lock:
            self.ex._service = None
        _remove_objects(self.client, self.run_id, tries=10)


def probe(engine: Engine, timeout: float = 5.0) -> dict:
    """Whether the swarm's manager answers within ``timeout``: its version, the runs (services) it holds
    and how many nodes are ready, or the reason it does not answer."""
    try:
        client = _client(engine, timeout)
        try:
            version = client.version().get("Version")
            running = client.api.services(filters={"label": RUN_LABEL})
            nodes = client.api.nodes()
            ready = sum((n.get("Status") or {}).get("State") == "ready" for n in nodes)
            return {"answers": True, "server_version": version, "running": len(running), "reason": None,
                    "nodes": len(nodes), "nodes_ready": ready}
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - any failure means: it does not answer, and why
        return {"answers": False, "server_version": None, "running": None, "reason": engine_reason(e)}

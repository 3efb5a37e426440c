"""Run a pipeline as a Kubernetes Job, with the official ``kubernetes`` client.

One run is one Job (``backoffLimit: 0``: never a second try of a failed pipeline; a
``podFailurePolicy`` that ignores disruptions — an evicted pod is replaced — and fails the
Job on any non-zero exit code), one Secret next to it (the exchange file and every
environment value: none is ever a plain ``value`` in the pod spec), both labelled
``soopervisor.run=<id>`` so that another process finds them again (stop, reap, adopt).

A pod cannot be reached with the local engine's put/get archive: its inputs and its
artifacts go through a one-run HTTP exchange on this host (``offnode.Exchange``), whose
address and token only the pod's root bootstrap can read (a Secret volume, mode 0400).
Environments are built where images can be committed: the entry's ``build`` Docker engine;
the pipeline image is pushed from there to the entry's ``registry`` and the Job runs it by
digest.

The pod's security: a service account without API access and no mounted token, no
privilege escalation, seccomp RuntimeDefault, every capability dropped but the four the
bootstrap's root phase needs (CHOWN to hand the tree to the pipeline user, SETUID/SETGID to
become that user, DAC_OVERRIDE to read back what the pipeline wrote whatever its modes,
FOWNER to set times and modes of extracted files). ``runAsNonRoot`` cannot be set: the
bootstrap starts as root (to read the exchange token the pipeline user cannot read) and drops
to uid 1000 for the pipeline itself.

No kubernetes type crosses the protocol; manifests are plain dicts (``job_manifest``,
``secret_manifest``), validated against the Kubernetes OpenAPI schema by the tests.
"""
from __future__ import annotations

import base64
import calendar
import contextlib
import math
import re
import secrets as _secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from ..engines import Engine
from ..errors import EngineUnavailable, UsageError
from . import RUN_LABEL, CollectTo, ContainerSpec, ExecResult, KeepAs, registry

CONTAINER = "run"
#: the pipeline's user: the bootstrap drops to it before running the script
PIPELINE_UID = 1000
#: where the exchange file is (the bootstrap reads it as root); the Secret volume's folder
SECRETS_DIR = "/run/secrets"
EXCHANGE_FILE = "soopervisor-exchange"
CA_DIR = "/etc/soopervisor"
#: a finished Job left behind (we died before deleting it) is removed by the cluster after this
TTL_AFTER_FINISHED = 3600
#: what the bootstrap needs as root; everything else is dropped
CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"]
#: exit code reported when the Job was deleted under the run (cancel, timeout): the pod was killed
KILLED = 137
ENGINE_HINT = ("check that the cluster answers (`kubectl --context CONTEXT get jobs -n NAMESPACE`) and that the "
               "executor entry's kubeconfig/context/namespace name it; `soopervisor executors` shows the entry")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _k8s():
    import kubernetes  # imported here: validation and the CLI's help must not pay for it

    return kubernetes


# -- manifests: plain dicts, exactly what is sent ------------------------------------------------

def job_name(run_id: str) -> str:
    """A Job name for ``run_id``: a DNS label (pods add 5 characters), unique per attempt."""
    base = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40].strip("-") or "run"
    return f"sv-{base}-{_secrets.token_hex(3)}"


def _labels(spec: ContainerSpec) -> dict[str, str]:
    labels = {"soopervisor": "1"}
    for key, value in spec.labels.items():
        if _LABEL_VALUE.match(value) and len(value) <= 63:
            labels[key] = value
    return labels


def env_keys(spec: ContainerSpec) -> dict[str, str]:
    """Environment variable -> its key in the run's Secret (keys are [-._a-zA-Z0-9]+)."""
    return {name: f"env.{i}" for i, name in enumerate(spec.environment)}


def secret_manifest(name: str, spec: ContainerSpec, exchange_url: str, token: str,
                    owner: dict[str, str] | None = None) -> dict[str, Any]:
    """The run's Secret: the exchange file (URL and token) and every environment value of ``spec``."""
    def b64(text: str | bytes) -> str:
        return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()

    data = {"exchange": b64(f"{exchange_url}\n{token}\n")}
    for variable, key in env_keys(spec).items():
        data[key] = b64(spec.environment[variable])
    if spec.ca_bundle is not None:
        data["ca.crt"] = b64(spec.ca_bundle.read_bytes())
    meta: dict[str, Any] = {"name": name, "labels": _labels(spec)}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": owner["name"],
                                    "uid": owner["uid"], "blockOwnerDeletion": False}]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
            "metadata": meta, "data": data}


def job_manifest(name: str, spec: ContainerSpec, *, image: str, command: list[str], secret: str,
                 service_account: str | None = None) -> dict[str, Any]:
    """The run's Job: one pod, never retried for a failure of its own, secrets only by reference."""
    labels = _labels(spec)
    env: list[dict[str, Any]] = [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for variable, key in env_keys(spec).items()
    ]
    volumes: list[dict[str, Any]] = [{
        "name": "exchange",
        "secret": {"secretName": secret, "defaultMode": 0o400,
                   "items": [{"key": "exchange", "path": EXCHANGE_FILE, "mode": 0o400}]},
    }]
    mounts: list[dict[str, Any]] = [{"name": "exchange", "mountPath": SECRETS_DIR, "readOnly": True}]
    if spec.ca_bundle is not None:
        volumes.append({"name": "ca", "secret": {"secretName": secret, "defaultMode": 0o444,
                                                 "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
        mounts.append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
        if spec.name_ca:
            from .docker import CA_PATH, CA_VARIABLES  # the same names the Docker executor sets

            env += [{"name": v, "value": CA_PATH} for v in CA_VARIABLES]  # a path, not a secret
    resources: dict[str, dict[str, str]] = {}
    if spec.cpus:
        cpu = f"{round(spec.cpus * 1000)}m"
        resources["requests"] = {"cpu": cpu}
        resources["limits"] = {"cpu": cpu}
    if spec.memory:
        resources.setdefault("requests", {})["memory"] = str(int(spec.memory))
        resources.setdefault("limits", {})["memory"] = str(int(spec.memory))
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": {
            # root for the bootstrap's first and last phase (see the module's docstring)
            "runAsUser": 0, "runAsNonRoot": False, "privileged": False, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
        },
    }
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if spec.network == "host":
        pod_spec["hostNetwork"] = True
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
        "podFailurePolicy": {"rules": [
            # an eviction, preemption or node drain is not the pipeline's failure: the Job starts another pod
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "NotIn", "values": [0]}},
        ]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if spec.timeout:
        job_spec["activeDeadlineSeconds"] = max(1, math.ceil(spec.timeout))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
            "spec": job_spec}


def pod_command(spec: ContainerSpec) -> list[str]:
    """The container's command: the bootstrap around ``spec.command``, run in ``spec.workdir``.

    No ``workingDir`` in the manifest: the folder arrives with the inputs, after the start, and a
    runtime that does not create a missing working directory (podman) refuses to start the container.
    """
    from .offnode import bootstrap_command

    inner = ["env", f"--chdir={spec.workdir}", *spec.command] if spec.workdir not in ("", "/") else spec.command
    return bootstrap_command(inner, collect_path=spec.collect_path, user=PIPELINE_UID)


# -- log timestamps -----------------------------------------------------------------------------

def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp as the kubelet writes them (UTC, 'Z')."""
    text = text.strip()
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC timestamp: {text!r}")
    whole, _, frac = text[:-1].partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9] if frac else 0)


def _since_time(nanos: int) -> str:
    # sinceTime has a precision of seconds: the lines of that second come again and are skipped
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(nanos // 1_000_000_000))


class _Lines:
    """Timestamped log lines to ``on_output``, each exactly once across reconnects."""

    def __init__(self, on_output: Callable[[bytes], None]) -> None:
        self.on_output = on_output
        self.last = -1  # the newest timestamp delivered
        self.at_last = 0  # how many lines carried it
        self.count = 0  # lines delivered
        self._skip = 0  # lines of ``last`` still to skip after a reconnect
        self._partial = b""

    def reconnect(self) -> str | None:
        self._partial = b""  # an unfinished line comes again, whole
        self._skip = self.at_last
        return _since_time(self.last) if self.last >= 0 else None

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._line(line, b"\n")

    def finish(self) -> None:
        if self._partial:
            self._line(self._partial, b"")
            self._partial = b""

    def _line(self, line: bytes, end: bytes) -> None:
        stamp, sep, text = line.partition(b" ")
        try:
            ts = parse_timestamp(stamp.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            self.on_output(line + end)  # not a timestamped line (an error text of the API)
            return
        if not sep:
            text = b""
        if ts < self.last:
            return
        if ts == self.last:
            if self._skip > 0:
                self._skip -= 1
                return
            self.at_last += 1
        else:
            self.last, self.at_last, self._skip = ts, 1, 0
        self.count += 1
        self.on_output(text + end)


# -- the executor ---------------------------------------------------------------------------------

class KubernetesExecutor(registry.BuildsOnDocker):
    """The Executor protocol on a Kubernetes cluster: one Job per run, images from the build engine."""

    def __init__(self, engine: Engine, *, api_client: Any = None, build: Any = None,
                 poll: float = 0.25, grace: float = 60.0) -> None:
        if engine.kubernetes is None:
            raise UsageError(f"executor {engine.name!r} is not a kubernetes engine", "pick a `type: kubernetes` entry")
        self.engine = engine.name
        self.where = engine.where
        self.settings = engine.kubernetes
        self.namespace = engine.kubernetes.namespace
        self.registry = engine.registry
        self.exchange_address = engine.exchange_address or "127.0.0.1"
        self.api_client = api_client if api_client is not None else connect(engine)
        k = _k8s()
        self.batch = k.client.BatchV1Api(self.api_client)
        self.core = k.client.CoreV1Api(self.api_client)
        self._builder = build
        if api_client is None:
            # before anything is built: credentials, namespace and reachability (exit 2 or 3, named)
            self._api(self.batch.list_namespaced_job, self.namespace, limit=1, _request_timeout=20)
        self._poll = poll
        #: how long a pull failure or a pod config error may last before it fails the run
        self.grace = grace
        self._cancelled = threading.Event()
        self._job: str | None = None
        self._lock = threading.Lock()

    # -- images: the build engine's ---------------------------------------------------------
    @property
    def builder(self):
        """The Docker executor of the entry's ``build`` engine (environments are committed there)."""
        if self._builder is None:
            from .. import engines
            from .docker import DockerExecutor

            self._builder = DockerExecutor(engine=engines.load().pick(self.settings.build))
        return self._builder

    def publish(self, image: str, note: Callable[[str], None] | None = None) -> str:
        """Push ``image`` from the build engine to the registry; the reference the cluster pulls (by digest)."""
        return self.to_registry(image, f"the build engine {self.settings.build!r} of {self.engine!r}", note)

    # -- running ----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop what ``execute`` runs (from any thread): the build's container, or the run's Job."""
        self._cancel_build()
        self._delete_job()

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        collect_to: CollectTo | None = None,
        keep_as: KeepAs | None = None,
    ) -> ExecResult:
        """Build on the build engine (``keep_as``), or run ``spec`` as a Job: stream, collect, always delete."""
        if keep_as is not None:
            return self._build(spec, on_output, collect_to, keep_as)
        from .offnode import INPUTS_FAILED, Exchange

        image = self.publish(spec.image, lambda text: on_output(text.encode() + b"\n"))
        name = job_name(spec.labels.get(RUN_LABEL, "run"))
        secret = f"{name}-secret"
        timed_out = threading.Event()
        timer = None
        with Exchange(list(spec.archives), collect_to, bind=self.exchange_address,
                      advertise=self.exchange_address) as exchange:
            try:
                body = secret_manifest(secret, spec, exchange.url, exchange.token)
                self._api(self.core.create_namespaced_secret, self.namespace, body, secrets=spec.environment)
                job = job_manifest(name, spec, image=image, secret=secret,
                                   service_account=self.settings.service_account, command=pod_command(spec))
                with self._lock:
                    if self._cancelled.is_set():
                        return ExecResult(exit_code=130, cancelled=True)
                    created = self._api(self.batch.create_namespaced_job, self.namespace, job)
                    self._job = name
                # the Secret goes with the Job when the cluster collects it (we may die before deleting it)
                owner = {"name": name, "uid": created.metadata.uid}
                with contextlib.suppress(EngineUnavailable):
                    self._api(self.core.patch_namespaced_secret, secret, self.namespace,
                              {"metadata": {"ownerReferences": secret_manifest(
                                  secret, spec, "", "", owner)["metadata"]["ownerReferences"]}})
                if spec.timeout:
                    timer = threading.Timer(spec.timeout, lambda: (timed_out.set(), self._delete_job()))
                    timer.daemon = True
                    timer.start()
                code = self._follow(name, on_output)
                stopped = self._cancelled.is_set() or timed_out.is_set()
                if code is None:
                    code = KILLED
                if exchange.error and not stopped:
                    on_output(f"soopervisor: the artifact exchange: {exchange.error}\n".encode())
                if code == INPUTS_FAILED and not exchange.served:
                    on_output(f"soopervisor: the pod never reached this machine's exchange at {exchange.url}: "
                              f"check `exchange_address` of executor {self.engine!r} (the pods must reach it)\n"
                              .encode())
                return ExecResult(exit_code=code, timed_out=timed_out.is_set(), cancelled=self._cancelled.is_set(),
                                  collected=bool(exchange.collected) and not stopped)
            finally:
                if timer is not None:
                    timer.cancel()
                self._delete_job(name)
                with contextlib.suppress(Exception):
                    self.core.delete_namespaced_secret(secret, self.namespace)

    def _follow(self, name: str, on_output: Callable[[bytes], None]) -> int | None:
        """Follow the Job's pod (and the pods replacing it after disruptions, in turn) to its end; its exit code.

        None: the Job or its pod went away under us (cancel, timeout, deleted by someone).
        """
        done: set[str] = set()
        said: set[str] = set()
        first: dict[str, float] = {}  # when a waiting reason was first seen
        while True:
            pod = self._pod(name, done)
            if pod is None:
                if self._stopped():
                    return None
                if not self._job_exists(name):
                    # stopped from elsewhere (kill_by_label, kubectl delete): like a killed container
                    on_output(f"soopervisor: the Job {name} was deleted while the run was going on\n".encode())
                    return None
                self._wait()
                continue
            pod_name = pod.metadata.name
            if done:
                text = f"soopervisor: the Job replaced its pod with {pod_name}"
                if text not in said:
                    said.add(text)
                    on_output(text.encode() + b"\n")
            waiting = self._waiting(pod)
            if waiting is not None:
                reason, message = waiting
                # the kubelet retries both: a registry's hiccup or a Secret its cache has not seen yet
                # clear up within the grace; past it they are the cause
                lasting = time.monotonic() - first.setdefault(reason, time.monotonic()) >= self.grace
                if reason == "InvalidImageName" or lasting and reason in ("ErrImagePull", "ImagePullBackOff"):
                    raise UsageError(f"the cluster cannot pull the pipeline's image: {reason}: {message[:300]}",
                                     f"check that the nodes reach the registry {self.registry} of executor "
                                     f"{self.engine!r} (and trust it, for an HTTP registry)")
                if reason == "CreateContainerConfigError" and lasting:
                    raise EngineUnavailable(f"the cluster cannot start the pod: {message[:300]}", ENGINE_HINT)
                text = f"soopervisor: waiting for the pod: {reason}" + (f" ({message[:200]})" if message else "")
                if text not in said:
                    said.add(text)
                    on_output(text.encode() + b"\n")
            if self._started(pod):
                self._stream(pod_name, on_output)
                pod = self._terminated(pod_name)
                if pod is None:
                    if self._stopped():
                        return None
                    done.add(pod_name)
                    continue  # deleted: the Job may have replaced it
                if _disrupted(pod):
                    done.add(pod_name)
                    on_output(f"soopervisor: pod {pod_name} was disrupted ({_disruption(pod)}); "
                              "the Job starts another\n".encode())
                    continue
                return _exit_code(pod)
            if _disrupted(pod):
                done.add(pod_name)  # evicted before it started: the Job starts another
                continue
            if pod.status and pod.status.phase == "Failed":  # before its container started (a node lost...)
                on_output(f"soopervisor: pod {pod_name} failed before it started: "
                          f"{pod.status.reason or ''} {pod.status.message or ''}".rstrip().encode() + b"\n")
                return _exit_code(pod)
            self._wait()

    def _stream(self, pod: str, on_output: Callable[[bytes], None]) -> None:
        """The pod's log to ``on_output`` until its container ends, reconnecting where a watch timed out."""
        lines = _Lines(on_output)
        ended = False  # the container had ended before this read began: it reads to the log's end
        while not self._stopped():
            before = lines.count
            since = lines.reconnect()
            query = [("container", CONTAINER), ("follow", "true"), ("timestamps", "true")]
            if since is not None:
                query.append(("sinceTime", since))  # the Python client's read_namespaced_pod_log lacks it
            try:
                response = self.api_client.call_api(
                    "/api/v1/namespaces/{namespace}/pods/{name}/log", "GET",
                    {"namespace": self.namespace, "name": pod}, query, {"Accept": "*/*"},
                    auth_settings=["BearerToken"], _preload_content=False, _request_timeout=(10, None))
                response = response[0] if isinstance(response, tuple) else response
                try:
                    for chunk in response.stream(65536, decode_content=True):
                        lines.feed(chunk)
                finally:
                    response.release_conn()
            except Exception as e:  # noqa: BLE001 - a dropped stream is retried below; the pod says when it ended
                if _status(e) == 404:
                    return
                if _status(e) is None and not self._reachable():
                    raise EngineUnavailable(f"lost the cluster during the run: {_short(e)}", ENGINE_HINT) from None
                self._wait()
            if ended and lines.count == before:
                lines.finish()  # nothing more came: what is left is an unfinished last line
                return
            current = self._read_pod(pod)
            if current is None:
                lines.finish()
                return
            # the API server may end a follow before the log's end (a timeout), the container having
            # ended or not: read again after the last line until a read after the end brings nothing new
            ended = _container_state(current, "terminated") is not None

    # -- the API, with errors named ---------------------------------------------------------------
    def _api(self, fn: Callable[..., Any], *args: Any, secrets: dict[str, str] | None = None,
             missing_ok: bool = False, **kwargs: Any) -> Any:
        """One API call; its failure named (UsageError for what the user fixes, EngineUnavailable otherwise).

        ``missing_ok``: None for a 404 (the object is gone). No secret value is ever part of a message.
        """
        k = _k8s()
        what = fn.__name__.replace("_namespaced", "").replace("_", " ")
        try:
            return fn(*args, **kwargs)
        except k.client.ApiException as e:
            message = _api_message(e, secrets or {})
            if e.status == 404 and missing_ok and "namespaces" not in message:
                return None
            if e.status in (401, 403):
                raise UsageError(f"the cluster of executor {self.engine!r} refused to {what} in namespace "
                                 f"{self.namespace}: {message}",
                                 "check the credentials of its kubeconfig/context, and give them the rights to "
                                 "create, list and delete jobs and secrets and to read pods and pod logs there "
                                 "(a Role and RoleBinding)") from None
            if e.status == 404 and "namespaces" in message:
                raise UsageError(f"the cluster has no namespace {self.namespace!r}: {message}",
                                 f"create it (`kubectl create namespace {self.namespace}`) or fix `namespace` "
                                 f"of executor {self.engine!r}") from None
            if e.status == 422:
                raise UsageError(f"the cluster refused to {what}: {message}",
                                 f"check the executor entry {self.engine!r} (service_account, namespace) and the "
                                 "cluster's version (1.31 or newer)") from None
            raise EngineUnavailable(f"the cluster failed to {what}: {message}", ENGINE_HINT) from None
        except Exception as e:  # noqa: BLE001 - urllib3's connection errors
            raise EngineUnavailable(f"cannot reach the cluster of executor {self.engine!r}: {_short(e)}",
                                    ENGINE_HINT) from None

    def _pod(self, job: str, done: set[str]):
        """The Job's pod to follow now: a disrupted one not yet read first (its replacement comes after)."""
        pods = self._api(self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={job}").items
        pods = [p for p in pods if p.metadata.name not in done]
        if not pods:
            return None
        return min(pods, key=lambda p: (not _disrupted(p), p.metadata.creation_timestamp or 0, p.metadata.name))

    def _read_pod(self, name: str):
        return self._api(self.core.read_namespaced_pod, name, self.namespace, missing_ok=True)

    def _terminated(self, name: str):
        """The pod once its container's end is recorded (the log can end a moment before the status)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pod = self._read_pod(name)
            if pod is None or _container_state(pod, "terminated") is not None or _disrupted(pod):
                return pod
            if self._stopped():
                return None
            self._wait()
        raise EngineUnavailable(f"pod {name}'s log ended but its container did not (for 60 s)", ENGINE_HINT)

    def _job_exists(self, name: str) -> bool:
        return self._api(self.batch.read_namespaced_job, name, self.namespace, missing_ok=True) is not None

    def _reachable(self) -> bool:
        try:
            self.core.list_namespaced_pod(self.namespace, limit=1)
            return True
        except Exception:  # noqa: BLE001 - any failure: not reachable
            return False

    @staticmethod
    def _started(pod) -> bool:
        return any(_container_state(pod, s) is not None for s in ("running", "terminated"))

    @staticmethod
    def _waiting(pod) -> tuple[str, str] | None:
        state = _container_state(pod, "waiting")
        if state is not None and state.reason and state.reason != "ContainerCreating":
            return state.reason, state.message or ""
        for cond in (pod.status.conditions or []) if pod.status else []:
            if cond.type == "PodScheduled" and cond.status == "False" and cond.reason:
                return cond.reason, cond.message or ""
        return None

    def _stopped(self) -> bool:
        return self._cancelled.is_set() or self._job is None

    def _wait(self) -> None:
        self._cancelled.wait(self._poll)

    def _delete_job(self, name: str | None = None) -> None:
        with self._lock:
            name = name or self._job
            if name is None:
                return
            if name == self._job:
                self._job = None
        _delete(self.batch, name, self.namespace)

    # -- a run's Jobs, found by label from any process ---------------------------------------------
    def _labelled(self, run_id: str | None) -> list:
        selector = f"{RUN_LABEL}={run_id}" if run_id is not None else RUN_LABEL
        return list(self._api(self.batch.list_namespaced_job, self.namespace, label_selector=selector).items)

    def kill_by_label(self, run_id: str) -> int:
        """Delete the Jobs of ``run_id`` (their pods go with them; the owner sees the run end), and kill its
        environment build on the build engine; how many."""
        return self._each(run_id, kill=True)

    def remove_by_label(self, run_id: str) -> int:
        """Delete the Jobs and Secrets of ``run_id``, running or not, and its build containers; how many."""
        return self._each(run_id, kill=False)

    def _each(self, run_id: str, kill: bool) -> int:
        if not run_id:
            return 0  # "" is the label of kept environment images: never a run
        done = sum(1 for job in self._labelled(run_id) if _delete(self.batch, job.metadata.name, self.namespace))
        with contextlib.suppress(Exception):  # the Job's owner reference removes them too, in time
            for secret in self.core.list_namespaced_secret(
                    self.namespace, label_selector=f"{RUN_LABEL}={run_id}").items:
                self.core.delete_namespaced_secret(secret.metadata.name, self.namespace)
        with contextlib.suppress(Exception):  # a build engine that does not answer has nothing to stop now
            done += self.builder.kill_by_label(run_id) if kill else self.builder.remove_by_label(run_id)
        return done

    def labelled(self) -> dict[str, int]:
        """Run id -> number of Jobs (and build containers), for every one with a run label."""
        counts: dict[str, int] = {}
        for job in self._labelled(None):
            run_id = (job.metadata.labels or {}).get(RUN_LABEL)
            if run_id:
                counts[run_id] = counts.get(run_id, 0) + 1
        with contextlib.suppress(Exception):
            for run_id, n in self.builder.labelled().items():
                counts[run_id] = counts.get(run_id, 0) + n
        return counts


def connect(engine: Engine):
    """An API client of ``engine``'s cluster from its kubeconfig and context; UsageError when unusable."""
    k = _k8s()
    settings = engine.kubernetes
    path = str(settings.kubeconfig) if settings and settings.kubeconfig else None
    try:
        return k.config.new_client_from_config(config_file=path, context=settings.context if settings else None,
                                               persist_config=False)
    except Exception as e:  # noqa: BLE001 - ConfigException, OSError, a YAML error: the file is not usable
        where = path or "KUBECONFIG / ~/.kube/config"
        raise UsageError(f"executor {engine.name!r}: cannot load the kubeconfig {where}: {_short(e)}",
                         f"fix `kubeconfig`/`context` of the entry in {engine.source} "
                         "(`kubectl config get-contexts` lists the contexts)") from None


def probe(engine: Engine, timeout: float = 5.0) -> dict:
    """Whether ``engine``'s cluster answers within ``timeout``: its version and running soopervisor Jobs,
    or the reason it does not (as the Docker probe reports an engine)."""
    try:
        api = connect(engine)
        k = _k8s()
        try:
            version = k.client.VersionApi(api).get_code(_request_timeout=timeout).git_version
            jobs = k.client.BatchV1Api(api).list_namespaced_job(
                engine.kubernetes.namespace, label_selector=RUN_LABEL, _request_timeout=timeout).items
            running = sum(1 for j in jobs if (j.status and j.status.active))
            return {"answers": True, "server_version": version, "running": running, "reason": None}
        finally:
            api.close()
    except UsageError as e:
        return {"answers": False, "server_version": None, "running": None, "reason": e.message}
    except Exception as e:  # noqa: BLE001 - any failure means: it does not answer, and why
        status = getattr(e, "status", None)
        reason = f"the API answered {status} {getattr(e, 'reason', '')}".strip() if status else _short(e)
        return {"answers": False, "server_version": None, "running": None, "reason": reason}


def _delete(batch, name: str, namespace: str) -> bool:
    """Delete a Job and (Foreground) its pods first; False when it was gone already."""
    try:
        batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground", grace_period_seconds=5)
        return True
    except Exception:  # noqa: BLE001 - gone, or the cluster is away: its ttl and the reaper remove it
        return False


def _container_state(pod, which: str):
    statuses = (pod.status.container_statuses or []) if pod.status else []
    for status in statuses:
        if status.name == CONTAINER and status.state is not None:
            return getattr(status.state, which, None)
    return None


def _disrupted(pod) -> bool:
    return any(c.type == "DisruptionTarget" and c.status == "True"
               for c in ((pod.status.conditions or []) if pod.status else []))


def _disruption(pod) -> str:
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == "DisruptionTarget":
            return c.reason or c.message or "disrupted"
    return "disrupted"


def _exit_code(pod) -> int:
    state = _container_state(pod, "terminated")
    return int(state.exit_code) if state is not None and state.exit_code is not None else 1


def _status(e: BaseException) -> int | None:
    return getattr(e, "status", None)


def _api_message(e: Any, secrets: dict[str, str]) -> str:
    """The API's own message of an error (never its whole body), without any secret value in it."""
    import json

    text = ""
    with contextlib.suppress(Exception):
        text = json.loads(e.body).get("message") or ""
    text = (text or f"{e.status} {e.reason}")[:400]
    for value in secrets.values():
        if value and len(value) >= 3:
            text = text.replace(value, "***")
    return text


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1][:300] if lines else type(e).__name__

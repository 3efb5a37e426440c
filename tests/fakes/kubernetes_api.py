"""A stateful fake of the Kubernetes API, on 127.0.0.1, for the official ``kubernetes`` client.

No cluster can run here. This serves only the endpoints the executor calls, as the API
documents them: Jobs (create, read, list by label selector, delete with a propagation
policy: without one, a Job's pods are orphaned, as the API does for batch/v1), Secrets
(create, list, patch, delete; garbage-collected with their owner Job), Pods (list, read)
and pod logs (``follow``, ``timestamps``, ``sinceTime`` with a precision of seconds,
RFC 3339 timestamps with the kubelet's trimmed nanoseconds).

Every object posted is validated against the Kubernetes OpenAPI schema
(kubernetes-validate, strict: unknown fields are errors) and refused with 422 as the API
server would; a bearer token is required. A Job gets one pod at a time (a "kubelet"
thread): Pending (ContainerCreating) → Running → Succeeded/Failed, running a test's
``program`` that plays the container: it reads the Secret volume and the env its
``secretKeyRef`` resolve to (a missing key is CreateContainerConfigError, as the kubelet
says), writes log lines, and can be evicted; the Job's controller then follows the Job's
``podFailurePolicy`` and ``backoffLimit`` (a disruption ignored → a new pod).
"""
from __future__ import annotations

import base64
import calendar
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: the oldest Kubernetes the executor supports (podFailurePolicy is GA from 1.31)
SCHEMA_VERSION = "1.31.0"


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def nano_stamp(nanos: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as Go's RFC3339Nano writes it."""
    seconds, frac = divmod(nanos, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def validate(obj: dict) -> list[str]:
    """The schema errors of ``obj`` (empty: valid), strict: unknown fields are errors."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(map(str, e.path))}: {e.message}"]
    return []


class Evicted(Exception):
    """Raised inside a program when the pod was evicted or deleted: the program stops."""


@dataclass
class Pod:
    name: str
    job: str
    uid: str
    labels: dict[str, str]
    spec: dict
    created: str
    phase: str = "Pending"
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    conditions: list = field(default_factory=list)
    log: list[tuple[int, bytes]] = field(default_factory=list)
    gone: bool = False  # deleted, or evicted: the program must stop
    changed: threading.Condition = field(default_factory=threading.Condition)

    def to_json(self, namespace: str) -> dict:
        status: dict[str, Any] = {"phase": self.phase, "conditions": list(self.conditions),
                                  "containerStatuses": [{
                                      "name": "run", "image": self.spec["containers"][0]["image"], "imageID": "",
                                      "ready": self.phase == "Running", "restartCount": 0, "state": self.state}]}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": self.name, "namespace": namespace, "uid": self.uid, "labels": self.labels,
                             "creationTimestamp": self.created,
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": self.job,
                                                  "uid": self.labels["controller-uid"], "controller": True}]},
                "spec": self.spec, "status": status}


class Container:
    """What a program sees of its container: env, mounted files, the log, eviction."""

    def __init__(self, api: FakeKubernetes, pod: Pod, env: dict[str, str], files: dict[str, bytes]) -> None:
        self.api, self.pod, self.env, self.files = api, pod, env, files
        self.spec = pod.spec

    def write(self, text: str) -> None:
        """One log line (or several, by newline), each with its own timestamp."""
        with self.pod.changed:
            if self.pod.gone:
                raise Evicted()
            for line in text.splitlines() or [""]:
                stamp = self.api.clock()
                self.pod.log.append((stamp, line.encode()))
            self.pod.changed.notify_all()

    def check(self) -> None:
        if self.pod.gone:
            raise Evicted()

    def evict(self) -> None:
        """As the eviction API: the pod gets DisruptionTarget, its container is killed (137)."""
        self.api.evict(self.pod)
        raise Evicted()

    def wait_gone(self, timeout: float) -> bool:
        with self.pod.changed:
            return self.pod.changed.wait_for(lambda: self.pod.gone, timeout)


Program = Callable[[Container], int]


class FakeKubernetes:
    def __init__(self, token: str, namespaces: tuple[str, ...] = ("default",)) -> None:
        self.token = token
        self.namespaces = set(namespaces)
        self.jobs: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.posted: list[dict] = []  # every object created, as sent (for schema checks)
        self.requests: list[tuple[str, str]] = []
        self.program: Program = lambda c: 0
        #: images the nodes cannot pull (the kubelet reports ErrImagePull)
        self.unpullable: set[str] = set()
        #: close a follow stream once, after this many lines (a watch timeout of the API server)
        self.drop_follow_after: int | None = None
        self.follows = 0
        self.lock = threading.RLock()
        self._last_stamp = 0
        self.server: ThreadingHTTPServer | None = None

    # -- the clock of log lines: strictly increasing except where a test wants equal stamps --
    def clock(self) -> int:
        with self.lock:
            stamp = max(time.time_ns(), self._last_stamp + 1)
            # several lines within the same second and, now and then, the same nanosecond trimmed
            self._last_stamp = stamp
            return stamp

    # -- serving ------------------------------------------------------------------------------
    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._dispatch(self, "GET")

            def do_POST(self) -> None:
                api._dispatch(self, "POST")

            def do_PATCH(self) -> None:
                api._dispatch(self, "PATCH")

            def do_DELETE(self) -> None:
                api._dispatch(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        with self.lock:
            for pod in self.pods.values():
                self._gone(pod)

    def reset(self) -> None:
        with self.lock:
            for pod in self.pods.values():
                self._gone(pod)
            self.jobs.clear()
            self.secrets.clear()
            self.pods.clear()
            self.posted.clear()
            self.requests.clear()
            self.program = lambda c: 0
            self.unpullable = set()
            self.drop_follow_after = None
            self.follows = 0

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = json.loads(h.rfile.read(length) or b"null") if length else None
        self.requests.append((method, url.path))
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, _status(401, "Unauthorized", "Unauthorized"))
        parts = url.path.strip("/").split("/")
        if parts == ["version"]:
            return self._send(h, 200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake", "gitCommit": "",
                                       "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                       "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"})
        try:
            if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[2] == "namespaces":
                ns, kind, rest = parts[3], parts[4], parts[5:]
                self._namespace(ns)
                if kind == "secrets":
                    return self._secrets(h, method, ns, rest, body, query)
                if kind == "pods":
                    return self._pods(h, method, ns, rest, query)
            if parts[:3] == ["apis", "batch", "v1"] and len(parts) >= 6 and parts[3] == "namespaces" \
                    and parts[5] == "jobs":
                self._namespace(parts[4])
                return self._jobs(h, method, parts[4], parts[6:], body, query)
            raise _Error(404, "NotFound", f"the server could not find the requested resource ({url.path})")
        except _Error as e:
            return self._send(h, e.code, _status(e.code, e.reason, e.message))

    def _namespace(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise _Error(404, "NotFound", f'namespaces "{ns}" not found')

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # -- secrets --------------------------------------------------------------------------------
    def _secrets(self, h, method: str, ns: str, rest: list[str], body, query) -> None:
        with self.lock:
            if method == "POST" and not rest:
                self._check(body, "Secret")
                name = body["metadata"]["name"]
                if (ns, name) in self.secrets:
                    raise _Error(409, "AlreadyExists", f'secrets "{name}" already exists')
                obj = json.loads(json.dumps(body))
                obj["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
                self.secrets[(ns, name)] = obj
                return self._send(h, 201, obj)
            if method == "GET" and not rest:
                items = [s for (n, _), s in self.secrets.items() if n == ns
                         and _selects(query.get("labelSelector"), s["metadata"].get("labels") or {})]
                return self._send(h, 200, {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items})
            name = rest[0] if rest else ""
            obj = self.secrets.get((ns, name))
            if obj is None:
                raise _Error(404, "NotFound", f'secrets "{name}" not found')
            if method == "PATCH":
                meta = (body or {}).get("metadata") or {}
                if set(body or {}) - {"metadata"} and obj.get("immutable"):
                    raise _Error(422, "Invalid", f'Secret "{name}" is invalid: data: Forbidden: field is immutable')
                obj["metadata"].update(meta)
                return self._send(h, 200, obj)
            if method == "DELETE":
                del self.secrets[(ns, name)]
                return self._send(h, 200, _status(200, "", "", "Success"))
            if method == "GET":
                return self._send(h, 200, obj)
        raise _Error(405, "MethodNotAllowed", method)

    # -- jobs -----------------------------------------------------------------------------------
    def _jobs(self, h, method: str, ns: str, rest: list[str], body, query) -> None:
        with self.lock:
            if method == "POST" and not rest:
                self._check(body, "Job")
                name = body["metadata"]["name"]
                if (ns, name) in self.jobs:
                    raise _Error(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
                obj = json.loads(json.dumps(body))
                uid = str(uuid.uuid4())
                obj["metadata"].update(namespace=ns, uid=uid, creationTimestamp=now_rfc3339())
                obj["status"] = {"active": 0}
                self.jobs[(ns, name)] = obj
                self._new_pod(ns, obj)
                return self._send(h, 201, obj)
            if method == "GET" and not rest:
                items = [j for (n, _), j in self.jobs.items() if n == ns
                         and _selects(query.get("labelSelector"), j["metadata"].get("labels") or {})]
                return self._send(h, 200, {"apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                                           "items": items})
            name = rest[0] if rest else ""
            obj = self.jobs.get((ns, name))
            if obj is None:
                raise _Error(404, "NotFound", f'jobs.batch "{name}" not found')
            if method == "GET":
                return self._send(h, 200, obj)
            if method == "DELETE":
                policy = (body or {}).get("propagationPolicy") or query.get("propagationPolicy") or "Orphan"
                del self.jobs[(ns, name)]
                uid = obj["metadata"]["uid"]
                for key, pod in list(self.pods.items()):
                    if pod.labels.get("controller-uid") == uid:
                        if policy in ("Foreground", "Background"):
                            self._gone(pod)
                            del self.pods[key]
                        else:
                            pod.labels.pop("controller-uid", None)  # orphaned: it runs on
                for key, secret in list(self.secrets.items()):
                    if any(o.get("uid") == uid for o in secret["metadata"].get("ownerReferences") or []):
                        del self.secrets[key]
                return self._send(h, 200, _status(200, "", "", "Success"))
        raise _Error(405, "MethodNotAllowed", method)

    def _check(self, body: Any, kind: str) -> None:
        if not isinstance(body, dict) or body.get("kind") != kind:
            raise _Error(400, "BadRequest", f"expected a {kind}")
        errors = validate(body)
        if errors:
            raise _Error(422, "Invalid", f'{kind} is invalid: {"; ".join(errors)}')
        self.posted.append(json.loads(json.dumps(body)))

    # -- pods and the "kubelet" -----------------------------------------------------------------
    def _new_pod(self, ns: str, job: dict) -> Pod:
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        labels = {**(template["metadata"].get("labels") or {}), "job-name": job["metadata"]["name"],
                  "controller-uid": job["metadata"]["uid"]}
        pod = Pod(name=name, job=job["metadata"]["name"], uid=str(uuid.uuid4()), labels=labels,
                  spec=json.loads(json.dumps(template["spec"])), created=now_rfc3339())
        self.pods[(ns, name)] = pod
        job["status"]["active"] = 1
        threading.Thread(target=self._kubelet, args=(ns, pod), daemon=True).start()
        return pod

    def _kubelet(self, ns: str, pod: Pod) -> None:
        container = pod.spec["containers"][0]
        if container["image"] in self.unpullable:
            message = f'failed to pull image "{container["image"]}": connection refused'
            self._set(pod, state={"waiting": {"reason": "ErrImagePull", "message": message}})
            return
        env: dict[str, str] = {}
        files: dict[str, bytes] = {}
        try:
            with self.lock:
                for var in container.get("env") or []:
                    if "value" in var:
                        env[var["name"]] = var["value"]
                        continue
                    ref = var["valueFrom"]["secretKeyRef"]
                    env[var["name"]] = self._secret_value(ns, ref["name"], ref["key"]).decode()
                volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
                for mount in container.get("volumeMounts") or []:
                    secret = volumes[mount["name"]]["secret"]
                    for item in secret.get("items") or []:
                        files[f"{mount['mountPath']}/{item['path']}"] = \
                            self._secret_value(ns, secret["secretName"], item["key"])
        except _Error as e:
            self._set(pod, state={"waiting": {"reason": "CreateContainerConfigError", "message": e.message}})
            return
        self._set(pod, phase="Running", state={"running": {"startedAt": now_rfc3339()}})
        try:
            code = int(self.program(Container(self, pod, env, files)))
        except Evicted:
            return
        except Exception as e:  # noqa: BLE001 - a program's own failure: the container fails
            with pod.changed:
                pod.log.append((self.clock(), f"program failed: {e!r}".encode()))
            code = 1
        self._finish(ns, pod, code)

    def _secret_value(self, ns: str, name: str, key: str) -> bytes:
        secret = self.secrets.get((ns, name))
        if secret is None:
            raise _Error(404, "NotFound", f'secret "{name}" not found')
        if key not in (secret.get("data") or {}):
            raise _Error(404, "NotFound", f'couldn\'t find key {key} in Secret {ns}/{name}')
        return base64.b64decode(secret["data"][key])

    def _set(self, pod: Pod, **changes: Any) -> None:
        with pod.changed:
            for k, v in changes.items():
                setattr(pod, k, v)
            pod.changed.notify_all()

    def _finish(self, ns: str, pod: Pod, code: int, disrupted: str | None = None) -> None:
        with self.lock:
            if pod.gone and disrupted is None:
                return
            conditions = [{"type": "DisruptionTarget", "status": "True", "reason": disrupted,
                           "message": "Eviction API: evicting"}] if disrupted else []
            self._set(pod, phase="Succeeded" if code == 0 and not disrupted else "Failed",
                      state={"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}},
                      conditions=conditions)
            job = next((j for (n, _), j in self.jobs.items() if n == ns
                        and j["metadata"]["uid"] == pod.labels.get("controller-uid")), None)
            if job is None:
                return
            job["status"]["active"] = 0
            action = _policy_action(job["spec"], code, disrupted is not None)
            if action == "Ignore":
                self._new_pod(ns, job)  # not counted against backoffLimit
                return
            if code == 0:
                job["status"]["succeeded"] = 1
                job["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
                return
            failed = job["status"].get("failed", 0) + 1
            job["status"]["failed"] = failed
            if action == "FailJob" or failed > job["spec"].get("backoffLimit", 6):
                job["status"]["conditions"] = [{"type": "Failed", "status": "True",
                                                "reason": "PodFailurePolicy" if action else "BackoffLimitExceeded"}]
            else:
                self._new_pod(ns, job)

    def evict(self, pod: Pod) -> None:
        ns = next(n for (n, name), p in self.pods.items() if p is pod)
        with pod.changed:
            pod.gone = True
            pod.changed.notify_all()
        self._finish(ns, pod, 137, disrupted="EvictionByEvictionAPI")

    def _gone(self, pod: Pod) -> None:
        with pod.changed:
            pod.gone = True
            if "terminated" not in pod.state:
                pod.state = {"terminated": {"exitCode": 137, "reason": "Error"}}
                pod.phase = "Failed"
            pod.changed.notify_all()

    def _pods(self, h, method: str, ns: str, rest: list[str], query) -> None:
        if method != "GET":
            raise _Error(405, "MethodNotAllowed", method)
        with self.lock:
            if not rest:
                items = [p.to_json(ns) for (n, _), p in self.pods.items() if n == ns
                         and _selects(query.get("labelSelector"), p.labels)]
                if query.get("limit"):
                    items = items[:int(query["limit"])]
                return self._send(h, 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
            pod = self.pods.get((ns, rest[0]))
            if pod is None:
                raise _Error(404, "NotFound", f'pods "{rest[0]}" not found')
            if len(rest) == 1:
                return self._send(h, 200, pod.to_json(ns))
        if rest[1:] == ["log"]:
            return self._log(h, pod, query)
        raise _Error(404, "NotFound", "no such subresource")

    def _log(self, h: BaseHTTPRequestHandler, pod: Pod, query: dict[str, str]) -> None:
        if pod.state.get("waiting"):
            raise _Error(400, "BadRequest", f'container "run" in pod "{pod.name}" is waiting to start: '
                                            f'{pod.state["waiting"]["reason"]}')
        since = None
        if query.get("sinceTime"):
            since = calendar.timegm(time.strptime(query["sinceTime"], "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000
        follow = query.get("follow") == "true"
        stamps = query.get("timestamps") == "true"
        drop = None
        with self.lock:
            self.follows += follow
            if follow and self.drop_follow_after is not None:
                drop, self.drop_follow_after = self.drop_follow_after, None
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        index = 0

        def chunk(data: bytes) -> None:
            h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            h.wfile.flush()

        try:
            while True:
                with pod.changed:
                    pod.changed.wait_for(lambda i=index: i < len(pod.log) or "terminated" in pod.state
                                         or pod.gone, timeout=5)
                    lines = pod.log[index:]
                    index = len(pod.log)
                    ended = "terminated" in pod.state or pod.gone
                for stamp, text in lines:
                    if since is not None and stamp < since:
                        continue
                    if drop is not None and sent >= drop:
                        # the API server ends the stream mid-way, a line already half sent
                        chunk((nano_stamp(stamp) + " ").encode() + text[: len(text) // 2])
                        h.wfile.write(b"0\r\n\r\n")
                        h.close_connection = True
                        return
                    chunk(((nano_stamp(stamp) + " ") if stamps else "").encode() + text + b"\n")
                    sent += 1
                if ended and index >= len(pod.log) or not follow:
                    break
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True


class _Error(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _status(code: int, reason: str, message: str, status: str = "Failure") -> dict:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": status, "message": message,
            "reason": reason, "code": code}


def _selects(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality and existence label selectors (``a=b,c``), the forms the executor sends."""
    if not selector:
        return True
    for term in selector.split(","):
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


def _policy_action(job_spec: dict, code: int, disrupted: bool) -> str | None:
    """The podFailurePolicy rule's action for a failed pod (None: no rule matched, or it succeeded)."""
    if code == 0 and not disrupted:
        return None
    for rule in (job_spec.get("podFailurePolicy") or {}).get("rules") or []:
        if disrupted and any(c.get("type") == "DisruptionTarget" for c in rule.get("onPodConditions") or []):
            return rule["action"]
        codes = rule.get("onExitCodes")
        if codes and not disrupted:
            inside = code in codes["values"]
            if inside == (codes["operator"] == "In"):
                return rule["action"]
    return None

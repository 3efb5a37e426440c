"""Named engines: where runs execute, from the user's executors file and Docker's variables.

    # ~/.config/soopervisor/executors.yaml (SOOPERVISOR_EXECUTORS names another file)
    executors:
      build-box: {type: docker, host: "tcp://10.0.0.5:2376", tls: {ca: ca.pem, cert: cert.pem, key: key.pem}, slots: 2}
      laptop: {type: docker}                  # the local engine (DOCKER_HOST or the socket)
      lab: {type: docker, host: "ssh://user@lab-1"}
      swarm-a: {type: swarm, host: "unix:///run/manager.sock", registry: "127.0.0.1:5000", network: host,
                exchange_address: "127.0.0.1", slots: 6, constraints: ["node.role==worker"]}
    default: laptop

A run picks its engine by name: ``--executor NAME``, else ``SOOPERVISOR_EXECUTOR``,
else the file's ``default``, else ``local``: the engine Docker's own variables name
(``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``, ``DOCKER_CERT_PATH``), the local socket when
they are unset. ``local`` (and ``docker``, the name of that engine before engines had
names) always exists unless the file defines an engine of that name.

Everything here is plain data and checks: no docker-py import, no network. A bad
entry is a UsageError naming the file, the entry and the fix, raised before anything
runs. TLS key files are secrets: only their paths are ever shown, never their contents
(this module never reads them; the TLS library does, when the engine is connected).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import config
from .errors import UsageError

#: the engine Docker's own variables name, always available
LOCAL = "local"
#: what c.Soopervisor.executor was before engines had names: the same engine as LOCAL
LEGACY_LOCAL = "docker"
TYPES = ("docker", "swarm", "kubernetes")
ENTRY_KEYS = ("type", "host", "tls", "slots")
#: what an engine that runs off this machine's engine adds: where images go, how runs reach the host
OFFNODE_KEYS = ("registry", "exchange_address", "network", "constraints")
#: the keys of an entry, by type (kubernetes entries are read by _kubernetes_entry)
TYPE_KEYS = {"docker": ENTRY_KEYS, "swarm": ENTRY_KEYS + OFFNODE_KEYS}
# -- kubernetes entries (their own keys; `registry` and `exchange_address` are shared with swarm)
KUBERNETES_KEYS = ("type", "kubeconfig", "context", "namespace", "build", "registry", "exchange_address",
                   "slots", "service_account")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
TLS_KEYS = ("ca", "cert", "key", "verify")
SCHEMES = ("unix", "tcp", "ssh")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CONFIG_HINT = "fix the entry in {path} (the remote engines how-to shows each kind), then run again"


@dataclass(frozen=True)
class TlsFiles:
    """Client TLS for a TCP engine: the CA that signed the engine's certificate, our certificate and key."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    verify: bool = True

    def to_dict(self) -> dict[str, Any]:
        # paths only: a key file's contents are never read here, never shown anywhere
        return {"ca": _str(self.ca), "cert": _str(self.cert), "key": _str(self.key), "verify": self.verify}


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None


@dataclass(frozen=True)
class KubernetesSettings:
    """Where a kubernetes engine's Jobs go: the cluster (kubeconfig + context), the namespace,
    the Docker engine that builds environments (`build`) and the service account of the pods."""

    kubeconfig: Path | None = None  # None: KUBECONFIG, else ~/.kube/config (as kubectl)
    context: str | None = None  # None: the kubeconfig's current context
    namespace: str = "default"
    build: str = LOCAL
    service_account: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kubeconfig": _str(self.kubeconfig), "context": self.context, "namespace": self.namespace,
                "build": self.build, "service_account": self.service_account}


@dataclass(frozen=True)
class Engine:
    """One configured engine: its name, kind and address; what the executor connects to."""

    name: str
    type: str = "docker"
    #: the engine's address (unix://, tcp://, ssh://); None: the local socket
    host: str | None = None
    tls: TlsFiles | None = None
    slots: int = 1
    #: where it was configured: the executors file, or "the environment" (DOCKER_HOST...)
    source: str = "the environment"
    #: swarm: the registry the nodes pull run images from ("127.0.0.1:5000"); None: images are on the nodes
    registry: str | None = None
    #: swarm: the address of this machine that the nodes' containers reach (the run's exchange)
    exchange_address: str | None = None
    #: swarm: the network of run containers ("host", an attachable network); None: the engine's default
    network: str | None = None
    #: swarm: placement constraints of every run ("node.role==worker")
    constraints: tuple[str, ...] = ()
    #: kubernetes: the cluster, namespace, build engine and service account
    kubernetes: KubernetesSettings | None = None

    @property
    def where(self) -> str:
        """What a run record says about where it ran."""
        if self.kubernetes is not None:
            k = self.kubernetes
            return f"kubernetes ({k.context or 'current context'}, namespace {k.namespace})"
        if not self.host or self.host in ("unix:///var/run/docker.sock", "unix:///run/docker.sock"):
            return self.type
        if self.host.startswith("ssh://"):
            return f"{self.type} ({self.host})"
        return f"{self.type} at {self.host}"

    @property
    def scheme(self) -> str:
        return urlsplit(self.host).scheme if self.host else "unix"

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "type": self.type, "host": self.host, "where": self.where,
                "tls": self.tls.to_dict() if self.tls else None, "slots": self.slots, "source": self.source}
        if self.type == "swarm":
            data.update(registry=self.registry, exchange_address=self.exchange_address, network=self.network,
                        constraints=list(self.constraints))
        if self.kubernetes is not None:
            data.update(registry=self.registry, exchange_address=self.exchange_address,
                        kubernetes=self.kubernetes.to_dict())
        return data


@dataclass(frozen=True)
class Engines:
    """The configured engines (the environment's ``local`` among them) and the default's name."""

    engines: dict[str, Engine | UsageError]
    default: str
    path: Path

    def pick(self, name: str | None = None) -> Engine:
        """The engine ``name`` names, else SOOPERVISOR_EXECUTOR's, else the default; UsageError when unknown."""
        chosen, by = name, "--executor"
        if not chosen:
            chosen, by = os.environ.get("SOOPERVISOR_EXECUTOR") or None, "SOOPERVISOR_EXECUTOR"
        if not chosen:
            chosen = self.default
        if chosen == LEGACY_LOCAL and chosen not in self.engines:
            chosen = LOCAL
        engine = self.engines.get(chosen)
        if isinstance(engine, UsageError):
            raise engine
        if engine is None:
            names = ", ".join(sorted(self.engines))
            raise UsageError(
                f"no executor named {chosen!r} ({by}): the configured ones are {names}",
                f"pick one of them, or add an entry `{chosen}: {{type: docker, host: ...}}` under `executors:` "
                f"in {self.path}; `soopervisor executors` lists them",
            )
        return engine


def load(path: Path | None = None) -> Engines:
    """The executors file (when it exists) and the environment's engine, checked; UsageError when not usable."""
    import yaml

    path = path or config.executors_file()
    local = _lazy(_from_environment)
    if not path.is_file():
        if path.exists():
            raise UsageError(f"the executors file {path} is not a file", "point SOOPERVISOR_EXECUTORS at a YAML file")
        return Engines({LOCAL: local}, LOCAL, path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the executors file {path}: {e}", "make it a readable UTF-8 file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"the executors file {path} is not valid YAML{at}",
                         CONFIG_HINT.format(path=path)) from None
    if data is None:
        return Engines({LOCAL: local}, LOCAL, path)
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with `executors:` and `default:`",
                         CONFIG_HINT.format(path=path))
    unknown = sorted(set(map(str, data)) - {"executors", "default"})
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r} (the file has `executors:` and `default:`)",
                         CONFIG_HINT.format(path=path))
    entries = data.get("executors") or {}
    if not isinstance(entries, dict):
        raise UsageError(f"{path}: `executors:` must map names to engines", CONFIG_HINT.format(path=path))
    engines = {LOCAL: local}
    for name, entry in entries.items():
        engines[str(name)] = _entry(path, name, entry)
    for name, engine in list(engines.items()):
        if isinstance(engine, Engine) and engine.kubernetes is not None:
            engines[name] = _check_build(path, engine, engines)
    default = data.get("default")
    if default is None:
        default = LOCAL
    if not isinstance(default, str) or (default not in engines and default != LEGACY_LOCAL):
        names = ", ".join(sorted(engines))
        raise UsageError(f"{path}: `default: {default}` names no executor (the configured ones are {names})",
                         CONFIG_HINT.format(path=path))
    return Engines(engines, LOCAL if default == LEGACY_LOCAL and default not in engines else default, path)


def choose(name: str | None = None) -> Engine:
    """The engine a run uses: ``name``, else SOOPERVISOR_EXECUTOR, else the configured default."""
    return load().pick(name)


def check_transport(engine: Engine) -> None:
    """UsageError when this installation cannot reach ``engine``'s kind of address (ssh:// without paramiko)."""
    import importlib.util

    if engine.scheme == "ssh" and importlib.util.find_spec("paramiko") is None:
        raise UsageError(
            f"executor {engine.name!r} ({engine.host}) needs the ssh transport, which is not installed",
            "pip install paramiko (or soopervisor's `ssh` extra): docker-py's ssh support needs it, "
            "even though the connection goes through your own ssh client",
        )


def _lazy(make) -> Engine | UsageError:
    """An engine, or the error that says why it is not usable: raised only when that engine is picked
    (a bad DOCKER_HOST must not keep runs from going to a configured remote engine)."""
    try:
        return make()
    except UsageError as e:
        return e


def _entry(path: Path, name: Any, entry: Any) -> Engine | UsageError:
    def bad(what: str, hint: str | None = None) -> UsageError:
        return UsageError(f"{path}: executor {name!r}: {what}", hint or CONFIG_HINT.format(path=path))

    if not isinstance(name, str) or not _NAME.match(name):
        raise bad("a name is letters, digits, '.', '_' and '-' (at most 63), starting with a letter or digit")
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise bad("expected a mapping such as {type: docker, host: \"tcp://host:2376\", tls: {...}}")
    if entry.get("type") == "kubernetes":
        return _kubernetes_entry(path, name, entry, bad)
    kind = entry.get("type", "docker")
    if kind not in TYPES:
        raise bad(f"unknown type {kind!r} (one of: {', '.join(TYPES)})")
    keys = TYPE_KEYS[kind]
    unknown = sorted(set(map(str, entry)) - set(keys))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (a {kind} entry has {', '.join(keys)})")
    offnode = _offnode(entry, bad) if kind == "swarm" else {}
    slots = entry.get("slots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise bad(f"slots must be a whole number of at least 1, not {slots!r}")
    host = entry.get("host")
    if host is None:
        # the local engine, as Docker's variables name it (tls from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH)
        if "tls" in entry:
            raise bad("a `tls` block needs a `host: tcp://...` (without a host the engine is DOCKER_HOST's "
                      "or the local socket, and DOCKER_TLS_VERIFY/DOCKER_CERT_PATH say its TLS)")
        env = _lazy(_from_environment)
        if isinstance(env, UsageError):
            return env
        return Engine(name=name, type=kind, host=env.host, tls=env.tls, slots=slots, source=str(path), **offnode)
    host = _check_host(host, bad)
    tls = _tls(entry.get("tls"), path.parent, bad)
    if tls is not None and not host.startswith("tcp://"):
        scheme = urlsplit(host).scheme
        raise bad(f"a `tls` block with a {scheme}:// host: TLS is for tcp:// engines only",
                  f"remove the `tls` block (a {scheme}:// engine is reached " +
                  ("through the socket's file permissions" if scheme == "unix" else "through ssh's own keys") +
                  f"), or use host: tcp://HOST:2376 in {path}")
    return Engine(name=name, type=kind, host=host, tls=tls, slots=slots, source=str(path), **offnode)


_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._/-]+)?$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+$|^\[?[0-9A-Fa-f:]+\]?$")
_NETWORK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONSTRAINT = re.compile(r"^\s*[A-Za-z0-9_.-]+\s*(==|!=)\s*\S.*$")


def _offnode(entry: dict, bad) -> dict[str, Any]:
    """The keys of an engine whose runs happen off this machine's engine (swarm), checked."""
    found: dict[str, Any] = {}
    registry = entry.get("registry")
    if registry is not None:
        if not isinstance(registry, str) or "://" in registry or not _REGISTRY.match(registry.strip()):
            raise bad(f"`registry: {registry}` must be a registry address such as 127.0.0.1:5000 or "
                      "registry.example.com/team (no scheme)")
        found["registry"] = registry.strip().rstrip("/")
    address = entry.get("exchange_address", "127.0.0.1")
    if not isinstance(address, str) or not _ADDRESS.match(address.strip()):
        raise bad(f"`exchange_address: {address}` must be an address of this machine that the nodes reach "
                  "(an IP address or a host name, no port)")
    found["exchange_address"] = address.strip().strip("[]")
    network = entry.get("network")
    if network is not None:
        if not isinstance(network, str) or not _NETWORK.match(network):
            raise bad(f"`network: {network}` must be a network name such as host or an attachable overlay network")
        found["network"] = network
    constraints = entry.get("constraints") or []
    if isinstance(constraints, str):
        constraints = [constraints]
    if not isinstance(constraints, list) or not all(isinstance(c, str) and _CONSTRAINT.match(c)
                                                    for c in constraints):
        raise bad("`constraints` must be a list of placement constraints such as [\"node.role==worker\", "
                  "\"node.labels.gpu==true\"]")
    found["constraints"] = tuple(c.strip() for c in constraints)
    return found


def _check_build(path: Path, engine: Engine, engines: dict[str, Engine | UsageError]) -> Engine | UsageError:
    """A kubernetes engine's `build` must name a docker engine of the same file (or `local`)."""
    build = engine.kubernetes.build if engine.kubernetes else LOCAL
    other = engines.get(build)
    if isinstance(other, Engine) and other.type == "docker":
        return engine
    if isinstance(other, UsageError):
        return other  # the build engine's own error says what to fix
    docker = sorted(n for n, e in engines.items() if isinstance(e, Engine) and e.type == "docker")
    what = "names no executor" if other is None else f"names a {other.type} engine"
    return UsageError(f"{path}: executor {engine.name!r}: `build: {build}` {what}: it must name a docker engine "
                      f"(one of {', '.join(docker)})", CONFIG_HINT.format(path=path))


def _kubernetes_entry(path: Path, name: str, entry: dict, bad) -> Engine:
    """A ``type: kubernetes`` entry: checked here; the cluster is reached only when a run uses it."""
    unknown = sorted(set(map(str, entry)) - set(KUBERNETES_KEYS))
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (a kubernetes entry has {', '.join(KUBERNETES_KEYS)})")
    slots = entry.get("slots", 1)
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise bad(f"slots must be a whole number of at least 1, not {slots!r}")

    def text(key: str, example: str, required: bool = False) -> str | None:
        value = entry.get(key)
        if value is None:
            if required:
                raise bad(f"`{key}` is missing", f"add `{key}: {example}` to the entry in {path}")
            return None
        if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value.strip()):
            raise bad(f"`{key}` must be one word such as {example}, not {value!r}")
        return value.strip()

    kubeconfig = text("kubeconfig", "~/.kube/config")
    config_path = None
    if kubeconfig is not None:
        config_path = Path(kubeconfig).expanduser()
        config_path = config_path if config_path.is_absolute() else path.parent / config_path
        if not config_path.is_file():
            raise bad(f"kubeconfig: no file at {config_path}",
                      f"point `kubeconfig` at the cluster's kubeconfig (relative paths are relative to {path.parent}),"
                      " or leave it out to use KUBECONFIG or ~/.kube/config")
    namespace = text("namespace", "default") or "default"
    account = text("service_account", "soopervisor-runner")
    for key, value in (("namespace", namespace), ("service_account", account)):
        if value is not None and not _K8S_NAME.match(value):
            raise bad(f"`{key}: {value}` is not a Kubernetes name (lower-case letters, digits and '-', at most 63)")
    # none: the nodes run the build engine's images as they are (a one-node cluster on that engine:
    # Docker Desktop's, minikube's docker driver; kind after `kind load docker-image`)
    registry = text("registry", "registry.example:5000")
    if registry is not None and ("://" in registry or not _REGISTRY.match(registry)):
        raise bad(f"`registry: {registry}` must be HOST[:PORT][/PATH], without a scheme",
                  "e.g. registry: registry.example:5000 (the cluster pulls the pipeline's image from there)")
    # required, unlike swarm's: a pod is never on this machine, so 127.0.0.1 is no default here
    address = text("exchange_address", "10.0.0.4", required=True)
    if not _ADDRESS.match(address):
        raise bad(f"`exchange_address: {address}` must be an address of this machine that the pods reach "
                  "(an IP address or a host name, no port)")
    address = address.strip("[]")
    build = text("build", LOCAL) or LOCAL
    if build == name:
        raise bad("`build` names this entry: it must name a docker engine (it builds and pushes the images)")
    settings = KubernetesSettings(kubeconfig=config_path, context=text("context", "my-cluster"),
                                  namespace=namespace, build=build, service_account=account)
    return Engine(name=name, type="kubernetes", slots=slots, source=str(path), registry=registry,
                  exchange_address=address, kubernetes=settings)


def _check_host(host: Any, bad) -> str:
    if not isinstance(host, str) or not host.strip():
        raise bad("`host` must be a URL such as tcp://10.0.0.5:2376, ssh://user@host or unix:///var/run/docker.sock")
    host = host.strip()
    try:
        url = urlsplit(host)
        port = url.port
    except ValueError as e:
        raise bad(f"`host: {host}` is not a valid URL ({e})") from None
    if url.scheme not in SCHEMES:
        raise bad(f"`host: {host}`: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}",
                  "e.g. host: tcp://10.0.0.5:2376 (with a tls block), host: ssh://user@host, "
                  "or no host for the local engine")
    if url.scheme == "unix":
        if not url.path or url.netloc:
            raise bad(f"`host: {host}`: a unix socket is unix:///absolute/path/docker.sock")
        return host
    if not url.hostname:
        raise bad(f"`host: {host}` names no host", f"e.g. host: {url.scheme}://10.0.0.5" +
                  (":2376" if url.scheme == "tcp" else ""))
    if url.scheme == "tcp":
        if url.path not in ("", "/") or url.query or url.fragment or url.username:
            raise bad(f"`host: {host}`: a tcp:// engine is tcp://HOST:PORT, nothing more")
        if port is None:
            raise bad(f"`host: {host}` has no port", "Docker listens on 2376 with TLS, 2375 without: "
                      f"host: tcp://{url.hostname}:2376")
    return host


def _tls(block: Any, base: Path, bad) -> TlsFiles | None:
    if block is None or block is False:
        return None
    if not isinstance(block, dict):
        raise bad("`tls` must be a mapping: {ca: ca.pem, cert: cert.pem, key: key.pem}")
    unknown = sorted(set(map(str, block)) - set(TLS_KEYS))
    if unknown:
        raise bad(f"tls: unknown key {unknown[0]!r} (tls has {', '.join(TLS_KEYS)})")
    verify = block.get("verify", True)
    if not isinstance(verify, bool):
        raise bad("tls.verify must be true or false")
    files: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        value = block.get(key)
        if value is None:
            files[key] = None
            continue
        if not isinstance(value, str) or not value.strip():
            raise bad(f"tls.{key} must be the path of a PEM file")
        if "\n" in value or "-----BEGIN" in value or len(value) > 4096:
            # the value itself is never repeated: it may be a private key pasted in
            raise bad(f"tls.{key} must be the path of a PEM file, not the file's contents",
                      f"save it to a file readable only by you (chmod 600) and put its path in {base}")
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise bad(f"tls.{key}: no file at {path}",
                      f"point tls.{key} at the PEM file (relative paths are relative to {base})")
        files[key] = path
    if (files["cert"] is None) != (files["key"] is None):
        missing = "key" if files["key"] is None else "cert"
        raise bad(f"tls.{missing} is missing: a client certificate needs both `cert` and `key`")
    if verify and files["ca"] is None:
        raise bad("tls.ca is missing: the CA that signed the engine's certificate is needed to verify it",
                  "add tls.ca (Docker's ca.pem), or `verify: false` to skip checking the engine (not recommended)")
    return TlsFiles(ca=files["ca"], cert=files["cert"], key=files["key"], verify=verify)


def _from_environment() -> Engine:
    """The engine Docker's own variables name, as the docker CLI reads them; UsageError when they are not usable."""
    host = os.environ.get("DOCKER_HOST") or None
    verify = bool(os.environ.get("DOCKER_TLS_VERIFY"))  # any non-empty value, as docker does
    tls = None

    def bad(what: str, hint: str | None = None) -> UsageError:
        return UsageError(f"the environment's engine ({LOCAL}): {what}",
                          hint or "fix or unset DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH")

    if host is not None:
        host = _check_host(host, lambda what, hint=None: bad(f"DOCKER_HOST: {what}", hint))
    if verify:
        folder = Path(os.environ.get("DOCKER_CERT_PATH") or "~/.docker").expanduser()
        files = {k: folder / f"{k}.pem" for k in ("ca", "cert", "key")}
        for p in files.values():
            if not p.is_file():
                raise bad(f"DOCKER_TLS_VERIFY is set but {p} is missing",
                          f"DOCKER_CERT_PATH must name the folder holding ca.pem, cert.pem and key.pem "
                          f"(now {folder}); or unset DOCKER_TLS_VERIFY")
        if host is None or not host.startswith("tcp://"):
            raise bad("DOCKER_TLS_VERIFY is set but DOCKER_HOST is not a tcp:// address",
                      "set DOCKER_HOST=tcp://HOST:2376, or unset DOCKER_TLS_VERIFY")
        tls = TlsFiles(ca=files["ca"], cert=files["cert"], key=files["key"], verify=True)
    return Engine(name=LOCAL, host=host, tls=tls, source="the environment")


def report(timeout: float = 5.0) -> dict[str, Any]:
    """Every configured engine, which is the default, and whether each answers (pinged in parallel).

    UsageError when the configuration is not usable; an engine that does not answer is
    part of the report (with the reason), never an error.
    """
    from concurrent.futures import ThreadPoolExecutor

    found = load()
    for value in found.engines.values():
        if isinstance(value, UsageError):
            raise value
    default = found.pick(None).name  # SOOPERVISOR_EXECUTOR's, else the file's
    engines = [e for e in found.engines.values() if isinstance(e, Engine)]
    with ThreadPoolExecutor(max_workers=min(8, len(engines))) as pool:
        states = list(pool.map(lambda e: _probe(e, timeout), engines))
    return {
        "file": str(found.path),
        "file_exists": found.path.is_file(),
        "default": default,
        "executors": [{**e.to_dict(), "default": e.name == default, **state}
                      for e, state in zip(engines, states, strict=True)],
    }


def _probe(engine: Engine, timeout: float) -> dict[str, Any]:
    if engine.type == "kubernetes":
        from .executors.kubernetes import probe as cluster_probe

        return cluster_probe(engine, timeout)
    if engine.type == "swarm":
        from .executors.swarm import probe as swarm_probe

        return swarm_probe(engine, timeout)
    from .executors.docker import probe

    return probe(engine, timeout)

"""Run the script in a fresh, hardened Docker container with docker-py.

Every container is removed whatever happens: success, failure, timeout,
cancel (Ctrl-C, SIGTERM, Stop button) or the engine failing mid-run; when the
process itself dies, whoever reaps its run removes them by their label. The
user's folder is never mounted: the tree arrives as a tar through the API. No
docker-py object leaves this module.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .. import config
from ..engines import Engine
from ..errors import EngineUnavailable, UsageError
from . import RUN_LABEL, CollectTo, ContainerSpec, ExecResult, ImageInfo, KeepAs

T = TypeVar("T")

LABEL = "soopervisor"
#: on the containers a helper creates and never starts (read_file, the CA volume's filler): when it was
#: created, so that one left by a process killed before removing it is removed by a later sweep
HELPER_LABEL = "soopervisor.helper"
HELPER_MAX_AGE = 600  # seconds; a helper lives for well under one
CA_PATH = "/etc/soopervisor/ca.crt"
CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "CURL_CA_BUNDLE")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ENGINE_HINT = (
    "start the Docker engine (`sudo systemctl start docker`, or `dockerd &`), "
    "or point DOCKER_HOST at a running one"
)


def _docker():
    import docker  # imported here: validation and the CLI's help must not pay for it

    return docker


def connect(engine: Engine | None = None, timeout: float = 120, ping_timeout: float = 20):
    """A docker-py client of ``engine`` (default: the one runs would use) that has answered a ping,
    or EngineUnavailable saying which engine and why (a refused certificate, a refused connection)."""
    from .. import engines

    engine = engine or engines.choose()
    engines.check_transport(engine)
    try:
        client = _client(engine, ping_timeout)
        client.ping()
        client.api.timeout = timeout
        return client
    except Exception as e:  # noqa: BLE001 - DockerException, requests' ConnectionError, SSLError...
        named = "" if engine.name == engines.LOCAL else f" {engine.name!r}"
        raise EngineUnavailable(
            f"cannot reach the Docker engine{named} at {engine.host or 'unix:///var/run/docker.sock'}: "
            f"{engine_reason(e)}", _hint(engine, e)) from None


def _client(engine: Engine, timeout: float):
    """docker-py's client for ``engine``, never trusting the environment's CA bundle for the engine.

    requests lets REQUESTS_CA_BUNDLE (set for proxies: pip's CA) win over the CA docker-py
    configures for a TLS engine (psf/requests#3829): verification then fails against the
    wrong CA. The engine's session ignores the environment (as the docker CLI does).
    """
    docker = _docker()

    class _Api(docker.APIClient):
        @property
        def trust_env(self) -> bool:
            return False

        @trust_env.setter
        def trust_env(self, value: bool) -> None:
            pass

    class _Client(docker.DockerClient):
        def __init__(self, **kwargs: Any) -> None:
            self.api = _Api(**kwargs)

    tls = None
    if engine.tls is not None:
        t = engine.tls
        tls = docker.tls.TLSConfig(client_cert=(str(t.cert), str(t.key)) if t.cert else None,
                                   ca_cert=str(t.ca) if t.ca else None, verify=t.verify)
    base_url = engine.host or docker.constants.DEFAULT_UNIX_SOCKET  # tcp:// becomes https:// with tls
    kwargs: dict[str, Any] = {"base_url": base_url, "tls": tls, "timeout": timeout, "version": "auto"}
    if engine.scheme == "ssh":
        kwargs["use_ssh_client"] = True  # the user's ssh: their config, agent and known_hosts
    return _Client(**kwargs)


def engine_reason(e: BaseException) -> str:
    """Why an engine did not answer, in a few words ("TLS: certificate verify failed", "connection refused")."""
    text = str(e)
    low = text.lower()
    if "bad certificate" in low or "unknown ca" in low or "certificate required" in low \
            or "certificate_required" in low or "handshake failure" in low:
        return "TLS: the engine refused our client certificate (not signed by a CA it trusts)"
    if "certificate verify failed" in low:
        detail = re.search(r"certificate verify failed: ([^(]+)", text)
        why = f" ({detail.group(1).strip()})" if detail else ""
        return f"TLS: certificate verify failed{why}: the engine's certificate is not signed by the configured CA"
    if "client sent an http request to an https server" in low:
        return "the engine speaks TLS: configure a `tls` block with its CA, client certificate and key"
    if "wrong version number" in low or "record layer failure" in low:
        return "TLS: the engine does not speak TLS on that port (remove the `tls` block, or check the port)"
    if "connection refused" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low or "failed to resolve" in low:
        return "unknown host"
    if "timed out" in low or "timeout" in low:
        return "no answer (timed out)"
    if "no such file or directory" in low or "filenotfounderror" in low:
        return "no socket there (no such file)"
    if "permission denied" in low:
        return "permission denied"
    return _reason(e)


def _hint(engine: Engine, e: BaseException) -> str:
    low = str(e).lower()
    if engine.tls is not None and "certificate" in low:
        return (f"check the certificates of executor {engine.name!r} ({engine.source}): tls.ca must be the CA "
                "that signed the engine's certificate, tls.cert and tls.key a client certificate signed by the "
                "CA the engine trusts (dockerd --tlscacert)")
    if engine.name == "local":
        return ENGINE_HINT
    return (f"check that the engine of executor {engine.name!r} runs and listens at {engine.host} "
            f"({engine.source}); `soopervisor executors` shows which engines answer")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:300] if text else type(e).__name__


class _EngineLost(BaseException):
    """The engine failed while a caller's callback was reading from it.

    A BaseException, so that no ``except Exception`` of the callback (the tar
    extraction) mistakes it for a problem of its own; ``execute`` turns it
    back into ``error``.
    """

    def __init__(self, error: EngineUnavailable) -> None:
        super().__init__(error.message)
        self.error = error


def _lost(e: BaseException) -> _EngineLost:
    return _EngineLost(EngineUnavailable(f"lost the Docker engine during the run: {_reason(e)}", ENGINE_HINT))


def _engine(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One call to the engine; any failure of it is the engine's (never a callback's)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - DockerException, requests' errors, OSError of the socket
        raise _lost(e) from None


def _engine_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` from the engine; a failure while reading them is the engine's."""
    it = iter(chunks)
    while True:
        chunk = _engine(next, it, None)
        if chunk is None:
            return
        yield chunk


def ca_bundle_from_env(explicit: str | os.PathLike | None = None) -> Path | None:
    """``--ca-bundle`` or the first CA variable naming an existing file."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UsageError(f"CA bundle not found: {path}", "pass a PEM file with --ca-bundle")
        return path.resolve()
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT"):
        value = os.environ.get(name)
        if value and Path(value).is_file():
            return Path(value).resolve()
    return None


class DockerExecutor:
    """The Executor protocol on a Docker engine (local, or remote through DOCKER_HOST)."""

    def __init__(self, client=None, engine: Engine | None = None) -> None:
        if client is None:
            from .. import engines

            engine = engine or engines.choose()
            client = connect(engine)
        self.client = client
        self.engine = engine.name if engine is not None else None
        # a bind mount names a file on the engine's machine: a remote engine gets the CA bundle in a volume
        self.remote = engine is not None and engine.scheme in ("tcp", "ssh")
        if engine is not None:
            self.where = engine.where
        else:
            host = os.environ.get("DOCKER_HOST")
            self.where = f"docker at {host}" if host else "docker"
        self._container = None
        self._cancelled = threading.Event()

    # -- images ---------------------------------------------------------
    def resolve_image(self, image: str | None, note: Callable[[str], None]) -> ImageInfo:
        """The image to run, pulled when missing.

        With no image asked for, a network without a registry still works:
        when the public default cannot be pulled, the locally built offline
        base image is used. An image named by --image or SOOPERVISOR_IMAGE is
        never swapped for another (it may pin the Python the pipeline needs).
        """
        docker = _docker()
        explicit = image is not None or bool(os.environ.get("SOOPERVISOR_IMAGE"))
        name = image or config.default_image()
        try:
            return self._image_info(name)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:
            raise EngineUnavailable(f"the Docker engine failed: {_reason(e)}", ENGINE_HINT) from None
        note(f"soopervisor: pulling image {name}")
        try:
            repo, tag = docker.utils.parse_repository_tag(name)  # handles registry ports and digests
            self.client.images.pull(repo, tag=tag or "latest")
            return self._image_info(name)
        except docker.errors.APIError as e:
            if not explicit and name != config.OFFLINE_IMAGE:
                try:
                    info = self._image_info(config.OFFLINE_IMAGE)
                    note(f"soopervisor: cannot pull {name}; using the local {config.OFFLINE_IMAGE}")
                    return info
                except docker.errors.ImageNotFound:
                    pass
            from ..image import pull_reason

            raise UsageError(
                f"image {name!r} is not in the engine and could not be pulled: {pull_reason(e)}",
                "check the name (`soopervisor image show` says where it came from); to get a base image, "
                "`soopervisor image build` pulls one or, without a registry, builds one from Debian packages",
            ) from None

    def _image_info(self, name: str) -> ImageInfo:
        img = self.client.images.get(name)
        digests = img.attrs.get("RepoDigests") or []
        env = (img.attrs.get("Config") or {}).get("Env") or [f"PATH={DEFAULT_PATH}"]
        return ImageInfo(name=name, id=img.id, digest=digests[0] if digests else img.id, env=env)

    def latest_image(self, repository: str, labels: dict[str, str]) -> ImageInfo | None:
        """The newest image of ``repository`` carrying all these labels, None when there is none."""
        try:
            images = self.client.images.list(name=repository, filters={"label": [f"{k}={v}" for k, v in labels.items()]})
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e).error from None
        if not images:
            return None
        newest = max(images, key=lambda i: (i.attrs.get("Created", ""), i.id))
        env = (newest.attrs.get("Config") or {}).get("Env") or [f"PATH={DEFAULT_PATH}"]
        tag = next((t for t in newest.tags if t.startswith(repository + ":")), newest.id)
        return ImageInfo(name=tag, id=newest.id, digest=newest.id, env=env, labels=dict(newest.labels or {}))

    def read_file(self, image: str, path: str, limit: int = 16 << 20) -> bytes | None:
        """The file at ``path`` in ``image`` (a container created, never started, then removed); None when absent."""
        import io
        import tarfile

        docker = _docker()
        try:
            container = self._helper(image)
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e).error from None
        try:
            bits, stat = container.get_archive(path)
            if int(stat.get("size", 0)) > limit:
                return None
            with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                member = next((m for m in tar.getmembers() if m.isfile()), None)
                extracted = tar.extractfile(member) if member is not None else None
                return extracted.read() if extracted is not None else None
        except docker.errors.NotFound:
            return None
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e).error from None
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def _helper(self, image: str, **kwargs: Any) -> Any:
        """A container of ``image`` created (never started) to reach its files; the caller removes it.
        Those of killed processes go first (helpers are rare: an image described once, a CA volume filled once)."""
        with contextlib.suppress(EngineUnavailable):
            self.remove_stale_helpers()
        return self.client.containers.create(image, ["true"], labels={LABEL: "1", HELPER_LABEL: str(int(time.time()))},
                                             **kwargs)

    def remove_stale_helpers(self, max_age: float = HELPER_MAX_AGE) -> int:
        """Remove the helper containers created over ``max_age`` seconds ago (their process was killed
        before it removed them); how many."""
        try:
            found = self.client.containers.list(all=True, sparse=True, ignore_removed=True,
                                                filters={"label": HELPER_LABEL})
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e).error from None
        removed = 0
        for c in found:
            created = (c.attrs.get("Labels") or {}).get(HELPER_LABEL, "")
            if created.isdigit() and time.time() - int(created) > max_age:
                with contextlib.suppress(Exception):
                    c.remove(force=True)
                    removed += 1
        return removed

    def has_image(self, name: str) -> bool:
        try:
            self.client.images.get(name)
            return True
        except _docker().errors.ImageNotFound:
            return False

    def _commit(self, container, keep: KeepAs) -> None:
        """Keep ``container``'s file system as an image, with a clean config.

        The config is set explicitly: the run's environment (secrets, CA
        paths) must never be baked into a cached image.
        """
        # the engine merges the container's labels in: the run's label is blanked, so that a
        # kept image (and a container made from it without labels) never looks like that run
        labels = {RUN_LABEL: "", **keep.labels}
        container.commit(
            repository=keep.repository,
            tag=keep.tag,
            conf={"Env": keep.env, "Labels": labels, "Cmd": ["bash"], "WorkingDir": "/"},
        )

    # -- running --------------------------------------------------------
    def cancel(self) -> None:
        """Stop the running container (from any thread); ``execute`` then returns."""
        self._cancelled.set()
        self._kill()

    def _kill(self) -> None:
        c = self._container
        if c is not None:
            try:
                c.kill()
            except Exception:  # noqa: BLE001,S110 - not started yet, exited or gone; execute() removes it
                pass

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        collect_to: CollectTo | None = None,
        keep_as: KeepAs | None = None,
    ) -> ExecResult:
        """Create, fill, start, stream, wait; collect and keep; always remove.

        Errors of the engine become EngineUnavailable (or UsageError for a
        missing image); an exception raised by ``on_output`` or ``collect_to``
        is the caller's and passes through unchanged.
        """
        timed_out = threading.Event()
        timer = None
        try:
            container = self._create(spec)
            if self._cancelled.is_set():
                return ExecResult(exit_code=130, cancelled=True)
            self._start(container, spec)
            if self._cancelled.is_set():  # cancel() came between the check and the start
                self._kill()
            if spec.timeout:
                timer = threading.Timer(spec.timeout, lambda: (timed_out.set(), self._kill()))
                timer.daemon = True
                timer.start()
            self._stream(container, on_output)
            code = _engine(container.wait).get("StatusCode", 1)
            stopped = timed_out.is_set() or self._cancelled.is_set()
            collected = False
            if collect_to is not None and not stopped:
                collected = self._collect(container, spec.collect_path, collect_to)
            if keep_as is not None and code == 0 and not (timed_out.is_set() or self._cancelled.is_set()):
                _engine(self._commit, container, keep_as)
            return ExecResult(exit_code=code, timed_out=timed_out.is_set(),
                              cancelled=self._cancelled.is_set(), collected=collected)
        except _EngineLost as e:
            raise e.error from None
        finally:
            if timer is not None:
                timer.cancel()
            self._remove()

    def _create(self, spec: ContainerSpec):
        docker = _docker()
        try:
            self._container = container = self.client.containers.create(
                spec.image,
                spec.command,
                working_dir=spec.workdir,
                environment=self._environment(spec),
                labels={LABEL: "1", **spec.labels},
                mounts=self._mounts(spec, self._ca_volume(spec) if self.remote and spec.ca_bundle else None),
                network_mode=None if spec.network == "default" else spec.network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
                nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                pids_limit=4096,
                init=True,
                tty=False,
                stdin_open=False,
            )
        except docker.errors.ImageNotFound as e:
            raise UsageError(f"image not found: {_reason(e)}", "check --image") from None
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e) from None
        for archive in spec.archives:
            _engine(container.put_archive, "/", archive)
        return container

    @staticmethod
    def _start(container, spec: ContainerSpec) -> None:
        """Start ``container``; a network the engine does not have is the user's error, not the engine's."""
        docker = _docker()
        try:
            container.start()
        except docker.errors.NotFound as e:
            if spec.network != "default" and "network" in str(e):
                raise UsageError(
                    f"the Docker engine has no network {spec.network!r}",
                    "pick one of `docker network ls` with --network (or SOOPERVISOR_NETWORK), "
                    "create it with `docker network create NAME`, or leave --network out",
                ) from None
            raise _lost(e) from None
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e) from None

    @staticmethod
    def _stream(container, on_output: Callable[[bytes], None]) -> None:
        """Container output to ``on_output`` until the container ends; the callback's errors are its own."""
        chunks = _engine(container.logs, stream=True, follow=True, stdout=True, stderr=True)
        while True:
            chunk = _engine(next, chunks, None)
            if chunk is None:
                return
            on_output(chunk)

    @staticmethod
    def _collect(container, path: str, collect_to: CollectTo) -> bool:
        """Hand the tar of ``path`` to ``collect_to``; False when the container has no such folder."""
        docker = _docker()
        try:
            bits, _ = container.get_archive(path)
        except docker.errors.NotFound:
            return False  # the script ended before its collect stage
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e) from None
        collect_to(_engine_chunks(bits))
        return True

    def _remove(self) -> None:
        c, self._container = self._container, None
        if c is None:
            return
        try:
            c.remove(force=True, v=True)
        except Exception:  # noqa: BLE001,S110 - the engine is gone: a later reap removes it by its label
            pass

    # -- a run's containers, found by label from any process -------------------------
    def _labelled(self, run_id: str | None) -> list:
        value = f"{RUN_LABEL}={run_id}" if run_id is not None else RUN_LABEL
        try:
            return self.client.containers.list(all=True, sparse=True, ignore_removed=True,
                                               filters={"label": value})
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e).error from None

    def kill_by_label(self, run_id: str) -> int:
        """Kill the containers of ``run_id`` (their owner sees them exit and cleans up); how many."""
        return self._each(run_id, lambda c: c.kill())

    def remove_by_label(self, run_id: str) -> int:
        """Remove the containers of ``run_id``, running or not; how many."""
        return self._each(run_id, lambda c: c.remove(force=True, v=True))

    def _each(self, run_id: str, action: Callable[[object], None]) -> int:
        if not run_id:
            return 0  # "" is the label of kept environment images: never a run
        done = 0
        for c in self._labelled(run_id):
            try:
                action(c)
                done += 1
            except Exception:  # noqa: BLE001,S110 - exited or gone meanwhile
                pass
        return done

    def labelled(self) -> dict[str, int]:
        """Run id -> number of containers, for every container with a run label in the engine."""
        counts: dict[str, int] = {}
        for c in self._labelled(None):
            run_id = (c.attrs.get("Labels") or {}).get(RUN_LABEL)
            if run_id:
                counts[run_id] = counts.get(run_id, 0) + 1
        return counts

    @staticmethod
    def _environment(spec: ContainerSpec) -> dict[str, str]:
        env = dict(spec.environment)
        if spec.ca_bundle and spec.name_ca:
            env.update({name: CA_PATH for name in CA_VARIABLES})
        return env

    @staticmethod
    def _mounts(spec: ContainerSpec, ca_volume: str | None = None) -> list:
        # The CA bundle, read-only (corporate proxies), and the named volumes asked for
        # (environment builds' download cache). Mounts, not `volumes=`: docker-py also
        # declares those as image volumes, which a committed environment image would carry.
        Mount = _docker().types.Mount
        mounts = [Mount(path, name, type="volume") for name, path in spec.volumes.items()]
        if ca_volume:
            mounts.append(Mount(posixpath.dirname(CA_PATH), ca_volume, type="volume", read_only=True))
        elif spec.ca_bundle:
            mounts.append(Mount(CA_PATH, str(spec.ca_bundle), type="bind", read_only=True))
        return mounts

    def _ca_volume(self, spec: ContainerSpec) -> str:
        """A volume of the engine holding ``spec.ca_bundle`` as ca.crt, made once per bundle content.

        On a remote engine a bind mount would name a file of the engine's machine, not ours;
        a volume is never part of a committed (cached environment) image, as the bind mount was not.
        """
        import hashlib
        import io
        import tarfile

        docker = _docker()
        data = Path(spec.ca_bundle).read_bytes()
        name = f"soopervisor-ca-{hashlib.sha256(data).hexdigest()[:16]}"
        try:
            self.client.volumes.get(name)
            return name
        except docker.errors.NotFound:
            pass
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e) from None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(posixpath.basename(CA_PATH))
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        helper = None
        try:
            helper = self._helper(
                spec.image, mounts=[docker.types.Mount("/ca", name, type="volume", labels={"soopervisor.ca": "1"})])
            helper.put_archive("/ca", buf.getvalue())
        except Exception as e:  # noqa: BLE001 - any failure of the engine
            raise _lost(e) from None
        finally:
            if helper is not None:
                with contextlib.suppress(Exception):
                    helper.remove(force=True)
        return name


def probe(engine: Engine, timeout: float = 5.0) -> dict:
    """Whether ``engine`` answers within ``timeout``: its server version and running soopervisor containers,
    or the reason it does not ("TLS: certificate verify failed", "connection refused")."""
    try:
        client = _client(engine, timeout)
        try:
            version = client.version().get("Version")
            running = client.containers.list(sparse=True, ignore_removed=True,
                                             filters={"label": RUN_LABEL, "status": "running"})
            return {"answers": True, "server_version": version, "running": len(running), "reason": None}
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - any failure means: it does not answer, and why
        return {"answers": False, "server_version": None, "running": None, "reason": engine_reason(e)}

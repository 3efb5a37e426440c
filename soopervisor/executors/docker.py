"""Run the script in a fresh, hardened Docker container with docker-py.

Every container is removed whatever happens: success, failure, timeout,
cancel (Ctrl-C, SIGTERM, Stop button) or the engine failing mid-run. The user's
folder is never mounted: the tree arrives as a tar through the API.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from .. import config
from ..errors import EngineUnavailable, SoopervisorError, UsageError
from . import ContainerSpec, ExecResult, ImageInfo

LABEL = "soopervisor"
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


def connect():
    """A docker-py client that has answered a ping, or EngineUnavailable."""
    docker = _docker()
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except Exception as e:  # DockerException, requests' ConnectionError, bad DOCKER_HOST...
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineUnavailable(
            f"cannot reach the Docker engine at {where}: {_reason(e)}", ENGINE_HINT
        ) from None


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1][:300] if text else type(e).__name__


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
    def __init__(self, client=None) -> None:
        self.client = client or connect()
        self._container = None
        self._cancelled = threading.Event()

    # -- images ---------------------------------------------------------
    def resolve_image(self, image: str | None, note: Callable[[str], None]) -> ImageInfo:
        """The image to run, pulled when missing.

        With no image asked for, a network without a registry still works:
        when the public default cannot be pulled, the locally built offline
        base image is used.
        """
        docker = _docker()
        explicit = image is not None
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
            raise UsageError(
                f"image {name!r} is not in the engine and could not be pulled: {_reason(e)}",
                "check the name with `docker images`; without a registry, build a base image "
                "from Debian packages: `scripts/build-base-image`",
            ) from None

    def _image_info(self, name: str) -> ImageInfo:
        img = self.client.images.get(name)
        digests = img.attrs.get("RepoDigests") or []
        env = (img.attrs.get("Config") or {}).get("Env") or [f"PATH={DEFAULT_PATH}"]
        return ImageInfo(name=name, id=img.id, digest=digests[0] if digests else img.id, env=env)

    def has_image(self, name: str) -> bool:
        try:
            self.client.images.get(name)
            return True
        except _docker().errors.ImageNotFound:
            return False

    def commit(self, container, repository: str, tag: str, env: list[str], labels: dict[str, str]) -> None:
        """Keep ``container``'s file system as an image, with a clean config.

        The config is set explicitly: the run's environment (secrets, CA
        paths) must never be baked into a cached image.
        """
        container.commit(
            repository=repository,
            tag=tag,
            conf={"Env": env, "Labels": labels, "Cmd": ["bash"], "WorkingDir": "/"},
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
            except Exception:
                pass  # already gone or exited; removal happens in execute()

    def execute(
        self,
        spec: ContainerSpec,
        on_output: Callable[[bytes], None],
        after: Callable[[object], None] | None = None,
    ) -> ExecResult:
        """Create, fill, start, stream, wait; then ``after(container)``; always remove."""
        docker = _docker()
        timed_out = threading.Event()
        timer = None
        try:
            self._container = container = self.client.containers.create(
                spec.image,
                spec.command,
                working_dir=spec.workdir,
                environment=self._environment(spec),
                labels={LABEL: "1", **spec.labels},
                mounts=self._mounts(spec),
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
            for archive in spec.archives:
                container.put_archive("/", archive)
            if self._cancelled.is_set():
                return ExecResult(exit_code=130, cancelled=True)
            container.start()
            if spec.timeout:
                timer = threading.Timer(spec.timeout, lambda: (timed_out.set(), self._kill()))
                timer.daemon = True
                timer.start()
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                on_output(chunk)
            code = container.wait().get("StatusCode", 1)
            if after is not None and not (timed_out.is_set() or self._cancelled.is_set()):
                after(container)
            return ExecResult(
                exit_code=code, timed_out=timed_out.is_set(), cancelled=self._cancelled.is_set()
            )
        except docker.errors.ImageNotFound as e:
            raise UsageError(f"image not found: {_reason(e)}", "check --image") from None
        except (docker.errors.DockerException, OSError) as e:
            if isinstance(e, SoopervisorError):
                raise
            raise EngineUnavailable(f"lost the Docker engine during the run: {_reason(e)}", ENGINE_HINT) from None
        finally:
            if timer is not None:
                timer.cancel()
            self._remove()

    def _remove(self) -> None:
        c, self._container = self._container, None
        if c is None:
            return
        try:
            c.remove(force=True, v=True)
        except Exception:
            # the engine itself is gone; nothing we can do but not hide the error
            pass

    @staticmethod
    def _environment(spec: ContainerSpec) -> dict[str, str]:
        env = dict(spec.environment)
        if spec.ca_bundle and spec.name_ca:
            env.update({name: CA_PATH for name in CA_VARIABLES})
        return env

    @staticmethod
    def _mounts(spec: ContainerSpec) -> list:
        # The only mount: the CA bundle, read-only (corporate proxies). A Mount,
        # not `volumes=`: docker-py also declares those as image volumes, which
        # a committed environment image would then carry.
        if not spec.ca_bundle:
            return []
        return [_docker().types.Mount(CA_PATH, str(spec.ca_bundle), type="bind", read_only=True)]

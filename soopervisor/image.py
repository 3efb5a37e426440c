"""The base image runs start from: which one a run would use, and making one (``soopervisor image``).

Someone who installed the package has no checkout and no ``scripts/``: this
module is what builds the base image for them. Where a registry answers, the
public ``python:X.Y-slim`` is pulled; where none does, an image is built from
Debian's packages with debootstrap (root needed) and imported into the engine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import config

if TYPE_CHECKING:
    from .engines import Engine
from .errors import SoopervisorError, UsageError

#: the Debian release whose python3 is that version: the offline image's Python follows the suite
DEBIAN_SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,git,ca-certificates"
#: debootstrap's lines that mark a phase (the per-package lines are too many for a progress line each)
_PHASES = re.compile(r"^I: (Retrieving Release|Resolving dependencies|Checking component|Installing core|"
                     r"Unpacking required|Configuring required|Unpacking the base|Configuring the base|"
                     r"Base system installed)")
BUILD_HINT = "build one with `soopervisor image build` (it pulls python:3.11-slim, or builds " \
             "soopervisor/base:bookworm from Debian packages where no registry answers)"


@dataclass(frozen=True)
class Choice:
    """The image runs would use and where that setting came from."""

    name: str
    source: str  # "--image", "SOOPERVISOR_IMAGE" or "default"

    def to_dict(self) -> dict:
        return {"image": self.name, "source": self.source}


def choose(flag: str | None = None) -> Choice:
    """The image a run given ``--image flag`` (or none) would use, the same order runs follow."""
    if flag:
        return Choice(flag, "--image")
    if os.environ.get("SOOPERVISOR_IMAGE"):
        return Choice(os.environ["SOOPERVISOR_IMAGE"], "SOOPERVISOR_IMAGE")
    return Choice(config.DEFAULT_IMAGE, "default")


def _client(engine: Engine | None = None):
    from .executors.docker import connect

    return connect(engine)  # None: the engine runs use (SOOPERVISOR_EXECUTOR, the file's default, DOCKER_HOST)


def has_image(client, name: str) -> bool:
    import docker

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError:  # an invalid reference, e.g. upper case: not in the engine either
        return False


def suite_for(python: str) -> str:
    """The Debian release whose python3 is ``python`` (3.9, 3.11, 3.13), else UsageError."""
    suite = DEBIAN_SUITES.get(python)
    if suite is None:
        known = ", ".join(f"{v} ({s})" for v, s in DEBIAN_SUITES.items())
        raise UsageError(f"no Debian release has Python {python} as its python3 (known: {known})",
                         f"where a registry answers, `soopervisor image build --python {python}` pulls "
                         f"python:{python}-slim; offline, pick one of {', '.join(DEBIAN_SUITES)}")
    return suite


def build(tag: str | None, python: str, offline: bool, force: bool, mirror: str | None,
          say: Callable[[str], None]) -> str:
    """Make sure the engine has a base image; returns its name.

    Without ``offline`` the public ``python:<python>-slim`` is pulled (tagged
    ``tag`` when given); when that fails, or with ``offline``, the image is
    built from Debian packages as ``tag`` or ``soopervisor/base:<suite>``. An
    image already in the engine is left alone unless ``force``.
    """
    if not re.fullmatch(r"\d+\.\d+", python):
        raise UsageError(f"--python {python!r} is not a version like 3.11", "e.g. --python 3.11")
    if offline:
        suite_for(python)  # an unknown release is said before anything else happens
    client = _client()
    public = f"python:{python}-slim"
    if tag and not force and has_image(client, tag):
        say(f"image: {tag} is already in the engine; nothing to do (--force builds it again)")
        return tag
    if not offline:
        target = tag or public
        if not tag and not force and has_image(client, public):
            say(f"image: {public} is already in the engine; nothing to do (--force pulls it again)")
            return public
        say(f"image: pulling {public}")
        reason = _pull(client, public)
        if reason is None:
            if tag:
                client.images.get(public).tag(*_split(tag))
            say(f"image: {target} is ready")
            return target
        say(f"image: cannot pull {public} ({reason}); building one from Debian packages instead")
    suite = suite_for(python)
    target = tag or f"soopervisor/base:{suite}"
    if not tag and not force and has_image(client, target):
        note = "; runs use it when the default image cannot be pulled" if target == config.OFFLINE_IMAGE else ""
        say(f"image: {target} is already in the engine; nothing to do{note} (--force builds it again)")
        return target
    _debootstrap_image(target, suite, mirror or os.environ.get("SOOPERVISOR_DEBIAN_MIRROR") or DEFAULT_MIRROR, say)
    return target


def _split(name: str) -> tuple[str, str]:
    import docker

    repo, tag = docker.utils.parse_repository_tag(name)
    return repo, tag or "latest"


def _pull(client, name: str) -> str | None:
    """None when pulled, else the one-line reason it was not (no registry, unknown name)."""
    import docker

    try:
        client.images.pull(*_split(name))
        return None
    except docker.errors.APIError as e:
        return pull_reason(e)


def pull_reason(e: Exception) -> str:
    """The engine's own words for a failed pull, not the HTTP wrapping ("500 Server Error for http+docker://...")."""
    from .executors.docker import _reason

    text = str(getattr(e, "explanation", None) or "") or _reason(e)
    return " ".join(text.split())[:200]


def _debootstrap_image(target: str, suite: str, mirror: str, say: Callable[[str], None]) -> None:
    """debootstrap a minimal Debian with Python, venv, pip and git, then import it as ``target``."""
    if os.geteuid() != 0:
        raise UsageError(
            "building the base image from Debian packages needs root (debootstrap creates device files "
            "and changes file owners)",
            "run it as root: `sudo \"$(command -v soopervisor)\" image build --offline`, or pull "
            "python:3.11-slim where a registry answers",
        )
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.access(p, os.X_OK)), None)
    if debootstrap is None:
        raise UsageError("debootstrap is not installed; it builds the base image from Debian packages",
                         "install it: `apt-get install -y debootstrap`, then run `soopervisor image build` again")
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise UsageError("the docker command is not installed; it imports the built file system as an image",
                         "install the Docker client: `apt-get install -y docker.io`")
    rootfs = Path(tempfile.mkdtemp(prefix="soopervisor-rootfs."))
    log_path = Path(tempfile.gettempdir()) / "soopervisor-debootstrap.log"
    try:
        say(f"image: debootstrap {suite} from {mirror} (about a minute; the full log: {log_path})")
        cmd = [debootstrap, "--variant=minbase", f"--include={PACKAGES}", suite, str(rootfs), mirror]
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
            assert proc.stdout is not None
            last = ""
            for line in proc.stdout:
                log.write(line)
                last = line.strip() or last
                if _PHASES.match(line):
                    say(f"image: {line.strip()[3:]}")
            code = proc.wait()
        if code != 0:
            raise SoopervisorError(f"debootstrap {suite} failed (exit {code}): {last[:200]}",
                                   f"see {log_path}; for an internal mirror pass --mirror URL "
                                   "(or SOOPERVISOR_DEBIAN_MIRROR)")
        # apt's downloads and lists are not needed to run: a smaller image
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (rootfs / sub).glob("*"):
                if f.is_file():
                    f.unlink()
        say(f"image: importing the file system into the engine as {target}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [docker_cli, "import",
             "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "--change", 'CMD ["bash"]', "-", target],
            stdin=tar.stdout, capture_output=True, text=True, check=False)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            detail = (imported.stderr.strip().splitlines() or ["tar failed"])[-1][:200]
            raise SoopervisorError(f"importing the base image {target} failed: {detail}",
                                   "check `docker info` and the free disk space, then run again")
        say(f"image: built {target} (Debian {suite})")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def describe(choice: Choice, say: Callable[[str], None], engine: Engine | None = None) -> dict:
    """Print which image runs would use, where that came from, and whether ``engine`` (default: the one
    runs use) has it."""
    from .errors import EngineUnavailable

    came = {"--image": "the --image flag", "SOOPERVISOR_IMAGE": "the SOOPERVISOR_IMAGE environment variable",
            "default": "the default (no --image, no SOOPERVISOR_IMAGE)"}[choice.source]
    info = {**choice.to_dict(), "in_engine": None, "fallback": None}
    say(f"image: {choice.name}")
    say(f"from: {came}")
    try:
        client = _client(engine)
    except EngineUnavailable as e:
        say(f"in the engine: unknown ({e.message})")
        return info
    info["in_engine"] = has_image(client, choice.name)
    if info["in_engine"]:
        say("in the engine: yes")
        return info
    if choice.source == "default" and has_image(client, config.OFFLINE_IMAGE):
        info["fallback"] = config.OFFLINE_IMAGE
        say(f"in the engine: no; a run pulls it, and uses the local {config.OFFLINE_IMAGE} when that fails")
    else:
        say(f"in the engine: no; a run pulls it; where no registry answers, {BUILD_HINT}")
    return info

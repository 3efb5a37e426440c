"""The environment cache: what an environment image is built from, its key, one build at a time.

A run installs the project's requirements once per distinct environment; the
image it commits (``soopervisor-env:<key>``) is reused by every later run with
the same base image, requirement files and environment stages.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

ENV_IMAGE_REPO = "soopervisor-env"
INSTALLER_VARIABLE = "SOOPERVISOR_INSTALLER"
INSTALLERS = ("auto", "uv", "pip")
#: the environment spec of a reproduced run: the recorded lock, in the project folder of the build's tree
LOCK_FILE = ".soopervisor-lock.txt"


def installer_setting() -> str:
    """``SOOPERVISOR_INSTALLER``: ``auto`` (the default: uv, else pip), ``uv`` or ``pip``; UsageError otherwise."""
    from .options import choice_setting

    return choice_setting(INSTALLER_VARIABLE, INSTALLERS, f"set {INSTALLER_VARIABLE}=auto (uv, and pip when uv "
                          "cannot be installed), uv (uv only) or pip (pip only), or leave it unset")


def env_hash(base_image_id: str, inputs: dict[str, bytes], fingerprint: str) -> str:
    """The cache key of an environment: base image, the files it is built from, the stages."""
    h = hashlib.sha256()
    parts = [base_image_id.encode(), fingerprint.encode()]
    for name in sorted(inputs):
        parts += [name.encode(), inputs[name]]
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


_LOCAL_PREFIXES = ("-e", "--editable", ".", "/", "file:")
_INCLUDE_PREFIXES = ("-r", "--requirement", "-c", "--constraint")


def env_inputs(project, read: Callable[[str], bytes | None]) -> dict[str, bytes] | None:
    """The committed files the environment stages read, by path in the project.

    Follows ``-r``/``-c`` includes. None when a requirement installs a local
    path (``-e .``): then the environment depends on the whole tree and is
    built from it, cached per commit.
    """
    from .errors import UsageError

    inputs: dict[str, bytes] = {}
    pending = [project.env_file]
    while pending:
        rel = pending.pop()
        if rel in inputs:
            continue
        data = read(rel)
        if data is None:
            raise UsageError(
                f"{rel} is not in commit {project.commit[:7]}: the run uses the committed tree",
                f"commit it: git add {rel} && git commit -m 'add {rel}'",
            )
        inputs[rel] = data
        # the spec itself is already parsed (comments gone, pip: section of environment.yml)
        lines = project.pip_requirements if rel == project.env_file else data.decode(errors="replace").splitlines()
        for line in (raw.split(" #")[0].strip() for raw in lines):
            if line.startswith(_LOCAL_PREFIXES) or "@ file:" in line:
                return None
            for prefix in _INCLUDE_PREFIXES:
                if line.startswith(prefix):
                    target = line[len(prefix):].lstrip(" =")
                    base = posixpath.dirname(rel)
                    pending.append(posixpath.normpath(posixpath.join(base, target)))
                    break
    return inputs


@contextlib.contextmanager
def _build_lock(tag: str, note: Callable[[str], None]) -> Iterator[None]:
    """One build of an environment at a time on this machine; the others then reuse it."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, at worst a duplicate build
        yield
        return
    path = Path(tempfile.gettempdir()) / f"soopervisor-env-{tag}.lock"
    # the kernel drops the lock of a process that dies, so a killed run never blocks the next
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            note("soopervisor: waiting for another run that is building the same environment")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def env_tree(subdir: str, inputs: dict[str, bytes]) -> bytes:
    """The tree an environment is built from: the input files at their places under
    ``workspace/`` (an input may be above the project, ``../requirements.txt``), and the
    project folder itself, where the script starts."""
    project_dir = posixpath.normpath(posixpath.join("workspace", subdir))
    files = {posixpath.normpath(posixpath.join(project_dir, rel)): data for rel, data in inputs.items()}
    for name in files:
        if name != "workspace" and not name.startswith("workspace/"):
            raise ValueError(f"an environment input is outside the repository: {name}")
    return _tar(files, folders=[project_dir])


def _tar(files: dict[str, bytes], folders: list[str] | None = None) -> bytes:
    """An uncompressed tar of ``{name: content}``; ``*.sh`` executable (the tree and script a container gets)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in folders or []:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


#: where an environment image keeps the description of its packages (script/describe_env.py)
DESCRIPTION_PATH = "/opt/soopervisor/environment.json"


def describe(executor, image: str, note: Callable[[str], None]) -> dict | None:
    """What the manifest records of environment image ``image``: its id and its packages (the lock).

    Read from the image once and kept under the data folder by image id (an
    image's content never changes under its id). None, with a note, when the
    image has no description (built by an older soopervisor) or it cannot be read.
    """
    import json

    from . import config
    from .errors import SoopervisorError

    try:
        info = executor.resolve_image(image, note)
        cached = config.data_dir() / "environments" / f"{info.id.replace(':', '-')}.json"
        try:
            return json.loads(cached.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        raw = executor.read_file(info.id, DESCRIPTION_PATH)
        if raw is None:
            note(f"soopervisor: {image} does not describe its packages (built before soopervisor recorded them); "
                 "the manifest names only its id")
            return {"image_id": info.id, "packages": None}
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("packages"), list):
            note(f"soopervisor: warning: {DESCRIPTION_PATH} in {image} is not {{packages: [...]}}; not recorded")
            return None
        data["image_id"] = info.id
        config.ensure_dir(cached.parent)
        tmp = cached.with_name(cached.name + f".{os.getpid()}")
        tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cached)
        return data
    except (SoopervisorError, OSError, ValueError) as e:
        note(f"soopervisor: warning: the environment's packages were not recorded: {getattr(e, 'message', e)}")
        return None

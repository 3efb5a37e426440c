"""Artifact sets: extract them from the container, describe them, fetch them back.

A set is the files a run produced plus ``manifest.json`` (path, size, sha256 of
every file, and what the run was). Everything downloaded is checked against the
manifest before it is moved into place.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from soopervisor import config
from soopervisor.errors import ArtifactsNotFound, IntegrityError, UnsafePath, UsageError
from soopervisor.storage import MANIFEST, Storage, check_relpath, open_storage
from soopervisor.storage.base import parse_manifest

log = logging.getLogger(__name__)

SCHEMA = 1
LOG_NAME = "soopervisor.log"
_BLOCK = 1 << 20
_HEX = set("0123456789abcdef")

#: the fields a run gives write_manifest; "files" and "schema" are computed
MANIFEST_FIELDS = (
    "project",
    "commit",
    "dirty",
    "mode",
    "status",
    "exit_code",
    "started_at",
    "finished_at",
    "image",
    "image_digest",
    "env_hash",
    "soopervisor_version",
    "log",
    "run_id",
    "failed_task",
    "error",
)


# -- extraction ----------------------------------------------------------------


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (docker's get_archive)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = bytes(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _as_file(tar_stream: Iterable[bytes] | IO[bytes] | bytes) -> IO[bytes]:
    if isinstance(tar_stream, (bytes, bytearray)):
        return io.BytesIO(tar_stream)
    if hasattr(tar_stream, "read"):
        return tar_stream  # type: ignore[return-value]
    return io.BufferedReader(_ChunkReader(tar_stream), buffer_size=_BLOCK)


def _member_name(raw: str, strip: str | None) -> str | None:
    """The member's path relative to dest; None when it is the stripped folder itself.

    "" when it lies outside ``strip`` (skipped); UnsafePath for absolute names and ``..``.
    """
    name = raw
    if name.startswith("/") or "\\" in name or "\0" in name:
        check_relpath(name)  # raises UnsafePath
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(
            f"tar member {raw!r} would be written outside the destination",
            hint="artifact names must stay inside the artifacts folder",
        )
    if strip:
        top = [p for p in strip.split("/") if p not in ("", ".")]
        if parts[: len(top)] != top:
            return ""  # outside the folder we asked for
        parts = parts[len(top) :]
    if not parts:
        return None
    return check_relpath("/".join(parts))


def safe_extract(
    tar_stream: Iterable[bytes] | IO[bytes],
    dest: Path,
    strip: str | None = None,
    *,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[Path]:
    """Extract a tar stream into ``dest``, streaming; return the files written.

    Members with absolute names or ``..`` raise UnsafePath (extraction stops;
    extract into a fresh folder). Links, devices and fifos are skipped and
    reported to ``on_skip(name, reason)`` (default: a log warning). ``strip``
    removes a leading folder (``artifacts`` for get_archive of ``.../artifacts``).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report = on_skip or (lambda name, why: log.warning("skipped %s: %s", name, why))
    written: list[Path] = []
    # "r|*": a forward-only stream, so an archive of any size is never held whole
    with tarfile.open(fileobj=_as_file(tar_stream), mode="r|*") as tf:
        for member in tf:
            rel = _member_name(member.name, strip)
            if rel is None:
                continue
            if rel == "":
                report(member.name, f"outside the {strip!r} folder")
                continue
            if member.issym() or member.islnk():
                report(rel, f"link to {member.linkname!r}; links are not stored")
                continue
            if not (member.isreg() or member.isdir()):
                report(rel, "not a regular file (device or fifo)")
                continue
            member = member.replace(name=rel, deep=False)
            _refuse_links_on_the_way(dest, rel)
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                continue
            try:
                # the data filter also refuses escapes and drops unsafe modes
                tf.extract(member, dest, set_attrs=False, filter="data")
            except tarfile.FilterError as e:
                raise UnsafePath(f"tar member {member.name!r} refused: {e}") from e
            written.append(dest / rel)
    return written


# -- describing a set -------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """``{"path", "size", "sha256"}`` of every regular file under ``root``, by path.

    Links are not followed and not listed.
    """
    root = Path(root)
    entries = []
    for dirpath, _dirs, files in os.walk(root):  # os.walk does not follow links
        for f in files:
            p = Path(dirpath) / f
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            entries.append(
                {
                    "path": p.relative_to(root).as_posix(),
                    "size": st.st_size,
                    "sha256": sha256_file(p),
                }
            )
    return sorted(entries, key=lambda e: e["path"])


def _iso_utc(value: Any) -> Any:
    """A datetime (or ISO string) as an ISO 8601 UTC string; naive means UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    """Write ``folder/manifest.json`` describing every file in ``folder``; return it.

    ``fields`` are the run's facts (see MANIFEST_FIELDS; absent ones are null,
    extra ones are kept); ``log`` defaults to ``soopervisor.log``. Put the log in ``folder`` first so
    it is hashed with the other files.
    """
    reserved = {"files", "schema"} & set(fields)
    if reserved:
        raise TypeError(f"manifest fields computed here, not given: {', '.join(sorted(reserved))}")
    folder = Path(folder)
    # known fields are always present (null when absent); extra ones are kept,
    # so a new fact from the run never breaks storing its artifacts
    manifest: dict[str, Any] = {k: fields.get(k) for k in MANIFEST_FIELDS}
    manifest.update({k: v for k, v in fields.items() if k not in manifest})
    if manifest["log"] is None:
        manifest["log"] = LOG_NAME
    for key in ("started_at", "finished_at"):
        manifest[key] = _iso_utc(manifest[key])
    manifest["schema"] = SCHEMA
    manifest["files"] = [e for e in file_entries(folder) if e["path"] != MANIFEST]
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)
    return manifest


# -- finding a set ------------------------------------------------------------------


def _storage(storage: Storage | str | os.PathLike[str] | None) -> Storage:
    return storage if isinstance(storage, Storage) else open_storage(storage)


def _when(manifest: dict[str, Any]) -> datetime:
    for key in ("finished_at", "started_at"):
        value = manifest.get(key)
        if isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                continue
            return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return datetime.min.replace(tzinfo=UTC)


def _when_text(manifest: dict[str, Any]) -> str:
    dt = _when(manifest)
    if dt.year == 1:
        return "unknown time"
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def list_sets(project: str, storage: Storage | str | None = None) -> list[dict[str, Any]]:
    """Manifests of the project's complete sets, newest first (by finished_at)."""
    sets = _storage(storage).list_sets(project)
    return sorted(sets, key=lambda m: (_when(m), m.get("commit", "")), reverse=True)


def resolve_commit(storage: Storage | str | None, project: str, ref: str) -> str:
    """The full commit of the set ``ref`` names: a full SHA, a unique prefix of
    4+ hex digits, or ``latest`` (newest finished_at)."""
    st = _storage(storage)
    sets = list_sets(project, st)
    if not sets:
        projects = st.list_projects()
        hint = (
            f"projects with artifacts in {st.url}: {', '.join(projects)}"
            if projects
            else f"no project has artifacts in {st.url} yet; run the pipeline first"
        )
        raise ArtifactsNotFound(f"no artifacts for project '{project}'", hint=hint)
    if ref == "latest":
        return sets[0]["commit"]
    by_commit = {m["commit"]: m for m in sets}
    if ref in by_commit:
        return ref
    low = ref.lower()
    if low in by_commit:
        return low
    matches = []
    if len(low) >= 4 and set(low) <= _HEX:
        matches = [m for m in sets if m["commit"].lower().startswith(low)]
    if len(matches) == 1:
        return matches[0]["commit"]
    if len(matches) > 1:
        listed = "; ".join(f"{m['commit'][:12]} ({_when_text(m)})" for m in matches)
        raise ArtifactsNotFound(
            f"commit prefix '{ref}' is ambiguous in project '{project}': {listed}",
            hint="give more characters of the commit",
        )
    raise ArtifactsNotFound(
        f"no artifacts for commit '{ref}' in project '{project}'",
        hint="soopervisor artifacts list shows the stored commits",
    )


# -- downloading ---------------------------------------------------------------------


def _manifest_files(manifest: dict[str, Any], where: str) -> list[ArtifactFile]:
    """The manifest's file list, validated; UnsafePath for names escaping the set."""
    raw = manifest.get("files")
    if not isinstance(raw, list):
        raise IntegrityError(f"the manifest of {where} has no file list")
    files = []
    for e in raw:
        if not (
            isinstance(e, dict)
            and isinstance(e.get("path"), str)
            and isinstance(e.get("size"), int)
            and isinstance(e.get("sha256"), str)
        ):
            raise IntegrityError(f"the manifest of {where} has a malformed file entry: {e!r}")
        name = check_relpath(e["path"])
        if name == MANIFEST:
            continue
        files.append(ArtifactFile(name, e["size"], e["sha256"].lower()))
    return files


def _refuse_links_on_the_way(root: Path, rel: str) -> None:
    """UnsafePath when any existing part of ``root/rel`` below root is a symlink."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink():
            raise UnsafePath(
                f"{path} is a symlink; refusing to write through it",
                hint="remove the link or download into an empty folder",
            )


def _fetch(
    storage: Storage,
    project: str,
    commit: str,
    name: str,
    target: Path,
    size: int | None,
    sha256: str | None,
) -> Path:
    """Get one file into a temp name beside ``target``, verify, then move it in place."""
    _refuse_links_on_the_way(target.parent, target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        storage.get_file(project, commit, name, tmp)
        if size is not None:
            actual_size = tmp.stat().st_size
            if actual_size != size:
                raise IntegrityError(
                    f"{name}: size {actual_size} does not match the manifest ({size})",
                    hint="the stored copy is damaged; run the pipeline again to store it anew",
                )
        if sha256 is not None and sha256_file(tmp) != sha256:
            raise IntegrityError(
                f"{name}: sha256 does not match the manifest",
                hint="the stored copy is damaged; run the pipeline again to store it anew",
            )
        _refuse_links_on_the_way(target.parent, target.name)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


#: files fetched at once by download_set
DOWNLOAD_WORKERS = 8


def download_set(storage: Storage | str | None, project: str, commit: str, to: Path) -> list[Path]:
    """Download a set (its files, then its manifest) into ``to``, verified.

    Returns the paths written. IntegrityError on a size or sha256 mismatch (the
    bad file is removed); UnsafePath for a name escaping ``to`` or a symlink in
    the way.
    """
    st = _storage(storage)
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    where = f"{project}/{commit}"
    # a manifest in `to` marks a complete download: drop a stale one until this
    # download completes
    stale = to / MANIFEST
    if stale.is_symlink() or stale.is_file():
        stale.unlink()
    # fetch the manifest file itself first so the files and the manifest we keep
    # come from the same version of the set
    fd, tmp_name = tempfile.mkstemp(dir=to, prefix=".manifest.", suffix=".part")
    os.close(fd)
    tmp_manifest = Path(tmp_name)
    try:
        st.get_file(project, commit, MANIFEST, tmp_manifest)
        manifest = parse_manifest(tmp_manifest.read_bytes(), where)
        files = _manifest_files(manifest, where)  # validate every name before writing
        for f in files:
            _refuse_links_on_the_way(to, f.name)
        targets = []
        for f in files:
            target = to.joinpath(*f.name.split("/"))
            # every directory created is checked again: no link may appear on the way
            for parent in reversed(target.relative_to(to).parents[:-1]):
                _refuse_links_on_the_way(to, parent.as_posix())
                (to / parent).mkdir(exist_ok=True)
            targets.append((f, target))
        # cloud backends spend most of a download waiting on the network: fetch a few at once
        with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
            futures = [pool.submit(_fetch, st, project, commit, f.name, t, f.size, f.sha256) for f, t in targets]
        errors = [fut.exception() for fut in futures if fut.exception() is not None]
        if errors:
            # all or nothing: a failed download leaves no files that look like a partial set
            for fut in futures:
                if fut.exception() is None:
                    fut.result().unlink(missing_ok=True)
            raise errors[0]
        written = [fut.result() for fut in futures]
        _refuse_links_on_the_way(to, MANIFEST)
        os.replace(tmp_manifest, to / MANIFEST)
        written.append(to / MANIFEST)
    finally:
        if tmp_manifest.exists():
            tmp_manifest.unlink()
    return written


# -- the notebook-facing object ------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    size: int
    sha256: str


def format_size(n: float) -> str:
    """A human-readable size in decimal units: ``"512 B"``, ``"1.2 MB"``."""
    n = float(n)
    if abs(n) < 1000:
        return f"{int(n)} B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        n /= 1000
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


class Artifacts:
    """The artifacts one commit produced: its manifest, its files, on demand."""

    def __init__(self, storage: Storage, project: str, commit: str, manifest: dict[str, Any]) -> None:
        self.storage = storage
        self.project = project
        self.commit = commit
        self.manifest = manifest
        self.files: list[ArtifactFile] = _manifest_files(manifest, f"{project}/{commit}")

    @property
    def status(self) -> str | None:
        return self.manifest.get("status")

    def _file(self, name: str) -> ArtifactFile:
        for f in self.files:
            if f.name == name:
                return f
        check_relpath(name)
        raise ArtifactsNotFound(
            f"no file '{name}' in the artifacts of commit {self.commit[:7]} in project '{self.project}'",
            hint="Artifacts.files lists the names",
        )

    def path(self, name: str) -> Path:
        """A local, verified copy of one file, downloaded into the cache on first use."""
        f = self._file(name)
        cache = config.cache_dir() / self.project / self.commit
        target = cache.joinpath(*f.name.split("/"))
        cache.mkdir(parents=True, exist_ok=True)
        _refuse_links_on_the_way(cache, f.name)
        # a cached copy counts only while it still matches the manifest
        if target.is_file() and target.stat().st_size == f.size and sha256_file(target) == f.sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        return _fetch(self.storage, self.project, self.commit, f.name, target, f.size, f.sha256)

    def download(self, to: str | os.PathLike[str] = ".") -> Path:
        """Download the whole set (files and manifest.json) into ``to``; return it."""
        to = Path(to)
        download_set(self.storage, self.project, self.commit, to)
        return to.resolve()

    def __repr__(self) -> str:
        n = len(self.files)
        return (
            f"<Artifacts project={self.project!r} commit={self.commit[:7]!r} "
            f"{n} file{'s' if n != 1 else ''} status={self.status!r}>"
        )

    def load(self, name: str) -> Any:
        """One file as a Python object, chosen by its extension.

        ``.csv``/``.parquet`` -> pandas DataFrame (``.csv`` falls back to text
        without pandas), ``.json`` -> parsed object, text formats -> str, images
        -> an IPython Image/SVG (shown inline), ``.html`` -> IPython HTML,
        anything else -> bytes. The file is downloaded and verified first.
        """
        local = self.path(name)
        ext = Path(name).suffix.lower()
        if ext == ".csv":
            try:
                import pandas as pd
            except ImportError:
                return local.read_text(encoding="utf-8", errors="replace")
            return pd.read_csv(local)
        if ext == ".parquet":
            try:
                import pandas as pd

                return pd.read_parquet(local)
            except ImportError as e:
                raise UsageError(
                    f"reading {name} needs pandas and pyarrow ({e})",
                    hint=f"pip install pandas pyarrow, or use arts.path({name!r}) to get the file",
                ) from e
        if ext == ".json":
            return json.loads(local.read_text(encoding="utf-8"))
        if ext in _TEXT:
            return local.read_text(encoding="utf-8", errors="replace")
        if ext in _IMAGES or ext in (".svg", ".html", ".htm"):
            try:
                from IPython import display
            except ImportError:  # outside IPython: the raw content is the useful thing
                return local.read_text(encoding="utf-8") if ext in (".svg", ".html", ".htm") else local.read_bytes()
            if ext == ".svg":
                return display.SVG(filename=str(local))
            if ext in (".html", ".htm"):
                return display.HTML(filename=str(local))
            return display.Image(filename=str(local))
        return local.read_bytes()

    def file_url(self, name: str) -> str:
        """Where the Jupyter server extension serves ``name`` (same storage as the server)."""
        from urllib.parse import quote

        # kernels under JupyterHub know the server's prefix; elsewhere it is "/"
        base = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        return (
            f"{base.rstrip('/')}/soopervisor/api/projects/{quote(self.project, safe='')}"
            f"/commits/{quote(self.commit, safe='')}/files/{quote(name, safe='/')}"
        )

    def _repr_html_(self) -> str:
        e = lambda v: html.escape(str(v), quote=True)
        m = self.manifest
        header = (
            f"<b>{e(self.project)}</b> @ <code>{e(self.commit[:7])}</code> &middot; "
            f"mode: {e(m.get('mode'))} &middot; status: {e(m.get('status'))} &middot; "
            f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}, "
            f"{e(format_size(sum(f.size for f in self.files)))}"
        )
        rows = "".join(
            f"<tr><td style='text-align:left'><code>{e(f.name)}</code></td>"
            f"<td style='text-align:right'>{e(format_size(f.size))}</td>"
            f"<td style='text-align:left'><a href='{e(self.file_url(f.name))}' download='{e(f.name.rsplit('/', 1)[-1])}' "
            "title='served by the soopervisor Jupyter server extension' target='_blank'>download</a></td>"
            f"<td><code>{e(f.sha256[:12])}</code></td></tr>"
            for f in self.files
        )
        first = e(repr(self.files[0].name)) if self.files else "'name'"
        usage = (
            f"<div style='font-size:smaller'>in Python: <code>arts.load({first})</code> reads a file, "
            f"<code>arts.path({first})</code> gives a local copy, <code>arts.download(\"dir\")</code> the whole set</div>"
        )
        return (
            f"<div class='soopervisor-artifacts'><div>{header}</div>"
            "<table><thead><tr><th style='text-align:left'>name</th><th>size</th><th>link</th><th>sha256</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>{usage}</div>"
        )


_TEXT = {".txt", ".log", ".md", ".py", ".sql", ".yaml", ".yml", ".r", ".sh", ".toml", ".ini", ".cfg"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif"}


def get_artifacts(
    commit: str = "latest", project: str | None = None, storage: Storage | str | None = None
) -> Artifacts:
    """The artifacts of ``commit`` (full SHA, unique prefix or ``latest``).

    ``project`` defaults to the project in the current directory.
    """
    if project is None:
        from soopervisor.project import project_name  # lazy: keeps this import light

        project = project_name(".")
    st = _storage(storage)
    full = resolve_commit(st, project, commit)
    return Artifacts(st, project, full, st.read_manifest(project, full))

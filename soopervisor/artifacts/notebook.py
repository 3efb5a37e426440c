"""The notebook-facing object of one stored set (``Artifacts``, ``get_artifacts``).

Also how a set's sizes and names are shown to people (``format_size``, ``printable``).
"""
from __future__ import annotations

import html
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soopervisor import config
from soopervisor.errors import ArtifactsNotFound, IntegrityError, UsageError
from soopervisor.storage import Storage, check_relpath
from soopervisor.storage.base import FILES

from .download import _disk_error, _download, _fetch, _ours_folder, _place, _Placed, _refuse_links_on_the_way
from .manifest import _DAMAGED_HINT, LOG_NAME, ArtifactFile, sha256_file
from .sets import SetSummary, _check_mode, _no_artifacts, _read_all, _resolve, _storage, _where

if TYPE_CHECKING:
    from .compare import Comparison


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


def _raw(name: str) -> bytes:
    """A stored name as the bytes it stands for (surrogate escapes are bytes that were not UTF-8)."""
    return name.encode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """A name as text any terminal or notebook can show: bytes that are not UTF-8 become U+FFFD."""
    return _raw(name).decode("utf-8", "replace") if any("\udc80" <= c <= "\udcff" for c in name) else name


# -- one stored set ------------------------------------------------------------------------


class Artifacts:
    """One stored set: its manifest, its products (``files``), on demand.

    ``run_id`` is None for a set of the old layout. ``summary`` is the set's
    line in a listing; ``status`` its run's status.
    """

    def __init__(self, storage: Storage, summary: SetSummary, manifest: dict[str, Any],
                 files: list[ArtifactFile], log_file: ArtifactFile | None = None) -> None:
        self.storage = storage
        self.summary = summary
        self.project = summary.project
        self.commit = summary.commit
        self.run_id = summary.run_id
        self.manifest = manifest
        self.files: list[ArtifactFile] = files
        self._log = log_file

    @property
    def status(self) -> str | None:
        return self.summary.status

    @property
    def mode(self) -> str | None:
        return self.summary.mode

    @property
    def ours_folder(self) -> str:
        """The folder of a download holding manifest.json and soopervisor.log (``.soopervisor``, unless taken)."""
        return _ours_folder(self.files)

    def _file(self, name: str) -> ArtifactFile:
        for f in self.files:
            if f.name == name:
                return f
        check_relpath(name)
        raise ArtifactsNotFound(
            f"no file {name!r} in the artifacts of {_where(self.summary)}",
            hint="Artifacts.files lists the names",
        )

    def _stored(self, name: str) -> str:
        return name if self.run_id is None else f"{FILES}/{name}"

    def _cached(self, stored: str, want: ArtifactFile) -> Path:
        """A verified copy of the set's file ``stored`` in the cache (one folder per set)."""
        cache = config.cache_dir() / self.project / self.commit / (self.run_id or ".old-layout")
        target = cache.joinpath(*stored.split("/"))
        try:
            cache.mkdir(parents=True, exist_ok=True)
            _refuse_links_on_the_way(cache, stored)
            # a cached copy counts only while it still matches the manifest
            if (target.is_file() and not target.is_symlink() and target.stat().st_size == want.size
                    and sha256_file(target) == want.sha256):
                return target
            fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".fetch.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _fetch(self.storage, (self.project, self.commit, self.run_id), stored, want, tmp)
                placed = _Placed([], [])
                return _place(cache, stored, tmp, placed)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as e:
            raise _disk_error(e, cache) from None

    def path(self, name: str) -> Path:
        """A local, verified copy of one product, downloaded into the cache on first use."""
        return self._cached(self._stored(name), self._file(name))

    def log_path(self) -> Path:
        """A local, verified copy of the run's log; ArtifactsNotFound when the set has none."""
        if self._log is None:
            raise ArtifactsNotFound(f"the set {_where(self.summary)} has no log")
        return self._cached(self._log.name if self.run_id is None else LOG_NAME, self._log)

    def download(self, to: str | os.PathLike[str] = ".") -> Path:
        """Download the whole set into ``to`` (empty, or holding this set); return it.

        Products at ``to/<path>``, manifest.json and soopervisor.log in ``to/.soopervisor/``.
        """
        to = Path(to)
        _download(self.storage, self.summary, to)
        return to.resolve()

    def compare(self, other: Artifacts | str) -> Comparison:
        """This set (A, the base) against ``other`` (B): files added, removed, changed by sha256.

        ``other`` is an ``Artifacts`` or a commit reference of the same project and
        storage (as ``get_artifacts`` takes it). ``.file_diff(name)`` says how one file changed.
        """
        from .compare import Comparison

        if isinstance(other, str):
            other = get_artifacts(other, project=self.project, storage=self.storage)
        return Comparison(self, other)

    def __repr__(self) -> str:
        n = len(self.files)
        run = f" run={self.run_id!r}" if self.run_id else ""
        return (
            f"<Artifacts project={self.project!r} commit={self.commit[:7]!r}{run} "
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
        run = f"?run={quote(self.run_id, safe='')}" if self.run_id else ""
        return (
            f"{base.rstrip('/')}/soopervisor/api/projects/{quote(self.project, safe='')}"
            f"/commits/{quote(self.commit, safe='')}/files/{quote(_raw(name), safe='/')}{run}"
        )

    def _repr_html_(self) -> str:
        e = lambda v: html.escape(printable(str(v)), quote=True)
        m = self.manifest
        run = f" &middot; run <code>{e(self.run_id)}</code>" if self.run_id else ""
        failed = ""
        if self.status != "succeeded":
            from soopervisor.logstream import LOAD_FAILED

            named = isinstance(m.get("failed_task"), str) and not m["failed_task"].startswith(LOAD_FAILED)
            task = f" in task <code>{e(m['failed_task'])}</code>" if named else ""  # a load failure has none
            failed = f"<div>{e(m.get('error') or self.status)}{task}</div>"
        header = (
            f"<b>{e(self.project)}</b> @ <code>{e(self.commit[:7])}</code>{run} &middot; "
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
            f"<tbody>{rows}</tbody></table>{failed}{usage}</div>"
        )


_TEXT = {".txt", ".log", ".md", ".py", ".sql", ".yaml", ".yml", ".r", ".sh", ".toml", ".ini", ".cfg"}
_IMAGES = {".png", ".jpg", ".jpeg", ".gif"}


def default_project(storage: Storage, path: str | os.PathLike = ".", note=None) -> tuple[str, list]:
    """The project at ``path`` and its stored sets: under its name, else (when that has none)
    under the folder-derived name earlier versions used, with a note saying so."""
    from soopervisor.project import project_names  # lazy: keeps this import light

    name, legacy = project_names(path)
    read = _read_all(name, storage)
    if not read and legacy:
        old = _read_all(legacy, storage)
        if old:
            import sys

            (note or (lambda line: print(line, file=sys.stderr)))(
                f"soopervisor: note: project '{name}' has no sets in {storage.url}; showing those stored "
                f"under its former name '{legacy}' (from the clone's folder)"
            )
            return legacy, old
    return name, read


def get_artifacts(
    commit: str = "latest",
    project: str | None = None,
    storage: Storage | str | None = None,
    *,
    mode: str | None = None,
    run: str | None = None,
) -> Artifacts:
    """The artifacts ``commit`` resolves to (see :func:`resolve_set`).

    ``commit``: full SHA, unique prefix or ``latest``; its newest succeeded set,
    full before sample unless ``mode`` is given. ``run``: that run's set,
    whatever its status. ``project`` defaults to the project in the current
    directory. IntegrityError for a set whose manifest is damaged.
    """
    _check_mode(mode)
    st = _storage(storage)
    if project is None:
        project, read = default_project(st)
    else:
        read = _read_all(project, st)
    if not read:
        raise _no_artifacts(st, project)
    chosen = _resolve([r[0] for r in read], project, commit, mode, run)
    summary, manifest, files, log_file = next(r for r in read if r[0] is chosen)
    if manifest is None:
        raise IntegrityError(f"the set {_where(summary)} is damaged: {summary.damaged}", hint=_DAMAGED_HINT)
    return Artifacts(st, summary, manifest, files, log_file)

"""A set's manifest: writing it (``write_manifest``) and checking one read back from storage.

The manifest lists every product and the log with size and sha256, and what
the run was (MANIFEST_FIELDS); schema 2, with the old layout (schema 1) read.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soopervisor.errors import UnsafePath
from soopervisor.storage import MANIFEST, check_relpath
from soopervisor.storage.base import FILES, LOG, SCHEMA

LOG_NAME = LOG
_BLOCK = 1 << 20  # sha256 read block
_HEX = set("0123456789abcdef")

#: the fields a run gives write_manifest, with their meaning (the docs' manifest reference is
#: generated from this); "files", "log" and "schema" are computed by write_manifest
MANIFEST_FIELDS = {
    "project": "the project's name (from the repository's origin remote, or set; see Storage)",
    "commit": "the full SHA of the commit that ran",
    "dirty": "true when the working tree had uncommitted changes (they were left out of the run)",
    "mode": "``sample`` or ``full``",
    "status": "``succeeded``, ``failed``, ``cancelled`` or ``interrupted``",
    "exit_code": "the pipeline's exit code (null when it never ran)",
    "started_at": "when the run started, ISO 8601 in UTC",
    "finished_at": "when the run ended, ISO 8601 in UTC",
    "image": "the base image the run asked for",
    "image_digest": "the base image's registry digest when it came from a registry, else its image id",
    "env_hash": "the hash of the environment spec and base image that keys the cached environment",
    "soopervisor_version": "the soopervisor version that ran it",
    "log": "the stored log: ``{path, size, sha256}`` (computed), null when there is none",
    "run_id": "the run's id, the name of the set's folder",
    "failed_task": "the task that failed, or why the pipeline failed to load (null on success)",
    "error": "what went wrong, one line, redacted (null on success)",
    "carried_from": "the set an incremental run started from: ``{commit, run_id}``; null for a full build "
                    "(``--force``, or no usable earlier set)",
    "tasks_up_to_date": "how many tasks ploomber found up to date and skipped (null when not reported)",
    "environment": "the environment the pipeline ran in: ``image_id`` (the environment image), ``python``, "
                   "``platform``, ``resolved_by`` (``uv`` or ``pip``) and ``packages``, every installed "
                   "distribution as ``{name, version, installer, hashes}`` (``hashes``: the sha256 of its files "
                   "when uv resolved it); ``packages`` is null for an environment built before they were recorded",
}
#: what write_manifest computes itself, with its meaning
COMPUTED_FIELDS = {
    "files": "every product under ``files/``: ``[{path, size, sha256, origin, task}]``, ``path`` relative to "
             "``files/``; ``origin`` is ``\"built\"`` (by this run) or ``{commit, run_id}`` (carried over "
             "unchanged from that set; sets written before incremental runs have no ``origin``); ``task`` is the "
             "ploomber task that made it: a product the task declares, a file under a folder product, or the "
             "product's ploomber metadata file ``.<name>.metadata``; a carried file keeps the task its set "
             "named; null when no task claims it (sets written before tasks were recorded have no ``task``)",
    "schema": "the layout version: 2 (per-run sets); 1 is the old one-set-per-commit layout, read only",
}


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a set as its manifest lists it."""

    name: str
    size: int
    sha256: str
    task: str | None = None  # the ploomber task that made it, when the manifest says


# -- writing a manifest ---------------------------------------------------------------


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


def _log_entry(folder: Path) -> dict[str, Any] | None:
    log_path = folder / LOG_NAME
    try:
        st = os.lstat(log_path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return {"path": LOG_NAME, "size": st.st_size, "sha256": sha256_file(log_path)}


def write_manifest(folder: Path, *, carried: dict[str, str] | None = None, tasks: dict[str, str] | None = None,
                   **fields: Any) -> dict[str, Any]:
    """Write ``folder/manifest.json`` describing the set in ``folder``; return it.

    ``folder`` is a set as ``Storage.put_set`` takes it: the products under
    ``files/`` and the log at ``soopervisor.log``. ``files`` lists the products
    (path relative to ``files/``, size, sha256), ``log`` the log
    (``{"path", "size", "sha256"}``, null when there is none), ``schema`` is 2.
    ``fields`` are the run's facts (see MANIFEST_FIELDS; absent ones are null,
    extra ones are kept; ``log`` is always computed here). ``carried``: the
    files an incremental run started from (path -> sha256), from the set
    ``carried_from`` names; each file's ``origin`` says whether it was built
    or carried over (see :func:`soopervisor.incremental.origins`). ``tasks``:
    path -> the task that made it (see :mod:`soopervisor.artifacts.owners`);
    each file's ``task`` is null when it is not there.
    """
    reserved = {"files", "schema"} & set(fields)
    if reserved:
        raise TypeError(f"manifest fields computed here, not given: {', '.join(sorted(reserved))}")
    folder = Path(folder)
    # known fields are always present (null when absent); extra ones are kept,
    # so a new fact from the run never breaks storing its artifacts
    manifest: dict[str, Any] = {k: fields.get(k) for k in MANIFEST_FIELDS}
    manifest.update({k: v for k, v in fields.items() if k not in manifest})
    for key in ("started_at", "finished_at"):
        manifest[key] = _iso_utc(manifest[key])
    manifest["schema"] = SCHEMA
    manifest["log"] = _log_entry(folder)
    products = folder / FILES
    has_products = products.is_dir() and not products.is_symlink()
    manifest["files"] = file_entries(products) if has_products else []
    from soopervisor.incremental import origins

    parent = manifest.get("carried_from") if isinstance(manifest.get("carried_from"), dict) else None
    found = origins({e["path"]: e["sha256"] for e in manifest["files"]}, carried or {}, parent)
    for e in manifest["files"]:
        e["origin"] = found[e["path"]]
        e["task"] = (tasks or {}).get(e["path"])
    # ensure_ascii: a name holding bytes that are not UTF-8 (surrogate escapes) is written as \udcXX
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, folder / MANIFEST)
    return manifest


# -- reading a set's manifest ---------------------------------------------------------

#: manifest fields that are a string or null; ``dirty`` is a bool, ``exit_code`` an int
_STR_FIELDS = ("project", "commit", "mode", "status", "started_at", "finished_at", "image", "image_digest",
               "env_hash", "soopervisor_version", "run_id", "failed_task", "error")
#: what a stored set's status can be (a set is written when its run ends)
SET_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")
MODES = ("sample", "full")
_DAMAGED_HINT = "the stored set is damaged; run the pipeline again to store it anew"


class _Damaged(Exception):
    """A manifest of the wrong shape; the message is the one-line reason."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _origin(e: dict[str, Any], i: int) -> str | dict[str, str] | None:
    """A file entry's ``origin``: ``"built"``, ``{commit, run_id}`` or None (an older manifest)."""
    origin = e.get("origin")
    if origin is None or origin == "built":
        return origin
    if (isinstance(origin, dict) and set(origin) == {"commit", "run_id"}
            and all(isinstance(v, str) for v in origin.values())):
        return {"commit": origin["commit"], "run_id": origin["run_id"]}
    raise _Damaged(f"file entry {i} has an origin that is neither \"built\" nor {{commit, run_id}}")


def _file_entry(e: Any, i: int) -> ArtifactFile:
    if not (isinstance(e, dict) and isinstance(e.get("path"), str) and _is_int(e.get("size"))
            and e["size"] >= 0 and isinstance(e.get("sha256"), str) and len(e["sha256"]) == 64
            and set(e["sha256"].lower()) <= _HEX):
        raise _Damaged(f"file entry {i} is not {{path, size, sha256}}")
    try:
        check_relpath(e["path"])
    except UnsafePath:
        raise _Damaged(f"file entry {i} names a path outside the set") from None
    task = e.get("task")  # absent in manifests written before tasks were recorded
    if task is not None and not isinstance(task, str):
        raise _Damaged(f"file entry {i} has a task that is not a string")
    return ArtifactFile(e["path"], e["size"], e["sha256"].lower(), task)


def _checked(manifest: dict[str, Any], old_layout: bool) -> tuple[dict[str, Any], list[ArtifactFile], ArtifactFile | None]:
    """The manifest reduced to its known fields, its products and its log; _Damaged when of the wrong shape."""
    for key in _STR_FIELDS:
        if manifest.get(key) is not None and not isinstance(manifest[key], str):
            raise _Damaged(f"'{key}' is not a string")
    if manifest.get("dirty") is not None and not isinstance(manifest["dirty"], bool):
        raise _Damaged("'dirty' is not true or false")
    if manifest.get("exit_code") is not None and not _is_int(manifest["exit_code"]):
        raise _Damaged("'exit_code' is not a whole number")
    if manifest.get("tasks_up_to_date") is not None and not _is_int(manifest["tasks_up_to_date"]):
        raise _Damaged("'tasks_up_to_date' is not a whole number")
    carried_from = manifest.get("carried_from")
    if carried_from is not None and not (isinstance(carried_from, dict) and set(carried_from) == {"commit", "run_id"}
                                         and all(isinstance(v, str) for v in carried_from.values())):
        raise _Damaged("'carried_from' is not {commit, run_id}")
    if manifest.get("mode") not in (None, *MODES):
        raise _Damaged("'mode' is neither sample nor full")
    if manifest.get("status") not in (None, *SET_STATUSES):
        raise _Damaged("'status' is not a status a run ends with")
    raw = manifest.get("files")
    if not isinstance(raw, list):
        raise _Damaged("'files' is not a list")
    files = [_file_entry(e, i) for i, e in enumerate(raw)]
    log_entry, log_name = manifest.get("log"), None
    if old_layout:
        # the old layout kept the log among the files (and listed it by name)
        log_name = log_entry if isinstance(log_entry, str) else None
        log_file = next((f for f in files if f.name == log_name), None)
        files = [f for f in files if f.name not in (MANIFEST, log_name)]
    elif log_entry is None:
        log_file = None
    else:
        log_file = _file_entry(log_entry, -1) if isinstance(log_entry, dict) else None
        if log_file is None or log_file.name != LOG_NAME:
            raise _Damaged("'log' is not {path: soopervisor.log, size, sha256}")
    if len({f.name for f in files}) != len(files):
        raise _Damaged("a file is listed twice")
    clean = {k: manifest.get(k) for k in MANIFEST_FIELDS if k != "log"}
    if not isinstance(clean.get("environment"), dict):
        clean["environment"] = None  # a record of what ran, not a reason to refuse the set
    clean["schema"] = 1 if old_layout else SCHEMA
    clean["files"] = [{"path": f.name, "size": f.size, "sha256": f.sha256} for f in files]
    if not old_layout:
        for i, (entry, e) in enumerate(zip(clean["files"], raw, strict=True)):
            origin = _origin(e, i)
            if origin is not None:
                entry["origin"] = origin
            if "task" in e:
                entry["task"] = e["task"]
    clean["log"] = (log_name if old_layout else
                    log_file and {"path": log_file.name, "size": log_file.size, "sha256": log_file.sha256})
    return clean, files, log_file

"""Artifact sets: extract them from the container, describe them, find them, fetch them back.

A set is what one run stored (schema 2): the products under ``files/``, the
redacted ``soopervisor.log`` and ``manifest.json`` (path, size, sha256 of every
product and of the log, and what the run was). A commit can hold many sets;
:func:`resolve_set` is the one rule every reader follows (CLI, Python API,
REST, sidebar, notebook, GitHub report). Everything downloaded is checked
against the manifest before it is moved into place. Names from the pipeline
are data: any POSIX name is kept, a damaged manifest is one "damaged" line.

    extract.py   the container's products, safely out of a tar stream
    manifest.py  writing a set's manifest and checking one read back
    sets.py      listing, resolving and pruning stored sets
    download.py  a set fetched, verified and moved into place
    notebook.py  ``Artifacts`` and ``get_artifacts``; format_size, printable
"""

from __future__ import annotations

from .download import download_set
from .extract import safe_extract
from .manifest import (
    MANIFEST_FIELDS,
    MODES,
    SET_STATUSES,
    ArtifactFile,
    file_entries,
    sha256_file,
    write_manifest,
)
from .notebook import Artifacts, format_size, get_artifacts, printable
from .sets import (
    OLD_LAYOUT_RUN,
    CommitSummary,
    SetSummary,
    list_commits,
    list_sets,
    prune_plan,
    prune_sets,
    resolve_set,
    summarize_commits,
)

__all__ = [
    "MANIFEST_FIELDS",
    "MODES",
    "OLD_LAYOUT_RUN",
    "SET_STATUSES",
    "ArtifactFile",
    "Artifacts",
    "CommitSummary",
    "SetSummary",
    "download_set",
    "file_entries",
    "format_size",
    "get_artifacts",
    "list_commits",
    "list_sets",
    "printable",
    "prune_plan",
    "prune_sets",
    "resolve_set",
    "safe_extract",
    "sha256_file",
    "summarize_commits",
    "write_manifest",
]

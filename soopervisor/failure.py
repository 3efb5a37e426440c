"""Why a run failed, said plainly: the failing cell of a partial notebook, the network hint.

What the log stream found on the raw log (a load error, a network error, the
path ploomber printed for a partially executed notebook) is turned here into
what the record, the CLI, the REST API and the widget show. The partial
notebook is read with nbformat from the run's collected files, and its path
is given where it was stored (storage URL + set), not inside the container.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

#: the pipeline container's network when none is asked for (the engine's default)
DEFAULT_NETWORK = "default"
#: how much of a failing cell's source the record keeps
MAX_SOURCE = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class FailedCell:
    source: str
    error: str  # "ValueError: bad value"


def failing_cell(notebook: Path) -> FailedCell | None:
    """The first code cell of ``notebook`` with an output of type ``error``; None when there is none.

    A notebook that cannot be read (not JSON, not a notebook) has none.
    """
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:  # noqa: BLE001 - a damaged partial notebook: nothing to show, the log still says it
        return None
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                ename, evalue = out.get("ename", "Error"), out.get("evalue", "")
                error = _ANSI.sub("", f"{ename}: {evalue}" if evalue else ename)
                source = cell.get("source", "")
                if isinstance(source, list):
                    source = "".join(source)
                if len(source) > MAX_SOURCE:
                    source = source[:MAX_SOURCE] + "\n..."
                return FailedCell(source=source, error=error)
    return None


def relative_product(container_path: str, workdir: str) -> str | None:
    """A path ploomber printed inside the container, relative to the project (the collected layout).

    None when it is outside the project folder (nothing of it was collected).
    """
    path = posixpath.normpath(container_path)
    if not posixpath.isabs(path):
        return path if not path.startswith("..") else None
    rel = posixpath.relpath(path, workdir)
    return None if rel.startswith("..") else rel


def stored_location(storage_url: str | None, project: str, commit: str, run_id: str, files: str, rel: str) -> str:
    """Where a collected file of a run's set is stored: storage URL / project / commit / run / files / rel."""
    base = (storage_url or "").rstrip("/")
    return f"{base}/{project}/{commit}/{run_id}/{files}/{rel}"


def network_hint(network: str) -> str:
    """What to say when a task could not reach a host, naming the network the pipeline ran with."""
    if network == "none":
        return ("the pipeline ran with --network none (SOOPERVISOR_NETWORK): no network at all once the "
                f"environment was built; run with --network {DEFAULT_NETWORK} for the engine's default network")
    return (f"the pipeline's container reaches only what the engine's network '{network}' allows (on a "
            "machine that reaches only the package index through a proxy, no other host); fetch the data "
            "before the run or give it to the pipeline another way; --network NAME (SOOPERVISOR_NETWORK) "
            f"sets the network: {DEFAULT_NETWORK}, bridge, host, none or a network name")


def load_hint(cause: str) -> str:
    """What to do about a pipeline that failed to load."""
    m = re.search(r"No module named '(?P<module>[^'.]+)", cause)
    if m:
        return (f"the environment has no module '{m.group('module')}': add the package that provides it to the "
                "environment spec (requirements.txt or environment.yml), commit, and run again")
    if cause.startswith("SyntaxError: "):
        return "a task's source does not parse: fix it at the file and line named, commit, and run again"
    if "No such kernel" in cause:
        return ("the notebook's kernelspec names a kernel the environment lacks: set the notebook's kernel "
                "to python3 (or install that kernel in the environment)")
    return "`ploomber build` fails the same way in this environment: fix the cause above, commit, and run again"



def summary(run) -> str:
    """The failure banner's one line (no mark, no colour), the same in the CLI, the widget and the sidebar.

    ``run <id> failed at task 'clean': ValueError: bad value (the pipeline failed with
    exit code 1 in stage 'build pipeline')``: the failed task and its exception line
    first, when the task events gave them, then the run's error, which says the
    exit code once. A pipeline that failed to load has no task: its error says why.
    """
    from .logstream import LOAD_FAILED

    failed_task = getattr(run, "failed_task", None)
    task_error = getattr(run, "task_error", None)
    error = run.error or f"the run {run.status}"
    task = ""
    if failed_task and not failed_task.startswith(LOAD_FAILED):
        task = f" at task '{failed_task}'"
    if task and task_error and task_error not in error:
        error = f"{task_error} ({error})"
    return f"run {run.id} {run.status}{task}: {error}"


#: how uv and pip say that a pinned version cannot be had, or that its files are not the recorded ones
_UNAVAILABLE = (
    re.compile(r"no versions? of `?([A-Za-z0-9][A-Za-z0-9._\-]*(?:\[[^\]]*\])?==[^\s`,]+)`?"),  # uv
    re.compile(r"No matching distribution found for ([A-Za-z0-9][A-Za-z0-9._\-]*(?:\[[^\]]*\])?==\S+)"),  # pip
)
_HASH_MISMATCH = re.compile(r"Hash mismatch for `?([A-Za-z0-9][A-Za-z0-9._\-]*==[^\s`]+)`?")  # uv


def unavailable_requirement(lines: list[str]) -> tuple[str, str] | None:
    """``(name==version, why)`` when an installer said a pinned version is not to be had: the last one said."""
    for line in reversed(lines):
        text = _ANSI.sub("", line)
        m = _HASH_MISMATCH.search(text)
        if m:
            return m.group(1), "its files no longer have the recorded sha256"
        for pattern in _UNAVAILABLE:
            m = pattern.search(text)
            if m:
                return m.group(1).rstrip("."), "the package index does not offer it"
    return None

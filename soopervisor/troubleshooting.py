"""Links from errors, hints and validation problems to their entry in the documentation.

Every entry of the troubleshooting page (docs/how-to/troubleshooting.md) has an
anchor named by a topic here; ``topic_url`` refuses a topic the page lacks, and
the docs build and tests check that every topic is an anchor there. The site's
address is ``SOOPERVISOR_DOCS_URL`` when set (a mirror, a locally built copy).
"""
from __future__ import annotations

import os

#: where the documentation site is published (GitHub Pages of soopervisor/soopervisor)
DOCS_URL = "https://soopervisor.github.io/soopervisor"
#: the troubleshooting page, relative to the site's root
PAGE = "how-to/troubleshooting.html"

#: what a command's exit code means
EXIT_CODES = {
    "exit-1": "Exit 1: the pipeline failed",
    "exit-2": "Exit 2: invalid project or usage",
    "exit-3": "Exit 3: Docker, storage or a service unavailable",
    "exit-130": "Exit 130: cancelled",
}

#: errors a command reports (one per class of soopervisor.errors, and the ones they share)
ERRORS = {
    "usage-error": "A bad option, argument or setting",
    "invalid-project": "The project is not valid",
    "artifacts-not-found": "No artifacts for that project or commit",
    "run-not-found": "No run with that id",
    "unsafe-path": "A file name that would escape its folder",
    "integrity-error": "A file does not match its sha256",
    "docker-unavailable": "Docker is not reachable",
    "storage-unavailable": "The storage cannot be reached or written",
    "run-store-unavailable": "The run history cannot be read",
    "cloud-credentials": "Not signed in, or the sign-in expired",
    "github-error": "A GitHub API call failed",
    "server-checkout": "The server cannot check out a commit",
    "remote-refused": "A remote refuses the run",
    "remote-unavailable": "A remote does not answer",
    "internal-error": "An internal error",
}

#: why a run ended other than succeeded
RUN_OUTCOMES = {
    "pipeline-failed": "A task failed",
    "environment-failed": "The environment could not be installed",
    "pipeline-load-failed": "The pipeline failed to load",
    "notebook-cell-failed": "A notebook or script task failed in a cell",
    "missing-module": "No module named …",
    "host-unreachable": "The pipeline could not reach a host",
    "run-timeout": "The run timed out",
    "run-cancelled": "The run was cancelled",
    "run-interrupted": "The run was interrupted (its owner died)",
}

#: every problem validation can report, by its stable code; each is an entry of the
#: documentation's troubleshooting page (Problem.docs links there)
PROBLEM_CODES = {
    "path-missing": "The project folder does not exist",
    "not-a-folder": "The project path is not a folder",
    "not-a-repo": "Not in a git repository",
    "git-error": "git failed",
    "no-commit": "The repository has no commit",
    "not-committed": "A file the pipeline needs is not committed",
    "uncommitted-changes": "Uncommitted changes (warning)",
    "no-pipeline": "No pipeline found",
    "pipelines-below": "A folder of pipelines",
    "entry-point-missing": "The entry point does not exist",
    "entry-point-invalid": "The entry point cannot be used",
    "entry-point-no-match": "The entry point's pattern matches nothing",
    "pipeline-unparsable": "The pipeline spec does not parse",
    "pipeline-invalid": "The pipeline spec is not a valid spec",
    "no-tasks": "The pipeline has no tasks",
    "task-no-source": "A task has no source",
    "source-missing": "A task's source file is missing",
    "file-too-large": "A spec or environment file is too large",
    "no-env-spec": "No environment spec",
    "env-spec-unparsable": "The environment spec does not parse",
    "env-spec-no-dependencies": "The environment spec has no dependencies list",
    "conda-only-deps": "Packages only conda provides (warning)",
    "python-pin": "A Python version the image cannot meet (warning)",
    "env-yaml-unparsable": "env.yaml does not parse",
    "env-yaml-invalid": "env.yaml is not a mapping of parameters",
    "no-sample-key": "env.yaml has no sample key (warning)",
}

#: every topic, by anchor: exit codes, errors, run outcomes and validation problems
TOPICS = {**EXIT_CODES, **ERRORS, **RUN_OUTCOMES, **PROBLEM_CODES}


def docs_url() -> str:
    """The documentation site's root, without a trailing slash."""
    return (os.environ.get("SOOPERVISOR_DOCS_URL") or DOCS_URL).rstrip("/")


def topic_url(topic: str) -> str:
    """The address of the troubleshooting entry ``topic`` (one of TOPICS)."""
    if topic not in TOPICS:
        raise KeyError(f"no troubleshooting entry {topic!r}: add it to soopervisor.troubleshooting and the page")
    return f"{docs_url()}/{PAGE}#{topic}"


def page_url(page: str) -> str:
    """The address of a page of the site, e.g. ``how-to/google-drive`` (tests check that it exists)."""
    return f"{docs_url()}/{page}.html"


def run_topic(run) -> str | None:
    """The entry that explains why ``run`` (a soopervisor.runs.Run) did not succeed; None if it did."""
    status = getattr(run, "status", None)
    if status in (None, "succeeded", "queued", "running"):
        return None
    if status == "cancelled":
        return "run-cancelled"
    if status == "interrupted":
        return "run-interrupted"
    from .lifecycle import ENV_SETUP
    from .logstream import LOAD_FAILED

    # the phrases of failure.load_hint and failure.network_hint (tests/test_docs.py holds them together)
    error = getattr(run, "error", None) or ""
    hint = getattr(run, "hint", None) or ""
    if "timed out after" in error:
        return "run-timeout"
    if error.startswith(ENV_SETUP):
        return "host-unreachable" if "reaches only what the engine's network" in hint else "environment-failed"
    if "has no module" in hint:
        return "missing-module"
    if "reaches only what the engine's network" in hint or "--network none" in hint:
        return "host-unreachable"
    if getattr(run, "failed_cell", None) is not None:
        return "notebook-cell-failed"
    if LOAD_FAILED in error:
        return "pipeline-load-failed"
    return "pipeline-failed"

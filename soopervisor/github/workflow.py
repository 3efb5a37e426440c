"""The workflow ``soopervisor github init`` writes: ``.github/workflows/soopervisor.yml``.

The file is text built line by line rather than a dumped YAML document, so it
keeps the comments that explain it to whoever opens it. Its first lines say
how it was generated and carry a digest of the rest: running the command again
replaces a file that still matches its digest, and refuses (without --force)
one that was edited by hand, so nobody's edits are lost silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from .. import __version__
from ..errors import UsageError
from .storage_secrets import secrets_for

DEFAULT_ACTION = f"soopervisor/soopervisor@v{__version__}"
WORKFLOW_PATH = Path(".github/workflows/soopervisor.yml")
DIGEST_PREFIX = "# soopervisor-digest: sha256:"

# OWNER/REPO[/PATH]@REF as GitHub accepts in `uses:`, or a local ./PATH (an action in the same repository)
_ACTION = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._/-]+)?@[A-Za-z0-9._/-]+|\./[A-Za-z0-9._/-]*)$")
# GitHub's rules for secret names; GITHUB_ names are reserved (and secret names are case-insensitive)
_SECRET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WRITE_ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR")


@dataclass(frozen=True)
class WriteResult:
    path: Path
    state: str  # "created", "updated" or "unchanged"


def render(storage: str | None, project: str = ".", secrets: Sequence[str] = (),
           action: str = DEFAULT_ACTION) -> str:
    """The workflow's text; UsageError for an unknown storage scheme, a bad action or secret name."""
    project = check_project(project)
    secrets = check_secrets(secrets)
    check_action(action)
    body = _body(storage or None, project, secrets, action)
    return _header(storage, project, secrets, action, body) + body


def write(repo_root: Path, storage: str | None = None, project: str = ".", secrets: Sequence[str] = (),
          action: str = DEFAULT_ACTION, *, force: bool = False) -> WriteResult:
    """Write the workflow under ``repo_root``; refuse to replace a hand-edited one unless ``force``."""
    path = Path(repo_root) / WORKFLOW_PATH
    text = render(storage, project, secrets, action)
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = None
    if old is not None and not force and not is_pristine(old):
        raise UsageError(
            f"{WORKFLOW_PATH} was edited by hand; not overwriting it",
            hint="re-run with --force to replace it (your edits are lost), or edit it further by hand",
        )
    if old == text:
        return WriteResult(path, "unchanged")
    _write_atomically(path, text)
    return WriteResult(path, "created" if old is None else "updated")


def is_pristine(text: str) -> bool:
    """True when ``text`` has a digest line and everything after it matches that digest."""
    _, sep, body = text.partition("\n" + DIGEST_PREFIX)
    if not sep:
        return False
    digest, _, body = body.partition("\n")
    return digest.strip() == _digest(body)


# -- validation ------------------------------------------------------------------------------
def check_action(action: str) -> str:
    if not _ACTION.match(action):
        raise UsageError(
            f"--action {action!r} is not OWNER/REPO@REF",
            hint=f"for example --action {DEFAULT_ACTION} (a tag, branch or commit SHA after the @)",
        )
    return action


def check_secrets(names: Sequence[str]) -> list[str]:
    """The names, each once and in order; UsageError for one GitHub would not accept."""
    for name in names:
        if not _SECRET.match(name):
            raise UsageError(
                f"--secret {name!r} is not a valid secret name",
                hint="use letters, digits and underscores, not starting with a digit, e.g. --secret API_TOKEN",
            )
        if name.upper().startswith("GITHUB_"):
            raise UsageError(
                f"--secret {name!r}: names starting with GITHUB_ are reserved by GitHub",
                hint=f"choose another name, e.g. --secret MY_{name}",
            )
    return list(dict.fromkeys(names))


def check_project(project: str) -> str:
    """``project`` as a normalized relative POSIX path inside the repository ("." for its root)."""
    path = PurePosixPath(project.replace(os.sep, "/") or ".")
    if path.is_absolute() or ".." in path.parts:
        raise UsageError(f"--project {project!r} is not a folder inside the repository",
                         hint="give the project's folder relative to the repository's root, e.g. --project pipelines/churn")
    return str(path)


# -- rendering ----------------------------------------------------------------------------------
def _header(storage: str | None, project: str, secrets: list[str], action: str, body: str) -> str:
    args = ["soopervisor", "github", "init"]
    if storage:
        args += ["--storage", storage]
    if project != ".":
        args += ["--project", project]
    for name in secrets:
        args += ["--secret", name]
    if action != DEFAULT_ACTION:
        args += ["--action", action]
    command = " ".join(shlex.quote(a) for a in args)
    return (
        f"# Generated by `{command}` (soopervisor {__version__}).\n"
        "# To change it, run that command again from the repository's root with other options;\n"
        "# it replaces this file as long as nobody edited it (--force replaces an edited one).\n"
        f"{DIGEST_PREFIX}{_digest(body)}\n"
    )


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when YAML reads it back unchanged, else double-quoted."""
    try:
        plain_ok = yaml.safe_load(f"k: {value}") == {"k": value} and "${{" not in value
    except yaml.YAMLError:
        plain_ok = False
    return value if plain_ok else json.dumps(value, ensure_ascii=False)


def _body(storage: str | None, project: str, secrets: list[str], action: str) -> str:
    storage_secrets = secrets_for(storage)
    associations = ", ".join(f'"{a}"' for a in _WRITE_ASSOCIATIONS)
    lines = [
        "",
        "# Runs the ploomber pipeline in a clean container at the pushed commit and keeps",
        "# its outputs under <project>/<commit>/ in the storage below. The run's summary",
        "# appears on the workflow run's page; a run started from a pull-request comment",
        "# also answers with a comment there.",
        "name: soopervisor",
        "",
        "on:",
        "  # every push, to any branch: a sample run (quick, env.yaml's `sample: true`)",
        "  push:",
        "  # the Actions tab → soopervisor → \"Run workflow\": pick sample or full",
        "  workflow_dispatch:",
        "    inputs:",
        "      mode:",
        "        description: Sample run (quick) or full run of the pipeline",
        "        type: choice",
        "        options: [sample, full]",
        "        default: sample",
        "  # a comment on a pull request: `/soopervisor run [SHA]` (full) or `/soopervisor run --sample [SHA]`,",
        "  # SHA being the head commit you reviewed (required for forks; a later push is then refused).",
        "  # GitHub reads this trigger from the default branch's copy of this file.",
        "  issue_comment:",
        "    types: [created]",
        "",
        "# what the job's token may do: read the code, comment on pull requests",
        "permissions:",
        "  contents: read",
        "  issues: write",
        "  pull-requests: write",
        "",
        "jobs:",
        "  run:",
        "    runs-on: ubuntu-latest",
        "    # Comments start a job only when they are a /soopervisor command on a pull request",
        "    # by someone of the repository (owner, member or collaborator); anyone else's",
        "    # comment is ignored here, before it could take a runner or cancel a run.",
        "    # The action checks the commenter's write permission again through the API.",
        "    if: >-",
        "      github.event_name != 'issue_comment' ||",
        "      (github.event.issue.pull_request &&",
        "      startsWith(github.event.comment.body, '/soopervisor') &&",
        f"      contains(fromJSON('[{associations}]'), github.event.comment.author_association))",
        "    # one run at a time per pull request (comments) or branch (pushes):",
        "    # a newer one cancels the one still running",
        "    concurrency:",
        "      group: soopervisor-${{ github.event.issue.number && format('pr-{0}', github.event.issue.number) || github.ref }}",
        "      cancel-in-progress: true",
        "    steps:",
        "      # the action fetches a pull request's head itself when a comment started the run",
        "      - uses: actions/checkout@v5",
        "",
        "      - name: Run the pipeline",
        "        # outputs: steps.soopervisor.outputs.status, .commit and .location",
        "        id: soopervisor",
        f"        uses: {action}",
        "        with:",
        "          # sample on push, the choice of a manual run, full for a `/soopervisor run` comment",
        "          mode: ${{ inputs.mode || 'auto' }}",
    ]
    if storage:
        lines.append(f"          storage: {_scalar(storage)}")
    else:
        lines += [
            "          # no storage: the artifacts stay on the runner and are gone when the job ends;",
            "          # `soopervisor github init --storage URL` writes this file with one",
        ]
    if project != ".":
        lines += ["          # the pipeline's folder in this repository", f"          project: {_scalar(project)}"]
    if secrets:
        lines += ["          # variables from `env:` below passed into the pipeline's container (redacted in logs)",
                  "          secrets: |"]
        lines += [f"            {name}" for name in secrets]
    lines += _env_lines(storage, storage_secrets, secrets)
    return "\n".join(lines) + "\n"


def _env_lines(storage: str | None, storage_secrets, secrets: list[str]) -> list[str]:
    """The step's ``env:``: each variable from the repository secret of the same name."""
    active = {s.name for s in storage_secrets if s.required} | set(secrets)
    lines: list[str] = []
    required = [s for s in storage_secrets if s.required]
    optional = [s for s in storage_secrets if not s.required]
    if required:
        lines.append(f"          # credentials of {storage} (Settings → Secrets and variables → Actions)")
        lines += [f"          {s.name}: ${{{{ secrets.{s.name} }}}}" for s in required]
    for s in optional:
        if s.name in active:
            continue
        lines.append(f"          # optional, {s.what}: remove the # to use it")
        lines.append(f"          # {s.name}: ${{{{ secrets.{s.name} }}}}")
    extra = [name for name in secrets if name not in {s.name for s in required}]
    if extra:
        lines.append("          # passed into the pipeline's container (the `secrets:` input above)")
        lines += [f"          {name}: ${{{{ secrets.{name} }}}}" for name in extra]
    if not lines:
        return []
    if not active:  # only commented-out lines: an `env:` with nothing in it is not valid
        return ["        # env:", *lines]
    return ["        env:", *lines]


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would differ from a file the user wrote
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

"""``soopervisor github ...``: set a repository up to run its pipeline on GitHub Actions."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import click

from ..errors import UsageError


@click.group()
def github() -> None:
    """Run the pipeline on GitHub Actions: on push, by hand, or from a pull-request comment."""


@github.command("init")
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--storage", metavar="URL",
              help="Where the runs' artifacts go: s3://bucket/prefix, gdrive://FOLDER, dropbox://PATH, "
                   "onedrive://PATH or box://FOLDER. Without it they are gone when the job ends.")
@click.option("--project", metavar="DIR",
              help="The pipeline's folder relative to the repository's root (default: PATH's).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="A repository secret passed into the pipeline's container as the variable NAME. Repeatable.")
@click.option("--action", metavar="OWNER/REPO@REF", default=None,
              help="The soopervisor action to use (default: the one of this soopervisor version).")
@click.option("--force", is_flag=True, help="Replace the workflow even if it was edited by hand.")
def init(path: str, storage: str | None, project: str | None, secrets: tuple[str, ...],
         action: str | None, force: bool) -> None:
    """Write .github/workflows/soopervisor.yml for the pipeline at PATH (default: here).

    The workflow runs the pipeline in a clean container on every push (sample
    run), from the Actions tab ("Run workflow": sample or full), and when
    someone with write access comments `/soopervisor run` (full) or
    `/soopervisor run --sample` on a pull request. Run it again to change the
    options: it replaces the file unless it was edited by hand.

    \b
    Examples:
      soopervisor github init                                  artifacts kept only during the job
      soopervisor github init --storage s3://my-bucket/runs    credentials from repository secrets
      soopervisor github init pipelines/churn --storage gdrive://soopervisor --secret DB_PASSWORD
      soopervisor github init --action my-org/soopervisor@main
    """
    from .storage_secrets import secrets_for
    from .workflow import DEFAULT_ACTION, check_project, write

    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{path} is not a folder", hint="give the folder of the pipeline, e.g. soopervisor github init .")
    root = _repo_root(folder)
    if project is None:
        project = Path(os.path.relpath(folder.resolve(), root)).as_posix()
    project = check_project(project)
    if not (root / project).is_dir():
        raise UsageError(f"--project {project}: no such folder in the repository at {root}",
                         hint="give the pipeline's folder relative to the repository's root")

    result = write(root, storage=storage, project=project, secrets=secrets,
                   action=action or DEFAULT_ACTION, force=force)
    shown = _shown(result.path)
    click.echo(f"{result.state} {shown}")

    needed = secrets_for(storage)
    required = [s for s in needed if s.required]
    optional = [s for s in needed if not s.required and s.name not in secrets]
    extra = [n for n in dict.fromkeys(secrets) if n not in {s.name for s in required}]
    if required or extra or optional:
        click.echo("\nAdd these secrets to the repository (Settings → Secrets and variables → Actions), "
                   "or with the GitHub CLI:")
        width = max(len(name) for name in [*(s.name for s in required + optional), *extra])
        for s in required:
            click.echo(f"  gh secret set {s.name:<{width}}   # {s.what}")
        for name in extra:
            click.echo(f"  gh secret set {name:<{width}}   # passed into the pipeline's container")
        if optional:
            click.echo("optional (also remove the # before its line under `env:` in the workflow):")
            for s in optional:
                click.echo(f"  gh secret set {s.name:<{width}}   # optional: {s.what}")
    if not storage:
        click.echo("\nNo --storage: each run's artifacts are gone when its job ends; "
                   "run again with --storage URL to keep them.")

    click.echo("\nThen commit and push the workflow:")
    click.echo(f"  git add {shlex.quote(shown)}")
    click.echo('  git commit -m "Run the pipeline on GitHub Actions with soopervisor"')
    click.echo("  git push")
    click.echo("\nIt runs:")
    click.echo("  - on every push (a sample run);")
    click.echo('  - from the Actions tab: soopervisor → "Run workflow" (sample or full);')
    click.echo("  - on a pull request, when someone with write access comments "
               "`/soopervisor run` (full) or `/soopervisor run --sample`")
    click.echo("    (comments work once the workflow is on the default branch).")


def _repo_root(folder: Path) -> Path:
    """The root of the git repository holding ``folder``; UsageError when there is none."""
    try:
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder,
                              capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed", hint="install git, then run this again") from None
    if proc.returncode != 0:
        raise UsageError(f"{folder} is not in a git repository",
                         hint="run this inside a clone of your GitHub repository (or `git init` one first)")
    return Path(proc.stdout.strip()).resolve()


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is below it, else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)

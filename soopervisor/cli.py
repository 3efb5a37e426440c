"""The command line. Thin: parse, call the API, print, pick the exit code.

Exit codes: 0 ok, 1 the pipeline failed, 2 invalid project or usage,
3 Docker or storage unavailable, 130 interrupted.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .errors import Cancelled, InvalidProject, SoopervisorError, UsageError

CLOUD_FLAGS = ("dropbox", "gdrive", "onedrive", "box", "s3")


class _Group(click.Group):
    """Also accepts the original form: ``soopervisor PATH [STORAGE] [--dropbox|--gdrive]``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["legacy", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="soopervisor")
def cli() -> None:
    """Run a ploomber pipeline the way CI would, and keep its outputs by commit.

    \b
    Examples:
      soopervisor validate                 check the project in this folder
      soopervisor run --sample             sample run in a fresh container
      soopervisor run --full --secret API_TOKEN
      soopervisor artifacts list           what each commit produced
      soopervisor artifacts download latest --to out/
    """


# -- validate / script ---------------------------------------------------
@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(path: str, as_json: bool) -> None:
    """Check the project at PATH (default: here) without running anything.

    Exits 0 when it is valid (warnings allowed), 2 when it is not.
    """
    from .project import inspect

    report = inspect(path)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.format())
    sys.exit(0 if report.ok else 2)


def _mode_option(f):
    return click.option(
        "--sample/--full", default=True, show_default=True,
        help="Sample run (env.yaml's `sample` set to true) or full run.",
    )(f)


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@_mode_option
def script(path: str, sample: bool) -> None:
    """Print the bash script a run of PATH executes in its container."""
    from .project import inspect
    from .script import render

    report = inspect(path)
    if not report.ok:
        raise InvalidProject(report)
    click.echo(render(report.project, sample=sample), nl=False)


# -- run -------------------------------------------------------------------
def _run_options(f):
    for opt in reversed([
        _mode_option,
        click.option("--storage", metavar="URL", help="Where artifacts go (default: SOOPERVISOR_STORAGE or the data folder)."),
        click.option("--image", help="Base image (default: SOOPERVISOR_IMAGE or python:3.11-slim)."),
        click.option("--secret", "secrets", multiple=True, metavar="NAME",
                     help="Pass the environment variable NAME into the container; its value is redacted everywhere. Repeatable."),
        click.option("--ca-bundle", type=click.Path(dir_okay=False), help="CA bundle to trust inside the container (default: SSL_CERT_FILE, REQUESTS_CA_BUNDLE or PIP_CERT)."),
        click.option("--timeout", type=click.FloatRange(min=1), metavar="SECONDS", help="Stop the run after this long."),
        click.option("--cpus", type=click.FloatRange(min=0.01), help="CPU limit for the container."),
        click.option("--memory", metavar="SIZE", help="Memory limit for the container, e.g. 2g."),
        click.option("-q", "--quiet", is_flag=True, help="Do not stream the log; print only the outcome."),
    ]):
        f = opt(f)
    return f


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@_run_options
def run(path: str, **opts) -> None:
    """Run the pipeline at PATH in a fresh container and store its artifacts.

    \b
    Examples:
      soopervisor run                       sample run of this folder
      soopervisor run pipelines/churn --full --storage /mnt/artifacts
      soopervisor run --secret DB_PASSWORD --timeout 3600
    """
    _run(path, **opts)


@cli.command("legacy", hidden=True)
@click.argument("path", type=click.Path(file_okay=False))
@click.argument("storage_path", required=False)
@_run_options
@click.option("--dropbox", is_flag=True)
@click.option("--gdrive", is_flag=True)
@click.option("--onedrive", is_flag=True)
@click.option("--box", is_flag=True)
@click.option("--s3", is_flag=True)
def legacy(path: str, storage_path: str | None, **opts) -> None:
    """soopervisor PATH [STORAGE_PATH] [--dropbox | --gdrive]: the original form of run."""
    chosen = [name for name in CLOUD_FLAGS if opts.pop(name)]
    if len(chosen) > 1:
        raise UsageError(f"choose one storage, not {' and '.join('--' + c for c in chosen)}")
    if storage_path and opts.get("storage"):
        raise UsageError("give the storage either as STORAGE_PATH or with --storage, not both")
    if chosen:
        # --dropbox [STORAGE_PATH] is dropbox://STORAGE_PATH (a folder "soopervisor" without one;
        # S3 needs the bucket); the run checks sign-in before Docker
        folder = (storage_path or "").lstrip("/") or ("" if chosen[0] == "s3" else "soopervisor")
        opts["storage"] = f"{chosen[0]}://{folder}"
    elif storage_path:
        opts["storage"] = storage_path
    _run(path, **opts)


def _terminated(signum, frame):
    raise Cancelled()


def _run(path: str, quiet: bool, **opts) -> None:
    import soopervisor

    signal.signal(signal.SIGTERM, _terminated)

    def echo(line: str) -> None:
        click.echo(line, nl=False)

    result = soopervisor.run(path, on_line=None if quiet else echo, **opts)
    where = f"{result.storage_url.rstrip('/')}/{result.project}/{result.commit}"
    if result.ok:
        click.secho(f"✓ run {result.id} succeeded in {result.duration:.0f}s; artifacts: {where}", fg="green")
        return
    _report_failure(result, where)
    sys.exit(1)


def _report_failure(result, where: str) -> None:
    lines = Path(result.log_path).read_text(encoding="utf-8", errors="replace").splitlines()
    tail = lines[-20:]
    click.echo("", err=True)
    click.secho("── last lines of the log " + "─" * 40, err=True, dim=True)
    for line in tail:
        click.echo(line, err=True)
    task = f" at task '{result.failed_task}'" if result.failed_task else ""
    click.secho(f"✗ run {result.id} {result.status}{task}: {result.error}", fg="red", err=True)
    click.echo(f"  full log: {result.log_path}; stored with the artifacts in {where}", err=True)


# -- artifacts ---------------------------------------------------------------
@cli.group()
def artifacts() -> None:
    """List and download what runs stored, by commit."""


def _project_name(project: str | None) -> str:
    from .project import project_name

    return project or project_name(".")


@artifacts.command("list")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--storage", metavar="URL", help="Storage to read (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifests as JSON.")
def artifacts_list(project: str | None, storage: str | None, as_json: bool) -> None:
    """One line per stored commit: short SHA, mode, status, when, size."""
    from .artifacts import format_size, list_sets

    name = _project_name(project)
    sets = list_sets(name, storage=storage)
    if as_json:
        click.echo(json.dumps(sets, indent=2))
        return
    if not sets:
        click.echo(f"no artifacts stored for project '{name}' yet; `soopervisor run` makes some")
        return
    click.echo(f"{'COMMIT':<9} {'MODE':<7} {'STATUS':<11} {'FINISHED (UTC)':<20} {'FILES':>5} {'SIZE':>9}")
    for m in sets:
        files = m.get("files", [])
        size = sum(f.get("size", 0) for f in files)
        when = (m.get("finished_at") or "")[:19].replace("T", " ")
        dirty = "+" if m.get("dirty") else " "
        click.echo(
            f"{m['commit'][:7]}{dirty} {m.get('mode', '?'):<7} {m.get('status', '?'):<11} "
            f"{when:<20} {len(files):>5} {format_size(size):>9}"
        )


@artifacts.command("download")
@click.argument("commit")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--storage", metavar="URL", help="Storage to read (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--to", "to", default=None, type=click.Path(file_okay=False), help="Target folder (default: ./artifacts-<short sha>).")
def artifacts_download(commit: str, project: str | None, storage: str | None, to: str | None) -> None:
    """Download COMMIT's artifacts (full SHA, unique prefix or `latest`), sha256-checked."""
    from .artifacts import get_artifacts

    arts = get_artifacts(commit, project=_project_name(project), storage=storage)
    target = Path(to) if to else Path(f"artifacts-{arts.commit[:7]}")
    arts.download(target)
    click.echo(f"downloaded {len(arts.files)} files of {arts.project} @ {arts.commit[:7]} into {target}/ (sha256 verified)")


# -- runs --------------------------------------------------------------------
@cli.command("runs")
@click.option("--project", metavar="NAME", help="Only this project's runs.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs_cmd(project: str | None, limit: int, as_json: bool) -> None:
    """Runs from the shared run store, newest first."""
    from .runs import RunStore

    runs = RunStore().list(project=project, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        click.echo("no runs yet; `soopervisor run` starts one")
        return
    click.echo(f"{'RUN':<12} {'PROJECT':<20} {'COMMIT':<8} {'MODE':<7} {'STATUS':<11} {'STARTED (UTC)':<20} {'TOOK':>6}")
    for r in runs:
        took = f"{r.duration:.0f}s" if r.duration is not None else "-"
        when = (r.started_at or "")[:19].replace("T", " ")
        click.echo(
            f"{r.id:<12} {r.project[:20]:<20} {r.short_commit:<8} {r.mode:<7} {r.status:<11} {when:<20} {took:>6}"
        )


@cli.command("stop")
@click.argument("run_id")
def stop_cmd(run_id: str) -> None:
    """Stop a running run (started here, in a notebook or in JupyterLab) and remove its container.

    \b
    Example:
      soopervisor runs            # the RUN column has the ids
      soopervisor stop 3f2a9c1b7d0e
    """
    from . import stop_run

    run = stop_run(run_id)
    click.echo(f"run {run.id} {run.status}")


# -- login ------------------------------------------------------------------------
LOGIN_SERVICES = ("gdrive", "dropbox", "onedrive", "box")


def _backend(name: str):
    from .storage import cloud_module

    return cloud_module(name)


@cli.command("login")
@click.argument("service", required=False, type=click.Choice(LOGIN_SERVICES))
@click.option("--status", is_flag=True, help="Show which services are signed in (never a token).")
def login_cmd(service: str | None, status: bool) -> None:
    """Sign in to a cloud storage service; the tokens go to the system keyring.

    Where no keyring exists, tokens go to a file only you can read (0600)
    under your config folder. In CI, pass them as environment variables
    instead (see the README).

    \b
    Examples:
      soopervisor login dropbox        a link to open, then paste the code
      soopervisor login onedrive       a device code to enter at microsoft.com/devicelogin
      soopervisor login --status
    """
    if status:
        for name in LOGIN_SERVICES:
            try:
                line = _backend(name).describe()
            except SoopervisorError as e:
                line = e.message
            click.echo(f"{name:<9} {line}")
        return
    if service is None:
        raise UsageError("name the service to sign in to", f"soopervisor login {{{'|'.join(LOGIN_SERVICES)}}}")
    def prompt(text: str) -> str:
        return click.prompt(text, hide_input="secret" in text.lower())  # a client secret is not echoed

    where = _backend(service).login(echo=click.echo, prompt=prompt)
    click.secho(f"✓ signed in to {service}; tokens saved in {where}", fg="green")


@cli.command("logout")
@click.argument("service", type=click.Choice(LOGIN_SERVICES))
def logout_cmd(service: str) -> None:
    """Forget the stored tokens of a service.

    \b
    Example:
      soopervisor logout box
    """
    from . import credentials

    if credentials.delete(service):
        click.echo(f"signed out of {service}: its tokens are deleted")
    else:
        click.echo(f"no stored {service} tokens (environment variables, if set, still apply)")


# -- github ---------------------------------------------------------------------
from .github.cli import github  # noqa: E402  (the group lives beside the GitHub code)

cli.add_command(github)


@github.command("run")
def github_run() -> None:
    """Run as a step of a GitHub Actions job: what the Action (action.yml) calls.

    Reads the runner's GITHUB_* variables, the event file and the Action's
    INPUT_* variables; writes the job summary, the step outputs and, for a
    `/soopervisor run` pull-request comment, reactions and the report comment.
    """
    from .github.action import main as action_main

    sys.exit(action_main())


# -- entry point ---------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console entry point: known errors become a message, a hint and an exit code."""
    try:
        cli.main(args=argv, prog_name="soopervisor", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except InvalidProject as e:
        click.echo(e.report.format(), err=True)
        sys.exit(e.exit_code)
    except SoopervisorError as e:
        click.secho(f"error: {e.message}", fg="red", err=True)
        if e.hint:
            click.echo(f"hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Cancelled, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        click.echo("\ninterrupted: the container was removed and the log kept", err=True)
        sys.exit(130)
    except Exception as e:  # a bug of ours: a short message here, the traceback in a file
        crash = _write_crash_report()
        click.secho(f"error: internal error: {type(e).__name__}: {_secret_redactor().redact(str(e))}", fg="red", err=True)
        click.echo(f"hint: this is a bug in soopervisor; the details are in {crash}", err=True)
        sys.exit(1)
    sys.exit(0)


def _secret_redactor():
    """A redactor for the --secret values of this command line and known credentials (for crash output)."""
    import os

    from .redact import CREDENTIALS, Redactor

    names = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--secret=")]
    names += [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--secret"]
    return Redactor([*(os.environ.get(n, "") for n in names), *CREDENTIALS.secrets])


def _write_crash_report() -> str:
    import traceback

    from . import config

    path = config.data_dir() / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_secret_redactor().redact(traceback.format_exc()))
    except OSError:
        return "(could not write a crash report)"
    return str(path)

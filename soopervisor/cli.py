"""The command line. Thin: parse, call the API, print, pick the exit code.

Exit codes: 0 ok, 1 the pipeline failed, 2 invalid project or usage,
3 Docker or storage unavailable, 130 interrupted.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import click

from . import __version__
from .errors import Cancelled, InvalidProject, SoopervisorError, UsageError
from .options import limit_callback as _limit
from .options import network_callback as _network
from .troubleshooting import run_topic, topic_url

CLOUD_FLAGS = ("dropbox", "gdrive", "onedrive", "box", "s3")


class _Group(click.Group):
    """Also accepts the original form: ``soopervisor PATH [STORAGE] [--dropbox|--gdrive]``.

    A first word that is neither a command nor an existing path (nor looks like a
    path) is a mistyped command: "no such command", with the closest one.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            word = args[0]
            if not _looks_like_path(word):
                import difflib

                shown = [name for name, cmd in self.commands.items() if not cmd.hidden]
                close = difflib.get_close_matches(word, shown, n=1, cutoff=0.5)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise UsageError(f"no such command '{word}'",
                                 f"{hint}`soopervisor --help` lists the commands; "
                                 "`soopervisor run PATH` runs the project in a folder")
            args = ["legacy", *args]
        return super().parse_args(ctx, args)


def _looks_like_path(word: str) -> bool:
    """An existing file or folder, or a word written as a path (``./x``, ``a/b``, ``~``): the original form's PATH."""
    import os

    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return os.path.lexists(word) or any(sep in word for sep in seps) or word.startswith(("~", "."))


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
      soopervisor diff a1b2c3d latest      what changed in the outputs
    """


# -- validate / script ---------------------------------------------------
def _entry_point_option(f):
    return click.option(
        "--entry-point", "entry_point", metavar="ENTRY",
        help="What ploomber builds, as `ploomber build --entry-point`: a spec (pipeline.train.yaml), "
             "a pattern ('*.py'), a dotted path (package.module.make_dag); relative to PATH. "
             "Default: ENTRY_POINT, setup.cfg's [ploomber] entry-point, pipeline.yaml.",
    )(f)


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@_entry_point_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(path: str, entry_point: str | None, as_json: bool) -> None:
    """Check the project at PATH (default: here) without running anything.

    Exits 0 when it is valid (warnings allowed), 2 when it is not. Paths in the
    report are relative to the project folder.
    """
    from .project import inspect

    report = inspect(path, entry_point=entry_point)
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
@_entry_point_option
def script(path: str, sample: bool, entry_point: str | None) -> None:
    """Print the bash script a run of PATH executes in its container."""
    from .project import inspect
    from .script import render

    report = inspect(path, entry_point=entry_point)
    if not report.ok:
        raise InvalidProject(report)
    click.echo(render(report.project, sample=sample), nl=False)


# -- run -------------------------------------------------------------------
def _run_options(f):
    for opt in reversed([
        _mode_option,
        click.option("--storage", metavar="URL", help="Where artifacts go (default: SOOPERVISOR_STORAGE or the data folder)."),
        click.option("--image", help="Base image (default: SOOPERVISOR_IMAGE or python:3.11-slim)."),
        click.option("--executor", metavar="NAME",
                     help="The engine to run on, by its name in the executors file (`soopervisor executors` lists "
                          "them; default: SOOPERVISOR_EXECUTOR, else the file's default, else DOCKER_HOST's engine)."),
        click.option("--secret", "secrets", multiple=True, metavar="NAME",
                     help="Pass the environment variable NAME into the container; its value is redacted everywhere. Repeatable."),
        click.option("--ca-bundle", type=click.Path(dir_okay=False), help="CA bundle to trust inside the container (default: SSL_CERT_FILE, REQUESTS_CA_BUNDLE or PIP_CERT)."),
        # plain text checked by options.check_limits: click's FloatRange lets nan and inf through
        click.option("--timeout", metavar="SECONDS", callback=_limit, help="Stop the run after this long."),
        click.option("--cpus", metavar="N", callback=_limit,
                     help="CPU limit for the container, e.g. 2 or 0.5 (at most this machine's CPUs)."),
        click.option("--memory", metavar="SIZE", callback=_limit,
                     help="Memory limit for the container, e.g. 512m, 2g or 1.5g (at least 6m)."),
        click.option("--network", metavar="NAME", callback=_network,
                     help="The pipeline stage's network once the environment is built: default, none, host, bridge "
                          "or a Docker network name (default: SOOPERVISOR_NETWORK, else the engine's default)."),
        click.option("--force", is_flag=True, default=None,
                     help="Rebuild every task (ploomber build --force), e.g. soopervisor run --force. By default "
                          "(or SOOPERVISOR_FORCE=0) a run starts from the set of the nearest ancestor commit and "
                          "rebuilds only the tasks whose source, parameters or upstream changed."),
        click.option("-q", "--quiet", is_flag=True, help="Do not stream the log; print only the outcome."),
        click.option("-v", "--verbose", is_flag=True,
                     help="Stream the installers' output too (pip during setup env, install project, ensure ploomber); "
                          "by default each of those stages is one line, and all of it is in the log."),
        _entry_point_option,
    ]):
        f = opt(f)
    return f


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
@_run_options
@click.option("--remote", metavar="NAME",
              help="Run the pushed commit on a remote instead: a team's soopervisor serve or `github` "
                   "(`soopervisor remote list`); its log follows here.")
def run(path: str, remote: str | None, **opts) -> None:
    """Run the pipeline at PATH in a fresh container and store its artifacts.

    \b
    Examples:
      soopervisor run                       sample run of this folder
      soopervisor run pipelines/churn --full --storage /mnt/artifacts
      soopervisor run --secret DB_PASSWORD --timeout 3600
      soopervisor run --force               rebuild every task, not only what changed
      soopervisor run --remote ci --full    the pushed commit on the team's server, followed here
      soopervisor run --remote github       the repository's workflow on GitHub Actions
    """
    if remote is not None:
        _run_remote(path, remote, **opts)
        return
    _run(path, **opts)


def _run_remote(path: str, remote: str, quiet: bool, verbose: bool = False, **opts) -> None:
    """A run on a remote, followed here until it ends; Ctrl-C stops following (the run goes on)."""
    from .service import RunOptions, RunService

    service = RunService(storage=opts.pop("storage"), image=opts.pop("image"), engine=opts.pop("executor"))
    terminal = None if quiet else _Terminal(verbose)
    active = service.start_remote(RunOptions(path=path, on_line=terminal, **opts), remote)
    try:
        result = active.result()
    except KeyboardInterrupt:
        _say(f"\nsoopervisor: stopped following run {active.run.id}; it goes on at {remote}: "
             f"`soopervisor attach {active.run.id}` follows it again, `soopervisor stop {active.run.id}` stops it",
             err=True)
        sys.exit(130)
    finally:
        if terminal is not None:
            terminal.close()
    _ended(result, streamed=terminal is not None)


def _ended(result, streamed: bool) -> None:
    """The outcome line of a run followed to its end; exits non-zero unless it succeeded."""
    if result.ok:
        _say(f"✓ run {result.id} succeeded in {result.duration:.0f}s{_skipped(result)}; artifacts: {_where(result)}",
             fg="green")
        return
    _failed(result, streamed=streamed)


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


#: how the CLI names a signal in the run's record and log
_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
if hasattr(signal, "SIGHUP"):
    _SIGNAL_NAMES[signal.SIGHUP] = "SIGHUP: the terminal was closed"


class _CancelOnSignals:
    """While a run executes, Ctrl-C, SIGTERM and SIGHUP cancel it: recorded cancelled, container
    removed, set stored, exit 130. A second signal stops waiting at once (the next reader of
    the runs reaps the run). Before the run is recorded, a signal just ends the command."""

    def __init__(self) -> None:
        self.active = None
        self.previous = {s: signal.signal(s, self._handle) for s in _SIGNAL_NAMES}

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        active = self.active
        if active is None or active.cancel_reason is not None:
            raise KeyboardInterrupt if signum == signal.SIGINT else Cancelled()
        active.cancel(_SIGNAL_NAMES[signum])  # only sets a flag: safe in a signal handler


def _detach(stream) -> None:
    """Point a stream whose reader left (a closed pipe, a closed terminal) at /dev/null.

    Whatever is still buffered or printed later then goes nowhere instead of
    failing again, at exit too.
    """
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def _say(text: str, err: bool = False, **style) -> None:
    """A line for the user that never fails the command (stdout may be a closed pipe)."""
    try:
        click.secho(text, err=err, **style)
    except OSError:
        _detach(sys.stderr if err else sys.stdout)


#: stages whose output is an installer's (pip, conda): one line each in the terminal unless --verbose
_FOLDED_STAGES = ("setup env", "ensure ploomber", "install project")


class _Terminal:
    """The terminal sink of a run's log: the pipeline's output as it comes, the installer stages folded.

    A folded stage is one line: a progress line redrawn in place on a terminal
    (``setup env: installing… 143 lines``), then one summary line; only the summary
    when stdout is not a terminal. Our warnings inside it are shown; when the stage
    fails, its last lines are shown before the failure. The stored log has every
    line. On a closed pipe or terminal it detaches stdout and raises: the run
    service then drops this sink and the run goes on.

    Task events (soopervisor.progress) become a progress line, ``task 3/7 clean_data``:
    redrawn in place below the output on a terminal, a plain line per task otherwise.
    Carriage-return redraws (progress bars) are shown in their last state.
    """

    def __init__(self, verbose: bool = False, tty: bool | None = None) -> None:
        from collections import deque

        self.verbose = verbose
        self.tty = sys.stdout.isatty() if tty is None else tty
        self.stage: str | None = None  # the stage being folded
        self.count = 0
        self.recent: deque[str] = deque(maxlen=20)
        self._drawn = False  # a progress line is on the screen
        self._drawn_at = 0.0
        self.task_line: str | None = None  # the task progress redrawn under the output (terminal)
        self._task_drawn = False

    def __call__(self, line: str) -> None:
        try:
            self._line(line)
        except OSError:
            _detach(sys.stdout)
            raise

    def close(self) -> None:
        """The run ended inside a folded stage (stopped, timed out): show that stage's last lines."""
        try:
            self._clear_task()
            if self.stage is not None:
                self._unfold(f"── {self.stage} did not finish; its last lines:")
        except OSError:
            _detach(sys.stdout)

    def _line(self, line: str) -> None:
        from .logstream import STAGE_FAILED, STAGE_START
        from .progress import collapse, parse_line

        event = parse_line(line)
        if event is not None:
            self._task(event)
            return
        if "\r" in line:
            line = collapse(line)
            if not line.strip():
                return  # a progress bar cleared before a line of its own
        text = line.rstrip("\n")
        if self.verbose:
            self._echo(line)
            return
        if self.stage is None:
            name = text[len(STAGE_START):].strip() if text.startswith(STAGE_START) else None
            if name in _FOLDED_STAGES:
                self.stage, self.count, self._drawn_at = name, 0, 0.0
                self.recent.clear()
                self._draw()
            else:
                if text.startswith(("<== soopervisor: ", STAGE_START)) or STAGE_FAILED.match(text):
                    self._clear_task()
                    self.task_line = None  # the build stage ended: no more task progress
                self._echo(line)
            return
        done = f"<== soopervisor: {self.stage} done"
        if text.startswith(done):
            took = text[len(done):].strip()
            self._clear()
            click.echo(f"soopervisor: {self.stage} done{' ' + took if took else ''} "
                       f"({self.count} line{'s' if self.count != 1 else ''} of output in the log; -v shows them)")
            self.stage = None
        elif STAGE_FAILED.match(text) or text.startswith(STAGE_START):
            self._unfold(f"── the last lines of {self.stage} ({self.count} in all; the log has every one):")
            self._line(line)
        elif text.startswith(("soopervisor: warning", "soopervisor: error")):
            self._clear()
            click.echo(line, nl=False)
            self._draw(force=True)
        else:
            self.count += 1
            self.recent.append(line)
            self._draw()

    def _echo(self, line: str) -> None:
        """A line of output, above the task progress line when one is drawn."""
        drawn = self._task_drawn
        self._clear_task()
        click.echo(line, nl=False)
        if drawn and self.task_line:
            self._draw_task()

    def _task(self, event) -> None:
        from .progress import describe

        text = describe(event)
        last = event.event in ("failed", "skipped") or (event.event == "finished" and event.done >= event.total)
        if event.event == "plan":
            return
        if not self.tty:
            if event.event != "finished" or last:  # one line per task started, and the end
                click.echo(f"soopervisor: {text}")
            return
        if last:
            self._clear_task()
            self.task_line = None
            click.echo(f"soopervisor: {text}")
            return
        self.task_line = text
        self._draw_task()

    def _draw_task(self) -> None:
        click.echo(f"\r\x1b[K{self.task_line}", nl=False)
        self._task_drawn = True

    def _clear_task(self) -> None:
        if self._task_drawn:
            click.echo("\r\x1b[K", nl=False)
            self._task_drawn = False

    def _unfold(self, heading: str) -> None:
        self._clear()
        if self.recent:
            click.secho(heading, dim=True)
            for folded in self.recent:
                click.echo(folded, nl=False)
        self.stage = None

    def _draw(self, force: bool = False) -> None:
        import time

        if not self.tty:
            return
        now = time.monotonic()
        if not force and self._drawn and now - self._drawn_at < 0.1:
            return
        self._drawn, self._drawn_at = True, now
        click.echo(f"\r\x1b[K{self.stage}: installing… {self.count} line{'s' if self.count != 1 else ''}", nl=False)

    def _clear(self) -> None:
        if self._drawn:
            click.echo("\r\x1b[K", nl=False)
            self._drawn = False


def _run(path: str, quiet: bool, verbose: bool = False, **opts) -> None:
    from .service import RunOptions, RunService

    service = RunService(storage=opts.pop("storage"), image=opts.pop("image"), engine=opts.pop("executor"))
    with _following(quiet, verbose) as (terminal, signals):
        signals.active = service.start(RunOptions(path=path, on_line=terminal, **opts))
        result = signals.active.result()
    _ended(result, streamed=terminal is not None)


@contextlib.contextmanager
def _following(quiet: bool, verbose: bool) -> Iterator[tuple[_Terminal | None, _CancelOnSignals]]:
    """The terminal that streams a run's log (None when quiet) and the signal handlers that cancel it.

    The caller sets ``signals.active`` once the run is recorded; until then a
    signal just ends the command.
    """
    terminal = None if quiet else _Terminal(verbose)
    signals = _CancelOnSignals()
    try:
        yield terminal, signals
    finally:
        signals.restore()
        if terminal is not None:
            terminal.close()


def _where(result) -> str:
    if not result.storage_url:
        return "not known here (the remote keeps them; its log says where)"
    return f"{result.storage_url.rstrip('/')}/{result.project}/{result.commit}/{result.set_id}"


def _failed(result, streamed: bool, report: bool = True) -> NoReturn:
    """A run that did not succeed: its failure report (unless ``report`` is off), exit 130 when cancelled, else 1."""
    if report:
        _report_failure(result, _where(result), streamed=streamed)
    sys.exit(130 if result.status == "cancelled" else 1)


def _skipped(result) -> str:
    """``, 7 of 10 tasks up to date (skipped)`` when the build reported its plan; else nothing."""
    up_to_date, built = getattr(result, "tasks_up_to_date", None), getattr(result, "tasks_total", None)
    if up_to_date is None or built is None:
        return ""
    return f", {up_to_date} of {up_to_date + built} tasks up to date (skipped)"


def _report_failure(result, where: str, streamed: bool = False) -> None:
    # a streamed log was just printed: its tail is not repeated (the folded
    # installer lines were shown by the terminal sink when their stage failed)
    try:
        lines = [] if streamed else Path(result.log_path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    _say("", err=True)
    if lines:
        _say("── last lines of the log " + "─" * 40, err=True, dim=True)
    for line in lines[-20:]:
        _say(line, err=True)
    from .failure import summary

    # the failed task and its exception line; a pipeline that failed to load has no task: the error says so
    _say(f"✗ {summary(result)}", fg="red", err=True)
    cell, cell_error = getattr(result, "failed_cell", None), getattr(result, "cell_error", None)
    if cell is not None or cell_error:
        _say("  the failing cell:", err=True)
        for line in (cell or "").splitlines()[-15:]:
            _say(f"    | {line}", err=True)
        if cell_error:
            _say(f"  {cell_error}", fg="red", err=True)
    notebook = getattr(result, "partial_notebook", None)
    if notebook:
        _say(f"  partially executed notebook: {notebook}", err=True)
    hint = getattr(result, "hint", None)
    if hint:
        _say(f"  hint: {hint}", fg="yellow", err=True)
    topic = run_topic(result)
    if topic:
        _say(f"  more: {topic_url(topic)}", err=True)
    _say(f"  full log: {result.log_path}; stored with the artifacts in {where}", err=True)


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
@click.option("--all", "every", is_flag=True, help="One line per stored set (every run), not per commit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries as JSON.")
def artifacts_list(project: str | None, storage: str | None, every: bool, as_json: bool) -> None:
    """One line per stored commit: the set it resolves to (its newest succeeded one) and how many sets it has.

    A commit without a succeeded set shows its newest set; a damaged set is one line saying why.
    """
    from .artifacts import list_sets, summarize_commits
    from .storage import open_storage

    store = open_storage(storage)
    if project:
        name, sets = project, list_sets(project, storage=store)
    else:
        # the project here; sets stored under its former, folder-derived name count too
        from .artifacts.notebook import default_project

        name, read = default_project(store, note=lambda line: click.echo(line, err=True))
        sets = [summary for summary, *_ in read]
    commits = summarize_commits(sets)
    if as_json:
        rows = [s.to_dict() for s in sets] if every else [c.to_dict() for c in commits]
        click.echo(json.dumps(rows, indent=2))
        return
    if not sets:
        # say which storage was read: runs with --storage keep their sets elsewhere
        click.echo(f"no artifacts stored for project '{name}' yet in {store.url}; `soopervisor run` makes some"
                   + ("" if storage else " (--storage URL reads another storage)"))
        return
    click.echo(f"{'COMMIT':<9} {'RUN':<12} {'MODE':<7} {'STATUS':<11} {'FINISHED (UTC)':<20} {'FILES':>5} {'SIZE':>9}"
               + ("" if every else f" {'SETS':>4}"))
    if every:
        for s in sets:
            click.echo(_set_line(s))
        return
    for c in commits:
        mark = "" if c.resolved else "  (no succeeded set: --run ID picks one)"
        click.echo(f"{_set_line(c.shown)} {len(c.sets):>4}{mark}")


def _set_line(s) -> str:
    """One set as a line of the table (a damaged one says why)."""
    from .artifacts import format_size

    dirty = "+" if s.dirty else " "
    run = (s.run_id or "(old)")[:12]
    if s.damaged:
        return f"{s.short_commit}{dirty} {run:<12} damaged: {s.damaged}"
    when = (s.finished_at or "")[:19].replace("T", " ")
    return (f"{s.short_commit}{dirty} {run:<12} {s.mode or '?':<7} {s.status or '?':<11} "
            f"{when:<20} {s.files:>5} {format_size(s.size):>9}")


@artifacts.command("download")
@click.argument("commit")
@click.option("--run", "run_id", metavar="ID", help="That run's set, whatever its status (see `artifacts list --all`).")
@click.option("--mode", type=click.Choice(["sample", "full"]), help="The newest succeeded set of this mode.")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--storage", metavar="URL", help="Storage to read (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--to", "to", default=None, type=click.Path(file_okay=False),
              help="Target folder, new or empty (default: ./artifacts-<short sha>-<run>).")
def artifacts_download(commit: str, run_id: str | None, mode: str | None, project: str | None,
                       storage: str | None, to: str | None) -> None:
    """Download the set COMMIT resolves to (full SHA, unique prefix or `latest`), sha256-checked.

    COMMIT gives its newest succeeded set (full before sample unless --mode);
    --run ID gives that run's set. Products go to the folder as they were
    named, manifest.json and soopervisor.log to its .soopervisor/ folder.
    """
    from .artifacts import get_artifacts

    arts = get_artifacts(commit, project=_project_name(project), storage=storage, mode=mode, run=run_id)
    default = f"artifacts-{arts.commit[:7]}" + (f"-{arts.run_id}" if arts.run_id else "")
    target = Path(to) if to else Path(default)
    arts.download(target)
    run = f" run {arts.run_id}" if arts.run_id else ""
    click.echo(f"downloaded {len(arts.files)} files of {arts.project} @ {arts.commit[:7]}{run} ({arts.status}) "
               f"into {target}/ (sha256 verified); manifest and log in {target}/{arts.ours_folder}/")


@artifacts.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=3, show_default=True,
              help="Sets kept per commit (newest first); a commit's newest succeeded set is always kept.")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--storage", metavar="URL", help="Storage to prune (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
def artifacts_prune(keep: int, project: str | None, storage: str | None, dry_run: bool) -> None:
    """Remove old sets: keep the last KEEP sets of each commit, and always its newest succeeded one."""
    from .artifacts import prune_plan, prune_sets

    name = _project_name(project)
    verb = "would remove" if dry_run else "removed"

    def said(s) -> None:
        state = f"damaged: {s.damaged}" if s.damaged else f"{s.mode or '?'} {s.status or '?'}"
        click.echo(f"{verb} {s.project} @ {s.short_commit} run {s.run_id or '(old layout)'} ({state})")

    if dry_run:
        from .artifacts import list_sets

        doomed = prune_plan(list_sets(name, storage=storage), keep)
        for s in doomed:
            said(s)
    else:
        doomed = prune_sets(name, storage=storage, keep=keep, on_removed=said)
    click.echo(f"{verb} {len(doomed)} set{'s' if len(doomed) != 1 else ''} of project '{name}'")


# -- diff --------------------------------------------------------------------
@cli.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--run-a", "run_a", metavar="ID", help="A is that run's set, whatever its status (see `artifacts list --all`).")
@click.option("--run-b", "run_b", metavar="ID", help="B is that run's set, whatever its status.")
@click.option("--mode", type=click.Choice(["sample", "full"]), help="Each side is its commit's newest succeeded set of this mode.")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--storage", metavar="URL", help="Storage to read (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--file", "name", metavar="NAME", help="Only this file's diff (its path in the set), in full.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the comparison as JSON, with each changed file's diff, task and metadata flag (every file).")
@click.option("--metadata", "show_metadata", is_flag=True,
              help="List ploomber's .<product>.metadata files like the others (folded into one line by default).")
@click.option("--exit-code", "exit_code", is_flag=True,
              help="Exit 1 when the products differ (with --file: when that file does), as `git diff --exit-code`; "
                   "ploomber's .metadata files alone do not count: a rebuild rewrites their timestamps.")
def diff_cmd(a: str, b: str, run_a: str | None, run_b: str | None, mode: str | None, project: str | None,
             storage: str | None, name: str | None, as_json: bool, show_metadata: bool, exit_code: bool) -> None:
    """What changed in the artifacts from commit A to commit B: files added, removed, changed.

    A and B are commits (full SHA, unique prefix or `latest`), each its newest
    succeeded set (full before sample unless --mode); --run-a/--run-b pick a
    set by run id. Files are compared by the sha256 of the two manifests; each
    changed file is fetched from both sets and described: a table's shape,
    changed columns and example rows, a JSON file's changed keys, a text's
    unified diff, a notebook's cells, an image's sizes; each names the task
    that made it when the manifest says. Ploomber's .<product>.metadata files
    (a timestamp and the stored source: they differ between any two builds)
    are folded into one line unless --metadata.

    \b
    Examples:
      soopervisor diff a1b2c3d latest            what changed since a1b2c3d
      soopervisor diff $(git rev-parse HEAD~1 HEAD)
                                                 what the last commit changed
      soopervisor diff a1b2c3d e4f5a6b --file output/summary.json
      soopervisor diff a1b2c3d a1b2c3d --run-a 3f2c1d0e9a8b --run-b 7a6b5c4d3e2f
                                                 two runs of one commit
      soopervisor diff a1b2c3d e4f5a6b --json > diff.json
      soopervisor diff a1b2c3d e4f5a6b --exit-code || echo "outputs differ"
      soopervisor diff a1b2c3d e4f5a6b --metadata
                                                 ploomber's metadata files too
    """
    from .artifacts import diff_text, get_artifacts

    proj = _project_name(project)
    arts_a = get_artifacts(a, project=proj, storage=storage, mode=mode, run=run_a)
    arts_b = get_artifacts(b, project=proj, storage=arts_a.storage, mode=mode, run=run_b)
    cmp = arts_a.compare(arts_b)
    if name is not None:
        change = cmp.change(name)
        differ = change.status != "unchanged"
        if as_json:
            click.echo(json.dumps(cmp.file_diff(name), indent=2))
        else:
            click.echo(diff_text.header(cmp))
            click.echo(f"{'~+-='[('changed', 'added', 'removed', 'unchanged').index(change.status)]} "
                       f"{diff_text.shown(change.name, 1000)} ({change.kind}) {change.status}"
                       f"{diff_text.task_note(change)}")
            if change.status != "unchanged":
                for line in cmp.describe(name, max_lines=2000, max_items=1000):
                    click.echo("    " + line)
    else:
        differ = cmp.outputs_differ  # metadata alone: the same products, built again
        if as_json:
            click.echo(json.dumps(cmp.to_dict(with_diffs=True), indent=2))
        else:
            for line in diff_text.render(cmp, metadata=show_metadata):
                click.echo(line)
    sys.exit(1 if exit_code and differ else 0)


@cli.command("reproduce")
@click.argument("commit", default="latest")
@click.option("--run", "run_id", metavar="ID", help="Reproduce that run's set (default: the commit's newest succeeded one).")
@click.option("--mode", type=click.Choice(["sample", "full"]), help="Reproduce the commit's newest succeeded set of this mode.")
@click.option("--project", metavar="NAME", help="Project name (default: the project in this folder).")
@click.option("--path", default=".", type=click.Path(file_okay=False), show_default=True,
              help="The project folder in the repository that holds the commit.")
@click.option("--storage", metavar="URL", help="Where the sets are (default: SOOPERVISOR_STORAGE or the data folder).")
@click.option("--image", help="Base image (default: the one the original run asked for).")
@click.option("--executor", metavar="NAME", help="The engine to run on, by its name in the executors file "
              "(default as for `soopervisor run`).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="Pass the environment variable NAME into the container; its value is redacted everywhere. Repeatable.")
@click.option("--timeout", metavar="SECONDS", callback=_limit, help="Stop the run after this long.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (the log is not streamed).")
@click.option("--exit-code", "exit_code", is_flag=True, help="Exit 1 when a product differs from the recorded one.")
@click.option("-q", "--quiet", is_flag=True, help="Do not stream the log; print only the outcome.")
@click.option("-v", "--verbose", is_flag=True, help="Stream the installers' output too.")
def reproduce_cmd(commit: str, run_id: str | None, mode: str | None, project: str | None, path: str,
                  storage: str | None, image: str | None, executor: str | None, secrets: tuple[str, ...],
                  timeout: float | None,
                  as_json: bool, exit_code: bool, quiet: bool, verbose: bool) -> None:
    """Run COMMIT again in an environment rebuilt from its recorded lock; say which products came out the same.

    The set is the commit's newest succeeded one (full before sample unless
    --mode), or --run ID's. The commit is checked out in a temporary
    worktree (your checkout is not touched), every task is rebuilt, and the
    environment gets exactly the recorded packages (with the recorded sha256
    of their files when uv resolved them), nothing resolved again. The new
    run is stored as another set of the commit. Products are compared by
    sha256; the tasks whose products differ are the non-deterministic ones.

    \b
    Examples:
      soopervisor reproduce a1b2c3d              the newest succeeded set of a1b2c3d
      soopervisor reproduce latest --mode full
      soopervisor reproduce a1b2c3d --run 3f2c1d0e9a8b
      soopervisor reproduce a1b2c3d --exit-code || echo "not reproducible"
    """
    from . import reproduction as repro

    with _following(quiet or as_json, verbose) as (terminal, signals):
        started = repro.start(commit, run=run_id, path=path, project=project, storage=storage, mode=mode,
                              image=image, executor=executor, secrets=secrets, on_line=terminal, timeout=timeout)
        signals.active = started.active
        result = started.active.result()
    outcome = repro.finish(started, result, storage)
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=2))
    else:
        for line in outcome.lines():
            _say(line, fg="green" if line.startswith("✓") else "red" if line.startswith("✗") else None)
    if not result.ok:
        _failed(result, streamed=terminal is not None, report=not as_json)
    sys.exit(1 if exit_code and not outcome.same else 0)


def _end(code: int | str | None, hard: bool = True) -> None:
    """The one way the command ends: ``sys.exit(code)``, or at once when pyarrow was used.

    pyarrow's C++ thread pools sometimes abort the interpreter's shutdown
    ("terminate called without an active exception", exit -6: about 1 run in
    100 here, once in CI) after a table was read, although all the output was
    written. When nothing of ours is left to run (no run of this process under
    way), the console command ends without the shutdown that trips it. ``hard``
    is False when ``main`` was called with arguments, from Python: ending that
    process is not ours to do.
    """
    if not isinstance(code, int):
        if code is not None:  # sys.exit("message"), as Python does
            click.echo(code, err=True)
        code = 0 if code is None else 1
    lifecycle = sys.modules.get("soopervisor.lifecycle")
    if not hard or "pyarrow" not in sys.modules or (lifecycle is not None and lifecycle.active_runs()):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe
            stream.flush()
    os._exit(code)


# -- runs --------------------------------------------------------------------
@cli.command("runs")
@click.option("--project", metavar="NAME", help="Only this project's runs.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
def runs_cmd(project: str | None, limit: int, as_json: bool) -> None:
    """Runs from the shared run store, newest first.

    A running run whose owner is gone (its process died, its lease expired)
    is marked interrupted here, and its containers removed.
    """
    from .remotes.follower import owner_left
    from .service import RunService

    runs = RunService().list(project=project, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    if not runs:
        click.echo("no runs yet; `soopervisor run` starts one")
        return
    # whole project names: the pipelines of one repository differ only at the end
    width = max(len("PROJECT"), *(len(r.project) for r in runs))
    where = max(len("WHERE"), *(len(r.where) for r in runs))
    click.echo(f"{'RUN':<12} {'PROJECT':<{width}} {'COMMIT':<8} {'MODE':<7} {'STATUS':<11} {'WHERE':<{where}} "
               f"{'STARTED (UTC)':<20} {'TOOK':>6}")
    for r in runs:
        took = f"{r.duration:.0f}s" if r.duration is not None else "-"
        when = (r.started_at or "")[:19].replace("T", " ")
        click.echo(f"{r.id:<12} {r.project:<{width}} {r.short_commit:<8} {r.mode:<7} {r.status:<11} "
                   f"{r.where:<{where}} {when:<20} {took:>6}")
    if any(r.remote and not r.finished and owner_left(r) for r in runs):
        click.echo("\nremote runs nobody follows show their last known state: `soopervisor attach ID` follows one")


@cli.command("stop")
@click.argument("run_id")
@click.option("--wait", type=click.FloatRange(min=0, max=3600), default=30, show_default=True, metavar="SECONDS",
              help="How long to wait for the run to end.")
def stop_cmd(run_id: str, wait: float) -> None:
    """Stop a running run (started here, in a notebook or in JupyterLab) and remove its container.

    \b
    Example:
      soopervisor runs            # the RUN column has the ids
      soopervisor stop 3f2a9c1b7d0e
    """
    from .service import RunService

    run = RunService().stop(run_id, wait)
    if run.finished:
        click.echo(f"run {run.id} {run.status}")
    else:
        click.echo(f"run {run.id} is stopping: its owner (pid {run.owner_pid} on {run.owner_host}) "
                   "was asked to stop and is storing what it has; `soopervisor runs` shows when it ended")


@cli.command("attach")
@click.argument("run_id")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the log; wait and print only the outcome.")
@click.option("-v", "--verbose", is_flag=True, help="Show the installers' output too (as `run -v`).")
def attach_cmd(run_id: str, quiet: bool, verbose: bool) -> None:
    """Follow a run by its id: its log from the start, then live, until it ends.

    A remote run that nobody follows any more (its notebook's kernel restarted,
    the terminal that started it was closed) is followed from here again, at the
    line where its log stopped. Ctrl-C stops following; the run goes on.

    \b
    Example:
      soopervisor runs                  # the RUN column has the ids
      soopervisor attach 3f2a9c1b7d0e
    """
    import time

    import soopervisor

    terminal = None if quiet else _Terminal(verbose)
    run = soopervisor.attach(run_id, on_line=terminal)
    try:
        while not run.finished:
            time.sleep(0.2)
    except KeyboardInterrupt:
        _say(f"\nsoopervisor: stopped following run {run_id}; `soopervisor stop {run_id}` stops it", err=True)
        sys.exit(130)
    finally:
        if terminal is not None:
            terminal.close()
    _ended(run, streamed=terminal is not None)


# -- remotes ----------------------------------------------------------------------------
@cli.group("remote")
def remote_group() -> None:
    """Name the remotes runs can go to: a team's `soopervisor serve`, GitHub Actions.

    \b
    Examples:
      soopervisor remote add ci https://ci.example.com:8008     # asks for the server's token
      echo "$TOKEN" | soopervisor remote add ci https://ci.example.com:8008 --token-stdin
      soopervisor remote add ghe https://ghe.example.com/api/v3 --github
      soopervisor remote list
      soopervisor run --remote ci --full
    """


@remote_group.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--github", "is_github", is_flag=True,
              help="URL is a GitHub API (GitHub Enterprise: https://HOST/api/v3) running the repository's workflow.")
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input instead of asking for it.")
@click.option("--no-token", is_flag=True,
              help="Store no token (it comes from SOOPERVISOR_REMOTE_<NAME>_TOKEN, or GITHUB_TOKEN for GitHub).")
def remote_add(name: str, url: str, is_github: bool, token_stdin: bool, no_token: bool) -> None:
    """Name a remote (replacing one of that name) and keep its token with your credentials.

    A server's token is an API token of that server with the `run` scope (its admin
    makes one: `soopervisor serve --config server.yaml token create NAME --scope run`).
    A GitHub token needs `actions: write` and `contents: read` on the repository.
    """
    from .remotes import config as remotes

    token = None
    if token_stdin:
        token = sys.stdin.readline().strip()
    elif not no_token:
        token = click.prompt(f"token for {name}", hide_input=True, default="", show_default=False).strip()
    if not token and not no_token:
        raise UsageError("no token was given", "paste the token, or pass --no-token to take it from the environment")
    entry, where = remotes.add(name, url, kind="github" if is_github else "server", token=token)
    _say(f"remote {entry.name}: {entry.kind} at {entry.url}" + (f"; its token is kept in {where}" if where else ""))


@remote_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the remotes as JSON.")
def remote_list(as_json: bool) -> None:
    """The remotes runs can go to (`soopervisor run --remote NAME`), and whether each has a token."""
    from .remotes import config as remotes

    entries = remotes.entries()  # the file read once
    found = remotes.listed(entries)
    for r in found:
        r["token"] = remotes.token(entries[r["name"]]) is not None
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    width = max(len(r["name"]) for r in found)
    for r in found:
        click.echo(f"{r['name']:<{width}}  {r['kind']:<6}  {r['url']}{'' if r['token'] else '  (no token)'}")


@remote_group.command("remove")
@click.argument("name")
def remote_remove(name: str) -> None:
    """Forget a remote and its stored token."""
    from .remotes import config as remotes
    from .remotes.base import check_name

    check_name(name)
    if not remotes.remove(name):
        raise UsageError(f"no remote named {name!r} is stored", "`soopervisor remote list` shows them")
    _say(f"remote {name} removed")


# -- executors -----------------------------------------------------------------------
@cli.command("executors")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.5, max=120), default=5, show_default=True, metavar="SECONDS",
              help="How long to wait for each engine's answer.")
def executors_cmd(as_json: bool, timeout: float) -> None:
    """The engines runs can go to, which one is the default, and whether each answers.

    Engines are named in the executors file (SOOPERVISOR_EXECUTORS, else executors.yaml in
    the config folder); `local` is the engine DOCKER_HOST names. A run picks one with
    `--executor NAME`. Exits 0 even when an engine does not answer (the report says why),
    2 when the configuration is not usable.

    \b
    Example:
      soopervisor executors
      soopervisor run --executor build-box
    """
    from .engines import report

    found = report(timeout)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = found["executors"]
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    where = max(len("WHERE"), *(len(r["where"]) for r in rows))
    click.echo(f"  {'NAME':<{width}} {'WHERE':<{where}} STATE")
    for r in rows:
        mark = "*" if r["default"] else " "
        if r["answers"]:
            n = r["running"]
            state = f"answers: Docker {r['server_version']}, {n} soopervisor container{'s' if n != 1 else ''} running"
        else:
            state = f"does not answer: {r['reason']}"
        click.echo(f"{mark} {r['name']:<{width}} {r['where']:<{where}} {state}")
    source = found["file"] if found["file_exists"] else f"{found['file']} (none yet: only the environment's engine)"
    click.echo(f"\n* the default; executors file: {source}")


# -- cache ------------------------------------------------------------------------
@cli.group("cache")
def cache_group() -> None:
    """List and prune the cached environment images (soopervisor-env:*) and download caches.

    Set SOOPERVISOR_CACHE_MAX_SIZE (e.g. 20g) to prune the least recently used
    after each environment build, down to that size.
    """


_BASE_HELP = "Only the images built from this base image (as runs named it with --image)."


def _engine_option(f):
    """--executor NAME for the commands that look into an engine (caches, images): the engine runs use by default."""
    return click.option("--executor", metavar="NAME",
                        help="The engine to look into, by its name in the executors file (default: SOOPERVISOR_EXECUTOR, "
                             "else the file's default, else DOCKER_HOST's engine).")(f)


def _engine_client(executor: str | None):
    """A client of the engine ``executor`` names (None: the default one); UsageError or EngineUnavailable."""
    from .engines import choose
    from .executors.docker import connect

    return connect(choose(executor))


@cache_group.command("list")
@click.option("--base", metavar="IMAGE", help=_BASE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON.")
@_engine_option
def cache_list(base: str | None, as_json: bool, executor: str | None) -> None:
    """The cached environment images, most recently used first.

    SIZE is what an image adds to its base image, or to the earlier environment
    it was built on (shared layers count once).
    """
    from . import cache
    from .artifacts import format_size

    images = cache.list_images(_engine_client(executor), base=base)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in images], indent=2))
        return
    if not images:
        click.echo("no environment images cached; a run builds one per distinct environment")
        return
    ref_w = max(len("IMAGE"), *(len(e.ref) for e in images))
    base_w = max(len("BASE IMAGE"), *(len(e.base or "?") for e in images))
    click.echo(f"{'IMAGE':<{ref_w}} {'BASE IMAGE':<{base_w}} {'SIZE':>9} {'CREATED (UTC)':<19} {'LAST USED (UTC)':<19}")
    for e in images:
        mark = "  (in use)" if e.in_use else ""
        click.echo(f"{e.ref:<{ref_w}} {e.base or '?':<{base_w}} {format_size(e.size):>9} "
                   f"{e.created[:19].replace('T', ' '):<19} {e.last_used[:19].replace('T', ' '):<19}{mark}")
    click.echo(f"{len(images)} image{'s' if len(images) != 1 else ''}, {format_size(sum(e.size for e in images))}")


@cache_group.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=None, metavar="N", help="Keep the N most recently used images.")
@click.option("--max-size", metavar="SIZE", help="Remove the least recently used until the rest take at most SIZE (e.g. 20g).")
@click.option("--base", metavar="IMAGE", help=_BASE_HELP)
@click.option("--dry-run", is_flag=True, help="Print what would be removed; remove nothing.")
@_engine_option
def cache_prune(keep: int | None, max_size: str | None, base: str | None, dry_run: bool,
                executor: str | None) -> None:
    """Remove environment images, least recently used first; never one a container uses.

    With neither --keep nor --max-size, every image not in use is removed
    (the next run of each project builds its environment again).
    """
    from . import cache
    from .artifacts import format_size

    limit = cache.parse_size(max_size, "--max-size") if max_size is not None else None
    client = _engine_client(executor)
    images = cache.list_images(client, base=base)
    doomed = cache.prune_plan(images, keep=keep, max_size=limit)
    verb = "would remove" if dry_run else "removed"

    def said(e) -> None:
        click.echo(f"{verb} {e.ref} ({format_size(e.size)}, last used {e.last_used[:19].replace('T', ' ')})")

    def refused(e, why: str) -> None:
        click.echo(f"kept {e.ref}: {why}")

    if dry_run:
        for e in doomed:
            said(e)
        removed = doomed
    else:
        removed = cache.remove(doomed, client, on_removed=said, on_skipped=refused)
    in_use = sum(1 for e in images if e.in_use)
    kept = f"; {in_use} in use kept" if in_use else ""
    click.echo(f"{verb} {len(removed)} image{'s' if len(removed) != 1 else ''}, "
               f"{format_size(sum(e.size for e in removed))}{kept}")


@cache_group.command("downloads")
@click.option("--repository", "repository", metavar="PATH", type=click.Path(file_okay=False),
              help="Only the cache of the repository at PATH.")
@click.option("--clear", is_flag=True, help="Remove the caches shown (never one a build is using).")
@click.option("--json", "as_json", is_flag=True, help="Print the caches as JSON.")
@_engine_option
def cache_downloads(repository: str | None, clear: bool, as_json: bool, executor: str | None) -> None:
    """The download caches of environment builds (Docker volumes), and clearing them.

    \b
    Environment builds keep what uv and pip download in one volume per
    repository (SOOPERVISOR_DOWNLOAD_CACHE=repository, the default), one for the
    whole machine (=machine) or none (=off); pipeline runs never see it.
    \b
    Examples:
      soopervisor cache downloads
      soopervisor cache downloads --repository . --clear
    """
    from . import downloads
    from .artifacts import format_size

    client = _engine_client(executor)
    caches = downloads.list_caches(client)
    if repository is not None:
        name = downloads.volume_name(repository)
        caches = [c for c in caches if c.volume == name]
    if clear:
        removed, kept = downloads.clear(caches, client)
        if as_json:
            click.echo(json.dumps({"removed": [c.to_dict() for c in removed],
                                   "kept": [{**c.to_dict(), "why": why} for c, why in kept]}, indent=2))
            return
        for c in removed:
            click.echo(f"removed {c.volume} ({c.repository}, {format_size(max(c.size, 0))})")
        for c, why in kept:
            click.echo(f"kept {c.volume}: {why}")
        click.echo(f"removed {len(removed)} download cache{'s' if len(removed) != 1 else ''}, "
                   f"{format_size(sum(max(c.size, 0) for c in removed))}")
        return
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in caches], indent=2))
        return
    if not caches:
        which = f"for the repository at {Path(repository).resolve()}" if repository is not None else "here"
        click.echo(f"no download cache {which}; an environment build makes one "
                   f"({downloads.MODE_VARIABLE}={downloads.mode()})")
        return
    vol_w = max(len("VOLUME"), *(len(c.volume) for c in caches))
    click.echo(f"{'VOLUME':<{vol_w}} {'SIZE':>9} {'LAST USED (UTC)':<19} REPOSITORY")
    for c in caches:
        size = format_size(c.size) if c.size >= 0 else "?"
        mark = "  (in use)" if c.in_use else ""
        click.echo(f"{c.volume:<{vol_w}} {size:>9} {c.last_used[:19].replace('T', ' ') or '?':<19} "
                   f"{c.repository}{mark}")
    total = sum(max(c.size, 0) for c in caches)
    click.echo(f"{len(caches)} cache{'s' if len(caches) != 1 else ''}, {format_size(total)}")


# -- image ------------------------------------------------------------------------
@cli.group("image")
def image_group() -> None:
    """The base image runs start from: which one, and building it.

    \b
    A run uses, first found: --image, SOOPERVISOR_IMAGE, then python:3.11-slim
    (or the local soopervisor/base:bookworm when that cannot be pulled). A Jupyter
    server uses c.Soopervisor.image (or the sidebar's setting) before these.
    """


@image_group.command("build")
@click.option("--tag", metavar="NAME", help="The image to make (default: python:X.Y-slim, or "
              "soopervisor/base:<debian release> when built from Debian packages).")
@click.option("--python", "python", default="3.11", show_default=True, metavar="X.Y",
              help="Its Python: the python:X.Y-slim to pull, or the Debian release that has it (3.9, 3.11, 3.13).")
@click.option("--offline", is_flag=True, help="Build from Debian packages (debootstrap, as root); do not try a registry.")
@click.option("--force", is_flag=True, help="Pull or build even when the image is already in the engine.")
@click.option("--mirror", metavar="URL", envvar="SOOPERVISOR_DEBIAN_MIRROR",
              help="The Debian mirror for --offline builds (default: SOOPERVISOR_DEBIAN_MIRROR or deb.debian.org).")
def image_build(tag: str | None, python: str, offline: bool, force: bool, mirror: str | None) -> None:
    """Make sure the engine has a base image: pull python:X.Y-slim, or build one from Debian packages.

    Where no registry answers (or with --offline) it builds soopervisor/base:bookworm
    with debootstrap, which runs then use when the default image cannot be pulled.
    An image already in the engine is left as it is.
    """
    from . import image

    image.build(tag, python, offline=offline, force=force, mirror=mirror, say=click.echo)


@image_group.command("show")
@click.option("--image", "flag", metavar="NAME", help="The image a run given this --image would use.")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@_engine_option
def image_show(flag: str | None, as_json: bool, executor: str | None) -> None:
    """Which image runs would use, where that setting came from, and whether the engine has it."""
    from . import engines, image

    lines: list[str] = []
    info = image.describe(image.choose(flag), say=lines.append, engine=engines.choose(executor))
    click.echo(json.dumps(info, indent=2) if as_json else "\n".join(lines))


# -- storage ----------------------------------------------------------------------
@cli.group("storage")
def storage_group() -> None:
    """Check a storage before the first run."""


@storage_group.command("check")
@click.argument("url", required=False, metavar="[URL]")
@click.option("--json", "as_json", is_flag=True, help="Print the steps as JSON.")
def storage_check(url: str | None, as_json: bool) -> None:
    """Sign in to the storage URL, write, list, read back and remove a tiny set.

    URL is a folder, file://, s3://, gdrive://, dropbox://, onedrive:// or
    box:// (default: SOOPERVISOR_STORAGE or the data folder). The set goes
    under the reserved project _soopervisor-check, through the same code a
    run uses (manifest last; every file read back with its sha256 checked),
    and is removed in any case. Each step is one line with its time; the
    check stops at the first failure, with the error's hint. Exits 0 when
    every step passed, else the error's exit code (3: storage unavailable or
    not signed in).

    \b
    Examples:
      soopervisor storage check                       the default storage
      soopervisor storage check s3://team-bucket/artifacts
      soopervisor storage check gdrive://soopervisor --json
    """
    from .storage.check import check_storage

    def said(step) -> None:
        mark, color = ("✓", "green") if step.ok else ("✗", "red")
        detail = f"  {step.detail}" if step.detail else ""
        _say(f"{mark} {step.name:<9} {step.seconds:6.2f}s{detail}", fg=color)

    if not as_json:
        _say(f"checking {url or 'the default storage'}")
    result = check_storage(url, on_step=None if as_json else said)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        sys.exit(result.exit_code)
    if result.error is not None:
        raise result.error  # its message, hint and more: link, and its exit code
    _say(f"✓ {result.url} works: a run can store, list, read and remove its artifacts there "
         f"({result.seconds:.2f}s)", fg="green")


# -- serve ------------------------------------------------------------------------
_SERVE_CONFIG = "soopervisor.serve.config"  # ctx.meta key: the group's --config, for its subcommands


@cli.group("serve", invoke_without_command=True, subcommand_metavar="[COMMAND [ARGS]...]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              envvar="SOOPERVISOR_SERVER_CONFIG", show_envvar=True,
              help="The server's configuration (server.yaml). Default: no repositories, local storage.")
@click.option("--check", is_flag=True, help="Validate the configuration and reach every repository, then exit.")
@click.option("--once", is_flag=True, help="Poll every repository once, run what that queued, then exit (no HTTP).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDRESS", envvar="SOOPERVISOR_SERVE_HOST",
              show_envvar=True,
              help="The address the HTTP API listens on. 0.0.0.0 (every interface) sends API tokens in clear "
                   "over the network: put a reverse proxy with TLS in front.")
@click.option("--port", type=click.IntRange(0, 65535), default=8008, show_default=True, metavar="PORT",
              envvar="SOOPERVISOR_SERVE_PORT", show_envvar=True, help="The HTTP port; 0 picks a free one.")
@click.pass_context
def serve_cmd(ctx: click.Context, config_path: str | None, check: bool, once: bool, host: str, port: int) -> None:
    """Poll a company's repositories and run every new commit of the branches it lists.

    One process polls (one git ls-remote per repository; a mirror is fetched only
    when a head moved), queues one job per new head and project, and runs them
    through the same run service as `soopervisor run`, storing each run's set in
    the configured storage. Its state (heads, jobs, leases, API tokens) is in a
    database: stopped or killed at any point and started again, it resumes.

    The same process answers HTTP: the API under /soopervisor/api (bearer tokens,
    see `serve token`), webhooks from GitHub and GitLab, /healthz, /readyz,
    /metrics and the dashboard at /dashboard/. It prints
    `soopervisor serve: listening on http://HOST:PORT` once it listens.

    \b
    Examples:
      soopervisor serve --config server.yaml --check   every problem of the file, and each remote reached
      soopervisor serve --config server.yaml           serve and run until stopped (Ctrl-C, SIGTERM)
      soopervisor serve --config server.yaml --port 0  the same on a free port (printed)
      soopervisor serve --config server.yaml --once    one round, for cron or a first try
      soopervisor serve --config server.yaml token create --name dashboard
    """
    from .server import config as server_config
    from .server.loop import serve

    if ctx.invoked_subcommand is not None:
        if check or once:
            raise UsageError(f"--check and --once do not go with `serve {ctx.invoked_subcommand}`",
                             "soopervisor serve --config server.yaml --check (or --once), on its own")
        ctx.meta[_SERVE_CONFIG] = config_path
        return
    if check:
        try:
            cfg = server_config.load(config_path)
        except server_config.InvalidConfig as e:
            # every problem in one go: the file's, then the remotes of the repositories it describes well
            found = server_config.check(e.partial) if e.partial is not None else []
            if found:
                e.message += "\nand its repositories:\n" + "\n".join(p.format(None) for p in found)
            raise
        problems = server_config.check(cfg)
        for p in problems:
            click.secho(f"✗ {p.where}: {p.what}", fg="red", err=True)
            click.echo(f"  hint: {p.hint}", err=True)
        if problems:
            raise UsageError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} with the server's "
                             "configuration or its repositories", "fix them, then run --check again")
        n = len(cfg.repositories)
        click.secho(f"✓ the configuration is valid and its {n} repositor{'ies' if n != 1 else 'y'} answer", fg="green")
        return
    cfg = server_config.load(config_path)
    if once:
        stop = _ServeSignals()
        try:
            serve(cfg, once=True, stop=stop.event, say=lambda line: _say(line))
        finally:
            stop.restore()
        return
    from .server.app import serve_http

    stop = _ServeSignals(cancel_runs=True)  # the main thread serves HTTP: the runs are another thread's
    try:
        serve_http(cfg, host, port, stop=stop.event, say=lambda line: _say(line))
    finally:
        stop.restore()
    if stop.cancelled:
        raise Cancelled()


class _ServeSignals:
    """SIGTERM and SIGINT stop the loop after the job at hand (its run is cancelled by a second one).

    ``cancel_runs``: the second signal cancels this process's runs (a worker thread's) rather than
    raising in the main thread, which serves HTTP until the worker has recorded the cancelled run."""

    def __init__(self, cancel_runs: bool = False) -> None:
        import threading

        self.event = threading.Event()
        self.cancel_runs, self.cancelled = cancel_runs, False
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame) -> None:
        if self.event.is_set():
            if not self.cancel_runs:
                raise Cancelled()
            from .lifecycle import active_runs

            for active in active_runs():  # none: the job at hand had ended, the server is about to exit
                self.cancelled = True
                active.cancel("soopervisor serve was stopped")
            return
        self.event.set()
        _say("soopervisor serve: stopping after the job at hand (again to cancel it)", err=True)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# -- serve token: the API's bearer tokens ---------------------------------------------------------
def _token_config_option(f):
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
        envvar="SOOPERVISOR_SERVER_CONFIG", show_envvar=True,
        help="The server's configuration, for its database (the same as `soopervisor serve --config FILE "
             "token ...`). Default: the embedded configuration's database in the data folder.",
    )(f)


def _token_store(ctx: click.Context, config_path: str | None):
    """The tokens of the database the server's configuration names (this command's --config, else serve's)."""
    from .server import config as server_config
    from .server.tokens import TokenStore

    group = ctx.meta.get(_SERVE_CONFIG)
    if config_path and group and Path(config_path).absolute() != Path(group).absolute():
        raise UsageError(f"two configurations given: {group} and {config_path}",
                         "pass --config once, before or after `token`")
    return TokenStore(server_config.load(config_path or group).database)


def _utc_minute(epoch: float | None) -> str:
    import datetime

    if epoch is None:
        return "never"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _default_token_name() -> str:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError):  # no user name in a bare container
        return "unnamed"


@serve_cmd.group("token")
def serve_token() -> None:
    """Make, list and revoke the bearer tokens of the server's API.

    Every request to the API sends one (Authorization: Bearer TOKEN). A read
    token reads runs, logs, artifacts and status; a run token also queues runs
    of a served repository's pushed commits and stops or cancels them (what
    `soopervisor run --remote` needs); an admin token also pauses
    repositories, polls and retries jobs. The server keeps only each
    token's sha256: a token is shown once, when it is made, and a lost one is
    revoked and replaced, never recovered. The commands use the database of
    the server's configuration: pass the same --config as the server.

    \b
    Examples:
      soopervisor serve --config server.yaml token create --name dashboard
      soopervisor serve --config server.yaml token create alice --scope run
      soopervisor serve --config server.yaml token create --admin --name ops
      soopervisor serve --config server.yaml token list
      soopervisor serve --config server.yaml token revoke 3f9a0c1b2d4e
    """


@serve_token.command("create")
@click.argument("name_arg", metavar="[NAME]", required=False)
@click.option("--scope", type=click.Choice(["read", "run", "admin"]), default=None,
              help="read: runs, logs, artifacts, status. run: also queue runs of the served repositories' "
                   "commits and stop them (`soopervisor run --remote`). admin: everything. Default: read.")
@click.option("--admin", is_flag=True, help="The same as --scope admin: pause, poll now, cancel, retry, not only reading.")
@click.option("--name", metavar="NAME", default=None,
              help="Whom or what the token is for, shown by `token list` (or as the argument NAME). "
                   "Default: USER@HOST of this shell.")
@_token_config_option
@click.pass_context
def serve_token_create(ctx: click.Context, name_arg: str | None, scope: str | None, admin: bool, name: str | None,
                       config_path: str | None) -> None:
    """Make a token and print it, once: it cannot be shown again.

    The token alone goes to stdout (so a script can capture it), what it is to
    stderr. Store it where its user keeps secrets; revoke it when it leaks.

    \b
    Examples:
      soopervisor serve --config server.yaml token create --name dashboard
      soopervisor serve --config server.yaml token create alice --scope run
      soopervisor serve --config server.yaml token create --admin --name ops
      TOKEN=$(soopervisor serve --config server.yaml token create --name ci)
    """
    from .redact import CREDENTIALS

    if name_arg is not None and name is not None and name_arg != name:
        raise UsageError(f"two names given: {name_arg!r} and --name {name!r}", "give the name once")
    if admin and scope not in (None, "admin"):
        raise UsageError(f"--admin and --scope {scope} disagree", "give one of them: --scope read|run|admin")
    name = name if name is not None else name_arg
    store = _token_store(ctx, config_path)
    info, secret = store.create(name if name is not None else _default_token_name(),
                                "admin" if admin else (scope or "read"))
    _say(f"✓ {info.scope} token {info.id} ({info.name}) created in {store.database}", fg="green", err=True)
    _say("warning: this is the only time the token is shown: the server keeps only its hash. Store it "
         "now as a secret; never commit, paste or log it. Send it as `Authorization: Bearer TOKEN`.",
         fg="yellow", err=True)
    click.echo(secret)
    CREDENTIALS.add(secret)  # printed once, on purpose; masked in anything this process says later


@serve_token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON (never a secret).")
@_token_config_option
@click.pass_context
def serve_token_list(ctx: click.Context, as_json: bool, config_path: str | None) -> None:
    """The tokens, oldest first: id, scope, name, when made and last used (UTC).

    Never a token itself: only its id, which revoke takes. Last use is
    recorded to the minute.

    \b
    Examples:
      soopervisor serve --config server.yaml token list
      soopervisor serve --config server.yaml token list --json
    """
    tokens = _token_store(ctx, config_path).list()
    if as_json:
        click.echo(json.dumps([t.to_dict() for t in tokens], indent=2))
        return
    if not tokens:
        click.echo("no API tokens yet; `soopervisor serve token create` makes one")
        return
    width = max(len("NAME"), *(len(t.name) for t in tokens))
    click.echo(f"{'ID':<12}  {'SCOPE':<5}  {'NAME':<{width}}  {'CREATED (UTC)':<16}  LAST USED")
    for t in tokens:
        click.echo(f"{t.id:<12}  {t.scope:<5}  {t.name:<{width}}  {_utc_minute(t.created_at):<16}  "
                   f"{_utc_minute(t.last_used)}")


@serve_token.command("revoke")
@click.argument("token_id", metavar="ID")
@_token_config_option
@click.pass_context
def serve_token_revoke(ctx: click.Context, token_id: str, config_path: str | None) -> None:
    """Revoke a token by its id: requests sending it are refused from now on.

    \b
    Example:
      soopervisor serve --config server.yaml token revoke 3f9a0c1b2d4e
    """
    info = _token_store(ctx, config_path).revoke(token_id)
    click.echo(f"revoked {info.scope} token {info.id} ({info.name})")


# -- login ------------------------------------------------------------------------
LOGIN_SERVICES = ("gdrive", "dropbox", "onedrive", "box")


def _backend(name: str):
    from .storage import cloud_module

    return cloud_module(name)


@cli.command("login")
@click.argument("service", required=False, type=click.Choice(LOGIN_SERVICES))
@click.option("--status", is_flag=True, help="Show which services are signed in (never a token).")
@click.option("--ci", is_flag=True,
              help="Sign in anew for a CI machine: store nothing here, print the environment variables "
                   "CI needs (secrets) once, and the gh secret set commands to add them to a GitHub repository.")
def login_cmd(service: str | None, status: bool, ci: bool) -> None:
    """Sign in to a cloud storage service; the tokens go to the system keyring.

    Where no keyring exists, tokens go to a file only you can read (0600)
    under your config folder. In CI, pass them as environment variables
    instead (the how-to guide of each service says which): --ci makes a
    sign-in of its own for CI, so CI and this machine never spend each
    other's tokens.

    \b
    Examples:
      soopervisor login dropbox        a link to open, then paste the code
      soopervisor login onedrive       a device code to enter at microsoft.com/devicelogin
      soopervisor login box --ci       a sign-in for CI: prints its variables, stores nothing
      soopervisor login --status
    """
    if status:
        if ci:
            raise UsageError("--status and --ci do not go together", "soopervisor login --status")
        for name in LOGIN_SERVICES:
            try:
                line = _backend(name).describe()
            except SoopervisorError as e:
                line = e.message
            click.echo(f"{name:<9} {line}")
        return
    if service is None:
        raise UsageError("name the service to sign in to", f"soopervisor login {{{'|'.join(LOGIN_SERVICES)}}}"
                         + (" --ci" if ci else ""))
    def prompt(text: str) -> str:
        return click.prompt(text, hide_input="secret" in text.lower())  # a client secret is not echoed

    if ci:
        _login_for_ci(service, prompt)
        return
    where = _backend(service).login(echo=click.echo, prompt=prompt)
    click.secho(f"✓ signed in to {service}; tokens saved in {where}", fg="green")


def _login_for_ci(service: str, prompt) -> None:
    """``login SERVICE --ci``: the backend's ``login_for_ci``; its variables printed once, nothing stored."""
    from . import credentials
    from .github.storage_secrets import secrets_for

    try:
        login_for_ci = _backend(service).login_for_ci
    except AttributeError:
        raise UsageError(f"soopervisor login {service} --ci is not available for this service yet",
                         f"sign in with `soopervisor login {service}` and set the variables its how-to guide "
                         "names as CI secrets") from None
    values = login_for_ci(echo=click.echo, prompt=prompt)
    credentials.register(values)  # printed here once, on purpose; masked everywhere else
    known = [s.name for s in secrets_for(f"{service}://x")]
    names = sorted(values, key=lambda n: known.index(n) if n in known else len(known))
    click.echo("")
    click.secho("warning: these are secrets: put them in your CI's secret settings only; never commit, paste "
                "or log them. Nothing was stored on this machine.", fg="yellow")
    for name in names:
        click.echo(f"{name}={values[name]}")
    click.echo("\nTo add them to a GitHub repository with the GitHub CLI (each command asks for its value):")
    for name in names:
        click.echo(f"  gh secret set {name}")


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
from .github.cli import github  # the group lives beside the GitHub code

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
    """Console entry point: known errors become a message, a hint and an exit code.

    Every line printed here passes a redactor of this command's ``--secret``
    values and the known credentials: an error may quote anything.
    """

    def hide(text: str) -> str:
        # built when needed: credentials registered while the command ran count too
        return _secret_redactor(argv).redact(text)

    try:
        cli.main(args=argv, prog_name="soopervisor", standalone_mode=False)
    except click.exceptions.Exit as e:
        _end(hard=argv is None, code=e.exit_code)
    except SystemExit as e:  # a command's own exit code (sys.exit in a command)
        _end(hard=argv is None, code=e.code)
    except click.ClickException as e:
        e.message = hide(e.message)
        e.show()
        click.echo(f"more: {topic_url('usage-error')}", err=True)
        _end(hard=argv is None, code=e.exit_code)
    except InvalidProject as e:
        click.echo(hide(e.report.format()), err=True)
        _end(hard=argv is None, code=e.exit_code)
    except SoopervisorError as e:
        click.secho(f"error: {hide(e.message)}", fg="red", err=True)
        if e.hint:
            click.echo(f"hint: {hide(e.hint)}", err=True)
        click.echo(f"more: {e.docs}", err=True)
        _end(hard=argv is None, code=e.exit_code)
    except (KeyboardInterrupt, Cancelled, click.exceptions.Abort):  # click turns Ctrl-C into Abort
        click.echo("\ncancelled (Ctrl-C): nothing was left running; a run's log and set are kept", err=True)
        _end(hard=argv is None, code=130)
    except Exception as e:  # noqa: BLE001 - a bug of ours: a short message here, the traceback in a file
        crash = _write_crash_report(hide)
        click.secho(hide(f"error: internal error: {type(e).__name__}: {e}"), fg="red", err=True)
        click.echo(hide(f"hint: this is a bug in soopervisor; the details are in {crash}"), err=True)
        click.echo(f"more: {topic_url('internal-error')}", err=True)
        _end(hard=argv is None, code=1)
    _end(hard=argv is None, code=0)


def _secret_redactor(argv: list[str] | None = None):
    """A redactor for the values of this command line's --secret names and the known credentials.

    Values are read as bytes (one that is not UTF-8 is masked too); both
    ``--secret NAME`` and ``--secret=NAME`` count.
    """
    from .options import env_bytes
    from .redact import CREDENTIALS, Redactor

    args = sys.argv[1:] if argv is None else list(argv)
    names = [a.split("=", 1)[1] for a in args if a.startswith("--secret=")]
    names += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--secret"]
    values = [env_bytes(n) for n in names if n and "\0" not in n]
    return Redactor([*(v for v in values if v), *CREDENTIALS.secrets])


def _write_crash_report(hide=None) -> str:
    import traceback

    from . import config

    hide = hide or _secret_redactor().redact
    try:
        path = config.data_dir() / "crash.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hide(traceback.format_exc()), encoding="utf-8", errors="replace")
    except (OSError, SoopervisorError):  # SOOPERVISOR_HOME unusable: the short message must still reach the user
        return "(could not write a crash report)"
    return str(path)

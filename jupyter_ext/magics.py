"""``%soopervisor``: validate, run and browse artifacts from a notebook.

Loaded by ``%load_ext soopervisor``. The magic only parses and displays; the
``soopervisor`` API does the work. Errors users can fix (bad arguments, an
invalid project, no Docker) are shown as a message and a hint, never a
traceback.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

from .display import CommitsView, ErrorView, ReportView

USAGE = """\
%soopervisor validate [PATH] [--entry-point ENTRY]
%soopervisor run [PATH] [--sample | --full] [--storage URL] [--secret NAME]... [--image IMAGE] [--timeout SECONDS]
                 [--cpus N] [--memory SIZE] [--network NAME] [--entry-point ENTRY] [--force] [--executor NAME]
                 [--remote NAME]
%soopervisor attach RUN_ID
%soopervisor reproduce [COMMIT] [--run ID] [--mode sample|full] [--path PATH] [--project NAME] [--storage URL]
                       [--image IMAGE] [--secret NAME]... [--timeout SECONDS] [--executor NAME]
%soopervisor artifacts [COMMIT] [--run ID] [--mode sample|full] [--project NAME] [--storage URL]"""


class _BadArguments(Exception):
    pass


class _HelpShown(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _BadArguments(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr, end="")
        raise _HelpShown()


def _parser() -> _Parser:
    parser = _Parser(prog="%soopervisor", usage=USAGE.replace("%", "%%"), add_help=True)
    sub = parser.add_subparsers(dest="command", metavar="{validate,run,attach,reproduce,artifacts}", parser_class=_Parser,
                                prog="%soopervisor")

    v = sub.add_parser("validate", help="check the project without running anything")
    v.add_argument("path", nargs="?", default=".")
    v.add_argument("--entry-point", metavar="ENTRY", help="as ploomber's --entry-point (default: found as ploomber does)")

    r = sub.add_parser("run", help="run the pipeline in a fresh container; a live log below the cell")
    r.add_argument("path", nargs="?", default=".")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--sample", dest="sample", action="store_true", default=True, help="sample run (default)")
    mode.add_argument("--full", dest="sample", action="store_false", help="full run")
    r.add_argument("--storage", metavar="URL", help="where artifacts go")
    r.add_argument("--secret", dest="secrets", action="append", default=[], metavar="NAME",
                   help="pass the environment variable NAME into the container, redacted everywhere; repeatable")
    r.add_argument("--image", help="base image")
    r.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the run after this long")
    r.add_argument("--cpus", type=float, metavar="N", help="CPU limit, e.g. 2 or 0.5")
    r.add_argument("--memory", metavar="SIZE", help="memory limit, e.g. 512m or 2g")
    r.add_argument("--network", metavar="NAME", help="the pipeline stage's network: default, none, host, bridge or a name")
    r.add_argument("--entry-point", metavar="ENTRY", help="as ploomber's --entry-point (default: found as ploomber does)")
    r.add_argument("--force", action="store_true", default=None,
                   help="rebuild every task (default: SOOPERVISOR_FORCE, else only what changed since the last set)")
    r.add_argument("--remote", metavar="NAME",
                   help="run the pushed commit on a remote (a team's server, github); see `soopervisor remote list`")
    r.add_argument("--executor", metavar="NAME",
                   help="the engine to run on, by its name in the executors file (`soopervisor executors`)")

    t = sub.add_parser("attach", help="a run's live log and status by its id (a remote run after a kernel restart)")
    t.add_argument("run_id", metavar="RUN_ID")

    p = sub.add_parser("reproduce", help="run a commit again from its set's recorded lock; which products "
                                         "came out the same")
    p.add_argument("commit", nargs="?", default="latest", help="full SHA, unique prefix or 'latest' (the default)")
    p.add_argument("--run", metavar="ID", help="reproduce that run's set (default: the commit's newest succeeded one)")
    p.add_argument("--mode", choices=("sample", "full"), help="the commit's newest succeeded set of this mode")
    p.add_argument("--path", default=".", help="the project folder in the repository that holds the commit")
    p.add_argument("--project", metavar="NAME", help="project name (default: the project at --path)")
    p.add_argument("--storage", metavar="URL", help="where the sets are")
    p.add_argument("--image", help="base image (default: the one the original run asked for)")
    p.add_argument("--secret", dest="secrets", action="append", default=[], metavar="NAME",
                   help="pass the environment variable NAME into the container, redacted everywhere; repeatable")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the run after this long")
    p.add_argument("--executor", metavar="NAME", help="the engine to run on, by its name in the executors file")

    a = sub.add_parser("artifacts", help="stored commits and runs, or one commit's files")
    a.add_argument("commit", nargs="?", help="full SHA, unique prefix or 'latest': its newest succeeded set")
    a.add_argument("--run", metavar="ID", help="that run's set, whatever its status")
    a.add_argument("--mode", choices=("sample", "full"), help="the newest succeeded set of this mode")
    a.add_argument("--project", metavar="NAME", help="project name (default: the project in the working directory)")
    a.add_argument("--storage", metavar="URL", help="storage to read")
    return parser


def _show_error(error: Exception, action: str) -> None:
    from soopervisor.errors import InvalidProject

    if isinstance(error, InvalidProject):
        display(ReportView(error.report))
    display(ErrorView(error, action))


@magics_class
class SoopervisorMagics(Magics):
    #: the log widget of each run started here, by run id (the latest last)
    widgets: dict[str, Any]

    def __init__(self, shell: Any = None) -> None:
        super().__init__(shell)
        self.widgets = {}

    @line_magic
    def soopervisor(self, line: str) -> Any:
        """Validate, run and browse the artifacts of a ploomber project.

        Usage:
          %soopervisor validate [PATH] [--entry-point ENTRY]
          %soopervisor run [PATH] [--sample | --full] [--storage URL] [--secret NAME]...
                           [--image IMAGE] [--timeout SECONDS] [--cpus N] [--memory SIZE]
                           [--network NAME] [--entry-point ENTRY] [--force] [--executor NAME]
          %soopervisor run [PATH] --remote NAME [--sample | --full]
          %soopervisor attach RUN_ID
          %soopervisor reproduce [COMMIT] [--run ID] [--mode sample|full] [--path PATH]
                                 [--image IMAGE] [--secret NAME]... [--timeout SECONDS] [--executor NAME]
          %soopervisor artifacts [COMMIT] [--run ID] [--mode sample|full] [--project NAME] [--storage URL]

        Examples:
          %soopervisor validate                  problems of the project here, with hints
          run = %soopervisor run --sample        sample run; a live log with a Stop button
          %soopervisor run ../sales --full --secret DB_PASSWORD
          %soopervisor run --force               rebuild every task, not only what changed
          %soopervisor run --remote ci --full    the pushed commit on the team's server, followed here
          %soopervisor attach 0f3e9a1c2b4d       a run's log and status again (after a kernel restart)
          %soopervisor reproduce a1b2c3d         run it again from its recorded lock; the cell waits,
                                                 the log live, then says which products came out the same
          %soopervisor artifacts                 stored commits and recent runs
          %soopervisor artifacts a1b2c3d         the files of one commit's newest succeeded set
          %soopervisor artifacts a1b2c3d --run 0f3e9a1c2b4d   the set of one run (a failed one too)

        `run` returns at once with the Run (run.status, run.id); the widget
        follows it. In Python: soopervisor.get_artifacts("latest").load("output/data.csv").
        Variables expand as in any magic: %soopervisor run {project}
        """
        try:
            args = _parser().parse_args(shlex.split(line))
        except _HelpShown:
            return None
        except (_BadArguments, ValueError) as e:  # ValueError: unbalanced quotes
            print(f"%soopervisor: error: {e}\nusage:\n{USAGE}", file=sys.stderr)
            return None
        if args.command is None:
            print(f"usage:\n{USAGE}\n%soopervisor? shows examples", file=sys.stderr)
            return None
        from soopervisor.errors import SoopervisorError

        try:
            return getattr(self, f"_{args.command}")(args)
        except SoopervisorError as e:
            _show_error(e, {"run": "the run did not start", "reproduce": "nothing was reproduced"}.get(args.command, ""))
            return None

    def _validate(self, args: argparse.Namespace) -> ReportView:
        import soopervisor

        return ReportView(soopervisor.validate(args.path, entry_point=args.entry_point))

    def _run(self, args: argparse.Namespace) -> Any:
        import soopervisor

        from .widget import LogWidget

        widget = LogWidget()
        # the run thread calls widget.append for every redacted line; the magic returns now
        run = soopervisor.run(
            args.path, sample=args.sample, storage=args.storage, image=args.image,
            secrets=args.secrets, on_line=widget.append, wait=False, timeout=args.timeout,
            cpus=args.cpus, memory=args.memory, network=args.network, entry_point=args.entry_point,
            force=args.force, executor=args.executor, remote=args.remote,
        )
        widget.attach(run)
        self.widgets[run.id] = widget
        display(widget)
        return run

    def _attach(self, args: argparse.Namespace) -> Any:
        import soopervisor

        from .widget import LogWidget

        widget = LogWidget()
        run = soopervisor.attach(args.run_id, on_line=widget.append)
        widget.attach(run)
        self.widgets[run.id] = widget
        display(widget)
        return run

    def _reproduce(self, args: argparse.Namespace) -> Any:
        from soopervisor import reproduction

        from .widget import LogWidget

        widget = LogWidget()
        started = reproduction.start(args.commit, run=args.run, path=args.path, project=args.project,
                                     storage=args.storage, mode=args.mode, image=args.image, secrets=args.secrets,
                                     on_line=widget.append, executor=args.executor, timeout=args.timeout)
        run = started.active.run
        widget.attach(run)
        self.widgets[run.id] = widget
        display(widget)
        # the comparison needs the run's end: the cell waits for it, the log live above (an interrupt of
        # the kernel, or Stop, cancels the run, as Ctrl-C does in the terminal)
        return reproduction.finish(started, started.active.result(), args.storage)

    def _artifacts(self, args: argparse.Namespace) -> Any:
        import soopervisor
        from soopervisor.artifacts import get_artifacts, list_commits
        from soopervisor.project import project_name

        project = args.project or project_name(".")
        if args.commit or args.run or args.mode:
            return get_artifacts(args.commit or "latest", project=project, storage=args.storage,
                                 mode=args.mode, run=args.run)
        from soopervisor.storage import open_storage

        storage = open_storage(args.storage)
        return CommitsView(project, list_commits(project, storage), soopervisor.list_runs(project=project, limit=20),
                           storage.url)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext soopervisor`` (soopervisor delegates here)."""
    ipython.register_magics(SoopervisorMagics)

"""The pipeline stage's runner: ``ploomber build`` in-process, reporting each task as it goes.

Rendered into run.sh and started as ``python -c <this file> <ploomber build args>``.
It runs ploomber's own ``build`` command (same parser, same messages, same exit
codes as ``ploomber build``) after wrapping the serial executor's per-task build,
so each task reports itself as structured events instead of our scraping
ploomber's text.

An event is one line: ``::soopervisor-task::<nonce>::<compact JSON>``. The nonce
comes from ``SOOPERVISOR_TASK_EVENTS`` and is removed from the environment before
any pipeline code is imported, so a task (and a notebook kernel it starts) cannot
print a line the host accepts as an event. Events: ``plan`` (total known: the tasks to
build; ``up_to_date``: those ploomber skips as up to date),
``started``, ``finished`` (with ``products``: the task's file products as absolute
paths, when they can be told), ``failed`` (with ``error``, the exception line) and
``skipped`` (not run because an upstream task failed); each says when (``at``).

When the hooks cannot be installed (another ploomber version) or no nonce was
given, it says so and execs ``ploomber build`` as before. Standard library only:
it runs in the project's environment.
"""
import json
import os
import re
import sys
import time

PREFIX = "::soopervisor-task::"
NONCE_VARIABLE = "SOOPERVISOR_TASK_EVENTS"
#: how much of an exception line is kept
MAX_ERROR = 500
#: the products a finished event names at most, and the longest path it names (longer ones are
#: left out, never cut: a cut path names another file); soopervisor.progress checks the same bounds
MAX_PRODUCTS = 100
MAX_PATH = 500
#: the UTF-8 bytes of all the paths of one event at most: the line stays far below the host's
#: longest line (logstream.MAX_LINE, 64 KiB), past which it would not be read as an event
MAX_PRODUCT_BYTES = 16 * 1024
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$")


def _fallback(args, why):
    if why:
        print(f"soopervisor: task progress is not available ({why}); running ploomber build", flush=True)
    sys.stdout.flush()
    try:
        os.execvp("ploomber", ["ploomber", "build", *args])
    except OSError as e:
        print(f"soopervisor: cannot run ploomber build: {e}", flush=True)
        sys.exit(127)


def exception_line(exc):
    """The one line that says what a task raised: the root of the chain, as Python prints it."""
    seen, root = set(), exc
    while True:
        nxt = root.__cause__ or root.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(root))
        root = nxt
    ename, evalue = getattr(root, "ename", None), getattr(root, "evalue", None)
    if ename:  # papermill's PapermillExecutionError names the notebook's own exception
        return _trim(f"{ename}: {evalue}" if evalue else str(ename))
    text = str(root)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    remote = hasattr(root, "tb")  # multiprocessing's remote traceback: the subprocess's text in .tb
    if type(root).__name__ in ("TaskBuildError", "DAGBuildError") or remote or len(lines) > 1:
        # from a subprocess the chain is text: its last exception line is the cause
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line) and "TaskBuildError" not in line:
                return _trim(line)
    first = lines[0] if lines else ""
    return _trim(f"{type(root).__name__}: {first}" if first else type(root).__name__)


def _trim(text):
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def product_paths(product):
    """A task's file products as absolute paths (a MetaProduct's each); [] for any other product.

    Used for the manifest's ``task`` of each file. SQL tables and other non-file
    products are left out; anything unexpected (another ploomber, a product that
    cannot render its path) gives None: the event goes out without ``products``
    and the build is never affected.
    """
    try:
        from ploomber.products import File, MetaProduct

        out, todo, size = [], [product], 0
        while todo and len(out) < MAX_PRODUCTS:
            p = todo.pop(0)
            if isinstance(p, MetaProduct):
                todo[:0] = list(p)  # its products, in their order
            elif isinstance(p, File):
                # relative paths are relative to where ploomber writes them: the process's folder
                path = os.path.abspath(str(p))
                try:
                    n = len(path.encode("utf-8"))
                except UnicodeError:
                    continue  # bytes that are not UTF-8 (surrogate escapes) could not be printed
                if len(path) > MAX_PATH:
                    continue
                if size + n > MAX_PRODUCT_BYTES:
                    break
                out.append(path)
                size += n
        return out
    except Exception:  # noqa: BLE001 - naming products must never break the build
        return None


class Reporter:
    """Counts tasks and prints one marked line per event."""

    def __init__(self, nonce, out=None):
        self.nonce, self.out = nonce, out or sys.stdout
        self.total, self.done = 0, 0
        self.reported = set()  # tasks whose end was reported

    def emit(self, event, task=None, **extra):
        # "at": when it happened (Unix seconds), for timings and for measuring how fast views follow
        data = {"event": event, "done": self.done, "total": self.total, "at": round(time.time(), 3)}
        if task is not None:
            data["task"] = str(task)
        data.update(extra)
        line = PREFIX + self.nonce + "::" + json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        try:
            # tqdm.write clears the progress bars, prints and redraws them: the event
            # gets a line of its own instead of landing after a bar on the same line
            from tqdm import tqdm

            tqdm.write(line, file=self.out)
        except Exception:  # noqa: BLE001 - no tqdm: a plain line (the host finds markers mid-line too)
            self.out.write("\n" + line + "\n")
        self.out.flush()

    def plan(self, statuses):
        # "Skipped" before the build: ploomber found the task up to date (an incremental run)
        up_to_date = sum(1 for s in statuses if s == "Skipped")
        self.total = len(statuses) - up_to_date
        print(f"soopervisor: {up_to_date} of {len(statuses)} tasks up to date, {self.total} to build", flush=True)
        self.emit("plan", up_to_date=up_to_date)

    def started(self, name):
        self.emit("started", name)

    def ended(self, name, ok, error=None, product=None):
        if name in self.reported:
            return
        self.reported.add(name)
        self.done += 1
        if ok:
            paths = product_paths(product) if product is not None else None
            self.emit("finished", name, **({"products": paths} if paths is not None else {}))
        else:
            self.emit("failed", name, error=error or "")

    def skipped(self, name):
        if name in self.reported:
            return
        self.reported.add(name)
        self.emit("skipped", name)


def _product(task):
    try:
        return task.product
    except Exception:  # noqa: BLE001 - a task without a readable product: no products named
        return None


def install(reporter):
    """Wrap ploomber's executors; raises (ImportError, AttributeError) when this ploomber has no such hooks."""
    from ploomber.constants import TaskStatus
    from ploomber.executors import abc as executor_abc
    from ploomber.executors import serial
    from ploomber.tasks.abc import Task

    plan_call = executor_abc.Executor.__call__
    serial_builds = {name: getattr(serial, name) for name in ("build_in_subprocess", "build_in_current_process")}
    status_property = Task.exec_status
    if not isinstance(status_property, property) or status_property.fset is None:
        raise AttributeError("Task.exec_status is not a settable property")
    state = {"serial": False}

    def executor_call(self, dag, *args, **kwargs):
        state["serial"] = isinstance(self, serial.Serial)
        reporter.plan([dag[name].exec_status.name for name in dag])
        return plan_call(self, dag, *args, **kwargs)

    def wrap(build):
        def wrapped(task, build_kwargs, reports_all):
            reporter.started(task.name)
            try:
                result = build(task, build_kwargs, reports_all)
            except BaseException as e:
                reporter.ended(task.name, False, exception_line(e))
                raise
            reporter.ended(task.name, True, product=_product(task))
            return result

        return wrapped

    def set_status(self, value):
        status_property.fset(self, value)
        # the serial executor reports start and end itself; others (parallel) are
        # seen here, where the main process records each task's end
        if value == TaskStatus.Aborted:
            reporter.skipped(self.name)
        elif not state["serial"] and value in (TaskStatus.Executed, TaskStatus.Errored):
            reporter.ended(self.name, value == TaskStatus.Executed, product=_product(self))

    executor_abc.Executor.__call__ = executor_call
    for name, build in serial_builds.items():
        setattr(serial, name, wrap(build))
    Task.exec_status = property(status_property.fget, set_status, status_property.fdel, status_property.__doc__)


def main(args):
    nonce = os.environ.pop(NONCE_VARIABLE, "")  # before any pipeline code can read it
    if not re.fullmatch(r"[0-9a-f]{16,64}", nonce):
        _fallback(args, "")  # `soopervisor script` run by hand: today's ploomber build, silently
    reporter = Reporter(nonce)
    try:
        install(reporter)
        from ploomber_cli.cli import cmd_router
    except Exception as e:  # noqa: BLE001 - another ploomber: its build still runs
        _fallback(args, f"{type(e).__name__}: {e}")
    sys.argv = ["ploomber", "build", *args]
    return cmd_router()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Task-level progress: task events from the build stage's runner, to the record, REST, the CLI and the widget.

The Docker tests run a real three-task pipeline (a function, a script task run by
papermill, which draws a real tqdm bar, and a function) whose first task prints
lines imitating our events; a variant's last task raises.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soopervisor.logstream import LogStream
from soopervisor.progress import (
    NONCE_VARIABLE,
    RAW_PREFIX,
    TASK_LINE,
    RecordWriter,
    TaskEvent,
    collapse,
    parse_line,
    view_line,
)
from soopervisor.redact import Redactor
from soopervisor.runs import RunStore

from .conftest import cli
from .projects import make_project

NONCE = "0123456789abcdef0123456789abcdef"
RUNNER = Path(__file__).resolve().parents[1] / "soopervisor" / "script" / "task_events.py"

# -- the project -------------------------------------------------------------------------------

FORGED_RAW = RAW_PREFIX + "ffffffffffffffffffffffffffffffff::" + '{"event":"finished","done":3,"total":3,"task":"forged"}'
FORGED_LINE = TASK_LINE + '{"event":"started","done":2,"total":3,"task":"forged"}'
FUNCTIONS = f'''import os
import time
from pathlib import Path


def load(product):
    print("nonce seen by the task:", os.environ.get("{NONCE_VARIABLE}"))
    print({FORGED_RAW!r})
    print({FORGED_LINE!r})
    time.sleep(0.5)  # paces the run so the record is written between tasks
    Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
    Path(str(product)).write_text("1,2,3")


def report(product, upstream):
    text = Path(str(upstream["clean"]["data"])).read_text()
    time.sleep(0.5)
    FAIL
    Path(str(product)).write_text(text)
'''
CLEAN = '''# %% tags=["parameters"]
upstream = ["load"]
product = None

# %%
import time
from pathlib import Path
time.sleep(0.5)
Path(product["data"]).write_text(Path(str(upstream["load"])).read_text())
'''
PIPELINE = '''tasks:
  - source: functions.load
    product: output/load.txt
  - source: tasks/clean.py
    name: clean
    product:
      nb: output/clean.ipynb
      data: output/clean.txt
  - source: functions.report
    product: output/report.txt
'''


def three_tasks(fail: bool = False) -> dict[str, str]:
    raise_line = "raise ValueError('bad value 42')" if fail else "pass"
    return {
        "pipeline.yaml": PIPELINE,
        "env.yaml": "sample: false\n",
        "requirements.txt": "# the pipeline needs only ploomber\n",
        "functions.py": FUNCTIONS.replace("FAIL", raise_line),
        "tasks/clean.py": CLEAN,
    }


def read_log(path: str) -> str:
    """The log as written: carriage returns kept (read_text would turn them into newlines)."""
    return Path(path).read_bytes().decode("utf-8")


def events_in(log_text: str) -> list[TaskEvent]:
    return [e for e in (parse_line(line) for line in log_text.splitlines()) if e is not None]


# -- the log stream (no Docker) ----------------------------------------------------------------


def stream(secrets=(), nonce=NONCE):
    lines, events = [], []
    log = LogStream(Redactor(list(secrets)), [lines.append], nonce=nonce, on_task=events.append)
    return log, lines, events


def raw(event: dict, nonce: str = NONCE) -> bytes:
    return (RAW_PREFIX + nonce + "::" + json.dumps(event)).encode()


def test_an_event_with_the_runs_nonce_becomes_one_canonical_line_without_the_nonce():
    log, lines, events = stream()
    log.write(raw({"event": "started", "done": 1, "total": 3, "task": "clean"})[:30])  # cut anywhere
    log.write(raw({"event": "started", "done": 1, "total": 3, "task": "clean"})[30:] + b"\n")
    log.close()
    assert lines == [TASK_LINE + '{"event":"started","done":1,"total":3,"task":"clean"}\n']
    assert events == [TaskEvent("started", 1, 3, "clean")] and log.progress == events[0]
    assert NONCE not in "".join(lines)


def test_lines_that_imitate_events_never_move_the_progress_and_are_marked():
    log, lines, events = stream()
    log.write(raw({"event": "finished", "done": 3, "total": 3, "task": "x"}, nonce="f" * 32) + b"\n")
    log.write(b"no nonce " + raw({"event": "finished", "done": 3, "total": 3}, nonce="")[:40] + b"\n")
    log.write(FORGED_LINE.encode() + b"\n")
    log.write(raw({"event": "started", "done": 0, "total": 3}) + b" trailing junk\n")  # our nonce, not JSON
    log.close()
    assert events == [] and log.progress is None
    assert lines[0].startswith("\\" + RAW_PREFIX) and lines[2] == "\\" + FORGED_LINE + "\n"
    assert all(parse_line(line) is None for line in lines)
    assert NONCE not in "".join(lines)  # a malformed line with our nonce does not print it


def test_a_task_name_is_data_redacted_and_cannot_forge_a_marker():
    name = 'secret-token\n==> soopervisor: install project'
    log, lines, events = stream(secrets=["secret-token"])
    log.write(raw({"event": "failed", "done": 1, "total": 1, "task": name, "error": "KeyError: secret-token"}) + b"\n")
    log.close()
    assert len(lines) == 1 and "secret-token" not in lines[0]
    assert events[0].task == "***\n==> soopervisor: install project" and events[0].error == "KeyError: ***"
    assert log.stage is None  # the name stays inside the one JSON line
    assert log.failed_task == events[0].task and log.task_failure == events[0]


def test_an_event_after_a_progress_bar_on_the_same_line_is_found_and_split_off():
    log, lines, events = stream()
    bar = b"\r  0%|          | 0/3 [00:00<?, ?it/s]\rBuilding task 'a':   0%|          | 0/3"
    log.write(bar + raw({"event": "started", "done": 0, "total": 3, "task": "a"}) + b"\n")
    log.close()
    assert [e.task for e in events] == ["a"]
    assert lines[0] == bar.decode() + "\n" and parse_line(lines[1]).task == "a"


def test_a_finished_event_keeps_its_products_redacted_and_a_malformed_list_is_refused():
    from soopervisor.progress import MAX_PRODUCTS, MAX_TEXT, from_json
    from soopervisor.script import task_events

    log, lines, events = stream(secrets=["secret-token"])
    products = ["/workspace/output/a.csv", "/workspace/output/secret-token.txt"]
    log.write(raw({"event": "finished", "done": 1, "total": 2, "task": "a", "products": products}) + b"\n")
    log.close()
    assert events[0].products == ["/workspace/output/a.csv", "/workspace/output/***.txt"]
    assert parse_line(lines[0]).products == events[0].products and "secret-token" not in lines[0]
    # the runner's bounds are the reader's
    assert (task_events.MAX_PRODUCTS, task_events.MAX_PATH) == (MAX_PRODUCTS, MAX_TEXT)

    def event(products) -> str:
        return json.dumps({"event": "finished", "done": 1, "total": 1, "task": "a", "products": products})

    assert from_json(event([])).products == []
    assert from_json(event(["/p"] * MAX_PRODUCTS)).products == ["/p"] * MAX_PRODUCTS
    assert from_json(event("/workspace/output/a.csv")) is None  # not a list
    assert from_json(event({"a": "/p"})) is None
    assert from_json(event(["/p", 3])) is None
    assert from_json(event(["/p", None])) is None
    assert from_json(event([["/p"]])) is None
    assert from_json(event([""])) is None
    assert from_json(event(["/p\u0000x"])) is None
    assert from_json(event(["/" + "x" * MAX_TEXT])) is None  # longer than the runner ever writes
    assert from_json(event(["/p"] * (MAX_PRODUCTS + 1))) is None
    # products belong to a finished event only: elsewhere they are dropped
    started = from_json(json.dumps({"event": "started", "done": 0, "total": 1, "task": "a", "products": ["/p"]}))
    assert started is not None and started.products is None
    assert "products" not in TaskEvent("finished", 1, 1, "a").to_json()


def test_the_runner_names_file_products_and_never_fails_on_others(monkeypatch, tmp_path):
    """``product_paths`` against stand-ins of ploomber's File and MetaProduct (ploomber runs in the container)."""
    import types

    from soopervisor.script import task_events

    class File:
        def __init__(self, path):
            self.path = path

        def __str__(self):
            return self.path

    class MetaProduct:
        def __init__(self, products):
            self.products = products

        def __iter__(self):
            return iter(self.products)

    class SQLTable:
        def __str__(self):
            return "schema.table"

    class Broken(File):
        def __str__(self):
            raise RuntimeError("cannot render")

    fake = types.ModuleType("ploomber.products")
    fake.File, fake.MetaProduct = File, MetaProduct
    monkeypatch.setitem(sys.modules, "ploomber", types.ModuleType("ploomber"))
    monkeypatch.setitem(sys.modules, "ploomber.products", fake)
    monkeypatch.chdir(tmp_path)
    paths = task_events.product_paths
    assert paths(File("/workspace/out/a.csv")) == ["/workspace/out/a.csv"]
    assert paths(File("out/b.csv")) == [str(tmp_path / "out" / "b.csv")]  # relative: where ploomber writes it
    assert paths(MetaProduct([File("/w/a"), SQLTable(), MetaProduct([File("/w/b")])])) == ["/w/a", "/w/b"]
    assert paths(SQLTable()) == []
    assert paths(MetaProduct([File("/w/a"), Broken("/w/x")])) is None  # any error: no products at all
    assert paths(File("/" + "x" * task_events.MAX_PATH)) == []  # too long to name: left out, never cut
    assert len(paths(MetaProduct([File(f"/w/{i}") for i in range(300)]))) == task_events.MAX_PRODUCTS
    # not UTF-8 (a surrogate escape): left out, the others named; many long names: cut by bytes
    assert paths(MetaProduct([File("/w/\udcff"), File("/w/b")])) == ["/w/b"]
    long = [File("/w/" + "é" * 240 + str(i)) for i in range(100)]
    named = paths(MetaProduct(long))
    assert 0 < len(named) < 100 and sum(len(p.encode()) for p in named) <= task_events.MAX_PRODUCT_BYTES

    out = io.StringIO()
    reporter = task_events.Reporter("0" * 32, out=out)
    reporter.total = 3
    reporter.ended("a", True, product=MetaProduct([File("/w/a"), SQLTable()]))
    reporter.ended("b", True, product=Broken("/w/b"))
    reporter.ended("c", False, "ValueError: x", product=File("/w/c"))
    found = [from_json_line(line) for line in out.getvalue().splitlines() if line.startswith(RAW_PREFIX)]
    assert [(e.task, e.products) for e in found] == [("a", ["/w/a"]), ("b", None), ("c", None)]


def from_json_line(line: str) -> TaskEvent:
    from soopervisor.progress import from_json

    return from_json(line.split("::", 3)[-1])


def test_without_a_nonce_nothing_is_an_event():
    log, lines, events = stream(nonce=None)
    log.write(raw({"event": "started", "done": 0, "total": 3}) + b"\n")
    log.close()
    assert events == [] and lines[0].startswith("\\")


def test_collapse_keeps_the_last_redraw():
    assert collapse("\rExecuting:  33%|███\rExecuting: 100%|██████████\n") == "Executing: 100%|██████████\n"
    assert collapse("done\r\n") == "done\n"
    assert collapse("\rbar 10%\r          \r") == "bar 10%"
    assert collapse("plain\n") == "plain\n"


def test_view_lines_hide_the_plan_and_intermediate_ends():
    assert view_line(TaskEvent("plan", 0, 3)) is None
    assert view_line(TaskEvent("finished", 1, 3, "a")) is None
    assert view_line(TaskEvent("started", 1, 3, "b")) == "--> soopervisor: task 2/3 b"
    assert view_line(TaskEvent("finished", 3, 3, "c")) == "--> soopervisor: 3/3 tasks done"
    assert view_line(TaskEvent("failed", 2, 3, "c", "ValueError: x")) == "--> soopervisor: task c failed (2/3): ValueError: x"


def test_the_record_writer_coalesces_a_burst_into_the_last_state():
    writes = []
    writer = RecordWriter(lambda **changes: writes.append(changes), per_second=0.001)  # one write, then waits
    for done in range(1, 101):
        writer.push(tasks_done=done, tasks_total=100)
    assert writes == [{"tasks_done": 1, "tasks_total": 100}]  # the first at once, the rest held
    writer.flush()
    assert writes[-1] == {"tasks_done": 100, "tasks_total": 100} and len(writes) == 2


def test_the_runner_falls_back_to_ploomber_build_when_it_cannot_hook(tmp_path):
    """This Python has no ploomber: the runner says so and execs `ploomber build` with the same arguments."""
    fake = tmp_path / "bin" / "ploomber"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "fake ploomber: $*"\nexit 3\n')
    fake.chmod(0o755)
    env = {**os.environ, NONCE_VARIABLE: NONCE, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-c", RUNNER.read_text(), "--entry-point", "pipeline.yaml", "--force"],
                          env=env, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 3  # ploomber's own exit code
    assert "soopervisor: task progress is not available (ModuleNotFoundError" in proc.stdout
    assert "fake ploomber: build --entry-point pipeline.yaml --force" in proc.stdout


def test_the_runner_without_a_nonce_runs_ploomber_build_silently(tmp_path):
    fake = tmp_path / "bin" / "ploomber"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "fake ploomber: $*"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != NONCE_VARIABLE}
    env["PATH"] = f"{fake.parent}:{env['PATH']}"
    proc = subprocess.run([sys.executable, "-c", RUNNER.read_text(), "--force"], env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0 and proc.stdout == "fake ploomber: build --force\n"


def test_the_runner_names_the_root_exception():
    sys.path.insert(0, str(RUNNER.parent))
    try:
        import task_events
    finally:
        sys.path.pop(0)

    try:
        try:
            raise ValueError("bad value\nsecond line")
        except ValueError as e:
            raise RuntimeError("Error building task 'x'") from e
    except RuntimeError as e:
        assert task_events.exception_line(e) == "ValueError: bad value"  # its first line

    class TaskBuildError(Exception):
        pass

    text = 'Traceback (most recent call last):\n  File "f.py"\nValueError: bad value 42\n\nTaskBuildError: Error building task "r"'
    assert task_events.exception_line(TaskBuildError(text)) == "ValueError: bad value 42"


# -- real runs -----------------------------------------------------------------------------------


class Snapshots(RunStore):
    """The real run store, remembering every progress write while the run was running."""

    def __init__(self) -> None:
        super().__init__()
        self.progress: list[dict] = []

    def update_if(self, run_id, expect, **changes):
        if "tasks_done" in changes:
            self.progress.append(dict(changes))
        return super().update_if(run_id, expect, **changes)


@pytest.mark.docker
def test_events_reach_the_record_rest_the_widget_and_never_the_forgeries(tmp_path, engine, home):
    from soopervisor_jupyter.widget import LogWidget

    from soopervisor.api.handlers import run_json
    from soopervisor.service import RunOptions, RunService

    from .test_api_homes import ReadOnly, ReadOnlySocket, fetch
    from .test_api_homes import home as api_home

    project = make_project(tmp_path, three_tasks())
    store = Snapshots()
    widget = LogWidget()
    shown: list[str] = []
    original = widget._set_status

    def remember(status):  # every status line the widget model shows
        original(status)
        if widget.progress_text and (not shown or shown[-1] != widget.progress_text):
            shown.append(widget.progress_text)

    widget._set_status = remember

    async def follow() -> list[dict]:
        """The REST run JSON, read while the run goes, over real HTTP."""
        seen = []
        async with api_home(ReadOnly, ReadOnlySocket) as url:
            service = RunService(store=store)
            active = service.start(RunOptions(path=str(project), sample=False, on_line=widget.append))
            widget.attach(active.run)
            while True:
                r = await fetch(f"{url}/runs/{active.run.id}")
                body = json.loads(r.body)
                seen.append(body)
                if body["status"] not in ("queued", "running"):
                    return seen
                await asyncio.sleep(0.05)

    seen = asyncio.run(follow())
    run = RunStore().list()[0]
    assert run.status == "succeeded", run.error
    log = read_log(run.log_path)

    # in order, with done/total, from the runner: the forged lines changed nothing
    events = events_in(log)
    assert [(e.event, e.task, e.done, e.total) for e in events] == [
        ("plan", None, 0, 3),
        ("started", "load", 0, 3), ("finished", "load", 1, 3),
        ("started", "clean", 1, 3), ("finished", "clean", 2, 3),
        ("started", "report", 2, 3), ("finished", "report", 3, 3),
    ]
    assert "nonce seen by the task: None" in log  # the runner removed it before the tasks ran
    assert "\\" + FORGED_RAW in log and "\\" + FORGED_LINE in log
    assert "Executing: 100%" in log and "\r" in log  # the log keeps papermill's real tqdm redraws

    # the record: written while running, in order, never the forged task
    assert (run.task, run.tasks_done, run.tasks_total) == ("report", 3, 3)
    dones = [s["tasks_done"] for s in store.progress]
    assert dones == sorted(dones) and dones[-1] == 3 and len(set(dones)) >= 3
    assert "forged" not in {s.get("task") for s in store.progress}

    # REST: the same fields, seen moving while the run was running
    final = seen[-1]
    assert (final["task"], final["tasks_done"], final["tasks_total"], final["task_error"]) == ("report", 3, 3, None)
    running = [(b["task"], b["tasks_done"]) for b in seen if b["status"] == "running" and b["tasks_total"] == 3]
    assert len(set(running)) >= 2 and all(t != "forged" for t, _ in running)
    assert run_json(run)["tasks_total"] == 3

    # the widget's model: the current task and n/total, the event lines as progress lines,
    # the progress bars in their last state
    assert widget.wait(60)
    assert shown[-1] == "3/3 tasks done" and "task 1/3 load" in shown and "forged" not in " ".join(shown)
    assert "soopervisor-progress" in widget.status.value
    text = widget.text
    assert "--> soopervisor: task 2/3 clean\n" in text and "--> soopervisor: 3/3 tasks done\n" in text
    assert [line for line in text.split("\n") if "\r" in line] == [] and "Executing: 100%" in text
    assert not [line for line in text.splitlines() if parse_line(line)]  # no event as JSON


@pytest.mark.docker
def test_a_failing_task_reaches_the_record_the_banner_and_the_cli(tmp_path, engine, home):
    from soopervisor_jupyter.widget import failure_html

    from soopervisor.api.handlers import run_json
    from soopervisor.failure import summary

    project = make_project(tmp_path, three_tasks(fail=True))
    proc = cli("run", str(project), "--full", check=1)
    run = RunStore().list()[0]
    assert run.status == "failed" and run.exit_code == 1
    assert (run.failed_task, run.task, run.task_error) == ("report", "report", "ValueError: bad value 42")
    assert (run.tasks_done, run.tasks_total) == (3, 3)
    assert run_json(run)["task_error"] == "ValueError: bad value 42"

    # the CLI (not a terminal): a plain line per task, then the failure
    out = proc.stdout
    for line in ("soopervisor: task 1/3 load", "soopervisor: task 2/3 clean", "soopervisor: task 3/3 report",
                 "soopervisor: task report failed (3/3): ValueError: bad value 42"):
        assert line + "\n" in out, line
    assert out.index("task 1/3 load") < out.index("task 2/3 clean") < out.index("task 3/3 report")
    # events shown as progress lines (the forged one as the task printed it), bars in their last state
    assert not [line for line in out.splitlines() if parse_line(line)] and "\r" not in out

    # the banner: the failed task and its exception line, the exit code once
    banner = next(line for line in proc.stderr.splitlines() if line.startswith("✗ run"))
    assert banner == f"✗ {summary(run)}"
    assert "at task 'report': ValueError: bad value 42 (" in banner and banner.count("exit code 1") == 1
    shown = failure_html(run)
    assert "at task <b>report</b>" in shown and "ValueError: bad value 42" in shown
    assert shown.count("exit code 1") == 1


@pytest.mark.docker
def test_on_a_terminal_the_progress_line_is_redrawn_in_place(tmp_path, engine, home):
    """`soopervisor run` on a real pseudo-terminal: one task line redrawn, bars in their last state."""
    import pty

    project = make_project(tmp_path, three_tasks())
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project), "--full"],
                            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "200"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(600) == 0
    out = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")  # the tty's own newlines
    assert "\r\x1b[Ktask 1/3 load" in out and "\r\x1b[Ktask 2/3 clean" in out and "\r\x1b[Ktask 3/3 report" in out
    assert "soopervisor: 3/3 tasks done\n" in out and not [line for line in out.splitlines() if parse_line(line)]
    # progress bars in their last state: no carriage return but our own redraws
    assert "Executing: 100%" in out and "\r" not in out.replace("\r\x1b[K", "")


@pytest.mark.docker
def test_the_sidebar_shows_the_task_and_n_of_total_and_the_bars_last_state(tmp_path, engine, base_image, home):
    """Real JupyterLab and Chromium: the log view's progress element follows the events; event lines are
    shown as progress lines, progress bars as their last redraw, the forged lines as the task printed them."""
    playwright = pytest.importorskip("playwright.sync_api")
    from .lab_browser import JupyterLab, chromium, open_panel

    root = tmp_path / "root"
    make_project(root, three_tasks(fail=True))  # root/proj
    env = {"SOOPERVISOR_HOME": str(home), "SOOPERVISOR_IMAGE": base_image}
    with JupyterLab(root, env=env, log=tmp_path / "jupyterlab.log") as lab, \
            playwright.sync_playwright() as p, chromium(p) as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.set_default_timeout(60_000)
        open_panel(page, lab, "proj")
        page.locator('[data-testid="sv-validation-ok"]').wait_for()
        # every state the progress element goes through, as the page sees it
        page.evaluate("""() => {
          window.__states = [];
          new MutationObserver(() => {
            const el = document.querySelector('[data-testid=sv-log-progress]');
            const text = el && !el.hidden ? el.textContent.trim() : null;
            if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
          }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
        }""")
        page.locator('[data-testid="sv-run-full"]').click()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=sv-run-detail]')?.dataset.status === 'failed'", timeout=300_000)
        progress = page.locator('[data-testid="sv-log-progress"]')
        progress.locator("progress").wait_for()
        page.wait_for_function("() => document.querySelector('[data-testid=sv-log-progress]')?.dataset.event === 'failed'")
        assert progress.get_attribute("data-done") == "3" and progress.get_attribute("data-total") == "3"
        assert progress.inner_text().strip() == "task report failed (3/3): ValueError: bad value 42"
        states = page.evaluate("() => window.__states")
        started = [s for s in states if s.startswith("task ") and "/3 " in s and "failed" not in s]
        assert started == ["task 1/3 load", "task 2/3 clean", "task 3/3 report"], states
        texts = page.locator('[data-testid="sv-log"] .sv-log-line').all_inner_texts()
        assert "--> soopervisor: task 2/3 clean" in texts
        assert not [t for t in texts if parse_line(t)]  # no event shown as JSON
        assert "\\" + FORGED_LINE in texts  # what the task printed, marked, never an event
        assert any(t.startswith("Executing: 100%") for t in texts) and not any("\r" in t for t in texts)

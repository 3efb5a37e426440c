"""%soopervisor through a real IPython shell, the log widget, and Artifacts in a notebook."""
from __future__ import annotations

import html
import re
import sys
import threading
import time

import pytest
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output
from soopervisor_jupyter.display import CommitsView, ReportView
from soopervisor_jupyter.widget import CHUNK, MAX_LINES, LogWidget

import soopervisor
from soopervisor.artifacts import write_manifest
from soopervisor.runs import Run
from soopervisor.storage import LocalStorage

from .projects import function_task, git, make_project

PNG = bytes.fromhex(  # a 1x1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db40000000049454e44ae426082"
)


@pytest.fixture(scope="module")
def shell():
    ip = start_ipython()
    ip.run_line_magic("load_ext", "soopervisor")
    # a notebook front end asks for HTML and widgets too
    ip.display_formatter.active_types = list(ip.display_formatter.formatters)
    return ip


def run_cell(shell, code: str):
    with capture_output() as captured:
        result = shell.run_cell(code)
    assert result.error_in_exec is None and result.error_before_exec is None, result
    return result, captured


def shown(captured) -> str:
    """Every displayed output (all mime types) and the printed text, as one string."""
    parts = [captured.stdout, captured.stderr]
    for out in captured.outputs:
        parts += [v if isinstance(v, str) else repr(v) for v in out.data.values()]
    return "\n".join(parts)


def magics(shell):
    return shell.magics_manager.registry["SoopervisorMagics"]


# -- help and arguments -----------------------------------------------------------


def test_load_ext_registers_the_magic_with_help(shell):
    assert "soopervisor" in shell.magics_manager.magics["line"]
    _, captured = run_cell(shell, "%soopervisor?")
    text = captured.stdout + shown(captured)
    assert "Examples" in text and "%soopervisor run --sample" in text and "%soopervisor artifacts" in text


@pytest.mark.parametrize(
    "line, message",
    [
        ("frobnicate", "invalid choice: 'frobnicate'"),
        ("run --bogus", "unrecognized arguments: --bogus"),
        ("run --sample --full", "not allowed with argument"),
        ("run --timeout soon", "invalid float value: 'soon'"),
        ("run 'unclosed", "No closing quotation"),
        ("reproduce --mode half", "invalid choice: 'half'"),
    ],
)
def test_bad_arguments_give_one_line_and_usage(shell, line, message):
    result, captured = run_cell(shell, f"%soopervisor {line}")
    first, *rest = captured.stderr.splitlines()
    assert first.startswith("%soopervisor: error:") and message in first
    assert "usage:" in rest[0] and any(r.startswith("%soopervisor run [PATH]") for r in rest)
    assert "Traceback" not in shown(captured)
    assert result.result is None


def test_no_subcommand_shows_usage(shell):
    _, captured = run_cell(shell, "%soopervisor")
    assert "usage:" in captured.stderr and "%soopervisor validate" in captured.stderr


# -- validate ------------------------------------------------------------------------


def test_validate_valid_project(shell, tmp_path):
    project = make_project(tmp_path)
    result, _ = run_cell(shell, f"%soopervisor validate {project}")
    view = result.result
    assert isinstance(view, ReportView) and view.ok
    sha = git(project, "rev-parse", "HEAD").strip()
    page = view._repr_html_()
    assert "project &#x27;proj&#x27; is valid" in page and sha[:7] in page
    assert repr(view) == view.report.format()


def test_validate_in_a_folder_that_is_not_a_project(shell, tmp_path, monkeypatch):
    folder = tmp_path / "notes"
    folder.mkdir()
    monkeypatch.chdir(folder)
    result, _ = run_cell(shell, "%soopervisor validate")
    view = result.result
    assert not view.ok
    page = view._repr_html_()
    rows = page.split("<tbody>")[1].split("<tr>")[1:]
    assert len(rows) == len(view.problems)
    for problem in view.problems:
        row = next(r for r in rows if html.escape(problem.what, quote=True) in r)
        assert html.escape(problem.hint, quote=True) in row and problem.severity in row
    assert any("not inside a git repository" in p.what for p in view.problems)
    assert "hint: " in repr(view)  # the text/plain fallback is the CLI's report


def test_run_in_a_folder_that_is_not_a_project_shows_problems_and_hint(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, captured = run_cell(shell, "%soopervisor run")
    assert result.result is None
    text = shown(captured)
    assert "not inside a git repository" in text and "<table" in text
    assert "the project is not valid" in text and "hint:" in text
    assert "Traceback" not in text


def test_run_without_engine_says_so(shell, tmp_path, monkeypatch):
    project = make_project(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    result, captured = run_cell(shell, f"%soopervisor run {project}")
    text = shown(captured)
    assert result.result is None
    assert "cannot reach the Docker engine" in text and "hint:" in text and "Traceback" not in text


def test_run_with_missing_secret_is_a_usage_error(shell, tmp_path, monkeypatch):
    project = make_project(tmp_path)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    _, captured = run_cell(shell, f"%soopervisor run {project} --secret NOT_SET_ANYWHERE")
    text = shown(captured)
    assert "NOT_SET_ANYWHERE" in text and "hint:" in text and "Traceback" not in text


def test_run_options_are_checked_before_anything_runs(shell, tmp_path, monkeypatch):
    project = make_project(tmp_path)
    for option, said in (("--network 'no such'", "network"), ("--memory lots", "memory"),
                         ("--cpus nan", "cpus"), ("--timeout inf", "timeout")):
        result, captured = run_cell(shell, f"%soopervisor run {project} {option}")
        text = shown(captured)
        assert result.result is None and said in text and "hint:" in text and "Traceback" not in text, text
    assert soopervisor.list_runs() == []


def test_reproduce_of_a_set_without_a_lock_says_so_and_runs_nothing(shell, tmp_path, monkeypatch):
    from .sets import store_set

    project = make_project(tmp_path)
    commit = git(project, "rev-parse", "HEAD").strip()
    store_set("proj", commit, {"output/a.txt": "a"}, mode="full", environment={"image_id": "x", "packages": None})
    monkeypatch.chdir(project)
    result, captured = run_cell(shell, f"%soopervisor reproduce {commit[:7]}")
    text = shown(captured)
    assert result.result is None and "did not record its environment" in text and "nothing was reproduced" in text
    assert "soopervisor run --force" in text and "Traceback" not in text
    assert soopervisor.list_runs() == []


def test_validate_and_run_take_an_entry_point(shell, tmp_path):
    project = make_project(tmp_path)
    result, _ = run_cell(shell, f"%soopervisor validate {project} --entry-point pipeline.yaml")
    assert result.result.report.ok and result.result.report.project.entry_point == "pipeline.yaml"
    result, _ = run_cell(shell, f"%soopervisor validate {project} --entry-point nowhere.yaml")
    assert not result.result.report.ok and any("nowhere.yaml" in p.what for p in result.result.report.problems)


# -- artifacts (local storage, no Docker) ---------------------------------------------

SHA = "0123abcd" * 5
FILES = {
    "output/data.csv": b"x,y\n1,2\n3,4\n",
    "output/summary.json": b'{"north": 1.5}',
    "output/notes.txt": "caf\u00e9\n".encode(),
    "output/plot.png": PNG,
    "output/page.html": b"<p>hi</p>",
    "output/blob.bin": b"\x00\x01",
    "output/a <b>.txt": b"odd name",
}


@pytest.fixture
def stored(tmp_path) -> LocalStorage:
    import pandas as pd

    src = tmp_path / "set"
    (src / "files" / "output").mkdir(parents=True)
    pd.DataFrame({"x": [1, 2]}).to_parquet(src / "files/output/table.parquet")
    for name, data in FILES.items():
        (src / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        (src / "files" / name).write_bytes(data)
    write_manifest(src, project="sales", commit=SHA, run_id="r1", mode="sample", status="succeeded",
                   finished_at="2024-05-01T10:00:00Z")
    storage = LocalStorage(tmp_path / "store")
    storage.put_set("sales", SHA, "r1", src)
    return storage


def test_artifacts_display_has_name_size_and_link(stored):
    arts = soopervisor.get_artifacts(SHA[:8], project="sales", storage=stored.url)
    page = arts._repr_html_()
    link = f"/soopervisor/api/projects/sales/commits/{SHA}/files/output/data.csv?run=r1"  # this very set
    assert f"href='{link}'" in page and "download='data.csv'" in page
    assert "output/data.csv" in page and "12 B" in page and "8 files" in page
    assert "output/a &lt;b&gt;.txt" in page and "files/output/a%20%3Cb%3E.txt?run=r1" in page  # escaped, quoted
    assert "arts.load(" in page


def test_artifacts_load_by_extension(stored):
    import pandas as pd
    from IPython.display import HTML, Image

    arts = soopervisor.get_artifacts("latest", project="sales", storage=stored.url)
    df = arts.load("output/data.csv")
    assert isinstance(df, pd.DataFrame) and df["y"].tolist() == [2, 4]
    assert arts.load("output/summary.json") == {"north": 1.5}
    assert arts.load("output/notes.txt") == "caf\u00e9\n"
    image = arts.load("output/plot.png")
    assert isinstance(image, Image) and image.data == PNG
    assert isinstance(arts.load("output/page.html"), HTML)
    assert arts.load("output/blob.bin") == b"\x00\x01"
    assert arts.load("output/table.parquet")["x"].tolist() == [1, 2]


def test_artifacts_load_without_pandas(stored, monkeypatch):
    from soopervisor.errors import UsageError

    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    arts = soopervisor.get_artifacts("latest", project="sales", storage=stored.url)
    assert arts.load("output/data.csv") == "x,y\n1,2\n3,4\n"  # the text, still useful
    with pytest.raises(UsageError) as e:
        arts.load("output/table.parquet")
    assert "pandas" in e.value.message and "pip install pandas pyarrow" in e.value.hint


def test_artifacts_magic_lists_commits_and_shows_one(shell, stored):
    result, _ = run_cell(shell, f"%soopervisor artifacts --project sales --storage {stored.url}")
    view = result.result
    assert isinstance(view, CommitsView)
    assert SHA[:7] in repr(view) and "succeeded" in repr(view) and "r1" in repr(view)
    assert f"<code>{SHA[:7]}</code>" in view._repr_html_() and "<code>r1</code>" in view._repr_html_()
    result, _ = run_cell(shell, f"%soopervisor artifacts {SHA[:6]} --project sales --storage {stored.url}")
    assert result.result.commit == SHA and result.result.run_id == "r1"
    result, _ = run_cell(shell, f"%soopervisor artifacts {SHA[:6]} --run r1 --project sales --storage {stored.url}")
    assert result.result.run_id == "r1"


def test_artifacts_magic_shows_a_damaged_set_as_one_line(shell, stored):
    (stored.root / "sales" / SHA / "r1" / "manifest.json").write_text('{"files": 5}')
    result, _ = run_cell(shell, f"%soopervisor artifacts --project sales --storage {stored.url}")
    text = repr(result.result)
    assert "damaged" in text and SHA[:7] in text
    assert "damaged" in result.result._repr_html_()


def test_artifacts_magic_outside_a_project_says_what_to_do(shell, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, captured = run_cell(shell, "%soopervisor artifacts")
    text = shown(captured)
    assert "not in a git repository" in text and "--project NAME" in text and "Traceback" not in text


# -- the widget alone (a run object driven by hand) ----------------------------------


def widget_strings(widget) -> list[str]:
    """Every string in the state of the widget and all its descendants."""
    found, todo = [], [widget]
    while todo:
        wid = todo.pop()
        for value in wid.get_state().values():
            if isinstance(value, str):
                found.append(value)
        todo += list(getattr(wid, "children", ()))
    return found


def log_text(widget) -> str:
    """The log as the front end shows it: the chunks' HTML without tags, unescaped."""
    return html.unescape(re.sub(r"<[^>]*>", "", "".join(c.value for c in widget.log_box.children)))


def fake_run() -> Run:
    return Run(project="p", project_path="/p", commit="c" * 40, dirty=False, mode="sample",
               status="running", started_at="2024-01-01T00:00:00.000Z")


def test_widget_shows_a_line_of_a_quiet_stream_at_once():
    widget = LogWidget(fake_run())
    widget.append("==> soopervisor: setup env\n")
    assert log_text(widget) == "==> soopervisor: setup env\n"  # no batching delay when idle
    assert widget.stage == "setup env" and "stage: setup env" in widget.status.value


def test_widget_keeps_the_last_lines_escaped_and_shows_the_failure():
    run = fake_run()
    widget = LogWidget(run)

    def producer():  # lines come from the run's thread
        widget.append("==> soopervisor: build pipeline\n")
        for i in range(5000):
            widget.append(f"line {i} <b>\n")
        widget.append("!!! soopervisor: build pipeline failed with exit code 1\n")

    t = threading.Thread(target=producer)
    t.start()
    t.join()
    run.status, run.failed_task, run.error = "failed", "clean", "the pipeline failed with exit code 1"
    run.finished_at = "2099-01-01T00:00:00.000Z"
    assert widget.wait(10)
    text = log_text(widget)
    assert len(text.splitlines()) <= MAX_LINES + CHUNK and "line 4999 <b>" in text
    assert "line 0 <b>" not in text  # only the last lines stay
    values = [c.value for c in widget.log_box.children]
    assert "line 4999 &lt;b&gt;" in values[-1] + values[-2] and "<b>" not in "".join(values)  # escaped in the model
    assert len(widget.log_box.children) <= MAX_LINES // CHUNK
    assert widget.stage == "build pipeline" and widget.failed_stage == "build pipeline"
    assert "failed" in widget.status.value and widget.stop_button.disabled
    assert "color:#c62828" in widget.outcome.value and "clean" in widget.outcome.value
    tail = "".join(v.split("soopervisor-failed-tail")[1] for v in values[-2:])
    assert "line 4999" in tail and "build pipeline failed" in tail and "line 4970" not in tail


def test_widget_batches_a_flood_of_lines(monkeypatch):
    run = fake_run()
    widget = LogWidget(run)
    chunk_sets = []
    orig = LogWidget._render

    def counting(self, tail=0):
        chunk_sets.append(1)
        orig(self, tail)

    monkeypatch.setattr(LogWidget, "_render", counting)
    start = time.monotonic()
    for i in range(3000):
        widget.append(f"{i}\n")
    elapsed = time.monotonic() - start
    run.status = "succeeded"
    assert widget.wait(10)
    # 3000 lines in well under a second: a handful of renders, not 3000
    assert len(chunk_sets) < 3000 // 10 + 20, (len(chunk_sets), elapsed)
    assert "2999" in log_text(widget)


# -- real runs (Docker) -------------------------------------------------------------

LIVE_TASK = (
    "import json, time\n"
    "s = os.environ['MY_TOKEN']\n"
    "print('token:', s, flush=True)\n"
    "for i in range(30):\n"
    "    print('tick', i, flush=True)\n"
    "    time.sleep(0.1)\n"
    "out = Path(str(product)).parent\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "(out / 'table.csv').write_text('a,b\\n1,2\\n')\n"
    "(out / 'stats.json').write_text(json.dumps({'rows': 1}))\n"
    f"(out / 'pixel.png').write_bytes(bytes.fromhex({PNG.hex()!r}))\n"
)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.docker
def test_run_magic_streams_into_the_widget_and_never_shows_the_secret(shell, tmp_path, engine, monkeypatch):
    secret = "s3cr3t-Wert-42"
    monkeypatch.setenv("MY_TOKEN", secret)
    project = make_project(tmp_path, function_task(LIVE_TASK))
    sha = git(project, "rev-parse", "HEAD").strip()

    started = time.monotonic()
    result, captured = run_cell(shell, f"run = %soopervisor run {project} --sample --secret MY_TOKEN")
    took = time.monotonic() - started
    run = result.result if result.result is not None else shell.user_ns["run"]
    assert run.status == "running" and took < 15, took  # returned while the run goes on
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in captured.outputs)
    widget = magics(shell).widgets[run.id]

    run_cell(shell, "answer = 6 * 7")  # the kernel takes more cells meanwhile
    assert shell.user_ns["answer"] == 42 and run.status == "running"

    wait_for(lambda: "tick 3" in log_text(widget), 300, "lines in the widget")
    assert run.status == "running"  # they arrived while it was still going
    assert widget.wait(300), "the widget did not notice the end"

    assert run.status == "succeeded", run.error
    assert widget.elapsed > 0 and "succeeded" in widget.status.value
    # the last stage is remembered, but the ended run's status line no longer shows it, nor Stop
    assert widget.stage == "collect artifacts" and "stage:" not in widget.status.value
    assert widget.stop_button.disabled and widget.stop_button.layout.display == "none" and widget.outcome.value == ""
    text = log_text(widget)
    assert "token: ***" in text and "tick 29" in text
    for value in widget_strings(widget):
        assert secret not in value and html.escape(secret) not in value

    monkeypatch.chdir(project)
    listing, _ = run_cell(shell, "%soopervisor artifacts")
    assert sha[:7] in repr(listing.result) and run.id in repr(listing.result)

    arts = soopervisor.get_artifacts(sha[:7])
    page = arts._repr_html_()
    assert "output/table.csv" in page and "download" in page and f"/commits/{sha}/files/output/table.csv" in page
    assert arts.load("output/table.csv")["b"].tolist() == [2]
    assert arts.load("output/stats.json") == {"rows": 1}
    assert arts.load("output/emitted.txt") == "done"
    assert arts.load("output/pixel.png").data == PNG


@pytest.mark.docker
def test_reproduce_magic_shows_the_log_live_then_the_comparison(shell, tmp_path, engine, monkeypatch):
    project = make_project(tmp_path, function_task("print('made it', flush=True)"))
    first = soopervisor.run(str(project), force=True)
    assert first.ok, first.error
    monkeypatch.chdir(project)

    result, captured = run_cell(shell, f"%soopervisor reproduce {first.commit[:7]}")
    repro = result.result
    assert repro.run.ok and repro.same and "output/emitted.txt" in repro.identical, repr(repro)
    widget = magics(shell).widgets[repro.run.id]  # the log was shown while the cell waited
    assert any("application/vnd.jupyter.widget-view+json" in o.data for o in captured.outputs)
    assert widget.wait(60) and "succeeded" in widget.status.value
    assert "made it" in log_text(widget) and "reproducing run " + first.id in log_text(widget)
    assert "reproduced identically" in repro._repr_html_()


@pytest.mark.docker
def test_stop_button_cancels_the_run(shell, tmp_path, engine):
    project = make_project(tmp_path, function_task("import time\nprint('sleeping', flush=True)\ntime.sleep(600)"))
    result, _ = run_cell(shell, f"%soopervisor run {project}")
    run = result.result
    widget = magics(shell).widgets[run.id]
    wait_for(lambda: "sleeping" in log_text(widget), 300, "the task to start")

    widget.stop_button.click()

    assert widget.wait(60), "the run did not end after Stop"
    assert run.status == "cancelled"
    assert "cancelled" in widget.status.value and widget.stop_button.disabled
    assert widget.stop_button.layout.display == "none"
    assert not engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})


def test_widget_takes_the_stage_from_the_run_when_a_secret_masks_the_marker():
    run = fake_run()
    widget = LogWidget(run)
    run.stage = "build pipeline"  # the service records it from the raw log
    widget.append("==> ***opervisor: build pipeline\n")  # what a secret `so` leaves of the marker
    assert widget.stage == "build pipeline" and "stage: build pipeline" in widget.status.value

"""The run view (js/src/runview.ts) in a real JupyterLab and Chromium, on real Docker runs.

A run started from the sidebar is opened in the main area with the ⤢ of the
sidebar's run header, while it runs: the log search counts matches as lines
arrive, the stages and tasks tables fill from the log, and once the run ends
its own set's files are listed and open in Lab. A failing run shows its banner
once, with the failed task and its exception line. Both themes pass axe-core;
the screenshots go to the documentation.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import soopervisor
from tests.lab_browser import (
    JupyterLab,
    axe_violations,
    docker_image,
    load_lab,
    new_page,
    open_panel,
    screenshot,
    start_lab,
    switch_theme,
    tid,
)
from tests.projects import VALID, function_task, make_project

playwright = pytest.importorskip("playwright.sync_api")

RUN_TIMEOUT_MS = 300_000  # the first environment build takes ~70 s
OPEN_RUN = "soopervisor:open-run"
TASK_LINE = "--> soopervisor: task "

FUNCTIONS = '''\
import time
from pathlib import Path


def write(product, text):
    Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
    Path(str(product)).write_text(text)


def first(product):
    for i in range(3):
        print(f"find me: apple {i}", flush=True)
    time.sleep(6)  # the run view shows this task running, its duration counting
    write(product, "one")


def second(product):
    print("FIND ME once more", flush=True)
    write(product, "two")
'''

TWO_TASKS = {
    "pipeline.yaml": (
        "tasks:\n"
        "  - source: functions.first\n    product: output/first.txt\n"
        "  - source: functions.second\n    product: output/second.txt\n"
    ),
    "env.yaml": "sample: false\n",
    "requirements.txt": VALID["requirements.txt"],
    "functions.py": FUNCTIONS,
}


@pytest.fixture
def lab(request, server_root: Path, home: Path):
    # the page reaches the app (window.jupyterapp) to run commands with arguments
    with start_lab(server_root, home, expose_app=True, image=docker_image(request)) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with new_page() as page:
        yield page


def start_and_open_view(page, lab: JupyterLab) -> tuple[str, object]:
    """Start a sample run of proj from the sidebar and open its run view with the ⤢ button."""
    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()
    page.locator(tid("sv-run-sample")).click()
    row = page.locator(f'{tid("sv-run-row")}.sv-run--selected')
    row.wait_for()
    run_id = row.get_attribute("data-run-id")
    page.locator(f'{tid("sv-run-detail")} {tid("sv-run-open-view")}').click()
    view = page.locator(f'{tid("sv-runview")}[data-run-id="{run_id}"]')
    view.wait_for(state="visible")
    return run_id, view


def wait_view_status(page, run_id: str, status: str) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=sv-runview][data-run-id=\"{run_id}\"]')?.dataset.status === '{status}'",
        timeout=RUN_TIMEOUT_MS,
    )


def shown_lines(log_path: str) -> list[str]:
    """The lines as the log view shows them: a line's last redraw; task events apart."""
    lines = Path(log_path).read_bytes().decode().split("\n")[:-1]
    return [line.rsplit("\r", 1)[-1] for line in lines if not line.startswith(TASK_LINE)]


@pytest.mark.docker
def test_run_view_of_a_real_run(engine, lab: JupyterLab, page, server_root: Path):
    project = make_project(server_root, TWO_TASKS)
    commit = soopervisor.validate(project).project.commit
    run_id, view = start_and_open_view(page, lab)

    # a main-area tab of its own, titled by the run
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"run {run_id[:6]}")
    tab.wait_for()
    assert "soopervisor" in (tab.get_attribute("title") or "")

    # the search is typed at once, before the matching lines exist: matches are counted as they arrive
    search = view.locator(tid("sv-log-search"))
    search.fill("find me")
    count = view.locator(tid("sv-log-search-count"))

    # live while it runs: the task being built, its three lines found (the second task's line
    # comes 6 s later), the duration counting without a reload
    view.locator(f'{tid("sv-rv-task")}[data-name="first"][data-state="running"]').wait_for(timeout=RUN_TIMEOUT_MS)
    page.wait_for_function("el => el.dataset.count === '3'", arg=count.element_handle())
    before = view.locator(f'{tid("sv-run-header")} .sv-duration').inner_text()
    page.wait_for_function(
        """([view, before]) => view.dataset.status === 'running'
             && view.querySelector('[data-testid=sv-run-header] .sv-duration').textContent !== before""",
        arg=[view.element_handle(), before],
    )
    page.wait_for_function("el => el.dataset.count === '4'", arg=count.element_handle(), timeout=RUN_TIMEOUT_MS)
    wait_view_status(page, run_id, "succeeded")
    view.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()

    # "n of m", case-insensitive, every match marked; Enter / Shift+Enter / the buttons move
    expected = sum(len(re.findall("find me", line, re.IGNORECASE)) for line in shown_lines(soopervisor.get_run(run_id).log_path))
    assert expected == 4
    assert count.get_attribute("data-count") == str(expected)
    assert count.inner_text() == f"1 of {expected}"
    marks = view.locator("mark.sv-rv-mark")
    assert marks.count() == expected
    assert sorted({t.lower() for t in marks.all_inner_texts()}) == ["find me"]
    search.press("Enter")
    assert count.inner_text() == f"2 of {expected}"
    assert view.locator("mark.sv-rv-mark--current").inner_text() == "find me"
    search.press("Shift+Enter")
    search.press("Shift+Enter")
    assert count.inner_text() == f"{expected} of {expected}"
    assert view.locator("mark.sv-rv-mark--current").inner_text() == "FIND ME"
    view.locator(tid("sv-log-search-next")).click()
    assert count.inner_text() == f"1 of {expected}"
    search.fill("no such text anywhere")
    assert count.inner_text() == "No matches"
    assert marks.count() == 0
    search.fill("APPLE 1")
    assert count.inner_text() == "1 of 1"

    # tasks and stages from the log
    tasks = view.locator(tid("sv-rv-task"))
    assert [tasks.nth(i).get_attribute("data-name") for i in range(tasks.count())] == ["first", "second"]
    assert {tasks.nth(i).get_attribute("data-state") for i in range(tasks.count())} == {"done"}
    assert view.locator(tid("sv-rv-task-count")).inner_text() == "2 of 2 tasks done"
    build = view.locator(f'{tid("sv-rv-stage")}[data-name="build pipeline"]')
    assert build.get_attribute("data-state") == "done"

    # the header: the final state, no Stop; the timings say it finished
    header = view.locator(tid("sv-run-header"))
    assert "succeeded" in header.inner_text()
    assert view.locator(tid("sv-rv-stop")).count() == 0
    assert view.locator(tid("sv-failure")).count() == 0
    status = view.locator(tid("sv-rv-status")).inner_text()
    assert commit in status and "still running" not in status

    # the run's own set: its products listed, ploomber's .metadata hidden until asked for
    files = view.locator(tid("sv-rv-file"))
    for name in ("output/first.txt", "output/second.txt"):
        view.locator(f'{tid("sv-rv-file")}[data-name="{name}"]').wait_for(state="visible")
    stored = {f.name: f.sha256 for f in soopervisor.get_artifacts(commit, project="proj", run=run_id).files}
    assert files.count() == len(stored)
    first = view.locator(f'{tid("sv-rv-file")}[data-name="output/first.txt"]')
    assert first.locator("code").get_attribute("title") == stored["output/first.txt"]
    metadata = [n for n in stored if n.endswith(".metadata")]
    assert metadata
    hidden = view.locator(f'{tid("sv-rv-file")}[data-name="{metadata[0]}"]')
    assert hidden.is_hidden()
    view.locator(tid("sv-rv-hidden-toggle")).click()
    hidden.wait_for(state="visible")

    # the view again from the sidebar: the open tab comes forward, no second one
    page.locator(f'{tid("sv-run-detail")} {tid("sv-run-open-view")}').click()
    assert page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"run {run_id[:6]}").count() == 1

    # both themes: axe-core finds nothing serious; the documentation's screenshots
    search.fill("find me")
    selector = f"#soopervisor-run-{run_id}"
    violations = axe_violations(page, selector)
    assert not violations, f"light: {json.dumps(violations, indent=1)}"
    screenshot(page, "run-view-light.png", panel_only=False)
    switch_theme(page, "JupyterLab Dark")
    violations = axe_violations(page, selector)
    assert not violations, f"dark: {json.dumps(violations, indent=1)}"
    screenshot(page, "run-view-dark.png", panel_only=False)
    switch_theme(page, "JupyterLab Light")

    # a file of the set opens in Lab's viewer, read from the set
    first.locator(tid("sv-rv-file-open")).click()
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="first.txt").wait_for()
    page.locator(".jp-FileEditor .cm-content", has_text="one").wait_for()

    # the commit view (soopervisor:open-commit) on this run's commit, from the run view's tab
    tab.click()
    view.locator(tid("sv-rv-open-commit")).click()
    page.locator(f'{tid("sv-commit-view")} {tid("sv-cv-commit")}', has_text=commit).wait_for()

    # after a reload JupyterLab's layout restorer opens the view again (the tracker's command)
    load_lab(page)
    page.locator(f'{tid("sv-runview")}[data-run-id="{run_id}"]').wait_for(state="attached", timeout=60_000)
    page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"run {run_id[:6]}").wait_for()


@pytest.mark.docker
def test_failed_run_shows_the_banner_once(engine, lab: JupyterLab, page, server_root: Path):
    make_project(server_root, function_task("print('about to fail', flush=True)\nraise RuntimeError('boom')"))
    run_id, view = start_and_open_view(page, lab)
    wait_view_status(page, run_id, "failed")

    banner = view.locator(tid("sv-failure"))
    banner.wait_for()
    assert banner.count() == 1
    text = banner.inner_text()
    assert "'emit'" in text and "RuntimeError: boom" in text
    assert len(re.findall("exit code", text)) <= 1, text
    assert banner.locator(tid("sv-docs")).get_attribute("href").endswith("#pipeline-failed")

    task = view.locator(f'{tid("sv-rv-task")}[data-name="emit"]')
    assert task.get_attribute("data-state") == "failed"
    assert "RuntimeError: boom" in task.inner_text()
    stage = view.locator(f'{tid("sv-rv-stage")}[data-name="build pipeline"]')
    assert stage.get_attribute("data-state").startswith("failed")
    # the failing tail is marked in this view's log too
    view.locator(".sv-log-line--fail").last.wait_for()
    assert view.locator(".sv-log-line--fail").last.inner_text().startswith("!!! soopervisor:")

    # the stage's name takes the log to its line
    stage.locator("button").click()
    line = view.locator(".sv-rv-line--shown")
    line.wait_for()
    assert line.inner_text().startswith("==> soopervisor: build pipeline")


def test_unknown_run_says_so(lab: JupyterLab, page):
    load_lab(page, lab.lab_url())
    page.wait_for_function(f"() => window.jupyterapp?.commands.hasCommand('{OPEN_RUN}')", timeout=60_000)
    page.evaluate(f"() => {{ window.jupyterapp.commands.execute('{OPEN_RUN}', {{ runId: 'nosuchrun123' }}); }}")
    error = page.locator(f'{tid("sv-runview")}[data-run-id="nosuchrun123"] {tid("sv-rv-error")}')
    error.wait_for()
    assert "nosuchrun123" in error.inner_text()
    assert "Traceback" not in error.inner_text()
    # nothing else of a run that does not exist: no empty tables, no log trying to connect
    page.locator(f'{tid("sv-runview")}[data-run-id="nosuchrun123"] .sv-rv-grid').wait_for(state="hidden")
    # without a run id: a notification says what is missing, no view opens
    page.evaluate(f"() => {{ window.jupyterapp.commands.execute('{OPEN_RUN}', {{}}); }}")
    page.locator(".Toastify__toast", has_text="runId").wait_for()
    assert page.locator(tid("sv-runview")).count() == 1

"""The sidebar follows JupyterLab's conventions, in a real JupyterLab and Chromium.

Commands in the palette, "Sample run" in the file browser's context menu of
``pipeline.yaml``, a notebook toolbar button, the status bar item, the
notification at a run's end, settings from the Settings Editor's schema, the
keyboard, both themes (contrast measured, axe-core's audit). Runs are real
(Docker) where a test needs one.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

import soopervisor
from tests.lab_browser import (
    PLUGIN,
    REPO,
    JupyterLab,
    axe_violations,
    contrast,
    docker_image,
    load_lab,
    new_page,
    open_panel,
    palette,
    put_settings,
    run_from_palette,
    screenshot,
    start_lab,
    switch_theme,
    tid,
    widen_sidebar,
)
from tests.projects import function_task, make_project

playwright = pytest.importorskip("playwright.sync_api")

ARTIFACTS = REPO / "test-artifacts"
RUN_TIMEOUT_MS = 300_000  # the first environment build takes ~70 s
SECRET = "SV_LAB_SECRET"


@pytest.fixture
def lab(request, server_root: Path, home: Path):
    with start_lab(server_root, home, env={SECRET: "not-printed"}, image=docker_image(request)) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with new_page() as page:
        yield page


def wait_status(page, status: str) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=sv-run-detail]')?.dataset.status === '{status}'",
        timeout=RUN_TIMEOUT_MS,
    )


def is_run_start(request) -> bool:
    """POST /runs (ServerConnection adds a cache-busting query string)."""
    return request.method == "POST" and urlparse(request.url).path.endswith("/soopervisor/api/runs")


def dir_item(page, name: str):
    return page.locator(".jp-DirListing-item", has=page.locator(".jp-DirListing-itemText", has_text=name)).first


def test_palette_commands_exist_and_run(lab: JupyterLab, page, server_root: Path):
    make_project(server_root)
    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()

    items = palette(page, "soopervisor")
    labels = [t.strip() for t in items.locator(".lm-CommandPalette-itemLabel").all_inner_texts()]
    for wanted in (
        "soopervisor: Sample run",
        "soopervisor: Full run",
        "soopervisor: Validate the project",
        "soopervisor: Open the runs panel",
        "soopervisor: Run (sample, the default mode)",
    ):
        assert wanted in labels, labels
    page.keyboard.press("Escape")

    # close the panel (its tab toggles it), then open it again from the palette
    page.locator('.jp-SideBar [data-id="soopervisor-panel"]').click()
    page.locator(tid("sv-panel")).wait_for(state="hidden")
    run_from_palette(page, "soopervisor: Open the runs panel")
    page.locator(tid("sv-panel")).wait_for(state="visible")

    # validate: the panel checks the folder again (a problem introduced meanwhile shows)
    (server_root / "proj" / "pipeline.yaml").unlink()
    run_from_palette(page, "soopervisor: Validate the project")
    page.locator(f'{tid("sv-validation")}[data-state="invalid"]').wait_for()
    assert page.locator(tid("sv-run-sample")).is_disabled()

    # a run command on an invalid project says why instead of starting anything
    run_from_palette(page, "soopervisor: Sample run")
    page.locator(".Toastify__toast", has_text="cannot run").wait_for()


def test_settings_schema_and_default_mode(lab: JupyterLab, page, server_root: Path):
    make_project(server_root)
    # the Settings Editor shows the schema's fields, with the defaults
    schema = json.loads(lab.get(f"lab/api/settings/{PLUGIN}"))["schema"]
    props = schema["properties"]
    assert {"image", "storage", "defaultMode", "secrets", "hiddenPatterns"} <= set(props)
    assert props["hiddenPatterns"]["default"] == ["*.metadata"]
    assert props["defaultMode"]["default"] == "sample"

    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()
    assert page.locator(tid("sv-run-sample")).get_attribute("data-default") == "true"

    put_settings(lab, {"defaultMode": "full"})
    open_panel(page, lab, "proj")
    page.locator(f'{tid("sv-actions")}[data-default-mode="full"]').wait_for()
    assert page.locator(tid("sv-run-full")).get_attribute("data-default") == "true"
    assert page.locator(tid("sv-run-sample")).get_attribute("data-default") == "false"
    labels = palette(page, "soopervisor: Run").locator(".lm-CommandPalette-itemLabel").all_inner_texts()
    assert "soopervisor: Run (full, the default mode)" in [t.strip() for t in labels]


@pytest.mark.docker
def test_context_menu_run_status_bar_notification_and_artifacts(engine, lab: JupyterLab, page, server_root: Path):
    # the task waits a little so that the status bar can be seen counting it
    project = make_project(server_root, function_task("print('working', flush=True)\nimport time\ntime.sleep(15)"))
    commit = soopervisor.validate(project).project.commit
    page.clock.install()  # time flows as usual; the end of the test jumps ahead
    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()

    # the context menu of a file that is not pipeline.yaml has no run item
    page.locator('.jp-SideBar [data-id="filebrowser"]').click()
    dir_item(page, "functions.py").click(button="right")
    page.locator(".lm-Menu").first.wait_for()
    assert not page.locator(".lm-Menu-itemLabel", has_text="Sample run (soopervisor)").is_visible()
    page.keyboard.press("Escape")

    with page.expect_request(is_run_start) as req:
        dir_item(page, "pipeline.yaml").click(button="right")
        page.locator(".lm-Menu-itemLabel", has_text="Sample run (soopervisor)").click()
    body = req.value.post_data_json
    assert body["mode"] == "sample" and body["path"] == "proj" and body["secrets"] == []

    row = page.locator(f'{tid("sv-run-row")}.sv-run--selected')
    row.wait_for()
    run_id = row.get_attribute("data-run-id")
    status = page.locator(f'{tid("sv-status")}[data-count="1"]')
    status.wait_for(timeout=RUN_TIMEOUT_MS)
    assert "1 run going" in status.inner_text()

    # the status bar item opens the panel
    page.locator('.jp-SideBar [data-id="soopervisor-panel"]').click()
    page.locator(tid("sv-panel")).wait_for(state="hidden")
    status.click()
    page.locator(tid("sv-panel")).wait_for(state="visible")

    # the end: a notification with "Show log"; the status bar item goes away
    toast = page.locator(".Toastify__toast", has_text="succeeded")
    toast.wait_for(timeout=RUN_TIMEOUT_MS)
    assert "sample run of proj" in toast.inner_text()
    screenshot(page, "lab-notification.png", panel_only=False)  # docs/tutorials/jupyterlab.md shows it
    assert page.locator(tid("sv-status")).is_hidden()
    page.locator(tid("sv-run-row")).first.click()  # another selection, which "Show log" must undo…
    page.locator('.jp-SideBar [data-id="soopervisor-panel"]').click()
    page.locator(tid("sv-panel")).wait_for(state="hidden")
    # from the notification list (the toast closes by itself after a while): the status bar's bell
    page.locator(".jp-Notification-Status").click()
    item = page.locator(".jp-Notification-List-Item", has_text="succeeded")
    item.get_by_role("button", name="Show log").click()
    page.locator(tid("sv-panel")).wait_for(state="visible")
    page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-run-id="{run_id}"]').wait_for()
    page.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()

    # artifacts: ploomber's .metadata files are hidden by default, and said to be
    commit_row = page.locator(f'{tid("sv-commit-row")}[data-commit="{commit}"]')
    commit_row.wait_for(timeout=30_000)
    commit_row.locator(tid("sv-commit-toggle")).click()
    files = commit_row.locator(tid("sv-commit-file"))
    files.first.wait_for()
    stored = [f.name for f in soopervisor.get_artifacts(commit, project="proj").files]
    metadata = [n for n in stored if n.endswith(".metadata")]
    assert metadata, f"ploomber wrote no .metadata file: {stored}"
    names = [files.nth(i).get_attribute("data-name") for i in range(files.count())]
    assert not [n for n in names if n.endswith(".metadata")] and "output/emitted.txt" in names
    assert f"{len(metadata)} hidden" in commit_row.locator(tid("sv-hidden-files")).inner_text()

    # a file Lab can open opens in Lab's viewer, read from the set (nothing is written in the tree)
    before = sorted(p.relative_to(server_root) for p in server_root.rglob("*") if ".git" not in p.parts)
    commit_row.locator(f'{tid("sv-commit-file")}[data-name="output/emitted.txt"] {tid("sv-file-open")}').click()
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="emitted.txt")
    tab.wait_for()
    page.locator(".jp-FileEditor .cm-content", has_text="done").wait_for()
    assert sorted(p.relative_to(server_root) for p in server_root.rglob("*") if ".git" not in p.parts) == before
    assert soopervisor.validate(project).project.dirty is False

    # no hidden patterns: the .metadata files are listed
    put_settings(lab, {"hiddenPatterns": []})
    open_panel(page, lab, "proj")
    commit_row.locator(tid("sv-commit-toggle")).click()
    for name in metadata:
        commit_row.locator(f'{tid("sv-commit-file")}[data-name="{name}"]').wait_for()
    assert commit_row.locator(tid("sv-hidden-files")).count() == 0

    # relative times stay true: "started now" becomes "started 5m ago" without a reload
    sub = page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"] .sv-run-sub [data-when]')
    assert sub.inner_text() == "started now"
    page.clock.fast_forward("05:00")
    page.wait_for_function(
        "el => el.textContent === 'started 5m ago'", arg=sub.element_handle(), timeout=60_000
    )


@pytest.mark.docker
def test_toolbar_default_mode_keyboard_themes_and_axe(engine, lab: JupyterLab, page, server_root: Path):
    notebook = {
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": ["# explore"]}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    failing = function_task("print('about to fail')\nprint('x' * 300)\nraise RuntimeError('boom')")
    # Jupyter writes the notebook's checkpoints next to it: ignored, they leave the project clean
    files = {**failing, "notebooks/explore.ipynb": json.dumps(notebook), ".gitignore": ".ipynb_checkpoints/\n"}
    make_project(server_root, files)
    put_settings(lab, {"defaultMode": "full", "secrets": [SECRET]})

    # the notebook's toolbar button: the default mode (full), the project enclosing the notebook
    load_lab(page, lab.lab_url("proj/notebooks/explore.ipynb"))
    button = page.locator(f".jp-NotebookPanel-toolbar {tid('sv-notebook-run')}")
    button.wait_for(timeout=60_000)
    with page.expect_request(is_run_start) as req:
        button.click()
    body = req.value.post_data_json
    assert body["mode"] == "full" and body["path"] == "proj/notebooks" and body["secrets"] == [SECRET]
    page.locator(tid("sv-panel")).wait_for(state="visible")
    wait_status(page, "failed")
    first = page.locator(f'{tid("sv-run-row")}.sv-run--selected').get_attribute("data-run-id")
    assert soopervisor.get_run(first).mode == "full"

    # a second run, from the panel's keyboard: Tab to the Sample button, Enter
    page.locator(".sv-header button").focus()
    for _ in range(10):
        if page.evaluate("() => document.activeElement?.dataset.testid") == "sv-run-sample":
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.locator(f'{tid("sv-run-row")}.sv-run--selected:not([data-run-id="{first}"])').wait_for()
    wait_status(page, "failed")
    page.locator(".sv-log-line--fail").first.wait_for()

    # the log wraps: no line is wider than the log
    assert page.evaluate(
        "() => { const log = document.querySelector('[data-testid=sv-log]');"
        " return log.scrollWidth <= log.clientWidth; }"
    )

    # keyboard only: one tab stop for the list, arrows move, Enter selects, the focus is visible
    page.locator(".sv-header button").focus()
    for _ in range(10):
        if page.evaluate("() => document.activeElement?.classList.contains('sv-run')"):
            break
        page.keyboard.press("Tab")
    focused = "() => document.activeElement?.dataset.runId"
    second = page.evaluate(focused)
    assert second and second != first  # the selected (newest) run holds the tab stop
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("ArrowDown")
    assert page.evaluate(focused) == first
    page.keyboard.press("Enter")
    page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-run-id="{first}"][aria-selected="true"]').wait_for()
    page.keyboard.press("ArrowUp")
    page.keyboard.press(" ")
    page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-run-id="{second}"]').wait_for()
    assert page.evaluate(focused) == second  # a re-render keeps the focus where it was
    page.locator(".sv-log-line--fail").first.wait_for()

    # the commit list by keyboard too: Enter opens a commit, ArrowLeft closes it, Enter again opens
    head = page.locator(tid("sv-commit-toggle")).first
    head.wait_for(timeout=30_000)
    head.focus()
    page.keyboard.press("Enter")
    assert head.get_attribute("aria-expanded") == "true"
    page.keyboard.press("ArrowLeft")
    assert head.get_attribute("aria-expanded") == "false"
    page.keyboard.press("Enter")
    page.locator(tid("sv-commit-files")).first.wait_for()
    page.locator(f'{tid("sv-run-row")}.sv-run--selected').focus()

    # both themes: the failure banner, the failing tail and the selected row are readable,
    # and axe-core finds nothing serious in the panel
    ARTIFACTS.mkdir(exist_ok=True)
    widen_sidebar(page)
    for theme, shot in (("JupyterLab Light", "lab-panel-light.png"), ("JupyterLab Dark", "lab-panel-dark.png")):
        if theme != "JupyterLab Light":
            switch_theme(page, theme, from_palette=True)
        page.locator(tid("sv-failure")).wait_for()
        checks = {
            "failure banner": page.locator(f'{tid("sv-failure")} div').first,
            "failing tail line": page.locator(".sv-log-line--fail").last,
            "selected row": page.locator(".sv-run--selected .sv-run-mode"),
            "selected row (muted)": page.locator(".sv-run--selected .sv-run-sub"),
            "status badge": page.locator(".sv-run--selected .sv-badge"),
        }
        for what, locator in checks.items():
            ratio = contrast(locator)
            assert ratio >= 4.5, f"{theme}: {what} has a contrast of {ratio:.2f}"
        violations = axe_violations(page, "#soopervisor-panel")
        assert not violations, f"{theme}: {json.dumps(violations, indent=1)}"
        page.locator("#soopervisor-panel").screenshot(path=str(ARTIFACTS / shot))
    page.evaluate("document.querySelector('#soopervisor-panel').scrollTop = 0")
    screenshot(page, "sidebar-dark.png")  # docs/tutorials/jupyterlab.md shows it
    assert page.evaluate("() => document.body.dataset.jpThemeLight") == "false"

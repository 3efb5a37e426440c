"""The commit view and the table view in a real JupyterLab and Chromium.

Artifact sets are written with ``write_manifest`` into real local storages (no
Docker run: the point is the views, not a run): a 1,000-file set, and a small
set holding a CSV, a Parquet file, a PNG, an HTML page, a notebook and a
ploomber ``.metadata`` file, beside an older failed set of the same commit. The
view is opened from the sidebar's commit row, as a user does; Lab's own viewers
open the files (read-only, through the artifact drive); Parquet pages through
the table route; the storage of the settings changes what the sidebar lists.
"""
from __future__ import annotations

import io
import json
import struct
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

import soopervisor
from soopervisor.storage import open_storage
from soopervisor.storage.local import LocalStorage
from tests import sets
from tests.lab_browser import (
    PLUGIN,
    JupyterLab,
    axe_violations,
    contrast,
    load_lab,
    new_page,
    open_panel,
    screenshot,
    start_lab,
    switch_theme,
    tid,
)
from tests.projects import make_project

playwright = pytest.importorskip("playwright.sync_api")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SMALL = "a1" * 20
BIG = "b2" * 20
OTHER = "c3" * 20
DAMAGED = "d4" * 20
ROWS = 450  # three pages of 200


def png(width: int = 8, height: int = 6) -> bytes:
    """A small valid PNG (red), made by hand: no imaging library needed."""
    raw = b"".join(b"\x00" + b"\xd0\x20\x20" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def parquet(rows: int) -> bytes:
    table = pa.table({"id": list(range(rows)), "name": [f"row {i}" for i in range(rows)],
                      "value": [i / 4 for i in range(rows)]})
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["# stored analysis"]},
        {"cell_type": "code", "execution_count": 1, "metadata": {}, "source": ["1 + 1"],
         "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                      "data": {"text/plain": ["2"]}}]},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4,
    "nbformat_minor": 5,
}


def small_files() -> dict[str, bytes]:
    csv = "id,name\n" + "".join(f"{i},name {i}\n" for i in range(ROWS))
    return {
        "output/data.csv": csv.encode(),
        "output/table.parquet": parquet(ROWS),
        "output/plot.png": png(),
        "output/report.html": b"<!doctype html><html><body><h1>stored report</h1></body></html>",
        "output/analysis.ipynb": json.dumps(NOTEBOOK).encode(),
        "output/.data.csv.metadata": b'{"stored_source": "x"}',
    }


def store_set(storage, project: str, commit: str, run_id: str, files: dict[str, bytes],
              status: str = "succeeded", minutes: int = 0) -> None:
    """One complete set, as a run stores it, finished ``minutes`` after a fixed time."""
    when = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    sets.store_set(project, commit, files, run_id=run_id, storage=storage, status=status, started=when,
                   finished=when + timedelta(seconds=30), dirty=False, exit_code=0 if status == "succeeded" else 1,
                   log="==> soopervisor: stored by the test\n")


@pytest.fixture
def project(server_root: Path) -> str:
    return soopervisor.validate(make_project(server_root)).project.name


@pytest.fixture
def seeded(home: Path, project: str) -> None:
    """The server's own storage: the small commit (a failed set, then a succeeded one) and the big one."""
    storage = open_storage()
    store_set(storage, project, SMALL, "r-fail", {"output/partial.txt": b"half\n"}, status="failed", minutes=0)
    store_set(storage, project, SMALL, "r-ok", small_files(), minutes=5)
    store_set(storage, project, BIG, "r-big", {f"data/file-{i:04d}.txt": f"{i}\n".encode() for i in range(1000)},
              minutes=10)
    store_set(storage, project, DAMAGED, "r-bad", {"output/bad.parquet": b"PAR1 this is no parquet PAR1"}, minutes=15)


@pytest.fixture
def lab(server_root: Path, home: Path, seeded):
    # the app object on window (LabApp.expose_app_in_browser): commands run as the palette runs them
    with start_lab(server_root, home, expose_app=True) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with new_page() as page:
        yield page


def open_commit_from_row(page, lab: JupyterLab, commit: str):
    """The sidebar's row of ``commit``, its "open" button: the commit view."""
    open_panel(page, lab, "proj")
    row = page.locator(f'{tid("sv-commit-row")}[data-commit="{commit}"]')
    row.wait_for()
    row.locator(tid("sv-commit-open")).click()
    view = page.locator(f'{tid("sv-commit-view")}[data-commit="{commit}"]')
    view.wait_for(state="visible")
    return view


def file_names(view) -> list[str]:
    return view.locator(tid("sv-cv-file")).evaluate_all("rows => rows.map(r => r.dataset.name)")


def set_setting(page, key: str, value) -> None:
    """Change a setting in the page's setting registry, as the Settings Editor does (saved, and
    ``changed`` emitted in this page). The registry is the service of Lab's own settings plugin."""
    page.evaluate(
        "async ([plugin, key, value]) => {"
        " const registry = window.jupyterapp.pluginRegistry._plugins.get('@jupyterlab/apputils-extension:settings').service;"
        " await registry.set(plugin, key, value); }",
        [PLUGIN, key, value],
    )


def wait_for_saved_layout(lab: JupyterLab, what: str, timeout: float = 30) -> None:
    """Until Lab's workspace (saved a moment after the layout changes) holds ``what``."""
    deadline = time.monotonic() + timeout
    while what not in lab.get("lab/api/workspaces/default").decode():
        assert time.monotonic() < deadline, f"the workspace never held {what}"
        time.sleep(0.2)


def main_tab(page, label: str):
    return page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=label)


def test_commit_view_sets_files_viewers_and_themes(lab: JupyterLab, page, project: str):
    view = open_commit_from_row(page, lab, SMALL)
    assert main_tab(page, f"commit {SMALL[:7]}").count() == 1
    assert view.locator(tid("sv-cv-commit")).inner_text() == SMALL
    view.locator(tid("sv-cv-copy")).click()
    view.locator(".sv-cv-copied", has_text="copied").wait_for()

    # the sets: the succeeded one (newest) is the one the commit resolves to
    sets = view.locator(tid("sv-cv-set"))
    view.locator(f'{tid("sv-cv-set")}[aria-selected="true"][data-run-id="r-ok"]').wait_for()
    assert sets.count() == 2
    assert sets.nth(1).get_attribute("data-status") == "failed"

    # files: ploomber's .metadata hidden, a toggle shows it
    view.locator(f'{tid("sv-cv-files")}[data-complete="true"]').wait_for()
    names = file_names(view)
    assert sorted(names) == sorted(n for n in small_files() if not n.endswith(".metadata"))
    toggle = view.locator(tid("sv-cv-hidden-toggle"))
    assert toggle.inner_text() == "show 1 hidden" and toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    view.locator(f'{tid("sv-cv-file")}[data-name="output/.data.csv.metadata"]').wait_for()
    assert toggle.get_attribute("aria-pressed") == "true"
    toggle.click()
    view.locator(f'{tid("sv-cv-file")}[data-name="output/.data.csv.metadata"]').wait_for(state="detached")

    # the filter: by name, case-insensitive
    view.locator(tid("sv-cv-filter")).fill("PARQ")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=sv-cv-file]')].map(r => r.dataset.name).join() === 'output/table.parquet'"
    )
    assert "1 of 6 files" in view.locator(tid("sv-cv-count")).inner_text()
    view.locator(tid("sv-cv-filter")).fill("")
    view.locator(f'{tid("sv-cv-files")}[data-total="5"][data-complete="true"]').wait_for()

    # the sets by keyboard: ArrowDown, Enter chooses the failed set; its files show
    view.locator(f'{tid("sv-cv-set")}[aria-selected="true"]').focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.dataset.runId") == "r-fail"
    page.keyboard.press("Enter")
    view.locator(f'{tid("sv-cv-set")}[aria-selected="true"][data-run-id="r-fail"]').wait_for()
    view.locator(f'{tid("sv-cv-file")}[data-name="output/partial.txt"]').wait_for()
    assert file_names(view) == ["output/partial.txt"]
    zip_href = view.locator(tid("sv-cv-zip")).get_attribute("href")
    assert parse_qs(urlparse(zip_href).query)["run"] == ["r-fail"]
    page.keyboard.press("ArrowUp")
    page.keyboard.press(" ")
    view.locator(f'{tid("sv-cv-set")}[aria-selected="true"][data-run-id="r-ok"]').wait_for()
    view.locator(f'{tid("sv-cv-file")}[data-name="output/data.csv"]').wait_for()

    # a download is the stored file
    with page.expect_download() as info:
        view.locator(f'{tid("sv-cv-file")}[data-name="output/data.csv"] {tid("sv-cv-download")}').click()
    assert Path(info.value.path()).read_bytes() == small_files()["output/data.csv"]

    def open_file(name: str) -> None:
        """Back to the commit view's tab (the last file opened is in front), then the file's name."""
        main_tab(page, f"commit {SMALL[:7]}").click()
        view.locator(f'{tid("sv-cv-file")}[data-name="{name}"] {tid("sv-cv-open")}').click()

    # Lab's own viewers, read from the set: CSV grid, image, notebook (read-only), HTML
    open_file("output/data.csv")
    page.locator(".jp-CSVViewer").last.wait_for(state="visible")
    open_file("output/plot.png")
    page.locator(".jp-ImageViewer img").last.wait_for(state="visible")
    open_file("output/analysis.ipynb")
    notebook = page.locator(".jp-NotebookPanel").last
    notebook.locator(".jp-Cell", has_text="stored analysis").wait_for()
    notebook.locator(".jp-ToolbarLabelComponent", has_text="read-only").wait_for()
    open_file("output/report.html")
    main_tab(page, "report.html").wait_for()

    # Parquet: the table view, 200 rows a page
    open_file("output/table.parquet")
    table = page.locator(f'{tid("sv-table-view")}[data-state="ready"]').last
    table.wait_for()
    rng = table.locator(tid("sv-table-range"))
    assert rng.inner_text() == f"rows 1–200 of {ROWS}"
    assert table.locator(tid("sv-table-row")).count() == 200
    assert "int64" in table.locator("thead").inner_text()
    assert table.locator(tid("sv-table-prev")).is_disabled()
    table.locator(tid("sv-table-next")).click()
    table.locator(tid("sv-table-range"), has_text=f"rows 201–400 of {ROWS}").wait_for()
    assert table.locator(f'{tid("sv-table-row")} td').first.inner_text() == "200"
    table.locator(tid("sv-table-next")).click()
    table.locator(tid("sv-table-range"), has_text=f"rows 401–{ROWS} of {ROWS}").wait_for()
    assert table.locator(tid("sv-table-next")).is_disabled()
    assert table.locator(tid("sv-table-row")).count() == ROWS - 400
    table.locator(tid("sv-table-prev")).click()
    table.locator(tid("sv-table-range"), has_text=f"rows 201–400 of {ROWS}").wait_for()
    screenshot(page, "table-view-light.png", panel_only=False)

    # a CSV "as table": the same view, from the CSV
    main_tab(page, f"commit {SMALL[:7]}").click()
    view.locator(f'{tid("sv-cv-file")}[data-name="output/data.csv"] {tid("sv-cv-astable")}').click()
    csv_table = page.locator(f'{tid("sv-table-view")}[data-name="output/data.csv"][data-state="ready"]')
    csv_table.wait_for()
    assert csv_table.locator(tid("sv-table-range")).inner_text() == f"rows 1–200 of {ROWS}"

    # the same command again activates the open view instead of a second one
    page.evaluate(
        "([p, c]) => window.jupyterapp.commands.execute('soopervisor:open-commit', {project: p, commit: c})",
        [project, SMALL],
    )
    view.wait_for(state="visible")
    assert page.locator(f'{tid("sv-commit-view")}[data-commit="{SMALL}"]').count() == 1

    # both themes: axe-core finds nothing serious; the selected set reads
    def check_theme(theme: str) -> None:
        main_tab(page, f"commit {SMALL[:7]}").click()
        view.wait_for(state="visible")
        for what, locator in {
            "selected set": view.locator(".sv-cv-set--selected .sv-cv-mode"),
            "selected set (muted)": view.locator(".sv-cv-set--selected .sv-muted").first,
            "file name": view.locator(".sv-file-open").first,
        }.items():
            ratio = contrast(locator)
            assert ratio >= 4.5, f"{theme}: {what} has a contrast of {ratio:.2f}"
        violations = axe_violations(page, ".sv-commitview")
        assert not violations, f"{theme}: {json.dumps(violations, indent=1)}"

    check_theme("JupyterLab Light")
    screenshot(page, "commit-view-light.png", panel_only=False)
    switch_theme(page, "JupyterLab Dark", from_palette=True)
    check_theme("JupyterLab Dark")
    screenshot(page, "commit-view-dark.png", panel_only=False)
    # the table view in the dark theme too
    main_tab(page, "table.parquet").click()
    page.locator('.sv-tableview[data-name="output/table.parquet"]').wait_for(state="visible")
    assert not axe_violations(page, '.sv-tableview[data-name="output/table.parquet"]')
    screenshot(page, "table-view-dark.png", panel_only=False)


def test_a_1000_file_set_shows_its_first_rows_at_once_and_filters(lab: JupyterLab, page):
    # by keyboard: from the commit's line, Tab reaches its "open" button, Enter opens the view
    open_panel(page, lab, "proj")
    row = page.locator(f'{tid("sv-commit-row")}[data-commit="{BIG}"]')
    row.locator(tid("sv-commit-toggle")).focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.testid") == "sv-commit-open"
    page.keyboard.press("Enter")
    view = page.locator(f'{tid("sv-commit-view")}[data-commit="{BIG}"]')
    view.wait_for(state="visible")
    files = view.locator(tid("sv-cv-files"))
    view.locator(f'{tid("sv-cv-file")}[data-name="data/file-0000.txt"]').wait_for()
    page.wait_for_function(
        "() => { const t = document.querySelector('[data-testid=sv-cv-files]');"
        " return t.dataset.complete === 'true' && t.querySelectorAll('[data-testid=sv-cv-file]').length === 1000; }"
    )
    assert files.get_attribute("data-total") == "1000"
    assert view.locator(tid("sv-cv-count")).inner_text() == "1000 files"
    view.locator(tid("sv-cv-filter")).fill("file-099")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=sv-cv-file]').length === 10")
    assert file_names(view) == [f"data/file-{i:04d}.txt" for i in range(990, 1000)]

    # the file rows by keyboard: down and up move between the names
    view.locator(f'{tid("sv-cv-file")}[data-name="data/file-0990.txt"] {tid("sv-cv-open")}').focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("() => document.activeElement.closest('[data-testid=sv-cv-file]').dataset.name") == "data/file-0991.txt"

    # a reload restores the view with the layout, its rows read again (once Lab has saved the layout)
    wait_for_saved_layout(lab, "soopervisor-commit")
    load_lab(page)
    view.locator(f'{tid("sv-cv-file")}[data-name="data/file-0999.txt"]').wait_for(timeout=60_000)


def test_an_unknown_commit_and_a_damaged_table_say_so_with_a_hint(lab: JupyterLab, page, project: str):
    open_panel(page, lab, "proj")
    page.locator(tid("sv-commit-row")).first.wait_for()
    command = "([p, c]) => window.jupyterapp.commands.execute('soopervisor:open-commit', {project: p, commit: c})"
    page.evaluate(command, [project, "deadbeef"])
    error = page.locator(f'{tid("sv-commit-view")}[data-state="error"] {tid("sv-cv-error")}')
    error.wait_for()
    assert "deadbeef" in error.inner_text()
    assert error.locator(".sv-hint").inner_text().strip()

    # a commit's start names it too; a Parquet file that is none: an error box naming it, with a hint
    page.evaluate(command, [project, DAMAGED[:8]])
    view = page.locator(f'{tid("sv-commit-view")}[data-commit="{DAMAGED}"][data-state="ready"]')
    view.locator(f'{tid("sv-cv-file")}[data-name="output/bad.parquet"] {tid("sv-cv-open")}').click()
    table_error = page.locator(f'{tid("sv-table-view")}[data-state="error"] {tid("sv-table-error")}')
    table_error.wait_for()
    assert "output/bad.parquet" in table_error.inner_text()
    assert table_error.locator(".sv-hint").inner_text().strip()
    assert "Traceback" not in table_error.inner_text()


def test_the_storage_setting_lists_that_storage(lab: JupyterLab, page, project: str, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    store_set(LocalStorage(elsewhere), project, OTHER, "r-other", {"output/there.csv": b"x\n1\n"})

    open_panel(page, lab, "proj")
    page.locator(f'{tid("sv-commit-row")}[data-commit="{SMALL}"]').wait_for()
    assert page.locator(f'{tid("sv-commit-row")}[data-commit="{OTHER}"]').count() == 0

    # the storage setting changed as the Settings Editor changes it (the page's setting registry):
    # the list reloads from that storage, without a page reload
    with page.expect_request(lambda r: "/commits" in r.url and "storage=" in r.url) as req:
        set_setting(page, "storage", str(elsewhere))
    assert parse_qs(urlparse(req.value.url).query)["storage"] == [str(elsewhere)]
    row = page.locator(f'{tid("sv-commit-row")}[data-commit="{OTHER}"]')
    row.wait_for()
    page.locator(f'{tid("sv-commit-row")}[data-commit="{SMALL}"]').wait_for(state="detached")

    # its files in the sidebar and the commit view, its downloads from there too
    row.locator(tid("sv-commit-toggle")).click()
    row.locator(f'{tid("sv-commit-file")}[data-name="output/there.csv"]').wait_for()
    row.locator(tid("sv-commit-open")).click()
    view = page.locator(f'{tid("sv-commit-view")}[data-commit="{OTHER}"]')
    view.locator(f'{tid("sv-cv-file")}[data-name="output/there.csv"]').wait_for()
    with page.expect_download() as info:
        view.locator(f'{tid("sv-cv-file")}[data-name="output/there.csv"] {tid("sv-cv-download")}').click()
    assert Path(info.value.path()).read_bytes() == b"x\n1\n"

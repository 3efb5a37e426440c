"""The compare view in a real JupyterLab and Chromium: two stored sets of one project.

The sets are written with ``write_manifest`` into the local storage of the test's
SOOPERVISOR_HOME (a Docker run is not the point here): a changed text file, CSV,
notebook and PNG, a file added, one removed, one unchanged. The view is opened by
its command (JupyterLab started with ``expose_app_in_browser`` so the page can run
commands with arguments) and from its picker; both themes are audited by axe-core.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import nbformat
import pytest

from tests import sets as stored_sets
from tests.lab_browser import (
    JupyterLab,
    axe_violations,
    contrast,
    load_lab,
    new_page,
    put_settings,
    screenshot,
    start_lab,
    switch_theme,
    tid,
)

playwright = pytest.importorskip("playwright.sync_api")

PROJECT = "proj"
A = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
B = "e4f5a6b7c8d90123456789abcdef0123456789ab"
VIEW = ".sv-compare-widget:not(.lm-mod-hidden)"


def png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A small solid PNG (no imaging library on the machines)."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def notebook(cells: list[tuple[str, str, str | None]]) -> str:
    """A notebook of (cell type, source, stream output or None) cells."""
    nb = nbformat.v4.new_notebook()
    for kind, source, output in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
            continue
        cell = nbformat.v4.new_code_cell(source, execution_count=1)
        if output is not None:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
        nb.cells.append(cell)
    return nbformat.writes(nb)


REPORT = [f"line {i}" for i in range(1, 31)]
# over the server's 5 MB limit of a text diff
BIG = "a line of a long log\n" * 260_000


def store_set(tmp: Path, commit: str, run_id: str, finished: str, files: dict[str, str | bytes],
              storage: Path | None = None) -> None:
    stored_sets.store_set(PROJECT, commit, files, run_id=run_id, storage=storage, finished=finished)


@pytest.fixture
def sets(tmp_path: Path, home: Path) -> None:
    report_b = REPORT.copy()
    report_b[4] = "line 5, edited"  # replace
    del report_b[19]  # delete line 20
    report_b.insert(26, "a new line")  # insert
    store_set(tmp_path, A, "runa", "2026-11-30T10:00:00+00:00", {
        "report.md": "\n".join(REPORT) + "\n",
        "data.csv": "a,b\n1,2\n3,4\n",
        "analysis.ipynb": notebook([("markdown", "# Analysis", None), ("code", "x = 1\nprint(x)", "1\n"),
                                    ("code", "y = 2", None)]),
        "plot.png": png((200, 30, 30)),
        "old.txt": "gone\n",
        "same.txt": "same\n",
        "model.bin": bytes(range(256)),
        "big.log": BIG,
    })
    store_set(tmp_path, B, "runb", "2026-12-01T10:00:00+00:00", {
        "report.md": "\n".join(report_b) + "\n",
        "data.csv": "a,b,c\n1,2,x\n3,5,y\n",
        "analysis.ipynb": notebook([("markdown", "# Analysis", None), ("code", "x = 10\nprint(x)", "10\n"),
                                    ("code", "y = 2", None), ("code", "z = 3", None)]),
        "plot.png": png((30, 30, 200)),
        "new.txt": "fresh\n",
        "same.txt": "same\n",
        "model.bin": bytes(reversed(range(256))),
        "big.log": BIG + "one more line\n",
    })


@pytest.fixture
def lab(server_root: Path, home: Path, sets: None):
    # the page reaches the app (window.jupyterapp) to run the command with arguments
    with start_lab(server_root, home, expose_app=True) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with new_page(console=True) as page:
        load_lab(page, lab.lab_url())
        page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('soopervisor:compare')", timeout=60_000)
        yield page


def compare(page, **args: str | None) -> None:
    """Run soopervisor:compare as the commit view's button does."""
    page.evaluate("args => { window.jupyterapp.commands.execute('soopervisor:compare', args); }",
                  {"project": PROJECT, **args})


def view(page):
    return page.locator(VIEW)


def counts(page) -> dict[str, int]:
    buttons = view(page).locator(tid("sv-compare-count"))
    buttons.first.wait_for()
    return {b.get_attribute("data-status"): int(b.get_attribute("data-count")) for b in buttons.all()}


def listed(page) -> list[tuple[str, str]]:
    rows = view(page).locator(tid("sv-compare-file"))
    return [(r.get_attribute("data-name"), r.get_attribute("data-status")) for r in rows.all()]


def choose(page, name: str):
    """Click a file of the list; the diff pane once it shows that file."""
    view(page).locator(f'{tid("sv-compare-file")}[data-name="{name}"]').click()
    diff = view(page).locator(f'{tid("sv-compare-diff")}[data-name="{name}"]')
    diff.wait_for(state="visible")
    return diff


def test_two_commits_compared_file_by_file(page):
    compare(page, commit=A, runId="runa", other=B, otherRunId="runb")
    v = view(page)
    v.wait_for(state="visible")
    assert counts(page) == {"changed": 6, "added": 1, "removed": 1, "unchanged": 1}
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
    assert tab.inner_text().strip() == f"{A[:7]} ↔ {B[:7]}"
    assert A in tab.get_attribute("title") and B in tab.get_attribute("title")

    # changed first, then added, removed; unchanged collapsed until asked for
    v.locator(tid("sv-compare-file")).first.wait_for()
    assert [s for _, s in listed(page)] == ["changed"] * 6 + ["added", "removed"]
    assert ("same.txt", "unchanged") not in listed(page)
    v.locator(tid("sv-compare-show-unchanged")).click()
    v.locator(f'{tid("sv-compare-file")}[data-name="same.txt"]').wait_for()
    assert v.locator(f'{tid("sv-compare-count")}[data-status="unchanged"]').get_attribute("aria-pressed") == "true"
    # a status filter hides its files again
    v.locator(f'{tid("sv-compare-count")}[data-status="changed"]').click()
    v.locator(f'{tid("sv-compare-file")}[data-status="changed"]').first.wait_for(state="detached")
    assert {s for _, s in listed(page)} == {"added", "removed", "unchanged"}
    v.locator(f'{tid("sv-compare-count")}[data-status="changed"]').click()
    v.locator(f'{tid("sv-compare-file")}[data-status="changed"]').first.wait_for()

    # text: side by side, each change marked by its sign, equal runs folded
    diff = choose(page, "report.md")
    rows = diff.locator(tid("sv-diff-row"))
    ops = [r.get_attribute("data-op") for r in rows.all()]
    assert {"replace", "delete", "insert", "skip", "equal"} <= set(ops), ops
    replace = diff.locator('[data-op="replace"]').first
    assert replace.locator(".sv-diff-a").inner_text() == "line 5"
    assert replace.locator(".sv-diff-b").inner_text() == "line 5, edited"
    assert replace.locator(".sv-diff-sign--a").inner_text() == "−"
    assert replace.locator(".sv-diff-sign--b").inner_text() == "+"
    assert diff.locator('[data-op="delete"] .sv-diff-a').first.inner_text() == "line 20"
    assert diff.locator('[data-op="insert"] .sv-diff-b').first.inner_text() == "a new line"
    assert diff.locator('[data-op="skip"]').first.inner_text().startswith("⋯ ")
    assert "unchanged line" in diff.locator('[data-op="skip"]').first.inner_text()

    # a notebook: cell by cell, the source and the output changed, a cell added
    diff = choose(page, "analysis.ipynb")
    cells = diff.locator(tid("sv-nb-cell"))
    cells.first.wait_for()
    statuses = [c.get_attribute("data-status") for c in cells.all()]
    assert statuses.count("modified") == 1 and statuses.count("added") == 1, statuses
    assert statuses.count("unchanged") == 2, statuses
    modified = diff.locator(f'{tid("sv-nb-cell")}[data-status="modified"]')
    assert modified.locator('[data-op="replace"] .sv-diff-b').first.inner_text() == "x = 10"
    outputs = modified.locator(tid("sv-nb-outputs"))
    assert "1" in outputs.locator(".sv-nb-outputs-a").inner_text()
    assert "10" in outputs.locator(".sv-nb-outputs-b").inner_text()

    # a table: shapes, the column added, the values that changed
    diff = choose(page, "data.csv")
    assert diff.locator(tid("sv-table-shapes")).inner_text() == "A: 2 rows × 2 columns · B: 2 rows × 3 columns"
    assert diff.locator(f'{tid("sv-table-column")}[data-name="c"]').get_attribute("data-state") == "added"
    assert diff.locator(f'{tid("sv-table-column")}[data-name="b"]').get_attribute("data-state") == "values changed"
    examples = diff.locator(tid("sv-table-examples"))
    cells = [c.inner_text() for c in examples.locator("tbody tr").first.locator("td").all()]
    assert cells == ["2", "b", "4", "5"], cells  # the second row, counted from 1

    # an image: both sides fetched with the transport's credentials and shown from blob URLs
    diff = choose(page, "plot.png")
    for side in ("a", "b"):
        img = diff.locator(f'{tid(f"sv-image-{side}")} img')
        img.wait_for(state="visible")
        assert img.get_attribute("src").startswith("blob:")
        page.wait_for_function("img => img.complete && img.naturalWidth === 16", arg=img.element_handle())

    # a binary file: sizes and checksums of both sides
    diff = choose(page, "model.bin")
    sides = diff.locator(tid("sv-sides"))
    assert "The bytes differ." in sides.inner_text()
    assert sides.locator(".sv-sha-full").count() == 2

    # too large to diff: said so, both sides downloadable
    diff = choose(page, "big.log")
    diff.locator(tid("sv-diff-too-large")).wait_for(state="visible")
    links = v.locator(f'.sv-diff-head {tid("sv-diff-download")}')
    assert links.count() == 2
    href = links.first.get_attribute("href")
    assert "/files/big.log" in href and "run=runa" in href

    # a file on one side only: all inserted
    diff = choose(page, "new.txt")
    assert [r.get_attribute("data-op") for r in diff.locator(tid("sv-diff-row")).all()] == ["insert"]

    # the keyboard: arrows move the selection along the list, and the diff follows
    v.locator(f'{tid("sv-compare-file")}[data-name="report.md"]').click()
    page.keyboard.press("ArrowDown")
    focused = page.evaluate("() => document.activeElement.dataset.name")
    assert focused and focused != "report.md"
    v.locator(f'{tid("sv-compare-diff")}[data-name="{focused}"]').wait_for()
    assert v.locator(f'{tid("sv-compare-file")}[aria-selected="true"]').get_attribute("data-name") == focused

    # the same command again activates this view instead of opening another
    compare(page, commit=A, runId="runa", other=B, otherRunId="runb")
    assert page.locator(".sv-compare-widget").count() == 1

    # swap: B becomes the base, the file shown stays
    shown = v.locator(tid("sv-compare-diff")).get_attribute("data-name")
    v.locator(tid("sv-compare-swap")).click()
    page.locator(f'{VIEW} {tid("sv-compare-side-a")}', has_text=B[:7]).wait_for()
    v.locator(f'{tid("sv-compare-diff")}[data-name="{shown}"]').wait_for()
    assert v.locator(f'{tid("sv-compare-file")}[aria-selected="true"]').get_attribute("data-name") == shown
    assert counts(page) == {"changed": 6, "added": 1, "removed": 1, "unchanged": 1}
    v.locator(f'{tid("sv-compare-file")}[data-name="old.txt"][data-status="added"]').wait_for()
    assert tab.inner_text().strip() == f"{B[:7]} ↔ {A[:7]}"


def test_the_picker_offers_the_other_sets_and_opens_the_comparison(page, tmp_path: Path):
    # a second run of A's commit: two sets of one commit compare too
    store_set(tmp_path, A, "runa2", "2026-11-30T12:00:00+00:00", {"same.txt": "same\n"})
    compare(page, commit=A, runId="runa")
    picks = view(page).locator(tid("sv-compare-pick"))
    picks.first.wait_for()
    offered = {(p.get_attribute("data-commit"), p.get_attribute("data-run")) for p in picks.all()}
    assert offered == {(B, "runb"), (A, "runa2")}
    assert "(this commit)" in view(page).locator(f'{tid("sv-compare-pick")}[data-run="runa2"]').inner_text()
    picks = view(page).locator(f'{tid("sv-compare-pick")}[data-commit="{B}"]')
    assert page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text().strip() == f"{A[:7]} ↔ …"
    # the keyboard picks: Enter on the focused row
    picks.first.focus()
    page.keyboard.press("Enter")
    assert counts(page)["changed"] == 6
    page.locator(f'{VIEW} {tid("sv-compare-side-b")}', has_text=B[:7]).wait_for()
    assert page.locator(".sv-compare-widget").count() == 1

    # a filter that matches nothing hides every row
    compare(page, commit=B, runId="runb")
    box = view(page).locator(tid("sv-compare-pick-filter"))
    box.fill("zzz")
    view(page).locator(tid("sv-compare-pick")).first.wait_for(state="hidden")
    view(page).locator(tid("sv-compare-pick-none")).wait_for(state="visible")
    box.fill(A[:5])
    # another commit offers the set it resolves to: its newest succeeded one
    view(page).locator(f'{tid("sv-compare-pick")}[data-commit="{A}"][data-run="runa2"]').wait_for(state="visible")


def test_a_json_file_shows_its_changed_keys_above_its_lines(page, tmp_path: Path):
    c, d = "c" * 40, "d" * 40
    store_set(tmp_path, c, "runc", "2026-12-01T11:00:00+00:00",
              {"m.json": '{"auc": 0.8, "rows": [{"name": "x"}], "old": 1}\n', "bad.json": "{}\n"})
    store_set(tmp_path, d, "rund", "2026-12-01T12:00:00+00:00",
              {"m.json": '{"auc": 0.9, "rows": [{"name": "y"}], "new": [1]}\n', "bad.json": "{\n"})
    compare(page, commit=c, runId="runc", other=d, otherRunId="rund")
    diff = choose(page, "m.json")
    assert diff.get_attribute("data-kind") == "json"
    keys = diff.locator(tid("sv-json-key"))
    keys.first.wait_for()
    assert [(k.get_attribute("data-key"), k.get_attribute("data-state")) for k in keys.all()] == [
        ("auc", "changed"), ("rows[0].name", "changed"), ("new", "added"), ("old", "removed")]
    assert [t.inner_text() for t in keys.first.locator("td").all()] == ["~", "auc", "0.8", "0.9"]
    # the lines side by side below the keys, as for any text
    assert diff.locator('[data-op="replace"] .sv-diff-b').first.inner_text().startswith('{"auc": 0.9')
    # a side that does not parse: said, and the lines still shown
    diff = choose(page, "bad.json")
    assert "B is not valid JSON" in diff.locator(tid("sv-json-note")).inner_text()
    replaced = diff.locator('[data-op="replace"]')
    assert (replaced.locator(".sv-diff-a").inner_text(), replaced.locator(".sv-diff-b").inner_text()) == ("{}", "{")


def test_a_commit_without_a_set_says_so_with_a_hint(page):
    compare(page, commit=A, other="0" * 40)
    error = view(page).locator(tid("sv-error"))
    error.wait_for(state="visible")
    assert "Cannot compare" in error.inner_text()
    assert error.locator(".sv-hint").inner_text().strip()
    assert "Traceback" not in error.inner_text()


def test_the_view_comes_back_after_a_reload(page):
    # the layout is saved in the workspace: wait for the save that holds this view
    with page.expect_request(lambda r: r.method == "PUT" and "/lab/api/workspaces" in r.url
                             and "soopervisor-compare" in (r.post_data or "")):
        compare(page, commit=A, runId="runa", other=B, otherRunId="runb")
        counts(page)
    load_lab(page)
    assert counts(page) == {"changed": 6, "added": 1, "removed": 1, "unchanged": 1}
    assert page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current").inner_text().strip() == f"{A[:7]} ↔ {B[:7]}"


def test_the_storage_of_the_settings_is_the_one_compared(page, lab: JupyterLab, tmp_path: Path):
    other = tmp_path / "team-storage"
    c, d = "c" * 40, "d" * 40
    store_set(tmp_path, c, "runc", "2026-11-30T10:00:00+00:00", {"x.txt": "1\n"}, storage=other)
    store_set(tmp_path, d, "rund", "2026-12-01T10:00:00+00:00", {"x.txt": "2\n"}, storage=other)
    # not in the server's own storage
    compare(page, commit=c, other=d)
    view(page).locator(tid("sv-error")).wait_for(state="visible")

    put_settings(lab, {"storage": str(other)})
    load_lab(page)
    page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('soopervisor:compare')")
    # the view follows the setting when it arrives after the command
    compare(page, commit=d, other=c)
    assert counts(page) == {"changed": 1, "added": 0, "removed": 0, "unchanged": 0}
    diff = choose(page, "x.txt")
    assert diff.locator('[data-op="replace"] .sv-diff-b').inner_text() == "1"


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_both_themes_read_and_pass_axe(page, theme: str):
    compare(page, commit=A, runId="runa", other=B, otherRunId="runb")
    switch_theme(page, theme, background_of=f"{VIEW} .sv-compare")
    diff = choose(page, "report.md")
    # the tinted lines keep the theme's text readable
    for cell in ('[data-op="replace"] .sv-diff-a', '[data-op="replace"] .sv-diff-b',
                 '[data-op="delete"] .sv-diff-a', '[data-op="insert"] .sv-diff-b', '[data-op="skip"] td'):
        ratio = contrast(diff.locator(cell).first)
        assert ratio >= 4.5, (theme, cell, ratio)
    assert axe_violations(page, VIEW) == []
    choose(page, "analysis.ipynb").locator(tid("sv-nb-cell")).first.wait_for()
    assert axe_violations(page, VIEW) == []
    choose(page, "data.csv").locator(tid("sv-table-diff")).wait_for()
    assert axe_violations(page, VIEW) == []
    choose(page, "report.md")
    if theme.endswith("Dark"):
        screenshot(page, "compare-view-dark.png", panel_only=False)
    else:
        screenshot(page, "compare-view-light.png", panel_only=False)


def test_each_file_names_its_task_and_ploomber_metadata_is_folded(server_root: Path, home: Path):
    c, d, e = "c" * 40, "d" * 40, "e" * 40
    tasks = {"out/summary.json": "clean", "out/.summary.json.metadata": "clean", "out/plot.txt": "plots",
             "out/.plot.txt.metadata": "plots"}
    meta = lambda t: f'{{"timestamp": {t}, "stored_source_code": "def clean(): ...", "params": {{}}}}'
    stored_sets.store_set(PROJECT, c, {"out/summary.json": '{"n": 1}', "out/.summary.json.metadata": meta(1),
                                       "out/plot.txt": "p\n", "out/.plot.txt.metadata": meta(1)},
                          run_id="runc", finished="2026-11-30T10:00:00+00:00", tasks=tasks)
    stored_sets.store_set(PROJECT, d, {"out/summary.json": '{"n": 2}', "out/.summary.json.metadata": meta(2),
                                       "out/plot.txt": "p\n", "out/.plot.txt.metadata": meta(2)},
                          run_id="rund", finished="2026-12-01T10:00:00+00:00", tasks=tasks)
    stored_sets.store_set(PROJECT, e, {"out/summary.json": '{"n": 2}', "out/.summary.json.metadata": meta(3),
                                       "out/plot.txt": "p\n", "out/.plot.txt.metadata": meta(3)},
                          run_id="rune", finished="2026-12-02T10:00:00+00:00", tasks=tasks)
    with start_lab(server_root, home, expose_app=True) as server, new_page(console=True) as page:
        load_lab(page, server.lab_url())
        page.wait_for_function("() => window.jupyterapp?.commands.hasCommand('soopervisor:compare')", timeout=60_000)
        compare(page, commit=c, runId="runc", other=d, otherRunId="rund")
        v = view(page)
        v.locator(tid("sv-compare-file")).first.wait_for()
        # the metadata files are folded under the list; the changed product names its task
        assert listed(page) == [("out/summary.json", "changed")]
        row = v.locator(f'{tid("sv-compare-file")}[data-name="out/summary.json"]')
        assert row.locator(tid("sv-compare-task")).inner_text() == "task clean"
        toggle = v.locator(tid("sv-compare-toggle-metadata"))
        assert toggle.inner_text() == "Show 2 ploomber metadata files"
        toggle.click()
        v.locator(f'{tid("sv-compare-file")}[data-name="out/.plot.txt.metadata"]').wait_for()
        assert [n for n, _ in listed(page)] == ["out/.plot.txt.metadata", "out/.summary.json.metadata",
                                                "out/summary.json"]
        assert v.locator(tid("sv-compare-toggle-metadata")).inner_text() == "Hide 2 ploomber metadata files"
        # a metadata file is JSON: its changed keys; the head names its task
        diff = choose(page, "out/.plot.txt.metadata")
        assert "timestamp" in diff.inner_text()
        assert "task plots" in v.locator(".sv-diff-head").inner_text()
        # a build of the same products: only the metadata differs, and the list says so
        compare(page, commit=d, runId="rund", other=e, otherRunId="rune")
        note = page.locator(VIEW).locator(tid("sv-compare-no-files"))
        note.wait_for()
        assert note.inner_text() == "The products are the same: only ploomber’s metadata differs."
        assert page.locator(VIEW).locator(tid("sv-compare-toggle-metadata")).inner_text() == \
            "Show 2 ploomber metadata files"

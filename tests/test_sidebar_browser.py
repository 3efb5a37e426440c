"""The JupyterLab sidebar in a real browser, against a real server and Docker.

Starts ``jupyter lab`` with the soopervisor server extension and the prebuilt
labextension (js/, built by ``npm run build``), drives Debian's Chromium with
Playwright, and runs a real sample pipeline from the panel.
"""
from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest

import soopervisor
from tests.lab_browser import (
    REPO,
    JupyterLab,
    docker_image,
    new_page,
    open_panel,
    screenshot,
    start_lab,
    tid,
    widen_sidebar,
)
from tests.projects import PIPELINE, commit_all, function_task, make_project, write

playwright = pytest.importorskip("playwright.sync_api")

ARTIFACTS = REPO / "test-artifacts"
RUN_TIMEOUT_MS = 300_000  # the first environment build takes ~70 s


@pytest.fixture
def lab(request, server_root: Path, home: Path):
    with start_lab(server_root, home, image=docker_image(request)) as server:
        yield server


@pytest.fixture
def page(lab: JupyterLab):
    with new_page() as page:
        yield page


# a task event of the run's log (soopervisor/progress.py): the progress view shows it its own way
TASK_LINE = "--> soopervisor: task "


def assert_log_is_the_file(page, log_path: str) -> None:
    """No line lost or duplicated: one element per line of the run's log file, in order. A line
    shows what a terminal would (the text after its last \\r); a task event line is marked as one
    (logview.ts shows it as progress, or hides it)."""
    on_disk = Path(log_path).read_bytes().decode().split("\n")[:-1]  # lines end in \n; \r is no end
    rows = page.locator(f'{tid("sv-log")} .sv-log-line')
    shown = rows.evaluate_all(
        "els => els.map(e => e.classList.contains('sv-log-line--task') ? '<task>' : e.innerText || e.textContent)"
    )
    expected = ["<task>" if line.startswith(TASK_LINE) else line.rsplit("\r", 1)[-1] or "\u200b" for line in on_disk]
    assert shown == expected


def wait_for_run_start_and_growth(page) -> list[int]:
    """Line counts of the log seen while the run ran: they must grow."""
    detail = page.locator(tid("sv-run-detail"))
    log = page.locator(tid("sv-log"))
    counts: list[int] = []
    deadline = time.monotonic() + RUN_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        status = detail.get_attribute("data-status")
        n = int(log.get_attribute("data-lines") or 0)
        if status in ("queued", "running"):
            if not counts or n != counts[-1]:
                counts.append(n)
        elif status is not None:
            break
        time.sleep(0.1)
    return counts


def sample_run_until(page, lab: JupyterLab, status: str) -> None:
    """Open the panel on proj, start a sample run, wait until the selected run has ``status``."""
    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()
    page.locator(tid("sv-run-sample")).click()
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=sv-run-detail]')?.dataset.status === '{status}'",
        timeout=RUN_TIMEOUT_MS,
    )


@pytest.mark.docker
def test_sample_run_from_the_sidebar(engine, lab: JupyterLab, page, server_root: Path, home: Path):
    project = make_project(server_root)  # server_root/proj
    commit = soopervisor.validate(project).project.commit

    open_panel(page, lab, "proj")  # the file browser opens proj: the panel validates it
    ok = page.locator(tid("sv-validation-ok"))
    ok.wait_for()
    assert "proj is valid" in ok.inner_text()
    # the run list loads on its own request, maybe after the validation's: wait for it, not a snapshot
    page.locator(tid("sv-runs-empty")).wait_for(state="visible")
    widen_sidebar(page)
    screenshot(page, "sidebar-valid.png", panel_only=False)

    sample = page.locator(tid("sv-run-sample"))
    assert sample.is_enabled()
    sample.click()

    # the new run is selected and its log streams in while it runs
    row = page.locator(f'{tid("sv-run-row")}.sv-run--selected')
    row.wait_for()
    run_id = row.get_attribute("data-run-id")
    counts = wait_for_run_start_and_growth(page)
    assert len([n for n in counts if n > 0]) >= 2, f"the log did not grow while running: {counts}"

    detail = page.locator(tid("sv-run-detail"))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=sv-run-detail]').dataset.status === 'succeeded'",
        timeout=RUN_TIMEOUT_MS,
    )
    page.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()
    log_text = page.locator(tid("sv-log")).inner_text()
    assert "==> soopervisor:" in log_text
    # no line lost or duplicated: the browser's log is the run's log file
    assert_log_is_the_file(page, soopervisor.get_run(run_id).log_path)
    assert row.get_attribute("data-status") == "succeeded"
    assert detail.locator(tid("sv-run-stop")).count() == 0
    screenshot(page, "sidebar-run-log.png")

    # the commit's artifacts: listed, expandable, downloadable
    commit_row = page.locator(f'{tid("sv-commit-row")}[data-commit="{commit}"]')
    commit_row.wait_for(timeout=30_000)
    commit_row.locator(tid("sv-commit-toggle")).click()
    file_row = commit_row.locator(f'{tid("sv-commit-file")}[data-name="output/data.csv"]')
    file_row.wait_for()
    with page.expect_download() as info:
        file_row.locator(tid("sv-file-download")).click()
    download = info.value
    assert download.suggested_filename == "data.csv"
    arts = soopervisor.get_artifacts(commit, project="proj")
    assert Path(download.path()).read_bytes() == arts.path("output/data.csv").read_bytes()

    with page.expect_download() as info:
        commit_row.locator(tid("sv-commit-zip")).click()
    names = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())).namelist()
    assert "output/data.csv" in names and ".soopervisor/manifest.json" in names

    screenshot(page, "sidebar-artifacts.png")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#soopervisor-panel").screenshot(path=str(ARTIFACTS / "sidebar.png"))

    # after a reload the run history comes back from the server
    open_panel(page, lab, "proj")
    page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="succeeded"]').wait_for()


@pytest.mark.docker
def test_failed_run_shows_the_failing_tail(engine, lab: JupyterLab, page, server_root: Path):
    project = make_project(server_root, function_task("print('about to fail')\nraise RuntimeError('boom')"))
    assert soopervisor.validate(project).ok

    sample_run_until(page, lab, "failed")
    failure = page.locator(tid("sv-failure"))
    failure.wait_for()
    assert "emit" in failure.inner_text()  # the failed task
    assert failure.locator(tid("sv-docs")).get_attribute("href").endswith("#pipeline-failed")
    tail = page.locator(".sv-log-line--fail")
    page.wait_for_function("() => document.querySelectorAll('.sv-log-line--fail').length > 0")
    texts = tail.all_inner_texts()
    assert texts[-1].startswith("!!! soopervisor:")
    assert len(texts) <= 30
    assert any("boom" in t for t in texts)
    widen_sidebar(page)
    screenshot(page, "sidebar-failed.png")
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#soopervisor-panel").screenshot(path=str(ARTIFACTS / "sidebar-failed.png"))


@pytest.mark.docker
def test_reload_resumes_a_running_run_and_stop_cancels_it(engine, lab: JupyterLab, page, server_root: Path):
    make_project(server_root, function_task("print('sleeping now', flush=True)\nimport time\ntime.sleep(300)"))
    open_panel(page, lab, "proj")
    page.locator(tid("sv-validation-ok")).wait_for()
    page.locator(tid("sv-run-full")).click()
    log = page.locator(tid("sv-log"))
    page.wait_for_function(
        "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('sleeping now')",
        timeout=RUN_TIMEOUT_MS,
    )
    run_id = page.locator(f'{tid("sv-run-row")}.sv-run--selected').get_attribute("data-run-id")
    before = log.locator(".sv-log-line").all_inner_texts()

    # a reload finds the running run again and follows its log from line 0
    open_panel(page, lab, "proj")
    page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-run-id="{run_id}"][data-status="running"]').wait_for()
    page.wait_for_function(
        f"() => document.querySelectorAll('[data-testid=sv-log] .sv-log-line').length >= {len(before)}"
    )
    assert log.locator(".sv-log-line").all_inner_texts()[: len(before)] == before

    # the record changes every few seconds for what the header does not show (the owner renews its
    # lease): the header is not redrawn for that, so the keyboard's focus stays on Stop
    stop = page.locator(tid("sv-run-stop"))
    stop.focus()
    stop.evaluate("el => { el.dataset.focusedByTest = '1'; }")
    lease = soopervisor.get_run(run_id).lease_until
    deadline = time.monotonic() + 60
    while soopervisor.get_run(run_id).lease_until == lease:
        assert time.monotonic() < deadline, "the run's lease was not renewed within 60 s"
        time.sleep(0.5)
    page.wait_for_timeout(4_000)  # the panel's next polls of the runs carry the renewed record
    assert page.evaluate("() => document.activeElement?.dataset.focusedByTest") == "1"
    page.keyboard.press("Enter")
    page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="cancelled"]').wait_for(timeout=90_000)
    assert page.locator(tid("sv-run-stop")).count() == 0
    assert soopervisor.get_run(run_id).status == "cancelled"


@pytest.mark.docker
def test_log_resumes_after_dropped_connections_without_loss_or_duplicates(engine, lab: JupyterLab, page, server_root):
    make_project(server_root)
    urls: list[str] = []

    def flaky(ws) -> None:
        """The first two log connections drop right after their first message."""
        urls.append(ws.url)
        server = ws.connect_to_server()
        if len(urls) > 2:
            return  # forwarded untouched

        def forward_once(message) -> None:
            ws.send(message)
            ws.close()
            server.close()

        server.on_message(forward_once)

    page.route_web_socket(re.compile(r".*/soopervisor/api/runs/[^/]+/log.*"), flaky)
    sample_run_until(page, lab, "succeeded")
    page.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()
    run_id = page.locator(f'{tid("sv-run-row")}.sv-run--selected').get_attribute("data-run-id")

    starts = [int(re.search(r"[?&]from=(\d+)", u)[1]) for u in urls]
    assert len(starts) >= 3 and starts[0] == 0 and starts[1] > 0 and starts[2] > starts[1], urls
    assert_log_is_the_file(page, soopervisor.get_run(run_id).log_path)


def test_invalid_project_disables_runs_and_says_why(lab: JupyterLab, page, server_root: Path):
    project = make_project(server_root)
    (project / "pipeline.yaml").unlink()
    commit_all(project, "no pipeline")

    open_panel(page, lab, "proj")
    page.locator(f'{tid("sv-validation")}[data-path="proj"][data-state="invalid"]').wait_for()
    problems = page.locator(tid("sv-problem"))
    assert problems.count() >= 1
    assert "pipeline" in problems.first.inner_text()
    # each problem links its troubleshooting entry
    link = page.locator(f'{tid("sv-problem")}[data-code="no-pipeline"] {tid("sv-docs")}')
    assert link.get_attribute("href").endswith("/how-to/troubleshooting.html#no-pipeline")
    assert link.get_attribute("target") == "_blank"
    assert page.locator(tid("sv-run-sample")).is_disabled()
    assert "problem" in page.locator(tid("sv-run-blocked")).inner_text()
    widen_sidebar(page)
    screenshot(page, "sidebar-invalid.png")

    # fixing it is picked up by the periodic re-validation (or a refresh)
    write(project, {"pipeline.yaml": PIPELINE})
    commit_all(project, "pipeline back")
    page.locator(".sv-header button").click()
    page.locator(tid("sv-validation-ok")).wait_for()
    assert page.locator(tid("sv-run-sample")).is_enabled()


def test_version_banner_on_mismatch_and_missing_extension(lab: JupyterLab, page, server_root: Path):
    page.route("**/soopervisor/api/version*", lambda route: route.fulfill(json={"version": "9.9.9"}))
    open_panel(page, lab)
    banner = page.locator(tid("sv-version-banner"))
    banner.wait_for()
    text = banner.inner_text()
    assert "9.9.9" in text and soopervisor.__version__ in text
    assert f"pip install soopervisor=={soopervisor.__version__}" in text and "restart" in text

    page.unroute("**/soopervisor/api/version*")
    page.route(
        "**/soopervisor/api/version*",
        lambda route: route.fulfill(status=404, json={"error": "not found", "hint": None}),
    )
    open_panel(page, lab)
    banner.wait_for()
    assert "not running" in banner.inner_text()
    assert page.locator(tid("sv-run-sample")).is_disabled()


def test_frontend_version_is_the_python_version():
    """The sidebar compares its own version with the server's: they ship together."""
    import json

    package = json.loads((REPO / "js" / "package.json").read_text())
    assert package["name"] == "soopervisor"
    assert package["version"] == soopervisor.__version__
    built = REPO / "jupyter_ext" / "labextension" / "package.json"
    if built.exists():
        assert json.loads(built.read_text())["version"] == soopervisor.__version__

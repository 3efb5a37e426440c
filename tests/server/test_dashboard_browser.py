"""The dashboard of `soopervisor serve` in a real browser, against a real server, git remote and Docker.

`soopervisor serve --port 0` runs as a subprocess over a file:// bare remote
holding a small ploomber project; an admin token comes from `serve token
create`; Debian's Chromium under Playwright signs in, sees the repository and
its head, follows the run the server started to its end (the log over the
websocket, the token offered as a subprotocol), and downloads one of its
artifacts (fetch with the bearer header, saved from a blob) whose bytes are the
stored ones. A wrong or revoked token gets a message, never a blank page.

The dashboard must be built (scripts/build-dashboard; scripts/setup does it).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import soopervisor
from tests.conftest import cli
from tests.lab_browser import new_page, tid
from tests.projects import VALID, commit_all, function_task, git, init_repo, write
from tests.server.helpers import server_yaml

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.xdist_group("dashboard")

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "soopervisor" / "server" / "dashboard"
ARTIFACTS = REPO / "test-artifacts"  # screenshots for a look (not tracked)
RUN_TIMEOUT_MS = 300_000  # the first environment build takes ~70 s
LISTENING = re.compile(r"soopervisor serve: listening on (http://\S+)")


def make_remote(tmp_path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A bare remote (sales.git) whose main holds ``files``; and that commit."""
    work = init_repo(tmp_path / "work")
    write(work, files)
    commit = commit_all(work, "first")
    bare = tmp_path / "git" / "sales.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "HEAD:main")
    return bare, commit


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, str]:
    return make_remote(tmp_path, VALID)


def served(tmp_path: Path, bare: Path) -> Path:
    return server_yaml(tmp_path, [{"url": f"file://{bare}", "branches": ["main"], "projects": ["."],
                                   "mode": "sample"}])


def make_token(config: Path, *, admin: bool, name: str) -> str:
    proc = cli("serve", "--config", str(config), "token", "create", *(["--admin"] if admin else []),
               "--name", name, check=0)
    return proc.stdout.strip()


class Server:
    """`soopervisor serve --config F --port 0`, its output in a file; the URL it printed."""

    def __init__(self, config: Path, log: Path) -> None:
        if not (DASHBOARD / "index.html").is_file():
            raise RuntimeError(f"the dashboard is not built in {DASHBOARD}: run scripts/build-dashboard")
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - open while the server runs; stop() closes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "soopervisor", "serve", "--config", str(config), "--port", "0"],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ},
        )
        deadline = time.monotonic() + 60
        while True:
            found = LISTENING.search(self.log())
            if found:
                self.url = found[1]
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"soopervisor serve did not listen:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # stops after the job at hand
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def serve(tmp_path: Path):
    servers: list[Server] = []

    def start(config: Path) -> Server:
        servers.append(Server(config, tmp_path / f"serve-{len(servers)}.log"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
        print(f"--- soopervisor serve log (tail) ---\n{server.log()[-3000:]}")  # shown when the test failed


@pytest.fixture
def page():
    with new_page() as page:
        yield page


def sign_in(page, server: Server, token: str) -> None:
    page.goto(f"{server.url}/")  # redirected to /dashboard/
    page.locator(tid("svd-signin")).wait_for()
    page.get_by_label("API token").fill(token)
    page.locator(tid("svd-signin-submit")).click()


@pytest.mark.docker
def test_sign_in_follow_the_run_and_download_its_artifact(tmp_path, engine, remote, serve, page):
    bare, commit = remote
    config = served(tmp_path, bare)
    token = make_token(config, admin=True, name="dashboard test")
    server = serve(config)

    sign_in(page, server, token)
    # the repository, and the head the poller saw
    repo = page.locator(f'{tid("svd-repo-row")}[data-name="sales"]')
    repo.wait_for()
    repo.locator(f'li[data-branch="main"] code[title="{commit}"]').wait_for()
    assert repo.get_by_role("button", name="Pause").is_visible()  # an admin token has the buttons
    # the engine the queue runs on (no executors: the local one) and its slots, busy or not by now
    engine_row = page.locator(f'{tid("svd-engine-row")}[data-engine="local"]')
    engine_row.wait_for()
    assert engine_row.get_attribute("data-held") == "false"
    assert engine_row.locator(tid("svd-engine-busy")).inner_text() in ("0 of 1", "1 of 1")

    # the run the server started for it: select it from the keyboard, follow it to the end
    run_row = page.locator(tid("svd-run-row")).first
    run_row.wait_for(timeout=RUN_TIMEOUT_MS)
    run_id = run_row.get_attribute("data-run-id")
    run_row.focus()
    page.keyboard.press("Enter")
    detail = page.locator(f'{tid("svd-run-detail")}[data-run-id="{run_id}"]')
    detail.wait_for()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=svd-run-detail]')?.dataset.status === 'succeeded'",
        timeout=RUN_TIMEOUT_MS,
    )
    page.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()
    # every line of the run's log, none lost or doubled
    run = soopervisor.get_run(run_id)
    assert run.project == "sales" and run.commit == commit
    on_disk = Path(run.log_path).read_bytes().decode().split("\n")[:-1]
    # one row per line of the file, in order: a task event as a progress row, a redrawn bar as its last state
    shown = page.locator(f'{tid("sv-log")} .sv-log-line').evaluate_all(
        "els => els.map(e => e.classList.contains('sv-log-line--task') ? '<task>' : e.innerText || e.textContent)"
    )
    assert shown == ["<task>" if line.startswith("--> soopervisor: task ") else line.rsplit("\r", 1)[-1] or "\u200b"
                     for line in on_disk]
    assert any(line.startswith("==> soopervisor:") for line in shown)
    assert page.locator(f'{tid("svd-run-row")}[data-run-id="{run_id}"]').get_attribute("data-status") == "succeeded"

    # its artifacts: one file downloaded with the bearer header, byte for byte the stored one
    detail.locator(tid("svd-run-artifacts-toggle")).click()
    file_row = detail.locator(f'{tid("sv-commit-file")}[data-name="output/data.csv"]')
    file_row.wait_for()
    with page.expect_download() as info:
        file_row.locator(tid("sv-file-download")).click()
    download = info.value
    assert download.suggested_filename == "data.csv"
    stored = soopervisor.get_artifacts(commit, project="sales", storage=str(tmp_path / "artifacts"), run=run_id)
    assert Path(download.path()).read_bytes() == stored.path("output/data.csv").read_bytes()
    with page.expect_download() as info:
        detail.locator(tid("sv-commit-zip")).click()
    names = zipfile.ZipFile(io.BytesIO(Path(info.value.path()).read_bytes())).namelist()
    assert "output/data.csv" in names and ".soopervisor/manifest.json" in names

    # an admin pauses and resumes the repository
    repo.get_by_role("button", name="Pause").click()
    page.locator(f'{tid("svd-repo-row")}[data-name="sales"][data-paused="true"]').wait_for()
    repo.get_by_role("button", name="Resume").click()
    page.locator(f'{tid("svd-repo-row")}[data-name="sales"][data-paused="false"]').wait_for()

    # the commit's sets are listed by project too
    page.locator(f'{tid("sv-commit-row")}[data-commit="{commit}"]').wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{scheme}.png"), full_page=True, animations="disabled")
    page.emulate_media(color_scheme="light")

    # the token stays for the tab: a reload is still signed in; signing out forgets it
    page.reload()
    page.locator(f'{tid("svd-repo-row")}[data-name="sales"]').wait_for()
    page.locator(tid("svd-signout")).click()
    page.locator(tid("svd-signin")).wait_for()
    page.reload()
    page.locator(tid("svd-signin")).wait_for()
    assert page.evaluate("() => sessionStorage.length") == 0


@pytest.mark.docker
def test_the_log_streams_while_the_run_runs_and_stop_cancels_it(tmp_path, engine, serve, page):
    bare, _ = make_remote(tmp_path, function_task("print('sleeping now', flush=True)\nimport time\ntime.sleep(300)"))
    config = served(tmp_path, bare)
    server = serve(config)
    sign_in(page, server, make_token(config, admin=True, name="dashboard test"))

    run_row = page.locator(f'{tid("svd-run-row")}[data-status="running"]')
    run_row.wait_for(timeout=RUN_TIMEOUT_MS)
    run_id = run_row.get_attribute("data-run-id")
    run_row.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('sleeping now')",
        timeout=RUN_TIMEOUT_MS,
    )
    assert page.locator(tid("sv-log-state")).get_attribute("data-state") == "live"  # still running

    page.locator(tid("svd-run-stop")).click()
    page.locator(f'{tid("svd-run-row")}[data-run-id="{run_id}"][data-status="cancelled"]').wait_for(timeout=90_000)
    page.locator(f'{tid("sv-log-state")}[data-state="ended"]').wait_for()
    assert page.locator(tid("svd-run-stop")).count() == 0
    assert soopervisor.get_run(run_id).status == "cancelled"


def test_a_wrong_token_says_so_and_a_revoked_one_signs_out(tmp_path, serve, page):
    # a remote that does not exist: its polls fail (no job, no Docker), and the dashboard says so
    config = server_yaml(tmp_path, [{"url": f"file://{tmp_path}/gone/sales.git", "branches": ["main"]}])
    server = serve(config)

    sign_in(page, server, "sv_" + "x" * 43)
    error = page.locator(tid("svd-signin-error"))
    error.wait_for()
    assert "did not accept this token" in error.inner_text()
    assert "token create" in error.inner_text()
    assert page.locator(tid("svd-app")).count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-wrong-token.png"), animations="disabled")

    # a read token signs in and sees the failing repository, without admin buttons
    token = make_token(config, admin=False, name="reader")
    page.get_by_label("API token").fill(token)
    page.locator(tid("svd-signin-submit")).click()
    page.locator(tid("svd-app")).wait_for()
    failing = page.locator(f'{tid("svd-repo-row")}[data-name="sales"] .svd-repo-error')
    failing.wait_for()
    assert "failing" in failing.inner_text()
    page.wait_for_function("() => !document.querySelector('[data-testid=svd-repo-pause]')")
    assert page.get_by_role("button", name="Poll now").count() == 0
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS / "dashboard-read-only.png"), animations="disabled")

    # revoked while the page is open: back to the sign-in form, saying why
    (info,) = [t for t in json.loads(cli("serve", "--config", str(config), "token", "list", "--json",
                                         check=0).stdout) if t["name"] == "reader"]
    cli("serve", "--config", str(config), "token", "revoke", info["id"], check=0)
    page.locator(tid("svd-signin-error")).wait_for(timeout=30_000)
    assert "did not accept this token" in page.locator(tid("svd-signin-error")).inner_text()
    assert page.evaluate("() => sessionStorage.length") == 0

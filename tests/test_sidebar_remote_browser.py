"""The sidebar's "Run on…" choice, in a real JupyterLab and Chromium.

The choice lists the remotes of the server's user (GET /remotes, from the real
remotes file), the run buttons send the chosen one in POST /runs, and a remote run
shows in the runs list marked with where it runs, its log streaming in the same log
view (the Jupyter server's websocket over the run's log file) with the same Stop.

What happens behind POST /runs and the Stop of a remote run is the run service's
(``RunService.start_remote`` and ``stop``, real), the remote's transport is not:
the clients of a team server and of GitHub (soopervisor/remotes/server.py and
github.py) come with their own tests, and until they are on this branch the test
answers those two requests in its own process, where ``LoopbackRemote`` stands for
the remote: the record and the log are written by the real follower
(soopervisor/remotes/follower.py) exactly as for a server's run.
"""
from __future__ import annotations

import json
import queue
import re
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

import soopervisor
from soopervisor import config
from soopervisor.api.handlers import run_json
from soopervisor.remotes import config as remotes
from soopervisor.remotes.base import Submitted
from soopervisor.runs import Run, RunStore, now_iso
from soopervisor.service import RunOptions, RunService
from tests.lab_browser import REPO, JupyterLab, new_page, open_panel, start_lab, tid, widen_sidebar
from tests.projects import make_project

playwright = pytest.importorskip("playwright.sync_api")

TOKEN = "sv-lab-remote-token-5f4e3d2c1b"
ENDED = ("succeeded", "failed", "cancelled", "interrupted")


class LoopbackRemote:
    """A team server as the run service sees it (soopervisor/remotes/base.py's Remote), in this process:
    ``outbox`` takes what the server would send (a list of log lines, or a dict of record fields)."""

    kind = "server"

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.outbox: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.submitted: list[dict] = []

    def submit(self, *, repo_root: str, project: str, commit: str, mode: str) -> Submitted:
        self.submitted.append({"project": project, "commit": commit, "mode": mode})
        return Submitted(ref={"job": len(self.submitted)}, describe=f"server {self.name} ({self.url})")

    def follow(self, ref: dict, start: int, sink, stop: threading.Event) -> bool:
        sink.update(status="running")
        while not stop.is_set():
            if self.cancelled.is_set():
                sink.lines(["the server stopped the run\n"])
                sink.update(status="cancelled", error="cancelled")
                return True
            try:
                item = self.outbox.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, list):
                sink.lines(item)
            else:
                sink.update(**item)
                if item.get("status") in ENDED:
                    return True
        return False

    def cancel(self, ref: dict) -> None:
        self.cancelled.set()


@pytest.fixture
def lab(server_root: Path, home: Path):
    with start_lab(server_root, home) as server:
        yield server


def api_path(url: str, tail: str) -> bool:
    """Whether ``url`` is the API route ``tail`` (ServerConnection adds a cache-busting query)."""
    return re.fullmatch(rf".*/soopervisor/api/{tail}", urlparse(url).path) is not None


def test_run_on_lists_the_remotes_and_a_remote_run_shows_marked_with_its_remote(
    lab: JupyterLab, server_root: Path, monkeypatch
):
    project = make_project(server_root)
    remotes.add("ci", "http://127.0.0.1:9/", token=TOKEN)
    ci = LoopbackRemote("ci", "http://127.0.0.1:9")
    monkeypatch.setattr(remotes, "load", lambda name: ci if name == "ci" else pytest.fail(f"remote {name}"))
    # a run of this machine's engine, recorded earlier: marked "local" in the same list
    local_log = Path(config.logs_dir()) / "earlier.log"
    local_log.parent.mkdir(parents=True, exist_ok=True)
    local_log.write_text("done\n")
    commit = soopervisor.validate(project).project.commit
    earlier = RunStore().add(Run(project="proj", project_path=str(project), commit=commit, dirty=False,
                                 mode="sample", status="succeeded", started_at=now_iso(), finished_at=now_iso(),
                                 exit_code=0, log_path=str(local_log), engine="local", executor="docker"))

    service = RunService()
    bodies: list[dict] = []
    started: list = []

    def start(route) -> None:
        """POST /runs as the Jupyter server answers it: start_remote for a body naming a remote."""
        if route.request.method != "POST":
            route.continue_()
            return
        body = route.request.post_data_json
        bodies.append(body)
        path = server_root / body["path"]
        active = service.start_remote(RunOptions(path=str(path), sample=body["mode"] == "sample"), remote=body["remote"])
        started.append(active)
        route.fulfill(status=201, json=run_json(active.run))

    def stop(route) -> None:
        run_id = urlparse(route.request.url).path.split("/")[-2]
        route.fulfill(json=run_json(service.stop(run_id, wait=60)))

    with new_page(console=True) as page:
        try:
            page.route(lambda url: api_path(url, "runs"), start)
            page.route(lambda url: api_path(url, "runs/[^/]+/stop"), stop)
            open_panel(page, lab, "proj")
            page.locator(tid("sv-validation-ok")).wait_for()
            page.locator(f'{tid("sv-run-row")}[data-run-id="{earlier.id}"]').wait_for()

            # the choice: this machine, then the user's remotes (github always exists)
            choice = page.locator(tid("sv-run-on"))
            choice.wait_for()
            page.wait_for_function("() => document.querySelectorAll('[data-testid=sv-run-on] option').length === 3")
            options = choice.locator("option")
            assert options.evaluate_all("os => os.map(o => [o.value, o.textContent])") == [
                ["", "This machine"], ["ci", "ci (team server)"], ["github", "github (GitHub Actions)"]]
            assert choice.input_value() == ""
            assert page.locator('label[for="sv-run-on-select"]').inner_text() == "Run on"

            choice.select_option("ci")
            assert "on ci" in page.locator(tid("sv-run-sample")).get_attribute("title")
            page.locator(tid("sv-run-sample")).click()

            # the new run is selected, marked with its remote; the earlier one with its engine
            row = page.locator(f'{tid("sv-run-row")}.sv-run--selected')
            row.wait_for()
            run_id = row.get_attribute("data-run-id")
            assert bodies == [{"path": "proj", "mode": "sample", "remote": "ci"}]  # no secrets, image, storage
            assert ci.submitted == [{"project": ".", "commit": commit, "mode": "sample"}]
            assert run_id == started[0].run.id
            assert row.get_attribute("data-where") == "ci"
            assert row.locator(tid("sv-run-where")).inner_text() == "on ci"
            assert row.locator(tid("sv-run-where")).get_attribute("title") == "server ci (http://127.0.0.1:9)"
            assert "on ci" in row.get_attribute("aria-label")
            others = page.locator(f'{tid("sv-run-row")}[data-run-id="{earlier.id}"]')
            assert others.get_attribute("data-where") == "local"
            assert others.locator(tid("sv-run-where")).inner_text() == "on local"

            # what the server sends streams into the same log view, and the run shows running
            ci.outbox.put(["==> soopervisor: build pipeline\n", "remote line one\n"])
            page.wait_for_function(
                "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('remote line one')")
            ci.outbox.put(["remote line two\n"])
            page.wait_for_function(
                "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('remote line two')")
            page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="running"]').wait_for()
            widen_sidebar(page)
            (REPO / "test-artifacts").mkdir(exist_ok=True)
            page.locator("#soopervisor-panel").screenshot(path=str(REPO / "test-artifacts" / "sidebar-run-on.png"))

            # the same Stop: the run service asks the remote, the end comes through the follower
            page.locator(tid("sv-run-stop")).click()
            page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="cancelled"]').wait_for(
                timeout=90_000)
            assert ci.cancelled.is_set()
            page.wait_for_function(
                "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('the server stopped the run')")
            assert page.locator(tid("sv-run-stop")).count() == 0
            recorded = soopervisor.get_run(run_id)
            assert (recorded.status, recorded.remote, recorded.where) == ("cancelled", "ci", "ci")

            # a token never reaches the page
            assert TOKEN not in page.content()
            for r in json.loads(lab.get("soopervisor/api/runs"))["runs"]:
                assert "remote_ref" not in r
            assert TOKEN not in lab.get("soopervisor/api/remotes").decode()
        finally:
            for active in started:
                active.detach()
                active.wait(30)

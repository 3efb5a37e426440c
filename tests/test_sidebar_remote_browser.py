"""The sidebar's "Run on…" choice, in a real JupyterLab and Chromium.

The choice lists the remotes of the server's user (GET /remotes, from the real
remotes file), the run buttons send the chosen one in POST /runs, and a remote run
shows in the runs list marked with where it runs, its log streaming in the same log
view (the Jupyter server's websocket over the run's log file) with the same Stop.

The first test controls what the remote sends, line by line: it answers POST /runs
and the Stop in its own process with the real run service (``start_remote``,
``stop``) over ``LoopbackRemote``, which stands for the remote's transport; the
record and the log are written by the real follower (soopervisor/remotes/follower.py)
exactly as for a server's run. The last ones are real end to end: `soopervisor serve`
on loopback running the pushed commit in Docker, JupyterLab starting, following and
stopping the run in its own process.
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
from soopervisor.remotes.base import RemoteUnavailable, Submitted
from soopervisor.runs import Run, RunStore, now_iso
from soopervisor.service import RunOptions, RunService
from tests.lab_browser import REPO, JupyterLab, new_page, open_panel, start_lab, tid, widen_sidebar
from tests.projects import make_project
from tests.sets import store_set

playwright = pytest.importorskip("playwright.sync_api")

TOKEN = "sv-lab-remote-token-5f4e3d2c1b"
ENDED = ("succeeded", "failed", "cancelled", "interrupted")


class LoopbackRemote:
    """A team server as the run service sees it (soopervisor/remotes/base.py's Remote), in this process:
    ``outbox`` takes what the server would send (a list of log lines, a dict of record fields, or
    ``{"ref": {...}}``: what the follower learns late, such as the server's own run id)."""

    kind = "server"

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.outbox: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.submitted: list[dict] = []

    def submit(self, *, repo_root: str, project: str, commit: str, mode: str) -> Submitted:
        self.submitted.append({"project": project, "commit": commit, "mode": mode})
        ref = {"job": len(self.submitted), "loopback": id(self)}
        return Submitted(ref=ref, describe=f"server {self.name} ({self.url})")

    def follow(self, ref: dict, start: int, sink, stop: threading.Event) -> bool:
        if ref.get("loopback") != id(self):
            # a run it did not queue (another follower of this process found one): never its lines
            raise RemoteUnavailable(f"job {ref.get('job')} is not one of this test's")
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
            elif "ref" in item:
                sink.ref(**item["ref"])
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
    lab: JupyterLab, server_root: Path, tmp_path: Path, monkeypatch
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

            # a run that succeeds at the remote: its files are read from the remote's storage, under
            # the remote's own run id (what the follower learnt), in the run view
            ci.cancelled.clear()
            page.locator(tid("sv-run-full")).click()
            page.locator(f'{tid("sv-run-row")}.sv-run--selected:not([data-run-id="{run_id}"])').wait_for()
            second = started[1].run.id
            ci_storage = tmp_path / "ci-storage"
            store_set("proj", commit, {"output/data.csv": "a,b\n1,2\n"}, run_id="srv-run-2", storage=str(ci_storage))
            ci.outbox.put({"ref": {"run": "srv-run-2"}})
            ci.outbox.put({"status": "succeeded", "exit_code": 0, "storage_url": str(ci_storage)})
            page.locator(f'{tid("sv-run-row")}[data-run-id="{second}"][data-status="succeeded"]').wait_for()
            page.locator(tid("sv-run-open-view")).click()
            view = page.locator(f'{tid("sv-runview")}[data-run-id="{second}"]')
            assert view.locator(tid("sv-rv-where")).inner_text() == "ci"
            file_row = view.locator(f'{tid("sv-rv-file")}[data-name="output/data.csv"]')
            file_row.wait_for()
            with page.expect_download() as info:
                file_row.locator(".sv-download").click()
            assert Path(info.value.path()).read_bytes() == b"a,b\n1,2\n"
            assert view.locator(tid("sv-rv-open-commit")).count() == 0  # the commit view reads the settings' storage

            # a token never reaches the page
            assert TOKEN not in page.content()
            for r in json.loads(lab.get("soopervisor/api/runs"))["runs"]:
                assert "remote_ref" not in r
            assert TOKEN not in lab.get("soopervisor/api/remotes").decode()
        finally:
            for active in started:
                active.detach()
                active.wait(30)


# -- against a real team server ---------------------------------------------------------------------


@pytest.fixture
def team(tmp_path: Path, home: Path, request):
    """A served repository (its pipeline pauses ``request.param`` seconds at the end), the remote
    `team` added by the real command, and JupyterLab on the folder of the work clone."""
    from tests.conftest import cli
    from tests.projects import VALID
    from tests.server.test_app import Remote, Served
    from tests.server.test_remote_server import SECRET, run_token, served_config, task

    remote = Remote(tmp_path, {**VALID, **task(pause=getattr(request, "param", 0))})
    config_file = served_config(tmp_path, remote)
    server = Served(config_file, env={"DB_PASSWORD": SECRET, "SOOPERVISOR_HOME": str(tmp_path / "server-home")})
    token = run_token(config_file)
    try:
        cli("remote", "add", "team", server.url, "--token-stdin", check=0, input=token + "\n")
        with start_lab(tmp_path, home) as lab, new_page(console=True) as page:
            yield remote, lab, page, token, SECRET
    finally:
        server.stop()


def start_on_team(page, lab: JupyterLab, remote, mode: str = "sample") -> str:
    """Open the panel on the work clone, choose `team`, start a run; its id."""
    open_panel(page, lab, remote.work.name)
    page.locator(tid("sv-validation-ok")).wait_for()
    page.wait_for_function("() => document.querySelectorAll('[data-testid=sv-run-on] option').length === 3")
    page.locator(tid("sv-run-on")).select_option("team")
    page.locator(tid(f"sv-run-{mode}")).click()
    row = page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-where="team"]')
    row.wait_for()
    assert row.locator(tid("sv-run-where")).inner_text() == "on team"
    return row.get_attribute("data-run-id")


@pytest.mark.docker
def test_a_sample_run_on_the_team_server_from_the_sidebar(team):
    remote, lab, page, token, secret = team
    run_id = start_on_team(page, lab, remote)
    page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="succeeded"]').wait_for(timeout=600_000)
    page.wait_for_function("() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('done')")
    shown = page.locator(f'{tid("sv-log")} .sv-log-line').all_inner_texts()
    assert [line for line in shown if line.startswith("line ")] == [f"line {i}" for i in range(5)], shown
    assert "the password is ***" in shown
    assert secret not in page.content() and token not in page.content()

    run = soopervisor.get_run(run_id)
    assert (run.remote, run.status, run.commit) == ("team", "succeeded", remote.head())
    # the run view reads its files from the server's storage, under the server's run id
    page.locator(tid("sv-run-open-view")).click()
    view = page.locator(f'{tid("sv-runview")}[data-run-id="{run_id}"]')
    view.locator(tid("sv-rv-files")).wait_for()
    assert view.locator(tid("sv-rv-where")).inner_text() == "team"
    assert view.locator(tid("sv-rv-file")).count() >= 1


@pytest.mark.docker
@pytest.mark.parametrize("team", [600], indirect=True)
def test_stop_in_the_sidebar_cancels_the_run_at_the_team_server(team):
    remote, lab, page, _token, _secret = team
    run_id = start_on_team(page, lab, remote, "full")
    page.wait_for_function("() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('line 4')",
                           timeout=600_000)
    page.locator(tid("sv-run-stop")).click()
    page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="cancelled"]').wait_for(timeout=120_000)
    assert page.locator(tid("sv-run-stop")).count() == 0
    run = soopervisor.get_run(run_id)
    assert (run.remote, run.status) == ("team", "cancelled")
    assert "done" not in Path(run.log_path).read_text().splitlines()


# -- against GitHub Actions (the stateful GitHub API fake on loopback) -------------------------------


def test_a_run_on_github_from_the_sidebar_streams_its_steps(server_root: Path, home: Path):
    """The remote `gh` is a GitHub API (the fake, in this process); JupyterLab dispatches the workflow
    and follows the run in its own process, as for github.com."""
    from soopervisor.github import workflow
    from tests.fakes.github_api import FakeGitHub
    from tests.projects import commit_all, git

    repo, token = "octo/proj", "ghp_sidebarTestToken0123456789abcdefXYZ"
    steps = ["Set up job", "Run actions/checkout@v5", "Run the pipeline", "Complete job"]
    project = make_project(server_root)
    workflow.write(project, storage="s3://bucket/team")
    commit_all(project, "workflow")
    git(project, "remote", "add", "origin", f"git@github.com:{repo}.git")
    sha = git(project, "rev-parse", "HEAD").strip()
    with FakeGitHub(token=token) as fake:
        fake.add_repo(repo)
        fake.token_permissions["actions"] = "write"
        fake.add_workflow()
        fake.set_head("main", sha)
        remotes.add("gh", fake.api_url, kind="github", token=token)
        with start_lab(server_root, home) as lab, new_page(console=True) as page:
            open_panel(page, lab, "proj")
            page.locator(tid("sv-validation-ok")).wait_for()
            page.wait_for_function("() => document.querySelectorAll('[data-testid=sv-run-on] option').length === 3")
            names = page.locator(f'{tid("sv-run-on")} option').all_inner_texts()
            assert names == ["This machine", "gh (GitHub Actions)", "github (GitHub Actions)"]
            page.locator(tid("sv-run-on")).select_option("gh")
            page.locator(tid("sv-run-sample")).click()
            row = page.locator(f'{tid("sv-run-row")}.sv-run--selected[data-where="gh"]')
            row.wait_for()
            run_id = row.get_attribute("data-run-id")
            assert row.locator(tid("sv-run-where")).get_attribute("title") == f"GitHub Actions {repo}"
            assert fake.last_run().inputs == {"mode": "sample"}

            gh_run = fake.last_run().id
            fake.start_run(gh_run, steps)
            fake.start_step(gh_run, 1)
            page.wait_for_function(
                "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('step 1/4')",
                timeout=60_000)
            for n, name in enumerate(steps, 1):
                if n > 1:
                    fake.start_step(gh_run, n)
                fake.finish_step(gh_run, n, f"{name} printed {token}", took=n)
            fake.conclude(gh_run)
            page.locator(f'{tid("sv-run-row")}[data-run-id="{run_id}"][data-status="succeeded"]').wait_for(
                timeout=60_000)
            page.wait_for_function(
                "() => document.querySelector('[data-testid=sv-log]')?.innerText.includes('Complete job printed')",
                timeout=60_000)
            shown = page.locator(f'{tid("sv-log")} .sv-log-line').all_inner_texts()
            assert [line for line in shown if line.endswith(" printed ***")] == [f"{n} printed ***" for n in steps]
            assert token not in page.content()
            run = soopervisor.get_run(run_id)
            assert (run.remote, run.status, run.commit) == ("gh", "succeeded", sha)

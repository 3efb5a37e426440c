"""The sidebar with 1,000 commits: how long until the list is rendered, and the
longest main-thread task while it renders (target: none over 200 ms).

Baseline, in the same run and the same browser page: loading the lab page
without the panel open. Also checks that a poll with unchanged data touches no
row (no DOM mutation in the list).

    python benchmarks/sidebar_render.py [N_COMMITS]
"""
from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import LONGTASKS
from playwright.sync_api import sync_playwright

import soopervisor
from soopervisor.artifacts import write_manifest
from soopervisor.storage.local import LocalStorage
from tests.lab_browser import JupyterLab, chromium
from tests.projects import make_project

LONG_TASK_TARGET_MS = 200



def seed(storage: Path, project: str, n: int) -> None:
    """``n`` complete artifact sets, one tiny file each, through the storage API."""
    st = LocalStorage(storage)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            src = Path(tmp) / str(i)
            (src / "files" / "output").mkdir(parents=True)
            (src / "files" / "output" / "data.csv").write_text(f"x\n{i}\n")
            commit = hashlib.sha1(f"commit {i}".encode()).hexdigest()
            when = start + timedelta(minutes=i)
            write_manifest(
                src, project=project, commit=commit, dirty=False, mode="sample" if i % 3 else "full",
                status="succeeded" if i % 10 else "failed", exit_code=0 if i % 10 else 1,
                started_at=when, finished_at=when + timedelta(seconds=30), run_id=f"run{i}",
            )
            st.put_set(project, commit, f"run{i}", src)


def max_longtask(page, since: float) -> tuple[float, int]:
    tasks = page.evaluate("() => window.__longtasks")
    durations = [d for start, d in tasks if start >= since]
    return max(durations, default=0.0), len(durations)


def main(n: int = 1000) -> None:
    work = Path(tempfile.mkdtemp(prefix="soopervisor-bench-sidebar-"))
    root, home = work / "root", work / "home"
    root.mkdir()
    project_dir = make_project(root, name="bench")
    project = soopervisor.validate(project_dir).project.name
    t = time.perf_counter()
    seed(home / "artifacts", project, n)
    print(f"seeded {n} commits in {time.perf_counter() - t:.1f}s")

    with JupyterLab(root, env={"SOOPERVISOR_HOME": str(home)}) as lab, sync_playwright() as p, chromium(p) as browser:
        t = time.perf_counter()
        body = lab.get(f"soopervisor/api/projects/{project}/commits")
        api_ms = (time.perf_counter() - t) * 1000
        print(f"GET /projects/{project}/commits: {len(body) // 1024} KiB in {api_ms:.0f} ms (server side, first call)")

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(LONGTASKS)

        # baseline: the lab page, file browser listing the project, panel closed
        t = time.perf_counter()
        page.goto(lab.lab_url("bench"))
        page.locator(".jp-DirListing-item").first.wait_for(timeout=120_000)
        page.locator('.jp-SideBar [data-id="soopervisor-panel"]').wait_for()
        baseline_ms = (time.perf_counter() - t) * 1000
        page.wait_for_timeout(1000)  # let the page settle before the panel opens
        base_task, _ = max_longtask(page, 0)

        # the panel: click its tab, wait until every commit row is built
        since = page.evaluate("() => performance.now()")
        t = time.perf_counter()
        page.locator('.jp-SideBar [data-id="soopervisor-panel"]').click()
        page.locator('[data-testid="sv-commits-list"][data-rendered]').wait_for(timeout=60_000)
        first_ms = (time.perf_counter() - t) * 1000
        page.wait_for_function(
            f"""() => {{
                const l = document.querySelector('[data-testid=sv-commits-list]');
                return l && l.dataset.complete === 'true' && l.dataset.total === '{n}'
                    && l.querySelectorAll('[data-testid=sv-commit-row]').length === {n};
            }}""",
            timeout=120_000,
        )
        panel_ms = (time.perf_counter() - t) * 1000
        panel_task, panel_count = max_longtask(page, since)

        # scroll through the whole list: rows must not block either
        since = page.evaluate("() => performance.now()")
        page.evaluate("""async () => {
            const l = document.querySelector('[data-testid=sv-commits-list]');
            for (let y = 0; y < l.scrollHeight; y += l.clientHeight) {
                l.scrollTop = y;
                await new Promise(r => requestAnimationFrame(r));
            }
        }""")
        scroll_task, _ = max_longtask(page, since)
        shots = Path(__file__).resolve().parents[1] / "test-artifacts"
        shots.mkdir(exist_ok=True)
        page.locator("#soopervisor-panel").screenshot(path=str(shots / "sidebar-1000-commits.png"))

        # one poll later (every 10 s) with unchanged data: no row is touched
        page.evaluate("""() => {
            window.__mutations = 0;
            new MutationObserver(m => { window.__mutations += m.length; })
                .observe(document.querySelector('[data-testid=sv-commits-list]'),
                         { childList: true, subtree: true, attributes: true, characterData: true });
        }""")
        since = page.evaluate("() => performance.now()")
        page.wait_for_timeout(12_000)
        mutations = page.evaluate("() => window.__mutations")
        poll_task, _ = max_longtask(page, since)
        page.close()

    print(f"lab page without the panel (baseline): {baseline_ms:.0f} ms, longest task {base_task:.0f} ms")
    print(f"panel with {n} commits: first rows after {first_ms:.0f} ms, all rendered after {panel_ms:.0f} ms")
    print(f"  ratio to baseline: {panel_ms / baseline_ms:.2f}")
    verdict = "ok" if panel_task <= LONG_TASK_TARGET_MS else "OVER TARGET"
    print(
        f"  longest main-thread task while rendering: {panel_task:.0f} ms ({panel_count} long tasks) "
        f"(target <= {LONG_TASK_TARGET_MS} ms: {verdict}); ratio to the page load's longest {panel_task / max(base_task, 1):.2f}"
    )
    print(f"  scrolling the whole list: longest task {scroll_task:.0f} ms")
    print(f"  a poll with unchanged commits: {mutations} DOM mutations in the list, longest task {poll_task:.0f} ms")
    if panel_task > LONG_TASK_TARGET_MS or mutations:
        sys.exit(1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)

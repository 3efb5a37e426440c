"""How fast a task event printed in the container shows: in the run record, over REST, in the sidebar.

A real run (real Docker, real JupyterLab, Debian's Chromium) of a pipeline of N
function tasks, each printing one stamped plain line (``plain <k> t=<time>``)
and then ending; the runner's ``finished`` event for task k carries the time it
was printed (``at``). The container shares the host's clock, and so does the
browser. Measured for every task:

- record: the run record's ``tasks_done`` reaches k (the store polled every 5 ms);
- REST: ``GET /soopervisor/api/runs/<id>`` says ``tasks_done`` >= k (polled every 10 ms);
- sidebar: the progress element's ``data-done`` reaches k (a MutationObserver in the page);
- baselines, in the same run: the plain line reaching the log file (polled every 5 ms),
  and reaching the sidebar's log.

The issue asks p95 <= 150 ms to the sidebar. The record is written at most four
times a second (a burst of events is one write), so its latency includes that
wait by design; the sidebar follows the log, not the record.

    python benchmarks/progress_latency.py [--tasks 12] [--no-browser]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOME = Path(tempfile.mkdtemp(prefix="soopervisor-progress-bench-"))
os.environ["SOOPERVISOR_HOME"] = str(HOME / "home")

from soopervisor.progress import parse_line  # after SOOPERVISOR_HOME is set
from soopervisor.runs import RunStore

PLAIN = re.compile(r"plain (\d+) t=([\d.]+)")

OBSERVER = """() => {
  window.__sv = {progress: [], plain: {}};
  let last = null;
  new MutationObserver(records => {
    const now = (performance.timeOrigin + performance.now()) / 1000;
    for (const r of records) {
      for (const n of r.addedNodes) {
        const m = n.nodeType === 1 ? /plain (\\d+) t=([\\d.]+)/.exec(n.textContent) : null;
        if (m && !(m[1] in window.__sv.plain)) window.__sv.plain[m[1]] = [Number(m[2]), now];
      }
    }
    const el = document.querySelector('[data-testid=sv-log-progress]');
    const done = el && !el.hidden ? el.dataset.done : undefined;
    if (done !== undefined && done !== last) { last = done; window.__sv.progress.push([Number(done), now]); }
  }).observe(document.body, {subtree: true, childList: true, attributes: true,
                             attributeFilter: ['data-done', 'hidden']});
}"""


def project(n: int) -> Path:
    root = HOME / "root" / "proj"
    root.mkdir(parents=True)
    code = ["import time", "from pathlib import Path", ""]
    tasks = ["tasks:"]
    for k in range(1, n + 1):
        up = ", upstream" if k > 1 else ""
        code += [f"def t{k}(product{up}):", "    time.sleep(0.25)",
                 f"    print(f'plain {k} t={{time.time():.6f}}', flush=True)",
                 "    Path(str(product)).parent.mkdir(parents=True, exist_ok=True)",
                 "    Path(str(product)).write_text('x')"]
        if k > 1:
            code.insert(len(code) - 2, f"    upstream['t{k - 1}']")
        code.append("")
        tasks += [f"  - source: functions.t{k}", f"    product: output/t{k}.txt"]
    (root / "functions.py").write_text("\n".join(code) + "\n")
    (root / "pipeline.yaml").write_text("\n".join(tasks) + "\n")
    (root / "requirements.txt").write_text("# only ploomber\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


class Poller(threading.Thread):
    """Calls ``probe`` every ``every`` seconds until stopped; remembers (value, time) when it changes."""

    def __init__(self, probe, every: float) -> None:
        super().__init__(daemon=True)
        self.probe, self.every, self.seen, self.stop = probe, every, [], threading.Event()

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            try:
                value = self.probe()
            except Exception:  # noqa: BLE001 - the run not recorded yet, the server busy: try again
                value = None
            if value is not None and value != last:
                last = value
                self.seen.append((value, time.time()))
            time.sleep(self.every)


def first_reaching(seen: list[tuple[int, float]], k: int) -> float | None:
    times = [t for value, t in seen if value is not None and value >= k]
    return min(times) if times else None


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summary(name: str, ms: list[float], base: list[float] | None = None) -> str:
    if not ms:
        return f"{name}: no samples"
    text = f"{name}: p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, max {max(ms):.0f} ms (n={len(ms)})"
    if base:
        text += f"; baseline (plain line) p50 {pct(base, 50):.0f} ms, p95 {pct(base, 95):.0f} ms, " \
                f"ratio p95 {pct(ms, 95) / max(pct(base, 95), 0.1):.1f}x"
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--no-browser", action="store_true", help="record and REST only (no JupyterLab, no Chromium)")
    args = parser.parse_args()
    from tests.lab_browser import JupyterLab, chromium, open_panel

    proj = project(args.tasks)
    store = RunStore()

    def newest():
        runs = store.list(limit=1)
        return runs[0] if runs else None

    lab = JupyterLab(proj.parent, env={"SOOPERVISOR_HOME": os.environ["SOOPERVISOR_HOME"]}).start()
    try:
        if args.no_browser:
            cli = subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(proj), "--full"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            measure(lab, newest, args.tasks, None)
            cli.wait(900)
            return
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p, chromium(p) as browser:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            open_panel(page, lab, "proj")
            page.locator('[data-testid="sv-validation-ok"]').wait_for()
            page.evaluate(OBSERVER)
            page.locator('[data-testid="sv-run-full"]').click()
            measure(lab, newest, args.tasks, page)
    finally:
        lab.stop()


def measure(lab, newest, n: int, page) -> None:
    deadline = time.monotonic() + 900
    run = None
    while run is None and time.monotonic() < deadline:
        run = newest()
        time.sleep(0.05)
    if run is None:
        sys.exit("no run was recorded")
    run_id = run.id

    def rest() -> int | None:
        req = urllib.request.Request(f"{lab.url}/soopervisor/api/runs/{run_id}",
                                     headers={"Authorization": f"token {lab.token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read()).get("tasks_done")

    log_arrivals: dict[int, tuple[float, float]] = {}
    offset = [0]

    def log_tail() -> int | None:
        with open(run.log_path, "rb") as f:
            f.seek(offset[0])
            data = f.read()
        end = data.rfind(b"\n") + 1
        offset[0] += end
        now = time.time()
        for m in PLAIN.finditer(data[:end].decode("utf-8", "replace")):
            log_arrivals.setdefault(int(m.group(1)), (float(m.group(2)), now))
        return len(log_arrivals)

    record = Poller(lambda: (RunStore().get(run_id) or run).tasks_done, 0.005)
    api = Poller(rest, 0.01)
    tail = Poller(log_tail, 0.005)
    for p in (record, api, tail):
        p.start()
    while time.monotonic() < deadline:
        current = RunStore().get(run_id)
        if current is not None and current.finished:
            break
        time.sleep(0.2)
    time.sleep(1.0)  # the last updates reach every view
    for p in (record, api, tail):
        p.stop.set()
    final = RunStore().get(run_id)
    if final is None or final.status != "succeeded":
        sys.exit(f"the run did not succeed: {final and final.error}")
    text = Path(final.log_path).read_bytes().decode("utf-8", "replace")
    finished = {e.done: e.at for e in (parse_line(line) for line in text.split("\n")) if e and e.event == "finished"}
    if sorted(finished) != list(range(1, n + 1)) or None in finished.values():
        sys.exit(f"expected {n} finished events with a time, got {sorted(finished)}")

    def latencies(seen) -> list[float]:
        out = []
        for k, at in finished.items():
            t = first_reaching(seen, k)
            if t is not None:
                out.append((t - at) * 1000)
        return out

    base_log = [(now - t) * 1000 for t, now in log_arrivals.values()]
    print(f"{n} tasks, run {run_id}")
    print(summary("event -> run record (store polled every 5 ms)", latencies(record.seen), base_log))
    print(summary("event -> REST run JSON (polled every 10 ms)", latencies(api.seen), base_log))
    ok = True
    if page is not None:
        got = page.evaluate("() => window.__sv")
        side = latencies([(int(d), t) for d, t in got["progress"]])
        base_side = [(now - t) * 1000 for t, now in got["plain"].values()]
        print(summary("event -> sidebar progress (MutationObserver)", side, base_side))
        ok = bool(side) and len(side) == n and pct(side, 95) <= 150
        print(f"target: sidebar p95 <= 150 ms: {'met' if ok else 'NOT met'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

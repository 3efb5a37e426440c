"""The jupyter_server extension under load, against a real `jupyter server`.

1. GET /soopervisor/api/runs?limit=100 with 10,000 runs in the store, against
   GET /api/status of the same server (baseline); target p50 < 50 ms.
2. First-log-line latency: a line appended to a running run's log file until a
   websocket client following /runs/{id}/log receives it; target p95 < 100 ms.

No Docker needed: runs are records and log files written straight into the store.
Usage: python benchmarks/server_endpoints.py [REQUESTS] [LINES]
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
LINES = int(sys.argv[2]) if len(sys.argv) > 2 else 100
N_RUNS = 10_000
TOKEN = "soopervisor-bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def fill_store(n: int) -> str:
    """``n`` finished runs over 20 projects, plus one running run; its id."""
    from soopervisor import config
    from soopervisor.runs import Run, RunStore, lease_until, process_started, this_host

    store = RunStore()
    for i in range(n):
        stamp = f"2026-01-01T00:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 1000:03d}Z"
        store.add(
            Run(
                project=f"proj{i % 20}",
                project_path=f"/work/proj{i % 20}",
                commit=f"{i:040x}",
                dirty=False,
                mode="sample",
                status="succeeded",
                exit_code=0,
                started_at=stamp,
                finished_at=stamp,
                log_path=f"/nowhere/{i}.log",
            )
        )
    log = config.logs_dir() / "live.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    live = store.add(
        Run(
            project="live",
            project_path="/work/live",
            commit="f" * 40,
            dirty=False,
            mode="sample",
            status="running",
            started_at="2027-01-01T00:00:00.000Z",
            log_path=str(log),
            # owned by this process, with a lease for the benchmark's length: readers reap a
            # running run whose owner is gone, and this one must stay live
            owner_host=this_host(),
            owner_pid=os.getpid(),
            owner_started=process_started(os.getpid()),
            lease_until=lease_until(3600),
        )
    )
    return live.id


def start_server(home: str, root: str, port: int, confdir: str) -> subprocess.Popen:
    Path(confdir, "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"soopervisor_jupyter": True}}})
    )
    env = {**os.environ, "SOOPERVISOR_HOME": home, "JUPYTER_CONFIG_DIR": confdir}
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "server",
        "--no-browser",
        f"--IdentityProvider.token={TOKEN}",
        f"--port={port}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.port_retries=0",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root
    with open(Path(home) / "server.log", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/soopervisor/api/version", headers={"Authorization": f"token {TOKEN}"})
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"the jupyter server did not start; see {Path(home) / 'server.log'}")


def timed_gets(conn: http.client.HTTPConnection, path: str) -> float:
    start = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"token {TOKEN}"})
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200:
        sys.exit(f"GET {path} answered {resp.status}: {body[:300]!r}")
    return elapsed * 1000


def bench_runs_list(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # keep-alive for both
    runs_path, status_path = "/soopervisor/api/runs?limit=100", "/api/status"
    for _ in range(20):  # warm up imports, SQLite pages, the connection
        timed_gets(conn, runs_path)
        timed_gets(conn, status_path)
    runs, status = [], []
    for _ in range(REQUESTS):  # interleaved: both see the same machine noise
        status.append(timed_gets(conn, status_path))
        runs.append(timed_gets(conn, runs_path))
    r50, r95, s50, s95 = (
        percentile(runs, 50),
        percentile(runs, 95),
        percentile(status, 50),
        percentile(status, 95),
    )
    print(f"GET /soopervisor/api/runs?limit=100 ({N_RUNS:,} runs in the store, {REQUESTS} requests):")
    print(
        f"  p50 {r50:.2f} ms, p95 {r95:.2f} ms vs baseline GET /api/status p50 {s50:.2f} ms, p95 {s95:.2f} ms"
    )
    print(
        f"  -> ratio {r50 / s50:.2f} (p50), {r95 / s95:.2f} (p95); target p50 < 50 ms: "
        f"{'OK' if r50 < 50 else 'MISSED'}"
    )


async def bench_first_line(port: int, run_id: str, log: Path) -> None:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    from soopervisor.runs import RunStore, now_iso

    url = f"ws://127.0.0.1:{port}/soopervisor/api/runs/{run_id}/log"
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {TOKEN}"}))
    latencies: list[float] = []
    f = await asyncio.to_thread(open, log, "a", encoding="utf-8")
    with f:
        for i in range(LINES):
            # random gaps: a line lands anywhere in the server's polling period
            await asyncio.sleep(random.uniform(0.03, 0.08))
            sent = time.perf_counter()
            f.write(f"line {i}\n")
            f.flush()
            msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout=10))
            received = time.perf_counter()
            if msg["type"] != "lines" or msg["from"] != i or msg["lines"] != [f"line {i}\n"]:
                sys.exit(f"unexpected message for line {i}: {msg}")
            latencies.append((received - sent) * 1000)
    store = RunStore()
    store.update(store.get(run_id), status="succeeded", exit_code=0, finished_at=now_iso())
    end = json.loads(await asyncio.wait_for(ws.read_message(), timeout=10))
    ws.close()
    if end["type"] != "end":
        sys.exit(f"expected the end message, got {end}")
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    print(f"first-log-line latency over the websocket ({LINES} lines appended to a running run's log):")
    print(
        f"  p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(latencies):.1f} ms; target p95 < 100 ms: "
        f"{'OK' if p95 < 100 else 'MISSED'}"
    )


def main() -> None:
    home = tempfile.mkdtemp(prefix="soopervisor-bench-home-")
    root = tempfile.mkdtemp(prefix="soopervisor-bench-root-")
    confdir = tempfile.mkdtemp(prefix="soopervisor-bench-jupyter-")
    os.environ["SOOPERVISOR_HOME"] = home  # this process writes the store the server reads
    start = time.perf_counter()
    live_id = fill_store(N_RUNS)
    print(f"stored {N_RUNS:,} runs with RunStore.add in {time.perf_counter() - start:.1f}s")
    port = free_port()
    server = start_server(home, root, port, confdir)
    try:
        bench_runs_list(port)
        from soopervisor.runs import RunStore

        asyncio.run(bench_first_line(port, live_id, Path(RunStore().get(live_id).log_path)))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()

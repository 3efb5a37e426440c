"""`remote_first_line.py [N]`: a line printed in the server's container -> the same line in the notebook widget.

A real `soopervisor serve` on 127.0.0.1 runs a one-task pipeline that prints `STAMP <time>` lines;
this process starts the run with `soopervisor.run(..., remote="bench")` and a LogWidget as its
line sink, and notes when each STAMP line shows in the widget's text (read every 2 ms). The
container and this process share the machine's clock, so the delay is exact: container print ->
server's log file -> its websocket -> the follower here (record, log file) -> the widget.

Baseline, measured in the same run: the same pipeline run on this machine's engine into a
LogWidget (the container's output straight into the run's log stream). Target (the issue): the
first line within 1 s of the container printing it; the ratio to the local run is printed.
Usage: python benchmarks/remote_first_line.py [N]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import comm
from comm import DummyComm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import median
from serve_first_log import Server, image

from tests.projects import VALID, function_task, git, make_project

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3
comm.create_comm = lambda *a, **kw: DummyComm(*a, **kw)  # no kernel: the widget's model stays here

TASK = function_task("import time\nfor i in range(4):\n    print('STAMP', repr(time.time()), flush=True)\n"
                     "    time.sleep(0.5)\n")


def first_stamp_delay(widget, run, deadline: float) -> float:
    """Seconds between the first STAMP line's time and its showing in ``widget``."""
    while time.monotonic() < deadline and not (run.finished and "STAMP " not in widget.text):
        text = widget.text
        at = text.find("STAMP ")
        if at >= 0 and "\n" in text[at:]:
            now = time.time()
            return now - float(text[at:].split("\n", 1)[0].split()[1])
        time.sleep(0.002)
    sys.exit(f"no STAMP line reached the widget; run {run.id} {run.status}: {run.error}\n{widget.text[-3000:]}")


def one(soopervisor, work: Path, remote: str | None) -> float:
    from soopervisor_jupyter.widget import LogWidget

    widget = LogWidget()
    # forced here: an incremental run would find the task up to date and print nothing (the server forces its runs)
    run = soopervisor.run(str(work), sample=False, wait=False, on_line=widget.append, remote=remote,
                          force=True if remote is None else None)
    widget.attach(run)
    delay = first_stamp_delay(widget, run, time.monotonic() + 600)
    if not widget.wait(600) or run.status != "succeeded":
        sys.exit(f"run {run.id} ended {run.status}: {run.error}")
    return delay


def main() -> None:
    img = image()
    root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-remote-"))
    os.environ.update(SOOPERVISOR_HOME=str(root / "home"), SOOPERVISOR_CONFIG_DIR=str(root / "config"),
                      SOOPERVISOR_NO_KEYRING="1", SOOPERVISOR_IMAGE=img)
    work = make_project(root, {**VALID, **TASK}, name="bench")
    bare = root / "git" / "bench.git"
    bare.parent.mkdir()
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "HEAD:main")
    config = root / "server.yaml"
    config.write_text(json.dumps({
        "storage": str(root / "artifacts"), "database": str(root / "server.sqlite"), "mirrors": str(root / "mirrors"),
        "image": img, "poll_interval": 3600,
        "repositories": [{"url": f"file://{bare}", "name": "bench", "branches": ["nothing-pushed-here"]}]}))
    server_env = {**os.environ, "SOOPERVISOR_HOME": str(root / "server-home")}
    token = subprocess.run([sys.executable, "-m", "soopervisor", "serve", "--config", str(config), "token", "create",
                            "bench", "--scope", "run"], env=server_env, check=True, capture_output=True,
                           text=True).stdout.strip()
    os.environ["SOOPERVISOR_REMOTE_BENCH_TOKEN"] = token
    import soopervisor
    from soopervisor.remotes import config as remotes

    remotes.add("bench", "http://127.0.0.1:1")  # the URL is set once the server listens
    server = Server(config, server_env)
    try:
        remotes.add("bench", server.url)
        one(soopervisor, work, None)  # warm-up: builds the environment image both use
        remote_delays, local_delays = [], []
        for i in range(N):
            (work / "notes.md").write_text(f"round {i}\n")
            git(work, "add", "-A")
            git(work, "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "-m", f"round {i}")
            git(work, "push", "-q", "origin", "HEAD:main")
            local_delays.append(one(soopervisor, work, None))
            remote_delays.append(one(soopervisor, work, "bench"))
            print(f"round {i + 1}: remote {remote_delays[-1]:.3f}s, local {local_delays[-1]:.3f}s")
    finally:
        server.stop()
    value, base = median(remote_delays), median(local_delays)
    print(f"container print -> widget, remote run on a loopback server (median of {N}): {value:.3f}s -> "
          f"{'met' if value <= 1 else 'NOT met'} (target <= 1 s)")
    print(f"remote {value:.3f}s vs local run {base:.3f}s -> ratio {value / base:.2f}")


if __name__ == "__main__":
    main()

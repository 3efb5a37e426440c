"""`serve_first_log.py [N]`: commit pushed → the run's first log line, through a real `soopervisor serve`.

A bare remote on disk (file://) served with a poll interval of an hour (the issue's
"poll interval aside": the webhook is what makes the server look). Each of N rounds
pushes a commit, sends the signed webhook GitHub would send, finds the new run through
GET /soopervisor/api/runs and follows its log over the websocket (the token as the
browser sends it, a subprotocol); the time is from the push to the first log line
received. A first round, not counted, builds the environment image the others reuse.

Baseline, measured in the same run: `docker run --rm IMAGE sh -c 'echo line'` of the
same image until its line is read — the least any run that starts a container can take.
Target (the issue): the first line within 2 s; the ratio against the bare container is printed.
Usage: python benchmarks/serve_first_log.py [N]
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from _common import median

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.projects import commit_all, git, make_project

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECRET = "bench-webhook-secret-0123456789"
#: the first line a run's container writes (its first stage starting); the lines before it are the server's
CONTAINER = "==> soopervisor: "


def image() -> str:
    """The image the tests run on: SOOPERVISOR_IMAGE, the public default, or the offline one."""
    import docker

    from soopervisor import config

    client = docker.from_env()
    for name in filter(None, [os.environ.get("SOOPERVISOR_IMAGE"), config.DEFAULT_IMAGE, config.OFFLINE_IMAGE]):
        try:
            client.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    sys.exit("no base image in the engine; run scripts/setup")


def bare_container(img: str) -> float:
    """Seconds from `docker run` to its first line of output."""
    start = time.perf_counter()
    proc = subprocess.Popen(["docker", "run", "--rm", img, "sh", "-c", "echo line"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    took = time.perf_counter() - start
    proc.wait()
    return took


class Server:
    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "soopervisor", "serve", "--config", str(config),
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "listening on" in line:
                self.url = line.split("listening on ", 1)[1].strip()
                break
        else:
            sys.exit("the server did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # drain

    def get(self, path: str, token: str) -> dict:
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def webhook(self, name: str) -> None:
        body = json.dumps({"ref": "refs/heads/main", "after": "0" * 40}).encode()
        sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"{self.url}/soopervisor/api/webhook/{name}", data=body, method="POST",
                                     headers={"X-Hub-Signature-256": sig, "X-GitHub-Event": "push",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 200

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(300)


def first_lines(server: Server, token: str, commit: str, start: float,
                deadline: float) -> tuple[str, str, float, float]:
    """The run of ``commit`` (found through the API), its first log line, and the seconds from
    ``start`` to its first line and to the first line its container wrote (over the websocket)."""
    from tornado import websocket

    while True:
        runs = server.get("/soopervisor/api/runs?limit=5", token)["runs"]
        run = next((r for r in runs if r["commit"] == commit), None)
        if run:
            break
        if time.monotonic() > deadline:
            sys.exit(f"no run of {commit[:12]} appeared")
        time.sleep(0.01)

    async def follow() -> tuple[str, float, float]:
        url = server.url.replace("http://", "ws://") + f"/soopervisor/api/runs/{run['id']}/log?from=0"
        conn = await websocket.websocket_connect(url, subprotocols=["soopervisor", f"soopervisor.bearer.{token}"])
        first, first_at = "", 0.0
        while (msg := await conn.read_message()) is not None:
            data = json.loads(msg)
            if data["type"] != "lines" or not data["lines"]:
                continue
            now = time.perf_counter() - start
            if not first:
                first, first_at = data["lines"][0], now
            if any(line.startswith(CONTAINER) for line in data["lines"]):
                conn.close()
                return first, first_at, now
        sys.exit(f"run {run['id']} ended before its container wrote a line")

    first, first_at, container_at = asyncio.run(follow())
    return run["id"], first, first_at, container_at


def wait_end(server: Server, token: str, run_id: str) -> str:
    while True:
        run = server.get(f"/soopervisor/api/runs/{run_id}", token)
        if run["status"] not in ("running", "queued"):
            return run["status"]
        time.sleep(0.2)


def main() -> None:
    img = image()
    root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-serve-"))
    work = make_project(root, name="bench")  # the tests' one-task project, committed on main
    bare = root / "git" / "bench.git"
    bare.parent.mkdir()
    git(root, "clone", "-q", "--bare", str(work), str(bare))
    git(work, "remote", "add", "origin", str(bare))
    config = root / "server.yaml"
    config.write_text(json.dumps({
        "storage": str(root / "artifacts"), "database": str(root / "server.sqlite"), "mirrors": str(root / "mirrors"),
        "image": img, "poll_interval": 3600,
        "repositories": [{"url": f"file://{bare}", "name": "bench", "first_sight": "none",
                          "webhook_secret": {"env": "BENCH_WEBHOOK_SECRET"}}]}))
    env = {**os.environ, "SOOPERVISOR_HOME": str(root / "home"), "BENCH_WEBHOOK_SECRET": SECRET}
    token = subprocess.run([sys.executable, "-m", "soopervisor", "serve", "--config", str(config), "token", "create",
                            "--name", "bench"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    server = Server(config, env)
    try:
        # the first poll (at start) records the head; wait for it so that the pushes below are new
        deadline = time.monotonic() + 60
        while not server.get("/soopervisor/api/repositories", token)["repositories"][0]["heads"]:
            if time.monotonic() > deadline:
                sys.exit("the server never polled")
            time.sleep(0.05)
        served, container, baseline = [], [], []
        for i in range(N + 1):
            (work / "notes.md").write_text(f"round {i}\n")
            commit = commit_all(work, f"round {i}")
            start = time.perf_counter()
            git(work, "push", "-q", "origin", "HEAD:main")
            server.webhook("bench")
            run_id, line, took, inside = first_lines(server, token, commit, start, time.monotonic() + 600)
            status = wait_end(server, token, run_id)
            if status != "succeeded":
                sys.exit(f"run {run_id} ended {status}")
            if i == 0:
                print(f"warm-up, not counted (builds the environment image when it is not cached): {took:.3f}s")
                continue
            served.append(took)
            container.append(inside)
            baseline.append(bare_container(img))
            print(f"round {i}: first line {took:.3f}s ({line.strip()[:50]!r}), the container's first line "
                  f"{inside:.3f}s; bare `docker run` {baseline[-1]:.3f}s")
    finally:
        server.stop()
    value, inside, base = median(served), median(container), median(baseline)
    print(f"push -> first log line (median of {N}): {value:.3f}s -> "
          f"{'met' if value <= 2 else 'NOT met'} (target <= 2 s)")
    print(f"push -> the container's first line: {inside:.3f}s vs bare `docker run` first line {base:.3f}s "
          f"-> ratio {inside / base:.2f}")


if __name__ == "__main__":
    main()

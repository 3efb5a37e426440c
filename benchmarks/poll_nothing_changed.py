"""`poll_nothing_changed.py [N] [ROUNDS]`: a poll round of N repositories where nothing changed vs N bare
`git ls-remote` calls (target ratio <= 1.2).

N bare repositories on disk (file://), each with one commit on main. A first round
records their heads (and fetches them); the rounds measured find nothing changed, so
each is one `git ls-remote` per repository plus the poller's bookkeeping (a read and a
write of its SQLite tables). The baseline is the same N `git ls-remote --heads` calls,
one after the other, as the poller makes them. Rounds are interleaved; medians.
Also checks, by counting the jobs, that nothing was queued by the measured rounds.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median, report

from soopervisor.server.config import Repository, ServerConfig
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Queue

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 9


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-poll-"))
    work = root / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    (work / "pipeline.yaml").write_text("tasks: []\n")
    git("add", "-A", cwd=work)
    git("-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "-m", "bench", cwd=work)
    repos = []
    for i in range(N):
        bare = root / "git" / f"repo{i}.git"
        git("clone", "-q", "--bare", str(work), str(bare))
        repos.append(Repository(url=f"file://{bare}", name=f"repo{i}"))
    config = ServerConfig(storage=str(root / "artifacts"), database=str(root / "server.sqlite"),
                          mirrors=str(root / "mirrors"), repositories=tuple(repos))
    queue = Queue(config.database)
    poller = Poller(config, queue)
    first = poller.poll_all()
    assert all(r.error is None and r.new for r in first), [r.error for r in first if r.error]
    queued = queue.counts().get("queued", 0)

    polls, baseline = [], []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for repo in repos:
            subprocess.run(["git", "ls-remote", "--heads", repo.url], capture_output=True, check=True)
        baseline.append(time.perf_counter() - start)
        start = time.perf_counter()
        results = poller.poll_all()
        polls.append(time.perf_counter() - start)
        assert all(r.error is None and not r.new and not r.fetched for r in results)
    assert queue.counts().get("queued", 0) == queued == N, "a round where nothing changed queued something"
    report(f"poll of {N} repositories, nothing changed (median of {ROUNDS})", median(polls), median(baseline),
           "<= 1.2")


if __name__ == "__main__":
    main()

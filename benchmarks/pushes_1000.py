"""`pushes_1000.py [sqlite|postgresql|both]`: 1000 pushes across 100 repositories, the real Poller polling
between rounds: exactly one job per new head, on SQLite and on PostgreSQL (default: both).

100 bare repositories on disk (file://), each cloned once to push from. A first poll
records their first heads (one job each). Then 10 rounds of 100 pushes, each push a new
commit on main of a repository picked at random (seeded): a repository pushed to three
times in a round has one new head when the poller comes, so it gets one job, of its last
commit. After each round one poll of every repository; the jobs it queued must be exactly
the new heads — one per repository that moved, of its head, none for the others. Prints
the counts and the time per poll round; exits 1 when any count is off.

The PostgreSQL is SOOPERVISOR_TEST_POSTGRES's URL, else the one scripts/postgres starts.
"""
from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soopervisor.server.config import Repository, ServerConfig
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Queue
from tests.server.conftest import new_database, start_postgres

REPOS, ROUNDS, PUSHES = 100, 10, 1000
WHICH = sys.argv[1] if len(sys.argv) > 1 else "both"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repositories(root: Path) -> tuple[list[Repository], list[Path]]:
    seed = root / "seed"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    git("-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "--allow-empty", "-m", "first", cwd=seed)
    repos, clones = [], []
    for i in range(REPOS):
        bare = root / "git" / f"repo{i}.git"
        git("clone", "-q", "--bare", str(seed), str(bare))
        clone = root / "work" / f"repo{i}"
        git("clone", "-q", str(bare), str(clone))
        repos.append(Repository(url=f"file://{bare}", name=f"repo{i}"))
        clones.append(clone)
    return repos, clones


def push(clone: Path, n: int) -> str:
    git("-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "--allow-empty", "-m", f"push {n}",
        cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


def run(label: str, database: str, root: Path) -> bool:
    repos, clones = make_repositories(root)
    config = ServerConfig(storage=str(root / "artifacts"), database=database, mirrors=str(root / "mirrors"),
                          repositories=tuple(repos))
    queue = Queue(database)
    poller = Poller(config, queue)
    ok = True
    first = poller.poll_all()
    errors = [r.error for r in first if r.error]
    jobs = {(j.repository, j.commit) for j in queue.list(limit=10_000)}
    ok &= not errors and len(jobs) == REPOS
    print(f"{label}: first poll: {len(jobs)} jobs for {REPOS} first heads" + (f"; errors: {errors[:3]}" if errors else ""))
    rng = random.Random(14)
    pushes, new_heads_total, seconds = 0, 0, []
    for round_ in range(ROUNDS):
        heads: dict[str, str] = {}
        for _ in range(PUSHES // ROUNDS):
            i = rng.randrange(REPOS)
            heads[repos[i].name] = push(clones[i], pushes)
            pushes += 1
        start = time.perf_counter()
        results = poller.poll_all()
        seconds.append(time.perf_counter() - start)
        now = {(j.repository, j.commit) for j in queue.list(limit=10_000)}
        added = now - jobs
        jobs = now
        wanted = set(heads.items())
        errors = [r.error for r in results if r.error]
        right = added == wanted and not errors and sum(len(r.new) for r in results) == len(wanted)
        ok &= right
        new_heads_total += len(wanted)
        print(f"{label}: round {round_ + 1}: {PUSHES // ROUNDS} pushes, {len(wanted)} new heads, "
              f"{len(added)} jobs queued, {len(added & wanted)} of them for a new head, "
              f"poll round {seconds[-1]:.2f} s" + ("" if right else "  <-- WRONG") +
              (f"; errors: {errors[:3]}" if errors else ""))
    total = len(jobs) - REPOS
    ok &= total == new_heads_total and pushes == PUSHES
    print(f"{label}: {pushes} pushes, {new_heads_total} new heads seen by the poller, {total} jobs for them "
          f"(exactly one each: {'yes' if ok else 'NO'}); median poll round of {REPOS} repositories "
          f"{sorted(seconds)[len(seconds) // 2]:.2f} s")
    return ok


def main() -> None:
    ok = True
    if WHICH in ("sqlite", "both"):
        root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-pushes-"))
        ok &= run("sqlite", str(root / "server.sqlite"), root)
    if WHICH in ("postgresql", "postgres", "both"):
        root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-pushes-"))
        try:
            server = start_postgres()
        except RuntimeError as e:
            sys.exit(str(e))
        with contextlib.ExitStack() as stack:
            ok &= run("postgresql", stack.enter_context(new_database(server)), root)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

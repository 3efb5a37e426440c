"""Shared bits of the benchmarks: timing, a scratch project, the CLI."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "sales"


def timed(cmd: list[str], ok_codes: tuple[int, ...] = (0,), **kw) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok_codes:
        sys.exit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def soopervisor(*args: str) -> list[str]:
    return [sys.executable, "-m", "soopervisor", *args]


def scratch_project(requirements: str | None = None) -> Path:
    """A copy of the example project in a new git repository, committed."""
    root = Path(tempfile.mkdtemp(prefix="soopervisor-bench-")) / "bench"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("output"))
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=root, check=True)
    return root


def isolated_home() -> dict[str, str]:
    home = tempfile.mkdtemp(prefix="soopervisor-bench-home-")
    return {**os.environ, "SOOPERVISOR_HOME": home}


def report(name: str, value: float, baseline: float, target: str) -> None:
    print(f"{name}: {value:.3f}s vs baseline {baseline:.3f}s -> ratio {value / baseline:.2f} (target {target})")


median = statistics.median


#: a page's init script recording every long task (>50 ms on the main thread) from its first script on
LONGTASKS = """
window.__longtasks = [];
new PerformanceObserver(list => {
  for (const e of list.getEntries()) window.__longtasks.push([e.startTime, e.duration]);
}).observe({ type: 'longtask', buffered: true });
"""

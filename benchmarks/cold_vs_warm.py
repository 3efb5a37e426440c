"""Warm vs cold `soopervisor run` of a project that installs pandas (target ratio <= 0.25).

The cold run starts without its environment image (removed first), so it
installs pandas and ploomber; the warm runs find the image.
"""
from __future__ import annotations

import subprocess
import sys

from _common import isolated_home, median, report, scratch_project, soopervisor, timed
from warm_run import env_image

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2


def main() -> None:
    project = scratch_project(requirements="pandas\n")
    env = isolated_home()
    timed(soopervisor("run", str(project), "-q"), env=env)
    image = env_image(env)
    cold, warm = [], []
    for _ in range(N):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
        cold.append(timed(soopervisor("run", str(project), "-q"), env=env))
        warm.append(timed(soopervisor("run", str(project), "-q"), env=env))
    report(f"warm vs cold (median of {N})", median(warm), median(cold), "<= 0.25")


if __name__ == "__main__":
    main()

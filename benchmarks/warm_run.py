"""A warm `soopervisor run` (environment cached) vs `docker run` of the same
environment image executing `ploomber build` directly (target ratio <= 1.1, issue 16).

Needs a running engine and a base image (scripts/setup).
"""
from __future__ import annotations

import json
import subprocess
import sys

from _common import isolated_home, median, report, scratch_project, soopervisor, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def env_image(env: dict) -> str:
    runs = json.loads(subprocess.run(soopervisor("runs", "--json"), env=env, capture_output=True, text=True, check=True).stdout)
    run = runs[0]
    # each run keeps its own set: <storage>/<project>/<commit>/<run id>/manifest.json
    with open(f"{run['storage_url']}/{run['project']}/{run['commit']}/{run['id']}/manifest.json") as f:
        manifest = json.load(f)
    return f"soopervisor-env:{manifest['env_hash'][:20]}"


def main() -> None:
    project = scratch_project()
    env = isolated_home()
    timed(soopervisor("run", str(project), "-q"), env=env)  # builds (or finds) the environment image
    image = env_image(env)
    direct = [
        "docker", "run", "--rm", "-v", f"{project}:/workspace", "-w", "/workspace",
        "-e", "PLOOMBER_STATS_ENABLED=false", image, "bash", "-c",
        ("export PATH=/opt/soopervisor/venv/bin:$PATH && "
         "ploomber build --entry-point pipeline.yaml --force --env--sample true"),
    ]
    # --force: the baseline rebuilds every task; an incremental re-run of the commit would skip them all
    warm, baseline = [], []
    for _ in range(N):
        baseline.append(timed(direct))
        warm.append(timed(soopervisor("run", str(project), "-q", "--force"), env=env))
    subprocess.run(["docker", "run", "--rm", "-v", f"{project}:/w", image, "rm", "-rf", "/w/output"], check=False)
    report(f"warm run (median of {N})", median(warm), median(baseline), "<= 1.1")


if __name__ == "__main__":
    main()

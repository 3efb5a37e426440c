"""A warm `soopervisor run --force` of a copy of the example on a three-node swarm vs the same run on
the local Docker engine (target ratio <= 1.3).

Both use the same environment image: built on the local engine by the first run, then pushed to the
swarm's registry and pulled onto its nodes. The swarm run adds the image lookup in the registry, the
exchange (inputs fetched, artifacts uploaded over HTTP), the secrets and the service.
Starts its own swarm and registry (benchmarks/_swarm.py); needs scripts/setup.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from _common import isolated_home, median, report, scratch_project, soopervisor, timed
from _swarm import base_image, bench_swarm, pull_everywhere

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def env_image(env: dict) -> str:
    runs = json.loads(subprocess.run(soopervisor("runs", "--json"), env=env, capture_output=True, text=True,
                                     check=True).stdout)
    run = runs[0]
    with open(f"{run['storage_url']}/{run['project']}/{run['commit']}/{run['id']}/manifest.json") as f:
        return f"soopervisor-env:{json.load(f)['env_hash'][:20]}"


def main() -> None:
    image = base_image()
    project = scratch_project()
    config_dir = Path(tempfile.mkdtemp(prefix="soopervisor-bench-config-"))
    env = {**isolated_home(), "SOOPERVISOR_IMAGE": image, "SOOPERVISOR_CONFIG_DIR": str(config_dir),
           "SOOPERVISOR_NO_KEYRING": "1"}
    env.pop("SOOPERVISOR_EXECUTOR", None)
    timed(soopervisor("run", str(project), "-q", "--executor", "local"), env=env)  # builds the environment
    swarm = bench_swarm()
    try:
        pull_everywhere(swarm, image)
        pull_everywhere(swarm, env_image(env))
        (config_dir / "executors.yaml").write_text(yaml.safe_dump(
            {"executors": {"swarm-a": swarm.entry(constraints=["node.role==worker"])}}))
        timed(soopervisor("run", str(project), "-q", "--force", "--executor", "swarm-a"), env=env)  # first push
        local, on_swarm = [], []
        for _ in range(N):
            local.append(timed(soopervisor("run", str(project), "-q", "--force", "--executor", "local"), env=env))
            on_swarm.append(timed(soopervisor("run", str(project), "-q", "--force", "--executor", "swarm-a"),
                                  env=env))
        runs = json.loads(subprocess.run(soopervisor("runs", "--json"), env=env, capture_output=True, text=True,
                                         check=True).stdout)
        engines = {r["engine"] for r in runs if r["status"] == "succeeded"}
        if engines != {"local", "swarm-a"}:
            sys.exit(f"not every run succeeded where it should: {[(r['engine'], r['status']) for r in runs]}")
        report(f"swarm run vs local run (median of {N})", median(on_swarm), median(local), "<= 1.3")
    finally:
        swarm.stop()


if __name__ == "__main__":
    main()

"""The benchmarks' own three-node swarm (tests/swarm.py), beside any the tests may run."""
from __future__ import annotations

import os
import subprocess
import sys

from _common import REPO

sys.path.insert(0, str(REPO))

from tests.swarm import ROOT, Swarm, start_swarm


def base_image() -> str:
    """SOOPERVISOR_IMAGE, else the public default or the offline base image, whichever the main engine has."""
    from soopervisor import config

    for name in filter(None, (os.environ.get("SOOPERVISOR_IMAGE"), config.DEFAULT_IMAGE, config.OFFLINE_IMAGE)):
        if subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode == 0:
            return name
    sys.exit("no base image in the main engine: run scripts/setup")


def bench_swarm() -> Swarm:
    """A swarm of its own (root, bridges, VXLAN port) so that a test session may run meanwhile."""
    return start_swarm(ROOT.parent / "swarm-bench", tag="bn", data_path_port=4890)


def pull_everywhere(swarm: Swarm, image: str) -> str:
    """``image`` from the main engine into the registry and onto every node (so no run pays a pull)."""
    return swarm.push(image)  # pulls onto every node

"""What the server's tests share: a configuration file and a clock the test moves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def server_yaml(root: Path, repositories: list[dict], *, data: Path | None = None, **top: Any) -> Path:
    """``root/server.yaml`` serving ``repositories``; storage, database and mirrors under ``data``
    (default ``root``), polled every second. ``top`` adds or replaces top-level keys."""
    data = data or root
    config = {"storage": str(data / "artifacts"), "database": str(data / "server.sqlite"),
              "mirrors": str(data / "mirrors"), "poll_interval": 1, "repositories": repositories, **top}
    path = root / "server.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class Clock:
    """A clock the test moves: leases, backoffs and token use expire when it says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

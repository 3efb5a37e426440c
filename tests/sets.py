"""Stored artifact sets for tests, written as a run writes them, without running anything."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from soopervisor.artifacts import write_manifest
from soopervisor.runs import now_iso
from soopervisor.storage import open_storage


def store_set(project: str, commit: str, files: dict[str, str | bytes], *, run_id: str = "r1",
              storage: Any = None, status: str = "succeeded", mode: str = "sample",
              started: Any = None, finished: Any = None, log: str = "log\n", **fields: Any) -> dict[str, Any]:
    """One set: ``files`` (name -> text or bytes) as its products, a log, the manifest; put into
    ``storage`` (a Storage, a URL or folder, None: the default one). ``fields`` go to the manifest.
    Returns the manifest."""
    finished = finished or now_iso()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp)
        (src / "files").mkdir()
        for name, content in files.items():
            path = src / "files" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        (src / "soopervisor.log").write_text(log)
        manifest = write_manifest(src, project=project, commit=commit, run_id=run_id, mode=mode, status=status,
                                  started_at=started or finished, finished_at=finished, **fields)
        target = storage if hasattr(storage, "put_set") else open_storage(storage)
        target.put_set(project, commit, run_id, src)
    return manifest

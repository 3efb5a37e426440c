"""How a report and its hints write paths: relative to the project folder, or as a shell word."""
from __future__ import annotations

import os
import re
from pathlib import Path


def _posix_rel(folder: Path, p: Path) -> str:
    """``p`` relative to ``folder``, with ``..`` when it is above (posix)."""
    return Path(os.path.relpath(p, folder)).as_posix()


def _shown_dir(p: Path) -> str:
    """A folder as a command line names it: relative to the current folder when under it."""
    try:
        rel = p.relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return str(p)
    return rel.as_posix() or "."


def _shell_word(s: str) -> str:
    return s if re.fullmatch(r"[\w./-]+", s) else "'" + s.replace("'", "'\\''") + "'"

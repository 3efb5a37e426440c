"""Reading the project's files within bounds: size before reading, YAML nesting before building.

A hostile or accidental huge file must cost neither time nor memory, and a deeply
nested one must not crash the process.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .model import ERROR, Problem

try:  # the C loader is several times faster; fall back when libyaml is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader

#: the largest YAML file validation reads (pipeline.yaml, env.yaml, environment.yml).
#: Real ones are a few KB (a pipeline of 300 tasks is ~40 KB). Parsing costs
#: ~0.7 s and ~70 MB a MiB with libyaml, so 1 MiB keeps validation under a
#: second; at 10 MiB it would take ~12 s and ~600 MB (a 50 MB file took 104 s, 2.4 GB).
MAX_SPEC_BYTES = 1024**2
#: requirements.txt is read line by line (no parse cost): room for a hashed lock file
MAX_REQUIREMENTS_BYTES = 4 * 1024**2
#: real specs nest ~5 levels; building a document thousands of levels deep crashes PyYAML's C loader
MAX_YAML_DEPTH = 100


def _read_limited(file: Path, name: str, limit: int, code: str, hint: str, problems: list[Problem]) -> bytes | None:
    """``file``'s bytes, or None with a problem when it cannot be read or is larger than ``limit``.

    The size is checked before reading and the read stops at ``limit + 1``
    bytes, so a huge (or growing) file costs neither time nor memory.
    """
    try:
        with open(file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    except OSError as e:
        problems.append(Problem(f"{name} cannot be read: {e.strerror or e}", name, hint, ERROR, code))
        return None
    if size > limit or len(data) > limit:
        shown = f"{size / 1024**2:.1f} MiB" if size > limit else f"more than {_mib(limit)}"  # it grew
        problems.append(Problem(
            f"{name} is too large to validate ({shown}; at most {_mib(limit)})", name,
            f"a {name} is a few KB: keep data out of it (tasks read data from files or databases)",
            ERROR, "file-too-large",
        ))
        return None
    return data


def _mib(n: int) -> str:
    return f"{n / 1024**2:g} MiB"


def _yaml_depth_problem(data: bytes, name: str, code: str) -> Problem | None:
    """A problem when the YAML nests deeper than MAX_YAML_DEPTH, found from parser events.

    libyaml's parser is iterative and cheap (~0.1 s a MiB); building the
    document is recursive, and a few KB of ``[[[[…`` crash the process (a
    segmentation fault, not an exception) before any Python check could run.
    """
    loader = _Loader(data)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, _OPENING):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    return Problem(
                        f"{name} nests deeper than {MAX_YAML_DEPTH} levels", name,
                        f"{name} should nest only a few levels; flatten it",
                        ERROR, code,
                    )
            elif isinstance(event, _CLOSING):
                depth -= 1
    except yaml.YAMLError:
        return None  # the load reports the syntax error, with its line
    finally:
        loader.dispose()
    return None


_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _read_yaml(file: Path, name: str, code: str, hint: str, problems: list[Problem]):
    """Parse ``file``; on failure add a problem naming the line and return ``_BAD``."""
    data = _read_limited(file, name, MAX_SPEC_BYTES, code, hint, problems)
    if data is None:
        return _BAD
    deep = _yaml_depth_problem(data, name, code)
    if deep is not None:
        problems.append(deep)
        return _BAD
    try:
        return yaml.load(data, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        if mark is not None:
            line, col = mark.line + 1, mark.column + 1
            what = f"{name} does not parse: {reason} (line {line}, column {col})"
            where = f"{name}:{line}"
        else:
            what, where = f"{name} does not parse: {reason}", name
        problems.append(Problem(what, where, hint, ERROR, code))
        return _BAD


_BAD = object()

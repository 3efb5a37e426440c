"""Which task made each stored file: the manifest's ``files[].task``.

The build's ``finished`` events name each task's file products as ploomber has
them, absolute paths in the container (soopervisor/script/task_events.py). A
stored file's name is its path relative to the project folder, masked like log
text (a name may hold a secret). So a product path is made relative to the
workdir, masked the same way, and then claims:

- the stored file of that name,
- every stored file under it when it is a folder product,
- its ploomber metadata file, ``dir/.name.metadata``.

The nearest claim wins (a file product inside another task's folder product
belongs to the file's task). Pure: no file is read.
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping

from soopervisor.failure import relative_product


def metadata_of(path: str) -> str:
    """Ploomber's metadata file of a product: ``dir/.name.metadata``."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.metadata")


def claims(products: Mapping[str, Iterable[str]], workdir: str,
           mask: Callable[[str], str] = lambda name: name) -> dict[str, str]:
    """Stored path (a file or a folder) -> task, from each task's product paths in the container.

    ``mask``: the stored name of a relative path (the run's redaction of names).
    A product outside the project folder was not collected and claims nothing.
    When two tasks name one path, the one reported last wins (ploomber does not
    allow it; a task that ran twice is the same task).
    """
    out: dict[str, str] = {}
    for task, paths in products.items():
        for path in paths:
            rel = relative_product(path, workdir)
            if rel is None or rel in ("", "."):
                continue  # outside the project, or the project folder itself: no stored name to claim
            stored = mask(rel)
            out[stored] = task
            out[metadata_of(stored)] = task
    return out


def owners(names: Iterable[str], claimed: Mapping[str, str]) -> dict[str, str]:
    """Each stored name's task: its own claim, else the nearest folder above it that is claimed.

    Names no product claims are left out (their ``task`` is null).
    """
    out: dict[str, str] = {}
    for name in names:
        candidate = name
        while candidate:
            task = claimed.get(candidate)
            if task is not None:
                out[name] = task
                break
            candidate = posixpath.dirname(candidate)
    return out

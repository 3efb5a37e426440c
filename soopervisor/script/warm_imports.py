"""Compile the bytecode a pipeline will need, by importing what the environment was asked for.

Rendered into run.sh and run by the environment stage after uv installs. uv
does not compile bytecode by default, and compiling every installed file
(``--compile-bytecode``) costs more than the install itself (8,000 files for
pandas and scikit-learn: 21 s on two cores) and makes the kept image bigger.
Without bytecode each run compiles what it imports, and throws it away.

So the packages nobody else requires (what the requirements named, and
ploomber) are imported once here: Python writes the bytecode of every module
that import reaches, which is what a pipeline's own ``import`` will reach
again. On an environment built on an earlier one, only what this build
installed is imported. A module imported later only by a task is compiled
when that task imports it. An import that fails (a package that needs a display, say) is
skipped: this is a warm-up, never a reason for the build to fail.

Standard library only: it runs in the project's environment.
"""
import importlib
import os
import re
import sys
import time
from importlib import metadata

#: installers and build tools: never imported by a pipeline
SKIP = {"pip", "setuptools", "wheel", "uv", "packaging"}
#: what the build stage's runner imports itself
ALWAYS = ("ploomber", "ploomber_cli.cli")


def _norm(name):
    return re.sub(r"[-_.]+", "-", name or "").lower()


def graph():
    """Installed distributions by name, and what each requires (installed ones only, extras left out)."""
    dists = {}
    for dist in metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if name and name not in dists:
            dists[name] = dist
    requires = {}
    for name, dist in dists.items():
        needed = set()
        for req in dist.requires or []:
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if match and "extra ==" not in req and _norm(match.group(1)) in dists:
                needed.add(_norm(match.group(1)))
        requires[name] = needed
    return dists, requires


def installed_after(dist, since):
    """Whether ``dist`` was installed after ``since`` (a time; None: this build made the environment)."""
    if since is None:
        return True
    for f in dist.files or []:
        if f.name == "RECORD":
            try:
                return os.path.getmtime(dist.locate_file(f)) > since
            except OSError:
                return True
    return True


def to_import(since=None):
    """What to import: each root (a distribution no other requires) that this build installed;
    for a root installed before, its requirements that this build installed.

    A new environment: the roots, whose imports reach the rest. One built on an
    earlier one (installed after ``since``): only what changed (a new pin of a library scikit-learn needs
    imports that library, not scikit-learn again).
    """
    dists, requires = graph()
    required = set().union(*requires.values()) if requires else set()
    stale = {name for name, dist in dists.items() if installed_after(dist, since)}
    chosen = []
    for name in sorted(dists):
        if name in required or name in SKIP:
            continue
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(requires.get(current, ()))
        if name in stale:
            chosen.append(dists[name])
        else:
            chosen += [dists[n] for n in sorted(seen & stale) if n not in SKIP and dists[n] not in chosen]
    return chosen


def modules(dist):
    """The top-level modules of ``dist``: top_level.txt, else the folders with an __init__.py in RECORD."""
    text = dist.read_text("top_level.txt")
    if text:
        return [m.strip() for m in text.splitlines() if m.strip() and not m.startswith("_")]
    found = set()
    for f in dist.files or []:
        parts = f.parts
        if len(parts) == 2 and parts[1] == "__init__.py" and parts[0].isidentifier():
            found.add(parts[0])
        elif len(parts) == 1 and parts[0].endswith(".py") and parts[0][:-3].isidentifier():
            found.add(parts[0][:-3])
    return sorted(m for m in found if not m.startswith("_"))


def main(marker=""):
    """``marker``: the environment-ready marker; when the build started from an earlier
    environment, what was installed before it is compiled already."""
    start = time.monotonic()
    try:
        since = os.path.getmtime(marker) if marker else None
    except OSError:
        since = None
    chosen = to_import(since)
    names = list(ALWAYS) if any(_norm(d.metadata["Name"]) == "ploomber" for d in chosen) else []
    for dist in chosen:
        names += [m for m in modules(dist) if m not in names]
    done = []
    for name in names:
        try:
            importlib.import_module(name)
            done.append(name)
        except BaseException:  # noqa: BLE001,S112 - a warm-up: whatever an import raises, go on
            continue
    print(f"soopervisor: bytecode compiled by importing {', '.join(done) or 'nothing'} "
          f"in {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))

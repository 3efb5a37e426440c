"""Describe the environment a build made: Python, installer, every installed package (the lock).

Rendered into run.sh and run at the end of ``bash run.sh env``; writes JSON to
the path it is given (``/opt/soopervisor/environment.json`` in the environment
image). The run's manifest records it, so the environment can be rebuilt from
it alone: name and version of every distribution the venv's Python sees, the
installer that put it there (its ``INSTALLER`` file), ``source`` when it came
from a local path or a URL rather than an index, and the sha256 hashes
uv's lock pinned it to when uv resolved the environment (pip records none).

Standard library only: it runs in the project's environment.
"""
import json
import os
import platform
import re
import sys
from importlib import metadata


def _norm(name):
    return re.sub(r"[-_.]+", "-", name or "").lower()


def lock_hashes(path):
    """``{name: [sha256:...]}`` from a uv lock written with --generate-hashes; {} when there is none."""
    hashes, current = {}, None
    try:
        with open(path, encoding="utf-8") as f:
            for raw in f:
                line = raw.strip().rstrip("\\").strip()
                match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", line)
                if match:
                    current = _norm(match.group(1))
                    hashes.setdefault(current, [])
                for found in re.findall(r"--hash=(sha256:[0-9a-f]{64})", line):
                    if current:
                        hashes[current].append(found)
    except OSError:
        return {}
    return hashes


def _source(dist):
    """"local" or "url" when the distribution came from a path or a URL (PEP 610), not an index.

    Only the kind is kept: such a URL may hold a token.
    """
    try:
        data = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return "url"
    if not isinstance(data, dict):
        return None
    return "local" if str(data.get("url", "")).startswith("file:") else "url"


def describe(lock_path):
    hashes = lock_hashes(lock_path) if lock_path else {}
    packages = {}
    for dist in metadata.distributions():
        name = _norm(dist.metadata["Name"])
        if not name or name in packages:  # the venv's own copy comes first on sys.path
            continue
        installer = (dist.read_text("INSTALLER") or "").strip() or None
        entry = {"name": name, "version": dist.version, "installer": installer}
        source = _source(dist)
        if source:
            entry["source"] = source
        if hashes.get(name):
            entry["hashes"] = sorted(set(hashes[name]))
        packages[name] = entry
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sys.platform + "-" + platform.machine(),
        "resolved_by": "uv" if hashes else "pip",
        "packages": [packages[n] for n in sorted(packages)],
    }


def main(out, lock_path=""):
    data = describe(lock_path if lock_path and os.path.exists(lock_path) else "")
    tmp = out + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, out)
    print(f"soopervisor: the environment's {len(data['packages'])} packages are recorded in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

"""Cold runs of a pandas + scikit-learn project: environments filled by uv vs by pip (issue 16).

Three figures, all measured in this run, each a whole `soopervisor run`:

1. pip, today's build: no environment image, an empty download cache;
2. uv with an empty download cache (target <= 0.3 of 1);
3. uv with a warm cache after one changed requirement (a version pin of
   joblib, which scikit-learn needs anyway; target <= 0.15 of 1).

Each figure also prints where its time went: the environment build's stages,
keeping the image (docker commit), the pipeline container. The download cache
is the scratch repository's own volume (SOOPERVISOR_DOWNLOAD_CACHE=repository),
emptied between pip's run and uv's first.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

from _common import isolated_home, report, scratch_project, soopervisor

REQUIREMENTS = "pandas\nscikit-learn\nploomber\n"


def run(project, env, label: str) -> float:
    """One run with its log lines timed; returns the whole run's seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(soopervisor("run", str(project), "-v"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marks, last = [], ""
    assert proc.stdout is not None
    for line in proc.stdout:
        last = line
        if re.match(r"(==>|<==) soopervisor|soopervisor: (environment ready|sample run|full run)", line):
            marks.append((time.perf_counter() - start, line.strip()[:90]))
    code = proc.wait()
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{label}: the run failed ({code}): {last}")
    print(f"-- {label}: {elapsed:.1f}s")
    for at, text in marks:
        print(f"   {at:6.1f}s {text}")
    return elapsed


def commit(project, message: str) -> None:
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qam", message],
                   cwd=project, check=True)


def main() -> None:
    project = scratch_project(requirements=REQUIREMENTS)
    base = {**isolated_home(), "SOOPERVISOR_DOWNLOAD_CACHE": "repository"}
    pip = run(project, {**base, "SOOPERVISOR_INSTALLER": "pip"}, "pip, empty download cache")
    # the same repository, so the same (per-repository) download cache: emptied for uv's cold run
    subprocess.run(soopervisor("cache", "downloads", "--clear", "--repository", str(project)),
                   env=base, capture_output=True, check=True)
    (project / "requirements.txt").write_text(REQUIREMENTS + "# uv\n")
    commit(project, "a new environment for uv")
    cold = run(project, {**base, "SOOPERVISOR_INSTALLER": "uv"}, "uv, empty download cache")
    (project / "requirements.txt").write_text(REQUIREMENTS + "joblib<99\n# uv\n")
    commit(project, "one changed requirement")
    warm = run(project, {**base, "SOOPERVISOR_INSTALLER": "uv"}, "uv, warm cache, one changed requirement")
    report("uv cold vs pip cold", cold, pip, "<= 0.3")
    report("uv warm cache vs pip cold", warm, pip, "<= 0.15")


if __name__ == "__main__":
    main()

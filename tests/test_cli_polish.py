"""Issue 12: a quiet terminal by default, each stage announced once, no repeated tail, no message
about folders never declared, "no such command", and listings that name what they read.

Runs are real (the CLI in a subprocess, real Docker, real git).
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import uuid
from pathlib import Path

from soopervisor.runs import Run, RunStore

from .conftest import cli
from .projects import MAKE_DATA, function_task, make_project

#: what pip prints while it installs: never in the terminal by default
#: what pip or uv print while installing
PIP_LINE = re.compile(r"^(Collecting|Downloading|Installing collected|Successfully installed|Requirement already"
                      r"|Resolved \d+ packages? in|Installed \d+ packages? in| \+ [\w.-]+==)", re.MULTILINE)

#: products declared outside output/: there is no output/ folder in the run
ELSEWHERE = {
    "pipeline.yaml": (
        "tasks:\n"
        "  - source: tasks/make_data.py\n"
        "    product:\n"
        "      nb: results/make_data.ipynb\n"
        "      data: results/data.csv\n"
        "    params:\n"
        "      sample: \"{{sample}}\"\n"
    ),
    "env.yaml": "sample: false\n",
    "tasks/make_data.py": MAKE_DATA,
    # a package: "install project" runs pip in every run, also on a cached environment
    "setup.py": "from setuptools import setup\nsetup(name='polishdemo', version='0.1', py_modules=[])\n",
}


def _env_image(home: Path, project: str = "proj") -> str:
    manifests = sorted((home / "artifacts" / project).glob("*/*/manifest.json"))
    return f"soopervisor-env:{json.loads(manifests[-1].read_text())['env_hash'][:20]}"


def _stored_log(home: Path, project: str = "proj") -> str:
    newest = max((home / "artifacts" / project).glob("*/*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return (newest.parent / "soopervisor.log").read_text()


def _in_a_terminal(*args: str, timeout: float = 600) -> str:
    """The CLI with stdout on a pseudo-terminal (as a user sees it); everything it wrote there."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "soopervisor", *args], stdin=subprocess.DEVNULL,
                            stdout=child, stderr=child, env=os.environ.copy())
    os.close(child)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([main], [], [], timeout)
            assert ready, f"no output for {timeout}s:\n{out.decode(errors='replace')}"
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        assert proc.wait(timeout=timeout) == 0, out.decode(errors="replace")[-3000:]
        os.close(main)
    return out.decode(errors="replace")


def test_cold_run_folds_installer_output_announces_each_stage_once_and_verbose_shows_it(
        tmp_path, engine, home):
    files = dict(ELSEWHERE)
    # a requirement file no other run has: this run builds its environment (cold)
    files["requirements.txt"] = f"# test_cli_polish {uuid.uuid4().hex}\nploomber\n"
    project = make_project(tmp_path, files)
    env_image = None
    try:
        proc = cli("run", str(project), check=0)
        out = proc.stdout
        env_image = _env_image(home)
        log = _stored_log(home)

        assert "environment cache miss" in out
        # the installers' lines are in the stored log, not in the terminal
        assert PIP_LINE.search(log) and not PIP_LINE.search(out), out
        # one summary line per installer stage, nothing else about it
        for stage in ("setup env", "ensure ploomber", "install project"):
            said = [line for line in out.splitlines() if stage in line]
            assert len(said) == 1, (stage, said)
            assert re.fullmatch(rf"soopervisor: {stage} done in \d+s \(\d+ lines? of output in the log; -v shows them\)",
                                said[0]), said[0]
            assert log.count(f"==> soopervisor: {stage}\n") == 1
        assert "environment cached" not in out and "environment cached" not in log
        # the pipeline's own output is shown as it comes
        assert "==> soopervisor: build pipeline" in out and "ploomber build" in out
        # products live in results/: no word about the output/ folder nobody declared
        assert "output does not exist" not in out and "output does not exist" not in log
        assert "collected 4 files from: results" in out
        # the run recorded that it used its environment image: `cache list` knows when
        listed = {e["image"]: e for e in json.loads(cli("cache", "list", "--json", check=0).stdout)}
        used = json.loads((home / "env-images.json").read_text())
        assert env_image in used and listed[env_image]["last_used"] == used[env_image]

        # --verbose: the installers' output live (install project runs pip on the cached environment)
        proc = cli("run", str(project), "--full", "-v", check=0)
        out = proc.stdout
        assert "==> soopervisor: install project" in out and PIP_LINE.search(out), out
        assert "polishdemo" in out
        # the cached environment's stages are named once, by the cache hit
        assert [line for line in out.splitlines() if "setup env" in line] == [
            f"soopervisor: environment cache hit ({env_image}): skipping setup env, ensure ploomber and compile bytecode"
        ]

        # in a terminal: one progress line redrawn in place, then the summary
        shown = _in_a_terminal("run", str(project))
        assert "\r\x1b[Kinstall project: installing… " in shown
        assert re.search(r"\r\x1b\[Ksoopervisor: install project done in \d+s \(\d+ lines", shown), shown
        assert not PIP_LINE.search(shown.replace("\r", "\n"))
    finally:
        if env_image:
            engine.images.remove(env_image, force=True)


def test_a_failure_after_a_streamed_log_does_not_repeat_it(tmp_path, engine, home):
    marker = "the-one-line-printed-before-failing"
    project = make_project(tmp_path, function_task(f"print({marker!r}, flush=True)\nraise ValueError('broken')\n"))

    proc = cli("run", str(project), check=1)

    both = proc.stdout + proc.stderr
    assert proc.stdout.count(marker) == 1 and both.count(marker) == 1
    assert "last lines of the log" not in proc.stderr
    assert "✗ run" in proc.stderr and "full log:" in proc.stderr

    # --quiet streamed nothing: then the tail of the log is the failure's context
    proc = cli("run", str(project), "-q", check=1)
    assert marker not in proc.stdout
    assert "last lines of the log" in proc.stderr and 'Error building task "emit"' in proc.stderr


def test_a_failing_installer_stage_shows_its_last_lines_once(tmp_path, engine, home):
    files = function_task("print('never runs')\n")
    files["requirements.txt"] = "soopervisor-no-such-package-issue12==0.0.1\n"
    project = make_project(tmp_path, files)

    proc = cli("run", str(project), check=1)

    out = proc.stdout
    assert "── the last lines of setup env" in out
    assert out.count("No matching distribution found for soopervisor-no-such-package-issue12") == 1
    assert "!!! soopervisor: setup env failed with exit code 1" in out
    assert "last lines of the log" not in proc.stderr  # shown already, just above
    assert "soopervisor-no-such-package-issue12" not in proc.stderr.split("✗ run")[0]


def test_a_mistyped_command_is_no_such_command_with_the_closest(tmp_path):
    proc = cli("rnu", cwd=tmp_path, check=2)
    assert "no such command 'rnu'" in proc.stderr and "did you mean 'run'?" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("artifcats", "list", cwd=tmp_path, check=2)
    assert "no such command 'artifcats'" in proc.stderr and "did you mean 'artifacts'?" in proc.stderr
    proc = cli("serev", cwd=tmp_path, check=2)
    assert "no such command 'serev'" in proc.stderr
    assert "PATH" in proc.stderr or "--help" in proc.stderr

    # an existing folder of that name is the original form's PATH: the project there is checked
    (tmp_path / "serev").mkdir()
    proc = cli("serev", cwd=tmp_path, check=2)
    assert "no such command" not in proc.stderr
    assert "git repository" in proc.stdout + proc.stderr


def test_an_empty_listing_names_the_storage_it_read(tmp_path, home):
    project = make_project(tmp_path)
    proc = cli("artifacts", "list", cwd=project, check=0)
    assert f"no artifacts stored for project 'proj' yet in {home / 'artifacts'}" in proc.stdout
    assert "--storage" in proc.stdout
    other = tmp_path / "elsewhere"
    proc = cli("artifacts", "list", "--storage", str(other), cwd=project, check=0)
    assert f"yet in {other}" in proc.stdout


def test_runs_shows_whole_project_names(home):
    store = RunStore()
    names = ["analytics-monorepo-pipelines-churn", "analytics-monorepo-pipelines-churn-v2", "proj"]
    for name in names:
        store.add(Run(project=name, project_path=f"/src/{name}", commit="a" * 40, dirty=False, mode="full",
                      status="succeeded", started_at="2026-01-01T10:00:00Z", finished_at="2026-01-01T10:00:05Z"))
    lines = cli("runs", check=0).stdout.splitlines()
    assert sorted(line.split()[1] for line in lines[1:]) == sorted(names)
    # one column: the commit starts at the same place on every line
    assert len({line.index("aaaaaaa") for line in lines[1:]}) == 1

"""actionlint on the Action (action.yml) and on every kind of workflow `soopervisor github init` writes.

scripts/actionlint runs rhysd/actionlint (its WebAssembly build, from
tests/npm) plus shellcheck on the `run:` scripts; the broken inputs below show
that a finding really fails it. The wasm build cannot open action.yml while it
checks a workflow, so the workflow's `with:` is checked against action.yml's
inputs here.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from soopervisor.github.workflow import render

ROOT = Path(__file__).resolve().parent.parent
ACTIONLINT = ROOT / "scripts" / "actionlint"
ACTION = ROOT / "action.yml"

VARIANTS = {
    "no storage": {"storage": None},
    "s3": {"storage": "s3://bucket/prefix"},
    "s3 with endpoint": {"storage": "s3://bucket/runs?endpoint_url=http://minio:9000&region=us-east-1"},
    "gdrive": {"storage": "gdrive://soopervisor"},
    "dropbox": {"storage": "dropbox://runs"},
    "onedrive": {"storage": "onedrive://soopervisor/runs"},
    "box": {"storage": "box://0/runs"},
    "sub-folder project": {"storage": "s3://bucket/prefix", "project": "pipelines/churn"},
    "extra secrets": {"storage": "dropbox://runs", "secrets": ["API_KEY", "DB_PASSWORD", "AWS_REGION"]},
    "other action": {"storage": None, "action": "my-org/soopervisor@0123456789abcdef0123456789abcdef01234567"},
}


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(ACTIONLINT), *map(str, files)], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode in (0, 1), f"actionlint could not run (exit {proc.returncode}):\n{proc.stderr}"
    return proc


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / ".github" / "workflows" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_action_yml_passes() -> None:
    assert ACTION.exists(), "action.yml is missing at the repository's root"
    proc = actionlint(ACTION)
    assert proc.returncode == 0, proc.stdout


def test_generated_workflows_pass(tmp_path: Path) -> None:
    # one run for all of them: each run starts the WebAssembly linter once
    paths = [write(tmp_path, f"{n}.yml", render(**kw)) for n, kw in enumerate(VARIANTS.values())]
    proc = actionlint(*paths)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generated_inputs_are_the_actions_inputs(variant: str) -> None:
    inputs = yaml.safe_load(ACTION.read_text())["inputs"]
    step = yaml.safe_load(render(**VARIANTS[variant]))["jobs"]["run"]["steps"][-1]
    assert set(step["with"]) <= set(inputs), set(step["with"]) - set(inputs)
    assert all(name in step["with"] for name, spec in inputs.items() if spec.get("required"))
    assert step["with"]["mode"] == "${{ inputs.mode || 'auto' }}"


# -- the linter catches errors -------------------------------------------------------------------
def test_a_broken_workflow_fails(tmp_path: Path) -> None:
    text = render("s3://bucket/prefix", secrets=["API_KEY"])
    broken = (text.replace("${{ inputs.mode || 'auto' }}", "${{ inputs.mod || 'auto' }}")
                  .replace("cancel-in-progress: true", "cancel-in-progress: maybe"))
    assert broken.count("inputs.mod ") == 1
    path = write(tmp_path, "broken.yml", broken)
    proc = actionlint(path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()

    def line_of(needle: str) -> int:
        return next(n for n, ln in enumerate(broken.splitlines(), 1) if needle in ln)

    assert any(ln.startswith(f"{path}:{line_of('inputs.mod ')}:") and 'property "mod" is not defined' in ln
               for ln in lines), lines
    assert any(ln.startswith(f"{path}:{line_of('cancel-in-progress: maybe')}:") and "boolean" in ln
               for ln in lines), lines


def test_shellcheck_checks_run_scripts(tmp_path: Path) -> None:
    path = write(tmp_path, "shell.yml", (
        "on: push\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.sha }} $UNQUOTED\n"
        "      - run: Write-Output $x\n"
        "        shell: pwsh\n"
    ))
    proc = actionlint(path)
    assert proc.returncode == 1
    assert f"{path}:6:9: shellcheck reported issue in this script: SC2086:" in proc.stdout, proc.stdout
    assert ":7:" not in proc.stdout  # PowerShell is not shell-checked


def test_a_broken_action_fails_at_its_line(tmp_path: Path) -> None:
    text = ACTION.read_text()
    assert "${{ inputs.storage }}" in text
    broken = text.replace("${{ inputs.storage }}", "${{ inputs.storag }}", 1)
    (tmp_path / "action.yml").write_text(broken)
    proc = actionlint(tmp_path / "action.yml")
    assert proc.returncode == 1
    line = next(n for n, ln in enumerate(broken.splitlines(), 1) if "inputs.storag }}" in ln)
    assert f"{tmp_path / 'action.yml'}:{line}:" in proc.stdout and 'property "storag"' in proc.stdout, proc.stdout


def test_a_yaml_syntax_error_fails(tmp_path: Path) -> None:
    path = write(tmp_path, "syntax.yml", "on: push\njobs:\n  a:\n    runs-on: [ubuntu-latest\n")
    proc = actionlint(path)
    assert proc.returncode == 1 and str(path) in proc.stdout


def test_usage_and_missing_file() -> None:
    none = subprocess.run([str(ACTIONLINT)], capture_output=True, text=True, check=False, timeout=60)
    assert none.returncode == 2 and "usage:" in none.stderr
    missing = subprocess.run([str(ACTIONLINT), "/nonexistent/x.yml"], capture_output=True, text=True, check=False, timeout=60)
    assert missing.returncode == 2 and "cannot read /nonexistent/x.yml" in missing.stderr


def test_the_script_is_shellcheck_clean() -> None:
    proc = subprocess.run(["shellcheck", str(ACTIONLINT)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_the_docs_workflow_is_clean() -> None:
    """The repository's own workflow that builds the docs site and publishes it to GitHub Pages."""
    proc = actionlint(ROOT / ".github" / "workflows" / "docs.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr

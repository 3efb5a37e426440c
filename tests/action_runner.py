"""Run a composite action's steps the way a GitHub runner does, for tests.

What a runner gives a step is files and variables: ``GITHUB_*`` variables, an
event file, ``GITHUB_OUTPUT``/``GITHUB_STEP_SUMMARY``/``GITHUB_PATH`` files,
``RUNNER_TEMP``, and ``${{ … }}`` expressions substituted before the step's
``run:`` text reaches ``bash -e``. Only the expressions action.yml needs are
understood (``inputs.X``, ``github.token``, ``steps.ID.outputs.X``); anything
else fails loudly, so the action can't silently grow beyond what is tested.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class Result:
    returncode: int
    stdout: str
    outputs: dict[str, str]
    summary: str
    steps: dict[str, dict[str, str]] = field(default_factory=dict)


def parse_outputs(text: str) -> dict[str, str]:
    """``name=value`` lines and ``name<<DELIM`` … ``DELIM`` blocks, as the runner reads GITHUB_OUTPUT."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            for more in lines:
                if more == delim:
                    break
                value.append(more)
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


def run_action(action_dir: Path, with_: dict[str, str], env: dict[str, str], token: str,
               timeout: float = 900, steps_to_run: tuple[str, ...] | None = None) -> Result:
    """Run ``action_dir/action.yml``'s composite steps; ``env`` holds the GITHUB_* and RUNNER_* variables."""
    spec = yaml.safe_load((action_dir / "action.yml").read_text())
    assert spec["runs"]["using"] == "composite"
    inputs = {name: str(d.get("default", "")) for name, d in spec.get("inputs", {}).items()}
    unknown = set(with_) - set(inputs)
    assert not unknown, f"inputs the action does not declare: {unknown}"
    inputs.update(with_)
    temp = Path(tempfile.mkdtemp(prefix="step-files-", dir=env["RUNNER_TEMP"]))
    steps: dict[str, dict[str, str]] = {}
    stdout, summary_path = [], Path(env["GITHUB_STEP_SUMMARY"])
    path_file = temp / "github_path"
    path_file.touch()
    returncode = 0

    def evaluate(text: str) -> str:
        def one(m: re.Match) -> str:
            expr = m.group(1)
            if expr == "github.token":
                return token
            if expr.startswith("inputs."):
                return evaluate(inputs[expr[len("inputs."):]])
            found = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
            if found:
                return steps.get(found.group(1), {}).get(found.group(2), "")
            raise AssertionError(f"expression the test runner does not know: {expr}")

        return EXPR.sub(one, text)

    for i, step in enumerate(spec["runs"]["steps"]):
        assert "run" in step and step.get("shell") == "bash", f"only bash run steps are supported: {step}"
        if steps_to_run is not None and step.get("name") not in steps_to_run:
            continue
        output_file = temp / f"output_{i}"
        output_file.write_text("")
        extra_path = [p for p in path_file.read_text().splitlines() if p]
        step_env = {**env, "GITHUB_OUTPUT": str(output_file), "GITHUB_PATH": str(path_file),
                    "GITHUB_ACTION_PATH": str(action_dir),
                    "PATH": os.pathsep.join([*reversed(extra_path), env.get("PATH", os.environ["PATH"])])}
        step_env.update({k: evaluate(str(v)) for k, v in (step.get("env") or {}).items()})
        with tempfile.NamedTemporaryFile("w", suffix=".sh", dir=temp, delete=False) as script:
            script.write(evaluate(step["run"]))
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", script.name],
                              cwd=env["GITHUB_WORKSPACE"], env=step_env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        stdout.append(proc.stdout + proc.stderr)
        steps[step.get("id", str(i))] = parse_outputs(output_file.read_text())
        if proc.returncode != 0:
            returncode = proc.returncode
            break
    outputs = {name: evaluate(str(d["value"])) for name, d in spec.get("outputs", {}).items()}
    summary = summary_path.read_text() if summary_path.exists() else ""
    return Result(returncode, "".join(stdout), outputs, summary, steps)

"""ploomber's env.yaml: the values that fill placeholders in products, and the 'sample' key
that makes a sample run possible."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .model import DOCS_ENV, ERROR, WARNING, Problem, Project
from .paths import _posix_rel
from .yaml_files import _BAD, _read_yaml

if TYPE_CHECKING:
    from .entry_points import _Entry


def _env_candidates(folder: Path, spec: Path) -> list[Path]:
    """env.{name}.yaml for pipeline.{name}.yaml, else env.yaml: in the project folder, then
    beside the spec (ploomber's path_to_env_from_spec)."""
    parts = spec.name.split(".")
    names = ([f"env.{parts[1]}.yaml"] if len(parts) >= 3 else []) + ["env.yaml"]
    out: list[Path] = []
    for n in names:
        for d in (folder, spec.parent):
            if d / n not in out:
                out.append(d / n)
    return out


def _inspect_env_yaml(folder: Path, project: Project, problems: list[Problem], key_files: list[str],
                      candidates: list[Path] | None = None, no_env: _Entry | None = None) -> dict:
    """env.yaml's values (for product placeholders); sets ``project.declares_sample``.

    ``candidates``: where the entry point's env file may be, first found wins (default:
    env.yaml in the project folder). ``no_env``: an entry point that takes no env file.
    """
    env: dict = {}
    if no_env is not None and candidates is None:
        problems.append(Problem(
            f"a {no_env.kind.replace('-', ' ')} entry point takes no env.yaml: a sample run builds the "
            "full pipeline and is recorded as full", ".",
            "to have sample runs, use a spec (pipeline.yaml) with env.yaml declaring 'sample: false'"
            + (", or decorate the function with ploomber's @with_env" if no_env.kind == "dotted-path" else "")
            + f"; see {DOCS_ENV}",
            WARNING, "no-sample-key",
        ))
        return env
    candidates = candidates or [folder / "env.yaml"]
    env_yaml = next((c for c in candidates if c.is_file()), candidates[-1])
    env_rel = _posix_rel(folder, env_yaml)
    if env_yaml.is_file():
        key_files.append(env_rel)
        data = _read_yaml(
            env_yaml, env_rel, "env-yaml-unparsable",
            f"fix the YAML syntax of {env_rel}; it must be a mapping such as 'sample: false' ({DOCS_ENV})",
            problems,
        )
        if data is _BAD:
            return env
        data = {} if data is None else data
        if not isinstance(data, dict):
            problems.append(Problem(
                f"{env_rel} must be a mapping of names to values, not a {type(data).__name__}",
                env_rel, f"write {env_rel} as 'key: value' lines, e.g. 'sample: false'",
                ERROR, "env-yaml-invalid",
            ))
            return env
        env = data
        project.declares_sample = "sample" in data
    if not project.declares_sample:
        what = (
            f"{env_rel} has no 'sample' key: a sample run builds the full pipeline and is recorded as full"
            if env_yaml.is_file()
            else "there is no env.yaml: a sample run builds the full pipeline and is recorded as full"
        )
        problems.append(Problem(
            what, env_rel,
            "add 'sample: false' to env.yaml and use {{sample}} in the pipeline "
            f"(e.g. to read fewer rows); see {DOCS_ENV}",
            WARNING, "no-sample-key",
        ))
    return env

"""The environment spec nearest the pipeline (environment.yml, else requirements.txt), up to
the repository root, read into pip requirements. The conda translation is soopervisor/conda.py's."""
from __future__ import annotations

from pathlib import Path

from .model import ERROR, WARNING, Problem, Project
from .paths import _posix_rel
from .yaml_files import _BAD, MAX_REQUIREMENTS_BYTES, _read_limited, _read_yaml

_ENV_SPECS = ("environment.yml", "environment.yaml", "requirements.txt")


def _find_env_spec(folder: Path, top: Path) -> Path | None:
    """The environment spec nearest the project, from its folder up to the repository root;
    environment.yml before requirements.txt in one folder."""
    for d in (folder, *folder.parents):
        for n in _ENV_SPECS:
            if (d / n).is_file():
                return d / n
        if d == top or top not in d.parents:
            break
    return None


def _inspect_env_spec(folder: Path, project: Project, problems: list[Problem], key_files: list[str],
                      image: str | None = None) -> None:
    """The environment spec nearest the project, up to the repository root (environment.yml,
    else requirements.txt, in one folder): sets env_file (relative to the project folder),
    pip_requirements, conda_only."""
    found = _find_env_spec(folder, project.repo_root)
    env_spec = _posix_rel(folder, found) if found is not None else None
    if found is not None and found.name != "requirements.txt":
        project.env_file = env_spec
        key_files.append(env_spec)
        data = _read_yaml(
            found, env_spec, "env-spec-unparsable",
            f"fix the YAML syntax of {env_spec} (conda environment file: 'dependencies:' list)",
            problems,
        )
        if data is _BAD:
            return
        deps = data.get("dependencies") if isinstance(data, dict) else None
        if not isinstance(deps, list):
            problems.append(Problem(
                f"{env_spec} has no 'dependencies' list", env_spec,
                f"add a 'dependencies:' list to {env_spec}, e.g. '- python=3.11', '- pip', "
                "'- pip: [pandas]'",
                ERROR, "env-spec-no-dependencies",
            ))
            return
        from ..conda import translate

        plain: list[str] = []
        for dep in deps:
            if isinstance(dep, dict) and "pip" in dep:
                pip = dep["pip"] or []
                if isinstance(pip, list):
                    # scalars only: str() of a list built from YAML aliases can be exponentially long
                    project.pip_requirements += [str(r) for r in pip if isinstance(r, (str, int, float))]
            elif isinstance(dep, (str, int, float)):
                plain.append(str(dep))
        # without conda in the image, pip installs the plain dependencies PyPI has
        # (before the pip: section, as conda does); conda_only is what it cannot install
        conda = translate(plain)
        project.pip_requirements[:0] = conda.pip
        project.conda_only = conda.dropped
        project.python_pin = conda.python_pin
        _conda_problems(env_spec, project, problems, image)
    elif found is not None:
        project.env_file = env_spec
        key_files.append(env_spec)
        hint = "save requirements.txt as UTF-8 text, one requirement a line"
        data = _read_limited(found, env_spec, MAX_REQUIREMENTS_BYTES,
                             "env-spec-unparsable", hint, problems)
        if data is None:
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(Problem(
                f"{env_spec} cannot be read: {e}", env_spec, hint, ERROR,
                "env-spec-unparsable",
            ))
            return
        for line in text.splitlines():
            s = line.strip()
            if s and not s.startswith("#"):
                project.pip_requirements.append(s)
    else:
        problems.append(Problem(
            "there is no environment spec (environment.yml or requirements.txt) in the project folder "
            "or above it in the repository", ".",
            "add requirements.txt listing the packages the pipeline imports (one a line), "
            "or a conda environment.yml",
            ERROR, "no-env-spec",
        ))


def _conda_problems(env_spec: str, project: Project, problems: list[Problem], image: str | None = None) -> None:
    """Warnings for what an image without conda cannot give: packages pip lacks, the pinned Python."""
    from ..conda import image_for, image_python, pin_met
    from ..config import default_image

    if project.conda_only:
        listed = ", ".join(project.conda_only)
        problems.append(Problem(
            f"{env_spec} lists conda packages pip cannot install: {listed} "
            "(on an image without conda the run installs the other dependencies with pip)",
            env_spec,
            "use an image with micromamba or conda (--image or SOOPERVISOR_IMAGE), move them to the "
            "pip: section under their PyPI names, or remove them if the pipeline does not need them",
            WARNING, "conda-only-deps",
        ))
    if project.python_pin:
        image = image or default_image()  # the run's --image, when it has one
        have = image_python(image)
        if have is not None and pin_met(project.python_pin, have) is False:
            fit = image_for(project.python_pin)
            fix = (f"run on an image with that Python: --image {fit} (or SOOPERVISOR_IMAGE={fit})"
                   if fit else "no Python 3 image meets this pin: fix it")
            problems.append(Problem(
                f"{env_spec} pins {project.python_pin} but the image {image} has Python {have}: "
                "without conda the run uses the image's Python",
                env_spec, f"{fix}, or change the pin to python={have}" if fit else fix,
                WARNING, "python-pin",
            ))

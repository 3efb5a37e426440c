"""environment.yml without conda: conda dependencies through pip, the Python pin, honest sample/full.

The unit tests check the translation (names, spec syntax, the pin); the
validate tests inspect real git projects; the script tests run the rendered
script with bash and fake tools (see test_script.py); the Docker tests run real
projects whose environment.yml lists plain conda dependencies. Those share one
environment.yml, so one environment image serves them all.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from textwrap import dedent

import pytest

from soopervisor.conda import (
    NOT_ON_PYPI,
    PIP_NAMES,
    SYSTEM,
    dropped_cause,
    image_for,
    image_python,
    pin_met,
    python_minors,
    to_pip,
    translate,
)
from soopervisor.project import inspect
from soopervisor.runs import RunStore
from soopervisor.script import env_fingerprint, render

from .conftest import cli
from .projects import commit_all, function_task, make_project, write
from .test_script import FAKE_PYTHON, Harness, project, shellcheck

# ------------------------------------------------------------------ translation


@pytest.mark.parametrize("conda,pip", [
    ("pytorch", "torch"),
    ("scikit-learn", "scikit-learn"),
    ("py-xgboost", "xgboost"),
    ("matplotlib-base", "matplotlib"),
    ("pytables", "tables"),
    ("python-graphviz", "graphviz"),
    ("pyyaml", "pyyaml"),
    ("opencv", "opencv-python"),
    ("tensorflow-base", "tensorflow"),
    ("msgpack-python", "msgpack"),
    ("pandas", "pandas"),
    ("PyYAML", "pyyaml"),  # conda names are lower case; pip does not care
])
def test_names(conda: str, pip: str) -> None:
    assert to_pip(conda) == ("pip", pip)


@pytest.mark.parametrize("dep", [
    "python", "pip", "setuptools", "wheel", "libgcc", "libgcc-ng", "libstdcxx-ng", "openssl",
    "ca-certificates", "compilers", "cxx-compiler", "_openmp_mutex", "nomkl", "conda-forge::openssl",
])
def test_system_packages_are_skipped_silently(dep: str) -> None:
    assert to_pip(dep) == ("system", None)
    t = translate([dep, "pandas"])
    assert t.pip == ["pandas"] and t.dropped == []


@pytest.mark.parametrize("dep", [
    "r-base", "r-ggplot2", "r-essentials=4.2", "cudatoolkit=11.8", "cuda-nvcc", "mkl", "gxx_linux-64",
    "gcc_linux-64=12", "graphviz", "nodejs>=18", "conda-forge::gdal",
])
def test_packages_pip_cannot_install_are_dropped(dep: str) -> None:
    assert to_pip(dep) == ("dropped", None)
    t = translate(["pandas", dep])
    assert t.dropped == [dep] and t.pip == ["pandas"]  # as written, for the warning


def test_the_tables_do_not_overlap() -> None:
    assert not SYSTEM & NOT_ON_PYPI
    assert not set(PIP_NAMES) & (SYSTEM | NOT_ON_PYPI)


@pytest.mark.parametrize("dep,pip", [
    ("pandas=1.5", "pandas==1.5.*"),  # conda's "=" is the series
    ("pandas==1.5.3", "pandas==1.5.3"),
    ("pandas>=1.5", "pandas>=1.5"),
    ("pandas >=1.5,<2", "pandas>=1.5,<2"),
    ("numpy=1.24.3=py311h64a7726_0", "numpy==1.24.3.*"),  # the build string goes
    ("numpy==1.24.3=py311h64a7726_0", "numpy==1.24.3"),
    ("scipy 1.10.1 py311_0", "scipy==1.10.1"),  # a bare version is that release
    ("scipy 1.10.*", "scipy==1.10.*"),
    ("dask 2023.1*", "dask==2023.1.*"),
    ("conda-forge::scikit-learn", "scikit-learn"),
    ("conda-forge/linux-64::scikit-learn>=1.2", "scikit-learn>=1.2"),
    ("pytorch[version='>=2.0,<2.2']", "torch>=2.0,<2.2"),
    ("py-xgboost=1.7", "xgboost==1.7.*"),
    ("requests!=2.30", "requests!=2.30"),
    ("attrs~=23.1", "attrs~=23.1"),
    ("six=1.16|1.15", "six"),  # "or" has no pip form: any version
    ("tabulate>=0.9.*", "tabulate>=0.9"),
])
def test_spec_syntax(dep: str, pip: str) -> None:
    assert to_pip(dep) == ("pip", pip)


def test_translate_keeps_the_order_and_finds_the_python_pin() -> None:
    t = translate(["conda-forge::python=3.8", "pip", "pytorch>=2", "r-base", "pandas=1.5", "mkl"])
    assert t.pip == ["torch>=2", "pandas==1.5.*"]
    assert t.dropped == ["r-base", "mkl"]
    assert t.python_pin == "python=3.8"
    assert translate(["python", "pandas"]).python_pin is None  # no version: no pin


@pytest.mark.parametrize("pin,minors", [
    ("python=3.8", ["3.8"]),
    ("python==3.11", ["3.11"]),
    ("python=3.11.4", ["3.11"]),
    ("python 3.10.*", ["3.10"]),
    ("python>=3.9,<3.11", ["3.9", "3.10"]),
    ("python~=3.10.2", ["3.10"]),
])
def test_python_pin(pin: str, minors: list[str]) -> None:
    assert python_minors(pin) == minors


def test_python_pin_against_an_image() -> None:
    assert pin_met("python>=3.12", "3.11") is False
    assert pin_met("python>=3.12", "3.12") is True
    assert pin_met("python<3.12", "3.11") is True
    assert image_python("python:3.11-slim") == "3.11"
    assert image_python("docker.io/library/python:3.8.18-bookworm") == "3.8"
    assert image_python("soopervisor/base:bookworm") == "3.11"  # Debian's python3
    assert image_python("registry.local:5000/team/ml:latest") is None  # unknown: no warning
    assert image_for("python=3.8") == "python:3.8-slim"
    assert image_for("python<3.11") == "python:3.10-slim"
    assert image_for("python=2.7") is None


def test_dropped_cause_ties_the_missing_module_to_the_dependency() -> None:
    log = ["Traceback (most recent call last):", '  File "tasks/fit.py", line 3',
           "ModuleNotFoundError: No module named 'mkl'", "!!! soopervisor: build pipeline failed with exit code 1"]
    cause = dropped_cause(log, ["r-base", "conda-forge::mkl"], "environment.yml")
    assert cause and "'conda-forge::mkl'" in cause and "environment.yml" in cause and "conda" in cause
    assert dropped_cause(["ModuleNotFoundError: No module named 'rpy2.robjects'"], ["r-base"], "e.yml")
    # a module that no dropped dependency provides is not blamed on them
    assert dropped_cause(["ModuleNotFoundError: No module named 'sklearn'"], ["mkl"], "e.yml") is None
    assert dropped_cause(log, [], "environment.yml") is None


def test_the_table_is_part_of_the_environment_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from soopervisor import script

    before = env_fingerprint()
    monkeypatch.setattr(script.resources, "files", _Patched)
    assert env_fingerprint() != before  # a changed table builds new environments


_FILES = resources.files


class _Patched:
    """importlib.resources.files() whose conda.py reads differently."""

    def __init__(self, pkg: str) -> None:
        self._real = _FILES(pkg)

    def joinpath(self, name: str):
        real = self._real.joinpath(name)
        if name != "conda.py":
            return real

        class _Text:
            def read_text(self, encoding: str = "utf-8") -> str:
                return real.read_text(encoding=encoding) + "\n# another table\n"

        return _Text()


# ------------------------------------------------------------------ validate


ENV_YML = dedent(
    """\
    name: analysis
    channels: [conda-forge]
    dependencies:
      - python>=3.8
      - pip
      - libgcc-ng
      - tabulate=0.9
      - conda-forge::msgpack-python>=1.0
      - mkl
    """
)

#: a task that imports what only the plain conda dependencies install
USES_THEM = (
    "import msgpack\nimport tabulate\n"
    "print('tabulated:', tabulate.tabulate([[1, 2]]).splitlines()[1], 'msgpack', msgpack.version[0])"
)


def conda_project(tmp_path: Path, env_yml: str = ENV_YML, body: str = USES_THEM, env_yaml: str | None = "sample: false\n",
                  name: str = "proj") -> Path:
    files = function_task(body)
    files.pop("requirements.txt")
    files["environment.yml"] = env_yml
    if env_yaml is None:
        files.pop("env.yaml")
    else:
        files["env.yaml"] = env_yaml
    return make_project(tmp_path, files, name=name)


def problems(report, code: str):
    return [p for p in report.problems if p.code == code]


def test_validate_names_only_what_pip_cannot_install(tmp_path: Path) -> None:
    env = ENV_YML + "  - r-base=4.2\n  - pytorch\n  - pip:\n    - ploomber\n"
    report = inspect(conda_project(tmp_path, env))
    assert report.ok, report.format()
    p = report.project
    assert p.pip_requirements == ["tabulate==0.9.*", "msgpack>=1.0", "torch", "ploomber"]
    assert p.conda_only == ["mkl", "r-base=4.2"]
    [w] = problems(report, "conda-only-deps")
    assert w.severity == "warning" and w.where == "environment.yml"
    assert "mkl, r-base=4.2" in w.what and "tabulate" not in w.what and "libgcc" not in w.what
    assert "micromamba" in w.hint and "pip:" in w.hint
    assert "conda packages pip cannot install" in report.format()


def test_validate_is_quiet_when_pip_installs_everything(tmp_path: Path) -> None:
    env = "dependencies:\n  - python\n  - pip\n  - openssl\n  - pandas=2\n"
    report = inspect(conda_project(tmp_path, env))
    assert not problems(report, "conda-only-deps") and not problems(report, "python-pin")
    assert report.project.pip_requirements == ["pandas==2.*"]


@pytest.mark.parametrize("pin,image,fix", [
    ("python=3.8", None, "python:3.8-slim"),  # the default image, python:3.11-slim
    ("python>=3.12", "python:3.11-slim", "python:3.13-slim"),
    ("python 3.10.*", "python:3.12-bookworm", "python:3.10-slim"),
])
def test_validate_warns_about_a_python_pin_the_image_cannot_meet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pin: str, image: str | None, fix: str,
) -> None:
    if image is None:
        monkeypatch.delenv("SOOPERVISOR_IMAGE", raising=False)
    else:
        monkeypatch.setenv("SOOPERVISOR_IMAGE", image)
    report = inspect(conda_project(tmp_path, f"dependencies:\n  - {pin}\n  - pip\n"))
    assert report.ok
    [w] = problems(report, "python-pin")
    assert w.severity == "warning" and pin in w.what and (image or "python:3.11-slim") in w.what
    assert f"--image {fix}" in w.hint and f"SOOPERVISOR_IMAGE={fix}" in w.hint


@pytest.mark.parametrize("pin,image", [
    ("python=3.8", "python:3.8-slim"),
    ("python>=3.9", "python:3.11-slim"),
    ("python=3.8", "registry.local:5000/ours:latest"),  # its Python is unknown before it runs
])
def test_no_python_warning_when_met_or_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pin, image) -> None:
    monkeypatch.setenv("SOOPERVISOR_IMAGE", image)
    report = inspect(conda_project(tmp_path, f"dependencies:\n  - {pin}\n"))
    assert not problems(report, "python-pin")
    assert report.project.python_pin == pin


def test_the_runs_image_is_the_one_checked_not_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --image python:3.8-slim` meets a python=3.8 pin even when SOOPERVISOR_IMAGE names 3.11."""
    monkeypatch.setenv("SOOPERVISOR_IMAGE", "python:3.11-slim")
    project = conda_project(tmp_path, "dependencies:\n  - python=3.8\n  - pip\n")
    assert not problems(inspect(project, image="python:3.8-slim"), "python-pin")
    [w] = problems(inspect(project, image="python:3.12-slim"), "python-pin")
    assert "python:3.12-slim has Python 3.12" in w.what


def test_validate_says_a_sample_run_without_the_key_is_full(tmp_path: Path) -> None:
    report = inspect(conda_project(tmp_path, env_yaml="rows: 3\n"))
    [w] = problems(report, "no-sample-key")
    assert "recorded as full" in w.what


# ------------------------------------------------------------------ the script


def test_script_installs_the_translated_dependencies_and_checks_the_pin(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    # python3 answers the version question the pin check asks
    h.tool("python3", FAKE_PYTHON.replace(
        'case "$*" in', 'case "$*" in\n  *version_info*) echo "${FAKE_MINOR:-3.11}"; exit 0 ;;', 1))
    report = inspect(conda_project(tmp_path / "repo", ENV_YML.replace("python>=3.8", "python=3.8")))
    p = report.project
    text = render(p, sample=False)
    assert shellcheck(text) == ""
    assert "readonly SV_PYTHON_PIN=python=3.8\n" in text and "readonly SV_PYTHON_OK=3.8\n" in text

    proc = h.run(p, sample=False)
    assert proc.returncode == 0, proc.stdout
    calls = h.calls()
    i = next(i for i, c in enumerate(calls) if c.startswith("requirements file "))
    assert calls[i + 1 : i + 3] == ["tabulate==0.9.*", "msgpack>=1.0"]
    out = proc.stdout
    assert "pip cannot install these conda-only dependencies of environment.yml: mkl" in out
    assert ("soopervisor: warning: environment.yml pins python=3.8 but the image has Python 3.11 "
            "(without conda the image decides): run on an image with that Python, e.g. --image python:3.8-slim") in out

    proc = h.run(p, sample=False, FAKE_MINOR="3.8")
    assert "soopervisor: environment.yml pins python=3.8; the image has Python 3.8: met" in proc.stdout
    assert "warning: environment.yml pins" not in proc.stdout


def test_script_without_a_pin_says_nothing_about_python() -> None:
    text = render(project(env_file="environment.yml", pip_requirements=["pandas"]), sample=True)
    assert "readonly SV_PYTHON_PIN=''\n" in text


# ------------------------------------------------------------------ real runs


@pytest.mark.docker
def test_plain_conda_dependencies_are_installed_with_pip(tmp_path, engine, home):
    path = conda_project(tmp_path)
    proc = cli("run", str(path), "--full", check=0)
    out = proc.stdout
    assert "tabulated: 1  2 msgpack 1" in out  # the task imported both
    # validate's warning, in the log of every run (the cached environment's install is not repeated)
    assert "warning: environment.yml lists conda packages pip cannot install: mkl" in out
    assert RunStore().list()[0].status == "succeeded"


@pytest.mark.docker
def test_a_missing_module_of_a_dropped_dependency_is_the_failure_summary(tmp_path, engine, home):
    path = conda_project(tmp_path, body="import mkl  # noqa: F401")
    proc = cli("run", str(path), "--full", check=1)
    run = RunStore().list()[0]
    assert run.status == "failed"
    assert "No module named 'mkl'" in run.error and "environment.yml lists 'mkl'" in run.error
    assert "pip cannot install" in run.error and "micromamba or conda" in run.error
    assert "environment.yml lists 'mkl'" in proc.stdout + proc.stderr


@pytest.mark.docker
def test_a_sample_run_without_the_sample_key_is_recorded_full(tmp_path, engine, home):
    path = conda_project(tmp_path, env_yaml=None)
    proc = cli("run", str(path), check=0)  # sample is the default
    out = proc.stdout
    assert "a sample run was asked but env.yaml does not declare 'sample'" in out
    assert "recorded as full" in out  # validate's warning, in the log
    assert "--env--sample" not in out
    run = RunStore().list()[0]
    assert run.mode == "full" and run.status == "succeeded"
    runs = json.loads(cli("runs", "--json", check=0).stdout)
    assert runs[0]["mode"] == "full"
    set_dir = home / "artifacts" / run.project / run.commit / run.id
    assert json.loads((set_dir / "manifest.json").read_text())["mode"] == "full"
    listing = cli("artifacts", "list", cwd=path, check=0).stdout
    line = next(line for line in listing.splitlines() if run.commit[:7] in line)
    assert " full " in line and "sample" not in line

    # with the key, a sample run is one, and says so
    write(path, {"env.yaml": "sample: false\n"})
    commit_all(path, "declare sample")
    cli("run", str(path), check=0)
    assert RunStore().list()[0].mode == "sample"

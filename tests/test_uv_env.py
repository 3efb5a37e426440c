"""Environments filled by uv, with pip as the reference (issue 16): real Docker, real PyPI through the CA bundle.

- uv's environment holds pip's packages (names and versions) for the example
  project and for a project with a real dependency tree;
- a changed requirement builds on the repository's earlier environment and
  installs only the difference, from the download cache;
- the download cache is mounted into environment builds only, never into a
  pipeline run, and never kept in an image.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import cli
from .projects import commit_all, function_task, init_repo, make_project, write

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sales"
#: what the installers bring themselves, not the project
TOOLS = {"pip", "setuptools", "wheel", "uv", "packaging"}
LIST_PACKAGES = ("import json, importlib.metadata as m; print(json.dumps(sorted({d.metadata['Name'].lower().replace('_', '-'): "
                 "d.version for d in m.distributions()}.items())))")

pytestmark = pytest.mark.xdist_group("uv-env")


def _env_image(out: str) -> str:
    found = re.search(r"(soopervisor-env:[0-9a-f]{20})", out)
    assert found, out
    return found.group(1)


def _packages(docker_client, image: str) -> dict[str, str]:
    out = docker_client.containers.run(image, ["/opt/soopervisor/venv/bin/python", "-c", LIST_PACKAGES], remove=True)
    return {name: version for name, version in json.loads(out) if name not in TOOLS}


def _run(project: Path, installer: str, cache: str = "machine"):
    return cli("run", str(project), "-v", env={"SOOPERVISOR_INSTALLER": installer,
                                              "SOOPERVISOR_DOWNLOAD_CACHE": cache}, check=0)


@pytest.mark.parametrize("requirements", [None, "requests==2.32.3\nsix\n"], ids=["example", "requests-and-six"])
def test_uv_gives_the_packages_pip_gives(engine, tmp_path, requirements):
    root = init_repo(tmp_path / "proj")
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("output"))
    if requirements:
        write(root, {"requirements.txt": requirements})
    commit_all(root)
    # (an earlier test of the session may have built either environment already: the images tell)
    pip_image, uv_image = _env_image(_run(root, "pip").stdout), _env_image(_run(root, "uv").stdout)
    assert pip_image != uv_image  # the installer is part of the environment's key
    has_lock = ["sh", "-c", "test -s /opt/soopervisor/env.lock && test -x /opt/soopervisor/uv/bin/uv && echo uv || echo pip"]
    assert engine.containers.run(uv_image, has_lock, remove=True).decode().strip() == "uv"
    assert engine.containers.run(pip_image, has_lock, remove=True).decode().strip() == "pip"
    pip_set, uv_set = _packages(engine, pip_image), _packages(engine, uv_image)
    assert "ploomber" in uv_set and (not requirements or "requests" in uv_set)
    assert uv_set == pip_set, {k: (pip_set.get(k), uv_set.get(k)) for k in set(pip_set) ^ set(uv_set)
                               or {k for k in pip_set if pip_set[k] != uv_set.get(k)}}


def _manifest(home: Path, out: str) -> dict:
    run_id = re.search(r"soopervisor: run ([0-9a-f]{12}) succeeded", out).group(1)
    (path,) = (home / "artifacts").glob(f"*/*/{run_id}/manifest.json")
    return json.loads(path.read_text())


def test_a_changed_requirement_builds_on_the_last_environment_from_the_cache(engine, tmp_path, home):
    # environments are shared by every repository with the same spec: this test's are its own; and a
    # repository's earlier environments are found by its folder, which an earlier session's run of
    # this test had too (pytest numbers its temporary folders anew once they are removed)
    token = f"# {uuid.uuid4().hex}\n"
    files = function_task("print('cache mounted:', os.path.ismount('/var/cache/soopervisor'))")
    project = make_project(tmp_path / uuid.uuid4().hex[:12], {**files, "requirements.txt": token})
    first = _run(project, "auto", cache="repository")
    out = first.stdout
    assert "soopervisor: download cache at /var/cache/soopervisor" in out
    # the pipeline run never sees the download cache
    assert "cache mounted: False" in out
    first_image = _env_image(out)
    lock = engine.containers.run(first_image, ["cat", "/opt/soopervisor/env.lock"], remove=True).decode()
    assert re.search(r"^ploomber==", lock, re.MULTILINE) and "itsdangerous==" not in lock
    # uv compiles nothing; the compile bytecode stage did, by importing ploomber: the image has its bytecode
    assert re.search(r"^soopervisor: bytecode compiled by importing ploomber, ploomber_cli\.cli\b", out, re.MULTILINE)
    listing = "ls /opt/soopervisor/venv/lib/python3*/site-packages/ploomber/__pycache__/ | grep -c '^__init__.*pyc$'"
    pyc = engine.containers.run(first_image, ["sh", "-c", listing], remove=True)
    assert pyc.decode().strip() == "1"
    # the run's manifest records the environment: its image and every package, with the hashes uv pinned
    env = _manifest(home, out)["environment"]
    assert env["image_id"] == engine.images.get(first_image).id and env["resolved_by"] == "uv"
    packages = {p["name"]: p for p in env["packages"]}
    assert packages["ploomber"]["version"] == _packages(engine, first_image)["ploomber"]
    assert packages["ploomber"]["installer"] == "uv"
    assert packages["ploomber"]["hashes"] and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h)
                                                 for h in packages["ploomber"]["hashes"])
    assert {n for n in packages if n not in TOOLS} == set(_packages(engine, first_image))

    write(project, {"requirements.txt": token + "itsdangerous==2.2.0\n"})
    commit_all(project, "one more requirement")
    second = _run(project, "auto", cache="repository").stdout
    second_image = _env_image(second)
    assert second_image != first_image
    assert f"soopervisor: building on {first_image}, an earlier environment of this repository" in second
    # only the difference is installed
    assert re.search(r"^Installed 1 package in ", second, re.MULTILINE), second
    assert re.search(r"^ \+ itsdangerous==2\.2\.0$", second, re.MULTILINE)
    # and only the new package is imported to compile its bytecode
    assert re.search(r"^soopervisor: bytecode compiled by importing itsdangerous in ", second, re.MULTILINE), second
    lock = engine.containers.run(second_image, ["cat", "/opt/soopervisor/env.lock"], remove=True).decode()
    assert "itsdangerous==2.2.0" in lock
    recorded = {p["name"]: p["version"] for p in _manifest(home, second)["environment"]["packages"]}
    assert recorded["itsdangerous"] == "2.2.0"
    layers = engine.images.get(second_image).labels
    assert layers["soopervisor.env-depth"] == "1"

    # taking the requirement out again removes it: the environment is the lock, not the history
    write(project, {"requirements.txt": token + "# nothing beyond ploomber\n"})
    commit_all(project, "requirement removed")
    third = _run(project, "auto", cache="repository").stdout
    assert re.search(r"^ - itsdangerous==2\.2\.0$", third, re.MULTILINE), third
    assert "itsdangerous" not in _packages(engine, _env_image(third))

    caches = json.loads(cli("cache", "downloads", "--repository", str(project), "--json", check=0).stdout)
    assert len(caches) == 1 and caches[0]["repository"] == str(project.resolve()) and caches[0]["size"] > 1_000_000
    # the cache is never kept in an environment image
    listing = engine.containers.run(second_image, ["ls", "-A", "/var/cache/soopervisor"], remove=True).decode()
    assert listing.strip() == ""
    cleared = json.loads(cli("cache", "downloads", "--repository", str(project), "--clear", "--json", check=0).stdout)
    assert [c["volume"] for c in cleared["removed"]] == [caches[0]["volume"]]
    assert json.loads(cli("cache", "downloads", "--repository", str(project), "--json", check=0).stdout) == []


def test_bad_installer_settings_are_said_before_anything_runs(engine, tmp_path):
    project = make_project(tmp_path)
    bad = cli("run", str(project), env={"SOOPERVISOR_INSTALLER": "conda"}, check=2)
    assert "SOOPERVISOR_INSTALLER='conda' is not one of auto, uv, pip" in bad.stderr + bad.stdout
    bad = cli("run", str(project), env={"SOOPERVISOR_DOWNLOAD_CACHE": "shared"}, check=2)
    assert "SOOPERVISOR_DOWNLOAD_CACHE='shared' is not one of repository, machine, off" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr


@pytest.fixture
def image_without_uv(engine, base_image, tmp_path):
    """The base image with a pip constraint no uv release meets: uv cannot be installed from the index."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "no-uv.txt").write_text("uv<0.0.1\n")
    (tmp_path / "ctx" / "Dockerfile").write_text(
        # the label makes the image (so its environments) this test's own
        f"FROM {base_image}\nCOPY no-uv.txt /etc/no-uv.txt\nENV PIP_CONSTRAINT=/etc/no-uv.txt\n"
        f"LABEL soopervisor.test={uuid.uuid4().hex}\n")
    tag = f"soopervisor-test/no-uv:{uuid.uuid4().hex[:12]}"
    engine.images.build(path=str(tmp_path / "ctx"), tag=tag, rm=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_pip_fills_the_environment_when_uv_cannot_be_installed(engine, tmp_path, image_without_uv):
    project = make_project(tmp_path, {**function_task("import six; print('six', six.__version__)"),
                                      "requirements.txt": "six==1.16.0\n"})
    out = cli("run", str(project), "--image", image_without_uv, "-v", check=0).stdout
    assert out.count("soopervisor: warning: uv could not be installed (pip exit code 1): "
                     "installing with pip instead") == 1, out
    assert "soopervisor: pip install -r requirements.txt" in out
    assert "six 1.16.0" in out
    assert "uv pip" not in out

    # uv only: the same image fails the environment stage, says why, and keeps no environment
    write(project, {"requirements.txt": "six==1.16.0\n# uv only\n"})
    commit_all(project, "uv only")
    failed = cli("run", str(project), "--image", image_without_uv, "-v",
                 env={"SOOPERVISOR_INSTALLER": "uv"}, check=1)
    assert "SOOPERVISOR_INSTALLER=uv asks for it" in failed.stdout
    assert "setup env" in failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_parent_environment_removed_meanwhile_means_a_build_from_the_base_image(engine, tmp_path, monkeypatch):
    """`cache prune` elsewhere may remove the chosen parent before the build starts on it: the build goes on from the base."""
    import soopervisor
    from soopervisor.executors import ImageInfo
    from soopervisor.lifecycle import ActiveRun

    gone = ImageInfo(name="soopervisor-env:0000000000000000gone", id="sha256:" + "0" * 64, digest="", env=[],
                     labels={"soopervisor.env-depth": "1"})
    monkeypatch.setattr(ActiveRun, "_parent_environment", lambda self, lineage: gone)
    project = make_project(tmp_path, {**function_task("print('built')"), "requirements.txt": f"# {uuid.uuid4().hex}\n"})
    lines: list[str] = []
    run = soopervisor.run(project, on_line=lines.append)
    out = "".join(lines)
    assert run.status == "succeeded", out
    assert "soopervisor: soopervisor-env:0000000000000000gone was removed meanwhile; building from the base image" in out
    built = engine.images.get(_env_image(out))
    assert built.labels["soopervisor.env-depth"] == "0"

"""`soopervisor image`: which base image runs use and where that came from, and building one without the repository."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from soopervisor import image
from soopervisor.errors import UsageError

from .conftest import cli
from .projects import make_project

pytestmark = pytest.mark.docker
MISSING = "soopervisor-test/no-such-image:none"


def test_show_says_where_the_image_came_from(docker_client, base_image, monkeypatch):
    monkeypatch.delenv("SOOPERVISOR_IMAGE", raising=False)
    out = cli("image", "show", check=0).stdout
    assert "image: python:3.11-slim" in out and "from: the default (no --image, no SOOPERVISOR_IMAGE)" in out, out

    out = cli("image", "show", env={"SOOPERVISOR_IMAGE": base_image}, check=0).stdout
    assert f"image: {base_image}" in out and "from: the SOOPERVISOR_IMAGE environment variable" in out, out
    assert "in the engine: yes" in out, out

    # the flag wins over the variable, as on `soopervisor run`
    shown = json.loads(cli("image", "show", "--image", MISSING, "--json",
                           env={"SOOPERVISOR_IMAGE": base_image}, check=0).stdout)
    assert shown == {"image": MISSING, "source": "--image", "in_engine": False, "fallback": None}
    out = cli("image", "show", "--image", MISSING, check=0).stdout
    assert "in the engine: no" in out and "soopervisor image build" in out, out


def test_build_of_an_image_already_in_the_engine_does_nothing_and_says_so(docker_client, base_image):
    before = docker_client.images.get(base_image).id
    for extra in ([], ["--offline"]):
        proc = cli("image", "build", "--tag", base_image, *extra, check=0)
        assert f"image: {base_image} is already in the engine; nothing to do" in proc.stdout, proc.stdout
    assert docker_client.images.get(base_image).id == before


def test_a_run_without_its_image_names_the_command_that_makes_one(docker_client, tmp_path):
    project = make_project(tmp_path / "src")
    proc = cli("run", str(project), env={"SOOPERVISOR_IMAGE": MISSING}, check=2)
    err = proc.stderr
    assert f"error: image '{MISSING}' is not in the engine and could not be pulled" in err, err
    assert "`soopervisor image build`" in err and "`soopervisor image show`" in err, err
    assert "Traceback" not in proc.stdout + err and "http+docker://" not in err, err


def test_offline_build_needs_root_and_says_how(docker_client, monkeypatch):
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    with pytest.raises(UsageError) as e:
        image.build(f"soopervisor-test/base:{uuid.uuid4().hex[:8]}", "3.11", offline=True, force=False,
                    mirror=None, say=lambda _: None)
    assert "needs root" in e.value.message and "sudo" in e.value.hint and "image build --offline" in e.value.hint


def test_offline_build_without_debootstrap_says_how_to_install_it(docker_client, monkeypatch):
    monkeypatch.setattr(image.shutil, "which", lambda name: None if name == "debootstrap" else "/usr/bin/" + name)
    monkeypatch.setattr(image.os, "access", lambda path, mode: False)
    with pytest.raises(UsageError) as e:
        image.build(f"soopervisor-test/base:{uuid.uuid4().hex[:8]}", "3.11", offline=True, force=False,
                    mirror=None, say=lambda _: None)
    assert "debootstrap is not installed" in e.value.message and "apt-get install -y debootstrap" in e.value.hint


def test_offline_build_of_a_python_debian_does_not_have_names_the_ones_it_has(docker_client):
    proc = cli("image", "build", "--offline", "--python", "3.10", "--tag", f"soopervisor-test/base:{uuid.uuid4().hex[:8]}",
               check=2)
    assert "no Debian release has Python 3.10" in proc.stderr and "3.11 (bookworm)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_script_is_a_wrapper_of_the_command():
    script = (Path(__file__).resolve().parents[1] / "scripts" / "build-base-image").read_text()
    assert "-m soopervisor image build" in script and "debootstrap --variant" not in script


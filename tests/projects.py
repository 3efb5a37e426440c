"""Build real git repositories holding ploomber projects, for tests."""
from __future__ import annotations

import subprocess
from pathlib import Path
from textwrap import dedent

PIPELINE = dedent(
    """\
    tasks:
      - source: tasks/make_data.py
        product:
          nb: output/make_data.ipynb
          data: output/data.csv
        params:
          sample: "{{sample}}"
    """
)

MAKE_DATA = dedent(
    """\
    # %% tags=["parameters"]
    upstream = None
    product = None
    sample = None

    # %%
    from pathlib import Path
    rows = 3 if sample else 10
    Path(product["data"]).write_text("x\\n" + "".join(f"{i}\\n" for i in range(rows)))
    print("rows written:", rows)
    """
)

#: a small valid project: one script task, no third-party requirements
VALID = {
    "pipeline.yaml": PIPELINE,
    "env.yaml": "sample: false\n",
    "requirements.txt": "# the pipeline needs only ploomber\n",
    "tasks/make_data.py": MAKE_DATA,
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def init_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "test")
    git(root, "config", "commit.gpgsign", "false")
    return root


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def commit_all(root: Path, message: str = "commit") -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def make_project(
    tmp_path: Path,
    files: dict[str, str | bytes] | None = None,
    *,
    subdir: str = "",
    commit: bool = True,
    name: str = "proj",
) -> Path:
    """A git repo at ``tmp_path/name`` with ``files`` (default VALID) under ``subdir``.

    Returns the project folder (the sub-folder when ``subdir`` is given).
    """
    root = init_repo(tmp_path / name)
    project = root / subdir if subdir else root
    write(project, VALID if files is None else files)
    if commit:
        commit_all(root, "initial")
    return project


def function_task(body: str) -> dict[str, str]:
    """A project whose one task is a Python function: its prints reach the log.

    (A notebook task's prints stay in the executed notebook.) ``body`` runs
    inside ``emit(product)`` with ``os`` and ``sys`` imported.
    """
    code = "import os\nimport sys\nfrom pathlib import Path\n\n\ndef emit(product):\n"
    code += "".join(f"    {line}\n" for line in body.splitlines())
    code += "    Path(str(product)).parent.mkdir(parents=True, exist_ok=True)\n"
    code += "    Path(str(product)).write_text('done')\n"
    return {
        "pipeline.yaml": "tasks:\n  - source: functions.emit\n    product: output/emitted.txt\n",
        "env.yaml": "sample: false\n",
        "requirements.txt": VALID["requirements.txt"],
        "functions.py": code,
    }

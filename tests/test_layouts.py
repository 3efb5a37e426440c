"""Projects laid out as people lay them out (issue 12): found as ploomber finds them.

Nested pipelines sharing a parent environment spec, a folder of pipelines, entry
points other than pipeline.yaml (another spec, a file pattern, a dotted path,
setup.cfg, ENTRY_POINT), and a project name that does not depend on the folder
the repository was cloned into.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from textwrap import dedent

import pytest

import soopervisor
from soopervisor.artifacts import get_artifacts, list_sets, write_manifest
from soopervisor.project import _repo_name_from_url, inspect, pipelines_below, project_name, project_names
from soopervisor.script import render
from soopervisor.storage import LocalStorage

from .conftest import cli
from .projects import PIPELINE, VALID, commit_all, git, init_repo, make_project, write

# a small pure-Python package from PyPI: the task imports it, so the run proves the
# parent folder's requirements.txt was installed
PARENT_REQUIREMENTS = "# shared by every pipeline of the repository\ntabulate==0.9.0\n"

USES_TABULATE = dedent(
    """\
    # %% tags=["parameters"]
    upstream = None
    product = None
    sample = None

    # %%
    from pathlib import Path
    from tabulate import tabulate
    Path(product["data"]).write_text(tabulate([[1, 2]], headers=["a", "b"], tablefmt="plain"))
    """
)


def nested_repo(tmp_path: Path) -> Path:
    """``analytics/`` with requirements.txt at the root and two pipelines under pipelines/."""
    root = init_repo(tmp_path / "analytics")
    write(root, {"requirements.txt": PARENT_REQUIREMENTS, "README.md": "two pipelines\n"})
    for name in ("churn", "sales"):
        write(root / "pipelines" / name, {
            "pipeline.yaml": PIPELINE,
            "env.yaml": "sample: false\n",
            "tasks/make_data.py": USES_TABULATE,
        })
    # what must never be listed as a pipeline
    write(root, {".hidden/p/pipeline.yaml": PIPELINE, "node_modules/x/pipeline.yaml": PIPELINE,
                 "venv/pyvenv.cfg": "home = /usr\n", "venv/lib/pipeline.yaml": PIPELINE})
    commit_all(root)
    return root


# -------------------------------------------------- nested pipelines, parent environment


def test_each_nested_pipeline_uses_the_parent_requirements(tmp_path: Path) -> None:
    root = nested_repo(tmp_path)
    for name in ("churn", "sales"):
        report = inspect(root / "pipelines" / name)
        assert report.ok, report.format()
        p = report.project
        assert p.env_file == "../../requirements.txt"  # relative to the project folder
        assert p.pip_requirements == ["tabulate==0.9.0"]
        assert p.name == f"analytics-pipelines-{name}"
        assert "  environment: ../../requirements.txt" in report.format().splitlines()
        text = render(p, sample=True)
        assert "readonly SV_ENV_FILE=../../requirements.txt" in text
        assert f"readonly SV_PROJECT_DIR=/workspace/pipelines/{name}" in text


def test_the_nearest_environment_spec_wins_and_environment_yml_beats_requirements(tmp_path: Path) -> None:
    root = nested_repo(tmp_path)
    write(root / "pipelines", {"environment.yml": "dependencies:\n  - pip\n  - pip:\n    - tabulate\n",
                               "requirements.txt": "tabulate\n"})
    write(root / "pipelines/sales", {"requirements.txt": "tabulate\n"})
    commit_all(root)
    assert inspect(root / "pipelines/churn").project.env_file == "../environment.yml"
    assert inspect(root / "pipelines/sales").project.env_file == "requirements.txt"


def test_a_parent_spec_that_is_not_committed_is_an_error(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "mono")
    write(root / "p", {k: v for k, v in VALID.items() if k != "requirements.txt"})
    commit_all(root)
    write(root, {"requirements.txt": "tabulate\n"})  # untracked
    report = inspect(root / "p")
    assert not report.ok
    problem = next(p for p in report.errors if p.code == "not-committed")
    assert problem.where == "../requirements.txt"


def test_the_parent_folder_lists_its_pipelines_with_the_command_for_each(tmp_path: Path) -> None:
    root = nested_repo(tmp_path)
    assert pipelines_below(root) == ["pipelines/churn", "pipelines/sales"]
    proc = cli("validate", cwd=root, check=2)
    assert "2 pipelines below: pipelines/churn, pipelines/sales" in proc.stdout
    assert "soopervisor run pipelines/churn" in proc.stdout
    assert "soopervisor run pipelines/sales" in proc.stdout
    assert "no environment spec" not in proc.stdout and "create pipeline.yaml" not in proc.stdout
    assert ".hidden" not in proc.stdout and "node_modules" not in proc.stdout and "venv" not in proc.stdout
    # from elsewhere, the commands name the folders from where the user is
    proc = cli("validate", "analytics", cwd=tmp_path, check=2)
    assert "soopervisor run analytics/pipelines/churn" in proc.stdout
    report = json.loads(cli("validate", "--json", cwd=root, check=2).stdout)
    assert [p["code"] for p in report["problems"]] == ["pipelines-below"]


def test_pipelines_deeper_than_three_levels_are_not_searched(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "deep")
    write(root, {"a/b/c/pipeline.yaml": PIPELINE, "a/b/c/d/pipeline.yaml": PIPELINE, "x/pipeline.yaml": PIPELINE})
    assert pipelines_below(root) == ["a/b/c", "x"]  # below a pipeline, nothing more is searched


def test_validate_reports_every_path_relative_to_the_project(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "mono")
    write(root / "p", {"pipeline.yaml": "tasks:\n  - source: tasks/missing.py\n    product: output/x.ipynb\n"})
    report = inspect(root / "p")  # no commit, no env spec, a missing source
    wheres = {p.code: p.where for p in report.problems}
    assert wheres["no-commit"] == ".."
    assert wheres["no-env-spec"] == "."
    assert wheres["source-missing"] == "pipeline.yaml"
    assert not any(os.path.isabs(w) for w in wheres.values()), wheres


def test_a_nested_pipeline_runs_with_the_parent_requirements(tmp_path: Path, engine, home: Path) -> None:
    root = nested_repo(tmp_path)
    sha = git(root, "rev-parse", "HEAD").strip()
    proc = cli("run", "pipelines/churn", "--full", cwd=root, check=0)
    assert "succeeded" in proc.stdout
    sets = list_sets("analytics-pipelines-churn")
    assert [s.commit for s in sets] == [sha] and sets[0].status == "succeeded"
    arts = get_artifacts(sha, project="analytics-pipelines-churn")
    data = Path(arts.path("output/data.csv")).read_text()
    assert data.split() == ["a", "b", "1", "2"]  # written with tabulate, from ../../requirements.txt


# ------------------------------------------------------------------- entry points

SCRIPT_LOAD = dedent(
    """\
    # %% tags=["parameters"]
    upstream = None
    product = {"nb": "output/load.ipynb", "data": "output/data.csv"}

    # %%
    from pathlib import Path
    Path(product["data"]).write_text("x\\n1\\n2\\n")
    """
)

SCRIPT_DOUBLE = dedent(
    """\
    # %% tags=["parameters"]
    upstream = ["load"]
    product = {"nb": "products/double.ipynb", "data": "products/double.csv"}

    # %%
    from pathlib import Path
    rows = Path(upstream["load"]["data"]).read_text().split()[1:]
    Path(product["data"]).write_text("x\\n" + "".join(f"{int(r) * 2}\\n" for r in rows))
    """
)

PATTERN_PROJECT = {
    "requirements.txt": VALID["requirements.txt"],  # the same environment as the other tests
    "scripts/load.py": SCRIPT_LOAD,
    "scripts/double.py": SCRIPT_DOUBLE,
}


def test_a_pattern_entry_point_is_validated_and_rendered(tmp_path: Path) -> None:
    path = make_project(tmp_path, PATTERN_PROJECT)
    assert inspect(path).errors[0].code == "no-pipeline"  # ploomber too needs --entry-point here
    report = inspect(path, entry_point="scripts/*.py")
    assert report.ok, report.format()
    p = report.project
    assert (p.entry_point, p.entry_kind) == ("scripts/*.py", "pattern")
    assert p.collect_paths == ["output", "products"]  # from the scripts' product cells
    assert not p.declares_sample and report.codes() == ["no-sample-key"]  # patterns take no env
    text = render(p, sample=False)
    assert "readonly -a SV_BUILD_ARGS=(--entry-point 'scripts/*.py' --force)" in text
    assert inspect(path, entry_point="nothing/*.py").codes()[0] == "entry-point-no-match"
    write(path, {"scripts/notes.txt": "not a task\n"})
    assert "entry-point-invalid" in inspect(path, entry_point="scripts/*").codes()


def test_a_pattern_entry_point_runs(tmp_path: Path, engine, home: Path) -> None:
    path = make_project(tmp_path, PATTERN_PROJECT, name="scripts-only")
    sha = git(path, "rev-parse", "HEAD").strip()
    proc = cli("run", str(path), "--full", "--entry-point", "scripts/*.py", check=0)
    assert "succeeded" in proc.stdout
    arts = get_artifacts(sha, project="scripts-only")
    assert Path(arts.path("products/double.csv")).read_text().split() == ["x", "2", "4"]
    assert "output/data.csv" in {f.name for f in arts.files}


def test_another_spec_file_with_its_own_env(tmp_path: Path) -> None:
    files = {**VALID, "pipeline.train.yaml": PIPELINE.replace("output/", "train/"),
             "env.train.yaml": "sample: true\n"}
    files.pop("env.yaml")
    path = make_project(tmp_path, files)
    report = inspect(path, entry_point="pipeline.train.yaml")
    assert report.ok, report.format()
    p = report.project
    assert (p.entry_point, p.entry_kind) == ("pipeline.train.yaml", "spec")
    assert p.declares_sample  # env.train.yaml, as ploomber pairs them
    assert p.collect_paths == ["output", "train"]
    assert "--entry-point pipeline.train.yaml --force --env--sample true" in render(p, sample=True)
    assert soopervisor.validate(path, entry_point="pipeline.train.yaml").project.entry_point == "pipeline.train.yaml"
    proc = cli("script", str(path), "--entry-point", "pipeline.train.yaml", check=0)
    assert "--entry-point pipeline.train.yaml" in proc.stdout
    assert "entry point: pipeline.serve.yaml" not in cli("validate", str(path), check=0).stdout

    missing = inspect(path, entry_point="pipeline.serve.yaml")
    assert missing.codes()[0] == "entry-point-missing"
    write(path, {"pipeline.serve.yaml": "meta: {}\n"})
    commit_all(path)
    empty = inspect(path, entry_point="pipeline.serve.yaml")
    assert [p.what for p in empty.errors] == ["pipeline.serve.yaml declares no tasks"]


def test_the_default_entry_point_is_found_as_ploomber_finds_it(tmp_path: Path, monkeypatch) -> None:
    files = {k: v for k, v in VALID.items() if k != "pipeline.yaml"}
    path = make_project(tmp_path, {**files, "pipeline.serve.yaml": PIPELINE})
    assert inspect(path).codes() == ["no-pipeline"]
    monkeypatch.setenv("ENTRY_POINT", "pipeline.serve.yaml")
    assert inspect(path).project.entry_point == "pipeline.serve.yaml"
    monkeypatch.delenv("ENTRY_POINT")
    write(path, {"setup.cfg": "[ploomber]\nentry-point = pipeline.serve.yaml\n"})
    commit_all(path)
    report = inspect(path)
    assert report.ok and report.project.entry_point == "pipeline.serve.yaml", report.format()
    # a package: src/<package>/pipeline.yaml beside a setup.py
    pkg = make_project(tmp_path, {**files, "setup.py": "from setuptools import setup\nsetup()\n",
                                  "src/pkg/__init__.py": "", "src/pkg/pipeline.yaml": PIPELINE}, name="pkg")
    report = inspect(pkg)
    assert report.project.entry_point == "src/pkg/pipeline.yaml", report.format()
    assert report.ok and report.project.collect_paths == ["output"]  # relative to setup.py's folder


FACTORY = dedent(
    """\
    from ploomber import DAG
    from ploomber.spec import DAGSpec


    def make_dag():
        return DAGSpec("pipeline.yaml").to_dag()
    """
)


def test_a_dotted_path_entry_point(tmp_path: Path) -> None:
    path = make_project(tmp_path, {**VALID, "pkg/__init__.py": "", "pkg/factory.py": FACTORY,
                                   "pkg/pipeline.yaml": PIPELINE})
    report = inspect(path, entry_point="pkg.factory.make_dag")
    assert report.ok, report.format()
    assert (report.project.entry_point, report.project.entry_kind) == ("pkg.factory.make_dag", "dotted-path")
    assert not report.project.declares_sample  # without @with_env the function takes no env
    assert "--entry-point pkg.factory.make_dag --force" in render(report.project, sample=True)

    assert inspect(path, entry_point="pkg.factory.other").codes()[0] == "entry-point-missing"
    assert inspect(path, entry_point="nope.make").codes()[0] == "entry-point-missing"
    with_env = FACTORY.replace("def make_dag", "@with_env\ndef make_dag").replace(
        "from ploomber import DAG", "from ploomber import with_env")
    write(path, {"pkg/factory.py": with_env})
    assert inspect(path, entry_point="pkg.factory.make_dag").project.declares_sample  # env.yaml has sample

    # a spec inside a package: ploomber's module path, package::file
    module = inspect(path, entry_point="pkg::pipeline.yaml")
    assert (module.project.entry_kind, module.project.entry_point) == ("module-path", "pkg::pipeline.yaml")
    dotted = inspect(path, entry_point="pkg.pipeline.yaml")
    assert dotted.codes()[0] == "entry-point-missing" and "pkg::pipeline.yaml" in dotted.errors[0].hint


# ------------------------------------------------------------------------ the name


@pytest.mark.parametrize("url", [
    "git@github.com:acme/sales.git", "https://github.com/acme/sales", "https://github.com/acme/sales.git/",
    "ssh://git@host:2222/acme/sales.git", "file:///srv/git/sales.git", "/srv/git/sales", "../sales.git",
])
def test_the_repository_name_from_the_origin_url(url: str) -> None:
    assert _repo_name_from_url(url) == "sales"


def test_two_clones_in_different_folders_have_one_name(tmp_path: Path) -> None:
    upstream = make_project(tmp_path, name="upstream-work")
    bare = tmp_path / "remotes" / "sales.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(bare))
    clones = []
    for folder in ("sales-work", "ci-checkout"):
        git(tmp_path, "clone", "-q", f"file://{bare}", str(tmp_path / folder))
        clones.append(tmp_path / folder)
    assert [project_name(c) for c in clones] == ["sales", "sales"]
    assert [inspect(c).project.name for c in clones] == ["sales", "sales"]
    assert project_names(clones[0]) == ("sales", "sales-work")
    assert inspect(clones[0]).project.legacy_name == "sales-work"
    # a sub-folder project keeps its path in the name
    (clones[1] / "sub").mkdir()
    assert project_name(clones[1] / "sub") == "sales-sub"
    # without a remote: the repository folder, as before
    assert project_names(upstream) == ("upstream-work", None)


def test_the_name_can_be_set(tmp_path: Path, monkeypatch) -> None:
    path = make_project(tmp_path)
    write(path, {"pyproject.toml": '[tool.soopervisor]\nproject = "forecast"\n'})
    assert project_name(path) == "forecast"
    (path / "sub").mkdir()
    assert project_name(path / "sub") == "forecast-sub"
    monkeypatch.setenv("SOOPERVISOR_PROJECT", "from-env")
    assert project_name(path) == "from-env" and inspect(path).project.name == "from-env"


def test_sets_stored_under_the_folder_name_stay_reachable(tmp_path: Path, monkeypatch, capsys) -> None:
    upstream = make_project(tmp_path, name="origin-repo")
    sha = git(upstream, "rev-parse", "HEAD").strip()
    bare = tmp_path / "sales.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream), str(bare))
    clone = tmp_path / "sales-work"
    git(tmp_path, "clone", "-q", str(bare), str(clone))

    # a set an earlier version stored under the clone folder's name
    storage = LocalStorage(tmp_path / "store")
    src = tmp_path / "set"
    write(src, {"files/output/data.csv": "x\n1\n", "soopervisor.log": "old log\n"})
    write_manifest(src, project="sales-work", commit=sha, finished_at="2026-01-01T00:00:00Z", run_id="r1",
                   status="succeeded", mode="full")
    storage.put_set("sales-work", sha, "r1", src)

    monkeypatch.chdir(clone)
    arts = get_artifacts("latest", storage=storage)
    assert arts.project == "sales-work" and arts.commit == sha
    assert "former name 'sales-work'" in capsys.readouterr().err
    listed = cli("artifacts", "list", "--storage", str(storage.root), cwd=clone, check=0)
    assert sha[:7] in listed.stdout and "former name 'sales-work'" in listed.stderr
    # once the new name has sets, those are what it reads
    shutil.rmtree(src)
    write(src, {"files/output/data.csv": "x\n2\n", "soopervisor.log": "new log\n"})
    write_manifest(src, project="sales", commit=sha, finished_at="2026-01-02T00:00:00Z", run_id="r2",
                   status="succeeded", mode="full")
    storage.put_set("sales", sha, "r2", src)
    assert get_artifacts("latest", storage=storage).project == "sales"
    assert "former name" not in capsys.readouterr().err


def test_the_environment_tree_puts_a_parent_spec_at_its_place(tmp_path: Path) -> None:
    import io
    import tarfile

    from soopervisor.environment import env_inputs, env_tree
    from soopervisor.git import show_file

    root = nested_repo(tmp_path)
    write(root, {"requirements.txt": PARENT_REQUIREMENTS + "-r base.txt\n", "base.txt": "six\n"})
    commit_all(root)
    p = inspect(root / "pipelines/churn").project
    inputs = env_inputs(p, lambda rel: show_file(p.repo_root, p.commit, os.path.normpath(f"{p.subdir}/{rel}")))
    assert sorted(inputs) == ["../../base.txt", "../../requirements.txt"]  # includes followed from there
    with tarfile.open(fileobj=io.BytesIO(env_tree(p.subdir, inputs))) as tar:
        members = {m.name: m.type for m in tar.getmembers()}
    assert members == {"workspace/pipelines/churn": tarfile.DIRTYPE, "workspace/requirements.txt": tarfile.REGTYPE,
                       "workspace/base.txt": tarfile.REGTYPE}
    with pytest.raises(ValueError):
        env_tree("", {"../../etc/passwd": b""})


def test_a_file_browser_inside_a_package_project_means_that_project(tmp_path: Path) -> None:
    from soopervisor.project import enclosing_project

    files = {k: v for k, v in VALID.items() if k != "pipeline.yaml"}
    pkg = make_project(tmp_path, {**files, "setup.py": "from setuptools import setup\nsetup()\n",
                                  "src/pkg/__init__.py": "", "src/pkg/pipeline.yaml": PIPELINE}, name="pkg")
    assert enclosing_project(pkg / "tasks", tmp_path) == pkg.resolve()
    cfg = make_project(tmp_path, {**files, "setup.cfg": "[ploomber]\nentry-point = specs/p.yaml\n",
                                  "specs/p.yaml": PIPELINE}, name="cfg")
    assert enclosing_project(cfg / "specs", tmp_path) == cfg.resolve()


FACTORY_PYTHON = dedent(
    """\
    from pathlib import Path

    from ploomber import DAG
    from ploomber.products import File
    from ploomber.tasks import PythonCallable


    def _write(product):
        Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
        Path(str(product)).write_text("from a factory\\n")


    def make_dag():
        dag = DAG()
        PythonCallable(_write, File("output/factory.txt"), dag=dag, name="write")
        return dag
    """
)


def test_a_dotted_path_entry_point_runs(tmp_path: Path, engine, home: Path) -> None:
    path = make_project(tmp_path, {"requirements.txt": VALID["requirements.txt"], "pkg/__init__.py": "",
                                   "pkg/factory.py": FACTORY_PYTHON}, name="factory")
    sha = git(path, "rev-parse", "HEAD").strip()
    proc = cli("run", str(path), "--entry-point", "pkg.factory.make_dag", check=0)
    assert "ploomber build --entry-point pkg.factory.make_dag --force" in proc.stdout
    arts = get_artifacts(sha, project="factory")
    assert arts.mode == "full"  # a function takes no env.yaml: no sample run was possible
    assert Path(arts.path("output/factory.txt")).read_text() == "from a factory\n"

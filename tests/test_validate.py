"""soopervisor.project.inspect on real git repositories: every problem, in one pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from soopervisor.project import Problem, Project, Report, inspect

from .projects import VALID, commit_all, git, init_repo, make_project, write

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_outer_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git must not find a repository above tmp_path (e.g. when /tmp is in one)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def problem(report: Report, code: str) -> Problem:
    """The one problem with ``code``; every problem says where and how to fix it."""
    found = [p for p in report.problems if p.code == code]
    assert len(found) == 1, f"expected one {code!r} in:\n{report.format()}"
    for p in report.problems:
        assert p.what and p.where and p.hint, p
        assert p.severity in ("error", "warning"), p
    return found[0]


def files(**overrides: str | None) -> dict[str, str]:
    """VALID with some files replaced (a value) or left out (None)."""
    out = dict(VALID)
    for name, content in overrides.items():
        name = name.replace("__", ".")
        if content is None:
            out.pop(name, None)
        else:
            out[name] = content
    return out


# ------------------------------------------------------------------ the good case


def test_valid_project(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    report = inspect(path)
    assert report.ok, report.format()
    assert report.problems == []
    p = report.project
    assert p is not None
    assert p.commit == git(path, "rev-parse", "HEAD").strip()
    assert p.path == path.resolve() and p.repo_root == path.resolve()
    assert p.subdir == "" and p.name == "proj"
    assert not p.dirty and p.changed == []
    assert p.env_file == "requirements.txt"
    assert p.pip_requirements == []  # only a comment in VALID's requirements.txt
    assert p.declares_sample and not p.installable
    assert p.collect_paths == ["output"]
    # issue 12: validate says which entry point and environment spec it found (project-relative)
    assert report.format() == (f"✓ project 'proj' is valid at {p.commit[:7]}\n"
                               "  entry point: pipeline.yaml\n  environment: requirements.txt")


def test_default_path_is_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_project(tmp_path)
    monkeypatch.chdir(path)
    assert inspect().project.path == path.resolve()


def test_installable(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pyproject__toml="[project]\nname='x'\n"))
    assert inspect(path).project.installable


# --------------------------------------------------------------------- the path


def test_path_missing(tmp_path: Path) -> None:
    report = inspect(tmp_path / "nope")
    assert not report.ok and report.project is None
    assert problem(report, "path-missing").where == str(tmp_path / "nope")
    assert report.format().startswith("✗ 1 problem in ")
    json.dumps(report.to_dict())


def test_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "pipeline.yaml"
    f.write_text("tasks: []\n")
    report = inspect(f)
    problem(report, "not-a-folder")
    assert report.project is None


# ---------------------------------------------------------------------- git


def test_not_a_git_repo(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    write(folder, VALID)
    report = inspect(folder)
    p = problem(report, "not-a-repo")
    assert p.severity == "error"
    assert "git init" in p.hint and "git commit" in p.hint
    assert report.project is not None and report.project.commit is None
    assert report.project.name == "plain"


def test_not_a_repo_reports_every_other_problem_too(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    write(folder, files(pipeline__yaml=None, requirements__txt=None))
    report = inspect(folder)
    assert {"not-a-repo", "no-pipeline", "no-env-spec"} <= set(report.codes())


def test_repo_without_commit(tmp_path: Path) -> None:
    path = make_project(tmp_path, commit=False)
    report = inspect(path)
    p = problem(report, "no-commit")
    assert "git commit" in p.hint
    assert report.project.commit is None
    # everything is uncommitted in a repository without commits: one error says it
    assert "uncommitted-changes" not in report.codes()
    assert "not-committed" not in report.codes()


def test_no_commit_and_no_pipeline_in_one_report(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pipeline__yaml=None), commit=False)
    assert {"no-commit", "no-pipeline"} <= set(inspect(path).codes())


# ----------------------------------------------------------------- pipeline.yaml


def test_missing_pipeline_and_env_spec_in_one_report(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pipeline__yaml=None, requirements__txt=None))
    report = inspect(path)
    assert problem(report, "no-pipeline").where == "pipeline.yaml"
    problem(report, "no-env-spec")
    assert not report.ok and len(report.errors) == 2
    text = report.format()
    assert text.startswith("✗ 2 problems in ")
    assert "error: there is no pipeline.yaml" in text


def test_pipeline_yml_hint(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pipeline__yaml=None, pipeline__yml="tasks: []\n"))
    assert "rename pipeline.yml" in problem(inspect(path), "no-pipeline").hint


def test_unparsable_pipeline(tmp_path: Path) -> None:
    bad = "tasks:\n  - source: tasks/make_data.py\n    product: a: b\n"
    path = make_project(tmp_path, files(pipeline__yaml=bad))
    p = problem(inspect(path), "pipeline-unparsable")
    assert "line 3" in p.what and "column" in p.what
    assert p.where == "pipeline.yaml:3"


@pytest.mark.parametrize(
    "content",
    ["tasks: []\n", "meta:\n  extract_upstream: true\n", "", "tasks:\n"],
    ids=["empty-list", "no-tasks-key", "empty-file", "null-tasks"],
)
def test_pipeline_without_tasks(tmp_path: Path, content: str) -> None:
    path = make_project(tmp_path, files(pipeline__yaml=content))
    p = problem(inspect(path), "no-tasks")
    assert "tasks:" in p.hint and p.where == "pipeline.yaml"


def test_pipeline_not_a_mapping(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pipeline__yaml="just a string\n"))
    problem(inspect(path), "pipeline-invalid")


def test_a_task_that_is_not_a_mapping_is_named_with_its_article(tmp_path: Path) -> None:
    content = "tasks:\n  - 42\n  - [a, b]\n"
    path = make_project(tmp_path, files(pipeline__yaml=content))
    whats = [p.what for p in inspect(path).problems if p.code == "pipeline-invalid"]
    assert "task 1 in pipeline.yaml is an int, not a mapping" in whats
    assert "task 2 in pipeline.yaml is a list, not a mapping" in whats


def test_pipeline_top_level_list_is_tasks(tmp_path: Path) -> None:
    content = "- source: tasks/make_data.py\n  product: products/data.csv\n"
    path = make_project(tmp_path, files(pipeline__yaml=content))
    report = inspect(path)
    assert report.ok, report.format()
    assert report.project.collect_paths == ["output", "products"]


def test_tasks_imported_from_another_file(tmp_path: Path) -> None:
    content = "meta:\n  import_tasks_from: tasks.yaml\n"
    path = make_project(tmp_path, files(pipeline__yaml=content))
    assert "no-tasks" not in inspect(path).codes()


def test_task_source_missing(tmp_path: Path) -> None:
    content = "tasks:\n  - source: tasks/nope.py\n    product: output/nope.ipynb\n  - source: mod.fn\n    product: output/x.csv\n"
    path = make_project(tmp_path, files(pipeline__yaml=content))
    p = problem(inspect(path), "source-missing")
    assert "tasks/nope.py" in p.what


def test_untracked_pipeline_is_an_error(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(pipeline__yaml=None))
    write(path, {"pipeline.yaml": VALID["pipeline.yaml"]})
    report = inspect(path)
    assert problem(report, "not-committed").where == "pipeline.yaml"
    assert problem(report, "uncommitted-changes").severity == "warning"


def test_a_file_both_staged_and_untracked_is_one_change(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    git(path, "rm", "-q", "--cached", "requirements.txt")  # staged as deleted, and untracked
    (p,) = [p for p in inspect(path).problems if p.code == "uncommitted-changes"]
    assert p.what.startswith("1 uncommitted change will not be part of the run: requirements.txt"), p.what


def test_an_untracked_project_folder_does_not_make_a_committed_spec_above_it_uncommitted(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    write(root, {"requirements.txt": "ploomber\n"})
    commit_all(root)
    folder = root / "pipelines" / "scripts"
    write(folder, {"pipeline.yaml": VALID["pipeline.yaml"], **{k: v for k, v in VALID.items() if k.startswith("tasks/")}})
    report = inspect(folder)
    not_committed = [p.where for p in report.problems if p.code == "not-committed"]
    assert "pipeline.yaml" in not_committed  # the folder's own files are not in the commit
    assert "../../requirements.txt" not in not_committed  # the spec above it is


# ------------------------------------------------------------------ environment


def test_missing_env_spec(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(requirements__txt=None))
    report = inspect(path)
    p = problem(report, "no-env-spec")
    assert "requirements.txt" in p.hint
    assert report.project.env_file is None


def test_unparsable_environment_yml(tmp_path: Path) -> None:
    bad = "name: x\ndependencies:\n  - python\n - pip\n"
    path = make_project(tmp_path, files(requirements__txt=None, environment__yml=bad))
    report = inspect(path)
    p = problem(report, "env-spec-unparsable")
    assert p.where.startswith("environment.yml:") and "line" in p.what
    assert report.project.env_file == "environment.yml"


def test_environment_yml_without_dependencies(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(requirements__txt=None, environment__yml="name: x\n"))
    problem(inspect(path), "env-spec-no-dependencies")


def test_environment_yml_parsing(tmp_path: Path) -> None:
    env = dedent(
        """\
        name: analysis
        channels: [conda-forge]
        dependencies:
          - python=3.11
          - pip
          - conda-forge::r-base
          - numpy>=1.2
          - pip:
            - pandas==2.0
            - -r extra.txt
            - "weird; python_version > '3'"
        """
    )
    path = make_project(tmp_path, files(environment__yml=env))
    report = inspect(path)
    assert report.ok, report.format()
    p = report.project
    assert p.env_file == "environment.yml"  # preferred over requirements.txt
    # issue 12: plain conda dependencies PyPI has go to pip first; only r-base cannot be installed
    assert p.pip_requirements == ["numpy>=1.2", "pandas==2.0", "-r extra.txt", "weird; python_version > '3'"]
    assert p.conda_only == ["conda-forge::r-base"]
    assert p.python_pin == "python=3.11"


def test_environment_yaml_spelling(tmp_path: Path) -> None:
    env = "dependencies:\n  - python\n  - pip:\n    - pandas\n"
    path = make_project(tmp_path, files(requirements__txt=None, environment__yaml=env))
    p = inspect(path).project
    assert p.env_file == "environment.yaml"
    assert p.pip_requirements == ["pandas"] and p.conda_only == []


def test_requirements_txt_parsing(tmp_path: Path) -> None:
    req = "# comment\npandas==2.0  # inline\n\n-r other.txt\n-e .\n  numpy\n"
    path = make_project(tmp_path, files(requirements__txt=req))
    assert inspect(path).project.pip_requirements == [
        "pandas==2.0  # inline", "-r other.txt", "-e .", "numpy",
    ]


# ---------------------------------------------------------------------- env.yaml


def test_unparsable_env_yaml(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(env__yaml="sample: [false\n"))
    report = inspect(path)
    p = problem(report, "env-yaml-unparsable")
    assert p.where.startswith("env.yaml")
    assert not report.project.declares_sample


def test_env_yaml_not_a_mapping(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(env__yaml="- a\n- b\n"))
    problem(inspect(path), "env-yaml-invalid")


def test_env_yaml_without_sample_is_a_warning(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(env__yaml="rows: 10\n"))
    report = inspect(path)
    p = problem(report, "no-sample-key")
    assert p.severity == "warning" and "sample: false" in p.hint
    assert report.ok and not report.project.declares_sample
    assert report.format().startswith("✓ project 'proj' is valid at ")
    assert "(1 warning)" in report.format().splitlines()[0]


def test_missing_env_yaml_is_a_warning(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(env__yaml=None))
    report = inspect(path)
    assert problem(report, "no-sample-key").severity == "warning"
    assert report.ok


def test_every_problem_in_one_report(tmp_path: Path) -> None:
    path = make_project(
        tmp_path,
        files(
            pipeline__yaml="tasks: [\n",
            requirements__txt=None,
            environment__yml="dependencies: {\n",
            env__yaml="a: b: c\n",
        ),
    )
    write(path, {"notes.txt": "uncommitted\n"})
    report = inspect(path)
    assert set(report.codes()) == {
        "pipeline-unparsable", "env-spec-unparsable", "env-yaml-unparsable",
        "uncommitted-changes",
    }
    text = report.format()
    assert text.startswith("✗ 4 problems in ") and "(3 errors, 1 warning)" in text
    # errors first, then warnings
    assert text.index("error:") < text.index("warning:")
    assert text.rindex("error:") < text.index("warning:")


# ------------------------------------------------------------------------- dirty


def test_dirty_tree_is_a_warning(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    (path / "tasks" / "make_data.py").write_text("# changed\n")
    write(path, {f"new{i}.txt": "x" for i in range(7)})
    report = inspect(path)
    assert report.ok
    p = report.project
    assert p.dirty
    assert "tasks/make_data.py" in p.changed and "new0.txt" in p.changed
    w = problem(report, "uncommitted-changes")
    assert w.severity == "warning"
    assert "8 uncommitted changes" in w.what and "and 3 more" in w.what
    assert p.commit[:7] in w.hint


def test_staged_rename_and_odd_names(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(**{"a file.txt": "x"}))
    git(path, "mv", "a file.txt", "b file.txt")
    p = inspect(path).project
    assert p.changed == ["b file.txt"]


def test_monorepo_sub_folder(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "mono")
    write(root / "analysis" / "ml model", VALID)
    write(root / "other", {"x.txt": "x"})
    sha = commit_all(root)
    path = root / "analysis" / "ml model"
    (root / "other" / "x.txt").write_text("changed outside the project\n")
    (root / "README.md").write_text("new at the top\n")

    report = inspect(path)
    assert report.ok, report.format()
    p = report.project
    assert p.commit == sha
    assert p.repo_root == root.resolve()
    assert p.subdir == "analysis/ml model"
    assert p.name == "mono-analysis-ml-model"
    assert not p.dirty and "uncommitted-changes" not in report.codes()

    (path / "pipeline.yaml").write_text(VALID["pipeline.yaml"] + "# edited\n")
    write(path, {"output/new.csv": "1\n"})
    report = inspect(path)
    assert report.project.dirty
    assert sorted(report.project.changed) == ["output/", "pipeline.yaml"]
    assert "not-committed" not in report.codes()  # pipeline.yaml is in HEAD, only edited


def test_untracked_sub_folder_project(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "mono")
    write(root, {"README.md": "x"})
    commit_all(root)
    write(root / "new project", VALID)
    report = inspect(root / "new project")
    assert problem(report, "uncommitted-changes").what.endswith("./ (the whole folder is untracked)")
    assert any(p.where == "pipeline.yaml" for p in report.problems if p.code == "not-committed")
    assert not report.ok


def test_name_keeps_safe_characters_only(tmp_path: Path) -> None:
    path = make_project(tmp_path, name="My Project (v2)")
    assert inspect(path).project.name == "My-Project--v2-"


# --------------------------------------------------------------- collect paths


def test_collect_paths_from_products(tmp_path: Path) -> None:
    pipeline = dedent(
        """\
        meta:
          extract_upstream: true
        tasks:
          - source: tasks/make_data.py
            product:
              nb: products/make_data.ipynb
              data: data.csv
              model: "{{here}}/models/model.pkl"
              report: "{{ root }}/report.html"
          - source: tasks/make_data.py
            name: two
            product: "results/{{git}}/table.csv"
          - source: tasks/make_data.py
            name: three
            product: "{{git}}-only-placeholder.csv"
          - source: tasks/make_data.py
            name: four
            product: ../outside/x.csv
          - source: tasks/make_data.py
            name: five
            product: /elsewhere/x.csv
          - source: tasks/make_data.py
            name: six
            product: "{{path.artifacts}}/x.csv"
          - source: sql/x.sql
            name: seven
            product: [schema, table, table]
          - source: tasks/make_data.py
            name: eight
            product: ./output/nested/deep.csv
        """
    )
    path = make_project(
        tmp_path,
        files(pipeline__yaml=pipeline, env__yaml="sample: false\npath:\n  artifacts: store\n",
              **{"sql/x.sql": "select 1"}),
    )
    report = inspect(path)
    assert report.ok, report.format()
    assert report.project.collect_paths == [
        "data.csv", "models", "output", "products", "report.html", "results", "store",
    ]


def test_collect_paths_relative_to_source(tmp_path: Path) -> None:
    pipeline = dedent(
        """\
        meta:
          product_relative_to_source: true
        tasks:
          - source: tasks/make_data.py
            product: out.csv
        """
    )
    path = make_project(tmp_path, files(pipeline__yaml=pipeline))
    assert inspect(path).project.collect_paths == ["output", "tasks"]


# ------------------------------------------------------------------ the report


def test_to_dict_is_json(tmp_path: Path) -> None:
    path = make_project(tmp_path, files(env__yaml=None, requirements__txt=None))
    report = inspect(path)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is False
    assert d["project"]["path"] == str(path.resolve())
    assert d["project"]["commit"] == report.project.commit
    assert [p["code"] for p in d["problems"]] == ["no-env-spec", "no-sample-key"]
    assert set(d["problems"][0]) == {"what", "where", "hint", "severity", "code", "docs"}


def test_inspect_imports_nothing_heavy(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    code = (
        f"import soopervisor.project as p; r = p.inspect({str(path)!r}); import sys; "
        "assert r.ok, r.format(); "
        "heavy = [m for m in ('docker', 'ploomber', 'click', 'jinja2') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_inspect_is_fast(tmp_path: Path) -> None:
    import time

    path = make_project(tmp_path)
    inspect(path)
    start = time.perf_counter()
    for _ in range(5):
        inspect(path)
    # two git processes dominate; generous for slow CI machines
    assert (time.perf_counter() - start) / 5 < 0.5


def test_project_is_a_plain_dataclass() -> None:
    p = Project(path=Path("/x"), repo_root=Path("/x"), subdir="", name="x")
    assert p.collect_paths == ["output"] and p.to_dict()["path"] == "/x"


def test_run_from_inside_the_project_points_to_it(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    p = problem(inspect(path / "tasks"), "no-pipeline")
    assert str(path.resolve()) in p.hint


# --------------------------------------------------------- oversized and hostile files

TASK = "  - source: tasks/make_data.py\n    product:\n      nb: output/n{i}.ipynb\n      data: output/d{i}.csv\n"


def big_pipeline(size: int) -> str:
    """A valid pipeline.yaml of at most ``size`` bytes, as close to it as whole tasks allow."""
    parts, total, i = ["tasks:\n"], len("tasks:\n"), 0
    while total + len(TASK.format(i=i)) <= size:
        parts.append(TASK.format(i=i))
        total += len(parts[-1])
        i += 1
    return "".join(parts)


def inspect_in_subprocess(path: Path, memory: int = 512 * 1024**2) -> dict:
    """inspect() in a child limited to ``memory`` bytes of address space: the report as a dict."""
    code = (
        "import json, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory})); "
        "from soopervisor.project import inspect; "
        f"print(json.dumps(inspect({str(path)!r}).to_dict()))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_a_50_mb_pipeline_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    (path / "pipeline.yaml").write_text(big_pipeline(50 * 1024**2 + 100))
    # parsing it took 2.4 GB: in 512 MB of address space only a refusal can answer
    report = inspect_in_subprocess(path)
    (p,) = [p for p in report["problems"] if p["code"] == "file-too-large"]
    size = (path / "pipeline.yaml").stat().st_size
    assert size > 50 * 1024**2
    assert p["what"] == f"pipeline.yaml is too large to validate ({size / 1024**2:.1f} MiB; at most 1 MiB)"
    assert p["where"] == "pipeline.yaml" and "keep data out of it" in p["hint"]
    assert not report["ok"]


@pytest.mark.parametrize("name", ["env.yaml", "environment.yml"])
def test_other_oversized_yaml_files_are_refused(tmp_path: Path, name: str) -> None:
    path = make_project(tmp_path)
    (path / name).write_text("a: 1\n" + "# padding\n" * (1024**2 // 10 + 1))
    p = problem(inspect(path), "file-too-large")
    assert p.where == name and "at most 1 MiB" in p.what


def test_a_pipeline_just_under_the_limit_is_read(tmp_path: Path) -> None:
    from soopervisor.project import MAX_SPEC_BYTES

    text = big_pipeline(MAX_SPEC_BYTES)
    path = make_project(tmp_path, files(pipeline__yaml=text))
    assert MAX_SPEC_BYTES - 100 < len(text.encode()) <= MAX_SPEC_BYTES
    report = inspect(path)
    assert report.ok, report.format()[:2000]


def test_an_oversized_requirements_txt_is_refused(tmp_path: Path) -> None:
    path = make_project(tmp_path)
    line = "pandas==2.0.0  # " + "x" * 80 + "\n"
    (path / "requirements.txt").write_text(line * (4 * 1024**2 // len(line) + 1))
    p = problem(inspect(path), "file-too-large")
    assert p.where == "requirements.txt" and "at most 4 MiB" in p.what


@pytest.mark.parametrize("nesting", ["[" * 50_000 + "]" * 50_000, "- " * 50_000 + "x",
                                     "{a: " * 20_000 + "1" + "}" * 20_000], ids=["flow", "block", "mapping"])
def test_deeply_nested_yaml_is_a_problem_not_a_crash(tmp_path: Path, nesting: str) -> None:
    path = make_project(tmp_path)
    block = nesting.startswith("-")
    (path / "pipeline.yaml").write_text(f"tasks:\n  {nesting}\n" if block else f"tasks: {nesting}\n")
    # building such a document kills the process (segmentation fault): ask a child
    report = inspect_in_subprocess(path)
    (p,) = [p for p in report["problems"] if p["code"] == "pipeline-unparsable"]
    assert "nests deeper than 100 levels" in p["what"]


def test_a_yaml_alias_bomb_in_the_pip_section_costs_nothing(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 9)]
    spec = "\n".join(levels) + "\ndependencies:\n  - python=3.11\n  - pip:\n    - pandas\n    - *a8\n"
    path = make_project(tmp_path, files(requirements__txt=None, environment__yml=spec))
    report = inspect_in_subprocess(path)
    assert report["ok"], report
    assert report["project"]["pip_requirements"] == ["pandas"]

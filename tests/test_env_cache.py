"""The environment cache key: which committed files it covers."""
from __future__ import annotations

import pytest

from soopervisor import git
from soopervisor.environment import env_hash, env_inputs
from soopervisor.errors import UsageError
from soopervisor.project import inspect

from .projects import VALID, commit_all, make_project, write


def inputs_of(project_dir):
    p = inspect(project_dir).project
    return env_inputs(p, lambda rel: git.show_file(p.repo_root, p.commit, f"{p.subdir}/{rel}".lstrip("/")))


def test_follows_includes_and_keys_on_their_content(tmp_path):
    files = {**VALID, "requirements.txt": "-r base.txt\nsix\n", "base.txt": "--constraint pins.txt\n", "pins.txt": "six<2\n"}
    project = make_project(tmp_path, files)
    first = inputs_of(project)
    assert set(first) == {"requirements.txt", "base.txt", "pins.txt"}
    write(project, {"pins.txt": "six<1.17\n"})
    commit_all(project)
    second = inputs_of(project)
    assert env_hash("img", first, "f") != env_hash("img", second, "f")


def test_same_files_same_key_and_base_image_matters(tmp_path):
    project = make_project(tmp_path)
    inputs = inputs_of(project)
    assert env_hash("img", inputs, "f") == env_hash("img", dict(inputs), "f")
    assert env_hash("img", inputs, "f") != env_hash("other-img", inputs, "f")
    assert env_hash("img", inputs, "f") != env_hash("img", inputs, "g")


@pytest.mark.parametrize("line", ["-e .", ".", "./libs/mine", "pkg @ file:///x"])
def test_local_paths_need_the_whole_tree(tmp_path, line):
    project = make_project(tmp_path, {**VALID, "requirements.txt": f"six\n{line}\n"})
    assert inputs_of(project) is None


def test_environment_yml_pip_section(tmp_path):
    env = "dependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - -r extra.txt\n"
    files = {k: v for k, v in VALID.items() if k != "requirements.txt"}
    project = make_project(tmp_path, {**files, "environment.yml": env, "extra.txt": "six\n"})
    assert set(inputs_of(project)) == {"environment.yml", "extra.txt"}


def test_uncommitted_include_is_a_usage_error(tmp_path):
    project = make_project(tmp_path, {**VALID, "requirements.txt": "-r missing.txt\n"})
    with pytest.raises(UsageError, match="missing.txt is not in commit"):
        inputs_of(project)

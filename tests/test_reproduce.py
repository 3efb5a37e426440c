"""`soopervisor reproduce`: a commit run again from its set's recorded lock, products compared.

The Docker tests use a real git history, the real engine and real PyPI: a
deterministic pipeline reproduces identically; one task that writes the time
is named; a lock pinning a version the index does not have fails naming it.
The lock, the installers' messages and the environment comparison are
tested without Docker.
"""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from textwrap import dedent

import pytest

import soopervisor
from soopervisor.errors import UsageError
from soopervisor.failure import unavailable_requirement
from soopervisor.reproduction import environment_changes, lock_from

from .conftest import cli
from .projects import VALID, commit_all, git, make_project, write
from .sets import store_set

PIPELINE = dedent(
    """\
    meta:
      extract_upstream: false
    tasks:
      - source: tasks.clean
        product: output/clean.csv
      - source: tasks.summary
        product: output/summary.json
        upstream: [clean]
      - source: tasks.stamp
        product: output/stamp.txt
    """
)


def tasks_py(stamp: str) -> str:
    return dedent(
        f"""\
        import json
        import time
        from pathlib import Path


        def _out(product):
            Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
            return Path(str(product))


        def clean(product):
            _out(product).write_text("a,b\\n1,2\\n3,4\\n")


        def summary(product, upstream):
            rows = Path(str(upstream["clean"])).read_text().splitlines()[1:]
            _out(product).write_text(json.dumps({{"rows": len(rows)}}, sort_keys=True))


        def stamp(product):
            _out(product).write_text({stamp})
        """
    )


def project_files(stamp: str = '"fixed"') -> dict[str, str]:
    return {"pipeline.yaml": PIPELINE, "env.yaml": "sample: false\n",
            "requirements.txt": VALID["requirements.txt"], "tasks.py": tasks_py(stamp)}


def manifest_path(home: Path, project: str, commit: str, run_id: str) -> Path:
    return home / "artifacts" / project / commit / run_id / "manifest.json"


def log_of(run) -> str:
    return Path(run.log_path).read_text()


# -- with Docker ------------------------------------------------------------------------------


@pytest.fixture
def own_image(engine, base_image, tmp_path):
    """The base image with a label of this test's: its environments (the locked one too) are built here."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {base_image}\nLABEL soopervisor.test={uuid.uuid4().hex}\n")
    tag = f"soopervisor-test/reproduce:{uuid.uuid4().hex[:12]}"
    engine.images.build(path=str(tmp_path / "ctx"), tag=tag, rm=True)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


@pytest.mark.docker
def test_a_deterministic_pipeline_reproduces_identically_from_the_lock(tmp_path, engine, home, own_image):
    project = make_project(tmp_path, project_files())
    first = soopervisor.run(str(project), force=True, image=own_image)
    assert first.ok, log_of(first)
    original = json.loads(manifest_path(home, first.project, first.commit, first.id).read_text())
    # uv resolved it, with hashes; pip when uv could not reach the index (the log says so)
    hashed = original["environment"]["resolved_by"] == "uv"
    # the checkout moves on, with an uncommitted change: neither is touched by the reproduction
    write(project, {"tasks.py": tasks_py('"changed"')})
    head = commit_all(project, "later")
    write(project, {"notes.txt": "work in progress\n"})

    proc = cli("reproduce", first.commit[:8], cwd=project, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert f"reproduced {first.commit[:7]} (sample)" in out
    assert "environment: the recorded packages, rebuilt from the lock" in out
    assert ("every file's sha256 checked" in out) == hashed
    assert "✓ all 3 products reproduced identically" in out
    assert "ploomber's metadata files (3) are not compared" in out

    # the new run is another set of the first commit, built from the lock with nothing carried over
    runs = [r for r in soopervisor.list_runs() if r.commit == first.commit and r.id != first.id]
    assert len(runs) == 1 and runs[0].ok
    again = json.loads(manifest_path(home, first.project, first.commit, runs[0].id).read_text())
    assert again["carried_from"] is None
    assert environment_changes(original["environment"], again["environment"]) == []
    log = log_of(runs[0])
    assert again["image"] == own_image  # the base image the original run asked for
    assert "uv pip sync .soopervisor-lock.txt (the recorded lock:" in log
    # what is reproduced is said in the run's own log, right after its first line
    assert log.splitlines()[1].startswith(f"soopervisor: reproducing run {first.id} of {first.commit[:7]} (sample)"), log
    assert "uv pip compile" not in log  # nothing resolved again
    assert {f["path"]: f["sha256"] for f in again["files"] if "/." not in f["path"]} == \
           {f["path"]: f["sha256"] for f in original["files"] if "/." not in f["path"]}

    # the user's checkout: still at the later commit, the uncommitted file still there, no worktree left
    assert git(project, "rev-parse", "HEAD").strip() == head
    assert (project / "notes.txt").read_text() == "work in progress\n"
    assert len(git(project, "worktree", "list").splitlines()) == 1

    # the JSON form says the same, and --exit-code is 0 when all is equal
    proc = cli("reproduce", first.commit, "--run", first.id, "--json", "--exit-code", cwd=project, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["same"] is True and data["original_run"] == first.id and data["differ"] == [] and data["tasks"] == []
    assert sorted(data["identical"]) == ["output/clean.csv", "output/stamp.txt", "output/summary.json"]


@pytest.mark.docker
def test_a_task_that_writes_the_time_is_named(tmp_path, engine, home):
    project = make_project(tmp_path, project_files(stamp="str(time.time_ns())"))
    first = soopervisor.run(str(project), force=True)
    assert first.ok, log_of(first)

    repro = soopervisor.reproduce(first.commit, path=str(project))
    assert repro.run.ok, log_of(repro.run)
    assert not repro.same
    assert repro.differ == ["output/stamp.txt"]
    assert sorted(repro.identical) == ["output/clean.csv", "output/summary.json"]
    assert repro.environment == []
    assert repro.tasks == {"stamp": ["output/stamp.txt"]}
    assert "~ output/stamp.txt differs (task stamp)" in repr(repro)
    assert "✗ 1 of 3 products differ: non-deterministic tasks: stamp" in repr(repro)
    assert "output/stamp.txt" in repro._repr_html_()

    proc = cli("reproduce", first.commit, "--exit-code", cwd=project, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "~ output/stamp.txt differs (task stamp)" in proc.stdout
    assert "non-deterministic tasks: stamp" in proc.stdout


@pytest.mark.docker
def test_a_lock_with_a_version_the_index_does_not_have_fails_naming_it(tmp_path, engine, home):
    project = make_project(tmp_path, project_files())
    first = soopervisor.run(str(project), force=True)
    assert first.ok, log_of(first)
    path = manifest_path(home, first.project, first.commit, first.id)
    manifest = json.loads(path.read_text())
    # the record says six 0.0.1 was installed: no such release exists
    for p in manifest["environment"]["packages"]:
        if p["name"] == "six":
            p["version"] = "0.0.1"
            break
    else:
        pytest.fail("ploomber's environment has six")
    path.write_text(json.dumps(manifest))

    proc = cli("reproduce", first.commit, cwd=project, timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    assert "six==0.0.1 cannot be installed" in err
    assert "the recorded environment pins six==0.0.1, which can no longer be installed" in err
    assert "Traceback" not in proc.stdout + err


# -- without Docker ---------------------------------------------------------------------------


def test_a_set_without_a_recorded_lock_is_refused_before_anything_runs(tmp_path, home):
    project = make_project(tmp_path, project_files())
    commit = git(project, "rev-parse", "HEAD").strip()
    store_set("proj", commit, {"output/a.txt": "a"}, mode="full", environment={"image_id": "x", "packages": None})
    proc = cli("reproduce", commit[:7], cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did not record its environment's packages" in proc.stderr
    assert "soopervisor run --force" in proc.stderr
    assert not (home / "runs.sqlite").exists() or soopervisor.list_runs() == []


def test_a_commit_the_repository_does_not_have_is_refused(tmp_path, home):
    project = make_project(tmp_path, project_files())
    missing = "ab" * 20
    packages = [{"name": "six", "version": "1.16.0", "installer": "uv"}]
    store_set("proj", missing, {"output/a.txt": "a"}, mode="full", environment={"packages": packages})
    proc = cli("reproduce", missing, cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"commit {missing[:7]} is not in the repository" in proc.stderr
    assert "git fetch" in proc.stderr


def pkg(name: str, version: str, installer: str | None = "uv", **kw) -> dict:
    return {"name": name, "version": version, "installer": installer, **kw}


H1, H2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_the_lock_pins_what_pip_or_uv_installed_with_hashes_when_all_have_them():
    env = {"packages": [pkg("six", "1.16.0", hashes=[H2, H1]), pkg("ploomber", "0.23.3", "pip", hashes=[H1]),
                        pkg("python-apt", "2.6.0", None), pkg("dbus-python", "1.3.2", "debian")]}
    lock = lock_from(env, "run r1")
    assert lock.text.decode().splitlines() == [f"ploomber==0.23.3 --hash={H1}", f"six==1.16.0 --hash={H1} --hash={H2}"]
    assert (lock.packages, lock.hashed) == (2, True)
    # one package without hashes: no hashes at all (pip would refuse a partly hashed file)
    env["packages"][1].pop("hashes")
    lock = lock_from(env, "run r1")
    assert lock.text.decode().splitlines() == ["ploomber==0.23.3", "six==1.16.0"] and not lock.hashed


@pytest.mark.parametrize("bad", [
    pkg("six --index-url http://evil", "1"), pkg("six", "1.0 --index-url=http://evil"), pkg("six", "1\n-e ."),
    pkg("six", "1", hashes=["md5:abc"]), pkg("-r", "1"), pkg("six", None),
])
def test_a_damaged_or_hostile_record_never_reaches_the_installer(bad):
    with pytest.raises(UsageError, match="its manifest is damaged"):
        lock_from({"packages": [bad]}, "run r1")


def test_packages_from_a_path_or_a_url_are_named_and_refused():
    env = {"packages": [pkg("six", "1.16.0"), pkg("myproj", "0.1", source="local"), pkg("lib", "2", source="url")]}
    with pytest.raises(UsageError, match="installed myproj, lib from a local path or a URL"):
        lock_from(env, "run r1")


def test_no_lock_no_packages():
    for env in (None, {}, {"packages": None}):
        with pytest.raises(UsageError, match="did not record its environment's packages"):
            lock_from(env, "run r1")
    with pytest.raises(UsageError, match="no package installed by pip or uv"):
        lock_from({"packages": [pkg("python-apt", "2.6", None)]}, "run r1")


def test_the_installers_messages_name_the_version_they_cannot_have():
    uv = ["  × No solution found when resolving dependencies:",
          ("  ╰─▶ Because there is no version of six==0.0.1 and you require six==0.0.1, we can conclude that your "
          "requirements are unsatisfiable.")]
    assert unavailable_requirement(uv) == ("six==0.0.1", "the package index does not offer it")
    pip = ["ERROR: Could not find a version that satisfies the requirement six==0.0.1 (from versions: 1.0.0)",
           "ERROR: No matching distribution found for six==0.0.1"]
    assert unavailable_requirement(pip) == ("six==0.0.1", "the package index does not offer it")
    mismatch = ["  × Failed to download `six==1.16.0`", "  ╰─▶ Hash mismatch for `six==1.16.0`"]
    assert unavailable_requirement(mismatch) == ("six==1.16.0", "its files no longer have the recorded sha256")
    assert unavailable_requirement(["ERROR: could not build wheels for x", "exit code 1"]) is None


def test_environment_changes_name_each_package():
    before = {"packages": [pkg("a", "1"), pkg("b", "2"), pkg("c", "3")]}
    after = {"packages": [pkg("a", "1"), pkg("b", "2.1"), pkg("d", "4")]}
    assert environment_changes(before, after) == ["b 2 -> 2.1", "+ d 4", "- c 3"]
    assert environment_changes(before, before) == []

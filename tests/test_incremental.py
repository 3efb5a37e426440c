"""Incremental runs: a run starts from the nearest ancestor's set and rebuilds only what changed.

The Docker tests use a real git history and the real engine: a pipeline a -> b -> c
plus an independent d, all Python functions. The parent choice and the rule that
says whether a file was built or carried over are tested without Docker.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from textwrap import dedent

import pytest

import soopervisor
from soopervisor.artifacts.manifest import _checked, _Damaged, write_manifest
from soopervisor.artifacts.sets import _read_all
from soopervisor.errors import UsageError
from soopervisor.incremental import carry, choose_parent, origins
from soopervisor.options import check_force
from soopervisor.progress import from_json
from soopervisor.runs import RunStore
from soopervisor.script import render
from soopervisor.storage import open_storage

from .conftest import cli
from .projects import VALID, commit_all, git, make_project, write
from .sets import store_set

PIPELINE = dedent(
    """\
    meta:
      extract_upstream: false
    tasks:
      - source: tasks.a
        product: output/a.txt
      - source: tasks.b
        product: output/b.txt
        upstream: [a]
      - source: tasks.c
        product: output/c.txt
        upstream: [b]
      - source: tasks.d
        product: output/d.txt
    """
)


def tasks_py(b_text: str = "b1", d_text: str = "d1") -> str:
    return dedent(
        f"""\
        from pathlib import Path


        def _write(product, text):
            Path(str(product)).parent.mkdir(parents=True, exist_ok=True)
            Path(str(product)).write_text(text)


        def a(product):
            _write(product, "a")


        def b(product, upstream):
            _write(product, Path(str(upstream["a"])).read_text() + "+{b_text}")


        def c(product, upstream):
            _write(product, Path(str(upstream["b"])).read_text() + "+c")


        def d(product):
            _write(product, "{d_text}")
        """
    )


def files(**kw: str) -> dict[str, str]:
    return {
        "pipeline.yaml": PIPELINE,
        "env.yaml": "sample: false\n",
        "requirements.txt": VALID["requirements.txt"],  # the environment the other tests cached
        "tasks.py": tasks_py(**kw),
    }


def manifest_of(home: Path, run) -> dict:
    return json.loads((home / "artifacts" / run.project / run.commit / run.id / "manifest.json").read_text())


def by_path(manifest: dict) -> dict[str, dict]:
    return {f["path"]: f for f in manifest["files"]}


def log_of(run) -> str:
    return Path(run.log_path).read_text()


def started_tasks(log: str) -> list[str]:
    out = []
    for line in log.splitlines():
        if line.startswith("--> soopervisor: task "):
            event = json.loads(line[len("--> soopervisor: task "):])
            if event["event"] == "started":
                out.append(event["task"])
    return sorted(out)


PRODUCTS = ["output/a.txt", "output/b.txt", "output/c.txt", "output/d.txt"]


def meta(p: str) -> str:
    head, name = p.rsplit("/", 1)
    return f"{head}/.{name}.metadata"


# -- with Docker ------------------------------------------------------------------------------


@pytest.mark.docker
def test_incremental_run_rebuilds_the_changed_task_and_its_downstream(tmp_path, engine, home, monkeypatch):
    project = make_project(tmp_path, files())
    first = soopervisor.run(str(project))
    assert first.ok, log_of(first)
    m1 = manifest_of(home, first)
    assert "soopervisor: full build: no earlier sample set of this environment" in log_of(first)
    assert m1["carried_from"] is None and m1["tasks_up_to_date"] == 0
    assert {f["origin"] for f in m1["files"]} == {"built"}
    assert set(PRODUCTS) | {meta(p) for p in PRODUCTS} <= set(by_path(m1))

    # commit 2 changes b: b and c are built, a and d carried over from commit 1
    write(project, {"tasks.py": tasks_py(b_text="b2")})
    c2 = commit_all(project, "change b")
    inc = soopervisor.run(str(project))
    assert inc.ok, log_of(inc)
    log = log_of(inc)
    n = len(m1["files"])
    assert f"soopervisor: incremental run: starting from {n} files of {first.commit[:7]} (run {first.id})" in log
    assert "soopervisor: 2 of 4 tasks up to date, 2 to build" in log
    assert "--force" not in log.split("soopervisor: ploomber build", 1)[1].splitlines()[0]
    assert started_tasks(log) == ["b", "c"]
    assert inc.tasks_up_to_date == 2 and inc.tasks_total == 2
    assert RunStore().get(inc.id).tasks_up_to_date == 2
    m2 = manifest_of(home, inc)
    assert m2["carried_from"] == {"commit": first.commit, "run_id": first.id}
    assert m2["tasks_up_to_date"] == 2
    files2 = by_path(m2)
    parent = {"commit": first.commit, "run_id": first.id}
    for p in ("output/a.txt", "output/d.txt"):
        assert files2[p]["origin"] == parent and files2[meta(p)]["origin"] == parent
    for p in ("output/b.txt", "output/c.txt"):
        assert files2[p]["origin"] == "built" and files2[meta(p)]["origin"] == "built"
    stored = home / "artifacts" / "proj" / c2 / inc.id / "files" / "output"
    assert (stored / "c.txt").read_text() == "a+b2+c"

    # a forced run of the same commit (the CLI's --force) builds everything, and the products are the same bytes
    out = cli("run", str(project), "--force", check=0).stdout
    forced = RunStore().list()[0]
    assert forced.ok and "0 of 4 tasks up to date (skipped)" in out.splitlines()[-1], out
    flog = log_of(forced)
    assert "soopervisor: full build: --force rebuilds every task" in flog
    assert "soopervisor: 0 of 4 tasks up to date, 4 to build" in flog
    assert started_tasks(flog) == ["a", "b", "c", "d"]
    m3 = manifest_of(home, forced)
    assert m3["carried_from"] is None and {f["origin"] for f in m3["files"]} == {"built"}
    assert {p: files2[p]["sha256"] for p in PRODUCTS} == {p: by_path(m3)[p]["sha256"] for p in PRODUCTS}

    # SOOPERVISOR_FORCE=1 does the same
    monkeypatch.setenv("SOOPERVISOR_FORCE", "1")
    env_forced = soopervisor.run(str(project))
    assert env_forced.ok and "soopervisor: full build: SOOPERVISOR_FORCE rebuilds every task" in log_of(env_forced)
    assert manifest_of(home, env_forced)["carried_from"] is None
    assert started_tasks(log_of(env_forced)) == ["a", "b", "c", "d"]
    monkeypatch.delenv("SOOPERVISOR_FORCE")

    # a re-run of the same commit carries everything over from its newest set; the summary says so
    out = cli("run", str(project), check=0).stdout
    again = RunStore().list()[0]
    assert again.ok and "succeeded" in out.splitlines()[-1]
    assert "4 of 4 tasks up to date (skipped)" in out.splitlines()[-1], out
    assert "soopervisor: 4 of 4 tasks up to date, 0 to build" in log_of(again)
    assert started_tasks(log_of(again)) == []
    m5 = manifest_of(home, again)
    assert m5["carried_from"] == {"commit": c2, "run_id": env_forced.id}
    assert all(isinstance(f["origin"], dict) for f in m5["files"])


@pytest.mark.docker
def test_damaged_parent_and_other_mode_mean_a_full_build(tmp_path, engine, home):
    project = make_project(tmp_path, files())
    first = soopervisor.run(str(project))
    assert first.ok, log_of(first)

    # a stored product of the parent changed (a new file: the storage hard-links equal content)
    stored = home / "artifacts" / "proj" / first.commit / first.id / "files" / "output" / "a.txt"
    stored.unlink()
    stored.write_text("tampered")
    write(project, {"tasks.py": tasks_py(d_text="d2")})
    commit_all(project, "change d")
    run = soopervisor.run(str(project))
    assert run.ok, log_of(run)
    log = log_of(run)
    assert (f"soopervisor: full build: parent set {first.commit[:7]} (run {first.id}) is damaged: "
            "output/a.txt does not match its sha256 in the manifest") in log
    assert started_tasks(log) == ["a", "b", "c", "d"]
    m = manifest_of(home, run)
    assert m["carried_from"] is None and by_path(m)["output/a.txt"]["origin"] == "built"

    # the sample sets are no parent of a full run
    full = soopervisor.run(str(project), sample=False)
    assert full.ok and full.mode == "full"
    assert "soopervisor: full build: no earlier full set of this environment" in log_of(full)
    assert manifest_of(home, full)["carried_from"] is None


# -- without Docker ---------------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_parent_is_the_nearest_ancestor_with_a_set_of_this_mode_and_environment(tmp_path, home):
    root = make_project(tmp_path, files())
    c1 = git(root, "rev-parse", "HEAD").strip()
    c2 = commit_all(root, "two")
    c3 = commit_all(root, "three")
    git(root, "checkout", "-q", "-b", "side", c1)
    side = commit_all(root, "side")
    git(root, "checkout", "-q", "main")
    store = open_storage(None)
    store_set("proj", c1, {"output/a.txt": "old"}, run_id="r1", env_hash="E", finished="2026-01-01T00:00:00Z")
    store_set("proj", c1, {"output/a.txt": "new"}, run_id="r1b", env_hash="E", finished="2026-01-02T00:00:00Z")
    store_set("proj", c1, {"output/a.txt": "failed"}, run_id="r1c", env_hash="E", status="failed",
              finished="2026-01-03T00:00:00Z")
    store_set("proj", c2, {"output/a.txt": "other env"}, run_id="r2", env_hash="OTHER")
    store_set("proj", c2, {"output/a.txt": "full"}, run_id="r2f", env_hash="E", mode="full")
    store_set("proj", side, {"output/a.txt": "side"}, run_id="rs", env_hash="E")  # not an ancestor of c3

    read = _read_all("proj", store)
    from soopervisor.incremental import ancestors

    history = ancestors(root, c3)
    assert history == [c3, c2, c1]
    parent = choose_parent(read, history, "sample", "E")
    assert (parent.commit, parent.run_id) == (c1, "r1b")  # newest succeeded of c1; c2's are another env/mode
    assert parent.files == {"output/a.txt": _sha("new")}
    assert choose_parent(read, history, "full", "E").run_id == "r2f"
    assert choose_parent(read, history, "sample", "OTHER").run_id == "r2"
    assert choose_parent(read, history, "sample", "NONE") is None
    assert choose_parent(read, history, "sample", None) is None

    # carried: the files land under workspace/<subdir>/, checked by sha256
    import io
    import tarfile

    decision = carry(store, "proj", root, c3, "", "sample", "E", force=False)
    assert decision.carried is not None and decision.note.startswith("soopervisor: incremental run: starting from 1 file ")
    with tarfile.open(fileobj=io.BytesIO(decision.carried.tar)) as tar:
        assert tar.getnames() == ["workspace/output/a.txt"]
        assert tar.extractfile("workspace/output/a.txt").read() == b"new"
    sub = carry(store, "proj", root, c3, "pipelines/x", "sample", "E", force=False)
    with tarfile.open(fileobj=io.BytesIO(sub.carried.tar)) as tar:
        assert tar.getnames() == ["workspace/pipelines/x/output/a.txt"]
    forced = carry(store, "proj", root, c3, "", "sample", "E", force=True, forced_by="SOOPERVISOR_FORCE")
    assert forced.carried is None and "SOOPERVISOR_FORCE" in forced.note

    # a file of the parent gone from storage: a full build that says why, never an error
    gone = home / "artifacts" / "proj" / c1 / "r1b" / "files" / "output" / "a.txt"
    gone.unlink()
    broken = carry(store, "proj", root, c3, "", "sample", "E", force=False)
    assert broken.carried is None
    assert f"parent set {c1[:7]} (run r1b) is damaged: output/a.txt could not be read" in broken.note
    # a storage that cannot list: a full build too
    class Failing:
        def list_sets(self, project):
            raise OSError("disk gone")

    assert "could not be listed" in carry(Failing(), "proj", root, c3, "", "sample", "E", force=False).note


def test_committed_files_win_over_carried_ones(tmp_path, home):
    root = make_project(tmp_path, {**files(), "output/keep.txt": "committed"})
    c1 = git(root, "rev-parse", "HEAD").strip()
    store_set("proj", c1, {"output/keep.txt": "product", "output/x.txt": "x"}, run_id="r1", env_hash="E")
    decision = carry(open_storage(None), "proj", root, c1, "", "sample", "E", force=False)
    assert decision.carried is not None and set(decision.carried.files) == {"output/x.txt"}


def test_origin_rule():
    parent = {"commit": "c1", "run_id": "r1"}
    carried = {"out/a.txt": _sha("a"), "out/.a.txt.metadata": _sha("ma"),
               "out/b.txt": _sha("b"), "out/.b.txt.metadata": _sha("mb"),
               "out/dir/x.csv": _sha("x"), "out/.dir.metadata": _sha("md"),
               "out/loose.txt": _sha("l")}
    current = {**carried,
               "out/.b.txt.metadata": _sha("mb2"),   # b rebuilt: same bytes, new metadata timestamp
               "out/.dir.metadata": _sha("md2"),     # the folder product rebuilt
               "out/new.txt": _sha("n")}
    found = origins(current, carried, parent)
    assert found["out/a.txt"] == parent and found["out/.a.txt.metadata"] == parent
    assert found["out/b.txt"] == "built" and found["out/.b.txt.metadata"] == "built"
    assert found["out/dir/x.csv"] == "built"  # its folder's metadata changed
    assert found["out/loose.txt"] == parent   # no product metadata in sight: its sha256 decides
    assert found["out/new.txt"] == "built"
    assert set(origins(current, carried, None).values()) == {"built"}


def test_manifest_keeps_origin_and_reads_old_ones(tmp_path):
    src = tmp_path / "set"
    (src / "files" / "out").mkdir(parents=True)
    (src / "files" / "out" / "a.txt").write_text("a")
    (src / "files" / "out" / "b.txt").write_text("b")
    parent = {"commit": "c1", "run_id": "r1"}
    m = write_manifest(src, project="p", commit="c2", run_id="r2", mode="sample", status="succeeded",
                       carried_from=parent, tasks_up_to_date=1,
                       carried={"out/a.txt": _sha("a"), "out/b.txt": _sha("old")})
    assert {f["path"]: f["origin"] for f in m["files"]} == {"out/a.txt": parent, "out/b.txt": "built"}
    clean, _files, _log = _checked(json.loads((src / "manifest.json").read_text()), old_layout=False)
    assert clean["carried_from"] == parent and clean["tasks_up_to_date"] == 1
    assert {f["path"]: f["origin"] for f in clean["files"]} == {"out/a.txt": parent, "out/b.txt": "built"}
    # a manifest from before incremental runs: no origin, no carried_from
    old = json.loads((src / "manifest.json").read_text())
    for f in old["files"]:
        del f["origin"]
    del old["carried_from"], old["tasks_up_to_date"]
    clean, _files, _log = _checked(old, old_layout=False)
    assert clean["carried_from"] is None and all("origin" not in f for f in clean["files"])
    old["files"][0]["origin"] = "copied"
    with pytest.raises(_Damaged):
        _checked(old, old_layout=False)


def test_force_setting(monkeypatch):
    monkeypatch.delenv("SOOPERVISOR_FORCE", raising=False)
    assert check_force(None) is False
    assert check_force(True) is True
    for word, value in (("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False), ("false", False)):
        monkeypatch.setenv("SOOPERVISOR_FORCE", word)
        assert check_force(None) is value
        assert check_force(not value) is (not value)  # the option wins over the setting
    monkeypatch.setenv("SOOPERVISOR_FORCE", "sometimes")
    with pytest.raises(UsageError, match="SOOPERVISOR_FORCE"):
        check_force(None)


def test_script_forces_only_when_asked(tmp_path):
    from soopervisor.project import inspect

    project = inspect(make_project(tmp_path, files())).project
    def build_args(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("readonly -a SV_BUILD_ARGS="))

    assert "--force" in build_args(render(project, sample=True))  # `soopervisor script`, CI: nothing carried
    unforced = build_args(render(project, sample=True, force=False))
    assert "--force" not in unforced and "pipeline.yaml" in unforced


def test_plan_event_counts_up_to_date_tasks(capsys):
    from soopervisor.script.task_events import Reporter

    r = Reporter("0" * 32)
    r.plan(["Skipped", "WaitingExecution", "Skipped", "WaitingUpstream"])
    out = capsys.readouterr().out
    assert "soopervisor: 2 of 4 tasks up to date, 2 to build" in out
    event = from_json(out.strip().splitlines()[-1].split("::", 3)[-1])
    assert (event.event, event.total, event.up_to_date) == ("plan", 2, 2)


def test_rest_force_field_is_checked():
    from soopervisor.api.base import ApiError
    from soopervisor.api.handlers import parse_force

    assert parse_force({}) is None and parse_force({"force": True}) is True and parse_force({"force": None}) is None
    with pytest.raises(ApiError) as e:
        parse_force({"force": "yes"})
    assert e.value.status_code == 400 and "'force'" in e.value.error


def test_cli_and_magic_take_force():
    from click.testing import CliRunner

    from soopervisor.cli import cli

    out = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "--force" in out and "soopervisor run --force" in out
    from jupyter_ext.magics import _parser

    assert _parser().parse_args(["run", "--force"]).force is True
    assert _parser().parse_args(["run"]).force is None

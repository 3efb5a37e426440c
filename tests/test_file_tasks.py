"""Which task made each stored file: ``files[].task`` in the manifest, and the diff that names it.

The rule (soopervisor/artifacts/owners.py) and the manifest field are tested without Docker; once
with Docker, a real pipeline (a task with two products, a task with a folder product) is run, run
again incrementally, and two commits are diffed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from soopervisor.artifacts.manifest import ArtifactFile, _checked, _Damaged, write_manifest
from soopervisor.artifacts.owners import claims, metadata_of, owners


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- without Docker ---------------------------------------------------------------------------


def test_products_claim_their_file_their_metadata_and_what_is_under_a_folder():
    products = {
        "clean": ["/workspace/output/clean.csv", "/workspace/output/summary.json"],
        "plots": ["/workspace/output/plots"],
        "inner": ["/workspace/output/plots/special.png"],  # a file product inside another task's folder
        "outside": ["/tmp/elsewhere.csv", "/workspace"],  # not collected: claims nothing
    }
    claimed = claims(products, "/workspace")
    names = ["output/clean.csv", "output/.clean.csv.metadata", "output/summary.json", "output/.summary.json.metadata",
             "output/plots/a.png", "output/plots/deep/b.png", "output/.plots.metadata", "output/plots/special.png",
             "output/loose.txt", "output/plots2/c.png"]
    assert owners(names, claimed) == {
        "output/clean.csv": "clean", "output/.clean.csv.metadata": "clean",
        "output/summary.json": "clean", "output/.summary.json.metadata": "clean",
        "output/plots/a.png": "plots", "output/plots/deep/b.png": "plots", "output/.plots.metadata": "plots",
        "output/plots/special.png": "inner",  # the nearest claim wins
    }  # loose.txt and plots2/ (a name that only starts like plots) have no task
    assert metadata_of("a.csv") == ".a.csv.metadata" and metadata_of("x/y/z") == "x/y/.z.metadata"
    # a project in a sub-folder: paths are relative to it; stored names are masked like log text
    sub = claims({"t": ["/workspace/pipelines/x/output/secret-token.csv"]}, "/workspace/pipelines/x",
                 mask=lambda rel: rel.replace("secret-token", "***"))
    assert owners(["output/***.csv", "output/.***.csv.metadata"], sub) == {
        "output/***.csv": "t", "output/.***.csv.metadata": "t"}
    # relative paths (a ploomber that kept them so) are relative to the project folder
    assert owners(["output/r.txt"], claims({"r": ["output/r.txt"]}, "/workspace")) == {"output/r.txt": "r"}


def test_the_manifest_writes_each_files_task_and_reads_old_and_bad_ones(tmp_path):
    src = tmp_path / "set"
    (src / "files" / "out").mkdir(parents=True)
    (src / "files" / "out" / "a.txt").write_text("a")
    (src / "files" / "out" / "b.txt").write_text("b")
    m = write_manifest(src, project="p", commit="c", run_id="r", mode="sample", status="succeeded",
                       tasks={"out/a.txt": "make_a", "gone.txt": "other"})
    assert {f["path"]: f["task"] for f in m["files"]} == {"out/a.txt": "make_a", "out/b.txt": None}
    written = json.loads((src / "manifest.json").read_text())
    clean, files, _log = _checked(written, old_layout=False)
    assert files == [ArtifactFile("out/a.txt", 1, _sha("a"), "make_a"), ArtifactFile("out/b.txt", 1, _sha("b"))]
    assert [f["task"] for f in clean["files"]] == ["make_a", None]
    # a manifest from before tasks were recorded still reads: no task
    for f in written["files"]:
        del f["task"]
    clean, files, _log = _checked(written, old_layout=False)
    assert [f.task for f in files] == [None, None] and all("task" not in f for f in clean["files"])
    # a task that is not a string: the set is damaged, like any other bad entry
    for bad in (3, ["make_a"], {"name": "make_a"}, True):
        written["files"][0]["task"] = bad
        with pytest.raises(_Damaged, match="file entry 0 has a task"):
            _checked(written, old_layout=False)


def test_a_carried_file_keeps_the_task_its_parent_set_gave_it(tmp_path, home):
    from soopervisor.artifacts.sets import _read_all
    from soopervisor.incremental import carry, choose_parent
    from soopervisor.storage import open_storage

    from .projects import git, make_project
    from .sets import store_set

    root = make_project(tmp_path)
    c1 = git(root, "rev-parse", "HEAD").strip()
    store_set("proj", c1, {"output/a.txt": "a", "output/.a.txt.metadata": "{}", "output/x.txt": "x"},
              run_id="r1", env_hash="E", tasks={"output/a.txt": "a", "output/.a.txt.metadata": "a"})
    parent = choose_parent(_read_all("proj", open_storage(None)), [c1], "sample", "E")
    assert parent.tasks == {"output/a.txt": "a", "output/.a.txt.metadata": "a"}
    decision = carry(open_storage(None), "proj", root, c1, "", "sample", "E", force=False)
    assert decision.carried.tasks == {"output/a.txt": "a", "output/.a.txt.metadata": "a"}


# -- the diff names tasks and folds ploomber's metadata (stored sets, no Docker) ---------------------

A = "a1b2c3d" + "1" * 33
B = "e4f5a6b" + "2" * 33
C = "c0ffee0" + "3" * 33
TASKS = {"out/clean.csv": "clean", "out/.clean.csv.metadata": "clean", "out/summary.json": "clean",
         "out/.summary.json.metadata": "clean", "out/plots/a.txt": "plots", "out/.plots.metadata": "plots"}


def metadata(timestamp: float, source: str) -> str:
    """A ploomber metadata file as ploomber writes it."""
    return json.dumps({"timestamp": timestamp, "stored_source_code": source, "params": {}})


def products(summary: str, t: float, source: str = "def clean(): ...") -> dict[str, str]:
    return {"out/clean.csv": "a\n1\n", "out/.clean.csv.metadata": metadata(t, source),
            "out/summary.json": summary, "out/.summary.json.metadata": metadata(t, source),
            "out/plots/a.txt": "plot\n", "out/.plots.metadata": metadata(t, "def plots(): ...")}


def test_the_diff_names_each_files_task_and_folds_the_metadata(home):
    import time

    from soopervisor.artifacts import get_artifacts
    from soopervisor.artifacts.compare import is_ploomber_metadata, kind_of

    from .conftest import cli
    from .sets import store_set

    assert [is_ploomber_metadata(n) for n in ("out/.a.csv.metadata", ".plots.metadata", "out/a.metadata",
                                               "out/..metadata", "out/.a.csv.metadata/x")] == [
        True, True, False, False, False]
    assert kind_of("out/.a.csv.metadata") == "json" and kind_of("out/a.metadata") == "binary"

    # A -> B: the same products built again (a comment changed): only the metadata timestamps differ
    store_set("proj", A, products('{"n": 1}', 1.0), run_id="r1", tasks=TASKS)
    time.sleep(0.01)
    store_set("proj", B, products('{"n": 1}', 2.0), run_id="r2", tasks=TASKS)
    time.sleep(0.01)
    # B -> C: clean's source changed its summary; plots' metadata is gone, a stray one appears
    c_files = products('{"n": 2}', 3.0, "def clean(): return 2")
    del c_files["out/.plots.metadata"]
    c_files["out/.stray.metadata"] = metadata(3.0, "")
    store_set("proj", C, c_files, run_id="r3", tasks=TASKS)

    same = cli("diff", A, B, "--project", "proj", "--exit-code", check=0).stdout  # metadata alone: exit 0
    assert same.splitlines()[1:] == [
        "3 changed, 0 added, 0 removed, 3 unchanged", "",
        "the products are the same; only ploomber's metadata differs", "",
        "ploomber metadata: 3 files changed (timestamps); --metadata shows them",
    ]
    shown = cli("diff", A, B, "--project", "proj", "--metadata", "--exit-code", check=0).stdout
    assert "~ out/.clean.csv.metadata (json) (task clean)\n    keys: 1 changed, 0 added, 0 removed\n" \
           "    ~ timestamp: 1.0 -> 2.0\n" in shown
    assert "ploomber metadata:" not in shown

    out = cli("diff", B, C, "--project", "proj", "--exit-code", check=1).stdout  # a product changed: exit 1
    assert "~ out/summary.json (json) (task clean)\n    keys: 1 changed, 0 added, 0 removed\n    ~ n: 1 -> 2" in out
    assert ".metadata (json)" not in out and ".metadata" not in out.split("ploomber metadata:")[0]
    assert out.splitlines()[-1] == ("ploomber metadata: 2 files changed, 1 added, 1 removed "
                                    "(timestamps, stored source); --metadata shows them")
    listed = cli("diff", B, C, "--project", "proj", "--metadata", check=0).stdout
    assert "- out/.plots.metadata (json, " in listed and "removed (task plots)" in listed
    assert "+ out/.stray.metadata (json, " in listed and listed.count("(task ") == 4  # the stray one has none

    # --json keeps every file, each with its task and whether it is metadata
    body = json.loads(cli("diff", B, C, "--project", "proj", "--json", check=0).stdout)
    by = {f["name"]: f for f in body["files"]}
    assert len(by) == 7 and by["out/summary.json"]["task"] == "clean" and by["out/summary.json"]["metadata"] is False
    assert by["out/.plots.metadata"]["task"] == "plots" and by["out/.plots.metadata"]["metadata"] is True
    assert by["out/.stray.metadata"]["task"] is None
    keys = by["out/.clean.csv.metadata"]["diff"]["keys"]["changed"]
    assert sorted(k["key"] for k in keys) == ["stored_source_code", "timestamp"]

    # the notebook display: a task column, the metadata folded into one row
    html = get_artifacts(B, project="proj").compare(C)._repr_html_()
    assert "<th style='text-align:left'>task</th>" in html and "<td style='text-align:left'>clean</td>" in html
    assert "out/.clean.csv.metadata" not in html
    assert "ploomber metadata: 2 files changed, 1 added, 1 removed (timestamps, stored source)" in html
    # B's manifest names the task, else A's (a removed file keeps the task A gave it)
    cmp = get_artifacts(B, project="proj").compare(C)
    assert cmp.change("out/.plots.metadata").task == "plots" and cmp.outputs_differ is True


# -- with Docker: a real pipeline --------------------------------------------------------------------

PIPELINE = """\
# the pipeline of the task tests
meta:
  extract_upstream: false
tasks:
  - source: tasks.clean
    product:
      data: output/clean.csv
      summary: output/summary.json
  - source: tasks.plots
    product: output/plots
    upstream: [clean]
"""


def tasks_py(n: int = 1, plot: str = "p1") -> str:
    return f'''\
import json
from pathlib import Path
from pathlib import Path


def clean(product):
    Path(str(product["data"])).parent.mkdir(parents=True, exist_ok=True)
    Path(str(product["data"])).write_text("a\\\\n1\\\\n")
    Path(str(product["summary"])).write_text(json.dumps({{"n": {n}}}))


def plots(product, upstream):
    folder = Path(str(product))
    (folder / "deep").mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text("{plot}")
    (folder / "deep" / "b.txt").write_text(Path(str(upstream["clean"]["data"])).read_text())
'''


def project_files(**kw) -> dict[str, str]:
    from .projects import VALID

    return {"pipeline.yaml": PIPELINE, "env.yaml": "sample: false\n",
            "requirements.txt": VALID["requirements.txt"],  # the environment the other tests cached
            "tasks.py": tasks_py(**kw)}


def stored_tasks(home, run) -> dict[str, str | None]:
    manifest = json.loads((home / "artifacts" / run.project / run.commit / run.id / "manifest.json").read_text())
    return {f["path"]: f["task"] for f in manifest["files"]}


def origins_of(home, run) -> dict[str, object]:
    manifest = json.loads((home / "artifacts" / run.project / run.commit / run.id / "manifest.json").read_text())
    return {f["path"]: f["origin"] for f in manifest["files"]}


EXPECTED = {
    "output/clean.csv": "clean", "output/.clean.csv.metadata": "clean",
    "output/summary.json": "clean", "output/.summary.json.metadata": "clean",
    "output/plots/a.txt": "plots", "output/plots/deep/b.txt": "plots", "output/.plots.metadata": "plots",
}


@pytest.mark.docker
def test_a_run_stores_each_products_task_and_an_incremental_run_keeps_the_carried_ones(tmp_path, engine, home):
    import soopervisor

    from .projects import commit_all, make_project, write

    project = make_project(tmp_path, project_files())
    first = soopervisor.run(str(project))
    assert first.ok, Path(first.log_path).read_text()
    assert stored_tasks(home, first) == EXPECTED
    log = Path(first.log_path).read_text()
    assert '"event":"finished"' in log and '"products":["/workspace/output/clean.csv",' in log

    # only plots changes: clean is carried over (no event names its products) and keeps its task
    write(project, {"tasks.py": tasks_py(plot="p2")})
    commit_all(project, "another plot")
    inc = soopervisor.run(str(project))
    assert inc.ok, Path(inc.log_path).read_text()
    assert "soopervisor: 1 of 2 tasks up to date, 1 to build" in Path(inc.log_path).read_text()
    assert stored_tasks(home, inc) == EXPECTED
    origin = origins_of(home, inc)
    assert origin["output/clean.csv"] == {"commit": first.commit, "run_id": first.id}
    assert origin["output/plots/a.txt"] == "built"


@pytest.mark.docker
def test_diff_of_two_builds_of_the_same_products_differs_only_in_metadata(tmp_path, engine, home):
    import soopervisor

    from .conftest import cli
    from .projects import commit_all, make_project, write

    project = make_project(tmp_path, project_files())
    first = soopervisor.run(str(project))
    assert first.ok, Path(first.log_path).read_text()
    # a comment changes; everything is built again (force): the same products, new metadata timestamps
    write(project, {"pipeline.yaml": PIPELINE.replace("# the pipeline", "# still the pipeline")})
    commit_all(project, "a comment")
    again = soopervisor.run(str(project), force=True)
    assert again.ok, Path(again.log_path).read_text()
    out = cli("diff", first.commit, again.commit, "--project", "proj", "--exit-code", check=0).stdout
    assert "the products are the same; only ploomber's metadata differs" in out
    assert out.splitlines()[-1] == "ploomber metadata: 3 files changed (timestamps); --metadata shows them"
    shown = cli("diff", first.commit, again.commit, "--project", "proj", "--metadata", check=0).stdout
    assert "~ output/.plots.metadata (json) (task plots)\n    keys: 1 changed, 0 added, 0 removed\n" \
           "    ~ timestamp: " in shown

    # clean's summary changes: that file names its task, and the exit code says the products differ
    write(project, {"tasks.py": tasks_py(n=2)})
    commit_all(project, "another summary")
    third = soopervisor.run(str(project))
    assert third.ok, Path(third.log_path).read_text()
    out = cli("diff", again.commit, third.commit, "--project", "proj", "--exit-code", check=1).stdout
    assert "~ output/summary.json (json) (task clean)\n    keys: 1 changed, 0 added, 0 removed\n    ~ n: 1 -> 2" in out
    assert out.splitlines()[-1].startswith("ploomber metadata: ") and "stored source" in out.splitlines()[-1]
    assert "output/clean.csv" not in out  # the same bytes: unchanged

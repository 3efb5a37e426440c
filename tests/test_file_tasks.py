"""Which task made each stored file: ``files[].task`` in the manifest, and the diff that names it.

The rule (soopervisor/artifacts/owners.py) and the manifest field are tested without Docker; once
with Docker, a real pipeline (a task with two products, a task with a folder product) is run, run
again incrementally, and two commits are diffed.
"""
from __future__ import annotations

import hashlib
import json

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

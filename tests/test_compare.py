"""Two stored sets compared (soopervisor/artifacts/compare.py): the file list from the manifests,
text side by side, notebooks cell by cell through nbdime (two notebooks executed for real by a
kernel), tables by columns. Sets are written with write_manifest into the test's local storage.
"""
from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from soopervisor.artifacts import get_artifacts
from soopervisor.artifacts.compare import MAX_ROWS, TEXT_MAX, Comparison, kind_of, text_rows
from soopervisor.errors import ArtifactsNotFound, UnsafePath, UsageError
from soopervisor.storage import open_storage
from tests import sets

A = "aaaaaaa1111111111111111111111111111111aa"
B = "bbbbbbb2222222222222222222222222222222bb"
#: a 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def store_set(tmp_path: Path, commit: str, files: dict[str, bytes], run_id: str = "r1", project: str = "proj",
              storage: str | None = None, status: str = "succeeded", mode: str = "sample") -> None:
    sets.store_set(project, commit, files, run_id=run_id, storage=storage, status=status, mode=mode,
                   log=f"log of {run_id}\n")
    time.sleep(0.01)  # the next set is newer


def lines(n: int, prefix: str = "line") -> bytes:
    return "".join(f"{prefix} {i}\n" for i in range(1, n + 1)).encode()


def executed(cells: list[tuple[str, str]]) -> bytes:
    """A notebook of ``(cell_type, source)`` cells, run by a real kernel, as stored bytes."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) if kind == "code" else nbformat.v4.new_markdown_cell(src)
                for kind, src in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return nbformat.writes(nb).encode()


# -- the file list ---------------------------------------------------------------------------------------


def test_the_file_list_comes_from_the_manifests_and_is_ordered_by_status_then_name(tmp_path):
    store_set(tmp_path, A, {"same.txt": b"same\n", "out/z.txt": b"old\n", "out/a.csv": b"x\n1\n", "gone.log": b"g\n",
                            "plot.png": PNG, "blob.bin": b"\0\1", "report.ipynb": b"{}"})
    store_set(tmp_path, B, {"same.txt": b"same\n", "out/z.txt": b"new\n", "out/a.csv": b"x\n2\n", "new.md": b"# n\n",
                            "plot.png": PNG + b"\0", "blob.bin": b"\0\1", "report.ipynb": b"{}"}, run_id="r2")
    # the list needs no product: with every stored product gone it is the same
    for commit, run in ((A, "r1"), (B, "r2")):
        shutil.rmtree(Path(open_storage().url) / "proj" / commit / run / "files")

    cmp = get_artifacts(A, project="proj").compare(B[:7])
    assert isinstance(cmp, Comparison)
    assert [(f.name, f.status, f.kind) for f in cmp.files] == [
        ("out/a.csv", "changed", "table"), ("out/z.txt", "changed", "text"), ("plot.png", "changed", "image"),
        ("new.md", "added", "text"), ("gone.log", "removed", "text"),
        ("blob.bin", "unchanged", "binary"), ("report.ipynb", "unchanged", "notebook"), ("same.txt", "unchanged", "text"),
    ]
    assert cmp.changed == ["out/a.csv", "out/z.txt", "plot.png"] and cmp.added == ["new.md"]
    assert cmp.removed == ["gone.log"] and cmp.unchanged == ["blob.bin", "report.ipynb", "same.txt"]
    body = cmp.to_dict()
    assert body["counts"] == {"added": 1, "removed": 1, "changed": 3, "unchanged": 3}
    assert (body["project"], body["a"]["commit"], body["b"]["commit"], body["b"]["run_id"]) == ("proj", A, B, "r2")
    added = next(f for f in body["files"] if f["name"] == "new.md")
    assert added["a"] is None and added["b"]["size"] == 4 and len(added["b"]["sha256"]) == 64
    assert json.loads(json.dumps(body)) == body
    html = cmp._repr_html_()
    assert "out/z.txt" in html and "new.md" in html and "same.txt" not in html  # unchanged files left out
    assert "3 changed, 1 added, 1 removed, 3 unchanged" in html


def test_kinds_come_from_the_extension():
    assert [kind_of(n) for n in ("a.ipynb", "b.CSV", "c.parquet", "d.pq", "e.svg", "f.JPG", "g.json", "h.html",
                                 "noext", "dir.d/noext", "x.pkl")] == [
        "notebook", "table", "table", "table", "image", "image", "json", "text", "binary", "binary", "binary"]


def test_a_name_in_neither_set_is_not_found_and_one_that_leaves_the_set_is_refused(tmp_path):
    store_set(tmp_path, A, {"a.txt": b"a\n"})
    store_set(tmp_path, B, {"b.txt": b"b\n"}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(get_artifacts(B, project="proj"))
    with pytest.raises(ArtifactsNotFound) as e:
        cmp.file_diff("c.txt")
    assert "either set" in e.value.message and e.value.hint
    with pytest.raises(UnsafePath):
        cmp.file_diff("../../etc/passwd")
    with pytest.raises(ArtifactsNotFound):
        get_artifacts(A, project="proj").compare("ccccccc")


# -- text ---------------------------------------------------------------------------------------------------


def test_text_side_by_side_folds_equal_runs_beyond_three_lines_of_context(tmp_path):
    old = lines(30)
    new = old.replace(b"line 15\n", b"line fifteen\n").replace(b"line 25\n", b"line 25\ninserted\n")
    new = new.replace(b"line 30\n", b"")
    store_set(tmp_path, A, {"t.txt": old, "gone.txt": b"x\ny\n", "same.txt": old})
    store_set(tmp_path, B, {"t.txt": new, "new.txt": b"p\nq\nr\n", "same.txt": old}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)

    d = cmp.file_diff("t.txt")
    assert (d["status"], d["kind"], d["diff"]["truncated"]) == ("changed", "text", False)
    rows = d["diff"]["rows"]
    shape = [(r["op"], r["a_line"], r["b_line"], r.get("count")) for r in rows]
    assert shape == [
        ("skip", 1, 1, 11),
        ("equal", 12, 12, None), ("equal", 13, 13, None), ("equal", 14, 14, None),
        ("replace", 15, 15, None),
        ("equal", 16, 16, None), ("equal", 17, 17, None), ("equal", 18, 18, None),
        ("skip", 19, 19, 4),
        ("equal", 23, 23, None), ("equal", 24, 24, None), ("equal", 25, 25, None),
        ("insert", None, 26, None),
        ("equal", 26, 27, None), ("equal", 27, 28, None), ("equal", 28, 29, None), ("equal", 29, 30, None),
        ("delete", 30, None, None),
    ]
    replace = rows[4]
    assert (replace["a"], replace["b"]) == ("line 15", "line fifteen")
    assert rows[12]["b"] == "inserted" and rows[12]["a"] is None
    assert rows[0]["a"] is None and rows[0]["b"] is None

    added = cmp.file_diff("new.txt")
    assert added["status"] == "added" and added["a"] is None
    assert [(r["op"], r["b_line"], r["b"]) for r in added["diff"]["rows"]] == [
        ("insert", 1, "p"), ("insert", 2, "q"), ("insert", 3, "r")]
    removed = cmp.file_diff("gone.txt")
    assert [(r["op"], r["a_line"], r["a"]) for r in removed["diff"]["rows"]] == [("delete", 1, "x"), ("delete", 2, "y")]
    same = cmp.file_diff("same.txt")
    assert [(r["op"], r["count"]) for r in same["diff"]["rows"]] == [("skip", 30)]


def test_a_long_diff_is_truncated_and_a_huge_file_is_not_diffed(tmp_path):
    rows = text_rows([f"a{i}" for i in range(MAX_ROWS + 10)], [f"b{i}" for i in range(MAX_ROWS + 10)])
    assert rows["truncated"] is True and len(rows["rows"]) == MAX_ROWS
    assert {r["op"] for r in rows["rows"]} == {"replace"}

    big = b"x" * (TEXT_MAX + 1)
    store_set(tmp_path, A, {"big.txt": b"small\n", "nb.ipynb": big})
    store_set(tmp_path, B, {"big.txt": big, "nb.ipynb": b"{}"}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)
    assert cmp.file_diff("big.txt")["diff"] == {"too_large": True}
    assert cmp.file_diff("nb.ipynb")["diff"] == {"too_large": True}


def test_images_and_binaries_have_no_diff_but_both_sides(tmp_path):
    store_set(tmp_path, A, {"p.png": PNG, "b.bin": b"\0"})
    store_set(tmp_path, B, {"p.png": PNG + b"\0", "b.bin": b"\1"}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)
    d = cmp.file_diff("p.png")
    assert d["diff"] == {} and d["a"]["size"] == len(PNG) and d["b"]["size"] == len(PNG) + 1
    assert cmp.file_diff("b.bin")["diff"] == {}


# -- notebooks ---------------------------------------------------------------------------------------------


def test_notebooks_executed_by_a_kernel_diff_cell_by_cell_through_nbdime(tmp_path):
    png = base64.b64encode(PNG).decode()
    old = executed([
        ("markdown", "# Report"),
        ("code", "x = 1\nprint(x)"),
        ("code", "y = 2\ny"),
        ("code", "print('the end')"),
    ])
    new = executed([
        ("markdown", "# Report"),
        ("code", "x = 2\nprint(x)"),                       # source changed, so its output
        ("code", "y = 2\ny"),                              # same source, same output, new execution count
        ("code", ("from IPython.display import Image, display\n"  # a cell added, with an image
                  f"display(Image(data=__import__('base64').b64decode('{png}')))")),
        ("code", "print('the end')"),
    ])
    store_set(tmp_path, A, {"report.ipynb": old, "gone.ipynb": old})
    store_set(tmp_path, B, {"report.ipynb": new, "new.ipynb": new}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)

    d = cmp.file_diff("report.ipynb")
    assert (d["status"], d["kind"]) == ("changed", "notebook")
    nb = d["diff"]
    assert nb["engine"].startswith("nbdime 4.")
    assert nb["metadata_changed"] is False
    cells = nb["cells"]
    assert [(c["status"], c["a_index"], c["b_index"], c["cell_type"]) for c in cells] == [
        ("unchanged", 0, 0, "markdown"), ("modified", 1, 1, "code"), ("unchanged", 2, 2, "code"),
        ("added", None, 3, "code"), ("unchanged", 3, 4, "code")]
    modified = cells[1]
    assert [(r["op"], r["a"], r["b"]) for r in modified["source"]["rows"]] == [
        ("replace", "x = 1", "x = 2"), ("equal", "print(x)", "print(x)")]
    assert (modified["outputs"], modified["outputs_a"], modified["outputs_b"]) == ("changed", ["1\n"], ["2\n"])
    assert cells[2]["outputs_a"] == cells[2]["outputs_b"] == ["2"] and cells[2]["outputs"] == "unchanged"
    assert [r["op"] for r in cells[2]["source"]["rows"]] == ["skip"] and cells[2]["source"]["rows"][0]["count"] == 2
    added = cells[3]
    assert added["outputs"] == "added" and added["outputs_a"] == []
    assert added["outputs_b"] == [f"image/png {len(PNG)} B"]
    assert {r["op"] for r in added["source"]["rows"]} == {"insert"}
    assert json.loads(json.dumps(d)) == d

    only_b = cmp.file_diff("new.ipynb")["diff"]
    assert [c["status"] for c in only_b["cells"]] == ["added"] * 5 and only_b["metadata_changed"] is False
    only_a = cmp.file_diff("gone.ipynb")["diff"]
    assert [c["status"] for c in only_a["cells"]] == ["removed"] * 4
    assert only_a["cells"][1]["outputs"] == "removed" and only_a["cells"][0]["outputs"] == "unchanged"


def test_a_damaged_notebook_is_a_clear_error_naming_it(tmp_path):
    store_set(tmp_path, A, {"n.ipynb": nbformat.writes(nbformat.v4.new_notebook()).encode()})
    store_set(tmp_path, B, {"n.ipynb": b"{not json"}, run_id="r2")
    with pytest.raises(UsageError) as e:
        get_artifacts(A, project="proj").compare(B).file_diff("n.ipynb")
    assert "n.ipynb is not a notebook" in e.value.message and e.value.hint


# -- tables -------------------------------------------------------------------------------------------------


def test_tables_compare_columns_and_values_row_by_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    def parquet(table) -> bytes:
        path = tmp_path / f"t{time.monotonic_ns()}.parquet"
        pq.write_table(table, path)
        return path.read_bytes()

    store_set(tmp_path, A, {
        "s.csv": b"id,name,score\n1,ann,1.5\n2,bob,2.5\n3,cy,3.5\n",
        "p.parquet": parquet(pa.table({"k": [1, 2, 3]})),
        "t.csv": b"id,v\n1,a\n",
    })
    store_set(tmp_path, B, {
        "s.csv": b"id,name,grade\n1,ann,A\n2,bea,B\n3,cy,C\n",
        "p.parquet": parquet(pa.table({"k": [1, 2, 3, 4]})),
        "t.csv": b"id,v\nx,a\n",
    }, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)

    d = cmp.file_diff("s.csv")["diff"]
    assert d["a"] == {"rows": 3, "columns": [{"name": "id", "type": "int64"}, {"name": "name", "type": "string"},
                                             {"name": "score", "type": "double"}]}
    assert d["b"]["rows"] == 3
    assert (d["columns_added"], d["columns_removed"], d["columns_changed"]) == (["grade"], ["score"], ["name"])
    assert d["examples"] == [{"row": 1, "column": "name", "a": "bob", "b": "bea"}]

    p = cmp.file_diff("p.parquet")["diff"]
    assert p["columns_changed"] is None and "3 rows" in p["note"] and (p["a"]["rows"], p["b"]["rows"]) == (3, 4)

    t = cmp.file_diff("t.csv")["diff"]  # a column's type changed: int64 -> string
    assert t["columns_changed"] == ["id"] and t["examples"] == [{"row": 0, "column": "id", "a": 1, "b": "x"}]

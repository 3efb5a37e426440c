"""``soopervisor diff A B`` and ``get_artifacts(a).compare(b)``'s descriptions: JSON keys, tables,
notebooks, text, in the terminal (the real console command in a subprocess) and as JSON; and once
end to end, two commits of the example project run in Docker and diffed.

Sets are written as a run writes them (tests/sets.py) into the test's own storage.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from soopervisor.artifacts import get_artifacts
from soopervisor.artifacts.compare import JSON_MAX_KEYS, json_diff, short_json
from soopervisor.artifacts.diff_text import describe, render, unified
from tests import sets

from .conftest import cli
from .projects import commit_all, git, init_repo

A = "a1b2c3d" + "1" * 33
B = "e4f5a6b" + "2" * 33
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sales"


def store(commit: str, files: dict[str, str | bytes], run_id: str = "r1", project: str = "proj", **kw) -> None:
    sets.store_set(project, commit, files, run_id=run_id, log=f"log of {run_id}\n", **kw)
    time.sleep(0.01)  # the next set is newer


def diff(*args: str, check: int | None = 0, project: str = "proj"):
    return cli("diff", *args, "--project", project, check=check)


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr


def notebook(cells: list[tuple[str, str, str | None]]) -> bytes:
    """A notebook of ``(cell_type, source, stream output)`` cells, as ploomber stores an executed one."""
    nb = nbformat.v4.new_notebook()
    for i, (kind, src, out) in enumerate(cells):
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
            continue
        cell = nbformat.v4.new_code_cell(src, execution_count=i + 1)
        if out is not None:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=out)]
        cell.metadata["papermill"] = {"duration": float(i), "status": "completed"}  # changes at every run
        nb.cells.append(cell)
    return nbformat.writes(nb).encode()


# -- JSON: the keys that changed -------------------------------------------------------------------------


def test_json_keys_nested_in_lists_added_and_removed_as_dotted_paths():
    a = {"metrics": {"auc": 0.81, "f1": 0.5, "by class": {"x": 1}}, "rows": [{"name": "x"}, {"name": "y"}],
         "gone": [1, 2], "flag": 1, "tail": [1, 2, 3]}
    b = {"metrics": {"auc": 0.83, "f1": 0.5, "by class": {"x": 2}, "new": None}, "rows": [{"name": "x"}, {"name": "z"}],
         "flag": True, "tail": [1, 2], "long": "v" * 200}
    d = json_diff(json.dumps(a), json.dumps(b, indent=2))
    keys = d["keys"]
    assert [(k["key"], k["a"], k["b"]) for k in keys["changed"]] == [
        ("metrics.auc", "0.81", "0.83"), ('metrics["by class"].x', "1", "2"), ("rows[1].name", '"y"', '"z"'),
        ("flag", "1", "true"),  # 1 == True in Python, not in JSON
    ]
    assert [(k["key"], k["b"]) for k in keys["added"]] == [("metrics.new", "null"), ("long", '"' + "v" * 78 + "…")]
    assert [(k["key"], k["a"]) for k in keys["removed"]] == [("gone", "[1, 2]"), ("tail[2]", "3")]
    assert len(keys["added"][1]["b"]) == 80 and d["keys_truncated"] is False
    # formatting and key order alone: no key changed
    same = json_diff('{"a": 1, "b": [1, 2]}', '{\n  "b": [1, 2],\n  "a": 1\n}')
    assert same["keys"] == {"changed": [], "added": [], "removed": []}
    # a whole value that changed type, and one side missing
    assert json_diff("[1]", '{"a": 1}')["keys"]["changed"] == [{"key": "", "a": "[1]", "b": '{"a": 1}'}]
    assert json_diff(None, '{"a": 1, "b": 2}')["keys"]["added"] == [{"key": "a", "b": "1"}, {"key": "b", "b": "2"}]


def test_json_that_does_not_parse_falls_back_to_the_text_diff_and_many_keys_are_cut():
    d = json_diff('{"a": 1}', '{"a": 2,')
    assert d["keys"] is None and d["note"].startswith("B is not valid JSON") and "compared as text" in d["note"]
    many = json_diff(json.dumps({f"k{i}": i for i in range(JSON_MAX_KEYS + 7)}), "{}")
    assert len(many["keys"]["removed"]) == JSON_MAX_KEYS and many["keys_truncated"] is True
    assert short_json({"x": "é" * 100}, 10) == '{"x": "éé…'


def test_a_json_file_is_described_by_its_keys_in_python_and_in_the_terminal():
    store(A, {"out/metrics.json": json.dumps({"auc": 0.81, "cm": [[1, 2], [3, 4]], "old": "x"}),
              "bad.json": '{"a": 1}\n'})
    store(B, {"out/metrics.json": json.dumps({"auc": 0.9, "cm": [[1, 2], [3, 5]], "new": [1]}),
              "bad.json": '{"a": 1,\n'}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B[:7])
    d = cmp.file_diff("out/metrics.json")
    assert d["kind"] == "json" and [k["key"] for k in d["diff"]["keys"]["changed"]] == ["auc", "cm[1][1]"]
    assert d["diff"]["rows"]  # the text rows too: the compare view shows them beside the keys
    assert cmp.describe("out/metrics.json") == [
        "keys: 2 changed, 1 added, 1 removed", "~ auc: 0.81 -> 0.9", "~ cm[1][1]: 4 -> 5", "+ new: [1]", '- old: "x"']
    bad = cmp.describe("bad.json")
    assert bad[0].startswith("B is not valid JSON") and '-{"a": 1}' in bad and '+{"a": 1,' in bad

    out = diff(A[:7], B[:7]).stdout
    assert "~ out/metrics.json (json)\n    keys: 2 changed, 1 added, 1 removed\n    ~ auc: 0.81 -> 0.9\n" in out
    assert "~ bad.json (json)\n    B is not valid JSON" in out


# -- tables, notebooks, text, images ---------------------------------------------------------------------


def test_a_csv_is_described_by_shape_columns_and_at_most_three_example_rows():
    rows_a = "".join(f"{i},north,{i}.5\n" for i in range(10))
    rows_b = "".join(f"{i},{'south' if i % 2 else 'north'},{i}.5,x\n" for i in range(10))
    store(A, {"sales.csv": "order,region,amount\n" + rows_a, "short.csv": "a\n1\n2\n"})
    store(B, {"sales.csv": "order,region,amount,extra\n" + rows_b, "short.csv": "a,b\n1,2\n"}, run_id="r2")
    out = diff(A, B).stdout
    block = out[out.index("~ sales.csv (table)"):].split("\n\n")[0].splitlines()
    assert block == [
        "~ sales.csv (table)",
        "    shape 10 rows x 3 columns -> 10 rows x 4 columns",
        "    columns added: extra",
        "    columns changed: region",
        "    row 1, region: 'north' -> 'south'",
        "    row 3, region: 'north' -> 'south'",
        "    row 5, region: 'north' -> 'south'",
        "    … at least 2 more changed values",
    ]
    # rows counts differ: shapes and columns, and the reason values were not compared
    short = out[out.index("~ short.csv (table)"):].split("\n\n")[0]
    assert "shape 2 rows x 1 columns -> 1 rows x 2 columns" in short and "columns added: b" in short
    assert "A has 2 rows and B 1" in short


def test_a_notebook_is_described_cell_by_cell_with_its_changed_outputs():
    nb_a = notebook([("markdown", "# Report", None), ("code", "x = 1\nprint(x)", "1\n"),
                     ("code", "import os", None), ("code", "total = compute(x)\nprint(total)", "old\n")])
    nb_b = notebook([("markdown", "# Report", None), ("code", "x = 2\nprint(x)", "2\n"),
                     ("code", "import os", None), ("code", "total = compute(x)\ntotal", None), ("code", "new_cell()", "new\n")])
    same_a = notebook([("code", "y = 1", "1\n")])
    same_b = notebook([("code", "y = 1", "1\n")]).replace(b'"duration": 0.0', b'"duration": 9.0')
    store(A, {"report.ipynb": nb_a, "timing.ipynb": same_a, "outputs.ipynb": notebook([("code", "go()", "1\n")])})
    store(B, {"report.ipynb": nb_b, "timing.ipynb": same_b, "outputs.ipynb": notebook([("code", "go()", "2\n")])},
          run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)
    assert cmp.changed == ["outputs.ipynb", "report.ipynb", "timing.ipynb"]  # the bytes differ
    lines = cmp.describe("report.ipynb")
    assert lines[0] == "cells: 2 modified, 1 added, 0 removed, 2 unchanged"
    assert "modified cell 2 (code): x = 2" in lines and lines.index("  outputs A: 1") + 1 == lines.index("  outputs B: 2")
    assert "modified cell 4 (code): total" in lines and "  outputs removed" in lines
    assert "modified cell 1 (code), same source" in cmp.describe("outputs.ipynb")
    assert "added cell 5 (code): new_cell()" in lines
    # only the timings differ: nbdime sees no cell changed
    assert cmp.describe("timing.ipynb")[0] == "cells: 0 modified, 0 added, 0 removed, 1 unchanged"


def test_a_long_text_diff_is_cut_at_forty_lines_and_whole_with_file():
    old = "".join(f"line {i}\n" for i in range(200))
    new = "".join(f"line {i}{' changed' if i % 4 == 0 else ''}\n" for i in range(200))
    store(A, {"log.txt": old, "esc.txt": "plain\n"})
    store(B, {"log.txt": new, "esc.txt": "\x1b[31mred\x1b[0m\n"}, run_id="r2")
    out = diff(A, B).stdout
    block = out[out.index("~ log.txt (text)"):].split("\n\n")[0].splitlines()
    assert len(block) == 1 + 40 + 1 and re.fullmatch(r" {4}… \d+ more lines", block[-1])
    assert block[1:4] == ["    -line 0", "    +line 0 changed", "     line 1"]
    hidden = int(block[-1].split()[1])
    # the escape sequences a product holds never reach the terminal as such
    assert "\x1b" not in out and "+\\x1b[31mred\\x1b[0m" in out

    whole = diff(A, B, "--file", "log.txt").stdout.splitlines()
    assert whole[1] == "~ log.txt (text) changed"
    assert len(whole) == 2 + 40 + hidden and "more lines" not in whole[-1]
    assert "    +line 196 changed" in whole


def test_images_binaries_and_added_or_removed_files_show_sizes_and_sha256():
    store(A, {"plot.png": b"\x89PNG" + b"a" * 2000, "model.pkl": b"\0" * 10, "gone.txt": "bye\n"})
    store(B, {"plot.png": b"\x89PNG" + b"b" * 3000, "model.pkl": b"\1" * 10, "new/table.csv": "a\n1\n"}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)
    fa, fb = cmp.change("plot.png").a, cmp.change("plot.png").b
    assert cmp.describe("plot.png") == [f"size 2.0 kB -> 3.0 kB, sha256 {fa.sha256[:12]} -> {fb.sha256[:12]}"]
    out = diff(A, B).stdout
    assert "~ model.pkl (binary)\n    size 10 B -> 10 B, sha256 " in out
    assert "+ new/table.csv (table, 4 B) added" in out and "- gone.txt (text, 4 B) removed" in out
    assert "2 changed, 1 added, 1 removed, 0 unchanged" in out


def test_unified_rows_group_a_replaced_run_minus_then_plus():
    rows = [{"op": "replace", "a": "a1", "b": "b1"}, {"op": "replace", "a": "a2", "b": "b2"},
            {"op": "insert", "a": None, "b": "b3"}, {"op": "equal", "a": "s", "b": "s"},
            {"op": "skip", "a": None, "b": None, "a_line": 5, "count": 1}]
    assert unified(rows) == ["-a1", "-a2", "+b1", "+b2", "+b3", " s", "@@ 1 unchanged line from A's line 5 @@"]


# -- the command ------------------------------------------------------------------------------------------


def test_header_counts_and_json_output():
    store(A, {"s.json": '{"n": 1}', "same.txt": "same\n", "t.csv": "a\n1\n"}, mode="full")
    store(B, {"s.json": '{"n": 2}', "same.txt": "same\n", "t.csv": "a\n2\n"}, run_id="r2")
    out = diff(A[:7], B).stdout.splitlines()
    assert out[0] == "proj: A a1b2c3d run r1 (full) -> B e4f5a6b run r2 (sample)"
    assert out[1] == "2 changed, 0 added, 0 removed, 1 unchanged"

    body = json.loads(diff(A, B, "--json").stdout)
    assert body["counts"] == {"added": 0, "removed": 0, "changed": 2, "unchanged": 1}
    assert (body["a"]["commit"], body["b"]["run_id"]) == (A, "r2")
    by = {f["name"]: f for f in body["files"]}
    assert by["s.json"]["diff"]["keys"]["changed"] == [{"key": "n", "a": "1", "b": "2"}]
    assert by["t.csv"]["diff"]["columns_changed"] == ["a"] and by["t.csv"]["diff"]["examples"][0]["b"] == 2
    assert "diff" not in by["same.txt"]  # unchanged files: no diff to fetch

    one = json.loads(diff(A, B, "--file", "s.json", "--json").stdout)
    assert (one["name"], one["status"], one["kind"]) == ("s.json", "changed", "json")
    assert one["diff"]["keys"]["changed"][0]["key"] == "n"


def test_exit_code_says_whether_they_differ_only_when_asked():
    store(A, {"s.json": '{"n": 1}', "same.txt": "same\n"})
    store(B, {"s.json": '{"n": 2}', "same.txt": "same\n"}, run_id="r2")
    diff(A, B, check=0)
    diff(A, B, "--exit-code", check=1)
    diff(A, B, "--exit-code", "--json", check=1)
    diff(A, B, "--exit-code", "--file", "s.json", check=1)
    same = diff(A, B, "--exit-code", "--file", "same.txt", check=0).stdout
    assert "= same.txt (text) unchanged" in same
    diff(A, A, "--exit-code", check=0)


def test_the_same_set_twice_and_two_sets_of_equal_files_say_no_differences():
    store(A, {"x.txt": "x\n", "y.json": "{}"})
    store(A, {"x.txt": "x\n", "y.json": "{}"}, run_id="r2")
    same = diff(A, "latest", check=0).stdout.splitlines()
    assert same == ["proj: A a1b2c3d run r2 (sample) -> B a1b2c3d run r2 (sample)", "no differences (the same set)"]
    runs = diff(A, A, "--run-a", "r1", "--run-b", "r2", "--exit-code", check=0).stdout.splitlines()
    assert runs == ["proj: A a1b2c3d run r1 (sample) -> B a1b2c3d run r2 (sample)", "no differences (2 identical files)"]


def test_run_a_and_run_b_pick_sets_by_run_id_a_failed_one_too():
    store(A, {"x.txt": "one\n"}, run_id="good")
    store(A, {"x.txt": "two\n"}, run_id="bad", status="failed")
    out = diff(A, A, "--run-a", "good", "--run-b", "bad").stdout
    assert "A a1b2c3d run good (sample) -> B a1b2c3d run bad (sample)" in out
    assert "    -one\n    +two\n" in out


def test_mode_picks_each_commits_newest_set_of_that_mode():
    store(A, {"x.txt": "a sample\n"}, run_id="as", mode="sample")
    store(A, {"x.txt": "a full\n"}, run_id="af", mode="full")
    store(B, {"x.txt": "b sample\n"}, run_id="bs", mode="sample")
    store(B, {"x.txt": "b full\n"}, run_id="bf", mode="full")
    assert "    -a full\n    +b full\n" in diff(A, B).stdout  # full before sample
    out = diff(A, B, "--mode", "sample").stdout
    assert out.startswith("proj: A a1b2c3d run as (sample) -> B e4f5a6b run bs (sample)\n")
    assert "    -a sample\n    +b sample\n" in out
    proc = diff(A, B, "--mode", "quick", check=2)
    assert "quick" in proc.stderr
    no_traceback(proc)


def test_unknown_commits_files_and_runs_are_errors_with_a_hint_and_no_traceback():
    store(A, {"x.txt": "x\n"})
    store(B, {"x.txt": "y\n"}, run_id="r2")
    for args in ((A, "0000000"), ("0000000", B), (A, B, "--file", "nope.txt"), (A, B, "--run-b", "r9")):
        proc = diff(*args, check=2)
        assert proc.stdout == "" and proc.stderr.startswith("error: ") and "\nhint: " in proc.stderr, args
        no_traceback(proc)
    assert "0000000" in diff(A, "0000000", check=2).stderr
    assert "either set" in diff(A, B, "--file", "nope.txt", check=2).stderr
    proc = diff(A, B, "--file", "../../etc/passwd", check=2)
    no_traceback(proc)
    # a project with no sets at all
    proc = diff(A, B, project="nothing-here", check=2)
    assert "hint:" in proc.stderr
    no_traceback(proc)


def test_a_file_that_cannot_be_compared_is_one_line_not_a_failure():
    store(A, {"n.ipynb": notebook([("code", "1", None)]), "x.txt": "x\n"})
    store(B, {"n.ipynb": b"{not a notebook", "x.txt": "y\n"}, run_id="r2")
    proc = diff(A, B)
    assert "~ n.ipynb (notebook)\n    could not compare: n.ipynb is not a notebook nbformat can read" in proc.stdout
    assert "    -x\n    +y" in proc.stdout  # the other files are still described
    body = json.loads(diff(A, B, "--json").stdout)
    broken = next(f for f in body["files"] if f["name"] == "n.ipynb")
    assert "diff" not in broken and "nbformat" in broken["error"]["message"] and broken["error"]["hint"]


def test_help_has_examples():
    out = cli("diff", "--help", check=0).stdout
    assert "Examples:" in out and "--exit-code" in out and "--run-a" in out and "--file NAME" in out


def test_the_notebook_display_describes_each_changed_file():
    store(A, {"m.json": '{"auc": 0.8}', "t.csv": "a,b\n1,x\n", "same.txt": "s\n"})
    store(B, {"m.json": '{"auc": 0.9}', "t.csv": "a,b\n1,y\n", "same.txt": "s\n", "<new>.txt": "n\n"}, run_id="r2")
    html = get_artifacts(A, project="proj").compare(B)._repr_html_()
    assert "what changed" in html and "~ auc: 0.8 -&gt; 0.9" in html
    assert "columns changed: b" in html and "row 0, b: &#x27;x&#x27; -&gt; &#x27;y&#x27;" in html
    assert "&lt;new&gt;.txt" in html and "same.txt" not in html


def test_render_and_describe_are_plain_functions_of_the_comparison():
    store(A, {"a.txt": "1\n"})
    store(B, {"a.txt": "2\n"}, run_id="r2")
    cmp = get_artifacts(A, project="proj").compare(B)
    assert render(cmp)[1:] == ["1 changed, 0 added, 0 removed, 0 unchanged", "", "~ a.txt (text)", "    -1", "    +2"]
    d = cmp.file_diff("a.txt")
    assert describe(d) == ["-1", "+2"] and cmp.diffs() == {"a.txt": d}
    assert describe({**d, "diff": {"too_large": True}})[0].startswith("too large to diff here (size 2 B -> 2 B")


# -- end to end: two commits of the example project, run in Docker -----------------------------------------


@pytest.mark.docker
def test_diff_of_two_commits_of_the_example_project(engine, tmp_path):
    root = init_repo(tmp_path / "sales")
    shutil.copytree(EXAMPLE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("output"))
    commit_all(root, "sales example")
    cli("run", str(root), "--sample", check=0)
    task = root / "tasks" / "summarize.py"
    task.write_text(task.read_text().replace("round(total, 2)", "round(total)"))
    commit_all(root, "whole amounts in the summary")
    cli("run", str(root), "--sample", check=0)
    first, second = git(root, "rev-parse", "HEAD~1").strip(), git(root, "rev-parse", "HEAD").strip()

    proc = cli("diff", first, second, cwd=root, check=0)
    out = proc.stdout
    assert out.splitlines()[0].startswith(f"sales: A {first[:7]} run ")
    assert f"-> B {second[:7]} run " in out.splitlines()[0]
    # the data did not change; the summary's values and the task's notebook did
    assert "output/sales.csv" not in out
    summary = out[out.index("~ output/summary.json (json)"):].split("\n\n")[0]
    assert "keys: 4 changed, 0 added, 0 removed" in summary
    assert re.search(r"~ north: \d+\.\d+ -> \d+\n", summary)
    nb = out[out.index("~ output/summarize.ipynb (notebook)"):].split("\n\n")[0]
    assert "modified cell" in nb and "round(total)" in nb and "outputs B: sales by region:" in nb

    body = json.loads(cli("diff", first, second, "--json", "--exit-code", cwd=root, check=1).stdout)
    by = {f["name"]: f for f in body["files"]}
    assert by["output/sales.csv"]["status"] == "unchanged"
    keys = by["output/summary.json"]["diff"]["keys"]
    assert sorted(k["key"] for k in keys["changed"]) == ["east", "north", "south", "west"]
    assert all(float(k["b"]) == round(float(k["a"])) for k in keys["changed"])

"""A page of a stored CSV or Parquet product (soopervisor/artifacts/table.py): types, paging,
JSON-safe values, only the row groups needed, the csv module without pyarrow, clear errors for
damaged files. Sets are written with write_manifest into the test's local storage.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import sys

import pytest

from soopervisor.artifacts import get_artifacts
from soopervisor.artifacts.table import LIMIT_MAX, preview_file
from soopervisor.errors import ArtifactsNotFound, UsageError

from .test_compare import A, store_set

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def parquet_bytes(tmp_path, table, **kw) -> bytes:
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, **kw)
    return path.read_bytes()


def csv_rows(n: int) -> bytes:
    return b"id,name,score\n" + b"".join(b"%d,n%d,%d.5\n" % (i, i, i) for i in range(n))


def test_a_csv_pages_with_typed_columns_and_a_capped_limit(tmp_path):
    store_set(tmp_path, A, {"out/big.csv": csv_rows(1450)})
    arts = get_artifacts(A, project="proj")

    page = preview_file(arts, "out/big.csv")
    assert (page["name"], page["format"], page["total_rows"], page["offset"], page["limit"]) == (
        "out/big.csv", "csv", 1450, 0, 200)
    assert page["columns"] == [{"name": "id", "type": "int64"}, {"name": "name", "type": "string"},
                               {"name": "score", "type": "double"}]
    assert len(page["rows"]) == 200 and page["rows"][0] == [0, "n0", 0.5] and page["rows"][-1][0] == 199
    last = preview_file(arts, "out/big.csv", offset=1400, limit=200)
    assert [r[0] for r in last["rows"]] == list(range(1400, 1450))
    capped = preview_file(arts, "out/big.csv", offset=0, limit=5000)
    assert capped["limit"] == LIMIT_MAX and len(capped["rows"]) == LIMIT_MAX
    assert preview_file(arts, "out/big.csv", offset=5000)["rows"] == []


def test_parquet_reads_only_the_row_groups_a_page_needs_and_every_value_is_json_safe(tmp_path):
    n = 450
    table = pa.table({
        "i": list(range(n)),
        "f": [float("nan") if i == 1 else float("inf") if i == 2 else i / 2 for i in range(n)],
        "when": [dt.datetime(2024, 1, 1, 12, 0) + dt.timedelta(minutes=i) for i in range(n)],
        "day": [dt.date(2024, 1, 1)] * n,
        "raw": [b"\x00\xff"] * n,
        "money": [decimal.Decimal("1.25")] * n,
        "maybe": [None if i % 2 else "x" for i in range(n)],
    })
    store_set(tmp_path, A, {"t.parquet": parquet_bytes(tmp_path, table, row_group_size=100)})
    arts = get_artifacts(A, project="proj")

    page = preview_file(arts, "t.parquet", offset=0, limit=3)
    assert page["format"] == "parquet" and page["total_rows"] == n
    assert [c["type"] for c in page["columns"]] == ["int64", "double", "timestamp[us]", "date32[day]", "binary",
                                                    "decimal128(3, 2)", "string"]
    assert page["rows"][0] == [0, 0.0, "2024-01-01T12:00:00", "2024-01-01", repr(b"\x00\xff"), "1.25", "x"]
    assert page["rows"][1][1] is None and page["rows"][2][1] is None  # NaN, inf
    json.dumps(page, allow_nan=False)
    # a page across row groups 1 and 2 (rows 150-249)
    middle = preview_file(arts, "t.parquet", offset=150, limit=100)
    assert [r[0] for r in middle["rows"]] == list(range(150, 250))


def test_without_pyarrow_csv_is_read_as_strings_and_parquet_names_the_package(tmp_path, monkeypatch):
    store_set(tmp_path, A, {"a.csv": b"x,y\n1,2\n3,4\n", "t.parquet": parquet_bytes(tmp_path, pa.table({"k": [1]}))})
    arts = get_artifacts(A, project="proj")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError

    page = preview_file(arts, "a.csv")
    assert page["columns"] == [{"name": "x", "type": "string"}, {"name": "y", "type": "string"}]
    assert page["rows"] == [["1", "2"], ["3", "4"]] and page["total_rows"] == 2
    with pytest.raises(UsageError) as e:
        preview_file(arts, "t.parquet")
    assert e.value.hint == "pip install pyarrow" and "t.parquet" in e.value.message


def test_damaged_tables_unknown_names_and_other_files_are_clear_errors(tmp_path):
    store_set(tmp_path, A, {"bad.parquet": b"PAR1 this is not parquet", "bad.csv": b"a,b\n1,2,3\n",
                            "notes.txt": b"hi\n", "empty.csv": b""})
    arts = get_artifacts(A, project="proj")
    for name, what in (("bad.parquet", "Parquet"), ("bad.csv", "CSV")):
        with pytest.raises(UsageError) as e:
            preview_file(arts, name)
        assert e.value.message.startswith(f"{name} is not a readable {what} file: ") and e.value.hint
    with pytest.raises(UsageError) as e:
        preview_file(arts, "notes.txt")
    assert "not a CSV or Parquet" in e.value.message
    with pytest.raises(ArtifactsNotFound):
        preview_file(arts, "missing.csv")
    empty = preview_file(arts, "empty.csv")
    assert (empty["columns"], empty["rows"], empty["total_rows"]) == ([], [], 0)

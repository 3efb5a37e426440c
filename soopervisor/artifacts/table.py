"""Tables of a set (CSV, Parquet): a page of rows for a preview, and two versions compared.

Parquet goes through pyarrow (a 400-style UsageError naming ``pip install pyarrow``
when it is missing); CSV through pyarrow when present, else the csv module (every
column then a string). Values are made JSON-safe here: NaN and infinities become
null, dates ISO strings, bytes their repr, so the REST routes can ``json.dumps`` them.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soopervisor.errors import UsageError

from .notebook import printable

if TYPE_CHECKING:
    from .notebook import Artifacts

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: rows a preview answers at most
LIMIT_MAX = 1000
#: above this a table is neither previewed from CSV nor compared (either side)
TABLE_MAX = 200 * 1000 * 1000
#: examples of changed values a comparison gives at most
EXAMPLES = 10


def table_format(name: str) -> str | None:
    """``"csv"``, ``"parquet"`` or None, from the name's extension."""
    dot = name.rfind(".")
    return FORMATS.get(name[dot:].lower()) if dot >= 0 else None


def json_safe(value: Any) -> Any:
    """``value`` as something ``json.dumps`` writes without NaN: a preview's cell."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return repr(bytes(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def _pyarrow() -> Any:
    """pyarrow, or None when it is not installed (the CSV fallback reads without it)."""
    try:
        import pyarrow

        return pyarrow
    except ImportError:
        return None


def _damaged(name: str, what: str, e: BaseException) -> UsageError:
    reason = " ".join(str(e).split())[:200] or type(e).__name__
    return UsageError(f"{printable(name)} is not a readable {what} file: {reason}",
                      hint="download it to look at it; the stored copy matches what the run produced")


def _too_large(name: str, size: int) -> UsageError:
    return UsageError(f"{printable(name)} is too large to read here ({size // 1_000_000} MB, "
                      f"the limit is {TABLE_MAX // 1_000_000} MB)", hint="download it and open it locally")


# -- one table in memory ---------------------------------------------------------------------------


class Table:
    """A whole table: column names and types, and its values by position (JSON-safe, converted on use).

    ``arrow`` is the pyarrow table when pyarrow read it (columns compared there first,
    cheaply); else ``values`` holds the csv module's strings, one list per column.
    """

    def __init__(self, columns: list[dict[str, str]], rows: int, arrow: Any = None,
                 values: list[list[Any]] | None = None) -> None:
        self.columns, self.rows, self.arrow = columns, rows, arrow
        self._values: dict[int, list[Any]] = dict(enumerate(values)) if values is not None else {}

    def column(self, i: int) -> list[Any]:
        if i not in self._values:
            self._values[i] = [json_safe(v) for v in self.arrow.column(i).to_pylist()]
        return self._values[i]

    def same_column(self, i: int, other: Table, j: int) -> bool | None:
        """Whether column i equals ``other``'s column j, when pyarrow can tell at once (else None)."""
        if self.arrow is None or other.arrow is None:
            return None
        return True if self.arrow.column(i).equals(other.arrow.column(j)) else None

    def page(self, offset: int, limit: int) -> list[list[Any]]:
        if self.arrow is not None:
            return _rows_of(self.arrow.slice(offset, limit))
        stop = min(offset + limit, self.rows)
        return [[self.column(c)[r] for c in range(len(self.columns))] for r in range(offset, stop)]


def _arrow_table(pa: Any, path: Path, fmt: str) -> Any:
    # through a Python file: pyarrow cannot open a path holding bytes that are not UTF-8
    with open(path, "rb") as f:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(f, use_threads=False)
        import pyarrow.csv as pacsv

        if path.stat().st_size == 0:
            return pa.table({})
        # no reader threads: threads of pyarrow still reading a Python file when the process
        # exits abort it ("terminate called without an active exception", seen once in CI
        # after `soopervisor diff` had printed everything); previews are one file, small pages
        return pacsv.read_csv(f, read_options=pacsv.ReadOptions(use_threads=False))


def _columns(schema: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows by the csv module (no pyarrow): every value a string."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        return header, [row for row in reader]


def read_table(path: Path, name: str) -> Table:
    """The whole table at ``path`` (``name`` says its format and names it in errors)."""
    fmt = table_format(name)
    if fmt is None:
        raise UsageError(f"{printable(name)} is not a CSV or Parquet file", hint="tables are .csv, .parquet or .pq")
    size = path.stat().st_size
    if size > TABLE_MAX:
        raise _too_large(name, size)
    pa = _pyarrow()
    if pa is None:
        if fmt == "parquet":
            raise UsageError(f"reading {printable(name)} needs pyarrow", hint="pip install pyarrow")
        header, rows = _csv_rows(path)
        columns = [{"name": h, "type": "string"} for h in header]
        values = [[row[i] if i < len(row) else None for row in rows] for i in range(len(header))]
        return Table(columns, len(rows), values=values)
    try:
        table = _arrow_table(pa, path, fmt)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _damaged(name, "CSV" if fmt == "csv" else "Parquet", e) from None
    return Table(_columns(table.schema), table.num_rows, arrow=table)


# -- a page of rows --------------------------------------------------------------------------------


def _parquet_page(path: Path, name: str, offset: int, limit: int) -> tuple[list[dict[str, str]], list[list[Any]], int]:
    """Only the row groups the page needs are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # a Python file: pyarrow cannot open a path holding bytes that are not UTF-8
        with open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            total = pf.metadata.num_rows
            rows: list[list[Any]] = []
            start = 0
            for i in range(pf.num_row_groups):
                n = pf.metadata.row_group(i).num_rows
                if start + n > offset and len(rows) < limit:
                    part = pf.read_row_group(i, use_threads=False).slice(max(offset - start, 0), limit - len(rows))
                    rows += _rows_of(part)
                start += n
            return _columns(pf.schema_arrow), rows, total
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _damaged(name, "Parquet", e) from None


def _rows_of(table: Any) -> list[list[Any]]:
    # by position: column names may repeat, so never through dicts
    if table.num_columns == 0:  # a table without columns claims as many rows as a slice asks for
        return []
    cols = [col.to_pylist() for col in table.columns]
    return [[json_safe(c[r]) for c in cols] for r in range(table.num_rows)]


def preview(path: Path, name: str, offset: int = 0, limit: int = 200) -> dict[str, Any]:
    """``{name, format, columns, rows, total_rows, offset, limit}``: rows ``offset`` to ``offset+limit``."""
    fmt = table_format(name)
    if fmt is None:
        raise UsageError(f"{printable(name)} is not a CSV or Parquet file",
                         hint="the table view reads .csv, .parquet and .pq files; download others")
    if offset < 0 or limit < 1:
        raise UsageError("offset must be 0 or more and limit at least 1", hint=f"limit 1 to {LIMIT_MAX}")
    limit = min(limit, LIMIT_MAX)
    if fmt == "parquet":
        if _pyarrow() is None:
            raise UsageError(f"reading {printable(name)} needs pyarrow", hint="pip install pyarrow")
        columns, rows, total = _parquet_page(path, name, offset, limit)
    else:
        table = read_table(path, name)
        columns, total, rows = table.columns, table.rows, table.page(offset, limit)
    return {"name": name, "format": fmt, "columns": columns, "rows": rows, "total_rows": total,
            "offset": offset, "limit": limit}


def preview_file(arts: Artifacts, name: str, offset: int = 0, limit: int = 200) -> dict[str, Any]:
    """:func:`preview` of one product of a set: only that file is fetched (verified, cached)."""
    arts._file(name)  # an unknown name is a 404 before it is a format question
    if table_format(name) is None:
        raise UsageError(f"{printable(name)} is not a CSV or Parquet file",
                         hint="the table view reads .csv, .parquet and .pq files; download others")
    return preview(arts.path(name), name, offset, limit)


# -- two versions compared --------------------------------------------------------------------------


def _shape(t: Table | None) -> dict[str, Any] | None:
    return None if t is None else {"rows": t.rows, "columns": t.columns}


def _same(x: Any, y: Any) -> bool:
    return x == y or (x is None and y is None)


def table_diff(a: Table | None, b: Table | None) -> dict[str, Any]:
    """Columns added, removed and changed between two versions, with up to EXAMPLES changed values.

    Columns are matched by name (the first of a repeated name); values row by row by
    position, so only when both have as many rows (else ``columns_changed`` is null
    and ``note`` says why). A column whose type changed counts as changed.
    """
    names_a = [c["name"] for c in a.columns] if a else []
    names_b = [c["name"] for c in b.columns] if b else []
    out: dict[str, Any] = {
        "a": _shape(a), "b": _shape(b),
        "columns_added": [n for n in dict.fromkeys(names_b) if n not in names_a],
        "columns_removed": [n for n in dict.fromkeys(names_a) if n not in names_b],
        "columns_changed": None, "examples": [],
    }
    if a is None or b is None:
        out["note"] = "the table is only in " + ("B" if a is None else "A")
        return out
    if a.rows != b.rows:
        out["note"] = (f"A has {a.rows} rows and B {b.rows}: values are compared row by row only "
                       "when both have as many rows")
        return out
    changed: list[str] = []
    examples: list[dict[str, Any]] = []
    for name in dict.fromkeys(names_a):
        if name not in names_b:
            continue
        i, j = names_a.index(name), names_b.index(name)
        differs = a.columns[i]["type"] != b.columns[j]["type"]
        if not differs and a.same_column(i, b, j):
            continue
        for row, (x, y) in enumerate(zip(a.column(i), b.column(j), strict=True)):
            if not _same(x, y):
                differs = True
                if len(examples) < EXAMPLES:
                    examples.append({"row": row, "column": name, "a": x, "b": y})
                else:
                    break
        if differs:
            changed.append(name)
    out["columns_changed"] = changed
    out["examples"] = examples
    return out

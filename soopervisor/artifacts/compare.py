"""Two stored sets compared: which files were added, removed or changed, and how one file changed.

The file list comes from the two manifests alone (sha256), so it costs no download.
``file_diff`` fetches the one file from each side (verified, cached like
``Artifacts.path``) and describes the change by kind: side-by-side text rows,
JSON by the keys that changed (and its text rows), notebooks cell by cell
through nbdime, tables by columns (table.py). The REST routes,
``Artifacts.compare`` and ``soopervisor diff`` (diff_text.py renders it for a
terminal) all use this module; the shapes are the API's.
"""
from __future__ import annotations

import difflib
import html
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soopervisor.errors import ArtifactsNotFound, SoopervisorError, UsageError
from soopervisor.storage import check_relpath

from .manifest import ArtifactFile
from .notebook import format_size, printable
from .table import TABLE_MAX, read_table, table_diff, table_format

if TYPE_CHECKING:
    from pathlib import Path

    from .notebook import Artifacts

STATUSES = ("changed", "added", "removed", "unchanged")
#: above this (either side) a text or notebook is not diffed: ``{"too_large": true}``
TEXT_MAX = 5 * 1000 * 1000
#: lines of context around a change; longer runs of equal lines fold into one skip row
CONTEXT = 3
#: rows a text diff answers at most (``truncated`` says when there were more)
MAX_ROWS = 5000
#: characters of one output's summary
SUMMARY_MAX = 500
#: changed files the notebook display describes (each fetched from both sets); the others are listed
HTML_DESCRIBED = 20

_IMAGE = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg"}
_TEXT = {".txt", ".log", ".md", ".rst", ".py", ".r", ".sql", ".sh", ".yaml", ".yml", ".toml", ".ini", ".cfg",
         ".jsonl", ".ndjson", ".html", ".htm", ".xml", ".tsv", ".tex", ".js", ".css", ".ts", ".env"}


def is_ploomber_metadata(name: str) -> bool:
    """Whether ``name`` is ploomber's metadata file of a product: ``dir/.<product>.metadata``.

    Ploomber writes one next to every File product (a JSON object: the build's
    ``timestamp``, the task's ``stored_source_code``, its ``params``); a rebuilt
    task rewrites it even when its product's bytes come out the same.
    """
    base = name.rsplit("/", 1)[-1]
    return base.startswith(".") and base.endswith(".metadata") and len(base) > len("..metadata")


def kind_of(name: str) -> str:
    """``text``, ``json``, ``notebook``, ``table``, ``image`` or ``binary``, from the name's extension alone
    (a ploomber metadata file is ``json``: its diff names the keys that changed)."""
    if is_ploomber_metadata(name):
        return "json"
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > name.rfind("/") else ""
    if ext == ".ipynb":
        return "notebook"
    if ext == ".json":
        return "json"
    if table_format(name):
        return "table"
    if ext in _IMAGE:
        return "image"
    return "text" if ext in _TEXT else "binary"


def _side(f: ArtifactFile | None) -> dict[str, Any] | None:
    return None if f is None else {"size": f.size, "sha256": f.sha256}


@dataclass(frozen=True)
class FileChange:
    """One name of either set: how it differs between A and B."""

    name: str
    status: str          # added, removed, changed, unchanged
    kind: str
    a: ArtifactFile | None
    b: ArtifactFile | None

    @property
    def task(self) -> str | None:
        """The task that made the file: B's manifest says, else A's; None when neither does."""
        return (self.b.task if self.b is not None else None) or (self.a.task if self.a is not None else None)

    @property
    def metadata(self) -> bool:
        """Whether it is ploomber's metadata file of a product (folded in ``soopervisor diff``)."""
        return is_ploomber_metadata(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "kind": self.kind, "a": _side(self.a), "b": _side(self.b),
                "task": self.task, "metadata": self.metadata}


def _changes(a: list[ArtifactFile], b: list[ArtifactFile]) -> list[FileChange]:
    """Every name of either list, changed first, then added, removed, unchanged; each by name."""
    in_a, in_b = {f.name: f for f in a}, {f.name: f for f in b}
    out = []
    for name in {*in_a, *in_b}:
        fa, fb = in_a.get(name), in_b.get(name)
        status = ("added" if fa is None else "removed" if fb is None
                  else "unchanged" if fa.sha256 == fb.sha256 else "changed")
        out.append(FileChange(name, status, kind_of(name), fa, fb))
    return sorted(out, key=lambda c: (STATUSES.index(c.status), c.name))


class Comparison:
    """Set A (the base, left) against set B (right): ``get_artifacts(a).compare(b)``."""

    def __init__(self, a: Artifacts, b: Artifacts) -> None:
        self.a, self.b = a, b
        self.files: list[FileChange] = _changes(a.files, b.files)
        self._diffs: dict[str, dict[str, Any]] = {}

    def _named(self, status: str) -> list[str]:
        return [c.name for c in self.files if c.status == status]

    @property
    def added(self) -> list[str]:
        return self._named("added")

    @property
    def removed(self) -> list[str]:
        return self._named("removed")

    @property
    def changed(self) -> list[str]:
        return self._named("changed")

    @property
    def unchanged(self) -> list[str]:
        return self._named("unchanged")

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.files if c.status == s) for s in ("added", "removed", "changed", "unchanged")}

    @property
    def differ(self) -> bool:
        """Whether any file was added, removed or changed."""
        return any(c.status != "unchanged" for c in self.files)

    @property
    def outputs_differ(self) -> bool:
        """Whether any file other than ploomber's metadata was added, removed or changed
        (``soopervisor diff --exit-code``: a rebuild that wrote the same products differs only
        in its metadata timestamps)."""
        return any(c.status != "unchanged" and not c.metadata for c in self.files)

    def metadata_changes(self) -> list[FileChange]:
        """The ploomber metadata files that were added, removed or changed."""
        return [c for c in self.files if c.status != "unchanged" and c.metadata]

    def to_dict(self, with_diffs: bool = False) -> dict[str, Any]:
        """The REST answer: ``{project, a, b, counts, files}`` (a and b: the sets' summaries).

        ``with_diffs``: each changed file also carries its ``diff`` (as ``file_diff``), or
        ``error`` (``{message, hint}``) when it could not be compared (``soopervisor diff --json``).
        """
        files = [c.to_dict() for c in self.files]
        if with_diffs:
            for entry in files:
                if entry["status"] == "changed":
                    try:
                        entry["diff"] = self.file_diff(entry["name"])["diff"]
                    except SoopervisorError as e:
                        entry["error"] = {"message": e.message, "hint": e.hint}
        return {"project": self.a.project, "a": self.a.summary.to_dict(), "b": self.b.summary.to_dict(),
                "counts": self.counts, "files": files}

    def diffs(self) -> dict[str, dict[str, Any]]:
        """Every changed file's ``file_diff``, by name (a file that cannot be compared raises)."""
        return {name: self.file_diff(name) for name in self.changed}

    def describe(self, name: str, **limits: Any) -> list[str]:
        """How ``name`` changed, as a few lines of text (diff_text.describe); a file that cannot
        be compared (damaged, unreadable) is one line saying why, never an exception."""
        from .diff_text import describe

        try:
            return describe(self.file_diff(name), **limits)
        except (ArtifactsNotFound, UsageError) as e:
            if isinstance(e, ArtifactsNotFound) and name not in {c.name for c in self.files}:
                raise
            return [f"could not compare: {e.message}" + (f" ({e.hint})" if e.hint else "")]

    def change(self, name: str) -> FileChange:
        """The entry of ``name``; UnsafePath for a name that leaves the set, ArtifactsNotFound when in neither."""
        for c in self.files:
            if c.name == name:
                return c
        check_relpath(name)
        raise ArtifactsNotFound(f"no file {printable(name)!r} in either set",
                                hint="the comparison's files list the names of both sets")

    def file_diff(self, name: str) -> dict[str, Any]:
        """``{name, status, kind, a, b, diff}``: how ``name`` changed from A to B (see the module)."""
        change = self.change(name)
        if name not in self._diffs:  # both sides are read once per comparison
            self._diffs[name] = {**change.to_dict(), "diff": _diff(self, change)}
        return self._diffs[name]

    def __repr__(self) -> str:
        c = self.counts
        return (f"<Comparison {self.a.project} {self.a.commit[:7]} -> {self.b.commit[:7]}: "
                f"{c['changed']} changed, {c['added']} added, {c['removed']} removed, {c['unchanged']} unchanged>")

    def _repr_html_(self) -> str:
        e = lambda v: html.escape(printable(str(v)), quote=True)
        c = self.counts
        size = lambda f: e(format_size(f.size)) if f else ""
        # ploomber's metadata files: one row at the end (diff_text.metadata_summary), as in the terminal
        shown = [f for f in self.files if f.status != "unchanged" and not f.metadata]
        described = {f.name for f in shown if f.status == "changed"}
        described = set(sorted(described)[:HTML_DESCRIBED])

        def about(f: FileChange) -> str:
            if f.name not in described:
                return ""
            lines = self.describe(f.name, max_lines=12)
            return ("<pre style='margin:0;text-align:left;white-space:pre-wrap'>"
                    + e("\n".join(lines)) + "</pre>")

        rows = "".join(
            f"<tr><td style='text-align:left'><code>{e(f.name)}</code></td><td>{e(f.status)}</td>"
            f"<td>{e(f.kind)}</td><td style='text-align:left'>{e(f.task or '')}</td>"
            f"<td style='text-align:right'>{size(f.a)}</td>"
            f"<td style='text-align:right'>{size(f.b)}</td><td style='text-align:left'>{about(f)}</td></tr>"
            for f in shown
        )
        from .diff_text import metadata_summary

        folded = metadata_summary(self, "metadata_changes() lists them")
        if folded:
            rows += f"<tr><td colspan='7' style='text-align:left'><i>{e(folded)}</i></td></tr>"
        header = (f"<b>{e(self.a.project)}</b>: <code>{e(self.a.commit[:7])}</code> &rarr; "
                  f"<code>{e(self.b.commit[:7])}</code> &middot; {c['changed']} changed, {c['added']} added, "
                  f"{c['removed']} removed, {c['unchanged']} unchanged")
        return (f"<div class='soopervisor-comparison'><div>{header}</div><table><thead><tr>"
                "<th style='text-align:left'>name</th><th>status</th><th>kind</th>"
                "<th style='text-align:left'>task</th><th>size A</th><th>size B</th>"
                "<th style='text-align:left'>what changed</th>"
                f"</tr></thead><tbody>{rows}</tbody></table></div>")


# -- one file's diff ---------------------------------------------------------------------------------


def _local(arts: Artifacts, f: ArtifactFile | None) -> Path | None:
    return None if f is None else arts.path(f.name)


def _diff(cmp: Comparison, change: FileChange) -> dict[str, Any]:
    if change.kind in ("image", "binary"):
        return {}  # the client shows both sides from the files route, or sizes and sha256
    limit = TABLE_MAX if change.kind == "table" else TEXT_MAX
    if any(f is not None and f.size > limit for f in (change.a, change.b)):
        return {"too_large": True}
    pa, pb = _local(cmp.a, change.a), _local(cmp.b, change.b)
    if change.kind == "table":
        return table_diff(pa and read_table(pa, change.name), pb and read_table(pb, change.name))
    if change.kind == "notebook":
        return notebook_diff(pa and pa.read_bytes(), pb and pb.read_bytes(), change.name)
    raw = lambda p: None if p is None else p.read_bytes().decode("utf-8", "replace")
    ta, tb = raw(pa), raw(pb)
    rows = text_rows(None if ta is None else ta.splitlines(), None if tb is None else tb.splitlines())
    if change.kind == "json":
        return {**json_diff(ta, tb), **rows}
    return rows


# -- text: side-by-side rows ----------------------------------------------------------------------------


def _row(op: str, i: int | None, j: int | None, a: str | None, b: str | None) -> dict[str, Any]:
    # line numbers count from 1
    return {"op": op, "a_line": None if i is None else i + 1, "b_line": None if j is None else j + 1, "a": a, "b": b}


def _rows(a: list[str], b: list[str], context: int) -> list[dict[str, Any]]:
    opcodes = difflib.SequenceMatcher(None, a, b).get_opcodes()
    rows: list[dict[str, Any]] = []
    for k, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            lead = context if k > 0 else 0                   # after the change before
            trail = context if k < len(opcodes) - 1 else 0   # before the change after
            n = i2 - i1
            if n - lead - trail <= 1:  # folding one line saves nothing
                rows += [_row("equal", i1 + d, j1 + d, a[i1 + d], b[j1 + d]) for d in range(n)]
                continue
            rows += [_row("equal", i1 + d, j1 + d, a[i1 + d], b[j1 + d]) for d in range(lead)]
            hidden = n - lead - trail
            rows.append({**_row("skip", i1 + lead, j1 + lead, None, None), "count": hidden})
            rows += [_row("equal", i2 - trail + d, j2 - trail + d, a[i2 - trail + d], b[j2 - trail + d])
                     for d in range(trail)]
        else:
            for d in range(max(i2 - i1, j2 - j1)):
                i = i1 + d if i1 + d < i2 else None
                j = j1 + d if j1 + d < j2 else None
                op = "replace" if i is not None and j is not None else "delete" if j is None else "insert"
                rows.append(_row(op, i, j, None if i is None else a[i], None if j is None else b[j]))
    return rows


def text_rows(a: list[str] | None, b: list[str] | None, context: int = CONTEXT,
              max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """``{rows, truncated}``: the side by side of two texts' lines (None: the file is not on that side)."""
    rows = _rows(a or [], b or [], context)
    return {"rows": rows[:max_rows], "truncated": len(rows) > max_rows}


# -- notebooks: cell by cell through nbdime ---------------------------------------------------------------

#: what changes at every execution and says nothing about the work: left out before diffing
_VOLATILE_CELL_META = ("papermill", "execution", "ExecuteTime")
_VOLATILE_NB_META = ("start_time", "end_time", "duration", "exception")


def _read_notebook(data: bytes, name: str) -> Any:
    import nbformat

    try:
        return nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as e:  # noqa: BLE001 - nbformat raises many kinds for a damaged file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise UsageError(f"{printable(name)} is not a notebook nbformat can read: {reason}",
                         hint="download both versions to compare them") from None


def _cleaned(nb: Any) -> Any:
    """A copy without what differs at every run: cell ids, execution counts, timing metadata."""
    import copy

    nb = copy.deepcopy(nb)
    paper = nb.metadata.get("papermill")
    if isinstance(paper, dict):
        for key in _VOLATILE_NB_META:
            paper.pop(key, None)
    for cell in nb.cells:
        cell.pop("id", None)
        for key in _VOLATILE_CELL_META:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.execution_count = None
            for out in cell.get("outputs", []):
                out.pop("execution_count", None)
    return nb


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _summary(out: Any) -> str:
    """One output as a short text: its text, or ``image/png 12.3 kB`` for what cannot be shown as text."""
    kind = out.get("output_type")
    if kind == "stream":
        text = out.get("text", "")
    elif kind == "error":
        text = f"{out.get('ename', '')}: {out.get('evalue', '')}"
    else:
        data = out.get("data", {})
        image = next((m for m in data if m.startswith("image/")), None)
        if image is not None:
            raw = data[image]
            raw = "".join(raw) if isinstance(raw, list) else str(raw)
            # base64 holds 3 bytes in 4 characters, less its padding (SVG is text: its own length)
            b64 = "".join(raw.split())
            size = len(raw) if image == "image/svg+xml" else len(b64) * 3 // 4 - (len(b64) - len(b64.rstrip("=")))
            return f"{image} {format_size(size)}"
        if "text/plain" in data:
            text = data["text/plain"]
        else:
            mime = next(iter(data), "no data")
            raw = data.get(mime, "")
            return f"{mime} {format_size(len(''.join(raw) if isinstance(raw, list) else str(raw)))}"
    text = "".join(text) if isinstance(text, list) else str(text)
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1] + "…"


def _outputs(cell: Any) -> list[str]:
    return [_summary(o) for o in cell.get("outputs", [])] if cell is not None else []


def _lines(cell: Any) -> list[str]:
    return _source(cell).splitlines()


def _cell(status: str, i: int | None, j: int | None, ca: Any, cb: Any, outputs: str) -> dict[str, Any]:
    some = ca if ca is not None else cb
    if status == "unchanged":  # one skip row, however short the source
        n = len(_lines(ca))
        source = {"rows": [{**_row("skip", 0, 0, None, None), "count": n}] if n else [], "truncated": False}
    else:
        source = text_rows(_lines(ca) if ca is not None else None, _lines(cb) if cb is not None else None)
    return {"status": status, "a_index": i, "b_index": j, "cell_type": some.get("cell_type"),
            "source": source, "outputs": outputs, "outputs_a": _outputs(ca), "outputs_b": _outputs(cb)}


def _one_side(cell: Any, status: str) -> str:
    """The outputs of a cell only one side has: ``status`` (added, removed), or unchanged when it has none."""
    return status if cell.get("outputs") else "unchanged"


def _patched(i: int, j: int, ca: Any, cb: Any, diff: list[Any]) -> dict[str, Any]:
    keys = {d["key"] for d in diff}
    out_a, out_b = ca.get("outputs", []), cb.get("outputs", [])
    if "outputs" not in keys:
        outputs = "unchanged"
    elif not out_a:
        outputs = "added"
    elif not out_b:
        outputs = "removed"
    else:
        outputs = "changed"
    return _cell("modified", i, j, ca, cb, outputs)


_ORDER = {"removerange": 0, "addrange": 1, "patch": 2}


def _cells(a: Any, b: Any, cell_diff: list[Any]) -> list[dict[str, Any]]:
    """nbdime's diff of the cell list walked into one entry per cell, in notebook order."""
    out: list[dict[str, Any]] = []
    i = j = 0

    def same_until(k: int) -> None:
        nonlocal i, j
        while i < k:
            out.append(_cell("unchanged", i, j, a.cells[i], b.cells[j], "unchanged"))
            i, j = i + 1, j + 1

    for entry in sorted(cell_diff, key=lambda d: (d["key"], _ORDER.get(d["op"], 3))):
        same_until(entry["key"])
        if entry["op"] == "addrange":
            for _ in entry["valuelist"]:
                out.append(_cell("added", None, j, None, b.cells[j], _one_side(b.cells[j], "added")))
                j += 1
        elif entry["op"] == "removerange":
            for _ in range(entry["length"]):
                out.append(_cell("removed", i, None, a.cells[i], None, _one_side(a.cells[i], "removed")))
                i += 1
        elif entry["op"] == "patch":
            out.append(_patched(i, j, a.cells[i], b.cells[j], entry["diff"]))
            i, j = i + 1, j + 1
    same_until(len(a.cells))
    return out


def notebook_diff(data_a: bytes | None, data_b: bytes | None, name: str) -> dict[str, Any]:
    """``{engine, metadata_changed, cells}``: two versions of a notebook (None: not on that side).

    A cell is ``modified`` when nbdime finds its source, outputs or metadata changed once
    what differs at every run is left out (cell ids, execution counts, timings).
    """
    import nbdime
    import nbformat

    a = _cleaned(_read_notebook(data_a, name)) if data_a is not None else nbformat.v4.new_notebook()
    b = _cleaned(_read_notebook(data_b, name)) if data_b is not None else nbformat.v4.new_notebook()
    metadata_changed = False
    if data_a is None:
        cell_diff = [{"op": "addrange", "key": 0, "valuelist": b.cells}] if b.cells else []
    elif data_b is None:
        cell_diff = [{"op": "removerange", "key": 0, "length": len(a.cells)}] if a.cells else []
    else:
        diff = nbdime.diff_notebooks(a, b)
        cell_diff = next((d["diff"] for d in diff if d["key"] == "cells" and d["op"] == "patch"), [])
        metadata_changed = any(d["key"] == "metadata" for d in diff)
    return {"engine": f"nbdime {nbdime.__version__}", "metadata_changed": metadata_changed,
            "cells": _cells(a, b, cell_diff)}


# -- JSON: the keys that changed --------------------------------------------------------------------------

#: key entries a JSON diff answers at most, all lists together (``keys_truncated`` says when there were more)
JSON_MAX_KEYS = 500
#: characters of one value as shown (its JSON text)
VALUE_MAX = 80
_MISSING = object()
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def short_json(value: Any, limit: int = VALUE_MAX) -> str:
    """``value`` as compact JSON text, cut to ``limit`` characters with an ellipsis."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _NAME.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _same_json(x: Any, y: Any) -> bool:
    # 1 == True and 1 == 1.0 in Python; a JSON file that turned a number into a boolean changed
    return type(x) is type(y) and x == y


def _walk(a: Any, b: Any, path: str, out: dict[str, list[dict[str, Any]]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if k not in b:
                out["removed"].append({"key": _key(path, k), "a": short_json(a[k])})
        for k in b:
            if k not in a:
                out["added"].append({"key": _key(path, k), "b": short_json(b[k])})
            else:
                _walk(a[k], b[k], _key(path, k), out)
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            if i >= len(b):
                out["removed"].append({"key": _key(path, i), "a": short_json(a[i])})
            elif i >= len(a):
                out["added"].append({"key": _key(path, i), "b": short_json(b[i])})
            else:
                _walk(a[i], b[i], _key(path, i), out)
    elif not _same_json(a, b):
        out["changed"].append({"key": path, "a": short_json(a), "b": short_json(b)})


def _parse(text: str | None, side: str) -> tuple[Any, str | None]:
    if text is None:
        return _MISSING, None
    try:
        return json.loads(text), None
    except ValueError as e:
        return _MISSING, f"{side} is not valid JSON ({e})"


def json_diff(a: str | None, b: str | None) -> dict[str, Any]:
    """``{keys: {changed, added, removed}, keys_truncated}``: two JSON texts by dotted key paths.

    Each entry: ``key`` (``metrics.auc``, ``rows[3].name``; ``""`` for the whole value),
    and the JSON text of ``a`` and/or ``b``, shortened to VALUE_MAX. Lists are compared
    index by index. A text that does not parse gives ``keys: null`` and a ``note``
    (the text rows still say what changed). None: the file is not on that side.
    """
    va, why_a = _parse(a, "A")
    vb, why_b = _parse(b, "B")
    if why_a or why_b:
        return {"keys": None, "keys_truncated": False, "note": "; ".join(filter(None, (why_a, why_b)))
                + ": compared as text"}
    out: dict[str, list[dict[str, Any]]] = {"changed": [], "added": [], "removed": []}
    if va is _MISSING or vb is _MISSING:
        # one side only: its top-level keys (or the whole value) are what was added or removed
        only, status, side = (vb, "added", "b") if va is _MISSING else (va, "removed", "a")
        if isinstance(only, dict):
            out[status] = [{"key": _key("", k), side: short_json(v)} for k, v in only.items()]
        elif only is not _MISSING:
            out[status] = [{"key": "", side: short_json(only)}]
    else:
        _walk(va, vb, "", out)
    total = sum(len(v) for v in out.values())
    if total > JSON_MAX_KEYS:
        left = JSON_MAX_KEYS
        for status in ("changed", "added", "removed"):
            out[status] = out[status][:left]
            left -= len(out[status])
    return {"keys": out, "keys_truncated": total > JSON_MAX_KEYS}

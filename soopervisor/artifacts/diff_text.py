"""A comparison as short lines of text: what ``soopervisor diff`` prints and the notebook display shows.

``describe(file_diff)`` turns one file's diff (compare.py's shapes) into a few
lines by kind: a table's shapes, columns and example rows; a JSON file's
changed keys; a text's unified diff cut at ``max_lines``; a notebook's cells;
an image's or binary's sizes and sha256. ``render(comparison)`` is the whole
terminal output. Nothing here reads a file: compare.py does.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from soopervisor.errors import SoopervisorError

from .notebook import format_size, printable

if TYPE_CHECKING:
    from .compare import Comparison, FileChange

#: lines of one text diff in the summary (``--file`` shows more)
TEXT_LINES = 40
#: example rows of a table, keys of a JSON file, cells of a notebook in the summary
TABLE_EXAMPLES = 3
JSON_KEYS = 12
NOTEBOOK_CELLS = 6
#: characters of one shown line
LINE_MAX = 160


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str, limit: int = LINE_MAX) -> str:
    # a product's bytes never move the terminal's cursor or change its colours
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _more(n: int, what: str) -> str:
    return f"… {n} more {what}{'' if n == 1 else 's'}"


def set_label(arts: Any) -> str:
    """``1a2b3c4 run r1 (sample)``: one set in a header line."""
    dirty = "+dirty" if arts.summary.dirty else ""
    run = f" run {arts.run_id}" if arts.run_id else " (old layout)"
    return f"{arts.commit[:7]}{dirty}{run} ({arts.mode or '?'})"


def counts_line(counts: dict[str, int]) -> str:
    return (f"{counts['changed']} changed, {counts['added']} added, {counts['removed']} removed, "
            f"{counts['unchanged']} unchanged")


def _sides(d: dict[str, Any]) -> str:
    a, b = d.get("a"), d.get("b")
    size = lambda s: format_size(s["size"]) if s else "-"
    sha = lambda s: s["sha256"][:12] if s else "-"
    return f"size {size(a)} -> {size(b)}, sha256 {sha(a)} -> {sha(b)}"


# -- by kind ------------------------------------------------------------------------------------------


def _table(diff: dict[str, Any], examples: int) -> list[str]:
    shape = lambda s: f"{s['rows']} rows x {len(s['columns'])} columns" if s else "-"
    out = [f"shape {shape(diff.get('a'))} -> {shape(diff.get('b'))}"]
    for label, key in (("columns added", "columns_added"), ("columns removed", "columns_removed"),
                       ("columns changed", "columns_changed")):
        names = diff.get(key)
        if names:
            out.append(f"{label}: " + shown(", ".join(names)))
    if diff.get("columns_changed") == [] and not diff.get("columns_added") and not diff.get("columns_removed"):
        out.append("same columns and values (the bytes differ: formatting or order)")
    found = diff.get("examples") or []
    for ex in found[:examples]:
        out.append(shown(f"row {ex['row']}, {ex['column']}: {ex['a']!r} -> {ex['b']!r}"))
    if len(found) > examples:
        out.append(f"… at least {len(found) - examples} more changed values")
    if diff.get("note"):
        out.append(shown(diff["note"], 240))
    return out


def _json(diff: dict[str, Any], max_keys: int, max_lines: int) -> list[str]:
    keys = diff.get("keys")
    if keys is None:  # a side does not parse: the text diff says what changed
        return [shown(diff.get("note") or "not valid JSON", 240), *_text(diff, max_lines)]
    entries = ([f"~ {k['key'] or '(the whole value)'}: {k['a']} -> {k['b']}" for k in keys["changed"]]
               + [f"+ {k['key'] or '(the whole value)'}: {k['b']}" for k in keys["added"]]
               + [f"- {k['key'] or '(the whole value)'}: {k['a']}" for k in keys["removed"]])
    n = len(keys["changed"]) + len(keys["added"]) + len(keys["removed"])
    out = [f"keys: {len(keys['changed'])} changed, {len(keys['added'])} added, {len(keys['removed'])} removed"
           + (" (more not listed)" if diff.get("keys_truncated") else "")]
    if n == 0:
        out.append("same values (the bytes differ: formatting or key order)")
    out += [shown(e) for e in entries[:max_keys]]
    if n > max_keys:
        out.append(_more(n - max_keys, "key"))
    return out


def unified(rows: list[dict[str, Any]]) -> list[str]:
    """compare.py's side-by-side rows as unified-diff lines (a replaced run: its ``-`` lines, then its ``+``)."""
    out: list[str] = []
    minus: list[str] = []
    plus: list[str] = []

    def flush() -> None:
        out.extend(minus)
        out.extend(plus)
        minus.clear()
        plus.clear()

    for r in rows:
        op = r["op"]
        if op in ("replace", "delete", "insert"):
            if r["a"] is not None:
                minus.append("-" + r["a"])
            if r["b"] is not None:
                plus.append("+" + r["b"])
            continue
        flush()
        if op == "skip":
            out.append(f"@@ {r['count']} unchanged line{'' if r['count'] == 1 else 's'} from A's line {r['a_line']} @@")
        else:
            out.append(" " + r["a"])
    flush()
    return out


def _text(diff: dict[str, Any], max_lines: int) -> list[str]:
    lines = [shown(line) for line in unified(diff.get("rows") or [])]
    out = lines[:max_lines]
    if len(lines) > max_lines:
        out.append(_more(len(lines) - max_lines, "line"))
    elif diff.get("truncated"):
        out.append("… the diff is cut short: download both sides for the rest")
    return out


def _first_line(cell: dict[str, Any]) -> str:
    """The line that says most about a cell: a modified one's first changed line (B's, else A's:
    empty when only its outputs changed), an added or removed one's first line."""
    rows = cell["source"]["rows"]
    if cell["status"] == "modified":
        for r in rows:
            if r["op"] in ("replace", "insert", "delete") and (r["b"] or r["a"] or "").strip():
                return (r["b"] if r["b"] is not None and r["b"].strip() else "-" + r["a"]).strip()
        return ""
    for r in rows:
        if (r.get("b") or r.get("a") or "").strip():
            return (r.get("b") or r.get("a")).strip()
    return ""


def _notebook(diff: dict[str, Any], max_cells: int) -> list[str]:
    cells = diff.get("cells") or []
    by = {s: sum(1 for c in cells if c["status"] == s) for s in ("modified", "added", "removed", "unchanged")}
    out = [f"cells: {by['modified']} modified, {by['added']} added, {by['removed']} removed, "
           f"{by['unchanged']} unchanged" + ("; notebook metadata changed" if diff.get("metadata_changed") else "")]
    listed = [c for c in cells if c["status"] != "unchanged"]
    for c in listed[:max_cells]:
        where = (f"cell {c['b_index'] + 1}" if c["b_index"] is not None else f"cell {c['a_index'] + 1} of A")
        src = _first_line(c)
        line = f"{c['status']} {where} ({c['cell_type']})" + (
            f": {src}" if src else ", same source" if c["status"] == "modified" else "")
        out.append(shown(line))
        if c["outputs"] == "changed":
            a = " | ".join(c["outputs_a"]) or "(none)"
            b = " | ".join(c["outputs_b"]) or "(none)"
            out.append(shown(f"  outputs A: {' '.join(a.split())}"))
            out.append(shown(f"  outputs B: {' '.join(b.split())}"))
        elif c["outputs"] in ("added", "removed") and c["status"] == "modified":
            out.append(f"  outputs {c['outputs']}")
    if len(listed) > max_cells:
        out.append(_more(len(listed) - max_cells, "cell"))
    return out


def describe(d: dict[str, Any], *, max_lines: int = TEXT_LINES, max_items: int | None = None) -> list[str]:
    """One file's ``file_diff`` answer as a few lines (its name and status not included)."""
    diff = d.get("diff") or {}
    kind = d["kind"]
    if diff.get("too_large"):
        return [f"too large to diff here ({_sides(d)}); download both sides to compare them"]
    if kind in ("image", "binary"):
        return [_sides(d)]
    if kind == "table":
        return _table(diff, max_items or TABLE_EXAMPLES)
    if kind == "json":
        return _json(diff, max_items or JSON_KEYS, max_lines)
    if kind == "notebook":
        return _notebook(diff, max_items or NOTEBOOK_CELLS)
    return _text(diff, max_lines)


# -- the whole comparison -----------------------------------------------------------------------------


def header(cmp: Comparison) -> str:
    return f"{cmp.a.project}: A {set_label(cmp.a)} -> B {set_label(cmp.b)}"


def task_note(f: FileChange) -> str:
    """`` (task clean)`` after a file's line: the task that made it; empty when no manifest says."""
    return f" (task {shown(f.task, 200)})" if f.task else ""


#: how ploomber's metadata keys are named in the folded line; other keys by their own name
METADATA_KEYS = {"timestamp": "timestamps", "stored_source_code": "stored source", "params": "params"}
#: changed metadata files read to name the keys that changed (each is fetched from both sets)
METADATA_READ = 50
_TOP_KEY = re.compile(r"^[^.\[]+")


def metadata_summary(cmp: Comparison, hint: str | None = None) -> str | None:
    """One line for every ploomber metadata file that differs, None when none does:
    ``ploomber metadata: 4 files changed (timestamps, stored source); --metadata shows them``.

    The keys named are the top-level keys that changed in the first METADATA_READ changed
    files (a file that cannot be read names none).
    """
    changes = cmp.metadata_changes()
    if not changes:
        return None
    by = {s: sum(1 for f in changes if f.status == s) for s in ("changed", "added", "removed")}
    counted = [(n, status) for status, n in by.items() if n]
    # "4 files changed, 1 added": the first count names what is counted
    parts = [f"{n} file{'' if n == 1 else 's'} {status}" if i == 0 else f"{n} {status}"
             for i, (n, status) in enumerate(counted)]
    keys: list[str] = []
    for f in [f for f in changes if f.status == "changed"][:METADATA_READ]:
        try:
            found = (cmp.file_diff(f.name).get("diff") or {}).get("keys") or {}
        except SoopervisorError:
            continue
        for entry in (*found.get("changed", ()), *found.get("added", ()), *found.get("removed", ())):
            m = _TOP_KEY.match(entry["key"])
            label = METADATA_KEYS.get(m.group(), m.group()) if m else None
            if label and label not in keys:
                keys.append(label)
    line = "ploomber metadata: " + ", ".join(parts) + (f" ({shown(', '.join(keys), 200)})" if keys else "")
    return line + (f"; {hint}" if hint else "")


def render(cmp: Comparison, metadata: bool = False) -> list[str]:
    """The terminal output of ``soopervisor diff``: a header, the counts, each changed file described
    (and the task that made it), the added and removed files with their sizes; ploomber's metadata
    files folded into one line at the end unless ``metadata``."""
    out = [header(cmp)]
    c = cmp.counts
    if not (c["changed"] or c["added"] or c["removed"]):
        same = "the same set" if cmp.a.summary == cmp.b.summary else f"{c['unchanged']} identical files"
        return [*out, f"no differences ({same})"]
    out.append(counts_line(c))
    listed = [f for f in cmp.files if metadata or not f.metadata]
    for f in listed:
        if f.status == "changed":
            out.append("")
            out.append(f"~ {shown(f.name, 1000)} ({f.kind}){task_note(f)}")
            out += ["    " + line for line in cmp.describe(f.name)]
    for status, sign in (("added", "+"), ("removed", "-")):
        names = [f for f in listed if f.status == status]
        if names:
            out.append("")
            for f in names:
                side = f.b if status == "added" else f.a
                out.append(f"{sign} {shown(f.name, 1000)} ({f.kind}, {format_size(side.size)}) {status}{task_note(f)}")
    folded = None if metadata else metadata_summary(cmp, "--metadata shows them")
    if folded:
        if not cmp.outputs_differ:
            out += ["", "the products are the same; only ploomber's metadata differs"]
        out += ["", folded]
    return out

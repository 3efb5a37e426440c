"""The references generated from the code, and the checks that keep the site true.

At ``builder-inited`` this writes Markdown fragments into ``reference/_generated/``
(git-ignored) that the reference pages include:

- ``rest.md`` from ``soopervisor/api/openapi.yaml`` (every route, parameter, response, schema),
  and ``server-api.md`` from ``soopervisor/server/openapi.yaml`` (the routes only ``soopervisor serve`` has);
- ``environment-variables.md`` from ``soopervisor.environment_variables``;
- ``jupyter-settings.md`` from the ``Soopervisor`` configurable's traits;
- ``manifest.md`` from ``soopervisor.artifacts.manifest``;
- ``magics.md`` from the ``%soopervisor`` magic's argument parser;
- ``exit-codes.md`` from ``soopervisor.troubleshooting``.

(The CLI reference is sphinx-click's, from the click commands; the Python API is autodoc's.)

Checks, each a warning (so an error under ``-W``):

- every troubleshooting topic the code links to (``soopervisor.troubleshooting.TOPICS``) is an
  anchor of ``how-to/troubleshooting``;
- after the build, every internal link of every page (``href="page.html#anchor"``) names a page
  that exists and an id on it.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

TROUBLESHOOTING = "how-to/troubleshooting"


# -- small Markdown helpers ----------------------------------------------------------------


def _cell(text: Any) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in text else f"`` {text} ``"


def _rst_to_md(text: str) -> str:
    """The double-backquoted literals of our docstrings and tables, as Markdown code."""
    return re.sub(r"``(.+?)``", lambda m: _code(m.group(1)), text)


# -- REST API from openapi.yaml -------------------------------------------------------------


def openapi_path() -> Path:
    """The installed API's openapi.yaml (soopervisor/api/openapi.yaml in a checkout)."""
    from soopervisor.api.routes import OPENAPI

    return OPENAPI


def server_openapi_path() -> Path:
    """The server-only routes' openapi.yaml (soopervisor/server/openapi.yaml)."""
    import soopervisor.server

    return Path(soopervisor.server.__file__).parent / "openapi.yaml"


def route_anchor(method: str, path: str) -> str:
    """The anchor of a route's section, e.g. ``get-runs-run-id-log`` (tests use this too)."""
    return re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _resolve(spec: dict, obj: dict) -> dict:
    while isinstance(obj, dict) and "$ref" in obj:
        section, name = obj["$ref"].split("/")[-2:]
        obj = spec["components"][section][name]
    return obj


def _type(schema: dict) -> str:
    """A schema in a few words: ``string``, ``array of Run``, ``Run or null``, ``one of A, B``."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[{name}](#schema-{name.lower()})"
    for key, word in (("oneOf", "one of"), ("anyOf", "any of")):
        if key in schema:
            return f"{word} " + ", ".join(_type(s) for s in schema[key])
    kind = schema.get("type", "object")
    if kind == "array":
        kind = "array of " + _type(schema.get("items", {}))
    if "enum" in schema:
        kind += " (" + ", ".join(_code(str(v)) for v in schema["enum"]) + ")"
    if schema.get("nullable"):
        kind += " or null"
    return kind


def _properties(schema: dict) -> list[str]:
    props = schema.get("properties") or {}
    if not props:
        return []
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        meaning = prop.get("description", "")
        if "default" in prop:
            meaning = (meaning + f" (default {_code(json.dumps(prop['default']))})").strip()
        rows.append([_code(name), _type(prop), "yes" if name in required else "", meaning])
    return _table(["field", "type", "required", "meaning"], rows)


def _schema_lines(spec: dict, schema: dict) -> list[str]:
    if "$ref" in schema or "oneOf" in schema or schema.get("type") == "array":
        return [_type(schema), ""]
    schema = _resolve(spec, schema)
    lines = _properties(schema)
    return lines or [_type(schema), ""]


def rest_reference(spec: dict, *, label_prefix: str = "", where: str = "itself under the Jupyter server's "
                   "`base_url`") -> str:
    """One page of routes and schemas; ``label_prefix`` keeps its labels apart from another spec's page."""
    out = [spec["info"].get("description", "").strip(), ""]
    base = spec.get("servers", [{}])[0].get("url", "")
    out += [f"Every path below is under {_code(base)}, {where}.", ""]
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        own_base = item.get("servers", [{}])[0].get("url")
        for method in ("get", "post", "put", "patch", "delete"):
            op = item.get(method)
            if not op:
                continue
            out += [f"({label_prefix}{route_anchor(method, path)})=", f"## {method.upper()} {path}", ""]
            if own_base is not None and own_base != base:
                out += [f"At {_code(own_base)}, outside {_code(base)}.", ""]
            out += [op.get("summary", "").strip() + ".", ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = [_resolve(spec, p) for p in shared + op.get("parameters", [])]
            if params:
                out += ["**Parameters**", ""]
                rows = []
                for p in params:
                    schema = p.get("schema", {})
                    meaning = p.get("description", "")
                    if "default" in schema:
                        meaning = (meaning + f" (default {_code(json.dumps(schema['default']))})").strip()
                    rows.append([_code(p["name"]), p["in"], _type(schema), "yes" if p.get("required") else "",
                                 meaning])
                out += _table(["name", "in", "type", "required", "meaning"], rows)
            body = op.get("requestBody")
            if body:
                schema = next(iter(body.get("content", {}).values()), {}).get("schema", {})
                out += ["**Request body** (JSON)", ""] + _schema_lines(spec, schema)
            out += ["**Responses**", ""]
            rows = []
            for status, resp in op.get("responses", {}).items():
                resp = _resolve(spec, resp)
                content = resp.get("content") or {}
                media, body_schema = next(iter(content.items()), (None, {}))
                shape = _type(body_schema.get("schema", {})) if media == "application/json" else (media or "")
                rows.append([status, resp.get("description", ""), shape])
            out += _table(["status", "meaning", "body"], rows)
    out += ["## Schemas", ""]
    for name, schema in spec["components"]["schemas"].items():
        out += [f"({label_prefix}schema-{name.lower()})=", f"### {name}", ""]
        if schema.get("description"):
            out += [schema["description"].strip(), ""]
        out += _schema_lines(spec, schema)
    # _type links schemas as #schema-NAME: on a prefixed page they are #PREFIXschema-NAME
    return "\n".join(out).replace("](#schema-", f"](#{label_prefix}schema-") + "\n"


# -- the other references --------------------------------------------------------------------


def environment_variables() -> str:
    from soopervisor.environment_variables import ENVIRONMENT_VARIABLES

    groups: dict[str, list] = {}
    for var in ENVIRONMENT_VARIABLES:
        groups.setdefault(var.group, []).append(var)
    titles = {
        "settings": "Settings",
        "cloud credentials": "Cloud credentials (CI)",
        "endpoints": "Service endpoints",
        "read from the environment": "Read from the environment",
        "inside the container": "Set inside the run's container",
    }
    out = []
    for group, title in titles.items():
        out += [f"### {title}", ""]
        for var in groups.pop(group):  # a definition list: long meanings read better than in a narrow table
            default = f" Default: {_rst_to_md(var.default)}." if var.default else ""
            meaning = _rst_to_md(var.meaning)
            out += [f"(env-{var.name.lower().replace('_', '-')})=", _code(var.name),
                    f": {meaning[:1].upper()}{meaning[1:]}.{default}", ""]
    assert not groups, f"environment variable groups without a title: {sorted(groups)}"
    return "\n".join(out)


def jupyter_settings() -> str:
    from soopervisor_jupyter.server import Soopervisor

    rows = []
    for name, trait in sorted(Soopervisor.class_traits(config=True).items()):
        default = trait.default_value
        shown = _code(repr(default)) if default not in ("", None) else "—"
        values = getattr(trait, "values", None)
        kind = type(trait).__name__ + (" (" + ", ".join(_code(str(v)) for v in values) + ")" if values else "")
        rows.append([_code(f"c.Soopervisor.{name}"), kind, shown, trait.help])
    return "\n".join(_table(["setting", "type", "default", "meaning"], rows))


def manifest_reference() -> str:
    from soopervisor.artifacts.manifest import COMPUTED_FIELDS, MANIFEST_FIELDS, SET_STATUSES
    from soopervisor.storage.base import SCHEMA

    rows = [[_code(k), _rst_to_md(v)] for k, v in {**MANIFEST_FIELDS, **COMPUTED_FIELDS}.items()]
    out = _table(["field", "meaning"], rows)
    statuses = ", ".join(_code(s) for s in SET_STATUSES)
    out += [f"A stored set's `status` is one of {statuses}; the current `schema` is {SCHEMA}.", ""]
    return "\n".join(out)


def magics_reference() -> str:
    from soopervisor_jupyter.magics import USAGE, _parser

    parser = _parser()
    out = ["```text", USAGE, "```", ""]
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, command in sub.choices.items():
        out += [f"(magic-{name})=", f"### `%soopervisor {name}`", "", (helps.get(name) or "").capitalize() + ".", ""]
        rows = []
        for action in command._actions:
            if action.dest == "help":
                continue
            flags = ", ".join(action.option_strings) or action.dest.upper()
            if action.metavar and action.option_strings:
                flags += f" {action.metavar}"
            default = action.default if action.default not in (None, [], False) and action.option_strings else ""
            if action.dest == "sample":
                default = ""
            choices = ", ".join(map(str, action.choices)) if action.choices else ""
            meaning = action.help or ""
            if choices:
                meaning += f" (one of {choices})"
            rows.append([_code(flags), meaning, _code(str(default)) if default != "" else ""])
        out += _table(["argument", "meaning", "default"], rows)
    return "\n".join(out)


def exit_codes() -> str:
    from soopervisor.troubleshooting import EXIT_CODES

    rows = []
    for topic, title in EXIT_CODES.items():
        code, meaning = title.split(": ", 1)
        rows.append([code.replace("Exit ", ""), meaning, f"{{ref}}`{topic}`"])
    return "\n".join(_table(["exit code", "meaning", "what to do"], rows))


def generate(app: Sphinx) -> None:
    out = Path(app.srcdir) / "reference" / "_generated"
    out.mkdir(parents=True, exist_ok=True)
    pages = {
        "rest.md": rest_reference(yaml.safe_load(openapi_path().read_text(encoding="utf-8"))),
        "server-api.md": rest_reference(yaml.safe_load(server_openapi_path().read_text(encoding="utf-8")),
                                        label_prefix="server-", where="on `soopervisor serve` only"),
        "environment-variables.md": environment_variables(),
        "jupyter-settings.md": jupyter_settings(),
        "manifest.md": manifest_reference(),
        "magics.md": magics_reference(),
        "exit-codes.md": exit_codes(),
    }
    for name, text in pages.items():
        path = out / name
        # rewritten only when changed, so an incremental build does not rebuild every page
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            # atomically: two builds at once (tests, a second terminal) never read half a file
            tmp = path.with_name(f".{name}.{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)


# -- checks -------------------------------------------------------------------------------------


def check_topics(app: Sphinx, env) -> None:
    """Every topic an error links to is an anchor of the troubleshooting page."""
    from soopervisor.troubleshooting import TOPICS

    labels = env.domains["std"].labels
    anon = env.domains["std"].anonlabels
    for topic in TOPICS:
        found = labels.get(topic) or anon.get(topic)
        if not found:
            logger.warning(f"troubleshooting topic {topic!r} (soopervisor.troubleshooting) has no entry: "
                           f"add '({topic})=' above its heading in {TROUBLESHOOTING}.md")
        elif found[0] != TROUBLESHOOTING:
            logger.warning(f"troubleshooting topic {topic!r} is defined in {found[0]}, not {TROUBLESHOOTING}")


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            elif key == "href" and tag == "a" and value:
                self.links.append(value)


def broken_links(outdir: Path) -> list[str]:
    """Every internal link of the built HTML that names a missing page or a missing anchor."""
    pages: dict[str, _Anchors] = {}
    for html in outdir.rglob("*.html"):
        parser = _Anchors()
        parser.feed(html.read_text(encoding="utf-8", errors="replace"))
        pages[html.relative_to(outdir).as_posix()] = parser
    broken = []
    for page, parsed in sorted(pages.items()):
        if page.startswith(("_static/", "_modules/", "genindex", "search", "py-modindex")):
            continue
        for href in parsed.links:
            parts = urlsplit(href)
            # other sites, and root paths (a notebook's download links into a Jupyter server) are not the site's
            if parts.scheme or parts.netloc or href.startswith(("/", "mailto:", "javascript:")):
                continue
            target = page if not parts.path else posixpath.normpath(
                posixpath.join(posixpath.dirname(page), unquote(parts.path)))
            if target.endswith("/") or target == ".":
                target = posixpath.join(target, "index.html").lstrip("./")
            if not target.endswith(".html"):
                if not (outdir / target).exists():
                    broken.append(f"{page}: {href} (no such file)")
                continue
            if target not in pages:
                broken.append(f"{page}: {href} (no such page)")
            elif parts.fragment and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{page}: {href} (no anchor '{parts.fragment}' in {target})")
    return broken


def check_links(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for problem in broken_links(Path(app.outdir)):
        logger.warning(f"broken internal link: {problem}")


def _plain_help(app: Sphinx, ctx, lines: list[str]) -> None:
    """Click help is plain text for a terminal: a word with ``*`` (a glob) and `x` are code, not markup."""
    for i, line in enumerate(lines):
        if line.lstrip().startswith(".. "):
            continue
        line = re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", line)
        parts = re.split(r"(``.+?``)", line)  # literals stay as they are
        lines[i] = "".join(p if p.startswith("``") else re.sub(r"[^\s(]*\*[^\s,;)]*", r"``\g<0>``", p)
                           for p in parts)


def label_cli_sections(app: Sphinx, doctree) -> None:
    """sphinx-click's command sections become labels (``soopervisor-artifacts-download``), so any page
    can link a command with ``{ref}`soopervisor artifacts download <soopervisor-artifacts-download>```."""
    from docutils import nodes

    docname = app.env.docname
    if docname != "reference/cli":
        return
    std = app.env.domains["std"]
    for section in doctree.findall(nodes.section):
        for id_ in section["ids"]:
            if id_.startswith("soopervisor"):
                std.anonlabels[id_] = (docname, id_)
                std.labels[id_] = (docname, id_, "soopervisor " + " ".join(id_.split("-")[1:]))


def setup(app: Sphinx) -> dict:
    app.connect("doctree-read", label_cli_sections)
    for part in ("description", "usage", "options", "arguments", "envvars", "epilog"):
        app.connect(f"sphinx-click-process-{part}", _plain_help)
    app.connect("builder-inited", generate)
    app.connect("env-check-consistency", check_topics)
    app.connect("build-finished", check_links)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

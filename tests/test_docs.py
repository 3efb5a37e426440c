"""The documentation site: built for real by Sphinx, its references complete, every error's link an anchor.

The references are generated from the code, so "every command is documented" holds by
construction; these tests guard the generation (a command the generator skips, a topic
without its entry, a variable nobody listed) and the link checker itself.
"""
from __future__ import annotations

import ast
import html
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest
import yaml

import soopervisor
from soopervisor import errors, troubleshooting
from soopervisor.environment_variables import ENVIRONMENT_VARIABLES, NOT_VARIABLES

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import soopervisor_docs

pytestmark = pytest.mark.xdist_group("docs")


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.ids.update(v for k, v in attrs if k == "id" and v)


def ids(page: Path) -> set[str]:
    parser = _Ids()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.ids


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The whole site, built strictly as scripts/docs builds it, without executing the notebooks."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
         "-D", "nb_execution_mode=off", "-d", str(out / ".doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out / "html"


# -- the references cover the code ------------------------------------------------------------


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        path = (*prefix, name)
        if command.hidden:
            continue
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


def test_every_cli_command_and_option_is_in_the_reference(site: Path) -> None:
    from soopervisor.cli import cli

    found = ids(site / "reference" / "cli.html")
    commands = list(_commands(cli))
    assert len(commands) >= 15  # run, validate, artifacts list, github init, …
    for path, command in commands:
        anchor = "-".join(("soopervisor", *path))
        assert anchor in found, f"soopervisor {' '.join(path)} is missing from the CLI reference"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                option = max(param.opts, key=len).lstrip("-")
                assert f"cmdoption-{anchor}-{option}" in found, f"{anchor} --{option} is not in the CLI reference"


def test_every_rest_route_is_in_the_reference(site: Path) -> None:
    spec = yaml.safe_load((REPO / "soopervisor" / "api" / "openapi.yaml").read_text(encoding="utf-8"))
    found = ids(site / "reference" / "rest.html")
    routes = [(m, p) for p, item in spec["paths"].items() for m in item if m in ("get", "post", "put", "delete")]
    assert len(routes) >= 10
    for method, path in routes:
        assert soopervisor_docs.route_anchor(method, path) in found, f"{method.upper()} {path} is not in the REST reference"
    for name in spec["components"]["schemas"]:
        assert f"schema-{name.lower()}" in found


def test_every_magic_and_its_options_are_in_the_reference(site: Path) -> None:
    from soopervisor_jupyter.magics import _parser

    html = (site / "reference" / "magics.html").read_text(encoding="utf-8")
    found = ids(site / "reference" / "magics.html")
    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == {"validate", "run", "attach", "reproduce", "artifacts"}
    for name, command in sub.choices.items():
        assert f"magic-{name}" in found
        for action in command._actions:
            for flag in action.option_strings if action.dest != "help" else ():
                assert flag in html, f"%soopervisor {name} {flag} is not in the magics reference"


def test_every_soopervisor_variable_in_the_code_is_documented(site: Path) -> None:
    documented = {v.name for v in ENVIRONMENT_VARIABLES}
    used, code = set(), ""
    for path in [*(REPO / "soopervisor").rglob("*.py"), *(REPO / "jupyter_ext").glob("*.py"), REPO / "action.yml",
                 *(REPO / "soopervisor").rglob("*.sh")]:
        text = path.read_text(encoding="utf-8")
        code += text
        used |= set(re.findall(r"\bSOOPERVISOR_[A-Z][A-Z0-9_]*[A-Z0-9]\b", text))
    used -= set(NOT_VARIABLES)
    assert used - documented == set(), "add these to soopervisor/environment_variables.py"
    # a name made from a template (SOOPERVISOR_REMOTE_<NAME>_TOKEN) is read through the literal parts it is built of
    templates = {n for n in documented if "<" in n}
    for name in templates:
        assert all(f'"{part}' in code or f"{part}\"" in code for part in re.split(r"<[A-Z]+>", name) if part), name
    assert {n for n in documented if n.startswith("SOOPERVISOR_")} - templates - used == set(), "documented but never read"
    page = (site / "reference" / "configuration.html").read_text(encoding="utf-8")
    for name in documented:
        assert html.escape(name, quote=False) in page, name  # a template's <NAME> is escaped in HTML


def test_the_manifest_reference_lists_every_field_a_run_writes(site: Path, tmp_path: Path) -> None:
    from soopervisor.artifacts.manifest import COMPUTED_FIELDS, MANIFEST_FIELDS, write_manifest

    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.csv").write_text("x\n")
    written = write_manifest(tmp_path, commit="a" * 40, status="succeeded")
    assert set(written) == set(MANIFEST_FIELDS) | set(COMPUTED_FIELDS)
    page = (site / "reference" / "manifest.html").read_text(encoding="utf-8")
    for name in written:
        assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{name}</span></code>" in page


def test_the_python_api_is_in_the_reference(site: Path) -> None:
    found = ids(site / "reference" / "python.html")
    for name in soopervisor.__all__:
        if name != "__version__":
            assert f"soopervisor.{name}" in found, f"soopervisor.{name} is not in the Python reference"


# -- every error links to an entry that exists ------------------------------------------------------


def test_every_troubleshooting_topic_is_an_anchor_of_the_page(site: Path) -> None:
    found = ids(site / "how-to" / "troubleshooting.html")
    assert set(troubleshooting.TOPICS) - found == set()


def _error_classes():
    import soopervisor.cli
    import soopervisor.credentials
    import soopervisor.github.api
    import soopervisor.runs
    import soopervisor.server.config
    import soopervisor.server.poller
    import soopervisor.server.queue  # noqa: F401

    seen, todo = [], [errors.SoopervisorError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_error_class_and_topic_argument_names_an_entry() -> None:
    classes = _error_classes()
    assert errors.EngineUnavailable in classes and len(classes) >= 10
    for cls in classes:
        assert cls.topic in troubleshooting.TOPICS, cls
    # topic="..." given where an error is raised
    for path in (REPO / "soopervisor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                for kw in node.keywords:
                    if kw.arg == "topic" and isinstance(kw.value, ast.Constant):
                        assert kw.value.value in troubleshooting.TOPICS, f"{path}: topic={kw.value.value!r}"


#: kebab-case strings of soopervisor/project that are not problem codes
NOT_CODES = {"conda-meta", "entry-point", "rev-parse", "site-packages", "utf-8", "dotted-path", "module-path"}


def test_every_problem_code_is_registered() -> None:
    """A code Problem() would refuse at run time is caught here, whichever path reports it."""
    from soopervisor.troubleshooting import PROBLEM_CODES

    literals = set()
    for path in (REPO / "soopervisor" / "project").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"[a-z]+(-[a-z0-9]+)+", node.value):
                literals.add(node.value)
    assert literals - NOT_CODES - set(PROBLEM_CODES) == set(), "register these codes in PROBLEM_CODES"
    assert set(PROBLEM_CODES) - literals == set(), "codes nothing reports"


def test_a_failed_run_links_the_entry_of_its_cause() -> None:
    from soopervisor.failure import load_hint, network_hint
    from soopervisor.logstream import LOAD_FAILED
    from soopervisor.runs import Run

    def topic(**fields) -> str | None:
        return troubleshooting.run_topic(Run(project="p", project_path=".", commit="c" * 40, dirty=False,
                                             mode="sample", **fields))

    assert topic(status="succeeded") is None
    assert topic(status="failed", error=f"{LOAD_FAILED}: ModuleNotFoundError",
                 hint=load_hint("ModuleNotFoundError: No module named 'sklearn'")) == "missing-module"
    assert topic(status="failed", error=f"{LOAD_FAILED}: SyntaxError: bad",
                 hint=load_hint("SyntaxError: bad")) == "pipeline-load-failed"
    assert topic(status="failed", error="task 'get' failed", hint=network_hint("none")) == "host-unreachable"
    assert topic(status="failed", error="task 'get' failed", hint=network_hint("default")) == "host-unreachable"
    assert topic(status="failed", error="task 'fit' failed", failed_cell="1/0") == "notebook-cell-failed"
    assert topic(status="failed", error="the run timed out after 5s and was stopped") == "run-timeout"
    assert topic(status="failed", error="task 'get' failed") == "pipeline-failed"
    setup_failed = "the environment set-up failed with exit code 1 in stage 'setup env'"
    assert topic(status="failed", error=setup_failed) == "environment-failed"
    assert topic(status="failed", error=setup_failed, hint=network_hint("default")) == "host-unreachable"
    assert topic(status="cancelled") == "run-cancelled"
    assert topic(status="interrupted") == "run-interrupted"


def _more_links(text: str) -> list[str]:
    return re.findall(r"more: (\S+)", text)


def test_the_links_commands_print_resolve_to_an_anchor(site: Path, tmp_path: Path, home: Path) -> None:
    found = ids(site / "how-to" / "troubleshooting.html")
    not_a_repo = tmp_path / "plain"
    not_a_repo.mkdir()
    printed = []
    for args in (["validate", str(not_a_repo)],
                 ["artifacts", "download", "latest", "--project", "nope"],
                 ["stop", "nosuchrun"],
                 ["run", "--memory", "lots", str(not_a_repo)],
                 ["run", "--no-such-option"]):  # click's own usage errors link too
        done = subprocess.run([sys.executable, "-m", "soopervisor", *args], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode in (2, 3), done
        links = _more_links(done.stderr + done.stdout)
        assert links, f"soopervisor {' '.join(args)} printed no link:\n{done.stderr}"
        printed += links
    for link in printed:
        url = urlsplit(link)
        assert f"{url.scheme}://{url.netloc}{url.path}" == f"{troubleshooting.DOCS_URL}/how-to/troubleshooting.html"
        assert url.fragment in found, link


def test_docs_url_can_point_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOOPERVISOR_DOCS_URL", "file:///srv/docs/html/")
    assert errors.EngineUnavailable("x").docs == "file:///srv/docs/html/how-to/troubleshooting.html#docker-unavailable"
    with pytest.raises(KeyError):
        troubleshooting.topic_url("no-such-topic")


# -- the link checker itself ------------------------------------------------------------------------


def test_the_link_checker_finds_missing_pages_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "how-to").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="how-to/a.html#there">ok</a><a href="how-to/a.html#gone">x</a>'
        '<a href="missing.html">x</a><a href="https://example.com/#x">ext</a><a href="#top">self</a>'
        '<a href="/soopervisor/api/x">root</a><a id="top"></a>')
    (tmp_path / "how-to" / "a.html").write_text('<h2 id="there">t</h2><a href="../index.html#nope">x</a>')
    broken = soopervisor_docs.broken_links(tmp_path)
    assert broken == [
        "how-to/a.html: ../index.html#nope (no anchor 'nope' in index.html)",
        "index.html: how-to/a.html#gone (no anchor 'gone' in how-to/a.html)",
        "index.html: missing.html (no such page)",
    ]


@pytest.mark.parametrize("line", [
    "{option}`soopervisor run --no-such-option`",  # an option renamed in the code, not in the page
    "[gone](../how-to/secrets.md#no-such-heading)",  # a heading renamed
    "{ref}`no-such-topic`",
])
def test_a_stale_reference_fails_the_strict_build(tmp_path: Path, line: str) -> None:
    """What CI relies on: the real site, with one stale reference added, does not build."""
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "_generated"))
    page = src / "tutorials" / "first-run.md"
    page.write_text(page.read_text(encoding="utf-8") + f"\n\nSee {line}.\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
                           "-D", "nb_execution_mode=off", str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode != 0
    assert "first-run" in done.stderr and "no-such" in done.stderr


def test_every_page_the_code_links_to_exists(site: Path) -> None:
    pages = set()
    for path in [*(REPO / "soopervisor").rglob("*.py"), *(REPO / "jupyter_ext").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "page_url":
                (arg,) = node.args  # a string, or a module constant holding one
                pages.add(arg.value if isinstance(arg, ast.Constant) else constants[arg.id])
    assert {"how-to/google-drive", "how-to/onedrive"} <= pages
    for page in pages:
        assert (site / f"{page}.html").is_file(), f"page_url({page!r}) names no page of the site"


def test_the_screenshots_are_the_browser_tests(site: Path) -> None:
    """Every screenshot a page shows is one the browser tests take (docs/_static/screenshots/, not by hand)."""
    browser_tests = ("test_lab_conventions.py", *sorted(p.name for p in (REPO / "tests").glob("test_*_browser.py")))
    taken = {name for test in browser_tests
             for name in re.findall(r'screenshot\(page, "([^"]+\.png)"', (REPO / "tests" / test).read_text())}
    shown = set()
    for page in DOCS.rglob("*.md"):
        shown |= set(re.findall(r"_static/screenshots/([\w.-]+\.png)", page.read_text(encoding="utf-8")))
    assert shown and shown <= taken, f"not taken by the browser tests {browser_tests}: {shown - taken}"
    for name in shown:
        assert (site / "_images" / name).is_file() or (site / "_static" / "screenshots" / name).is_file()


def test_every_server_route_is_in_the_server_api_reference(site: Path) -> None:
    spec = yaml.safe_load((REPO / "soopervisor" / "server" / "openapi.yaml").read_text(encoding="utf-8"))
    found = ids(site / "reference" / "server-api.html")
    routes = [(m, p) for p, item in spec["paths"].items() for m in item if m in ("get", "post", "put", "delete")]
    assert {"/repositories", "/queue", "/healthz", "/readyz", "/metrics"} <= {p for _, p in routes}
    for method, path in routes:
        anchor = "server-" + soopervisor_docs.route_anchor(method, path)
        assert anchor in found, f"{method.upper()} {path} is not in the server API reference"
    for name in spec["components"]["schemas"]:
        assert f"server-schema-{name.lower()}" in found

"""server.yaml: what ``soopervisor serve`` polls and how it runs it.

:func:`load` reads and validates the file and reports every problem at once
(where, what, hint), so one edit fixes them all; :func:`check` asks the remotes
(``git ls-remote``), the deploy keys and the secrets whether they work. Secrets
are references (an environment variable or a file), never values: the values are
read at run time by :func:`resolve_secrets` and never held by the config.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
import re
import signal
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml

from soopervisor import config as soopervisor_config
from soopervisor.engines import Engine
from soopervisor.errors import SoopervisorError, UsageError
from soopervisor.redact import CREDENTIALS

from . import db

MODES = ("sample", "full")
FIRST_SIGHT = ("head", "none")
#: the largest server.yaml read; a real one is a few KB even with hundreds of repositories
MAX_CONFIG_BYTES = 1024**2
#: a server.yaml nests ~4 levels; a document thousands deep would crash PyYAML's C loader
MAX_YAML_DEPTH = 50
#: the largest secret file read (a key, a token, a certificate bundle)
MAX_SECRET_BYTES = 1024**2
#: seconds one ``git ls-remote`` may take in :func:`check`
CHECK_TIMEOUT = 20.0

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# a repository's name names its mirror folder and its API route
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# git's scp-like syntax: [user@]host:path, a colon before any slash
_SCP = re.compile(r"^(?:[^@/:\s]+@)?[^@/:\s]+:(?!//)")
_GIT_SCHEMES = ("file", "https", "http", "ssh", "git")


@dataclass(frozen=True)
class SecretRef:
    """A secret by reference, never inline: the value is read at run time."""

    name: str  # the variable name the pipeline sees
    env: str | None = None  # read from the server's environment variable ...
    file: str | None = None  # ... or from this file (its content, trailing newline stripped)


@dataclass(frozen=True)
class GitHubNotify:
    """A commit status (and a pull-request comment) on GitHub or GitHub Enterprise Server."""

    repository: str  # owner/name on GitHub
    token: SecretRef  # by reference only: an environment variable or a file
    api_url: str = "https://api.github.com"  # GitHub Enterprise Server: https://HOST/api/v3


@dataclass(frozen=True, repr=False)
class WebhookNotify:
    """A POST of Slack-compatible JSON; the URL (a Slack one is a secret) inline or by reference."""

    url: str | None = None
    url_ref: SecretRef | None = None

    def __repr__(self) -> str:  # a Slack webhook URL is a credential: show its host only
        return f"WebhookNotify(url={_url_origin(self.url) if self.url else None!r}, url_ref={self.url_ref!r})"


@dataclass(frozen=True)
class Notify:
    """Where a job's end is told; None for a channel that is off."""

    github: GitHubNotify | None = None
    webhook: WebhookNotify | None = None


@dataclass(frozen=True, repr=False)
class Repository:
    url: str  # file://, https://, ssh://, git://, scp-like or a local path (made absolute)
    name: str
    branches: tuple[str, ...] = ("main",)
    projects: tuple[str, ...] = (".",)
    modes: tuple[tuple[str, str], ...] = (("*", "sample"),)
    secrets: tuple[SecretRef, ...] = ()
    deploy_key: str | None = None
    first_sight: str = "head"
    notify: Notify | None = None  # the repository's own settings merged over the top-level ones
    known_hosts: str | None = None  # an ssh known_hosts file pinning the remote's host key (see git_env)
    #: the secret a webhook call for this repository is signed with (GitHub) or carries (GitLab); None: no webhook
    webhook_secret: SecretRef | None = None

    def wants(self, branch: str) -> bool:
        """Whether a branch matches one of the ``branches`` globs."""
        return any(fnmatch.fnmatchcase(branch, glob) for glob in self.branches)

    def mode_for(self, branch: str) -> str | None:
        """The mode a wanted branch runs in: the first matching glob's, else ``sample``; None: not wanted."""
        if not self.wants(branch):
            return None
        for glob, mode in self.modes:
            if fnmatch.fnmatchcase(branch, glob):
                return mode
        return "sample"

    @property
    def shown_url(self) -> str:
        """The URL with any credentials in it replaced by ``***``: for logs, status and errors."""
        return redact_url(self.url)

    def __repr__(self) -> str:  # a token in an https URL must not reach a log through a repr
        return (f"Repository(url={self.shown_url!r}, name={self.name!r}, branches={self.branches!r}, "
                f"projects={self.projects!r}, modes={self.modes!r}, secrets={self.secrets!r}, "
                f"deploy_key={self.deploy_key!r}, known_hosts={self.known_hosts!r}, first_sight={self.first_sight!r}, "
                f"notify={self.notify!r}, webhook_secret={self.webhook_secret!r})")


@dataclass(frozen=True)
class ServerConfig:
    storage: str
    poll_interval: float = 60.0
    database: str = ""
    mirrors: str = ""
    image: str | None = None
    concurrency: int = 1
    per_repository: int = 1
    max_attempts: int = 3
    supersede: bool = False
    repositories: tuple[Repository, ...] = ()
    #: the top-level ``notify:``: every repository's default
    notify: Notify | None = None
    #: the file it was read from (None: the embedded default)
    source: str | None = None
    #: ``executors:`` as written: the names of the engines the queue runs on (empty: the default engine)
    executors: tuple[str, ...] = ()
    #: ``executors_file:``: the executors file those names come from (None: the user's, as for `soopervisor run`)
    executors_file: str | None = None
    #: the engines the queue runs on, in the configured order, checked when the file was read
    engines: tuple[Engine, ...] = ()

    def repository(self, name: str) -> Repository:
        """The repository called ``name``; KeyError when there is none."""
        for repo in self.repositories:
            if repo.name == name:
                return repo
        raise KeyError(name)


class ConfigProblem(NamedTuple):
    where: str  # e.g. "repositories[1].branches"
    what: str
    hint: str

    def format(self, line: int | None = None) -> str:
        at = f" (line {line})" if line else ""
        return f"  {self.where}{at}: {self.what}\n    hint: {self.hint}"


class InvalidConfig(UsageError):
    """server.yaml has problems; ``problems`` holds every one of them."""

    topic = "usage-error"

    def __init__(self, problems: list[ConfigProblem], source: str = "server.yaml",
                 lines: dict[str, int] | None = None, partial: ServerConfig | None = None) -> None:
        n = len(problems)
        shown = [p.format(_line_of(p.where, lines or {})) for p in problems]
        super().__init__("\n".join([f"{source} has {n} problem{'s' if n != 1 else ''}:", *shown]),
                         "fix them all, then run `soopervisor serve --check` again")
        self.problems = list(problems)
        self.source = source
        #: the settings and repositories without problems (None when the file could not be read):
        #: ``serve --check`` may still ask their remotes, to list every problem in one go
        self.partial = partial


def _line_of(where: str, lines: dict[str, int]) -> int | None:
    """The line of ``where`` in the file, or of the nearest enclosing entry (a missing key: its mapping's)."""
    while where:
        if where in lines:
            return lines[where]
        cut = max(where.rfind("."), where.rfind("["))
        where = where[:cut] if cut > 0 else ""
    return None


# -- reading ---------------------------------------------------------------------------
try:  # the C loader is several times faster; fall back when libyaml is missing
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


def load(path: str | os.PathLike[str] | None) -> ServerConfig:
    """The configuration in ``path`` (None: the embedded default); InvalidConfig listing every problem.

    Relative paths in the file (database, mirrors, storage, deploy keys, secret files,
    local repositories) are relative to the file's folder, so the server reads the same
    file the same way from any working directory.
    """
    if path is None:
        return _build({}, Path.cwd(), None, [])
    source = os.fspath(path)
    problems: list[ConfigProblem] = []
    lines: dict[str, int] = {}
    doc = _read(Path(source), source, problems, lines)
    if problems:
        raise InvalidConfig(problems, source)
    base = Path(source).expanduser().absolute().parent
    config = _build(doc, base, source, problems)
    if problems:
        raise InvalidConfig(problems, source, lines, config)
    return config


def _read(file: Path, source: str, problems: list[ConfigProblem], lines: dict[str, int]) -> dict:
    """The file's top mapping ({} when empty); a problem when it cannot be read, is too large or won't parse.

    ``lines`` gets the line of every entry ("repositories[1].branches": 7), for the problems' report.
    """
    hint = "server.yaml is a YAML mapping: storage, poll_interval, repositories, ..."
    try:
        with open(file.expanduser(), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(MAX_CONFIG_BYTES + 1) if size <= MAX_CONFIG_BYTES else b""
    except OSError as e:
        problems.append(ConfigProblem(source, f"cannot be read: {e.strerror or e}",
                                      "pass --config with the path of your server.yaml"))
        return {}
    if size > MAX_CONFIG_BYTES or len(data) > MAX_CONFIG_BYTES:
        problems.append(ConfigProblem(source, f"is too large (at most {MAX_CONFIG_BYTES // 1024**2} MiB)",
                                      "a server.yaml is a few KB; is this the right file?"))
        return {}
    try:
        _check_depth(data)
        loader = _Loader(data)
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except _TooDeep:
        problems.append(ConfigProblem(source, f"nests deeper than {MAX_YAML_DEPTH} levels", hint))
        return {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        reason = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problems.append(ConfigProblem(where, f"does not parse: {reason}{at}", hint))
        return {}
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        problems.append(ConfigProblem(source, f"is a {_kind(doc)}, not a mapping", hint))
        return {}
    _note_lines(node, "", lines)
    return doc


def _note_lines(node: yaml.Node, where: str, lines: dict[str, int]) -> None:
    """Record the line of each entry under ``node`` by the path problems name it with."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                at = f"{where}.{key.value}" if where else str(key.value)
                lines.setdefault(at, key.start_mark.line + 1)
                _note_lines(value, at, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            at = f"{where}[{i}]"
            lines.setdefault(at, item.start_mark.line + 1)
            _note_lines(item, at, lines)


class _TooDeep(Exception):
    pass


def _check_depth(data: bytes) -> None:
    """_TooDeep when the YAML nests deeper than MAX_YAML_DEPTH, found from parser events (cheap)."""
    loader = _Loader(data)
    depth = 0
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    raise _TooDeep
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    finally:
        loader.dispose()


# -- validating ------------------------------------------------------------------------
_TOP = ("storage", "poll_interval", "database", "database_password", "mirrors", "image", "concurrency",
        "per_repository", "max_attempts", "supersede", "notify", "repositories", "executors", "executors_file")
_REPO_KEYS = ("url", "name", "branches", "projects", "mode", "secrets", "deploy_key", "known_hosts", "first_sight",
              "notify", "webhook_secret")
#: (low, high) of the numbers
_RANGES: dict[str, tuple[float, float]] = {
    "poll_interval": (0.1, 86400), "concurrency": (1, 256), "per_repository": (1, 256),
    "max_attempts": (1, 100),
}
_RANGE_HINTS = {
    "poll_interval": "seconds between two polls of a repository; 60 is usual, 10 for a busy team",
    "concurrency": "how many runs at once on this server (default: the slots of its executors added up)",
    "per_repository": "how many runs of one repository at once; 1 keeps a repository's commits in order",
    "max_attempts": "how often a run cut short by an infrastructure failure is tried; 3 is usual",
}


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _unknown_keys(doc: dict, known: tuple[str, ...], prefix: str, problems: list[ConfigProblem]) -> None:
    for key in doc:
        if key in known:
            continue
        shown = str(key)
        close = difflib.get_close_matches(shown, known, n=1, cutoff=0.6) if isinstance(key, str) else []
        hint = f"did you mean '{close[0]}'? " if close else ""
        problems.append(ConfigProblem(f"{prefix}{shown}", f"unknown key '{shown}'",
                                      f"{hint}the keys are: {', '.join(known)}"))


def _number(doc: dict, key: str, default: float, integer: bool, problems: list[ConfigProblem]) -> Any:
    value = doc.get(key, default)
    if value is None:
        return default
    low, high = _RANGES[key]
    wanted = "a whole number" if integer else "a number"
    hint = _RANGE_HINTS[key]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        problems.append(ConfigProblem(key, f"must be {wanted}, not {_kind(value)} {value!r}", hint))
        return default
    if not low <= value <= high:
        problems.append(ConfigProblem(key, f"{value!r} is out of range ({low:g} to {high:g})", hint))
        return default
    return float(value) if not integer else value


def _text(doc: dict, key: str, where: str, problems: list[ConfigProblem], hint: str) -> str | None:
    """``doc[key]`` when it is non-empty text; None when absent or null; a problem otherwise."""
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        what = "is empty" if isinstance(value, str) else f"must be text, not {_kind(value)}"
        problems.append(ConfigProblem(where, what, hint))
        return None
    return value


def _path(value: str, base: Path) -> str:
    return str(base / Path(value).expanduser())


def _build(doc: dict, base: Path, source: str | None, problems: list[ConfigProblem]) -> ServerConfig:
    _unknown_keys(doc, _TOP, "", problems)
    storage = _text(doc, "storage", "storage", problems,
                    "a storage URL: a folder, s3://bucket/prefix, gdrive://...")
    if storage is not None:
        if not _URL_SCHEME.match(storage):
            storage = _path(storage, base)
        _storage_problem(storage, problems)
    else:
        storage = soopervisor_config.default_storage_url()
    database = _text(doc, "database", "database", problems,
                     "the path of the server's SQLite file, or postgresql://user@host:5432/dbname")
    database = _database_url(database, doc.get("database_password"), base, problems)
    mirrors = _text(doc, "mirrors", "mirrors", problems, "a folder for the bare mirrors of the repositories")
    image = _text(doc, "image", "image", problems, "a Docker image, e.g. python:3.11-slim")
    supersede = doc.get("supersede", False)
    if supersede is None:
        supersede = False
    if not isinstance(supersede, bool):
        problems.append(ConfigProblem("supersede", f"must be true or false, not {_kind(supersede)}",
                                      "true: a newer commit on a branch drops its queued older ones"))
        supersede = False
    numbers = {key: _number(doc, key, default, key != "poll_interval", problems)
               for key, default in (("poll_interval", 60.0), ("concurrency", 1), ("per_repository", 1),
                                    ("max_attempts", 3))}
    names, executors_file, engines = _executors(doc, base, problems)
    if doc.get("concurrency") is None and engines:
        # unset: every slot of every engine may take a job (one server); set: the bound across the queue
        numbers["concurrency"] = min(sum(e.slots for e in engines), int(_RANGES["concurrency"][1]))
    notify = _notify_settings(doc.get("notify"), "notify", base, problems)
    repositories = _repositories(doc.get("repositories"), base, problems, notify)
    data = None
    if database is None or mirrors is None:
        data = soopervisor_config.data_dir()
    return ServerConfig(
        storage=storage,
        database=(database if db.is_url(database) else _path(database, base)) if database
        else str(data / "server.sqlite"),
        mirrors=_path(mirrors, base) if mirrors else str(data / "mirrors"),
        image=image,
        supersede=supersede,
        repositories=repositories,
        notify=_notify_default(notify),
        source=source,
        executors=names,
        executors_file=executors_file,
        engines=engines,
        **numbers,
    )


_EXECUTORS_HINT = ("executors: [NAME, ...] names engines of the executors file (`soopervisor executors` lists "
                   "them); each gives the server its `slots`")


def _executors(doc: dict, base: Path, problems: list[ConfigProblem]) -> tuple[tuple[str, ...], str | None,
                                                                               tuple[Engine, ...]]:
    """``executors:`` and ``executors_file:``: the names as written, the file, and the engines they name.

    Without ``executors:`` the queue runs on the engine `soopervisor run` would use (SOOPERVISOR_EXECUTOR,
    else the file's default, else the local one). Only plain data is read here: no engine is asked.
    """
    from soopervisor import engines as engines_mod

    file_value = _text(doc, "executors_file", "executors_file", problems,
                       "the path of an executors file (executors.yaml, see the remote engines how-to)")
    file = Path(_path(file_value, base)) if file_value else None
    if file is not None and not file.is_file():
        problems.append(ConfigProblem("executors_file", f"no executors file at {file}",
                                      "point it at an executors.yaml (relative paths are relative to server.yaml), "
                                      "or remove it to use the user's executors file"))
        return (), str(file), ()
    raw = doc.get("executors")
    names: list[str] = []
    if raw is not None:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            problems.append(ConfigProblem("executors", f"must be a list of executor names, not {_kind(raw)}"
                                          if not isinstance(raw, list) else "is empty", _EXECUTORS_HINT))
            return (), _str_or_none(file), ()
        for i, name in enumerate(raw):
            if not isinstance(name, str) or not name.strip():
                problems.append(ConfigProblem(f"executors[{i}]", f"must be an executor's name, not {_kind(name)}",
                                              _EXECUTORS_HINT))
            elif name in names:
                problems.append(ConfigProblem(f"executors[{i}]", f"names {name!r} twice",
                                              "list each engine once: its `slots` say how many runs it takes"))
            else:
                names.append(name)
        if len(names) != len(raw):
            return tuple(names), _str_or_none(file), ()
    try:
        found = engines_mod.load(file)
    except UsageError as e:
        problems.append(ConfigProblem("executors_file" if file is not None else "executors",
                                      e.message, e.hint or _EXECUTORS_HINT))
        return tuple(names), _str_or_none(file), ()
    picked: list[Engine] = []
    for i, name in enumerate(names or [None]):
        where = f"executors[{i}]" if name is not None else "executors"
        try:
            picked.append(found.pick(name))
        except UsageError as e:
            what = e.message if name is not None else f"(not set: the default engine) {e.message}"
            if name is not None and name not in found.engines:
                what = (f"no executor named {name!r} in {found.path} "
                        f"(the configured ones are {', '.join(sorted(found.engines))})")
            problems.append(ConfigProblem(where, what, e.hint or _EXECUTORS_HINT))
    if len(picked) != len(names or [None]):
        return tuple(names), _str_or_none(file), ()
    return tuple(names), _str_or_none(file), tuple(picked)


def _str_or_none(path: Path | None) -> str | None:
    return str(path) if path is not None else None


_DB_PASSWORD_HINT = ("the password by reference: PGPASSWORD or PGPASSFILE in the server's environment, "
                     "or database_password: {env: PGPASSWORD_SOOPERVISOR} (or {file: /run/secrets/db})")


def _database_url(database: str | None, password: Any, base: Path, problems: list[ConfigProblem]) -> str | None:
    """``database`` as the server uses it: a path as written; a PostgreSQL URL checked (never a password
    in it), with ``database_password``'s reference carried in it as a parameter db.py reads and removes."""
    if database is None or not db.is_url(database):
        if password is not None:
            problems.append(ConfigProblem("database_password", "is only for a postgresql:// database",
                                          "remove it: a SQLite file has no password"))
        return database
    if db.inline_password(database):
        # the URL is not quoted back: it holds the password
        problems.append(ConfigProblem("database", "holds a password: a credential is never written in server.yaml",
                                      f"write postgresql://user@host:5432/dbname; {_DB_PASSWORD_HINT}"))
        return None
    try:
        parts = urllib.parse.urlsplit(database)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        problems.append(ConfigProblem("database", f"is not a valid PostgreSQL URL ({e})",
                                      "postgresql://user@host:5432/dbname"))
        return None
    if not parts.path.strip("/"):
        problems.append(ConfigProblem("database", "names no database (postgresql://user@host:5432/dbname)",
                                      "add the database's name after the host"))
        return None
    if password is None:
        return database
    ref = _ref(password, "database_password", base, problems, _DB_PASSWORD_HINT)
    if ref is None:
        return None
    key, value = (db.PASSWORD_ENV, ref.env) if ref.env else (db.PASSWORD_FILE, ref.file)
    query = urllib.parse.urlencode([*urllib.parse.parse_qsl(parts.query), (key, value)])
    return urllib.parse.urlunsplit(parts._replace(query=query))


def check_database(database: str) -> list[ConfigProblem]:
    """A problem when a PostgreSQL database cannot be reached or used (SQLite: the server makes its file)."""
    if not db.is_url(database):
        return []
    from .queue import QueueUnavailable

    found = db.open_database(database)

    def unavailable(e: Exception) -> QueueUnavailable:
        return QueueUnavailable(f"cannot reach the server's database {found.name}: {db.reason(e)}",
                                db.postgres_hint(e))

    try:
        with found.transaction(unavailable, write=False) as conn:  # connects and asks; changes nothing
            conn.execute("SELECT 1")
    except SoopervisorError as e:
        return [ConfigProblem("database", e.message, e.hint or "")]
    return []


def _storage_problem(url: str, problems: list[ConfigProblem]) -> None:
    """A problem when soopervisor.storage cannot parse the URL; parsing only, nothing signs in."""
    from soopervisor import storage

    m = _URL_SCHEME.match(url)
    if m is None:
        return
    scheme = m.group(1).lower()
    try:
        if scheme == "file":
            storage.open_storage(url)  # a LocalStorage: no I/O until used
        elif scheme in storage._CLOUD:
            storage.cloud_module(scheme).parse_url(url)
        elif scheme not in storage._BACKENDS:
            storage.open_storage(url)  # raises: unknown scheme, with the supported ones
    except UsageError as e:
        problems.append(ConfigProblem("storage", e.message, e.hint or "use a folder or a storage URL"))


def _repositories(value: Any, base: Path, problems: list[ConfigProblem],
                  notify: dict | None = None) -> tuple[Repository, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(ConfigProblem(
            "repositories", f"must be a list, not {_kind(value)}",
            "a list of mappings, each with a url: - url: https://git.example.com/sales.git"))
        return ()
    repos: list[Repository] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        name, repo = _repository(item, f"repositories[{i}]", base, problems, notify)
        if name is not None:  # also for a repository with other problems, so all are listed at once
            first = seen.setdefault(name.lower(), i)
            if first != i:
                problems.append(ConfigProblem(
                    f"repositories[{i}].name", f"the name '{name}' is taken by repositories[{first}]",
                    "each repository needs its own name (it names its mirror and its API route): set name:"))
        if repo is not None:
            repos.append(repo)
    return tuple(repos)


def _repository(item: Any, at: str, base: Path, problems: list[ConfigProblem],
                notify: dict | None = None) -> tuple[str | None, Repository | None]:
    """The repository's name (when one is known) and the repository (None when it has problems)."""
    if isinstance(item, str):  # the short form: just the URL
        item = {"url": item}
    if not isinstance(item, dict):
        problems.append(ConfigProblem(at, f"must be a mapping with a url, not {_kind(item)}",
                                      "- url: https://git.example.com/sales.git"))
        return None, None
    n = len(problems)
    _unknown_keys(item, _REPO_KEYS, f"{at}.", problems)
    url = _url(item, at, base, problems)
    name = _name(item, url, at, problems)
    branches = _globs(item, "branches", at, ("main",), problems)
    projects = _projects(item, at, problems)
    modes = _modes(item.get("mode"), f"{at}.mode", problems)
    secrets = _secrets(item.get("secrets"), f"{at}.secrets", base, problems)
    deploy_key = _text(item, "deploy_key", f"{at}.deploy_key", problems, "the path of an ssh private key")
    if deploy_key is not None:
        deploy_key = _path(deploy_key, base)
        if url is not None and not _is_ssh(url):
            problems.append(ConfigProblem(
                f"{at}.deploy_key",
                f"a deploy key works over ssh only, and {redact_url(url)} is not an ssh URL",
                "use ssh://git@host/org/repo.git or git@host:org/repo.git, or remove deploy_key"))
    known_hosts = _text(item, "known_hosts", f"{at}.known_hosts", problems,
                        "the path of an ssh known_hosts file holding the remote's host key")
    if known_hosts is not None:
        known_hosts = _path(known_hosts, base)
        if url is not None and not _is_ssh(url):
            problems.append(ConfigProblem(
                f"{at}.known_hosts", f"known_hosts works over ssh only, and {redact_url(url)} is not an ssh URL",
                "use ssh://git@host/org/repo.git or git@host:org/repo.git, or remove known_hosts"))
    first_sight = item.get("first_sight", "head")
    if first_sight not in FIRST_SIGHT:
        problems.append(ConfigProblem(f"{at}.first_sight", f"must be head or none, not {first_sight!r}",
                                      "head: a branch seen first builds its head; none: it is only recorded"))
    own = _notify_settings(item.get("notify"), f"{at}.notify", base, problems)
    settings = _notify_for(url, _merge_notify(notify, own, "notify" in item), f"{at}.notify", problems)
    webhook_secret = None
    if item.get("webhook_secret") is not None:
        webhook_secret = _ref(item["webhook_secret"], f"{at}.webhook_secret", base, problems, _WEBHOOK_SECRET_HINT)
    if len(problems) > n or url is None or name is None:
        return name, None
    return name, Repository(url=url, name=name, branches=branches, projects=projects, modes=modes,
                            secrets=secrets, deploy_key=deploy_key, first_sight=first_sight, notify=settings,
                            known_hosts=known_hosts, webhook_secret=webhook_secret)


def _is_ssh(url: str) -> bool:
    m = _URL_SCHEME.match(url)
    return m.group(1).lower() == "ssh" if m else bool(_SCP.match(url))


def _url(item: dict, at: str, base: Path, problems: list[ConfigProblem]) -> str | None:
    where = f"{at}.url"
    hint = ("a git URL: https://host/org/repo.git, ssh://git@host/org/repo.git, git@host:org/repo.git, "
            "git://host/repo.git, file:///srv/git/repo.git or a local path")
    if "url" not in item or item["url"] is None:
        problems.append(ConfigProblem(where, "is missing: every repository needs a url", hint))
        return None
    url = item["url"]
    if not isinstance(url, str) or not url.strip():
        what = "is empty" if isinstance(url, str) else f"must be text, not {_kind(url)}"
        problems.append(ConfigProblem(where, what, hint))
        return None
    url = url.strip()
    # "-..." would be read by git as an option; "ext::cmd" runs a command; both never name a remote
    if url.startswith("-") or "::" in url.split("/", 1)[0] or any(c in url for c in "\0\n\r"):
        problems.append(ConfigProblem(where, f"{redact_url(url)!r} is not a repository URL", hint))
        return None
    m = _URL_SCHEME.match(url)
    if m:
        scheme = m.group(1).lower()
        if scheme not in _GIT_SCHEMES:
            problems.append(ConfigProblem(where, f"the scheme '{scheme}://' is not supported", hint))
            return None
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as e:
            problems.append(ConfigProblem(where, f"{redact_url(url)!r} is not a valid URL ({e})", hint))
            return None
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                problems.append(ConfigProblem(where, f"the file URL names another host ({parts.netloc})",
                                              "use file:///absolute/path/repo.git"))
                return None
        elif not parts.hostname:
            problems.append(ConfigProblem(where, f"{redact_url(url)!r} names no host", hint))
            return None
        for secret in _url_secrets(url):  # so no error, log or answer of this process shows them
            CREDENTIALS.add(secret)
        return url
    head = url.split("/", 1)[0]
    if "@" in head and ":" in head.split("@", 1)[0]:  # user:password@host:path; never quote a password
        problems.append(ConfigProblem(where, "is neither a URL nor a path (a password in an scp-like URL?)", hint))
        return None
    if _SCP.match(url):
        return url
    return _path(url, base)


def _name(item: dict, url: str | None, at: str, problems: list[ConfigProblem]) -> str | None:
    hint = "a name of letters, digits, '.', '-' and '_' (it names the mirror folder and the API route)"
    if item.get("name") is not None:
        name = item["name"]
        if not isinstance(name, str) or not _REPO_NAME.match(name):
            shown = repr(name) if isinstance(name, str) else _kind(name)
            problems.append(ConfigProblem(f"{at}.name", f"{shown} is not a usable name", hint))
            return None
        return name
    if url is None:
        return None
    name = derive_name(url)
    if not _REPO_NAME.match(name):
        problems.append(ConfigProblem(f"{at}.name", f"no usable name follows from the URL ({name!r})",
                                      f"set name: with {hint}"))
        return None
    return name


def derive_name(url: str) -> str:
    """A repository's default name: its last path segment without ``.git`` ("sales" for .../sales.git)."""
    path = urlsplit(url).path if _URL_SCHEME.match(url) else url.split(":", 1)[1] if _SCP.match(url) else url
    path = path.rstrip("/")
    path = path.removesuffix("/.git")
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return last.removesuffix(".git")


def _text_list(item: dict, key: str, where: str, problems: list[ConfigProblem],
               hint: str) -> list[tuple[str, str]] | None:
    """``item[key]`` as ``(where, text)`` pairs (a text alone: one pair); None when absent, [] on problems."""
    value = item.get(key)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list):
        problems.append(ConfigProblem(where, f"must be a list, not {_kind(value)}", hint))
        return []
    if not values:
        problems.append(ConfigProblem(where, "is empty", hint))
        return []
    out = []
    for j, v in enumerate(values):
        at = where if isinstance(value, str) else f"{where}[{j}]"
        if not isinstance(v, str):
            problems.append(ConfigProblem(at, f"must be text, not {_kind(v)} {v!r}",
                                          f"quote it: '{v}'; {hint}"))
        elif not v.strip():
            problems.append(ConfigProblem(at, "is empty", hint))
        else:
            out.append((at, v.strip()))
    return out


def _globs(item: dict, key: str, at: str, default: tuple[str, ...], problems: list[ConfigProblem]) -> tuple:
    hint = 'branch names or globs, e.g. branches: [main, "release/*"]'
    globs = _text_list(item, key, f"{at}.{key}", problems, hint)
    if globs is None:
        return default
    for where, g in globs:
        if g.startswith("refs/"):
            problems.append(ConfigProblem(where, f"'{g}' is a ref, not a branch name",
                                          f"write the branch name: '{g.removeprefix('refs/heads/')}'"))
    return tuple(dict.fromkeys(g for _, g in globs))


def _projects(item: dict, at: str, problems: list[ConfigProblem]) -> tuple[str, ...]:
    hint = "folders inside the repository, relative to its top: projects: [., ml/forecast]"
    where = f"{at}.projects"
    values = _text_list(item, "projects", where, problems, hint)
    if values is None:
        return (".",)
    out = []
    for shown, p in values:
        parts = [s for s in p.replace("\\", "/").split("/") if s not in ("", ".")]
        if p.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", p) or ".." in parts:
            problems.append(ConfigProblem(shown, f"'{p}' is outside the repository", hint))
            continue
        out.append("/".join(parts) or ".")
    return tuple(dict.fromkeys(out))


def _modes(value: Any, where: str, problems: list[ConfigProblem]) -> tuple[tuple[str, str], ...]:
    hint = 'sample or full, or per branch: mode: {main: full, "*": sample} (the first matching glob wins)'
    if value is None:
        return (("*", "sample"),)
    if isinstance(value, str):
        if value not in MODES:
            problems.append(ConfigProblem(where, f"must be sample or full, not {value!r}", hint))
        return (("*", value),)
    if not isinstance(value, dict) or not value:
        problems.append(ConfigProblem(where, f"must be sample, full or a mapping, not {_kind(value)}", hint))
        return ()
    modes = []
    for glob, mode in value.items():
        if not isinstance(glob, str) or not glob.strip():
            problems.append(ConfigProblem(where, f"the branch glob {glob!r} must be non-empty text", hint))
        elif mode not in MODES:
            problems.append(ConfigProblem(f"{where}.{glob}", f"must be sample or full, not {mode!r}", hint))
        else:
            modes.append((glob.strip(), mode))
    return tuple(modes)


def _secrets(value: Any, where: str, base: Path, problems: list[ConfigProblem]) -> tuple[SecretRef, ...]:
    hint = ("name an environment variable of the server (secrets: [DB_PASSWORD]) or a file "
            "({name: DB_PASSWORD, file: /run/secrets/db}); a value never goes in server.yaml")
    inline = "holds a value: a secret is never written in server.yaml, only where to read it"
    not_name = "is not the name of an environment variable (a secret's value is never written in server.yaml)"
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(ConfigProblem(where, f"must be a list, not {_kind(value)}", hint))
        return ()
    refs: list[SecretRef] = []
    names: set[str] = set()
    for j, item in enumerate(value):
        at = f"{where}[{j}]"
        # the messages below never quote what was written: it may be the secret itself
        if isinstance(item, str):
            if not _ENV_NAME.match(item):
                problems.append(ConfigProblem(at, not_name, hint))
                continue
            ref = SecretRef(name=item, env=item)
        elif isinstance(item, dict):
            if "value" in item or (len(item) == 1 and "name" not in item):
                problems.append(ConfigProblem(at, inline, hint))
                continue
            unknown = [k for k in item if k not in ("name", "env", "file")]
            if unknown:
                keys = f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(str, unknown))}"
                problems.append(ConfigProblem(at, keys, "a secret has name, and env or file"))
                continue
            name, env, file = item.get("name"), item.get("env"), item.get("file")
            if not isinstance(name, str) or not _ENV_NAME.match(name):
                problems.append(ConfigProblem(f"{at}.name", "must be a variable name (letters, digits, _)",
                                              hint))
                continue
            if env is not None and file is not None:
                problems.append(ConfigProblem(at, "has both env and file", "a secret comes from one of them"))
                continue
            if env is not None and (not isinstance(env, str) or not _ENV_NAME.match(env)):
                problems.append(ConfigProblem(f"{at}.env", not_name, hint))
                continue
            if file is not None and (not isinstance(file, str) or not file.strip()):
                problems.append(ConfigProblem(f"{at}.file", "must be the path of a file", hint))
                continue
            if file:
                ref = SecretRef(name=name, file=_path(file, base))
            else:
                ref = SecretRef(name=name, env=env or name)
        else:
            problems.append(ConfigProblem(at, f"must be a variable name or a mapping, not {_kind(item)}",
                                          hint))
            continue
        if ref.name in names:
            problems.append(ConfigProblem(at, f"the secret {ref.name} is listed twice",
                                          "list each secret once"))
            continue
        names.add(ref.name)
        refs.append(ref)
    return tuple(refs)


# -- notifications ---------------------------------------------------------------------
_NOTIFY_KEYS = ("github", "webhook")
_GITHUB_KEYS = ("repository", "token", "api_url")
_WEBHOOK_KEYS = ("url",)
_NOTIFY_HINT = ("notify: {github: {repository: owner/name, token: {env: GITHUB_TOKEN}}, "
                "webhook: {url: https://hooks.slack.com/services/...}}; false turns it off")
_WEBHOOK_SECRET_HINT = ("the secret the Git host signs webhook calls with, by reference only: "
                        "webhook_secret: {env: SALES_WEBHOOK_SECRET} or {file: /run/secrets/sales-webhook}")
_TOKEN_HINT = ("a token by reference only: token: {env: GITHUB_TOKEN} (the server's environment variable) "
               "or token: {file: /run/secrets/github-token}")
_OWNER_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def _url_origin(url: str) -> str:
    """scheme://host[:port] of a URL: what a log may show of a webhook URL (its path may be the secret)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return "***"


def _http_url(value: Any, where: str, problems: list[ConfigProblem], hint: str,
              secret: bool = False) -> str | None:
    """An http(s) URL with a host; ``secret``: problems never quote it (a Slack URL is a credential)."""
    if not isinstance(value, str) or not value.strip():
        problems.append(ConfigProblem(where, "is empty" if isinstance(value, str) else
                                      f"must be an http(s) URL, not {_kind(value)}", hint))
        return None
    url = value.strip()
    shown = _url_origin(url) + "/..." if secret else redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        problems.append(ConfigProblem(where, f"{shown!r} is not a valid URL", hint))
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        problems.append(ConfigProblem(where, f"{shown!r} is not an http(s) URL with a host", hint))
        return None
    for s in _url_secrets(url):
        CREDENTIALS.add(s)
    return url


def _ref(value: Any, where: str, base: Path, problems: list[ConfigProblem], hint: str) -> SecretRef | None:
    """A credential by reference ({env: NAME} or {file: PATH}); a value written inline is refused, never quoted."""
    if isinstance(value, str):
        problems.append(ConfigProblem(where, "holds a value: a credential is never written in server.yaml, "
                                      "only where to read it", hint))
        return None
    if not isinstance(value, dict) or not value:
        problems.append(ConfigProblem(where, f"must be a mapping with env or file, not {_kind(value)}", hint))
        return None
    unknown = [str(k) for k in value if k not in ("env", "file")]
    if unknown:
        problems.append(ConfigProblem(where, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}",
                                      hint))
        return None
    env, file = value.get("env"), value.get("file")
    if (env is None) == (file is None):
        problems.append(ConfigProblem(where, "needs one of env or file", hint))
        return None
    if env is not None:
        if not isinstance(env, str) or not _ENV_NAME.match(env):
            problems.append(ConfigProblem(f"{where}.env", "is not the name of an environment variable", hint))
            return None
        return SecretRef(name=env, env=env)
    if not isinstance(file, str) or not file.strip():
        problems.append(ConfigProblem(f"{where}.file", "must be the path of a file", hint))
        return None
    return SecretRef(name=where.rsplit(".", 1)[-1], file=_path(file, base))


def _notify_settings(value: Any, where: str, base: Path, problems: list[ConfigProblem]) -> dict | None:
    """``notify:`` as written, checked: {"off": True}, or {channel: False | fields}; None when absent."""
    if value is None:
        return None
    if value is False:
        return {"off": True}
    if not isinstance(value, dict):
        problems.append(ConfigProblem(where, f"must be a mapping or false, not {_kind(value)}", _NOTIFY_HINT))
        return None
    _unknown_keys(value, _NOTIFY_KEYS, f"{where}.", problems)
    out: dict[str, Any] = {}
    if "github" in value:
        out["github"] = _github_fields(value["github"], f"{where}.github", base, problems)
    if "webhook" in value:
        out["webhook"] = _webhook(value["webhook"], f"{where}.webhook", base, problems)
    return out


def _github_fields(value: Any, where: str, base: Path, problems: list[ConfigProblem]) -> dict | bool:
    if value is None or value is False:
        return False
    if not isinstance(value, dict):
        problems.append(ConfigProblem(where, f"must be a mapping or false, not {_kind(value)}", _NOTIFY_HINT))
        return {"bad": True}
    n = len(problems)
    _unknown_keys(value, _GITHUB_KEYS, f"{where}.", problems)
    fields: dict[str, Any] = {}
    if value.get("repository") is not None:
        repo = value["repository"]
        if not isinstance(repo, str) or not _OWNER_NAME.match(repo.strip()):
            problems.append(ConfigProblem(f"{where}.repository", "must be owner/name",
                                          "the repository on GitHub: repository: acme/sales"))
        else:
            fields["repository"] = repo.strip()
    if value.get("token") is not None:
        token = _ref(value["token"], f"{where}.token", base, problems, _TOKEN_HINT)
        if token is not None:
            fields["token"] = token
    if value.get("api_url") is not None:
        api = _http_url(value["api_url"], f"{where}.api_url", problems,
                        "https://api.github.com, or https://HOST/api/v3 on GitHub Enterprise Server")
        if api is not None:
            fields["api_url"] = api.rstrip("/")
    if len(problems) > n:
        fields["bad"] = True
    return fields


def _webhook(value: Any, where: str, base: Path, problems: list[ConfigProblem]) -> WebhookNotify | bool | None:
    hint = ("webhook: {url: https://hooks.slack.com/services/...}, or the URL by reference: "
            "{url: {env: SLACK_WEBHOOK_URL}}")
    if value is None or value is False:
        return False
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, dict):
        problems.append(ConfigProblem(where, f"must be a mapping or false, not {_kind(value)}", hint))
        return None
    _unknown_keys(value, _WEBHOOK_KEYS, f"{where}.", problems)
    url = value.get("url")
    if url is None:
        problems.append(ConfigProblem(f"{where}.url", "is missing", hint))
        return None
    if isinstance(url, dict):
        ref = _ref(url, f"{where}.url", base, problems, hint)
        return WebhookNotify(url_ref=ref) if ref else None
    checked = _http_url(url, f"{where}.url", problems, hint, secret=True)
    if checked is None:
        return None
    CREDENTIALS.add(checked)  # a Slack webhook URL is a credential: no log or error of this process shows it
    return WebhookNotify(url=checked)


def _merge_notify(top: dict | None, own: dict | None, present: bool) -> dict | None:
    """A repository's settings: its own channels over the top-level ones (GitHub: field by field)."""
    if not present:  # the top-level settings as they are
        return {**top, "inherited": True} if top else top
    if own is None or own.get("off"):
        return None
    top = top if top and not top.get("off") else {}
    merged: dict[str, Any] = {}
    for channel in _NOTIFY_KEYS:
        mine, default = own.get(channel, None), top.get(channel)
        if channel not in own:
            merged[channel] = default
        elif mine is False or channel == "webhook":
            merged[channel] = mine
        else:
            merged[channel] = {**(default or {}), **mine}
    # GitHub settings taken whole from the top apply where the URL names a repository on GitHub
    merged["inherited"] = "github" not in own
    return merged


def _notify_for(url: str | None, merged: dict | None, where: str,
                problems: list[ConfigProblem]) -> Notify | None:
    """The repository's complete settings (the GitHub repository derived from its URL when not set)."""
    if not merged or merged.get("off"):
        return None
    github = None
    fields = merged.get("github")
    if isinstance(fields, dict) and not fields.get("bad"):
        repository = fields.get("repository") or (github_repository(url) if url else None)
        if repository is None and merged.get("inherited"):
            fields = {}  # the top-level default fits repositories on GitHub only; this URL names none
        elif repository is None:
            problems.append(ConfigProblem(f"{where}.github.repository", "is missing and the URL names no owner/name",
                                          "set repository: owner/name, the repository on GitHub"))
        if fields and fields.get("token") is None:
            problems.append(ConfigProblem(f"{where}.github.token", "is missing", _TOKEN_HINT))
        if repository is not None and fields.get("token") is not None:
            github = GitHubNotify(repository=repository, token=fields["token"],
                                  api_url=fields.get("api_url", "https://api.github.com"))
    webhook = merged.get("webhook")
    webhook = webhook if isinstance(webhook, WebhookNotify) else None
    return Notify(github=github, webhook=webhook) if github or webhook else None


def _notify_default(top: dict | None) -> Notify | None:
    """The top-level settings as a Notify (``repository`` "" when each repository's URL names it)."""
    if not top or top.get("off"):
        return None
    fields = top.get("github")
    github = None
    if isinstance(fields, dict) and fields.get("token") is not None and not fields.get("bad"):
        github = GitHubNotify(repository=fields.get("repository", ""), token=fields["token"],
                              api_url=fields.get("api_url", "https://api.github.com"))
    webhook = top.get("webhook") if isinstance(top.get("webhook"), WebhookNotify) else None
    return Notify(github=github, webhook=webhook) if github or webhook else None


def github_repository(url: str) -> str | None:
    """owner/name from a git URL with a host (https://github.com/acme/sales.git, git@github.com:acme/sales)."""
    if _URL_SCHEME.match(url):
        parts = urlsplit(url)
        if not parts.hostname or parts.scheme.lower() == "file":
            return None
        path = parts.path
    elif _SCP.match(url):
        path = url.split(":", 1)[1]
    else:
        return None
    segments = [s for s in path.strip("/").removesuffix(".git").split("/") if s]
    if len(segments) < 2:
        return None
    found = f"{segments[-2]}/{segments[-1]}"
    return found if _OWNER_NAME.match(found) else None


def read_secret(ref: SecretRef) -> bytes:
    """A credential's value, read now (an environment variable or a file); UsageError when it cannot be."""
    return _secret_value(ref)


# -- credentials in URLs ---------------------------------------------------------------
def redact_url(text: str, url: str | None = None) -> str:
    """``text`` with the credentials of URLs in it (``https://user:token@host``) as ``***@``.

    ``url`` (optional) is the URL ``text`` is about: its password and, for http(s), its user
    (a token is often written as the user) are masked wherever they appear, also alone.
    """
    text = re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@", lambda m: _userinfo(m), text)
    for secret in _url_secrets(url) if url else ():
        text = text.replace(secret, "***")
    return text


#: a shorter user or password is masked in URLs only: masking "git" everywhere would garble every message
_MIN_SECRET = 6


def _url_secrets(url: str) -> list[str]:
    """The password of ``url``, or its http(s) user (``https://TOKEN@host``), when long enough to be one."""
    if not _URL_SCHEME.match(url):
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        if parts.scheme.lower() in ("http", "https") and not parts.password:
            found.append(parts.username or "")  # https://TOKEN@host: the user is the token
    except ValueError:
        return []
    return [s for s in found if len(s) >= _MIN_SECRET]


def _userinfo(m: re.Match) -> str:
    scheme = m.group(1)
    userinfo = m.group(0)[len(scheme):-1]
    # ssh://git@host names a login, not a secret; a password or an http(s) user may be a token
    if ":" in userinfo or scheme.lower().startswith("http"):
        return f"{scheme}***@"
    return m.group(0)


# -- reachability ----------------------------------------------------------------------
def git_env(repo: Repository, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a git command against ``repo``: no prompt ever, its deploy key when it has one.

    Host keys: with ``known_hosts`` the remote's key must be in that file (StrictHostKeyChecking=yes,
    the user's own known_hosts ignored): pinned by whoever deploys the server, so nobody answering
    first is trusted, and the pin survives a container whose home is thrown away at each restart.
    Without it, trust on first use (accept-new) into the user's ~/.ssh/known_hosts: a key that
    changes later is refused, never silently accepted."""
    env = dict(os.environ if base is None else base)
    env["GIT_TERMINAL_PROMPT"] = "0"  # an https remote asking for a password fails instead of hanging
    if repo.known_hosts:
        hosts = repo.known_hosts.replace("'", "'\\''")
        checking = f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile='{hosts}' -o GlobalKnownHostsFile=/dev/null"
    else:
        checking = "-o StrictHostKeyChecking=accept-new"
    if repo.deploy_key:
        key = repo.deploy_key.replace("'", "'\\''")
        env["GIT_SSH_COMMAND"] = f"ssh -i '{key}' -o IdentitiesOnly=yes -o BatchMode=yes {checking}"
    elif repo.known_hosts or ("GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env):
        env["GIT_SSH_COMMAND"] = f"ssh -o BatchMode=yes {checking}"  # else the server's own ssh setup wins
    return env


def ls_remote(repo: Repository, timeout: float = CHECK_TIMEOUT, git: str = "git") -> dict[str, str]:
    """``{branch: commit}`` of the remote's heads; UsageError with what git said (credentials masked)."""
    cmd = [git, "-c", "protocol.ext.allow=never", "ls-remote", "--heads", repo.url]
    # a session of its own, so a timeout kills ssh or git-remote-https too (they hold the pipes open)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=git_env(repo), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise UsageError(f"{repo.shown_url} did not answer within {timeout:g} s",
                         "is the host reachable from this machine (firewall, proxy, VPN)?") from None
    if proc.returncode != 0:
        said = _git_said(err.decode("utf-8", "replace"), repo.url)
        raise UsageError(f"{repo.shown_url} cannot be reached: {said}", _reach_hint(repo, said))
    heads = {}
    for line in out.decode("utf-8", "replace").splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith("refs/heads/"):
            heads[ref[len("refs/heads/"):]] = sha
    return heads


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _git_said(stderr: str, url: str) -> str:
    # git ends with the same advice whatever the reason; the lines before it say why
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and not any(b in ln.lower() for b in _BOILERPLATE)]
    said = ""
    for line in lines[-3:]:  # "unable to connect to host:" goes on on the next line
        said += line if not said else (f" {line}" if said.endswith(":") else f"; {line}")
    said = said or "git failed and said nothing"
    return redact_url(said, url)


_BOILERPLATE = ("could not read from remote repository", "please make sure you have the correct access",
                "and the repository exists")


def reach_hint(repo: Repository, said: str) -> str:
    """What to do about a remote git could not reach, from what git said."""
    return _reach_hint(repo, said)


def _reach_hint(repo: Repository, said: str) -> str:
    low = said.lower()
    if "host key verification failed" in low or "host identification has changed" in low:
        return ("the remote's host key is not the known one: check it with its owner, then put it in the "
                "repository's known_hosts file (ssh-keyscan -p PORT HOST)")
    if "permission denied" in low or "publickey" in low:
        return "the server's key is not accepted: add the deploy key's public half to the repository"
    if any(w in low for w in ("authentication failed", "could not read username", "prompts disabled")):
        return "the remote wants credentials: use an ssh URL with a deploy key, or a credential helper"
    unreachable = ("connection refused", "couldn't connect", "unable to connect", "could not resolve",
                   "no route to host", "network is unreachable", "timed out")
    if any(w in low for w in unreachable):
        return "nothing answers there: check the host name and port, and that this machine may reach it"
    if "does not appear to be a git repository" in low or "not found" in low or "no such" in low:
        return "check the URL: the path names no repository there"
    return "check the URL, the network and the remote's access rights (git ls-remote URL should work here)"


def check(config: ServerConfig, *, timeout: float = CHECK_TIMEOUT, git: str = "git") -> list[ConfigProblem]:
    """Every reason a repository cannot be polled: remotes (``git ls-remote``), deploy keys, secrets.

    Repositories are asked at once (a thread each, up to 32), so 20 unreachable remotes
    take about one timeout, not 20.
    """
    repos = list(enumerate(config.repositories))
    database = check_database(config.database) if config.database else []  # PostgreSQL: unreachable?
    if not repos:
        return database
    with ThreadPoolExecutor(max_workers=min(32, len(repos))) as pool:
        found = list(pool.map(lambda ir: _check_repository(ir[0], ir[1], timeout, git), repos))
    return database + [p for problems in found for p in problems]


def _check_repository(i: int, repo: Repository, timeout: float, git: str) -> list[ConfigProblem]:
    at = f"repositories[{i}]"
    problems: list[ConfigProblem] = []
    key_ok = True
    if repo.deploy_key:
        why = _key_problem(repo.deploy_key)
        if why:
            key_ok = False
            problems.append(ConfigProblem(f"{at}.deploy_key", why[0], why[1]))
    if repo.known_hosts:
        why = _known_hosts_problem(repo.known_hosts)
        if why:
            key_ok = False
            problems.append(ConfigProblem(f"{at}.known_hosts", why[0], why[1]))
    if key_ok:  # with an unusable key ssh fails for that reason; say it once
        try:
            ls_remote(repo, timeout, git)
        except UsageError as e:
            problems.append(ConfigProblem(f"{at}.url", e.message, e.hint or ""))
    for j, ref in enumerate(repo.secrets):
        try:
            _secret_value(ref, probe=True)
        except UsageError as e:
            problems.append(ConfigProblem(f"{at}.secrets[{j}]", e.message, e.hint or ""))
    notify = repo.notify
    refs = [("notify.github.token", notify.github.token if notify and notify.github else None),
            ("notify.webhook.url", notify.webhook.url_ref if notify and notify.webhook else None),
            ("webhook_secret", repo.webhook_secret)]
    for where, ref in refs:
        if ref is not None:
            try:
                _secret_value(ref, probe=True)
            except UsageError as e:
                problems.append(ConfigProblem(f"{at}.{where}", e.message, e.hint or ""))
    return problems


def _known_hosts_problem(path: str) -> tuple[str, str] | None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return (f"the known_hosts file {path} cannot be read: {e.strerror or e}",
                ("make it with ssh-keyscan -p PORT HOST > FILE (then check the key with its owner), "
                 "readable by the user the server runs as"))
    return None


def key_problem(repo: Repository) -> tuple[str, str] | None:
    """Why the repository's deploy key or known_hosts file cannot be used, as (message, hint); None when
    they can (or it has none): the poller says this rather than ssh's "Permission denied"."""
    if repo.deploy_key:
        why = _key_problem(repo.deploy_key)
        if why:
            return why
    return _known_hosts_problem(repo.known_hosts) if repo.known_hosts else None


def _key_problem(path: str) -> tuple[str, str] | None:
    try:
        st = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as e:
        return (f"the deploy key {path} cannot be read: {e.strerror or e}",
                "give the path of the private key, readable by the user the server runs as")
    if st.st_mode & 0o077:  # ssh refuses such a key too ("UNPROTECTED PRIVATE KEY FILE")
        return (f"the deploy key {path} is readable by others (mode {st.st_mode & 0o777:04o})",
                f"chmod 600 {path}")
    return None


# -- secrets at run time ---------------------------------------------------------------
def resolve_secrets(repo: Repository) -> dict[str, bytes]:
    """``{name: value}`` of the repository's secrets, read now; UsageError naming the first unreadable one."""
    return {ref.name: _secret_value(ref) for ref in repo.secrets}


def _secret_value(ref: SecretRef, probe: bool = False) -> bytes:
    if ref.file:
        try:
            with open(ref.file, "rb") as f:
                data = f.read(MAX_SECRET_BYTES + 1)
        except OSError as e:
            raise UsageError(f"the secret {ref.name}: its file {ref.file} cannot be read: {e.strerror or e}",
                             "the file must exist and be readable by the user the server runs as") from None
        if len(data) > MAX_SECRET_BYTES:
            raise UsageError(f"the secret {ref.name}: its file {ref.file} is larger than 1 MiB",
                             "a secret file holds a token, a password or a key")
        return b"" if probe else data.removesuffix(b"\n").removesuffix(b"\r")
    env = ref.env or ref.name
    value = os.environb.get(os.fsencode(env))
    if value is None:
        raise UsageError(f"the secret {ref.name}: the environment variable {env} is not set",
                         f"set {env} in the server's environment "
                         "(systemd EnvironmentFile=, compose env_file:)")
    return value

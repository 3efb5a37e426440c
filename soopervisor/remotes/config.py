"""The user's remotes: ``<config dir>/remotes.yaml`` names them, their tokens are kept like other credentials.

    soopervisor remote add ci https://ci.example.com:8008      # a team's soopervisor serve (asks for a token)
    soopervisor remote add ghe --github --api-url https://ghe.example.com/api/v3
    soopervisor remote list; soopervisor remote remove ci

The name ``github`` always exists: the repository's own workflow on github.com. A token is
looked up in ``SOOPERVISOR_REMOTE_<NAME>_TOKEN`` first (CI, scripts), then in what
``remote add`` stored (the keyring, else a 0600 file); a GitHub remote also takes
``GITHUB_TOKEN`` or ``GH_TOKEN``. The file holds names and URLs only, never a token.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import config, credentials
from ..errors import UsageError
from .base import KINDS, RemoteRefused, check_name

if TYPE_CHECKING:
    from .base import Remote

GITHUB = "github"
GITHUB_API = "https://api.github.com"


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # one of KINDS
    url: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "url": self.url}


def remotes_file() -> Path:
    """``SOOPERVISOR_REMOTES`` or ``<config dir>/remotes.yaml``."""
    named = os.environ.get("SOOPERVISOR_REMOTES")
    return Path(named).expanduser() if named else config.config_dir() / "remotes.yaml"


def _read() -> dict[str, Entry]:
    import yaml

    path = remotes_file()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError) as e:
        where = getattr(e, "problem_mark", None)
        raise UsageError(f"cannot read the remotes file {path}" + (f" (line {where.line + 1})" if where else ""),
                         "fix or remove it; `soopervisor remote add` writes it") from None
    found: dict[str, Entry] = {}
    for name, value in ((data or {}).get("remotes") or {}).items() if isinstance(data, dict) else ():
        if isinstance(value, dict) and value.get("kind") in KINDS and isinstance(value.get("url"), str):
            found[str(name)] = Entry(str(name), value["kind"], value["url"])
    return found


def _write(entries: dict[str, Entry]) -> None:
    import yaml

    path = remotes_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# soopervisor's remotes (`soopervisor remote add|remove`); tokens are kept elsewhere\n" + yaml.safe_dump(
        {"remotes": {e.name: {"kind": e.kind, "url": e.url} for e in entries.values()}}, sort_keys=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # never half a file


def entries() -> dict[str, Entry]:
    """Every remote: the file's, and ``github`` unless the file names it otherwise."""
    found = _read()
    found.setdefault(GITHUB, Entry(GITHUB, "github", GITHUB_API))
    return found


def listed(found: dict[str, Entry] | None = None) -> list[dict[str, Any]]:
    """``[{"name", "kind", "url"}]``, the file's first then ``github``: what a client may show (no token)."""
    found = entries() if found is None else found
    return [e.to_dict() for e in sorted(found.values(), key=lambda e: (e.name == GITHUB, e.name))]


def check_url(url: str, kind: str) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        what = "a server" if kind == "server" else "a GitHub API"
        raise UsageError(f"{url!r} is not the URL of {what}",
                         "give http(s)://HOST[:PORT], e.g. https://ci.example.com:8008"
                         if kind == "server" else "e.g. https://ghe.example.com/api/v3")
    if parts.username or parts.password:
        raise UsageError("the URL must not hold a user or a password",
                         "the token is asked for separately (or --token-stdin)")
    return url.rstrip("/")


def _service(name: str) -> str:
    return f"remote-{name}"


def add(name: str, url: str, *, kind: str = "server", token: str | None = None) -> tuple[Entry, str | None]:
    """Name a remote (replacing one of that name); keeps ``token`` with the credentials. Returns the
    entry and where the token went (None when none was given)."""
    check_name(name)
    if kind not in KINDS:
        raise UsageError(f"unknown kind of remote {kind!r}", f"one of {', '.join(KINDS)}")
    entry = Entry(name, kind, check_url(url, kind))
    where = None
    if token:
        where = credentials.save(_service(name), {"token": token})
    found = _read()
    found[name] = entry
    _write(found)
    return entry, where


def remove(name: str) -> bool:
    """Forget a remote and its token; whether it was named."""
    found = _read()
    had = found.pop(name, None) is not None
    if had:
        _write(found)
    return credentials.delete(_service(name)) or had


def _env_name(name: str) -> str:
    return "SOOPERVISOR_REMOTE_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_TOKEN"


def token(entry: Entry) -> str | None:
    """The remote's token: its environment variable, what ``remote add`` stored, and for GitHub
    GITHUB_TOKEN / GH_TOKEN. Registered as a credential: it is masked wherever it would show."""
    value = os.environ.get(_env_name(entry.name))
    if not value:
        stored = credentials.load(_service(entry.name)) or {}
        value = stored.get("token") if isinstance(stored.get("token"), str) else None
    if not value and entry.kind == "github":
        value = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if value:
        credentials.register(value)
    return value or None


def get(name: str) -> Entry:
    check_name(name)  # a name no remote can have is said so, not offered to `remote add`
    found = entries()
    if name not in found:
        known = ", ".join(sorted(found))
        raise RemoteRefused(f"no remote named {name!r} (known: {known})",
                            f"add it: soopervisor remote add {name} https://SERVER:8008 "
                            "(or --github for a GitHub workflow); `soopervisor remote list` shows them")
    return found[name]


def load(name: str) -> Remote:
    """The remote named ``name``, ready to submit and follow runs."""
    entry = get(name)
    if entry.kind == "server":
        from .server import ServerRemote

        return ServerRemote(entry.name, entry.url, token(entry))
    from .github import GitHubRemote

    return GitHubRemote(entry.name, entry.url, token(entry))

"""server.yaml: every rule, every problem at once, and reachability against real git remotes."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from soopervisor.errors import UsageError
from soopervisor.server import config as sc
from soopervisor.server.config import ConfigProblem, InvalidConfig, Repository, SecretRef, ServerConfig
from tests.conftest import free_port

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[ConfigProblem]:
    with pytest.raises(InvalidConfig) as info:
        sc.load(write(tmp_path, text))
    assert info.value.exit_code == 2
    return info.value.problems


def one(tmp_path: Path, text: str) -> ConfigProblem:
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def bare_repo(root: Path, name: str = "sales", branches: tuple[str, ...] = ("main",)) -> Path:
    """A real bare repository with one commit on each branch."""
    bare = root / f"{name}.git"
    work = root / f"{name}-work"
    subprocess.run([*GIT, "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run([*GIT, "init", "-q", str(work)], check=True)
    (work / "pipeline.yaml").write_text("tasks: []\n")
    subprocess.run([*GIT, "-C", str(work), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "first"], check=True)
    for branch in branches:
        subprocess.run([*GIT, "-C", str(work), "push", "-q", str(bare), f"HEAD:refs/heads/{branch}"], check=True)
    return bare


# -- defaults --------------------------------------------------------------------------
def test_the_embedded_default_has_sqlite_and_storage_in_the_data_folder_and_no_repositories(home: Path):
    config = sc.load(None)
    assert config.repositories == ()
    assert config.database == str(home / "server.sqlite")
    assert config.mirrors == str(home / "mirrors")
    assert config.storage == str(home / "artifacts")
    assert (config.poll_interval, config.concurrency, config.per_repository, config.max_attempts) == (60.0, 1, 1, 3)
    assert config.supersede is False and config.image is None and config.source is None


def test_an_empty_file_is_the_default(tmp_path: Path, home: Path):
    config = sc.load(write(tmp_path, "# nothing yet\n"))
    assert config.repositories == () and config.database == str(home / "server.sqlite")


def test_the_issue_example_and_the_defaults_of_a_repository(tmp_path: Path):
    config = sc.load(write(tmp_path, """
storage: /srv/soopervisor/artifacts
poll_interval: 60
repositories:
  - url: file:///srv/git/sales.git
    branches: [main]
    projects: [.]
    mode: sample
    secrets: [DB_PASSWORD]
  - url: https://git.example.com/org/forecast.git
"""))
    sales, forecast = config.repositories
    assert config.storage == "/srv/soopervisor/artifacts"
    assert sales == Repository(url="file:///srv/git/sales.git", name="sales", branches=("main",), projects=(".",),
                               modes=(("*", "sample"),), secrets=(SecretRef("DB_PASSWORD", env="DB_PASSWORD"),))
    assert forecast.name == "forecast" and forecast.branches == ("main",) and forecast.projects == (".",)
    assert forecast.modes == (("*", "sample"),) and forecast.secrets == () and forecast.deploy_key is None
    assert forecast.first_sight == "head"
    assert config.source == str(tmp_path / "server.yaml")


def test_every_setting(tmp_path: Path):
    config = sc.load(write(tmp_path, """
storage: artifacts
poll_interval: 2.5
database: db/server.sqlite
mirrors: ~/mirrors
image: python:3.12-slim
concurrency: 4
per_repository: 2
max_attempts: 5
supersede: true
repositories:
  - url: git@git.example.com:ml/monorepo.git
    name: mono
    branches: main
    projects: [./ml/forecast/, churn]
    mode: {main: full, "release/*": full, "*": sample}
    secrets: [{name: TOKEN, file: secrets/token}, {name: DB, env: PROD_DB}, {name: PLAIN}]
    deploy_key: keys/deploy
    first_sight: none
  - ../local/repo
"""))
    assert config.storage == str(tmp_path / "artifacts")  # relative to the file's folder
    assert config.database == str(tmp_path / "db/server.sqlite")
    assert config.mirrors == str(Path("~/mirrors").expanduser())
    assert (config.image, config.poll_interval, config.concurrency, config.per_repository) == (
        "python:3.12-slim", 2.5, 4, 2)
    assert config.max_attempts == 5 and config.supersede is True
    mono, local = config.repositories
    assert mono.name == "mono" and mono.branches == ("main",) and mono.projects == ("ml/forecast", "churn")
    assert mono.secrets == (SecretRef("TOKEN", file=str(tmp_path / "secrets/token")),
                            SecretRef("DB", env="PROD_DB"), SecretRef("PLAIN", env="PLAIN"))
    assert mono.deploy_key == str(tmp_path / "keys/deploy") and mono.first_sight == "none"
    assert local.url == str(tmp_path / "../local/repo") and local.name == "repo"
    assert config.repository("mono") is mono


def test_mode_for_and_wants():
    repo = Repository(url="file:///r.git", name="r", branches=("main", "release/*", "dev"),
                      modes=(("main", "full"), ("release/*", "full"), ("*", "sample")))
    assert repo.wants("main") and repo.wants("release/1.2") and not repo.wants("feature/x")
    assert repo.mode_for("main") == "full" and repo.mode_for("release/1.2") == "full"
    assert repo.mode_for("dev") == "sample" and repo.mode_for("feature/x") is None
    # no mode glob matches: the default mode
    assert Repository(url="/r", name="r", branches=("*",), modes=(("main", "full"),)).mode_for("dev") == "sample"


@pytest.mark.parametrize(("url", "name"), [
    ("https://host/org/sales.git", "sales"), ("https://host/org/sales/", "sales"), ("git@host:org/sales.git", "sales"),
    ("ssh://git@host:2222/sales.git", "sales"), ("/srv/git/sales/.git", "sales"), ("file:///srv/sales", "sales"),
])
def test_names_derived_from_urls(url: str, name: str):
    assert sc.derive_name(url) == name


# -- every rule ------------------------------------------------------------------------
def test_unknown_keys_with_did_you_mean(tmp_path: Path):
    top, repo = problems_of(tmp_path, "pol_interval: 5\nrepositories:\n  - url: /r\n    brnches: [main]\n")
    assert top.where == "pol_interval" and top.what == "unknown key 'pol_interval'"
    assert top.hint.startswith("did you mean 'poll_interval'?")
    assert repo.where == "repositories[0].brnches" and repo.hint.startswith("did you mean 'branches'?")


def test_wrong_types(tmp_path: Path):
    found = problems_of(tmp_path, """
storage: 5
concurrency: true
poll_interval: soon
supersede: maybe
image: ""
repositories: {url: /r}
""")
    by = {p.where: p.what for p in found}
    assert by["storage"] == "must be text, not number"
    assert by["concurrency"] == "must be a whole number, not boolean True"
    assert by["poll_interval"] == "must be a number, not text 'soon'"
    assert by["supersede"] == "must be true or false, not text"
    assert by["image"] == "is empty"
    assert by["repositories"] == "must be a list, not mapping"
    assert len(found) == 6


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("poll_interval", "0", "0 is out of range (0.1 to 86400)"),
    ("poll_interval", "100000", "100000 is out of range (0.1 to 86400)"),
    ("concurrency", "0", "0 is out of range (1 to 256)"),
    ("concurrency", "1.5", "must be a whole number, not number 1.5"),
    ("per_repository", "-1", "-1 is out of range (1 to 256)"),
    ("max_attempts", "0", "0 is out of range (1 to 100)"),
])
def test_numbers_out_of_range(tmp_path: Path, key: str, value: str, shown: str):
    problem = one(tmp_path, f"{key}: {value}\n")
    assert (problem.where, problem.what) == (key, shown)
    assert problem.hint


@pytest.mark.parametrize(("url", "what"), [
    ("ftp://host/x", "unknown storage scheme 'ftp://'"),
    ("s3://", "names no bucket"),
    ("file://otherhost/x", "names another host (otherhost)"),
    ("gdrive://", "bad Google Drive URL"),
])
def test_a_storage_url_that_cannot_be_parsed(tmp_path: Path, url: str, what: str):
    problem = one(tmp_path, f"storage: '{url}'\n")
    assert problem.where == "storage" and what in problem.what and problem.hint


def test_a_storage_url_is_parsed_without_signing_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    assert sc.load(write(tmp_path, "storage: s3://bucket/prefix\n")).storage == "s3://bucket/prefix"
    assert sc.load(write(tmp_path, "storage: gdrive://artifacts\n")).storage == "gdrive://artifacts"


def test_a_repository_without_url(tmp_path: Path):
    with pytest.raises(InvalidConfig) as info:
        sc.load(write(tmp_path, "repositories:\n  - url: /srv/ok.git\n  - branches: [main]\n"))
    (problem,) = info.value.problems
    assert problem.where == "repositories[1].url"
    assert problem.what == "is missing: every repository needs a url"
    assert "https://host/org/repo.git" in problem.hint
    assert [r.name for r in info.value.partial.repositories] == ["ok"]  # the valid part, for --check


def test_duplicate_names(tmp_path: Path):
    found = problems_of(tmp_path, """
repositories:
  - url: https://a.example.com/sales.git
  - url: https://b.example.com/sales.git
  - url: /srv/git/other.git
    name: SALES
""")
    assert [(p.where, p.what) for p in found] == [
        ("repositories[1].name", "the name 'sales' is taken by repositories[0]"),
        ("repositories[2].name", "the name 'SALES' is taken by repositories[0]"),
    ]
    assert "set name:" in found[0].hint


@pytest.mark.parametrize(("url", "what"), [
    ("ftp://host/repo.git", "the scheme 'ftp://' is not supported"),
    ("ext::sh -c touch% /tmp/pwned", "'ext::sh -c touch% /tmp/pwned' is not a repository URL"),
    ("--upload-pack=touch /tmp/pwned", "'--upload-pack=touch /tmp/pwned' is not a repository URL"),
    ("https:///repo.git", "'https:///repo.git' names no host"),
    ("file://server/srv/repo.git", "the file URL names another host (server)"),
    ("https://host:port/x.git", "is not a valid URL"),
    ("bot:pa55word@host:org/x.git", "is neither a URL nor a path (a password in an scp-like URL?)"),
])
def test_url_schemes(tmp_path: Path, url: str, what: str):
    problem = one(tmp_path, f"repositories:\n  - url: '{url}'\n    name: r\n")
    assert problem.where == "repositories[0].url" and what in problem.what
    assert "pa55word" not in problem.what + problem.hint


@pytest.mark.parametrize("url", [
    "file:///srv/git/r.git", "https://host/r.git", "http://host:8080/r.git", "ssh://git@host:2222/r.git",
    "git://host/r.git", "git@host:org/r.git", "/srv/git/r.git", "relative/r.git",
])
def test_url_schemes_accepted(tmp_path: Path, url: str):
    assert sc.load(write(tmp_path, f"repositories:\n  - url: '{url}'\n")).repositories[0].name == "r"


def test_empty_branch_globs(tmp_path: Path):
    found = problems_of(tmp_path, """
repositories:
  - url: /a
    branches: []
  - url: /b
    branches: [main, ""]
  - url: /c
    branches: [1.0, refs/heads/dev]
""")
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].branches", "is empty"),
        ("repositories[1].branches[1]", "is empty"),
        ("repositories[2].branches[0]", "must be text, not number 1.0"),
        ("repositories[2].branches[1]", "'refs/heads/dev' is a ref, not a branch name"),
    ]
    assert "quote it: '1.0'" in found[2].hint and found[3].hint == "write the branch name: 'dev'"


def test_projects_that_escape_the_repository(tmp_path: Path):
    found = problems_of(tmp_path, """
repositories:
  - url: /a
    projects: [., ../other, /etc, ml/../../x, ~/x]
""")
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].projects[1]", "'../other' is outside the repository"),
        ("repositories[0].projects[2]", "'/etc' is outside the repository"),
        ("repositories[0].projects[3]", "'ml/../../x' is outside the repository"),
        ("repositories[0].projects[4]", "'~/x' is outside the repository"),
    ]


def test_modes(tmp_path: Path):
    found = problems_of(tmp_path, """
repositories:
  - url: /a
    mode: fast
  - url: /b
    mode: {main: full, "*": quick}
  - url: /c
    mode: [full]
""")
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].mode", "must be sample or full, not 'fast'"),
        ("repositories[1].mode.*", "must be sample or full, not 'quick'"),
        ("repositories[2].mode", "must be sample, full or a mapping, not list"),
    ]
    assert 'mode: {main: full, "*": sample}' in found[0].hint


def test_first_sight(tmp_path: Path):
    problem = one(tmp_path, "repositories:\n  - url: /a\n    first_sight: all\n")
    assert (problem.where, problem.what) == ("repositories[0].first_sight", "must be head or none, not 'all'")


def test_secrets_written_inline_are_refused_without_showing_them(tmp_path: Path):
    text = """
repositories:
  - url: /a
    secrets:
      - DB_PASSWORD
      - "hunter2-value!"
      - {API_TOKEN: ghp_inlinevalue1}
      - {name: X, value: inlinevalue2}
      - {name: Y, env: "not a name inlinevalue3"}
      - 123456
      - {name: Z, env: A, file: /b}
      - DB_PASSWORD
"""
    with pytest.raises(InvalidConfig) as info:
        sc.load(write(tmp_path, text))
    found = info.value.problems
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].secrets[1]",
         "is not the name of an environment variable (a secret's value is never written in server.yaml)"),
        ("repositories[0].secrets[2]", "holds a value: a secret is never written in server.yaml, only where to read it"),
        ("repositories[0].secrets[3]", "holds a value: a secret is never written in server.yaml, only where to read it"),
        ("repositories[0].secrets[4].env",
         "is not the name of an environment variable (a secret's value is never written in server.yaml)"),
        ("repositories[0].secrets[5]", "must be a variable name or a mapping, not number"),
        ("repositories[0].secrets[6]", "has both env and file"),
        ("repositories[0].secrets[7]", "the secret DB_PASSWORD is listed twice"),
    ]
    assert "environment variable" in found[1].hint and "file:" in found[1].hint
    shown = str(info.value) + repr(found)
    for value in ("hunter2", "ghp_inlinevalue1", "inlinevalue2", "inlinevalue3", "123456"):
        assert value not in shown


def test_deploy_key_on_a_non_ssh_url(tmp_path: Path):
    problem = one(tmp_path, "repositories:\n  - url: https://host/r.git\n    deploy_key: /k\n")
    assert problem.where == "repositories[0].deploy_key"
    assert problem.what == "a deploy key works over ssh only, and https://host/r.git is not an ssh URL"
    for url in ("ssh://git@host/r.git", "git@host:r.git"):
        repo = sc.load(write(tmp_path, f"repositories:\n  - url: '{url}'\n    deploy_key: k\n")).repositories[0]
        assert repo.deploy_key == str(tmp_path / "k")


def test_yaml_that_does_not_parse_or_is_not_a_mapping(tmp_path: Path):
    problem = one(tmp_path, "repositories:\n  - url: [unclosed\n")
    assert problem.where == f"{tmp_path / 'server.yaml'}:3" and problem.what.startswith("does not parse")
    problem = one(tmp_path, "- a\n- b\n")
    assert problem.what == "is a list, not a mapping"
    problem = one(tmp_path, "a: " + "[" * 200 + "]" * 200 + "\n")
    assert problem.what == f"nests deeper than {sc.MAX_YAML_DEPTH} levels"


def test_a_huge_or_missing_file(tmp_path: Path):
    big = tmp_path / "server.yaml"
    big.write_bytes(b"#" * (sc.MAX_CONFIG_BYTES + 1))
    with pytest.raises(InvalidConfig) as info:
        sc.load(big)
    assert info.value.problems[0].what == "is too large (at most 1 MiB)"
    with pytest.raises(InvalidConfig) as info:
        sc.load(tmp_path / "nope.yaml")
    assert info.value.problems[0].what == "cannot be read: No such file or directory"


def test_every_problem_at_once_one_per_line(tmp_path: Path):
    path = write(tmp_path, """
storag: /x
poll_interval: 0
repositories:
  - url: https://host/a.git
    branches: []
    deploy_key: /k
  - branches: [main]
  - url: ftp://x/y
  - url: /srv/a.git
    projects: [../up]
    secrets: [{TOKEN: abc}]
    mode: quick
""")
    with pytest.raises(InvalidConfig) as info:
        sc.load(path)
    e = info.value
    assert isinstance(e, UsageError) and e.exit_code == 2
    assert [p.where for p in e.problems] == [
        "storag", "poll_interval", "repositories[0].branches", "repositories[0].deploy_key", "repositories[1].url",
        "repositories[2].url", "repositories[3].projects[0]", "repositories[3].mode", "repositories[3].secrets[0]",
        "repositories[3].name",  # "a" again, although repositories[3] has problems of its own
    ]
    lines = e.message.splitlines()
    assert lines[0] == f"{path} has 10 problems:"
    # each with its line in the file; a missing key: the line of its mapping
    assert lines[1] == "  storag (line 2): unknown key 'storag'"
    assert lines[2].startswith("    hint: did you mean 'storage'?")
    assert lines[5] == "  repositories[0].branches (line 6): is empty" and len(lines) == 21
    assert lines[9] == "  repositories[1].url (line 8): is missing: every repository needs a url"
    assert lines[15] == "  repositories[3].mode (line 13): must be sample or full, not 'quick'"
    assert e.hint == "fix them all, then run `soopervisor serve --check` again"
    # what has no problem is kept, so --check can still ask its remotes
    assert [r.name for r in e.partial.repositories] == [] and e.partial.poll_interval == 60.0
    assert str(e) == f"{e.message}\nhint: {e.hint}"


def test_one_problem_is_singular(tmp_path: Path):
    with pytest.raises(InvalidConfig, match=r"server.yaml has 1 problem:\n"):
        sc.load(write(tmp_path, "concurrency: 0\n"))


# -- credentials in URLs ---------------------------------------------------------------
def test_redact_url():
    assert sc.redact_url("https://user:tok3n-secret@host/x.git") == "https://***@host/x.git"
    assert sc.redact_url("fatal: https://ghp_0123456789abcdef@host/x") == "fatal: https://***@host/x"
    assert sc.redact_url("ssh://git@host/x.git") == "ssh://git@host/x.git"  # a login, not a secret
    url = "https://bot:p4ssw0rd-long@host/x.git"
    assert sc.redact_url("auth failed for p4ssw0rd-long", url) == "auth failed for ***"


def test_credentials_in_urls_never_printed(tmp_path: Path):
    port = free_port()  # nothing listens there
    url = f"https://user:s3cret-token-1@127.0.0.1:{port}/x.git"
    with pytest.raises(InvalidConfig) as info:
        sc.load(write(tmp_path, f"repositories:\n  - url: '{url}'\n    deploy_key: /k\n"))
    assert "s3cret-token-1" not in str(info.value) and f"https://***@127.0.0.1:{port}/x.git" in str(info.value)
    config = sc.load(write(tmp_path, f"repositories:\n  - url: '{url}'\n"))
    assert config.repositories[0].url == url  # git needs it as written
    assert "s3cret-token-1" not in repr(config) and "https://***@" in repr(config)
    assert config.repositories[0].shown_url == f"https://***@127.0.0.1:{port}/x.git"
    (problem,) = sc.check(config, timeout=10)
    assert problem.where == "repositories[0].url"
    assert problem.what.startswith(f"https://***@127.0.0.1:{port}/x.git cannot be reached:")
    assert "s3cret-token-1" not in problem.what + problem.hint


# -- reachability ----------------------------------------------------------------------
def config_of(*repos: Repository) -> ServerConfig:
    return ServerConfig(storage="/tmp/x", repositories=repos)


def test_check_a_real_bare_repository_and_a_missing_path(tmp_path: Path):
    bare = bare_repo(tmp_path)
    ok = Repository(url=bare.as_uri(), name="sales")
    plain = Repository(url=str(bare), name="plain")
    missing = Repository(url=(tmp_path / "nope.git").as_uri(), name="nope")
    assert sc.check(config_of(ok, plain)) == []
    (problem,) = sc.check(config_of(ok, missing))
    assert problem.where == "repositories[1].url"
    assert problem.what.startswith(f"{missing.url} cannot be reached: ")
    assert "does not appear to be a git repository" in problem.what
    assert problem.hint == "check the URL: the path names no repository there"
    assert sc.ls_remote(ok) == {"main": sc.ls_remote(plain)["main"]}


@pytest.fixture
def git_daemon(tmp_path: Path):
    """``git daemon`` serving tmp_path/served on 127.0.0.1 at a free port: yields the git:// base URL."""
    served = tmp_path / "served"
    served.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={served}", "--listen=127.0.0.1", f"--port={port}",
         "--reuseaddr", "--informative-errors", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"git daemon did not start: {proc.stderr.read().decode()}") from None
                time.sleep(0.05)
        yield served, f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_check_over_git_daemon(git_daemon):
    served, base = git_daemon
    bare_repo(served, "sales", branches=("main", "dev"))
    ok = Repository(url=f"{base}/sales.git", name="sales")
    missing = Repository(url=f"{base}/nope.git", name="nope")
    assert set(sc.ls_remote(ok)) == {"main", "dev"}
    (problem,) = sc.check(config_of(ok, missing))
    assert problem.where == "repositories[1].url"
    assert problem.what.startswith(f"{base}/nope.git cannot be reached: ")
    assert "no such repository" in problem.what or "not exported" in problem.what


def test_check_an_unreachable_port():
    url = f"git://127.0.0.1:{free_port()}/sales.git"
    (problem,) = sc.check(config_of(Repository(url=url, name="sales")), timeout=10)
    assert problem.what.startswith(f"{url} cannot be reached: ")
    assert "unable to connect" in problem.what.lower() or "connection refused" in problem.what.lower()


def test_remotes_that_never_answer_are_checked_at_once():
    """20 remotes that accept the connection and say nothing cost one timeout, not 20."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # never accepted: the handshake completes, nothing answers
        port = silent.getsockname()[1]
        repos = [Repository(url=f"git://127.0.0.1:{port}/r{i}.git", name=f"r{i}") for i in range(20)]
        start = time.monotonic()
        found = sc.check(config_of(*repos), timeout=1.5)
        took = time.monotonic() - start
    assert len(found) == 20 and took < 8, took
    assert found[0] == ConfigProblem("repositories[0].url", f"{repos[0].url} did not answer within 1.5 s",
                                     "is the host reachable from this machine (firewall, proxy, VPN)?")


def test_deploy_keys(tmp_path: Path):
    key = tmp_path / "deploy"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    url = f"ssh://git@127.0.0.1:{free_port()}/sales.git"
    repo = Repository(url=url, name="sales", deploy_key=str(key))
    env = sc.git_env(repo)
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_SSH_COMMAND"] == (f"ssh -i '{key}' -o IdentitiesOnly=yes -o BatchMode=yes "
                                      "-o StrictHostKeyChecking=accept-new")
    (problem,) = sc.check(config_of(repo), timeout=10)  # the key is fine: ssh itself is refused
    assert problem.where == "repositories[0].url" and "connection refused" in problem.what.lower()

    key.chmod(0o644)
    (problem,) = sc.check(config_of(repo))
    assert problem == ConfigProblem("repositories[0].deploy_key",
                                    f"the deploy key {key} is readable by others (mode 0644)", f"chmod 600 {key}")

    gone = Repository(url=url, name="sales", deploy_key=str(tmp_path / "nokey"))
    (problem,) = sc.check(config_of(gone))
    assert problem.what == f"the deploy key {tmp_path / 'nokey'} cannot be read: No such file or directory"


# -- secrets ---------------------------------------------------------------------------
def test_secrets_resolved_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "token").write_bytes(b"file-secret\n")
    (tmp_path / "crlf").write_bytes(b"two\nlines\r\n")
    config = sc.load(write(tmp_path, """
repositories:
  - url: /srv/a.git
    secrets: [DB_PASSWORD, {name: API, env: PROD_API}, {name: TOKEN, file: token}, {name: PEM, file: crlf}]
"""))
    repo = config.repositories[0]
    monkeypatch.setenv("DB_PASSWORD", "env-secret")
    monkeypatch.setenv("PROD_API", "api-secret")
    assert sc.resolve_secrets(repo) == {"DB_PASSWORD": b"env-secret", "API": b"api-secret",
                                        "TOKEN": b"file-secret", "PEM": b"two\nlines"}
    for value in ("env-secret", "api-secret", "file-secret", "lines"):  # references only, never values
        assert value not in repr(config)
    # read at run time: a changed value is seen without reloading
    (tmp_path / "token").write_text("rotated")
    assert sc.resolve_secrets(repo)["TOKEN"] == b"rotated"

    monkeypatch.delenv("PROD_API")
    with pytest.raises(UsageError, match="the secret API: the environment variable PROD_API is not set"):
        sc.resolve_secrets(repo)


def test_check_finds_unset_env_and_unreadable_file_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bare = bare_repo(tmp_path)
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    monkeypatch.setenv("SET_HERE", "x")
    repo = Repository(url=bare.as_uri(), name="sales", secrets=(
        SecretRef("SET_HERE", env="SET_HERE"), SecretRef("A", env="NOT_SET_HERE"),
        SecretRef("B", file=str(tmp_path / "missing"))))
    found = sc.check(config_of(repo))
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].secrets[1]", "the secret A: the environment variable NOT_SET_HERE is not set"),
        ("repositories[0].secrets[2]",
         f"the secret B: its file {tmp_path / 'missing'} cannot be read: No such file or directory"),
    ]
    assert "EnvironmentFile=" in found[0].hint


def test_the_documented_example_loads():
    example = Path(__file__).parents[2] / "docs" / "how-to" / "server.yaml"
    config = sc.load(example)
    sales, forecast, ml = config.repositories
    assert (sales.name, forecast.name, ml.name) == ("sales", "forecast", "ml")
    assert forecast.mode_for("main") == "full" and forecast.mode_for("release/2") == "sample"
    assert not forecast.wants("dev") and ml.first_sight == "none" and ml.deploy_key == "/etc/soopervisor/keys/ml"
    assert [s.name for s in forecast.secrets] == ["DB_PASSWORD", "API_TOKEN", "GCP_KEY"]


# -- notifications ---------------------------------------------------------------------
def test_notify_at_the_top_is_every_repository_default_and_a_repository_overrides_it(tmp_path: Path):
    config = sc.load(write(tmp_path, """
notify:
  github: {token: {env: GITHUB_TOKEN}}
  webhook: {url: "https://hooks.slack.com/services/T0/B0/topsecretpath"}
repositories:
  - url: https://github.com/acme/sales.git
  - url: git@github.example.com:ml/monorepo.git
    notify:
      github: {api_url: "https://github.example.com/api/v3/", token: {file: keys/gh-token}}
      webhook: false
  - url: file:///srv/git/local.git
    notify: {github: {repository: acme/local}}
  - url: file:///srv/git/quiet.git
    notify: false
"""))
    sales, ml, local, quiet = config.repositories
    assert sales.notify == sc.Notify(
        github=sc.GitHubNotify("acme/sales", SecretRef("GITHUB_TOKEN", env="GITHUB_TOKEN")),
        webhook=sc.WebhookNotify(url="https://hooks.slack.com/services/T0/B0/topsecretpath"))
    assert ml.notify.github == sc.GitHubNotify("ml/monorepo", SecretRef("token", file=str(tmp_path / "keys/gh-token")),
                                               "https://github.example.com/api/v3")
    assert ml.notify.webhook is None
    assert local.notify.github.repository == "acme/local" and local.notify.github.token.env == "GITHUB_TOKEN"
    assert quiet.notify is None
    assert config.notify.github.repository == "" and config.notify.webhook is not None
    # a Slack webhook URL is a credential: neither a repr nor any error of the process shows it
    assert "topsecretpath" not in repr(sales) and "topsecretpath" not in repr(config)
    from soopervisor.redact import CREDENTIALS
    assert "topsecretpath" not in CREDENTIALS.redact("posting to https://hooks.slack.com/services/T0/B0/topsecretpath")


def test_a_repository_without_notify_has_none_and_the_settings_are_optional(tmp_path: Path):
    config = sc.load(write(tmp_path, "repositories: [file:///srv/git/sales.git]\n"))
    assert config.notify is None and config.repositories[0].notify is None


def test_a_notification_token_written_inline_is_refused_and_never_quoted(tmp_path: Path):
    found = problems_of(tmp_path, """
repositories:
  - url: https://github.com/acme/sales.git
    notify: {github: {token: ghp_inlineTokenValue0123456789}}
  - url: https://github.com/acme/forecast.git
    notify: {github: {token: {value: ghp_otherInlineValue987}}}
""")
    assert [(p.where, p.what) for p in found] == [
        ("repositories[0].notify.github.token",
         "holds a value: a credential is never written in server.yaml, only where to read it"),
        ("repositories[1].notify.github.token", "unknown key value"),
    ]
    text = str(InvalidConfig(found))
    assert "ghp_inlineTokenValue" not in text and "ghp_otherInlineValue" not in text


def test_every_notification_problem_at_once(tmp_path: Path):
    found = problems_of(tmp_path, """
notify:
  githb: {}
  webhook: {url: "ftp://hooks.example.com/T0/secretpath"}
repositories:
  - url: file:///srv/git/sales.git
    notify: {github: {token: {env: GITHUB_TOKEN}}}
  - url: https://github.com/acme/forecast.git
    notify:
      github: {repository: "not a repo", token: {env: GH, file: /x}, api_url: "not a url", extra: 1}
      webhook: {url: "https://"}
  - url: https://github.com/acme/churn.git
    notify: {github: {repository: acme/churn}, webhook: 3}
  - url: https://github.com/acme/pricing.git
    notify: [github]
""")
    assert [(p.where, p.what) for p in found] == [
        ("notify.githb", "unknown key 'githb'"),
        ("notify.webhook.url", "'ftp://hooks.example.com/...' is not an http(s) URL with a host"),
        ("repositories[0].notify.github.repository", "is missing and the URL names no owner/name"),
        ("repositories[1].notify.github.extra", "unknown key 'extra'"),
        ("repositories[1].notify.github.repository", "must be owner/name"),
        ("repositories[1].notify.github.token", "needs one of env or file"),
        ("repositories[1].notify.github.api_url", "'not a url' is not an http(s) URL with a host"),
        ("repositories[1].notify.webhook.url", "'https:///...' is not an http(s) URL with a host"),
        ("repositories[2].notify.webhook", "must be a mapping or false, not number"),
        ("repositories[2].notify.github.token", "is missing"),
        ("repositories[3].notify", "must be a mapping or false, not list"),
    ]
    assert "secretpath" not in str(InvalidConfig(found))
    assert found[0].hint.startswith("did you mean 'github'?")


def test_check_reports_an_unset_notification_token_and_an_unreadable_webhook_file(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    bare = bare_repo(tmp_path)
    config = sc.load(write(tmp_path, f"""
repositories:
  - url: file://{bare}
    notify:
      github: {{repository: acme/sales, token: {{env: NO_SUCH_TOKEN_VAR}}}}
      webhook: {{url: {{file: missing-hook-url}}}}
"""))
    found = sc.check(config)
    assert [p.where for p in found] == ["repositories[0].notify.github.token", "repositories[0].notify.webhook.url"]
    assert "NO_SUCH_TOKEN_VAR is not set" in found[0].what and "cannot be read" in found[1].what


def test_the_documented_example_notifies_github_repositories_and_the_webhook():
    example = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "server.yaml"
    config = sc.load(example)
    assert config.notify is not None and config.notify.github is not None
    local, forecast, ml = config.repositories
    # the top-level GitHub settings fit the repositories whose URL names one on GitHub; the webhook fits all
    assert local.notify.github is None and local.notify.webhook.url_ref.env == "SLACK_WEBHOOK_URL"
    assert forecast.notify.github.repository == "analytics/forecast"
    assert ml.notify.github.repository == "acme/ml" and ml.notify.webhook is None


# -- executors: the engines the queue runs on ------------------------------------------
ENGINES = ("executors:\n  box-a: {type: docker, slots: 2}\n  box-b: {host: \"tcp://10.0.0.9:2376\", slots: 3}\n"
           "default: box-b\n")


def test_executors_name_engines_of_the_executors_file_and_add_up_their_slots(tmp_path: Path, home: Path):
    (tmp_path / "engines.yaml").write_text(ENGINES)
    config = sc.load(write(tmp_path, "executors: [box-b, box-a]\nexecutors_file: engines.yaml\n"))
    assert config.executors == ("box-b", "box-a") and config.executors_file == str(tmp_path / "engines.yaml")
    assert [(e.name, e.slots) for e in config.engines] == [("box-b", 3), ("box-a", 2)]  # the configured order
    assert config.concurrency == 5  # unset: every slot of every engine may take a job
    assert sc.load(write(tmp_path, "executors: box-a\nexecutors_file: engines.yaml\nconcurrency: 1\n")).concurrency == 1
    # no executors: the engine `soopervisor run` would use (here the file's default), and its slots
    default = sc.load(write(tmp_path, "executors_file: engines.yaml\n"))
    assert default.executors == () and [e.name for e in default.engines] == ["box-b"] and default.concurrency == 3
    plain = sc.load(None)  # no executors file at all: the local engine, one slot, as before
    assert [e.name for e in plain.engines] == ["local"] and plain.concurrency == 1


@pytest.mark.parametrize("text, where, what", [
    ("executors: [box-a, nope]\n", "executors[1]", ("no executor named 'nope' in {file} (the configured ones are "
                                                   "box-a, box-b, local)")),
    ("executors: []\n", "executors", "is empty"),
    ("executors: {box-a: 1}\n", "executors", "must be a list of executor names, not mapping"),
    ("executors: [box-a, 3]\n", "executors[1]", "must be an executor's name, not number"),
    ("executors: [box-a, box-a]\n", "executors[1]", "names 'box-a' twice"),
])
def test_bad_executors_are_named_by_their_entry(tmp_path: Path, home: Path, text: str, where: str, what: str):
    (tmp_path / "engines.yaml").write_text(ENGINES)
    problem = one(tmp_path, text + "executors_file: engines.yaml\n")
    assert problem.where == where and problem.what == what.format(file=tmp_path / "engines.yaml"), problem


def test_a_bad_executors_file_is_a_problem_of_server_yaml_exit_2(tmp_path: Path, home: Path):
    from tests.conftest import cli

    problem = one(tmp_path, "executors: [box-a]\nexecutors_file: missing.yaml\n")
    assert problem.where == "executors_file" and problem.what == f"no executors file at {tmp_path / 'missing.yaml'}"
    (tmp_path / "engines.yaml").write_text("executors:\n  box-a: {type: docker, slots: 0}\n")
    problem = one(tmp_path, "executors: [box-a]\nexecutors_file: engines.yaml\n")
    assert problem.where == "executors_file" and "executor 'box-a': slots must be" in problem.what, problem
    for args in (["--check"], ["--once"], []):
        proc = cli("serve", "--config", str(tmp_path / "server.yaml"), *args, check=2)
        assert "server.yaml has 1 problem" in proc.stderr and "executors_file (line 2)" in proc.stderr, proc.stderr
        assert "slots must be a whole number" in proc.stderr and "Traceback" not in proc.stderr

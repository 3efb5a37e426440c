"""The poller against real git: bare remotes on disk (file://), one served by `git daemon` (git://).

Git calls are counted by pointing the poller at a wrapper script that logs its argv
before running the real git: "nothing changed" must cost one ls-remote and no fetch.
"""
from __future__ import annotations

import itertools
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from soopervisor.server.config import Repository, ServerConfig
from soopervisor.server.poller import BACKOFF_CAP, CheckoutError, Poller, UnknownRepository
from soopervisor.server.queue import Queue
from tests.conftest import free_port
from tests.projects import commit_all, git, init_repo, write
from tests.server.helpers import Clock


class Remote:
    """A bare repository and a work clone pushing to it."""

    def __init__(self, root: Path, name: str = "sales") -> None:
        self.bare = root / "git" / f"{name}.git"
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        self.work = init_repo(root / f"work-{name}")
        git(self.work, "remote", "add", "origin", str(self.bare))
        self.url = f"file://{self.bare}"

    def commit(self, branch: str = "main", files: dict[str, str] | None = None, push: bool = True) -> str:
        git(self.work, "checkout", "-q", "-B", branch)
        write(self.work, files or {"file.txt": f"{branch} {time.time_ns()}\n"})
        sha = commit_all(self.work, f"on {branch}")
        if push:
            self.push(branch)
        return sha

    def push(self, branch: str = "main", *, force: bool = False) -> None:
        git(self.work, "push", "-q", *(["--force"] if force else []), "origin", f"{branch}:{branch}")

    def delete(self, branch: str) -> None:
        git(self.work, "push", "-q", "origin", f":{branch}")


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def gitlog(tmp_path: Path) -> tuple[str, Path]:
    """A git wrapper logging each call's argv (one line each) to a file."""
    log = tmp_path / "git-calls.log"
    log.touch()
    wrapper = tmp_path / "bin" / "git-logged"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{shutil.which("git")}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper), log


def calls(log: Path, word: str) -> int:
    """How many logged git calls ran the sub-command ``word``."""
    return sum(1 for line in log.read_text().splitlines() if word in line.split())


def make(tmp_path: Path, *repos: Repository, clock=None, git_cmd: str = "git", supersede: bool = False,
         interval: float = 60.0) -> tuple[Poller, Queue]:
    config = ServerConfig(storage=str(tmp_path / "artifacts"), poll_interval=interval,
                          database=str(tmp_path / "server.sqlite"), mirrors=str(tmp_path / "mirrors"),
                          supersede=supersede, repositories=tuple(repos))
    queue = Queue(config.database)
    return Poller(config, queue, git=git_cmd, clock=clock or time.time), queue


def repository(remote_or_url, **kw) -> Repository:
    url = remote_or_url.url if isinstance(remote_or_url, Remote) else remote_or_url
    kw.setdefault("name", "sales")
    return Repository(url=url, **kw)


def jobs(queue: Queue, **kw) -> list[tuple[str, str, str, str]]:
    return sorted((j.branch, j.commit, j.project, j.mode) for j in queue.list(limit=1000, **kw))


# -- heads ---------------------------------------------------------------------------------


def test_nothing_changed_costs_one_ls_remote_and_no_fetch(tmp_path, remote, gitlog):
    sha = remote.commit()
    wrapper, log = gitlog
    poller, queue = make(tmp_path, repository(remote), git_cmd=wrapper)
    first = poller.poll(poller.config.repositories[0])
    assert first.error is None and first.fetched and first.new == [("main", sha)]
    log.write_text("")
    again = poller.poll(poller.config.repositories[0])
    assert again.error is None and again.new == [] and not again.fetched
    assert again.heads == {"main": sha}
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and calls(log, "ls-remote") == 1, lines
    assert len(queue.list()) == 1


def test_a_push_queues_one_job_per_project_in_the_branch_mode(tmp_path, remote):
    remote.commit()
    repo = repository(remote, projects=(".", "pipelines/churn"), modes=(("main", "full"), ("*", "sample")))
    poller, queue = make(tmp_path, repo)
    poller.poll(repo)
    sha = remote.commit()
    result = poller.poll(repo)
    assert result.new == [("main", sha)] and result.fetched
    assert [j for j in jobs(queue) if j[1] == sha] == [("main", sha, ".", "full"),
                                                        ("main", sha, "pipelines/churn", "full")]
    # the fetched commit is in the mirror
    assert git(poller.mirror(repo), "rev-parse", "refs/heads/main").strip() == sha


def test_two_pushes_between_polls_queue_only_the_newest_head(tmp_path, remote):
    remote.commit()
    repo = repository(remote)
    poller, queue = make(tmp_path, repo)
    poller.poll(repo)
    older = remote.commit()
    newer = remote.commit()
    assert poller.poll(repo).new == [("main", newer)]
    commits = [j[1] for j in jobs(queue)]
    assert newer in commits and older not in commits and len(commits) == 2


def test_a_force_push_queues_the_new_head_once(tmp_path, remote):
    base = remote.commit()
    repo = repository(remote)
    poller, queue = make(tmp_path, repo)
    poller.poll(repo)
    remote.commit()
    poller.poll(repo)
    git(remote.work, "reset", "-q", "--hard", base)  # rewrite history: the new head is no descendant
    rewritten = remote.commit(push=False)
    remote.push(force=True)
    result = poller.poll(repo)
    assert result.error is None and result.new == [("main", rewritten)]
    assert poller.poll(repo).new == []
    assert [j[1] for j in jobs(queue)].count(rewritten) == 1 and len(queue.list()) == 3
    assert git(poller.mirror(repo), "rev-parse", "refs/heads/main").strip() == rewritten


def test_a_deleted_branch_is_forgotten_and_its_recreation_is_a_first_sight(tmp_path, remote):
    main = remote.commit()
    feature = remote.commit("feature")
    repo = repository(remote, branches=("main", "feature"))
    poller, queue = make(tmp_path, repo)
    assert sorted(poller.poll(repo).new) == [("feature", feature), ("main", main)]
    remote.delete("feature")
    result = poller.poll(repo)
    assert result.new == [] and "feature" not in result.heads
    assert "feature" not in poller.status()[0].heads
    again = remote.commit("feature")
    assert poller.poll(repo).new == [("feature", again)]
    assert ("feature", again, ".", "sample") in jobs(queue)


def test_first_sight_none_records_the_head_and_builds_the_next_one(tmp_path, remote, gitlog):
    first = remote.commit()
    wrapper, log = gitlog
    repo = repository(remote, first_sight="none")
    poller, queue = make(tmp_path, repo, git_cmd=wrapper)
    result = poller.poll(repo)
    assert result.new == [] and result.heads == {"main": first} and not result.fetched
    assert calls(log, "fetch") == 0 and queue.list() == []
    assert poller.status()[0].heads == {"main": first}
    second = remote.commit()
    assert poller.poll(repo).new == [("main", second)]
    assert jobs(queue) == [("main", second, ".", "sample")]


def test_a_restarted_poller_resumes_without_queueing_again(tmp_path, remote, gitlog):
    remote.commit()
    repo = repository(remote)
    poller, _ = make(tmp_path, repo)
    poller.poll(repo)
    poller.pause("sales")
    wrapper, log = gitlog
    restarted, queue2 = make(tmp_path, repo, git_cmd=wrapper)
    assert restarted.status()[0].paused  # pause is persisted
    restarted.resume("sales")
    result = restarted.poll(repo)
    assert result.new == [] and not result.fetched and calls(log, "fetch") == 0
    assert len(queue2.list()) == 1
    # a head that moved while the server was down is built once
    moved = remote.commit()
    assert restarted.poll(repo).new == [("main", moved)]


def test_a_crash_between_enqueue_and_recording_enqueues_again_harmlessly(tmp_path, remote, monkeypatch):
    sha = remote.commit()
    repo = repository(remote)
    poller, queue = make(tmp_path, repo)

    def crash(*a, **kw):
        raise KeyboardInterrupt  # the process dies after enqueueing, before the heads are written

    monkeypatch.setattr(poller, "_record", crash)
    with pytest.raises(KeyboardInterrupt):
        poller.poll(repo)
    assert len(queue.list()) == 1
    restarted, queue = make(tmp_path, repo)
    assert restarted.poll(repo).new == [("main", sha)]  # enqueued again: the queue keeps one job
    assert len(queue.list()) == 1 and restarted.poll(repo).new == []


def test_branch_globs_pick_the_branches(tmp_path, remote):
    remote.commit()
    remote.commit("feature/x")
    r1 = remote.commit("release/1.0")
    r2 = remote.commit("release/2.0")
    repo = repository(remote, branches=("release/*",), modes=(("release/1.*", "full"), ("*", "sample")))
    poller, queue = make(tmp_path, repo)
    result = poller.poll(repo)
    assert sorted(result.new) == [("release/1.0", r1), ("release/2.0", r2)]
    assert set(result.heads) == {"release/1.0", "release/2.0"}
    assert jobs(queue) == [("release/1.0", r1, ".", "full"), ("release/2.0", r2, ".", "sample")]


def test_supersede_is_passed_to_the_queue(tmp_path, remote):
    remote.commit()
    repo = repository(remote)
    poller, queue = make(tmp_path, repo, supersede=True)
    poller.poll(repo)
    newer = remote.commit()
    poller.poll(repo)
    states = {j.commit: j.state for j in queue.list()}
    assert states[newer] == "queued" and sorted(states.values()) == ["cancelled", "queued"]


# -- failures, schedule, status --------------------------------------------------------------


def test_an_unreachable_remote_backs_off_and_says_why(tmp_path):
    port = free_port()
    clock = Clock()
    url = f"https://robot:s3cr3t-token@127.0.0.1:{port}/acme/sales.git"
    repo = repository(url)
    poller, queue = make(tmp_path, repo, clock=clock, interval=10)
    assert poller.due() == [repo]  # never polled: due now
    delays = []
    for _ in range(4):
        result = poller.poll(repo)
        assert result.error and "s3cr3t" not in result.error and "127.0.0.1" in result.error
        status = poller.status()[0]
        delays.append(status.next_poll - clock.now)
        assert poller.due() == []
        clock.now = status.next_poll
        assert poller.due() == [repo]
    assert status.failures == 4 and "s3cr3t" not in status.last_error and "s3cr3t" not in status.url
    assert "connect" in status.last_error.lower() or "refused" in status.last_error.lower(), status.last_error
    assert status.last_success is None and queue.list() == []
    assert all(b > a * 1.5 for a, b in itertools.pairwise(delays)), delays  # grows
    assert 20 * 0.9 <= delays[0] <= 20 * 1.1
    # capped
    with poller._db() as db:
        db.execute("UPDATE poll_repos SET failures = 40")
    poller.poll(repo)
    assert poller.status()[0].next_poll - clock.now <= BACKOFF_CAP * 1.1


def test_a_remote_back_resets_the_failures(tmp_path, remote):
    remote.commit()
    clock = Clock()
    repo = repository(remote)
    poller, queue = make(tmp_path, repo, clock=clock)
    moved = tmp_path / "elsewhere.git"
    remote.bare.rename(moved)
    assert poller.poll(repo).error
    assert poller.status()[0].failures == 1
    moved.rename(remote.bare)
    assert poller.poll(repo).error is None
    status = poller.status()[0]
    assert status.failures == 0 and status.last_error is None and status.last_success == clock.now
    assert len(queue.list()) == 1


def test_due_applies_interval_with_jitter_pause_and_poll_now(tmp_path, remote):
    remote.commit()
    clock = Clock()
    repo = repository(remote)
    poller, _ = make(tmp_path, repo, clock=clock, interval=100)
    nexts = set()
    for _ in range(20):
        poller.poll(repo)
        nexts.add(poller.status()[0].next_poll - clock.now)
    assert all(90 <= n <= 110 for n in nexts) and len(nexts) > 1  # jittered
    clock.now += 80
    assert poller.due() == []
    clock.now += 40
    assert poller.due() == [repo]
    poller.pause("sales")
    assert poller.due() == [] and poller.poll_all() == []
    poller.poll_now("sales")  # asked for: polled once even though paused
    again = Poller(poller.config, poller.queue, clock=clock)  # persisted
    assert again.due() == [repo] and again.status()[0].poll_now
    again.poll(repo)
    assert again.due() == [] and not again.status()[0].poll_now and again.status()[0].paused
    again.resume("sales")
    assert again.due() == []  # polled just now
    with pytest.raises(UnknownRepository):
        again.pause("nope")


def test_poll_all_polls_every_repository(tmp_path):
    remotes = [Remote(tmp_path, f"r{i}") for i in range(3)]
    shas = [r.commit() for r in remotes]
    poller, queue = make(tmp_path, *(repository(r, name=f"r{i}") for i, r in enumerate(remotes)))
    results = poller.poll_all()
    assert [r.new for r in results] == [[("main", s)] for s in shas]
    assert sorted(j.repository for j in queue.list()) == ["r0", "r1", "r2"]
    assert [s.name for s in poller.status()] == ["r0", "r1", "r2"]


# -- checkout ------------------------------------------------------------------------------


def test_checkout_gives_the_commits_files_and_the_repositorys_origin(tmp_path, remote):
    old = remote.commit(files={"pipeline.yaml": "old\n", "sub/a.txt": "a\n"})
    repo = repository(remote)
    poller, _ = make(tmp_path, repo)
    poller.poll(repo)
    remote.commit(files={"pipeline.yaml": "new\n"})
    poller.poll(repo)
    tree = poller.checkout(repo, old, tmp_path / "run" / "repo")
    assert (tree / "pipeline.yaml").read_text() == "old\n" and (tree / "sub" / "a.txt").read_text() == "a\n"
    assert git(tree, "rev-parse", "HEAD").strip() == old
    assert git(tree, "status", "--porcelain").strip() == ""
    assert git(tree, "config", "--get", "remote.origin.url").strip() == remote.url
    with pytest.raises(CheckoutError):
        poller.checkout(repo, "0" * 40, tmp_path / "run2")


def test_checkout_refetches_when_the_mirrors_are_gone(tmp_path, remote):
    sha = remote.commit(files={"x.txt": "x\n"})
    repo = repository(remote)
    poller, _ = make(tmp_path, repo)
    poller.poll(repo)
    shutil.rmtree(tmp_path / "mirrors")
    tree = poller.checkout(repo, sha, tmp_path / "co")
    assert (tree / "x.txt").read_text() == "x\n"


def test_origin_url_loses_its_credentials(tmp_path):
    from soopervisor.server.poller import _origin_url

    assert _origin_url("https://robot:tok@host/acme/sales.git") == "https://host/acme/sales.git"
    assert _origin_url("ssh://git@host/acme/sales.git") == "ssh://host/acme/sales.git"
    assert _origin_url("git@host:acme/sales.git") == "git@host:acme/sales.git"


# -- git:// ----------------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path):
    """`git daemon` serving tmp_path/git on a free loopback port; yields git://127.0.0.1:port/."""
    base = tmp_path / "git"
    base.mkdir(exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("git daemon did not start")
            time.sleep(0.05)
    yield f"git://127.0.0.1:{port}/", proc
    proc.terminate()
    proc.wait(timeout=10)


def test_a_git_daemon_remote(tmp_path, remote, daemon, gitlog):
    base, proc = daemon
    wrapper, log = gitlog
    sha = remote.commit(files={"pipeline.yaml": "tasks: []\n"})
    repo = repository(f"{base}sales.git")
    poller, queue = make(tmp_path, repo, git_cmd=wrapper)
    result = poller.poll(repo)
    assert result.error is None and result.new == [("main", sha)]
    log.write_text("")
    assert poller.poll(repo).new == [] and calls(log, "ls-remote") == 1 and calls(log, "fetch") == 0
    newer = remote.commit(files={"pipeline.yaml": "tasks: [1]\n"})
    assert poller.poll(repo).new == [("main", newer)]
    tree = poller.checkout(repo, newer, tmp_path / "co")
    assert (tree / "pipeline.yaml").read_text() == "tasks: [1]\n"
    assert git(tree, "config", "--get", "remote.origin.url").strip() == repo.url
    assert len(queue.list()) == 2
    # the daemon stops: the remote is unreachable, and the status says so
    proc.terminate()
    proc.wait(timeout=10)
    failed = poller.poll(repo)
    assert failed.error and "127.0.0.1" in failed.error
    status = poller.status()[0]
    assert status.failures == 1 and status.last_error == failed.error and status.heads == {"main": newer}


def test_the_poller_needs_no_terminal(tmp_path):
    # an https remote that asks for a password must fail, not prompt: GIT_TERMINAL_PROMPT=0
    from soopervisor.server.poller import _env

    env = _env(repository("https://example.invalid/x.git", deploy_key="/keys/id"))
    assert env["GIT_TERMINAL_PROMPT"] == "0" and "/keys/id" in env["GIT_SSH_COMMAND"]
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"] and env["LC_ALL"] == "C"


def test_a_remote_that_never_answers_times_out(tmp_path):
    # a socket that accepts connections (the kernel's backlog) and never says a word
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        repo = repository(f"git://127.0.0.1:{silent.getsockname()[1]}/sales.git")
        poller, _ = make(tmp_path, repo)
        poller.timeout = 1.0
        start = time.monotonic()
        result = poller.poll(repo)
    assert time.monotonic() - start < 10
    assert result.error and "timed out after 1s" in result.error and "ls-remote" in result.error
    assert poller.status()[0].failures == 1


_RACER = """
import sys, time
from soopervisor.server.config import Repository, ServerConfig
from soopervisor.server.poller import Poller
from soopervisor.server.queue import Queue
root, url, go = sys.argv[1:4]
config = ServerConfig(storage=root + "/artifacts", database=root + "/server.sqlite", mirrors=root + "/mirrors",
                      repositories=(Repository(url=url, name="sales", projects=(".", "b")),))
poller = Poller(config, Queue(config.database))
while time.time() < float(go):
    time.sleep(0.001)
result = poller.poll(config.repositories[0])
print(result.error or "ok", len(result.new))
"""


def test_two_processes_polling_at_once_queue_each_head_once(tmp_path, remote):
    remote.commit()
    repo = repository(remote, projects=(".", "b"))
    poller, queue = make(tmp_path, repo)
    poller.poll(repo)
    sha = remote.commit()
    go = str(time.time() + 2.0)
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path), remote.url, go],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path.cwd())
             for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert all(out.startswith("ok") for out, _ in outs), outs
    assert [j for j in jobs(queue) if j[1] == sha] == [("main", sha, ".", "sample"), ("main", sha, "b", "sample")]
    assert poller.poll(repo).new == []


def test_a_deleted_branch_leaves_the_mirror_so_a_branch_below_its_name_can_come(tmp_path, remote):
    remote.commit()
    old = remote.commit("feature")
    repo = repository(remote, branches=("main", "feature*"))
    poller, _ = make(tmp_path, repo)
    poller.poll(repo)
    remote.delete("feature")
    git(remote.work, "checkout", "-q", "main")
    git(remote.work, "branch", "-q", "-D", "feature")
    assert poller.poll(repo).error is None
    below = remote.commit("feature/x")
    result = poller.poll(repo)
    assert result.error is None and result.new == [("feature/x", below)]
    # the deleted branch's commit, queued earlier, still checks out
    assert (poller.checkout(repo, old, tmp_path / "co") / "file.txt").exists()

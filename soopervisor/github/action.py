"""The Action's entry point: ``soopervisor github run``, as a GitHub runner calls it.

It reads what a runner provides (the ``GITHUB_*`` variables, the event file,
the Action's inputs as ``INPUT_*``), decides whether and how to run
(``events.decide`` plus the commenter's permission), pins the commit, runs the
pipeline exactly as ``soopervisor run`` does, and reports back: the job
summary, the step outputs, and for a pull-request comment the reactions and
the one report comment of that pull request.

Order matters: masking is set up first, the storage secrets are checked
before any API call or pipeline work, and the report comment is written
before the run starts, so a cancelled or crashed job leaves a trace.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import Cancelled, InvalidProject, SoopervisorError, UsageError
from ..redact import CREDENTIALS
from ..troubleshooting import run_topic, topic_url
from .events import MODES, Trigger, decide
from .report import MARKER, Report

START_REACTION = "rocket"
END_REACTION = {"succeeded": "hooray"}
FAILED_REACTION = "confused"


@dataclass(frozen=True)
class Inputs:
    mode: str
    storage: str | None
    project: str
    image: str | None
    secrets: tuple[str, ...]
    allow_forks: bool

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Inputs:
        def get(name: str, default: str = "") -> str:
            return (env.get(f"INPUT_{name}") or default).strip()

        allow = get("ALLOW_FORKS", "false").lower()
        if allow not in ("true", "false"):
            raise UsageError(f"allow-forks must be true or false, not {allow!r}")
        mode = get("MODE", "auto").lower()
        if mode not in MODES:
            raise UsageError(f"mode must be auto, sample or full, not {mode!r}",
                             hint="set the Action's `mode:` input to one of them")
        return cls(mode=mode, storage=get("STORAGE") or env.get("SOOPERVISOR_STORAGE") or None,
                   project=get("PROJECT", "."), image=get("IMAGE") or None,
                   secrets=tuple(get("SECRETS").replace(",", " ").split()), allow_forks=allow == "true")


class Runner:
    """What the runner gives this step: its files, variables and the workflow-command channel."""

    def __init__(self, env: dict[str, str], out=None) -> None:
        self.env = env
        self.out = out or sys.stdout
        # the run's log arrives from its thread while credentials may be masked from another
        self._lock = threading.RLock()
        self._token: str | None = None  # set while the runner ignores workflow commands
        self._line_start = True

    def need(self, name: str) -> str:
        value = self.env.get(name)
        if not value:
            raise UsageError(f"{name} is not set: `soopervisor github run` runs as a step of a GitHub Actions job",
                             hint="use the Action (`uses: …/soopervisor@…`) in a workflow; "
                                  "`soopervisor github init` writes one")
        return value

    def command(self, line: str) -> None:
        with self._lock:
            # a command counts only at the start of a line: end the pipeline's unfinished one
            self.out.write(("" if self._line_start else "\n") + line + "\n")
            self.out.flush()
            self._line_start = True

    def stream(self, chunk: str) -> None:
        """A piece of the run's log, already redacted by the run."""
        with self._lock:
            self.out.write(chunk)
            self.out.flush()
            if chunk:
                self._line_start = chunk.endswith("\n")

    @contextmanager
    def commands_stopped(self):
        """The pipeline's output cannot issue workflow commands while this lasts.

        A line the pipeline prints is copied to the job log as it is (redacted), and
        the runner would obey one starting with ``::`` — an annotation, ``::endgroup::``,
        ``::add-mask::`` of arbitrary text, or worse from a fork's code. Between
        ``::stop-commands::TOKEN`` and ``::TOKEN::`` the runner ignores commands; the
        token is random, so the pipeline cannot end the pause itself.
        """
        with self._lock:
            self._stop_commands()
        try:
            yield
        finally:
            with self._lock:
                self._resume_commands()

    def _stop_commands(self) -> None:
        self._token = os.urandom(16).hex()
        self.command(f"::stop-commands::{self._token}")

    def _resume_commands(self) -> None:
        token, self._token = self._token, None
        self.command(f"::{token}::")

    def log(self, text: str) -> None:
        self.command(CREDENTIALS.redact(text))

    def mask(self, value: str) -> None:
        with self._lock:
            paused = self._token is not None
            if paused:  # a credential refreshed mid-run: the mask must be obeyed, so resume for it
                self._resume_commands()
            # one ::add-mask:: per line: the runner masks line by line
            for line in value.splitlines():
                if line.strip():
                    self.command(f"::add-mask::{line}")
            if paused:
                self._stop_commands()

    def error(self, message: str, title: str = "soopervisor") -> None:
        text = CREDENTIALS.redact(message).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        self.command(f"::error title={title}::{text}")

    def output(self, **values: str) -> None:
        path = self.env.get("GITHUB_OUTPUT")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(f"{name}={CREDENTIALS.redact(str(value)).replace(chr(10), ' ')}\n" for name, value in values.items())

    def summary(self, markdown: str) -> None:
        path = self.env.get("GITHUB_STEP_SUMMARY")
        if path:
            with open(path, "a", encoding="utf-8") as f:
                f.write(markdown + "\n")

    @property
    def workflow_url(self) -> str | None:
        server, repo, run_id = (self.env.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
        return f"{server}/{repo}/actions/runs/{run_id}" if server and repo and run_id else None


def _event_payload(path: str) -> dict:
    """The event file the runner wrote; a missing or damaged one is a usage error, not a crash."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UsageError(f"the event file GITHUB_EVENT_PATH={path} cannot be read as JSON: {e}",
                         hint="`soopervisor github run` runs as a step of a GitHub Actions job, "
                              "which writes that file; outside one, use `soopervisor run`") from None
    if not isinstance(payload, dict):
        raise UsageError(f"the event file GITHUB_EVENT_PATH={path} is not a JSON object",
                         hint="the runner writes the event's payload there as an object")
    return payload


def main(env: dict[str, str] | None = None, out=None) -> int:
    """Run one Action step; the exit code fails the job (0 also when nothing was asked for)."""
    runner = Runner(dict(os.environ) if env is None else env, out)
    if runner.env.get("GITHUB_ACTIONS") != "true":
        raise UsageError("`soopervisor github run` runs as a step of a GitHub Actions job (GITHUB_ACTIONS is not true)",
                         hint="use the Action (`uses: OWNER/REPO@REF`) in a workflow; "
                              "`soopervisor github init` writes one. Locally, use `soopervisor run`")
    # every credential registered from now on (a refreshed access token, a
    # secret's value) is masked by the runner too, before anything can print it
    CREDENTIALS.subscribe(runner.mask)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return Step(runner).run()
    except SoopervisorError as e:
        runner.error(e.message + (f" — {e.hint}" if e.hint else ""))
        return e.exit_code
    except (Cancelled, KeyboardInterrupt):
        runner.error("cancelled: the container was removed")
        return 130
    finally:
        CREDENTIALS.unsubscribe(runner.mask)
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):  # a superseding run or a cancelled job: remove the container
    raise Cancelled()


class Step:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.env = runner.env
        self.inputs = Inputs.from_env(self.env)
        self.api = None
        self.trigger: Trigger | None = None

    # -- the flow --------------------------------------------------------------
    def run(self) -> int:
        workspace = Path(self.env.get("GITHUB_WORKSPACE") or ".").resolve()
        event_name = self.runner.need("GITHUB_EVENT_NAME")
        payload = _event_payload(self.runner.need("GITHUB_EVENT_PATH"))
        for name in self.inputs.secrets:
            if self.env.get(name):
                CREDENTIALS.add(self.env[name])
        trigger = self.trigger = decide(event_name, payload, self.inputs.mode, self.env.get("GITHUB_SHA"))
        self.runner.log(f"soopervisor: {trigger.why}")
        if not trigger.run:
            if trigger.reply and trigger.pr_number:
                self._api().comment(trigger.pr_number, trigger.reply)
            self.runner.output(status="skipped", commit="", location="")
            return 0

        report = Report(status="running", mode=trigger.mode, workflow_url=self.runner.workflow_url,
                        trigger=self._trigger_text(event_name, payload))
        if trigger.from_comment:
            allowed, why = self._api().can_write(trigger.commenter, trigger.association)
            self.runner.log(f"soopervisor: {why}")
            if not allowed:
                self.runner.output(status="skipped", commit="", location="")
                return 0
        missing = self._missing_secrets()
        if missing:
            return self._fail_early(report, missing)
        if trigger.from_comment:
            pr = self._api().pull_request(trigger.pr_number)
            if pr.is_fork and not self.inputs.allow_forks:
                return self._refuse_fork(report, pr)
            # the commit a commenter approved is the commit that runs: the head is read
            # now, seconds or minutes after the comment, and a push in between is refused
            unapproved = _unapproved(trigger, pr)
            if unapproved:
                return self._refuse_unapproved(report, pr, unapproved)
            commit = pr.head_sha
            named = f", the commit @{trigger.commenter} named" if trigger.approved else ""
            self.runner.log(f"soopervisor: #{pr.number}'s head is {commit[:12]}{named}; pinned for this run")
            report.commit = commit
            self._api().react(trigger.comment_id, START_REACTION)
            self._post(report)
            _checkout(workspace, commit, pr_number=pr.number)
        else:
            commit = trigger.commit or _git(workspace, "rev-parse", "HEAD")
            report.commit = commit
            _checkout(workspace, commit)

        try:
            status = self._validate_and_run(report, self._project_dir(workspace))
        except Cancelled:
            report.status = "cancelled"
            report.notes.append("The job was cancelled (a newer run for the same pull request or branch "
                                "supersedes a running one); the container was removed.")
            self._finish(report)
            raise
        except SoopervisorError as e:
            report.status, report.error, report.hint, report.docs = "error", e.message, e.hint, e.docs
            self._finish(report)
            raise
        if trigger.from_comment:
            moved = self._api().pull_request(trigger.pr_number).head_sha
            if moved != commit:
                report.notes.append(f"The pull request's head moved to `{moved[:12]}` during the run; "
                                    f"these results are for `{commit[:12]}`, its head when the run started. "
                                    "Review the new head, then comment `/soopervisor run <its SHA>` to run it.")
        self._finish(report)
        return status

    def _validate_and_run(self, report: Report, project_dir: Path) -> int:
        import soopervisor

        validation = soopervisor.validate(project_dir)
        report.project = validation.project.name if validation.project else project_dir.name
        if not validation.ok:
            report.status, report.validation = "invalid", validation.format()
            self.runner.error("the project is invalid; the validation report is in the job summary")
            self.runner.log(validation.format())
            return InvalidProject.exit_code
        started = time.monotonic()
        self.runner.command(f"::group::{report.mode} run of {report.commit[:12]}")
        try:
            with self.runner.commands_stopped():
                run = soopervisor.run(project_dir, sample=report.mode == "sample", storage=self.inputs.storage,
                                      image=self.inputs.image, secrets=self.inputs.secrets,
                                      on_line=self.runner.stream)
        finally:
            self.runner.command("::endgroup::")
        report.duration = run.duration if run.duration is not None else time.monotonic() - started
        report.status = run.status
        report.storage = run.storage_url
        report.location = f"{(run.storage_url or '').rstrip('/')}/{run.project}/{run.commit}/{run.id}"
        report.run_id = run.id
        report.local_storage = _is_local(run.storage_url) and self.env.get("RUNNER_ENVIRONMENT") == "github-hosted"
        report.failed_task, report.error = run.failed_task, None if run.ok else run.error
        topic = run_topic(run)
        report.docs = topic_url(topic) if topic else None
        report.hint = None if run.ok else run.hint  # a missing module, a host the container could not reach
        if not run.ok and run.log_path:
            lines = Path(run.log_path).read_text(encoding="utf-8", errors="replace").splitlines()
            report.log_tail = lines[-30:]
        report.files = self._artifact_files(run)
        if not run.ok:
            self.runner.error(f"run {run.status}" + (f" at task {run.failed_task}" if run.failed_task else "")
                              + (f": {run.error}" if run.error else ""))
        return 0 if run.ok else 1

    def _artifact_files(self, run) -> list[tuple[str, int]]:
        """(name, size) of what this run stored, from its set's manifest; empty (with a note) when unreadable."""
        from ..artifacts import get_artifacts

        try:
            # this run's own set (run=): the commit may hold newer or better sets than the one being reported
            arts = get_artifacts(run.commit, project=run.project, storage=run.storage_url, run=run.id)
        except SoopervisorError as e:
            self.runner.log(f"soopervisor: could not list the stored artifacts: {e.message}")
            return []
        return [(f.name, f.size) for f in arts.files]

    # -- reporting -------------------------------------------------------------
    def _finish(self, report: Report) -> None:
        self.runner.summary(report.markdown())
        self.runner.output(status=report.status, commit=report.commit or "", location=report.location or "")
        if self.trigger and self.trigger.from_comment and self.api is not None:
            self._post(report)
            self.api.react(self.trigger.comment_id, END_REACTION.get(report.status, FAILED_REACTION))

    def _post(self, report: Report) -> None:
        self._api().upsert_comment(self.trigger.pr_number, MARKER, report.markdown(marker=True))

    def _fail_early(self, report: Report, missing) -> int:
        names = ", ".join(s.name for s in missing)
        storage = self.inputs.storage
        report.status = "error"
        report.error = f"the storage {storage} needs the secret{'s' if len(missing) > 1 else ''} {names}, " \
                       "which the job does not have"
        report.hint = ("add " + ", ".join(f"`gh secret set {s.name}`" for s in missing)
                       + " and pass each to the Action's step in `env:` (e.g. "
                       + f"`{missing[0].name}: ${{{{ secrets.{missing[0].name} }}}}`); "
                       + "`soopervisor github init --storage URL` writes a workflow that does")
        self.runner.error(f"{report.error}. Fix: {report.hint}", title="missing storage secret")
        self._finish(report)
        return 2

    def _refuse_fork(self, report: Report, pr) -> int:
        report.status = "error"
        report.commit = pr.head_sha
        report.error = (f"#{pr.number} comes from the fork {pr.head_repo or '(deleted)'}; its code would run "
                        "with this repository's storage credential and secrets, so forks are not run by default")
        report.hint = ("review the code, then set `allow-forks: 'true'` on the Action in the workflow, "
                       "or push the branch to this repository and open the pull request from there")
        self.runner.log(f"soopervisor: {report.error}")
        self._post(report)
        self.runner.summary(report.markdown())
        self.runner.output(status="skipped", commit=pr.head_sha, location="")
        return 0

    def _refuse_unapproved(self, report: Report, pr, why: str) -> int:
        """The head is not the commit the comment approved: reply saying so, run nothing."""
        report.status = "error"
        report.commit = pr.head_sha
        report.error = why
        self.runner.log(f"soopervisor: {why}")
        self._api().comment(pr.number, f"@{self.trigger.commenter} {why}")
        self._api().react(self.trigger.comment_id, FAILED_REACTION)
        self.runner.summary(report.markdown())
        self.runner.output(status="skipped", commit=pr.head_sha, location="")
        return 0

    # -- helpers ---------------------------------------------------------------
    def _api(self):
        if self.api is None:
            from .api import GitHubAPI

            token = self.runner.need("GITHUB_TOKEN")
            CREDENTIALS.add(token)
            self.api = GitHubAPI(self.runner.need("GITHUB_REPOSITORY"), token,
                                 self.env.get("GITHUB_API_URL"), log=self.runner.log)
        return self.api

    def _missing_secrets(self):
        from .storage_secrets import missing_secrets

        return missing_secrets(self.inputs.storage, self.env)

    def _project_dir(self, workspace: Path) -> Path:
        path = (workspace / self.inputs.project).resolve()
        if path != workspace and workspace not in path.parents:
            raise UsageError(f"project {self.inputs.project!r} is outside the repository",
                             hint="set `project:` to a folder inside the repository, e.g. `pipelines/sales`")
        if not path.is_dir():
            raise UsageError(f"project folder {self.inputs.project!r} does not exist at this commit",
                             hint="set the Action's `project:` input to the folder with pipeline.yaml")
        return path

    def _trigger_text(self, event_name: str, payload: dict) -> str:
        t = self.trigger
        if t.from_comment:
            url = (payload.get("comment") or {}).get("html_url")
            return f"@{t.commenter} in [a comment]({url})" if url else f"@{t.commenter}"
        if event_name == "push":
            return f"push to `{payload.get('ref', '')}`"
        return event_name


#: hex digits a comment must give to approve a fork's head
FORK_SHA_DIGITS = 12


def _unapproved(trigger: Trigger, pr) -> str | None:
    """Why ``pr``'s head is not a commit the comment approved; None when it is.

    A comment naming a SHA approves that commit only. Without a SHA, the head
    is taken as approved for the repository's own branches (whoever may push
    there may run anyway); a fork's head must be named.
    """
    head = pr.head_sha.lower()
    if trigger.approved is not None and pr.is_fork and len(trigger.approved) < FORK_SHA_DIGITS:
        # a short prefix of a commit of one's own can be matched in minutes of hashing
        # (7 digits: 2**28 tries); with 12 it is out of reach
        return (f"#{pr.number} comes from the fork {pr.head_repo or '(deleted)'}: name its head commit with at "
                f"least {FORK_SHA_DIGITS} hex digits (`{trigger.approved}` is too short to rule out a forged "
                f"commit with the same prefix). Nothing was run. Its head is now `{head[:12]}`; after reviewing "
                f"it, comment `/soopervisor run {head[:12]}`.")
    if trigger.approved is None:
        if not pr.is_fork:
            return None
        return (f"#{pr.number} comes from the fork {pr.head_repo or '(deleted)'}: a run of it must name the "
                f"head commit you reviewed, so that a push made after your comment cannot run. Nothing was run. "
                f"Its head is now `{head[:12]}`; after reviewing it, comment `/soopervisor run {head[:12]}`.")
    if head.startswith(trigger.approved):
        return None
    return (f"The head of #{pr.number} is `{head[:12]}`, not `{trigger.approved}` as your comment says: it moved "
            "after the comment, or the SHA names another commit. Nothing was run. Review the head, then "
            "comment `/soopervisor run <its SHA>`.")


def _is_local(url: str | None) -> bool:
    return not url or "://" not in url or url.startswith("file://")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}",
                         hint="the workflow must check out the repository first (`uses: actions/checkout@v4`)")
    return done.stdout.strip()


def _checkout(repo: Path, commit: str, pr_number: int | None = None) -> None:
    """Make ``commit`` the checked-out HEAD; fetch it (or the pull request's ref) when missing."""
    if _git(repo, "rev-parse", "HEAD") == commit:
        return
    have = subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True, check=False).returncode == 0
    if not have:
        # by SHA first (GitHub serves reachable SHAs); a pull request's ref as the fallback
        fetched = subprocess.run(["git", "-C", str(repo), "fetch", "--quiet", "--no-tags", "origin", commit],
                                 capture_output=True, check=False).returncode == 0
        if not fetched and pr_number is not None:
            _git(repo, "fetch", "--quiet", "--no-tags", "origin", f"+refs/pull/{pr_number}/head")
    _git(repo, "checkout", "--quiet", "--detach", commit)

"""End to end: real git repositories, the real CLI, the real Docker engine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from soopervisor.runs import RunStore

from .conftest import cli
from .projects import MAKE_DATA, VALID, commit_all, function_task, git, make_project, write

pytestmark = pytest.mark.docker


def stored_set(home: Path, project: str, commit: str, run_id: str | None = None) -> Path:
    """The stored set of run ``run_id`` (default: the newest run) of ``project@commit``."""
    return home / "artifacts" / project / commit / (run_id or RunStore().list()[0].id)


def staging_left(home: Path) -> list[str]:
    root = home / "staging"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_sample_run_streams_stores_and_lists(tmp_path, engine, home):
    project = make_project(tmp_path)
    sha = git(project, "rev-parse", "HEAD").strip()

    proc = cli("run", str(project), check=0)

    assert "==> soopervisor: build pipeline" in proc.stdout
    assert "--env--sample true" in proc.stdout
    assert "succeeded" in proc.stdout
    first = RunStore().list()[0]
    set_dir = stored_set(home, "proj", sha, first.id)
    assert set_dir.name in proc.stdout  # where the set is
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["commit"] == sha and manifest["status"] == "succeeded" and manifest["mode"] == "sample"
    assert manifest["exit_code"] == 0 and manifest["dirty"] is False and manifest["run_id"] == first.id
    assert manifest["image"] and manifest["image_digest"] and manifest["env_hash"]
    files = {f["path"]: f for f in manifest["files"]}
    assert "output/data.csv" in files and manifest["log"]["path"] == "soopervisor.log"
    assert (set_dir / "files/output/data.csv").read_text().splitlines() == ["x", "0", "1", "2"]
    assert "==> soopervisor: collect artifacts" in (set_dir / "soopervisor.log").read_text()
    assert first.executor == "docker" and first.owner_host and first.owner_pid and first.owner_started
    assert staging_left(home) == []

    # the cached environment image carries no run facts, CA paths or secrets
    env_image = engine.images.get(f"soopervisor-env:{manifest['env_hash'][:20]}")
    env_names = {e.split("=", 1)[0] for e in env_image.attrs["Config"]["Env"]}
    assert not env_names & {"SOOPERVISOR_COMMIT", "SOOPERVISOR_RUN_ID", "SSL_CERT_FILE", "PIP_CERT"}
    assert not env_image.attrs["Config"].get("Volumes")

    listing = cli("artifacts", "list", cwd=project, check=0).stdout
    assert sha[:7] in listing and "sample" in listing and "succeeded" in listing
    runs = json.loads(cli("runs", "--json", check=0).stdout)
    assert runs[0]["commit"] == sha and runs[0]["status"] == "succeeded"

    # the second run finds the environment image and installs nothing
    again = cli("run", str(project), "--full", check=0)
    assert "environment cache hit" in again.stdout
    # issue 12: the cached environment's stages are named once, by the cache hit (not announced again)
    assert "skipping setup env, ensure ploomber and compile bytecode" in again.stdout
    assert "==> soopervisor: setup env" not in again.stdout
    assert "Collecting" not in again.stdout  # pip installed nothing
    # the full run has a set of its own; the sample run's set is still there
    full_dir = stored_set(home, "proj", sha)
    assert full_dir != set_dir
    assert (full_dir / "files/output/data.csv").read_text().splitlines()[-1] == "9"
    assert (set_dir / "files/output/data.csv").read_text().splitlines() == ["x", "0", "1", "2"]

    out = tmp_path / "dl"
    cli("artifacts", "download", sha[:8], "--to", str(out), cwd=project, check=0)
    assert (out / "output/data.csv").read_text().splitlines()[-1] == "9"


def test_commit_and_dirty_flag_reach_the_container_not_the_changes(tmp_path, engine, home):
    files = function_task("print('commit in container:', os.environ['SOOPERVISOR_COMMIT'], os.environ['SOOPERVISOR_DIRTY'])")
    project = make_project(tmp_path, files)
    sha = git(project, "rev-parse", "HEAD").strip()
    (project / "functions.py").write_text(files["functions.py"].replace("print(", "print('UNCOMMITTED EDIT'); print("))

    proc = cli("run", str(project), check=0)

    assert f"commit in container: {sha} true" in proc.stdout
    assert "UNCOMMITTED EDIT" not in proc.stdout
    assert "uncommitted" in proc.stdout + proc.stderr  # the warning says they are not in the run
    manifest = json.loads((stored_set(home, "proj", sha) / "manifest.json").read_text())
    assert manifest["dirty"] is True


def test_monorepo_subfolder_runs_from_its_folder(tmp_path, engine, home):
    project = make_project(tmp_path, subdir="pipelines/churn", name="mono")
    sha = git(project, "rev-parse", "HEAD").strip()
    cli("run", str(project), check=0)
    assert (stored_set(home, "mono-pipelines-churn", sha) / "files/output/data.csv").exists()


def test_secrets_are_redacted_in_every_sink(tmp_path, engine, home):
    secret = "pa55-Wörd-Z9"
    files = function_task(
        "s = os.environ['MY_TOKEN']\n"
        "print('token:', s, 'twice:', s + s, flush=True)\n"
        "print('overlap: p' + s, flush=True)\n"
        "sys.stdout.write(s[:4]); sys.stdout.flush()\n"
        "sys.stdout.write(s[4:] + ' split\\n'); sys.stdout.flush()\n"
        "raise RuntimeError('failing with ' + s)\n"
    )
    project = make_project(tmp_path, files)
    sha = git(project, "rev-parse", "HEAD").strip()

    proc = cli("run", str(project), "--secret", "MY_TOKEN", env={"MY_TOKEN": secret}, check=1)

    set_dir = stored_set(home, "proj", sha)
    sinks = {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "stored log": (set_dir / "soopervisor.log").read_text(),
        "manifest": (set_dir / "manifest.json").read_text(),
        "runs": cli("runs", "--json", check=0).stdout,
    }
    run = RunStore().list()[0]
    sinks["local log"] = Path(run.log_path).read_text()
    for name, text in sinks.items():
        assert secret not in text, f"secret leaked into {name}"
    assert "token: *** twice: ***" in sinks["stored log"]
    assert "overlap: p***" in sinks["stored log"]
    assert "*** split" in sinks["stored log"]


def test_failing_pipeline_exit_1_names_the_task_and_stores_the_log(tmp_path, engine, home):
    files = dict(VALID)
    files["tasks/make_data.py"] = MAKE_DATA.replace("rows = ", "raise ValueError('broken data'); rows = ")
    project = make_project(tmp_path, files)
    sha = git(project, "rev-parse", "HEAD").strip()

    # a 2-character secret matches inside our own markers ("==> soopervisor: ..."): detection
    # looks at the raw log, so the task and the stage are still found
    proc = cli("run", str(project), "--secret", "SHORT", env={"SHORT": "so"}, check=1)

    assert "make_data" in proc.stderr and "failed" in proc.stderr
    # issue 12: the log was streamed just above: the summary does not repeat its tail
    assert "last lines of the log" not in proc.stderr and "broken data" in proc.stdout
    assert "Traceback" not in proc.stderr.split("✗ run")[0]
    manifest = json.loads((stored_set(home, "proj", sha) / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["exit_code"] != 0
    assert manifest["failed_task"] == "make_data"
    # partial outputs are collected too: the partially executed notebook
    assert any(f["path"] == "output/make_data.ipynb" for f in manifest["files"])
    assert "stage 'build pipeline'" in manifest["error"]  # the stage that failed, not the last one
    record = RunStore().list()[0]
    assert (record.status, record.failed_task, record.stage) == ("failed", "make_data", "collect artifacts")
    assert "failed" in cli("artifacts", "list", cwd=project, check=0).stdout


def test_invalid_utf8_and_very_long_lines(tmp_path, engine, home):
    files = function_task(
        "sys.stdout.flush()\n"
        "sys.stdout.buffer.write(b'bad bytes: \\xff\\xfe\\xc3 end\\n')\n"
        "sys.stdout.buffer.write(b'L' * 300000 + b'\\n')\n"
        "sys.stdout.flush()\n"
    )
    project = make_project(tmp_path, files)
    sha = git(project, "rev-parse", "HEAD").strip()
    proc = cli("run", str(project), check=0)
    log = (stored_set(home, "proj", sha) / "soopervisor.log").read_text(encoding="utf-8")
    assert "bad bytes: \ufffd" in log
    assert log.count("L" * 1000) >= 290  # all of it kept, in pieces no longer than the line limit
    assert max(len(line) for line in log.splitlines()) <= 64 * 1024
    assert "\ufffd" in proc.stdout


def test_timeout_stops_and_removes_the_container(tmp_path, engine, home):
    files = dict(VALID)
    files["tasks/make_data.py"] = MAKE_DATA + "import time\ntime.sleep(600)\n"
    project = make_project(tmp_path, files)
    proc = cli("run", str(project), "--timeout", "20", check=1)
    assert "timed out after 20s" in proc.stderr
    assert "hint: raise --timeout" in proc.stderr and "#run-timeout" in proc.stderr
    # the engine fixture asserts that no container is left


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 130)])
def test_interrupt_removes_the_container(tmp_path, engine, home, sig, code):
    files = function_task("print('SLEEPING', flush=True)\nimport time\ntime.sleep(600)")
    project = make_project(tmp_path, files)
    proc = subprocess.Popen(
        [sys.executable, "-m", "soopervisor", "run", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    seen = []
    deadline = time.monotonic() + 400
    for line in proc.stdout:
        seen.append(line)
        if "SLEEPING" in line or time.monotonic() > deadline:
            break
    proc.send_signal(sig)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == code, err
    # a signal cancels the run: recorded cancelled (interrupted means its owner died), set stored
    assert "cancelled" in err and "Traceback" not in err
    run = RunStore().list()[0]
    assert run.status == "cancelled" and ("SIGTERM" in run.error or "Ctrl-C" in run.error), run.error
    left = engine.containers.list(all=True, filters={"label": f"soopervisor.run={run.id}"})
    assert not left
    set_dir = stored_set(home, "proj", run.commit, run.id)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["status"] == "cancelled" and "SLEEPING" in (set_dir / "soopervisor.log").read_text()
    assert staging_left(home) == []


def test_changed_requirements_rebuild_the_environment(tmp_path, engine, home):
    project = make_project(tmp_path)
    first = cli("run", str(project), check=0).stdout
    assert "environment cache" in first
    # unique content, so the engine cannot hold this environment from an earlier test run
    write(project, {"requirements.txt": f"# {uuid.uuid4()}\nsix==1.16.0\n"})
    commit_all(project, "add six")
    second = cli("run", str(project), check=0).stdout
    manifest = json.loads((stored_set(home, "proj", git(project, "rev-parse", "HEAD").strip()) / "manifest.json").read_text())
    try:
        assert "environment cache miss" in second
        # issue 12: pip's lines are folded in the terminal; the run's log has them
        assert "six==1.16.0" in Path(RunStore().list()[0].log_path).read_text()
        third = cli("run", str(project), check=0).stdout
        assert "environment cache hit" in third
    finally:
        engine.images.remove(f"soopervisor-env:{manifest['env_hash'][:20]}", force=True)


def test_engine_down_exit_3_with_hint(tmp_path, home):
    project = make_project(tmp_path)
    proc = cli("run", str(project), env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, check=3)
    assert "cannot reach the Docker engine" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_image_exit_2(tmp_path, engine):
    project = make_project(tmp_path)
    proc = cli("run", str(project), "--image", "no-such-image-soopervisor:404", check=2)
    assert "no-such-image-soopervisor:404" in proc.stderr and "hint:" in proc.stderr


def test_invalid_project_stops_before_docker(tmp_path):
    project = make_project(tmp_path, {"pipeline.yaml": "tasks: []\n"})
    proc = cli("run", str(project), env={"DOCKER_HOST": "unix:///nonexistent.sock"}, check=2)
    assert "no-tasks" in proc.stderr or "tasks" in proc.stderr
    assert "Docker" not in proc.stderr


def test_storage_not_writable_exit_3_before_running(tmp_path, engine):
    project = make_project(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = cli("run", str(project), "--storage", str(blocker / "store"), check=3)
    assert "hint:" in proc.stderr
    assert "==> soopervisor" not in proc.stdout


def test_missing_secret_is_a_usage_error(tmp_path):
    project = make_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_ANYWHERE"}
    proc = cli("run", str(project), "--secret", "NOT_SET_ANYWHERE", env=env, check=2)
    assert "NOT_SET_ANYWHERE" in proc.stderr


def test_original_form_with_local_storage_path(tmp_path, engine, home):
    project = make_project(tmp_path)
    sha = git(project, "rev-parse", "HEAD").strip()
    store = tmp_path / "elsewhere"
    cli(str(project), str(store), check=0)
    assert (store / "proj" / sha / RunStore().list()[0].id / "manifest.json").exists()


def test_storage_failing_after_the_run_keeps_the_set_locally(tmp_path, engine, home, monkeypatch):
    import soopervisor
    from soopervisor.errors import StorageUnavailable
    from soopervisor.storage.local import LocalStorage

    def broken_put(self, project, commit, run_id, src):
        raise StorageUnavailable("No space left on device", "free some space")

    monkeypatch.setattr(LocalStorage, "put_set", broken_put)
    project = make_project(tmp_path)
    with pytest.raises(StorageUnavailable) as info:
        soopervisor.run(project)
    kept = next((home / "unsaved").iterdir())
    assert str(kept) in info.value.hint
    assert (kept / "files/output/data.csv").exists()
    # the kept set says what happened: failed, because storing failed (not "succeeded")
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "No space left on device" in manifest["error"]
    run = soopervisor.list_runs()[0]
    assert run.status == "failed" and "No space left on device" in run.error
    assert staging_left(home) == []


def test_api_run_in_the_background_streams_lines(tmp_path, engine, home):
    import soopervisor

    project = make_project(tmp_path, function_task("print('from the pipeline', flush=True)"))
    lines: list[str] = []
    run = soopervisor.run(project, wait=False, on_line=lines.append)
    assert run.status == "running"
    assert [r.id for r in soopervisor.list_runs()] == [run.id]
    deadline = time.monotonic() + 400
    while soopervisor.list_runs()[0].status == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert soopervisor.list_runs()[0].status == "succeeded"
    assert any("from the pipeline" in line for line in lines)
    assert all(line.endswith("\n") for line in lines)
    arts = soopervisor.get_artifacts(run.commit[:7], project="proj")
    assert arts.path("output/emitted.txt").read_text() == "done"


def test_concurrent_cold_runs_build_the_environment_once(tmp_path, engine, home):
    project = make_project(tmp_path)
    write(project, {"requirements.txt": f"# {uuid.uuid4()}\n"})  # an environment no engine holds yet
    commit_all(project, "unique environment")
    procs = [
        subprocess.Popen([sys.executable, "-m", "soopervisor", "run", str(project)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    manifest = json.loads((stored_set(home, "proj", git(project, "rev-parse", "HEAD").strip()) / "manifest.json").read_text())
    try:
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert sum("environment cache miss" in out for out in outputs) == 1
        assert sum("built by a concurrent run" in out for out in outputs) == 1
    finally:
        engine.images.remove(f"soopervisor-env:{manifest['env_hash'][:20]}", force=True)


def test_products_declared_outside_output_are_stored(tmp_path, engine, home):
    files = function_task("print('writing products', flush=True)")
    files["pipeline.yaml"] = files["pipeline.yaml"].replace("output/emitted.txt", "products/emitted.txt")
    project = make_project(tmp_path, files)
    sha = git(project, "rev-parse", "HEAD").strip()
    cli("run", str(project), check=0)
    manifest = json.loads((stored_set(home, "proj", sha) / "manifest.json").read_text())
    assert "products/emitted.txt" in {f["path"] for f in manifest["files"]}
    assert (stored_set(home, "proj", sha) / "files/products/emitted.txt").read_text() == "done"


def test_failed_environment_build_is_never_cached(tmp_path, engine, home):
    requirements = f"# {uuid.uuid4()}\nno-such-package-soopervisor-test==0.0.1\n"
    project = make_project(tmp_path, {**VALID, "requirements.txt": requirements})
    cli("run", str(project), check=1)
    manifest = json.loads((stored_set(home, "proj", git(project, "rev-parse", "HEAD").strip()) / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert not engine.images.list(name=f"soopervisor-env:{manifest['env_hash'][:20]}")
    again = cli("run", str(project), check=1).stdout
    assert "environment cache miss" in again


def test_run_into_s3_then_list_and_download_with_the_same_commands(tmp_path, engine, home, monkeypatch):
    """The whole flow against a real S3 API (moto on loopback): no change anywhere but the URL."""
    from .backends import s3

    bucket = s3.new_bucket()
    url = f"s3://{bucket}/team/artifacts"
    env = {k: v for k, v in s3.aws_env(tmp_path).items() if v is not None}
    drop = [k for k, v in s3.aws_env(tmp_path).items() if v is None]
    for k in drop:
        monkeypatch.delenv(k, raising=False)  # the cli() helper starts from os.environ
    project = make_project(tmp_path)
    out = cli("run", str(project), "--storage", url, env=env, check=0).stdout
    assert "storing proj@" in out  # the upload's progress line
    commit = git(project, "rev-parse", "HEAD").strip()
    listing = cli("artifacts", "list", "--project", "proj", "--storage", url, env=env, check=0).stdout
    assert commit[:7] in listing and "succeeded" in listing
    target = tmp_path / "got"
    cli("artifacts", "download", commit[:7], "--project", "proj", "--storage", url, "--to", str(target),
        env=env, check=0)
    assert (target / "output" / "data.csv").read_text().startswith("x\n")
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"team/artifacts/proj/{commit}/{RunStore().list()[0].id}/manifest.json" in keys
    for key in keys:  # the AWS secret is in no stored object (log, manifest)
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert s3.SECRET_KEY.encode() not in body

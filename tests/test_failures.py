"""Clear causes for failures: a pipeline that fails to load, a task that cannot reach a host,
the failing cell of a notebook task, and the pipeline stage's network (``--network``).

The log samples below are what ploomber 0.23.3 printed in real runs; the Docker tests
make small projects that fail the same way and run them for real.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

import soopervisor
from soopervisor.errors import UsageError
from soopervisor.failure import failing_cell, network_hint, relative_product
from soopervisor.logstream import LOAD_FAILED, LogStream, load_cause
from soopervisor.options import check_network
from soopervisor.redact import Redactor
from soopervisor.runs import RunStore

from .conftest import cli
from .projects import MAKE_DATA, VALID, function_task, make_project

# -- what ploomber 0.23.3 printed in real runs -------------------------------------------------

LOAD_MODULE = b"""\
==> soopervisor: build pipeline
soopervisor: ploomber build --entry-point pipeline.yaml --force --env--sample false
Loading pipeline...
/opt/soopervisor/venv/lib/python3.11/site-packages/ploomber/spec/dagspec.py:410: UserWarning: The following \
placeholders are declared in the environment but unused in the spec: {'sample'}
  warnings.warn(
Error: Failed to determine task class for source 'functions.emit': An error occured when trying to import dotted \
path 'functions.emit': No module named 'xgboost' (loaded 'functions' from '/workspace/functions.py').
!!! soopervisor: build pipeline failed with exit code 1
==> soopervisor: collect artifacts
soopervisor: collected 0 files from: (nothing)
<== soopervisor: collect artifacts done in 0s
"""

LOAD_KERNEL = b"""\
==> soopervisor: build pipeline
Loading pipeline...
Error: Failed to initialize NotebookRunner task with source 'tasks/make_data.ipynb'.
No such kernel named nokernel
!!! soopervisor: build pipeline failed with exit code 1
"""

LOAD_TRACEBACK = b"""\
==> soopervisor: build pipeline
Loading pipeline...
Traceback (most recent call last):
  File "/workspace/functions.py", line 1, in <module>
    import xgboost
ModuleNotFoundError: No module named 'xgboost'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
ploomber.exceptions.DAGSpecInitializationError: Error initializing DAG from pipeline.yaml
!!! soopervisor: build pipeline failed with exit code 1
"""

TASK_DNS = b"""\
==> soopervisor: build pipeline
Loading pipeline...
  0%|          | 0/1 [00:00<?, ?it/s]Building task 'emit':   0%|          | 0/1 [00:00<?, ?it/s]
=============================== DAG build failed ===============================
Traceback (most recent call last):
  File "/workspace/functions.py", line 8, in emit
    socket.getaddrinfo('example.invalid', 80)
socket.gaierror: [Errno -2] Name or service not known

The above exception was the direct cause of the following exception:

ploomber.exceptions.TaskBuildError: Error building task "emit"
Error: not a load error, the task had started
!!! soopervisor: build pipeline failed with exit code 1
"""

NOTEBOOK_RAISED = b"""\
==> soopervisor: build pipeline
Loading pipeline...
Building task 'make_data':   0%|          | 0/1 [00:00<?, ?it/s]
ValueError: bad value 1
ploomber.exceptions.TaskBuildError: Error when executing task 'make_data'. Partially executed notebook \
available at /workspace/output/make_data.ipynb
!!! soopervisor: build pipeline failed with exit code 1
"""

PIP_RETRY = b"""\
==> soopervisor: setup env
WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...: Failed to establish a new \
connection: [Errno 111] Connection refused')': /simple/pandas/
<== soopervisor: setup env done in 3s
==> soopervisor: build pipeline
Loading pipeline...
Building task 'clean':   0%|
ploomber.exceptions.TaskBuildError: Error building task "clean"
!!! soopervisor: build pipeline failed with exit code 1
"""


def observe(data: bytes, secrets=(), chunk: int | None = None) -> LogStream:
    log = LogStream(Redactor(secrets))
    step = chunk or len(data)
    for i in range(0, len(data), step):
        log.write(data[i : i + step])
    log.close()
    return log


@pytest.mark.parametrize("chunk", [None, 7])
def test_a_missing_module_at_load_is_the_failed_task(chunk):
    log = observe(LOAD_MODULE, chunk=chunk)
    assert log.load_error == "ModuleNotFoundError: No module named 'xgboost'"
    assert log.failed_task == f"{LOAD_FAILED}: ModuleNotFoundError: No module named 'xgboost'"
    assert log.failed_stage == "build pipeline"


def test_a_missing_kernel_at_load_names_the_kernel():
    log = observe(LOAD_KERNEL)
    assert log.load_error == "No such kernel named nokernel"
    assert log.failed_task == f"{LOAD_FAILED}: No such kernel named nokernel"


def test_a_load_traceback_gives_its_root_cause():
    log = observe(LOAD_TRACEBACK)
    assert log.load_error == "ModuleNotFoundError: No module named 'xgboost'"


def test_a_task_failure_is_not_a_load_failure_and_a_dns_error_is_seen():
    log = observe(TASK_DNS)
    assert log.load_error is None
    assert log.failed_task == "emit"
    assert log.network_error == "socket.gaierror: [Errno -2] Name or service not known"
    assert log.network_stage == log.failed_stage == "build pipeline"


@pytest.mark.parametrize("line", [
    b"socket.gaierror: [Errno -3] Temporary failure in name resolution",
    b"ConnectionRefusedError: [Errno 111] Connection refused",
    b"urllib3.exceptions.NewConnectionError: <urllib3.connection.HTTPConnection object>: Failed to establish",
    b"urllib3.exceptions.MaxRetryError: HTTPConnectionPool(host='example.invalid', port=80): Max retries",
    b"requests.exceptions.ConnectionError: HTTPConnectionPool(host='x', port=80)",
    b"urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>",
    b"OSError: [Errno 101] Network is unreachable",
])
def test_common_network_errors_are_seen(line):
    log = observe(b"==> soopervisor: build pipeline\n" + line + b"\n!!! soopervisor: build pipeline failed with exit code 1\n")
    assert log.network_error == line.decode()
    assert log.network_stage == "build pipeline"


def test_an_ordinary_error_is_not_a_network_error():
    log = observe(b"==> soopervisor: build pipeline\nValueError: bad value 1\n")
    assert log.network_error is None


def test_a_network_error_of_the_environment_stage_is_not_the_pipelines():
    log = observe(PIP_RETRY)
    assert log.network_stage == "setup env" != log.failed_stage
    assert log.failed_task == "clean" and log.load_error is None


def test_the_partial_notebook_path_is_seen():
    log = observe(NOTEBOOK_RAISED)
    assert log.partial_notebook == "/workspace/output/make_data.ipynb"
    assert log.failed_task == "make_data" and log.load_error is None


def test_names_found_are_redacted():
    log = observe(LOAD_MODULE, secrets=["xgboost"])
    assert "xgboost" not in log.failed_task and "***" in log.failed_task


@pytest.mark.parametrize("message,cause", [
    ("Failed to determine task class for source 'functions.emit': invalid syntax (functions.py, line 1).",
     "SyntaxError: invalid syntax (functions.py, line 1)"),
    ("Failed to determine task class for source 'functions.emit': '(' was never closed (functions.py, line 3).",
     "SyntaxError: '(' was never closed (functions.py, line 3)"),
])
def test_a_syntax_error_at_load_is_named_as_python_names_it(message, cause):
    assert load_cause([message]) == cause


def test_load_cause_of_a_message_of_one_line_is_that_line():
    assert load_cause(["Failed to determine task class for source 'f.g': config missing."]) == \
        "Failed to determine task class for source 'f.g': config missing."


def test_relative_product_maps_the_container_path():
    assert relative_product("/workspace/output/nb.ipynb", "/workspace") == "output/nb.ipynb"
    assert relative_product("/workspace/sub/output/nb.ipynb", "/workspace/sub") == "output/nb.ipynb"
    assert relative_product("/tmp/nb.ipynb", "/workspace") is None
    assert relative_product("output/nb.ipynb", "/workspace") == "output/nb.ipynb"


def test_failing_cell_reads_the_error_output(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="ok")]),
        nbformat.v4.new_code_cell("raise ValueError('bad')", outputs=[nbformat.v4.new_output(
            "error", ename="ValueError", evalue="bad", traceback=["\x1b[0;31mValueError\x1b[0m: bad"])]),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    cell = failing_cell(path)
    assert (cell.source, cell.error) == ("raise ValueError('bad')", "ValueError: bad")
    (tmp_path / "broken.ipynb").write_text("not json")
    assert failing_cell(tmp_path / "broken.ipynb") is None


# -- the network option ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["default", "bridge", "none", "host", "my-net_1.x"])
def test_network_values(value):
    assert check_network(value) == value


@pytest.mark.parametrize("value", ["a b", "", "-x", "net;rm", "x" * 200])
def test_bad_network_values_are_usage_errors(value):
    with pytest.raises(UsageError) as e:
        check_network(value)
    assert "--network" in e.value.message and "none" in e.value.hint


def test_network_setting(monkeypatch):
    monkeypatch.setenv("SOOPERVISOR_NETWORK", "none")
    assert check_network(None) == "none"
    monkeypatch.setenv("SOOPERVISOR_NETWORK", "two words")
    with pytest.raises(UsageError, match="SOOPERVISOR_NETWORK"):
        check_network(None)
    monkeypatch.delenv("SOOPERVISOR_NETWORK")
    assert check_network(None) == "default"


def test_network_hint_names_the_option_and_value():
    assert "--network none" in network_hint("none") and "--network default" in network_hint("none")
    assert "'default'" in network_hint("default") and "--network" in network_hint("default")


def test_bad_network_option_exits_2(tmp_path):
    project = make_project(tmp_path)
    proc = cli("run", str(project), "--network", "two words", check=2)
    assert "--network 'two words' is not a network" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("run", str(project), env={"SOOPERVISOR_NETWORK": "a;b"}, check=2)
    assert "SOOPERVISOR_NETWORK 'a;b' is not a network" in proc.stderr
    assert not (Path(os.environ["SOOPERVISOR_HOME"]) / "runs.sqlite").exists() or not RunStore().list()


def test_bad_network_in_the_api_raises_before_anything_runs(tmp_path):
    project = make_project(tmp_path)
    with pytest.raises(UsageError):
        soopervisor.run(project, network="no such")


# -- real runs ------------------------------------------------------------------------------------


def _missing_module_project() -> dict[str, str]:
    files = function_task("pass")
    files["functions.py"] = "import xgboost_not_installed  # noqa\n" + files["functions.py"]
    return files


def _kernel_project() -> dict[str, str]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "Nope", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("product = None\nupstream = None\nsample = None",
                                          metadata={"tags": ["parameters"]})]
    files = dict(VALID)
    del files["tasks/make_data.py"]
    files["tasks/make_data.ipynb"] = nbformat.writes(nb)
    files["pipeline.yaml"] = VALID["pipeline.yaml"].replace("tasks/make_data.py", "tasks/make_data.ipynb")
    return files


def _syntax_project() -> dict[str, str]:
    files = function_task("pass")
    files["functions.py"] = "def broken(:\n    pass\n" + files["functions.py"]
    return files


@pytest.mark.docker
@pytest.mark.parametrize("files,cause,hint", [
    (_missing_module_project, "ModuleNotFoundError: No module named 'xgboost_not_installed'",
     "no module 'xgboost_not_installed'"),
    (_kernel_project, "No such kernel named no-such-kernel", "kernel"),
    (_syntax_project, "SyntaxError: invalid syntax (functions.py, line 1)", "does not parse"),
], ids=["missing-module", "missing-kernel", "syntax-error"])
def test_a_pipeline_that_fails_to_load_says_so(tmp_path, engine, files, cause, hint):
    project = make_project(tmp_path, files())
    proc = cli("run", str(project), "--full", check=1)
    run = RunStore().list()[0]
    assert run.status == "failed"
    assert run.failed_task == f"{LOAD_FAILED}: {cause}"
    assert run.error.startswith(f"the pipeline failed to load: {cause}")
    assert hint in run.hint
    assert f"failed: the pipeline failed to load: {cause}" in proc.stderr
    assert f"hint: {run.hint}" in proc.stderr


@pytest.mark.docker
def test_a_task_that_cannot_reach_a_host_gets_the_network_hint(tmp_path, engine):
    project = make_project(tmp_path, function_task("import socket\nsocket.getaddrinfo('example.invalid', 80)"))
    proc = cli("run", str(project), "--full", check=1)
    run = RunStore().list()[0]
    assert run.failed_task == "emit"
    assert "network 'default'" in run.hint and "--network" in run.hint
    assert "hint: the pipeline's container reaches only" in proc.stderr


@pytest.mark.docker
def test_network_none_cuts_the_pipeline_off_and_the_hint_says_so(tmp_path, engine):
    body = "import urllib.request\nurllib.request.urlopen('http://example.invalid', timeout=10)"
    project = make_project(tmp_path, function_task(body))
    proc = cli("run", str(project), "--full", "--network", "none", check=1)
    run = RunStore().list()[0]
    # the environment was built or reused with the engine's network; the pipeline had none
    assert "soopervisor: the pipeline stage runs with --network none" in proc.stdout
    assert run.failed_task == "emit"
    assert "--network none" in run.hint
    assert "hint: the pipeline ran with --network none" in proc.stderr


@pytest.mark.docker
def test_a_notebook_task_that_raises_shows_its_failing_cell(tmp_path, engine, home):
    files = dict(VALID)
    files["tasks/make_data.py"] = MAKE_DATA + "\n# %%\nlimit = 3\nraise ValueError(f'too many rows: {limit}')\n"
    project = make_project(tmp_path, files)
    proc = cli("run", str(project), "--full", check=1)
    run = RunStore().list()[0]
    assert run.failed_task == "make_data"
    assert run.failed_cell == "limit = 3\nraise ValueError(f'too many rows: {limit}')"
    assert run.cell_error == "ValueError: too many rows: 3"
    assert run.hint is None and run.error == "the pipeline failed with exit code 1 in stage 'build pipeline'"
    # where it was stored, not /workspace/... inside the container
    stored = home / "artifacts" / run.project / run.commit / run.id / "files" / "output" / "make_data.ipynb"
    assert run.partial_notebook == str(stored)
    assert stored.is_file() and failing_cell(stored).error == run.cell_error
    assert "    | raise ValueError(f'too many rows: {limit}')" in proc.stderr
    assert "  ValueError: too many rows: 3" in proc.stderr
    assert f"partially executed notebook: {stored}" in proc.stderr
    assert f"soopervisor: partially executed notebook stored at {stored}" in proc.stdout
    # the REST API and the widget read the record: the fields are in its JSON
    assert json.loads(json.dumps(run.to_dict()))["failed_cell"] == run.failed_cell


def test_the_widget_failure_line_shows_cell_error_notebook_and_hint():
    from soopervisor_jupyter.widget import failure_html

    from soopervisor.runs import Run

    run = Run(project="p", project_path="/p", commit="c" * 40, dirty=False, mode="full", status="failed",
              failed_task="make_data", error="the pipeline failed", failed_cell="x = '<b>'\nraise ValueError(x)",
              cell_error="ValueError: <b>", partial_notebook="/store/p/c/r/files/output/nb.ipynb",
              hint="a hint")
    shown = failure_html(run)
    assert "at task <b>make_data</b>" in shown and "x = &#x27;&lt;b&gt;&#x27;" in shown
    assert "ValueError: &lt;b&gt;" in shown and "/store/p/c/r/files/output/nb.ipynb" in shown
    assert "hint: a hint" in shown
    run.failed_task, run.failed_cell, run.cell_error, run.partial_notebook = (
        f"{LOAD_FAILED}: ModuleNotFoundError: No module named 'x'", None, None, None)
    assert "at task" not in failure_html(run) and "failing cell" not in failure_html(run)


@pytest.mark.docker
def test_a_notebook_cell_that_cannot_reach_a_host_shows_the_cell_and_the_hint(tmp_path, engine):
    files = dict(VALID)
    files["tasks/make_data.py"] = MAKE_DATA + "\n# %%\nimport socket\nsocket.getaddrinfo('example.invalid', 443)\n"
    project = make_project(tmp_path, files)
    proc = cli("run", str(project), "--full", "--network", "none", check=1)
    run = RunStore().list()[0]
    assert run.failed_cell == "import socket\nsocket.getaddrinfo('example.invalid', 443)"
    assert run.cell_error.startswith("gaierror: ")
    assert "--network none" in run.hint
    assert "  hint: the pipeline ran with --network none" in proc.stderr


@pytest.mark.docker
def test_a_network_the_engine_lacks_is_a_usage_error(tmp_path, engine):
    project = make_project(tmp_path)
    proc = cli("run", str(project), "--full", "--network", "soopervisor-no-such-network", check=2)
    assert "the Docker engine has no network 'soopervisor-no-such-network'" in proc.stderr
    assert "docker network ls" in proc.stderr and "Traceback" not in proc.stderr
    assert RunStore().list()[0].status == "failed"

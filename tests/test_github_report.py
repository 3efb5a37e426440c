"""The Markdown of the job summary and the pull-request report comment."""
from __future__ import annotations

from soopervisor.github.report import MARKER, MAX_FILES, Report
from soopervisor.redact import CREDENTIALS


def test_success_report_has_the_table_and_the_download_command():
    r = Report(status="succeeded", mode="sample", commit="a" * 40, project="sales", duration=75.4,
               location="s3://b/p/sales/" + "a" * 40, storage="s3://b/p",
               files=[("output/data.csv", 2048), ("output/report.html", 10)])
    md = r.markdown()
    assert md.startswith("### ✅ soopervisor sample run succeeded")
    assert "| commit | `aaaaaaaaaaaa` |" in md and "| duration | 1m 15s |" in md
    assert "| `output/data.csv` | 2.0 kB |" in md and "| `output/report.html` | 10 B |" in md
    assert "2 files, 2.1 kB" in md
    assert "soopervisor artifacts download aaaaaaaaaaaa --project sales --storage s3://b/p" in md
    assert MARKER not in md
    assert md.count(MARKER) == 0 and r.markdown(marker=True).startswith(MARKER)


def test_the_download_command_names_the_run_and_odd_names_stay_in_their_cell():
    r = Report(status="failed", mode="full", commit="a" * 40, project="sales", run_id="0f3e9a1c2b4d",
               location="s3://b/p/sales/" + "a" * 40 + "/0f3e9a1c2b4d", storage="s3://b/p",
               files=[("output/a|b\nc.csv", 1), ("output/x`y", 2), ("output/raw\udcff.bin", 3)])
    md = r.markdown()
    assert "soopervisor artifacts download aaaaaaaaaaaa --run 0f3e9a1c2b4d --project sales --storage s3://b/p" in md
    assert "| `output/a\\|b␤c.csv` | 1 B |" in md
    assert "| ``output/x`y`` | 2 B |" in md
    assert "| `output/raw\ufffd.bin` | 3 B |" in md
    md.encode("utf-8")  # GitHub gets UTF-8, whatever bytes a name held


def test_failure_report_shows_task_error_and_a_fenced_tail_that_cannot_break_out():
    tail = [f"line {i}" for i in range(100)] + ["```", "````` sneaky"]
    r = Report(status="failed", mode="full", commit="b" * 40, project="p", failed_task="clean",
               error="ValueError: bad\nrow", log_tail=tail)
    md = r.markdown()
    assert "**Error in task `clean`:** ValueError: bad row" in md
    assert "<details open><summary>last 30 lines of the log</summary>" in md
    assert "line 71" not in md and "line 72" in md
    # the fence is longer than the longest backtick run inside
    assert "``````\n" in md


def test_local_storage_on_a_hosted_runner_says_the_files_are_gone():
    r = Report(status="succeeded", mode="sample", commit="c" * 40, project="p", local_storage=True,
               location="/tmp/x/p/" + "c" * 40, files=[("a.txt", 1)])
    md = r.markdown()
    assert "gone with it" in md and "artifacts download" not in md


def test_many_files_are_cut_with_a_count():
    files = [(f"f{i}.csv", i) for i in range(MAX_FILES + 7)]
    md = Report(status="succeeded", mode="full", commit="d" * 40, project="p", files=files,
                location="x").markdown()
    assert f"| `f{MAX_FILES - 1}.csv` |" in md and f"`f{MAX_FILES}.csv`" not in md
    assert "… and 7 more" in md


def test_credentials_never_reach_the_markdown():
    CREDENTIALS.add("tok-very-secret-123")
    md = Report(status="error", mode="full", error="refresh failed for tok-very-secret-123",
                hint="token tok-very-secret-123 revoked").markdown(marker=True)
    assert "tok-very-secret-123" not in md and "***" in md


def test_a_pipeline_that_failed_to_load_is_not_called_a_task():
    error = "the pipeline failed to load: ModuleNotFoundError: No module named 'x' (exit code 1)"
    md = Report(status="failed", mode="full", commit="b" * 40, project="p",
                failed_task="the pipeline failed to load: ModuleNotFoundError: No module named 'x'",
                error=error).markdown()
    assert "in task" not in md and "**Error:** the pipeline failed to load: ModuleNotFoundError" in md


def test_a_failure_links_its_troubleshooting_entry():
    from soopervisor.troubleshooting import topic_url

    r = Report(status="failed", mode="full", commit="b" * 40, project="p", failed_task="fit",
               error="the pipeline failed to load: ModuleNotFoundError: No module named 'sklearn'",
               hint="the environment has no module 'sklearn': add the package", docs=topic_url("missing-module"))
    md = r.markdown()
    assert "**Hint:** the environment has no module 'sklearn'" in md
    assert f"[More about this error]({topic_url('missing-module')})" in md
    assert "More about this error" not in Report(status="succeeded", mode="full", commit="b" * 40).markdown()

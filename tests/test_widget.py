"""The notebook log widget's model, as ipywidgets syncs it to the browser: it follows the tail,
its line counter counts, its times move while the run goes and freeze at the end, and the end
hides Stop and the stage. Lines go in through ``append`` (the run service's on_line) and the
run is a Run changed in place, as the service's thread changes it."""
from __future__ import annotations

import html
import re
import threading
import time
from datetime import UTC, datetime

import pytest
from soopervisor_jupyter.widget import CHUNK, MAX_LINES, LogWidget, duration_text

from soopervisor.progress import TaskEvent
from soopervisor.runs import Run

T0 = 1_700_000_000.0  # a fixed start: the times shown are exact


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fake_run(**fields) -> Run:
    return Run(project="p", project_path="/p", commit="c" * 40, dirty=False, mode="sample",
               status="running", started_at=iso(T0), **fields)


def log_text(widget: LogWidget) -> str:
    """The log as the browser shows it: the chunks' HTML without tags, unescaped, in order."""
    return html.unescape(re.sub(r"<[^>]*>", "", "".join(c.value for c in widget.log_box.children)))


def status_text(widget: LogWidget) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", widget.status.value))


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    """A condition the widget's own thread brings about (a generous bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def feed(widget: LogWidget, lines: list[str]) -> None:
    """From another thread, as the run's thread calls on_line."""
    t = threading.Thread(target=lambda: [widget.append(line) for line in lines])
    t.start()
    t.join()


def event(kind: str, done: int, task: str | None = None, error: str | None = None) -> str:
    return TaskEvent(kind, done, 3, task, error).line() + "\n"


# -- 1. the tail -------------------------------------------------------------------


def test_the_log_shows_each_new_line_as_it_arrives():
    widget = LogWidget(fake_run())
    for i in range(30):  # lines faster than the flush interval: the follower flushes them
        widget.append(f"step {i}\n")
        wait_for(lambda i=i: log_text(widget).endswith(f"step {i}\n"), f"line {i} in the model")
    assert widget.hidden_note.layout.display == "none" and widget.lines_hidden == 0
    # the scroll box keeps its end in view: column-reverse around one child, the chunks in order
    view = widget.log_view.layout.get_state()
    assert view["display"] == "flex" and view["flex_flow"] == "column-reverse" and view["overflow"] == "auto"
    assert widget.log_view.children == (widget.log_box,) and widget.log_view in widget.children


def test_a_flood_keeps_the_last_lines_and_says_how_many_are_not_shown():
    run = fake_run(log_path="/home/u/.soopervisor/logs/r.log")
    widget = LogWidget(run)
    total = 5 * MAX_LINES + 37
    feed(widget, [f"line {i} <i>\n" for i in range(total)])
    widget.flush()  # what the follower does within FLUSH_INTERVAL
    shown = log_text(widget).splitlines()
    # the visible text is the last N lines, in order, ending with the newest one
    assert shown[-1] == f"line {total - 1} <i>"
    assert shown == [f"line {i} <i>" for i in range(total - len(shown), total)]
    assert MAX_LINES - CHUNK < len(shown) <= MAX_LINES
    assert f"line {total - 1} &lt;i&gt;" in widget.log_box.children[-1].value  # the newest in the last chunk
    # and the note counts the rest
    hidden = total - len(shown)
    assert widget.lines_hidden == hidden
    assert widget.hidden_note.layout.display is None  # shown
    note = html.unescape(re.sub(r"<[^>]*>", "", widget.hidden_note.value))
    assert f"{hidden:,} earlier lines not shown" in note and run.log_path in note
    run.status, run.finished_at = "succeeded", iso(T0 + 3)
    assert widget.wait(10)
    assert log_text(widget).splitlines()[-1] == f"line {total - 1} <i>"


# -- 2. the end ----------------------------------------------------------------------


@pytest.mark.parametrize("status,progress", [
    ("succeeded", "3/3 tasks done"),
    ("failed", "task clean failed (1/3)"),
    ("cancelled", "1/3 tasks done"),
    ("interrupted", "1/3 tasks done"),
])
def test_the_end_hides_stop_clears_the_stage_and_shows_the_final_count(status, progress):
    run = fake_run()
    widget = LogWidget(run)
    lines = ["==> soopervisor: build pipeline\n", event("plan", 0), event("started", 0, "load"),
             event("finished", 1, "load"), event("started", 1, "clean")]
    if status == "succeeded":
        lines += [event("finished", 2, "clean"), event("started", 2, "report"), event("finished", 3, "report"),
                  "==> soopervisor: collect artifacts\n"]
    elif status == "failed":
        lines += [event("failed", 1, "clean", "ValueError: boom"), "!!! soopervisor: build pipeline failed\n"]
    feed(widget, lines)
    widget.flush()
    # while it runs: Stop in view, the stage and the task being built in the status line
    assert widget.stop_button.layout.display is None and not widget.stop_button.disabled
    assert "stage: " in status_text(widget)
    if status != "succeeded":
        assert "task 2/3 clean" in status_text(widget) or status == "failed"

    run.finished_at, run.status = iso(T0 + 42), status
    run.error = None if status == "succeeded" else f"the run {status}"
    assert widget.wait(10)
    text = status_text(widget)
    assert widget.stop_button.layout.get_state()["display"] == "none" and widget.stop_button.disabled
    assert text.startswith(status) and "stage:" not in text
    assert progress in text and "task 2/3" not in text
    assert "took 42 s" in text


def test_a_widget_that_saw_no_events_ends_with_the_records_count():
    run = fake_run(tasks_total=4, tasks_done=2, task="fit")
    widget = LogWidget(run)
    assert "task 3/4 fit" in status_text(widget)
    run.tasks_done = 3
    run.finished_at, run.status = iso(T0 + 5), "cancelled"
    assert widget.wait(10)
    assert "3/4 tasks done" in status_text(widget) and "fit" not in status_text(widget)


# -- 3. times ----------------------------------------------------------------------------


def test_the_elapsed_time_moves_without_lines_and_freezes_at_the_duration():
    now = [T0 + 5]
    run = fake_run()
    widget = LogWidget()
    widget.clock = lambda: now[0]  # the widget's clock, moved by hand: no sleeping for real seconds
    widget.attach(run)
    assert "elapsed 5 s" in status_text(widget)
    now[0] = T0 + 65  # no line arrives: the follower's tick refreshes the model
    wait_for(lambda: "elapsed 1 min 05 s" in status_text(widget), "the elapsed time to move")
    now[0] = T0 + 3725
    wait_for(lambda: "elapsed 1 h 02 min" in status_text(widget), "the elapsed time to move again")

    run.finished_at, run.status = iso(T0 + 3730), "succeeded"
    assert widget.wait(10)
    widget._follower.join(10)
    assert not widget._follower.is_alive()  # no thread left ticking after the end
    final = widget.status.value
    assert "took 1 h 02 min" in status_text(widget) and "elapsed" not in status_text(widget)
    now[0] = T0 + 99_999
    assert widget.elapsed == 3730
    widget._set_status(run.status)  # whatever redraws it later shows the same duration
    assert widget.status.value == final


def test_the_duration_freezes_when_the_record_has_no_end_time():
    now = [T0 + 10]
    run = fake_run()
    widget = LogWidget()
    widget.clock = lambda: now[0]
    widget.attach(run)
    run.status = "interrupted"  # e.g. its owner died: no finished_at
    assert widget.wait(10)
    now[0] = T0 + 500
    assert widget.elapsed == 10 and "took 10 s" in status_text(widget)


def test_durations_read_as_long_as_they_need():
    assert [duration_text(s) for s in (0, 59.9, 60, 605, 3600, 86_399)] == [
        "0 s", "59 s", "1 min 00 s", "10 min 05 s", "1 h 00 min", "23 h 59 min"]


# -- 4. the line counter --------------------------------------------------------------------


def test_the_line_counter_counts_every_line_received_as_it_arrives():
    run = fake_run()
    widget = LogWidget(run)
    assert "0 lines" in status_text(widget)
    received = 0
    for i in range(5):
        widget.append(f"plain {i}\n")
        received += 1
        wait_for(lambda n=received: f" {n} line" in status_text(widget), f"the counter at {received}")
    bar = "\rExecuting:   0%|          \rExecuting:  33%|███       \rExecuting: 100%|██████████\n"
    lines = [bar, bar, "\r          \r", event("plan", 0), event("started", 0, "load"), event("finished", 1, "load")]
    lines += [f"more {i}\n" for i in range(1200)]
    feed(widget, lines)
    widget.flush()
    received += len(lines)
    assert widget.lines_received == received == 1211
    assert "1,211 lines" in status_text(widget)
    text = log_text(widget)
    assert text.count("Executing: 100%") == 2 and "33%" not in text  # each bar once, in its last state
    run.finished_at, run.status = iso(T0 + 1), "succeeded"
    assert widget.wait(10)
    assert "1,211 lines" in status_text(widget)
    assert widget.lines_received == 1211

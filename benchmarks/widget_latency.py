"""How long a log line takes to reach the notebook widget's model (target p95 < 100 ms).

A line is written into the run's LogStream (the path container output takes:
decode, redact, split, sinks) carrying its own timestamp; it has arrived when
a comm message carrying it leaves the kernel side (the widget model update
the front end receives). Baseline: the same stream with a no-op ``on_line``
sink. Three loads: a trickle (a line every 5 ms), a steady stream (a line a
millisecond) and a burst (20,000 lines in 4 KiB chunks, as fast as possible).
No Docker needed.
"""
from __future__ import annotations

import re
import statistics
import sys
import time

import comm
from comm import DummyComm

from soopervisor.logstream import LogStream
from soopervisor.redact import Redactor
from soopervisor.runs import Run

SENT: list[tuple[int, str]] = []  # (perf_counter_ns, every string in one comm message)
_STAMP = re.compile(r"t=(\d+) ")


class RecordingComm(DummyComm):
    """Stands for the kernel's comm: notes when each model update would leave."""

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys) -> None:
        state = (data or {}).get("state") or {}
        text = "".join(v for v in state.values() if isinstance(v, str))
        if text:
            SENT.append((time.perf_counter_ns(), text))


comm.create_comm = lambda *a, **kw: RecordingComm(*a, **kw)

from soopervisor_jupyter.widget import LogWidget


def feed(stream: LogStream, n: int, gap: float, chunk: int = 0) -> dict[int, int]:
    """Write ``n`` stamped lines; returns line id -> time written (ns)."""
    written: dict[int, int] = {}  # the stamp is the line's id
    buf = b""
    for i in range(n):
        now = time.perf_counter_ns()
        written[now] = now
        line = f"t={now} line {i} of the pipeline's output\n".encode()
        if chunk:
            buf += line
            if len(buf) >= chunk:
                stream.write(buf)
                buf = b""
        else:
            stream.write(line)
            if gap:
                time.sleep(gap)
    if buf:
        stream.write(buf)
    stream.close()  # the redactor holds back a possible secret prefix until the end
    return written


def widget_latencies(n: int, gap: float, chunk: int = 0) -> tuple[list[float], int]:
    SENT.clear()
    run = Run(project="bench", project_path="/bench", commit="0" * 40, dirty=False, mode="sample",
              status="running", started_at=None)
    widget = LogWidget(run)
    stream = LogStream(Redactor([]), [widget.append])
    written = feed(stream, n, gap, chunk)
    time.sleep(0.3)  # the last batch goes out within the flush interval
    run.status = "succeeded"
    widget.wait(5)
    arrived: dict[int, int] = {}
    for when, text in SENT:
        for stamp in _STAMP.findall(text):
            arrived.setdefault(int(stamp), when)
    missing = set(written) - set(arrived)
    if missing:
        sys.exit(f"{len(missing)} lines never reached the widget model")
    messages = sum(1 for _, text in SENT if "t=" in text)
    return [(arrived[t] - t) / 1e6 for t in written], messages


def baseline_latencies(n: int, gap: float, chunk: int = 0) -> list[float]:
    got: dict[int, int] = {}

    def sink(line: str) -> None:
        got[int(_STAMP.match(line).group(1))] = time.perf_counter_ns()

    written = feed(LogStream(Redactor([]), [sink]), n, gap, chunk)
    return [(got[t] - t) / 1e6 for t in written]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    loads = [
        ("trickle, a line every 5 ms", 300, 0.005, 0),
        ("steady, a line every 1 ms", 2000, 0.001, 0),
        ("burst, 20000 lines in 4 KiB chunks", 20000, 0.0, 4096),
    ]
    ok = True
    for name, n, gap, chunk in loads:
        lat, messages = widget_latencies(n, gap, chunk)
        base = baseline_latencies(n, gap, chunk)
        p50, p95 = pct(lat, 50), pct(lat, 95)
        ok &= p95 < 100
        print(
            f"{name}: widget p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(lat):.1f} ms "
            f"vs baseline (no-op on_line) p50 {pct(base, 50) * 1000:.0f} us, p95 {pct(base, 95) * 1000:.0f} us; "
            f"{messages} model updates for {n} lines (target p95 < 100 ms)"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""The idle server uses no measurable CPU with no browser open (issue #12: it used ~5-8% of a
core). Timers may run only while a job or an evaluation runs; an open page on an idle app sends
no requests at all (issue #18: the Tune tab's timer ticks only while a job is active), which
tests/e2e/test_browser_first_run.py checks in a browser.

Measured as CPU time (utime + stime from /proc) that the real server process consumes over
10 s with no client connected, not as wall-clock timing of our code, so a busy machine does
not make it flaky. Known pollers it catches: the job queue thread pumping every 2 s (now
event-driven, tuning/jobs.py), gradio's queue sleeping 1 ms in a loop while nothing is queued
(made to wait for work in app.py), uvicorn's 10 Hz tick (~0.2% of a core, left alone)."""

from __future__ import annotations

import os
import sys
import time

import pytest

pytestmark = [pytest.mark.server, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_s(pid: int, tid: int | str | None = None) -> float:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, in clock ticks


def _threads(pid: int) -> dict[str, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out[tid] = _cpu_s(pid, tid)
        except OSError:
            pass  # a thread that just ended
    return out


def test_the_idle_server_uses_no_measurable_cpu(tailor_server, tiny_model_dir, tmp_path):
    server = tailor_server(tmp_path / "ws", tiny_model_dir, env={"TAILOR_THREADS": "1"})
    pid = server.proc.pid
    time.sleep(3)  # let the answer to the start-up check (one page load) settle
    before, threads_before, t0 = _cpu_s(pid), _threads(pid), time.monotonic()
    time.sleep(10)
    used, seconds = _cpu_s(pid) - before, time.monotonic() - t0
    threads = _threads(pid)
    busiest = sorted(
        ((threads[t] - threads_before.get(t, 0.0), "main" if t == str(pid) else t) for t in threads), reverse=True
    )[:4]
    share = used / seconds
    assert share < 0.01, (
        f"the idle server used {used:.2f} CPU s in {seconds:.1f} s ({100 * share:.1f}% of a core); "
        f"busiest threads: {busiest}"
    )
    assert server.proc.poll() is None

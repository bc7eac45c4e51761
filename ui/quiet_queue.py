"""Gradio's queue without idle polling (issue #12: the idle server used ~8% of a core).

Measured with tests/server/test_idle_cpu.py (CPU time of the real server over 10 s, no client):
7.6-8.2% of a core before, 0.25-0.35% after (the rest is uvicorn's 10 Hz tick). Response
times through gradio_client were unchanged (170-300 ms a call, 1.4 s for 16 concurrent calls).
test_idle_cpu fails if a gradio upgrade changes the queue so that this no longer applies."""

from __future__ import annotations

import asyncio
import types


def quiet_gradio_queue(demo, safety_timeout: float = 10.0) -> bool:
    """Stop gradio's queue from polling while it is idle. gradio 6's Queue loops
    `start_processing` with `asyncio.sleep(sleep_when_free)` (1 ms: ~1000 wake-ups a second,
    ~7% of a core here) and `start_progress_updates` with 10 ms sleeps, even with nothing
    queued. While the queue is empty and nothing runs, those sleeps wait for the next push
    instead (`safety_timeout` bounds a missed wake-up); while anything is queued or running,
    gradio's own timing is kept. Call it after the last `demo.queue(...)`. Returns False (and
    changes nothing) on a gradio whose queue does not look like this."""
    import gradio.queueing as gq

    queue = getattr(demo, "_queue", None)
    free = getattr(queue, "sleep_when_free", None)
    progress = getattr(queue, "progress_update_sleep_when_free", None)
    if free is None or progress is None or not hasattr(queue, "active_jobs") or getattr(queue, "_tailor_quiet", 0):
        return False
    wake: list[asyncio.Event] = []  # created on first use, inside the server's event loop

    def event() -> asyncio.Event:
        if not wake:
            wake.append(asyncio.Event())
        return wake[0]

    def idle() -> bool:
        return demo._queue is queue and len(queue) == 0 and all(job is None for job in queue.active_jobs)

    real_sleep = asyncio.sleep

    async def sleep(delay, result=None):
        if delay in (free, progress) and idle():
            ev = event()
            ev.clear()
            try:
                await asyncio.wait_for(ev.wait(), safety_timeout)
            except asyncio.TimeoutError:
                pass
            return result
        return await real_sleep(delay, result)

    # gradio.queueing calls `asyncio.sleep` through its module global: give it one whose
    # sleep is the above (everything else is the real asyncio)
    proxy = types.ModuleType("asyncio")
    proxy.__dict__.update(asyncio.__dict__)
    proxy.sleep = sleep
    gq.asyncio = proxy

    push = queue.push

    async def push_and_wake(*args, **kwargs):
        try:
            return await push(*args, **kwargs)
        finally:
            event().set()

    queue.push = push_and_wake
    queue._tailor_quiet = 1
    return True

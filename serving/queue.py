"""The bounded request queue in front of the engine.

The engine answers one request at a time (the weights and the active adapter are shared
state), so a burst of API calls has to wait somewhere. Waiting without a bound would let a
burst pile up requests until memory or client timeouts give out; a bounded FIFO queue turns
overload into a prompt, explicit answer instead:

- queue full           -> `QueueFull` (HTTP 429, `Retry-After`), nothing was started;
- waited too long      -> `Busy` (HTTP 503), nothing was started;
- admitted             -> a `Slot` that must be released when the reply is done.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from assistant.errors import TailorError


class Overloaded(TailorError):
    """The server cannot take this request now; try again later."""

    status = 503
    code = "server_busy"
    retry_after = 5


class QueueFull(Overloaded):
    status = 429
    code = "queue_full"


class Busy(Overloaded):
    status = 503
    code = "server_busy"


class Slot:
    """Permission to run one request. `release()` is idempotent, so a stream's `finally` and a
    disconnect handler can both call it."""

    def __init__(self, limiter: RequestLimiter, waited_s: float):
        self._limiter = limiter
        self.waited_s = waited_s
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release()


@dataclass
class LimiterStats:
    active: int
    waiting: int
    admitted: int
    rejected_full: int
    rejected_timeout: int
    max_active: int
    max_queue: int


class RequestLimiter:
    """At most `max_active` requests run at once; up to `max_queue` more wait in arrival order
    for at most `timeout_s` seconds each. Lives on one asyncio event loop (the server's), so
    its counters need no lock."""

    def __init__(self, max_active: int = 1, max_queue: int = 16, timeout_s: float = 120.0):
        if max_active < 1 or max_queue < 0 or timeout_s <= 0:
            raise ValueError("max_active >= 1, max_queue >= 0 and timeout_s > 0 are required")
        self.max_active = max_active
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._active = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._admitted = self._rejected_full = self._rejected_timeout = 0

    def stats(self) -> LimiterStats:
        return LimiterStats(
            self._active,
            sum(1 for w in self._waiters if not w.done()),
            self._admitted,
            self._rejected_full,
            self._rejected_timeout,
            self.max_active,
            self.max_queue,
        )

    async def acquire(self) -> Slot:
        started = time.perf_counter()
        if self._active < self.max_active and not self._waiters:
            self._active += 1
            self._admitted += 1
            return Slot(self, 0.0)
        waiting = sum(1 for w in self._waiters if not w.done())
        if waiting >= self.max_queue:
            self._rejected_full += 1
            raise QueueFull(
                f"The server is busy: {self._active} request(s) running and {waiting} waiting, which is the "
                f"queue limit (TAILOR_MAX_QUEUE={self.max_queue}). Retry in a few seconds."
            )
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout_s)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we gave up: pass it on, or it leaks.
                self._release()
            else:
                fut.cancel()
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                self._rejected_timeout += 1
                raise Busy(
                    f"The server is busy: this request waited {self.timeout_s:.0f} s in the queue without "
                    "getting a turn (TAILOR_QUEUE_TIMEOUT). Retry later or send fewer requests at once."
                ) from None
            raise
        finally:
            try:
                self._waiters.remove(fut)
            except ValueError:
                pass
        self._admitted += 1
        return Slot(self, time.perf_counter() - started)

    def _release(self) -> None:
        # Hand the slot straight to the oldest live waiter (the active count stays the same),
        # so a newcomer can never overtake the queue.
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1

"""The request queue and the body-size limit."""

from __future__ import annotations

import asyncio

import pytest

from serving.queue import Busy, QueueFull, RequestLimiter


def test_queue_admits_in_order_and_rejects_beyond_its_limit():
    async def scenario():
        limiter = RequestLimiter(max_active=1, max_queue=2, timeout_s=5)
        first = await limiter.acquire()
        order = []

        async def waiter(name):
            slot = await limiter.acquire()
            order.append(name)
            await asyncio.sleep(0.01)
            slot.release()

        tasks = [asyncio.create_task(waiter(n)) for n in ("a", "b")]
        await asyncio.sleep(0.01)
        assert limiter.stats().waiting == 2
        with pytest.raises(QueueFull, match="TAILOR_MAX_QUEUE=2") as full:
            await limiter.acquire()
        assert full.value.status == 429 and full.value.retry_after > 0
        first.release()
        first.release()  # idempotent: a second release must not free a second slot
        await asyncio.gather(*tasks)
        stats = limiter.stats()
        return order, stats

    order, stats = asyncio.run(scenario())
    assert order == ["a", "b"]
    assert (stats.active, stats.waiting, stats.admitted, stats.rejected_full) == (0, 0, 3, 1)


def test_waiting_too_long_is_busy_and_frees_its_place():
    async def scenario():
        limiter = RequestLimiter(max_active=1, max_queue=1, timeout_s=0.05)
        slot = await limiter.acquire()
        with pytest.raises(Busy, match="waited") as busy:
            await limiter.acquire()
        assert busy.value.status == 503
        assert limiter.stats().waiting == 0  # the timed-out waiter left the queue
        slot.release()
        again = await limiter.acquire()  # the slot was not leaked to the dead waiter
        again.release()
        return limiter.stats()

    stats = asyncio.run(scenario())
    assert stats.rejected_timeout == 1 and stats.active == 0


def test_cancelled_waiter_does_not_keep_a_slot():
    async def scenario():
        limiter = RequestLimiter(max_active=1, max_queue=4, timeout_s=5)
        slot = await limiter.acquire()
        task = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        task.cancel()  # a client that disconnected while queued
        with pytest.raises(asyncio.CancelledError):
            await task
        slot.release()
        assert limiter.stats().active == 0
        (await asyncio.wait_for(limiter.acquire(), 1)).release()

    asyncio.run(scenario())


def test_limiter_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        RequestLimiter(max_active=0)

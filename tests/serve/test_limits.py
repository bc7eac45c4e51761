"""The request queue, the body-size limit and safe upload names."""

from __future__ import annotations

import asyncio

import pytest

from assistant.errors import ValidationError
from assistant.limits import Busy, QueueFull, RequestLimiter, check_upload_size, safe_filename, upload_path


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


@pytest.mark.parametrize(
    "name,expected",
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/notes.md", "notes.md"),
        ("C:\\Users\\me\\evil.txt", "evil.txt"),
        (".bashrc", "bashrc"),
        ("a;rm -rf ~.txt", "a_rm -rf _.txt"),
    ],
)
def test_safe_filename_keeps_only_a_plain_name(name, expected):
    assert safe_filename(name) == expected


@pytest.mark.parametrize("name", ["", "..", "/", "../", "   "])
def test_unusable_names_are_refused(name):
    with pytest.raises(ValidationError):
        safe_filename(name)


def test_uploads_land_inside_the_workspace(workspace):
    for name in ("../../../outside.txt", "/etc/passwd", "sub/../../x.md"):
        path = upload_path(workspace, name)
        assert workspace.uploads_dir in path.parents
    with pytest.raises(ValidationError, match="outside the workspace"):
        upload_path(workspace, "x.txt", folder="../elsewhere")


def test_upload_size_limit():
    check_upload_size(1024, max_mb=1)
    with pytest.raises(ValidationError, match="TAILOR_MAX_UPLOAD_MB"):
        check_upload_size(2 * 1024 * 1024, max_mb=1)

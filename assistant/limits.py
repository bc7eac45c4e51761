"""Load and size limits for the server: a bounded request queue, a request-body cap, and
safe names for uploaded files.

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
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import TailorError, ValidationError


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


# ---- request bodies ----------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: requests under `prefix` may send at most `max_bytes` of body; more gets
    413 with a JSON error, before the endpoint sees anything. The body is read here (bounded)
    and replayed to the app, so a client that lies in Content-Length is caught as well."""

    def __init__(self, app, max_bytes: int, prefix: str = "/v1"):
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope.get("path", "").startswith(self.prefix):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(body)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls: wait for a disconnect, as the app expects

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        body = json.dumps(
            {
                "error": {
                    "message": f"The request body is larger than {self.max_bytes // 1024} KB (TAILOR_MAX_REQUEST_KB).",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_too_large",
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ---- logins ------------------------------------------------------------------------------------
class LoginThrottle:
    """ASGI middleware: a back-off per client address on the web app's password login.

    After `free_failures` wrong passwords in a row, the client must wait before its next try:
    1 s, then 2, 4, ... up to `max_delay_s`, answered 429 with Retry-After without checking the
    password at all. A right password resets the count. Without it, 200 guesses took 3.3 s.
    Counted per address, so one client guessing does not lock out the others; the table is
    bounded (oldest entries forgotten) so a flood of addresses cannot grow it without end."""

    def __init__(
        self,
        app,
        *,
        free_failures: int = 5,
        max_delay_s: float = 300.0,
        paths=("/login", "/login/"),
        max_clients: int = 10_000,
    ):
        self.app = app
        self.free_failures = free_failures
        self.max_delay_s = max_delay_s
        self.paths = set(paths)
        self.max_clients = max_clients
        self._clients: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # failures, until

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        client = (scope.get("client") or ("unknown", 0))[0]
        state = self._clients.get(client)
        now = time.monotonic()
        if state is not None and now < state[1]:
            wait = int(state[1] - now) + 1
            body = json.dumps(
                {"detail": f"Too many wrong passwords from this address: try again in {wait} s."}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", str(wait).encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        code = status.get("code", 500)
        if code in (400, 401, 403):
            failures = (state[0] if state else 0) + 1
            delay = (
                0.0 if failures < self.free_failures else min(2.0 ** (failures - self.free_failures), self.max_delay_s)
            )
            self._clients[client] = [failures, time.monotonic() + delay]
            self._clients.move_to_end(client)
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        elif code < 400:
            self._clients.pop(client, None)


# ---- uploads -----------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^\w.\- ()+,@]+", re.UNICODE)


def safe_filename(name: str) -> str:
    """A file name an upload may be stored under: the last path component only (a browser or a
    client may send `../../x` or `C:\\x`), no control or shell-special characters, not hidden."""
    base = unicodedata.normalize("NFC", str(name or "")).replace("\\", "/").rsplit("/", 1)[-1]
    base = _UNSAFE.sub("_", base).strip(" .")
    if not base:
        raise ValidationError(f"{name!r} is not a usable file name")
    return base[:200]


def upload_path(workspace, name: str, folder: str = "uploads") -> Path:
    """Where an uploaded file called `name` goes: inside `<workspace>/<folder>`, never outside
    the workspace whatever the name says (checked with `Workspace.inside` after resolving)."""
    path = workspace.inside(Path(folder) / safe_filename(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def check_upload_size(size_bytes: int, max_mb: int, name: str = "the file") -> None:
    if size_bytes > max_mb * 1024 * 1024:
        raise ValidationError(
            f"{name} is {size_bytes / 1e6:.1f} MB, over the upload limit of {max_mb} MB (TAILOR_MAX_UPLOAD_MB)"
        )

"""ASGI middleware of the server: a cap on request bodies under /v1 and a back-off on wrong
passwords at the web app's login."""

from __future__ import annotations

import collections
import json
import time


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

"""The running server, probed as an attacker would (issue #12): password guessing meets a
back-off, and a request with an absurd history is refused at once while a small request
beside it is answered without waiting behind it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.middleware import LoginThrottle


def _login_app(**kw) -> TestClient:
    async def login(request):
        form = await request.form()
        ok = form.get("password") == "right"
        return JSONResponse({"success": ok}, status_code=200 if ok else 400)

    return TestClient(LoginThrottle(Starlette(routes=[Route("/login", login, methods=["POST"])]), **kw))


def test_wrong_passwords_meet_a_growing_back_off(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("serving.middleware.time.monotonic", lambda: clock[0])
    client = _login_app(free_failures=3)
    statuses = [client.post("/login", data={"username": "a", "password": "no"}).status_code for _ in range(5)]
    assert statuses == [400, 400, 400, 429, 429]  # the 3rd failure starts a 1 s wait
    r = client.post("/login", data={"username": "a", "password": "right"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # not even checked while waiting
    clock[0] += 1.5
    assert client.post("/login", data={"username": "a", "password": "no"}).status_code == 400
    assert client.post("/login", data={"username": "a", "password": "right"}).status_code == 429  # now 2 s
    clock[0] += 2.5
    assert client.post("/login", data={"username": "a", "password": "right"}).status_code == 200
    # a right password resets the count
    assert client.post("/login", data={"username": "a", "password": "no"}).status_code == 400


def test_the_back_off_is_capped_and_the_table_bounded(monkeypatch):
    import asyncio

    clock = [0.0]
    monkeypatch.setattr("serving.middleware.time.monotonic", lambda: clock[0])

    async def refuse(scope, receive, send):
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    throttle = LoginThrottle(refuse, free_failures=1, max_delay_s=10, max_clients=3)

    async def attempt(client: str) -> None:
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        await throttle({"type": "http", "method": "POST", "path": "/login", "client": (client, 1)}, receive, send)

    waits = []
    for _ in range(8):  # one address failing again and again: the wait doubles, then stops at 10 s
        asyncio.run(attempt("10.0.0.1"))
        waits.append(throttle._clients["10.0.0.1"][1] - clock[0])
        clock[0] += 100  # past the wait, so the next try is checked (and fails)
    assert waits == [1, 2, 4, 8, 10, 10, 10, 10]
    for i in range(30):  # many addresses: only the newest few are remembered
        asyncio.run(attempt(f"10.0.1.{i}"))
    assert list(throttle._clients) == ["10.0.1.27", "10.0.1.28", "10.0.1.29"]


@pytest.mark.server
def test_password_guessing_against_the_real_server(tailor_server, tiny_model_dir, tmp_path):
    server = tailor_server(tmp_path / "ws", tiny_model_dir, args=["--auth", "ann:pw-12345"])
    codes = []
    for _ in range(12):
        request = urllib.request.Request(
            server.url + "login",
            data=b"username=ann&password=guess",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                codes.append(r.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    assert codes[:5] == [400] * 5 and 429 in codes[5:], codes


def _post(url: str, body: dict, timeout: float = 120) -> tuple[int, dict, float]:
    started = time.perf_counter()
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read()), time.perf_counter() - started
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), time.perf_counter() - started


@pytest.mark.server
def test_a_huge_history_does_not_stall_a_small_request(tailor_server, tiny_model_dir, tmp_path):
    """Before: 1,500 one-word turns held the engine 24 s, and 10,001 turns still held it after
    11 minutes while everyone else got 503."""
    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    url = server.url + "v1/chat/completions"
    small = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    _, _, one_generation = _post(url, small)  # also warms the model up
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"word{i}"} for i in range(10_001)]
    status, body, took = _post(url, {"model": "base", "messages": turns, "max_tokens": 1})
    assert status == 413 and body["error"]["code"] == "too_many_messages" and took < 2.0

    results = {}
    big = {"model": "base", "messages": turns[-999:], "max_tokens": 4, "temperature": 0}
    worker = threading.Thread(target=lambda: results.update(big=_post(url, big)))
    worker.start()
    time.sleep(0.05)
    results["small"] = _post(url, small)
    worker.join(120)
    assert results["big"][0] == 200 and results["small"][0] == 200
    # the small request waits for at most the big one's (bounded) turn: a generation and a fit
    big_took, small_took = results["big"][2], results["small"][2]
    assert small_took < big_took + one_generation + 2.0, (small_took, big_took, one_generation)


@pytest.mark.server
def test_cross_site_requests_are_refused_by_the_real_server(tailor_server, tiny_model_dir, tmp_path, openai_for):
    """Issue #12.5: a `text/plain` POST (which any web page can send without a preflight) was
    answered and logged; a page on another origin could drive /v1."""
    server = tailor_server(tmp_path / "ws", tiny_model_dir)
    url = server.url + "v1/chat/completions"
    body = json.dumps({"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()

    def post(headers):
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert post({"Content-Type": "text/plain"}) == 415
    assert post({"Content-Type": "application/x-www-form-urlencoded"}) == 415
    assert post({"Content-Type": "application/json", "Origin": "https://evil.example"}) == 403
    assert post({"Content-Type": "application/json", "Origin": server.url.rstrip("/")}) == 200  # the web app itself
    reply = openai_for(server).chat.completions.create(model="base", messages=[{"role": "user", "content": "hi"}],
                                                       max_tokens=2)  # fmt: skip
    assert reply.choices[0].message.role == "assistant"
    with sqlite3.connect(tmp_path / "ws" / "tailor.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 2  # only the two answered

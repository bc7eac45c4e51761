"""The OpenAI-compatible HTTP API, served by the same server as the web app under /v1.

    GET  /v1/models                  "base" and every published adapter
    GET  /v1/models/{id}
    POST /v1/chat/completions        OpenAI chat format; "stream": true gives server-sent events
    POST /v1/load_lora_adapter       vLLM's run-time adapter routes (serving/lora_routes.py), so
    POST /v1/unload_lora_adapter     another Tailor can use this one as its engine

Requests go through `ChatService` like chat-tab messages, so each one is logged (as a new
conversation with source "api", unless it continues one) and shows up in curation and in
the Activity view. Tailor's own options travel in an extra `tailor` object, which the
official client sends with `extra_body={"tailor": {...}}`:

    "tailor": {"rag": true, "k": 4,            # answer from the documents, with citations
               "no_source": "answer",           # or "decline" when no document supports an answer
               "conversation_id": "..."}        # continue a logged conversation

and every response carries a `tailor` object back (on the final chunk when streaming):

    "tailor": {"conversation_id": ..., "message_id": ..., "abstained": bool, "declined": bool,
               "citations": [{"index": 1, "source", "heading", "text", "score", "id",
                              "evidence": [{"start", "end", "text"}]}],
               "queue_wait_s": float}

"abstained": no document supported an answer, so no citations (the closest passages come in
"closest", shaped the same); "declined": the reply is the no-source reply instead of the model's
own answer. A citation's "evidence" lists the sentences of its "text" the answer rests on
(assistant/evidence.py), as offsets into that "text" counted in Unicode code points (Python
string indices, not UTF-16 units or bytes): `text[start:end]` is the evidence's "text". Empty
when none were chosen (always, for "closest": evidence is chosen only to answer).

Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}`: 400 bad request
(also: NaN/Infinity, numbers that overflow, nesting deeper than 32 levels, lone surrogates),
401 missing/wrong API key, 403 a browser page from another origin, 404 unknown model or
conversation, 413 body too large or too many messages (TAILOR_MAX_MESSAGES), 415 a POST that
is not `Content-Type: application/json`, 429 queue full, 503 waited too long, 500 generation
failed. A refused request is never logged as a conversation."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from assistant.accounts import API_USER, as_user
from assistant.adapters import BASE
from assistant.chat import ChatRequest, ChatService, Turn
from assistant.conversations import StoredMessage
from assistant.errors import TailorError
from assistant.prompting import Passage

from .errors import ApiError, error_body, from_tailor_error
from .lora_routes import add_lora_routes
from .middleware import BodyLimit
from .queue import RequestLimiter
from .requests import ParsedRequest, load_json_body, parse_chat_request

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "stopped": "stop", "no_source": "stop"}


@dataclass
class ApiConfig:
    keys: list[str] = field(default_factory=list)
    # Accounts (assistant/accounts.py): the user each key is bound to (`user:key` in
    # TAILOR_API_KEYS); a request with an unbound key, or none, acts as accounts.API_USER.
    key_users: dict[str, str | None] = field(default_factory=dict)
    accounts: bool = False
    # Off loopback the API is never open: without keys it answers 401 to everyone.
    open_without_key: bool = True
    max_request_bytes: int = 1024 * 1024
    # One request may carry at most this many messages: more cannot fit any context Tailor
    # runs with, and refusing them up front keeps one request from holding the engine.
    max_messages: int = 1000
    # Browser pages from these origins (scheme://host[:port]) may call /v1 besides the web app
    # itself; every other page is refused (see _check_browser).
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # a key bound to a user is a key: the app passes key_users alone, tests often keys alone
        self.keys = list(dict.fromkeys([*self.keys, *self.key_users]))


def _evidence(p: Passage) -> list[dict]:
    """The passage's evidence spans, as offsets into its text; a span that does not match the
    text it claims (never expected) is left out rather than sent wrong."""
    return [
        {"start": e.start, "end": e.end, "text": e.text}
        for e in p.evidence
        if 0 <= e.start < e.end <= len(p.text) and p.text[e.start : e.end] == e.text
    ]


def _citations(turn: Turn) -> tuple[list[dict], bool, list[dict]]:
    r = turn.retrieval
    if r is None:
        return [], False, []
    cited = [
        {
            "index": i,
            "id": p.id,
            "source": p.source,
            "heading": p.heading,
            "text": p.text,
            "score": round(float(p.score), 4),
            "evidence": _evidence(p),
        }
        for i, p in enumerate(r.passages, start=1)
    ]
    return ([], True, cited) if r.abstain else (cited, False, [])


def _tailor_info(turn: Turn, reply: StoredMessage | None, waited_s: float) -> dict:
    citations, abstained, closest = _citations(turn)
    info = {
        "conversation_id": turn.conversation_id,
        "message_id": reply.id if reply else None,
        "abstained": abstained,
        "declined": turn.declined,
        "citations": citations,
        "queue_wait_s": round(waited_s, 3),
    }
    if abstained and turn.retrieval is not None:
        info["closest"] = closest  # what was found, though not good enough to answer from
        info["reason"] = turn.retrieval.reason
    return info


def _usage(reply: StoredMessage) -> dict:
    p, c = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _check_key(request: Request, config: ApiConfig) -> str | None:
    """Check the request's key; returns the user the request acts as (None: no accounts)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    fallback = API_USER if config.accounts else None
    if config.keys:
        # compare_digest against every key (no early exit): timing does not reveal which matched
        matches = [k for k in config.keys if token and hmac.compare_digest(token.encode(), k.encode())]
        if matches:
            return (config.key_users.get(matches[0]) or fallback) if config.accounts else None
        raise ApiError(
            401,
            "Missing or wrong API key: send 'Authorization: Bearer <key>' with one of the keys in TAILOR_API_KEYS.",
            code="invalid_api_key",
        )
    if not config.open_without_key:
        raise ApiError(
            401,
            "The API is closed: the server listens beyond localhost and has no API keys. Start it "
            "with TAILOR_API_KEYS=<key>[,<key2>] and send 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    return fallback


def _origin_of(url: str) -> str:
    return url.rstrip("/").lower()


def _check_browser(request: Request, config: ApiConfig) -> None:
    """Refuse requests that a web page on another site makes a browser send. Such a page
    cannot read the reply (no CORS headers), but it could still make the server generate and
    log: a `text/plain` POST needs no preflight. So: a POST must say `application/json` (which
    a cross-site page can only send after a preflight that Tailor does not answer), and a
    request with an `Origin` header must come from the web app itself or from
    TAILOR_ALLOWED_ORIGINS. The openai client, curl and scripts send no Origin."""
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        same = {f"http://{host}".lower(), f"https://{host}".lower()}
        allowed = same | {_origin_of(o) for o in config.allowed_origins}
        if _origin_of(origin) not in allowed:
            raise ApiError(
                403,
                f"requests from web pages on {origin[:100]} are not allowed; add the origin to "
                "TAILOR_ALLOWED_ORIGINS to allow it",
                "permission_denied",
                "origin_not_allowed",
            )
    elif request.headers.get("sec-fetch-site") == "cross-site":
        raise ApiError(403, "cross-site browser requests are not allowed", "permission_denied", "origin_not_allowed")
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(
                415,
                f"the request must be JSON: send 'Content-Type: application/json' (got {ctype or 'none'!r})",
                code="unsupported_media_type",
            )


def build_router(chat: ChatService, limiter: RequestLimiter, config: ApiConfig) -> APIRouter:
    def guard(request: Request) -> None:
        """Every /v1 route's one check: the browser rules first (they need no secret), then the key."""
        _check_browser(request, config)
        request.state.tailor_user = _check_key(request, config)

    router = APIRouter(prefix="/v1", dependencies=[Depends(guard)])
    started = int(time.time())

    def model_card(name: str) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": started,
            "owned_by": "tailor",
            "root": chat.engine.name,
            "parent": None if name == BASE else chat.engine.name,
        }

    async def require_model(name: str) -> None:
        if name not in await run_in_threadpool(chat.models):
            raise ApiError(
                404,
                f"The model {name!r} does not exist; use 'base' or an adapter name (GET /v1/models lists them).",
                code="model_not_found",
                param="model",
            )

    @router.get("/models")
    async def list_models():
        names = await run_in_threadpool(chat.models)
        return {"object": "list", "data": [model_card(n) for n in names]}

    @router.get("/models/{model_id}")
    async def get_model(model_id: str):
        await require_model(model_id)
        return model_card(model_id)

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        req = parse_chat_request(load_json_body(await request.body()), config.max_messages)
        await require_model(req.model)
        try:
            slot = await limiter.acquire()
        except TailorError as exc:  # queue full (429) or waited too long (503)
            raise from_tailor_error(exc) from None
        try:
            turn = await run_in_threadpool(
                as_user(request.state.tailor_user, chat.send),  # its conversations are this user's
                ChatRequest(
                    text=req.text,
                    conversation_id=req.conversation_id,
                    model=req.model,
                    system_prompt=req.system,
                    options=req.options,
                    rag=req.rag,
                    k=req.k,
                    history=req.history,
                    source="api",
                    no_source=req.no_source,
                ),
            )
        except BaseException as exc:
            slot.release()
            if isinstance(exc, TailorError):
                raise from_tailor_error(exc) from None
            raise
        completion_id = f"chatcmpl-{turn.conversation_id}-{turn.user_message.id}"
        created = int(time.time())
        if req.stream:
            return StreamingResponse(
                _stream(turn, slot, req, completion_id, created, request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            reply = await run_in_threadpool(turn.wait)
        except Exception as exc:
            log.exception("API reply failed")
            raise ApiError(500, f"generation failed: {exc}", "server_error", "generation_failed") from None
        finally:
            slot.release()
        if reply.finish_reason == "error":
            raise ApiError(
                500,
                f"generation failed; the partial reply was saved in conversation {turn.conversation_id}",
                "server_error",
                "generation_failed",
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": _FINISH.get(reply.finish_reason or "stop", "stop"),
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply),
            "tailor": _tailor_info(turn, reply, slot.waited_s),
        }

    add_lora_routes(router, chat)  # POST /load_lora_adapter, /unload_lora_adapter (serving/lora_routes.py)
    return router


async def _stream(
    turn: Turn, slot, req: ParsedRequest, completion_id: str, created: int, request: Request
) -> AsyncIterator[bytes]:
    """Server-sent events in OpenAI's chunk format. The texts from `Turn` are the whole reply so
    far; chunks carry the new part only. A thread feeds them to the event loop so no worker
    thread is parked per token, and a client that goes away stops the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def pump():
        try:
            for text in turn:
                loop.call_soon_threadsafe(queue.put_nowait, text)
        except BaseException as exc:  # noqa: BLE001 - reported in the stream
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, done)

    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        return _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": req.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
        )

    finished = False
    threading.Thread(target=pump, daemon=True, name="tailor-api-stream").start()
    try:
        yield chunk({"role": "assistant", "content": ""})
        sent = ""
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            text = item.lstrip()  # the stored reply is stripped; stream the same text
            if text.startswith(sent) and len(text) > len(sent):
                yield chunk({"content": text[len(sent) :]})
                sent = text
        reply = await run_in_threadpool(turn.wait)
        if reply.content.startswith(sent) and len(reply.content) > len(sent):
            yield chunk({"content": reply.content[len(sent) :]})
        if reply.finish_reason == "error":
            yield _sse(
                error_body(
                    f"generation failed; the partial reply was saved in conversation {turn.conversation_id}",
                    "server_error",
                    "generation_failed",
                )
            )
        else:
            yield chunk(
                {}, _FINISH.get(reply.finish_reason or "stop", "stop"), tailor=_tailor_info(turn, reply, slot.waited_s)
            )
            if req.include_usage:
                yield _sse(
                    {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [],
                        "usage": _usage(reply),
                    }
                )
        yield b"data: [DONE]\n\n"
        finished = True
    except Exception as exc:
        log.exception("API stream failed")
        yield _sse(error_body(f"generation failed: {exc}", "server_error", "generation_failed"))
    finally:
        if not finished:
            turn.stop()  # the client went away (or the stream failed): free the engine
        slot.release()


def install_api(app: FastAPI, chat: ChatService, limiter: RequestLimiter, config: ApiConfig) -> None:
    """Add /v1 to `app` (before the web UI is mounted at "/", so /v1 paths match first)."""
    app.include_router(build_router(chat, limiter, config))
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes, prefix="/v1")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

"""The OpenAI-compatible HTTP API, served by the same server as the web app under /v1.

    GET  /v1/models                  "base" and every published adapter
    GET  /v1/models/{id}
    POST /v1/chat/completions        OpenAI chat format; "stream": true gives server-sent events

Requests go through `ChatService` like chat-tab messages, so each one is logged (as a new
conversation with source "api", unless it continues one) and shows up in curation and in
the Activity view. Tailor's own options travel in an extra `tailor` object, which the
official client sends with `extra_body={"tailor": {...}}`:

    "tailor": {"rag": true, "k": 4,            # answer from the documents, with citations
               "no_source": "answer",           # or "decline" when no document supports an answer
               "conversation_id": "..."}        # continue a logged conversation

and every response carries a `tailor` object back (on the final chunk when streaming):

    "tailor": {"conversation_id": ..., "message_id": ..., "abstained": bool, "declined": bool,
               "citations": [{"index": 1, "source", "heading", "text", "score", "id"}],
               "queue_wait_s": float}

"abstained": no document supported an answer, so no citations (the closest passages come in
"closest"); "declined": the reply is the no-source reply instead of the model's own answer.

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

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .adapters import BASE
from .chat import NO_SOURCE_POLICIES, ChatRequest, ChatService, Turn
from .conversations import StoredMessage
from .engine import GenerationOptions
from .errors import NotFoundError, TailorError
from .limits import BodyLimit, Overloaded, RequestLimiter

log = logging.getLogger(__name__)

_FINISH = {"stop": "stop", "length": "length", "stopped": "stop", "no_source": "stop"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.message, self.type, self.code, self.param), status_code=self.status, headers=self.headers
        )


def error_body(
    message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _from_tailor_error(exc: TailorError) -> ApiError:
    if isinstance(exc, Overloaded):
        return ApiError(
            exc.status,
            str(exc),
            "server_busy" if exc.status == 503 else "rate_limit_exceeded",
            exc.code,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), "invalid_request_error", "not_found")
    return ApiError(400, str(exc), "invalid_request_error", "invalid_request")


@dataclass
class ApiConfig:
    keys: list[str] = field(default_factory=list)
    # Off loopback the API is never open: without keys it answers 401 to everyone.
    open_without_key: bool = True
    max_request_bytes: int = 1024 * 1024
    # One request may carry at most this many messages: more cannot fit any context Tailor
    # runs with, and refusing them up front keeps one request from holding the engine.
    max_messages: int = 1000
    # Browser pages from these origins (scheme://host[:port]) may call /v1 besides the web app
    # itself; every other page is refused (see _check_browser).
    allowed_origins: tuple[str, ...] = ()


@dataclass
class ParsedRequest:
    model: str
    text: str
    history: list[dict]
    system: str | None
    options: GenerationOptions
    stream: bool
    include_usage: bool
    rag: bool | None
    k: int
    conversation_id: str | None
    no_source: str | None = None


def _content_text(content, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}] as newer clients send
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{index}].content: only text parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts", param="messages")


def _number(body: dict, name: str, kind, default):
    value = body.get(name)
    if value is None:
        return default
    what = f"{name} must be a{'n integer' if kind is int else ' number'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, what, param=name)
    try:
        if kind is int and value != int(value):
            raise ApiError(400, what, param=name)
        number = kind(value)
    except (OverflowError, ValueError):  # inf, or an integer too large for a float
        raise ApiError(400, f"{what} of a sensible size", param=name) from None
    if kind is int and not INT64_MIN <= number <= INT64_MAX:
        raise ApiError(400, f"{name} must fit in a signed 64-bit integer", param=name)
    return number


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_JSON_DEPTH = 32  # a chat request nests 5 levels deep; anything far deeper is an attack or a bug


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large: numbers must be finite")
    return value


def load_json_body(raw: bytes):
    """Parse a request body as strict JSON: no NaN/Infinity, no number that overflows to
    infinity, no nesting deeper than MAX_JSON_DEPTH, no string that is not valid Unicode (a lone
    surrogate such as "\\ud800" cannot be stored or tokenized). Raises ApiError(400)."""
    try:
        body = json.loads(raw or b"null", parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:  # includes UnicodeDecodeError: the body is not UTF-8
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    # Walk without recursion: the check itself must not be the thing that overflows.
    stack = [(body, 1, "body")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ApiError(400, f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key, where)
                    stack.append((item, depth + 1, f"{where}.{key}"[:200]))
            else:
                stack.extend((item, depth + 1, f"{where}[{i}]"[:200]) for i, item in enumerate(value))
    return body


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(
            400,
            f"{where} contains a lone surrogate (such as \\ud800), which is not valid Unicode text",
            param=where.split(".", 2)[1] if "." in where else None,
        ) from None


def parse_chat_request(body, max_messages: int = 1000) -> ParsedRequest:
    """Turn an OpenAI chat request into Tailor's terms, with a clear 400 for anything off."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required: 'base' or an adapter name (GET /v1/models lists them)", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    if len(messages) > max_messages:
        raise ApiError(
            413,
            f"messages has {len(messages)} entries; at most {max_messages} are accepted "
            "(TAILOR_MAX_MESSAGES). Only the newest turns fit the model's context anyway: "
            "send those.",
            code="too_many_messages",
            param="messages",
        )
    system_parts, turns = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(400, f"messages[{i}] must be an object with role and content", param="messages")
        role = m.get("role")
        text = _content_text(m.get("content"), i)
        if role in ("system", "developer"):
            system_parts.append(text)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": text})
        else:
            raise ApiError(
                400, f"messages[{i}].role {role!r} is not supported (use system, user or assistant)", param="messages"
            )
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must come from the user", param="messages")
    n = _number(body, "n", int, 1)
    if n != 1:
        raise ApiError(400, "n must be 1: Tailor returns one choice per request", param="n")
    if body.get("tools") or body.get("functions"):
        raise ApiError(400, "tools / function calling are not supported", param="tools")
    defaults = GenerationOptions()
    max_tokens = _number(body, "max_completion_tokens", int, None)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int, defaults.max_new_tokens)
    options = GenerationOptions(
        temperature=_number(body, "temperature", float, defaults.temperature),
        top_p=_number(body, "top_p", float, defaults.top_p),
        max_new_tokens=max_tokens,
        repetition_penalty=defaults.repetition_penalty,
        seed=_number(body, "seed", int, None),
    )
    extra = body.get("tailor") or {}
    if not isinstance(extra, dict):
        raise ApiError(400, 'tailor must be an object like {"rag": true, "k": 4}', param="tailor")
    unknown = set(extra) - {"rag", "k", "conversation_id", "no_source"}
    if unknown:
        raise ApiError(
            400,
            f"unknown tailor option(s): {', '.join(sorted(unknown))} (known: rag, k, no_source, conversation_id)",
            param="tailor",
        )
    rag = extra.get("rag")
    if rag is not None and not isinstance(rag, bool):
        raise ApiError(400, "tailor.rag must be true or false", param="tailor.rag")
    k = _number(extra, "k", int, 4)
    if not 1 <= k <= 20:
        raise ApiError(400, "tailor.k must be between 1 and 20", param="tailor.k")
    no_source = extra.get("no_source")
    if no_source is not None and no_source not in NO_SOURCE_POLICIES:
        raise ApiError(
            400, f"tailor.no_source must be one of {', '.join(NO_SOURCE_POLICIES)}", param="tailor.no_source"
        )
    conversation_id = extra.get("conversation_id")
    if conversation_id is not None and not isinstance(conversation_id, str):
        raise ApiError(400, "tailor.conversation_id must be a string", param="tailor.conversation_id")
    stream_options = body.get("stream_options") or {}
    return ParsedRequest(
        model=model,
        text=turns[-1]["content"],
        # Continuing a logged conversation: its stored history is the context, so the request's
        # earlier turns (which a client re-sends anyway) are not logged a second time.
        history=[] if conversation_id else turns[:-1],
        system="\n\n".join(system_parts) if system_parts else (None if conversation_id else ""),
        options=options,
        stream=bool(body.get("stream")),
        include_usage=bool(isinstance(stream_options, dict) and stream_options.get("include_usage")),
        rag=rag,
        k=k,
        conversation_id=conversation_id,
        no_source=no_source,
    )


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
    if abstained:
        info["closest"] = closest  # what was found, though not good enough to answer from
        info["reason"] = turn.retrieval.reason
    return info


def _usage(reply: StoredMessage) -> dict:
    p, c = reply.prompt_tokens or 0, reply.completion_tokens or 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _sse(obj) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


def _check_key(request: Request, config: ApiConfig) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    if config.keys:
        # compare_digest against every key: timing does not reveal which prefix matched
        if token and any(hmac.compare_digest(token.encode(), k.encode()) for k in config.keys):
            return
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


def _guard(request: Request, config: ApiConfig) -> None:
    """Every /v1 route: the browser check first (it needs no secret), then the key."""
    _check_browser(request, config)
    _check_key(request, config)


def build_router(chat: ChatService, limiter: RequestLimiter, config: ApiConfig) -> APIRouter:
    router = APIRouter(prefix="/v1")
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

    @router.get("/models")
    async def list_models(request: Request):
        try:
            _guard(request, config)
            names = await run_in_threadpool(chat.models)
            return {"object": "list", "data": [model_card(n) for n in names]}
        except ApiError as exc:
            return exc.response()

    @router.get("/models/{model_id}")
    async def get_model(model_id: str, request: Request):
        try:
            _guard(request, config)
            if model_id not in await run_in_threadpool(chat.models):
                raise ApiError(
                    404,
                    f"The model {model_id!r} does not exist (GET /v1/models lists them).",
                    code="model_not_found",
                    param="model",
                )
            return model_card(model_id)
        except ApiError as exc:
            return exc.response()

    @router.post("/chat/completions")
    async def chat_completions(request: Request):
        slot = None
        try:
            _guard(request, config)
            body = load_json_body(await request.body())
            req = parse_chat_request(body, config.max_messages)
            if req.model not in await run_in_threadpool(chat.models):
                raise ApiError(
                    404,
                    f"The model {req.model!r} does not exist; use 'base' or an adapter name "
                    "(GET /v1/models lists them).",
                    code="model_not_found",
                    param="model",
                )
            slot = await limiter.acquire()
            turn = await run_in_threadpool(
                chat.send,
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
        except TailorError as exc:
            if slot is not None:
                slot.release()
            return _from_tailor_error(exc).response()
        except ApiError as exc:
            if slot is not None:
                slot.release()
            return exc.response()
        except BaseException:
            if slot is not None:
                slot.release()
            raise
        completion_id = f"chatcmpl-{turn.conversation_id}-{turn.user_message.id}"
        created = int(time.time())
        if not req.stream:
            try:
                reply = await run_in_threadpool(turn.wait)
            except Exception as exc:
                log.exception("API reply failed")
                return ApiError(500, f"generation failed: {exc}", "server_error", "generation_failed").response()
            finally:
                slot.release()
            if reply.finish_reason == "error":
                return ApiError(
                    500,
                    f"generation failed; the partial reply was saved in conversation {turn.conversation_id}",
                    "server_error",
                    "generation_failed",
                ).response()
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
                        "finish_reason": _FINISH.get(reply.finish_reason, "stop"),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(reply),
                "tailor": _tailor_info(turn, reply, slot.waited_s),
            }
        return StreamingResponse(
            _stream(turn, slot, req, completion_id, created, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

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
            yield chunk({}, _FINISH.get(reply.finish_reason, "stop"), tailor=_tailor_info(turn, reply, slot.waited_s))
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

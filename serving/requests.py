"""Parsing an OpenAI chat request into Tailor's terms: strict JSON first (no NaN/Infinity,
no overflowing numbers, bounded nesting, valid Unicode), then every field checked with a 400
that names it. Written by hand rather than as a pydantic model: the messages say exactly what
is wrong in OpenAI's words and shape (a pydantic model would answer FastAPI's 422 shape), and
the strict-JSON checks must run before any model sees the data."""

from __future__ import annotations

import json
from dataclasses import dataclass

from assistant.chat import NO_SOURCE_POLICIES
from assistant.engine import GenerationOptions

from .errors import ApiError


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

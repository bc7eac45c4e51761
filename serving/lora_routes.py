"""vLLM's two routes for adapters loaded at run time, on Tailor's /v1, so that another Tailor can
use this one as its engine (assistant/remote_engine.py) exactly as it would use vLLM:

    POST /v1/load_lora_adapter    {"lora_name": "...", "lora_path": "/abs/folder", "load_inplace": false}
    POST /v1/unload_lora_adapter  {"lora_name": "..."}

Answers follow vLLM's (vllm/entrypoints/openai/models/serving.py): 200 with the text
"Success: LoRA adapter '<name>' added successfully." (or "removed"), 400 when the name is
already loaded without load_inplace, 404 when unloading a name that is not loaded; errors in
OpenAI's shape. Beyond vLLM, a path that is not a LoRA adapter folder on this server (relative,
missing, no adapter_config.json, pickle-only weights) is a 400 that says which, and names of this
workspace's own adapters are refused. The router's guard protects them like every /v1 route
(API keys, browser origin, JSON content type)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from assistant.chat import ChatService
from assistant.errors import TailorError

from .errors import ApiError, from_tailor_error
from .requests import load_json_body


def _field(body: dict, name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} is required (a non-empty string)", param=name)
    return value.strip()


def add_lora_routes(router: APIRouter, chat: ChatService) -> None:
    @router.post("/load_lora_adapter")
    async def load_lora_adapter(request: Request):
        body = load_json_body(await request.body())
        if not isinstance(body, dict):
            raise ApiError(400, 'the request body must be a JSON object like {"lora_name": ..., "lora_path": ...}')
        name, path = _field(body, "lora_name"), _field(body, "lora_path")
        inplace = body.get("load_inplace", False)
        if not isinstance(inplace, bool):
            raise ApiError(400, "load_inplace must be true or false", param="load_inplace")
        try:
            await run_in_threadpool(chat.served.load, name, path, inplace)
        except TailorError as exc:
            raise from_tailor_error(exc) from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @router.post("/unload_lora_adapter")
    async def unload_lora_adapter(request: Request):
        body = load_json_body(await request.body())
        if not isinstance(body, dict):
            raise ApiError(400, 'the request body must be a JSON object like {"lora_name": ...}')
        name = _field(body, "lora_name")
        try:
            await run_in_threadpool(chat.served.unload, name)
        except TailorError as exc:
            raise from_tailor_error(exc) from None
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

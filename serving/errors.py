"""OpenAI's error shape for every /v1 answer that is not a success:
`{"error": {"message", "type", "param", "code"}}`, so the official clients raise their own
exception classes (BadRequestError, RateLimitError, ...). Routes raise `ApiError`; one
exception handler (serving.api.install_api) turns it, and any `TailorError`, into a response."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from assistant.errors import EngineUnavailable, NotFoundError, TailorError

from .queue import Overloaded


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


def from_tailor_error(exc: TailorError) -> ApiError:
    if isinstance(exc, Overloaded):
        return ApiError(
            exc.status,
            str(exc),
            "server_busy" if exc.status == 503 else "rate_limit_exceeded",
            exc.code,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, EngineUnavailable):  # the remote engine (TAILOR_ENGINE_URL) is down or refused
        return ApiError(502, str(exc), "server_error", "engine_unavailable")
    if isinstance(exc, NotFoundError):
        return ApiError(404, str(exc), "invalid_request_error", "not_found")
    return ApiError(400, str(exc), "invalid_request_error", "invalid_request")

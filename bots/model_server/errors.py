"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which the SDKs turn
into their exception classes (400: ``BadRequestError``, 404: ``NotFoundError``, …)."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

#: a request the model cannot take now (the queue is full); the project's OpenAI backend reads this
#: type inside a stream, and 503 outside one, as "busy, try again"
SERVER_BUSY = "server_busy"


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class ApiError(Exception):
    """A failure to answer with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, kind, param, code)


async def api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse(error.body, status_code=error.status)


async def http_error(request: Request, error: Exception) -> Response:
    """Starlette's own (unknown path: 404, wrong method: 405) in the same shape."""
    assert isinstance(error, HTTPException)
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(error.detail), kind), status_code=error.status_code)


async def server_error(request: Request, error: Exception) -> Response:
    return JSONResponse(error_body(f"the model server failed: {error}", "server_error"), status_code=500)

"""HTTP errors: every answer that is not a reading is ``{"error": kind, "detail": ...}`` with a
real status code, and a body over the size limit is refused before it is read."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client's mistake: answered with ``status`` and ``{"error": kind, "detail": detail}``."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def error_response(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """Pydantic's error list -> ``"beam_width: Input should be ... ; ..."``."""
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "body")]
        parts.append(f"{'.'.join(loc) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's, gets the same JSON shape."""

    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.kind, error.detail)

    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_parameter", validation_detail(list(error.errors())))

    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = HTTPStatus(error.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        response = error_response(error.status_code, kind, str(error.detail))
        if error.headers:
            response.headers.update(error.headers)
        return response

    async def internal_error(_request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error", exc_info=error)
        return error_response(500, "internal_error", "the server failed; see its log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


class BodyLimitMiddleware:
    """ASGI middleware: refuse a body over ``max_bytes`` from its Content-Length, before reading
    it, and count the bytes of every body as they arrive (chunked bodies have no length)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = error_response(413, "body_too_large", self._detail(int(value)))
                await response(scope, receive, send)
                return
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise ApiError(413, "body_too_large", self._detail(received))
            return message

        await self.app(scope, counting_receive, send)

    def _detail(self, size: int) -> str:
        return f"the request body ({size:,} bytes) is over the limit of {self.max_bytes:,} bytes"

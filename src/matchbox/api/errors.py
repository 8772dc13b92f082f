"""Errors as JSON that names the field at fault: the ApiError raised by routes, and the handlers
that turn validation failures, HTTP errors and an unreachable Redis into such bodies (never a 500)."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from matchbox.api.models import (
    ErrorBody,
)

log = logging.getLogger(__name__)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
REDIS_DOWN = b'{"error":"the exchange\'s Redis is unavailable; retry shortly"}'
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, 403: {"model": ErrorBody}}
# What a request made with an API key may also meet: no or a bad key, another account, the rate limit.
KEY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    429: {"model": ErrorBody},
}


class BodyTooLarge(StarletteHTTPException):
    """A request body past the limit, raised the moment its bytes arrive (see
    :class:`matchbox.api.middleware.LimitAndMeasure`), whatever its framing."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over {limit // 1024} KiB")


def too_large(exc: BodyTooLarge) -> JSONResponse:
    # the rest of the body is still coming: closing the connection stops it, rather than have
    # the server read and drop it to keep the connection alive
    return JSONResponse({"error": exc.detail, "field": "body"}, status_code=413, headers={"Connection": "close"})


class ApiError(Exception):
    def __init__(
        self, status: int, error: str, field: str | None = None, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(error)
        self.status = status
        self.headers = headers
        self.body = ErrorBody(error=error, field=field, **extra)


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(exclude_none=True), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(BodyTooLarge)  # a route's body read ran past the limit
    async def body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return too_large(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": "the body is not valid JSON", "field": "body"}, status_code=400)
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        status = 400 if first.get("type") in ("greater_than", "greater_than_equal") else 422
        return JSONResponse({"error": f"{field}: {first.get('msg')}", "field": field}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> Response:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return Response(REDIS_DOWN, status_code=503, media_type="application/json")

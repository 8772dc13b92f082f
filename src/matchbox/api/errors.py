"""Errors as JSON that names the field at fault: the ApiError raised by routes, and the handlers
that turn validation failures, HTTP errors and an unreachable Redis into such bodies (never a 500)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from matchbox.api.codes import Code
from matchbox.api.models import ErrorBody, ErrorDetail
from matchbox.engine.types import RejectReason

log = logging.getLogger(__name__)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}
REDIS_DOWN = b'{"error":{"code":"UNAVAILABLE","message":"the exchange\'s Redis is unavailable; retry shortly"}}'
INTERNAL_MESSAGE = "an unexpected error on the server (logged); retry, or report it"
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
    return error_response(413, Code.BODY_TOO_LARGE, str(exc.detail), "body", headers={"Connection": "close"})


def error_body(
    code: Code | RejectReason, message: str, field: str | None = None, order_id: int | None = None
) -> ErrorBody:
    """The one error shape: ``{"error": {"code", "message", "field"?, "order_id"?}}``."""
    name = code.name if isinstance(code, RejectReason) else code.value
    return ErrorBody(error=ErrorDetail(code=name, message=message, field=field, order_id=order_id))


def error_response(
    status: int,
    code: Code | RejectReason,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = error_body(code, message, field).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


class ApiError(Exception):
    """A refusal: its HTTP status, its code (the API's, or the engine's reject reason) and the field at fault."""

    def __init__(
        self,
        status: int,
        code: Code | RejectReason,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        order_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.body = error_body(code, message, field, order_id)


def rejected_by_engine(
    status: int, reason: RejectReason, field: str | None = None, order_id: int | None = None
) -> ApiError:
    """The engine's refusal of a command: its reason is the code."""
    return ApiError(
        status, reason, f"rejected by the engine: {reason.name.lower().replace('_', ' ')}", field, order_id=order_id
    )


# Pydantic's error types, as (status, code): a value out of its bounds is a 400, as the seed has a
# zero qty; any other invalid value (a wrong type, a word not in the list) a 422, as its bad side.
_VALIDATION: dict[str, tuple[int, Code]] = {
    "json_invalid": (400, Code.INVALID_JSON),
    "extra_forbidden": (400, Code.UNKNOWN_FIELD),
    "missing": (422, Code.MISSING_FIELD),
    "greater_than": (400, Code.INVALID_FIELD),
    "greater_than_equal": (400, Code.INVALID_FIELD),
    "less_than": (400, Code.INVALID_FIELD),
    "less_than_equal": (400, Code.INVALID_FIELD),
}
_HTTP_CODES = {404: Code.NOT_FOUND, 405: Code.METHOD_NOT_ALLOWED}


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
        kind = str(first.get("type", ""))
        status, code = _VALIDATION.get(kind, (422, Code.INVALID_FIELD))
        if code is Code.INVALID_JSON:
            return error_response(status, code, "the body is not valid JSON", "body")
        loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        message = f"unknown field {field!r}" if code is Code.UNKNOWN_FIELD else f"{field}: {first.get('msg')}"
        return error_response(status, code, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not parse the body (nested past its parser's depth, say)
            return error_response(400, Code.INVALID_JSON, str(exc.detail), "body", headers=exc.headers)
        code = _HTTP_CODES.get(exc.status_code, Code.INVALID_FIELD)
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(sa.exc.DBAPIError)  # a query the database could not answer (down, restarting)
    async def database_down(request: Request, exc: sa.exc.DBAPIError) -> JSONResponse:
        log.warning("database error on %s: %s", request.url.path, exc)
        return error_response(503, Code.UNAVAILABLE, "the exchange's database is unavailable; retry shortly")

    @app.exception_handler(Exception)  # a bug: the error shape still, and the traceback in the log
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, Code.INTERNAL, INTERNAL_MESSAGE)

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> Response:
        log.warning("redis error on %s: %s", request.url.path, exc)
        return Response(REDIS_DOWN, status_code=503, media_type="application/json")

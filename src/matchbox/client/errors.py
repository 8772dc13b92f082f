"""The API's errors as exceptions: one class per kind of answer, the stable ``code`` on each.

``except InsufficientFunds`` catches what a bot handles by name; every error also carries its
``status``, ``code`` (docs/api.md lists them), ``message``, ``field`` and, for a rejected order,
its ``order_id``. A bot matches on classes or on ``code``, never on ``message``.
"""

from __future__ import annotations

from typing import Any


class MatchboxError(Exception):
    """An answer of the API that is not a 2xx (or a feed's error): its status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        order_id: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.order_id = order_id
        self.retry_after = retry_after


class InvalidRequest(MatchboxError):
    """400, 413 or 422 for the request's own fields: fix the request (``field`` names what)."""


class Unauthenticated(MatchboxError):
    """401: no API key, or one that no longer works."""


class Forbidden(MatchboxError):
    """403: not the admin token, or a key acting for another account."""


class NotFound(MatchboxError):
    """404: no such order, market, account, transfer or path (yours only: another's is not found)."""


class Conflict(MatchboxError):
    """409: the state does not allow it (an order no longer open, a market not open, a reused id)."""


class Rejected(MatchboxError):
    """422 from the engine: the order was journalled and refused (``order_id`` is its id)."""


class InsufficientFunds(Rejected):
    """The order, withdrawal or transfer is beyond the free balance."""


class RateLimited(MatchboxError):
    """429: over the rate limit; ``retry_after`` seconds until a token comes."""


class Unavailable(MatchboxError):
    """503: Redis, the database or the engine is not answering now; the same request again later is safe
    for a read or an order with its ``client_order_id``."""


BY_STATUS: dict[int, type[MatchboxError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}
# Codes the API's own checks give before the engine is asked: a 422 with one is the request's fault.
REQUEST_CODES = {"INVALID_FIELD", "MISSING_FIELD", "UNKNOWN_FIELD", "INVALID_JSON", "BODY_TOO_LARGE"}


def error_from(status: int, body: Any, retry_after: str | None = None) -> MatchboxError:
    """The exception for an answer: its class by code, then by status."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"code": "UNAVAILABLE" if status >= 500 else "INVALID_FIELD", "message": str(body)[:200]}
    code = str(detail.get("code", ""))
    if code == "INSUFFICIENT_FUNDS":
        kind: type[MatchboxError] = InsufficientFunds
    elif status == 422:
        kind = InvalidRequest if code in REQUEST_CODES else Rejected
    else:
        kind = BY_STATUS.get(status, Unavailable if status >= 500 else InvalidRequest)
    order_id = detail.get("order_id")
    return kind(
        status,
        code,
        str(detail.get("message", "")),
        detail.get("field"),
        order_id if isinstance(order_id, int) else None,
        float(retry_after) if retry_after and retry_after.isdigit() else None,
    )

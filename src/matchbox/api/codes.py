"""The error codes of API v1: a stable table (``docs/api.md`` lists it; a test holds the two equal).

An error's ``code`` is one of :class:`Code` or, where the engine refused a command, the name of its
:class:`~matchbox.engine.types.RejectReason` (``INSUFFICIENT_FUNDS``, ``MARKET_NOT_OPEN``, …): the
API's own checks answer with the engine's code wherever they apply the engine's rule, so a client
sees one code for one cause, whoever found it. Codes are only ever added, never renamed.
"""

from __future__ import annotations

from enum import StrEnum

from matchbox.engine.types import RejectReason


class Code(StrEnum):
    """The API's own error codes (the engine's reject reasons are codes as well: see :data:`ALL_CODES`)."""

    INVALID_JSON = "INVALID_JSON"  # 400: the body is not JSON
    INVALID_FIELD = "INVALID_FIELD"  # 400 (out of range) or 422 (wrong type or word): the field named
    MISSING_FIELD = "MISSING_FIELD"  # 422 (400 where the field is required by another's value): the field named
    UNKNOWN_FIELD = "UNKNOWN_FIELD"  # 400: a body field or query parameter this path does not take
    BODY_TOO_LARGE = "BODY_TOO_LARGE"  # 413: over 64 KiB (a WebSocket message: over 4 KiB)
    UNAUTHENTICATED = "UNAUTHENTICATED"  # 401: no API key, or one that does not work
    FORBIDDEN = "FORBIDDEN"  # 403: the admin token is missing or wrong, or a key acts for another account
    RATE_LIMITED = "RATE_LIMITED"  # 429: see Retry-After
    NOT_FOUND = "NOT_FOUND"  # 404: no such path
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # 405
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"  # 404
    UNKNOWN_KEY = "UNKNOWN_KEY"  # 404
    UNKNOWN_SHARD = "UNKNOWN_SHARD"  # 404: a shard this exchange does not serve
    UNKNOWN_TRANSFER = "UNKNOWN_TRANSFER"  # 404
    ACCOUNT_EXISTS = "ACCOUNT_EXISTS"  # 409
    MARKET_ON_OTHER_SHARD = "MARKET_ON_OTHER_SHARD"  # 409: the market id is placed on another shard
    CLIENT_ORDER_ID_REUSED = "CLIENT_ORDER_ID_REUSED"  # 409: the same client_order_id with other content
    TRANSFER_ID_REUSED = "TRANSFER_ID_REUSED"  # 409: the same transfer_id for another transfer
    NOT_ANSWERED = "NOT_ANSWERED"  # 503: journalled, but the engine has not answered in time (failing over?)
    UNAVAILABLE = "UNAVAILABLE"  # 503: Redis or the database does not answer; retry shortly
    HALTED = "HALTED"  # 503: the rollback alarm holds the exchange until an operator acts
    UNCERTIFIED = "UNCERTIFIED"  # 503: Redis restarted and no leader has checked it yet; see Retry-After
    ENGINE_TOO_OLD = "ENGINE_TOO_OLD"  # 503: the shard's engine leader is older than the command
    NOT_DURABLE = "NOT_DURABLE"  # 503: the journal's durability could not be confirmed
    NOT_READY = "NOT_READY"  # 503 from /ready: the reason this instance should not be sent traffic
    INTERNAL = "INTERNAL"  # 500: a bug of the server's, logged with its traceback (never one a request may cause)
    INVALID_CURSOR = "INVALID_CURSOR"  # 400 (HTTP) or close 1008 (WebSocket): not a cursor of this list or feed


ALL_CODES: tuple[str, ...] = (*(code.value for code in Code), *(reason.name for reason in RejectReason))
"""Every code an error may carry: the API's, then the engine's."""

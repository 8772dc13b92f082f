"""The one list shape of API v1: ``{"items": [...], "next": <cursor or null>}``, paged by ``limit`` and ``cursor``.

A cursor is opaque to the client: it passes a page's ``next`` back as ``cursor`` for the page after
(time-ordered lists go newest first, so the next page is older). Each list makes its cursor from
the key it is ordered by (an id, an event number, a candle's start, a market id); a cursor that is
not one of that list's is a 400 ``INVALID_CURSOR``, never a silently empty page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from matchbox.api.codes import Code
from matchbox.api.errors import ApiError
from matchbox.api.models import NS_PER_MS
from matchbox.consumers.queries import TimeRange
from matchbox.engine.ledger import INT64_MAX

T = TypeVar("T")

MAX_LIMIT = 1000
MAX_CURSOR_CHARS = 128

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="at most this many items in the page")]
FromMs = Annotated[int | None, Query(ge=0, le=INT64_MAX // NS_PER_MS, description="from this unix ms, inclusive")]
ToMs = Annotated[int | None, Query(ge=0, le=INT64_MAX // NS_PER_MS, description="to this unix ms, exclusive")]
Cursor = Annotated[
    str | None,
    Query(max_length=MAX_CURSOR_CHARS, description="the previous page's next: the page after it"),
]


def int_cursor(cursor: str | None) -> int | None:
    """The integer key a cursor of an id-ordered list holds (None: the first page)."""
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or not 0 < int(cursor) <= INT64_MAX:
        raise ApiError(400, Code.INVALID_CURSOR, "cursor is not one this list gave (pass a page's next)", "cursor")
    return int(cursor)


def page(found: Sequence[T], limit: int, key: Callable[[T], object]) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``found`` (fetched as ``limit + 1``: one more tells that there is a
    next page) and the cursor of the page after them, made from the last item's key."""
    items = list(found[:limit])
    return items, (str(key(items[-1])) if len(found) > limit else None)


def time_range(from_ms: int | None, to_ms: int | None) -> TimeRange:
    """[from_ms, to_ms) as engine time (ns); a 400 naming ``to_ms`` if it is not after ``from_ms``."""
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ApiError(400, Code.INVALID_FIELD, "to_ms must be after from_ms", "to_ms")
    return (
        None if from_ms is None else from_ms * NS_PER_MS,
        None if to_ms is None else to_ms * NS_PER_MS,
    )


def within(ts: int, since: TimeRange) -> bool:
    start, end = since
    return (start is None or ts >= start) and (end is None or ts < end)

"""A Python client for Matchbox's API v1: blocking (:class:`Client`) or asyncio (:class:`AsyncClient`).

>>> from matchbox.client import Client, InsufficientFunds
>>> with Client("http://127.0.0.1:8080", api_key) as client:
...     order = client.place_order("rain", "buy", price=40, qty=10)
...     with client.stream(["book:rain", "orders"]) as feed:
...         for message in feed: ...

Typed results (the API's own response models), the error codes as exceptions, orders retried
under their ``client_order_id`` so none is placed twice, a feed that resumes with no gap and keeps
a local book per market, and a dead-man switch helper. ``examples/market_maker.py`` is a bot in
full; docs/api.md is the contract it speaks.
"""

from matchbox.api.models import FeesIn
from matchbox.client.aio import AsyncClient, every_item, new_client_order_id, order_body
from matchbox.client.errors import (
    Conflict,
    Forbidden,
    InsufficientFunds,
    InvalidRequest,
    MatchboxError,
    NotFound,
    RateLimited,
    Rejected,
    Unauthenticated,
    Unavailable,
)
from matchbox.client.stream import LocalBook, Stream, open_stream
from matchbox.client.sync import Client, SyncStream

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "FeesIn",
    "Forbidden",
    "InsufficientFunds",
    "InvalidRequest",
    "LocalBook",
    "MatchboxError",
    "NotFound",
    "RateLimited",
    "Rejected",
    "Stream",
    "SyncStream",
    "Unauthenticated",
    "Unavailable",
    "every_item",
    "new_client_order_id",
    "open_stream",
    "order_body",
]

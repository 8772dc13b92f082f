"""What every part of the exchange holds once it is quiet, read into plain data for the checks.

- the output stream, whole, decoded (:func:`~matchbox.bus.codec.decode_event`);
- the engine's state rebuilt from the newest snapshot and the journal, as a new leader would
  (:func:`~matchbox.leader.recovery.recover`, which also checks it against the committed state
  hash): its balances, what each collateral market holds, and its books;
- the consumers' database: trades, the trades analytics counted, and balances;
- each API instance: ``/ready``, where its tail is, its books, and each account's balance.

Books are kept in the API's units (prices through :func:`~matchbox.api.prices.price_out`), so
an instance's answer and the engine's ticks compare directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from matchbox.api.prices import price_out
from matchbox.bus.codec import CodecError, decode_event
from matchbox.bus.commit import latest_snapshot, read_offset
from matchbox.bus.connection import Bus
from matchbox.chaos.http import Http, Instance
from matchbox.chaos.records import Records
from matchbox.chaos.traffic import MARKETS
from matchbox.consumers.db import open_database
from matchbox.consumers.schema import analytics_trades, balances, trades
from matchbox.engine import Engine
from matchbox.engine.queries import PriceLevel
from matchbox.engine.types import Event, MarketCreated, TickScheme
from matchbox.leader.recovery import recover

PAGE = 10_000
DEPTH = 50  # levels a side compared between the engine and each API instance

Level = tuple[float | int, int, int]  # price (the API's units), quantity, orders
Book = tuple[list[Level], list[Level]]  # bids, asks
Money = tuple[int, int]  # total, reserved
TradeRow = tuple[str, int, int, int, int, int]  # market, price, qty, maker order, taker order, n


@dataclass(frozen=True, slots=True)
class StreamEvent:
    stream_id: str
    n: int
    in_id: str
    event: Event


@dataclass(slots=True)
class EngineView:
    balances: dict[str, Money] = field(default_factory=dict)
    net_deposits: int = 0
    pots: dict[str, int] = field(default_factory=dict)  # collateral market -> the money its positions hold
    books: dict[str, Book] = field(default_factory=dict)
    error: str = ""  # the state could not be rebuilt: why


@dataclass(slots=True)
class SqlView:
    trades: dict[int, TradeRow] = field(default_factory=dict)
    analytics_trades: set[int] = field(default_factory=set)
    balances: dict[str, Money] = field(default_factory=dict)
    error: str = ""


@dataclass(slots=True)
class ApiView:
    name: str
    ready: str = ""  # "" when /ready answered 200, else what it answered
    tail_position: str = ""
    books: dict[str, Book] = field(default_factory=dict)
    balances: dict[str, Money] = field(default_factory=dict)


@dataclass(slots=True)
class State:
    events: list[StreamEvent] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # stream ids of entries that are not events
    stream_end: str = ""
    engine: EngineView = field(default_factory=EngineView)
    sql: SqlView = field(default_factory=SqlView)
    apis: list[ApiView] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)

    def schemes(self) -> dict[str, TickScheme]:
        return {e.event.market_id: e.event.scheme for e in self.events if isinstance(e.event, MarketCreated)}


# --------------------------------------------------------------------------- reading it


async def gather(url: str, database_url: str | None, data_dir: Path, http: Http, records: Records) -> State:
    state = await asyncio.to_thread(_from_redis, url)
    schemes = state.schemes()
    state.engine = await asyncio.to_thread(_engine, url, schemes)
    state.sql = await asyncio.to_thread(_sql, database_url, data_dir)
    state.apis = [await _api(http, instance, records.keys) for instance in http.instances]
    return state


def _from_redis(url: str) -> State:
    bus = Bus.connect(url)
    try:
        state = State()
        keys = bus.keys
        cursor = "-"
        while entries := bus.range(keys.events, cursor, "+", count=PAGE):
            for raw_id, fields in entries:
                stream_id = raw_id.decode()
                try:
                    decoded = decode_event(fields.get(b"event", b""))
                except CodecError:
                    state.undecodable.append(stream_id)
                    continue
                state.events.append(StreamEvent(stream_id, decoded.n, decoded.in_id, decoded.event))
            cursor = f"({entries[-1][0].decode()}"
        state.stream_end = bus.last_generated_id(keys.events)
        for group in ("persistence", "analytics"):
            state.dead_letters[group] = int(bus.client.xlen(keys.dead_letter(group)))
        return state
    finally:
        bus.close()


def _book(scheme: TickScheme, bids: Iterable[PriceLevel], asks: Iterable[PriceLevel]) -> Book:
    def levels(side: Iterable[PriceLevel]) -> list[Level]:
        return [(price_out(scheme, level.price), level.qty, level.orders) for level in side]

    return levels(bids), levels(asks)


def _engine(url: str, schemes: dict[str, TickScheme]) -> EngineView:
    """The engine as a new leader would rebuild it; the error if it cannot be (a hash mismatch)."""
    bus = Bus.connect(url)
    try:
        offset = read_offset(bus)
        if offset is None:
            return EngineView(error="nothing was ever committed")
        engine, _ = recover(bus, offset, latest_snapshot(bus))
    except Exception as exc:  # any failure to rebuild is the finding itself
        return EngineView(error=f"{type(exc).__name__}: {exc}")
    finally:
        bus.close()
    return _engine_view(engine, schemes)


def _engine_view(engine: Engine, schemes: dict[str, TickScheme]) -> EngineView:
    ledger = engine.ledger
    view = EngineView(
        balances={account: (a.total, a.reserved) for account, a in ledger.accounts.items()},
        net_deposits=ledger.net_deposits,
        pots={market_id: ledger.pot(market_id) for market_id in ledger.markets},
    )
    for market in MARKETS:
        depth = engine.depth(market.market_id, DEPTH)
        if depth is not None:
            scheme = schemes.get(market.market_id, market.scheme)
            view.books[market.market_id] = _book(scheme, depth.bids, depth.asks)
    return view


def _sql(database_url: str | None, data_dir: Path) -> SqlView:
    try:
        database = open_database(database_url, data_dir)
    except sa.exc.SQLAlchemyError as exc:
        return SqlView(error=f"{type(exc).__name__}: {exc}")
    try:
        with database.connect() as connection:
            view = SqlView()
            for row in connection.execute(sa.select(trades)).mappings():
                view.trades[row["trade_id"]] = (
                    row["market_id"],
                    row["price"],
                    row["qty"],
                    row["maker_order_id"],
                    row["taker_order_id"],
                    row["n"],
                )
            view.analytics_trades = set(connection.execute(sa.select(analytics_trades.c.trade_id)).scalars())
            for row in connection.execute(sa.select(balances)).mappings():
                view.balances[row["account"]] = (row["total"], row["reserved"])
            return view
    finally:
        database.dispose()


async def _api(http: Http, instance: Instance, keys: dict[str, str]) -> ApiView:
    view = ApiView(instance.name)
    ready = await http.call(instance, "GET", "/ready")
    view.ready = "" if ready.status == 200 else f"{ready.status or ready.error} {ready.body}"
    view.tail_position = str((await http.call(instance, "GET", "/v1/engine")).field("tail_position"))
    for market in MARKETS:
        reply = await http.call(instance, "GET", f"/v1/markets/{market.market_id}/book?depth={DEPTH}")
        if reply.status == 200 and isinstance(reply.body, dict):
            view.books[market.market_id] = (_levels(reply.body, "bids"), _levels(reply.body, "asks"))
    for account, key in keys.items():
        reply = await http.call(instance, "GET", "/v1/account", key=key)
        if reply.status == 200 and isinstance(reply.body, dict):
            view.balances[account] = (int(reply.body["total"]), int(reply.body["reserved"]))
    return view


def _levels(book: dict[str, Any], side: str) -> list[Level]:
    return [(level["price"], level["qty"], level.get("orders", 0)) for level in book.get(side, [])]

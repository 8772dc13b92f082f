"""Markets (admin: create, suspend, resume, close, settle) and market data (book, trades, ticker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Query, Request

from matchbox.api.auth import Admin
from matchbox.api.codes import Code
from matchbox.api.errors import ADMIN_ERRORS, ERRORS, ApiError
from matchbox.api.models import (
    NS_PER_MS,
    SELF_TRADE,
    BookOut,
    FeesOut,
    LevelOut,
    MarketId,
    MarketIn,
    MarketOut,
    MarketsPage,
    SettleIn,
    TickerOut,
    TradeOut,
    TradesPage,
)
from matchbox.api.pages import Cursor, FromMs, Limit, ToMs, int_cursor, page, time_range, within
from matchbox.api.prices import price_out, side_word
from matchbox.api.projection import MarketView
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import Services, engine_outcome, market_of, services_of
from matchbox.consumers import queries
from matchbox.engine.ledger import INT64_MAX, valid_fees
from matchbox.engine.rules import valid_times
from matchbox.engine.types import (
    MAX_OUTCOMES,
    CloseMarket,
    Command,
    CreateMarket,
    FeeSchedule,
    MarketCreated,
    MarketInfo,
    RejectReason,
    ResumeMarket,
    SettleMarket,
    Side,
    SuspendMarket,
    TickScheme,
)

SCHEMES = {"binary": TickScheme.BINARY, "odds": TickScheme.ODDS, "ticks": TickScheme.TICKS}
_BUY, _SELL = Side.BUY, Side.SELL
router = APIRouter(tags=["markets"], route_class=EdgeRoute)


def _market_out(services: Services, market: MarketView) -> MarketOut:
    book = services.projection.books[market.market_id]
    bid, ask = book.best(_BUY), book.best(_SELL)
    info = market.info or _NO_INFO
    return MarketOut(
        market_id=market.market_id,
        scheme=market.scheme.name.lower(),
        state=market.state.name.lower(),
        min_tick=market.min_tick,
        max_tick=market.max_tick,
        max_qty=market.max_qty,
        self_trade=market.stp.name.lower(),
        outcome=market.outcome,
        collateral=market.collateral,
        shard=market.shard,
        best_bid=None if bid is None else price_out(market.scheme, bid),
        best_ask=None if ask is None else price_out(market.scheme, ask),
        title=info.title,
        question=info.question,
        rules=info.rules,
        category=info.category,
        outcomes=list(info.outcomes or DEFAULT_OUTCOMES.get(market.scheme, ())),
        opens_at_ms=market.opens_at // NS_PER_MS or None,
        closes_at_ms=market.closes_at // NS_PER_MS or None,
        fees=None if market.fees is None else FeesOut(**msgspec.structs.asdict(market.fees)),
    )


DEFAULT_OUTCOMES = {TickScheme.BINARY: ("YES", "NO")}  # what a binary market's two outcomes are called
_NO_INFO = MarketInfo()


def _book_out(services: Services, market: MarketView, depth: int | None, with_orders: bool = True) -> BookOut:
    book = services.projection.books[market.market_id]

    def levels(side: Any) -> list[LevelOut]:
        return [
            LevelOut(price=price_out(market.scheme, p), qty=q, orders=o if with_orders else None)
            for p, q, o in book.levels(side, depth)
        ]

    return BookOut(
        market_id=market.market_id, bids=levels(_BUY), asks=levels(_SELL), sequence=services.projection.sequence(market)
    )


@router.post("/markets", status_code=201, response_model=MarketOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def create_market(request: Request, body: MarketIn) -> MarketOut:
    """Create a market (admin)."""
    services = services_of(request)
    scheme = SCHEMES[body.scheme]
    if scheme is TickScheme.TICKS and body.max_tick is None:
        raise ApiError(400, Code.MISSING_FIELD, "a ticks market needs max_tick", "max_tick")
    if scheme is not TickScheme.TICKS and body.max_tick is not None:
        raise ApiError(400, RejectReason.INVALID_MARKET_SPEC, "max_tick is for ticks markets only", "max_tick")
    if body.collateral and scheme is TickScheme.TICKS:
        raise ApiError(
            400, RejectReason.INVALID_MARKET_SPEC, "collateral is for binary and odds markets only", "collateral"
        )
    if body.market_id in services.projection.markets:
        raise ApiError(409, RejectReason.MARKET_EXISTS, f"market {body.market_id!r} exists", "market_id")
    if body.outcomes is not None and len(body.outcomes) != MAX_OUTCOMES[scheme]:
        names = {TickScheme.BINARY: "two names (YES, NO)", TickScheme.ODDS: "one name (the selection)"}
        message = f"a {body.scheme} market's outcomes are {names.get(scheme, 'not named')}"
        raise ApiError(400, RejectReason.INVALID_MARKET_SPEC, message, "outcomes")
    if not valid_times(time.time_ns(), (body.opens_at_ms or 0) * NS_PER_MS, (body.closes_at_ms or 0) * NS_PER_MS):
        message = "closes_at_ms must be in the future, and after opens_at_ms"
        raise ApiError(400, RejectReason.INVALID_MARKET_SPEC, message, "closes_at_ms")
    fees = None if body.fees is None else FeeSchedule(**body.fees.model_dump())
    if fees is not None and not valid_fees(scheme, body.collateral, fees):  # the engine's rule
        message = "fees are for collateral markets: per fill on binary ones, a commission on odds ones"
        raise ApiError(400, RejectReason.INVALID_MARKET_SPEC, message, "fees")
    shard = await services.place_market(body.market_id, body.shard)
    given = (body.title, body.question, body.rules, body.category, body.outcomes)
    info = None
    if any(given):
        info = MarketInfo(
            title=body.title,
            question=body.question,
            rules=body.rules,
            category=body.category,
            outcomes=tuple(body.outcomes or ()),
        )
    command = CreateMarket(
        seq=0,
        ts=0,
        market_id=body.market_id,
        scheme=scheme,
        max_tick=body.max_tick or 0,
        max_qty=body.max_qty,
        stp=SELF_TRADE[body.self_trade],
        collateral=body.collateral,
        info=info,
        opens_at=(body.opens_at_ms or 0) * NS_PER_MS,
        closes_at=(body.closes_at_ms or 0) * NS_PER_MS,
        fees=fees,
    )
    # its journal time may run past closes_at_ms after the check above: the engine says so
    events = await engine_outcome(services, command, shard, {RejectReason.INVALID_MARKET_SPEC: "closes_at_ms"})
    assert any(isinstance(e, MarketCreated) for e in events)
    return _market_out(services, services.projection.markets[body.market_id])


@router.get("/markets", response_model=MarketsPage, responses=ERRORS)
async def list_markets(
    request: Request,
    limit: Limit = 100,
    cursor: Cursor = None,
    state: Annotated[Literal["open", "suspended", "closed", "settled"] | None, Query(description="only these")] = None,
    scheme: Annotated[Literal["binary", "odds", "ticks"] | None, Query(description="only these")] = None,
    category: Annotated[str | None, Query(max_length=256, description="only this category")] = None,
    closes_before_ms: Annotated[
        int | None, Query(ge=0, le=INT64_MAX // NS_PER_MS, description="only those closing before this unix ms")
    ] = None,
    sort: Annotated[
        Literal["market_id", "closes_at"],
        Query(description="by id, or by close time, soonest first (those without one last), then id"),
    ] = "market_id",
) -> MarketsPage:
    """Markets, with their best prices: by id, or by close time."""
    services = services_of(request)
    key: Callable[[MarketView], tuple[int, int, str]]
    key = _by_close if sort == "closes_at" else _by_id
    after = None if cursor is None else _market_cursor(cursor, sort)
    before_ns = None if closes_before_ms is None else closes_before_ms * NS_PER_MS
    found = sorted(
        (
            m
            for m in services.projection.markets.values()
            if (after is None or key(m) > after)
            and (state is None or m.state.name.lower() == state)
            and (scheme is None or m.scheme.name.lower() == scheme)
            and (category is None or (m.info.category if m.info else "") == category)
            and (before_ns is None or 0 < m.closes_at < before_ns)
        ),
        key=key,
    )
    items, next_cursor = page(found[: limit + 1], limit, lambda m: m.market_id if sort == "market_id" else _cursor(m))
    return MarketsPage(items=[_market_out(services, m) for m in items], next=next_cursor)


def _cursor(market: MarketView) -> str:
    """``<close ms>:<market id>``, or ``-:<market id>`` for a market without a close time."""
    none, close_ms, market_id = _by_close(market)
    return f"{'-' if none else close_ms}:{market_id}"


def _by_id(market: MarketView) -> tuple[int, int, str]:
    return (0, 0, market.market_id)


def _by_close(market: MarketView) -> tuple[int, int, str]:
    """Soonest close first; those without a close time last; then by id."""
    return (0 if market.closes_at else 1, market.closes_at // NS_PER_MS, market.market_id)


def _market_cursor(cursor: str, sort: str) -> tuple[int, int, str]:
    """The sort key a markets cursor holds: a market id, or ``<close ms>:<market id>`` (``-`` for none)."""
    if sort == "market_id":
        return (0, 0, cursor)
    ms, _, market_id = cursor.partition(":")
    if ms == "-" and market_id:
        return (1, 0, market_id)
    if not (ms.isascii() and ms.isdigit() and len(ms) <= 19 and market_id):
        raise ApiError(400, Code.INVALID_CURSOR, "cursor is not one this list gave (pass a page's next)", "cursor")
    return (0, int(ms), market_id)


@router.get("/markets/{market_id}", response_model=MarketOut, responses=ERRORS)
async def get_market(request: Request, market_id: MarketId) -> MarketOut:
    services = services_of(request)
    return _market_out(services, market_of(services, market_id))


async def transition(request: Request, market_id: str, command: Command) -> MarketOut:
    services = services_of(request)
    market_of(services, market_id)
    await engine_outcome(services, command)
    return _market_out(services, services.projection.markets[market_id])


@router.post("/markets/{market_id}/suspend", response_model=MarketOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def suspend(request: Request, market_id: MarketId) -> MarketOut:
    """Suspend trading (admin): new orders are refused, the book stays, cancels still work."""
    return await transition(request, market_id, SuspendMarket(seq=0, ts=0, market_id=market_id))


@router.post("/markets/{market_id}/resume", response_model=MarketOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def resume(request: Request, market_id: MarketId) -> MarketOut:
    """Resume trading (admin)."""
    return await transition(request, market_id, ResumeMarket(seq=0, ts=0, market_id=market_id))


@router.post("/markets/{market_id}/close", response_model=MarketOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def close(request: Request, market_id: MarketId) -> MarketOut:
    """Close the market (admin): every resting order is cancelled."""
    return await transition(request, market_id, CloseMarket(seq=0, ts=0, market_id=market_id))


@router.post("/markets/{market_id}/settle", response_model=MarketOut, responses=ADMIN_ERRORS, dependencies=[Admin])
async def settle(request: Request, market_id: MarketId, body: SettleIn | None = None) -> MarketOut:
    """Settle the market with its outcome (admin)."""
    outcome = body.outcome if body else ""
    command = SettleMarket(seq=0, ts=0, market_id=market_id, outcome=outcome)
    return await transition(request, market_id, command)


async def orderbook(request: Request, market_id: MarketId | None = None) -> BookOut:
    """The seed's book (``GET /orderbook``): bids highest first, asks lowest first, and the sequence."""
    services = services_of(request)
    market = market_of(services, market_id or services.settings.default_market)
    return _book_out(services, market, None, with_orders=False)


@router.get("/markets/{market_id}/book", response_model=BookOut, response_model_exclude_none=True, responses=ERRORS)
async def book(request: Request, market_id: MarketId, depth: int = Query(default=10, ge=1, le=1000)) -> BookOut:
    services = services_of(request)
    return _book_out(services, market_of(services, market_id), depth)


@router.get("/markets/{market_id}/trades", response_model=TradesPage, responses=ERRORS)
async def trades(
    request: Request,
    market_id: MarketId,
    limit: Limit = 100,
    cursor: Cursor = None,
    from_ms: FromMs = None,
    to_ms: ToMs = None,
) -> TradesPage:
    """The market's trades, newest first (within [from_ms, to_ms), if given).

    The recent ones come from this instance's live view of the market; older ones, past its
    window of the last 1,000, from the database the persistence consumer writes."""
    services = services_of(request)
    market = market_of(services, market_id)
    before, since = int_cursor(cursor), time_range(from_ms, to_ms)
    window = services.projection.trades[market_id]
    found = [
        _trade_out(market, t.trade_id, t.price, t.qty, t.taker_side, t.maker_order_id, t.taker_order_id, t.ts)
        for t in reversed(window)
        if (before is None or t.trade_id < before) and within(t.ts, since)
    ][: limit + 1]
    if len(found) <= limit and len(window) == window.maxlen:  # older trades than the window holds may exist
        oldest = window[0].trade_id
        older = oldest if before is None else min(before, oldest)
        rows = await asyncio.to_thread(
            _stored_trades, services, market_id, oldest, older, limit + 1 - len(found), since
        )
        found += [
            _trade_out(market, r.trade_id, r.price, r.qty, r.taker_side, r.maker_order_id, r.taker_order_id, r.ts)
            for r in rows
        ]
    items, after = page(found, limit, lambda t: t.trade_id)
    return TradesPage(items=items, next=after)


def _stored_trades(
    services: Services, market_id: str, oldest: int, before: int, limit: int, since: queries.TimeRange
) -> list[queries.MarketTrade]:
    """The trades older than the live window, from the database: once it holds the window's
    oldest (the persistence consumer writes in stream order, so it holds every trade before that
    too); a 503 until then, never a page that skips what it has not written yet."""
    database = services.database()
    if not queries.has_trade(database, oldest):
        raise ApiError(503, Code.UNAVAILABLE, "older trades are still being written to the database; retry shortly")
    return queries.market_trades(database, market_id, before=before, limit=limit, since=since)


def _trade_out(
    market: MarketView, trade_id: int, price: int, qty: int, taker_side: Side, maker: int, taker: int, ts: int
) -> TradeOut:
    return TradeOut(
        trade_id=trade_id,
        price=price_out(market.scheme, price),
        qty=qty,
        taker_side=side_word(market.scheme, taker_side),
        maker_order_id=maker,
        taker_order_id=taker,
        time_ms=ts // NS_PER_MS,
    )


@router.get("/markets/{market_id}/ticker", response_model=TickerOut, responses=ERRORS)
async def ticker(request: Request, market_id: MarketId) -> TickerOut:
    services = services_of(request)
    market = market_of(services, market_id)
    book = services.projection.books[market_id]
    bid, ask = book.best(_BUY), book.best(_SELL)
    last = services.projection.trades[market_id][-1] if services.projection.trades[market_id] else None
    bid_out = None if bid is None else price_out(market.scheme, bid)
    ask_out = None if ask is None else price_out(market.scheme, ask)
    both = bid_out is not None and ask_out is not None
    return TickerOut(
        market_id=market_id,
        best_bid=bid_out,
        best_ask=ask_out,
        mid=(float(bid_out) + float(ask_out)) / 2 if both else None,  # type: ignore[arg-type]
        spread=round(ask_out - bid_out, 2) if both else None,  # type: ignore[operator]
        last_price=None if last is None else price_out(market.scheme, last.price),
        last_qty=None if last is None else last.qty,
        sequence=services.projection.sequence(market),
    )

"""Market history from the analytics consumer's tables: candles and 24-hour statistics.

These read the SQL database the consumers write (``DATABASE_URL``, else SQLite in the data
folder), so they trail the live feed by the analytics group's lag. The routes are plain ``def``:
FastAPI runs them on its worker threads, where a blocking database call belongs.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from matchbox.api.errors import ERRORS
from matchbox.api.models import CandleOut, CandlesPage, MarketId, StatsOut
from matchbox.api.pages import Cursor, FromMs, ToMs, int_cursor, page, time_range
from matchbox.api.prices import price_out
from matchbox.api.routing import EdgeRoute
from matchbox.api.services import market_of, services_of
from matchbox.consumers import queries
from matchbox.engine.types import TickScheme

router = APIRouter(tags=["market data"], route_class=EdgeRoute)

Interval = Literal["1s", "1m", "1h", "1d"]


@router.get("/markets/{market_id}/candles", response_model=CandlesPage, responses=ERRORS)
def candles(
    request: Request,
    market_id: MarketId,
    interval: Interval = "1m",
    from_ms: FromMs = None,
    to_ms: ToMs = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="at most this many candles in the page")] = 500,
    cursor: Cursor = None,
) -> CandlesPage:
    """OHLCV candles starting within [from_ms, to_ms), newest first. Intervals with no trade have none."""
    services = services_of(request)
    scheme = market_of(services, market_id).scheme
    time_range(from_ms, to_ms)  # checks to_ms is after from_ms
    before = int_cursor(cursor)
    end = to_ms if before is None else min(before, to_ms if to_ms is not None else before)
    found = queries.candles(services.database(), market_id, interval, None, end, limit + 1)[::-1]
    if from_ms is not None:
        found = [c for c in found if c.start_ms >= from_ms]
    chosen, after = page(found, limit, lambda c: c.start_ms)
    items = [
        CandleOut(
            start_ms=c.start_ms,
            open=price_out(scheme, c.open),
            high=price_out(scheme, c.high),
            low=price_out(scheme, c.low),
            close=price_out(scheme, c.close),
            volume=c.volume,
            trades=c.trade_count,
            vwap=None if scheme is TickScheme.ODDS else round(c.vwap, 4),
        )
        for c in chosen
    ]
    return CandlesPage(items=items, next=after)


@router.get("/markets/{market_id}/stats", response_model=StatsOut, responses=ERRORS)
def stats(request: Request, market_id: MarketId) -> StatsOut:
    """Last trade, 24-hour volume, trade count and VWAP, best bid and ask, spread and mid."""
    services = services_of(request)
    scheme = market_of(services, market_id).scheme
    found = queries.stats(services.database(), market_id, int(time.time() * 1000))
    if found is None:  # the analytics consumer has not seen the market yet
        return StatsOut(
            market_id=market_id,
            last_price=None,
            last_qty=None,
            last_trade_ms=None,
            vwap_24h=None,
            volume_24h=0,
            trades_24h=0,
            best_bid=None,
            best_ask=None,
            spread=None,
            mid=None,
        )
    bid = None if found.best_bid is None else price_out(scheme, found.best_bid)
    ask = None if found.best_ask is None else price_out(scheme, found.best_ask)
    both = bid is not None and ask is not None
    vwap = found.vwap_24h
    return StatsOut(
        market_id=market_id,
        last_price=None if found.last_price is None else price_out(scheme, found.last_price),
        last_qty=found.last_qty,
        last_trade_ms=found.last_trade_ms,
        vwap_24h=None if vwap is None or scheme is TickScheme.ODDS else round(vwap, 4),
        volume_24h=found.volume_24h,
        trades_24h=found.trades_24h,
        best_bid=bid,
        best_ask=ask,
        spread=round(ask - bid, 2) if both else None,  # type: ignore[operator]
        mid=(float(bid) + float(ask)) / 2 if both else None,  # type: ignore[arg-type]
    )
